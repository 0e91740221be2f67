//! The SQL functions the extension adds to every connection.

use std::time::Duration;

use crate::sqlite::functions::{register, Connection, Output, Value};
use crate::writer::Replicator;

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// Default wait of `litestream_sync()`.
pub const DEFAULT_SYNC_TIMEOUT: Duration = Duration::from_secs(30);

/// `litestream_status([schema])`: JSON describing the extension and its databases.
fn status(_args: &[Value]) -> Result<Output, String> {
    let databases: Vec<_> = Replicator::all().iter().map(|r| r.status()).collect();
    let doc = serde_json::json!({
        "version": VERSION,
        "format": "LTX v3 (Litestream 0.5.x)",
        "vfs": crate::sqlite::vfs::registered_names(),
        "databases": databases,
        "last_open_error": *crate::sqlite::vfs::LAST_OPEN_ERROR.lock(),
    });
    Ok(Output::Text(doc.to_string()))
}

/// `litestream_sync([timeout_ms])`: ships everything committed so far in every replicated
/// database of this process and waits until the replicas have it. Returns JSON positions.
fn sync(args: &[Value]) -> Result<Output, String> {
    let timeout = match args.first() {
        None | Some(Value::Null) => DEFAULT_SYNC_TIMEOUT,
        Some(Value::Integer(ms)) if *ms >= 0 => Duration::from_millis(*ms as u64),
        Some(other) => {
            return Err(format!(
                "litestream_sync: timeout must be milliseconds, not {other:?}"
            ))
        }
    };
    let mut out = serde_json::Map::new();
    for r in Replicator::all() {
        let txid = r
            .sync(timeout)
            .map_err(|e| format!("litestream_sync: {}: {e}", r.db_path().display()))?;
        out.insert(
            r.db_path().display().to_string(),
            crate::ltx::format_txid(txid).into(),
        );
    }
    Ok(Output::Text(serde_json::Value::Object(out).to_string()))
}

pub fn register_all(db: &Connection) -> Result<(), String> {
    register(db, c"litestream_status", 0, false, status)?;
    register(db, c"litestream_status", 1, false, status)?;
    register(db, c"litestream_sync", 0, false, sync)?;
    register(db, c"litestream_sync", 1, false, sync)?;
    Ok(())
}
