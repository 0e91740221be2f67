//! The system calls std does not offer (the other FFI edge of the crate, beside
//! `sqlite/`): `flock`, for the owner lock, and `statvfs`, for the spool's free space. Never
//! POSIX locks: SQLite's own are POSIX locks, and closing any descriptor of a file drops all
//! of a process's POSIX locks on it.

use std::fs::File;
use std::io;
use std::os::fd::AsRawFd;

fn flock(file: &File, op: libc::c_int) -> io::Result<bool> {
    // SAFETY: a valid open descriptor; flock has no memory arguments.
    let rc = unsafe { libc::flock(file.as_raw_fd(), op | libc::LOCK_NB) };
    if rc == 0 {
        return Ok(true);
    }
    let e = io::Error::last_os_error();
    if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
        Ok(false)
    } else {
        Err(e)
    }
}

/// Takes an exclusive `flock` without waiting; false if another open file holds one.
pub fn try_flock_exclusive(file: &File) -> io::Result<bool> {
    flock(file, libc::LOCK_EX)
}

/// Takes a shared `flock` without waiting (and keeps it until `file` closes); false if an
/// exclusive one is held elsewhere.
pub fn try_flock_shared(file: &File) -> io::Result<bool> {
    flock(file, libc::LOCK_SH)
}

/// Bytes an unprivileged writer may still put on the filesystem holding `path`.
pub fn available_bytes(path: &std::path::Path) -> io::Result<u64> {
    use std::os::unix::ffi::OsStrExt;
    let c_path = std::ffi::CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: all-zero is a valid `statvfs` (plain integers), filled in by the call below.
    let mut st: libc::statvfs = unsafe { std::mem::zeroed() };
    // SAFETY: `c_path` is a NUL-terminated string and `st` a valid place to write to.
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut st) } != 0 {
        return Err(io::Error::last_os_error());
    }
    // Both are u64 on Linux (c_ulong and fsblkcnt_t); `as` keeps other targets building.
    #[allow(clippy::unnecessary_cast)]
    Ok((st.f_bavail as u64).saturating_mul(st.f_frsize as u64))
}

/// The filesystem is full (or the user's quota is).
pub fn is_disk_full(e: &io::Error) -> bool {
    e.kind() == io::ErrorKind::StorageFull
        || matches!(e.raw_os_error(), Some(libc::ENOSPC) | Some(libc::EDQUOT))
}
