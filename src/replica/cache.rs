//! One page cache for every replica of the process, weighed in bytes. Keys name immutable
//! content (an LTX file's identity and a page number), so entries never go stale.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, OnceLock};

pub type Page = Arc<[u8]>;

/// (file identity, pgno).
pub type Key = (u64, u32);

/// The cache identity of one LTX file of one store: its name, size and file checksum, so a
/// name that comes back with other content (a replica rebuilt from scratch) is another file.
pub fn file_key(
    store: &crate::storage::Store,
    f: &crate::storage::LtxFileInfo,
    file_checksum: u64,
) -> u64 {
    let name = format!(
        "{}|{}|{}|{file_checksum:016x}",
        store.describe(),
        store.ltx_key(f.level, f.min_txid, f.max_txid),
        f.size
    );
    crate::ltx::crc64(name.as_bytes())
}

/// Default cache budget: 64 MiB of pages (LITESTREAM_CACHE_SIZE overrides, e.g. `512M`).
pub const DEFAULT_CACHE_BYTES: u64 = 64 << 20;

pub fn cache() -> &'static moka::sync::Cache<Key, Page> {
    static CACHE: OnceLock<moka::sync::Cache<Key, Page>> = OnceLock::new();
    CACHE.get_or_init(|| {
        let bytes = std::env::var("LITESTREAM_CACHE_SIZE")
            .ok()
            .and_then(|v| crate::config::parse_size(&v))
            .unwrap_or(DEFAULT_CACHE_BYTES);
        moka::sync::Cache::builder()
            .max_capacity(bytes)
            .weigher(|_k: &Key, v: &Page| (v.len() + 32).min(u32::MAX as usize) as u32)
            .build()
    })
}

/// Hit and miss counters of one replica database.
#[derive(Debug, Default)]
pub struct Counters {
    pub hits: AtomicU64,
    pub misses: AtomicU64,
    pub gets: AtomicU64,
    pub prefetched: AtomicU64,
}

impl Counters {
    pub fn hit(&self) {
        self.hits.fetch_add(1, Ordering::Relaxed);
    }
    pub fn miss(&self) {
        self.misses.fetch_add(1, Ordering::Relaxed);
    }
}
