//! kiln-core: the rule model and everything that can be computed without touching the store or
//! a cluster.
//!
//! It loads a project (`kiln.toml` and its includes) into a [`project::Project`], builds the rule
//! DAG ([`graph::RuleGraph`]), defines the canonical encodings and hashes
//! ([`derivation::Derivation`], [`tree::Tree`]), resolves `${...}` interpolation and runs work
//! over the DAG in parallel ([`scheduler`]). It is synchronous (rayon) and knows nothing of the
//! store layout, the rule kinds' implementations, tokio or Kubernetes clients.

pub mod attrs;
pub mod canonical;
pub mod derivation;
pub mod diagnostic;
pub mod digest;
pub mod error_chain;
pub mod exports;
#[cfg(any(test, feature = "fixtures"))]
pub mod fixtures;
pub mod graph;
pub mod interpolate;
pub mod interrupt;
pub mod kind;
pub mod load;
pub mod name;
pub mod project;
pub mod relpath;
pub mod render;
pub mod scheduler;
pub mod seconds;
pub mod sources;
pub mod span;
pub mod tree;

/// File contents: shared, and taken from a `Vec` without a copy.
pub use bytes::Bytes;
pub use digest::Digest;
pub use name::{EnvName, RuleName};
pub use relpath::RelPath;
pub use tree::Tree;
