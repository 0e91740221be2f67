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
use crate::writer::lease::Lease;

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
    #[error("the destination {dest} is leased by another writer ({owner}, until {expires}): a fork needs a destination nobody replicates to; nothing was written")]
    Leased {
        dest: String,
        owner: String,
        expires: String,
    },
    #[error("the destination {0} does not honour conditional writes, so its lease cannot keep a writer out; nothing was written (LITESTREAM_LEASE=off forks without the lease, at your own risk)")]
    NoConditionalWrites(String),
    #[error("the destination's lease was lost during the fork (another writer took it); nothing was written")]
    LeaseLost,
}

impl From<ForkError> for crate::Error {
    fn from(e: ForkError) -> Self {
        let message = e.to_string();
        match e {
            ForkError::Restore(e) => e.into(),
            ForkError::Leased { .. } | ForkError::LeaseLost => crate::Error::busy(message),
            ForkError::NotEmpty(_)
            | ForkError::SameReplica(_)
            | ForkError::NoConditionalWrites(_) => crate::Error::other(message),
        }
    }
}

/// Forks `src` at `target` into the empty `dst`; `work` holds temporary downloads. Holds
/// the destination's lease throughout, as a writer would: a writer already open on `dst`
/// keeps the fork out, and one that opens afterwards (or whose lapsed lease the fork took)
/// lines up with the fork's snapshot and continues after its TXID.
pub async fn fork(
    src: Arc<Store>,
    dst: Arc<Store>,
    target: Target,
    work: &Path,
) -> Result<ForkSummary, ForkError> {
    if src.describe() == dst.describe() {
        return Err(ForkError::SameReplica(src.describe()));
    }
    // As for writers, LITESTREAM_LEASE=off goes without it (only the emptiness check).
    let lease_off = matches!(
        std::env::var(crate::config::ENV_LEASE).as_deref(),
        Ok("off" | "false" | "0")
    );
    if lease_off {
        return fork_into(src, &dst, target, work, None).await;
    }
    let support = dst
        .probe_conditional_writes()
        .await
        .map_err(RestoreError::from)?;
    if !support.is_sufficient() {
        return Err(ForkError::NoConditionalWrites(dst.describe()));
    }
    let mut lease = Lease::new(crate::config::DEFAULT_LEASE_TTL);
    if !lease.ensure(&dst).await.map_err(RestoreError::from)? {
        return Err(ForkError::Leased {
            dest: dst.describe(),
            owner: lease.status.owner.clone().unwrap_or_default(),
            expires: lease.status.expires_at.clone().unwrap_or_default(),
        });
    }
    let result = fork_into(src, &dst, target, work, Some(&mut lease)).await;
    lease.release(&dst, support.conditional_delete).await;
    result
}

/// The fork itself; `lease`, when given, is held on `dst` and renewed before writing.
async fn fork_into(
    src: Arc<Store>,
    dst: &Arc<Store>,
    target: Target,
    work: &Path,
    lease: Option<&mut Lease>,
) -> Result<ForkSummary, ForkError> {
    let started = Instant::now();
    if !restore::list_all(dst, false).await?.is_empty() {
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
    // A long download may have outlived two thirds of the lease: renew it before writing.
    if let Some(lease) = lease {
        if !lease.ensure(dst).await.map_err(RestoreError::from)? {
            return Err(ForkError::LeaseLost);
        }
    }
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
pub fn fork_blocking(
    src_url: &str,
    dst_url: &str,
    target: Target,
) -> Result<ForkSummary, crate::Error> {
    let src = Arc::new(Store::open(src_url)?);
    let dst = Arc::new(Store::open(dst_url)?);
    let work = std::env::temp_dir().join(format!("litestream-fork-{:016x}", rand::random::<u64>()));
    let result = crate::runtime::block_on(fork(src, dst, target, &work));
    let _ = std::fs::remove_dir_all(&work);
    Ok(result?)
}
