//! One version of a replicated database as the replica VFS serves it: which LTX file holds
//! each page at a TXID, built from the page indexes of a restore plan (one ranged GET per
//! file for the index, a second only when the index is larger than the tail read).

use std::collections::HashMap;
use std::sync::Arc;

use crate::ltx::{self, Header, IndexLocation, PageIndex, ESTIMATED_PAGE_INDEX_SIZE, HEADER_SIZE};
use crate::restore::{self, RestoreError, Target};
use crate::storage::{LtxFileInfo, Store};

/// Where one page is.
#[derive(Debug, Clone, Copy)]
pub struct PageRef {
    /// Index into [`Version::files`].
    pub file: u32,
    pub offset: u64,
    pub size: u32,
}

#[derive(Debug)]
pub struct Version {
    pub txid: u64,
    pub timestamp_ms: i64,
    pub page_size: u32,
    pub commit: u32,
    pub pages: HashMap<u32, PageRef>,
    pub files: Vec<Arc<LtxFileInfo>>,
    /// The cache identity of each of `files` (see [`super::cache::file_key`]).
    pub keys: Vec<u64>,
    /// The target this version was built for (`Latest` when following).
    pub target: Target,
    /// Page 1's change counter as served: new for every version built, so SQLite drops its
    /// page cache whenever the version moves, even to the same TXID of a rewritten replica.
    pub counter: u32,
    /// `files` is pruned of files no page is served from once it is this long (see
    /// [`Version::prune_files`]).
    prune_at: usize,
}

/// A version followed file by file is pruned of superseded files no sooner than this.
const PRUNE_AT_LEAST: usize = 256;

/// The next [`Version::counter`].
fn next_counter() -> u32 {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(1);
    NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed)
}

/// `refs` grouped into runs of adjacent frames of one file (each run one ranged GET), at most
/// `max_run` pages a run, in file and offset order.
pub fn contiguous_runs(mut refs: Vec<(u32, PageRef)>, max_run: usize) -> Vec<Vec<(u32, PageRef)>> {
    refs.sort_by_key(|(_, r)| (r.file, r.offset));
    let mut runs: Vec<Vec<(u32, PageRef)>> = Vec::new();
    for item in refs {
        match runs.last_mut() {
            Some(run)
                if run.len() < max_run
                    && run.last().is_some_and(|(_, last)| {
                        last.file == item.1.file
                            && last.offset + u64::from(last.size) == item.1.offset
                    }) =>
            {
                run.push(item)
            }
            _ => runs.push(vec![item]),
        }
    }
    runs
}

/// Files no larger than this are read whole in one GET (header and index together).
const WHOLE_FILE_READ: u64 = 64 << 10;

/// Header, page index and cache identity of one file, in one or two GETs (three for huge
/// indexes). The header must name the TXIDs the file's name does. A small file is read whole
/// and verified before its pages are cached; a large one is verified in the background.
pub async fn fetch_index(
    store: &Store,
    f: &LtxFileInfo,
) -> Result<(Header, PageIndex, u64), RestoreError> {
    let what = || {
        format!(
            "LTX file {} (level {})",
            ltx::file_name(f.min_txid, f.max_txid),
            f.level
        )
    };
    let err = |source| RestoreError::Ltx {
        what: what(),
        source,
    };
    if f.size <= WHOLE_FILE_READ {
        let whole = store.get_ltx(f, None).await?;
        let header = Header::decode(&whole).map_err(err)?;
        let index = PageIndex::parse_tail(&whole, whole.len() as u64).map_err(err)?;
        let key = super::cache::file_key(store, f, trailer_checksum(&whole));
        let checked = super::verify::verify_whole(&whole, f);
        super::verify::record(
            key,
            &checked
                .as_ref()
                .map(|_| ())
                .map_err(|e| format!("{}: {e}", what())),
        );
        checked.map_err(err)?;
        // The pages came along: cache them (a reader following the replica reads them next).
        for e in &index.entries {
            let frame = whole.get(e.offset as usize..(e.offset + e.size) as usize);
            if let Some(Ok((pgno, data))) =
                frame.map(|fr| ltx::decode_page_frame(fr, header.page_size))
            {
                if pgno == e.pgno {
                    super::cache::cache().insert((key, pgno), Arc::from(data));
                }
            }
        }
        return Ok((header, index, key));
    }
    let tail_len = ESTIMATED_PAGE_INDEX_SIZE.min(f.size);
    let (head, tail) = tokio::join!(
        store.get_ltx(f, Some((0, Some(HEADER_SIZE as u64)))),
        store.get_ltx(f, Some((f.size - tail_len, Some(tail_len))))
    );
    let header = Header::decode(&head?).map_err(err)?;
    header.check_named(f.min_txid, f.max_txid).map_err(err)?;
    let tail = tail?;
    let index = match PageIndex::locate(&tail, f.size).map_err(err)? {
        IndexLocation::InTail => PageIndex::parse_tail(&tail, f.size).map_err(err)?,
        IndexLocation::FetchFrom(start) => {
            let bytes = store.get_ltx(f, Some((start, None))).await?;
            PageIndex::parse_tail(&bytes, f.size).map_err(err)?
        }
    };
    // Verified in the background when its pages are first wanted (see `verify`).
    let key = super::cache::file_key(store, f, trailer_checksum(&tail));
    Ok((header, index, key))
}

/// The file checksum: the last 8 bytes of an LTX file (0 when too short: decoding fails).
fn trailer_checksum(tail: &[u8]) -> u64 {
    tail.len()
        .checked_sub(8)
        .and_then(|at| tail.get(at..))
        .map_or(0, |b| u64::from_be_bytes(b.try_into().expect("8 bytes")))
}

impl Version {
    /// The version a restore to `target` would produce, without downloading any page.
    /// Planned again when a planned file vanished before its index was read (compaction).
    pub async fn build(store: &Store, target: Target) -> Result<Self, RestoreError> {
        let mut replans = 0;
        loop {
            let files = restore::list_all(store, matches!(target, Target::Timestamp(_))).await?;
            let plan = restore::plan(&files, target, &store.describe())?;
            match Self::from_plan(store, target, &plan).await {
                Err(e) if e.is_vanished_file() && replans < restore::REPLANS => replans += 1,
                result => return result,
            }
        }
    }

    /// The version `plan` (a restore plan for `target`) produces.
    pub async fn from_plan(
        store: &Store,
        target: Target,
        plan: &[LtxFileInfo],
    ) -> Result<Self, RestoreError> {
        let mut v = Self::empty(target);
        v.apply(store, plan).await?;
        Ok(v)
    }

    /// A database with no pages yet, which a plan's files extend.
    pub fn empty(target: Target) -> Self {
        Self {
            txid: 0,
            timestamp_ms: 0,
            page_size: 0,
            commit: 0,
            pages: HashMap::new(),
            files: Vec::new(),
            keys: Vec::new(),
            target,
            counter: next_counter(),
            prune_at: PRUNE_AT_LEAST,
        }
    }

    /// A copy of this version with `files` (continuing it) applied on top.
    pub async fn extend(&self, store: &Store, files: &[LtxFileInfo]) -> Result<Self, RestoreError> {
        let mut v = Self {
            txid: self.txid,
            timestamp_ms: self.timestamp_ms,
            page_size: self.page_size,
            commit: self.commit,
            pages: self.pages.clone(),
            files: self.files.clone(),
            keys: self.keys.clone(),
            target: self.target,
            counter: next_counter(),
            prune_at: self.prune_at,
        };
        v.apply(store, files).await?;
        if v.files.len() >= v.prune_at {
            v.prune_files();
        }
        Ok(v)
    }

    /// Drops the files no page is served from any more (every page they held was written
    /// again later), keeping the last: a reader following a busy replica for days would
    /// otherwise keep every file it ever applied.
    fn prune_files(&mut self) {
        let mut used = vec![false; self.files.len()];
        if let Some(last) = used.last_mut() {
            *last = true; // the poller continues from it
        }
        for r in self.pages.values() {
            used[r.file as usize] = true;
        }
        let mut renumbered = vec![u32::MAX; self.files.len()];
        let (mut files, mut keys) = (Vec::new(), Vec::new());
        for (i, _) in used.iter().enumerate().filter(|(_, used)| **used) {
            renumbered[i] = files.len() as u32;
            files.push(self.files[i].clone());
            keys.push(self.keys[i]);
        }
        for r in self.pages.values_mut() {
            r.file = renumbered[r.file as usize];
        }
        self.files = files;
        self.keys = keys;
        self.prune_at = PRUNE_AT_LEAST.max(2 * self.files.len());
    }

    async fn apply(&mut self, store: &Store, files: &[LtxFileInfo]) -> Result<(), RestoreError> {
        // Indexes are fetched a few at a time, applied in order.
        let mut fetched = Vec::with_capacity(files.len());
        for chunk in files.chunks(8) {
            let futs: Vec<_> = chunk.iter().map(|f| fetch_index(store, f)).collect();
            fetched.extend(futures_util::future::join_all(futs).await);
        }
        // A page-size change in a file that does not hold every page (written before such
        // changes were shipped whole): unusable until a later file holds every page.
        let mut unhealed = None;
        for (f, result) in files.iter().zip(fetched) {
            let (header, index, key) = result?;
            let full = ltx::holds_every_page(&header, index.entries.len());
            if self.page_size != 0 && header.page_size != self.page_size {
                // A page-size change: this file holds every page at the new size and
                // supersedes everything before it.
                if !full {
                    unhealed = Some(RestoreError::Ltx {
                        what: format!(
                            "LTX file {} (level {})",
                            ltx::file_name(f.min_txid, f.max_txid),
                            f.level
                        ),
                        source: ltx::LtxError::PageSizeChangeNotFull {
                            txid: header.min_txid,
                            from: self.page_size,
                            to: header.page_size,
                            pages: index.entries.len() as u32,
                            commit: header.commit,
                        },
                    });
                }
                self.pages.clear();
            } else if full && unhealed.is_some() {
                // A later full snapshot at the new size heals it.
                unhealed = None;
                self.pages.clear();
            }
            let file = self.files.len() as u32;
            self.files.push(Arc::new(f.clone()));
            self.keys.push(key);
            for e in index.entries {
                self.pages.insert(
                    e.pgno,
                    PageRef {
                        file,
                        offset: e.offset,
                        size: e.size as u32,
                    },
                );
            }
            if header.commit < self.commit {
                // A shrink: pages past the new end are gone.
                self.pages.retain(|&p, _| p <= header.commit);
            }
            self.txid = header.max_txid;
            self.timestamp_ms = header.timestamp;
            self.page_size = header.page_size;
            self.commit = header.commit;
        }
        match unhealed {
            Some(e) => Err(e),
            None => Ok(()),
        }
    }

    pub fn file_size(&self) -> u64 {
        u64::from(self.commit) * u64::from(self.page_size)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn file(txid: u64) -> Arc<LtxFileInfo> {
        Arc::new(LtxFileInfo {
            level: 0,
            min_txid: txid,
            max_txid: txid,
            size: 100,
            created_at_ms: 0,
        })
    }

    #[test]
    fn pruning_keeps_every_served_page_and_the_last_file() {
        // 300 files (TXIDs 1..=300); pages 1, 2, 3 were last written by TXIDs 10, 250, 299.
        let at = |file: u32, offset: u64| PageRef {
            file,
            offset,
            size: 4096,
        };
        let mut v = Version::empty(Target::Latest);
        v.txid = 300;
        v.page_size = 4096;
        v.commit = 3;
        v.pages = HashMap::from([(1, at(9, 100)), (2, at(249, 200)), (3, at(298, 300))]);
        v.files = (1..=300).map(file).collect();
        v.keys = (1..=300).map(|k| k * 1000).collect();
        // The last file (TXID 300) serves no page here: it stays, the poller continues from it.
        v.prune_files();
        assert_eq!(v.files.len(), 4);
        assert_eq!(v.files.last().unwrap().max_txid, 300);
        for (pgno, txid, offset) in [(1, 10, 100), (2, 250, 200), (3, 299, 300)] {
            let r = v.pages[&pgno];
            assert_eq!(v.files[r.file as usize].max_txid, txid, "page {pgno}");
            assert_eq!(v.keys[r.file as usize], txid * 1000, "page {pgno}");
            assert_eq!(r.offset, offset);
        }
        assert_eq!(v.prune_at, PRUNE_AT_LEAST);
    }
}
