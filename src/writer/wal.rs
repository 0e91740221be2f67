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
        let raw_size = be32(b, 8);
        let page_size = if raw_size == 1 { 65536 } else { raw_size };
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
