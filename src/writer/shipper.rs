//! Uploads queued LTX files in TXID order, one PUT at a time per database, each with
//! `If-None-Match: *` so no TXID is ever overwritten. Retries for as long as it takes.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;

use super::capture::Location;
use super::Replicator;
use crate::storage::{PutCondition, StorageError};

/// Longest pause between retries of a failing upload.
const MAX_BACKOFF: Duration = Duration::from_secs(30);

pub fn start(r: Arc<Replicator>) {
    crate::runtime::get().spawn(run(r));
}

/// The replica's newest TXID over every level.
async fn remote_position(r: &Replicator) -> Result<u64, StorageError> {
    let mut max = 0;
    for level in (0..=crate::storage::SNAPSHOT_LEVEL).rev() {
        if let Some(f) = r.store.list_ltx(level, 0).await?.last() {
            max = max.max(f.max_txid);
        }
    }
    Ok(max)
}

fn record_error(r: &Replicator, e: &dyn std::fmt::Display) {
    let msg = e.to_string();
    let mut stats = r.stats.lock();
    if stats.last_error.as_deref() != Some(msg.as_str()) {
        log::warn!("{}: {msg}", r.db_path.display());
    }
    stats.last_error = Some(msg);
}

async fn run(r: Arc<Replicator>) {
    let mut attempt = 0u32;
    let mut last_put: Option<Instant> = None;
    loop {
        if r.closing.load(Ordering::SeqCst) {
            return;
        }
        if !r.stats.lock().remote_known {
            match remote_position(&r).await {
                Ok(remote) => {
                    r.capture.lock().reconcile(remote);
                    r.stats.lock().remote_known = true;
                }
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
        let next = {
            let r2 = r.clone();
            tokio::task::spawn_blocking(move || {
                let mut c = r2.capture.lock();
                if c.queue.is_empty() {
                    c.seal_next(crate::timefmt::now_millis())?;
                }
                Ok::<_, std::io::Error>(c.queue.front().cloned())
            })
            .await
        };
        let item = match next {
            Ok(Ok(Some(item))) => item,
            Ok(Ok(None)) => {
                r.flush.store(false, Ordering::SeqCst);
                r.wake.notified().await;
                continue;
            }
            Ok(Err(e)) => {
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
        let body = match &item.location {
            Location::Memory(b) => b.clone(),
            Location::Spool(p) => match std::fs::read(p) {
                Ok(b) => Bytes::from(b),
                Err(e) => {
                    record_error(
                        &r,
                        &format!("cannot read spooled {}: {e}; resyncing", p.display()),
                    );
                    let mut c = r.capture.lock();
                    c.drop_queue();
                    c.needs_full = true;
                    continue;
                }
            },
        };
        last_put = Some(Instant::now());
        let size = body.len() as u64;
        let txid = item.header.min_txid;
        match r
            .store
            .put_ltx(0, &item.header, body, PutCondition::IfNoneMatch)
            .await
        {
            Ok(_) => {
                attempt = 0;
                let mut c = r.capture.lock();
                if let Err(e) = c.shipped(txid) {
                    log::warn!("{}: cannot save the position: {e}", r.db_path.display());
                }
                drop(c);
                let mut stats = r.stats.lock();
                stats.uploads += 1;
                stats.uploaded_bytes += size;
                stats.last_error = None;
            }
            Err(e) if e.is_precondition_failed() => {
                // Someone else wrote this TXID: never overwrite; re-read where the replica is.
                record_error(
                    &r,
                    &format!("TXID {txid:#x} already exists in the replica (another writer?): {e}"),
                );
                r.stats.lock().remote_known = false;
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
    tokio::select! {
        _ = tokio::time::sleep(delay) => {}
        _ = async { while !r.closing.load(Ordering::SeqCst) { tokio::time::sleep(Duration::from_millis(50)).await } } => {}
    }
}
