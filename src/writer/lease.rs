//! One writer per destination: a lease object `<path>/lock.json` taken and renewed with
//! conditional writes, in the form of Litestream's (unused) leaser:
//! `{"generation":N,"expires_at":"<RFC 3339>","owner":"<host>:<pid>"}`.
//!
//! Safety never depends on it: every L0 upload is `If-None-Match: *`, so a process that lost
//! its lease without noticing (paused, slow clock) cannot overwrite a TXID, and two processes
//! that both believe they hold it (conditional replacement is not atomic on every store) can
//! only make the chain move on, never fork. The lease gives liveness: one shipper at a time.

use std::path::Path;
use std::time::Duration;

use bytes::Bytes;
use serde::{Deserialize, Serialize};

use crate::storage::{PutCondition, StorageError, Store};
use crate::timefmt::{now_millis, parse_rfc3339_millis, rfc3339_millis};

pub const LEASE_KEY: &str = "lock.json";

#[derive(Debug, Clone, Serialize, Deserialize)]
struct LeaseDoc {
    generation: i64,
    expires_at: String,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    owner: String,
    /// Which `Lease` of that process wrote it: a write whose answer was lost is recognised
    /// as ours at the next look (Litestream does not read this object).
    #[serde(default, skip_serializing_if = "String::is_empty")]
    instance: String,
}

/// What `litestream_status()` shows of the lease.
#[derive(Debug, Clone, Default, Serialize)]
pub struct LeaseStatus {
    /// `held`, `waiting` (another writer has it), `off`, or `refused` (the store ignores
    /// conditional writes).
    pub state: String,
    pub owner: Option<String>,
    pub generation: i64,
    pub expires_at: Option<String>,
    /// When a lease we hold expires (ms), to tell `expired` at the time status is read.
    #[serde(skip)]
    pub expires_ms: i64,
}

impl LeaseStatus {
    /// As of `now_ms`: a lease we hold but could not renew in time is `expired` (another
    /// writer may take it), whatever the shipper last saw.
    pub fn as_of(&self, now_ms: i64) -> Self {
        let mut s = self.clone();
        if s.state == "held" && now_ms > s.expires_ms {
            s.state = "expired".into();
        }
        s
    }
}

pub struct Lease {
    ttl: Duration,
    owner: String,
    instance: String,
    /// Our lease object's ETag and generation while we hold it.
    held: Option<(String, i64)>,
    /// When our lease expires (by our clock).
    expires_ms: i64,
    pub status: LeaseStatus,
    /// Set when the lease is taken (not renewed): whoever held it in between (another
    /// writer, a fork) may have changed the replica, so its position must be read again.
    pub acquired: bool,
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|s| s.trim().to_string())
        .unwrap_or_else(|_| "localhost".into())
}

impl Lease {
    pub fn new(ttl: Duration) -> Self {
        Self {
            ttl,
            owner: format!("{}:{}", hostname(), std::process::id()),
            instance: format!("{:016x}", rand::random::<u64>()),
            held: None,
            expires_ms: 0,
            status: LeaseStatus {
                state: "waiting".into(),
                ..LeaseStatus::default()
            },
            acquired: false,
        }
    }

    /// A lease left by a process of this host that no longer runs (a crash, then a restart)
    /// need not be waited out. Only liveness depends on this: fencing keeps it safe.
    fn is_dead_local_owner(&self, owner: &str) -> bool {
        let mine = self.owner.rsplit_once(':').map(|(h, _)| h);
        match owner.rsplit_once(':') {
            Some((host, pid)) if Some(host) == mine && pid != std::process::id().to_string() => pid
                .parse::<u32>()
                .is_ok_and(|p| !Path::new(&format!("/proc/{p}")).exists()),
            _ => false,
        }
    }

    fn ttl_ms(&self) -> i64 {
        self.ttl.as_millis() as i64
    }

    /// Held, and by our clock not within a third of its TTL of expiring.
    pub fn is_fresh(&self) -> bool {
        self.held.is_some() && now_millis() < self.expires_ms - self.ttl_ms() / 3
    }

    /// Renew at the next `ensure` (after losing an upload race: is the lease still ours?).
    pub fn recheck(&mut self) {
        if self.held.is_some() {
            self.expires_ms = self.expires_ms.min(now_millis() + self.ttl_ms() / 3);
        }
    }

    pub fn is_held(&self) -> bool {
        self.held.is_some() && now_millis() < self.expires_ms
    }

    fn doc(&self, generation: i64, expires_ms: i64) -> Bytes {
        let doc = LeaseDoc {
            generation,
            expires_at: rfc3339_millis(expires_ms),
            owner: self.owner.clone(),
            instance: self.instance.clone(),
        };
        Bytes::from(serde_json::to_vec(&doc).expect("serializable"))
    }

    fn set_held(&mut self, etag: String, generation: i64, expires_ms: i64) {
        self.held = Some((etag, generation));
        self.expires_ms = expires_ms;
        self.status = LeaseStatus {
            state: "held".into(),
            owner: Some(self.owner.clone()),
            generation,
            expires_at: Some(rfc3339_millis(expires_ms)),
            expires_ms,
        };
    }

    fn set_waiting(&mut self, doc: Option<&LeaseDoc>) {
        self.held = None;
        self.status = LeaseStatus {
            state: "waiting".into(),
            owner: doc.map(|d| d.owner.clone()),
            generation: doc.map_or(0, |d| d.generation),
            expires_at: doc.map(|d| d.expires_at.clone()),
            expires_ms: 0,
        };
    }

    /// Makes sure we hold a fresh lease: renews it, or takes it if it is free or expired.
    /// Returns whether we hold it afterwards.
    pub async fn ensure(&mut self, store: &Store) -> Result<bool, StorageError> {
        if self.is_fresh() {
            return Ok(true);
        }
        if let Some((etag, generation)) = self.held.clone() {
            let expires = now_millis() + self.ttl_ms();
            match store
                .put(
                    LEASE_KEY,
                    self.doc(generation, expires),
                    PutCondition::IfMatch(etag),
                    None,
                )
                .await
            {
                Ok(etag) => {
                    self.set_held(etag, generation, expires);
                    return Ok(true);
                }
                Err(e) if e.is_precondition_failed() || e.is_not_found() => {
                    log::warn!(
                        "lease on {} lost: another writer took it ({e})",
                        store.describe()
                    );
                    self.set_waiting(None);
                }
                Err(e) => {
                    // Unknown outcome: we still hold it until it expires by our clock.
                    if !self.is_held() {
                        self.set_waiting(None);
                    }
                    return Err(e);
                }
            }
        }
        self.acquire(store).await
    }

    async fn acquire(&mut self, store: &Store) -> Result<bool, StorageError> {
        let existing = match store.head(LEASE_KEY).await {
            Ok(meta) => Some(meta.etag),
            Err(e) if e.is_not_found() => None,
            Err(e) => return Err(e),
        };
        let expires = now_millis() + self.ttl_ms();
        let (condition, generation) = match existing {
            None => (PutCondition::IfNoneMatch, 1),
            Some(etag) => {
                let body = match store.get(LEASE_KEY, None).await {
                    Ok(b) => b,
                    Err(e) if e.is_not_found() => return Ok(false), // released meanwhile: next round
                    Err(e) => return Err(e),
                };
                let doc: Option<LeaseDoc> = serde_json::from_slice(&body).ok();
                if let Some(d) = doc.as_ref().filter(|d| d.instance == self.instance) {
                    // Our own write, whose answer was lost (a reset after the PUT landed):
                    // the lease is ours, under the object's current version.
                    let expires = parse_rfc3339_millis(&d.expires_at).unwrap_or(0);
                    if expires > now_millis() {
                        log::info!(
                            "lease on {}: the object is our own write (its answer was lost)",
                            store.describe()
                        );
                        self.set_held(etag, d.generation, expires);
                        self.acquired = true;
                        return Ok(true);
                    }
                }
                let expired = doc
                    .as_ref()
                    .and_then(|d| parse_rfc3339_millis(&d.expires_at))
                    .is_none_or(|t| t <= now_millis())
                    || doc
                        .as_ref()
                        .is_some_and(|d| self.is_dead_local_owner(&d.owner));
                if !expired {
                    log::debug!(
                        "lease on {} is held by {:?} until {:?}",
                        store.describe(),
                        doc.as_ref().map(|d| &d.owner),
                        doc.as_ref().map(|d| &d.expires_at)
                    );
                    self.set_waiting(doc.as_ref());
                    return Ok(false);
                }
                (
                    PutCondition::IfMatch(etag),
                    doc.map_or(0, |d| d.generation) + 1,
                )
            }
        };
        match store
            .put(LEASE_KEY, self.doc(generation, expires), condition, None)
            .await
        {
            Ok(etag) => {
                log::info!(
                    "lease on {} taken (generation {generation})",
                    store.describe()
                );
                self.set_held(etag, generation, expires);
                self.acquired = true;
                Ok(true)
            }
            Err(e) if e.is_precondition_failed() || e.is_not_found() => {
                self.set_waiting(None);
                Ok(false)
            }
            Err(e) => Err(e),
        }
    }

    /// Gives the lease up at a clean shutdown, so the next writer need not wait for expiry:
    /// a conditional delete where the store has one, else an already-expired lease.
    pub async fn release(&mut self, store: &Store, conditional_delete: bool) {
        let Some((etag, generation)) = self.held.take() else {
            return;
        };
        let result = if conditional_delete {
            store.delete(LEASE_KEY, Some(&etag)).await
        } else {
            store
                .put(
                    LEASE_KEY,
                    self.doc(generation, now_millis() - 1),
                    PutCondition::IfMatch(etag),
                    None,
                )
                .await
                .map(|_| ())
        };
        if let Err(e) = result {
            log::debug!("lease release on {}: {e}", store.describe());
        }
        self.set_waiting(None);
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use super::*;
    use crate::runtime::block_on;
    use crate::storage::{Faults, MemoryStore};

    fn memory() -> (Store, Arc<MemoryStore>) {
        let m = Arc::new(MemoryStore::new());
        (Store::Memory(m.clone()), m)
    }

    fn doc(store: &Store) -> LeaseDoc {
        serde_json::from_slice(&block_on(store.get(LEASE_KEY, None)).unwrap()).unwrap()
    }

    #[test]
    fn a_free_lease_is_taken_and_a_second_writer_waits_for_it() {
        let (store, _) = memory();
        let mut first = Lease::new(Duration::from_secs(30));
        let mut second = Lease::new(Duration::from_secs(30));
        assert!(block_on(first.ensure(&store)).unwrap());
        assert!(first.acquired && first.is_held());
        assert_eq!(first.status.state, "held");
        assert_eq!(doc(&store).generation, 1);
        assert!(!block_on(second.ensure(&store)).unwrap());
        assert_eq!(second.status.state, "waiting");
        assert_eq!(second.status.owner.as_deref(), Some(first.owner.as_str()));
        // Renewing a fresh lease asks nothing of the store; a stale one is renewed in place.
        first.recheck();
        assert!(block_on(first.ensure(&store)).unwrap());
        assert_eq!(doc(&store).generation, 1);
    }

    #[test]
    fn a_released_lease_is_taken_at_once() {
        for conditional_delete in [true, false] {
            let (store, _) = memory();
            let mut first = Lease::new(Duration::from_secs(30));
            let mut second = Lease::new(Duration::from_secs(30));
            assert!(block_on(first.ensure(&store)).unwrap());
            block_on(first.release(&store, conditional_delete));
            assert!(!first.is_held());
            assert!(
                block_on(second.ensure(&store)).unwrap(),
                "{conditional_delete}"
            );
            // Deleted: a new lease; expired in place: the next generation.
            let expected = if conditional_delete { 1 } else { 2 };
            assert_eq!(doc(&store).generation, expected);
        }
    }

    #[test]
    fn an_expired_lease_is_taken_over_and_its_old_holder_learns_it() {
        let (store, _) = memory();
        let mut first = Lease::new(Duration::from_millis(150));
        let mut second = Lease::new(Duration::from_millis(150));
        assert!(block_on(first.ensure(&store)).unwrap());
        std::thread::sleep(Duration::from_millis(200));
        assert_eq!(first.status.as_of(now_millis()).state, "expired");
        assert!(block_on(second.ensure(&store)).unwrap());
        assert_eq!(doc(&store).generation, 2);
        // The old holder's renewal is refused (the object changed): it waits for the new one.
        assert!(!block_on(first.ensure(&store)).unwrap());
        assert!(!first.is_held());
        assert_eq!(first.status.state, "waiting");
        assert_eq!(first.status.generation, 2);
    }

    #[test]
    fn a_write_whose_answer_was_lost_still_gives_the_lease() {
        // The first take, then a renewal: each lands on the store, and its answer is lost.
        let (store, faults) = memory();
        let mut lease = Lease::new(Duration::from_secs(30));
        faults.set_faults(Faults {
            lose_next_answers: 1,
            ..Faults::default()
        });
        assert!(block_on(lease.ensure(&store)).is_err());
        assert!(!lease.is_held());
        assert!(
            block_on(lease.ensure(&store)).unwrap(),
            "{:?}",
            lease.status
        );
        assert_eq!(doc(&store).generation, 1);
        faults.set_faults(Faults {
            lose_next_answers: 1,
            ..Faults::default()
        });
        lease.expires_ms = now_millis() + 1_000; // stale, so ensure renews
        assert!(block_on(lease.ensure(&store)).is_err());
        assert!(
            lease.is_held(),
            "an unknown outcome keeps the lease until it expires"
        );
        // Before: "lease lost: another writer took it", then waiting out our own lease.
        assert!(
            block_on(lease.ensure(&store)).unwrap(),
            "{:?}",
            lease.status
        );
        assert_eq!(lease.status.state, "held");
        let mut other = Lease::new(Duration::from_secs(30));
        assert!(!block_on(other.ensure(&store)).unwrap());
    }

    #[test]
    fn a_failing_store_keeps_the_lease_only_until_it_expires_by_our_clock() {
        // Our clock moved by setting the expiry, not by sleeping: no race with a slow machine.
        let (store, faults) = memory();
        let mut lease = Lease::new(Duration::from_secs(30));
        assert!(block_on(lease.ensure(&store)).unwrap());
        faults.set_faults(Faults {
            fail_next: u32::MAX,
            ..Faults::default()
        });
        lease.expires_ms = now_millis() + 5_000; // within a third of expiry: renew
        let err = block_on(lease.ensure(&store)).unwrap_err();
        assert!(err.is_transient(), "{err}");
        assert!(lease.is_held());
        lease.expires_ms = now_millis() - 1;
        lease.status.expires_ms = lease.expires_ms;
        assert_eq!(lease.status.as_of(now_millis()).state, "expired");
        assert!(block_on(lease.ensure(&store)).is_err());
        assert!(!lease.is_held());
        assert_eq!(lease.status.state, "waiting");
    }

    #[test]
    fn a_store_that_ignores_conditional_writes_is_found_out() {
        // On such a store two writers that both found the lease free both win it.
        let (store, faults) = memory();
        faults.set_faults(Faults {
            ignore_conditions: true,
            ..Faults::default()
        });
        assert!(!block_on(store.probe_conditional_writes())
            .unwrap()
            .is_sufficient());
        for _ in 0..2 {
            let body = Bytes::from_static(b"{}");
            block_on(store.put(LEASE_KEY, body, PutCondition::IfNoneMatch, None)).unwrap();
        }
        let (honest, _) = memory();
        assert!(block_on(honest.probe_conditional_writes())
            .unwrap()
            .is_sufficient());
        block_on(honest.put(LEASE_KEY, Bytes::new(), PutCondition::IfNoneMatch, None)).unwrap();
        let again = block_on(honest.put(LEASE_KEY, Bytes::new(), PutCondition::IfNoneMatch, None));
        assert!(again.unwrap_err().is_precondition_failed());
    }
}
