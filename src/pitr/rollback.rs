//! What `litestream_rollback()` writes: the pages that may differ between the replica's
//! latest state and its state at the target, with their content at the target. Found from
//! the page indexes of the files after the target, so the work (and the new LTX file) is
//! proportional to what changed since, not to the database size.

use std::collections::BTreeSet;

use crate::ltx::{self, Txid};
use crate::replica::version::{contiguous_runs, fetch_index, PageRef, Version};
use crate::restore::{self, RestoreError, Target};
use crate::storage::{LtxFileInfo, Store, SNAPSHOT_LEVEL};

/// The pages to write, in page order, and the database size afterwards.
#[derive(Debug)]
pub struct RollbackPages {
    pub target_txid: Txid,
    pub target_timestamp_ms: i64,
    pub page_size: u32,
    /// Database size in pages at the target.
    pub commit: u32,
    pub pages: Vec<(u32, Vec<u8>)>,
    /// No run of files covered the history after the target (retention removed it): every
    /// page of the target was taken.
    pub whole_database: bool,
    /// Bytes of page data and indexes read from the store.
    pub bytes_read: u64,
    /// Page 1 of the replica's latest state, when asked for: its change counter tells a
    /// rollback-journal database whether it has commits the replica does not.
    pub latest_page1: Option<Vec<u8>>,
}

#[derive(Debug, thiserror::Error)]
pub enum RollbackError {
    #[error(transparent)]
    Restore(#[from] RestoreError),
    #[error("target TXID {target:#018x} is after the current TXID {current:#018x}")]
    InFuture { target: Txid, current: Txid },
    #[error("the replica is at TXID {remote:#018x} but the database is at {local:#018x}: it must be in sync before a rollback")]
    OutOfSync { remote: Txid, local: Txid },
}

impl From<RollbackError> for crate::Error {
    fn from(e: RollbackError) -> Self {
        match e {
            RollbackError::Restore(e) => e.into(),
            e @ RollbackError::InFuture { .. } => crate::Error::other(e.to_string()),
            // Once the replica has caught up, the same call succeeds.
            e @ RollbackError::OutOfSync { .. } => crate::Error::busy(e.to_string()),
        }
    }
}

/// The files (any level but snapshots) that together cover TXIDs `after+1 ..= upto`,
/// preferring the fewest and tightest; None when there is a hole.
fn covering(files: &[LtxFileInfo], after: Txid, upto: Txid) -> Option<Vec<LtxFileInfo>> {
    let mut out = Vec::new();
    let mut cur = after;
    while cur < upto {
        let best = files
            .iter()
            .filter(|f| f.level != SNAPSHOT_LEVEL && f.min_txid <= cur + 1 && f.max_txid > cur)
            .max_by_key(|f| (f.max_txid.min(upto), f.min_txid))?;
        cur = best.max_txid;
        out.push(best.clone());
    }
    Some(out)
}

/// Plans a rollback of a database that is at `current_txid` (and in sync with `store`) with
/// `current_commit` pages, to `target`; with `latest_page1`, also fetches page 1 of the
/// replica's latest state. The pages are candidates: the caller compares them with the
/// database's own and writes only those that differ.
pub async fn plan(
    store: &Store,
    current_txid: Txid,
    current_commit: u32,
    target: Target,
    latest_page1: bool,
) -> Result<RollbackPages, RollbackError> {
    let files = restore::list_all(store, matches!(target, Target::Timestamp(_))).await?;
    let remote = files.iter().map(|f| f.max_txid).max().unwrap_or(0);
    if remote != current_txid {
        return Err(RollbackError::OutOfSync {
            remote,
            local: current_txid,
        });
    }
    if let Target::Txid(t) = target {
        if t > current_txid {
            return Err(RollbackError::InFuture {
                target: t,
                current: current_txid,
            });
        }
    }
    let chain = restore::plan(&files, target, &store.describe())?;
    let version = Version::from_plan(store, target, &chain).await?;
    let mut out = RollbackPages {
        target_txid: version.txid,
        target_timestamp_ms: version.timestamp_ms,
        page_size: version.page_size,
        commit: version.commit,
        pages: Vec::new(),
        whole_database: false,
        bytes_read: 0,
        latest_page1: None,
    };
    // Pages written after the target, plus pages the database lost by shrinking since.
    let mut wanted = BTreeSet::new();
    // Where page 1 was last written after the target.
    let mut page1_after = None;
    let after = if version.txid == current_txid {
        Some(Vec::new())
    } else {
        covering(&files, version.txid, current_txid)
    };
    match &after {
        Some(after) => {
            for f in after {
                let (header, index, _) = fetch_index(store, f).await?;
                out.bytes_read += index.entries.len() as u64 * 16;
                wanted.extend(index.entries.iter().map(|e| e.pgno));
                if let Some(e) = index.get(1) {
                    page1_after = Some((f.clone(), *e, header.page_size));
                }
            }
            if !after.is_empty() {
                wanted.extend(current_commit.saturating_add(1)..=version.commit);
            }
        }
        None => {
            out.whole_database = true;
            wanted.extend(1..=version.commit);
        }
    }
    if latest_page1 {
        let (page, bytes) = match (page1_after, &after) {
            (Some((f, e, page_size)), _) => fetch_frame(store, &f, e, page_size).await?,
            // Page 1 unchanged since the target.
            (None, Some(_)) => page1_of(store, &version).await?,
            (None, None) => page1_of(store, &Version::build(store, Target::Latest).await?).await?,
        };
        out.bytes_read += bytes;
        out.latest_page1 = Some(page);
    }
    if version.txid == current_txid {
        return Ok(out);
    }
    let lock = ltx::lock_pgno(version.page_size);
    wanted.retain(|&p| p <= version.commit && p != lock);
    let (pages, bytes) = fetch_pages(store, &version, &wanted).await?;
    out.pages = pages;
    out.bytes_read += bytes;
    Ok(out)
}

/// Page 1 of `version`, and the bytes read for it.
async fn page1_of(store: &Store, version: &Version) -> Result<(Vec<u8>, u64), RestoreError> {
    let (pages, bytes) = fetch_pages(store, version, &BTreeSet::from([1])).await?;
    let page = pages.into_iter().next().map(|(_, d)| d).unwrap_or_default();
    Ok((page, bytes))
}

/// One page frame of `file`, decoded.
async fn fetch_frame(
    store: &Store,
    file: &LtxFileInfo,
    e: ltx::PageIndexEntry,
    page_size: u32,
) -> Result<(Vec<u8>, u64), RestoreError> {
    let what = || {
        format!(
            "LTX file {} (level {})",
            ltx::file_name(file.min_txid, file.max_txid),
            file.level
        )
    };
    let bytes = store.get_ltx(file, Some((e.offset, Some(e.size)))).await?;
    let (p, data) =
        ltx::decode_page_frame(&bytes, page_size).map_err(|source| RestoreError::Ltx {
            what: what(),
            source,
        })?;
    if p != e.pgno {
        return Err(RestoreError::Ltx {
            what: what(),
            source: ltx::LtxError::BadIndex(format!(
                "page index names page {} at offset {} but the frame holds page {p}",
                e.pgno, e.offset
            )),
        });
    }
    Ok((data, bytes.len() as u64))
}

/// The content of `pgnos` in `version`: one ranged GET per run of adjacent frames of one
/// file, a few at a time. Pages in no file are zero (never written).
async fn fetch_pages(
    store: &Store,
    version: &Version,
    pgnos: &BTreeSet<u32>,
) -> Result<(Vec<(u32, Vec<u8>)>, u64), RestoreError> {
    let mut refs: Vec<(u32, PageRef)> = Vec::new();
    let mut pages = Vec::with_capacity(pgnos.len());
    for &p in pgnos {
        match version.pages.get(&p) {
            Some(r) => refs.push((p, *r)),
            None => pages.push((p, vec![0u8; version.page_size as usize])),
        }
    }
    let runs = contiguous_runs(refs, 256);
    let mut bytes_read = 0;
    for batch in runs.chunks(8) {
        let fetches = batch.iter().map(|run| async move {
            let file = &version.files[run[0].1.file as usize];
            let start = run[0].1.offset;
            let end = run.last().map_or(start, |(_, r)| r.offset + u64::from(r.size));
            let bytes = store.get_ltx(file, Some((start, Some(end - start)))).await?;
            let what = || {
                format!(
                    "LTX file {} (level {})",
                    ltx::file_name(file.min_txid, file.max_txid),
                    file.level
                )
            };
            let mut got = Vec::with_capacity(run.len());
            for (pgno, r) in run {
                let at = (r.offset - start) as usize;
                let frame = bytes.get(at..at + r.size as usize).ok_or_else(|| {
                    RestoreError::Ltx {
                        what: what(),
                        source: ltx::LtxError::Truncated("ranged read shorter than the page index says"),
                    }
                })?;
                let (p, data) = ltx::decode_page_frame(frame, version.page_size)
                    .map_err(|source| RestoreError::Ltx { what: what(), source })?;
                if p != *pgno {
                    return Err(RestoreError::Ltx {
                        what: what(),
                        source: ltx::LtxError::BadIndex(format!(
                            "page index names page {pgno} at offset {} but the frame holds page {p}",
                            r.offset
                        )),
                    });
                }
                got.push((p, data));
            }
            Ok::<_, RestoreError>((got, bytes.len() as u64))
        });
        for result in futures_util::future::join_all(fetches).await {
            let (got, n) = result?;
            bytes_read += n;
            pages.extend(got);
        }
    }
    pages.sort_by_key(|(p, _)| *p);
    Ok((pages, bytes_read))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(level: u8, min: Txid, max: Txid) -> LtxFileInfo {
        LtxFileInfo {
            level,
            min_txid: min,
            max_txid: max,
            size: 100,
            created_at_ms: 0,
        }
    }

    #[test]
    fn covering_prefers_few_tight_files_and_sees_holes() {
        let files = vec![
            f(9, 1, 50),
            f(1, 1, 40),
            f(1, 41, 60),
            f(0, 45, 45),
            f(0, 46, 46),
            f(0, 61, 61),
            f(0, 62, 62),
        ];
        // After 45: the L1 file 41-60 (a superset) beats two L0s... then the L0s after it.
        let c = covering(&files, 45, 62).unwrap();
        let ranges: Vec<_> = c.iter().map(|f| (f.min_txid, f.max_txid)).collect();
        assert_eq!(ranges, vec![(41, 60), (61, 61), (62, 62)]);
        // Snapshots never count: they hold every page.
        assert!(covering(&[f(9, 1, 50), f(0, 51, 51)], 40, 51).is_none());
        // A hole.
        assert!(covering(&files, 62, 64).is_none());
        assert_eq!(covering(&files, 62, 62).unwrap().len(), 0);
    }
}
