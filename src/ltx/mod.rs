//! LTX v3: the file format Litestream 0.5.x stores in object storage (see docs/LTX.md).
//!
//! This module knows nothing of S3 or SQLite: it turns pages into LTX bytes and back.

mod checksum;
mod decoder;
mod encoder;
mod error;
mod header;
mod index;
mod merge;
mod varint;

pub use checksum::{crc64, page_checksum, Crc64, DatabaseChecksum};
pub use decoder::{decode_page_frame, Decoder};
pub use encoder::{EncodeSummary, Encoder};
pub use error::LtxError;
pub use header::{Header, Trailer};
pub use index::{IndexLocation, PageIndex, PageIndexEntry};
pub use merge::{
    apply_to_database, apply_to_database_known, check_contiguous, holds_every_page, merge,
    merge_stamped, merge_stamped_known, rebase_point, ApplySummary, MergeSummary,
};

/// File magic shared by LTX versions 2 and 3.
pub const MAGIC: &[u8; 4] = b"LTX1";
pub const HEADER_SIZE: usize = 100;
pub const TRAILER_SIZE: usize = 16;
/// pgno (u32) + flags (u16).
pub const PAGE_HEADER_SIZE: usize = 6;
/// The only valid header flag: database checksums are not tracked (Litestream always sets it).
pub const HEADER_FLAG_NO_CHECKSUM: u32 = 0x0000_0002;
/// Page flag: a u32 compressed size follows and the data is one LZ4 block (ltx >= 0.5.2).
/// Without it the data is a legacy LZ4 frame (ltx 0.5.0 / 0.5.1).
pub const PAGE_FLAG_SIZE: u16 = 0x0001;
/// Bit 63, set on every stored checksum.
pub const CHECKSUM_FLAG: u64 = 1 << 63;
/// Bytes of the file's tail that Litestream reads to find the page index in one request.
pub const ESTIMATED_PAGE_INDEX_SIZE: u64 = 32 * 1024;

/// Transaction ID: the sequence number of one shipped L0 file.
pub type Txid = u64;

/// The page SQLite never writes: the one holding the byte at offset 1 GiB.
pub fn lock_pgno(page_size: u32) -> u32 {
    (0x4000_0000 / page_size) + 1
}

/// Valid SQLite page sizes: powers of two from 512 to 65536.
pub fn is_valid_page_size(page_size: u32) -> bool {
    (512..=65536).contains(&page_size) && page_size.is_power_of_two()
}

/// A page size as SQLite stores it in its page-size fields (database header, WAL index):
/// 65536 does not fit 16 bits and is written as 1.
pub fn page_size_from_field(raw: u32) -> u32 {
    if raw == 1 {
        65536
    } else {
        raw
    }
}

/// `%016x-%016x.ltx`, as Litestream names files.
pub fn file_name(min_txid: Txid, max_txid: Txid) -> String {
    format!("{min_txid:016x}-{max_txid:016x}.ltx")
}

/// Parses a name made by [`file_name`]; anything else (uppercase hex included) is `None`.
pub fn parse_file_name(name: &str) -> Option<(Txid, Txid)> {
    let stem = name.strip_suffix(".ltx")?;
    let (min, max) = stem.split_once('-')?;
    let hex16 = |s: &str| {
        (s.len() == 16
            && s.bytes()
                .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b)))
        .then(|| u64::from_str_radix(s, 16).ok())
        .flatten()
    };
    Some((hex16(min)?, hex16(max)?))
}

/// A TXID as Litestream prints it everywhere: 16 lowercase hex digits.
pub fn format_txid(txid: Txid) -> String {
    format!("{txid:016x}")
}

#[cfg(test)]
mod tests;
