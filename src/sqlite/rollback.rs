//! `litestream_rollback(target)`: returns a live database to its state at a target as a
//! *new* transaction. `pitr::rollback` decides which pages; here they are written the way
//! SQLite's pager would write them, through our VFS (so capture ships them like any commit).
//!
//! SQLite has no public call to write a raw page (the `sqlite_dbpage` table is rarely
//! compiled in), so:
//! - WAL mode: `BEGIN IMMEDIATE` (the write lock: no other writer, readers keep their
//!   snapshots), frames appended, fsync, then the wal-index header is marked uninitialized;
//!   the next connection to read runs SQLite's recovery, which rebuilds the index from the WAL
//!   file (entries of older frames come out identical, so readers in the middle of a
//!   transaction are unaffected).
//! - Rollback-journal modes: `BEGIN EXCLUSIVE`, a hot journal in SQLite's format, the pages
//!   written in place, the journal deleted (the commit).

use std::ffi::c_int;
use std::time::{Duration, Instant};

use libsqlite3_sys as ffi;

use super::file::SqliteFile;
use super::functions::Connection;
use super::vfs;
use crate::pitr::rollback::{self, RollbackPages};
use crate::restore::Target;
use crate::writer::wal::{self, WalIndexHeader, WAL_INDEX_HEADER_SIZE, WAL_INDEX_IS_INIT};
use crate::writer::Replicator;
use crate::Error;

/// How long the rollback waits for the replica to catch up before it starts.
pub const SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// How long it waits for its own transaction to ship (it ships later if not).
pub const SHIP_TIMEOUT: Duration = Duration::from_secs(5);
/// Size of one wal-index region, as SQLite maps it.
const SHM_REGION: c_int = 32768;

/// Crash tests: `LITESTREAM_CRASH_AT=<point>` aborts the process there (the test then checks
/// that SQLite's own recovery leaves either the old or the new state, never a mix).
fn crash_point(point: &str) {
    if std::env::var("LITESTREAM_CRASH_AT").is_ok_and(|p| p == point) {
        std::process::abort();
    }
}

#[derive(Debug, serde::Serialize)]
struct Summary {
    /// The TXID the database was at.
    from_txid: String,
    /// The TXID whose state it now has.
    target_txid: String,
    target_timestamp: String,
    /// The new TXID holding the rollback (None when already at the target).
    txid: Option<String>,
    pages: usize,
    page_size: u32,
    /// Database size in pages afterwards.
    commit: u32,
    whole_database: bool,
    bytes_read: u64,
    /// Whether the new TXID reached the replica before returning.
    shipped: bool,
    error: Option<String>,
    seconds: f64,
}

/// The main database's replicator and file, when it is opened with `vfs=litestream`.
fn main_file(db: &Connection) -> Result<(std::sync::Arc<Replicator>, SqliteFile), Error> {
    let f = db
        .file_control_ptr(ffi::SQLITE_FCNTL_FILE_POINTER)
        .ok_or_else(|| Error::other("the main database has no file"))?
        as *mut ffi::sqlite3_file;
    // SAFETY: SQLite answered FILE_POINTER with the main database's live sqlite3_file.
    let r = unsafe { vfs::replicator_of_main(f) }
        .ok_or_else(|| Error::other("the main database is not opened with vfs=litestream"))?;
    // SAFETY: as above; the file stays open while this connection runs our function.
    Ok((r, unsafe { SqliteFile::new(f) }))
}

/// The wal-index's first region (mapped by SQLite's VFS, shared by every connection).
fn map_shm(main: SqliteFile) -> Result<*mut u8, String> {
    main.shm_region0(SHM_REGION)
}

fn read_index_header(shm: *mut u8) -> Result<WalIndexHeader, String> {
    let mut copy = [0u8; 2 * WAL_INDEX_HEADER_SIZE];
    // SAFETY: region 0 is at least 32 KiB; under the write lock nobody changes the header.
    unsafe { std::ptr::copy_nonoverlapping(shm, copy.as_mut_ptr(), copy.len()) };
    WalIndexHeader::parse(&copy).ok_or_else(|| "the WAL index header is not valid".to_string())
}

/// Through the WAL file's own xWrite (ours: the capture sees the frames).
fn write_at(f: SqliteFile, bytes: &[u8], offset: u64) -> Result<(), String> {
    f.write(bytes, offset, "writing the WAL")
        .map_err(|e| format!("{e}; nothing was committed"))
}

/// Appends `pages` to the WAL after frame `h.max_frame` as one committed transaction.
/// Returns the number of the commit frame.
fn append_frames(
    wal_file: SqliteFile,
    h: &WalIndexHeader,
    pages: &RollbackPages,
) -> Result<u32, String> {
    let ps = pages.page_size;
    let frame_size = wal::FRAME_HEADER_SIZE + u64::from(ps);
    let (mut checksum, salt_bytes, big_endian) = if h.max_frame == 0 {
        // An empty generation: start a new one, as SQLite does at its first frame (salt 1
        // moves on, salt 2 is new, so no stale frame can pass for one of ours).
        let mut old = [0u8; wal::WAL_HEADER_SIZE as usize];
        let old_seq = if wal_file.read(&mut old, 0, "reading the WAL").is_ok() {
            u32::from_be_bytes(old[12..16].try_into().expect("4 bytes"))
        } else {
            0
        };
        let salt1 = u32::from_be_bytes(h.salt_bytes[..4].try_into().expect("4 bytes"));
        let mut salts = [0u8; 8];
        salts[..4].copy_from_slice(&salt1.wrapping_add(1).to_be_bytes());
        salts[4..].copy_from_slice(&rand::random::<u32>().to_be_bytes());
        let header = wal::encode_wal_header(ps, old_seq.wrapping_add(1), salts);
        write_at(wal_file, &header, 0)?;
        let parsed = wal::WalHeader::parse(&header).ok_or("new WAL header does not parse")?;
        (parsed.checksum, salts, parsed.big_endian_checksum)
    } else {
        // Continue the chain; check the index agrees with the file first.
        let mut last = [0u8; wal::FRAME_HEADER_SIZE as usize];
        let at = wal::WAL_HEADER_SIZE + (u64::from(h.max_frame) - 1) * frame_size;
        wal_file.read(&mut last, at, "reading the last WAL frame")?;
        let fh = wal::FrameHeader::parse(&last);
        if last[8..16] != h.salt_bytes || fh.checksum != h.frame_checksum {
            return Err("the WAL index and the WAL file disagree; nothing was changed".into());
        }
        (h.frame_checksum, h.salt_bytes, h.big_endian_checksum)
    };
    let mut offset = wal::WAL_HEADER_SIZE + u64::from(h.max_frame) * frame_size;
    let mut buf = Vec::with_capacity(frame_size as usize);
    let n = pages.pages.len();
    for (i, (pgno, data)) in pages.pages.iter().enumerate() {
        let mut page = std::borrow::Cow::Borrowed(data.as_slice());
        if *pgno == 1 {
            // The database stays in WAL mode whatever mode the target was in.
            let p = page.to_mut();
            p[18] = 2;
            p[19] = 2;
        }
        let commit = if i + 1 == n { pages.commit } else { 0 };
        buf.clear();
        checksum = wal::encode_frame(
            &mut buf, big_endian, checksum, salt_bytes, *pgno, commit, &page,
        );
        write_at(wal_file, &buf, offset)?;
        offset += frame_size;
    }
    Ok(h.max_frame + n as u32)
}

/// Marks the wal-index header uninitialized: the next reader rebuilds it from the WAL.
fn invalidate_index(main: SqliteFile, shm: *mut u8) {
    // SAFETY: region 0 is mapped and at least two headers long; we hold the write lock, the
    // only lock under which SQLite itself writes the header. Volatile: other processes map it.
    unsafe {
        std::ptr::write_volatile(shm.add(WAL_INDEX_IS_INIT), 0);
        std::ptr::write_volatile(shm.add(WAL_INDEX_HEADER_SIZE + WAL_INDEX_IS_INIT), 0);
    }
    main.shm_barrier();
}

/// What a mode-specific writer did.
struct Written {
    from: u64,
    pages: RollbackPages,
    /// WAL mode: the commit frame, to check SQLite's rebuilt index against.
    last_frame: Option<u32>,
}

/// WAL mode, under `BEGIN IMMEDIATE`: frames appended, index invalidated.
fn write_wal(
    db: &Connection,
    r: &Replicator,
    main: SqliteFile,
    from: u64,
    target: Target,
) -> Result<Written, Error> {
    let wal_file = db
        .file_control_ptr(ffi::SQLITE_FCNTL_JOURNAL_POINTER)
        .map(|p| p as *mut ffi::sqlite3_file)
        // SAFETY: SQLite answered JOURNAL_POINTER with the pager's live WAL file.
        .filter(|&f| unsafe { vfs::is_captured_wal(f) })
        // SAFETY: as above; open while the write transaction lasts.
        .map(|f| unsafe { SqliteFile::new(f) })
        .ok_or("the WAL is not open through vfs=litestream")?;
    let shm = map_shm(main)?;
    let header = read_index_header(shm)?;
    check_wal_captured(r, &header)?;
    // An empty WAL (just opened, or truncated) says nothing of the database: its file does.
    let (page_size, commit) = if header.max_frame == 0 {
        file_geometry(main)?
    } else {
        (header.page_size, header.db_pages)
    };
    let live = LiveDb::wal(main, wal_file, &header, page_size, commit)?;
    let mut pages = plan(r, from, commit, page_size, target, false)?;
    keep_differing(&mut pages, &live, true)?;
    if pages.pages.is_empty() {
        return Ok(Written {
            from,
            pages,
            last_frame: None,
        });
    }
    let last = append_frames(wal_file, &header, &pages)?;
    crash_point("wal-frames");
    // The commit frame is written: from here on the transaction stands.
    if let Err(e) = wal_file.sync("fsync of the WAL") {
        log::error!("{}: rollback: {e}", r.db_path().display());
    }
    invalidate_index(main, shm);
    Ok(Written {
        from,
        pages,
        last_frame: Some(last),
    })
}

fn plan(
    r: &Replicator,
    from: u64,
    commit: u32,
    page_size: u32,
    target: Target,
    latest_page1: bool,
) -> Result<RollbackPages, Error> {
    let pages = crate::runtime::block_on(rollback::plan(
        &r.store(),
        from,
        commit,
        target,
        latest_page1,
    ))
    .map_err(|e| Error::from(e).with_note("nothing was changed"))?;
    if pages.page_size != page_size {
        return Err(Error::other(format!(
            "the target (TXID {}) has page size {} and the database {page_size} (the page size was changed in between): a rollback cannot change the page size; restore the target into a new file instead; nothing was changed",
            crate::ltx::format_txid(pages.target_txid),
            pages.page_size
        )));
    }
    Ok(pages)
}

/// The page size and size in pages of the database file itself (read through SQLite's own
/// handle: opening another descriptor would drop this process's POSIX locks).
fn file_geometry(main: SqliteFile) -> Result<(u32, u32), String> {
    let mut head = [0u8; 100];
    main.read(&mut head, 0, "reading the database header")?;
    let page_size =
        crate::ltx::page_size_from_field(u32::from(u16::from_be_bytes([head[16], head[17]])));
    if !crate::ltx::is_valid_page_size(page_size) {
        return Err(format!(
            "the database header gives page size {page_size}; nothing was changed"
        ));
    }
    let size = main.size("sizing the database")?;
    Ok((page_size, (size as u64 / u64::from(page_size)) as u32))
}

/// WAL mode: the wal-index must end where this process's capture does, else another
/// connection (another process, or one without `vfs=litestream`) committed frames the
/// replica may not have, and a rollback planned from the replica would write a mix.
fn check_wal_captured(r: &Replicator, h: &WalIndexHeader) -> Result<(), String> {
    let mut seen = None;
    r.with_capture("rollback", |c| {
        seen = c.wal_committed();
        Ok(())
    });
    let frame_size = wal::FRAME_HEADER_SIZE + u64::from(h.page_size);
    let index_end = wal::WAL_HEADER_SIZE + u64::from(h.max_frame) * frame_size;
    let captured = match seen {
        // An empty WAL: capture must not hold frames of a generation that is gone.
        _ if h.max_frame == 0 => seen.is_none_or(|(_, _, end)| end <= wal::WAL_HEADER_SIZE),
        Some((salt1, salt2, end)) => {
            let mut salts = [0u8; 8];
            salts[..4].copy_from_slice(&salt1.to_be_bytes());
            salts[4..].copy_from_slice(&salt2.to_be_bytes());
            salts == h.salt_bytes && end == index_end
        }
        None => false,
    };
    if captured {
        return Ok(());
    }
    Err(format!(
        "the database has commits this process did not capture (another process, or a connection without vfs=litestream, committed {}), so the replica may not have them and a rollback planned from it would leave a mix; nothing was changed. Retry once the replica has them",
        if h.max_frame == 0 { "and checkpointed" } else { "to the WAL" }
    ))
}

/// The database as SQLite sees it now, under the write lock: each page's committed bytes
/// (the newest WAL frame up to the wal-index's last, else the database file).
struct LiveDb {
    main: SqliteFile,
    /// The WAL file and, for each page in it, the offset of its newest frame's data.
    wal: Option<(SqliteFile, std::collections::HashMap<u32, u64>)>,
    page_size: u32,
    /// Size in pages.
    commit: u32,
}

impl LiveDb {
    fn file(main: SqliteFile, page_size: u32, commit: u32) -> Self {
        Self {
            main,
            wal: None,
            page_size,
            commit,
        }
    }

    /// Frames 1..=max_frame of the live generation, as the wal-index counts them.
    fn wal(
        main: SqliteFile,
        wal_file: SqliteFile,
        h: &WalIndexHeader,
        page_size: u32,
        commit: u32,
    ) -> Result<Self, String> {
        let frame_size = wal::FRAME_HEADER_SIZE + u64::from(page_size);
        let mut frames = std::collections::HashMap::new();
        let mut head = [0u8; wal::FRAME_HEADER_SIZE as usize];
        for i in 0..u64::from(h.max_frame) {
            let at = wal::WAL_HEADER_SIZE + i * frame_size;
            wal_file.read(&mut head, at, "reading the WAL")?;
            let pgno = u32::from_be_bytes(head[..4].try_into().expect("4 bytes"));
            frames.insert(pgno, at + wal::FRAME_HEADER_SIZE);
        }
        Ok(Self {
            main,
            wal: Some((wal_file, frames)),
            page_size,
            commit,
        })
    }

    /// Page `pgno` (at most `commit`) as committed now.
    fn read(&self, pgno: u32, buf: &mut [u8]) -> Result<(), String> {
        if let Some(at) = self
            .wal
            .as_ref()
            .and_then(|(f, m)| Some((f, *m.get(&pgno)?)))
        {
            return at.0.read(buf, at.1, "reading the WAL");
        }
        let at = (u64::from(pgno) - 1) * u64::from(self.page_size);
        self.main.read(buf, at, "reading the database")
    }
}

/// Drops the planned pages the database already holds as they are at the target, so the
/// rollback writes exactly what differs (nothing when the database equals the target).
/// Page 1 is compared as it would be written (journal-mode bytes, and in rollback-journal
/// modes the change counter and size fields, which the write sets).
fn keep_differing(pages: &mut RollbackPages, live: &LiveDb, wal_mode: bool) -> Result<(), String> {
    let ps = live.page_size as usize;
    let mut current = vec![0u8; ps];
    let mut page1 = None;
    let mut kept = Vec::with_capacity(pages.pages.len());
    for (pgno, mut data) in std::mem::take(&mut pages.pages) {
        if data.len() != ps {
            return Err(format!(
                "page {pgno} of the target is {} bytes, the database's pages {ps}; nothing was changed",
                data.len()
            ));
        }
        if pgno > live.commit {
            kept.push((pgno, data));
            continue;
        }
        live.read(pgno, &mut current)?;
        let same = if pgno == 1 {
            if wal_mode {
                data[18] = 2;
                data[19] = 2;
                data == current
            } else {
                let mut as_written = data.clone();
                as_written[18] = 1;
                as_written[19] = 1;
                as_written[24..28].copy_from_slice(&current[24..28]);
                as_written[28..32].copy_from_slice(&pages.commit.to_be_bytes());
                as_written[92..96].copy_from_slice(&current[92..96]);
                as_written == current
            }
        } else {
            data == current
        };
        if pgno == 1 {
            page1 = Some(current.clone());
        }
        if !same || (pgno == 1 && pages.commit != live.commit) {
            kept.push((pgno, data));
        }
    }
    // A size change needs a transaction even when no page differs: page 1 carries it.
    if kept.is_empty() && pages.commit != live.commit && wal_mode {
        let mut p1 = match page1 {
            Some(p) => p,
            None => {
                live.read(1, &mut current)?;
                current
            }
        };
        p1[28..32].copy_from_slice(&pages.commit.to_be_bytes());
        kept.push((1, p1));
    }
    pages.pages = kept;
    Ok(())
}

/// Rollback-journal modes: every commit moves page 1's change counter on (and this
/// process's capture ships page 1 with it), so a database whose counter differs from the
/// replica's latest page 1 has commits the replica does not have.
fn check_counter_captured(pages: &RollbackPages, head: &[u8; 100]) -> Result<(), String> {
    let ours = u32::from_be_bytes(head[24..28].try_into().expect("4 bytes"));
    let theirs = pages
        .latest_page1
        .as_ref()
        .and_then(|p| p.get(24..28))
        .map(|b| u32::from_be_bytes(b.try_into().expect("4 bytes")));
    if theirs == Some(ours) {
        return Ok(());
    }
    Err(format!(
        "the database has commits the replica does not have (its change counter is {ours}, the replica's latest state's {}: another process, or a connection without vfs=litestream, committed), so a rollback planned from the replica would leave a mix; nothing was changed. Retry once the replica has them",
        theirs.map_or("unknown".to_string(), |t| t.to_string())
    ))
}

/// Rollback-journal mode, under `BEGIN EXCLUSIVE`: the pages are written in place, after a
/// hot journal holding what they overwrite (so a crash midway is rolled back by SQLite, as
/// for any transaction); deleting the journal commits. Page 1's change counter moves on so
/// every connection drops its cache.
fn write_in_place(
    r: &Replicator,
    main: SqliteFile,
    from: u64,
    target: Target,
) -> Result<Written, Error> {
    // Through SQLite's own file handle: opening and closing another descriptor of the
    // database would drop this process's POSIX locks on it.
    let read = |buf: &mut [u8], offset: u64| main.read(buf, offset, "reading the database");
    let mut head = [0u8; 100];
    read(&mut head, 0)?;
    let (page_size, current) = file_geometry(main)?;
    let size = main.size("sizing the database")?;
    let mut pages = plan(r, from, current, page_size, target, true)?;
    check_counter_captured(&pages, &head)?;
    keep_differing(&mut pages, &LiveDb::file(main, page_size, current), false)?;
    if pages.pages.is_empty() && pages.commit == current {
        return Ok(Written {
            from,
            pages,
            last_frame: None,
        });
    }
    let ps = page_size as usize;
    if pages.pages.first().is_none_or(|(p, _)| *p != 1) {
        // Unchanged since the target (no commit in rollback mode leaves it alone).
        let mut page1 = vec![0u8; ps];
        read(&mut page1, 0)?;
        pages.pages.insert(0, (1, page1));
    }
    {
        let counter = u32::from_be_bytes(head[24..28].try_into().expect("4 bytes")).wrapping_add(1);
        let p1 = &mut pages.pages[0].1;
        p1[18] = 1; // stays a rollback-journal database whatever the target was
        p1[19] = 1;
        p1[24..28].copy_from_slice(&counter.to_be_bytes());
        p1[28..32].copy_from_slice(&pages.commit.to_be_bytes());
        p1[92..96].copy_from_slice(&counter.to_be_bytes());
    }
    // The journal: SQLite's format, one record per page we overwrite.
    const SECTOR: usize = 512;
    let nonce: u32 = rand::random();
    let mut journal = vec![0u8; SECTOR];
    journal[..8].copy_from_slice(&[0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7]);
    journal[12..16].copy_from_slice(&nonce.to_be_bytes());
    journal[16..20].copy_from_slice(&current.to_be_bytes());
    journal[20..24].copy_from_slice(&(SECTOR as u32).to_be_bytes());
    journal[24..28].copy_from_slice(&page_size.to_be_bytes());
    let mut records = 0u32;
    let mut old = vec![0u8; ps];
    for (pgno, _) in pages.pages.iter().filter(|(p, _)| *p <= current) {
        read(&mut old, (u64::from(*pgno) - 1) * ps as u64)?;
        let mut sum = nonce;
        let mut i = ps - 200;
        while i > 0 {
            sum = sum.wrapping_add(u32::from(old[i]));
            i = i.saturating_sub(200);
        }
        journal.extend_from_slice(&pgno.to_be_bytes());
        journal.extend_from_slice(&old);
        journal.extend_from_slice(&sum.to_be_bytes());
        records += 1;
    }
    journal[8..12].copy_from_slice(&records.to_be_bytes());
    let journal_path = format!("{}-journal", r.db_path().display());
    let write_journal = || -> std::io::Result<()> {
        use std::io::Write;
        let mut f = std::fs::File::create(&journal_path)?;
        f.write_all(&journal)?;
        f.sync_all()?;
        let dir = r.db_path().parent().unwrap_or(std::path::Path::new("."));
        std::fs::File::open(dir)?.sync_all()
    };
    write_journal()
        .map_err(|e| format!("writing the journal {journal_path}: {e}; nothing was changed"))?;
    // The pages, through our VFS: capture notes them like any write.
    let written = (|| -> Result<(), String> {
        for (pgno, data) in &pages.pages {
            main.write(
                data,
                (u64::from(*pgno) - 1) * ps as u64,
                "writing the database",
            )?;
            crash_point("journal-page");
        }
        let end = i64::from(pages.commit) * ps as i64;
        if end < size {
            main.truncate(end, "truncating the database")?;
        }
        main.sync("syncing the database")
    })();
    if let Err(e) = written {
        // The hot journal stays: the next reader rolls the half-written pages back.
        return Err(Error::other(format!(
            "{e}; the journal restores the database at the next read"
        )));
    }
    // Deleting the journal commits; through our VFS, whose capture seals the pages here.
    let path = super::cstring(&journal_path);
    // SAFETY: our VFS is registered (this connection uses it); the path is NUL-terminated.
    let rc = unsafe {
        let vfs = ffi::sqlite3_vfs_find(vfs::WRITER_VFS.as_ptr());
        if vfs.is_null() {
            ffi::SQLITE_ERROR
        } else {
            (*vfs)
                .xDelete
                .map_or(ffi::SQLITE_IOERR_DELETE, |f| f(vfs, path.as_ptr(), 1))
        }
    };
    if rc != ffi::SQLITE_OK {
        return Err(Error::sqlite(
            rc,
            format!("deleting the journal (the commit) failed (error {rc})"),
        ));
    }
    Ok(Written {
        from,
        pages,
        last_frame: None,
    })
}

/// `litestream_rollback(target)` on the connection `db`.
pub fn rollback(db: &Connection, target: Target) -> Result<String, Error> {
    let started = Instant::now();
    let (r, main) = main_file(db)?;
    if !db.autocommit() {
        return Err(Error::other(
            "cannot roll back inside a transaction: COMMIT or ROLLBACK it first",
        ));
    }
    let mode = db
        .query_text("PRAGMA main.journal_mode")?
        .unwrap_or_default()
        .to_ascii_lowercase();
    let wal_mode = mode == "wal";
    if !wal_mode && !["delete", "truncate", "persist"].contains(&mode.as_str()) {
        return Err(Error::other(format!(
            "journal_mode={mode} keeps no journal on disk, so a crash could tear the rollback; litestream_rollback needs WAL, DELETE, TRUNCATE or PERSIST"
        )));
    }
    if db
        .query_text("PRAGMA main.locking_mode")?
        .is_some_and(|m| m.eq_ignore_ascii_case("exclusive"))
    {
        return Err(Error::other(if wal_mode {
            "locking_mode=EXCLUSIVE keeps the WAL index private; litestream_rollback needs locking_mode=NORMAL; nothing was changed"
        } else {
            "locking_mode=EXCLUSIVE: SQLite keeps its page cache across transactions without checking the file, so pages a rollback writes beneath it would be undone by the next write; litestream_rollback needs locking_mode=NORMAL; nothing was changed"
        }));
    }
    // Catch up first, without the write lock, so the locked part is short.
    r.ready_to_write(SYNC_TIMEOUT)
        .map_err(|e| e.context("the replica is not ready; nothing was changed"))?;
    // The write lock; in rollback-journal mode also no reader (pages change in place).
    db.exec(if wal_mode {
        "BEGIN IMMEDIATE"
    } else {
        "BEGIN EXCLUSIVE"
    })?;
    let outcome = r
        .sync(SYNC_TIMEOUT)
        .map_err(|e| e.context("the replica is not ready; nothing was changed"))
        .and_then(|from| {
            if wal_mode {
                write_wal(db, &r, main, from, target)
            } else {
                write_in_place(&r, main, from, target)
            }
        });
    let done = match outcome {
        Ok(v) => {
            db.exec("COMMIT")?;
            v
        }
        Err(e) => {
            let _ = db.exec("ROLLBACK");
            return Err(e);
        }
    };
    let pages = &done.pages;
    let mut summary = Summary {
        from_txid: crate::ltx::format_txid(done.from),
        target_txid: crate::ltx::format_txid(pages.target_txid),
        target_timestamp: crate::timefmt::rfc3339_millis(pages.target_timestamp_ms),
        txid: None,
        pages: pages.pages.len(),
        page_size: pages.page_size,
        commit: pages.commit,
        whole_database: pages.whole_database,
        bytes_read: pages.bytes_read,
        shipped: true,
        error: None,
        seconds: 0.0,
    };
    if let Some(last) = done.last_frame {
        // Rebuild the index now (SQLite's recovery) rather than in the next reader, and check
        // it ends with our frames (unless another writer already went on). The rollback is
        // committed either way: a busy recovery here is left to the next reader.
        let rebuilt = db
            .query_text("SELECT count(*) FROM sqlite_schema")
            .and_then(|_| Ok(read_index_header(map_shm(main)?)?));
        match rebuilt {
            Ok(after) if after.max_frame == last && after.db_pages != pages.commit => {
                return Err(Error::other(format!(
                    "after the rollback SQLite's WAL index says {} pages, expected {}",
                    after.db_pages, pages.commit
                )));
            }
            Ok(_) => {}
            Err(e) => log::warn!(
                "{}: rollback committed; rebuilding the WAL index is left to the next reader: {e}",
                r.db_path().display()
            ),
        }
    }
    // Something was written (nothing when already at the target): wait for it to ship.
    if !pages.pages.is_empty() {
        match r.sync(SHIP_TIMEOUT) {
            Ok(txid) => summary.txid = Some(crate::ltx::format_txid(txid)),
            Err(e) => {
                summary.txid = Some(r.status().local_txid);
                summary.shipped = false;
                summary.error = Some(format!(
                    "rolled back locally; the new transaction ships when the replica is back: {e}"
                ));
            }
        }
    }
    summary.seconds = started.elapsed().as_secs_f64();
    serde_json::to_string(&summary).map_err(|e| Error::other(e.to_string()))
}
