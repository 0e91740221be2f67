use std::io::Read;

use super::checksum::{Crc64, DatabaseChecksum};
use super::error::{read_exact, LtxError, Result};
use super::header::{Header, Trailer};
use super::index::{PageIndex, PageIndexEntry};
use super::varint::read_uvarint;
use super::{HEADER_SIZE, PAGE_FLAG_SIZE, PAGE_HEADER_SIZE, TRAILER_SIZE};

/// Largest compressed size we accept for one page: LZ4's worst case for 64 KiB plus slack.
const MAX_COMPRESSED_PAGE: u32 = 65536 + 65536 / 255 + 64;

/// Reads one frame's data after its 6-byte page header, filling `page`. Returns the bytes of
/// the size prefix (when present, they are checksummed) and the stored data length.
fn read_frame_body(
    r: &mut impl Read,
    pgno: u32,
    flags: u16,
    page: &mut [u8],
    scratch: &mut Vec<u8>,
) -> Result<(Option<[u8; 4]>, u64)> {
    if flags & !PAGE_FLAG_SIZE != 0 || pgno == 0 {
        return Err(LtxError::BadPageHeader { pgno, flags });
    }
    let decompress_err = |reason: String| LtxError::Decompress { pgno, reason };
    if flags & PAGE_FLAG_SIZE != 0 {
        let mut size = [0u8; 4];
        read_exact(r, &mut size, "page size prefix")?;
        let csize = u32::from_be_bytes(size);
        if csize > MAX_COMPRESSED_PAGE {
            return Err(decompress_err(format!(
                "compressed size {csize} is implausible"
            )));
        }
        scratch.resize(csize as usize, 0);
        read_exact(r, scratch, "page data")?;
        let n = lz4_flex::block::decompress_into(scratch, page)
            .map_err(|e| decompress_err(e.to_string()))?;
        if n != page.len() {
            return Err(decompress_err(format!(
                "{n} bytes, expected {}",
                page.len()
            )));
        }
        Ok((Some(size), 4 + u64::from(csize)))
    } else {
        // Legacy ltx 0.5.0/0.5.1 page: a whole LZ4 frame, self-delimiting.
        read_lz4_frame(r, scratch)?;
        let mut dec = lz4_flex::frame::FrameDecoder::new(&scratch[..]);
        let mut filled = 0;
        loop {
            match dec.read(&mut page[filled..]) {
                Ok(0) => break,
                Ok(n) => filled += n,
                Err(e) => return Err(decompress_err(e.to_string())),
            }
            if filled == page.len() {
                let mut extra = [0u8; 1];
                if dec
                    .read(&mut extra)
                    .map_err(|e| decompress_err(e.to_string()))?
                    != 0
                {
                    return Err(decompress_err("frame is larger than a page".into()));
                }
                break;
            }
        }
        if filled != page.len() {
            return Err(decompress_err(format!(
                "{filled} bytes, expected {}",
                page.len()
            )));
        }
        Ok((None, scratch.len() as u64))
    }
}

/// Copies exactly one LZ4 frame from `r` into `out`, reading no byte past its end.
fn read_lz4_frame(r: &mut impl Read, out: &mut Vec<u8>) -> Result<()> {
    let mut take = |n: usize, out: &mut Vec<u8>| -> Result<usize> {
        let at = out.len();
        out.resize(at + n, 0);
        read_exact(r, &mut out[at..], "legacy LZ4 frame")?;
        Ok(at)
    };
    out.clear();
    take(6, out)?;
    if out[0..4] != [0x04, 0x22, 0x4d, 0x18] {
        return Err(LtxError::Decompress {
            pgno: 0,
            reason: "legacy page is not an LZ4 frame".into(),
        });
    }
    let flg = out[4];
    let block_checksum = flg & 0x10 != 0;
    let content_size = flg & 0x08 != 0;
    let content_checksum = flg & 0x04 != 0;
    let dict_id = flg & 0x01 != 0;
    // Optional content size and dictionary ID, then the header checksum byte.
    take(8 * content_size as usize + 4 * dict_id as usize + 1, out)?;
    let mut total = 0u64;
    loop {
        let at = take(4, out)?;
        let word = u32::from_le_bytes(out[at..at + 4].try_into().expect("4 bytes"));
        if word == 0 {
            break;
        }
        let len = (word & 0x7fff_ffff) as usize;
        total += len as u64;
        if total > u64::from(MAX_COMPRESSED_PAGE) {
            return Err(LtxError::Decompress {
                pgno: 0,
                reason: "legacy LZ4 frame is larger than any page".into(),
            });
        }
        take(len + 4 * block_checksum as usize, out)?;
    }
    if content_checksum {
        take(4, out)?;
    }
    Ok(())
}

/// Decodes one page frame fetched by a ranged read (`frame` = exactly the bytes the page
/// index names). Returns the page number and data.
pub fn decode_page_frame(frame: &[u8], page_size: u32) -> Result<(u32, Vec<u8>)> {
    let mut r = frame;
    let mut head = [0u8; PAGE_HEADER_SIZE];
    read_exact(&mut r, &mut head, "page header")?;
    let pgno = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes"));
    let flags = u16::from_be_bytes(head[4..6].try_into().expect("2 bytes"));
    let mut page = vec![0u8; page_size as usize];
    read_frame_body(&mut r, pgno, flags, &mut page, &mut Vec::new())?;
    if !r.is_empty() {
        return Err(LtxError::BadIndex(format!(
            "page {pgno} frame has trailing bytes"
        )));
    }
    Ok((pgno, page))
}

/// Streams an LTX file: pages in order, then index and trailer, verifying the file checksum.
pub struct Decoder<R: Read> {
    input: R,
    header: Header,
    crc: Option<Crc64>,
    offset: u64,
    built_index: PageIndex,
    last_pgno: u32,
    db_checksum: DatabaseChecksum,
    trailer: Option<Trailer>,
    scratch: Vec<u8>,
}

impl<R: Read> Decoder<R> {
    /// Reads and validates the header.
    pub fn new(mut input: R) -> Result<Self> {
        let mut bytes = [0u8; HEADER_SIZE];
        read_exact(&mut input, &mut bytes, "header")?;
        let header = Header::decode(&bytes)?;
        let mut crc = Crc64::default();
        crc.update(&bytes);
        Ok(Self {
            input,
            header,
            crc: Some(crc),
            offset: HEADER_SIZE as u64,
            built_index: PageIndex::default(),
            last_pgno: 0,
            db_checksum: DatabaseChecksum::default(),
            trailer: None,
            scratch: Vec::new(),
        })
    }

    pub fn header(&self) -> &Header {
        &self.header
    }

    /// The trailer, once [`Decoder::next_page`] has returned `None`.
    pub fn trailer(&self) -> Option<Trailer> {
        self.trailer
    }

    /// Decodes the next page into `page` (resized to the page size) and returns its number;
    /// `None` after the last page, once the index and trailer have been read and verified.
    pub fn next_page(&mut self, page: &mut Vec<u8>) -> Result<Option<u32>> {
        if self.trailer.is_some() {
            return Ok(None);
        }
        let mut head = [0u8; PAGE_HEADER_SIZE];
        read_exact(&mut self.input, &mut head, "page header")?;
        let pgno = u32::from_be_bytes(head[0..4].try_into().expect("4 bytes"));
        let flags = u16::from_be_bytes(head[4..6].try_into().expect("2 bytes"));
        let crc = self
            .crc
            .as_mut()
            .ok_or(LtxError::Misuse("decoder failed earlier"))?;
        crc.update(&head);
        if pgno == 0 && flags == 0 {
            self.read_tail()?;
            return Ok(None);
        }
        if pgno <= self.last_pgno {
            return Err(LtxError::PageOutOfOrder {
                prev: self.last_pgno,
                pgno,
            });
        }
        page.resize(self.header.page_size as usize, 0);
        let (prefix, body_len) =
            read_frame_body(&mut self.input, pgno, flags, page, &mut self.scratch)?;
        if let Some(prefix) = prefix {
            crc.update(&prefix);
        }
        crc.update(page);
        if self.header.tracks_checksums() && self.header.is_snapshot() {
            self.db_checksum.toggle(pgno, page);
        }
        let size = PAGE_HEADER_SIZE as u64 + body_len;
        self.built_index.entries.push(PageIndexEntry {
            pgno,
            offset: self.offset,
            size,
        });
        self.offset += size;
        self.last_pgno = pgno;
        Ok(Some(pgno))
    }

    /// Reads the index and trailer after the end marker and checks them.
    fn read_tail(&mut self) -> Result<()> {
        let mut crc = self
            .crc
            .take()
            .ok_or(LtxError::Misuse("decoder failed earlier"))?;
        let mut raw = Vec::new();
        let mut stored = PageIndex::default();
        loop {
            let pgno = read_uvarint(&mut self.input, &mut raw)?;
            if pgno == 0 {
                break;
            }
            let offset = read_uvarint(&mut self.input, &mut raw)?;
            let size = read_uvarint(&mut self.input, &mut raw)?;
            stored.entries.push(PageIndexEntry {
                pgno: u32::try_from(pgno)
                    .map_err(|_| LtxError::BadIndex(format!("pgno {pgno} too large")))?,
                offset,
                size,
            });
        }
        let mut size = [0u8; 8];
        read_exact(&mut self.input, &mut size, "page index size")?;
        if u64::from_be_bytes(size) != raw.len() as u64 {
            return Err(LtxError::BadIndex(format!(
                "index size field {} but the index is {} bytes",
                u64::from_be_bytes(size),
                raw.len()
            )));
        }
        if stored != self.built_index {
            return Err(LtxError::BadIndex(
                "index does not match the page frames".into(),
            ));
        }
        crc.update(&raw);
        crc.update(&size);
        let mut trailer_bytes = [0u8; TRAILER_SIZE];
        read_exact(&mut self.input, &mut trailer_bytes, "trailer")?;
        crc.update(&trailer_bytes[0..8]);
        let trailer = Trailer::decode(&trailer_bytes);
        let computed = crc.finish_flagged();
        if computed != trailer.file_checksum {
            return Err(LtxError::ChecksumMismatch {
                stored: trailer.file_checksum,
                computed,
            });
        }
        trailer.validate(&self.header)?;
        if self.header.tracks_checksums()
            && self.header.is_snapshot()
            && self.db_checksum.value() != trailer.post_apply_checksum
        {
            return Err(LtxError::DatabaseChecksumMismatch {
                stored: trailer.post_apply_checksum,
                computed: self.db_checksum.value(),
            });
        }
        self.trailer = Some(trailer);
        Ok(())
    }

    /// Reads (and verifies) whatever is left; returns the trailer.
    pub fn finish(mut self) -> Result<Trailer> {
        let mut page = Vec::new();
        while self.next_page(&mut page)?.is_some() {}
        self.trailer.ok_or(LtxError::Misuse("no trailer"))
    }

    /// Writes every page into `out` at its offset, as the database after this file; used on
    /// a snapshot (or merged stream starting at TXID 1) to produce a database image.
    /// The file ends up exactly `commit` pages long; the lock page is zero-filled.
    pub fn decode_database_to(mut self, out: &mut std::fs::File) -> Result<(Trailer, u32)> {
        use std::io::{Seek, SeekFrom, Write};
        let page_size = u64::from(self.header.page_size);
        let commit = self.header.commit;
        let mut page = Vec::new();
        let mut pages = 0;
        let mut expected = 1u32;
        while let Some(pgno) = self.next_page(&mut page)? {
            if u64::from(pgno) != u64::from(expected) {
                // Only the lock page may be missing: write zeros there.
                if pgno != expected + 1 || expected != super::lock_pgno(self.header.page_size) {
                    return Err(LtxError::SnapshotIncomplete {
                        expected,
                        got: pgno,
                    });
                }
                out.seek(SeekFrom::Start((u64::from(expected) - 1) * page_size))?;
                out.write_all(&vec![0u8; page_size as usize])?;
            }
            out.seek(SeekFrom::Start((u64::from(pgno) - 1) * page_size))?;
            out.write_all(&page)?;
            pages += 1;
            expected = pgno + 1;
        }
        if u64::from(expected) <= u64::from(commit) && commit != 0 {
            return Err(LtxError::SnapshotIncomplete { expected, got: 0 });
        }
        out.set_len(u64::from(commit) * page_size)?;
        let trailer = self.trailer.ok_or(LtxError::Misuse("no trailer"))?;
        Ok((trailer, pages))
    }
}
