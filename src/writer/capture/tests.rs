//! Capture driven as the VFS drives it, on hand-made database images: what it seals from a
//! rollback-journal commit, and what it refuses to seal.

use std::fs::{File, OpenOptions};
use std::io;
use std::os::unix::fs::FileExt;
use std::path::Path;

use super::{Capture, DbFile, Location, Stillness};
use crate::ltx::Decoder;

const PS: usize = 4096;

/// The database file read with std (the extension reads it through SQLite's VFS).
struct PlainFile(File);

impl DbFile for PlainFile {
    fn read_at(&self, buf: &mut [u8], offset: u64) -> io::Result<bool> {
        let mut done = 0;
        while done < buf.len() {
            match self.0.read_at(&mut buf[done..], offset + done as u64)? {
                0 => break,
                n => done += n,
            }
        }
        buf[done..].fill(0);
        Ok(done == buf.len())
    }
    fn size(&self) -> io::Result<u64> {
        Ok(self.0.metadata()?.len())
    }
    fn inode(&self) -> u64 {
        std::os::unix::fs::MetadataExt::ino(&self.0.metadata().expect("metadata"))
    }
}

fn open_plain(path: &Path) -> io::Result<Box<dyn DbFile>> {
    Ok(Box::new(PlainFile(File::open(path)?)))
}

/// A rollback-journal database image of `pages` pages whose header counts `counted` pages
/// (change counter `counter`); page N is filled with byte N (past its header on page 1).
fn image(pages: u32, counted: u32, counter: u32) -> Vec<u8> {
    let mut b = vec![0u8; pages as usize * PS];
    for p in 1..=pages as usize {
        b[(p - 1) * PS..p * PS].fill(p as u8);
    }
    b[..16].copy_from_slice(b"SQLite format 3\0");
    b[16..18].copy_from_slice(&(PS as u16).to_be_bytes());
    (b[18], b[19]) = (1, 1); // rollback journal, not WAL
    b[24..28].copy_from_slice(&counter.to_be_bytes());
    b[28..32].copy_from_slice(&counted.to_be_bytes());
    b[92..96].copy_from_slice(&counter.to_be_bytes()); // version-valid-for: the size is valid
    b
}

/// Writes `bytes` at 0 as SQLite would through the VFS: the write lock, a page at a time,
/// then the commit point.
fn commit(c: &mut Capture, path: &Path, bytes: &[u8]) -> io::Result<()> {
    c.write_lock_taken(false);
    let f = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .open(path)?;
    for (i, page) in bytes.chunks(PS).enumerate() {
        let at = (i * PS) as u64;
        f.write_all_at(page, at)?;
        c.after_db_write(at, page.len() as u64);
    }
    let result = c.commit_point();
    c.write_lock_released(false);
    result
}

fn pages_of(bytes: &[u8]) -> Vec<(u32, Vec<u8>)> {
    let mut dec = Decoder::new(bytes).expect("LTX header");
    let mut out = Vec::new();
    let mut page = Vec::new();
    while let Some(pgno) = dec.next_page(&mut page).expect("page") {
        out.push((pgno, page.clone()));
    }
    dec.finish().expect("trailer and checksums");
    out
}

#[test]
fn a_rollback_commit_seals_a_snapshot_of_every_page() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("app.db");
    let mut c = Capture::open(&db, 1 << 30, open_plain).unwrap();
    assert!(c.is_owner(), "the first capture of a database owns it");
    let want = image(3, 3, 1);
    commit(&mut c, &db, &want).unwrap();
    c.remote_known = true; // an empty replica
    assert!(c.seal_next(0, false, Stillness::OwnLock).unwrap());
    let q = c.queue.front().expect("sealed").clone();
    assert_eq!(
        (q.header.min_txid, q.header.max_txid, q.header.commit),
        (1, 1, 3)
    );
    let Location::Memory(bytes) = &q.location else {
        panic!("a small file is encoded in memory")
    };
    let pages = pages_of(bytes);
    assert_eq!(pages.iter().map(|p| p.0).collect::<Vec<_>>(), [1, 2, 3]);
    for (pgno, page) in pages {
        let at = (pgno as usize - 1) * PS;
        assert_eq!(page, want[at..at + PS], "page {pgno}");
    }
}

#[test]
fn a_file_short_of_its_header_page_count_is_refused_not_zero_filled() {
    // As SQLite's multiplex VFS above ours leaves it: the first chunk of a database whose
    // header counts more pages than the file holds.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("chunked.db");
    let mut c = Capture::open(&db, 1 << 30, open_plain).unwrap();
    let err = commit(&mut c, &db, &image(2, 5, 1)).unwrap_err();
    assert_eq!(err.kind(), io::ErrorKind::InvalidData);
    assert!(err.to_string().contains("not the whole database"), "{err}");
    // The full snapshot it then needs reads the same file: refused too, nothing sealed.
    c.needs_full = true;
    c.remote_known = true;
    let err = c.seal_next(0, true, Stillness::OwnLock).unwrap_err();
    assert!(err.to_string().contains("not the whole database"), "{err}");
    assert!(c.queue.is_empty());
}

#[test]
fn a_file_whose_last_counted_page_is_the_lock_page_holds_the_whole_database() {
    // SQLite never writes the lock-byte page, nor grows the file to it when it is last.
    let lock = crate::ltx::lock_pgno(PS as u32);
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("big.db");
    let mut c = Capture::open(&db, 1 << 30, open_plain).unwrap();
    let f = File::create(&db).unwrap();
    f.set_len(u64::from(lock - 1) * PS as u64).unwrap(); // sparse
    drop(f);
    commit(&mut c, &db, &image(1, lock, 1)).unwrap();
}

/// Runs `script` in the sqlite3 shell on `made.db` in `dir`; the script copies what it wants
/// to keep (while the shell still has the database open) to `app.db`, which is returned.
fn made_by_the_shell(dir: &Path, script: &str) -> std::path::PathBuf {
    use std::io::Write;
    let mut child = std::process::Command::new("sqlite3")
        .arg(dir.join("made.db"))
        .current_dir(dir)
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(script.as_bytes())
        .unwrap();
    assert!(child.wait().unwrap().success());
    dir.join("app.db")
}

/// A WAL-mode database made by the sqlite3 shell, copied with its WAL while the shell still
/// has it open: 40 rows checkpointed into the file, then one more row only in the WAL.
fn wal_database(dir: &Path) -> std::path::PathBuf {
    made_by_the_shell(
        dir,
        "PRAGMA journal_mode=wal;\nCREATE TABLE t(x);\n\
         WITH s(i) AS (VALUES(1) UNION ALL SELECT i+1 FROM s WHERE i<40) \
         INSERT INTO t SELECT randomblob(1000) FROM s;\n\
         PRAGMA wal_checkpoint(TRUNCATE);\nPRAGMA wal_autocheckpoint=0;\n\
         INSERT INTO t VALUES('only in the WAL');\n\
         .shell cp made.db app.db && cp made.db-wal app.db-wal\n",
    )
}

#[test]
fn a_wal_snapshot_takes_what_the_wal_lacks_from_a_file_that_has_it() {
    let dir = tempfile::tempdir().unwrap();
    let db = wal_database(dir.path());
    let pages = (std::fs::metadata(&db).unwrap().len() / PS as u64) as u32;
    let mut c = Capture::open(&db, 1 << 30, open_plain).unwrap();
    c.remote_known = true;
    assert!(c.seal_next(0, true, Stillness::OwnLock).unwrap());
    let q = c.queue.front().expect("sealed").clone();
    assert!(q.full && q.header.commit >= pages, "{:?}", q.header);
    let Location::Memory(bytes) = &q.location else {
        panic!("a small file is encoded in memory")
    };
    let file = std::fs::read(&db).unwrap();
    let wal_only = pages_of(bytes)
        .into_iter()
        .filter(|(pgno, page)| {
            let at = (*pgno as usize - 1) * PS;
            file.get(at..at + PS) != Some(&page[..])
        })
        .count();
    // Only what the last transaction changed differs from the file: its pages came from the WAL.
    assert!(
        (1..=3).contains(&wal_only),
        "{wal_only} pages differ from the file"
    );
}

#[test]
fn a_wal_snapshot_of_a_file_short_of_pages_no_frame_holds_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = wal_database(dir.path());
    // As multiplex leaves its first chunk: the pages past 8 KiB are elsewhere.
    File::options()
        .write(true)
        .open(&db)
        .unwrap()
        .set_len(2 * PS as u64)
        .unwrap();
    let mut c = Capture::open(&db, 1 << 30, open_plain).unwrap();
    c.remote_known = true;
    let err = c.seal_next(0, true, Stillness::OwnLock).unwrap_err();
    assert!(err.to_string().contains("not the whole database"), "{err}");
    assert!(c.queue.is_empty());
}

/// A transaction that wrote `bytes` into the file and then failed with its own rollback
/// (an I/O or memory error): SQLite drops the lock with the journal still hot.
fn fail_leaving_hot_journal(c: &mut Capture, path: &Path, bytes: &[u8]) -> io::Result<()> {
    c.write_lock_taken(false);
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    // A journal header's magic: what SQLite looks at to call a journal hot.
    std::fs::write(&journal, [0xd9, 0xd5, 0x05, 0xf9, 0x20, 0xa1, 0x63, 0xd7])?;
    let f = OpenOptions::new().write(true).open(path)?;
    for (i, page) in bytes.chunks(PS).enumerate() {
        let at = (i * PS) as u64;
        f.write_all_at(page, at)?;
        c.after_db_write(at, page.len() as u64);
    }
    let result = c.commit_point(); // the lock dropped to SHARED
    c.write_lock_released(false);
    result
}

/// The next reader rolls the hot journal back: the last commit's pages written again.
fn roll_back_hot_journal(c: &mut Capture, path: &Path, committed: &[u8]) -> io::Result<()> {
    c.write_lock_taken(true);
    let f = OpenOptions::new().write(true).open(path)?;
    f.write_all_at(committed, 0)?;
    c.after_db_write(0, committed.len() as u64);
    f.set_len(committed.len() as u64)?;
    let mut journal = path.as_os_str().to_owned();
    journal.push("-journal");
    std::fs::remove_file(&journal)?;
    let result = c.commit_point();
    c.write_lock_released(true);
    result
}

#[test]
fn a_transaction_that_failed_with_its_journal_hot_is_not_a_commit() {
    // Seen in SQLite's malloc tests: a failure mid-commit after page 1 (counting the pages
    // the transaction adds) was written, and the rollback failing too. Variants: the growth
    // never reached the file (it was read as a file short of its pages), and every page of
    // the transaction did (it was shipped as a commit, then the rollback put the old pages
    // back and the replica kept rows the database never committed).
    for (name, uncommitted) in [
        ("page 1 only", image(3, 5, 2)[..PS].to_vec()),
        ("every page", image(4, 4, 2)),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let db = dir.path().join("app.db");
        let mut c = Capture::open(&db, 1 << 30, open_plain).unwrap();
        let committed = image(3, 3, 1);
        commit(&mut c, &db, &committed).unwrap();
        c.remote_known = true;
        assert!(c.seal_next(0, false, Stillness::OwnLock).unwrap());
        fail_leaving_hot_journal(&mut c, &db, &uncommitted)
            .unwrap_or_else(|e| panic!("{name}: an uncommitted write is no error: {e}"));
        roll_back_hot_journal(&mut c, &db, &committed).unwrap();
        assert!(
            !c.seal_next(0, false, Stillness::OwnLock).unwrap(),
            "{name}: nothing was committed after TXID 1, nothing is sealed"
        );
        assert_eq!(c.queue.len(), 1, "{name}");
    }
}

#[test]
fn a_wal_snapshot_with_the_lock_page_of_a_moved_pending_byte_is_whole() {
    // SQLite's tests move the pending byte to 64 KiB: page 65 (1 KiB pages) is the lock-byte
    // page then, in no WAL frame and past the end of a file that has only its first page.
    let dir = tempfile::tempdir().unwrap();
    let db = made_by_the_shell(
        dir.path(),
        ".testctrl pending_byte 65536\nPRAGMA page_size=1024;\nPRAGMA journal_mode=wal;\n\
         PRAGMA wal_autocheckpoint=0;\nCREATE TABLE t(x);\n\
         WITH s(i) AS (VALUES(1) UNION ALL SELECT i+1 FROM s WHERE i<100) \
         INSERT INTO t SELECT randomblob(900) FROM s;\n\
         .shell cp made.db app.db && cp made.db-wal app.db-wal\n",
    );
    assert_eq!(std::fs::metadata(&db).unwrap().len(), 1024);
    let mut c = Capture::open(&db, 1 << 30, open_plain).unwrap();
    c.remote_known = true;
    assert!(c.seal_next(0, true, Stillness::OwnLock).unwrap());
    let q = c.queue.front().expect("sealed").clone();
    assert!(q.full && q.header.commit > 65, "{:?}", q.header);
}

/// A WAL-mode database whose file ends in free pages and whose WAL holds one commit:
/// `keep` (page 2) and `t` (page 3) made, 30 rows of `t` deleted (their pages freed, in the
/// file), then a row added to `keep` only in the WAL. Returns the path and its page count.
fn wal_database_ending_in_free_pages(dir: &Path) -> (std::path::PathBuf, u32) {
    let db = made_by_the_shell(
        dir,
        "PRAGMA page_size=1024;\nPRAGMA journal_mode=wal;\nCREATE TABLE keep(x);\n\
         CREATE TABLE t(x);\n\
         WITH s(i) AS (VALUES(1) UNION ALL SELECT i+1 FROM s WHERE i<30) \
         INSERT INTO t SELECT randomblob(900) FROM s;\nDELETE FROM t;\n\
         PRAGMA wal_checkpoint(TRUNCATE);\nPRAGMA wal_autocheckpoint=0;\n\
         INSERT INTO keep VALUES('only in the WAL');\n\
         .shell cp made.db app.db && cp made.db-wal app.db-wal\n",
    );
    let pages = (std::fs::metadata(&db).unwrap().len() / 1024) as u32;
    (db, pages)
}

#[test]
fn a_wal_snapshot_lacking_only_free_pages_is_whole() {
    // SQLite skips writing a page freed to the freelist's leaves (its content is never read):
    // a WAL commit can count pages that neither a frame nor the file holds. Here the file is
    // cut to leave its last three pages, free leaves, out.
    let dir = tempfile::tempdir().unwrap();
    let (db, pages) = wal_database_ending_in_free_pages(dir.path());
    assert!(pages > 30, "{pages}");
    let file = File::options().write(true).open(&db).unwrap();
    file.set_len(u64::from(pages - 3) * 1024).unwrap();
    let mut c = Capture::open(&db, 1 << 30, open_plain).unwrap();
    c.remote_known = true;
    assert!(c.seal_next(0, true, Stillness::OwnLock).unwrap());
    let q = c.queue.front().expect("sealed").clone();
    assert_eq!(q.header.commit, pages);
    // A page in use lacking (t's root, page 3, and all after it): refused.
    drop(c);
    file.set_len(2 * 1024).unwrap();
    let mut c = Capture::open(&db, 1 << 30, open_plain).unwrap();
    c.needs_full = true;
    c.remote_known = true;
    let err = c.seal_next(0, true, Stillness::OwnLock).unwrap_err();
    assert!(err.to_string().contains("not the whole database"), "{err}");
}
