use std::io::Write;

use super::checksum::Crc64;
use super::error::{LtxError, Result};
use super::header::{Header, Trailer};
use super::index::{PageIndex, PageIndexEntry};
use super::{lock_pgno, CHECKSUM_FLAG, HEADER_SIZE, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE};

/// What an encoded file came to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EncodeSummary {
    pub header: Header,
    pub trailer: Trailer,
    pub pages: u32,
    pub bytes: u64,
}

/// Streams an LTX v3 file: header, then pages in ascending order, then [`Encoder::finish`].
///
/// Pages are written as the v0.5.2 encoder writes them: flag 0x0001, a u32 compressed size,
/// one LZ4 block. The rules of ltx `EncodePage` are enforced.
pub struct Encoder<W: Write> {
    out: W,
    header: Header,
    crc: Crc64,
    offset: u64,
    index: PageIndex,
    last_pgno: u32,
}

impl<W: Write> Encoder<W> {
    pub fn new(mut out: W, header: Header) -> Result<Self> {
        header.validate()?;
        let bytes = header.encode();
        out.write_all(&bytes)?;
        let mut crc = Crc64::default();
        crc.update(&bytes);
        Ok(Self {
            out,
            header,
            crc,
            offset: HEADER_SIZE as u64,
            index: PageIndex::default(),
            last_pgno: 0,
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The page a snapshot must write next after `pgno` (the lock page is skipped).
    fn next_snapshot_pgno(&self, pgno: u32) -> u32 {
        let next = pgno + 1;
        if next == lock_pgno(self.header.page_size) {
            next + 1
        } else {
            next
        }
    }

    pub fn encode_page(&mut self, pgno: u32, data: &[u8]) -> Result<()> {
        let h = &self.header;
        if data.len() != h.page_size as usize {
            return Err(LtxError::PageDataSize {
                expected: h.page_size as usize,
                got: data.len(),
            });
        }
        if pgno == 0 {
            return Err(LtxError::BadPageHeader { pgno, flags: 0 });
        }
        if pgno > h.commit {
            return Err(LtxError::PageBeyondCommit {
                pgno,
                commit: h.commit,
            });
        }
        if pgno == lock_pgno(h.page_size) {
            return Err(LtxError::LockPage(pgno));
        }
        if h.is_snapshot() {
            let expected = self.next_snapshot_pgno(self.last_pgno);
            if pgno != expected {
                return Err(LtxError::SnapshotIncomplete {
                    expected,
                    got: pgno,
                });
            }
        } else if pgno <= self.last_pgno {
            return Err(LtxError::PageOutOfOrder {
                prev: self.last_pgno,
                pgno,
            });
        }

        let compressed = lz4_flex::block::compress(data);
        let mut frame_header = [0u8; PAGE_HEADER_SIZE + 4];
        frame_header[0..4].copy_from_slice(&pgno.to_be_bytes());
        frame_header[4..6].copy_from_slice(&PAGE_FLAG_SIZE.to_be_bytes());
        frame_header[6..10].copy_from_slice(&(compressed.len() as u32).to_be_bytes());
        self.out.write_all(&frame_header)?;
        self.out.write_all(&compressed)?;
        // The checksum covers the uncompressed data, so it does not depend on the compressor.
        self.crc.update(&frame_header);
        self.crc.update(data);

        let size = (frame_header.len() + compressed.len()) as u64;
        self.index.entries.push(PageIndexEntry {
            pgno,
            offset: self.offset,
            size,
        });
        self.offset += size;
        self.last_pgno = pgno;
        Ok(())
    }

    /// Writes the end marker, page index and trailer. `post_apply_checksum` must be 0 unless
    /// the header tracks database checksums.
    pub fn finish(mut self, post_apply_checksum: u64) -> Result<(W, EncodeSummary)> {
        let h = self.header;
        if h.is_snapshot() && h.commit > 0 {
            let mut want = h.commit;
            if want == lock_pgno(h.page_size) {
                want -= 1;
            }
            if self.last_pgno != want {
                let expected = self.next_snapshot_pgno(self.last_pgno);
                return Err(LtxError::SnapshotIncomplete { expected, got: 0 });
            }
        }
        if h.commit == 0 && post_apply_checksum != CHECKSUM_FLAG {
            // ltx's rule: an empty database must carry the empty checksum, so it needs checksums.
            return Err(LtxError::Misuse(
                "a zero-page file needs database checksums",
            ));
        }
        let end_marker = [0u8; PAGE_HEADER_SIZE];
        let index = self.index.encode();
        let post = post_apply_checksum.to_be_bytes();
        self.crc.update(&end_marker);
        self.crc.update(&index);
        self.crc.update(&post);
        let trailer = Trailer {
            post_apply_checksum,
            file_checksum: self.crc.finish_flagged(),
        };
        trailer.validate(&h)?;
        self.out.write_all(&end_marker)?;
        self.out.write_all(&index)?;
        self.out.write_all(&trailer.encode())?;
        self.out.flush()?;
        let bytes = self.offset + (end_marker.len() + index.len() + 16) as u64;
        let summary = EncodeSummary {
            header: h,
            trailer,
            pages: self.index.entries.len() as u32,
            bytes,
        };
        Ok((self.out, summary))
    }
}
