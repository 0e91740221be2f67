//! The page index at the end of an LTX file: where each page frame is, so one page can be
//! fetched with a single ranged read.

use super::error::{LtxError, Result};
use super::varint::{get_uvarint, put_uvarint};
use super::{HEADER_SIZE, TRAILER_SIZE};

/// Where one page frame lives inside its file.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PageIndexEntry {
    pub pgno: u32,
    /// Absolute offset of the frame's page header.
    pub offset: u64,
    /// Whole frame size: page header, optional size prefix and data.
    pub size: u64,
}

/// Entries in ascending pgno order.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PageIndex {
    pub entries: Vec<PageIndexEntry>,
}

/// What a reader must fetch to get the index, given the file size and a tail it already has.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum IndexLocation {
    /// The index lies wholly inside the tail.
    InTail,
    /// Fetch from this absolute offset to the end of the file, then parse again.
    FetchFrom(u64),
}

/// Bytes after the index: the u64 index size and the trailer.
const INDEX_FOOTER: u64 = 8 + TRAILER_SIZE as u64;

impl PageIndex {
    /// The index bytes as stored: uvarint triples, a zero terminator, then the u64 BE size.
    pub fn encode(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.entries.len() * 8 + 10);
        for e in &self.entries {
            put_uvarint(&mut out, u64::from(e.pgno));
            put_uvarint(&mut out, e.offset);
            put_uvarint(&mut out, e.size);
        }
        put_uvarint(&mut out, 0);
        let size = out.len() as u64;
        out.extend_from_slice(&size.to_be_bytes());
        out
    }

    /// Where the index is, given the last bytes of a file of `file_size` bytes.
    pub fn locate(tail: &[u8], file_size: u64) -> Result<IndexLocation> {
        let index_size = Self::index_size(tail, file_size)?;
        let start = file_size - INDEX_FOOTER - index_size;
        if start >= file_size - tail.len() as u64 {
            Ok(IndexLocation::InTail)
        } else {
            Ok(IndexLocation::FetchFrom(start))
        }
    }

    fn index_size(tail: &[u8], file_size: u64) -> Result<u64> {
        let min_size = (HEADER_SIZE + super::PAGE_HEADER_SIZE) as u64 + 1 + INDEX_FOOTER;
        if file_size < min_size
            || (tail.len() as u64) < INDEX_FOOTER
            || tail.len() as u64 > file_size
        {
            return Err(LtxError::Truncated("file too small for a page index"));
        }
        let at = tail.len() - INDEX_FOOTER as usize;
        let index_size = u64::from_be_bytes(tail[at..at + 8].try_into().expect("8 bytes"));
        if index_size == 0 || index_size > file_size - INDEX_FOOTER - HEADER_SIZE as u64 {
            return Err(LtxError::BadIndex(format!(
                "index size {index_size} does not fit the file"
            )));
        }
        Ok(index_size)
    }

    /// Parses the index out of the last `tail.len()` bytes of a file of `file_size` bytes.
    /// The tail must reach back to the index start (see [`PageIndex::locate`]).
    pub fn parse_tail(tail: &[u8], file_size: u64) -> Result<Self> {
        let index_size = Self::index_size(tail, file_size)?;
        let tail_start = file_size - tail.len() as u64;
        let start = file_size - INDEX_FOOTER - index_size;
        if start < tail_start {
            return Err(LtxError::BadIndex(
                "tail does not contain the whole index".into(),
            ));
        }
        let body = &tail[(start - tail_start) as usize..tail.len() - INDEX_FOOTER as usize];
        Self::parse_entries(body, start)
    }

    /// Parses `body` (entries + terminator) found at `start`; checks frames lie before it.
    fn parse_entries(body: &[u8], start: u64) -> Result<Self> {
        let mut pos = 0;
        let mut entries = Vec::new();
        let mut prev = 0u64;
        loop {
            let pgno = get_uvarint(body, &mut pos)?;
            if pgno == 0 {
                break;
            }
            let offset = get_uvarint(body, &mut pos)?;
            let size = get_uvarint(body, &mut pos)?;
            let bad = pgno <= prev
                || pgno > u64::from(u32::MAX)
                || offset < HEADER_SIZE as u64
                || size < super::PAGE_HEADER_SIZE as u64
                || offset.checked_add(size).is_none_or(|end| end > start);
            if bad {
                return Err(LtxError::BadIndex(format!(
                    "entry pgno {pgno} offset {offset} size {size} is out of order or out of bounds"
                )));
            }
            prev = pgno;
            entries.push(PageIndexEntry {
                pgno: pgno as u32,
                offset,
                size,
            });
        }
        if pos != body.len() {
            return Err(LtxError::BadIndex("bytes after the terminator".into()));
        }
        Ok(Self { entries })
    }

    pub fn get(&self, pgno: u32) -> Option<&PageIndexEntry> {
        self.entries
            .binary_search_by_key(&pgno, |e| e.pgno)
            .ok()
            .map(|i| &self.entries[i])
    }
}
