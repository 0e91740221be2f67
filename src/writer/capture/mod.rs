//! What was committed and not yet shipped, for one database. Runs under the database's lock,
//! called from SQLite's VFS callbacks: no network, no waiting, only local file I/O.
//!
//! WAL mode: frames are parsed as SQLite writes them to `-wal`; a commit frame seals a
//! transaction, which is kept as *offsets* into the WAL (no copy). Before SQLite restarts,
//! truncates or deletes the WAL, whatever is still unshipped is encoded to the local spool.
//! Rollback-journal mode: pages written to the database file are noted and read back at the
//! commit point (journal finalized, or the write lock dropped).
//!
//! Only the *owner* process of a database captures (see `handoff`); in a follower the same
//! callbacks only hand pages over before its own writes destroy them. Commits by other
//! processes reach the owner through the WAL itself, hand-offs, or (from writers without
//! the extension) a full snapshot: `foreign` finds them.

mod foreign;
mod stream;
#[cfg(test)]
mod tests;

pub use stream::StreamedSnapshot;

use std::collections::{BTreeMap, BTreeSet, VecDeque};
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use bytes::Bytes;

use super::handoff::{HandoffDir, ShippedMark};
use super::meta::{DbFingerprint, MetaDir, SavedState, WalPosition};
use super::wal::{self, FrameHeader, WalHeader, FRAME_HEADER_SIZE, WAL_HEADER_SIZE};
use crate::ltx::{self, Encoder, Header};

/// The database file lacks pages the database holds (see `Capture::check_file_holds`):
/// waiting does not change that, so a sync reports it at once.
#[derive(Debug)]
pub struct NotWholeDatabase(String);

impl std::fmt::Display for NotWholeDatabase {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for NotWholeDatabase {}

impl NotWholeDatabase {
    pub fn is(e: &io::Error) -> bool {
        e.get_ref().is_some_and(|inner| inner.is::<Self>())
    }
}

/// The live database file, as the capture reads it. The extension reads it through SQLite's
/// own VFS (`sqlite::db_reader`), never through a descriptor of its own: closing one would
/// drop every POSIX lock this process holds on the file.
pub trait DbFile: Send {
    /// Reads `buf.len()` bytes at `offset`; false if the file ended first (the rest zeroed).
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool>;
    fn size(&self) -> io::Result<u64>;
    /// The inode of the file this reads (it stays that file when the path is replaced).
    fn inode(&self) -> u64;

    /// Like `read_at`, but a short read is an `UnexpectedEof` error.
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> io::Result<()> {
        if self.read_at(buf, offset)? {
            Ok(())
        } else {
            Err(io::ErrorKind::UnexpectedEof.into())
        }
    }
}

/// Opens the live database file for reading.
pub type OpenDbFile = fn(&Path) -> io::Result<Box<dyn DbFile>>;

/// Where a captured page's bytes are.
#[derive(Debug, Clone)]
enum PageSource {
    /// A frame of the live WAL generation (offset of its header).
    Wal(u64),
    /// Copied at the commit point (rollback-journal mode).
    Data(Bytes),
}

/// Committed changes not yet given a TXID (several commits coalesce: latest page wins).
#[derive(Debug, Default)]
struct Pending {
    pages: BTreeMap<u32, PageSource>,
    commit: u32,
    first_commit_ms: i64,
}

/// An LTX file with its TXID, waiting for upload.
#[derive(Debug, Clone)]
pub struct Queued {
    pub header: Header,
    pub location: Location,
    /// The durable position once this file is uploaded.
    pub after: SavedState,
    /// When the oldest commit in it happened (for lag).
    pub first_commit_ms: i64,
    /// `commits_captured` when it was sealed.
    pub commits: u64,
    /// Holds every page (a snapshot or resync): not counted against the spool limit, which
    /// would otherwise drop it again and again on a database larger than the limit.
    pub full: bool,
    /// Its upload records `after` as the durable position: sealed by this process and not
    /// evacuated since (an evacuation records a newer position of its own).
    pub saves_position: bool,
    /// Which queuing this is: a TXID given out again (after the queue was dropped) is
    /// another file, and the upload of the first must not count for it.
    pub seq: u64,
}

/// How still the database is held while a file is sealed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stillness {
    /// Not held: only incremental files (a full snapshot waits for a read).
    Moving,
    /// By this process's own write lock, in a VFS callback before any page of its is
    /// written: a full snapshot may be sealed, not streamed (the lock is gone before the
    /// upload).
    OwnLock,
    /// By the shipper's read transaction, which lasts through the upload: a full snapshot
    /// the spool has no room for may stream from the database.
    ReadForUpload,
}

#[derive(Debug, Clone)]
pub enum Location {
    Memory(Bytes),
    /// A file in the spool, and its size.
    Spool(PathBuf, u64),
    /// A full snapshot encoded as it uploads: valid only under the read transaction it was
    /// planned in (the shipper uploads it there and then; anything else drops it).
    Stream(Arc<StreamedSnapshot>),
}

impl Location {
    pub fn size(&self) -> u64 {
        match self {
            Self::Memory(b) => b.len() as u64,
            Self::Spool(_, size) => *size,
            Self::Stream(s) => s.length,
        }
    }
}

/// Parsing position in the live WAL generation.
#[derive(Debug, Clone)]
struct WalCursor {
    header: WalHeader,
    /// Offset of the next frame not parsed yet.
    next: u64,
    /// End of the last committed frame.
    committed_end: u64,
    /// Frames (pgno, offset) of the transaction in progress, in write order.
    txn: Vec<(u32, u64)>,
    /// The last frame header SQLite wrote (offset, bytes): parsed from its write buffer, it
    /// saves reading it back from the file.
    written_header: Option<(u64, [u8; FRAME_HEADER_SIZE as usize])>,
    /// The commit frame (offset, database size) of a transaction whose frames SQLite wrote
    /// with zero salts and checksums: it overwrote one of its own uncommitted frames in place
    /// (a cache spill rewriting a page), and rewrites every later frame's header once the
    /// commit frame is written (`walRewriteChecksums`). The transaction commits when the
    /// commit frame's header is rewritten.
    unsealed_commit: Option<(u64, u32)>,
}

pub struct Capture {
    db_path: PathBuf,
    wal_path: PathBuf,
    meta: MetaDir,
    handoffs: HandoffDir,
    /// `owner.lock`, while this process is the database's owner (None: a follower).
    owner: Option<File>,
    /// Closed: never owner again (see [`Capture::resign`]).
    resigned: bool,
    /// The file change counter after the last commit captured (rollback-journal mode).
    last_counter: Option<u32>,
    /// Salts of the last WAL generation this process saw to its end before the WAL was
    /// truncated or deleted: a new generation continues it only if its first salt is one more.
    ended_generation: Option<(u32, u32)>,
    /// A change counter moved with no hand-off for it yet: look again under a read lock (the
    /// writer may still be committing) before resyncing.
    foreign_unresolved: bool,
    /// The database file as last seen with everything in it accounted for (captured, handed
    /// over, or snapshotted). In WAL mode with no WAL to read, a file that differs from it
    /// was checkpointed into by someone whose commits we never saw (see `poll_foreign`).
    accounted_db: Option<DbFingerprint>,

    open_db_file: OpenDbFile,
    db_file: Option<Box<dyn DbFile>>,
    wal_file: Option<File>,
    page_size: u32,
    wal: Option<WalCursor>,
    /// Open WAL handles: while any is open, database writes are checkpoints, not commits.
    pub wal_handles: usize,
    /// Since when a due full snapshot waits for the application to open the WAL (see
    /// `snapshot_due`).
    waiting_for_wal_since: Option<std::time::Instant>,
    /// Main-database handles holding RESERVED or more (a rollback-mode write in progress).
    write_locks: usize,
    /// Handles rolling back a hot journal (SHARED straight to EXCLUSIVE, as SQLite does only
    /// then): until it is done the file holds a dead writer's half-written pages.
    hot_rollbacks: usize,
    /// The change counter when this process's transaction first wrote the file: still the
    /// same at its end means it rolled back (spilled pages put back), committing nothing.
    /// SQLite moves the counter once per hold of the write lock (`locking_mode=EXCLUSIVE`
    /// holds it over many transactions), so this tells only for the first one of a hold.
    counter_before_write: Option<u32>,
    first_in_hold: bool,
    /// Pages this process wrote since it took the write lock: a follower hands them all over
    /// under the one counter the hold moved.
    held_pages: BTreeSet<u32>,
    dirty: BTreeSet<u32>,
    pending: Option<Pending>,
    pub queue: VecDeque<Queued>,
    /// Last TXID assigned.
    pub last_txid: u64,
    /// Last TXID known to be in the replica.
    pub shipped_txid: u64,
    /// Commit of the last LTX assigned (to fill pages added by growth).
    last_commit: u32,
    /// The next LTX must hold every page (first upload, or a resync after a gap).
    pub needs_full: bool,
    pub spool_limit: u64,
    /// TXIDs are only assigned once the replica's position is known (else a TXID we give
    /// out could already exist remotely with other content, from before a crash).
    pub remote_known: bool,
    /// Commits captured so far, and how many of them the replica has (for `sync`).
    pub commits_captured: u64,
    pub commits_shipped: u64,
    /// Full snapshots sealed since this process became the owner (the first one included):
    /// each after the first means a gap was found and healed.
    pub full_snapshots: u64,
    /// Files queued so far (see `Queued::seq`).
    queued_total: u64,
}

/// Pending page bytes a WAL restart may hold in memory instead of sealing and spooling them.
const HOLD_LIMIT: u64 = 64 << 20;

/// Files up to this size (in page bytes) are encoded in memory; larger ones into the spool.
const ENCODE_IN_MEMORY_LIMIT: u64 = 8 << 20;

/// Free space a full snapshot must leave in the spool's filesystem, else it is streamed.
const SPOOL_HEADROOM: u64 = 64 << 20;

/// Encodes `pgnos` in order, each read into a page buffer by `read_page`, and finishes the file.
fn encode_with<W: io::Write>(
    mut enc: Encoder<W>,
    pgnos: &[u32],
    mut read_page: impl FnMut(u32, &mut [u8]) -> io::Result<()>,
) -> io::Result<(W, ltx::EncodeSummary)> {
    let mut buf = vec![0u8; enc.header().page_size as usize];
    for &pgno in pgnos {
        read_page(pgno, &mut buf)?;
        enc.encode_page(pgno, &buf).map_err(other)?;
    }
    enc.finish(0).map_err(other)
}

/// Reads the page of the WAL frame at `at` into `buf`; an error if that frame is no longer
/// `pgno`'s in the generation with `salts`. Another process may restart the WAL and overwrite
/// any frame (it writes a frame's header before its page): a header still of our generation
/// and page after the read means the page read was ours.
fn read_wal_page(
    wal: &File,
    at: u64,
    pgno: u32,
    salts: Option<(u32, u32)>,
    buf: &mut [u8],
) -> io::Result<()> {
    let mut head = [0u8; FRAME_HEADER_SIZE as usize];
    wal.read_exact_at(buf, at + FRAME_HEADER_SIZE)
        .and_then(|()| wal.read_exact_at(&mut head, at))
        .map_err(|e| io::Error::new(e.kind(), format!("WAL frame at {at} (page {pgno}): {e}")))?;
    let fh = FrameHeader::parse(&head);
    if Some((fh.salt1, fh.salt2)) != salts || fh.pgno != pgno {
        return Err(io::Error::other(format!(
            "WAL frame at {at} of page {pgno} was overwritten by another process before it was shipped"
        )));
    }
    Ok(())
}

fn other(e: impl std::fmt::Display) -> io::Error {
    io::Error::other(e.to_string())
}

impl Capture {
    /// The capture of `db_path`: the owner's if no other process owns it, else a follower's.
    pub fn open(db_path: &Path, spool_limit: u64, open_db_file: OpenDbFile) -> io::Result<Self> {
        let meta = MetaDir::for_database(db_path);
        let handoffs = HandoffDir::new(meta.dir());
        let mut c = Self {
            db_path: db_path.to_path_buf(),
            wal_path: PathBuf::from(format!("{}-wal", db_path.display())),
            meta,
            handoffs,
            owner: None,
            resigned: false,
            last_counter: None,
            ended_generation: None,
            foreign_unresolved: false,
            accounted_db: None,
            open_db_file,
            db_file: None,
            wal_file: None,
            page_size: 0,
            wal: None,
            wal_handles: 0,
            waiting_for_wal_since: None,
            write_locks: 0,
            hot_rollbacks: 0,
            counter_before_write: None,
            first_in_hold: false,
            held_pages: BTreeSet::new(),
            dirty: BTreeSet::new(),
            pending: None,
            queue: VecDeque::new(),
            last_txid: 0,
            shipped_txid: 0,
            last_commit: 0,
            needs_full: false,
            spool_limit,
            remote_known: false,
            commits_captured: 0,
            commits_shipped: 0,
            full_snapshots: 0,
            queued_total: 0,
        };
        c.try_become_owner()?;
        Ok(c)
    }

    pub fn is_owner(&self) -> bool {
        self.owner.is_some()
    }

    /// The owner's pid, for a follower's status.
    pub fn owner_pid(&self) -> Option<u32> {
        self.handoffs.owner_pid()
    }

    /// A handle of ours took the write lock. `hot_rollback`: straight from SHARED to
    /// EXCLUSIVE, which SQLite does only to roll back a hot journal.
    pub fn write_lock_taken(&mut self, hot_rollback: bool) {
        if self.write_locks == 0 {
            self.first_in_hold = true;
            self.held_pages.clear();
        }
        self.write_locks += 1;
        if hot_rollback {
            self.hot_rollbacks += 1;
        }
    }

    /// A handle of ours dropped the write lock it took (`hot_rollback` as it was taken).
    pub fn write_lock_released(&mut self, hot_rollback: bool) {
        self.write_locks = self.write_locks.saturating_sub(1);
        if self.write_locks == 0 {
            self.held_pages.clear();
        }
        if hot_rollback {
            self.hot_rollbacks = self.hot_rollbacks.saturating_sub(1);
        }
    }

    /// Whether this process alone holds the database still: a handle of ours holds the write
    /// lock of a rollback-journal database and no write of ours is under way
    /// (`locking_mode=EXCLUSIVE` keeps the lock between transactions; a `BEGIN IMMEDIATE`
    /// before its first write). No other process can write then, and while the capture's
    /// lock is held no write of ours can start (each runs inside it): the file is a committed
    /// state, so a full snapshot can be sealed from it (`Stillness::OwnLock`).
    ///
    /// In WAL mode, the same when a handle of ours holds the database file's EXCLUSIVE lock
    /// (WAL with `locking_mode=EXCLUSIVE`: taken straight from SHARED, counted as
    /// `hot_rollbacks`), which keeps every other process out: every change of ours to the
    /// database file and the WAL runs inside the capture's lock, and the full view (the
    /// file overlaid with the committed frames) leaves a transaction's uncommitted frames
    /// out.
    pub fn held_still_by_own_lock(&mut self) -> bool {
        if self.write_locks == 0 {
            return false;
        }
        match self.db_header() {
            Ok(Some(h)) if h.wal_mode => self.wal_handles > 0 && self.hot_rollbacks > 0,
            Ok(Some(_)) => {
                self.dirty.is_empty() && self.hot_rollbacks == 0 && self.wal_handles == 0
            }
            _ => false,
        }
    }

    /// Gives ownership up for good (the last connection of this process closed). The lock is
    /// an `flock` of our open file: a replicator opened anew here (the database reopened)
    /// would find it held until the old one's tasks finish, and those must not take it back.
    /// Its files close now too, not when the replicator's tasks end: the database file is
    /// one of SQLite's own (opened through its VFS), which a host may expect closed with
    /// its last connection.
    pub fn resign(&mut self) {
        self.owner = None;
        self.resigned = true;
        self.db_file = None;
        self.wal_file = None;
    }

    /// Takes ownership when no other process holds it (at open; a follower retries, so one
    /// takes over when the owner exits). Never in the middle of a write transaction of ours:
    /// its first pages would have gone uncaptured.
    pub fn try_become_owner(&mut self) -> io::Result<bool> {
        if self.owner.is_some() {
            return Ok(true);
        }
        if self.resigned || self.write_locks > 0 || !self.dirty.is_empty() {
            return Ok(false);
        }
        let Some(lock) = self.handoffs.try_own()? else {
            return Ok(false);
        };
        self.owner = Some(lock);
        self.recover()?;
        Ok(true)
    }

    /// Local recovery when this process becomes the owner: saved state, spool, and whatever
    /// the WAL and the database hold beyond them.
    fn recover(&mut self) -> io::Result<()> {
        let saved = self.meta.load_state();
        let db_path = self.db_path.clone();
        let db_path = db_path.as_path();
        self.page_size = saved.as_ref().map_or(0, |s| s.page_size);
        self.last_txid = saved.as_ref().map_or(0, |s| s.txid);
        self.last_commit = saved.as_ref().map_or(0, |s| s.commit);
        self.needs_full = saved.is_none();
        let c = self;
        // Spooled files are verified whole (they were written without fsync): from the first
        // bad one on, the spool is dropped and a full snapshot replaces what it held.
        let mut spool_ok = true;
        for (txid, _) in c.meta.spooled() {
            if spool_ok && c.queue_spooled(txid).is_err() {
                log::warn!("{}: spooled TXID {txid:#x} is damaged (power loss?); resyncing with a full snapshot", db_path.display());
                spool_ok = false;
                c.needs_full = true;
            }
            if !spool_ok {
                c.meta.unspool(txid);
            }
        }
        c.recover_wal(saved.as_ref())?;
        if c.wal.is_none() {
            let fingerprint = DbFingerprint::of(db_path);
            let unchanged = saved
                .as_ref()
                .is_some_and(|s| s.db.is_some() && s.db == fingerprint);
            let empty = fingerprint.is_none_or(|f| f.size == 0);
            if !unchanged && !empty {
                c.needs_full = true;
            }
            c.accounted_db = fingerprint.filter(|_| unchanged);
        }
        if c.page_size == 0 {
            c.page_size = c.read_db_page_size().unwrap_or(0);
        }
        // What the replica holds of this very file, for followers' `litestream_sync()`: the
        // last mark may be of a file this one replaced (restored in place, renamed over).
        if let (false, Some(s), Ok(file)) = (c.needs_full, saved.as_ref(), c.db_file()) {
            let mark = ShippedMark::of(s.txid, s, Some(file.inode()));
            if let Err(e) = c.handoffs.publish_shipped(&mark) {
                log::warn!(
                    "{}: cannot publish the shipped position: {e}",
                    db_path.display()
                );
            }
        }
        // Rollback-journal mode: the saved counter, if the file is the one we saved, tells
        // whether another process committed while no owner was watching.
        if let Some(counter) = c.db_header().ok().flatten().map(|h| h.counter) {
            match saved.as_ref().and_then(|s| s.counter) {
                Some(s) if s != counter && c.wal.is_none() => c.needs_full = true,
                _ => {}
            }
            c.last_counter = Some(counter);
        }
        c.publish_pin();
        Ok(())
    }

    fn queue_spooled(&mut self, txid: u64) -> io::Result<()> {
        let path = self.meta.spool_path(txid);
        let file = File::open(&path)?;
        let size = file.metadata()?.len();
        let decoder = ltx::Decoder::new(std::io::BufReader::new(file)).map_err(other)?;
        let header = *decoder.header();
        decoder.finish().map_err(other)?;
        self.last_txid = self.last_txid.max(txid);
        let seq = self.next_seq();
        self.queue.push_back(Queued {
            header,
            location: Location::Spool(path, size),
            after: SavedState {
                txid,
                page_size: header.page_size,
                commit: header.commit,
                wal: None,
                db: None,
                counter: None,
            },
            first_commit_ms: header.timestamp,
            commits: 0,
            full: false,
            saves_position: false,
            seq,
        });
        Ok(())
    }

    /// Positions the WAL cursor. Frames committed after the saved position (by us before a
    /// crash, or by a process not using this VFS) become pending; a WAL we cannot line up
    /// with the saved position means changes we never saw: resync with a full snapshot.
    fn recover_wal(&mut self, saved: Option<&SavedState>) -> io::Result<()> {
        let Ok(file) = File::open(&self.wal_path) else {
            return Ok(());
        };
        let full = wal::scan(&file, None)?;
        let Some(header) = full.header else {
            return Ok(());
        };
        let resume = saved.and_then(|s| s.wal).filter(|p| {
            p.salt1 == header.salt1
                && p.salt2 == header.salt2
                && p.end <= full.end.max(WAL_HEADER_SIZE)
        });
        let scan = match resume {
            Some(p) => wal::scan(&file, Some((header, p.end, p.checksum)))?,
            None => {
                // No position in this WAL generation: commits in it we never saw, or a restart
                // after our last record (pages held in memory across it died with the
                // process), or a checkpoint into a database file that changed since.
                let restarted = saved.is_some_and(|s| s.wal.is_some());
                let db_changed = saved
                    .is_some_and(|s| s.wal.is_none() && s.db != DbFingerprint::of(&self.db_path));
                if full.commit.is_some() || restarted || db_changed {
                    self.needs_full = true;
                }
                full.clone()
            }
        };
        self.page_size = header.page_size;
        if resume.is_some() && !scan.pages.is_empty() {
            self.add_pending_from_scan(&scan);
        }
        self.wal = Some(WalCursor {
            header,
            next: full.end,
            committed_end: full.end,
            txn: Vec::new(),
            written_header: None,
            unsealed_commit: None,
        });
        self.wal_file = Some(file);
        Ok(())
    }

    fn read_db_page_size(&mut self) -> Option<u32> {
        let mut b = [0u8; 2];
        self.db_file().ok()?.read_exact_at(&mut b, 16).ok()?;
        let size = ltx::page_size_from_field(u32::from(u16::from_be_bytes(b)));
        ltx::is_valid_page_size(size).then_some(size)
    }

    fn db_file(&mut self) -> io::Result<&dyn DbFile> {
        if self.resigned {
            return Err(io::Error::other("the database's last connection closed"));
        }
        if self.db_file.is_none() {
            self.db_file = Some((self.open_db_file)(&self.db_path)?);
        }
        Ok(self.db_file.as_deref().expect("just opened"))
    }

    fn wal_file(&mut self) -> io::Result<&File> {
        if self.wal_file.is_none() {
            self.wal_file = Some(File::open(&self.wal_path)?);
        }
        Ok(self.wal_file.as_ref().expect("just opened"))
    }

    fn add_pending(&mut self, pages: Vec<(u32, PageSource)>, commit: u32) {
        let pending = self.pending.get_or_insert_with(|| Pending {
            first_commit_ms: crate::timefmt::now_millis(),
            ..Pending::default()
        });
        // A shrink drops pages beyond the new end (split_off: no walk over every pending page
        // on each commit).
        if commit < pending.commit {
            pending.pages.split_off(&(commit + 1));
        }
        pending
            .pages
            .extend(pages.into_iter().filter(|&(p, _)| p <= commit));
        pending.commit = commit;
        self.commits_captured += 1;
    }

    /// The committed frames a WAL scan found become pending (by offset into the WAL).
    fn add_pending_from_scan(&mut self, scan: &wal::WalScan) {
        let pages = scan
            .pages
            .iter()
            .map(|(&p, &at)| (p, PageSource::Wal(at)))
            .collect();
        self.add_pending(pages, scan.commit.unwrap_or(0));
    }

    /// A hand-off's pages become pending (copies: the frames they came from are gone).
    fn add_pending_from_handoff(&mut self, h: super::handoff::Handoff) {
        self.page_size = h.page_size;
        if h.pages.is_empty() {
            return;
        }
        let pages = h
            .pages
            .into_iter()
            .map(|(p, b)| (p, PageSource::Data(Bytes::from(b))))
            .collect();
        self.add_pending(pages, h.commit);
    }

    pub fn has_work(&mut self, flushing: bool) -> bool {
        // With a full snapshot due, pending pages are in it: they are no work of their own.
        (self.pending.is_some() && !self.needs_full)
            || self.snapshot_due(flushing)
            || self.foreign_unresolved
            || !self.queue.is_empty()
    }

    /// Nothing captured, queued, pending or due since this process became the owner: the
    /// replica holds what the position saved after the last upload says (a full snapshot
    /// is due whenever that position is missing or the files moved past it).
    pub fn has_nothing_to_ship(&mut self) -> bool {
        self.commits_captured == 0 && !self.has_work(true) && !self.needs_consistent_read(true)
    }

    pub fn pending_since_ms(&self) -> Option<i64> {
        let queued = self.queue.front().map(|q| q.first_commit_ms);
        let pending = self.pending.as_ref().map(|p| p.first_commit_ms);
        queued.into_iter().chain(pending).min()
    }

    pub fn queued_bytes(&self) -> u64 {
        self.queue.iter().map(|q| q.location.size()).sum()
    }

    // ---- WAL mode -------------------------------------------------------------------------

    pub fn wal_opened(&mut self) {
        self.wal_handles += 1;
    }

    pub fn wal_closed(&mut self) {
        self.wal_handles = self.wal_handles.saturating_sub(1);
    }

    /// Before SQLite writes a new WAL header (a restart): the old frames are about to be
    /// overwritten. While the replica keeps up, the pending pages are only copied out of the
    /// WAL: they stay pending and coalesce with the next commits, so restarts (one every
    /// ~1,000 pages written) add neither a TXID, a PUT, nor a file write to the commit path.
    /// A crash before they ship is noticed at the next open (the saved position is in an older
    /// WAL generation) and healed with a full snapshot. Otherwise (store unreachable, a full
    /// snapshot due, or more pending than `HOLD_LIMIT`) they are sealed and spooled.
    pub fn before_wal_header(&mut self) -> io::Result<()> {
        if !self.is_owner() {
            return self.hand_off_wal_generation();
        }
        // Frames other processes committed in the ending generation: read them while they
        // are still there.
        self.catch_up_wal()?;
        let held =
            self.pending.as_ref().map_or(0, |p| p.pages.len() as u64) * u64::from(self.page_size);
        if self.remote_known && !self.needs_full && held <= HOLD_LIMIT {
            self.copy_pending_out_of_wal()?;
        } else {
            self.evacuate()?;
        }
        self.wal = None;
        Ok(())
    }

    /// Replaces every pending page that points into the WAL by a copy of its bytes.
    fn copy_pending_out_of_wal(&mut self) -> io::Result<()> {
        let in_wal: Vec<(u32, PageSource)> = self.pending.as_ref().map_or_else(Vec::new, |p| {
            p.pages
                .iter()
                .filter(|(_, source)| matches!(source, PageSource::Wal(_)))
                .map(|(&pgno, source)| (pgno, source.clone()))
                .collect()
        });
        for (pgno, source) in in_wal {
            let mut buf = vec![0u8; self.page_size as usize];
            self.read_page(pgno, Some(&source), &mut buf)?;
            if let Some(p) = self.pending.as_mut() {
                p.pages.insert(pgno, PageSource::Data(Bytes::from(buf)));
            }
        }
        Ok(())
    }

    /// After the new WAL header is written.
    pub fn after_wal_header(&mut self, bytes: &[u8]) -> io::Result<()> {
        // A fresh file descriptor: the WAL may be a new file since we last read it.
        self.wal_file = None;
        if !self.is_owner() {
            return Ok(());
        }
        if let Some(header) = WalHeader::parse(bytes) {
            self.ended_generation = None;
            self.page_size = header.page_size;
            self.wal = Some(WalCursor {
                header,
                next: WAL_HEADER_SIZE,
                committed_end: WAL_HEADER_SIZE,
                txn: Vec::new(),
                written_header: None,
                unsealed_commit: None,
            });
            self.save_position(false)?;
        }
        Ok(())
    }

    /// After SQLite wrote `bytes` at `offset` (>= 32) of the WAL: parse complete frames.
    /// Returns whether a transaction committed.
    pub fn after_wal_write(&mut self, offset: u64, bytes: &[u8]) -> io::Result<bool> {
        if !self.is_owner() {
            return Ok(false);
        }
        self.parse_wal_write(offset, bytes, true)
    }

    fn parse_wal_write(
        &mut self,
        offset: u64,
        bytes: &[u8],
        may_catch_up: bool,
    ) -> io::Result<bool> {
        let len = bytes.len() as u64;
        if self.wal.is_none() && may_catch_up {
            // Another process wrote this generation's header: line up with it first.
            self.catch_up_wal()?;
            return self.parse_wal_write(offset, bytes, false);
        }
        let Some(mut cur) = self.wal.take() else {
            // A WAL we cannot line up with: resync.
            self.resync("a WAL generation this process did not see start");
            return Ok(true);
        };
        let mut committed = false;
        let end = offset + len;
        let frame_size = cur.header.frame_size();
        if cur.unsealed_commit.is_some() {
            if let Some(done) = self.rewrite_checksum(&mut cur, offset, bytes) {
                self.wal = Some(cur);
                return Ok(done);
            }
        }
        // A frame written over an uncommitted one at a frame boundary: SQLite rolled back to
        // a savepoint (or the whole transaction) and is rewriting from there. What we parsed
        // from that point on is void. (Writes below the committed end only rewrite checksums;
        // data-only writes inside a frame update a page in place: neither moves anything.)
        let at_boundary =
            offset >= WAL_HEADER_SIZE && (offset - WAL_HEADER_SIZE).is_multiple_of(frame_size);
        if at_boundary && offset >= cur.committed_end && offset < cur.next {
            cur.next = offset;
            cur.txn.retain(|&(_, at)| at < offset);
        }
        if at_boundary && bytes.len() >= FRAME_HEADER_SIZE as usize {
            let mut head = [0u8; FRAME_HEADER_SIZE as usize];
            head.copy_from_slice(&bytes[..FRAME_HEADER_SIZE as usize]);
            cur.written_header = Some((offset, head));
        }
        let mut head = [0u8; FRAME_HEADER_SIZE as usize];
        while cur.next + frame_size <= end {
            match cur.written_header {
                Some((at, h)) if at == cur.next => head = h,
                _ => self.wal_file()?.read_exact_at(&mut head, cur.next)?,
            }
            let fh = FrameHeader::parse(&head);
            // A frame of this transaction whose checksum SQLite fills in at commit.
            let unsealed = head[8..].iter().all(|&b| b == 0) && cur.next >= cur.committed_end;
            if !unsealed && (fh.salt1, fh.salt2) != (cur.header.salt1, cur.header.salt2) {
                // Frames of a generation we did not see start: another process restarted the
                // WAL. Follow its hand-offs (or resync), then parse this write again.
                self.wal = Some(cur);
                if may_catch_up {
                    self.catch_up_wal()?;
                    return self.parse_wal_write(offset, bytes, false);
                }
                self.resync("the WAL was restarted by a process that handed nothing over");
                return Ok(true);
            }
            cur.txn.push((fh.pgno, cur.next));
            cur.next += frame_size;
            if fh.commit != 0 && unsealed {
                cur.unsealed_commit = Some((cur.next - frame_size, fh.commit));
            } else if fh.commit != 0 {
                self.commit_txn(&mut cur, fh.commit);
                committed = true;
            }
        }
        self.wal = Some(cur);
        Ok(committed)
    }

    /// The transaction parsed up to `cur.next` committed: its pages become pending.
    fn commit_txn(&mut self, cur: &mut WalCursor, commit: u32) {
        // Later frames of a page win.
        let latest: BTreeMap<u32, u64> = std::mem::take(&mut cur.txn).into_iter().collect();
        log::trace!(
            "{}: WAL commit parsed from our writes: frames {}..{} of salt1 {:#x}, {} pages {:?}",
            self.db_path.display(),
            cur.committed_end,
            cur.next,
            cur.header.salt1,
            latest.len(),
            latest.keys().take(12).collect::<Vec<_>>()
        );
        let pages = latest
            .into_iter()
            .map(|(p, at)| (p, PageSource::Wal(at)))
            .collect();
        cur.committed_end = cur.next;
        cur.unsealed_commit = None;
        self.add_pending(pages, commit);
    }

    /// While a transaction's zero-checksum frames await their rewrite: a write of one of
    /// their headers, with this generation's salts and the page the frame holds, is that
    /// rewrite (Some(whether it committed the transaction)). Anything else (None) is parsed
    /// as a write of frames, after which no rewrite is awaited.
    fn rewrite_checksum(&mut self, cur: &mut WalCursor, offset: u64, bytes: &[u8]) -> Option<bool> {
        let (commit_at, commit) = cur.unsealed_commit.take()?;
        if bytes.len() != FRAME_HEADER_SIZE as usize {
            return None;
        }
        let fh = FrameHeader::parse(bytes);
        let same_frame = cur
            .txn
            .iter()
            .any(|&(pgno, at)| at == offset && pgno == fh.pgno);
        if !same_frame || (fh.salt1, fh.salt2) != (cur.header.salt1, cur.header.salt2) {
            return None;
        }
        if offset == commit_at && fh.commit == commit {
            self.commit_txn(cur, commit);
            return Some(true);
        }
        cur.unsealed_commit = Some((commit_at, commit));
        Some(false)
    }

    /// This process released the WAL write lock: its write transaction is over, and frames
    /// parsed after the last commit frame belong to one that rolled back (another process
    /// may overwrite them from the committed end on).
    pub fn wal_write_ended(&mut self) {
        if let Some(cur) = self.wal.as_mut() {
            cur.txn.clear();
            cur.next = cur.committed_end;
            cur.written_header = None;
            cur.unsealed_commit = None;
        }
    }

    /// Before SQLite truncates the WAL to `size` bytes. To nothing (a TRUNCATE checkpoint, a
    /// persistent WAL's close) the WAL is reset. To the end of the live generation
    /// (`journal_size_limit` cutting a restarted WAL's stale frames off after a commit) the
    /// generation goes on and capture has nothing to do: treated as a reset, the next look
    /// met a generation it "did not see begin" and resynced after every restart.
    pub fn before_wal_truncate(&mut self, size: u64) -> io::Result<()> {
        if self.trims_stale_frames(size) {
            return Ok(());
        }
        self.before_wal_reset()
    }

    /// After SQLite truncated the WAL to `size` bytes (see `before_wal_truncate`).
    pub fn after_wal_truncate(&mut self, size: u64) -> io::Result<()> {
        if self.trims_stale_frames(size) {
            return Ok(());
        }
        self.after_wal_reset()
    }

    /// A truncation to `size` keeps every frame of the live generation we follow (a
    /// follower follows none: it hands the generation over when it ends).
    fn trims_stale_frames(&self, size: u64) -> bool {
        if size < WAL_HEADER_SIZE {
            return false;
        }
        match &self.wal {
            Some(cur) => size >= cur.next,
            None => !self.is_owner(),
        }
    }

    /// Before the WAL is truncated or deleted.
    pub fn before_wal_reset(&mut self) -> io::Result<()> {
        if !self.is_owner() {
            self.hand_off_wal_generation()?;
            self.wal_file = None;
            return Ok(());
        }
        self.catch_up_wal()?;
        self.evacuate()?;
        self.ended_generation = self.wal.as_ref().map(|c| (c.header.salt1, c.header.salt2));
        self.wal = None;
        self.wal_file = None;
        Ok(())
    }

    /// After the WAL was truncated or deleted: the database file holds everything.
    pub fn after_wal_reset(&mut self) -> io::Result<()> {
        if !self.is_owner() {
            return Ok(());
        }
        self.last_counter = self.db_header()?.map(|h| h.counter);
        self.accounted_db = DbFingerprint::of(&self.db_path);
        self.save_position(false)
    }

    // ---- Rollback-journal mode -------------------------------------------------------------

    /// SQLite wrote `len` bytes at `offset` of the database file.
    pub fn after_db_write(&mut self, offset: u64, len: u64) {
        if self.wal_handles > 0 || len == 0 {
            return; // a checkpoint copying WAL frames we already captured
        }
        if self.page_size == 0 {
            self.page_size = len.next_power_of_two().clamp(512, 65536) as u32;
        }
        let ps = u64::from(self.page_size);
        let first = offset / ps + 1;
        let last = (offset + len - 1) / ps + 1;
        self.dirty.extend((first..=last).map(|p| p as u32));
    }

    /// The transaction is committed (journal finalized or lock dropped): read back its pages.
    pub fn commit_point(&mut self) -> io::Result<()> {
        if self.dirty.is_empty() || self.wal_handles > 0 {
            return Ok(());
        }
        if self.journal_left_hot() {
            // The lock was dropped with the journal still hot: the transaction (or the
            // rollback of one) failed part-way, an I/O or memory error, and the next reader
            // puts its pages back. Nothing was committed: its pages are not read as a commit.
            log::debug!(
                "{}: write lock dropped with a hot journal: not a commit",
                self.db_path.display()
            );
            self.dirty.clear();
            self.first_in_hold = false;
            self.counter_before_write = None;
            return Ok(());
        }
        if let Some(size) = self.read_db_page_size() {
            if self.page_size != 0 && size != self.page_size {
                // PITR: the page size changed (`PRAGMA page_size=N; VACUUM`). What is pending
                // is at the old size: drop it; the next LTX holds every page at the new size.
                // (A follower hands nothing over: the owner sees a change counter with no
                // hand-off and takes a full snapshot too.)
                self.dirty.clear();
                self.pending = None;
                self.needs_full = true;
                self.commits_captured += 1;
                self.page_size = size;
                self.last_counter = self.db_header()?.map(|h| h.counter);
                return Ok(());
            }
            self.page_size = size;
        }
        let ps = u64::from(self.page_size);
        let header = self.db_header()?;
        if header.is_none() {
            // No database header after it: the transaction created the database and rolled
            // back (pages it spilled put back, the file truncated to nothing). Nothing was
            // committed; shipping it would be a database of no pages.
            self.dirty.clear();
            self.first_in_hold = false;
            self.counter_before_write = None;
            return Ok(());
        }
        // The size after this commit: the header's (SQLite may truncate the file later, or
        // not at all), else the file's.
        let commit = match header.and_then(|h| h.valid_size()) {
            Some(pages) => pages,
            None => (self.db_file()?.size()? / ps) as u32,
        };
        let counter = header.map(|h| h.counter);
        let before = self.counter_before_write.take();
        let rolled_back = self.hot_rollbacks > 0
            || (self.first_in_hold && counter.is_some() && counter == before);
        self.first_in_hold = false;
        if !self.is_owner() {
            if rolled_back {
                // The pages are back as they were at the last commit: nothing to hand over
                // (a hand-off under that commit's counter would replace its own).
                self.dirty.clear();
                return Ok(());
            }
            self.check_commit_in_file(header.is_some_and(|h| !h.wal_mode), commit)?;
            return self.hand_off_commit(counter, commit);
        }
        // Commits of other processes since the last one we saw come first: every counter
        // step but our own commit's (a rollback of ours made none).
        if let (Some(now), Some(last)) = (counter, self.last_counter) {
            let ours = u32::from(!rolled_back);
            if now.wrapping_sub(last) > ours {
                self.take_counter_handoffs(last, now.wrapping_sub(ours), true)?;
            }
        }
        self.last_counter = counter.or(self.last_counter);
        // We hold the lock: a counter seen moving before is accounted for now (it was this
        // commit, seen half-way, or handed over above).
        self.foreign_unresolved = false;
        if header.is_some_and(|h| h.wal_mode) {
            // A switch to WAL mode: from here on the file is watched by its fingerprint
            // (`checkpointed_unseen`), and this change is ours. (In rollback-journal mode the
            // counter tells, and the poll records the fingerprint.)
            self.accounted_db = DbFingerprint::of(&self.db_path);
        }
        if rolled_back {
            // Its pages are back as the last commit left them: nothing new.
            self.dirty.clear();
            return Ok(());
        }
        self.check_commit_in_file(header.is_some_and(|h| !h.wal_mode), commit)?;
        let dirty = std::mem::take(&mut self.dirty);
        log::debug!(
            "{}: own commit {counter:?} ({} pages, commit {commit})",
            self.db_path.display(),
            dirty.len(),
        );
        let mut pages = Vec::with_capacity(dirty.len());
        let lock = ltx::lock_pgno(self.page_size);
        for pgno in dirty.into_iter().filter(|&p| p <= commit && p != lock) {
            let mut buf = vec![0u8; ps as usize];
            self.db_file()?
                .read_exact_at(&mut buf, (u64::from(pgno) - 1) * ps)?;
            pages.push((pgno, PageSource::Data(Bytes::from(buf))));
        }
        self.add_pending(pages, commit);
        Ok(())
    }

    /// A rollback-journal commit of `commit` pages must be in the file whole.
    fn check_commit_in_file(&mut self, rollback_mode: bool, commit: u32) -> io::Result<()> {
        if rollback_mode {
            self.check_file_holds(self.last_written_page(commit))?;
        }
        Ok(())
    }

    /// Whether the database's rollback journal is hot: present, not empty, its header not
    /// zeroed (SQLite's own test). A commit finalizes it first (deleted, truncated, zeroed).
    fn journal_left_hot(&self) -> bool {
        let mut path = self.db_path.clone().into_os_string();
        path.push("-journal");
        let Ok(file) = File::open(&path) else {
            return false; // none (journal_mode=MEMORY or OFF keep none on disk)
        };
        let mut first = [0u8; 1];
        matches!(file.read_at(&mut first, 0), Ok(1)) && first[0] != 0
    }

    /// The database file must hold `pgno`, a page of the database that no WAL frame holds:
    /// in rollback-journal mode every page the header counts (SQLite grows the file at
    /// commit even when the last page is never written), in WAL mode every page not in the
    /// WAL (growth is written as frames, then checkpointed). The lock-byte page is never
    /// written and not asked for. A shorter file is not the whole database: a VFS layered
    /// above ours splits it into chunks (multiplex), or it was cut under SQLite. Replicating
    /// it would ship zeros for the pages it lacks.
    fn check_file_holds(&mut self, pgno: u32) -> io::Result<()> {
        if self.page_size == 0 || pgno == 0 {
            return Ok(()); // no valid header: nothing counted
        }
        let ps = u64::from(self.page_size);
        let len = self.db_file()?.size()?;
        if len >= u64::from(pgno) * ps {
            return Ok(());
        }
        Err(io::Error::new(
            io::ErrorKind::InvalidData,
            NotWholeDatabase(format!(
                "the database file is {len} bytes and lacks page {pgno} ({ps} bytes a page), \
                 which the database holds: this file is not the whole database (a VFS layered \
                 above litestream, such as multiplex, splitting it into chunks?); not replicated"
            )),
        ))
    }

    /// The last page of a `commit`-page database that is not the lock-byte page.
    fn last_written_page(&self, commit: u32) -> u32 {
        commit - u32::from(commit == ltx::lock_pgno(self.page_size))
    }

    // ---- Building LTX files ----------------------------------------------------------------

    fn read_page(
        &mut self,
        pgno: u32,
        source: Option<&PageSource>,
        buf: &mut [u8],
    ) -> io::Result<()> {
        match source {
            Some(PageSource::Data(b)) => buf.copy_from_slice(b),
            Some(PageSource::Wal(at)) => {
                let salts = self.wal.as_ref().map(|c| (c.header.salt1, c.header.salt2));
                read_wal_page(self.wal_file()?, *at, pgno, salts, buf)?;
            }
            None => {
                // From the database file; pages past its end are zero (growth not yet written).
                let at = (u64::from(pgno) - 1) * buf.len() as u64;
                self.db_file()?.read_at(buf, at)?;
            }
        }
        Ok(())
    }

    /// The durable position after everything captured so far.
    fn position(&mut self) -> io::Result<SavedState> {
        let wal = match self.wal.clone() {
            Some(cur) => {
                // The running checksum after the last committed frame is in that frame's header.
                let checksum = if cur.committed_end > WAL_HEADER_SIZE {
                    let mut head = [0u8; FRAME_HEADER_SIZE as usize];
                    let at = cur.committed_end - cur.header.frame_size();
                    self.wal_file()?.read_exact_at(&mut head, at).map_err(|e| {
                        io::Error::new(e.kind(), format!("WAL frame header at {at}: {e}"))
                    })?;
                    FrameHeader::parse(&head).checksum
                } else {
                    cur.header.checksum
                };
                Some(WalPosition {
                    salt1: cur.header.salt1,
                    salt2: cur.header.salt2,
                    end: cur.committed_end,
                    checksum,
                })
            }
            None => None,
        };
        let db = if wal.is_none() {
            DbFingerprint::of(&self.db_path)
        } else {
            None
        };
        Ok(SavedState {
            txid: self.last_txid,
            page_size: self.page_size,
            commit: self.last_commit,
            wal,
            db,
            counter: self.last_counter,
        })
    }

    /// Saves the position when nothing is pending or queued to save it on upload (else the
    /// shipper saves it as it goes).
    fn save_position(&mut self, fsync: bool) -> io::Result<()> {
        if self.queue.iter().any(|q| q.saves_position) || self.pending.is_some() {
            return Ok(());
        }
        let state = self.position()?;
        self.meta.save_state(&state, fsync)
    }

    /// Assigns the next TXID to what is pending (or to a full snapshot) and queues the LTX.
    /// Only once the replica's position is known, unless `force` (the WAL is about to go).
    /// A full snapshot is built only from a consistent view (see [`Stillness`]).
    pub fn seal_next(&mut self, now_ms: i64, force: bool, still: Stillness) -> io::Result<bool> {
        if !self.is_owner()
            || (self.pending.is_none() && !self.needs_full)
            || !(self.remote_known || force)
        {
            return Ok(false);
        }
        if self.page_size == 0 {
            match self.read_db_page_size() {
                Some(ps) => self.page_size = ps,
                None => return Ok(false), // nothing written yet
            }
        }
        let txid = self.last_txid + 1;
        let full = self.needs_full || txid == 1;
        if full && still == Stillness::Moving {
            return Ok(false);
        }
        // A full snapshot is the database as it is now: what is pending is in it.
        let (pending, view) = if full {
            let pending = self.pending.take();
            (pending, Some(self.full_view()?))
        } else {
            (self.pending.take(), None)
        };
        let commit = match (&view, &pending) {
            (Some((_, commit)), _) => *commit,
            (None, Some(p)) => p.commit,
            (None, None) => 0,
        };
        if commit == 0 {
            if !full {
                self.pending = pending;
            }
            return Ok(false);
        }
        let first_commit_ms = pending.as_ref().map_or(now_ms, |p| p.first_commit_ms);
        let mut sources = match (view, pending) {
            (Some((map, _)), _) => map,
            (None, Some(p)) => p.pages,
            (None, None) => BTreeMap::new(),
        };
        // Pages added by growth that no captured frame carried: their current content (a
        // committed WAL frame, else the database file).
        let lock = ltx::lock_pgno(self.page_size);
        let from = if full { 1 } else { self.last_commit + 1 };
        // Usually growth pages came as frames of the same transactions: only when one is
        // missing is the WAL scanned (a scan per seal would cost the commit path dearly).
        let missing = (from..=commit).any(|p| p != lock && !sources.contains_key(&p));
        if let (false, true, Some(cur)) = (full, missing, self.wal.clone()) {
            // Only frames of the generation we capture: another process may have restarted
            // the WAL since (then its hand-off must be read first).
            let scan = wal::scan(self.wal_file()?, None)?;
            if scan.header.map(|h| (h.salt1, h.salt2)) != Some((cur.header.salt1, cur.header.salt2))
            {
                self.pending = Some(Pending {
                    pages: sources,
                    commit,
                    first_commit_ms,
                });
                return match self.catch_up_wal()? {
                    true => Ok(false),
                    false => Err(io::Error::other("the WAL changed generation under capture")),
                };
            }
            for (p, at) in scan.pages.range(from..=commit) {
                sources.entry(*p).or_insert(PageSource::Wal(*at));
            }
        }
        let pgnos: Vec<u32> = sources
            .keys()
            .copied()
            .filter(|&p| p <= commit)
            .chain((from..=commit).filter(|p| !sources.contains_key(p)))
            .filter(|&p| p != lock)
            .collect::<BTreeSet<u32>>()
            .into_iter()
            .collect();
        let header = Header::new(self.page_size, commit, txid, txid, now_ms);
        let streamable = full && still == Stillness::ReadForUpload;
        let location = match self.encode(header, &pgnos, &sources, streamable) {
            Ok(location) => location,
            Err(e) if !full => {
                // Nothing is lost: the pages stay pending. A frame another process overwrote
                // (it restarted the WAL) comes back through its hand-off, read now.
                self.pending = Some(Pending {
                    pages: sources,
                    commit,
                    first_commit_ms,
                });
                if self.catch_up_wal()? {
                    return Ok(false);
                }
                return Err(e);
            }
            Err(e) => return Err(e),
        };
        let (prev_txid, prev_commit) = (self.last_txid, self.last_commit);
        self.last_txid = txid;
        self.last_commit = commit;
        let after = match self.position() {
            Ok(after) => after,
            Err(e) => {
                // The WAL changed under us (another process): this TXID is not given out,
                // so the chain has no gap; what was sealed is redone from a fresh look.
                self.last_txid = prev_txid;
                self.last_commit = prev_commit;
                if let Location::Spool(..) = location {
                    self.meta.unspool(txid);
                }
                self.resync(&format!("cannot record the WAL position: {e}"));
                return Err(e);
            }
        };
        log::debug!(
            "{}: sealed TXID {txid:#x}: {} pages, commit {commit}, {}{}, change counter {:?}",
            self.db_path.display(),
            pgnos.len(),
            if full { "full" } else { "incremental" },
            if let Location::Stream(_) = location {
                ", streamed"
            } else {
                ""
            },
            after.counter
        );
        self.needs_full = false;
        self.full_snapshots += u64::from(full);
        let seq = self.next_seq();
        self.queue.push_back(Queued {
            header,
            location,
            after,
            first_commit_ms,
            commits: self.commits_captured,
            full,
            saves_position: true,
            seq,
        });
        Ok(true)
    }

    /// Encodes an LTX file. A large one (a snapshot, a big transaction) is encoded straight
    /// into the spool and streamed from there: no database-sized buffer in memory. A full
    /// snapshot the spool's filesystem has no room for is streamed from the database itself
    /// (never filling the disk the application writes to).
    fn encode(
        &mut self,
        header: Header,
        pgnos: &[u32],
        sources: &BTreeMap<u32, PageSource>,
        streamable: bool,
    ) -> io::Result<Location> {
        let txid = header.min_txid;
        let raw = pgnos.len() as u64 * u64::from(self.page_size);
        if raw <= ENCODE_IN_MEMORY_LIMIT {
            let enc = Encoder::new(Vec::new(), header).map_err(other)?;
            return Ok(Location::Memory(Bytes::from(
                self.encode_pages(enc, pgnos, sources)?,
            )));
        }
        if !self.spool_has_room(raw) {
            if streamable {
                return self.stream(header, pgnos, sources);
            }
            // Pending pages stay pending, a full snapshot stays due: the shipper's next read
            // transaction streams one.
            return Err(io::Error::new(
                io::ErrorKind::StorageFull,
                format!(
                    "no room in the spool ({}) for {raw} bytes of pages and {SPOOL_HEADROOM} bytes of headroom; a full snapshot will stream from the database",
                    self.meta.spool_dir().display()
                ),
            ));
        }
        let encoded = self.meta.spool_file(txid).and_then(|(path, file)| {
            let meta = Encoder::new(io::BufWriter::new(file), header)
                .map_err(other)
                .and_then(|enc| self.encode_pages(enc, pgnos, sources))
                .and_then(|w| w.into_inner().map_err(|e| e.into_error()))
                .and_then(|f| f.metadata())?;
            Ok(Location::Spool(path, meta.len()))
        });
        match encoded {
            Ok(location) => Ok(location),
            Err(e) => {
                self.meta.unspool(txid);
                if streamable && crate::sysfile::is_disk_full(&e) {
                    return self.stream(header, pgnos, sources);
                }
                Err(e)
            }
        }
    }

    /// Whether the spool's filesystem can take `raw` bytes of pages and keep headroom for
    /// the application's own writes (it is usually the database's filesystem).
    fn spool_has_room(&self, raw: u64) -> bool {
        let dir = self.meta.dir();
        let probe = if dir.exists() {
            dir
        } else {
            dir.parent().unwrap_or(dir)
        };
        match crate::sysfile::available_bytes(probe) {
            Ok(free) => free >= raw.saturating_add(SPOOL_HEADROOM),
            Err(_) => true, // unknown: try, and stream if it fills up
        }
    }

    fn stream(
        &mut self,
        header: Header,
        pgnos: &[u32],
        sources: &BTreeMap<u32, PageSource>,
    ) -> io::Result<Location> {
        log::warn!(
            "{}: no room in the spool ({}) for a full snapshot of {} pages; streaming it from the database",
            self.db_path.display(),
            self.meta.spool_dir().display(),
            pgnos.len()
        );
        let salts = self.wal.as_ref().map(|c| (c.header.salt1, c.header.salt2));
        let plan = StreamedSnapshot::plan(stream::Plan {
            header,
            pgnos: pgnos.to_vec(),
            sources: sources.clone(),
            wal_salts: salts,
            db_path: self.db_path.clone(),
            wal_path: self.wal_path.clone(),
            open_db_file: self.open_db_file,
        })?;
        Ok(Location::Stream(Arc::new(plan)))
    }

    /// Encodes `pgnos` (their bytes from `sources`, else the database file) and finishes.
    fn encode_pages<W: io::Write>(
        &mut self,
        enc: Encoder<W>,
        pgnos: &[u32],
        sources: &BTreeMap<u32, PageSource>,
    ) -> io::Result<W> {
        let (out, _) = encode_with(enc, pgnos, |pgno, buf| {
            self.read_page(pgno, sources.get(&pgno), buf)
        })?;
        Ok(out)
    }

    /// Writes every queued in-memory file and anything pending to the spool, durably.
    fn evacuate(&mut self) -> io::Result<()> {
        if self.needs_full {
            // The full snapshot due holds these pages: nothing to keep.
            self.pending = None;
        } else {
            self.seal_next(crate::timefmt::now_millis(), true, Stillness::Moving)?;
        }
        let mut spooled = 0u64;
        for q in self.queue.iter_mut() {
            if let Location::Memory(bytes) = &q.location {
                let path = self.meta.spool(q.header.min_txid, bytes)?;
                q.location = Location::Spool(path, bytes.len() as u64);
            }
            q.saves_position = false;
            if !q.full {
                spooled += q.location.size();
            }
        }
        if spooled > self.spool_limit {
            log::warn!(
                "{}: {spooled} bytes waiting in the spool exceed the limit of {}; dropping them and resyncing with a full snapshot",
                self.db_path.display(),
                self.spool_limit
            );
            self.drop_queue();
            self.needs_full = true;
        }
        Ok(())
    }

    /// Forgets everything queued (the replica already has it, or it is being replaced).
    pub fn drop_queue(&mut self) {
        for q in self.queue.drain(..) {
            self.meta.unspool(q.header.min_txid);
        }
        self.last_txid = self.shipped_txid;
    }

    /// The file checksum of our queued LTX with this TXID, to compare with the replica's.
    pub fn queued_checksum(&self, txid: u64) -> Option<u64> {
        let q = self.queue.iter().find(|q| q.header.min_txid == txid)?;
        // The file checksum is the last 8 bytes of an LTX file.
        let mut tail = [0u8; 8];
        match &q.location {
            Location::Memory(b) => tail.copy_from_slice(b.get(b.len().checked_sub(8)?..)?),
            Location::Spool(p, size) => File::open(p)
                .ok()?
                .read_exact_at(&mut tail, size.checked_sub(8)?)
                .ok()?,
            Location::Stream(s) => return Some(s.file_checksum),
        }
        Some(u64::from_be_bytes(tail))
    }

    /// The replica's position is `remote`; `same_content` says whether the replica's file
    /// `remote` is the very one we queued under that TXID (when we queued one).
    pub fn reconcile(&mut self, remote: u64, same_content: bool) {
        self.remote_known = true;
        let first_queued = self
            .queue
            .front()
            .map_or(self.last_txid + 1, |q| q.header.min_txid);
        let lines_up = remote <= self.last_txid
            && remote + 1 >= first_queued
            && (remote < first_queued || same_content);
        self.shipped_txid = remote;
        if lines_up {
            while self
                .queue
                .front()
                .is_some_and(|q| q.header.max_txid <= remote)
            {
                let q = self.queue.pop_front().expect("checked");
                self.meta.unspool(q.header.min_txid);
            }
            if remote == 0 && self.queue.is_empty() {
                self.needs_full = true; // the first file of a replica is a snapshot
            }
        } else {
            // The replica moved on without us, or lost files we thought were there.
            log::warn!(
                "{}: replica is at TXID {remote:#x}, we are at {:#x}; resyncing with a full snapshot",
                self.db_path.display(),
                self.last_txid
            );
            self.drop_queue();
            self.needs_full = true;
            self.last_commit = 0;
        }
    }

    /// After `item` was uploaded.
    fn next_seq(&mut self) -> u64 {
        self.queued_total += 1;
        self.queued_total
    }

    pub fn shipped(&mut self, item: &Queued) -> io::Result<()> {
        let txid = item.header.min_txid;
        if let Some(pos) = self
            .queue
            .iter()
            .position(|q| q.header.min_txid == txid && q.seq == item.seq)
        {
            let q = self.queue.remove(pos).expect("found");
            self.meta.unspool(txid);
            self.shipped_txid = txid;
            self.commits_shipped = self.commits_shipped.max(q.commits);
            if q.saves_position {
                self.meta.save_state(&q.after, false)?;
                let inode = self.db_file.as_ref().map(|f| f.inode());
                let mark = ShippedMark::of(txid, &q.after, inode);
                self.handoffs.publish_shipped(&mark)?;
            }
        }
        Ok(())
    }

    pub fn db_path(&self) -> &Path {
        &self.db_path
    }

    /// PITR (rollback): the live WAL generation's salts and the end of the last committed
    /// frame captured; None without one. A wal-index ending elsewhere holds commits this
    /// process did not capture.
    pub fn wal_committed(&self) -> Option<(u32, u32, u64)> {
        self.wal
            .as_ref()
            .map(|c| (c.header.salt1, c.header.salt2, c.committed_end))
    }
}
