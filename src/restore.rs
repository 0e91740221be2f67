//! Point-in-time restore: Litestream's plan (the best snapshot, then the greedy
//! largest-MaxTXID chain over every level), parallel downloads to temporary files, and a
//! streaming merge straight into the database file. Memory does not grow with database size.
//! Shared by `litestream_restore()` and the tests.

use std::fs;
use std::io::BufReader;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use crate::ltx::{self, Txid};
use crate::storage::{LtxFileInfo, StorageError, Store, SNAPSHOT_LEVEL};

/// What to restore to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    Latest,
    /// Inclusive.
    Txid(Txid),
    /// Nanoseconds since the epoch, every digit given kept: the files whose (millisecond)
    /// timestamp is strictly before it, as Litestream's `-timestamp` (`CreatedAt.Before`).
    Timestamp(i128),
}

const TXID_FORMS: &str = "a TXID (an integer or 16 hex digits)";
const TIMESTAMP_FORMS: &str = "a timestamp (RFC 3339, or YYYY-MM-DD HH:MM[:SS[.fraction]] in UTC)";

impl Target {
    /// `NULL`/`latest`, an integer or 16 hex digits (TXID), or a timestamp (RFC 3339 or
    /// SQLite's `YYYY-MM-DD HH:MM:SS[.SSS]`, UTC unless a zone is given).
    pub fn parse(s: &str) -> Result<Self, String> {
        let t = s.trim();
        if t.is_empty() || t.eq_ignore_ascii_case("latest") {
            return Ok(Self::Latest);
        }
        if let Some(txid) = txid_of(t) {
            return Ok(Self::Txid(txid));
        }
        parse_timestamp(t)
            .map(Self::Timestamp)
            .ok_or_else(|| format!("restore target {s:?} is not {TXID_FORMS} or {TIMESTAMP_FORMS}"))
    }

    /// A TXID only (the replica VFS's `txid=`): a timestamp is refused, not reinterpreted.
    pub fn parse_txid(what: &str, s: &str) -> Result<Self, String> {
        txid_of(s.trim())
            .map(Self::Txid)
            .ok_or_else(|| format!("{what}={s:?} is not {TXID_FORMS}"))
    }

    /// A timestamp only (the replica VFS's `timestamp=`): a TXID is refused, not
    /// reinterpreted.
    pub fn parse_timestamp(what: &str, s: &str) -> Result<Self, String> {
        parse_timestamp(s.trim())
            .map(Self::Timestamp)
            .ok_or_else(|| format!("{what}={s:?} is not {TIMESTAMP_FORMS}"))
    }
}

fn txid_of(s: &str) -> Option<Txid> {
    if s.len() == 16 && s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return u64::from_str_radix(s, 16).ok();
    }
    if s.bytes().all(|b| b.is_ascii_digit()) {
        return s.parse::<u64>().ok();
    }
    None
}

/// Nanoseconds since the epoch of an RFC 3339 timestamp or one of SQLite's forms (a space
/// instead of T, no zone meaning UTC, seconds optional).
fn parse_timestamp(s: &str) -> Option<i128> {
    // Every form is ASCII; anything else is not a timestamp (and must not be sliced).
    if !s.is_ascii() || s.len() < 10 {
        return None;
    }
    if let Some(ns) = crate::timefmt::parse_rfc3339_nanos(s) {
        return Some(ns);
    }
    let mut t = s.replacen(' ', "T", 1);
    let has_zone = t.ends_with('Z') || t.ends_with('z') || t[10..].contains(['+', '-']);
    if !has_zone {
        t.push('Z');
    }
    if t.len() == 17 {
        // YYYY-MM-DDTHH:MMZ
        t.insert_str(16, ":00");
    }
    crate::timefmt::parse_rfc3339_nanos(&t)
}

#[derive(Debug, Clone, Default, PartialEq, serde::Serialize)]
pub struct RestoreSummary {
    pub txid: String,
    pub timestamp: String,
    pub page_size: u32,
    pub pages: u64,
    pub files: usize,
    pub bytes: u64,
    pub seconds: f64,
    pub output: String,
}

#[derive(Debug, Clone, Copy, Default)]
pub struct RestoreOptions {
    pub overwrite: bool,
}

/// The error of a restore; the message names the object or file at fault.
#[derive(Debug, thiserror::Error)]
pub enum RestoreError {
    #[error("{0}")]
    Storage(#[from] StorageError),
    #[error("{what}: {source}")]
    Ltx { what: String, source: ltx::LtxError },
    #[error("{what}: {source}")]
    Io {
        what: String,
        source: std::io::Error,
    },
    #[error("no backup at {0}: the replica has no LTX files")]
    Empty(String),
    /// The message says what is missing and why it may be (see [`plan`]).
    #[error("{0}")]
    NotAvailable(String),
    #[error("non-contiguous LTX files in the replica: after TXID {after:#x} the next file of level {level} starts at {next:#x}")]
    Gap { after: Txid, level: u8, next: Txid },
    #[error("{0} already exists (pass 'overwrite' to replace it)")]
    Exists(String),
    #[error("{0} is open with vfs=litestream in this process: close its connections before restoring over it")]
    OpenHere(String),
}

/// Nothing to restore is SQLITE_EMPTY; a local file we cannot create is SQLITE_CANTOPEN;
/// the rest (a corrupt object: the replica's fault, not the database's; a restore over a
/// file) is a plain error.
impl From<RestoreError> for crate::Error {
    fn from(e: RestoreError) -> Self {
        let message = e.to_string();
        match e {
            RestoreError::Storage(e) => e.into(),
            RestoreError::Empty(_) | RestoreError::NotAvailable(_) => crate::Error::empty(message),
            RestoreError::Io { source, .. }
                if matches!(
                    source.kind(),
                    std::io::ErrorKind::NotFound
                        | std::io::ErrorKind::PermissionDenied
                        | std::io::ErrorKind::NotADirectory
                ) =>
            {
                crate::Error::cant_open(message)
            }
            RestoreError::Ltx { .. }
            | RestoreError::Io { .. }
            | RestoreError::Gap { .. }
            | RestoreError::Exists(_)
            | RestoreError::OpenHere(_) => crate::Error::other(message),
        }
    }
}

/// How many HEAD requests `list_all` keeps in flight for the files' exact timestamps.
const HEADS_IN_FLIGHT: usize = 16;

/// Every LTX file of the replica, by level (0..=9), with CreatedAt as Litestream uses it:
/// the LTX timestamp (file mtime, or the S3 `litestream-timestamp` metadata when a timestamp
/// target needs it).
pub async fn list_all(
    store: &Store,
    need_timestamps: bool,
) -> Result<Vec<LtxFileInfo>, RestoreError> {
    use futures_util::{StreamExt, TryStreamExt};
    let mut all = store.list_every_level().await?;
    if need_timestamps && matches!(store, Store::S3(_)) {
        // A LIST gives S3's LastModified, in whole seconds on some stores; the exact time is
        // in each object's metadata: one HEAD per file, several in flight (a replica of
        // thousands of files would otherwise take one round trip each, in turn).
        let keys: Vec<String> = all
            .iter()
            .map(|f| store.ltx_key(f.level, f.min_txid, f.max_txid))
            .collect();
        let stamps: Vec<Option<i64>> = futures_util::stream::iter(keys)
            .map(|key| async move {
                let meta = store.head(&key).await?;
                Ok::<_, RestoreError>(meta.timestamp_ms)
            })
            .buffered(HEADS_IN_FLIGHT)
            .try_collect()
            .await?;
        for (f, ts) in all.iter_mut().zip(stamps) {
            if let Some(ts) = ts {
                f.created_at_ms = ts;
            }
        }
    }
    Ok(all)
}

/// Litestream's `CalcRestorePlan` over `files` (every level).
pub fn plan(
    files: &[LtxFileInfo],
    target: Target,
    describe: &str,
) -> Result<Vec<LtxFileInfo>, RestoreError> {
    let (max_txid, before_ns) = match target {
        Target::Latest => (None, None),
        Target::Txid(t) => (Some(t), None),
        Target::Timestamp(ns) => (None, Some(ns)),
    };
    // Litestream compares its millisecond CreatedAt with the target as given (nanoseconds).
    let fits = |f: &LtxFileInfo| {
        max_txid.is_none_or(|t| f.max_txid <= t)
            && before_ns.is_none_or(|ns| i128::from(f.created_at_ms) * 1_000_000 < ns)
    };
    if files.is_empty() {
        return Err(RestoreError::Empty(describe.to_string()));
    }
    let mut plan = Vec::new();
    // The last snapshot (in listing order) that fits the target.
    if let Some(snap) = files.iter().rfind(|f| f.level == SNAPSHOT_LEVEL && fits(f)) {
        plan.push(snap.clone());
    }
    let mut cur = plan.last().map_or(0, |f| f.max_txid);
    loop {
        if max_txid.is_some_and(|t| cur >= t) {
            break;
        }
        let best = files
            .iter()
            .filter(|f| {
                f.level != SNAPSHOT_LEVEL && f.min_txid <= cur + 1 && f.max_txid > cur && fits(f)
            })
            .min_by(|a, b| {
                b.max_txid
                    .cmp(&a.max_txid)
                    .then(a.min_txid.cmp(&b.min_txid))
                    .then(b.level.cmp(&a.level))
                    .then(a.created_at_ms.cmp(&b.created_at_ms))
            });
        match best {
            Some(f) => {
                cur = f.max_txid;
                plan.push(f.clone());
            }
            None => break,
        }
    }
    if target == Target::Latest {
        // Any level whose next file starts beyond where we got is a hole in the replica.
        for level in 0..SNAPSHOT_LEVEL {
            if let Some(next) = files.iter().find(|f| f.level == level && f.max_txid > cur) {
                if next.min_txid > cur + 1 {
                    return Err(RestoreError::Gap {
                        after: cur,
                        level,
                        next: next.min_txid,
                    });
                }
            }
        }
    }
    let reached = max_txid.is_none_or(|t| cur >= t);
    if plan.is_empty() || plan[0].min_txid != 1 || !reached {
        let latest = files.iter().map(|f| f.max_txid).max().unwrap_or(0);
        let missing = |what: String| {
            format!("the replica has no files for {what} (it may be outside retention)")
        };
        let why = match target {
            Target::Txid(t) if t > latest => {
                format!("TXID {t:#018x} is after the latest TXID in the replica ({latest:#018x})")
            }
            Target::Latest => missing("the latest state".to_string()),
            Target::Txid(t) => missing(format!("TXID {t:#018x}")),
            Target::Timestamp(ns) => {
                missing(format!("timestamp {}", crate::timefmt::rfc3339_nanos(ns)))
            }
        };
        return Err(RestoreError::NotAvailable(why));
    }
    Ok(plan)
}

/// How many pages each of the local LTX files `paths` (with `headers`) holds, from their
/// page indexes, for the `ltx::*_known` merges (0 for files not read); None when the page
/// size never changes. Only files at or after the last page-size change are read.
pub(crate) fn page_counts(
    headers: &[ltx::Header],
    paths: &[PathBuf],
) -> Result<Option<Vec<u32>>, RestoreError> {
    use std::os::unix::fs::FileExt;
    let change = ltx::rebase_point(headers);
    if change == 0 {
        return Ok(None);
    }
    let mut counts = vec![0u32; headers.len()];
    for i in change..headers.len() {
        let io = |source| RestoreError::Io {
            what: paths[i].display().to_string(),
            source,
        };
        let ltx_err = |source| RestoreError::Ltx {
            what: paths[i].display().to_string(),
            source,
        };
        let f = fs::File::open(&paths[i]).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        let read_from = |start: u64| -> Result<Vec<u8>, RestoreError> {
            let mut buf = vec![0u8; (size - start) as usize];
            f.read_exact_at(&mut buf, start).map_err(io)?;
            Ok(buf)
        };
        let tail = read_from(size - ltx::ESTIMATED_PAGE_INDEX_SIZE.min(size))?;
        let index = match ltx::PageIndex::locate(&tail, size).map_err(ltx_err)? {
            ltx::IndexLocation::InTail => ltx::PageIndex::parse_tail(&tail, size),
            ltx::IndexLocation::FetchFrom(start) => {
                ltx::PageIndex::parse_tail(&read_from(start)?, size)
            }
        }
        .map_err(ltx_err)?;
        counts[i] = index.entries.len() as u32;
    }
    Ok(Some(counts))
}

/// Files downloaded at once.
const PARALLEL_DOWNLOADS: usize = 4;

/// Downloads one LTX file to `path`, streamed (one GET, resumed if cut), checking its size.
pub(crate) async fn download(
    store: Arc<Store>,
    file: LtxFileInfo,
    path: PathBuf,
) -> Result<u64, RestoreError> {
    let key = store.ltx_key(file.level, file.min_txid, file.max_txid);
    let mut out = fs::File::create(&path).map_err(|source| RestoreError::Io {
        what: path.display().to_string(),
        source,
    })?;
    let got = store.get_into(&key, 0, &mut out).await?;
    if got != file.size {
        return Err(StorageError::Protocol {
            what: key,
            detail: format!("object has {got} bytes, listed as {}", file.size),
        }
        .into());
    }
    Ok(got)
}

fn fsync_dir(path: &Path) -> std::io::Result<()> {
    fs::File::open(
        path.parent()
            .filter(|p| !p.as_os_str().is_empty())
            .unwrap_or(Path::new(".")),
    )?
    .sync_all()
}

/// The files SQLite keeps beside a database and applies to it at open.
const SIDECARS: [&str; 3] = ["-wal", "-shm", "-journal"];

/// Removes `out`'s `-wal`, `-shm` and `-journal`; whether there was any.
fn remove_sidecars(out: &Path) -> std::io::Result<bool> {
    let mut any = false;
    for suffix in SIDECARS {
        let p = PathBuf::from(format!("{}{suffix}", out.display()));
        match fs::remove_file(&p) {
            Ok(()) => any = true,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => {
                return Err(std::io::Error::new(
                    e.kind(),
                    format!("cannot remove {}: {e}", p.display()),
                ))
            }
        }
    }
    Ok(any)
}

/// The path under which this process has `out` open with `vfs=litestream`, if it does
/// (SQLite names files by their full path; `out` may be relative or a symlink).
fn open_here(out: &Path) -> Option<PathBuf> {
    let mut candidates = vec![out.to_path_buf()];
    if let Ok(abs) = std::path::absolute(out) {
        candidates.push(abs);
    }
    if let Ok(real) = fs::canonicalize(out) {
        candidates.push(real);
    }
    candidates
        .into_iter()
        .find(|p| crate::writer::Replicator::find(p).is_some())
}

/// Times a plan is made again when one of its files vanished before it was read: a writer's
/// compaction or retention deletes files that newer ones replace, between a listing and the
/// reads that follow it.
pub const REPLANS: usize = 3;

impl RestoreError {
    /// A file of the plan was deleted after it was listed (planning again finds its
    /// replacement).
    pub fn is_vanished_file(&self) -> bool {
        matches!(self, Self::Storage(e) if e.is_not_found())
    }
}

/// Restores `store` at `target` into `out`. Writes `<out>.tmp`, fsyncs, removes what SQLite
/// would apply to it (`-wal`, `-shm`, `-journal` of a database overwritten), renames, fsyncs
/// the directory: `out` is either absent, the old file, or complete. A database this process
/// has open with `vfs=litestream` is refused.
pub async fn restore(
    store: Arc<Store>,
    out: &Path,
    target: Target,
    opts: RestoreOptions,
) -> Result<RestoreSummary, RestoreError> {
    let mut replans = 0;
    loop {
        match restore_once(store.clone(), out, target, opts).await {
            Err(e) if e.is_vanished_file() && replans < REPLANS => {
                replans += 1;
                log::info!("restore of {}: {e}; planning again", out.display());
            }
            result => return result,
        }
    }
}

async fn restore_once(
    store: Arc<Store>,
    out: &Path,
    target: Target,
    opts: RestoreOptions,
) -> Result<RestoreSummary, RestoreError> {
    let started = Instant::now();
    if out.exists() && !opts.overwrite {
        return Err(RestoreError::Exists(out.display().to_string()));
    }
    if let Some(r) = open_here(out) {
        return Err(RestoreError::OpenHere(r.display().to_string()));
    }
    let files = list_all(&store, matches!(target, Target::Timestamp(_))).await?;
    let plan = plan(&files, target, &store.describe())?;
    let total: u64 = plan.iter().map(|f| f.size).sum();
    log::info!(
        "restoring {} from {} files ({total} bytes) to {}",
        store.describe(),
        plan.len(),
        out.display()
    );

    let work = PathBuf::from(format!("{}.restore-tmp", out.display()));
    let tmp_db = PathBuf::from(format!("{}.tmp", out.display()));
    let result = async {
        let io = |what: &Path| {
            let what = what.display().to_string();
            move |source| RestoreError::Io { what, source }
        };
        fs::create_dir_all(&work).map_err(io(&work))?;
        // Downloads, a few at a time; each file lands on disk, never whole in memory.
        let paths: Vec<PathBuf> = (0..plan.len())
            .map(|i| work.join(format!("{i:06}.ltx")))
            .collect();
        let mut downloaded = 0u64;
        let mut next_log = 10;
        for (files, paths) in plan
            .chunks(PARALLEL_DOWNLOADS)
            .zip(paths.chunks(PARALLEL_DOWNLOADS))
        {
            let mut tasks: tokio::task::JoinSet<_> = files
                .iter()
                .zip(paths)
                .map(|(f, p)| download(store.clone(), f.clone(), p.clone()))
                .collect();
            // On the first failure the others are aborted (dropping the set): none may write
            // into the work directory of a next attempt.
            while let Some(done) = tasks.join_next().await {
                downloaded += done.map_err(|e| RestoreError::Io {
                    what: "download task".into(),
                    source: std::io::Error::other(e),
                })??;
            }
            let percent = downloaded * 100 / total.max(1);
            if percent >= next_log {
                log::info!("restore of {}: {percent}% downloaded", out.display());
                next_log = percent / 10 * 10 + 10;
            }
        }
        // Merge straight into the database file (blocking I/O off the async workers).
        let (plan2, paths2, tmp2) = (plan.clone(), paths.clone(), tmp_db.clone());
        let summary =
            tokio::task::spawn_blocking(move || -> Result<ltx::ApplySummary, RestoreError> {
                let mut decoders = Vec::with_capacity(paths2.len());
                for (f, p) in plan2.iter().zip(&paths2) {
                    let what = || {
                        format!(
                            "LTX file {} (level {})",
                            ltx::file_name(f.min_txid, f.max_txid),
                            f.level
                        )
                    };
                    let file = fs::File::open(p).map_err(|source| RestoreError::Io {
                        what: what(),
                        source,
                    })?;
                    let decoder = ltx::Decoder::new(BufReader::with_capacity(256 << 10, file))
                        .and_then(|d| {
                            d.header().check_named(f.min_txid, f.max_txid)?;
                            Ok(d)
                        })
                        .map_err(|source| RestoreError::Ltx {
                            what: what(),
                            source,
                        })?;
                    decoders.push(decoder);
                }
                let mut out = fs::File::create(&tmp2).map_err(|source| RestoreError::Io {
                    what: tmp2.display().to_string(),
                    source,
                })?;
                let headers: Vec<ltx::Header> = decoders.iter().map(|d| *d.header()).collect();
                let counts = page_counts(&headers, &paths2)?;
                let summary = ltx::apply_to_database_known(decoders, &mut out, counts.as_deref())
                    .map_err(|source| match source {
                    ltx::LtxError::Input { index, source } => {
                        let f = &plan2[index];
                        RestoreError::Ltx {
                            what: format!(
                                "LTX file {} (level {})",
                                ltx::file_name(f.min_txid, f.max_txid),
                                f.level
                            ),
                            source: *source,
                        }
                    }
                    source => RestoreError::Ltx {
                        what: format!(
                            "applying {} LTX files from TXID 1 to {:#x}",
                            plan2.len(),
                            plan2.last().map_or(0, |f| f.max_txid)
                        ),
                        source,
                    },
                })?;
                out.sync_all().map_err(|source| RestoreError::Io {
                    what: tmp2.display().to_string(),
                    source,
                })?;
                Ok(summary)
            })
            .await
            .map_err(|e| RestoreError::Io {
                what: "restore task".into(),
                source: std::io::Error::other(e),
            })??;
        // What SQLite would replay onto the new file (the old database's WAL, or a hot
        // journal) goes first, durably: a crash in between leaves the old database without
        // them (it was being replaced), never the new one with them.
        // Checked again: a connection may have opened it while the files downloaded.
        if let Some(r) = open_here(out) {
            return Err(RestoreError::OpenHere(r.display().to_string()));
        }
        if remove_sidecars(out).map_err(io(out))? {
            fsync_dir(out).map_err(io(out))?;
        }
        fs::rename(&tmp_db, out).map_err(io(out))?;
        fsync_dir(out).map_err(io(out))?;
        // Restored to the replica's newest TXID: opening it with vfs=litestream on the same
        // replica continues the chain from there (Litestream lost this: its issue #781).
        // An older target would fork history, so it gets no position (a full resync).
        let newest = files.iter().map(|f| f.max_txid).max().unwrap_or(0);
        if summary.header.max_txid == newest {
            crate::writer::record_restored(out, &summary.header).map_err(io(out))?;
        }
        Ok::<_, RestoreError>(RestoreSummary {
            txid: ltx::format_txid(summary.header.max_txid),
            timestamp: crate::timefmt::rfc3339_millis(summary.header.timestamp),
            page_size: summary.header.page_size,
            pages: summary.pages,
            files: plan.len(),
            bytes: downloaded,
            seconds: started.elapsed().as_secs_f64(),
            output: out.display().to_string(),
        })
    }
    .await;
    let _ = fs::remove_dir_all(&work);
    if result.is_err() {
        let _ = fs::remove_file(&tmp_db);
    }
    result
}

/// The synchronous entry point (SQL function, tests).
pub fn restore_blocking(
    url: &str,
    out: &Path,
    target: Target,
    opts: RestoreOptions,
) -> Result<RestoreSummary, crate::Error> {
    let store = Arc::new(Store::open(url)?);
    Ok(crate::runtime::block_on(restore(store, out, target, opts))?)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: u8, min: u64, max: u64, created: i64) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 1,
            created_at_ms: created,
        }
    }

    #[test]
    fn plan_is_litestreams() {
        // The layout of the 0.5.17 vector replica.
        let files = vec![
            f(0, 0x22, 0x22, 22),
            f(0, 0x23, 0x23, 23),
            f(0, 0x24, 0x24, 24),
            f(0, 0x25, 0x25, 25),
            f(1, 0x2, 0x4, 4),
            f(1, 0x1e, 0x20, 20),
            f(1, 0x21, 0x21, 21),
            f(1, 0x23, 0x25, 25),
            f(2, 0xd, 0x1d, 19),
            f(9, 1, 1, 1),
            f(9, 1, 4, 4),
            f(9, 1, 0x1d, 19),
        ];
        let p = plan(&files, Target::Latest, "x").unwrap();
        let got: Vec<_> = p
            .iter()
            .map(|f| (f.level, f.min_txid, f.max_txid))
            .collect();
        assert_eq!(
            got,
            vec![
                (9, 1, 0x1d),
                (1, 0x1e, 0x20),
                (1, 0x21, 0x21),
                (0, 0x22, 0x22),
                (1, 0x23, 0x25)
            ]
        );
        let p = plan(&files, Target::Txid(0x1d), "x").unwrap();
        assert_eq!(p.len(), 1);
        let p = plan(&files, Target::Txid(0x24), "x").unwrap();
        assert_eq!(p.last().map(|f| (f.level, f.max_txid)), Some((0, 0x24)));
        assert!(matches!(
            plan(&files, Target::Txid(0x26), "x"),
            Err(RestoreError::NotAvailable(_))
        ));
        let p = plan(&files, Target::Timestamp(21 * MS), "x").unwrap();
        assert_eq!(p.last().map(|f| f.max_txid), Some(0x20));
    }

    const MS: i128 = 1_000_000;

    #[test]
    fn timestamp_targets_keep_their_nanoseconds() {
        // Litestream includes a file when CreatedAt.Before(target), the target as parsed
        // (nanoseconds): from 1 ns to 999.999 µs after a file's millisecond timestamp, the
        // file is in; at exactly its timestamp, it is out.
        let files = vec![f(9, 1, 1, 1000), f(0, 2, 2, 2000)];
        let last = |t| plan(&files, t, "x").unwrap().last().unwrap().max_txid;
        assert_eq!(last(Target::Timestamp(2000 * MS)), 1);
        assert_eq!(last(Target::Timestamp(2000 * MS + 1)), 2);
        assert_eq!(last(Target::Timestamp(2000 * MS + 999_999)), 2);
        // Through the parser, as `timestamp=`, `litestream_set_time()` and restore take it.
        let at = |s: &str| last(Target::parse(s).unwrap());
        assert_eq!(at("1970-01-01T00:00:02Z"), 1);
        assert_eq!(at("1970-01-01T00:00:02.000000001Z"), 2);
        assert_eq!(at("1970-01-01T00:00:02.000999Z"), 2);
        assert_eq!(at("1970-01-01 00:00:02.0005"), 2);
        assert_eq!(
            Target::parse_timestamp("timestamp", "1970-01-01T00:00:02.000000001Z"),
            Ok(Target::Timestamp(2000 * MS + 1))
        );
        // The message of a target before everything keeps the digits given.
        let err = plan(&files, Target::Timestamp(1000 * MS - 1), "x").unwrap_err();
        assert!(
            err.to_string().contains("1970-01-01T00:00:00.999999999Z"),
            "{err}"
        );
    }

    #[test]
    fn txid_and_timestamp_take_only_their_own_form() {
        assert_eq!(Target::parse_txid("txid", "3"), Ok(Target::Txid(3)));
        assert_eq!(
            Target::parse_txid("txid", "000000000000001d"),
            Ok(Target::Txid(0x1d))
        );
        let err = Target::parse_txid("txid", "2099-01-01 00:00:00").unwrap_err();
        assert!(err.contains("txid=\"2099-01-01 00:00:00\""), "{err}");
        assert!(err.contains("not a TXID"), "{err}");
        let err = Target::parse_timestamp("timestamp", "3").unwrap_err();
        assert!(err.contains("timestamp=\"3\""), "{err}");
        assert!(err.contains("not a timestamp"), "{err}");
        assert!(Target::parse_timestamp("timestamp", "000000000000001d").is_err());
        assert!(Target::parse_txid("txid", "latest").is_err());
    }

    #[test]
    fn non_ascii_targets_are_errors_quoting_them() {
        // Byte 10 falls inside a character: slicing there used to panic.
        for bad in [
            "2026-01-0é 00:00:00",
            "2026-01-01é00:00",
            "ü",
            "２０２６-01-01",
        ] {
            let err = Target::parse(bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
            let err = Target::parse_timestamp("timestamp", bad).unwrap_err();
            assert!(err.contains(&format!("{bad:?}")), "{bad}: {err}");
        }
    }

    #[test]
    fn gaps_are_errors() {
        let files = vec![f(9, 1, 4, 1), f(0, 6, 6, 2)];
        assert!(matches!(
            plan(&files, Target::Latest, "x"),
            Err(RestoreError::Gap {
                after: 4,
                level: 0,
                next: 6
            })
        ));
        assert!(matches!(
            plan(&[], Target::Latest, "x"),
            Err(RestoreError::Empty(_))
        ));
        // Without a snapshot or TXID 1 there is nothing to start from.
        assert!(matches!(
            plan(&[f(0, 2, 2, 1)], Target::Latest, "x"),
            Err(RestoreError::Gap { .. }) | Err(RestoreError::NotAvailable(_))
        ));
    }

    #[test]
    fn targets_parse() {
        assert_eq!(Target::parse("latest").unwrap(), Target::Latest);
        assert_eq!(
            Target::parse("000000000000001d").unwrap(),
            Target::Txid(0x1d)
        );
        assert_eq!(Target::parse("29").unwrap(), Target::Txid(29));
        assert_eq!(
            Target::parse("2026-11-26T07:11:44.83Z").unwrap(),
            Target::Timestamp(1795677104830 * MS)
        );
        assert_eq!(
            Target::parse("2026-11-26 07:11:44.830").unwrap(),
            Target::Timestamp(1795677104830 * MS)
        );
        assert_eq!(
            Target::parse("2026-11-26 07:11:44").unwrap(),
            Target::Timestamp(1795677104000 * MS)
        );
        assert!(Target::parse("yesterday-ish").is_err());
    }
}
