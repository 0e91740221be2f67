//! The file-locking system call std does not offer (the other FFI edge of the crate, beside
//! `sqlite/`): `flock`, for the owner lock. Never POSIX locks: SQLite's own are POSIX locks,
//! and closing any descriptor of a file drops all of a process's POSIX locks on it.

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
