//! Commits this process did not make: found in the WAL, taken from hand-offs, or answered
//! with a full snapshot (see `handoff` for the protocol). Also what a follower hands over.

use std::collections::BTreeMap;
use std::fs::File;
use std::io;
use std::os::unix::fs::FileExt;

use super::{Capture, DbFile, PageSource, Stillness, WalCursor};
use crate::writer::handoff::{Handoff, PublishedPin, ShippedMark, WalHandoffName};
use crate::writer::meta::DbFingerprint;
use crate::writer::wal::{self, FrameHeader, WalHeader, FRAME_HEADER_SIZE, WAL_HEADER_SIZE};

/// The fields of the database header (its first 100 bytes) capture needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct DbHeader {
    /// File change counter (offset 24): every rollback-journal commit adds one.
    pub counter: u32,
    /// Database size in pages (offset 28), valid when `valid_for` equals `counter`.
    size: u32,
    valid_for: u32,
    /// Read/write format versions are 2: the database is in WAL mode.
    pub wal_mode: bool,
}

impl DbHeader {
    pub fn valid_size(&self) -> Option<u32> {
        (self.valid_for == self.counter && self.size > 0).then_some(self.size)
    }
}

/// The database header, or None for a file too short to have one (new, empty).
fn parse_db_header(file: &dyn DbFile) -> io::Result<Option<DbHeader>> {
    let mut b = [0u8; 100];
    match file.read_exact_at(&mut b, 0) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => return Ok(None),
        Err(e) => return Err(e),
    }
    let be = |at: usize| u32::from_be_bytes(b[at..at + 4].try_into().expect("4 bytes"));
    Ok(Some(DbHeader {
        counter: be(24),
        size: be(28),
        valid_for: be(92),
        wal_mode: b[18] == 2 && b[19] == 2,
    }))
}

/// Longest a due full snapshot of a WAL-mode database waits for the application to open
/// the WAL (see `Capture::snapshot_due`); the shipper looks again at least this often.
const WAIT_FOR_APPLICATION_WAL: std::time::Duration = std::time::Duration::from_secs(1);

/// Most hand-offs the owner follows in one go before it resyncs instead.
const MAX_CHAIN: u32 = 10_000;

impl Capture {
    /// The database header, read through the descriptor capture keeps open: closing a
    /// descriptor of the database would drop every POSIX lock this process holds on it.
    pub(super) fn db_header(&mut self) -> io::Result<Option<DbHeader>> {
        match self.db_file() {
            Ok(f) => parse_db_header(f),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Err(e) => Err(e),
        }
    }

    /// Logs why and schedules a full snapshot (what is pending is in it).
    pub(super) fn resync(&mut self, why: &str) {
        if !self.needs_full {
            log::warn!(
                "{}: {why}; resyncing with a full snapshot",
                self.db_path.display()
            );
        }
        self.needs_full = true;
        self.pending = None;
    }

    /// Before this process changes the database (`wal`: a WAL write, which holds the WAL
    /// write lock; else a rollback-journal page write, which holds the exclusive lock): a
    /// full snapshot that is due is taken now, in place, so the state before this change
    /// (written by someone else, or before a gap) gets a TXID of its own.
    pub fn before_own_write(&mut self, wal: bool) -> io::Result<()> {
        if !wal && self.dirty.is_empty() && self.wal_handles == 0 && self.hot_rollbacks == 0 {
            self.counter_before_write = self.db_header()?.map(|h| h.counter);
        }
        let due = self.is_owner() && self.needs_full && !self.queue.iter().any(|q| q.full);
        // The database is still at its last commit: no page of ours is written yet (a
        // transaction's own WAL frames come after the last commit frame and are left out).
        // A hot-journal rollback is not: the file is torn until it is done.
        let still = if wal {
            true
        } else {
            self.wal_handles == 0 && self.dirty.is_empty() && self.hot_rollbacks == 0
        };
        if due && still {
            log::debug!(
                "{}: full snapshot in place, before a write of ours",
                self.db_path.display()
            );
            self.seal_next(crate::timefmt::now_millis(), true, Stillness::OwnLock)?;
        }
        Ok(())
    }

    pub fn foreign_unresolved(&self) -> bool {
        self.foreign_unresolved
    }

    /// Whether this owner must look for other processes' commits under a read lock before it
    /// ships (a change counter moved and its hand-offs were not there yet), or take a full
    /// snapshot that is due (see `snapshot_due`; `flushing`: a sync or close waits for it).
    pub fn needs_consistent_read(&mut self, flushing: bool) -> bool {
        self.is_owner() && (self.snapshot_due(flushing) || self.foreign_unresolved)
    }

    /// A full snapshot is due and there is a database to take it of. A new database nothing
    /// was written to yet (no header) has no state to ship: the first commit takes the
    /// snapshot, and until then nothing waits for one (a sync, a close).
    ///
    /// A WAL-mode database with no WAL file that no connection of ours has opened the WAL of
    /// (just switched to WAL mode, reopened after a clean close, or its last WAL user gone)
    /// waits up to `WAIT_FOR_APPLICATION_WAL` for the application to open it, unless
    /// `flushing` (a sync or close waits): our read transaction would create the -wal and
    /// -shm files before the application does (SQLite's walmode.test looks right away).
    pub fn snapshot_due(&mut self, flushing: bool) -> bool {
        if !self.needs_full {
            self.waiting_for_wal_since = None;
            return false;
        }
        let header = self.db_header();
        let waits_for_wal = matches!(&header, Ok(Some(h)) if h.wal_mode)
            && self.wal_handles == 0
            && !self.wal_path.exists();
        if !waits_for_wal {
            self.waiting_for_wal_since = None;
            // An error is for the read transaction to meet and report.
            return !matches!(header, Ok(None));
        }
        // The wait runs whoever asks: a status or a sync asking meanwhile must not restart it.
        let since = *self
            .waiting_for_wal_since
            .get_or_insert_with(std::time::Instant::now);
        flushing || since.elapsed() >= WAIT_FOR_APPLICATION_WAL
    }

    /// Every page of the database as SQLite sees it now, and its size in pages: the file
    /// overlaid with the WAL's committed frames. The caller makes it consistent (a read
    /// transaction, or our own write lock). Lines the WAL cursor up with what it holds.
    pub(super) fn full_view(&mut self) -> io::Result<(BTreeMap<u32, PageSource>, u32)> {
        let header = self.db_header()?;
        let mut map = BTreeMap::new();
        let mut commit = None;
        self.wal_file = None;
        // A WAL counts only while the database is in WAL mode (or has no header yet).
        let wal_live = header.is_none_or(|h| h.wal_mode);
        if let (true, Ok(file)) = (wal_live, File::open(&self.wal_path)) {
            let scan = wal::scan(&file, None)?;
            if let Some(h) = scan.header {
                map.extend(scan.pages.iter().map(|(&p, &at)| (p, PageSource::Wal(at))));
                commit = scan.commit;
                self.line_up_cursor(h, scan.end);
            }
            self.wal_file = Some(file);
        }
        if let Some(ps) = self.read_db_page_size() {
            self.page_size = ps;
        }
        let commit = match (commit, header.and_then(|h| h.valid_size())) {
            (Some(c), _) | (None, Some(c)) => c,
            (None, None) => {
                let len = self.db_file()?.size()?;
                (len / u64::from(self.page_size.max(512))) as u32
            }
        };
        if self.page_size != 0 {
            self.check_view_whole(&map, commit)?;
        }
        self.last_counter = header.map(|h| h.counter);
        self.foreign_unresolved = false;
        self.accounted_db = DbFingerprint::of(&self.db_path);
        self.forget_handoffs_before_cursor();
        Ok((map, commit))
    }

    /// The pages of a `commit`-page view that neither a WAL frame (`wal`) nor the file holds
    /// are read as zeros, as SQLite reads them: they must be pages SQLite never writes.
    /// Those are freelist leaves (their content is never read; SQLite skips writing them)
    /// and the lock-byte page, also where SQLite's tests move the pending byte (then one
    /// lone page between WAL pages). Any other lacking page means the file is not the whole
    /// database: a VFS layered above ours splitting it (multiplex), or a file cut under SQLite.
    fn check_view_whole(&mut self, wal: &BTreeMap<u32, PageSource>, commit: u32) -> io::Result<()> {
        let ps = u64::from(self.page_size);
        let lock = crate::ltx::lock_pgno(self.page_size);
        let in_file = (self.db_file()?.size()? / ps) as u32;
        let mut lacking = (in_file.saturating_add(1)..=commit)
            .filter(|p| *p != lock && !wal.contains_key(p))
            .peekable();
        if lacking.peek().is_none() {
            return Ok(());
        }
        let mut page = vec![0u8; ps as usize];
        self.read_page(1, wal.get(&1), &mut page)?;
        let be32 = |b: &[u8], at: usize| u32::from_be_bytes(b[at..at + 4].try_into().unwrap());
        let (mut trunk, free_count) = (be32(&page, 32), be32(&page, 36));
        // More lacking pages than free ones (and a lock page): not free pages, stop counting.
        let lacking: Vec<u32> = lacking.take(free_count as usize + 2).collect();
        let mut free_leaves = std::collections::HashSet::new();
        let mut trunks = std::collections::HashSet::new();
        // A damaged freelist may loop: each trunk is read once, at most as many as it counts.
        while trunk != 0
            && trunk <= commit
            && trunks.len() <= free_count as usize
            && trunks.insert(trunk)
        {
            self.read_page(trunk, wal.get(&trunk), &mut page)?;
            let leaves = (be32(&page, 4) as usize).min(page.len() / 4 - 2);
            free_leaves.extend((0..leaves).map(|i| be32(&page, 8 + 4 * i)));
            trunk = be32(&page, 0);
        }
        let others: Vec<u32> = lacking
            .into_iter()
            .filter(|p| !free_leaves.contains(p))
            .collect();
        match others[..] {
            [] => Ok(()),
            [lone] if wal.range(lone..).next().is_some() => Ok(()),
            _ => self.check_file_holds(others[others.len() - 1]),
        }
    }

    /// Moves the WAL cursor to `end` of generation `h` (committed frames up to there are
    /// accounted for), keeping a transaction of ours in progress after it.
    fn line_up_cursor(&mut self, h: WalHeader, end: u64) {
        log::trace!(
            "{}: WAL cursor lined up at {end} of salt1 {:#x} (was {:?})",
            self.db_path.display(),
            h.salt1,
            self.wal
                .as_ref()
                .map(|c| (c.header.salt1, c.committed_end, c.next))
        );
        match self.wal.as_mut() {
            Some(cur) if (cur.header.salt1, cur.header.salt2) == (h.salt1, h.salt2) => {
                // The header as it is on disk (see `catch_up_wal_at`: another process may
                // have written this generation's header again), which `end` was read from.
                cur.header = h;
                cur.committed_end = cur.committed_end.max(end);
                cur.next = cur.next.max(end);
                cur.txn.retain(|&(_, at)| at >= end);
            }
            _ => {
                self.wal = Some(WalCursor {
                    header: h,
                    next: end,
                    committed_end: end,
                    txn: Vec::new(),
                    written_header: None,
                    unsealed_commit: None,
                });
            }
        }
        self.ended_generation = None;
    }

    /// Hand-offs a full snapshot made useless: every change counter up to the current one,
    /// and WAL generations older than the cursor's.
    fn forget_handoffs_before_cursor(&mut self) {
        self.handoffs
            .remove_older_than(self.last_counter, self.wal.as_ref().map(|c| c.header.salt1));
    }

    /// The running WAL checksum at the cursor's committed end.
    fn checksum_at(&self, cur: &WalCursor, file: &File) -> io::Result<(u32, u32)> {
        if cur.committed_end <= WAL_HEADER_SIZE {
            return Ok(cur.header.checksum);
        }
        let mut head = [0u8; FRAME_HEADER_SIZE as usize];
        file.read_exact_at(&mut head, cur.committed_end - cur.header.frame_size())?;
        Ok(FrameHeader::parse(&head).checksum)
    }

    /// Brings the WAL cursor up to the last commit in the WAL, whoever wrote it: frames of
    /// our generation are read (verified as SQLite's recovery would), generations other
    /// processes started are followed through their hand-offs, and a gap means a full
    /// snapshot. Returns whether anything new was captured. Never while a transaction of
    /// ours is being written (nobody else can append then anyway).
    pub(super) fn catch_up_wal(&mut self) -> io::Result<bool> {
        self.catch_up_wal_at(0)
    }

    /// `depth`: how many generations ended while we were following them in this call.
    fn catch_up_wal_at(&mut self, depth: u32) -> io::Result<bool> {
        if depth > 16 {
            self.resync("the WAL restarts faster than it can be followed");
            self.wal = None;
            return Ok(true);
        }
        if let Some(cur) = &self.wal {
            if !cur.txn.is_empty() || cur.next != cur.committed_end {
                return Ok(false);
            }
        }
        // A fresh descriptor each time: another process may have deleted and recreated it.
        let file = match File::open(&self.wal_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return self.wal_ended_elsewhere(None, depth);
            }
            Err(e) => return Err(e),
        };
        let mut head = [0u8; WAL_HEADER_SIZE as usize];
        let now = match file.read_exact_at(&mut head, 0) {
            Ok(()) => WalHeader::parse(&head),
            Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => None,
            Err(e) => return Err(e),
        };
        let Some(cur) = self.wal.clone() else {
            return match now {
                Some(h) => self.adopt_generation(h, &file, depth),
                None => Ok(false),
            };
        };
        let same = now.is_some_and(|h| (h.salt1, h.salt2) == (cur.header.salt1, cur.header.salt2));
        if !same {
            return self.wal_ended_elsewhere(now.map(|h| (h, file)), depth);
        }
        let cur = match now {
            Some(h) if h != cur.header => {
                // This generation's header was written again, by another process: SQLite
                // writes it with a generation's first frame, so after a transaction of ours
                // wrote it and committed nothing, the next writer writes it anew, with the
                // same salts but its own checkpoint sequence and so another checksum, from
                // which its frames chain. Frames verified against ours would all fail.
                if cur.committed_end != WAL_HEADER_SIZE {
                    self.resync("the WAL header changed under frames already read from it");
                    self.wal = None;
                    return Ok(true);
                }
                log::debug!(
                    "{}: the WAL header was written again by another process (same salts)",
                    self.db_path.display()
                );
                let c = self.wal.as_mut().expect("cloned above");
                c.header = h;
                c.clone()
            }
            _ => cur,
        };
        let len = file.metadata()?.len();
        if len < WAL_HEADER_SIZE {
            // Truncated since we read its header: it ended elsewhere.
            return self.wal_ended_elsewhere(None, depth);
        }
        if len < cur.committed_end {
            // Frames we read are gone but the header is the same: the file was cut or
            // replaced outside SQLite. Nothing of ours lines up with it any more.
            self.resync(
                "the WAL is shorter than the frames already read from it (changed outside SQLite?)",
            );
            self.wal = None;
            return Ok(true);
        }
        let checksum = self.checksum_at(&cur, &file)?;
        let scan = wal::scan(&file, Some((cur.header, cur.committed_end, checksum)))?;
        if scan.end <= cur.committed_end {
            return Ok(false);
        }
        log::trace!(
            "{}: WAL commits found by scan: {}..{} of salt1 {:#x}, {} pages {:?}",
            self.db_path.display(),
            cur.committed_end,
            scan.end,
            cur.header.salt1,
            scan.pages.len(),
            scan.pages.keys().take(12).collect::<Vec<_>>()
        );
        self.add_pending_from_scan(&scan);
        if let Some(c) = self.wal.as_mut() {
            c.committed_end = scan.end;
            c.next = scan.end;
        }
        Ok(true)
    }

    /// The generation our cursor is in was restarted, truncated or deleted by another
    /// process. Its hand-off (and those of any generations after it) carry what we had not
    /// read; then the live generation, `now`, is read from its start.
    fn wal_ended_elsewhere(
        &mut self,
        now: Option<(WalHeader, File)>,
        depth: u32,
    ) -> io::Result<bool> {
        let Some(cur) = self.wal.clone() else {
            return Ok(false);
        };
        let (mut salts, mut pos) = ((cur.header.salt1, cur.header.salt2), cur.committed_end);
        for _ in 0..MAX_CHAIN {
            let found = self
                .handoffs
                .wal_handoffs_with_salt1(salts.0)
                .into_iter()
                .find(|n| n.salt2 == salts.1 && n.from <= pos);
            let Some(name) = found else { break };
            let Some(handoff) = self.handoffs.read_wal(&name)? else {
                break;
            };
            let handed_db = self.handoffs.read_wal_db(&name);
            if !self.take_wal_handoff(handoff) {
                break;
            }
            self.handoffs.remove_wal(&name);
            self.wal = None;
            self.ended_generation = Some(salts);
            // The next generation starts with the first salt plus one (SQLite's restart).
            let next = salts.0.wrapping_add(1);
            match &now {
                Some((h, _)) if h.salt1 == next => {
                    let (h, file) = now.expect("matched");
                    return self.adopt_generation(h, &file, depth).map(|_| true);
                }
                None if self.handoffs.wal_handoffs_with_salt1(next).is_empty() => {
                    // Truncated or deleted after its last frame was handed over: the next
                    // header written continues from here. The database file holds what was
                    // handed over, unless it moved since the follower handed it over:
                    // someone without the extension committed and checkpointed meanwhile.
                    let now = DbFingerprint::of(&self.db_path);
                    if handed_db.is_none() || handed_db != now {
                        self.resync("the database file changed after the last hand-off: another process committed and checkpointed without handing over (a writer without the extension?)");
                        return Ok(true);
                    }
                    self.last_counter = self.db_header()?.map(|h| h.counter);
                    self.accounted_db = now;
                    return Ok(true);
                }
                _ => {}
            }
            let Some(n) = self.handoffs.wal_handoffs_with_salt1(next).first().copied() else {
                break;
            };
            salts = (n.salt1, n.salt2);
            pos = WAL_HEADER_SIZE;
        }
        self.resync("the WAL was restarted by a process that handed nothing over (a writer without the extension?)");
        self.wal = None;
        if let Some((_, file)) = now {
            let scan = wal::scan(&file, None)?;
            if let Some(h) = scan.header {
                self.line_up_cursor(h, scan.end);
            }
        }
        Ok(true)
    }

    /// A generation we did not see start: read it from its first frame, if it continues the
    /// one we saw end; else resync.
    fn adopt_generation(&mut self, h: WalHeader, file: &File, depth: u32) -> io::Result<bool> {
        let continues = self
            .ended_generation
            .is_some_and(|(salt1, _)| h.salt1 == salt1.wrapping_add(1));
        let scan = wal::scan(file, None)?;
        self.wal = None;
        self.wal_file = None;
        if !continues {
            self.resync("a WAL generation started that this process did not see begin");
            if let Some(now) = scan.header {
                self.line_up_cursor(now, scan.end);
            }
            return Ok(true);
        }
        if scan.header.map(|s| (s.salt1, s.salt2)) != Some((h.salt1, h.salt2)) {
            // It ended too while we looked: we saw it begin, so follow its hand-off.
            self.line_up_cursor(h, WAL_HEADER_SIZE);
            return self.catch_up_wal_at(depth + 1);
        }
        self.line_up_cursor(h, scan.end);
        self.page_size = h.page_size;
        if scan.end > WAL_HEADER_SIZE {
            self.add_pending_from_scan(&scan);
            return Ok(true);
        }
        Ok(false)
    }

    /// Puts a hand-off's pages over what is pending. Every pending page that still points
    /// into the WAL must be in it (they were framed after the pin it was built from), else
    /// the hand-off does not cover what we hold: false.
    fn take_wal_handoff(&mut self, h: Handoff) -> bool {
        let covered = self.pending.as_ref().is_none_or(|p| {
            p.pages
                .iter()
                .all(|(pgno, src)| !matches!(src, PageSource::Wal(_)) || h.pages.contains_key(pgno))
        });
        if !covered || (self.page_size != 0 && h.page_size != self.page_size) {
            return false;
        }
        self.add_pending_from_handoff(h);
        true
    }

    /// Applies the rollback-journal hand-offs of change counters `last + 1 ..= upto`, in
    /// order. When one is missing: with the database locked (it will never come), resync;
    /// else look again under a read lock. Returns whether anything changed.
    pub(super) fn take_counter_handoffs(
        &mut self,
        last: u32,
        upto: u32,
        locked: bool,
    ) -> io::Result<bool> {
        let steps = upto.wrapping_sub(last);
        if steps == 0 {
            return Ok(false);
        }
        let mut found = Vec::new();
        if steps <= MAX_CHAIN {
            for i in 1..=steps {
                match self.handoffs.read_cc(last.wrapping_add(i)) {
                    Ok(Some(h)) => found.push(h),
                    Ok(None) | Err(_) => break,
                }
            }
        }
        if found.len() as u32 != steps {
            if locked {
                self.foreign_unresolved = false;
                self.resync(&format!(
                    "another process committed (change counter {last} -> {upto}) without handing its pages over (a writer without the extension?)"
                ));
                self.last_counter = Some(upto);
            } else {
                log::debug!(
                    "{}: change counter {last} -> {upto} with {} of {steps} hand-offs: looking again under a read lock",
                    self.db_path.display(),
                    found.len()
                );
                self.foreign_unresolved = true;
            }
            return Ok(true);
        }
        log::debug!(
            "{}: took the hand-offs of commits {} ..= {upto}",
            self.db_path.display(),
            last.wrapping_add(1)
        );
        for h in found {
            if self.page_size != 0 && h.page_size != self.page_size {
                self.resync("another process changed the page size");
                break;
            }
            self.add_pending_from_handoff(h);
        }
        for i in 1..=steps {
            self.handoffs.remove_cc(last.wrapping_add(i));
        }
        self.last_counter = Some(upto);
        self.foreign_unresolved = false;
        Ok(true)
    }

    /// The owner's look for other processes' commits (a timer, and before a full snapshot
    /// under a read lock: `locked`). Returns whether anything new was captured.
    pub fn poll_foreign(&mut self, locked: bool) -> io::Result<bool> {
        if !self.is_owner() {
            return Ok(false);
        }
        let header = self.db_header()?;
        let changed = match header {
            Some(h) if !h.wal_mode && self.wal.is_none() => {
                let changed = match self.last_counter {
                    // A write of ours is under way (its pages reach the file before its
                    // commit point): the counter may be its own half-way, and no other
                    // process can commit while we hold the write lock. What other processes
                    // committed before it is up to the counter its first write found, and
                    // their hand-offs are complete: take those now; the commit point takes
                    // the rest under our lock. (Looking at the file's counter would ask for
                    // a read lock our own lock keeps out: a process exiting mid-write waited
                    // its whole exit flush for it.) With no such counter (a hot journal's
                    // rollback), as before.
                    Some(last) if !locked && self.own_write_under_way() => {
                        match self.counter_before_write {
                            Some(before) => self.take_counter_handoffs(last, before, false)?,
                            None => self.take_counter_handoffs(last, h.counter, false)?,
                        }
                    }
                    Some(last) if last != h.counter => {
                        self.take_counter_handoffs(last, h.counter, locked)?
                    }
                    Some(_) => {
                        // An unlocked look may have seen our own commit half-way (page 1
                        // written before its commit point): under the lock it is ours.
                        if locked {
                            self.foreign_unresolved = false;
                        }
                        false
                    }
                    None => {
                        self.last_counter = Some(h.counter);
                        false
                    }
                };
                if !self.foreign_unresolved && self.last_counter == Some(h.counter) {
                    // Every rollback-journal commit moves the counter: this file is all seen.
                    self.accounted_db = DbFingerprint::of(&self.db_path);
                }
                changed
            }
            _ => {
                // Now in WAL mode: a change counter left unresolved from before the switch
                // can no longer be matched with hand-offs.
                if locked && self.foreign_unresolved {
                    self.foreign_unresolved = false;
                    self.resync("another process committed before the switch to WAL mode without handing its pages over");
                }
                let caught_up = self.catch_up_wal()?;
                caught_up || self.checkpointed_unseen(header.is_some())
            }
        };
        self.publish_pin();
        Ok(changed)
    }

    /// A write of this process has reached the database file and not yet its commit point
    /// (pages written, or a hot journal being rolled back).
    fn own_write_under_way(&self) -> bool {
        !self.dirty.is_empty() || self.hot_rollbacks > 0
    }

    /// In WAL mode with no WAL generation to follow (none yet, or truncated or deleted):
    /// whether the database file moved since it was last accounted for. Another process
    /// then created a WAL, committed, checkpointed and truncated or deleted it between two
    /// looks (SQLite's last connection deletes the WAL on close), and nothing of that is
    /// left to read: resync. Followers' hand-offs of such a generation cannot be placed
    /// either (nothing says which state they start from). The file's modification time
    /// tells on kernels with fine-grained timestamps (Linux 6.13+ on ext4, xfs, btrfs and
    /// tmpfs: a change after a stat always gets a new time); on coarser clocks a change
    /// within the same tick as the last one seen is missed.
    fn checkpointed_unseen(&mut self, has_header: bool) -> bool {
        // A write of ours in progress (a switch to WAL mode is a rollback-journal commit)
        // changes the file before its commit point accounts for it.
        let own_write = self.write_locks > 0 || self.own_write_under_way();
        if self.wal.is_some() || self.needs_full || !has_header || own_write {
            return false;
        }
        let now = DbFingerprint::of(&self.db_path);
        match self.accounted_db {
            None => {
                self.accounted_db = now;
                false
            }
            Some(seen) if Some(seen) != now => {
                self.resync("the database file changed while it had no WAL to read: another process committed and checkpointed between two looks (a writer without the extension?)");
                true
            }
            Some(_) => false,
        }
    }

    /// Publishes where our WAL capture stands (best effort: followers hand over more when
    /// it is stale, never less).
    pub(super) fn publish_pin(&self) {
        let Some(cur) = &self.wal else { return };
        let oldest_pending = self.pending.as_ref().and_then(|p| {
            p.pages
                .values()
                .filter_map(|s| match s {
                    PageSource::Wal(at) => Some(*at),
                    PageSource::Data(_) => None,
                })
                .min()
        });
        let pin = PublishedPin {
            salt1: cur.header.salt1,
            salt2: cur.header.salt2,
            pin: oldest_pending
                .unwrap_or(cur.committed_end)
                .min(cur.committed_end),
            pid: std::process::id(),
        };
        if let Err(e) = self.handoffs.publish_pin(&pin) {
            log::warn!(
                "{}: cannot publish the WAL pin: {e}",
                self.db_path.display()
            );
        }
    }

    /// Where the database stands now, in the terms of [`ShippedMark`] (for a follower's
    /// `litestream_sync()`: the replica must reach this).
    /// A rollback-journal write of ours under way has changed the file's counter (or torn
    /// it) before its commit point: the last commit is the counter its first write found.
    pub fn database_mark(&mut self) -> io::Result<ShippedMark> {
        let header = self.db_header()?;
        let counter = match header {
            Some(h) if !h.wal_mode && self.own_write_under_way() => {
                self.counter_before_write.or(Some(h.counter))
            }
            _ => header.map(|h| h.counter),
        };
        let mut mark = ShippedMark {
            txid: 0,
            wal: None,
            counter,
            inode: self.db_file().ok().map(|f| f.inode()),
        };
        if header.is_none_or(|h| h.wal_mode) {
            if let Ok(file) = File::open(&self.wal_path) {
                let scan = wal::scan(&file, None)?;
                if let Some(h) = scan.header {
                    mark.wal = Some((h.salt1, h.salt2, scan.end));
                }
            }
        }
        Ok(mark)
    }

    /// What the owner last reported uploaded.
    pub fn owner_shipped(&self) -> Option<ShippedMark> {
        self.handoffs.read_shipped()
    }

    // ---- What a follower hands over --------------------------------------------------------

    /// A follower is about to restart, truncate or delete the WAL: hands over the latest
    /// committed copy of every page framed from the owner's pin on (the whole generation
    /// when there is no live owner, or its pin is of another generation).
    pub(super) fn hand_off_wal_generation(&mut self) -> io::Result<()> {
        let file = match File::open(&self.wal_path) {
            Ok(f) => f,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(()),
            Err(e) => return Err(e),
        };
        let scan = wal::scan(&file, None)?;
        let Some(h) = scan.header else { return Ok(()) };
        if scan.end <= WAL_HEADER_SIZE {
            return Ok(());
        }
        let from = match self.handoffs.read_pin() {
            Some(p) if (p.salt1, p.salt2) == (h.salt1, h.salt2) && self.handoffs.owner_alive() => {
                p.pin.clamp(WAL_HEADER_SIZE, scan.end)
            }
            _ => WAL_HEADER_SIZE,
        };
        // Even with nothing to carry (the owner read every frame and holds none), the
        // hand-off tells the owner this generation ended with nothing lost.
        let mut handoff = Handoff {
            page_size: h.page_size,
            commit: scan.commit.unwrap_or(0),
            pages: BTreeMap::new(),
        };
        for (&pgno, &at) in scan.pages.iter().filter(|(_, &at)| at >= from) {
            let mut page = vec![0u8; h.page_size as usize];
            file.read_exact_at(&mut page, at + FRAME_HEADER_SIZE)?;
            handoff.pages.insert(pgno, page);
        }
        let name = WalHandoffName {
            salt1: h.salt1,
            salt2: h.salt2,
            from,
        };
        // The generation is checkpointed (a restart, truncate or delete comes only after a
        // full one): this is the database file with all of it.
        let db = DbFingerprint::of(&self.db_path);
        self.handoffs.write_wal(&name, &handoff, db)
    }

    /// A follower's rollback-journal commit (the database lock still held): its pages, under
    /// the change counter that names it.
    pub(super) fn hand_off_commit(&mut self, counter: Option<u32>, commit: u32) -> io::Result<()> {
        // Every page of this hold, as it is now: an earlier transaction of the hold handed
        // over under the same counter, and this hand-off replaces that one.
        self.held_pages.append(&mut self.dirty);
        let dirty = self.held_pages.clone();
        let Some(counter) = counter else {
            return Ok(()); // no header yet: nothing committed
        };
        let ps = u64::from(self.page_size);
        let lock = crate::ltx::lock_pgno(self.page_size);
        let mut handoff = Handoff {
            page_size: self.page_size,
            commit,
            pages: BTreeMap::new(),
        };
        for pgno in dirty.into_iter().filter(|&p| p <= commit && p != lock) {
            let mut page = vec![0u8; ps as usize];
            self.db_file()?
                .read_exact_at(&mut page, (u64::from(pgno) - 1) * ps)?;
            handoff.pages.insert(pgno, page);
        }
        log::debug!(
            "{}: handing commit {counter} over ({} pages, commit {commit})",
            self.db_path.display(),
            handoff.pages.len()
        );
        self.handoffs.write_cc(counter, &handoff)
    }
}
