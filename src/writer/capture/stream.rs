//! A full snapshot that the spool has no room for: encoded from the database while it
//! uploads, under the read transaction that holds the database still (see the shipper). It
//! is encoded twice: once to learn its length (an upload declares it first), and again for
//! the body of each upload attempt; both passes read the same pages, so they agree.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{self, Write};
use std::path::PathBuf;

use super::{read_wal_page, OpenDbFile, PageSource};
use crate::ltx::{Encoder, Header};

#[derive(Debug)]
pub struct StreamedSnapshot {
    pub header: Header,
    pgnos: Vec<u32>,
    sources: BTreeMap<u32, PageSource>,
    /// Salts of the WAL generation the `PageSource::Wal` offsets are in.
    wal_salts: Option<(u32, u32)>,
    db_path: PathBuf,
    wal_path: PathBuf,
    open_db_file: OpenDbFile,
    /// The encoded file's length.
    pub length: u64,
}

impl StreamedSnapshot {
    /// Plans the snapshot and runs the first pass (its length).
    #[allow(clippy::too_many_arguments)]
    pub(super) fn plan(
        header: Header,
        pgnos: Vec<u32>,
        sources: BTreeMap<u32, PageSource>,
        wal_salts: Option<(u32, u32)>,
        db_path: PathBuf,
        wal_path: PathBuf,
        open_db_file: OpenDbFile,
    ) -> io::Result<Self> {
        let mut plan = Self {
            header,
            pgnos,
            sources,
            wal_salts,
            db_path,
            wal_path,
            open_db_file,
            length: 0,
        };
        plan.length = plan.write_to(&mut io::sink())?;
        Ok(plan)
    }

    /// Encodes the snapshot into `out`; returns its length. Reads through handles of its own,
    /// so the capture's lock is not needed (the read transaction keeps the pages in place).
    pub fn write_to(&self, out: &mut dyn Write) -> io::Result<u64> {
        let other = |e: crate::ltx::LtxError| io::Error::other(e.to_string());
        let db = (self.open_db_file)(&self.db_path)?;
        let wal = match self
            .sources
            .values()
            .any(|s| matches!(s, PageSource::Wal(_)))
        {
            true => Some(File::open(&self.wal_path)?),
            false => None,
        };
        let mut enc = Encoder::new(io::BufWriter::new(out), self.header).map_err(other)?;
        let mut buf = vec![0u8; self.header.page_size as usize];
        for &pgno in &self.pgnos {
            match (self.sources.get(&pgno), &wal) {
                (Some(PageSource::Data(b)), _) => buf.copy_from_slice(b),
                (Some(PageSource::Wal(at)), Some(wal)) => {
                    read_wal_page(wal, *at, pgno, self.wal_salts, &mut buf)?
                }
                _ => {
                    let at = (u64::from(pgno) - 1) * buf.len() as u64;
                    db.read_at(&mut buf, at)?;
                }
            }
            enc.encode_page(pgno, &buf).map_err(other)?;
        }
        let (mut w, summary) = enc.finish(0).map_err(other)?;
        w.flush()?;
        Ok(summary.bytes)
    }
}
