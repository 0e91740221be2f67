//! litestream: a SQLite extension that replicates every commit to object storage as LTX files
//! (byte-compatible with Litestream 0.5.x), restores them, and reads replicas in place.
//!
//! Data flows one way: SQLite -> capture -> spool -> shipper -> store, and
//! store -> index/cache -> replica VFS. `ltx` knows nothing of S3; `storage` nothing of SQLite.

pub mod config;
pub mod error;
pub mod logging;
pub mod ltx;
pub mod pitr;
pub mod replica;
pub mod restore;
pub mod runtime;
pub mod sql;
pub mod sqlite;
pub mod storage;
pub mod sysfile;
pub mod timefmt;
pub mod writer;

pub use error::Error;

use std::ffi::{c_char, c_int};

use libsqlite3_sys as ffi;

/// Entry point SQLite derives from the file name `liblitestream.so`.
///
/// # Safety
/// Called by SQLite with a valid connection and API routine table.
#[no_mangle]
pub unsafe extern "C" fn sqlite3_litestream_init(
    db: *mut ffi::sqlite3,
    err_msg: *mut *mut c_char,
    api: *mut ffi::sqlite3_api_routines,
) -> c_int {
    sqlite::guard(ffi::SQLITE_ERROR, || {
        // SAFETY: SQLite passes its routine table; this only stores the function pointers.
        if let Err(e) = unsafe { ffi::rusqlite_extension_init2(api) } {
            return fail(err_msg, &format!("litestream: incompatible SQLite: {e}"));
        }
        // Only the first load returns SQLITE_OK_LOAD_PERMANENTLY: SQLite takes any other code
        // from an auto-extension (every later connection) as a failure once extended result
        // codes are on, as apsw turns them on ("automatic extension loading failed").
        let first_load = AUTO_EXTENSION.get().is_none_or(|&rc| rc != ffi::SQLITE_OK);
        logging::init();
        writer::set_consistent_read(sqlite::read_lock::with_read_transaction);
        let setup = sqlite::vfs::register()
            // SAFETY: SQLite passes the live connection being initialized.
            .and_then(|()| {
                sql::register_all(&unsafe { sqlite::functions::Connection::from_raw(db) })
            })
            // SAFETY: as above: the live connection being initialized, on this thread.
            .and_then(|()| unsafe { sqlite::vacuum_into::install_if_ours(db) })
            .and_then(|()| register_auto_extension())
            .map(|()| register_exit_flush());
        match setup {
            Ok(()) if first_load => ffi::SQLITE_OK_LOAD_PERMANENTLY,
            Ok(()) => ffi::SQLITE_OK,
            Err(e) => fail(err_msg, &format!("litestream: {e}")),
        }
    })
}

fn fail(err_msg: *mut *mut c_char, msg: &str) -> c_int {
    if !err_msg.is_null() {
        // SAFETY: SQLite gives a writable out-pointer; the message is sqlite3_malloc'ed as required.
        unsafe { *err_msg = sqlite::sqlite_owned_message(msg) };
    }
    ffi::SQLITE_ERROR
}

static AUTO_EXTENSION: std::sync::OnceLock<c_int> = std::sync::OnceLock::new();

/// Makes every later connection of the process get the SQL functions too.
fn register_auto_extension() -> Result<(), String> {
    let rc = *AUTO_EXTENSION.get_or_init(|| {
        type Init = unsafe extern "C" fn(
            *mut ffi::sqlite3,
            *mut *mut c_char,
            *mut ffi::sqlite3_api_routines,
        ) -> c_int;
        let init: Init = sqlite3_litestream_init;
        // SAFETY: SQLite calls auto-extensions with exactly the entry point signature; the
        // C API declares the argument as `void(*)(void)`, hence the cast.
        unsafe {
            ffi::sqlite3_auto_extension(Some(std::mem::transmute::<Init, unsafe extern "C" fn()>(
                init,
            )))
        }
    });
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("cannot register the auto-extension: error {rc}"))
    }
}

/// Flushes replicas when the process exits normally (`exit()` / returning from `main`).
fn register_exit_flush() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    extern "C" fn at_exit() {
        sqlite::guard((), writer::flush_all_at_exit);
    }
    ONCE.call_once(|| {
        // SAFETY: registers a plain function with no arguments; it never unwinds (guarded).
        unsafe { libc::atexit(at_exit) };
    });
}
