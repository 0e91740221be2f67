//! The `litestream` VFS's replication: capture (under a per-database lock, called from VFS
//! callbacks) -> spool -> shipper (an async task on the shared runtime) -> store.
//! One [`Replicator`] per database file per process, shared by all its connections.

mod capture;
pub mod compactor;
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
pub use capture::Capture;

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
    pub last_error: Option<String>,
    pub uploads: u64,
    pub uploaded_bytes: u64,
    /// Commits captured since the database was opened in this process, and how many of
    /// them the replica has.
    pub commits: u64,
    pub commits_shipped: u64,
    pub lease: lease::LeaseStatus,
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
}

/// Uploads in flight across every database of the process: bounded, and granted in arrival
/// order (each database queues at most one), so a busy database cannot starve the others.
pub(crate) static UPLOAD_SLOTS: LazyLock<tokio::sync::Semaphore> =
    LazyLock::new(|| tokio::sync::Semaphore::new(32));
/// Maintenance passes (compaction, snapshot, retention) running at once across databases:
/// each downloads and merges files on disk and keeps the store busy.
pub(crate) static MAINTENANCE_SLOTS: LazyLock<tokio::sync::Semaphore> =
    LazyLock::new(|| tokio::sync::Semaphore::new(16));

static REGISTRY: LazyLock<Mutex<HashMap<PathBuf, Arc<Replicator>>>> =
    LazyLock::new(Default::default);

/// How long closing the last connection waits for the replica to catch up.
pub const CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_secs(5);
/// ... and when the store is failing already.
pub const FAILING_CLOSE_FLUSH_TIMEOUT: Duration = Duration::from_millis(500);

impl Replicator {
    /// The replicator of `db_path`, created (local recovery, shipper started) on first use.
    pub fn acquire(db_path: &Path, config: DbConfig) -> Result<Arc<Self>, String> {
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
        let capture = Capture::open(db_path, config.spool_limit).map_err(|e| {
            format!(
                "{}: cannot read local replication state: {e}",
                db_path.display()
            )
        })?;
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

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// Runs `f` on the capture state; an I/O error there never fails SQLite's operation: it
    /// is logged, shown in the status, and answered with a full resync.
    pub fn with_capture(&self, what: &str, f: impl FnOnce(&mut Capture) -> std::io::Result<()>) {
        let mut c = self.capture.lock();
        if let Err(e) = f(&mut c) {
            log::error!(
                "{}: {what}: {e}; will resync with a full snapshot",
                self.db_path.display()
            );
            c.needs_full = true;
            self.stats.lock().last_error = Some(format!("{what}: {e}"));
        }
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
        if let Err(e) = self.sync(timeout) {
            log::warn!(
                "{}: closing with unshipped changes (kept locally for the next open): {e}",
                self.db_path.display()
            );
        }
        {
            let mut reg = REGISTRY.lock();
            // Reopened while we flushed: keep running.
            if self.handles.load(Ordering::SeqCst) != 0 {
                return;
            }
            self.closing.store(true, Ordering::SeqCst);
            reg.remove(&self.db_path);
        }
        self.closed.notify_waiters();
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
    pub fn sync(&self, timeout: Duration) -> Result<u64, String> {
        let deadline = std::time::Instant::now() + timeout;
        let target = self.capture.lock().commits_captured;
        loop {
            self.flush.store(true, Ordering::SeqCst);
            self.wake_now();
            {
                let c = self.capture.lock();
                // A queued file sealed from what was captured by then (a snapshot holds no
                // commit of its own) must be uploaded too.
                let sealed_before = c.queue.iter().any(|q| q.commits <= target);
                if c.remote_known && c.commits_shipped >= target && !c.needs_full && !sealed_before
                {
                    return Ok(c.shipped_txid);
                }
            }
            if std::time::Instant::now() >= deadline {
                let err = self.stats.lock().last_error.clone();
                return Err(format!(
                    "timed out after {timeout:?} waiting for the replica {} to catch up{}",
                    self.store.describe(),
                    err.map(|e| format!(" (last error: {e})"))
                        .unwrap_or_default()
                ));
            }
            std::thread::sleep(Duration::from_millis(2));
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

    pub fn store(&self) -> Arc<Store> {
        self.store.clone()
    }

    /// Before writing a transaction that did not come from SQLite's pager (a rollback):
    /// the replica has every commit, and we hold the lease, so the new TXID can ship.
    /// Returns the TXID the database and the replica are both at.
    pub fn ready_to_write(&self, timeout: Duration) -> Result<u64, String> {
        // The lease first: another writer's lease is a clear, immediate refusal.
        if self.config.lease {
            let held = crate::runtime::block_on(shipper::hold_lease(self))
                .map_err(|e| format!("cannot take the lease: {e}"))?;
            if !held {
                let status = self.stats.lock().lease.clone();
                let err = self.stats.lock().last_error.clone();
                return Err(format!(
                    "this process does not hold the lease on {} (lease {}{}){}",
                    self.store.describe(),
                    status.state,
                    status
                        .owner
                        .map(|o| format!(", held by {o}"))
                        .unwrap_or_default(),
                    err.map(|e| format!(": {e}")).unwrap_or_default()
                ));
            }
        }
        self.sync(timeout)
    }

    pub fn status(&self) -> Status {
        let c = self.capture.lock();
        let stats = self.stats.lock();
        Status {
            path: self.db_path.display().to_string(),
            replica: self.store.describe(),
            local_txid: crate::ltx::format_txid(c.last_txid),
            remote_txid: crate::ltx::format_txid(c.shipped_txid),
            pending_files: c.queue.len(),
            pending_bytes: c.queued_bytes(),
            lag_ms: c
                .pending_since_ms()
                .map_or(0, |t| (crate::timefmt::now_millis() - t).max(0)),
            needs_snapshot: c.needs_full,
            last_error: stats.last_error.clone(),
            uploads: stats.uploads,
            uploaded_bytes: stats.uploaded_bytes,
            commits: c.commits_captured,
            commits_shipped: c.commits_shipped,
            lease: if self.config.lease {
                stats.lease.clone()
            } else {
                lease::LeaseStatus {
                    state: "off".into(),
                    ..Default::default()
                }
            },
        }
    }
}

/// How long process exit waits for unshipped commits, per database.
pub const EXIT_FLUSH_TIMEOUT: Duration = Duration::from_secs(2);

/// At process exit (connections possibly never closed): a bounded best-effort flush. What
/// does not make it stays in the WAL or the spool and ships at the next open.
pub fn flush_all_at_exit() {
    for r in Replicator::all() {
        if let Err(e) = r.sync(EXIT_FLUSH_TIMEOUT) {
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
        },
        true,
    )
}
