//! VFS registration. Both names exist from the first load; until their implementations land
//! they refuse to open a database, with a clear message in the log, and delegate every other
//! call to the default VFS.

use std::ffi::{c_char, c_int, c_void, CStr};
use std::sync::OnceLock;

use libsqlite3_sys as ffi;

use super::guard;

pub const WRITER_VFS: &CStr = c"litestream";
pub const REPLICA_VFS: &CStr = c"litestream-replica";

/// The VFS we wrap ("unix" on Linux), found once.
struct Parent(*mut ffi::sqlite3_vfs);
// SAFETY: sqlite3_vfs objects are immutable after registration and live for the process.
unsafe impl Send for Parent {}
// SAFETY: as above; SQLite calls VFS methods from any thread.
unsafe impl Sync for Parent {}

static PARENT: OnceLock<Parent> = OnceLock::new();

fn parent() -> *mut ffi::sqlite3_vfs {
    PARENT.get().map_or(std::ptr::null_mut(), |p| p.0)
}

unsafe extern "C" fn x_open(
    vfs: *mut ffi::sqlite3_vfs,
    _name: *const c_char,
    _file: *mut ffi::sqlite3_file,
    _flags: c_int,
    _out_flags: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        // SAFETY: `vfs` is one of ours, whose zName is a static C string.
        let name = unsafe { CStr::from_ptr((*vfs).zName) }.to_string_lossy();
        log::error!("the {name} VFS is not implemented yet in this build");
        ffi::SQLITE_CANTOPEN
    })
}

unsafe extern "C" fn x_delete(
    _: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    let p = parent();
    // SAFETY: the parent VFS is live and these are SQLite's own arguments, passed through.
    unsafe {
        (*p).xDelete
            .map_or(ffi::SQLITE_ERROR, |f| f(p, name, sync_dir))
    }
}

unsafe extern "C" fn x_access(
    _: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    let p = parent();
    // SAFETY: as in x_delete.
    unsafe {
        (*p).xAccess
            .map_or(ffi::SQLITE_ERROR, |f| f(p, name, flags, out))
    }
}

unsafe extern "C" fn x_full_pathname(
    _: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let p = parent();
    // SAFETY: as in x_delete.
    unsafe {
        (*p).xFullPathname
            .map_or(ffi::SQLITE_ERROR, |f| f(p, name, n, out))
    }
}

unsafe extern "C" fn x_randomness(_: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) -> c_int {
    let p = parent();
    // SAFETY: as in x_delete.
    unsafe { (*p).xRandomness.map_or(0, |f| f(p, n, out)) }
}

unsafe extern "C" fn x_sleep(_: *mut ffi::sqlite3_vfs, micros: c_int) -> c_int {
    let p = parent();
    // SAFETY: as in x_delete.
    unsafe { (*p).xSleep.map_or(0, |f| f(p, micros)) }
}

unsafe extern "C" fn x_current_time(_: *mut ffi::sqlite3_vfs, out: *mut f64) -> c_int {
    let p = parent();
    // SAFETY: as in x_delete.
    unsafe { (*p).xCurrentTime.map_or(ffi::SQLITE_ERROR, |f| f(p, out)) }
}

unsafe extern "C" fn x_current_time_int64(
    _: *mut ffi::sqlite3_vfs,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    let p = parent();
    // SAFETY: as in x_delete; iVersion >= 2 guarantees the field exists.
    unsafe {
        if (*p).iVersion >= 2 {
            (*p).xCurrentTimeInt64
                .map_or(ffi::SQLITE_ERROR, |f| f(p, out))
        } else {
            ffi::SQLITE_ERROR
        }
    }
}

unsafe extern "C" fn x_get_last_error(
    _: *mut ffi::sqlite3_vfs,
    n: c_int,
    out: *mut c_char,
) -> c_int {
    let p = parent();
    // SAFETY: as in x_delete.
    unsafe { (*p).xGetLastError.map_or(0, |f| f(p, n, out)) }
}

fn make_vfs(name: &'static CStr, parent: *mut ffi::sqlite3_vfs) -> *mut ffi::sqlite3_vfs {
    // SAFETY: `parent` is the live default VFS; reading its size fields is sound.
    let (sz, mx) = unsafe { ((*parent).szOsFile, (*parent).mxPathname) };
    Box::into_raw(Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: sz,
        mxPathname: mx,
        pNext: std::ptr::null_mut(),
        zName: name.as_ptr(),
        pAppData: std::ptr::null_mut::<c_void>(),
        xOpen: Some(x_open),
        xDelete: Some(x_delete),
        xAccess: Some(x_access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: None,
        xDlError: None,
        xDlSym: None,
        xDlClose: None,
        xRandomness: Some(x_randomness),
        xSleep: Some(x_sleep),
        xCurrentTime: Some(x_current_time),
        xGetLastError: Some(x_get_last_error),
        xCurrentTimeInt64: Some(x_current_time_int64),
        xSetSystemCall: None,
        xGetSystemCall: None,
        xNextSystemCall: None,
    }))
}

/// Registers both VFS names once per process (never as the default VFS).
pub fn register() -> Result<(), String> {
    static RESULT: OnceLock<Result<(), String>> = OnceLock::new();
    RESULT
        .get_or_init(|| {
            // SAFETY: the API is initialized by the entry point before this runs.
            let default = unsafe { ffi::sqlite3_vfs_find(std::ptr::null()) };
            if default.is_null() {
                return Err("no default VFS to wrap".into());
            }
            let _ = PARENT.set(Parent(default));
            for name in [WRITER_VFS, REPLICA_VFS] {
                // Leaked on purpose: a registered VFS must outlive every connection.
                let vfs = make_vfs(name, default);
                // SAFETY: `vfs` is a fully initialized, never-freed sqlite3_vfs.
                let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
                if rc != ffi::SQLITE_OK {
                    return Err(format!("cannot register VFS {name:?}: error {rc}"));
                }
            }
            Ok(())
        })
        .clone()
}

/// Our VFS names that SQLite can find right now.
pub fn registered_names() -> Vec<String> {
    [WRITER_VFS, REPLICA_VFS]
        .iter()
        // SAFETY: sqlite3_vfs_find only reads the registry; the names are static C strings.
        .filter(|name| !unsafe { ffi::sqlite3_vfs_find(name.as_ptr()) }.is_null())
        .map(|name| name.to_string_lossy().into_owned())
        .collect()
}
