//! The live database, read by the capture through SQLite's own VFS rather than through a
//! descriptor of ours. SQLite's locks are POSIX locks, which closing *any* descriptor of the
//! file drops for the whole process: a capture closing its own descriptor after the last
//! `litestream` connection closed silently unlocked every other connection of the process
//! (a plain one's read transaction, a reopened one's lock). The unix VFS keeps a closed
//! file's descriptor until the process's last lock on the file is released; a file opened
//! through it gets the same care.

use std::ffi::{c_int, c_void};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::Path;

use libsqlite3_sys as ffi;

use super::vfs::parent;
use crate::writer::DbFile;

/// A read-only `sqlite3_file` of the parent VFS, closed through it on drop.
struct VfsDbFile {
    /// The parent's file object (`szOsFile` bytes, 8-byte aligned).
    file: Box<[u64]>,
    /// The name SQLite's file keeps a pointer to for its whole life.
    _name: Box<[u8]>,
    /// The path's inode right after the open: the file this reads from then on.
    inode: u64,
}

// SAFETY: the unix VFS's file methods may be called from any thread; the capture that owns
// this file uses it under its mutex, so never from two threads at once.
unsafe impl Send for VfsDbFile {}

/// Opens `path` read-only through the VFS `litestream` wraps.
pub fn open(path: &Path) -> io::Result<Box<dyn DbFile>> {
    // Its kind kept (NotFound: no database yet), its message naming the file.
    let inode_now = || {
        std::fs::metadata(path)
            .map(|m| std::os::unix::fs::MetadataExt::ino(&m))
            .map_err(|e| io::Error::new(e.kind(), format!("{}: {e}", path.display())))
    };
    let before = inode_now()?;
    let vfs = parent();
    if vfs.is_null() {
        return Err(io::Error::other(
            "the VFS litestream wraps is not registered",
        ));
    }
    // Laid out as SQLite's own file names are: four NULs before (where sqlite3_filename_*
    // look back), the path, several NULs after (where URI parameters would follow).
    let path_bytes = path.as_os_str().as_bytes();
    if path_bytes.contains(&0) {
        return Err(io::Error::other("a database path with a NUL byte"));
    }
    let mut name = vec![0u8; 4];
    name.extend_from_slice(path_bytes);
    name.extend_from_slice(&[0; 4]);
    let name = name.into_boxed_slice();
    // SAFETY: a registered VFS lives for the process; szOsFile is its file object's size.
    let (size, xopen) = unsafe { ((*vfs).szOsFile as usize, (*vfs).xOpen) };
    let Some(xopen) = xopen else {
        return Err(io::Error::other("the parent VFS cannot open files"));
    };
    let mut file = vec![0u64; size.div_ceil(8).max(1)].into_boxed_slice();
    let raw = file.as_mut_ptr() as *mut ffi::sqlite3_file;
    let mut out_flags: c_int = 0;
    let flags = ffi::SQLITE_OPEN_READONLY | ffi::SQLITE_OPEN_MAIN_DB;
    // SAFETY: `raw` has szOsFile writable, zeroed bytes; `name` is NUL-terminated and kept
    // alive beside the file.
    let rc = unsafe {
        xopen(
            vfs,
            name[4..].as_ptr() as *const _,
            raw,
            flags,
            &mut out_flags,
        )
    };
    let opened = VfsDbFile {
        file,
        _name: name,
        inode: before,
    };
    if rc != ffi::SQLITE_OK {
        // Drop closes it only if the VFS set pMethods (it may, even on failure).
        drop(opened);
        return Err(io::Error::other(format!(
            "cannot open {} through SQLite's VFS (error {rc})",
            path.display()
        )));
    }
    // The same inode before and after: it is the file opened (a rename over the path in
    // between is answered with an error; the capture opens it again at its next use).
    if inode_now().ok() != Some(before) {
        return Err(io::Error::other(format!(
            "{} was replaced while it was being opened",
            path.display()
        )));
    }
    Ok(Box::new(opened))
}

impl VfsDbFile {
    fn raw(&self) -> *mut ffi::sqlite3_file {
        self.file.as_ptr() as *mut ffi::sqlite3_file
    }

    fn methods(&self) -> Option<&ffi::sqlite3_io_methods> {
        // SAFETY: pMethods is null or points at the VFS's static method table.
        unsafe { (*self.raw()).pMethods.as_ref() }
    }
}

impl DbFile for VfsDbFile {
    fn inode(&self) -> u64 {
        self.inode
    }

    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let Some(read) = self.methods().and_then(|m| m.xRead) else {
            return Err(io::Error::other("database file not open"));
        };
        // SAFETY: an open file; `buf` is writable for its length.
        let rc = unsafe {
            read(
                self.raw(),
                buf.as_mut_ptr() as *mut c_void,
                buf.len() as c_int,
                offset as i64,
            )
        };
        match rc {
            ffi::SQLITE_OK => Ok(true),
            // The VFS zero-fills what lies past the end.
            ffi::SQLITE_IOERR_SHORT_READ => Ok(false),
            rc => Err(io::Error::other(format!(
                "reading the database at {offset} failed (SQLite error {rc})"
            ))),
        }
    }

    fn size(&self) -> io::Result<u64> {
        let Some(size) = self.methods().and_then(|m| m.xFileSize) else {
            return Err(io::Error::other("database file not open"));
        };
        let mut n: ffi::sqlite3_int64 = 0;
        // SAFETY: an open file; `n` is our out-variable.
        match unsafe { size(self.raw(), &mut n) } {
            ffi::SQLITE_OK => Ok(n as u64),
            rc => Err(io::Error::other(format!(
                "the database's size is unknown (SQLite error {rc})"
            ))),
        }
    }
}

impl Drop for VfsDbFile {
    fn drop(&mut self) {
        if let Some(close) = self.methods().and_then(|m| m.xClose) {
            // SAFETY: an open file, closed once; the VFS defers closing the descriptor while
            // the process holds locks on the file.
            unsafe { close(self.raw()) };
        }
    }
}
