//! The `litestream-replica` VFS's engine: serves SQLite reads straight from the LTX files of
//! a replica (page index + ranged GETs), through one process-wide page cache, with prefetch,
//! following new transactions, and time travel. Nothing here knows about SQLite's C API.

mod cache;
mod database;
mod prefetch;
pub mod verify;
pub mod version;

pub use database::{ReplicaConfig, ReplicaDb, ReplicaFile};

/// Bytes in the page cache every replica of the process shares.
pub fn shared_cache_bytes() -> u64 {
    cache::cache().weighted_size()
}
