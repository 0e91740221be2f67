//! The one error the extension's callers see: a SQLite result code and a message.
//!
//! SQL functions hand it to SQLite with `sqlite3_result_error_code`, so hosts can branch on
//! the code (rusqlite's `ErrorCode`, Python's `sqlite_errorname`, better-sqlite3's `code`)
//! rather than on the text. A code SQLite gave us (a read transaction that failed, a
//! statement of ours) is kept as it came; errors of our own pick the code that says what the
//! caller can do about them, among those Python's sqlite3 raises as `OperationalError` (as
//! it did before codes were set), and as SQLite itself does, a call made in a state that
//! does not allow it is plain SQLITE_ERROR. Each module turns its own error type into this
//! one (`From`), so this module depends on nothing of the crate.

use std::ffi::c_int;

use libsqlite3_sys as ffi;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Error {
    /// SQLite's (extended) result code.
    code: c_int,
    message: String,
}

impl Error {
    /// An error with SQLite's own result code (extended codes kept).
    pub fn sqlite(code: c_int, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
        }
    }

    /// SQLITE_ERROR: bad input, or a failure none of the others describes.
    pub fn other(message: impl Into<String>) -> Self {
        Self::sqlite(ffi::SQLITE_ERROR, message)
    }

    /// SQLITE_BUSY: trying again later may succeed (a timeout, a store that does not answer
    /// now, another writer's lease).
    pub fn busy(message: impl Into<String>) -> Self {
        Self::sqlite(ffi::SQLITE_BUSY, message)
    }

    /// SQLITE_PERM: the store refused the credentials (or a replica directory may not be
    /// written).
    pub fn permission(message: impl Into<String>) -> Self {
        Self::sqlite(ffi::SQLITE_PERM, message)
    }

    /// SQLITE_EMPTY: the replica holds nothing for what was asked (no backup at all, a target
    /// outside retention): a first start's "restore if there is a backup" tells it apart.
    pub fn empty(message: impl Into<String>) -> Self {
        Self::sqlite(ffi::SQLITE_EMPTY, message)
    }

    /// SQLITE_CANTOPEN: a local file could not be opened or created.
    pub fn cant_open(message: impl Into<String>) -> Self {
        Self::sqlite(ffi::SQLITE_CANTOPEN, message)
    }

    /// The result code as it was given (extended).
    pub fn code(&self) -> c_int {
        self.code
    }

    /// The primary result code (SQLITE_BUSY for SQLITE_BUSY_SNAPSHOT, ...).
    pub fn primary_code(&self) -> c_int {
        self.code & 0xff
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The same error, its message prefixed with where it happened.
    pub fn context(self, what: impl std::fmt::Display) -> Self {
        Self {
            code: self.code,
            message: format!("{what}: {}", self.message),
        }
    }

    /// The same error, with `note` after its message (what it means for the caller).
    pub fn with_note(self, note: &str) -> Self {
        Self {
            code: self.code,
            message: format!("{}; {note}", self.message),
        }
    }

    /// Whether waiting may cure it: another connection holds the database (BUSY, LOCKED), or
    /// a hot journal or an unrecovered WAL that a read-only connection cannot fix but the
    /// application's next read will (READONLY_ROLLBACK/_RECOVERY and the like, PROTOCOL).
    pub fn passes_by_waiting(&self) -> bool {
        matches!(
            self.primary_code(),
            ffi::SQLITE_BUSY | ffi::SQLITE_LOCKED | ffi::SQLITE_READONLY | ffi::SQLITE_PROTOCOL
        )
    }

    /// Whether only the application's next read can cure it: a hot journal or an unrecovered
    /// WAL that a read-only connection cannot fix (READONLY_ROLLBACK/_RECOVERY and the like).
    /// A flush at the last close or at exit, when no such read is coming, stops at it.
    pub fn awaits_the_applications_read(&self) -> bool {
        self.primary_code() == ffi::SQLITE_READONLY
    }

    /// The code a SQL function returns for this error. A function that fails with
    /// SQLITE_IOERR, SQLITE_FULL, SQLITE_NOMEM or SQLITE_INTERRUPT makes SQLite roll back the
    /// caller's whole transaction (sqlite3VdbeHalt), and some hosts delete a database that
    /// reports SQLITE_CORRUPT (Android's default handler): a replication error must do
    /// neither to the application's database, so those become SQLITE_ERROR (the message
    /// still says what happened).
    pub fn sql_function_code(&self) -> c_int {
        match self.primary_code() {
            ffi::SQLITE_IOERR
            | ffi::SQLITE_FULL
            | ffi::SQLITE_NOMEM
            | ffi::SQLITE_INTERRUPT
            | ffi::SQLITE_CORRUPT
            | ffi::SQLITE_NOTADB => ffi::SQLITE_ERROR,
            _ => self.code,
        }
    }
}

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

impl std::error::Error for Error {}

/// A bare message is bad input or a failure of no particular kind: SQLITE_ERROR.
impl From<String> for Error {
    fn from(message: String) -> Self {
        Self::other(message)
    }
}

impl From<&str> for Error {
    fn from(message: &str) -> Self {
        Self::other(message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn codes_that_would_harm_the_callers_transaction_are_not_returned_by_functions() {
        for code in [
            ffi::SQLITE_IOERR,
            ffi::SQLITE_IOERR_READ,
            ffi::SQLITE_FULL,
            ffi::SQLITE_NOMEM,
            ffi::SQLITE_INTERRUPT,
            ffi::SQLITE_CORRUPT,
        ] {
            assert_eq!(
                Error::sqlite(code, "x").sql_function_code(),
                ffi::SQLITE_ERROR
            );
        }
        assert_eq!(Error::busy("x").sql_function_code(), ffi::SQLITE_BUSY);
        assert_eq!(
            Error::sqlite(ffi::SQLITE_BUSY_SNAPSHOT, "x").sql_function_code(),
            ffi::SQLITE_BUSY_SNAPSHOT
        );
        assert_eq!(Error::empty("x").sql_function_code(), ffi::SQLITE_EMPTY);
    }

    #[test]
    fn context_keeps_the_code() {
        let e = Error::permission("denied").context("litestream_restore");
        assert_eq!(e.code(), ffi::SQLITE_PERM);
        assert_eq!(e.to_string(), "litestream_restore: denied");
    }

    #[test]
    fn waiting_cures_locks_and_unrecovered_journals_only() {
        assert!(Error::sqlite(ffi::SQLITE_BUSY_RECOVERY, "").passes_by_waiting());
        assert!(Error::sqlite(ffi::SQLITE_READONLY_ROLLBACK, "").passes_by_waiting());
        assert!(Error::sqlite(ffi::SQLITE_PROTOCOL, "").passes_by_waiting());
        assert!(!Error::sqlite(ffi::SQLITE_CANTOPEN, "").passes_by_waiting());
        assert!(!Error::sqlite(ffi::SQLITE_NOTADB, "").passes_by_waiting());
    }
}
