//! Readers never serve what was not written. A page frame carries no checksum of its own, only
//! the whole LTX file does: so every file a replica reads from is checked whole. A small file
//! is read whole anyway and checked before any of its pages is served; a large one is checked
//! in the background while its pages are served, and if it fails, nothing more is served from
//! it (its cached pages are never handed out again) and every read that needs it errors with
//! the reason.

use std::collections::HashMap;
use std::sync::{Arc, LazyLock, Mutex};

use crate::ltx::{self, LtxError};
use crate::storage::{LtxFileInfo, Store};

#[derive(Debug, Clone)]
enum Check {
    Running,
    Good,
    Bad(String),
}

/// By file identity (see [`super::cache::file_key`]).
static CHECKS: LazyLock<Mutex<HashMap<u64, Check>>> = LazyLock::new(Default::default);

fn checks() -> std::sync::MutexGuard<'static, HashMap<u64, Check>> {
    CHECKS.lock().unwrap_or_else(|e| e.into_inner())
}

/// Decodes the whole file: every frame, the index, the file checksum, the header's TXIDs
/// against the name.
pub fn verify_whole(whole: &[u8], f: &LtxFileInfo) -> Result<(), LtxError> {
    let decoder = ltx::Decoder::new(whole)?;
    decoder.header().check_named(f.min_txid, f.max_txid)?;
    decoder.finish().map(|_| ())
}

/// Records the result of a check made by the caller (a small file read whole).
pub fn record(key: u64, result: &Result<(), String>) {
    let check = match result {
        Ok(()) => Check::Good,
        Err(e) => Check::Bad(e.clone()),
    };
    checks().insert(key, check);
}

/// Before a page of `f` is served: refuses a file whose check failed; starts the background
/// check of a large file the first time one of its pages is wanted.
pub fn before_serving(store: &Arc<Store>, f: &LtxFileInfo, key: u64) -> Result<(), String> {
    {
        let mut all = checks();
        match all.get(&key) {
            Some(Check::Bad(why)) => return Err(why.clone()),
            Some(_) => return Ok(()),
            None => {
                all.insert(key, Check::Running);
            }
        }
    }
    let (store, f) = (store.clone(), f.clone());
    crate::runtime::get().spawn(async move {
        let what = store.ltx_key(f.level, f.min_txid, f.max_txid);
        let result = match store.get_ltx(&f, None).await {
            Ok(whole) => tokio::task::spawn_blocking(move || verify_whole(&whole, &f))
                .await
                .map_err(|e| e.to_string())
                .and_then(|r| r.map_err(|e| e.to_string())),
            Err(e) => {
                // Not a verdict on the content: look again when it is next needed.
                log::debug!("cannot check {what} now: {e}");
                checks().remove(&key);
                return;
            }
        };
        if let Err(e) = &result {
            log::error!("{what} is damaged, nothing more is read from it: {e}");
        }
        record(key, &result.map_err(|e| format!("{what} is damaged: {e}")));
    });
    Ok(())
}
