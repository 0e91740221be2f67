//! The `litestream` VFS's replication: capture (under a per-database lock, called from VFS
//! callbacks) -> spool -> shipper (an async task on the shared runtime) -> store.
//! One [`Replicator`] per database file per process, shared by all its connections.

mod capture;
pub mod compactor;
mod handoff;
pub mod lease;
mod meta;
mod shipper;
pub mod wal;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};
use std::time::Duration;

use parking_lot::Mutex;

use crate::config::DbConfig;
use crate::storage::Store;
pub use capture::{Capture, DbFile, OpenDbFile};

/// What `litestream_status()` shows of one database.
#[derive(Debug, Clone, Default, serde::Serialize)]
pub struct Status {
    pub path: String,
    pub replica: String,
    pub local_txid: String,
    pub remote_txid: String,
    pub pending_files: usize,
    pub pending_bytes: u64,
    pub lag_ms: i64,
    pub needs_snapshot: bool,
    /// Another process committed and its hand-offs are not all there yet: being resolved
    /// under a read lock (with a full snapshot if they never come).
    pub foreign_unresolved: bool,
    /// The replica's position is known (TXIDs are assigned only then).
    pub remote_known: bool,
    pub last_error: Option<String>,
    /// The last failure of compaction, snapshots or retention (with its time), until they
    /// next succeed.
    pub background_error: Option<String>,
    pub uploads: u64,
    pub uploaded_bytes: u64,
    /// Commits captured since the database was opened in this process, and how many of
    /// them the replica has.
    pub commits: u64,
    pub commits_shipped: u64,
    pub lease: lease::LeaseStatus,
    /// `owner`: this process captures and ships the database; `follower`: another process
    /// (`owner_pid`) does, and this one hands its commits over.
    pub role: &'static str,
    pub owner_pid: Option<u32>,
    /// Full snapshots this process sealed as owner: the first, then one per gap healed
    /// (another process's commits it could not capture page by page, a lost spool...).
    pub full_snapshots: u64,
    /// Since when a read transaction of ours has held its read lock to keep the database
    /// still (a full snapshot, or other processes' commits being resolved); None when none
    /// does. While it does, this process's checkpoints wait for it, until 2 s after that;
    /// others' stop at it.
    pub snapshot_read_since: Option<String>,
}

/// Facts the shipper reports back.
#[derive(Debug, Default)]
struct ShipperStats {
    last_error: Option<String>,
    uploads: u64,
    uploaded_bytes: u64,
    lease: lease::LeaseStatus,
    /// When the last L0 upload succeeded (ms), for maintenance to know when it is idle.
    last_upload_ms: i64,
    /// The shipper's store request in flight: what it is and since when (ms).
    store_wait: Option<(String, i64)>,
    background_error: Option<String>,
}

pub struct Replicator {
    db_path: PathBuf,
    config: DbConfig,
    store: Arc<Store>,
    capture: Mutex<Capture>,
    stats: Mutex<ShipperStats>,
    wake: tokio::sync::Notify,
    /// Signalled at every L0 upload: wakes maintenance that sleeps while there is nothing to do.
    uploaded: tokio::sync::Notify,
    /// Signalled once, when the last connection closed (`closing` is set first).
    closed: tokio::sync::Notify,
    /// The shipper is looking for work or waiting for it: only then does a commit wake it
    /// (a wakeup per commit would cost the commit path more than the work it signals).
    idle: std::sync::atomic::AtomicBool,
    /// Connections (main-database handles) using this replicator.
    handles: AtomicUsize,
    closing: std::sync::atomic::AtomicBool,
    /// Set by `litestream_sync()`: ship now, ignoring the minimum interval.
    flush: std::sync::atomic::AtomicBool,
    lease: tokio::sync::Mutex<lease::Lease>,
    /// Whether we hold the lease (or leasing is off): compaction and retention need it.
    lease_held: std::sync::atomic::AtomicBool,
    /// What the conditional-write probe found (None until it ran).
    conditional: Mutex<Option<crate::storage::ConditionalSupport>>,
    /// While our own consistent read is on, from its open to its close: this process's
    /// writers wait for it rather than fail with SQLITE_BUSY (`own_snapshot_in_progress`).
    snapshot_reading: std::sync::atomic::AtomicBool,
    /// While a maintenance pass (compaction, snapshot, retention) runs: the last close waits
    /// for it, so no process of ours changes the replica once the database is closed (a
    /// restore started then would miss files deleted under it).
    maintaining: std::sync::atomic::AtomicBool,
    /// From the open until maintenance has decided whether a pass is due now (one that
    /// earlier, shorter opens left overdue): the last close waits for that decision, then
    /// for the pass, so even a database open for moments at a time gets maintained.
    maintenance_deciding: std::sync::atomic::AtomicBool,
    /// A pass was due at the open: the last close waits for the pass in flight to end
    /// (bounded), not only for its current step.
    maintenance_due_at_open: bool,
    /// While that read holds its read lock (its steps run): since when, by the monotonic
    /// clock and in ms since the epoch (`own_snapshot_began_within`, status
    /// `snapshot_read_since`).
    snapshot_holding: Mutex<Option<(std::time::Instant, i64)>>,
    /// The last consistent read that failed, and when; cleared by one that succeeds. A sync
    /// that needs that read reports it at once instead of timing out when waiting will not
    /// cure it (see `crate::Error::passes_by_waiting`), and so does the flush of a last close
    /// or of exit when only the application's next read would (a hot journal).
    read_failed: Mutex<Option<(std::time::Instant, crate::Error)>>,
    /// The last build of an LTX file that failed on what the database files hold (a file
    /// that is not the whole database: waiting does not cure it), and when; cleared by a
    /// build that succeeds. A sync reports it at once instead of timing out.
    build_failed: Mutex<Option<(std::time::Instant, String)>>,
    /// Counts the shipper's steps (an upload, a failure, nothing left to seal): a sync waits
    /// on `progress` for the next one instead of polling.
    progress_seq: Mutex<u64>,
    progress: parking_lot::Condvar,
    _alive: Alive,
}

/// Replicators alive in the process, open or closed but still finishing their background
/// work (their files close when they end).
static ALIVE: AtomicUsize = AtomicUsize::new(0);

/// Counts one replicator in [`ALIVE`] for as long as it exists.
struct Alive;

impl Alive {
    fn new() -> Self {
        ALIVE.fetch_add(1, Ordering::SeqCst);
        Alive
    }
}

impl Drop for Alive {
    fn drop(&mut self) {
        ALIVE.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Uploads in flight across every database of the process: bounded, and granted in arrival
/// order (each database queues at most one), so a busy database cannot starve the others.
pub(crate) static UPLOAD_SLOTS: LazyLock<tokio::sync::Semaphore> =
    LazyLock::new(|| tokio::sync::Semaphore::new(32));
/// Maintenance passes (compaction, snapshot, retention) running at once across databases:
/// each downloads and merges files on disk and keeps the store busy.
pub(crate) static MAINTENANCE_SLOTS: LazyLock<tokio::sync::Semaphore> =
    LazyLock::new(|| tokio::sync::Semaphore::new(16));

/// Runs a closure while a read transaction holds a database still (provided by the FFI edge,
/// which owns every SQLite call: see `sqlite::read_lock`).
pub type ConsistentRead =
    fn(&Path, &std::sync::atomic::AtomicBool, &mut dyn FnMut()) -> Result<(), crate::Error>;

/// What keeps a read-only connection out until a read of the application recovers it.
const AWAITS_RECOVERY: &str = "a hot journal or an unrecovered WAL";

/// What a sync and the status say when the read a full snapshot needs fails.
pub(crate) const SNAPSHOT_READ_FAILED: &str = "cannot read the database whole for a full snapshot";

static CONSISTENT_READ: std::sync::OnceLock<ConsistentRead> = std::sync::OnceLock::new();

pub fn set_consistent_read(f: ConsistentRead) {
    let _ = CONSISTENT_READ.set(f);
}

static REGISTRY: LazyLock<Mutex<HashMap<PathBuf, Arc<Replicator>>>> =
    LazyLock::new(Default::default);

/// Who waits in [`Replicator::sync`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum SyncFor {
    /// `litestream_sync()` and the like: the application goes on, and its next read rolls
    /// back a hot journal that keeps a full snapshot's read out.
    Caller,
    /// The last close or process exit: no read of the application is coming.
    LastFlush,
}

/// A maintenance pass in progress (see [`Replicator::begin_maintenance`]).
struct Maintaining<'a>(&'a std::sync::atomic::AtomicBool);

impl Drop for Maintaining<'_> {
    fn drop(&mut self) {
        self.0.store(false, Ordering::SeqCst);
    }
}

/// How long closing the last connection waits for the replica to catch up.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// ... and when the store is failing already.
pub const FAILING_CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_millis(500);

impl Replicator {
    /// The replicator of `db_path`, created (local recovery, shipper started) on first use.
    pub fn acquire(
        db_path: &Path,
        config: DbConfig,
        open_db_file: OpenDbFile,
    ) -> Result<Arc<Self>, String> {
        let mut reg = REGISTRY.lock();
        if let Some(r) = reg.get(db_path) {
            if r.config.replica_url != config.replica_url {
                return Err(format!(
                    "{} is already replicating to {} in this process",
                    db_path.display(),
                    r.store.describe()
                ));
            }
            r.handles.fetch_add(1, Ordering::SeqCst);
            return Ok(r.clone());
        }
        let store = Store::open(&config.replica_url).map_err(|e| e.to_string())?;
        let capture = Capture::open(db_path, config.spool_limit, open_db_file).map_err(|e| {
            format!(
                "{}: cannot read local replication state: {e}",
                db_path.display()
            )
        })?;
        let due_at_open = compactor::Schedule::load(db_path, &config).pass_due_now();
        let r = Arc::new(Self {
            db_path: db_path.to_path_buf(),
            config: config.clone(),
            store: Arc::new(store),
            capture: Mutex::new(capture),
            stats: Mutex::new(ShipperStats::default()),
            wake: tokio::sync::Notify::new(),
            uploaded: tokio::sync::Notify::new(),
            closed: tokio::sync::Notify::new(),
            idle: Default::default(),
            handles: AtomicUsize::new(1),
            closing: Default::default(),
            flush: Default::default(),
            lease: tokio::sync::Mutex::new(lease::Lease::new(config.lease_ttl)),
            lease_held: std::sync::atomic::AtomicBool::new(!config.lease),
            conditional: Mutex::new(None),
            snapshot_reading: Default::default(),
            maintaining: Default::default(),
            maintenance_deciding: std::sync::atomic::AtomicBool::new(due_at_open),
            maintenance_due_at_open: due_at_open,
            snapshot_holding: Default::default(),
            read_failed: Default::default(),
            build_failed: Default::default(),
            progress_seq: Mutex::new(0),
            progress: parking_lot::Condvar::new(),
            _alive: Alive::new(),
        });
        reg.insert(db_path.to_path_buf(), r.clone());
        shipper::start(r.clone());
        compactor::start(r.clone());
        Ok(r)
    }

    /// A replicator already open for `db_path` (for its WAL and journal files).
    pub fn find(db_path: &Path) -> Option<Arc<Self>> {
        REGISTRY.lock().get(db_path).cloned()
    }

    pub fn all() -> Vec<Arc<Self>> {
        let mut v: Vec<_> = REGISTRY.lock().values().cloned().collect();
        v.sort_by(|a, b| a.db_path.cmp(&b.db_path));
        v
    }

    /// Databases closed whose replicator has not finished yet (a compaction pass, a lease
    /// release): until it has, some of its files (`state.json`, the owner lock) stay open.
    pub fn closing_count() -> usize {
        let open = REGISTRY.lock().len();
        ALIVE.load(Ordering::SeqCst).saturating_sub(open)
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Runs `f` on the capture state; an I/O error there never fails SQLite's operation: it
    /// is logged, shown in the status, and answered with a full resync.
    pub fn with_capture(&self, what: &str, f: impl FnOnce(&mut Capture) -> std::io::Result<()>) {
        let mut c = self.capture.lock();
        if let Err(e) = f(&mut c) {
            self.capture_failed(&mut c, what, &e);
        }
    }

    /// A capture step failed: a full snapshot will resync the replica. The error is logged
    /// once while it repeats (a file that cannot be captured fails at every write).
    fn capture_failed(&self, c: &mut Capture, what: &str, e: &std::io::Error) {
        c.needs_full = true;
        let msg = format!("{what}: {e}");
        let mut stats = self.stats.lock();
        if stats.last_error.as_deref() != Some(msg.as_str()) {
            log::error!(
                "{}: {msg}; will resync with a full snapshot",
                self.db_path.display()
            );
        }
        stats.last_error = Some(msg);
    }

    /// Runs SQLite's own operation `call` with capture steps before and after it, all under
    /// the capture lock (so the shipper never sees the WAL between them). `call` always runs:
    /// a failed capture step only schedules a resync, it never skips SQLite's I/O.
    pub fn around<T>(
        &self,
        what: &str,
        before: impl FnOnce(&mut Capture) -> std::io::Result<()>,
        call: impl FnOnce() -> T,
        after: impl FnOnce(&mut Capture, &T) -> std::io::Result<()>,
    ) -> T {
        let mut c = self.capture.lock();
        let before_result = before(&mut c);
        let out = call();
        let result = before_result.and_then(|()| after(&mut c, &out));
        if let Err(e) = result {
            self.capture_failed(&mut c, what, &e);
        }
        out
    }

    /// Runs `f` on the capture state while the database is held still by a read
    /// transaction of our own, then `then` on its result in the same transaction with the
    /// capture free again. Err when the transaction cannot be had now (a writer holds the
    /// database longer than the busy timeout, a hot journal, no database file yet).
    fn with_database_still<T, U>(
        &self,
        f: impl FnOnce(&mut Capture) -> T,
        then: impl FnOnce(T) -> U,
    ) -> Result<U, crate::Error> {
        let read = CONSISTENT_READ
            .get()
            .ok_or_else(|| crate::Error::other("no consistent-read provider"))?;
        /// Clears its flag however the read ends (a panic included).
        struct Reading<'a>(&'a std::sync::atomic::AtomicBool);
        impl Drop for Reading<'_> {
            fn drop(&mut self) {
                self.0.store(false, Ordering::SeqCst);
            }
        }
        /// The same for `snapshot_holding`.
        struct Holding<'a>(&'a Mutex<Option<(std::time::Instant, i64)>>);
        impl Drop for Holding<'_> {
            fn drop(&mut self) {
                *self.0.lock() = None;
            }
        }
        let mut steps = Some((f, then));
        let mut out = None;
        self.snapshot_reading.store(true, Ordering::SeqCst);
        let reading = Reading(&self.snapshot_reading);
        let result = read(&self.db_path, &self.closing, &mut || {
            if let Some((f, then)) = steps.take() {
                *self.snapshot_holding.lock() =
                    Some((std::time::Instant::now(), crate::timefmt::now_millis()));
                let _holding = Holding(&self.snapshot_holding);
                let t = f(&mut self.capture.lock());
                out = Some(then(t));
            }
        });
        drop(reading);
        log::debug!(
            "{}: consistent read ended ({})",
            self.db_path.display(),
            match &result {
                Ok(()) => "ok".to_string(),
                Err(e) => e.to_string(),
            }
        );
        *self.read_failed.lock() = match &result {
            Err(e) => Some((std::time::Instant::now(), e.clone())),
            Ok(()) => None,
        };
        self.progressed();
        // Once the steps ran, their outcome stands: ending a read transaction changes
        // nothing (an upload done in it is done).
        match (out, result) {
            (Some(out), _) => Ok(out),
            (None, Err(e)) => Err(e),
            (None, Ok(())) => Err(crate::Error::other("the read transaction did not run")),
        }
    }

    /// Compaction, a snapshot or retention failed: status shows it until they next succeed.
    fn background_failed(&self, what: &str) {
        self.stats.lock().background_error = Some(format!(
            "{} {what}",
            crate::timefmt::rfc3339_millis(crate::timefmt::now_millis())
        ));
    }

    /// A background task panicked and was started again: the status says so (a later
    /// success of the same kind clears it).
    fn task_failed(&self, msg: String) {
        self.stats.lock().last_error = Some(msg);
    }

    fn background_succeeded(&self) {
        self.stats.lock().background_error = None;
    }

    /// Whether a lock SQLite could not get (SQLITE_BUSY) is held by our own snapshot's read
    /// transaction: then the writer should wait for it, not fail.
    pub fn own_snapshot_in_progress(&self) -> bool {
        self.snapshot_reading.load(Ordering::SeqCst)
    }

    /// Whether our own consistent read holds its read lock, taken less than `budget` ago. A
    /// checkpoint of this process waits for such a read (which may be what cuts it short)
    /// only within this budget: every commit may checkpoint, and a long snapshot must not
    /// stall each of them.
    pub fn own_snapshot_began_within(&self, budget: std::time::Duration) -> bool {
        self.snapshot_holding
            .lock()
            .is_some_and(|(began, _)| began.elapsed() < budget)
    }

    /// The shipper took a step a sync may be waiting for.
    fn progressed(&self) {
        *self.progress_seq.lock() += 1;
        self.progress.notify_all();
    }

    /// Waits for the shipper's next step after `seen` (see `progressed`), until `deadline`
    /// at the latest, and at most a short while: a step nobody signals costs only that.
    fn wait_for_progress(&self, seen: u64, deadline: std::time::Instant) {
        let until = deadline.min(std::time::Instant::now() + Duration::from_millis(50));
        let mut seq = self.progress_seq.lock();
        while *seq == seen {
            if self.progress.wait_until(&mut seq, until).timed_out() {
                break;
            }
        }
    }

    /// The shipper built the next LTX file, or failed to (`Err`) on what the files hold.
    pub(crate) fn built(&self, result: Result<(), &std::io::Error>) {
        *self.build_failed.lock() = match result {
            Err(e) if capture::NotWholeDatabase::is(e) => {
                Some((std::time::Instant::now(), e.to_string()))
            }
            _ => None,
        };
        self.progressed();
    }

    /// Something was committed: let the shipper know.
    pub fn notify(&self) {
        if self.idle.swap(false, Ordering::SeqCst) {
            self.wake.notify_one();
        }
    }

    /// Wakes the shipper whatever it is doing (flushes, closing).
    fn wake_now(&self) {
        self.idle.store(false, Ordering::SeqCst);
        self.wake.notify_one();
    }

    /// A connection closed its main database handle. The last one flushes (bounded) and
    /// stops the shipper.
    pub fn release(self: &Arc<Self>) {
        if self.handles.fetch_sub(1, Ordering::SeqCst) != 1 {
            return;
        }
        // Best effort: a store that is failing right now gets one short try, not the full wait.
        let failing = self.stats.lock().last_error.is_some();
        let timeout = if failing {
            FAILING_CLOSE_FLUSH_TIMEOUT
        } else {
            CLOSE_FLUSH_TIMEOUT
        };
        if let Err(e) = self.sync_until(timeout, SyncFor::LastFlush) {
            log::warn!(
                "{}: closing with unshipped changes (kept locally for the next open): {e}",
                self.db_path.display()
            );
        }
        // A maintenance pass due at the open ends first (bounded; past that, `closing` stops
        // it at its current step, as it stops any other pass in flight).
        let began = std::time::Instant::now();
        while (self.maintenance_deciding.load(Ordering::SeqCst)
            || (self.maintenance_due_at_open && self.maintaining.load(Ordering::SeqCst)))
            && began.elapsed() < CLOSE_FLUSH_TIMEOUT
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        {
            let mut reg = REGISTRY.lock();
            // Reopened while we flushed: keep running.
            if self.handles.load(Ordering::SeqCst) != 0 {
                return;
            }
            self.closing.store(true, Ordering::SeqCst);
            reg.remove(&self.db_path);
            // Before the registry is free: a reopen in this process must find it free too.
            self.capture.lock().resign();
        }
        self.closed.notify_waiters();
        // A consistent read of the shipper (a private connection of ours) may still be
        // waiting for a lock: `closing` makes it give up. Its file closes before this close
        // returns, as the host expects of every file of the database (bounded: a snapshot
        // streaming inside its read transaction finishes its upload first).
        let began = std::time::Instant::now();
        while (self.snapshot_reading.load(Ordering::SeqCst)
            || self.maintaining.load(Ordering::SeqCst))
            && began.elapsed() < CLOSE_FLUSH_TIMEOUT
        {
            std::thread::sleep(Duration::from_millis(1));
        }
        self.wake_now();
        if self.config.lease {
            // After `closing`: the shipper takes no lease any more, so this release is final.
            let conditional_delete = self
                .conditional
                .lock()
                .as_ref()
                .is_some_and(|c| c.conditional_delete);
            crate::runtime::block_on(async {
                self.lease
                    .lock()
                    .await
                    .release(&self.store, conditional_delete)
                    .await;
            });
            self.lease_held.store(false, Ordering::SeqCst);
        }
    }

    /// Waits until every commit captured so far is in the replica.
    pub fn sync(&self, timeout: Duration) -> Result<u64, crate::Error> {
        self.sync_until(timeout, SyncFor::Caller)
    }

    fn sync_until(&self, timeout: Duration, why: SyncFor) -> Result<u64, crate::Error> {
        let began = std::time::Instant::now();
        let deadline = began + timeout;
        let owner = {
            let mut c = self.capture.lock();
            c.try_become_owner().unwrap_or(false)
        };
        if !owner {
            return self.sync_as_follower(deadline, timeout);
        }
        // Commits other processes made so far count too: look for them first.
        let target = {
            let mut c = self.capture.lock();
            if let Err(e) = c.poll_foreign(false) {
                log::warn!(
                    "{}: cannot look for other processes' commits: {e}",
                    self.db_path.display()
                );
                c.needs_full = true;
            }
            // A close with nothing of its own to ship asks the store nothing: no lease, no
            // listing (a connection per request would pay both each time). What the replica
            // holds is what the position saved at the last upload says.
            if why == SyncFor::LastFlush && !c.remote_known && c.has_nothing_to_ship() {
                return Ok(c.last_txid);
            }
            c.commits_captured
        };
        loop {
            // Read before looking: a step taken after this wakes the wait below.
            let seen = *self.progress_seq.lock();
            self.flush.store(true, Ordering::SeqCst);
            self.wake_now();
            let snapshot_waits = {
                let mut c = self.capture.lock();
                // A queued file sealed from what was captured by then (a snapshot holds no
                // commit of its own) must be uploaded too.
                let sealed_before = c.queue.iter().any(|q| q.commits <= target);
                let needs_read = c.needs_consistent_read(true);
                if c.remote_known && c.commits_shipped >= target && !needs_read && !sealed_before {
                    return Ok(c.shipped_txid);
                }
                if needs_read {
                    if let Some((at, e)) = self.read_failed.lock().clone() {
                        let hopeless = !e.passes_by_waiting()
                            || (why == SyncFor::LastFlush && e.awaits_the_applications_read());
                        if at >= began && hopeless {
                            let e = e.clone().context(SNAPSHOT_READ_FAILED);
                            return Err(if e.passes_by_waiting() {
                                e.with_note(&format!("{AWAITS_RECOVERY}: the next connection to read the database recovers it, and what is unshipped ships then"))
                            } else {
                                e
                            });
                        }
                    }
                }
                needs_read
            };
            if let Some((at, e)) = self.build_failed.lock().clone() {
                if at >= began {
                    return Err(crate::Error::other(format!(
                        "cannot build the next LTX file: {e}"
                    )));
                }
            }
            if std::time::Instant::now() >= deadline {
                let err = self.stats.lock().last_error.clone();
                return Err(crate::Error::busy(format!(
                    "timed out after {timeout:?} waiting for the replica {} to catch up{}{}",
                    self.store.describe(),
                    if !snapshot_waits {
                        String::new()
                    } else {
                        let why = match self.read_failed.lock().as_ref() {
                            Some((_, e)) if e.awaits_the_applications_read() => format!(
                                "{AWAITS_RECOVERY} that the application's next read recovers: {}",
                                e.message()
                            ),
                            Some((_, e)) if !e.passes_by_waiting() => e.message().to_string(),
                            _ => "another connection holds its write lock".to_string(),
                        };
                        format!(
                            ": a full snapshot is due and the read transaction it needs cannot get the database ({why})"
                        )
                    },
                    err.map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                )));
            }
            self.wait_for_progress(seen, deadline);
        }
    }

    /// A follower's sync: the owner ships, so wait until what it reports uploaded covers
    /// the database as it is now (every commit of ours is in that).
    fn sync_as_follower(
        &self,
        deadline: std::time::Instant,
        timeout: Duration,
    ) -> Result<u64, crate::Error> {
        let target = self
            .capture
            .lock()
            .database_mark()
            .map_err(|e| format!("cannot read {}: {e}", self.db_path.display()))?;
        loop {
            let (shipped, owner) = {
                let c = self.capture.lock();
                (c.owner_shipped(), c.owner_pid())
            };
            if let Some(m) = shipped.filter(|m| m.covers(&target)) {
                return Ok(m.txid);
            }
            if std::time::Instant::now() >= deadline {
                // The owner's last upload was of another file at this path: a file renamed
                // over the database while the owner kept the old one open.
                if let (Some(owners), Some(ours)) = (shipped.and_then(|m| m.inode), target.inode) {
                    if owners != ours {
                        return Err(crate::Error::other(format!(
                            "{} was replaced by another file while process {} had it open: that process replicates the file it has open (inode {owners}), this connection writes the new one (inode {ours}); reopen the database in every process",
                            self.db_path.display(),
                            owner.map_or_else(|| "(unknown)".to_string(), |p| p.to_string())
                        )));
                    }
                }
                return Err(crate::Error::busy(format!(
                    "timed out after {timeout:?} waiting for the replica {} to catch up; process {} replicates this database",
                    self.store.describe(),
                    owner.map_or_else(|| "(unknown)".to_string(), |p| p.to_string())
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits until `until` resolves or the replicator closes; true if it closed. Race-free:
    /// the close signal is registered before the flag is checked.
    async fn unless_closed(&self, until: impl std::future::Future<Output = ()>) -> bool {
        let closed = self.closed.notified();
        tokio::pin!(closed);
        closed.as_mut().enable();
        if self.closing.load(Ordering::SeqCst) {
            return true;
        }
        tokio::select! {
            _ = until => {}
            _ = closed => {}
        }
        self.closing.load(Ordering::SeqCst)
    }

    /// A maintenance pass begins, unless the last connection closed: it then does not.
    /// The pass lasts as long as the returned guard.
    fn begin_maintenance(&self) -> Option<Maintaining<'_>> {
        self.maintaining.store(true, Ordering::SeqCst);
        // Set before `closing` is read: a close either sees the pass or the pass sees it.
        if self.closing.load(Ordering::SeqCst) {
            self.maintaining.store(false, Ordering::SeqCst);
            return None;
        }
        Some(Maintaining(&self.maintaining))
    }

    /// Maintenance knows whether a pass is due now (and has begun it if so).
    fn maintenance_decided(&self) {
        self.maintenance_deciding.store(false, Ordering::SeqCst);
    }

    fn is_closing(&self) -> bool {
        self.closing.load(Ordering::SeqCst)
    }

    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Before writing a transaction that did not come from SQLite's pager (a rollback):
    /// the replica has every commit, and we hold the lease, so the new TXID can ship.
    /// Returns the TXID the database and the replica are both at.
    pub fn ready_to_write(&self, timeout: Duration) -> Result<u64, crate::Error> {
        if !self.capture.lock().is_owner() {
            return Err(crate::Error::other(format!(
                "process {} replicates {}, not this one: run this there",
                self.capture
                    .lock()
                    .owner_pid()
                    .map_or_else(|| "(unknown)".to_string(), |p| p.to_string()),
                self.db_path.display()
            )));
        }
        // The lease first: another writer's lease is a clear, immediate refusal.
        if self.config.lease {
            let held = crate::runtime::block_on(shipper::hold_lease(self))
                .map_err(|e| crate::Error::from(e).context("cannot take the lease"))?;
            if !held {
                let status = self.stats.lock().lease.clone();
                let err = self.stats.lock().last_error.clone();
                return Err(crate::Error::busy(format!(
                    "this process does not hold the lease on {} (lease {}{}){}",
                    self.store.describe(),
                    status.state,
                    status
                        .owner
                        .map(|o| format!(", held by {o}"))
                        .unwrap_or_default(),
                    err.map(|e| format!(": {e}")).unwrap_or_default()
                )));
            }
        }
        self.sync(timeout)
    }

    pub fn status(&self) -> Status {
        let mut c = self.capture.lock();
        let stats = self.stats.lock();
        let now = crate::timefmt::now_millis();
        Status {
            path: self.db_path.display().to_string(),
            replica: self.store.describe(),
            local_txid: crate::ltx::format_txid(c.last_txid),
            remote_txid: crate::ltx::format_txid(c.shipped_txid),
            pending_files: c.queue.len(),
            pending_bytes: c.queued_bytes(),
            lag_ms: c.pending_since_ms().map_or(0, |t| (now - t).max(0)),
            needs_snapshot: c.snapshot_due(true),
            foreign_unresolved: c.foreign_unresolved(),
            remote_known: c.remote_known,
            last_error: stats.last_error.clone().or_else(|| {
                // A store that accepts connections and never answers fails no request for
                // a long while: say so as soon as it is overdue.
                let (what, since) = stats.store_wait.as_ref()?;
                let waited = now - since;
                (waited > crate::storage::STALLED_REQUEST.as_millis() as i64).then(|| {
                    format!(
                        "the store has not answered for {} s ({what})",
                        waited / 1000
                    )
                })
            }),
            background_error: stats.background_error.clone(),
            uploads: stats.uploads,
            uploaded_bytes: stats.uploaded_bytes,
            commits: c.commits_captured,
            commits_shipped: c.commits_shipped,
            role: if c.is_owner() { "owner" } else { "follower" },
            owner_pid: c.owner_pid(),
            full_snapshots: c.full_snapshots,
            snapshot_read_since: self
                .snapshot_holding
                .lock()
                .map(|(_, ms)| crate::timefmt::rfc3339_millis(ms)),
            lease: if self.config.lease {
                stats.lease.as_of(now)
            } else {
                lease::LeaseStatus {
                    state: "off".into(),
                    ..Default::default()
                }
            },
        }
    }
}

/// Runs one of `r`'s background tasks, started again whenever it panics; the status says so.
fn supervise<Fut>(r: Arc<Replicator>, name: &'static str, task: fn(Arc<Replicator>) -> Fut)
where
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let report = Arc::downgrade(&r);
    crate::runtime::supervise(
        name,
        Duration::from_secs(1),
        move |msg| {
            if let Some(r) = report.upgrade() {
                r.task_failed(msg);
            }
        },
        move || task(r.clone()),
    );
}

/// How long process exit waits for unshipped commits, per database.
pub const EXIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// At process exit (connections possibly never closed): a bounded best-effort flush. What
/// does not make it stays in the WAL or the spool and ships at the next open.
pub fn flush_all_at_exit() {
    for r in Replicator::all() {
        if let Err(e) = r.sync_until(EXIT_FLUSH_TIMEOUT, SyncFor::LastFlush) {
            log::warn!(
                "{}: exiting with unshipped changes (kept locally): {e}",
                r.db_path.display()
            );
        }
    }
}

/// Records, beside a freshly restored database, that it is exactly the replica at `header`'s
/// MaxTXID, so replication resumes there instead of starting over.
pub fn record_restored(db_path: &Path, header: &crate::ltx::Header) -> std::io::Result<()> {
    let mut meta = meta::MetaDir::for_database(db_path);
    let _ = std::fs::remove_dir_all(meta.spool_dir());
    meta.save_state(
        &meta::SavedState {
            txid: header.max_txid,
            page_size: header.page_size,
            commit: header.commit,
            wal: None,
            db: meta::DbFingerprint::of(db_path),
            counter: None,
        },
        true,
    )
}
