//! The two VFSes. `litestream` wraps the default VFS: every call passes through to the
//! local file; writes, truncates, deletes and unlocks of the main database, its WAL and its
//! journal are also reported to the database's [`Replicator`]. `litestream-replica` serves a
//! read-only main database from a replica (see `replica_vfs`).

use std::ffi::{c_char, c_int, c_void, CStr};
use std::path::{Path, PathBuf};
use std::sync::{Arc, OnceLock};

use libsqlite3_sys as ffi;

use super::guard;
use crate::config::DbConfig;
use crate::writer::Replicator;

pub const WRITER_VFS: &CStr = c"litestream";
pub const REPLICA_VFS: &CStr = c"litestream-replica";

/// The VFS we wrap ("unix" on Linux), found once.
struct Parent(*mut ffi::sqlite3_vfs);
// SAFETY: sqlite3_vfs objects are immutable after registration and live for the process.
unsafe impl Send for Parent {}
// SAFETY: as above; SQLite calls VFS methods from any thread.
unsafe impl Sync for Parent {}

static PARENT: OnceLock<Parent> = OnceLock::new();

pub(super) fn parent() -> *mut ffi::sqlite3_vfs {
    PARENT.get().map_or(std::ptr::null_mut(), |p| p.0)
}

/// The name of the VFS we wrap, for private connections that must bypass ours.
pub(super) fn parent_name() -> *const c_char {
    let p = parent();
    if p.is_null() {
        return std::ptr::null();
    }
    // SAFETY: a registered VFS's zName is a static C string.
    unsafe { (*p).zName }
}

/// What a file is to replication.
enum Role {
    Plain,
    Main(Arc<Replicator>),
    Wal(Arc<Replicator>),
    Journal(Arc<Replicator>),
}

/// Our `sqlite3_file`: SQLite allocates `szOsFile` bytes; the parent's file follows ours.
#[repr(C)]
struct FileHandle {
    base: ffi::sqlite3_file,
    inner: *mut ffi::sqlite3_file,
    role: Role,
    /// This main-database handle holds RESERVED or more: a rollback-journal write
    /// transaction may have half-written the file.
    write_lock: Option<WriteLock>,
    /// This main-database handle holds the WAL checkpoint lock: SQLite is checkpointing.
    checkpointing: bool,
}

/// How a main-database handle came to hold the write lock.
#[derive(Clone, Copy, PartialEq)]
enum WriteLock {
    /// Through RESERVED: a write transaction.
    Writing,
    /// Straight from SHARED to EXCLUSIVE: SQLite rolling back a hot journal.
    HotRollback,
}

const INNER_OFFSET: usize = std::mem::size_of::<FileHandle>().next_multiple_of(16);

/// # Safety
/// `f` must be a file opened by our xOpen (base.pMethods set by us).
unsafe fn handle<'a>(f: *mut ffi::sqlite3_file) -> &'a mut FileHandle {
    // SAFETY: the caller guarantees `f` is the start of a FileHandle we initialized.
    unsafe { &mut *(f as *mut FileHandle) }
}

/// Calls a method of the wrapped file.
macro_rules! inner_call {
    ($f:expr, $method:ident, $default:expr $(, $arg:expr)*) => {{
        // SAFETY: `inner` was opened by the parent VFS and stays valid until our xClose;
        // its pMethods table is the parent's.
        unsafe {
            let h = handle($f);
            let methods = (*h.inner).pMethods;
            match methods.as_ref().and_then(|m| m.$method) {
                Some(func) => func(h.inner $(, $arg)*),
                None => $default,
            }
        }
    }};
}

unsafe extern "C" fn io_close(f: *mut ffi::sqlite3_file) -> c_int {
    guard(ffi::SQLITE_IOERR_CLOSE, || {
        let rc = inner_call!(f, xClose, ffi::SQLITE_OK);
        // SAFETY: `f` is ours; the role is dropped exactly once, here.
        let (role, write_lock) = unsafe {
            let h = handle(f);
            (
                std::ptr::replace(&mut h.role, Role::Plain),
                h.write_lock.take(),
            )
        };
        match role {
            Role::Main(r) => {
                if let Some(lock) = write_lock {
                    r.with_capture("close", |c| {
                        c.write_lock_released(lock == WriteLock::HotRollback);
                        Ok(())
                    });
                }
                r.release()
            }
            Role::Wal(r) => r.with_capture("WAL close", |c| {
                c.wal_closed();
                Ok(())
            }),
            Role::Journal(_) | Role::Plain => {}
        }
        rc
    })
}

unsafe extern "C" fn io_read(
    f: *mut ffi::sqlite3_file,
    buf: *mut c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    inner_call!(f, xRead, ffi::SQLITE_IOERR_READ, buf, amt, off)
}

unsafe extern "C" fn io_write(
    f: *mut ffi::sqlite3_file,
    buf: *const c_void,
    amt: c_int,
    off: ffi::sqlite3_int64,
) -> c_int {
    guard(ffi::SQLITE_IOERR_WRITE, || {
        // SAFETY: `f` is ours.
        let role = unsafe { &handle(f).role };
        let (offset, len) = (off as u64, amt.max(0) as u64);
        match role {
            Role::Wal(r) if offset == 0 => {
                // A new WAL header: the old generation's frames are about to be reused.
                r.clone().around(
                    "WAL restart",
                    |c| {
                        c.before_own_write(true)?;
                        c.before_wal_header()
                    },
                    || inner_call!(f, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amt, off),
                    |c, &rc| {
                        if rc != ffi::SQLITE_OK {
                            return Ok(());
                        }
                        // SAFETY: SQLite passes `amt` readable bytes at `buf`.
                        let bytes =
                            unsafe { std::slice::from_raw_parts(buf as *const u8, len as usize) };
                        c.after_wal_header(bytes)
                    },
                )
            }
            Role::Wal(r) => {
                let r = r.clone();
                let mut rc = 0;
                let mut committed = false;
                r.with_capture("WAL write", |c| {
                    let before = c.before_own_write(true);
                    rc = inner_call!(f, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amt, off);
                    if rc == ffi::SQLITE_OK {
                        // SAFETY: SQLite passes `amt` readable bytes at `buf`.
                        let bytes =
                            unsafe { std::slice::from_raw_parts(buf as *const u8, len as usize) };
                        committed = c.after_wal_write(offset, bytes)?;
                    }
                    before
                });
                if committed {
                    r.notify();
                }
                rc
            }
            Role::Main(r) => {
                let r = r.clone();
                let mut rc = 0;
                r.with_capture("database write", |c| {
                    let before = c.before_own_write(false);
                    rc = inner_call!(f, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amt, off);
                    if rc == ffi::SQLITE_OK {
                        c.after_db_write(offset, len);
                    }
                    before
                });
                rc
            }
            Role::Journal(r) => {
                let rc = inner_call!(f, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amt, off);
                // SAFETY: SQLite passes `amt` readable bytes at `buf`.
                let bytes = unsafe { std::slice::from_raw_parts(buf as *const u8, len as usize) };
                // journal_mode=PERSIST commits by zeroing the journal header.
                if rc == ffi::SQLITE_OK && offset == 0 && bytes.iter().all(|&b| b == 0) {
                    commit_point(r);
                }
                rc
            }
            Role::Plain => inner_call!(f, xWrite, ffi::SQLITE_IOERR_WRITE, buf, amt, off),
        }
    })
}

fn commit_point(r: &Arc<Replicator>) {
    r.with_capture("commit", |c| c.commit_point());
    r.notify();
}

unsafe extern "C" fn io_truncate(f: *mut ffi::sqlite3_file, size: ffi::sqlite3_int64) -> c_int {
    guard(ffi::SQLITE_IOERR_TRUNCATE, || {
        // SAFETY: `f` is ours.
        let role = unsafe { &handle(f).role };
        match role {
            Role::Wal(r) => {
                let to = u64::try_from(size).unwrap_or(0);
                r.clone().around(
                    "WAL truncate",
                    |c| c.before_wal_truncate(to),
                    || inner_call!(f, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size),
                    |c, _| c.after_wal_truncate(to),
                )
            }
            Role::Journal(r) if size == 0 => {
                // journal_mode=TRUNCATE commits by truncating the journal to zero.
                let rc = inner_call!(f, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size);
                if rc == ffi::SQLITE_OK {
                    commit_point(r);
                }
                rc
            }
            _ => inner_call!(f, xTruncate, ffi::SQLITE_IOERR_TRUNCATE, size),
        }
    })
}

unsafe extern "C" fn io_sync(f: *mut ffi::sqlite3_file, flags: c_int) -> c_int {
    inner_call!(f, xSync, ffi::SQLITE_IOERR_FSYNC, flags)
}

unsafe extern "C" fn io_file_size(
    f: *mut ffi::sqlite3_file,
    out: *mut ffi::sqlite3_int64,
) -> c_int {
    inner_call!(f, xFileSize, ffi::SQLITE_IOERR_FSTAT, out)
}

unsafe extern "C" fn io_lock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_LOCK, || {
        let mut rc = inner_call!(f, xLock, ffi::SQLITE_IOERR_LOCK, level);
        // SAFETY: `f` is ours.
        let h = unsafe { handle(f) };
        if let Role::Main(r) = &h.role {
            // Our own full snapshot's read transaction is in the way: wait for it (bounded)
            // rather than fail the application's write with SQLITE_BUSY.
            let mut deadline = None;
            while rc == ffi::SQLITE_BUSY
                && level >= ffi::SQLITE_LOCK_RESERVED
                && r.own_snapshot_in_progress()
                && before(&mut deadline, OWN_SNAPSHOT_WAIT)
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
                rc = inner_call!(f, xLock, ffi::SQLITE_IOERR_LOCK, level);
            }
        }
        if let Role::Main(r) = &h.role {
            if rc == ffi::SQLITE_OK && level >= ffi::SQLITE_LOCK_RESERVED && h.write_lock.is_none()
            {
                let lock = if level == ffi::SQLITE_LOCK_EXCLUSIVE {
                    WriteLock::HotRollback
                } else {
                    WriteLock::Writing
                };
                h.write_lock = Some(lock);
                r.with_capture("lock", |c| {
                    c.write_lock_taken(lock == WriteLock::HotRollback);
                    Ok(())
                });
            }
        }
        rc
    })
}

/// Whether a wait of `wait` that starts at the first call is still on. The clock is read only
/// once a wait begins: locks are taken several times per commit, and almost never wait.
fn before(deadline: &mut Option<std::time::Instant>, wait: std::time::Duration) -> bool {
    let now = std::time::Instant::now();
    now < *deadline.get_or_insert(now + wait)
}

/// Longest a writer of this process waits for our own snapshot's read transaction.
const OWN_SNAPSHOT_WAIT: std::time::Duration = std::time::Duration::from_secs(60);

unsafe extern "C" fn io_unlock(f: *mut ffi::sqlite3_file, level: c_int) -> c_int {
    guard(ffi::SQLITE_IOERR_UNLOCK, || {
        // Dropping the write lock ends a rollback-journal transaction (the journal is
        // already finalized; with locking_mode=EXCLUSIVE the journal hooks catch it). Its
        // pages are read back *before* the lock goes: no other process can write them yet.
        // SAFETY: `f` is ours.
        let h = unsafe { handle(f) };
        if let Role::Main(r) = &h.role {
            if level <= ffi::SQLITE_LOCK_SHARED {
                commit_point(r);
            }
        }
        let rc = inner_call!(f, xUnlock, ffi::SQLITE_IOERR_UNLOCK, level);
        if let Role::Main(r) = &h.role {
            if level <= ffi::SQLITE_LOCK_SHARED {
                if let Some(lock) = h.write_lock.take() {
                    r.with_capture("unlock", |c| {
                        c.write_lock_released(lock == WriteLock::HotRollback);
                        Ok(())
                    });
                }
            }
        }
        rc
    })
}

unsafe extern "C" fn io_check_reserved_lock(f: *mut ffi::sqlite3_file, out: *mut c_int) -> c_int {
    inner_call!(
        f,
        xCheckReservedLock,
        ffi::SQLITE_IOERR_CHECKRESERVEDLOCK,
        out
    )
}

unsafe extern "C" fn io_file_control(
    f: *mut ffi::sqlite3_file,
    op: c_int,
    arg: *mut c_void,
) -> c_int {
    inner_call!(f, xFileControl, ffi::SQLITE_NOTFOUND, op, arg)
}

unsafe extern "C" fn io_sector_size(f: *mut ffi::sqlite3_file) -> c_int {
    inner_call!(f, xSectorSize, 4096)
}

unsafe extern "C" fn io_device_characteristics(f: *mut ffi::sqlite3_file) -> c_int {
    inner_call!(f, xDeviceCharacteristics, 0)
}

unsafe extern "C" fn io_shm_map(
    f: *mut ffi::sqlite3_file,
    region: c_int,
    size: c_int,
    extend: c_int,
    out: *mut *mut c_void,
) -> c_int {
    inner_call!(
        f,
        xShmMap,
        ffi::SQLITE_IOERR_SHMMAP,
        region,
        size,
        extend,
        out
    )
}

unsafe extern "C" fn io_shm_lock(
    f: *mut ffi::sqlite3_file,
    offset: c_int,
    n: c_int,
    flags: c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_SHMLOCK, || {
        let mut rc = inner_call!(f, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags);
        // SAFETY: `f` is ours.
        let h = unsafe { handle(f) };
        if let Role::Main(r) = &h.role {
            // The first connection to read a new WAL rebuilds its index holding the write,
            // checkpoint and recovery locks. When that is our own consistent read, the
            // application waits for it (briefly) instead of failing with an SQLITE_BUSY it
            // did not cause: a single-connection application sets no busy timeout.
            let mut deadline = None;
            while rc == ffi::SQLITE_BUSY
                && flags & ffi::SQLITE_SHM_LOCK != 0
                && offset <= WAL_RECOVER_LOCK
                && r.own_snapshot_in_progress()
                && before(&mut deadline, OWN_RECOVERY_WAIT)
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
                rc = inner_call!(f, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags);
            }
            if offset == WAL_CKPT_LOCK && n == 1 && flags & ffi::SQLITE_SHM_EXCLUSIVE != 0 {
                h.checkpointing = flags & ffi::SQLITE_SHM_LOCK != 0 && rc == ffi::SQLITE_OK;
            }
            // A checkpoint needs every read mark behind the WAL's end. Our own consistent
            // read may hold the busy one (which one is busy cannot be told here): it would cut
            // the checkpoint short, the WAL growing until the next. While it holds its read
            // lock, the checkpoint waits for it instead, as it would find no reader without
            // the extension; a PASSIVE checkpoint too. Until 2 s after the read took its lock,
            // for all checkpoints together.
            while rc == ffi::SQLITE_BUSY
                && h.checkpointing
                && flags == ffi::SQLITE_SHM_LOCK | ffi::SQLITE_SHM_EXCLUSIVE
                && offset >= WAL_READ_LOCK_0
                && r.own_snapshot_began_within(OWN_SNAPSHOT_CHECKPOINT_BUDGET)
            {
                std::thread::sleep(std::time::Duration::from_millis(1));
                rc = inner_call!(f, xShmLock, ffi::SQLITE_IOERR_SHMLOCK, offset, n, flags);
            }
            // Releasing the WAL write lock (lock 0) ends a write transaction: frames of ours
            // after the last commit frame were rolled back, and another process may overwrite
            // them next.
            if offset == WAL_WRITE_LOCK
                && flags == ffi::SQLITE_SHM_UNLOCK | ffi::SQLITE_SHM_EXCLUSIVE
            {
                r.with_capture("WAL write lock released", |c| {
                    c.wal_write_ended();
                    Ok(())
                });
            }
        }
        rc
    })
}

/// SQLite's WAL write lock: the first of the wal-index's lock bytes (then the checkpoint
/// and recovery locks, then the read marks).
const WAL_WRITE_LOCK: c_int = 0;
const WAL_CKPT_LOCK: c_int = 1;
const WAL_RECOVER_LOCK: c_int = 2;
const WAL_READ_LOCK_0: c_int = 3;

/// How long after our own consistent read took its read lock this process's checkpoints
/// still wait for it (the read of a small database's snapshot ends well within it; a large
/// or streamed one may not, and checkpoints then stop at its mark, as for any reader).
const OWN_SNAPSHOT_CHECKPOINT_BUDGET: std::time::Duration = std::time::Duration::from_secs(2);

/// Longest the application waits for our own consistent read's WAL-index recovery.
const OWN_RECOVERY_WAIT: std::time::Duration = std::time::Duration::from_secs(2);

unsafe extern "C" fn io_shm_barrier(f: *mut ffi::sqlite3_file) {
    inner_call!(f, xShmBarrier, ())
}

unsafe extern "C" fn io_shm_unmap(f: *mut ffi::sqlite3_file, delete: c_int) -> c_int {
    inner_call!(f, xShmUnmap, ffi::SQLITE_OK, delete)
}

unsafe extern "C" fn io_fetch(
    f: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    amt: c_int,
    out: *mut *mut c_void,
) -> c_int {
    // SAFETY: `out` is SQLite's out-pointer; "no mapping" is a valid answer.
    unsafe { *out = std::ptr::null_mut() };
    inner_call!(f, xFetch, ffi::SQLITE_OK, off, amt, out)
}

unsafe extern "C" fn io_unfetch(
    f: *mut ffi::sqlite3_file,
    off: ffi::sqlite3_int64,
    p: *mut c_void,
) -> c_int {
    inner_call!(f, xUnfetch, ffi::SQLITE_OK, off, p)
}

static IO_METHODS: ffi::sqlite3_io_methods = ffi::sqlite3_io_methods {
    iVersion: 3,
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
    xShmMap: Some(io_shm_map),
    xShmLock: Some(io_shm_lock),
    xShmBarrier: Some(io_shm_barrier),
    xShmUnmap: Some(io_shm_unmap),
    xFetch: Some(io_fetch),
    xUnfetch: Some(io_unfetch),
};

/// The replicator behind `f`, when it is a main database opened by the `litestream` VFS.
///
/// # Safety
/// `f` must be a live `sqlite3_file` SQLite handed out (e.g. by SQLITE_FCNTL_FILE_POINTER).
pub(super) unsafe fn replicator_of_main(f: *mut ffi::sqlite3_file) -> Option<Arc<Replicator>> {
    // SAFETY: guaranteed by the caller; only files whose methods are ours are FileHandles.
    unsafe {
        if f.is_null() || !std::ptr::eq((*f).pMethods, &IO_METHODS) {
            return None;
        }
        match &handle(f).role {
            Role::Main(r) => Some(r.clone()),
            _ => None,
        }
    }
}

/// Whether `f` is a WAL file opened by the `litestream` VFS (writes to it are captured).
///
/// # Safety
/// As [`replicator_of_main`].
pub(super) unsafe fn is_captured_wal(f: *mut ffi::sqlite3_file) -> bool {
    // SAFETY: guaranteed by the caller.
    unsafe {
        !f.is_null()
            && std::ptr::eq((*f).pMethods, &IO_METHODS)
            && matches!(handle(f).role, Role::Wal(_))
    }
}

/// URI parameters of a main database filename, as (key, value) pairs.
pub(super) fn uri_params(name: *const c_char) -> Vec<(String, String)> {
    let mut out = Vec::new();
    for i in 0.. {
        // SAFETY: `name` is a main-database filename SQLite passed to xOpen, which is valid
        // for sqlite3_uri_key/parameter; a null key ends the list.
        let key = unsafe { ffi::sqlite3_uri_key(name, i) };
        if key.is_null() {
            break;
        }
        // SAFETY: as above; SQLite returns NUL-terminated strings owned by the filename.
        let (k, v) = unsafe {
            let v = ffi::sqlite3_uri_parameter(name, key);
            let k = CStr::from_ptr(key).to_string_lossy().into_owned();
            let v = if v.is_null() {
                String::new()
            } else {
                CStr::from_ptr(v).to_string_lossy().into_owned()
            };
            (k, v)
        };
        out.push((k, v));
    }
    out
}

fn role_for(path: &Path, flags: c_int, name: *const c_char) -> Result<Role, String> {
    if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
        if super::vacuum_into::in_vacuum() {
            // VACUUM INTO's target: a local copy, never replicated.
            return Ok(Role::Plain);
        }
        let config = DbConfig::resolve(path, &uri_params(name))?;
        return Replicator::acquire(path, config, super::db_reader::open).map(Role::Main);
    }
    let s = path.to_string_lossy();
    let strip = |suffix: &str| s.strip_suffix(suffix).map(PathBuf::from);
    if flags & ffi::SQLITE_OPEN_WAL != 0 {
        if let Some(r) = strip("-wal").and_then(|db| Replicator::find(&db)) {
            r.with_capture("WAL open", |c| {
                c.wal_opened();
                Ok(())
            });
            // A full snapshot may have waited for the application's WAL (`snapshot_due`).
            r.notify();
            return Ok(Role::Wal(r));
        }
    }
    if flags & ffi::SQLITE_OPEN_MAIN_JOURNAL != 0 {
        if let Some(r) = strip("-journal").and_then(|db| Replicator::find(&db)) {
            return Ok(Role::Journal(r));
        }
    }
    Ok(Role::Plain)
}

unsafe extern "C" fn writer_open(
    _vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        let p = parent();
        // SAFETY: `file` points at szOsFile writable bytes; we lay out FileHandle and the
        // parent's file in them, and set pMethods only once both are initialized.
        unsafe {
            let inner = (file as *mut u8).add(INNER_OFFSET) as *mut ffi::sqlite3_file;
            (*file).pMethods = std::ptr::null();
            let Some(open) = (*p).xOpen else {
                return ffi::SQLITE_CANTOPEN;
            };
            // A main database this open creates is removed again if it is refused.
            let created = flags & ffi::SQLITE_OPEN_MAIN_DB != 0
                && !name.is_null()
                && !Path::new(&*CStr::from_ptr(name).to_string_lossy()).exists();
            let rc = open(p, name, inner, flags, out_flags);
            if rc != ffi::SQLITE_OK {
                return rc;
            }
            let path = (!name.is_null())
                .then(|| PathBuf::from(CStr::from_ptr(name).to_string_lossy().into_owned()));
            let role = match path {
                Some(path) => match role_for(&path, flags, name) {
                    Ok(role) => {
                        if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 {
                            super::open_errors::opened(&path);
                        }
                        role
                    }
                    Err(e) => {
                        log::error!("cannot open {}: {e}", path.display());
                        super::sqlite_log(
                            ffi::SQLITE_CANTOPEN,
                            &format!("litestream: cannot open {}: {e}", path.display()),
                        );
                        super::open_errors::failed(&path, &e);
                        if let Some(close) = (*inner).pMethods.as_ref().and_then(|m| m.xClose) {
                            close(inner);
                        }
                        // Still empty: nothing but this open can have used it.
                        if created && std::fs::metadata(&path).is_ok_and(|m| m.len() == 0) {
                            let _ = std::fs::remove_file(&path);
                        }
                        return ffi::SQLITE_CANTOPEN;
                    }
                },
                None => Role::Plain,
            };
            std::ptr::write(
                file as *mut FileHandle,
                FileHandle {
                    base: ffi::sqlite3_file {
                        pMethods: &IO_METHODS,
                    },
                    inner,
                    role,
                    write_lock: None,
                    checkpointing: false,
                },
            );
            ffi::SQLITE_OK
        }
    })
}

unsafe extern "C" fn writer_delete(
    _: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    sync_dir: c_int,
) -> c_int {
    guard(ffi::SQLITE_IOERR_DELETE, || {
        let p = parent();
        // SAFETY: `name` is a NUL-terminated path from SQLite.
        let path = unsafe { CStr::from_ptr(name) }
            .to_string_lossy()
            .into_owned();
        let delete = || {
            // SAFETY: passes SQLite's own arguments to the live parent VFS.
            unsafe {
                (*p).xDelete
                    .map_or(ffi::SQLITE_IOERR_DELETE, |f| f(p, name, sync_dir))
            }
        };
        if let Some(r) = path
            .strip_suffix("-wal")
            .and_then(|db| Replicator::find(Path::new(db)))
        {
            return r.around(
                "WAL delete",
                |c| c.before_wal_reset(),
                delete,
                |c, _| c.after_wal_reset(),
            );
        }
        let rc = delete();
        if let Some(r) = path
            .strip_suffix("-journal")
            .and_then(|db| Replicator::find(Path::new(db)))
        {
            // journal_mode=DELETE commits by deleting the journal.
            commit_point(&r);
        }
        rc
    })
}

unsafe extern "C" fn replica_open(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    file: *mut ffi::sqlite3_file,
    flags: c_int,
    out_flags: *mut c_int,
) -> c_int {
    guard(ffi::SQLITE_CANTOPEN, || {
        if flags & ffi::SQLITE_OPEN_MAIN_DB != 0 && !super::vacuum_into::in_vacuum() {
            // SAFETY: SQLite's own xOpen arguments.
            unsafe { super::replica_vfs::open_main(name, file, out_flags) }
        } else {
            // Temp files, VACUUM INTO's target and the like: plain local files (no
            // replicator matches them).
            // SAFETY: as above; our szOsFile covers the wrapped layout too.
            unsafe { writer_open(vfs, name, file, flags, out_flags) }
        }
    })
}

/// The replica VFS reports no journal or WAL beside a replica (there is none to recover).
unsafe extern "C" fn replica_access(
    vfs: *mut ffi::sqlite3_vfs,
    name: *const c_char,
    flags: c_int,
    out: *mut c_int,
) -> c_int {
    // SAFETY: `name` is a NUL-terminated path from SQLite.
    let path = unsafe { CStr::from_ptr(name) }.to_string_lossy();
    if path.ends_with("-journal") || path.ends_with("-wal") {
        // SAFETY: SQLite's out-pointer.
        unsafe { *out = 0 };
        return ffi::SQLITE_OK;
    }
    // SAFETY: passes SQLite's own arguments through.
    unsafe { x_access(vfs, name, flags, out) }
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

// Loading an extension on a connection goes through its VFS's xDl* methods: they must
// exist (a null one would be called) and simply be the parent's.
unsafe extern "C" fn x_dl_open(_: *mut ffi::sqlite3_vfs, name: *const c_char) -> *mut c_void {
    let p = parent();
    // SAFETY: as in x_delete.
    unsafe { (*p).xDlOpen.map_or(std::ptr::null_mut(), |f| f(p, name)) }
}

unsafe extern "C" fn x_dl_error(_: *mut ffi::sqlite3_vfs, n: c_int, out: *mut c_char) {
    let p = parent();
    // SAFETY: as in x_delete.
    unsafe {
        if let Some(f) = (*p).xDlError {
            f(p, n, out)
        }
    }
}

type DlSymbol = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *mut c_void, *const c_char);

unsafe extern "C" fn x_dl_sym(
    _: *mut ffi::sqlite3_vfs,
    handle: *mut c_void,
    symbol: *const c_char,
) -> Option<DlSymbol> {
    let p = parent();
    // SAFETY: as in x_delete.
    unsafe { (*p).xDlSym.and_then(|f| f(p, handle, symbol)) }
}

unsafe extern "C" fn x_dl_close(_: *mut ffi::sqlite3_vfs, handle: *mut c_void) {
    let p = parent();
    // SAFETY: as in x_delete.
    unsafe {
        if let Some(f) = (*p).xDlClose {
            f(p, handle)
        }
    }
}

type OpenFn = unsafe extern "C" fn(
    *mut ffi::sqlite3_vfs,
    *const c_char,
    *mut ffi::sqlite3_file,
    c_int,
    *mut c_int,
) -> c_int;
type DeleteFn = unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *const c_char, c_int) -> c_int;
type AccessFn =
    unsafe extern "C" fn(*mut ffi::sqlite3_vfs, *const c_char, c_int, *mut c_int) -> c_int;

fn make_vfs(
    name: &'static CStr,
    parent: *mut ffi::sqlite3_vfs,
    open: OpenFn,
    delete: DeleteFn,
    access: AccessFn,
) -> *mut ffi::sqlite3_vfs {
    // SAFETY: `parent` is the live default VFS; reading its size fields is sound.
    let (sz, mx) = unsafe { ((*parent).szOsFile, (*parent).mxPathname) };
    // Room for a wrapped file (ours + the parent's) or a replica handle, whichever is larger.
    let size = (INNER_OFFSET + sz as usize).max(super::replica_vfs::HANDLE_SIZE);
    Box::into_raw(Box::new(ffi::sqlite3_vfs {
        iVersion: 2,
        szOsFile: size as c_int,
        mxPathname: mx,
        pNext: std::ptr::null_mut(),
        zName: name.as_ptr(),
        pAppData: std::ptr::null_mut::<c_void>(),
        xOpen: Some(open),
        xDelete: Some(delete),
        xAccess: Some(access),
        xFullPathname: Some(x_full_pathname),
        xDlOpen: Some(x_dl_open),
        xDlError: Some(x_dl_error),
        xDlSym: Some(x_dl_sym),
        xDlClose: Some(x_dl_close),
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
            let vfses = [
                make_vfs(WRITER_VFS, default, writer_open, writer_delete, x_access),
                make_vfs(REPLICA_VFS, default, replica_open, x_delete, replica_access),
            ];
            for vfs in vfses {
                // SAFETY: `vfs` is a fully initialized, never-freed sqlite3_vfs (leaked on
                // purpose: a registered VFS must outlive every connection).
                let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 0) };
                if rc != ffi::SQLITE_OK {
                    return Err(format!("cannot register a VFS: error {rc}"));
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

/// Makes `name` (any registered VFS: ours, or "unix" to go back) the process default, for
/// hosts that cannot pass `vfs=` (better-sqlite3 opens without URI support). Returns the name
/// of the previous default.
pub fn set_default(name: &str) -> Result<String, String> {
    let c = super::cstring(name);
    // SAFETY: vfs_find only reads SQLite's registry; a null name gives the current default.
    let (vfs, previous) = unsafe {
        (
            ffi::sqlite3_vfs_find(c.as_ptr()),
            ffi::sqlite3_vfs_find(std::ptr::null()),
        )
    };
    if vfs.is_null() {
        return Err(format!("no VFS named {name:?}"));
    }
    // SAFETY: `previous` is a registered VFS whose zName is a valid C string.
    let previous = unsafe { CStr::from_ptr((*previous).zName) }
        .to_string_lossy()
        .into_owned();
    // SAFETY: re-registering a registered VFS only moves it to the head of the list.
    let rc = unsafe { ffi::sqlite3_vfs_register(vfs, 1) };
    if rc != ffi::SQLITE_OK {
        return Err(format!("cannot make {name:?} the default VFS: error {rc}"));
    }
    Ok(previous)
}
