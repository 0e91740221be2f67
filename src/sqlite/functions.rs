//! Registering SQL functions and converting their arguments and results.

use std::ffi::{c_int, c_void, CStr};

use libsqlite3_sys as ffi;

use super::{cstring, guard};
use crate::Error;

/// A SQL value as our functions see it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    Null,
    Integer(i64),
    Real(f64),
    Text(String),
    Blob(Vec<u8>),
}

/// What a SQL function returns.
pub enum Output {
    Text(String),
    Integer(i64),
    Null,
}

pub type SqlFn = fn(&[Value]) -> Result<Output, Error>;
/// A function that also needs its connection (e.g. to reach the main database's file).
pub type SqlFnDb = fn(&Connection, &[Value]) -> Result<Output, Error>;

fn read_value(v: *mut ffi::sqlite3_value) -> Value {
    // SAFETY: `v` is an argument SQLite passed to the running function; text and blob pointers
    // are valid for the byte counts SQLite reports until the function returns, and we copy them.
    unsafe {
        match ffi::sqlite3_value_type(v) {
            ffi::SQLITE_INTEGER => Value::Integer(ffi::sqlite3_value_int64(v)),
            ffi::SQLITE_FLOAT => Value::Real(ffi::sqlite3_value_double(v)),
            ffi::SQLITE_TEXT => {
                let p = ffi::sqlite3_value_text(v);
                let n = ffi::sqlite3_value_bytes(v) as usize;
                let bytes = if p.is_null() {
                    &[][..]
                } else {
                    std::slice::from_raw_parts(p, n)
                };
                Value::Text(String::from_utf8_lossy(bytes).into_owned())
            }
            ffi::SQLITE_BLOB => {
                let p = ffi::sqlite3_value_blob(v) as *const u8;
                let n = ffi::sqlite3_value_bytes(v) as usize;
                Value::Blob(if p.is_null() {
                    Vec::new()
                } else {
                    std::slice::from_raw_parts(p, n).to_vec()
                })
            }
            _ => Value::Null,
        }
    }
}

/// # Safety
/// `argv` holds `argc` values of the running call.
unsafe fn read_args(argc: c_int, argv: *mut *mut ffi::sqlite3_value) -> Vec<Value> {
    // SAFETY: guaranteed by the caller.
    (0..argc as usize)
        .map(|i| read_value(unsafe { *argv.add(i) }))
        .collect()
}

unsafe extern "C" fn call(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    let outcome = guard(Err(Error::other("internal error (see the log)")), || {
        // SAFETY: user data is the `SqlFn` pointer registered below; argv holds argc values.
        let (f, args) = unsafe {
            let f: SqlFn = std::mem::transmute::<*mut c_void, SqlFn>(ffi::sqlite3_user_data(ctx));
            (f, read_args(argc, argv))
        };
        f(&args)
    });
    // SAFETY: `ctx` is the live context of this call.
    unsafe { set_result(ctx, outcome) }
}

unsafe extern "C" fn call_db(
    ctx: *mut ffi::sqlite3_context,
    argc: c_int,
    argv: *mut *mut ffi::sqlite3_value,
) {
    let outcome = guard(Err(Error::other("internal error (see the log)")), || {
        // SAFETY: user data is the `SqlFnDb` pointer registered below; the connection is the
        // one running this call.
        let (f, args, db) = unsafe {
            let f: SqlFnDb =
                std::mem::transmute::<*mut c_void, SqlFnDb>(ffi::sqlite3_user_data(ctx));
            (
                f,
                read_args(argc, argv),
                Connection(ffi::sqlite3_context_db_handle(ctx)),
            )
        };
        f(&db, &args)
    });
    // SAFETY: `ctx` is the live context of this call.
    unsafe { set_result(ctx, outcome) }
}

/// # Safety
/// `ctx` must be the live context of a running call.
unsafe fn set_result(ctx: *mut ffi::sqlite3_context, outcome: Result<Output, Error>) {
    // SAFETY: guaranteed by the caller; SQLITE_TRANSIENT makes SQLite copy.
    unsafe {
        match outcome {
            Ok(Output::Text(s)) => {
                let c = cstring(&s);
                ffi::sqlite3_result_text(ctx, c.as_ptr(), -1, ffi::SQLITE_TRANSIENT());
            }
            Ok(Output::Integer(i)) => ffi::sqlite3_result_int64(ctx, i),
            Ok(Output::Null) => ffi::sqlite3_result_null(ctx),
            Err(e) => {
                // The message first: setting the code after it keeps it (SQLite fills in a
                // default text only when none is set).
                let c = cstring(e.message());
                ffi::sqlite3_result_error(ctx, c.as_ptr(), -1);
                ffi::sqlite3_result_error_code(ctx, e.sql_function_code());
            }
        }
    }
}

/// A connection handle SQLite gave us (entry point or auto-extension).
pub struct Connection(*mut ffi::sqlite3);

impl Connection {
    /// # Safety
    /// `db` must be a live connection for as long as this value is used.
    pub unsafe fn from_raw(db: *mut ffi::sqlite3) -> Self {
        Self(db)
    }

    /// `sqlite3_file_control(db, "main", op, &ptr)`: the pointer a VFS hands back for `op`,
    /// or None when the main database's VFS does not answer it.
    pub fn file_control_ptr(&self, op: c_int) -> Option<*mut c_void> {
        let mut out: *mut c_void = std::ptr::null_mut();
        // SAFETY: a live connection (from the running call); the VFS writes one pointer.
        let rc = unsafe {
            ffi::sqlite3_file_control(
                self.0,
                c"main".as_ptr(),
                op,
                &mut out as *mut _ as *mut c_void,
            )
        };
        (rc == ffi::SQLITE_OK && !out.is_null()).then_some(out)
    }
}

impl Connection {
    /// The error of the call that just failed on this connection, with SQLite's extended
    /// code and message, prefixed with `sql`.
    fn last_error(&self, sql: &str) -> Error {
        // SAFETY: a live connection; errmsg is a valid C string until the next call.
        let (code, msg) = unsafe {
            (
                ffi::sqlite3_extended_errcode(self.0),
                CStr::from_ptr(ffi::sqlite3_errmsg(self.0))
                    .to_string_lossy()
                    .into_owned(),
            )
        };
        Error::sqlite(code, format!("{sql}: {msg}"))
    }

    /// Runs `sql` (statements without results) on this connection.
    pub fn exec(&self, sql: &str) -> Result<(), Error> {
        let c = cstring(sql);
        // SAFETY: a live connection; no callback, and no message copy (errmsg has it).
        let rc = unsafe {
            ffi::sqlite3_exec(
                self.0,
                c.as_ptr(),
                None,
                std::ptr::null_mut(),
                std::ptr::null_mut(),
            )
        };
        if rc == ffi::SQLITE_OK {
            Ok(())
        } else {
            Err(self.last_error(sql))
        }
    }

    /// The first column of the first row of `sql`, as text.
    pub fn query_text(&self, sql: &str) -> Result<Option<String>, Error> {
        let c = cstring(sql);
        let mut stmt: *mut ffi::sqlite3_stmt = std::ptr::null_mut();
        // SAFETY: a live connection; the statement is finalized before returning, and the
        // column text is copied while the statement is still on its row.
        unsafe {
            let rc =
                ffi::sqlite3_prepare_v2(self.0, c.as_ptr(), -1, &mut stmt, std::ptr::null_mut());
            if rc != ffi::SQLITE_OK {
                return Err(self.last_error(sql));
            }
            let out = match ffi::sqlite3_step(stmt) {
                ffi::SQLITE_ROW => {
                    let p = ffi::sqlite3_column_text(stmt, 0);
                    Ok((!p.is_null()).then(|| {
                        CStr::from_ptr(p as *const std::ffi::c_char)
                            .to_string_lossy()
                            .into_owned()
                    }))
                }
                ffi::SQLITE_DONE => Ok(None),
                _ => Err(self.last_error(sql)),
            };
            ffi::sqlite3_finalize(stmt);
            out
        }
    }

    /// Whether no transaction is open (autocommit mode).
    pub fn autocommit(&self) -> bool {
        // SAFETY: a live connection.
        unsafe { ffi::sqlite3_get_autocommit(self.0) != 0 }
    }
}

/// Registers `f` as `name` with `n_args` arguments (-1: any) on `db`.
pub fn register(
    db: &Connection,
    name: &CStr,
    n_args: c_int,
    deterministic: bool,
    f: SqlFn,
) -> Result<(), String> {
    register_raw(db, name, n_args, deterministic, f as *mut c_void, call)
}

/// Registers a function that receives its connection.
pub fn register_db(db: &Connection, name: &CStr, n_args: c_int, f: SqlFnDb) -> Result<(), String> {
    register_raw(db, name, n_args, false, f as *mut c_void, call_db)
}

type Trampoline =
    unsafe extern "C" fn(*mut ffi::sqlite3_context, c_int, *mut *mut ffi::sqlite3_value);

fn register_raw(
    db: &Connection,
    name: &CStr,
    n_args: c_int,
    deterministic: bool,
    user_data: *mut c_void,
    trampoline: Trampoline,
) -> Result<(), String> {
    let mut flags = ffi::SQLITE_UTF8 | ffi::SQLITE_DIRECTONLY;
    if deterministic {
        flags |= ffi::SQLITE_DETERMINISTIC;
    }
    // SAFETY: `db` is the connection SQLite handed the entry point; the user data is a plain
    // function pointer that lives forever, so no destructor is needed.
    let rc = unsafe {
        ffi::sqlite3_create_function_v2(
            db.0,
            name.as_ptr(),
            n_args,
            flags,
            user_data,
            Some(trampoline),
            None,
            None,
            None,
        )
    };
    if rc == ffi::SQLITE_OK {
        Ok(())
    } else {
        Err(format!("cannot register SQL function {name:?}: error {rc}"))
    }
}
