//! `VACUUM INTO 'copy.db'` on a connection of our VFSes. SQLite runs it as
//! `ATTACH 'copy.db' AS vacuum_db` (opened with SQLITE_OPEN_CREATE), through the
//! connection's VFS, as a main database: `litestream` would replicate it (or refuse it and
//! leave an empty file, with no replica configured) and `litestream-replica` would look for
//! a replica of it. The target is a local copy the user asked for, so it is a plain local
//! file: a statement trace hook notes, per thread, that the statement running is a VACUUM,
//! and main databases our VFSes open until it ends are passed through untouched.
//!
//! The hook is SQLite's one `sqlite3_trace_v2` slot of the connection; a host that sets its
//! own replaces it, and VACUUM INTO on that connection is then refused like any ATTACH of a
//! database without a replica (a target given as `file:copy.db?vfs=unix` always works on a
//! connection with URI filenames enabled).

use std::cell::Cell;
use std::ffi::{c_char, c_int, c_uint, c_void, CStr};

use libsqlite3_sys as ffi;

use super::guard;
use super::vfs::{REPLICA_VFS, WRITER_VFS};

thread_local! {
    /// The statement this thread runs now is a VACUUM (set at its start, cleared at its end
    /// or at the start of the next statement).
    static IN_VACUUM: Cell<bool> = const { Cell::new(false) };
}

/// Whether the statement running on this thread is a VACUUM: a main database opened now is
/// its `INTO` target.
pub fn in_vacuum() -> bool {
    IN_VACUUM.with(Cell::get)
}

/// Whether `sql` starts (after blanks and comments) with the keyword VACUUM.
fn is_vacuum(sql: &[u8]) -> bool {
    let mut s = sql;
    loop {
        match s {
            [c, rest @ ..] if c.is_ascii_whitespace() => s = rest,
            [b'-', b'-', rest @ ..] => {
                s = rest
                    .iter()
                    .position(|&c| c == b'\n')
                    .map_or(&[][..], |i| &rest[i + 1..])
            }
            [b'/', b'*', rest @ ..] => {
                s = rest
                    .windows(2)
                    .position(|w| w == b"*/")
                    .map_or(&[][..], |i| &rest[i + 2..])
            }
            _ => break,
        }
    }
    s.len() >= 6
        && s[..6].eq_ignore_ascii_case(b"vacuum")
        && s.get(6)
            .is_none_or(|c| !(c.is_ascii_alphanumeric() || *c == b'_' || *c >= 0x80))
}

unsafe extern "C" fn trace(kind: c_uint, _: *mut c_void, _: *mut c_void, x: *mut c_void) -> c_int {
    guard(0, || {
        if kind == ffi::SQLITE_TRACE_STMT {
            let sql = if x.is_null() {
                &[][..]
            } else {
                // SAFETY: for SQLITE_TRACE_STMT, X is the statement's NUL-terminated SQL
                // text (or a comment naming a trigger), valid during the callback.
                unsafe { CStr::from_ptr(x as *const c_char) }.to_bytes()
            };
            IN_VACUUM.set(is_vacuum(sql));
        } else if kind == ffi::SQLITE_TRACE_PROFILE {
            // A statement ended (done, failed or reset).
            IN_VACUUM.set(false);
        }
        0
    })
}

/// Installs the hook on `db` when its main database is opened by one of our VFSes.
///
/// # Safety
/// `db` must be a live connection, used on this thread for the duration of the call.
pub unsafe fn install_if_ours(db: *mut ffi::sqlite3) -> Result<(), String> {
    let mut vfs: *mut ffi::sqlite3_vfs = std::ptr::null_mut();
    // SAFETY: a live connection (the caller's guarantee); the opcode writes one VFS pointer.
    let rc = unsafe {
        ffi::sqlite3_file_control(
            db,
            c"main".as_ptr(),
            ffi::SQLITE_FCNTL_VFS_POINTER,
            &mut vfs as *mut _ as *mut c_void,
        )
    };
    if rc != ffi::SQLITE_OK || vfs.is_null() {
        return Ok(());
    }
    // SAFETY: a registered VFS, whose zName is a NUL-terminated string for its lifetime.
    let name = unsafe { CStr::from_ptr((*vfs).zName) };
    if name != WRITER_VFS && name != REPLICA_VFS {
        return Ok(());
    }
    let mask = ffi::SQLITE_TRACE_STMT | ffi::SQLITE_TRACE_PROFILE;
    // SAFETY: a live connection; `trace` matches the callback signature and needs no
    // context pointer.
    let rc = unsafe { ffi::sqlite3_trace_v2(db, mask, Some(trace), std::ptr::null_mut()) };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("cannot install the VACUUM INTO hook: error {rc}"))
    }
}

#[cfg(test)]
mod tests {
    use super::is_vacuum;

    #[test]
    fn vacuum_statements_are_recognised() {
        for yes in [
            "VACUUM INTO 'copy.db'",
            "vacuum main into ?",
            "  \n\tVacuum",
            "-- a copy\nVACUUM INTO 'x'",
            "/* a copy */ vacuum into 'x'",
            "VACUUM;",
        ] {
            assert!(is_vacuum(yes.as_bytes()), "{yes}");
        }
        for no in [
            "SELECT 'VACUUM INTO x'",
            "vacuumx",
            "vacuum_table",
            "ATTACH 'copy.db' AS vacuum_db",
            "-- VACUUM",
            "/* VACUUM",
            "",
        ] {
            assert!(!is_vacuum(no.as_bytes()), "{no}");
        }
    }
}
