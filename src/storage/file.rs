//! `file:///abs/dir`: the embedded default. Writes are temp file + fsync + rename + directory
//! fsync; conditional writes are made atomic across processes by an exclusive lock on the
//! object's directory, so leases work here too.

use std::fs::{self, File, FileTimes, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use bytes::Bytes;

use super::{ObjectMeta, PutCondition, Result, StorageError, WrittenBody};

pub struct FileStore {
    root: PathBuf,
}

fn io_err(what: &Path) -> impl FnOnce(io::Error) -> StorageError + '_ {
    move |source| match source.kind() {
        io::ErrorKind::NotFound => StorageError::NotFound(what.display().to_string()),
        _ => StorageError::Io {
            what: what.display().to_string(),
            source,
        },
    }
}

/// A version tag that changes whenever the file is replaced (a rename gives a new inode).
fn etag_of(meta: &fs::Metadata) -> String {
    format!(
        "{:x}-{:x}-{:x}.{:09}",
        meta.ino(),
        meta.size(),
        meta.mtime(),
        meta.mtime_nsec()
    )
}

fn modified_ms(meta: &fs::Metadata) -> i64 {
    meta.mtime() * 1000 + meta.mtime_nsec() / 1_000_000
}

fn object_meta(meta: &fs::Metadata) -> ObjectMeta {
    ObjectMeta {
        size: meta.size(),
        etag: etag_of(meta),
        modified_ms: modified_ms(meta),
        timestamp_ms: Some(modified_ms(meta)),
    }
}

fn fsync_dir(dir: &Path) -> io::Result<()> {
    File::open(dir)?.sync_all()
}

/// Runs blocking file work off the async workers.
async fn blocking<T: Send + 'static>(f: impl FnOnce() -> Result<T> + Send + 'static) -> Result<T> {
    tokio::task::spawn_blocking(f)
        .await
        .map_err(|e| StorageError::Protocol {
            what: "file store".into(),
            detail: format!("worker failed: {e}"),
        })?
}

impl FileStore {
    pub fn new(root: PathBuf) -> Self {
        Self { root }
    }

    pub fn describe(&self) -> String {
        format!("file://{}", self.root.display())
    }

    fn path(&self, key: &str) -> PathBuf {
        self.root.join(key)
    }

    /// Objects under `prefix` (a directory; no recursion), with their metadata.
    pub async fn list(&self, prefix: &str) -> Result<Vec<(String, ObjectMeta)>> {
        let dir = self.path(prefix);
        let prefix = prefix.to_string();
        blocking(move || {
            let entries = match fs::read_dir(&dir) {
                Ok(e) => e,
                Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
                Err(e) => return Err(io_err(&dir)(e)),
            };
            let mut out = Vec::new();
            for entry in entries {
                let entry = entry.map_err(io_err(&dir))?;
                let name = entry.file_name().to_string_lossy().into_owned();
                match entry.metadata() {
                    Ok(meta) if meta.is_file() => {
                        out.push((format!("{prefix}{name}"), object_meta(&meta)))
                    }
                    Ok(_) => {}
                    // Deleted between readdir and stat: not there any more.
                    Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                    Err(e) => return Err(io_err(&entry.path())(e)),
                }
            }
            out.sort_by(|a, b| a.0.cmp(&b.0));
            Ok(out)
        })
        .await
    }

    pub async fn get(&self, key: &str, range: Option<(u64, Option<u64>)>) -> Result<Bytes> {
        let path = self.path(key);
        blocking(move || {
            let mut f = File::open(&path).map_err(io_err(&path))?;
            let size = f.metadata().map_err(io_err(&path))?.len();
            let (offset, len) = match range {
                None => (0, size),
                Some((off, len)) => {
                    if off > size {
                        return Err(StorageError::Protocol {
                            what: path.display().to_string(),
                            detail: format!("range starts at {off}, past the end ({size} bytes)"),
                        });
                    }
                    (off, len.map_or(size - off, |l| l.min(size - off)))
                }
            };
            f.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
            let mut buf = vec![0u8; len as usize];
            f.read_exact(&mut buf).map_err(io_err(&path))?;
            Ok(Bytes::from(buf))
        })
        .await
    }

    /// Copies the object from `offset` to its end into `out`.
    pub async fn get_into(&self, key: &str, offset: u64, out: &mut File) -> Result<u64> {
        let path = self.path(key);
        let mut dst = out.try_clone().map_err(io_err(&path))?;
        blocking(move || {
            let mut f = File::open(&path).map_err(io_err(&path))?;
            f.seek(SeekFrom::Start(offset)).map_err(io_err(&path))?;
            io::copy(&mut f, &mut dst).map_err(io_err(&path))
        })
        .await
    }

    pub async fn head(&self, key: &str) -> Result<ObjectMeta> {
        let path = self.path(key);
        blocking(move || Ok(object_meta(&fs::metadata(&path).map_err(io_err(&path))?))).await
    }

    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        condition: PutCondition,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        let path = self.path(key);
        blocking(move || put_blocking(&path, &body, &condition, timestamp_ms)).await
    }

    /// Copies `src_key` of `src` to `key` here, never replacing an object.
    pub async fn copy_from(&self, src: &FileStore, src_key: &str, key: &str) -> Result<()> {
        let (from, to) = (src.path(src_key), self.path(key));
        blocking(move || copy_blocking(&from, &to, &PutCondition::IfNoneMatch, None).map(|_| ()))
            .await
    }

    /// Writes the local file `src` as `key` (see `put`).
    pub async fn put_file(
        &self,
        key: &str,
        src: &Path,
        condition: PutCondition,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        let (from, to) = (src.to_path_buf(), self.path(key));
        let modified = timestamp_ms.map(|ms| UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64));
        blocking(move || copy_blocking(&from, &to, &condition, modified)).await
    }

    /// Writes `key` from what `body` writes (see `put`).
    pub async fn put_written(
        &self,
        key: &str,
        body: WrittenBody,
        condition: PutCondition,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        let path = self.path(key);
        blocking(move || {
            write_blocking(&path, &condition, timestamp_ms, |f| {
                let mut counted = CountingWriter::new(io::BufWriter::new(f));
                (body.write)(&mut counted)?;
                counted.flush()?;
                body.check_length(counted.count)
            })
        })
        .await
    }

    pub async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<()> {
        let path = self.path(key);
        let if_match = if_match.map(str::to_string);
        blocking(move || {
            let dir = parent(&path)?;
            let _lock = match if_match {
                Some(_) => Some(DirLock::acquire(dir)?),
                None => None,
            };
            if let Some(expected) = &if_match {
                let meta = fs::metadata(&path).map_err(io_err(&path))?;
                if &etag_of(&meta) != expected {
                    return Err(StorageError::PreconditionFailed(path.display().to_string()));
                }
            }
            match fs::remove_file(&path) {
                Ok(()) => fsync_dir(dir).map_err(io_err(dir)),
                Err(e) if e.kind() == io::ErrorKind::NotFound && if_match.is_none() => Ok(()),
                Err(e) => Err(io_err(&path)(e)),
            }
        })
        .await
    }
}

fn parent(path: &Path) -> Result<&Path> {
    path.parent().ok_or_else(|| StorageError::Protocol {
        what: path.display().to_string(),
        detail: "object path has no directory".into(),
    })
}

/// An exclusive `flock` on a directory, held while a conditional write checks and acts.
struct DirLock(File);

impl DirLock {
    fn acquire(dir: &Path) -> Result<Self> {
        let f = File::open(dir).map_err(io_err(dir))?;
        f.lock().map_err(io_err(dir))?;
        Ok(Self(f))
    }
}

impl Drop for DirLock {
    fn drop(&mut self) {
        let _ = self.0.unlock();
    }
}

fn put_blocking(
    path: &Path,
    body: &[u8],
    condition: &PutCondition,
    timestamp_ms: Option<i64>,
) -> Result<String> {
    write_blocking(path, condition, timestamp_ms, |mut f| f.write_all(body))
}

/// Counts the bytes written through it.
struct CountingWriter<W> {
    inner: W,
    count: u64,
}

impl<W> CountingWriter<W> {
    fn new(inner: W) -> Self {
        Self { inner, count: 0 }
    }
}

impl<W: Write> Write for CountingWriter<W> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.inner.write(buf)?;
        self.count += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.inner.flush()
    }
}

/// Writes `path` with what `fill` writes into a new temp file, if `condition` holds.
fn write_blocking(
    path: &Path,
    condition: &PutCondition,
    timestamp_ms: Option<i64>,
    fill: impl FnOnce(&File) -> io::Result<()>,
) -> Result<String> {
    let tmp = temp_beside(path)?;
    let result = (|| {
        let f = OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        fill(&f).map_err(io_err(&tmp))?;
        if let Some(ms) = timestamp_ms {
            let t = UNIX_EPOCH + Duration::from_millis(ms.max(0) as u64);
            f.set_times(
                FileTimes::new()
                    .set_modified(t)
                    .set_accessed(SystemTime::now()),
            )
            .map_err(io_err(&tmp))?;
        }
        f.sync_all().map_err(io_err(&tmp))?;
        drop(f);
        install(&tmp, path, condition)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// A temp name beside `path` that no other writer uses; Litestream skips such names.
fn temp_beside(path: &Path) -> Result<PathBuf> {
    let dir = parent(path)?;
    fs::create_dir_all(dir).map_err(io_err(dir))?;
    let name = path.file_name().unwrap_or_default().to_string_lossy();
    Ok(dir.join(format!(".{name}.{:016x}.tmp", rand::random::<u64>())))
}

/// Copies `src` to `path` if `condition` holds, with mtime `modified` (default: the
/// source's). Returns the new ETag.
fn copy_blocking(
    src: &Path,
    path: &Path,
    condition: &PutCondition,
    modified: Option<SystemTime>,
) -> Result<String> {
    let tmp = temp_beside(path)?;
    let result = (|| {
        fs::copy(src, &tmp).map_err(io_err(src))?;
        let modified = match modified {
            Some(t) => t,
            None => fs::metadata(src)
                .and_then(|m| m.modified())
                .map_err(io_err(src))?,
        };
        let f = OpenOptions::new()
            .write(true)
            .open(&tmp)
            .map_err(io_err(&tmp))?;
        f.set_times(FileTimes::new().set_modified(modified))
            .map_err(io_err(&tmp))?;
        f.sync_all().map_err(io_err(&tmp))?;
        install(&tmp, path, condition)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Renames the complete, synced `tmp` to `path` if `condition` holds (checked under the
/// directory lock), then syncs the directory. Returns the new ETag.
fn install(tmp: &Path, path: &Path, condition: &PutCondition) -> Result<String> {
    let dir = parent(path)?;
    {
        let _lock = match condition {
            PutCondition::Always => None,
            _ => Some(DirLock::acquire(dir)?),
        };
        match condition {
            PutCondition::Always => {}
            PutCondition::IfNoneMatch => {
                if path.exists() {
                    return Err(StorageError::PreconditionFailed(path.display().to_string()));
                }
            }
            PutCondition::IfMatch(expected) => match fs::metadata(path) {
                Ok(meta) if &etag_of(&meta) == expected => {}
                Ok(_) => return Err(StorageError::PreconditionFailed(path.display().to_string())),
                Err(e) if e.kind() == io::ErrorKind::NotFound => {
                    return Err(StorageError::NotFound(path.display().to_string()))
                }
                Err(e) => return Err(io_err(path)(e)),
            },
        }
        fs::rename(tmp, path).map_err(io_err(path))?;
    }
    fsync_dir(dir).map_err(io_err(dir))?;
    Ok(etag_of(&fs::metadata(path).map_err(io_err(path))?))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn body(length: u64, bytes: &'static [u8]) -> WrittenBody {
        WrittenBody {
            length,
            write: std::sync::Arc::new(move |out| out.write_all(bytes)),
        }
    }

    #[tokio::test]
    async fn a_written_body_becomes_the_object_only_at_its_announced_length() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileStore::new(dir.path().to_path_buf());
        let err = store
            .put_written(
                "a/short",
                body(10, b"12345"),
                PutCondition::IfNoneMatch,
                None,
            )
            .await
            .expect_err("a short body must fail");
        assert!(err.to_string().contains("announced"), "{err}");
        assert!(!dir.path().join("a/short").exists());
        assert_eq!(
            fs::read_dir(dir.path().join("a")).unwrap().count(),
            0,
            "no temp file left"
        );
        store
            .put_written(
                "a/ok",
                body(5, b"12345"),
                PutCondition::IfNoneMatch,
                Some(1000),
            )
            .await
            .unwrap();
        assert_eq!(fs::read(dir.path().join("a/ok")).unwrap(), b"12345");
        let again = store
            .put_written("a/ok", body(5, b"54321"), PutCondition::IfNoneMatch, None)
            .await;
        assert!(again.unwrap_err().is_precondition_failed());
    }
}
