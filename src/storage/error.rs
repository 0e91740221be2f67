use std::io;

/// A storage failure. Messages name the object (bucket and key, or path), never a secret.
#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("invalid replica URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    #[error("not found: {0}")]
    NotFound(String),
    #[error("precondition failed (already exists or changed since read): {0}")]
    PreconditionFailed(String),
    #[error("access denied to {what}: {detail} (check the credentials and their permissions)")]
    AccessDenied { what: String, detail: String },
    #[error("bucket {bucket:?} does not exist at {endpoint}")]
    NoSuchBucket { bucket: String, endpoint: String },
    #[error("{what}: HTTP {status}: {detail}")]
    Http {
        what: String,
        status: u16,
        detail: String,
    },
    #[error("{what}: {detail}")]
    Transport { what: String, detail: String },
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: io::Error,
    },
    #[error("{what}: {detail}")]
    Protocol { what: String, detail: String },
}

impl StorageError {
    /// Worth trying again: server errors, throttling, timeouts, broken connections.
    pub fn is_transient(&self) -> bool {
        match self {
            Self::Http { status, .. } => *status >= 500 || *status == 429 || *status == 408,
            Self::Transport { .. } => true,
            Self::Io { source, .. } => matches!(
                source.kind(),
                io::ErrorKind::Interrupted | io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock
            ),
            _ => false,
        }
    }

    pub fn is_not_found(&self) -> bool {
        matches!(self, Self::NotFound(_))
    }

    pub fn is_precondition_failed(&self) -> bool {
        matches!(self, Self::PreconditionFailed(_))
    }
}

/// What the caller can do about it: refused credentials (or a replica directory we may not
/// write) are a permission error; what may pass (a server error, throttling, a broken
/// connection, a conditional write that lost a race) is busy; the rest (a missing bucket or
/// object, a bad URL) is a plain error.
impl From<StorageError> for crate::Error {
    fn from(e: StorageError) -> Self {
        let message = e.to_string();
        match &e {
            StorageError::AccessDenied { .. } => crate::Error::permission(message),
            StorageError::Io { source, .. } if source.kind() == io::ErrorKind::PermissionDenied => {
                crate::Error::permission(message)
            }
            StorageError::PreconditionFailed(_) => crate::Error::busy(message),
            _ if e.is_transient() => crate::Error::busy(message),
            _ => crate::Error::other(message),
        }
    }
}
