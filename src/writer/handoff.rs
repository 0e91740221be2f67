//! How processes that write one database share its capture. One process per database file
//! on this host, the *owner*, holds `owner.lock` in the metadata directory: it alone
//! captures, spools and ships. Every other process that loads the extension is a
//! *follower*: it never touches the owner's state; where its own writes are about to
//! destroy what the owner may not have read yet, it hands the pages over first:
//!
//! - WAL mode: before a follower restarts the WAL (its new header overwrites the old
//!   generation's frames), it writes the latest committed copy of every page framed in that
//!   generation from the owner's published *pin* on (the oldest frame the owner still
//!   references) as `handoff/wal-<salts>-<from>.ltx`. Frames the owner simply has not read
//!   yet are still in the WAL: it reads them itself (polling, and on its own writes).
//! - Rollback-journal modes: a follower's commit is written as `handoff/cc-<counter>.ltx`
//!   while it still holds the database lock (the file change counter names the commit).
//!
//! Writers without the extension hand nothing over: the owner notices the gap (a WAL
//! generation or change counter with no hand-off) and ships a full snapshot. The rule is
//! that a gap is never silent; hand-offs only make the common case cheap.
//!
//! All files here are plain LTX files (page index and checksums verified when read).

use std::collections::BTreeMap;
use std::fs;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};

use super::meta::{DbFingerprint, SavedState};
use crate::ltx::{self, Encoder, Header};

/// Where the owner's WAL capture stands, published for followers: the generation, the oldest
/// frame offset its pending pages still point at, and the owner's pid. Published values may
/// be stale but never ahead of the owner, so a hand-off built from them covers too much,
/// never too little.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PublishedPin {
    pub salt1: u32,
    pub salt2: u32,
    pub pin: u64,
    pub pid: u32,
}

const PIN_SIZE: usize = 4 + 4 + 8 + 4;

impl PublishedPin {
    fn encode(&self) -> [u8; PIN_SIZE] {
        let mut b = [0u8; PIN_SIZE];
        b[0..4].copy_from_slice(&self.salt1.to_be_bytes());
        b[4..8].copy_from_slice(&self.salt2.to_be_bytes());
        b[8..16].copy_from_slice(&self.pin.to_be_bytes());
        b[16..20].copy_from_slice(&self.pid.to_be_bytes());
        b
    }

    fn decode(b: &[u8; PIN_SIZE]) -> Self {
        let u32_at = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
        Self {
            salt1: u32_at(0),
            salt2: u32_at(4),
            pin: u64::from_be_bytes(b[8..16].try_into().expect("8 bytes")),
            pid: u32_at(16),
        }
    }
}

/// What the owner last uploaded, as a position in the database's own terms, so a follower's
/// `litestream_sync()` can tell when the replica holds what it committed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct ShippedMark {
    pub txid: u64,
    /// WAL generation (salts) and the end of the last shipped commit frame.
    pub wal: Option<(u32, u32, u64)>,
    /// The change counter of the last shipped commit (rollback-journal mode).
    pub counter: Option<u32>,
    /// The inode of the database file the owner replicates: a file put in place of it under
    /// the owner is another database, which this mark says nothing about.
    #[serde(default)]
    pub inode: Option<u64>,
}

impl ShippedMark {
    /// The mark of `state` (a durable position the replica holds, TXID `txid`) of the
    /// database file with inode `inode`.
    pub fn of(txid: u64, state: &SavedState, inode: Option<u64>) -> Self {
        Self {
            txid,
            wal: state.wal.map(|w| (w.salt1, w.salt2, w.end)),
            counter: state.counter,
            inode,
        }
    }

    /// Whether the replica at this mark holds the database state `target` (a position read
    /// from the database files by the asking process). A later WAL generation holds it too:
    /// SQLite adds one to the first salt at every restart.
    pub fn covers(&self, target: &ShippedMark) -> bool {
        if let (Some(ours), Some(theirs)) = (target.inode, self.inode) {
            if ours != theirs {
                return false;
            }
        }
        match (target.wal, self.wal, target.counter, self.counter) {
            (Some((s1, s2, end)), Some((m1, m2, mend)), _, _) => {
                ((m1, m2) == (s1, s2) && mend >= end) || (m1.wrapping_sub(s1) as i32) > 0
            }
            (None, _, Some(c), Some(m)) => (m.wrapping_sub(c) as i32) >= 0,
            (None, _, None, _) => true,
            _ => false,
        }
    }
}

/// What a hand-off carries: committed pages (latest copy of each) and the database size in
/// pages after the last commit it covers.
#[derive(Debug, Default)]
pub struct Handoff {
    pub page_size: u32,
    pub commit: u32,
    pub pages: BTreeMap<u32, Vec<u8>>,
}

/// A WAL hand-off found in the directory: the generation it covers and where it starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WalHandoffName {
    pub salt1: u32,
    pub salt2: u32,
    pub from: u64,
}

/// The hand-off directory of one database's metadata directory.
pub struct HandoffDir {
    meta: PathBuf,
}

impl HandoffDir {
    pub fn new(meta: &Path) -> Self {
        Self {
            meta: meta.to_path_buf(),
        }
    }

    fn dir(&self) -> PathBuf {
        self.meta.join("handoff")
    }

    fn pin_path(&self) -> PathBuf {
        self.meta.join("pin")
    }

    pub fn owner_lock_path(&self) -> PathBuf {
        self.meta.join("owner.lock")
    }

    /// Takes `owner.lock` if no other process holds it; the returned file keeps it (an
    /// `flock`, released when the file is closed or the process dies).
    pub fn try_own(&self) -> io::Result<Option<fs::File>> {
        fs::create_dir_all(&self.meta)?;
        let file = fs::OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(self.owner_lock_path())?;
        if !crate::sysfile::try_flock_exclusive(&file)? {
            return Ok(None);
        }
        // Who owns it, for followers' status (informational only).
        let _ = file.set_len(0);
        let _ = file.write_all_at(std::process::id().to_string().as_bytes(), 0);
        Ok(Some(file))
    }

    /// The pid written by the current owner (informational: it may have just exited).
    pub fn owner_pid(&self) -> Option<u32> {
        fs::read_to_string(self.owner_lock_path())
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Whether some process holds `owner.lock` now.
    pub fn owner_alive(&self) -> bool {
        let Ok(file) = fs::File::open(self.owner_lock_path()) else {
            return false;
        };
        !crate::sysfile::try_flock_shared(&file).unwrap_or(false)
    }

    pub fn publish_pin(&self, pin: &PublishedPin) -> io::Result<()> {
        let path = self.pin_path();
        let file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(false)
            .open(&path)?;
        file.write_all_at(&pin.encode(), 0)
    }

    pub fn read_pin(&self) -> Option<PublishedPin> {
        let file = fs::File::open(self.pin_path()).ok()?;
        let mut b = [0u8; PIN_SIZE];
        file.read_exact_at(&mut b, 0).ok()?;
        Some(PublishedPin::decode(&b))
    }

    pub fn publish_shipped(&self, mark: &ShippedMark) -> io::Result<()> {
        let bytes = serde_json::to_vec(mark).map_err(io::Error::other)?;
        // Each open publishes it again: unchanged, it is not rewritten (a rename per open).
        if fs::read(self.meta.join("shipped.json")).is_ok_and(|old| old == bytes) {
            return Ok(());
        }
        let tmp = self.meta.join("shipped.tmp");
        fs::write(&tmp, bytes)?;
        fs::rename(tmp, self.meta.join("shipped.json"))
    }

    pub fn read_shipped(&self) -> Option<ShippedMark> {
        serde_json::from_slice(&fs::read(self.meta.join("shipped.json")).ok()?).ok()
    }

    fn wal_name(n: &WalHandoffName) -> String {
        format!("wal-{:08x}{:08x}-{:016x}.ltx", n.salt1, n.salt2, n.from)
    }

    fn wal_db_name(n: &WalHandoffName) -> String {
        format!("{}.db", Self::wal_name(n))
    }

    fn cc_name(counter: u32) -> String {
        format!("cc-{counter:08x}.ltx")
    }

    fn write(&self, name: &str, h: &Handoff) -> io::Result<()> {
        fs::create_dir_all(self.dir())?;
        let header = Header::new(h.page_size, h.commit, 2, 2, crate::timefmt::now_millis());
        let mut enc = Encoder::new(Vec::new(), header).map_err(io::Error::other)?;
        let lock = ltx::lock_pgno(h.page_size);
        for (&pgno, page) in h.pages.range(..=h.commit) {
            if pgno != lock {
                enc.encode_page(pgno, page).map_err(io::Error::other)?;
            }
        }
        let bytes = enc.finish(0).map_err(io::Error::other)?.0;
        // Written whole under a temporary name, then renamed: the owner never sees half.
        let tmp = self.dir().join(format!(".{name}.tmp"));
        fs::write(&tmp, bytes)?;
        fs::rename(tmp, self.dir().join(name))
    }

    /// A WAL generation's hand-off, and the database file as it was when the generation
    /// ended (checkpointed into it), written first: the owner compares it with the file it
    /// finds, to tell whether someone committed and checkpointed after (see
    /// `Capture::wal_ended_elsewhere`).
    pub fn write_wal(
        &self,
        name: &WalHandoffName,
        h: &Handoff,
        db: Option<DbFingerprint>,
    ) -> io::Result<()> {
        fs::create_dir_all(self.dir())?;
        let side = Self::wal_db_name(name);
        let tmp = self.dir().join(format!(".{side}.tmp"));
        fs::write(&tmp, serde_json::to_vec(&db).map_err(io::Error::other)?)?;
        fs::rename(tmp, self.dir().join(side))?;
        self.write(&Self::wal_name(name), h)
    }

    /// The database file as the hand-off `name`'s generation left it; None when not recorded.
    pub fn read_wal_db(&self, name: &WalHandoffName) -> Option<DbFingerprint> {
        let bytes = fs::read(self.dir().join(Self::wal_db_name(name))).ok()?;
        serde_json::from_slice::<Option<DbFingerprint>>(&bytes)
            .ok()
            .flatten()
    }

    pub fn write_cc(&self, counter: u32, h: &Handoff) -> io::Result<()> {
        self.write(&Self::cc_name(counter), h)
    }

    fn read(&self, name: &str) -> io::Result<Option<Handoff>> {
        let bytes = match fs::read(self.dir().join(name)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(e),
        };
        let mut dec = ltx::Decoder::new(&bytes[..]).map_err(io::Error::other)?;
        let header = *dec.header();
        let mut out = Handoff {
            page_size: header.page_size,
            commit: header.commit,
            pages: BTreeMap::new(),
        };
        let mut page = Vec::new();
        while let Some(pgno) = dec.next_page(&mut page).map_err(io::Error::other)? {
            out.pages.insert(pgno, std::mem::take(&mut page));
        }
        Ok(Some(out))
    }

    pub fn read_cc(&self, counter: u32) -> io::Result<Option<Handoff>> {
        self.read(&Self::cc_name(counter))
    }

    pub fn read_wal(&self, name: &WalHandoffName) -> io::Result<Option<Handoff>> {
        self.read(&Self::wal_name(name))
    }

    /// WAL hand-offs of the generation whose first salt is `salt1`.
    pub fn wal_handoffs_with_salt1(&self, salt1: u32) -> Vec<WalHandoffName> {
        let prefix = format!("wal-{salt1:08x}");
        let Ok(entries) = fs::read_dir(self.dir()) else {
            return Vec::new();
        };
        let mut out: Vec<WalHandoffName> = entries
            .filter_map(|e| {
                let name = e.ok()?.file_name().into_string().ok()?;
                let rest = name.strip_prefix(&prefix)?.strip_suffix(".ltx")?;
                let (salt2, from) = rest.split_once('-')?;
                Some(WalHandoffName {
                    salt1,
                    salt2: u32::from_str_radix(salt2, 16).ok()?,
                    from: u64::from_str_radix(from, 16).ok()?,
                })
            })
            .collect();
        out.sort_by_key(|n| n.from);
        out
    }

    pub fn remove_wal(&self, name: &WalHandoffName) {
        let _ = fs::remove_file(self.dir().join(Self::wal_name(name)));
        let _ = fs::remove_file(self.dir().join(Self::wal_db_name(name)));
    }

    pub fn remove_cc(&self, counter: u32) {
        let _ = fs::remove_file(self.dir().join(Self::cc_name(counter)));
    }

    /// Removes every hand-off the database state at change counter `counter` (or, with
    /// `wal_salt1`, the WAL generation whose first salt it is) already holds: rollback-journal
    /// hand-offs up to that counter, WAL hand-offs of earlier generations. Counters and salts
    /// wrap: "earlier" is within half their range.
    pub fn remove_older_than(&self, counter: Option<u32>, wal_salt1: Option<u32>) {
        let Ok(entries) = fs::read_dir(self.dir()) else {
            return;
        };
        let not_after = |n: u32, limit: u32| (limit.wrapping_sub(n) as i32) >= 0;
        for e in entries.flatten() {
            let Ok(name) = e.file_name().into_string() else {
                continue;
            };
            let Some(stem) = name
                .strip_suffix(".ltx")
                .or_else(|| name.strip_suffix(".ltx.db"))
            else {
                continue;
            };
            let obsolete = if let Some(hex) = stem.strip_prefix("cc-") {
                let c = u32::from_str_radix(hex, 16).ok();
                matches!((c, counter), (Some(c), Some(limit)) if not_after(c, limit))
            } else if let Some(rest) = stem.strip_prefix("wal-") {
                let s1 = rest.get(..8).and_then(|h| u32::from_str_radix(h, 16).ok());
                matches!((s1, wal_salt1), (Some(s1), Some(cur)) if s1 != cur && not_after(s1, cur))
            } else {
                false
            };
            if obsolete {
                let _ = fs::remove_file(e.path());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn handoffs_round_trip_and_are_found_by_generation() {
        let dir = tempfile::tempdir().unwrap();
        let h = HandoffDir::new(dir.path());
        let mut pages = BTreeMap::new();
        pages.insert(1, vec![1u8; 512]);
        pages.insert(3, vec![3u8; 512]);
        pages.insert(9, vec![9u8; 512]); // beyond commit: not handed over
        let handoff = Handoff {
            page_size: 512,
            commit: 4,
            pages,
        };
        let name = WalHandoffName {
            salt1: 7,
            salt2: 0xdead,
            from: 32,
        };
        h.write_wal(&name, &handoff, None).unwrap();
        h.write_cc(5, &handoff).unwrap();
        assert_eq!(h.wal_handoffs_with_salt1(7), vec![name]);
        assert!(h.wal_handoffs_with_salt1(8).is_empty());
        let back = h.read_wal(&name).unwrap().unwrap();
        assert_eq!(back.commit, 4);
        assert_eq!(back.pages.keys().copied().collect::<Vec<_>>(), vec![1, 3]);
        assert_eq!(back.pages[&3], vec![3u8; 512]);
        assert!(h.read_cc(5).unwrap().is_some());
        assert!(h.read_cc(6).unwrap().is_none());
        h.remove_wal(&name);
        assert!(h.wal_handoffs_with_salt1(7).is_empty());
    }

    #[test]
    fn handoffs_the_database_already_holds_are_removed_whatever_their_age() {
        let dir = tempfile::tempdir().unwrap();
        let h = HandoffDir::new(dir.path());
        let handoff = Handoff {
            page_size: 512,
            commit: 1,
            pages: BTreeMap::from([(1, vec![1u8; 512])]),
        };
        // Counters far behind (a resync skipped them), at, and after the current one; and
        // across the wrap of the 32-bit counter.
        for c in [3u32, 1_000, 1_100, 1_101, u32::MAX] {
            h.write_cc(c, &handoff).unwrap();
        }
        let wal = |salt1| WalHandoffName {
            salt1,
            salt2: 1,
            from: 32,
        };
        for s1 in [5u32, 90, 100, 101] {
            h.write_wal(&wal(s1), &handoff, None).unwrap();
        }
        h.remove_older_than(Some(1_100), Some(100));
        let kept: Vec<u32> = [3u32, 1_000, 1_100, 1_101, u32::MAX]
            .into_iter()
            .filter(|&c| h.read_cc(c).unwrap().is_some())
            .collect();
        assert_eq!(kept, vec![1_101]);
        for (s1, kept) in [(5, false), (90, false), (100, true), (101, true)] {
            assert_eq!(
                h.wal_handoffs_with_salt1(s1).is_empty(),
                !kept,
                "salt1 {s1}"
            );
        }
        // A counter just past the wrap keeps what follows it and drops what precedes it.
        h.write_cc(u32::MAX, &handoff).unwrap();
        h.write_cc(2, &handoff).unwrap();
        h.remove_older_than(Some(0), None);
        assert!(h.read_cc(u32::MAX).unwrap().is_none());
        assert!(h.read_cc(2).unwrap().is_some());
    }

    #[test]
    fn a_damaged_handoff_is_an_error_not_pages() {
        let dir = tempfile::tempdir().unwrap();
        let h = HandoffDir::new(dir.path());
        let mut pages = BTreeMap::new();
        pages.insert(1, vec![1u8; 512]);
        let handoff = Handoff {
            page_size: 512,
            commit: 1,
            pages,
        };
        h.write_cc(1, &handoff).unwrap();
        let path = dir.path().join("handoff").join("cc-00000001.ltx");
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&path, bytes).unwrap();
        assert!(h.read_cc(1).is_err());
    }

    #[test]
    fn only_one_process_file_owns_and_the_pin_round_trips() {
        let dir = tempfile::tempdir().unwrap();
        let h = HandoffDir::new(dir.path());
        let first = h.try_own().unwrap();
        assert!(first.is_some());
        assert!(h.owner_alive());
        // A second open file description is refused while the first holds it.
        assert!(h.try_own().unwrap().is_none());
        assert_eq!(h.owner_pid(), Some(std::process::id()));
        drop(first);
        assert!(!h.owner_alive());
        let pin = PublishedPin {
            salt1: 1,
            salt2: 2,
            pin: 4128,
            pid: 99,
        };
        h.publish_pin(&pin).unwrap();
        assert_eq!(h.read_pin(), Some(pin));
    }
}
