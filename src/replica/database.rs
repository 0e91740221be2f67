//! A replicated database opened for reading: the latest version (followed by a poller while
//! handles are open), and per-handle read transactions pinned to one version.

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, LazyLock};

use parking_lot::{Mutex, RwLock};

use super::cache::{cache, Counters, Page};
use super::prefetch::btree_children;
use super::version::Version;
use crate::ltx::{self, decode_page_frame};
use crate::restore::{self, RestoreError, Target};
use crate::storage::{LtxFileInfo, Store};
use crate::timefmt::now_millis;

pub use crate::config::ReplicaConfig;

/// Concurrent prefetch requests per database.
const PREFETCH_CONCURRENCY: usize = 4;
/// Attempts for a page whose file vanished (compaction and retention move on under us).
const REPLAN_ATTEMPTS: usize = 3;
/// A poll follows at most this many new L0 files one by one (an index read each); a longer
/// run is read from a fresh plan (the compacted levels), made visible this many files at a
/// time.
const FOLLOW_AT_MOST: usize = 32;

pub struct ReplicaDb {
    /// The configuration of the first handle; its URL is the key. Poll interval and
    /// prefetch are each handle's own (`poll_intervals`, [`ReplicaFile`]).
    pub config: ReplicaConfig,
    store: Arc<Store>,
    /// The `poll-interval` of every open handle: the replica is polled at the shortest.
    poll_intervals: Mutex<Vec<std::time::Duration>>,
    /// Wakes the poller when a handle with a shorter interval opens.
    poll_wake: Arc<tokio::sync::Notify>,
    latest: RwLock<Arc<Version>>,
    /// The TXID each pinned handle reads (one entry per handle pinned by time travel), for
    /// the status: `txid` there is what following handles read.
    pinned_txids: Mutex<Vec<u64>>,
    /// When the last poll succeeded (ms), for `litestream_lag()`.
    last_poll_ms: AtomicI64,
    /// When the poll in flight started (0: none).
    poll_started_ms: AtomicI64,
    last_error: Mutex<Option<String>>,
    /// The last failed read (kept: a successful poll does not clear it).
    last_read_error: Mutex<Option<String>>,
    handles: AtomicUsize,
    polling: AtomicBool,
    counters: Counters,
    prefetch_slots: Arc<tokio::sync::Semaphore>,
}

static OPEN: LazyLock<Mutex<HashMap<String, Arc<ReplicaDb>>>> = LazyLock::new(Default::default);

impl ReplicaDb {
    /// The shared state of `config.replica_url`, opened (and its latest version built) once
    /// per process while handles are open.
    pub fn open(config: ReplicaConfig) -> Result<Arc<Self>, String> {
        let mut open = OPEN.lock();
        if let Some(db) = open.get(&config.replica_url) {
            db.handles.fetch_add(1, Ordering::SeqCst);
            db.poll_intervals.lock().push(config.poll_interval);
            db.poll_wake.notify_one();
            return Ok(db.clone());
        }
        let store = Arc::new(Store::open(&config.replica_url).map_err(|e| e.to_string())?);
        let version = crate::runtime::block_on(Version::build(&store, Target::Latest))
            .map_err(|e| e.to_string())?;
        let db = Arc::new(Self {
            poll_intervals: Mutex::new(vec![config.poll_interval]),
            poll_wake: Arc::new(tokio::sync::Notify::new()),
            config,
            store,
            latest: RwLock::new(Arc::new(version)),
            pinned_txids: Mutex::new(Vec::new()),
            last_poll_ms: AtomicI64::new(now_millis()),
            poll_started_ms: AtomicI64::new(0),
            last_error: Mutex::new(None),
            last_read_error: Mutex::new(None),
            handles: AtomicUsize::new(1),
            polling: AtomicBool::new(false),
            counters: Counters::default(),
            prefetch_slots: Arc::new(tokio::sync::Semaphore::new(PREFETCH_CONCURRENCY)),
        });
        open.insert(db.config.replica_url.clone(), db.clone());
        db.start_polling();
        Ok(db)
    }

    /// Milliseconds since the last successful poll.
    pub fn lag_ms(&self) -> i64 {
        now_millis() - self.last_poll_ms.load(Ordering::Relaxed)
    }

    /// A read failed: SQLite reports "disk I/O error", `litestream_status()` says why.
    pub fn record_read_error(&self, e: &str) {
        *self.last_read_error.lock() = Some(format!(
            "{} {e}",
            crate::timefmt::rfc3339_millis(now_millis())
        ));
    }

    /// The replica, for messages (no secrets).
    pub fn describe(&self) -> String {
        self.store.describe()
    }

    pub fn all() -> Vec<Arc<Self>> {
        OPEN.lock().values().cloned().collect()
    }

    /// A handle polling every `poll_interval` closed.
    fn release(&self, poll_interval: std::time::Duration) {
        let mut open = OPEN.lock();
        {
            let mut intervals = self.poll_intervals.lock();
            if let Some(i) = intervals.iter().position(|d| *d == poll_interval) {
                intervals.swap_remove(i);
            }
        }
        if self.handles.fetch_sub(1, Ordering::SeqCst) == 1 {
            open.remove(&self.config.replica_url);
        }
    }

    pub fn latest(&self) -> Arc<Version> {
        self.latest.read().clone()
    }

    fn start_polling(self: &Arc<Self>) {
        if self.polling.swap(true, Ordering::SeqCst) {
            return;
        }
        let db = Arc::downgrade(self);
        let wake = self.poll_wake.clone();
        crate::runtime::get().spawn(async move {
            loop {
                let Some(d) = db.upgrade() else { return };
                if d.handles.load(Ordering::SeqCst) == 0 {
                    d.polling.store(false, Ordering::SeqCst);
                    return;
                }
                let interval = d.poll_interval();
                d.poll_started_ms.store(now_millis(), Ordering::Relaxed);
                let polled = d.poll().await;
                d.poll_started_ms.store(0, Ordering::Relaxed);
                match polled {
                    Ok(()) => {
                        d.last_poll_ms.store(now_millis(), Ordering::Relaxed);
                        *d.last_error.lock() = None;
                    }
                    Err(e) => {
                        log::warn!("replica {}: {e}", d.store.describe());
                        *d.last_error.lock() = Some(e.to_string());
                    }
                }
                drop(d);
                // A handle opening with a shorter interval cuts the wait short.
                tokio::select! {
                    _ = tokio::time::sleep(interval) => {}
                    _ = wake.notified() => {}
                }
            }
        });
    }

    /// The shortest `poll-interval` of the open handles.
    fn poll_interval(&self) -> std::time::Duration {
        self.poll_intervals
            .lock()
            .iter()
            .copied()
            .min()
            .unwrap_or(self.config.poll_interval)
    }

    /// Follows the replica: new L0 files continuing the current version extend it; anything
    /// else (a gap after L0 retention, a rewritten replica) rebuilds it from a fresh plan.
    async fn poll(&self) -> Result<(), RestoreError> {
        let current = self.latest();
        // Listed from the file our version ends with when it is an L0 file: if that file is
        // still there but not the one we applied, the replica was rewritten (deleted and
        // replicated again from scratch) and whatever follows is another history.
        let tip = current
            .files
            .last()
            .filter(|f| f.level == 0 && f.max_txid == current.txid);
        let seek = tip.map_or(current.txid + 1, |f| f.min_txid);
        let listed = self.store.list_ltx(0, seek).await?;
        let rewritten = tip.is_some_and(|tip| {
            listed.iter().any(|f| {
                (f.min_txid, f.max_txid) == (tip.min_txid, tip.max_txid)
                    && (f.size, f.created_at_ms) != (tip.size, tip.created_at_ms)
            })
        });
        if rewritten {
            log::warn!(
                "{}: the replica was rewritten under this reader (its file for TXID {} changed): reading it anew",
                self.store.describe(),
                ltx::format_txid(current.txid)
            );
            let next = Version::build(&self.store, Target::Latest).await?;
            *self.latest.write() = Arc::new(next);
            return Ok(());
        }
        let mut run: Vec<LtxFileInfo> = Vec::new();
        let mut cur = current.txid;
        for f in listed.into_iter().filter(|f| f.min_txid > current.txid) {
            if f.min_txid != cur + 1 {
                break;
            }
            cur = f.max_txid;
            run.push(f);
        }
        if run.is_empty() {
            // Nothing continues us at L0: is there anything newer at all (L1 after L0
            // retention, or a replica rewritten from scratch)?
            let l1 = self.store.list_ltx(1, 0).await?;
            let l0_newest = self
                .store
                .list_ltx(0, 0)
                .await?
                .last()
                .map(|f| f.max_txid)
                .unwrap_or(0);
            let newest = l1.last().map_or(0, |f| f.max_txid).max(l0_newest);
            if newest <= current.txid && !(newest < current.txid && newest > 0) {
                return Ok(());
            }
            return self.follow_plan(&current).await;
        }
        if run.len() > FOLLOW_AT_MOST {
            // Far behind (a reader held off, a burst of commits): the compacted levels
            // serve most of the run from a few files.
            return self.follow_plan(&current).await;
        }
        match current.extend(&self.store, &run).await {
            Ok(next) => {
                self.publish(&current, next, "L0 files");
                Ok(())
            }
            // Retention removed a file of the run before we read it: the compacted levels
            // serve those TXIDs now.
            Err(e) if e.is_vanished_file() => self.follow_plan(&current).await,
            Err(e) => Err(e),
        }
    }

    /// Reads the replica anew from a fresh plan, making the database visible every
    /// [`FOLLOW_AT_MOST`] files once it is newer than `current`: a long plan over a slow store
    /// (L0 files not compacted yet) keeps what it read when a later file fails, instead of
    /// starting again at every poll while retention removes what it planned.
    async fn follow_plan(&self, current: &Arc<Version>) -> Result<(), RestoreError> {
        let mut replans = 0;
        'plan: loop {
            let files = restore::list_all(&self.store, false).await?;
            let plan = restore::plan(&files, Target::Latest, &self.store.describe())?;
            let mut at = Arc::new(Version::empty(Target::Latest));
            let mut shown = false;
            for (i, chunk) in plan.chunks(FOLLOW_AT_MOST).enumerate() {
                let next = match at.extend(&self.store, chunk).await {
                    Ok(next) => next,
                    // Compaction and retention moved on: what was shown stays (the next
                    // poll goes on from it), or we plan again.
                    Err(e) if e.is_vanished_file() && shown => return Ok(()),
                    Err(e) if e.is_vanished_file() && replans < restore::REPLANS => {
                        replans += 1;
                        continue 'plan;
                    }
                    Err(e) => return Err(e),
                };
                let last = (i + 1) * FOLLOW_AT_MOST >= plan.len();
                at = Arc::new(next);
                // A part of the plan is the database at an earlier TXID: shown once it is
                // newer than what readers have (the whole plan is shown even when older: a
                // replica rewritten with a shorter history).
                if at.txid > current.txid || last {
                    self.publish_arc(current, at.clone(), "a fresh plan");
                    shown = true;
                }
            }
            return Ok(());
        }
    }

    /// Makes `next` the version new read transactions see (unless it is `from` again).
    fn publish(&self, from: &Version, next: Version, read: &str) {
        self.publish_arc(from, Arc::new(next), read);
    }

    fn publish_arc(&self, from: &Version, next: Arc<Version>, read: &str) {
        if next.txid == from.txid && next.commit == from.commit {
            return;
        }
        log::debug!(
            "{}: following TXID {} -> {} from {read}",
            self.store.describe(),
            ltx::format_txid(from.txid),
            ltx::format_txid(next.txid),
        );
        *self.latest.write() = next;
    }

    /// Reads one page of `v`, from the cache or the store; schedules prefetch of up to
    /// `prefetch` pages (the reading handle's setting).
    fn page(
        self: &Arc<Self>,
        v: &Arc<Version>,
        pgno: u32,
        ahead: ReadAhead,
        prefetch: usize,
    ) -> Result<Page, String> {
        let Some(r) = v.pages.get(&pgno).copied() else {
            // Within the database but in no file: never written (zero), as restore leaves it.
            return Ok(Arc::from(vec![0u8; v.page_size as usize]));
        };
        let file = v.files[r.file as usize].clone();
        let key = (v.keys[r.file as usize], pgno);
        super::verify::before_serving(&self.store, &file, key.0)?;
        if let Some(p) = cache().get(&key) {
            self.counters.hit();
            self.prefetch_after(v, pgno, &p, ahead, prefetch);
            return Ok(p);
        }
        self.counters.miss();
        let store = self.store.clone();
        let page_size = v.page_size;
        let counters = &self.counters;
        let fetched = cache().try_get_with(key, || -> Result<Page, String> {
            counters.gets.fetch_add(1, Ordering::Relaxed);
            crate::runtime::block_on(fetch_page(&store, &file, pgno, r.offset, r.size, page_size))
        });
        let page = fetched.map_err(|e| e.to_string())?;
        self.prefetch_after(v, pgno, &page, ahead, prefetch);
        Ok(page)
    }

    /// Background fetches of what is likely read next: B-tree children of an interior page,
    /// or the following pages after sequential reads. Contiguous frames of one file are
    /// fetched in one ranged GET. Never blocks the read that triggered it.
    fn prefetch_after(
        self: &Arc<Self>,
        v: &Arc<Version>,
        pgno: u32,
        page: &[u8],
        ahead: ReadAhead,
        limit: usize,
    ) {
        if limit == 0 {
            return;
        }
        let mut wanted: Vec<u32> = if ahead.children {
            btree_children(pgno, page)
        } else {
            Vec::new()
        };
        if ahead.sequential {
            wanted.extend(pgno + 1..=pgno.saturating_add(limit as u32).min(v.commit));
        }
        let refs: Vec<(u32, super::version::PageRef)> = wanted
            .into_iter()
            .filter_map(|p| v.pages.get(&p).map(|r| (p, *r)))
            .filter(|(p, r)| !cache().contains_key(&(v.keys[r.file as usize], *p)))
            .take(limit)
            .collect();
        if refs.is_empty() {
            return;
        }
        for run in super::version::contiguous_runs(refs, usize::MAX) {
            let Ok(permit) = self.prefetch_slots.clone().try_acquire_owned() else {
                return;
            };
            let db = self.clone();
            let file = v.files[run[0].1.file as usize].clone();
            let fk = v.keys[run[0].1.file as usize];
            let page_size = v.page_size;
            crate::runtime::get().spawn(async move {
                let _permit = permit;
                let start = run[0].1.offset;
                let end = run
                    .last()
                    .map_or(start, |(_, r)| r.offset + u64::from(r.size));
                db.counters.gets.fetch_add(1, Ordering::Relaxed);
                let Ok(bytes) = db
                    .store
                    .get_ltx(&file, Some((start, Some(end - start))))
                    .await
                else {
                    return;
                };
                for (pgno, r) in run {
                    let at = (r.offset - start) as usize;
                    let Some(frame) = bytes.get(at..at + r.size as usize) else {
                        return;
                    };
                    if let Ok((got, data)) = decode_page_frame(frame, page_size) {
                        if got == pgno {
                            cache().insert((fk, pgno), Arc::from(data));
                            db.counters.prefetched.fetch_add(1, Ordering::Relaxed);
                        }
                    }
                }
            });
        }
    }

    /// The poll in flight, once the store has not answered it for too long.
    fn stalled_poll(&self) -> Option<String> {
        let started = self.poll_started_ms.load(Ordering::Relaxed);
        let waited = now_millis() - started;
        (started != 0 && waited > crate::storage::STALLED_REQUEST.as_millis() as i64).then(|| {
            format!(
                "the store has not answered for {} s (looking for new files)",
                waited / 1000
            )
        })
    }

    /// `cache_bytes`: the shared cache's size, read once for every replica of one status
    /// document (it moves while other threads fill it).
    pub fn status(&self, cache_bytes: u64) -> serde_json::Value {
        let v = self.latest();
        let mut pinned = self.pinned_txids.lock().clone();
        pinned.sort_unstable();
        pinned.dedup();
        let pinned: Vec<String> = pinned.into_iter().map(ltx::format_txid).collect();
        let c = &self.counters;
        let (hits, misses) = (
            c.hits.load(Ordering::Relaxed),
            c.misses.load(Ordering::Relaxed),
        );
        serde_json::json!({
            "replica": self.store.describe(),
            "txid": ltx::format_txid(v.txid),
            "timestamp": crate::timefmt::rfc3339_millis(v.timestamp_ms),
            "page_size": v.page_size,
            "pages": v.commit,
            "lag_ms": now_millis() - self.last_poll_ms.load(Ordering::Relaxed),
            "last_error": self.last_error.lock().clone().or_else(|| self.stalled_poll()),
            "last_read_error": *self.last_read_error.lock(),
            "cache_hits": hits,
            "cache_misses": misses,
            "cache_hit_rate": if hits + misses == 0 { 0.0 } else { hits as f64 / (hits + misses) as f64 },
            "gets": c.gets.load(Ordering::Relaxed),
            "prefetched_pages": c.prefetched.load(Ordering::Relaxed),
            "cache_bytes": cache_bytes,
            "connections": self.handles.load(Ordering::Relaxed),
            "pinned_txids": pinned,
        })
    }
}

/// Fetches and verifies one page frame.
async fn fetch_page(
    store: &Store,
    file: &LtxFileInfo,
    pgno: u32,
    offset: u64,
    size: u32,
    page_size: u32,
) -> Result<Page, String> {
    let what = || {
        format!(
            "{} page {pgno}",
            store.ltx_key(file.level, file.min_txid, file.max_txid)
        )
    };
    let frame = store
        .get_ltx(file, Some((offset, Some(u64::from(size)))))
        .await
        .map_err(|e| e.to_string())?;
    let (got, data) =
        decode_page_frame(&frame, page_size).map_err(|e| format!("{}: {e}", what()))?;
    if got != pgno {
        return Err(format!("{}: frame holds page {got}", what()));
    }
    Ok(Arc::from(data))
}

/// What a read may fetch ahead of need.
#[derive(Debug, Clone, Copy)]
struct ReadAhead {
    /// The pages that follow (a scan in page order).
    sequential: bool,
    /// The children of an interior B-tree page (a scan or a join walking the tree).
    children: bool,
}

/// Pages (beyond page 1) a point lookup reads: root, interior, leaf, and one overflow. A
/// connection that has read more is scanning, joining or looking up again and again, and
/// prefetch starts paying; before that (a single lookup after open) it would only add GETs.
const LOOKUP_PAGES: u32 = 4;

/// One open handle (one connection's main database file).
pub struct ReplicaFile {
    pub db: Arc<ReplicaDb>,
    /// This handle's `poll-interval` and `prefetch` (another connection to the same replica
    /// may have others).
    poll_interval: std::time::Duration,
    prefetch: usize,
    /// Set by time travel (URI `txid`/`timestamp` or `litestream_set_time`).
    pinned: Option<Arc<Version>>,
    /// The version of the read transaction in progress (between SHARED lock and unlock).
    txn: Option<Arc<Version>>,
    last_pgno: u32,
    /// Consecutive reads of the next page.
    run: u32,
    /// Pages read by this connection (page 1 aside), and the last interior page read in
    /// this transaction.
    pages_read: u32,
    last_interior: Option<u32>,
}

impl ReplicaFile {
    pub fn open(config: ReplicaConfig, target: Target) -> Result<Self, String> {
        let (poll_interval, prefetch) = (config.poll_interval, config.prefetch);
        let db = ReplicaDb::open(config)?;
        let mut f = Self {
            db,
            poll_interval,
            prefetch,
            pinned: None,
            txn: None,
            last_pgno: 0,
            run: 0,
            pages_read: 0,
            last_interior: None,
        };
        if target != Target::Latest {
            // On failure `f` is dropped, and its Drop releases the handle (once).
            f.set_target(target).map_err(|e| e.to_string())?;
        }
        Ok(f)
    }

    /// The version this handle reads now.
    pub fn version(&self) -> Arc<Version> {
        self.txn
            .clone()
            .or_else(|| self.pinned.clone())
            .unwrap_or_else(|| self.db.latest())
    }

    /// Time travel: pin a past version, or follow the latest again.
    pub fn set_target(&mut self, target: Target) -> Result<(), crate::Error> {
        let pinned = match target {
            Target::Latest => None,
            t => Some(Arc::new(crate::runtime::block_on(Version::build(
                &self.db.store,
                t,
            ))?)),
        };
        self.repin(pinned);
        Ok(())
    }

    /// Pins `pinned` (None: follows), keeping the replica's list of pinned TXIDs true.
    fn repin(&mut self, pinned: Option<Arc<Version>>) {
        let mut txids = self.db.pinned_txids.lock();
        if let Some(old) = self.pinned.take() {
            if let Some(i) = txids.iter().position(|t| *t == old.txid) {
                txids.swap_remove(i);
            }
        }
        if let Some(new) = &pinned {
            txids.push(new.txid);
        }
        self.pinned = pinned;
    }

    pub fn is_pinned(&self) -> bool {
        self.pinned.is_some()
    }

    /// SHARED lock taken: the read transaction sees one version until unlock.
    pub fn begin_read(&mut self) {
        if self.txn.is_none() {
            self.txn = Some(self.pinned.clone().unwrap_or_else(|| self.db.latest()));
        }
    }

    pub fn end_read(&mut self) {
        self.txn = None;
        self.last_interior = None;
        self.run = 0;
    }

    pub fn file_size(&self) -> u64 {
        self.version().file_size()
    }

    /// Fills `buf` from `offset`. Page 1 is patched so SQLite sees a read-only rollback-mode
    /// file whose change counter moves with the TXID (it then drops stale cache).
    pub fn read(&mut self, buf: &mut [u8], offset: u64) -> Result<usize, String> {
        let v = self.version();
        let ps = u64::from(v.page_size);
        let mut done = 0usize;
        while done < buf.len() {
            let at = offset + done as u64;
            if at >= v.file_size() {
                break;
            }
            let pgno = (at / ps + 1) as u32;
            let page = self.read_page(&v, pgno)?;
            let in_page = (at % ps) as usize;
            let n = (buf.len() - done).min(page.len() - in_page);
            buf[done..done + n].copy_from_slice(&page[in_page..in_page + n]);
            if pgno == 1 {
                patch_page1(&mut buf[done..done + n], in_page, &v);
            }
            done += n;
        }
        Ok(done)
    }

    /// One page, deciding what to fetch ahead from this transaction's reads so far.
    fn read_page(&mut self, v: &Arc<Version>, pgno: u32) -> Result<Page, String> {
        self.run = if pgno == self.last_pgno + 1 {
            self.run + 1
        } else {
            0
        };
        self.last_pgno = pgno;
        if pgno != 1 {
            self.pages_read = self.pages_read.saturating_add(1);
        }
        let scanning = self.pages_read > LOOKUP_PAGES;
        let ahead = ReadAhead {
            sequential: scanning && self.run >= 2,
            children: scanning,
        };
        if self.pages_read == LOOKUP_PAGES + 1 {
            // Became a scan: the interior page read earlier gets its prefetch now.
            if let Some(interior) = self.last_interior.filter(|&p| p != pgno) {
                let all = ReadAhead {
                    sequential: false,
                    children: true,
                };
                self.page_with_replan(v, interior, all)?;
            }
        }
        let page = self.page_with_replan(v, pgno, ahead)?;
        if pgno != 1 && !btree_children(pgno, &page).is_empty() {
            self.last_interior = Some(pgno);
        }
        Ok(page)
    }

    fn page_with_replan(
        &mut self,
        v: &Arc<Version>,
        pgno: u32,
        ahead: ReadAhead,
    ) -> Result<Page, String> {
        let mut v = v.clone();
        let mut last_err = String::new();
        for _ in 0..REPLAN_ATTEMPTS {
            match self.db.page(&v, pgno, ahead, self.prefetch) {
                Ok(p) => return Ok(p),
                Err(e) if e.contains("not found") => {
                    // Compaction or retention removed the file: the same TXID may be served
                    // by other files now.
                    last_err = e;
                    let rebuilt = crate::runtime::block_on(Version::build(
                        &self.db.store,
                        Target::Txid(v.txid),
                    ))
                    .map_err(|e| {
                        format!(
                            "TXID {} left the replica's retention while this connection read it \
                             ({last_err}; no files serve it any more: {e}); end the read \
                             transaction, or pin a TXID that is still kept",
                            ltx::format_txid(v.txid)
                        )
                    })?;
                    v = Arc::new(rebuilt);
                    if self.txn.is_some() {
                        self.txn = Some(v.clone());
                    }
                    if self.pinned.is_some() {
                        self.pinned = Some(v.clone());
                    }
                }
                Err(e) => return Err(e),
            }
        }
        Err(last_err)
    }
}

impl Drop for ReplicaFile {
    fn drop(&mut self) {
        self.repin(None);
        self.db.release(self.poll_interval);
    }
}

/// Bytes 18/19 = 1 (rollback journal: no WAL to look for); 24..28 and 92..96 (change counter
/// and version-valid-for) = the TXID, so a new version looks like a changed file.
fn patch_page1(buf: &mut [u8], start: usize, v: &Version) {
    let counter = v.counter.to_be_bytes();
    let mut set = |at: usize, byte: u8| {
        if at >= start && at - start < buf.len() {
            buf[at - start] = byte;
        }
    };
    set(18, 1);
    set(19, 1);
    for (i, b) in counter.iter().enumerate() {
        set(24 + i, *b);
        set(92 + i, *b);
    }
}
