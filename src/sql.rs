//! The SQL functions the extension adds to every connection.

use std::time::Duration;

use crate::replica::{ReplicaDb, ReplicaFile};
use crate::sqlite::functions::{register, register_db, Connection, Output, Value};
use crate::sqlite::replica_vfs::FCNTL_REPLICA_FILE;
use crate::writer::Replicator;
use crate::Error;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default wait of `litestream_sync()`.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// `litestream_status([schema])`: JSON describing the extension and its databases.
fn status(_args: &[Value]) -> Result<Output, Error> {
    let databases: Vec<_> = Replicator::all().iter().map(|r| r.status()).collect();
    let cache_bytes = crate::replica::shared_cache_bytes();
    let doc = serde_json::json!({
        "version": VERSION,
        "format": "LTX v3 (Litestream 0.5.x)",
        "vfs": crate::sqlite::vfs::registered_names(),
        "databases": databases,
        "closing": Replicator::closing_count(),
        "replicas": ReplicaDb::all().iter().map(|r| r.status(cache_bytes)).collect::<Vec<_>>(),
        // This thread's last failed open, and every path's that has not opened since.
        "last_open_error": crate::sqlite::open_errors::this_thread(),
        "open_errors": crate::sqlite::open_errors::by_path(),
    });
    Ok(Output::Text(doc.to_string()))
}

/// `litestream_sync([timeout_ms])`: ships everything committed so far in every replicated
/// database of this process and waits until the replicas have it. Returns JSON positions.
fn sync(args: &[Value]) -> Result<Output, Error> {
    let timeout = match args.first() {
        None | Some(Value::Null) => DEFAULT_SYNC_TIMEOUT,
        Some(Value::Integer(ms)) if *ms >= 0 => Duration::from_millis(*ms as u64),
        Some(other) => {
            return Err(Error::other(format!(
                "litestream_sync: timeout must be milliseconds, not {other:?}"
            )))
        }
    };
    let mut out = serde_json::Map::new();
    for r in Replicator::all() {
        let txid = r
            .sync(timeout)
            .map_err(|e| e.context(format!("litestream_sync: {}", r.db_path().display())))?;
        out.insert(
            r.db_path().display().to_string(),
            crate::ltx::format_txid(txid).into(),
        );
    }
    Ok(Output::Text(serde_json::Value::Object(out).to_string()))
}

/// `litestream_restore(replica_url, out_path [, target [, 'overwrite']])`: restores the
/// replica to `out_path` at the latest state, a TXID, or a timestamp; returns a JSON summary.
fn restore(args: &[Value]) -> Result<Output, Error> {
    let text = |i: usize, what: &str| match args.get(i) {
        Some(Value::Text(s)) => Ok(Some(s.clone())),
        Some(Value::Null) | None => Ok(None),
        Some(Value::Integer(n)) if what == "target" => Ok(Some(n.to_string())),
        Some(other) => Err(format!(
            "litestream_restore: {what} must be text, not {other:?}"
        )),
    };
    let url = text(0, "replica_url")?.ok_or("litestream_restore: replica_url is required")?;
    let out = text(1, "out_path")?.ok_or("litestream_restore: out_path is required")?;
    let target = match text(2, "target")? {
        Some(t) => {
            crate::restore::Target::parse(&t).map_err(|e| format!("litestream_restore: {e}"))?
        }
        None => crate::restore::Target::Latest,
    };
    let overwrite = match text(3, "option")?.as_deref() {
        None => false,
        Some("overwrite") => true,
        Some(other) => {
            return Err(Error::other(format!(
                "litestream_restore: unknown option {other:?} (known: 'overwrite')"
            )))
        }
    };
    let opts = crate::restore::RestoreOptions { overwrite };
    let summary = crate::restore::restore_blocking(&url, std::path::Path::new(&out), target, opts)
        .map_err(|e| e.context("litestream_restore"))?;
    Ok(Output::Text(json(&summary)?))
}

/// A restore-style target argument: NULL/'latest', a TXID (integer or 16 hex digits) or a
/// timestamp.
fn target_arg(args: &[Value], i: usize, function: &str) -> Result<crate::restore::Target, Error> {
    match args.get(i) {
        None | Some(Value::Null) => Ok(crate::restore::Target::Latest),
        Some(Value::Integer(n)) if *n >= 0 => Ok(crate::restore::Target::Txid(*n as u64)),
        Some(Value::Text(t)) => crate::restore::Target::parse(t),
        Some(other) => Err(format!(
            "target must be a TXID or a timestamp, not {other:?}"
        )),
    }
    .map_err(|e| Error::other(format!("{function}: {e}")))
}

/// `litestream_rollback(target)`: returns this connection's database (opened with
/// `vfs=litestream`, WAL mode) to its state at `target`, as a new transaction. JSON summary.
fn rollback(db: &Connection, args: &[Value]) -> Result<Output, Error> {
    let target = match args.first() {
        None | Some(Value::Null) => {
            return Err("litestream_rollback: a target TXID or timestamp is required".into())
        }
        _ => target_arg(args, 0, "litestream_rollback")?,
    };
    crate::sqlite::rollback::rollback(db, target)
        .map(Output::Text)
        .map_err(|e| e.context("litestream_rollback"))
}

/// `litestream_fork(source_url, dest_url [, target])`: a new replica at `dest_url` starting
/// with a snapshot of the source at `target` (default: latest). JSON summary.
fn fork(args: &[Value]) -> Result<Output, Error> {
    let url = |i: usize, what: &str| match args.get(i) {
        Some(Value::Text(s)) => Ok(s.clone()),
        _ => Err(format!(
            "litestream_fork: {what} (a replica URL) is required"
        )),
    };
    let (src, dst) = (url(0, "source_url")?, url(1, "dest_url")?);
    let target = target_arg(args, 2, "litestream_fork")?;
    let summary = crate::pitr::fork::fork_blocking(&src, &dst, target)
        .map_err(|e| e.context("litestream_fork"))?;
    Ok(Output::Text(json(&summary)?))
}

/// `litestream_base_url(url [, data_dir])`: the base replica URL (and root for relative
/// paths) of databases opened from now on with `vfs=litestream` and no `replica`, winning
/// over the environment; NULL clears it. Returns the setting in force as JSON.
fn base_url(args: &[Value]) -> Result<Output, Error> {
    let text = |i: usize| match args.get(i) {
        Some(Value::Text(s)) if !s.is_empty() => Ok(Some(s.clone())),
        None | Some(Value::Null) => Ok(None),
        Some(other) => Err(format!("litestream_base_url: expected text, not {other:?}")),
    };
    let setting = match text(0)? {
        Some(url) => Some((url, text(1)?)),
        None => None,
    };
    crate::config::set_base_url(setting).map_err(|e| format!("litestream_base_url: {e}"))?;
    let (url, dir) = crate::config::base_url().unzip();
    let doc = serde_json::json!({
        "base_url": url.map(|u| crate::storage::redact(&u)),
        "data_dir": dir.flatten(),
    });
    Ok(Output::Text(doc.to_string()))
}

/// The replica file of the connection's main database, if it was opened with
/// `vfs=litestream-replica`.
fn replica_of<'a>(db: &Connection, name: &str) -> Result<&'a mut ReplicaFile, Error> {
    let ptr = db.file_control_ptr(FCNTL_REPLICA_FILE).ok_or_else(|| {
        Error::other(format!(
            "{name}: the main database is not opened with vfs=litestream-replica"
        ))
    })?;
    // SAFETY: our VFS answered this opcode with its ReplicaFile, which lives as long as the
    // connection; SQLite runs this function on that connection's thread, under its mutex.
    Ok(unsafe { &mut *(ptr as *mut ReplicaFile) })
}

/// `litestream_txid()`: the TXID this connection reads (16 hex digits, as Litestream): its
/// transaction's, or outside one the version its next read will see.
fn txid(db: &Connection, _: &[Value]) -> Result<Output, Error> {
    let v = replica_of(db, "litestream_txid")?.version();
    Ok(Output::Text(crate::ltx::format_txid(v.txid)))
}

/// `litestream_time()`: the timestamp of that version (RFC 3339).
fn time(db: &Connection, _: &[Value]) -> Result<Output, Error> {
    let v = replica_of(db, "litestream_time")?.version();
    Ok(Output::Text(crate::timefmt::rfc3339_millis(v.timestamp_ms)))
}

/// `litestream_lag()`: seconds since the replica was last polled successfully.
fn lag(db: &Connection, _: &[Value]) -> Result<Output, Error> {
    let r = replica_of(db, "litestream_lag")?;
    Ok(Output::Integer(r.db.lag_ms() / 1000))
}

/// `litestream_set_time(target)`: time travel for this connection: a timestamp, a TXID, or
/// 'LATEST' to follow the replica again. Takes effect at the next read transaction.
fn set_time(db: &Connection, args: &[Value]) -> Result<Output, Error> {
    let target = match args.first() {
        Some(Value::Text(t)) => crate::restore::Target::parse(t),
        Some(Value::Integer(n)) if *n >= 0 => Ok(crate::restore::Target::Txid(*n as u64)),
        Some(other) => Err(format!(
            "the target must be a timestamp, a TXID or 'LATEST', not {other:?}"
        )),
        None => Err("a target (a timestamp, a TXID or 'LATEST') is required".to_string()),
    }
    .map_err(|e| format!("litestream_set_time: {e}"))?;
    let r = replica_of(db, "litestream_set_time")?;
    r.set_target(target)
        .map_err(|e| e.context("litestream_set_time"))?;
    Ok(Output::Text(crate::ltx::format_txid(r.version().txid)))
}

/// `litestream_default_vfs(name)`: makes `name` the process's default VFS ('litestream',
/// 'litestream-replica', or 'unix' to go back) for hosts that cannot pass `vfs=` in a URI.
/// Returns the previous default.
fn default_vfs(args: &[Value]) -> Result<Output, Error> {
    match args.first() {
        Some(Value::Text(name)) => crate::sqlite::vfs::set_default(name)
            .map(Output::Text)
            .map_err(|e| Error::other(format!("litestream_default_vfs: {e}"))),
        _ => Err(Error::other(
            "litestream_default_vfs: a VFS name is required",
        )),
    }
}

/// A summary as JSON text.
fn json(summary: &impl serde::Serialize) -> Result<String, Error> {
    serde_json::to_string(summary).map_err(|e| Error::other(e.to_string()))
}

pub fn register_all(db: &Connection) -> Result<(), String> {
    register(db, c"litestream_default_vfs", 1, false, default_vfs)?;
    register_db(db, c"litestream_txid", 0, txid)?;
    register_db(db, c"litestream_time", 0, time)?;
    register_db(db, c"litestream_lag", 0, lag)?;
    register_db(db, c"litestream_set_time", 1, set_time)?;
    for n in 2..=4 {
        register(db, c"litestream_restore", n, false, restore)?;
    }
    register_db(db, c"litestream_rollback", 1, rollback)?;
    register(db, c"litestream_base_url", 1, false, base_url)?;
    register(db, c"litestream_base_url", 2, false, base_url)?;
    register(db, c"litestream_fork", 2, false, fork)?;
    register(db, c"litestream_fork", 3, false, fork)?;
    register(db, c"litestream_status", 0, false, status)?;
    register(db, c"litestream_status", 1, false, status)?;
    register(db, c"litestream_sync", 0, false, sync)?;
    register(db, c"litestream_sync", 1, false, sync)?;
    Ok(())
}
