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
    verify_read(whole, f)
}

/// [`verify_whole`] over any reader.
fn verify_read(input: impl std::io::Read, f: &LtxFileInfo) -> Result<(), LtxError> {
    let decoder = ltx::Decoder::new(input)?;
    decoder.header().check_named(f.min_txid, f.max_txid)?;
    decoder.finish().map(|_| ())
}

/// Files larger than this are checked through a scratch file rather than in memory.
const CHECK_IN_MEMORY_MAX: u64 = 64 << 20;

/// A stored LTX file fetched for its check.
pub enum Fetched {
    Memory(bytes::Bytes),
    /// An unlinked scratch file holding the object (memory stays small whatever its size).
    Scratch(std::fs::File),
}

/// Fetches `f` whole for [`check_fetched`]: into memory when small, into an unlinked scratch
/// file in the temporary directory when large. An error here is about the store (or the
/// scratch file), not a verdict on the content.
pub async fn fetch_for_check(
    store: &Store,
    f: &LtxFileInfo,
) -> Result<Fetched, crate::storage::StorageError> {
    if f.size <= CHECK_IN_MEMORY_MAX {
        return store.get_ltx(f, None).await.map(Fetched::Memory);
    }
    let path = std::env::temp_dir().join(format!(
        "litestream-check-{:016x}.ltx",
        rand::random::<u64>()
    ));
    let scratch = |source| crate::storage::StorageError::Io {
        what: format!("scratch file {}", path.display()),
        source,
    };
    let mut file = std::fs::OpenOptions::new()
        .read(true)
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(scratch)?;
    // Unlinked at once: nothing is left behind whatever happens next.
    std::fs::remove_file(&path).map_err(scratch)?;
    let key = store.ltx_key(f.level, f.min_txid, f.max_txid);
    store.get_into(&key, 0, &mut file).await?;
    Ok(Fetched::Scratch(file))
}

/// Decodes a fetched file whole (see [`verify_whole`]); blocking.
pub fn check_fetched(fetched: Fetched, f: &LtxFileInfo) -> Result<(), LtxError> {
    match fetched {
        Fetched::Memory(whole) => verify_whole(&whole, f),
        Fetched::Scratch(mut file) => {
            use std::io::Seek;
            file.rewind()?;
            verify_read(std::io::BufReader::new(file), f)
        }
    }
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
        let result = match fetch_for_check(&store, &f).await {
            Ok(fetched) => tokio::task::spawn_blocking(move || check_fetched(fetched, &f))
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::storage::{MemoryStore, PutCondition};

    fn encoded(header: ltx::Header, pages: u32) -> Vec<u8> {
        let mut e = ltx::Encoder::new(Vec::new(), header).unwrap();
        for pgno in 1..=pages {
            e.encode_page(pgno, &vec![pgno as u8; header.page_size as usize])
                .unwrap();
        }
        e.finish(0).unwrap().0
    }

    /// Both ways of fetching (in memory, through a scratch file for a file announced as
    /// large) accept a sound file and refuse the same file with one byte flipped inside a
    /// page frame, or stored under another file's name.
    #[test]
    fn a_large_file_is_checked_through_a_scratch_file_as_strictly_as_in_memory() {
        let header = ltx::Header::new(4096, 3, 1, 1, 1_700_000_000_000);
        let sound = encoded(header, 3);
        let mut damaged = sound.clone();
        damaged[ltx::HEADER_SIZE + 100] ^= 0x01;
        let store = Store::Memory(std::sync::Arc::new(MemoryStore::new()));
        crate::runtime::block_on(async {
            for (body, ok) in [(sound.clone(), true), (damaged, false)] {
                store
                    .put_ltx(0, &header, body.clone().into(), PutCondition::Always)
                    .await
                    .unwrap();
                for size in [body.len() as u64, CHECK_IN_MEMORY_MAX + 1] {
                    let f = LtxFileInfo {
                        level: 0,
                        min_txid: 1,
                        max_txid: 1,
                        size,
                        created_at_ms: 0,
                    };
                    let fetched = fetch_for_check(&store, &f).await.unwrap();
                    let scratch = matches!(fetched, Fetched::Scratch(_));
                    assert_eq!(scratch, size > CHECK_IN_MEMORY_MAX);
                    assert_eq!(check_fetched(fetched, &f).is_ok(), ok, "size {size}");
                    // The name says TXIDs 1-2; the header says 1-1.
                    let misnamed = LtxFileInfo { max_txid: 2, ..f };
                    let key = store.ltx_key(0, 1, 2);
                    store
                        .put(&key, body.clone().into(), PutCondition::Always, None)
                        .await
                        .unwrap();
                    let fetched = fetch_for_check(&store, &misnamed).await.unwrap();
                    assert!(check_fetched(fetched, &misnamed).is_err());
                }
            }
        });
    }
}
