//! An in-memory store with injectable faults, for fast unit tests of what runs on a store
//! (lease, compactor, restore) without a server. Not reachable from a replica URL: tests
//! build it with `Store::Memory`. Keys and layout are those of `file://`.
//!
//! Faults are the ones real stores show: transient failures (a 503), an answer lost after
//! the request took effect (a connection reset after the PUT landed), and conditional writes
//! ignored (Garage, s3rver).

use std::collections::BTreeMap;
use std::io::Write;
use std::sync::{Mutex, MutexGuard};

use bytes::Bytes;

use super::{ObjectMeta, PutCondition, Result, StorageError, WrittenBody};
use crate::timefmt::now_millis;

struct Object {
    body: Bytes,
    etag: String,
    modified_ms: i64,
    timestamp_ms: Option<i64>,
}

impl Object {
    fn meta(&self) -> ObjectMeta {
        ObjectMeta {
            size: self.body.len() as u64,
            etag: self.etag.clone(),
            modified_ms: self.modified_ms,
            timestamp_ms: self.timestamp_ms,
        }
    }
}

/// What the store does wrong from now on.
#[derive(Debug, Default, Clone)]
pub struct Faults {
    /// This many requests go through before `fail_next` applies.
    pub pass_first: u32,
    /// Then this many requests fail with HTTP 503 and change nothing.
    pub fail_next: u32,
    /// The next this many writes (PUT, DELETE) take effect, then fail as a reset connection.
    pub lose_next_answers: u32,
    /// `If-None-Match` and `If-Match` are ignored: every write succeeds.
    pub ignore_conditions: bool,
}

#[derive(Default)]
struct State {
    objects: BTreeMap<String, Object>,
    versions: u64,
    faults: Faults,
    requests: u64,
}

#[derive(Default)]
pub struct MemoryStore {
    state: Mutex<State>,
}

impl MemoryStore {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn describe(&self) -> String {
        format!("memory://{:p}", self)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        // A test that panicked while holding it has failed already; the map is still whole.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Replaces the faults in force.
    pub fn set_faults(&self, faults: Faults) {
        self.state().faults = faults;
    }

    /// Requests answered so far (each operation is one request).
    pub fn requests(&self) -> u64 {
        self.state().requests
    }

    /// The keys held, in order.
    pub fn keys(&self) -> Vec<String> {
        self.state().objects.keys().cloned().collect()
    }

    /// Counts the request; fails it when a transient fault is due.
    fn begin(&self, what: &str) -> Result<MutexGuard<'_, State>> {
        let mut state = self.state();
        state.requests += 1;
        if state.faults.pass_first > 0 {
            state.faults.pass_first -= 1;
        } else if state.faults.fail_next > 0 {
            state.faults.fail_next -= 1;
            return Err(StorageError::Http {
                what: format!("{} {what}", self.describe()),
                status: 503,
                detail: "injected fault: service unavailable".into(),
            });
        }
        Ok(state)
    }

    /// After a write took effect: its answer is lost when that fault is due.
    fn answer<T>(&self, state: &mut State, what: &str, value: T) -> Result<T> {
        if state.faults.lose_next_answers > 0 {
            state.faults.lose_next_answers -= 1;
            return Err(StorageError::Transport {
                what: format!("{} {what}", self.describe()),
                detail: "injected fault: connection reset after the request was sent".into(),
            });
        }
        Ok(value)
    }

    /// Objects directly under `prefix` (no deeper keys), in key order.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectMeta)>> {
        let state = self.begin(prefix)?;
        Ok(state
            .objects
            .range(prefix.to_string()..)
            .take_while(|(k, _)| k.starts_with(prefix))
            .filter(|(k, _)| !k[prefix.len()..].contains('/'))
            .map(|(k, o)| (k.clone(), o.meta()))
            .collect())
    }

    pub async fn get(&self, key: &str, range: Option<(u64, Option<u64>)>) -> Result<Bytes> {
        let state = self.begin(key)?;
        let body = &state.get(key)?.body;
        let size = body.len() as u64;
        let (offset, len) = match range {
            None => (0, size),
            Some((off, _)) if off > size => {
                return Err(StorageError::Protocol {
                    what: key.into(),
                    detail: format!("range starts at {off}, past the end ({size} bytes)"),
                })
            }
            Some((off, len)) => (off, len.map_or(size - off, |l| l.min(size - off))),
        };
        Ok(body.slice(offset as usize..(offset + len) as usize))
    }

    pub async fn get_into(&self, key: &str, offset: u64, out: &mut std::fs::File) -> Result<u64> {
        let body = self.get(key, Some((offset, None))).await?;
        out.write_all(&body).map_err(|source| StorageError::Io {
            what: format!("download of {key}"),
            source,
        })?;
        Ok(body.len() as u64)
    }

    pub async fn head(&self, key: &str) -> Result<ObjectMeta> {
        Ok(self.begin(key)?.get(key)?.meta())
    }

    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        condition: PutCondition,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        let mut state = self.begin(key)?;
        if !state.faults.ignore_conditions {
            let current = state.objects.get(key).map(|o| o.etag.as_str());
            let allowed = match (&condition, current) {
                (PutCondition::Always, _) => true,
                (PutCondition::IfNoneMatch, current) => current.is_none(),
                (PutCondition::IfMatch(etag), Some(current)) => etag == current,
                (PutCondition::IfMatch(_), None) => false,
            };
            if !allowed {
                return Err(StorageError::PreconditionFailed(key.into()));
            }
        }
        state.versions += 1;
        let etag = format!("\"v{}\"", state.versions);
        let now = now_millis();
        state.objects.insert(
            key.to_string(),
            Object {
                body,
                etag: etag.clone(),
                modified_ms: timestamp_ms.unwrap_or(now),
                timestamp_ms,
            },
        );
        self.answer(&mut state, key, etag)
    }

    pub async fn put_file(
        &self,
        key: &str,
        src: &std::path::Path,
        condition: PutCondition,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        let body = std::fs::read(src).map_err(|source| StorageError::Io {
            what: src.display().to_string(),
            source,
        })?;
        self.put(key, Bytes::from(body), condition, timestamp_ms)
            .await
    }

    pub async fn put_written(
        &self,
        key: &str,
        body: WrittenBody,
        condition: PutCondition,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        let mut bytes = Vec::with_capacity(body.length as usize);
        (body.write)(&mut bytes).map_err(|source| StorageError::Io {
            what: key.into(),
            source,
        })?;
        body.check_length(bytes.len() as u64)
            .map_err(|source| StorageError::Io {
                what: key.into(),
                source,
            })?;
        self.put(key, Bytes::from(bytes), condition, timestamp_ms)
            .await
    }

    /// Copies an object of `src` (another memory store, or this one), never replacing one.
    pub async fn copy_from(&self, src: &MemoryStore, src_key: &str, key: &str) -> Result<()> {
        let body = src.get(src_key, None).await?;
        let timestamp = src.head(src_key).await?.timestamp_ms;
        self.put(key, body, PutCondition::IfNoneMatch, timestamp)
            .await
            .map(|_| ())
    }

    pub async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<()> {
        let mut state = self.begin(key)?;
        if let Some(expected) = if_match.filter(|_| !state.faults.ignore_conditions) {
            if state.get(key)?.etag != expected {
                return Err(StorageError::PreconditionFailed(key.into()));
            }
        }
        state.objects.remove(key);
        self.answer(&mut state, key, ())
    }

    /// What a probe with scratch objects would find.
    pub fn conditional_support(&self) -> super::ConditionalSupport {
        let honoured = !self.state().faults.ignore_conditions;
        super::ConditionalSupport {
            create: honoured,
            replace: honoured,
            unquoted_etag: false,
            conditional_delete: honoured,
        }
    }
}

impl State {
    fn get(&self, key: &str) -> Result<&Object> {
        self.objects
            .get(key)
            .ok_or_else(|| StorageError::NotFound(key.into()))
    }
}
