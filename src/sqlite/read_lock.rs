//! A consistent view of a database for a full snapshot: a read transaction on a private,
//! read-only connection through the parent VFS (so none of our capture hooks run on it).
//! While it is open no process can commit in rollback-journal mode, and in WAL mode no
//! checkpoint can copy frames past it or restart the WAL under it.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use libsqlite3_sys as ffi;

use super::cstring;
use super::functions::Connection;
use crate::Error;

/// How long the read transaction waits for a writer to finish (its commit is short; a
/// longer wait is tried again at the shipper's next pass), in steps of `BUSY_STEP`.
const BUSY_TIMEOUT: Duration = Duration::from_secs(2);
const BUSY_STEP: Duration = Duration::from_millis(2);

/// SQLite's busy handler for the read: waits like `sqlite3_busy_timeout`, but gives up at
/// once when `give_up` is set (the database's last connection closed: its host expects every
/// file of it closed when that close returns, this connection's too).
unsafe extern "C" fn busy_wait(give_up: *mut c_void, count: c_int) -> c_int {
    std::panic::catch_unwind(|| {
        // SAFETY: the `&AtomicBool` passed to sqlite3_busy_handler, which outlives the
        // connection (see `with_read_transaction`).
        let give_up = unsafe { &*(give_up as *const AtomicBool) };
        let waited = BUSY_STEP * count.max(0) as u32;
        if give_up.load(Ordering::SeqCst) || waited >= BUSY_TIMEOUT {
            return 0;
        }
        std::thread::sleep(BUSY_STEP);
        1
    })
    .unwrap_or(0)
}

struct Conn(*mut ffi::sqlite3);

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: a connection we opened, with no statement left open (exec finalizes its own); null is accepted.
        unsafe { ffi::sqlite3_close(self.0) };
    }
}

impl Conn {
    /// Opens `path` through the parent VFS, so none of our capture hooks run on it.
    fn open(path: &Path, flags: c_int, what: &str) -> Result<Self, Error> {
        let name = cstring(&path.to_string_lossy());
        let vfs: *const c_char = super::vfs::parent_name();
        let mut db = std::ptr::null_mut();
        // SAFETY: valid NUL-terminated strings; `db` receives a handle even on failure,
        // which `Conn` closes.
        let rc = unsafe { ffi::sqlite3_open_v2(name.as_ptr(), &mut db, flags, vfs) };
        let conn = Conn(db);
        if rc != ffi::SQLITE_OK {
            return Err(conn.error(what, rc));
        }
        Ok(conn)
    }

    fn error(&self, what: &str, rc: i32) -> Error {
        // SAFETY: errmsg of a live (or null: "out of memory") handle is a valid C string.
        let msg = unsafe {
            let p = ffi::sqlite3_errmsg(self.0);
            if p.is_null() {
                String::new()
            } else {
                CStr::from_ptr(p).to_string_lossy().into_owned()
            }
        };
        // SAFETY: as above; the extended code of the call that just failed (a null handle:
        // the code we were given).
        let code = if self.0.is_null() {
            rc
        } else {
            unsafe { ffi::sqlite3_extended_errcode(self.0) }
        };
        Error::sqlite(code, format!("{what}: {msg} (error {code})"))
    }

    fn exec(&self, sql: &str) -> Result<(), Error> {
        // SAFETY: our live connection, used on this thread only while `self` lives.
        unsafe { Connection::from_raw(self.0) }
            .exec(sql)
            .map_err(|e| Error::sqlite(e.code(), format!("{e} (error {})", e.code())))
    }
}

/// Runs `f` while a read transaction on `path` holds the database still. A wait for a
/// writer stops when `give_up` is set.
pub fn with_read_transaction(
    path: &Path,
    give_up: &AtomicBool,
    f: &mut dyn FnMut(),
) -> Result<(), Error> {
    let wal = wal_path(path);
    let wal_existed = wal.exists();
    let read = read_transaction(path, give_up, f);
    if !wal_existed && wal.exists() {
        close_files_our_read_left(path);
    }
    read
}

fn wal_path(db: &Path) -> std::path::PathBuf {
    let mut name = db.as_os_str().to_owned();
    name.push("-wal");
    name.into()
}

/// A read-only connection that opens a WAL-mode database whose `-wal` is gone (its last
/// connection closed and deleted it) creates an empty `-wal` and `-shm`, and cannot delete
/// them at its close (SQLite's last close checkpoints and deletes them; a read-only one may
/// not): after the database's last close, they were left behind (SQLite's wal-11.9,
/// walro-1.3.2). A read-write open and close does SQLite's own last close: it deletes them
/// only if no connection of any process uses the database (it takes the file's EXCLUSIVE
/// lock first), and checkpoints nothing of ours (the `-wal` our read made is empty).
fn close_files_our_read_left(path: &Path) {
    // A read opens the WAL (the close only deletes a WAL it opened); any failure (busy: the
    // database is in use again) leaves the files to their users.
    let read = Conn::open(path, ffi::SQLITE_OPEN_READWRITE, "cannot open the database")
        .and_then(|conn| conn.exec("PRAGMA query_only = 1; SELECT count(*) FROM sqlite_schema"));
    if let Err(e) = read {
        log::debug!(
            "{}: the -wal and -shm a consistent read created stay: {e}",
            path.display()
        );
    }
}

fn read_transaction(path: &Path, give_up: &AtomicBool, f: &mut dyn FnMut()) -> Result<(), Error> {
    let conn = Conn::open(
        path,
        ffi::SQLITE_OPEN_READONLY,
        "cannot open the database for a consistent read",
    )?;
    // SAFETY: a live connection; `give_up` outlives it (`conn` is dropped before we return).
    unsafe {
        ffi::sqlite3_busy_handler(
            conn.0,
            Some(busy_wait),
            give_up as *const AtomicBool as *mut c_void,
        )
    };
    conn.exec("BEGIN")?;
    // Reading the schema takes the read lock (and, in WAL mode, a read mark).
    conn.exec("SELECT count(*) FROM sqlite_schema")?;
    f();
    conn.exec("COMMIT")
}
