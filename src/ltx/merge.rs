//! Compaction: several contiguous LTX files into one, latest page wins (ltx `Compactor`).

use std::io::{Read, Write};

use super::decoder::Decoder;
use super::encoder::{EncodeSummary, Encoder};
use super::error::{LtxError, Result};
use super::header::Header;
use super::HEADER_FLAG_NO_CHECKSUM;

/// Checks that each header continues the previous one: overlap is fine, gaps and
/// regressions are not (`next.min <= prev.max + 1` and `next.max > prev.max`).
pub fn check_contiguous<'a>(headers: impl IntoIterator<Item = &'a Header>) -> Result<()> {
    check_txids(headers, true)
}

/// [`check_contiguous`], the page sizes checked only when `same_page_size`.
fn check_txids<'a>(
    headers: impl IntoIterator<Item = &'a Header>,
    same_page_size: bool,
) -> Result<()> {
    let mut prev: Option<&Header> = None;
    for h in headers {
        if let Some(p) = prev {
            if same_page_size && h.page_size != p.page_size {
                return Err(LtxError::PageSizeMismatch(p.page_size, h.page_size));
            }
            if h.min_txid > p.max_txid + 1 || h.max_txid <= p.max_txid {
                return Err(LtxError::NonContiguous {
                    prev_min: p.min_txid,
                    prev_max: p.max_txid,
                    next_min: h.min_txid,
                    next_max: h.max_txid,
                });
            }
        }
        prev = Some(h);
    }
    Ok(())
}

pub type MergeSummary = EncodeSummary;

/// Where a run of inputs starts over: the last input whose page size differs from the one
/// before it (0 when they all agree). A page-size change (`PRAGMA page_size=N; VACUUM`) is
/// shipped as a file holding every page at the new size, so the inputs before it are
/// superseded and are not read; mixing page sizes is impossible.
pub fn rebase_point<'a>(headers: impl IntoIterator<Item = &'a Header>) -> usize {
    let mut at = 0;
    let mut prev = None;
    for (i, h) in headers.into_iter().enumerate() {
        if prev.is_some_and(|p| p != h.page_size) {
            at = i;
        }
        prev = Some(h.page_size);
    }
    at
}

/// Pages a file must hold to stand for the whole database: every page up to `commit` but
/// the lock page.
fn full_page_count(h: &Header) -> u32 {
    h.commit - u32::from(super::lock_pgno(h.page_size) <= h.commit)
}

/// Whether a file with this header and `pages` pages in its index holds every page.
pub fn holds_every_page(h: &Header, pages: usize) -> bool {
    pages == full_page_count(h) as usize
}

/// Drops the inputs a page-size change superseded (see [`rebase_point`]), after checking
/// that every input continues the one before (TXIDs) and the rest share one page size.
/// With `counts` (each input's page count, when the caller read the indexes; 0 when not
/// read), the run starts from the last input at or after the change that holds every page:
/// a replica written before page-size changes were shipped whole has a partial file there,
/// healed by a later full snapshot; with none, it is an error before anything is written.
/// Returns the rest, how many were dropped, and the page size before the change.
fn rebase<R: Read>(
    mut inputs: Vec<Decoder<R>>,
    counts: Option<&[u32]>,
) -> Result<(Vec<Decoder<R>>, usize, u32)> {
    check_txids(inputs.iter().map(|d| d.header()), false)?;
    let change = rebase_point(inputs.iter().map(|d| d.header()));
    let prev_page_size = inputs[change.saturating_sub(1)].header().page_size;
    let mut skip = change;
    if let (Some(counts), true) = (counts, change > 0) {
        let count = |i: usize| counts.get(i).copied().unwrap_or(0);
        match (change..inputs.len())
            .rev()
            .find(|&i| holds_every_page(inputs[i].header(), count(i) as usize))
        {
            Some(i) => skip = i,
            None => {
                return Err(LtxError::PageSizeChangeNotFull {
                    txid: inputs[change].header().min_txid,
                    from: prev_page_size,
                    to: inputs[change].header().page_size,
                    pages: count(change),
                    commit: inputs[change].header().commit,
                })
            }
        }
    }
    let rest = inputs.split_off(skip);
    check_contiguous(rest.iter().map(|d| d.header()))?;
    Ok((rest, skip, prev_page_size))
}

/// After a merge from a rebased input: it must have held every page.
fn check_rebase(base: &Header, prev_page_size: u32, base_pages: u32) -> Result<()> {
    if base_pages != full_page_count(base) {
        return Err(LtxError::PageSizeChangeNotFull {
            txid: base.min_txid,
            from: prev_page_size,
            to: base.page_size,
            pages: base_pages,
            commit: base.commit,
        });
    }
    Ok(())
}

/// One input of the merge with its current page.
struct Cursor<R: Read> {
    decoder: Decoder<R>,
    pgno: Option<u32>,
    page: Vec<u8>,
}

impl<R: Read> Cursor<R> {
    /// Moves to the next page; errors name which input failed.
    fn advance(&mut self, index: usize) -> Result<()> {
        self.pgno = self
            .decoder
            .next_page(&mut self.page)
            .map_err(|e| LtxError::Input {
                index,
                source: Box::new(e),
            })?;
        Ok(())
    }
}

/// Opens a cursor on each input, each at its first page.
/// `first_index` is the position of the first one among the caller's inputs (for errors).
fn open_cursors<R: Read>(inputs: Vec<Decoder<R>>, first_index: usize) -> Result<Vec<Cursor<R>>> {
    let mut cursors = Vec::with_capacity(inputs.len());
    for (index, decoder) in inputs.into_iter().enumerate() {
        let index = index + first_index;
        let mut c = Cursor {
            decoder,
            pgno: None,
            page: Vec::new(),
        };
        c.advance(index)?;
        cursors.push(c);
    }
    Ok(cursors)
}

/// The k-way merge: calls `emit` once per page number in ascending order with the page of
/// the latest input holding it, skipping pages above `commit`. Reads every input to its end,
/// so every file checksum is verified. Returns how many pages the first input held.
/// `first_index` is as for [`open_cursors`].
fn merge_pages<R: Read>(
    cursors: &mut [Cursor<R>],
    commit: u32,
    first_index: usize,
    mut emit: impl FnMut(u32, &[u8]) -> Result<()>,
) -> Result<u32> {
    let mut first_pages = 0u32;
    while let Some(pgno) = cursors.iter().filter_map(|c| c.pgno).min() {
        if cursors[0].pgno == Some(pgno) {
            first_pages += 1;
        }
        let winner = cursors
            .iter()
            .rposition(|c| c.pgno == Some(pgno))
            .expect("some cursor holds the minimum");
        if pgno <= commit {
            emit(pgno, &cursors[winner].page)?;
        }
        for (index, c) in cursors
            .iter_mut()
            .enumerate()
            .filter(|(_, c)| c.pgno == Some(pgno))
        {
            c.advance(index + first_index)?;
        }
    }
    Ok(first_pages)
}

/// Merges `inputs` (in TXID order) into one file written to `out`.
///
/// Header as ltx's compactor makes it: TXID range and page size from the inputs, commit and
/// timestamp from the last input, WAL fields zero. Pages above the final commit are dropped
/// (that is how a shrink propagates). Memory is one page per input, whatever the sizes.
/// Database checksums are carried only when every input tracks them.
pub fn merge<R: Read, W: Write>(inputs: Vec<Decoder<R>>, out: W) -> Result<(W, MergeSummary)> {
    merge_stamped(inputs, out, None)
}

/// [`merge`], with the output's timestamp set to `timestamp` (ms) when given (Litestream
/// stamps a snapshot with the time it was taken).
pub fn merge_stamped<R: Read, W: Write>(
    inputs: Vec<Decoder<R>>,
    out: W,
    timestamp: Option<i64>,
) -> Result<(W, MergeSummary)> {
    merge_stamped_known(inputs, out, timestamp, None)
}

/// [`merge_stamped`], told how many pages each input holds (see `rebase`).
pub fn merge_stamped_known<R: Read, W: Write>(
    inputs: Vec<Decoder<R>>,
    out: W,
    timestamp: Option<i64>,
    counts: Option<&[u32]>,
) -> Result<(W, MergeSummary)> {
    let (first, last) = match (inputs.first(), inputs.last()) {
        (Some(f), Some(l)) => (*f.header(), *l.header()),
        _ => return Err(LtxError::NoInputs),
    };
    let tracks = inputs.iter().all(|d| d.header().tracks_checksums());
    // After a page-size change the output starts from the full file at the new size; it
    // keeps the whole TXID range (levels stay contiguous) and holds every page.
    let (inputs, skip, prev_page_size) = rebase(inputs, counts)?;
    let base = *inputs[0].header();
    let mut header = Header::new(
        base.page_size,
        last.commit,
        first.min_txid,
        last.max_txid,
        timestamp.unwrap_or(last.timestamp),
    );
    if tracks {
        header.flags &= !HEADER_FLAG_NO_CHECKSUM;
        header.pre_apply_checksum = first.pre_apply_checksum;
    }
    let mut encoder = Encoder::new(out, header)?;
    let mut cursors = open_cursors(inputs, skip)?;
    let base_pages = merge_pages(&mut cursors, header.commit, skip, |pgno, page| {
        encoder.encode_page(pgno, page)
    })?;
    if skip > 0 {
        check_rebase(&base, prev_page_size, base_pages)?;
    }
    let post_apply = match cursors.last().and_then(|c| c.decoder.trailer()) {
        Some(t) if tracks => t.post_apply_checksum,
        _ => 0,
    };
    encoder.finish(post_apply)
}

/// What applying files to a database produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ApplySummary {
    /// The merged header: MinTXID of the first input .. MaxTXID and commit of the last.
    pub header: Header,
    pub pages: u64,
}

/// Writes the database the `inputs` describe (in TXID order, the first a snapshot starting
/// at TXID 1) into `out`: latest page wins, exactly `commit` pages long, the lock page zero.
/// After a page-size change, the database is built from the full file at the new size on.
/// Streams: memory is one page per input.
pub fn apply_to_database<R: Read>(
    inputs: Vec<Decoder<R>>,
    out: &mut std::fs::File,
) -> Result<ApplySummary> {
    apply_to_database_known(inputs, out, None)
}

/// [`apply_to_database`], told how many pages each input holds (see `rebase`).
pub fn apply_to_database_known<R: Read>(
    inputs: Vec<Decoder<R>>,
    out: &mut std::fs::File,
    counts: Option<&[u32]>,
) -> Result<ApplySummary> {
    use std::io::{Seek, SeekFrom};
    let (first, last) = match (inputs.first(), inputs.last()) {
        (Some(f), Some(l)) => (*f.header(), *l.header()),
        _ => return Err(LtxError::NoInputs),
    };
    if first.min_txid != 1 {
        return Err(LtxError::SnapshotIncomplete {
            expected: 1,
            got: 0,
        });
    }
    let (inputs, skip, prev_page_size) = rebase(inputs, counts)?;
    let base = *inputs[0].header();
    let page_size = u64::from(base.page_size);
    let mut cursors = open_cursors(inputs, skip)?;
    let mut pages = 0u64;
    let base_pages = merge_pages(&mut cursors, last.commit, skip, |pgno, page| {
        out.seek(SeekFrom::Start((u64::from(pgno) - 1) * page_size))?;
        out.write_all(page)?;
        pages += 1;
        Ok(())
    })?;
    if skip > 0 {
        check_rebase(&base, prev_page_size, base_pages)?;
    }
    out.set_len(u64::from(last.commit) * page_size)?;
    let mut header = Header::new(
        base.page_size,
        last.commit,
        1,
        last.max_txid,
        last.timestamp,
    );
    header.flags = last.flags;
    Ok(ApplySummary { header, pages })
}
