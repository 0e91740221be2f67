//! Object storage: one interface, two backends (`file://` directory and `s3://`) and an
//! in-memory one for unit tests, and the key layout Litestream 0.5 uses on each. Nothing here
//! knows about SQLite.

mod error;
mod file;
mod memory;
mod retry;
pub use retry::backoff;
mod s3;
mod url;

use bytes::Bytes;

pub use error::StorageError;
pub use file::FileStore;
pub use memory::{Faults, MemoryStore};
pub use s3::S3Store;
pub use url::{redact, ReplicaUrl, S3Config};

use crate::ltx::{self, Txid};

pub type Result<T> = std::result::Result<T, StorageError>;

/// One LTX file as a listing shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LtxFileInfo {
    pub level: u8,
    pub min_txid: Txid,
    pub max_txid: Txid,
    pub size: u64,
    /// Milliseconds since the epoch: file mtime (set to the LTX timestamp) or S3 LastModified.
    pub created_at_ms: i64,
}

/// Size, version tag and modification time of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ObjectMeta {
    pub size: u64,
    /// Opaque version tag for `If-Match` (S3 ETag as returned, quotes included).
    pub etag: String,
    pub modified_ms: i64,
    /// The `litestream-timestamp` metadata (S3) or the mtime Litestream sets (file).
    pub timestamp_ms: Option<i64>,
}

/// Writes a body into the writer it is given (blocking); called once per upload attempt.
pub type WriteFn = dyn Fn(&mut dyn std::io::Write) -> std::io::Result<()> + Send + Sync;

/// An upload body neither in memory nor in a file: written on demand by a blocking writer,
/// to exactly `length` bytes.
#[derive(Clone)]
pub struct WrittenBody {
    pub length: u64,
    pub write: std::sync::Arc<WriteFn>,
}

impl WrittenBody {
    /// Fails when the writer wrote other than the announced length (every backend checks).
    pub(crate) fn check_length(&self, written: u64) -> std::io::Result<()> {
        if written == self.length {
            return Ok(());
        }
        Err(std::io::Error::other(format!(
            "the body came to {written} bytes where {} were announced",
            self.length
        )))
    }
}

/// When a PUT may happen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PutCondition {
    Always,
    /// `If-None-Match: *`: only if the key does not exist.
    IfNoneMatch,
    /// `If-Match: <etag>`: only if the object is still this version.
    IfMatch(String),
}

/// What the conditional-write probe found.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ConditionalSupport {
    /// `If-None-Match: *` refuses to overwrite.
    pub create: bool,
    /// `If-Match` refuses a wrong ETag and accepts the right one.
    pub replace: bool,
    /// The store only matches an unquoted ETag (Ceph RGW 16).
    pub unquoted_etag: bool,
    /// `DELETE` honours `If-Match`.
    pub conditional_delete: bool,
}

impl ConditionalSupport {
    /// Leases need at least create and replace.
    pub fn is_sufficient(&self) -> bool {
        self.create && self.replace
    }
}

/// Level of Litestream's snapshots.
pub const SNAPSHOT_LEVEL: u8 = 9;

/// A request unanswered for longer than this shows in the status (`last_error`) while it
/// lasts: a store that accepts connections and never answers fails nothing for a long while.
pub const STALLED_REQUEST: std::time::Duration = std::time::Duration::from_secs(5);

/// A replica destination.
pub enum Store {
    File(FileStore),
    S3(Box<S3Store>),
    /// Unit tests only (no URL names it); the test keeps a handle to inject faults.
    Memory(std::sync::Arc<MemoryStore>),
}

impl Store {
    pub fn open(url: &str) -> Result<Self> {
        Self::from_url(ReplicaUrl::parse(url)?)
    }

    pub fn from_url(url: ReplicaUrl) -> Result<Self> {
        Ok(match url {
            ReplicaUrl::File { root } => Self::File(FileStore::new(root)),
            ReplicaUrl::S3(cfg) => Self::S3(Box::new(S3Store::new(cfg)?)),
        })
    }

    /// The destination for messages and status: never contains a secret.
    pub fn describe(&self) -> String {
        match self {
            Self::File(f) => f.describe(),
            Self::S3(s) => s.describe(),
            Self::Memory(m) => m.describe(),
        }
    }

    /// Key of an LTX file relative to the replica root, in Litestream's layout.
    pub fn ltx_key(&self, level: u8, min: Txid, max: Txid) -> String {
        format!("{}{}", self.level_prefix(level), ltx::file_name(min, max))
    }

    fn level_prefix(&self, level: u8) -> String {
        match self {
            // file and most backends: ltx/<decimal level>/
            Self::File(_) | Self::Memory(_) => format!("ltx/{level}/"),
            // S3 and OSS: <%04x level>/, no ltx/ segment
            Self::S3(_) => format!("{level:04x}/"),
        }
    }

    /// LTX files of `level` whose MinTXID >= `seek`, in name (TXID) order.
    pub async fn list_ltx(&self, level: u8, seek: Txid) -> Result<Vec<LtxFileInfo>> {
        let prefix = self.level_prefix(level);
        // Names sort by (min, max): everything with min >= seek sorts after this one.
        let start_after = seek
            .checked_sub(1)
            .map(|before| format!("{prefix}{}", ltx::file_name(before, u64::MAX)));
        let objects = match self {
            Self::File(f) => f.list(&prefix).await?,
            Self::S3(s) => s.list(&prefix, start_after.as_deref()).await?,
            Self::Memory(m) => m.list(&prefix).await?,
        };
        let mut files: Vec<LtxFileInfo> = objects
            .into_iter()
            .filter_map(|(key, meta)| {
                let (min_txid, max_txid) = ltx::parse_file_name(key.strip_prefix(&prefix)?)?;
                (min_txid >= seek).then_some(LtxFileInfo {
                    level,
                    min_txid,
                    max_txid,
                    size: meta.size,
                    created_at_ms: meta.modified_ms,
                })
            })
            .collect();
        files.sort_by_key(|f| (f.min_txid, f.max_txid));
        Ok(files)
    }

    /// The LTX files of every level (0..=9), level by level, listed all at once (a listing
    /// is a round trip).
    pub async fn list_every_level(&self) -> Result<Vec<LtxFileInfo>> {
        let listings = futures_util::future::join_all(
            (0..=SNAPSHOT_LEVEL).map(|level| self.list_ltx(level, 0)),
        )
        .await;
        let mut all = Vec::new();
        for files in listings {
            all.extend(files?);
        }
        Ok(all)
    }

    /// Reads a whole object, or `len` bytes from `offset` (to the end when `len` is None).
    pub async fn get(&self, key: &str, range: Option<(u64, Option<u64>)>) -> Result<Bytes> {
        match self {
            Self::File(f) => f.get(key, range).await,
            Self::S3(s) => s.get(key, range).await,
            Self::Memory(m) => m.get(key, range).await,
        }
    }

    /// Streams an object, from `offset` to its end, into `out` (memory stays small whatever
    /// its size). Returns the bytes written.
    pub async fn get_into(&self, key: &str, offset: u64, out: &mut std::fs::File) -> Result<u64> {
        match self {
            Self::File(f) => f.get_into(key, offset, out).await,
            Self::S3(s) => s.get_into(key, offset, out).await,
            Self::Memory(m) => m.get_into(key, offset, out).await,
        }
    }

    pub async fn head(&self, key: &str) -> Result<ObjectMeta> {
        match self {
            Self::File(f) => f.head(key).await,
            Self::S3(s) => s.head(key).await,
            Self::Memory(m) => m.head(key).await,
        }
    }

    /// Writes an object. `timestamp_ms` (an LTX header timestamp) becomes the file mtime or
    /// the S3 `litestream-timestamp` metadata, as Litestream does. Returns the new ETag.
    pub async fn put(
        &self,
        key: &str,
        body: Bytes,
        condition: PutCondition,
        timestamp_ms: Option<i64>,
    ) -> Result<String> {
        match self {
            Self::File(f) => f.put(key, body, condition, timestamp_ms).await,
            Self::S3(s) => s.put(key, body, condition, timestamp_ms).await,
            Self::Memory(m) => m.put(key, body, condition, timestamp_ms).await,
        }
    }

    /// Copies `src_key` of `src` to `key` here without the bytes passing through this
    /// process (S3 CopyObject on one service, a file copy between local directories), never
    /// replacing an object on local files. `Ok(false)` when the two stores cannot do that.
    pub async fn copy_from(&self, src: &Store, src_key: &str, key: &str) -> Result<bool> {
        match (self, src) {
            (Self::File(to), Self::File(from)) => {
                to.copy_from(from, src_key, key).await.map(|_| true)
            }
            (Self::S3(to), Self::S3(from)) if to.same_service(from) => {
                to.copy_from(from, src_key, key).await.map(|_| true)
            }
            (Self::Memory(to), Self::Memory(from)) => {
                to.copy_from(from, src_key, key).await.map(|_| true)
            }
            _ => Ok(false),
        }
    }

    /// Deletes an object; with `if_match`, only if it is still that version. A missing
    /// object is not an error when unconditional.
    pub async fn delete(&self, key: &str, if_match: Option<&str>) -> Result<()> {
        match self {
            Self::File(f) => f.delete(key, if_match).await,
            Self::S3(s) => s.delete(key, if_match).await,
            Self::Memory(m) => m.delete(key, if_match).await,
        }
    }

    /// Deletes many objects (S3: batches of 1000).
    pub async fn delete_many(&self, keys: &[String]) -> Result<()> {
        match self {
            Self::File(_) | Self::Memory(_) => {
                for k in keys {
                    self.delete(k, None).await?;
                }
                Ok(())
            }
            Self::S3(s) => s.delete_many(keys).await,
        }
    }

    /// Writes an LTX file with `If-None-Match: *` (or unconditionally), under its key.
    pub async fn put_ltx(
        &self,
        level: u8,
        header: &ltx::Header,
        body: Bytes,
        condition: PutCondition,
    ) -> Result<String> {
        let key = self.ltx_key(level, header.min_txid, header.max_txid);
        self.put(&key, body, condition, Some(header.timestamp))
            .await
    }

    /// Writes the LTX file at `src` (streamed from disk) under its key.
    pub async fn put_ltx_file(
        &self,
        level: u8,
        header: &ltx::Header,
        src: &std::path::Path,
        condition: PutCondition,
    ) -> Result<String> {
        let key = self.ltx_key(level, header.min_txid, header.max_txid);
        let ts = Some(header.timestamp);
        match self {
            Self::File(f) => f.put_file(&key, src, condition, ts).await,
            Self::S3(s) => s.put_file(&key, src, condition, ts).await,
            Self::Memory(m) => m.put_file(&key, src, condition, ts).await,
        }
    }

    /// Uploads an LTX file whose bytes `body` writes as they are sent.
    pub async fn put_ltx_written(
        &self,
        level: u8,
        header: &ltx::Header,
        body: WrittenBody,
        condition: PutCondition,
    ) -> Result<String> {
        let key = self.ltx_key(level, header.min_txid, header.max_txid);
        let ts = Some(header.timestamp);
        match self {
            Self::File(f) => f.put_written(&key, body, condition, ts).await,
            Self::S3(s) => s.put_written(&key, body, condition, ts).await,
            Self::Memory(m) => m.put_written(&key, body, condition, ts).await,
        }
    }

    pub async fn get_ltx(
        &self,
        info: &LtxFileInfo,
        range: Option<(u64, Option<u64>)>,
    ) -> Result<Bytes> {
        let key = self.ltx_key(info.level, info.min_txid, info.max_txid);
        self.get(&key, range).await
    }

    /// Checks, with a scratch object, whether the store really honours conditional writes.
    /// Stores that ignore them (Garage, s3rver) would let two writers both win a lease.
    pub async fn probe_conditional_writes(&self) -> Result<ConditionalSupport> {
        match self {
            // Local files: made atomic by a directory lock (see FileStore).
            Self::File(_) => Ok(ConditionalSupport {
                create: true,
                replace: true,
                unquoted_etag: false,
                conditional_delete: true,
            }),
            Self::S3(s) => s.probe_conditional_writes().await,
            Self::Memory(m) => Ok(m.conditional_support()),
        }
    }
}
