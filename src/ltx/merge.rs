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
    fn advance(&mut self) -> Result<()> {
        self.pgno = self.decoder.next_page(&mut self.page)?;
        Ok(())
    }
}

/// Merges `inputs` (in TXID order) into one file written to `out`.
///
/// Header as ltx's compactor makes it: TXID range and page size from the inputs, commit and
/// timestamp from the last input, WAL fields zero. Pages above the final commit are dropped
/// (that is how a shrink propagates). Memory is one page per input, whatever the sizes.
/// Database checksums are carried only when every input tracks them.
pub fn merge<R: Read, W: Write>(inputs: Vec<Decoder<R>>, out: W) -> Result<(W, MergeSummary)> {
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
        last.timestamp,
    );
    if tracks {
        header.flags &= !HEADER_FLAG_NO_CHECKSUM;
        header.pre_apply_checksum = first.pre_apply_checksum;
    }
    let mut encoder = Encoder::new(out, header)?;

    let mut cursors = Vec::with_capacity(inputs.len());
    for decoder in inputs {
        let mut c = Cursor {
            decoder,
            pgno: None,
            page: Vec::new(),
        };
        c.advance()?;
        cursors.push(c);
    }
    while let Some(pgno) = cursors.iter().filter_map(|c| c.pgno).min() {
        // The latest input holding this page wins.
        let winner = cursors
            .iter()
            .rposition(|c| c.pgno == Some(pgno))
            .expect("some cursor holds the minimum");
        if pgno <= header.commit {
            encoder.encode_page(pgno, &cursors[winner].page)?;
        }
        for c in cursors.iter_mut().filter(|c| c.pgno == Some(pgno)) {
            c.advance()?;
        }
    }
    let post_apply = match cursors.last().and_then(|c| c.decoder.trailer()) {
        Some(t) if tracks => t.post_apply_checksum,
        _ => 0,
    };
    encoder.finish(post_apply)
}
