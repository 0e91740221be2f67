//! The `litestream-replica` VFS: a read-only main database served by [`ReplicaFile`];
//! every other file (temp files of sorts and such) goes to the default VFS.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::PathBuf;

use libsqlite3_sys as ffi;

use super::guard;
use super::vfs::uri_params;
use crate::config::ReplicaConfig;
use crate::replica::ReplicaFile;

/// `sqlite3_file_control` opcode that hands SQL functions the connection's [`ReplicaFile`].
pub const FCNTL_REPLICA_FILE: c_int = 0x4c53_5231;

#[repr(C)]
struct ReplicaHandle {
    base: ffi::sqlite3_file,
    file: ReplicaFile,
}

pub const HANDLE_SIZE: usize = std::mem::size_of::<ReplicaHandle>();

/// # Safety
/// `f` must be a main-database file opened by [`open_main`].
unsafe fn replica<'a>(f: *mut ffi::sqlite3_file) -> &'a mut ReplicaFile {
    // SAFETY: guaranteed by the caller.
    unsafe { &mut (*(f as *mut ReplicaHandle)).file }
}

unsafe extern "C" fn io_close(f: *mut ffi::sqlite3_file) -> c_int {
    guard(ffi::SQLITE_IOERR_CLOSE, || {
        // SAFETY: `f` is ours and is closed exactly once; SQLite frees the memory after.
        unsafe { std::ptr::drop_in_place(f as *mut ReplicaHandle) };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn io_read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_READ, || {
        // SAFETY: SQLite passes `amt` writable bytes at `buf`; `f` is ours.
        let (file, out) = unsafe {
            (
                replica(f),
                std::slice::from_raw_parts_mut(buf as *mut u8, amt.max(0) as usize),
            )
        };
        match file.read(out, off as u64) {
            Ok(n) if n == out.len() => ffi::SQLITE_OK,
            Ok(n) => {
                out[n..].fill(0);
                ffi::SQLITE_IOERR_SHORT_READ
            }
            Err(e) => {
                // SQLite can only say "disk I/O error": the reason goes to its error log,
                // ours, and litestream_status() (`last_read_error`).
                let msg = format!(
                    "litestream-replica: read of {} at offset {off} failed: {e}",
                    file.db.describe()
                );
                log::warn!("{msg}");
                super::sqlite_log(ffi::SQLITE_IOERR_READ, &msg);
                file.db.record_read_error(&msg);
                ffi::SQLITE_IOERR_READ
            }
        }
    })
}

unsafe extern "C" fn io_write(
    _: *mut ffi::sqlite3_file,
    _: *const c_void,
    _: c_int,
    _: ffi::sqlite3_int64,
) -> c_int {
    ffi::SQLITE_READONLY
}

unsafe extern "C" fn io_truncate(_: *mut ffi::sqlite3_file, _: ffi::sqlite3_int64) -> c_int {
    ffi::SQLITE_READONLY
}

unsafe extern "C" fn io_sync(_: *mut ffi::sqlite3_file, _: c_int) -> c_int {
    ffi::SQLITE_OK
}

unsafe extern "C" fn io_file_size(
    f: *mut ffi::sqlite3_file,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_FSTAT, || {
        // SAFETY: `f` is ours; `out` is SQLite's out-pointer.
        unsafe { *out = replica(f).file_size() as ffi::sqlite3_int64 };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn io_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_LOCK, || {
        if level > ffi::SQLITE_LOCK_SHARED {
            return ffi::SQLITE_READONLY;
        }
        // A read transaction starts: it sees one version until it ends.
        // SAFETY: `f` is ours.
        unsafe { replica(f).begin_read() };
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn io_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_UNLOCK, || {
        if level == ffi::SQLITE_LOCK_NONE {
            // SAFETY: `f` is ours.
            unsafe { replica(f).end_read() };
        }
        ffi::SQLITE_OK
    })
}

unsafe extern "C" fn io_check_reserved_lock(_: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    // SAFETY: SQLite's out-pointer. Nobody writes a replica through us.
    unsafe { *out = 0 };
    ffi::SQLITE_OK
}

unsafe extern "C" fn io_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    if op == FCNTL_REPLICA_FILE && !arg.is_null() {
        // SAFETY: our SQL functions pass a `*mut *mut c_void` for this opcode; `f` is ours.
        unsafe { *(arg as *mut *mut c_void) = replica(f) as *mut ReplicaFile as *mut c_void };
        return ffi::SQLITE_OK;
    }
    ffi::SQLITE_NOTFOUND
}

unsafe extern "C" fn io_sector_size(_: *mut ffi::sqlite3_file) -> c_int {
    4096
}

unsafe extern "C" fn io_device_characteristics(_: *mut ffi::sqlite3_file) -> c_int {
    0
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 1,
    xClose: Some(io_close),
    xRead: Some(io_read),
    xWrite: Some(io_write),
    xTruncate: Some(io_truncate),
    xSync: Some(io_sync),
    xFileSize: Some(io_file_size),
    xLock: Some(io_lock),
    xUnlock: Some(io_unlock),
    xCheckReservedLock: Some(io_check_reserved_lock),
    xFileControl: Some(io_file_control),
    xSectorSize: Some(io_sector_size),
    xDeviceCharacteristics: Some(io_device_characteristics),
    xShmMap: None,
    xShmLock: None,
    xShmBarrier: None,
    xShmUnmap: None,
    xFetch: None,
    xUnfetch: None,
};

fn open_replica(path: &std::path::Path, name: *const c_char) -> Result<ReplicaFile, String> {
    let (config, target) = ReplicaConfig::resolve(path, &uri_params(name))?;
    ReplicaFile::open(config, target)
}

/// Opens the main database of a `litestream-replica` connection.
///
/// # Safety
/// SQLite's xOpen arguments for a main database.
pub unsafe fn open_main(
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    out_flags: *mut c_int,
) -> c_int {
    // SAFETY: `file` has szOsFile bytes; pMethods stays null unless we fully initialize it.
    unsafe { (*file).pMethods = std::ptr::null() };
    if name.is_null() {
        return ffi::SQLITE_CANTOPEN;
    }
    // SAFETY: `name` is SQLite's NUL-terminated filename.
    let path = PathBuf::from(
        unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned(),
    );
    match open_replica(&path, name) {
        Ok(replica) => {
            super::open_errors::opened(&path);
            // SAFETY: see above; the handle is written whole before pMethods is published.
            unsafe {
                std::ptr::write(
                    file as *mut ReplicaHandle,
                    ReplicaHandle {
                        base: ffi::sqlite3_file {
                            pMethods: &IO_METHODS,
                        },
                        file: replica,
                    },
                );
                if !out_flags.is_null() {
                    *out_flags = ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_MAIN_DB;
                }
            }
            ffi::SQLITE_OK
        }
        Err(e) => {
            log::error!("cannot open replica {}: {e}", path.display());
            super::sqlite_log(
                ffi::SQLITE_CANTOPEN,
                &format!("litestream: cannot open replica {}: {e}", path.display()),
            );
            super::open_errors::failed(&path, &e);
            ffi::SQLITE_CANTOPEN
        }
    }
}
