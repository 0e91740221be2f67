//! SQLite's WAL file format: the header, frame headers, and a validating scan of committed
//! transactions (used at open to find what was committed while we were not watching).

use std::collections::BTreeMap;
use std::io;
use std::os::unix::fs::FileExt;

pub const WAL_HEADER_SIZE: u64 = 32;
pub const FRAME_HEADER_SIZE: u64 = 24;
const MAGIC_LE: u32 = 0x377f_0682;
const MAGIC_BE: u32 = 0x377f_0683;

fn be32(b: &[u8], at: usize) -> u32 {
    u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHeader {
    pub big_endian_checksum: bool,
    pub page_size: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum: (u32, u32),
}

impl WalHeader {
    pub fn parse(b: &[u8]) -> Option<Self> {
        if b.len() < WAL_HEADER_SIZE as usize {
            return None;
        }
        let magic = be32(b, 0);
        if magic != MAGIC_LE && magic != MAGIC_BE {
            return None;
        }
        let page_size = crate::ltx::page_size_from_field(be32(b, 8));
        if !crate::ltx::is_valid_page_size(page_size) {
            return None;
        }
        let header = Self {
            big_endian_checksum: magic == MAGIC_BE,
            page_size,
            salt1: be32(b, 16),
            salt2: be32(b, 20),
            checksum: (be32(b, 24), be32(b, 28)),
        };
        // The header checksums its own first 24 bytes.
        (wal_checksum(header.big_endian_checksum, (0, 0), &b[..24]) == header.checksum)
            .then_some(header)
    }

    pub fn frame_size(&self) -> u64 {
        FRAME_HEADER_SIZE + u64::from(self.page_size)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrameHeader {
    pub pgno: u32,
    /// Database size in pages after this frame's transaction, on commit frames; else 0.
    pub commit: u32,
    pub salt1: u32,
    pub salt2: u32,
    pub checksum: (u32, u32),
}

impl FrameHeader {
    pub fn parse(b: &[u8]) -> Self {
        Self {
            pgno: be32(b, 0),
            commit: be32(b, 4),
            salt1: be32(b, 8),
            salt2: be32(b, 12),
            checksum: (be32(b, 16), be32(b, 20)),
        }
    }
}

/// SQLite's WAL checksum over `data` (a multiple of 8 bytes), continuing from `seed`.
pub fn wal_checksum(big_endian: bool, seed: (u32, u32), data: &[u8]) -> (u32, u32) {
    let (mut s0, mut s1) = seed;
    for chunk in data.chunks_exact(8) {
        let word = |at: usize| {
            let bytes: [u8; 4] = chunk[at..at + 4].try_into().expect("4 bytes");
            if big_endian {
                u32::from_be_bytes(bytes)
            } else {
                u32::from_le_bytes(bytes)
            }
        };
        s0 = s0.wrapping_add(word(0)).wrapping_add(s1);
        s1 = s1.wrapping_add(word(4)).wrapping_add(s0);
    }
    (s0, s1)
}

/// The committed content of a WAL generation, as SQLite's recovery would find it.
#[derive(Debug, Default, Clone)]
pub struct WalScan {
    pub header: Option<WalHeader>,
    /// Latest committed frame offset of each page.
    pub pages: BTreeMap<u32, u64>,
    /// Database size after the last committed transaction.
    pub commit: Option<u32>,
    /// End of the last committed frame (where the next frame would go).
    pub end: u64,
    /// Running checksum at `end`.
    pub checksum: (u32, u32),
}

/// Scans `file` from `start` (the header when 0) keeping only frames of complete, valid
/// transactions with this header's salts: the same rule SQLite's recovery applies.
/// When starting mid-file, `resume` gives the header and the running checksum at `start`.
pub fn scan(
    file: &std::fs::File,
    resume: Option<(WalHeader, u64, (u32, u32))>,
) -> io::Result<WalScan> {
    let len = file.metadata()?.len();
    let (header, start, mut checksum) = match resume {
        Some(r) => r,
        None => {
            let mut buf = [0u8; WAL_HEADER_SIZE as usize];
            if len < WAL_HEADER_SIZE {
                return Ok(WalScan::default());
            }
            file.read_exact_at(&mut buf, 0)?;
            match WalHeader::parse(&buf) {
                Some(h) => (h, WAL_HEADER_SIZE, h.checksum),
                None => return Ok(WalScan::default()),
            }
        }
    };
    let mut scan = WalScan {
        header: Some(header),
        end: start,
        checksum,
        ..WalScan::default()
    };
    let frame_size = header.frame_size();
    let mut frame = vec![0u8; frame_size as usize];
    let mut txn: Vec<(u32, u64)> = Vec::new();
    let mut offset = start;
    while offset + frame_size <= len {
        file.read_exact_at(&mut frame, offset)?;
        let fh = FrameHeader::parse(&frame);
        if fh.salt1 != header.salt1 || fh.salt2 != header.salt2 || fh.pgno == 0 {
            break;
        }
        checksum = wal_checksum(header.big_endian_checksum, checksum, &frame[..8]);
        checksum = wal_checksum(header.big_endian_checksum, checksum, &frame[24..]);
        if checksum != fh.checksum {
            break;
        }
        txn.push((fh.pgno, offset));
        offset += frame_size;
        if fh.commit != 0 {
            for (pgno, at) in txn.drain(..) {
                scan.pages.insert(pgno, at);
            }
            scan.commit = Some(fh.commit);
            scan.end = offset;
            scan.checksum = checksum;
        }
    }
    Ok(scan)
}

/// SQLite's WAL-index header (the first 48 bytes of `-shm`, native byte order), as far as
/// appending frames needs it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalIndexHeader {
    pub big_endian_checksum: bool,
    pub page_size: u32,
    /// Frames committed in the live generation.
    pub max_frame: u32,
    /// Database size in pages.
    pub db_pages: u32,
    /// Running checksum after frame `max_frame`.
    pub frame_checksum: (u32, u32),
    /// The two salts as SQLite copies them: the WAL header's bytes 16..24.
    pub salt_bytes: [u8; 8],
}

pub const WAL_INDEX_HEADER_SIZE: usize = 48;
/// Offset of `isInit` in each of the two header copies.
pub const WAL_INDEX_IS_INIT: usize = 12;

impl WalIndexHeader {
    /// Parses the two copies at the start of the wal-index; None unless they agree, are
    /// initialized and checksum (what SQLite itself requires before trusting them).
    pub fn parse(shm: &[u8]) -> Option<Self> {
        let (a, b) = (
            shm.get(..WAL_INDEX_HEADER_SIZE)?,
            shm.get(WAL_INDEX_HEADER_SIZE..2 * WAL_INDEX_HEADER_SIZE)?,
        );
        let ne = |at: usize| u32::from_ne_bytes(a[at..at + 4].try_into().expect("4 bytes"));
        if a != b || a[WAL_INDEX_IS_INIT] == 0 {
            return None;
        }
        // The header checksums its first 40 bytes in native byte order.
        let native_big = cfg!(target_endian = "big");
        if wal_checksum(native_big, (0, 0), &a[..40]) != (ne(40), ne(44)) {
            return None;
        }
        Some(Self {
            big_endian_checksum: a[13] != 0,
            page_size: crate::ltx::page_size_from_field(u32::from(u16::from_ne_bytes([
                a[14], a[15],
            ]))),
            max_frame: ne(16),
            db_pages: ne(20),
            frame_checksum: (ne(24), ne(28)),
            salt_bytes: a[32..40].try_into().expect("8 bytes"),
        })
    }
}

/// A WAL header starting a new generation.
pub fn encode_wal_header(
    page_size: u32,
    checkpoint_seq: u32,
    salt_bytes: [u8; 8],
) -> [u8; WAL_HEADER_SIZE as usize] {
    let big = cfg!(target_endian = "big");
    let mut h = [0u8; WAL_HEADER_SIZE as usize];
    let magic = if big { MAGIC_BE } else { MAGIC_LE };
    h[0..4].copy_from_slice(&magic.to_be_bytes());
    h[4..8].copy_from_slice(&3_007_000u32.to_be_bytes());
    h[8..12].copy_from_slice(&page_size.to_be_bytes());
    h[12..16].copy_from_slice(&checkpoint_seq.to_be_bytes());
    h[16..24].copy_from_slice(&salt_bytes);
    let (c0, c1) = wal_checksum(big, (0, 0), &h[..24]);
    h[24..28].copy_from_slice(&c0.to_be_bytes());
    h[28..32].copy_from_slice(&c1.to_be_bytes());
    h
}

/// One frame (header + page) continuing the running checksum `seed`; `commit` is the
/// database size in pages on a transaction's last frame, else 0. Returns the new checksum.
pub fn encode_frame(
    out: &mut Vec<u8>,
    big_endian_checksum: bool,
    seed: (u32, u32),
    salt_bytes: [u8; 8],
    pgno: u32,
    commit: u32,
    page: &[u8],
) -> (u32, u32) {
    let start = out.len();
    out.extend_from_slice(&pgno.to_be_bytes());
    out.extend_from_slice(&commit.to_be_bytes());
    out.extend_from_slice(&salt_bytes);
    let sum = wal_checksum(big_endian_checksum, seed, &out[start..start + 8]);
    let sum = wal_checksum(big_endian_checksum, sum, page);
    out.extend_from_slice(&sum.0.to_be_bytes());
    out.extend_from_slice(&sum.1.to_be_bytes());
    out.extend_from_slice(page);
    sum
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checksum_matches_sqlite_on_a_real_wal() {
        // A WAL written by the sqlite3 shell: every frame's stored checksum must verify.
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("w.db");
        let mut child = std::process::Command::new("sqlite3")
            .arg(&db)
            .current_dir(dir.path())
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(b"PRAGMA journal_mode=wal;\nPRAGMA wal_autocheckpoint=0;\nCREATE TABLE t(x);\nINSERT INTO t VALUES(1);\nINSERT INTO t VALUES(2);\n.shell cp w.db-wal copy-wal\n")
            .unwrap();
        assert!(child.wait().unwrap().success());
        let f = std::fs::File::open(dir.path().join("copy-wal")).unwrap();
        let s = scan(&f, None).unwrap();
        let h = s.header.expect("valid WAL header");
        assert_eq!(h.page_size, 4096);
        assert_eq!(
            s.end,
            f.metadata().unwrap().len(),
            "every frame verified and committed"
        );
        assert!(s.pages.contains_key(&1) && s.pages.contains_key(&2));
        assert_eq!(s.commit, Some(2));
    }
}
