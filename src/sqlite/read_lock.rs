//! A consistent view of a database for a full snapshot: a read transaction on a private,
//! read-only connection through the parent VFS (so none of our capture hooks run on it).
//! While it is open no process can commit in rollback-journal mode, and in WAL mode no
//! checkpoint can copy frames past it or restart the WAL under it.

use std::ffi::{c_char, CStr};
use std::path::Path;

use libsqlite3_sys as ffi;

use super::cstring;
use super::functions::Connection;
use crate::Error;

/// How long the read transaction waits for a writer to finish (its commit is short; a
/// longer wait is tried again at the shipper's next pass).
const BUSY_TIMEOUT_MS: i32 = 2_000;

struct Conn(*mut ffi::sqlite3);

impl Drop for Conn {
    fn drop(&mut self) {
        // SAFETY: a connection we opened, with no statement left open (exec finalizes its own); null is accepted.
        unsafe { ffi::sqlite3_close(self.0) };
    }
}

impl Conn {
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

/// Runs `f` while a read transaction on `path` holds the database still.
pub fn with_read_transaction(path: &Path, f: &mut dyn FnMut()) -> Result<(), Error> {
    let name = cstring(&path.to_string_lossy());
    let vfs: *const c_char = super::vfs::parent_name();
    let mut db = std::ptr::null_mut();
    // SAFETY: valid NUL-terminated strings; `db` receives a handle even on failure, which
    // `Conn` closes.
    let rc =
        unsafe { ffi::sqlite3_open_v2(name.as_ptr(), &mut db, ffi::SQLITE_OPEN_READONLY, vfs) };
    let conn = Conn(db);
    if rc != ffi::SQLITE_OK {
        return Err(conn.error("cannot open the database for a consistent read", rc));
    }
    // SAFETY: a live connection.
    unsafe { ffi::sqlite3_busy_timeout(conn.0, BUSY_TIMEOUT_MS) };
    conn.exec("BEGIN")?;
    // Reading the schema takes the read lock (and, in WAL mode, a read mark).
    conn.exec("SELECT count(*) FROM sqlite_schema")?;
    f();
    conn.exec("COMMIT")
}
