//! The FFI edge: safe wrappers over the SQLite C API. Every `unsafe` block of the crate
//! lives under this module, each with a `// SAFETY:` line.

pub mod db_reader;
pub mod file;
pub mod functions;
pub mod open_errors;
pub mod read_lock;
pub mod replica_vfs;
pub mod rollback;
pub mod vacuum_into;
pub mod vfs;

use std::ffi::{c_char, c_int, CString};
use std::panic::{catch_unwind, AssertUnwindSafe};

use libsqlite3_sys as ffi;

/// Runs `f`, turning a panic into `on_panic`: a panic must never cross into C.
pub fn guard<T>(on_panic: T, f: impl FnOnce() -> T) -> T {
    catch_unwind(AssertUnwindSafe(f)).unwrap_or_else(|payload| {
        let msg = payload
            .downcast_ref::<&str>()
            .map(|s| s.to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "unknown panic".into());
        log::error!("internal error (panic) caught at the SQLite boundary: {msg}");
        on_panic
    })
}

/// A C string for SQLite; interior NULs (never expected) are replaced.
pub fn cstring(s: &str) -> CString {
    CString::new(s.replace('\0', "?")).expect("no NUL left")
}

/// Sends `msg` to SQLite's error log (`SQLITE_CONFIG_LOG`, where hosts collect what SQLite
/// itself cannot put in an error message, e.g. why a read failed with "disk I/O error").
pub fn sqlite_log(code: c_int, msg: &str) {
    let c = cstring(msg);
    // SAFETY: "%s" takes exactly the one NUL-terminated string passed; sqlite3_log copies
    // what it needs before returning and may be called from any thread.
    unsafe { ffi::sqlite3_log(code, c"%s".as_ptr(), c.as_ptr()) }
}

/// Copies `msg` into memory from `sqlite3_malloc`, as `*pzErrMsg` of an extension entry
/// point must be.
pub fn sqlite_owned_message(msg: &str) -> *mut c_char {
    let c = cstring(msg);
    let bytes = c.as_bytes_with_nul();
    // SAFETY: sqlite3_malloc returns either null or a buffer of at least the requested size,
    // which we fill with exactly that many bytes.
    unsafe {
        let p = ffi::sqlite3_malloc(bytes.len() as c_int) as *mut c_char;
        if !p.is_null() {
            std::ptr::copy_nonoverlapping(bytes.as_ptr() as *const c_char, p, bytes.len());
        }
        p
    }
}
