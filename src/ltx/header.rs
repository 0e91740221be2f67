use super::error::{LtxError, Result};
use super::{
    is_valid_page_size, Txid, CHECKSUM_FLAG, HEADER_FLAG_NO_CHECKSUM, HEADER_SIZE, MAGIC,
    TRAILER_SIZE,
};

/// The 100-byte LTX header (LTX.md §1.2). All integers big-endian.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Header {
    pub flags: u32,
    pub page_size: u32,
    /// Database size in pages after this file is applied.
    pub commit: u32,
    pub min_txid: Txid,
    pub max_txid: Txid,
    /// Milliseconds since the Unix epoch.
    pub timestamp: i64,
    pub pre_apply_checksum: u64,
    pub wal_offset: i64,
    pub wal_size: i64,
    pub wal_salt1: u32,
    pub wal_salt2: u32,
    pub node_id: u64,
}

fn be_u32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}
fn be_u64(b: &[u8], at: usize) -> u64 {
    u64::from_be_bytes(b[at..at + 8].try_into().expect("8 bytes"))
}

/// A stored database checksum must be 0 when not tracked, else non-zero with bit 63 set.
fn check_db_checksum(which: &'static str, value: u64, tracked: bool) -> Result<()> {
    let ok = if tracked {
        value != 0 && value & CHECKSUM_FLAG != 0
    } else {
        value == 0
    };
    if ok {
        Ok(())
    } else {
        Err(LtxError::BadChecksumField { which, value })
    }
}

impl Header {
    /// An object is trusted for the TXIDs its name says only if its header says the same
    /// (a misnamed or swapped object would otherwise be applied at the wrong place).
    pub fn check_named(&self, named_min: u64, named_max: u64) -> Result<()> {
        if (self.min_txid, self.max_txid) != (named_min, named_max) {
            return Err(LtxError::NameMismatch {
                min: self.min_txid,
                max: self.max_txid,
                named_min,
                named_max,
            });
        }
        Ok(())
    }

    /// A header as Litestream writes it: no database checksums.
    pub fn new(
        page_size: u32,
        commit: u32,
        min_txid: Txid,
        max_txid: Txid,
        timestamp: i64,
    ) -> Self {
        Self {
            flags: HEADER_FLAG_NO_CHECKSUM,
            page_size,
            commit,
            min_txid,
            max_txid,
            timestamp,
            ..Self::default()
        }
    }

    /// A snapshot holds every page 1..=commit (LTX defines it as MinTXID == 1).
    pub fn is_snapshot(&self) -> bool {
        self.min_txid == 1
    }

    pub fn tracks_checksums(&self) -> bool {
        self.flags & HEADER_FLAG_NO_CHECKSUM == 0
    }

    pub fn encode(&self) -> [u8; HEADER_SIZE] {
        let mut b = [0u8; HEADER_SIZE];
        b[0..4].copy_from_slice(MAGIC);
        b[4..8].copy_from_slice(&self.flags.to_be_bytes());
        b[8..12].copy_from_slice(&self.page_size.to_be_bytes());
        b[12..16].copy_from_slice(&self.commit.to_be_bytes());
        b[16..24].copy_from_slice(&self.min_txid.to_be_bytes());
        b[24..32].copy_from_slice(&self.max_txid.to_be_bytes());
        b[32..40].copy_from_slice(&self.timestamp.to_be_bytes());
        b[40..48].copy_from_slice(&self.pre_apply_checksum.to_be_bytes());
        b[48..56].copy_from_slice(&self.wal_offset.to_be_bytes());
        b[56..64].copy_from_slice(&self.wal_size.to_be_bytes());
        b[64..68].copy_from_slice(&self.wal_salt1.to_be_bytes());
        b[68..72].copy_from_slice(&self.wal_salt2.to_be_bytes());
        b[72..80].copy_from_slice(&self.node_id.to_be_bytes());
        b
    }

    /// Parses and validates a header. The 20 reserved bytes are ignored, as Go does.
    pub fn decode(b: &[u8]) -> Result<Self> {
        if b.len() < HEADER_SIZE {
            return Err(LtxError::Truncated("header"));
        }
        if &b[0..4] != MAGIC {
            return Err(LtxError::BadMagic);
        }
        let h = Self {
            flags: be_u32(b, 4),
            page_size: be_u32(b, 8),
            commit: be_u32(b, 12),
            min_txid: be_u64(b, 16),
            max_txid: be_u64(b, 24),
            timestamp: be_u64(b, 32) as i64,
            pre_apply_checksum: be_u64(b, 40),
            wal_offset: be_u64(b, 48) as i64,
            wal_size: be_u64(b, 56) as i64,
            wal_salt1: be_u32(b, 64),
            wal_salt2: be_u32(b, 68),
            node_id: be_u64(b, 72),
        };
        h.validate()?;
        Ok(h)
    }

    /// Every rule of ltx `Header.Validate` (LTX.md §1.8).
    pub fn validate(&self) -> Result<()> {
        if self.flags & !HEADER_FLAG_NO_CHECKSUM != 0 {
            return Err(LtxError::BadFlags(self.flags));
        }
        if !is_valid_page_size(self.page_size) {
            return Err(LtxError::BadPageSize(self.page_size));
        }
        if self.min_txid == 0 || self.max_txid == 0 || self.min_txid > self.max_txid {
            return Err(LtxError::BadTxidRange {
                min: self.min_txid,
                max: self.max_txid,
            });
        }
        if self.wal_offset < 0 {
            return Err(LtxError::BadWalFields("negative WAL offset"));
        }
        if self.wal_size < 0 {
            return Err(LtxError::BadWalFields("negative WAL size"));
        }
        if (self.wal_salt1 != 0 || self.wal_salt2 != 0) && self.wal_offset == 0 {
            return Err(LtxError::BadWalFields("WAL salt without a WAL offset"));
        }
        if self.wal_offset == 0 && self.wal_size != 0 {
            return Err(LtxError::BadWalFields("WAL size without a WAL offset"));
        }
        let tracked = self.tracks_checksums() && !self.is_snapshot();
        check_db_checksum("pre-apply", self.pre_apply_checksum, tracked)
    }
}

/// The 16-byte trailer: post-apply database checksum and the file checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Trailer {
    pub post_apply_checksum: u64,
    pub file_checksum: u64,
}

impl Trailer {
    pub fn encode(&self) -> [u8; TRAILER_SIZE] {
        let mut b = [0u8; TRAILER_SIZE];
        b[0..8].copy_from_slice(&self.post_apply_checksum.to_be_bytes());
        b[8..16].copy_from_slice(&self.file_checksum.to_be_bytes());
        b
    }

    pub fn decode(b: &[u8; TRAILER_SIZE]) -> Self {
        Self {
            post_apply_checksum: be_u64(b, 0),
            file_checksum: be_u64(b, 8),
        }
    }

    /// ltx `Trailer.Validate` for a file with this header.
    pub fn validate(&self, header: &Header) -> Result<()> {
        check_db_checksum(
            "post-apply",
            self.post_apply_checksum,
            header.tracks_checksums(),
        )?;
        if self.file_checksum == 0 || self.file_checksum & CHECKSUM_FLAG == 0 {
            return Err(LtxError::BadChecksumField {
                which: "file",
                value: self.file_checksum,
            });
        }
        Ok(())
    }
}
