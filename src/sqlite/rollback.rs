//! `litestream_rollback(target)`: returns a live WAL-mode database to its state at a
//! target as a *new* transaction. `pitr::rollback` decides which pages; here they are
//! appended to the WAL as one committed transaction under SQLite's write lock, exactly as
//! SQLite's pager would write them, and SQLite's own WAL recovery then indexes them.
//!
//! SQLite has no public call to write a raw page (the `sqlite_dbpage` table is rarely
//! compiled in), so: `BEGIN IMMEDIATE` (the write lock: no other writer, readers keep their
//! snapshots), frames appended through our VFS (so capture ships them like any commit),
//! fsync, then the wal-index header is marked uninitialized; the next connection to read runs
//! SQLite's recovery, which rebuilds the index from the WAL file (entries of older frames
//! come out identical, so readers in the middle of a transaction are unaffected).

use std::ffi::{c_int, c_void};
use std::time::{Duration, Instant};

use libsqlite3_sys as ffi;

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
fn main_file(
    db: &Connection,
) -> Result<(std::sync::Arc<Replicator>, *mut ffi::sqlite3_file), String> {
    let f = db
        .file_control_ptr(ffi::SQLITE_FCNTL_FILE_POINTER)
        .ok_or("the main database has no file")? as *mut ffi::sqlite3_file;
    // SAFETY: SQLite answered FILE_POINTER with the main database's live sqlite3_file.
    let r = unsafe { vfs::replicator_of_main(f) }
        .ok_or("the main database is not opened with vfs=litestream")?;
    Ok((r, f))
}

/// The wal-index's first region (mapped by SQLite's VFS, shared by every connection).
fn map_shm(main: *mut ffi::sqlite3_file) -> Result<*mut u8, String> {
    let mut p: *mut c_void = std::ptr::null_mut();
    // SAFETY: `main` is the live main-database file; xShmMap of region 0 without extending
    // returns the existing mapping (or null when there is none).
    let rc = unsafe {
        match (*(*main).pMethods).xShmMap {
            Some(map) => map(main, 0, SHM_REGION, 0, &mut p),
            None => ffi::SQLITE_IOERR_SHMMAP,
        }
    };
    if rc != ffi::SQLITE_OK || p.is_null() {
        return Err(format!("cannot map the WAL index (error {rc})"));
    }
    Ok(p as *mut u8)
}

fn read_index_header(shm: *mut u8) -> Result<WalIndexHeader, String> {
    let mut copy = [0u8; 2 * WAL_INDEX_HEADER_SIZE];
    // SAFETY: region 0 is at least 32 KiB; under the write lock nobody changes the header.
    unsafe { std::ptr::copy_nonoverlapping(shm, copy.as_mut_ptr(), copy.len()) };
    WalIndexHeader::parse(&copy).ok_or_else(|| "the WAL index header is not valid".to_string())
}

/// Calls the file's xWrite (ours: the capture sees the frames).
fn write_at(f: *mut ffi::sqlite3_file, bytes: &[u8], offset: u64) -> Result<(), String> {
    // SAFETY: `f` is the live WAL file; `bytes` is readable for its length.
    let rc = unsafe {
        match (*(*f).pMethods).xWrite {
            Some(w) => w(
                f,
                bytes.as_ptr() as *const c_void,
                bytes.len() as c_int,
                offset as i64,
            ),
            None => ffi::SQLITE_IOERR_WRITE,
        }
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!(
            "writing the WAL failed (error {rc}); nothing was committed"
        ))
    }
}

fn read_at(f: *mut ffi::sqlite3_file, buf: &mut [u8], offset: u64) -> bool {
    // SAFETY: `f` is the live WAL file; `buf` is writable for its length.
    let rc = unsafe {
        match (*(*f).pMethods).xRead {
            Some(r) => r(
                f,
                buf.as_mut_ptr() as *mut c_void,
                buf.len() as c_int,
                offset as i64,
            ),
            None => ffi::SQLITE_IOERR_READ,
        }
    };
    rc == ffi::SQLITE_OK
}

/// Appends `pages` to the WAL after frame `h.max_frame` as one committed transaction.
/// Returns the number of the commit frame.
fn append_frames(
    wal_file: *mut ffi::sqlite3_file,
    h: &WalIndexHeader,
    pages: &RollbackPages,
) -> Result<u32, String> {
    let ps = pages.page_size;
    let frame_size = wal::FRAME_HEADER_SIZE + u64::from(ps);
    let (mut checksum, salt_bytes, big_endian) = if h.max_frame == 0 {
        // An empty generation: start a new one, as SQLite does at its first frame (salt 1
        // moves on, salt 2 is new, so no stale frame can pass for one of ours).
        let mut old = [0u8; wal::WAL_HEADER_SIZE as usize];
        let old_seq = if read_at(wal_file, &mut old, 0) {
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
        if !read_at(wal_file, &mut last, at) {
            return Err("cannot read the last WAL frame".into());
        }
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
fn invalidate_index(main: *mut ffi::sqlite3_file, shm: *mut u8) {
    // SAFETY: region 0 is mapped and at least two headers long; we hold the write lock, the
    // only lock under which SQLite itself writes the header. Volatile: other processes map it.
    unsafe {
        std::ptr::write_volatile(shm.add(WAL_INDEX_IS_INIT), 0);
        std::ptr::write_volatile(shm.add(WAL_INDEX_HEADER_SIZE + WAL_INDEX_IS_INIT), 0);
        if let Some(barrier) = (*(*main).pMethods).xShmBarrier {
            barrier(main);
        }
    }
}

fn sync_wal(wal_file: *mut ffi::sqlite3_file) -> Result<(), String> {
    // SAFETY: `wal_file` is the live WAL file.
    let rc = unsafe {
        match (*(*wal_file).pMethods).xSync {
            Some(s) => s(wal_file, ffi::SQLITE_SYNC_NORMAL),
            None => ffi::SQLITE_OK,
        }
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("fsync of the WAL failed (error {rc})"))
    }
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
        .unwrap_or_default();
    if !mode.eq_ignore_ascii_case("wal") {
        return Err(format!(
            "the database is in journal_mode={mode}; litestream_rollback needs journal_mode=WAL"
        ));
    }
    if db
        .query_text("PRAGMA main.locking_mode")?
        .is_some_and(|m| m.eq_ignore_ascii_case("exclusive"))
    {
        return Err("locking_mode=EXCLUSIVE keeps the WAL index private; litestream_rollback needs locking_mode=NORMAL".into());
    }
    // Catch up first, without the write lock, so the locked part is short.
    r.ready_to_write(SYNC_TIMEOUT)
        .map_err(|e| format!("the replica is not ready; nothing was changed: {e}"))?;
    db.exec("BEGIN IMMEDIATE")?;
    let outcome = (|| -> Result<(u64, RollbackPages, Option<u32>), String> {
        let from = r
            .sync(SYNC_TIMEOUT)
            .map_err(|e| format!("the replica is not ready; nothing was changed: {e}"))?;
        let wal_file = db
            .file_control_ptr(ffi::SQLITE_FCNTL_JOURNAL_POINTER)
            .map(|p| p as *mut ffi::sqlite3_file)
            // SAFETY: SQLite answered JOURNAL_POINTER with the pager's live WAL file.
            .filter(|&f| unsafe { vfs::is_captured_wal(f) })
            .ok_or("the WAL is not open through vfs=litestream")?;
        let shm = map_shm(main)?;
        let header = read_index_header(shm)?;
        let pages =
            crate::runtime::block_on(rollback::plan(&r.store(), from, header.db_pages, target))
                .map_err(|e| format!("{e}; nothing was changed"))?;
        if pages.pages.is_empty() {
            return Ok((from, pages, None));
        }
        if pages.page_size != header.page_size {
            return Err(format!(
                "the replica's page size at the target is {}, the database's is {}; nothing was changed",
                pages.page_size, header.page_size
            ));
        }
        let last = append_frames(wal_file, &header, &pages)?;
        // The commit frame is written: from here on the transaction stands.
        if let Err(e) = sync_wal(wal_file) {
            log::error!("{}: rollback: {e}", r.db_path().display());
        }
        invalidate_index(main, shm);
        Ok((from, pages, Some(last)))
    })();
    let (from, pages, last_frame) = match outcome {
        Ok(v) => {
            db.exec("COMMIT")?;
            v
        }
        Err(e) => {
            let _ = db.exec("ROLLBACK");
            return Err(e);
        }
    };
    let mut summary = Summary {
        from_txid: crate::ltx::format_txid(from),
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
    if let Some(last) = last_frame {
        // Rebuild the index now (SQLite's recovery) rather than in the next reader.
        db.query_text("SELECT count(*) FROM sqlite_schema")?;
        let shm = map_shm(main)?;
        let after = read_index_header(shm)?;
        if after.max_frame < last || after.db_pages != pages.commit {
            return Err(format!(
                "after the rollback SQLite's WAL index ends at frame {} ({} pages), expected {last} ({} pages)",
                after.max_frame, after.db_pages, pages.commit
            ));
        }
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
