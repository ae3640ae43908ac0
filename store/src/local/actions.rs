//! The action cache: derivation hash -> output record, with the canonical derivation kept
//! beside it; and the per-derivation build locks.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::path::PathBuf;

use kiln_core::{Digest, Tree};
use serde::{Deserialize, Serialize};

use super::{shard, write_atomic, LocalStore};
use crate::error::{Result, StoreError};

/// What the action cache records for a derivation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The output hash.
    pub output: Digest,
    /// Values the artifact exports to dependents (a copy of its `.kiln/exports.json`).
    #[serde(default)]
    pub exports: BTreeMap<String, String>,
    /// Number of entries in the tree.
    pub entries: u64,
    /// Total size of the files, in bytes.
    pub size: u64,
}

/// Who and what built an output: provenance metadata, never part of a hash.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct BuildInfo {
    /// The kiln version.
    pub kiln: String,
    /// The host name.
    pub host: String,
    /// When the build of this rule started, RFC 3339 (UTC).
    pub started: String,
    /// When it finished, RFC 3339 (UTC).
    pub finished: String,
    /// How long it took, in milliseconds.
    pub duration_ms: f64,
}

/// An exclusive lock on one derivation, held while it is built.
#[derive(Debug)]
pub struct DerivationLock {
    _file: File,
}

impl LocalStore {
    pub(crate) fn action_path(&self, drv: &Digest) -> PathBuf {
        shard(&self.dir("actions"), drv, ".json")
    }

    /// Takes the build lock of derivation `drv`, waiting while another process holds it.
    pub fn lock_derivation(&self, drv: &Digest) -> Result<DerivationLock> {
        // Striped: two derivations sharing a stripe (1 in 4096) build one after the other, which
        // is still correct, and no build creates a new inode for its lock.
        let path = self.dir("locks").join(format!("{}.lock", &drv.hex()[..3]));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io("open", &path))?;
        file.lock().map_err(StoreError::io("lock", &path))?;
        Ok(DerivationLock { _file: file })
    }

    /// The action cache entry of `drv` when its object exists too (what a build can use):
    /// `Ok(None)` on a miss, or when the object is gone (it will be rebuilt); an entry that
    /// cannot be read or parsed is an error the caller decides about.
    pub fn usable_output(&self, drv: &Digest) -> Result<Option<OutputRecord>> {
        Ok(self
            .action(drv)?
            .map(|(record, _)| record)
            .filter(|r| self.has_object(&r.output)))
    }

    /// Stores a built artifact: its archive (unless present), then the action cache entry
    /// with the derivation it was built from. Each file appears atomically.
    pub fn put(&self, drv: &Digest, derivation: &[u8], tree: &Tree) -> Result<OutputRecord> {
        let output = self.put_object(tree)?;
        let record = OutputRecord {
            output,
            exports: tree.exports(),
            entries: tree.len() as u64,
            size: tree.content_size(),
        };
        self.write_action(drv, derivation, &record)?;
        Ok(record)
    }

    /// One file per action: the record, and the derivation it was built from.
    pub(crate) fn write_action(
        &self,
        drv: &Digest,
        derivation: &[u8],
        record: &OutputRecord,
    ) -> Result<()> {
        self.write_action_built(drv, derivation, record, None)
    }

    /// [`LocalStore::write_action`] with who and what built the output (kiln version, host,
    /// time, duration): kept beside the record, outside every hash, for `kiln provenance`.
    pub fn write_action_built(
        &self,
        drv: &Digest,
        derivation: &[u8],
        record: &OutputRecord,
        built: Option<&BuildInfo>,
    ) -> Result<()> {
        let mut json = serde_json::to_vec(record).expect("record serializes");
        json.pop(); // the closing brace
        if let Some(b) = built {
            json.extend_from_slice(b",\"built\":");
            json.extend(serde_json::to_vec(b).expect("build info serializes"));
        }
        json.extend_from_slice(b",\"derivation\":");
        json.extend_from_slice(derivation);
        json.push(b'}');
        write_atomic(&self.root, &self.action_path(drv), &json)
    }

    /// Who and what built `drv`'s output, when this store built it.
    pub fn build_info(&self, drv: &Digest) -> Option<BuildInfo> {
        let bytes = fs::read(self.action_path(drv)).ok()?;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        serde_json::from_value(v.get("built")?.clone()).ok()
    }

    /// The action entry of `drv`: its record and canonical derivation, `Ok(None)` on a miss.
    pub fn action(&self, drv: &Digest) -> Result<Option<(OutputRecord, Vec<u8>)>> {
        let path = self.action_path(drv);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        };
        let record: OutputRecord =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Record {
                path: path.clone(),
                source,
            })?;
        let derivation = derivation_of_action(&bytes).ok_or_else(|| StoreError::Corrupt {
            path: path.clone(),
            reason: "action entry has no derivation record".to_owned(),
        })?;
        if Digest::of(&derivation) != *drv {
            return Err(StoreError::Corrupt {
                path,
                reason: "the derivation record does not hash to the entry's name".to_owned(),
            });
        }
        Ok(Some((record, derivation)))
    }

    /// The canonical derivation record of `drv`.
    pub fn derivation(&self, drv: &Digest) -> Result<Vec<u8>> {
        let p = self.action_path(drv);
        let bytes = fs::read(&p).map_err(StoreError::io("read", &p))?;
        derivation_of_action(&bytes).ok_or_else(|| StoreError::Corrupt {
            path: p,
            reason: "action entry has no derivation record".to_owned(),
        })
    }
}

/// The canonical derivation bytes kept in an action cache entry.
pub(crate) fn derivation_of_action(bytes: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let drv = v.get("derivation")?;
    Some(kiln_core::canonical::to_canonical_json(drv))
}
