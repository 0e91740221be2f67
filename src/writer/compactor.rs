//! Background maintenance of one replica, as Litestream does it: compaction L(n-1) -> Ln at
//! wall-clock multiples of each level's interval, snapshots (level 9) from the replica itself,
//! and retention. Runs as one async task per database; merges stream through temporary files
//! so memory stays small. Only the replicating process does this.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use super::meta::{MaintenanceRecord, MetaDir};
use super::Replicator;
use crate::ltx::{self, Decoder};
use crate::restore::{self, RestoreError, Target};
use crate::storage::{LtxFileInfo, PutCondition, Store, SNAPSHOT_LEVEL};
use crate::timefmt::now_millis;

/// Inputs merged by one compaction at most (the next run takes the rest).
const MAX_INPUTS: usize = 256;
/// How often retention is checked (Litestream: 15 s).
const RETENTION_CHECK: Duration = Duration::from_secs(15);

pub fn start(r: Arc<Replicator>) {
    super::supervise(r, "compaction", run);
}

/// Next multiple of `interval` after `now`, shifted by this database's `offset` so that
/// thousands of databases do not all compact at the same instant.
fn next_boundary(now_ms: i64, interval: Duration, offset_ms: i64) -> i64 {
    let i = interval.as_millis().max(1) as i64;
    let offset = offset_ms % i;
    (now_ms - offset).div_euclid(i) * i + i + offset
}

/// A stable per-database offset (within a day; each schedule takes it modulo its own
/// interval): maintenance of thousands of databases spreads evenly over every interval
/// instead of bunching at each boundary.
fn spread_offset(path: &Path) -> i64 {
    let h = crate::ltx::crc64(path.as_os_str().as_encoded_bytes());
    (h % 86_400_000) as i64
}

/// What maintenance has already seen, so that an idle database costs no request: a level is
/// compacted only when the level below got new files since its last run, a snapshot only
/// after new uploads, retention only while something can have become deletable.
#[derive(Default)]
struct Seen {
    /// Uploads counted at the last L1 run.
    uploads_at_l1: u64,
    /// Files produced into each level (index = level), and what the next level last saw.
    produced: Vec<u64>,
    consumed: Vec<u64>,
    uploads_at_snapshot: u64,
    /// Until when retention has work (files become deletable up to then).
    retention_until_ms: i64,
}

impl Seen {
    /// Whether `level` has input it has not compacted yet (new uploads for L1).
    fn has_input(&self, level: usize, uploads: u64) -> bool {
        if level == 1 {
            uploads > self.uploads_at_l1
        } else {
            self.produced[level - 1] > self.consumed[level]
        }
    }
}

/// Tells the replicator maintenance has decided, however `run` ends.
struct Decided<'a>(&'a Replicator);

impl Drop for Decided<'_> {
    fn drop(&mut self) {
        self.0.maintenance_decided();
    }
}

/// Where maintenance stands when a replicator starts: each schedule's next run, from the
/// record of what earlier runs did (see [`MaintenanceRecord`]).
pub(super) struct Schedule {
    meta: MetaDir,
    record: MaintenanceRecord,
    /// Replica TXID the saved position had at the start.
    shipped_at_start: u64,
    /// Next run of L1.., then of the snapshot (last index), then of retention.
    due: Vec<i64>,
    retention_due: i64,
    /// Each schedule (same indexes as `due`, without retention) has uploads it has not seen.
    unseen: Vec<bool>,
    retention_unseen: bool,
    started_ms: i64,
}

impl Schedule {
    /// What earlier runs left undone. A schedule with uploads it has not seen runs at its
    /// next boundary, or at once when a boundary passed since it last ran: a database opened
    /// for moments at a time (a connection per request) would otherwise never reach one, and
    /// its L0 would grow for ever. An idle database costs nothing: nothing unseen.
    pub(super) fn load(db_path: &Path, cfg: &crate::config::DbConfig) -> Self {
        let offset = spread_offset(db_path);
        let now = now_millis();
        let meta = MetaDir::for_database(db_path);
        let levels = cfg.levels.len();
        let shipped_at_start = meta.load_state().map_or(0, |s| s.txid);
        let recorded = meta.load_maintenance();
        // No record yet (a new database, or written before records existed): every
        // schedule runs at its first boundary, as after any restart before records.
        let first_run = recorded.is_none();
        let mut record = recorded.unwrap_or_else(|| MaintenanceRecord {
            // Written before this record existed: retention may have work (one run).
            retention_until_ms: if shipped_at_start > 0 { now } else { 0 },
            ..MaintenanceRecord::default()
        });
        record.tried_ms.resize(levels + 1, 0);
        record.covered_txid.resize(levels + 1, 0);
        let unseen: Vec<bool> = (0..=levels)
            .map(|i| first_run || record.covered_txid[i] < shipped_at_start)
            .collect();
        let intervals = cfg.levels.iter().chain([&cfg.snapshot_interval]);
        let due = intervals
            .enumerate()
            .map(|(i, interval)| {
                let next = if i < levels {
                    next_boundary(now, *interval, offset)
                } else {
                    now + cfg.levels[0].as_millis() as i64
                };
                let last_boundary =
                    next_boundary(now, *interval, offset) - interval.as_millis() as i64;
                if record.covered_txid[i] < shipped_at_start && record.tried_ms[i] < last_boundary {
                    now
                } else {
                    next
                }
            })
            .collect();
        let retention_every = retention_every(cfg);
        let retention_unseen = record.retention_ran_ms < record.retention_until_ms;
        let last_try = record.retention_ran_ms.max(record.retention_tried_ms);
        let retention_due = if retention_unseen && now >= last_try + retention_every {
            now
        } else {
            now + retention_every
        };
        Self {
            meta,
            record,
            shipped_at_start,
            due,
            retention_due,
            unseen,
            retention_unseen,
            started_ms: now,
        }
    }

    /// A pass is due at once (the last close waits for it).
    pub(super) fn pass_due_now(&self) -> bool {
        self.due
            .iter()
            .chain([&self.retention_due])
            .any(|&d| d <= self.started_ms)
    }
}

fn retention_every(cfg: &crate::config::DbConfig) -> i64 {
    RETENTION_CHECK.min(cfg.levels[0]).as_millis() as i64
}

async fn run(r: Arc<Replicator>) {
    let _decided = Decided(&r);
    let cfg = r.config.clone();
    let offset = spread_offset(&r.db_path);
    let Schedule {
        mut meta,
        mut record,
        shipped_at_start,
        due: mut all_due,
        mut retention_due,
        mut unseen,
        mut retention_unseen,
        ..
    } = Schedule::load(&r.db_path, &cfg);
    let levels = cfg.levels.len();
    let mut snapshot_due = all_due.pop().expect("the snapshot schedule");
    let mut due = all_due;
    let retention_every = retention_every(&cfg);
    let work = meta.work_dir();
    let mut seen = Seen {
        produced: vec![0; levels + 1],
        consumed: vec![0; levels + 1],
        retention_until_ms: record.retention_until_ms,
        ..Seen::default()
    };
    // A replica written before page-size changes were shipped whole has a partial file at
    // the change; one full snapshot (asked for once per run) heals it.
    let mut resync_asked = false;
    let mut heal = |r: &Replicator, e: &RestoreError| {
        let unhealed = matches!(
            e,
            RestoreError::Ltx {
                source: ltx::LtxError::PageSizeChangeNotFull { .. },
                ..
            }
        );
        if unhealed && !std::mem::replace(&mut resync_asked, true) {
            log::warn!(
                "{}: the replica has a page-size change without a full snapshot ({e}); shipping a full snapshot to heal it",
                r.db_path.display()
            );
            r.with_capture("page-size heal", |c| {
                c.needs_full = true;
                Ok(())
            });
            r.notify();
        }
    };
    loop {
        // Wake only for schedules that have work; with none, sleep until the next upload
        // (an idle database costs no timer, no CPU, no request).
        let uploads = r.stats.lock().uploads;
        let now = now_millis();
        let mut wakes: Vec<i64> = Vec::new();
        for (i, &at) in due.iter().enumerate() {
            if seen.has_input(i + 1, uploads) || unseen[i] {
                wakes.push(at);
            }
        }
        if uploads > seen.uploads_at_snapshot || unseen[levels] {
            wakes.push(snapshot_due);
        }
        if now <= seen.retention_until_ms || retention_unseen {
            wakes.push(retention_due);
        }
        match wakes.into_iter().min() {
            Some(next) => {
                let wait = Duration::from_millis((next - now).max(0) as u64);
                if !wait.is_zero() {
                    r.maintenance_decided();
                }
                if r.unless_closed(tokio::time::sleep(wait)).await {
                    return;
                }
            }
            None => {
                r.maintenance_decided();
                if r.unless_closed(r.uploaded.notified()).await {
                    return;
                }
                // Schedules that passed while idle move to their next boundary.
                let now = now_millis();
                for (i, interval) in cfg.levels.iter().enumerate() {
                    if due[i] <= now {
                        due[i] = next_boundary(now, *interval, offset);
                    }
                }
                if snapshot_due <= now {
                    snapshot_due = next_boundary(now, cfg.snapshot_interval, offset);
                }
                retention_due = retention_due.max(now + retention_every);
                continue;
            }
        }
        let now = now_millis();
        let uploads = r.stats.lock().uploads;
        // What is due and has work.
        let mut todo: Vec<u8> = Vec::new();
        for (i, interval) in cfg.levels.iter().enumerate() {
            if due[i] <= now {
                due[i] = next_boundary(now, *interval, offset);
                let level = i + 1;
                if seen.has_input(level, uploads) || unseen[i] {
                    todo.push(level as u8);
                }
            }
        }
        let snapshot_now =
            snapshot_due <= now && (uploads > seen.uploads_at_snapshot || unseen[levels]);
        if snapshot_due <= now {
            snapshot_due = next_boundary(now, cfg.snapshot_interval, offset);
        }
        let retention_now =
            retention_due <= now && (now <= seen.retention_until_ms || retention_unseen);
        if retention_due <= now {
            retention_due = now + retention_every;
        }
        if todo.is_empty() && !snapshot_now && !retention_now {
            continue;
        }
        let _slot = super::MAINTENANCE_SLOTS.acquire().await;
        let Some(_pass) = r.begin_maintenance() else {
            return; // closed while waiting for a slot
        };
        r.maintenance_decided();
        // Tried now, whatever comes of it: a failing store (or another writer's lease) gets
        // one try per boundary, not one at every open, each making its close wait.
        for &level in &todo {
            record.tried_ms[level as usize - 1] = now;
        }
        if snapshot_now {
            record.tried_ms[levels] = now;
        }
        if retention_now {
            record.retention_tried_ms = now;
        }
        save_record(&r, &mut meta, &record);
        // Only the lease holder maintains the replica (taking the lease if it is free).
        if cfg.lease && !matches!(super::shipper::hold_lease(&r).await, Ok(true)) {
            continue;
        }
        // What the replica held when this pass began: what its schedules cover once they ran.
        let covered = shipped_at_start.max(r.capture.lock().shipped_txid);
        let mut failed = false;
        let did_compact = !todo.is_empty();
        for level in todo {
            if r.is_closing() {
                return;
            }
            let l = level as usize;
            if l == 1 {
                seen.uploads_at_l1 = uploads;
            } else {
                seen.consumed[l] = seen.produced[l - 1];
            }
            let done = compact(&r.store, level, &work).await;
            match &done {
                Ok(Some(_)) => {
                    seen.produced[l] += 1;
                    // L0 files compacted now become deletable after l0-retention.
                    let horizon = now + cfg.l0_retention.as_millis() as i64 + 2 * retention_every;
                    seen.retention_until_ms = seen.retention_until_ms.max(horizon);
                }
                Ok(None) => {}
                Err(e) => {
                    log::warn!("{}: compaction into L{level}: {e}", r.db_path.display());
                    r.background_failed(&format!("compaction into L{level}: {e}"));
                    failed = true;
                    heal(&r, e);
                }
            }
            // A failed run tries again at the next boundary.
            unseen[l - 1] = done.is_err();
            if done.is_ok() {
                record.covered_txid[l - 1] = covered;
            }
            record.retention_until_ms = seen.retention_until_ms;
            save_record(&r, &mut meta, &record);
        }
        if r.is_closing() {
            return;
        }
        if snapshot_now {
            seen.uploads_at_snapshot = uploads;
            let done = snapshot(&r.store, cfg.snapshot_interval, &work).await;
            match &done {
                Ok(Some(_)) => {
                    // Older snapshots (and what only they needed) may now go.
                    seen.retention_until_ms =
                        seen.retention_until_ms.max(now + 2 * retention_every);
                }
                Ok(None) => {}
                Err(e) => {
                    log::warn!("{}: snapshot: {e}", r.db_path.display());
                    r.background_failed(&format!("snapshot: {e}"));
                    failed = true;
                    heal(&r, e);
                }
            }
            unseen[levels] = done.is_err();
            if done.is_ok() {
                record.covered_txid[levels] = covered;
            }
            record.retention_until_ms = seen.retention_until_ms;
            save_record(&r, &mut meta, &record);
        }
        if r.is_closing() {
            return;
        }
        if retention_now {
            match enforce_retention(&r.store, &cfg).await {
                Ok(_) => {
                    retention_unseen = false;
                    record.retention_ran_ms = now;
                }
                Err(e) => {
                    log::warn!("{}: retention: {e}", r.db_path.display());
                    r.background_failed(&format!("retention: {e}"));
                    failed = true;
                    retention_unseen = true;
                }
            }
            save_record(&r, &mut meta, &record);
        }
        if !failed && (did_compact || snapshot_now || retention_now) {
            r.background_succeeded();
        }
    }
}

fn save_record(r: &Replicator, meta: &mut MetaDir, record: &MaintenanceRecord) {
    if let Err(e) = meta.save_maintenance(record) {
        log::debug!(
            "{}: cannot record the maintenance pass: {e}",
            r.db_path.display()
        );
    }
}

/// A merged LTX file on disk; its working directory goes when this is dropped.
pub(crate) struct Merged {
    dir: PathBuf,
    pub path: PathBuf,
    pub header: ltx::Header,
    pub size: u64,
}

impl Drop for Merged {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Downloads `files` to `work` and merges them, streaming, into one LTX file there (stamped
/// `timestamp` when given): memory is a page per input whatever the database size.
pub(crate) async fn fetch_and_merge(
    store: &Arc<Store>,
    files: &[LtxFileInfo],
    work: &Path,
    timestamp: Option<i64>,
) -> Result<Merged, RestoreError> {
    let dir = work.join(format!("{:016x}", rand::random::<u64>()));
    let io = |what: &Path| {
        let what = what.display().to_string();
        move |source| RestoreError::Io { what, source }
    };
    std::fs::create_dir_all(&dir).map_err(io(&dir))?;
    let mut merged = Merged {
        path: dir.join("merged.ltx"),
        dir,
        header: ltx::Header::new(512, 0, 1, 1, 0),
        size: 0,
    };
    let mut paths = Vec::with_capacity(files.len());
    for (i, f) in files.iter().enumerate() {
        let p = merged.dir.join(format!("{i:06}.ltx"));
        restore::download(store.clone(), f.clone(), p.clone()).await?;
        paths.push(p);
    }
    let files = files.to_vec();
    let out_path = merged.path.clone();
    let header = tokio::task::spawn_blocking(move || {
        let mut decoders = Vec::with_capacity(paths.len());
        for (p, named) in paths.iter().zip(&files) {
            let f = std::fs::File::open(p).map_err(io(p))?;
            let decoder = Decoder::new(std::io::BufReader::new(f))
                .and_then(|d| {
                    d.header().check_named(named.min_txid, named.max_txid)?;
                    Ok(d)
                })
                .map_err(|source| RestoreError::Ltx {
                    what: p.display().to_string(),
                    source,
                })?;
            decoders.push(decoder);
        }
        let headers: Vec<ltx::Header> = decoders.iter().map(|d| *d.header()).collect();
        let counts = restore::page_counts(&headers, &paths)?;
        let out = std::fs::File::create(&out_path).map_err(io(&out_path))?;
        let (out, summary) = ltx::merge_stamped_known(
            decoders,
            std::io::BufWriter::new(out),
            timestamp,
            counts.as_deref(),
        )
        .map_err(|source| match source {
            ltx::LtxError::Input { index, source } => RestoreError::Ltx {
                what: format!(
                    "LTX file {} (level {})",
                    ltx::file_name(files[index].min_txid, files[index].max_txid),
                    files[index].level
                ),
                source: *source,
            },
            source => RestoreError::Ltx {
                what: "compaction".into(),
                source,
            },
        })?;
        out.into_inner()
            .map_err(|e| io(&out_path)(e.into_error()))?
            .sync_all()
            .map_err(io(&out_path))?;
        for p in &paths {
            let _ = std::fs::remove_file(p);
        }
        Ok::<_, RestoreError>(summary.header)
    })
    .await
    .map_err(|e| RestoreError::Io {
        what: "merge task".into(),
        source: std::io::Error::other(e),
    })??;
    merged.header = header;
    merged.size = std::fs::metadata(&merged.path)
        .map_err(io(&merged.path))?
        .len();
    Ok(merged)
}

/// The files of `src` that continue each other from its first one, at most `MAX_INPUTS`.
fn contiguous_run(src: Vec<LtxFileInfo>) -> Vec<LtxFileInfo> {
    let mut run: Vec<LtxFileInfo> = Vec::new();
    for f in src.into_iter().take(MAX_INPUTS) {
        if let Some(prev) = run.last() {
            if f.min_txid > prev.max_txid + 1 || f.max_txid <= prev.max_txid {
                break;
            }
        }
        run.push(f);
    }
    run
}

/// Merges the files of level `level - 1` newer than level `level`'s newest into one file.
pub async fn compact(
    store: &Arc<Store>,
    level: u8,
    work: &Path,
) -> Result<Option<ltx::Header>, RestoreError> {
    let dst_max = store
        .list_ltx(level, 0)
        .await?
        .last()
        .map_or(0, |f| f.max_txid);
    let inputs = contiguous_run(store.list_ltx(level - 1, dst_max + 1).await?);
    if inputs.is_empty() {
        return Ok(None);
    }
    let merged = fetch_and_merge(store, &inputs, work, None).await?;
    let header = merged.header;
    put_once(store, level, &merged).await?;
    log::debug!(
        "compacted {} files into L{level} {}",
        inputs.len(),
        ltx::file_name(header.min_txid, header.max_txid)
    );
    Ok(Some(header))
}

/// Uploads unless that file exists already (a retry after a crash made the same file).
async fn put_once(store: &Store, level: u8, merged: &Merged) -> Result<(), RestoreError> {
    match store
        .put_ltx_file(
            level,
            &merged.header,
            &merged.path,
            PutCondition::IfNoneMatch,
        )
        .await
    {
        Err(e) if e.is_precondition_failed() => Ok(()),
        other => other.map(|_| ()).map_err(Into::into),
    }
}

/// A level-9 snapshot `1-<latest>` built from the replica itself (its restore plan, merged),
/// when the newest snapshot is older than `interval` and behind the replica's position.
pub async fn snapshot(
    store: &Arc<Store>,
    interval: Duration,
    work: &Path,
) -> Result<Option<ltx::Header>, RestoreError> {
    let files = restore::list_all(store, false).await?;
    let Some(latest) = files.iter().map(|f| f.max_txid).max() else {
        return Ok(None);
    };
    let newest = files
        .iter()
        .filter(|f| f.level == SNAPSHOT_LEVEL)
        .max_by_key(|f| f.max_txid);
    if let Some(s) = newest {
        if s.max_txid >= latest || now_millis() - s.created_at_ms < interval.as_millis() as i64 {
            return Ok(None);
        }
    } else if latest <= 1 {
        return Ok(None); // TXID 1 is itself a snapshot
    }
    let plan = restore::plan(&files, Target::Latest, &store.describe())?;
    // Litestream stamps a snapshot with the time it was taken.
    let merged = fetch_and_merge(store, &plan, work, Some(now_millis())).await?;
    let header = merged.header;
    debug_assert_eq!(header.min_txid, 1);
    put_once(store, SNAPSHOT_LEVEL, &merged).await?;
    log::debug!("snapshot {}", ltx::file_name(1, header.max_txid));
    Ok(Some(header))
}

/// Litestream's retention: L0 files compacted into L1 and older than `l0_retention` go
/// (never the newest); snapshots older than `retention` go (never the newest), and with them
/// every compacted file below the newest deleted snapshot (never a level's newest).
pub async fn enforce_retention(
    store: &Store,
    cfg: &crate::config::DbConfig,
) -> Result<usize, RestoreError> {
    let now = now_millis();
    let mut doomed: Vec<String> = Vec::new();
    let l0 = store.list_ltx(0, 0).await?;
    let l1_max = store.list_ltx(1, 0).await?.last().map_or(0, |f| f.max_txid);
    let l0_cutoff = now - cfg.l0_retention.as_millis() as i64;
    for f in l0.iter().take(l0.len().saturating_sub(1)) {
        if f.max_txid > l1_max || f.created_at_ms >= l0_cutoff {
            break;
        }
        doomed.push(store.ltx_key(0, f.min_txid, f.max_txid));
    }
    let snapshots = store.list_ltx(SNAPSHOT_LEVEL, 0).await?;
    let cutoff = now - cfg.retention.as_millis() as i64;
    let mut floor = 0;
    for f in snapshots.iter().take(snapshots.len().saturating_sub(1)) {
        if f.created_at_ms < cutoff {
            floor = floor.max(f.max_txid);
            doomed.push(store.ltx_key(SNAPSHOT_LEVEL, f.min_txid, f.max_txid));
        }
    }
    if floor > 0 {
        for level in 1..=cfg.levels.len() as u8 {
            let files = store.list_ltx(level, 0).await?;
            for f in files.iter().take(files.len().saturating_sub(1)) {
                if f.max_txid < floor {
                    doomed.push(store.ltx_key(level, f.min_txid, f.max_txid));
                }
            }
        }
    }
    if !doomed.is_empty() {
        store.delete_many(&doomed).await?;
        log::debug!("retention removed {} files", doomed.len());
    }
    Ok(doomed.len())
}

/// For tests and tools: runs every maintenance step once, now.
pub async fn run_once(
    store: &Arc<Store>,
    cfg: &crate::config::DbConfig,
    work: PathBuf,
) -> Result<(), RestoreError> {
    for level in 1..=cfg.levels.len() as u8 {
        compact(store, level, &work).await?;
    }
    snapshot(store, cfg.snapshot_interval, &work).await?;
    enforce_retention(store, cfg).await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::restore::RestoreOptions;
    use crate::runtime::block_on;
    use crate::storage::{Faults, MemoryStore};

    /// A database directory whose saved position is `txid` (none for 0) and whose
    /// maintenance record is `record`.
    fn schedule_at(txid: u64, record: Option<MaintenanceRecord>) -> Schedule {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let mut meta = MetaDir::for_database(&db);
        if txid > 0 {
            let state = super::super::meta::SavedState {
                txid,
                page_size: 4096,
                commit: 1,
                wal: None,
                db: None,
                counter: None,
            };
            meta.save_state(&state, false).unwrap();
        }
        if let Some(record) = record {
            meta.save_maintenance(&record).unwrap();
        }
        Schedule::load(&db, &crate::config::DbConfig::with_replica("memory:"))
    }

    fn ran(at_ms: i64, txid: u64) -> MaintenanceRecord {
        MaintenanceRecord {
            tried_ms: vec![at_ms; 4],
            covered_txid: vec![txid; 4],
            retention_ran_ms: at_ms,
            retention_tried_ms: at_ms,
            retention_until_ms: at_ms,
        }
    }

    #[test]
    fn a_pass_is_due_at_open_only_for_uploads_a_passed_boundary_left_unmaintained() {
        // A new database, and one whose every upload was maintained: nothing to do.
        assert!(!schedule_at(0, None).pass_due_now());
        assert!(!schedule_at(5, Some(ran(now_millis() - 3_600_000, 5))).pass_due_now());
        // Uploads since the last pass, and a boundary passed since (L1's is every 30 s).
        assert!(schedule_at(7, Some(ran(now_millis() - 60_000, 5))).pass_due_now());
        // A replica written before the record existed: one catch-up pass.
        assert!(schedule_at(5, None).pass_due_now());
        // Retention whose deletable files came after its last run.
        let mut record = ran(now_millis() - 3_600_000, 5);
        record.retention_until_ms = now_millis();
        assert!(schedule_at(5, Some(record)).pass_due_now());
    }

    #[test]
    fn a_pass_that_failed_is_tried_again_at_the_next_boundary_not_at_every_open() {
        // Tried just now (the store was down): nothing covered, nothing due before a boundary.
        let mut record = ran(now_millis(), 0);
        record.retention_ran_ms = 0;
        record.retention_until_ms = now_millis();
        let s = schedule_at(7, Some(record.clone()));
        assert!(!s.pass_due_now());
        assert!(s.unseen.iter().all(|&u| u) && s.retention_unseen);
        // A boundary later it is due again, retention too.
        record.tried_ms = vec![now_millis() - 60_000; 4];
        record.retention_tried_ms = now_millis() - 60_000;
        assert!(schedule_at(7, Some(record)).pass_due_now());
    }

    #[test]
    fn uploads_since_a_pass_wait_for_the_next_boundary_when_none_passed() {
        // Just ran: L1's boundary (30 s) cannot have passed since, whatever the offset.
        let s = schedule_at(7, Some(ran(now_millis(), 5)));
        assert!(!s.pass_due_now());
        assert!(
            s.unseen.iter().all(|&u| u),
            "the next boundary still runs them"
        );
    }

    fn vectors() -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR")).join("testdata/litestream-0.5.17")
    }

    /// A replica as Litestream 0.5.17 left it (its own files, timestamps kept), minus the
    /// L1 file it compacted from the newest L0 files, in an in-memory store.
    fn litestream_replica() -> (Arc<Store>, Arc<MemoryStore>) {
        let memory = Arc::new(MemoryStore::new());
        let store = Arc::new(Store::Memory(memory.clone()));
        let files = [
            "9/0000000000000001-000000000000001d.ltx",
            "1/000000000000001e-0000000000000020.ltx",
            "1/0000000000000021-0000000000000021.ltx",
            "0/0000000000000022-0000000000000022.ltx",
            "0/0000000000000023-0000000000000023.ltx",
            "0/0000000000000024-0000000000000024.ltx",
            "0/0000000000000025-0000000000000025.ltx",
        ];
        for name in files {
            let body = std::fs::read(vectors().join("file-replica/ltx").join(name)).unwrap();
            let header = ltx::Header::decode(&body).unwrap();
            let key = format!("ltx/{name}");
            let put = store.put(
                &key,
                body.into(),
                PutCondition::IfNoneMatch,
                Some(header.timestamp),
            );
            block_on(put).unwrap();
        }
        (store, memory)
    }

    /// The replica restored, as bytes.
    fn restored(store: &Arc<Store>, target: Target) -> Vec<u8> {
        let dir = tempfile::tempdir().unwrap();
        let out = dir.path().join("out.db");
        let opts = RestoreOptions { overwrite: false };
        block_on(restore::restore(store.clone(), &out, target, opts)).unwrap();
        std::fs::read(&out).unwrap()
    }

    fn expected(txid: u64) -> Vec<u8> {
        std::fs::read(vectors().join(format!("expected-db/restore-txid-{txid:016x}.db"))).unwrap()
    }

    fn levels(memory: &MemoryStore, level: u8) -> Vec<String> {
        let prefix = format!("ltx/{level}/");
        let keys = memory.keys().into_iter();
        keys.filter_map(|k| k.strip_prefix(&prefix).map(str::to_string))
            .collect()
    }

    #[test]
    fn compaction_and_a_snapshot_restore_what_litestream_restores() {
        let (store, memory) = litestream_replica();
        let work = tempfile::tempdir().unwrap();
        let header = block_on(compact(&store, 1, work.path())).unwrap().unwrap();
        assert_eq!((header.min_txid, header.max_txid), (0x22, 0x25));
        assert!(levels(&memory, 1).contains(&ltx::file_name(0x22, 0x25)));
        // Nothing newer in L0: the next pass does nothing.
        assert!(block_on(compact(&store, 1, work.path())).unwrap().is_none());
        assert!(restored(&store, Target::Latest) == expected(0x25));

        let header = block_on(snapshot(&store, Duration::ZERO, work.path()))
            .unwrap()
            .unwrap();
        assert_eq!((header.min_txid, header.max_txid), (1, 0x25));
        // Retention at zero: every L0 file but the newest, every snapshot but the newest, and
        // the compacted files below it go; what remains still restores the latest TXID.
        let mut cfg = crate::config::DbConfig::with_replica("memory:");
        cfg.retention = Duration::ZERO;
        cfg.l0_retention = Duration::ZERO;
        std::thread::sleep(Duration::from_millis(2));
        assert!(block_on(enforce_retention(&store, &cfg)).unwrap() > 0);
        assert_eq!(levels(&memory, 9), vec![ltx::file_name(1, 0x25)]);
        assert_eq!(levels(&memory, 0), vec![ltx::file_name(0x25, 0x25)]);
        assert!(restored(&store, Target::Latest) == expected(0x25));
        // The work directory is left empty.
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    }

    #[test]
    fn a_compaction_whose_upload_answer_was_lost_leaves_a_whole_file_and_carries_on() {
        let (store, memory) = litestream_replica();
        let work = tempfile::tempdir().unwrap();
        memory.set_faults(Faults {
            lose_next_answers: 1,
            ..Faults::default()
        });
        assert!(block_on(compact(&store, 1, work.path())).is_err());
        assert!(levels(&memory, 1).contains(&ltx::file_name(0x22, 0x25)));
        assert!(block_on(compact(&store, 1, work.path())).unwrap().is_none());
        assert!(restored(&store, Target::Latest) == expected(0x25));
        // A snapshot after an upload that was refused as already there (a retry after a
        // crash made the same file) is fine too.
        memory.set_faults(Faults {
            lose_next_answers: 1,
            ..Faults::default()
        });
        assert!(block_on(snapshot(&store, Duration::ZERO, work.path())).is_err());
        assert!(block_on(snapshot(&store, Duration::ZERO, work.path()))
            .unwrap()
            .is_none());
        assert!(levels(&memory, 9).contains(&ltx::file_name(1, 0x25)));
    }

    #[test]
    fn a_request_failing_anywhere_in_a_pass_changes_nothing_and_the_next_pass_succeeds() {
        let work = tempfile::tempdir().unwrap();
        let (store, memory) = litestream_replica();
        let base = memory.requests();
        block_on(compact(&store, 1, work.path())).unwrap().unwrap();
        let requests = memory.requests() - base;
        assert!(
            requests >= 6,
            "two listings, four downloads, one upload: {requests}"
        );
        for nth in 0..requests as u32 {
            let (store, memory) = litestream_replica();
            let before = memory.keys();
            memory.set_faults(Faults {
                pass_first: nth,
                fail_next: 1,
                ..Faults::default()
            });
            let err = block_on(compact(&store, 1, work.path())).unwrap_err();
            assert!(err.to_string().contains("503"), "request {nth}: {err}");
            assert_eq!(memory.keys(), before, "request {nth}");
            block_on(compact(&store, 1, work.path())).unwrap().unwrap();
            assert!(restored(&store, Target::Latest) == expected(0x25));
        }
        assert_eq!(std::fs::read_dir(work.path()).unwrap().count(), 0);
    }
}
