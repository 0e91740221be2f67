//! `litestream_fork()`: a new, independent replica whose history starts with a snapshot of
//! the source at a target. When the target is one existing file (a snapshot, or any file
//! starting at TXID 1), the store copies it server-side; otherwise the restore plan's files
//! are merged here into one snapshot and uploaded.

use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use crate::ltx;
use crate::restore::{self, RestoreError, Target};
use crate::storage::{PutCondition, Store, SNAPSHOT_LEVEL};

#[derive(Debug, Clone, serde::Serialize)]
pub struct ForkSummary {
    pub source: String,
    pub dest: String,
    /// The TXID of the fork's snapshot: the source's state at the target.
    pub txid: String,
    pub timestamp: String,
    /// Source files the snapshot was made from.
    pub files: usize,
    /// Whether the store copied the snapshot itself (nothing passed through this process).
    pub server_side_copy: bool,
    pub bytes_downloaded: u64,
    pub bytes_uploaded: u64,
    pub bytes_copied_server_side: u64,
    pub seconds: f64,
}

#[derive(Debug, thiserror::Error)]
pub enum ForkError {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("the destination {0} already holds LTX files: a fork needs an empty destination")]
    NotEmpty(String),
    #[error("the destination is the source ({0})")]
    SameReplica(String),
}

/// Forks `src` at `target` into the empty `dst`; `work` holds temporary downloads.
pub async fn fork(
    src: Arc<Store>,
    dst: Arc<Store>,
    target: Target,
    work: &Path,
) -> Result<ForkSummary, ForkError> {
    let started = Instant::now();
    if src.describe() == dst.describe() {
        return Err(ForkError::SameReplica(src.describe()));
    }
    if !restore::list_all(&dst, false).await?.is_empty() {
        return Err(ForkError::NotEmpty(dst.describe()));
    }
    let files = restore::list_all(&src, matches!(target, Target::Timestamp(_))).await?;
    let chain = restore::plan(&files, target, &src.describe())?;
    let last = chain.last().expect("a plan is never empty");
    let mut summary = ForkSummary {
        source: src.describe(),
        dest: dst.describe(),
        txid: ltx::format_txid(last.max_txid),
        timestamp: String::new(),
        files: chain.len(),
        server_side_copy: false,
        bytes_downloaded: 0,
        bytes_uploaded: 0,
        bytes_copied_server_side: 0,
        seconds: 0.0,
    };
    let snapshot_key = dst.ltx_key(SNAPSHOT_LEVEL, 1, last.max_txid);
    let copied = chain.len() == 1
        && dst
            .copy_from(
                &src,
                &src.ltx_key(last.level, last.min_txid, last.max_txid),
                &snapshot_key,
            )
            .await
            .map_err(RestoreError::from)?;
    if copied {
        summary.server_side_copy = true;
        summary.bytes_copied_server_side = last.size;
        summary.timestamp = crate::timefmt::rfc3339_millis(last.created_at_ms);
    } else {
        let merged = crate::writer::compactor::fetch_and_merge(&src, &chain, work, None).await?;
        summary.bytes_downloaded = chain.iter().map(|f| f.size).sum();
        summary.bytes_uploaded = merged.size;
        summary.timestamp = crate::timefmt::rfc3339_millis(merged.header.timestamp);
        dst.put_ltx_file(
            SNAPSHOT_LEVEL,
            &merged.header,
            &merged.path,
            PutCondition::IfNoneMatch,
        )
        .await
        .map_err(RestoreError::from)?;
    }
    summary.seconds = started.elapsed().as_secs_f64();
    Ok(summary)
}

/// The synchronous entry point (SQL function).
pub fn fork_blocking(src_url: &str, dst_url: &str, target: Target) -> Result<ForkSummary, String> {
    let src = Arc::new(Store::open(src_url).map_err(|e| e.to_string())?);
    let dst = Arc::new(Store::open(dst_url).map_err(|e| e.to_string())?);
    let work = std::env::temp_dir().join(format!("litestream-fork-{:016x}", rand::random::<u64>()));
    let result = crate::runtime::block_on(fork(src, dst, target, &work));
    let _ = std::fs::remove_dir_all(&work);
    result.map_err(|e| e.to_string())
}
