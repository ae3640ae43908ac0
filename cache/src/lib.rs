//! kiln-cache: the remote cache that CI runners and laptops share.
//!
//! A static, versioned layout ([`layout`]) on any `object_store` backend ([`address`]):
//! action entries signed with ed25519 ([`entry`], [`keys`]), archives verified like any
//! untrusted input. [`RemoteCache`] implements the store's [`kiln_store::Substituter`] (pulls,
//! concurrent and lazy) and pushes; [`server`] is `kiln cache serve`. Settings come from
//! [`config`].

pub mod address;
pub mod config;
pub mod entry;
mod error;
pub mod keys;
pub mod layout;
pub mod provenance;
mod remote;
pub mod server;

pub use address::RemoteOptions;
pub use error::CacheError;
pub use remote::{
    default_key_path, read_token, verified_tree, PushItem, RemoteCache, Traffic, VerifyReport,
};
