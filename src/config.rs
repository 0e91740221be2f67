//! Configuration of one replicated database: URI parameters > environment > defaults,
//! turned once, at open, into an immutable value.

use std::path::{Path, PathBuf};
use std::time::Duration;

/// URI parameters SQLite itself understands (left alone).
const SQLITE_PARAMS: &[&str] = &[
    "vfs",
    "mode",
    "cache",
    "psow",
    "nolock",
    "immutable",
    "modeof",
    // unix VFS: open the -shm read-only (walro.test).
    "readonly_shm",
];

/// Our URI parameters.
pub const PARAM_REPLICA: &str = "replica";
pub const PARAM_MIN_INTERVAL: &str = "min-interval";
pub const PARAM_SPOOL_LIMIT: &str = "spool-limit";
pub const PARAM_LEVELS: &str = "levels";
pub const PARAM_SNAPSHOT_INTERVAL: &str = "snapshot-interval";
pub const PARAM_RETENTION: &str = "retention";
pub const PARAM_L0_RETENTION: &str = "l0-retention";
pub const PARAM_LEASE: &str = "lease";
pub const PARAM_LEASE_TTL: &str = "lease-ttl";
const OUR_PARAMS: &[&str] = &[
    PARAM_LEASE,
    PARAM_LEASE_TTL,
    PARAM_REPLICA,
    PARAM_MIN_INTERVAL,
    PARAM_SPOOL_LIMIT,
    PARAM_LEVELS,
    PARAM_SNAPSHOT_INTERVAL,
    PARAM_RETENTION,
    PARAM_L0_RETENTION,
];

pub const ENV_REPLICA_URL: &str = "LITESTREAM_REPLICA_URL";
pub const ENV_REPLICA_BASE_URL: &str = "LITESTREAM_REPLICA_BASE_URL";
pub const ENV_DATA_DIR: &str = "LITESTREAM_DATA_DIR";
pub const ENV_MIN_INTERVAL: &str = "LITESTREAM_MIN_INTERVAL";
pub const ENV_LEVELS: &str = "LITESTREAM_LEVELS";
pub const ENV_SNAPSHOT_INTERVAL: &str = "LITESTREAM_SNAPSHOT_INTERVAL";
pub const ENV_RETENTION: &str = "LITESTREAM_RETENTION";
pub const ENV_L0_RETENTION: &str = "LITESTREAM_L0_RETENTION";
pub const ENV_LEASE: &str = "LITESTREAM_LEASE";
pub const ENV_LEASE_TTL: &str = "LITESTREAM_LEASE_TTL";
/// Litestream's (unused) leaser's TTL.
pub const DEFAULT_LEASE_TTL: Duration = Duration::from_secs(30);

/// Litestream's defaults: L1 every 30 s, L2 every 5 min, L3 every hour; a snapshot a day kept a
/// day; L0 files kept 5 min after they are compacted.
pub const DEFAULT_LEVELS: [Duration; 3] = [
    Duration::from_secs(30),
    Duration::from_secs(300),
    Duration::from_secs(3600),
];
pub const DEFAULT_SNAPSHOT_INTERVAL: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_RETENTION: Duration = Duration::from_secs(24 * 3600);
pub const DEFAULT_L0_RETENTION: Duration = Duration::from_secs(300);

/// Shortest time between two L0 uploads of one database (commits in between coalesce).
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Unshipped data the local spool may hold before it gives up and resyncs with a snapshot.
pub const DEFAULT_SPOOL_LIMIT: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    pub replica_url: String,
    pub min_interval: Duration,
    pub spool_limit: u64,
    /// Compaction intervals of L1, L2, ... (at most 8 levels; snapshots are level 9).
    pub levels: Vec<Duration>,
    pub snapshot_interval: Duration,
    /// How long snapshots (and what they make restorable) are kept.
    pub retention: Duration,
    /// How long an L0 file stays after it is compacted into L1.
    pub l0_retention: Duration,
    /// Hold `lock.json` so only one process replicates to the destination.
    pub lease: bool,
    pub lease_ttl: Duration,
}

impl DbConfig {
    /// Defaults with this replica (for tests and tools).
    pub fn with_replica(url: &str) -> Self {
        Self {
            replica_url: url.to_string(),
            min_interval: DEFAULT_MIN_INTERVAL,
            spool_limit: DEFAULT_SPOOL_LIMIT,
            levels: DEFAULT_LEVELS.to_vec(),
            snapshot_interval: DEFAULT_SNAPSHOT_INTERVAL,
            retention: DEFAULT_RETENTION,
            l0_retention: DEFAULT_L0_RETENTION,
            lease: true,
            lease_ttl: DEFAULT_LEASE_TTL,
        }
    }
}

/// The longest duration taken (100 years): anything longer is a typo, and would overflow
/// the clock arithmetic (a lease expiring in 1970).
pub const MAX_DURATION: Duration = Duration::from_secs(100 * 365 * 24 * 3600);

/// Parses `100ms`, `2s`, `1m`, `24h` or a bare number of milliseconds, at most
/// [`MAX_DURATION`]; the error says which rule `s` breaks (the caller names the setting).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let t = s.trim();
    let (num, unit) = t
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((t, "ms"), |i| (&t[..i], &t[i..]));
    let not_one = || "is not a duration (e.g. 100ms, 30s, 5m, 24h)".to_string();
    let n: f64 = num.parse().map_err(|_| not_one())?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return Err(not_one()),
    };
    if !(ms >= 0.0 && ms.is_finite()) {
        return Err(not_one());
    }
    if ms > MAX_DURATION.as_millis() as f64 {
        return Err("is out of range (at most 100 years, 876000h)".into());
    }
    Ok(Duration::from_micros((ms * 1000.0) as u64))
}

/// Parses `512`, `64k`, `100M`, `1G` bytes.
pub fn parse_size(s: &str) -> Option<u64> {
    let s = s.trim();
    let (num, mult) = match s.chars().last()?.to_ascii_uppercase() {
        'K' => (&s[..s.len() - 1], 1 << 10),
        'M' => (&s[..s.len() - 1], 1 << 20),
        'G' => (&s[..s.len() - 1], 1 << 30),
        _ => (s, 1),
    };
    num.parse::<u64>().ok()?.checked_mul(mult)
}

fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// The base URL and data directory set from SQL (`litestream_base_url()`): they win over
/// the environment, for apps that configure themselves at run time.
static BASE_FROM_SQL: parking_lot::RwLock<Option<(String, Option<String>)>> =
    parking_lot::RwLock::new(None);

/// Sets (or with None clears) the process's base replica URL and data directory. The URL
/// must parse; applies to databases opened from now on.
pub fn set_base_url(base: Option<(String, Option<String>)>) -> Result<(), String> {
    if let Some((url, _)) = &base {
        check_base(url)?;
    }
    *BASE_FROM_SQL.write() = base;
    Ok(())
}

/// A base URL must be a replica URL itself (`file:` or `file:///` would put every database
/// under `/`), and so must what it gives with a database name appended.
fn check_base(url: &str) -> Result<(), String> {
    crate::storage::ReplicaUrl::parse(url).map_err(|e| e.to_string())?;
    crate::storage::ReplicaUrl::parse(&join_base(url, "probe.db")).map_err(|e| e.to_string())?;
    Ok(())
}

/// The base URL and data directory in force: set from SQL, else from the environment.
pub fn base_url() -> Option<(String, Option<String>)> {
    BASE_FROM_SQL
        .read()
        .clone()
        .or_else(|| env(ENV_REPLICA_BASE_URL).map(|b| (b, env(ENV_DATA_DIR))))
}

/// The replica URL of a database opened without an explicit one.
fn url_from_env(db_path: &Path) -> Result<String, String> {
    let from_sql = BASE_FROM_SQL.read().clone();
    if let (None, Some(url)) = (&from_sql, env(ENV_REPLICA_URL)) {
        return Ok(url);
    }
    let Some((base, data_dir)) = base_url() else {
        return Err(format!(
            "no replica for {}: add ?replica=URL to the database URI, or set {ENV_REPLICA_URL} or {ENV_REPLICA_BASE_URL}",
            db_path.display()
        ));
    };
    check_base(&base).map_err(|e| format!("base URL: {e}"))?;
    // Litestream's directory layout: <base>/<path relative to the data dir, or the file name>.
    let relative: PathBuf = match data_dir {
        Some(root) => db_path
            .strip_prefix(&root)
            .map(Path::to_path_buf)
            .map_err(|_| format!("{} is not under {ENV_DATA_DIR}={root}", db_path.display()))?,
        None => PathBuf::from(db_path.file_name().unwrap_or_default()),
    };
    let rel = relative.to_string_lossy().replace('\\', "/");
    Ok(join_base(&base, &url_path_escape(&rel)))
}

/// A file name as a URL path: `%`, `?` and `#` escaped, so `a?b.db` stays a path (the
/// stores decode it back: Litestream's URL parsing does the same).
fn url_path_escape(rel: &str) -> String {
    let mut out = String::with_capacity(rel.len());
    for c in rel.chars() {
        match c {
            '%' => out.push_str("%25"),
            '?' => out.push_str("%3F"),
            '#' => out.push_str("%23"),
            c => out.push(c),
        }
    }
    out
}

/// `<base>/<rel>`, keeping the base URL's query string at the end.
fn join_base(base: &str, rel: &str) -> String {
    match base.split_once('?') {
        Some((b, q)) => format!("{}/{rel}?{q}", b.trim_end_matches('/')),
        None => format!("{}/{rel}", base.trim_end_matches('/')),
    }
}

/// Rejects URI parameters that neither SQLite nor we (`ours`) know, and resolves the replica
/// URL (URI parameter > environment), checking that it parses.
fn check_params_and_url(
    db_path: &Path,
    params: &[(String, String)],
    ours: &[&str],
) -> Result<String, String> {
    for (key, _) in params {
        if !SQLITE_PARAMS.contains(&key.as_str()) && !ours.contains(&key.as_str()) {
            return Err(format!(
                "unknown URI parameter {key:?} for {} (known: {})",
                db_path.display(),
                ours.join(", ")
            ));
        }
    }
    let url = match params.iter().find(|(k, _)| k == PARAM_REPLICA) {
        Some((_, u)) => u.clone(),
        None => url_from_env(db_path)?,
    };
    // Fail early on a bad URL, naming it.
    crate::storage::ReplicaUrl::parse(&url).map_err(|e| e.to_string())?;
    Ok(url)
}

impl DbConfig {
    /// `params` are the URI's (key, value) pairs as SQLite parsed them.
    pub fn resolve(db_path: &Path, params: &[(String, String)]) -> Result<Self, String> {
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let replica_url = check_params_and_url(db_path, params, OUR_PARAMS)?;
        let duration = |param: &str, var: &str, default: Duration| -> Result<Duration, String> {
            match get(param).or_else(|| env(var)) {
                Some(v) => parse_duration(&v).map_err(|why| format!("{param}={v:?} {why}")),
                None => Ok(default),
            }
        };
        let min_interval = duration(PARAM_MIN_INTERVAL, ENV_MIN_INTERVAL, DEFAULT_MIN_INTERVAL)?;
        let snapshot_interval = duration(
            PARAM_SNAPSHOT_INTERVAL,
            ENV_SNAPSHOT_INTERVAL,
            DEFAULT_SNAPSHOT_INTERVAL,
        )?;
        let retention = duration(PARAM_RETENTION, ENV_RETENTION, DEFAULT_RETENTION)?;
        let l0_retention = duration(PARAM_L0_RETENTION, ENV_L0_RETENTION, DEFAULT_L0_RETENTION)?;
        let levels = match get(PARAM_LEVELS).or_else(|| env(ENV_LEVELS)) {
            Some(v) => {
                let levels: Result<Vec<Duration>, String> =
                    v.split(',').map(parse_duration).collect();
                match levels {
                    Err(why) => {
                        return Err(format!(
                            "{PARAM_LEVELS}={v:?}: a level {why}; give 1 to 8 non-zero durations, e.g. 30s,5m,1h"
                        ))
                    }
                    Ok(l) if (1..=8).contains(&l.len()) && l.iter().all(|d| !d.is_zero()) => l,
                    _ => {
                        return Err(format!(
                        "{PARAM_LEVELS}={v:?} must be 1 to 8 non-zero durations, e.g. 30s,5m,1h"
                    ))
                    }
                }
            }
            None => DEFAULT_LEVELS.to_vec(),
        };
        if snapshot_interval.is_zero() {
            return Err(format!("{PARAM_SNAPSHOT_INTERVAL} must not be zero"));
        }
        let lease = match get(PARAM_LEASE).or_else(|| env(ENV_LEASE)).as_deref() {
            None | Some("on") | Some("true") | Some("1") => true,
            Some("off") | Some("false") | Some("0") => false,
            Some(v) => return Err(format!("{PARAM_LEASE}={v:?} must be on or off")),
        };
        let lease_ttl = duration(PARAM_LEASE_TTL, ENV_LEASE_TTL, DEFAULT_LEASE_TTL)?;
        if lease_ttl < std::time::Duration::from_millis(300) {
            return Err(format!("{PARAM_LEASE_TTL} must be at least 300ms"));
        }
        let spool_limit = match get(PARAM_SPOOL_LIMIT) {
            Some(v) => parse_size(&v)
                .ok_or_else(|| format!("{PARAM_SPOOL_LIMIT}={v:?} is not a size (e.g. 512M)"))?,
            None => DEFAULT_SPOOL_LIMIT,
        };
        Ok(Self {
            replica_url,
            min_interval,
            spool_limit,
            levels,
            snapshot_interval,
            retention,
            l0_retention,
            lease,
            lease_ttl,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_file_name_with_url_characters_stays_a_path_under_the_base_url() {
        assert_eq!(url_path_escape("a?b#c%d.db"), "a%3Fb%23c%25d.db");
        assert_eq!(
            join_base("s3://b/x?endpoint=http://h", &url_path_escape("t.db?x=1")),
            "s3://b/x/t.db%3Fx=1?endpoint=http://h"
        );
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn uri_parameters_win_and_unknown_ones_are_errors() {
        let c = DbConfig::resolve(
            Path::new("/d/app.db"),
            &p(&[
                ("vfs", "litestream"),
                ("replica", "file:///r"),
                ("min-interval", "1s"),
            ]),
        )
        .unwrap();
        assert_eq!(c.replica_url, "file:///r");
        assert_eq!(c.min_interval, Duration::from_secs(1));
        let err = DbConfig::resolve(
            Path::new("/d/app.db"),
            &p(&[("replica", "file:///r"), ("colour", "red")]),
        )
        .unwrap_err();
        assert!(err.contains("unknown URI parameter \"colour\""), "{err}");
        let err =
            DbConfig::resolve(Path::new("/d/app.db"), &p(&[("replica", "ftp://x/y")])).unwrap_err();
        assert!(err.contains("unsupported scheme"), "{err}");
        let err = DbConfig::resolve(
            Path::new("/d/app.db"),
            &p(&[("replica", "file:///r"), ("min-interval", "soon")]),
        )
        .unwrap_err();
        assert!(err.contains("min-interval"), "{err}");
    }

    #[test]
    fn out_of_range_durations_are_refused_quoting_them() {
        let resolve = |k: &str, v: &str| {
            DbConfig::resolve(
                Path::new("/d/app.db"),
                &p(&[("replica", "file:///r"), (k, v)]),
            )
        };
        // 99999999999999999999h used to saturate and give a lease expiring in 1970.
        for key in ["lease-ttl", "retention", "min-interval", "levels"] {
            let err = resolve(key, "99999999999999999999h").unwrap_err();
            assert!(
                err.contains(&format!("{key}=\"99999999999999999999h\""))
                    && err.contains("out of range"),
                "{key}: {err}"
            );
        }
        let err = resolve("lease-ttl", "1e3s").unwrap_err();
        assert!(err.contains("\"1e3s\" is not a duration"), "{err}");
        assert_eq!(
            resolve("retention", "876000h").unwrap().retention,
            MAX_DURATION
        );
        let err = ReplicaConfig::resolve(
            Path::new("/d/v.db"),
            &p(&[
                ("replica", "file:///r"),
                ("poll-interval", "99999999999999999999h"),
            ]),
        )
        .unwrap_err();
        assert!(
            err.contains("poll-interval=") && err.contains("out of range"),
            "{err}"
        );
    }

    #[test]
    fn replica_txid_and_timestamp_take_only_their_own_form() {
        use crate::restore::Target;
        let resolve = |k: &str, v: &str| {
            ReplicaConfig::resolve(
                Path::new("/d/v.db"),
                &p(&[("replica", "file:///r"), (k, v)]),
            )
            .map(|(_, t)| t)
        };
        assert_eq!(resolve("txid", "3"), Ok(Target::Txid(3)));
        // `timestamp=3` pinned TXID 3; `txid=2099-01-01 00:00:00` was read as a time.
        let err = resolve("timestamp", "3").unwrap_err();
        assert!(err.contains("timestamp=\"3\" is not a timestamp"), "{err}");
        let err = resolve("txid", "2099-01-01 00:00:00").unwrap_err();
        assert!(
            err.contains("txid=\"2099-01-01 00:00:00\" is not a TXID"),
            "{err}"
        );
        assert!(matches!(
            resolve("timestamp", "2099-01-01 00:00:00"),
            Ok(Target::Timestamp(_))
        ));
        let err = resolve("timestamp", "2026-01-0é 00:00:00").unwrap_err();
        assert!(err.contains("2026-01-0é"), "{err}");
    }

    #[test]
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Ok(Duration::ZERO));
        assert_eq!(parse_duration("1.5s"), Ok(Duration::from_millis(1500)));
        assert_eq!(parse_duration("876000h"), Ok(MAX_DURATION));
        assert!(parse_duration("x").unwrap_err().contains("not a duration"));
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("-1"), None);
    }
}

/// URI parameters of the `litestream-replica` VFS.
pub const PARAM_TXID: &str = "txid";
pub const PARAM_TIMESTAMP: &str = "timestamp";
pub const PARAM_POLL_INTERVAL: &str = "poll-interval";
pub const PARAM_PREFETCH: &str = "prefetch";
pub const ENV_POLL_INTERVAL: &str = "LITESTREAM_POLL_INTERVAL";
const REPLICA_PARAMS: &[&str] = &[
    PARAM_REPLICA,
    PARAM_TXID,
    PARAM_TIMESTAMP,
    PARAM_POLL_INTERVAL,
    PARAM_PREFETCH,
];

pub const DEFAULT_POLL_INTERVAL: Duration = Duration::from_secs(1);
/// Pages read ahead at most per read (B-tree children, sequential runs).
pub const DEFAULT_PREFETCH: usize = 32;

/// How a replica is opened for reading.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReplicaConfig {
    pub replica_url: String,
    pub poll_interval: Duration,
    /// Pages read ahead (sequential runs and B-tree children); 0 disables prefetch.
    pub prefetch: usize,
}

impl ReplicaConfig {
    /// From the URI of a database opened with `vfs=litestream-replica`, with the pinned
    /// target (`txid=` or `timestamp=`, else `Latest`).
    pub fn resolve(
        db_path: &Path,
        params: &[(String, String)],
    ) -> Result<(Self, crate::restore::Target), String> {
        let get = |k: &str| {
            params
                .iter()
                .find(|(key, _)| key == k)
                .map(|(_, v)| v.clone())
        };
        let replica_url = check_params_and_url(db_path, params, REPLICA_PARAMS)?;
        let poll_interval = match get(PARAM_POLL_INTERVAL).or_else(|| env(ENV_POLL_INTERVAL)) {
            Some(v) => match parse_duration(&v) {
                Ok(d) if !d.is_zero() => d,
                Ok(_) => return Err(format!("{PARAM_POLL_INTERVAL}={v:?} must not be zero")),
                Err(why) => return Err(format!("{PARAM_POLL_INTERVAL}={v:?} {why}")),
            },
            None => DEFAULT_POLL_INTERVAL,
        };
        let prefetch = match get(PARAM_PREFETCH) {
            Some(v) => v
                .parse()
                .map_err(|_| format!("{PARAM_PREFETCH}={v:?} is not a number of pages"))?,
            None => DEFAULT_PREFETCH,
        };
        // Each takes only its own form: `timestamp=3` is no TXID, `txid=2099-01-01` no time.
        let target = match (get(PARAM_TXID), get(PARAM_TIMESTAMP)) {
            (Some(_), Some(_)) => {
                return Err(format!("{PARAM_TXID} and {PARAM_TIMESTAMP} are exclusive"))
            }
            (Some(t), None) => crate::restore::Target::parse_txid(PARAM_TXID, &t)?,
            (None, Some(t)) => crate::restore::Target::parse_timestamp(PARAM_TIMESTAMP, &t)?,
            (None, None) => crate::restore::Target::Latest,
        };
        Ok((
            Self {
                replica_url,
                poll_interval,
                prefetch,
            },
            target,
        ))
    }
}
