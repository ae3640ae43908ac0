//! kiln-store: the local content-addressed store.
//!
//! It owns the file system side of kiln: deterministic tar+zstd archives keyed by output hash
//! ([`archive`]), the action cache and derivation records, GC roots, per-derivation locks,
//! garbage collection and verification ([`LocalStore`]). It does not know how rules are built.
//!
//! Everything a cache can hand over is untrusted: [`archive::unpack`] validates every entry, and
//! every load rehashes the tree and compares it with the key.

pub mod archive;
pub mod backend;
pub mod error;
pub mod gc;
pub mod ingest;
pub mod local;
pub mod scratch;
pub mod verify;

pub use backend::{
    from_addr, ActionCache, Backend, MemoryStore, ObjectStore, PullThrough, Substituter,
};
pub use error::{Result, StoreError};
pub use local::{BuildInfo, LocalStore, OutputRecord, Root, RootEntry};
pub use scratch::ScratchDir;
