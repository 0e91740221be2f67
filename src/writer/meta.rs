//! Local replication state beside the database (like Litestream's `.app.db-litestream/`):
//! `state.json`, the position durably captured, and `spool/`, LTX files with TXIDs assigned
//! that are not uploaded yet. Only plain files; no network.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

/// Where WAL capture stood: the generation (salts) and the end of the last captured frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct WalPosition {
    pub salt1: u32,
    pub salt2: u32,
    pub end: u64,
    pub checksum: (u32, u32),
}

/// Identity of the database file when no WAL generation is live, to notice outside changes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct DbFingerprint {
    pub ino: u64,
    pub size: u64,
    pub mtime_ns: i128,
}

impl DbFingerprint {
    pub fn of(path: &Path) -> Option<Self> {
        let m = fs::metadata(path).ok()?;
        Some(Self {
            ino: m.ino(),
            size: m.size(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
        })
    }
}

/// Everything up to `txid` is durable (uploaded or spooled); capture continues after `wal`
/// (or, with no live WAL, from a database file matching `db`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SavedState {
    pub txid: u64,
    pub page_size: u32,
    /// Database size in pages at `txid`.
    #[serde(default)]
    pub commit: u32,
    pub wal: Option<WalPosition>,
    pub db: Option<DbFingerprint>,
}

pub struct MetaDir {
    dir: PathBuf,
}

fn write_atomic(path: &Path, bytes: &[u8], fsync: bool) -> io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut f = fs::File::create(&tmp)?;
    f.write_all(bytes)?;
    if fsync {
        f.sync_all()?;
    }
    fs::rename(&tmp, path)?;
    if fsync {
        if let Some(dir) = path.parent() {
            fs::File::open(dir)?.sync_all()?;
        }
    }
    Ok(())
}

impl MetaDir {
    /// `<dir>/.<file>-litestream/`, as Litestream names it.
    pub fn for_database(db_path: &Path) -> Self {
        let name = db_path.file_name().unwrap_or_default().to_string_lossy();
        let dir = db_path.with_file_name(format!(".{name}-litestream"));
        Self { dir }
    }

    /// Scratch space for compaction downloads.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    pub fn load_state(&self) -> Option<SavedState> {
        let bytes = fs::read(self.dir.join("state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    pub fn save_state(&self, state: &SavedState, fsync: bool) -> io::Result<()> {
        fs::create_dir_all(&self.dir)?;
        let bytes = serde_json::to_vec(state).map_err(io::Error::other)?;
        write_atomic(&self.dir.join("state.json"), &bytes, fsync)
    }

    pub fn spool_path(&self, txid: u64) -> PathBuf {
        self.spool_dir().join(crate::ltx::file_name(txid, txid))
    }

    /// Writes an LTX file to the spool (temp file + rename). No fsync: the spool adds none
    /// that SQLite would not do. After a power loss a spooled file may be torn or missing;
    /// the database itself is intact (SQLite synced its checkpoint), only history is lost,
    /// and the next open verifies the spool and resyncs with a full snapshot.
    pub fn spool(&self, txid: u64, bytes: &[u8]) -> io::Result<PathBuf> {
        fs::create_dir_all(self.spool_dir())?;
        let path = self.spool_path(txid);
        write_atomic(&path, bytes, false)?;
        Ok(path)
    }

    /// Spooled TXIDs in order, with sizes.
    pub fn spooled(&self) -> Vec<(u64, u64)> {
        let Ok(entries) = fs::read_dir(self.spool_dir()) else {
            return Vec::new();
        };
        let mut out: Vec<(u64, u64)> = entries
            .filter_map(|e| {
                let e = e.ok()?;
                let (min, max) = crate::ltx::parse_file_name(e.file_name().to_str()?)?;
                (min == max).then_some((min, e.metadata().ok()?.len()))
            })
            .collect();
        out.sort_unstable();
        out
    }

    pub fn unspool(&self, txid: u64) {
        let _ = fs::remove_file(self.spool_path(txid));
    }
}
