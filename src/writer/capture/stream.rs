//! A full snapshot that the spool has no room for: encoded from the database while it
//! uploads, under the read transaction that holds the database still (see the shipper). It
//! is encoded twice: once to learn its length (an upload declares it first), and again for
//! the body of each upload attempt. Both passes read the same pages; should a page have
//! moved anyway (a WAL frame overwritten), the read fails and so does the upload.
//!
//! One at a time per process: each holds a thread of the runtime's small blocking pool for
//! its whole upload, and a read transaction on its database.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, Ordering};

use super::{encode_with, read_wal_page, OpenDbFile, PageSource};
use crate::ltx::{Encoder, Header};

static STREAMING: AtomicBool = AtomicBool::new(false);

/// The process's one streamed snapshot, while it exists.
#[derive(Debug)]
struct Permit;

impl Permit {
    fn take() -> Option<Self> {
        (!STREAMING.swap(true, Ordering::SeqCst)).then_some(Permit)
    }
}

impl Drop for Permit {
    fn drop(&mut self) {
        STREAMING.store(false, Ordering::SeqCst);
    }
}

/// What to read for each page: everything a pass needs besides its own file handles.
#[derive(Debug)]
pub(super) struct Plan {
    pub header: Header,
    pub pgnos: Vec<u32>,
    pub sources: BTreeMap<u32, PageSource>,
    /// Salts of the WAL generation the `PageSource::Wal` offsets are in.
    pub wal_salts: Option<(u32, u32)>,
    pub db_path: PathBuf,
    pub wal_path: PathBuf,
    pub open_db_file: OpenDbFile,
}

#[derive(Debug)]
pub struct StreamedSnapshot {
    plan: Plan,
    /// The encoded file's length and checksum (its last 8 bytes), from the first pass.
    pub length: u64,
    pub file_checksum: u64,
    _permit: Permit,
}

impl StreamedSnapshot {
    /// Runs the first pass (length and checksum). Fails while another database of the
    /// process streams one.
    pub(super) fn plan(plan: Plan) -> io::Result<Self> {
        let permit = Permit::take().ok_or_else(|| {
            io::Error::other(
                "another database's full snapshot is streaming from its database; this one waits its turn",
            )
        })?;
        let (length, file_checksum) = write(&plan, &mut io::sink())?;
        Ok(Self {
            plan,
            length,
            file_checksum,
            _permit: permit,
        })
    }

    /// Encodes the snapshot into `out` (again). Reads through handles of its own, so the
    /// capture's lock is not needed: the read transaction keeps the pages in place.
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<()> {
        let (length, checksum) = write(&self.plan, out)?;
        if (length, checksum) != (self.length, self.file_checksum) {
            return Err(io::Error::other(format!(
                "the streamed snapshot came out different the second time ({length} bytes, checksum {checksum:#x}; first {} bytes, {:#x})",
                self.length, self.file_checksum
            )));
        }
        Ok(())
    }
}

/// Encodes `plan` into `out`; returns the file's length and checksum.
fn write(plan: &Plan, out: &mut dyn Write) -> io::Result<(u64, u64)> {
    let db = (plan.open_db_file)(&plan.db_path)?;
    let wal = match plan
        .sources
        .values()
        .any(|s| matches!(s, PageSource::Wal(_)))
    {
        true => Some(File::open(&plan.wal_path)?),
        false => None,
    };
    let enc = Encoder::new(io::BufWriter::new(out), plan.header)
        .map_err(|e| io::Error::other(e.to_string()))?;
    let (mut w, summary) = encode_with(enc, &plan.pgnos, |pgno, buf| {
        match (plan.sources.get(&pgno), &wal) {
            (Some(PageSource::Data(b)), _) => buf.copy_from_slice(b),
            (Some(PageSource::Wal(at)), Some(wal)) => {
                read_wal_page(wal, *at, pgno, plan.wal_salts, buf)?
            }
            _ => {
                // Pages past the file's end are zero (growth not yet written).
                let at = (u64::from(pgno) - 1) * buf.len() as u64;
                db.read_at(buf, at)?;
            }
        }
        Ok(())
    })?;
    w.flush()?;
    Ok((summary.bytes, summary.trailer.file_checksum))
}
