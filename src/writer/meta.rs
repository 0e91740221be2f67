//! Local replication state beside the database (like Litestream's `.app.db-litestream/`):
//! `state.json`, the position durably captured, and `spool/`, LTX files with TXIDs assigned
//! that are not uploaded yet. Only plain files; no network.

use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{FileExt, MetadataExt};
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
    /// The file change counter (header offset 24) at `txid`, in rollback-journal mode.
    #[serde(default)]
    pub counter: Option<u32>,
}

/// What maintenance did last (`maintenance.json`), so that a database open for moments at a
/// time (a connection per request) is still compacted, snapshotted and trimmed: a schedule
/// whose boundary passed since it last ran, with uploads it has not seen, runs at the next
/// open. Index `i` of the vectors: level `i + 1`; the last index: snapshots.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct MaintenanceRecord {
    /// When each schedule last ran or tried to (ms since the epoch: a failing store gets one
    /// try per boundary, not one per open), and the replica TXID its last success covered.
    pub tried_ms: Vec<i64>,
    pub covered_txid: Vec<u64>,
    /// When retention last succeeded, and last tried.
    pub retention_ran_ms: i64,
    #[serde(default)]
    pub retention_tried_ms: i64,
    /// Until when retention has work (files compacted by then become deletable up to it).
    pub retention_until_ms: i64,
}

pub struct MetaDir {
    dir: PathBuf,
    /// `state.json`, kept open: the position is rewritten in place (one `pwrite`) after every
    /// upload and WAL restart, where a temp file and a rename cost the commit path dearly
    /// (ext4 also starts writeback of a file renamed over another).
    state_file: Option<fs::File>,
    /// Whether the directories exist (created once, not on every write).
    made: bool,
}

/// `state.json` is written padded with spaces to this size, so an in-place rewrite always
/// covers the previous content (JSON allows trailing whitespace).
const STATE_SLOT: usize = 1024;

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
        Self {
            dir,
            state_file: None,
            made: false,
        }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Scratch space for compaction downloads.
    pub fn work_dir(&self) -> PathBuf {
        self.dir.join("work")
    }

    pub fn spool_dir(&self) -> PathBuf {
        self.dir.join("spool")
    }

    fn make_dirs(&mut self) -> io::Result<()> {
        if !self.made {
            fs::create_dir_all(self.spool_dir())?;
            self.made = true;
        }
        Ok(())
    }

    pub fn load_state(&self) -> Option<SavedState> {
        let bytes = fs::read(self.dir.join("state.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// Records the position. Without `fsync`, in place: a process crash cannot tear one
    /// `pwrite` within a page; a power loss may, and a state that does not parse means a full
    /// snapshot at the next open (the database itself is intact). With `fsync` (a restore's
    /// record), atomically and durably: temp file, fsync, rename, directory fsync.
    pub fn save_state(&mut self, state: &SavedState, fsync: bool) -> io::Result<()> {
        let mut bytes = serde_json::to_vec(state).map_err(io::Error::other)?;
        let path = self.dir.join("state.json");
        if fsync || bytes.len() > STATE_SLOT {
            self.state_file = None; // the rename replaces the file it points at
            return self.retry_if_dir_gone(|_| write_atomic(&path, &bytes, fsync));
        }
        bytes.resize(STATE_SLOT, b' ');
        self.retry_if_dir_gone(|meta| {
            if meta.state_file.is_none() {
                let file = fs::OpenOptions::new()
                    .write(true)
                    .create(true)
                    .truncate(false)
                    .open(&path)?;
                meta.state_file = Some(file);
            }
            let file = meta.state_file.as_ref().expect("just opened");
            file.write_all_at(&bytes, 0)
        })
    }

    pub fn load_maintenance(&self) -> Option<MaintenanceRecord> {
        let bytes = fs::read(self.dir.join("maintenance.json")).ok()?;
        serde_json::from_slice(&bytes).ok()
    }

    /// No fsync: a record lost or torn only means one maintenance pass more.
    pub fn save_maintenance(&mut self, record: &MaintenanceRecord) -> io::Result<()> {
        let bytes = serde_json::to_vec(record).map_err(io::Error::other)?;
        let path = self.dir.join("maintenance.json");
        self.retry_if_dir_gone(|_| write_atomic(&path, &bytes, false))
    }

    pub fn spool_path(&self, txid: u64) -> PathBuf {
        self.spool_dir().join(crate::ltx::file_name(txid, txid))
    }

    /// Writes an LTX file to the spool, straight to its name (no temp file and rename: this
    /// runs on the commit path at WAL restarts). No fsync: the spool adds none that SQLite
    /// would not do. After a crash mid-write or a power loss a spooled file may be torn or
    /// missing; the database itself is intact (SQLite synced its checkpoint), only history is
    /// lost: the next open verifies every spooled file whole and resyncs with a full snapshot.
    pub fn spool(&mut self, txid: u64, bytes: &[u8]) -> io::Result<PathBuf> {
        let (path, mut file) = self.spool_file(txid)?;
        file.write_all(bytes)?;
        Ok(path)
    }

    /// Creates (or empties) the spool file of `txid`, to write or encode into.
    pub fn spool_file(&mut self, txid: u64) -> io::Result<(PathBuf, fs::File)> {
        let path = self.spool_path(txid);
        let file = self.retry_if_dir_gone(|_| fs::File::create(&path))?;
        Ok((path, file))
    }

    /// Runs `write` with the directories made; once more if they were removed behind our back.
    fn retry_if_dir_gone<T>(
        &mut self,
        mut write: impl FnMut(&mut Self) -> io::Result<T>,
    ) -> io::Result<T> {
        self.make_dirs()?;
        match write(self) {
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                self.made = false;
                self.state_file = None;
                self.make_dirs()?;
                write(self)
            }
            other => other,
        }
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
