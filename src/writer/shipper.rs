//! Uploads queued LTX files in TXID order, one PUT at a time per database, each with
//! `If-None-Match: *` so no TXID is ever overwritten. Retries for as long as it takes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use super::capture::{Location, Queued, Stillness};
use super::Replicator;
use crate::storage::{PutCondition, StorageError, WrittenBody};

/// Longest pause between retries of a failing upload.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

/// How often an idle owner looks for other processes' commits: soon after activity, then
/// less and less often while nothing happens.
const FOREIGN_POLL_MIN: Duration = Duration::from_millis(100);
const FOREIGN_POLL_MAX: Duration = Duration::from_secs(1);

/// How often a follower tries to become the owner (the owner may have exited).
const FOLLOWER_RETRY: Duration = Duration::from_millis(500);

pub fn start(r: Arc<Replicator>) {
    super::supervise(r, "shipper", run);
}

/// The replica's newest TXID over every level.
async fn remote_position(r: &Replicator) -> Result<u64, StorageError> {
    let files = r.store.list_every_level().await?;
    Ok(files.iter().map(|f| f.max_txid).max().unwrap_or(0))
}

/// Holds the lease (first checking, once, that the store honours conditional writes: one
/// that ignores them would let two writers both win). Returns whether we may ship.
pub(super) async fn hold_lease(r: &Replicator) -> Result<bool, StorageError> {
    // Only the database's owner process on this host ever takes the lease.
    if !r.capture.lock().is_owner() {
        return Ok(false);
    }
    let known = r.conditional.lock().clone();
    let support = match known {
        Some(s) => s,
        None => {
            let s = r.store.probe_conditional_writes().await?;
            *r.conditional.lock() = Some(s.clone());
            s
        }
    };
    if !support.is_sufficient() {
        let msg = format!(
            "{} does not honour conditional writes (If-None-Match/If-Match ignored): two writers could overwrite each other, so nothing is replicated; set lease=off (URI) or LITESTREAM_LEASE=off to replicate without a lease at your own risk",
            r.store.describe()
        );
        record_error(r, &msg);
        r.stats.lock().lease = super::lease::LeaseStatus {
            state: "refused".into(),
            ..Default::default()
        };
        r.lease_held.store(false, Ordering::SeqCst);
        return Ok(false);
    }
    let mut lease = r.lease.lock().await;
    if r.closing.load(Ordering::SeqCst) {
        return Ok(false); // released (or about to be) by the closing connection
    }
    let result = lease.ensure(&r.store).await;
    if std::mem::take(&mut lease.acquired) {
        // PITR (fork): taken anew, so the replica may have moved while others held it.
        r.capture.lock().remote_known = false;
    }
    r.lease_held.store(lease.is_held(), Ordering::SeqCst);
    r.stats.lock().lease = lease.status.clone();
    result
}

/// Learns the replica's position and lines our queue up with it. When the replica already
/// has a TXID we also queued (a crash between upload and saving the position), the two are
/// the same upload only if their file checksums match.
async fn line_up(r: &Replicator) -> Result<(), StorageError> {
    let remote = remote_position(r).await?;
    let ours = r.capture.lock().queued_checksum(remote);
    let same = match ours {
        Some(sum) => {
            let files = r.store.list_ltx(0, remote).await?;
            match files
                .iter()
                .find(|f| f.min_txid == remote && f.max_txid == remote)
            {
                Some(f) if f.size >= 8 => {
                    let tail = r.store.get_ltx(f, Some((f.size - 8, Some(8)))).await?;
                    tail.len() == 8
                        && u64::from_be_bytes(tail[..].try_into().expect("8 bytes")) == sum
                }
                _ => false,
            }
        }
        None => true,
    };
    r.capture.lock().reconcile(remote, same);
    Ok(())
}

fn record_error(r: &Replicator, e: &dyn std::fmt::Display) {
    let msg = e.to_string();
    let mut stats = r.stats.lock();
    if stats.last_error.as_deref() != Some(msg.as_str()) {
        log::warn!("{}: {msg}", r.db_path.display());
    }
    stats.last_error = Some(msg);
    drop(stats);
    r.progressed();
}

/// A follower's loop: nothing to ship; take over when the owner goes.
async fn wait_for_ownership(r: &Arc<Replicator>) -> bool {
    loop {
        let became = {
            let mut c = r.capture.lock();
            c.try_become_owner()
        };
        match became {
            Ok(true) => {
                log::info!(
                    "{}: this process now replicates it (the previous owner exited)",
                    r.db_path.display()
                );
                return true;
            }
            Ok(false) => {}
            Err(e) => record_error(r, &format!("cannot take over replication: {e}")),
        }
        if r.unless_closed(tokio::time::sleep(FOLLOWER_RETRY)).await {
            return false;
        }
    }
}

/// Looks for commits other processes made (off the async threads: it reads files).
async fn poll_foreign(r: &Arc<Replicator>) -> bool {
    let r2 = r.clone();
    let found = tokio::task::spawn_blocking(move || r2.capture.lock().poll_foreign(false)).await;
    match found {
        Ok(Ok(found)) => found,
        Ok(Err(e)) => {
            record_error(
                r,
                &format!("cannot read the database for other processes' commits: {e}"),
            );
            false
        }
        Err(e) => {
            record_error(r, &format!("internal error: {e}"));
            false
        }
    }
}

/// What the shipper does next.
enum Next {
    Upload(Queued),
    /// A streamed snapshot, uploaded already (inside the read transaction it needs).
    Uploaded(Queued, crate::storage::Result<String>),
}

/// Seals the next file: under a read transaction when it must see the database whole (a
/// full snapshot, or other processes' commits to resolve). None: nothing to ship now.
/// Runs on a blocking thread (it reads files, and may upload while holding the database).
fn next_to_ship(r: &Replicator) -> std::io::Result<Option<Next>> {
    let now = crate::timefmt::now_millis();
    let wants_read = {
        let mut c = r.capture.lock();
        c.queue.is_empty() && c.needs_consistent_read(r.flush.load(Ordering::SeqCst))
    };
    if wants_read {
        let sealed = r.with_database_still(
            |c| {
                c.poll_foreign(true)?;
                let sealed_here =
                    c.queue.is_empty() && c.seal_next(now, false, Stillness::ReadForUpload)?;
                Ok::<_, std::io::Error>((c.queue.front().cloned(), sealed_here))
            },
            // The capture's lock is free again (this process's writers go on); the read
            // transaction still holds every page a snapshot sealed in it reads.
            |sealed| match sealed {
                Ok((Some(item), true)) if matches!(item.location, Location::Stream(_)) => {
                    let uploaded = tokio::runtime::Handle::current().block_on(upload(r, &item));
                    Ok(Some(Next::Uploaded(item, uploaded)))
                }
                Ok((item, _)) => Ok(item.map(Next::Upload)),
                Err(e) => Err(e),
            },
        );
        match sealed {
            Ok(result) => return result,
            // Not now (a writer holds the database, no file yet): the next pass tries again.
            // The writer may be this process, holding its lock for good
            // (`locking_mode=EXCLUSIVE`): no read transaction will ever get in, and no write
            // of ours may come to take the snapshot before it: take it in place.
            Err(e) if e.passes_by_waiting() => {
                let mut c = r.capture.lock();
                if c.queue.is_empty() && c.held_still_by_own_lock() {
                    log::debug!(
                        "{}: full snapshot under our own write lock (no read can get in: {e})",
                        r.db_path.display()
                    );
                    if c.seal_next(now, false, Stillness::OwnLock)? {
                        return Ok(c.queue.front().cloned().map(Next::Upload));
                    }
                }
                log::debug!("{}: no consistent read yet: {e}", r.db_path.display());
            }
            Err(e) => record_error(r, &format!("{}: {e}", super::SNAPSHOT_READ_FAILED)),
        }
    }
    let mut c = r.capture.lock();
    if c.queue.is_empty() {
        c.seal_next(now, false, Stillness::Moving)?;
    }
    if let Some(Location::Stream(_)) = c.queue.front().map(|q| &q.location) {
        // Outside the read transaction it was sealed in (its upload failed): the pages it
        // would read may have moved. Never uploaded from here.
        c.drop_queue();
        c.needs_full = true;
        return Ok(None);
    }
    Ok(c.queue.front().cloned().map(Next::Upload))
}

/// Uploads one queued file to L0, never over an existing one. A streamed snapshot only from
/// inside the read transaction it was sealed in (see `next_to_ship`).
async fn upload(r: &Replicator, item: &Queued) -> crate::storage::Result<String> {
    let _slot = super::UPLOAD_SLOTS.acquire().await;
    let txid = item.header.min_txid;
    let _waiting = StoreWait::new(r, format!("upload of TXID {txid:#x}"));
    let (level, header, condition) = (0, &item.header, PutCondition::IfNoneMatch);
    match &item.location {
        Location::Memory(body) => {
            r.store
                .put_ltx(level, header, body.clone(), condition)
                .await
        }
        // Streamed from disk: a spooled snapshot may be as large as the database.
        Location::Spool(path, _) => r.store.put_ltx_file(level, header, path, condition).await,
        Location::Stream(snapshot) => {
            let snapshot = snapshot.clone();
            let body = WrittenBody {
                length: snapshot.length,
                write: Arc::new(move |out| snapshot.write_to(out)),
            };
            r.store
                .put_ltx_written(level, header, body, condition)
                .await
        }
    }
}

/// Marks a store request of the shipper in flight for the status, until dropped (also when
/// the request's future is).
struct StoreWait<'a>(&'a Replicator);

impl<'a> StoreWait<'a> {
    fn new(r: &'a Replicator, what: String) -> Self {
        r.stats.lock().store_wait = Some((what, crate::timefmt::now_millis()));
        Self(r)
    }
}

impl Drop for StoreWait<'_> {
    fn drop(&mut self) {
        self.0.stats.lock().store_wait = None;
    }
}

async fn run(r: Arc<Replicator>) {
    let mut attempt = 0u32;
    let mut last_put: Option<Instant> = None;
    let mut poll_every = FOREIGN_POLL_MIN;
    loop {
        if r.closing.load(Ordering::SeqCst) {
            return;
        }
        if !r.capture.lock().is_owner() && !wait_for_ownership(&r).await {
            return;
        }
        // Nothing to ship: wait for a commit or a flush without a single request to the
        // store (an idle database costs nothing, and lets its lease lapse), looking now and
        // then for commits of other processes.
        r.idle.store(true, Ordering::SeqCst);
        let flushing = r.flush.load(Ordering::SeqCst);
        let has_work = flushing || r.capture.lock().has_work(false);
        if !has_work {
            tokio::select! {
                _ = r.wake.notified() => { poll_every = FOREIGN_POLL_MIN; }
                _ = tokio::time::sleep(poll_every) => {
                    if poll_foreign(&r).await {
                        poll_every = FOREIGN_POLL_MIN;
                    } else {
                        poll_every = (poll_every * 2).min(FOREIGN_POLL_MAX);
                    }
                }
            }
            continue;
        }
        // Busy: commits from now on need not wake us (a wakeup per commit would cost the
        // commit path); we look for them before sleeping again.
        r.idle.store(false, Ordering::SeqCst);
        if r.config.lease {
            let lease = {
                let _waiting = StoreWait::new(&r, "lease renewal".into());
                hold_lease(&r).await
            };
            match lease {
                Ok(true) => {}
                Ok(false) => {
                    // Another writer replicates here: keep capturing locally, ship nothing,
                    // and look again soon (it may exit, or its lease expire).
                    r.capture.lock().remote_known = false;
                    r.progressed();
                    tokio::time::sleep((r.config.lease_ttl / 3).min(Duration::from_secs(1))).await;
                    continue;
                }
                Err(e) => {
                    record_error(&r, &e);
                    backoff(&r, &mut attempt).await;
                    continue;
                }
            }
        }
        if !r.capture.lock().remote_known {
            let lined_up = {
                let _waiting = StoreWait::new(&r, "reading the replica's position".into());
                line_up(&r).await
            };
            match lined_up {
                Ok(()) => {}
                Err(e) => {
                    record_error(&r, &e);
                    backoff(&r, &mut attempt).await;
                    continue;
                }
            }
        }
        // Respect the minimum interval between PUTs unless someone is waiting on a flush.
        if let Some(t) = last_put {
            let wait = r.config.min_interval.saturating_sub(t.elapsed());
            if !wait.is_zero() && !r.flush.load(Ordering::SeqCst) {
                tokio::select! {
                    _ = tokio::time::sleep(wait) => {}
                    _ = r.wake.notified() => { continue; }
                }
            }
        }
        // A commit landing from here on finds `idle` set and wakes us.
        r.idle.store(true, Ordering::SeqCst);
        let next = {
            let r2 = r.clone();
            tokio::task::spawn_blocking(move || next_to_ship(&r2)).await
        };
        let next = match next {
            Ok(Ok(Some(next))) => {
                r.built(Ok(()));
                r.idle.store(false, Ordering::SeqCst);
                next
            }
            Ok(Ok(None)) => {
                // Nothing to seal yet (or not now: a rollback journal is live): the commit
                // point wakes us.
                r.flush.store(false, Ordering::SeqCst);
                r.progressed();
                let _ = tokio::time::timeout(Duration::from_millis(200), r.wake.notified()).await;
                continue;
            }
            Ok(Err(e)) => {
                r.built(Err(&e));
                record_error(&r, &format!("cannot build the next LTX file: {e}"));
                r.capture.lock().needs_full = true;
                backoff(&r, &mut attempt).await;
                continue;
            }
            Err(e) => {
                record_error(&r, &format!("internal error: {e}"));
                backoff(&r, &mut attempt).await;
                continue;
            }
        };
        let (item, result) = match next {
            Next::Upload(item) => {
                if let Location::Stream(_) = item.location {
                    // Sealed in a read transaction that is over (never the case today):
                    // its pages may have moved, so it is not uploaded from here.
                    let mut c = r.capture.lock();
                    c.drop_queue();
                    c.needs_full = true;
                    continue;
                }
                if let Location::Spool(path, _) = &item.location {
                    if let Err(e) = std::fs::File::open(path) {
                        record_error(
                            &r,
                            &format!("cannot read spooled {}: {e}; resyncing", path.display()),
                        );
                        let mut c = r.capture.lock();
                        c.drop_queue();
                        c.needs_full = true;
                        continue;
                    }
                }
                last_put = Some(Instant::now());
                let result = upload(&r, &item).await;
                (item, result)
            }
            Next::Uploaded(item, result) => {
                last_put = Some(Instant::now());
                (item, result)
            }
        };
        let size = item.location.size();
        let txid = item.header.min_txid;
        if result.is_err() {
            if let Location::Stream(_) = item.location {
                // Its read transaction is over: the next pass takes a new snapshot.
                let mut c = r.capture.lock();
                c.drop_queue();
                c.needs_full = true;
            }
        }
        match result {
            Ok(_) => {
                attempt = 0;
                let mut c = r.capture.lock();
                if let Err(e) = c.shipped(&item) {
                    log::warn!("{}: cannot save the position: {e}", r.db_path.display());
                }
                drop(c);
                let mut stats = r.stats.lock();
                stats.uploads += 1;
                stats.uploaded_bytes += size;
                stats.last_upload_ms = crate::timefmt::now_millis();
                stats.last_error = None;
                drop(stats);
                r.uploaded.notify_one();
                r.progressed();
            }
            Err(e) if e.is_precondition_failed() => {
                // Someone else wrote this TXID: never overwrite; re-read where the replica is.
                record_error(
                    &r,
                    &format!("TXID {txid:#x} already exists in the replica (another writer?): {e}"),
                );
                r.capture.lock().remote_known = false;
            }
            Err(e) => {
                record_error(&r, &e);
                backoff(&r, &mut attempt).await;
            }
        }
    }
}

async fn backoff(r: &Replicator, attempt: &mut u32) {
    let delay = crate::storage::backoff(*attempt).min(MAX_BACKOFF);
    *attempt = attempt.saturating_add(1);
    r.unless_closed(tokio::time::sleep(delay)).await;
}
