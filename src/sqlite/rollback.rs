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
fn main_file(db: &Connection) -> Result<(std::sync::Arc<Replicator>, SqliteFile), String> {
    let f = db
        .file_control_ptr(ffi::SQLITE_FCNTL_FILE_POINTER)
        .ok_or("the main database has no file")? as *mut ffi::sqlite3_file;
    // SAFETY: SQLite answered FILE_POINTER with the main database's live sqlite3_file.
    let r = unsafe { vfs::replicator_of_main(f) }
        .ok_or("the main database is not opened with vfs=litestream")?;
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
) -> Result<Written, String> {
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
    let pages = plan(r, from, header.db_pages, header.page_size, target)?;
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
) -> Result<RollbackPages, String> {
    let pages = crate::runtime::block_on(rollback::plan(&r.store(), from, commit, target))
        .map_err(|e| format!("{e}; nothing was changed"))?;
    if !pages.pages.is_empty() && pages.page_size != page_size {
        return Err(format!(
            "the replica's page size at the target is {}, the database's is {page_size}; nothing was changed",
            pages.page_size
        ));
    }
    Ok(pages)
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
) -> Result<Written, String> {
    // Through SQLite's own file handle: opening and closing another descriptor of the
    // database would drop this process's POSIX locks on it.
    let read = |buf: &mut [u8], offset: u64| main.read(buf, offset, "reading the database");
    let mut head = [0u8; 100];
    read(&mut head, 0)?;
    let page_size =
        crate::ltx::page_size_from_field(u32::from(u16::from_be_bytes([head[16], head[17]])));
    let size = main.size("sizing the database")?;
    let current = (size as u64 / u64::from(page_size.max(512))) as u32;
    let mut pages = plan(r, from, current, page_size, target)?;
    if pages.pages.is_empty() {
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
        return Err(format!(
            "{e}; the journal restores the database at the next read"
        ));
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
        return Err(format!(
            "deleting the journal (the commit) failed (error {rc})"
        ));
    }
    Ok(Written {
        from,
        pages,
        last_frame: None,
    })
}

/// `litestream_rollback(target)` on the connection `db`.
pub fn rollback(db: &Connection, target: Target) -> Result<String, String> {
    let started = Instant::now();
    let (r, main) = main_file(db)?;
    if !db.autocommit() {
        return Err("cannot roll back inside a transaction: COMMIT or ROLLBACK it first".into());
    }
    let mode = db
        .query_text("PRAGMA main.journal_mode")?
        .unwrap_or_default()
        .to_ascii_lowercase();
    let wal_mode = mode == "wal";
    if !wal_mode && !["delete", "truncate", "persist"].contains(&mode.as_str()) {
        return Err(format!(
            "journal_mode={mode} keeps no journal on disk, so a crash could tear the rollback; litestream_rollback needs WAL, DELETE, TRUNCATE or PERSIST"
        ));
    }
    if wal_mode
        && db
            .query_text("PRAGMA main.locking_mode")?
            .is_some_and(|m| m.eq_ignore_ascii_case("exclusive"))
    {
        return Err("locking_mode=EXCLUSIVE keeps the WAL index private; litestream_rollback needs locking_mode=NORMAL".into());
    }
    // Catch up first, without the write lock, so the locked part is short.
    r.ready_to_write(SYNC_TIMEOUT)
        .map_err(|e| format!("the replica is not ready; nothing was changed: {e}"))?;
    // The write lock; in rollback-journal mode also no reader (pages change in place).
    db.exec(if wal_mode {
        "BEGIN IMMEDIATE"
    } else {
        "BEGIN EXCLUSIVE"
    })?;
    let outcome = r
        .sync(SYNC_TIMEOUT)
        .map_err(|e| format!("the replica is not ready; nothing was changed: {e}"))
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
            .and_then(|_| read_index_header(map_shm(main)?));
        match rebuilt {
            Ok(after) if after.max_frame == last && after.db_pages != pages.commit => {
                return Err(format!(
                    "after the rollback SQLite's WAL index says {} pages, expected {}",
                    after.db_pages, pages.commit
                ));
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
    serde_json::to_string(&summary).map_err(|e| e.to_string())
}
