//! The SQL functions the extension adds to every connection.

use crate::sqlite::functions::{register, Connection, Output, Value};

pub const VERSION: &str = env!("CARGO_PKG_VERSION");

/// `litestream_status([schema])`: JSON describing the extension and its databases.
fn status(_args: &[Value]) -> Result<Output, String> {
    let doc = serde_json::json!({
        "version": VERSION,
        "format": "LTX v3 (Litestream 0.5.x)",
        "vfs": crate::sqlite::vfs::registered_names(),
        "databases": [],
    });
    Ok(Output::Text(doc.to_string()))
}

pub fn register_all(db: &Connection) -> Result<(), String> {
    register(db, c"litestream_status", 0, false, status)?;
    register(db, c"litestream_status", 1, false, status)?;
    Ok(())
}
