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
    let mut prev: Option<&Header> = None;
    for h in headers {
        if let Some(p) = prev {
            if h.page_size != p.page_size {
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
fn open_cursors<R: Read>(inputs: Vec<Decoder<R>>) -> Result<Vec<Cursor<R>>> {
    let mut cursors = Vec::with_capacity(inputs.len());
    for (index, decoder) in inputs.into_iter().enumerate() {
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
/// so every file checksum is verified.
fn merge_pages<R: Read>(
    cursors: &mut [Cursor<R>],
    commit: u32,
    mut emit: impl FnMut(u32, &[u8]) -> Result<()>,
) -> Result<()> {
    while let Some(pgno) = cursors.iter().filter_map(|c| c.pgno).min() {
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
            c.advance(index)?;
        }
    }
    Ok(())
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
    let (first, last) = match (inputs.first(), inputs.last()) {
        (Some(f), Some(l)) => (*f.header(), *l.header()),
        _ => return Err(LtxError::NoInputs),
    };
    check_contiguous(inputs.iter().map(|d| d.header()))?;
    let tracks = inputs.iter().all(|d| d.header().tracks_checksums());
    let mut header = Header::new(
        first.page_size,
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
    let mut cursors = open_cursors(inputs)?;
    merge_pages(&mut cursors, header.commit, |pgno, page| {
        encoder.encode_page(pgno, page)
    })?;
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
/// Streams: memory is one page per input.
pub fn apply_to_database<R: Read>(
    inputs: Vec<Decoder<R>>,
    out: &mut std::fs::File,
) -> Result<ApplySummary> {
    use std::io::{Seek, SeekFrom};
    let (first, last) = match (inputs.first(), inputs.last()) {
        (Some(f), Some(l)) => (*f.header(), *l.header()),
        _ => return Err(LtxError::NoInputs),
    };
    check_contiguous(inputs.iter().map(|d| d.header()))?;
    if first.min_txid != 1 {
        return Err(LtxError::SnapshotIncomplete {
            expected: 1,
            got: 0,
        });
    }
    let page_size = u64::from(first.page_size);
    let mut cursors = open_cursors(inputs)?;
    let mut pages = 0u64;
    merge_pages(&mut cursors, last.commit, |pgno, page| {
        out.seek(SeekFrom::Start((u64::from(pgno) - 1) * page_size))?;
        out.write_all(page)?;
        pages += 1;
        Ok(())
    })?;
    out.set_len(u64::from(last.commit) * page_size)?;
    let mut header = Header::new(
        first.page_size,
        last.commit,
        1,
        last.max_txid,
        last.timestamp,
    );
    header.flags = last.flags;
    Ok(ApplySummary { header, pages })
}
