//! CRC-64 exactly as Go's `hash/crc64` with the ISO table computes it (CRC-64/GO-ISO),
//! and the LTX database checksum built from it.

use super::CHECKSUM_FLAG;

static CRC64_ISO: crc::Crc<u64> = crc::Crc::<u64>::new(&crc::CRC_64_GO_ISO);

/// A running CRC-64/GO-ISO.
pub struct Crc64(crc::Digest<'static, u64>);

impl Default for Crc64 {
    fn default() -> Self {
        Self(CRC64_ISO.digest())
    }
}

impl Crc64 {
    pub fn update(&mut self, bytes: &[u8]) {
        self.0.update(bytes);
    }
    /// The value as stored in an LTX file: bit 63 forced on.
    pub fn finish_flagged(self) -> u64 {
        self.0.finalize() | CHECKSUM_FLAG
    }
}

pub fn crc64(bytes: &[u8]) -> u64 {
    CRC64_ISO.checksum(bytes)
}

/// `0x8000000000000000 | CRC64ISO(u32be(pgno) || data)`.
pub fn page_checksum(pgno: u32, data: &[u8]) -> u64 {
    let mut d = CRC64_ISO.digest();
    d.update(&pgno.to_be_bytes());
    d.update(data);
    d.finalize() | CHECKSUM_FLAG
}

/// The rolling, order-independent database checksum of LTX (XOR of page checksums).
/// Litestream 0.5 never stores it; we use it to compare databases cheaply.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DatabaseChecksum(u64);

impl Default for DatabaseChecksum {
    fn default() -> Self {
        Self(CHECKSUM_FLAG)
    }
}

impl DatabaseChecksum {
    pub fn value(self) -> u64 {
        self.0
    }
    /// XORs a page in (or out: applying it twice removes it).
    pub fn toggle(&mut self, pgno: u32, data: &[u8]) {
        self.0 = CHECKSUM_FLAG | (self.0 ^ page_checksum(pgno, data));
    }
    /// Checksum of a whole database image, skipping the lock page (as ltx after v0.5.2 does).
    pub fn of_database(image: &[u8], page_size: u32) -> Self {
        let lock = super::lock_pgno(page_size);
        let mut sum = Self::default();
        for (i, page) in image.chunks(page_size as usize).enumerate() {
            let pgno = i as u32 + 1;
            if pgno != lock {
                sum.toggle(pgno, page);
            }
        }
        sum
    }
}
