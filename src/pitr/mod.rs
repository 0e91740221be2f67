//! Point-in-time as a primitive: rolling a live database back in place (a new transaction
//! holding the pages that differ from the target) and forking a replica at a target.
//! This module decides *what* to write from the replica's history; writing it into a live
//! database is SQLite's business and lives at the FFI edge (`sqlite::rollback`).

pub mod fork;
pub mod rollback;
