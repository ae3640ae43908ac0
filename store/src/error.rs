//! The store's error type.

use std::path::PathBuf;

use kiln_core::Digest;

/// A store operation that failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// File system I/O failed.
    #[error("failed to {action} `{path}`")]
    Io {
        /// What was being attempted ("write", "rename", ...).
        action: &'static str,
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// An archive was refused while unpacking.
    #[error("archive `{object}` refused")]
    Archive {
        /// The object.
        object: Digest,
        /// Why.
        #[source]
        source: crate::archive::ArchiveError,
    },
    /// A stored entry does not hash to its key.
    #[error("store entry `{path}` is corrupt: {reason}")]
    Corrupt {
        /// The file.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// A backend address no backend serves.
    #[error("no store backend serves `{0}` (known: `file:///path`, `memory://`)")]
    UnsupportedAddress(String),
    /// A directory given to the store is not a valid artifact (a device, an escaping symlink,
    /// a file and a directory at one path, more than the artifact limit).
    #[error("`{dir}` is not a valid artifact")]
    InvalidOutput {
        /// The directory.
        dir: PathBuf,
        /// Why.
        #[source]
        source: kiln_core::tree::TreeError,
    },
    /// No such object.
    #[error("object `{0}` is not in the store")]
    Missing(Digest),
    /// A JSON record could not be (de)serialized.
    #[error("invalid record `{path}`")]
    Record {
        /// The file.
        path: PathBuf,
        /// The cause.
        #[source]
        source: serde_json::Error,
    },
    /// The store was made by an incompatible kiln.
    #[error("store at `{path}` has format `{found}`, this kiln needs `{expected}`")]
    Version {
        /// The store.
        path: PathBuf,
        /// Its format.
        found: String,
        /// Ours.
        expected: &'static str,
    },
}

impl StoreError {
    /// Whether the error says an object is missing or its content is damaged: a store that
    /// heals rebuilds what produced it.
    pub fn is_missing_or_corrupt(&self) -> bool {
        matches!(
            self,
            StoreError::Missing(_) | StoreError::Corrupt { .. } | StoreError::Archive { .. }
        )
    }

    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(std::io::Error) -> Self {
        let path = path.into();
        move |source| StoreError::Io {
            action,
            path,
            source,
        }
    }
}

/// The store's result type.
pub type Result<T, E = StoreError> = std::result::Result<T, E>;
