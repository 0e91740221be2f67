//! A `sqlite3_file` SQLite handed out (e.g. by SQLITE_FCNTL_FILE_POINTER), called through its
//! own methods: writes to one of ours go through capture, and no second descriptor of the
//! database is ever opened (closing one would drop the process's POSIX locks on it).

use std::ffi::{c_int, c_void};

use libsqlite3_sys as ffi;

#[derive(Clone, Copy)]
pub struct SqliteFile(*mut ffi::sqlite3_file);

/// `Err("<what> failed (error N)")` unless SQLITE_OK.
fn check(rc: c_int, what: &str) -> Result<(), String> {
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("{what} failed (error {rc})"))
    }
}

impl SqliteFile {
    /// # Safety
    /// `f` must be a live, open `sqlite3_file` for as long as this value is used, on the
    /// thread of the connection that owns it.
    pub unsafe fn new(f: *mut ffi::sqlite3_file) -> Self {
        Self(f)
    }

    pub fn raw(self) -> *mut ffi::sqlite3_file {
        self.0
    }

    fn methods(self) -> &'static ffi::sqlite3_io_methods {
        // SAFETY: an open file's pMethods points at its VFS's static method table.
        unsafe { &*(*self.0).pMethods }
    }

    pub fn read(self, buf: &mut [u8], offset: u64, what: &str) -> Result<(), String> {
        let rc = self.methods().xRead.map_or(ffi::SQLITE_IOERR_READ, |f| {
            // SAFETY: a live file; `buf` is writable for its length.
            unsafe {
                f(
                    self.0,
                    buf.as_mut_ptr() as *mut c_void,
                    buf.len() as c_int,
                    offset as i64,
                )
            }
        });
        check(rc, what)
    }

    pub fn write(self, bytes: &[u8], offset: u64, what: &str) -> Result<(), String> {
        let rc = self.methods().xWrite.map_or(ffi::SQLITE_IOERR_WRITE, |f| {
            // SAFETY: a live file; `bytes` is readable for its length.
            unsafe {
                f(
                    self.0,
                    bytes.as_ptr() as *const c_void,
                    bytes.len() as c_int,
                    offset as i64,
                )
            }
        });
        check(rc, what)
    }

    pub fn truncate(self, size: i64, what: &str) -> Result<(), String> {
        // SAFETY: a live file.
        let rc = self
            .methods()
            .xTruncate
            .map_or(ffi::SQLITE_IOERR_TRUNCATE, |f| unsafe { f(self.0, size) });
        check(rc, what)
    }

    pub fn sync(self, what: &str) -> Result<(), String> {
        // SAFETY: a live file.
        let rc = self.methods().xSync.map_or(ffi::SQLITE_OK, |f| unsafe {
            f(self.0, ffi::SQLITE_SYNC_NORMAL)
        });
        check(rc, what)
    }

    pub fn size(self, what: &str) -> Result<i64, String> {
        let mut size: ffi::sqlite3_int64 = 0;
        // SAFETY: a live file; `size` is our out-variable.
        let rc = self
            .methods()
            .xFileSize
            .map_or(ffi::SQLITE_IOERR_FSTAT, |f| unsafe { f(self.0, &mut size) });
        check(rc, what).map(|()| size)
    }

    /// The first wal-index region (`size` bytes), as SQLite's VFS maps it for every
    /// connection; None when there is no mapping (and none is created).
    pub fn shm_region0(self, size: c_int) -> Result<*mut u8, String> {
        let mut p: *mut c_void = std::ptr::null_mut();
        let rc = self
            .methods()
            .xShmMap
            .map_or(ffi::SQLITE_IOERR_SHMMAP, |f| {
                // SAFETY: a live file; region 0 without extending returns the existing mapping.
                unsafe { f(self.0, 0, size, 0, &mut p) }
            });
        check(rc, "mapping the WAL index")?;
        if p.is_null() {
            return Err("the WAL index is not mapped".into());
        }
        Ok(p as *mut u8)
    }

    pub fn shm_barrier(self) {
        if let Some(f) = self.methods().xShmBarrier {
            // SAFETY: a live file.
            unsafe { f(self.0) }
        }
    }
}
