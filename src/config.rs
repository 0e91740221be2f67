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
];

/// Our URI parameters.
pub const PARAM_REPLICA: &str = "replica";
pub const PARAM_MIN_INTERVAL: &str = "min-interval";
pub const PARAM_SPOOL_LIMIT: &str = "spool-limit";

pub const ENV_REPLICA_URL: &str = "LITESTREAM_REPLICA_URL";
pub const ENV_REPLICA_BASE_URL: &str = "LITESTREAM_REPLICA_BASE_URL";
pub const ENV_DATA_DIR: &str = "LITESTREAM_DATA_DIR";
pub const ENV_MIN_INTERVAL: &str = "LITESTREAM_MIN_INTERVAL";

/// Shortest time between two L0 uploads of one database (commits in between coalesce).
pub const DEFAULT_MIN_INTERVAL: Duration = Duration::from_millis(100);
/// Unshipped data the local spool may hold before it gives up and resyncs with a snapshot.
pub const DEFAULT_SPOOL_LIMIT: u64 = 1 << 30;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DbConfig {
    pub replica_url: String,
    pub min_interval: Duration,
    pub spool_limit: u64,
}

/// Parses `100ms`, `2s`, `1m` or a bare number of milliseconds.
pub fn parse_duration(s: &str) -> Option<Duration> {
    let s = s.trim();
    let (num, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map_or((s, "ms"), |i| (&s[..i], &s[i..]));
    let n: f64 = num.parse().ok()?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    };
    (ms >= 0.0 && ms.is_finite()).then(|| Duration::from_micros((ms * 1000.0) as u64))
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

/// The replica URL of a database opened without an explicit one.
fn url_from_env(db_path: &Path) -> Result<String, String> {
    if let Some(url) = env(ENV_REPLICA_URL) {
        return Ok(url);
    }
    let Some(base) = env(ENV_REPLICA_BASE_URL) else {
        return Err(format!(
            "no replica for {}: add ?replica=URL to the database URI, or set {ENV_REPLICA_URL} or {ENV_REPLICA_BASE_URL}",
            db_path.display()
        ));
    };
    // Litestream's directory layout: <base>/<path relative to the data dir, or the file name>.
    let relative: PathBuf = match env(ENV_DATA_DIR) {
        Some(root) => db_path
            .strip_prefix(&root)
            .map(Path::to_path_buf)
            .map_err(|_| format!("{} is not under {ENV_DATA_DIR}={root}", db_path.display()))?,
        None => PathBuf::from(db_path.file_name().unwrap_or_default()),
    };
    let rel = relative.to_string_lossy().replace('\\', "/");
    Ok(match base.split_once('?') {
        Some((b, q)) => format!("{}/{rel}?{q}", b.trim_end_matches('/')),
        None => format!("{}/{rel}", base.trim_end_matches('/')),
    })
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
        for (key, _) in params {
            let known = SQLITE_PARAMS.contains(&key.as_str())
                || [PARAM_REPLICA, PARAM_MIN_INTERVAL, PARAM_SPOOL_LIMIT].contains(&key.as_str());
            if !known {
                return Err(format!(
                    "unknown URI parameter {key:?} for {} (known: {PARAM_REPLICA}, {PARAM_MIN_INTERVAL}, {PARAM_SPOOL_LIMIT})",
                    db_path.display()
                ));
            }
        }
        let replica_url = match get(PARAM_REPLICA) {
            Some(u) => u,
            None => url_from_env(db_path)?,
        };
        // Fail early on a bad URL, naming it.
        crate::storage::ReplicaUrl::parse(&replica_url).map_err(|e| e.to_string())?;
        let min_interval = match get(PARAM_MIN_INTERVAL).or_else(|| env(ENV_MIN_INTERVAL)) {
            Some(v) => parse_duration(&v).ok_or_else(|| {
                format!("{PARAM_MIN_INTERVAL}={v:?} is not a duration (e.g. 100ms, 1s)")
            })?,
            None => DEFAULT_MIN_INTERVAL,
        };
        let spool_limit = match get(PARAM_SPOOL_LIMIT) {
            Some(v) => parse_size(&v)
                .ok_or_else(|| format!("{PARAM_SPOOL_LIMIT}={v:?} is not a size (e.g. 512M)"))?,
            None => DEFAULT_SPOOL_LIMIT,
        };
        Ok(Self {
            replica_url,
            min_interval,
            spool_limit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
    fn durations_and_sizes() {
        assert_eq!(parse_duration("250ms"), Some(Duration::from_millis(250)));
        assert_eq!(parse_duration("0"), Some(Duration::ZERO));
        assert_eq!(parse_duration("1.5s"), Some(Duration::from_millis(1500)));
        assert_eq!(parse_duration("x"), None);
        assert_eq!(parse_size("64M"), Some(64 << 20));
        assert_eq!(parse_size("1g"), Some(1 << 30));
        assert_eq!(parse_size("-1"), None);
    }
}
