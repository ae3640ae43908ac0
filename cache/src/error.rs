//! The cache crate's errors.

use std::path::PathBuf;

/// A cache operation or setting that failed.
#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    /// A key that cannot be read or made.
    #[error("{0}")]
    Key(String),
    /// A cache address no backend serves.
    #[error("cache address `{addr}`: {reason}")]
    Address {
        /// The address as given.
        addr: String,
        /// Why it is refused.
        reason: String,
    },
    /// A settings file that cannot be read.
    #[error("{path}: {message}")]
    Config {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        message: String,
    },
    /// A local file (key, token) that cannot be read or written.
    #[error("failed to {action} `{path}`")]
    Io {
        /// What was attempted.
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// The remote cache failed a request.
    #[error("cache `{cache}`: {message}")]
    Remote {
        /// The cache's address.
        cache: String,
        /// What failed.
        message: String,
    },
    /// The local store failed.
    #[error(transparent)]
    Store(#[from] kiln_store::StoreError),
}

impl CacheError {
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| CacheError::Io {
            action,
            path,
            source,
        }
    }
}
