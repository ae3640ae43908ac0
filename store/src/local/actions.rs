//! The action cache: derivation hash -> output record, with the canonical derivation kept
//! beside it (in packs, see [`super::packs`]); and the per-derivation build locks.

use kiln_core::exports::Exports;
use kiln_core::{Digest, Tree};
use serde::{Deserialize, Serialize};

use super::packs::{Kind, StripeGuard};
use super::LocalStore;
use crate::error::{Result, StoreError};

/// What the action cache records for a derivation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The output hash.
    pub output: Digest,
    /// Values the artifact exports to dependents (a copy of its `.kiln/exports.json`).
    #[serde(default)]
    pub exports: Exports,
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

/// An exclusive lock on one derivation (against other processes), held while it is built.
#[derive(Debug)]
pub struct DerivationLock {
    _guard: StripeGuard,
}

impl LocalStore {
    /// Takes the build lock of derivation `drv`, waiting while another process holds it.
    ///
    /// Striped by the derivation's first byte, on the object shard directories: two
    /// derivations sharing a stripe in two processes build one after the other, which is still
    /// correct, and no lock file is ever created. Its entry, once written, keeps the stripe
    /// until it is in a pack, so another process that waited finds it there.
    pub fn lock_derivation(&self, drv: &Digest) -> Result<DerivationLock> {
        let guard = self.packs.lock_stripe(&self.dir("objects"), drv)?;
        // Taken from the file system (no build here held the stripe): entries another process
        // wrote under it are read before the caller looks for `drv`'s.
        if guard.fresh {
            self.packs.refresh();
        }
        Ok(DerivationLock { _guard: guard })
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
        let cost = built.map_or(0.0, |b| b.duration_ms.max(0.0));
        self.packs.put_costed(
            (Kind::Action, *drv),
            json,
            std::time::Duration::try_from_secs_f64(cost / 1000.0).unwrap_or_default(),
        )
    }

    /// Who and what built `drv`'s output, when this store built it.
    pub fn build_info(&self, drv: &Digest) -> Option<BuildInfo> {
        let bytes = self.packs.get((Kind::Action, *drv)).ok()??;
        let v: serde_json::Value = serde_json::from_slice(&bytes).ok()?;
        serde_json::from_value(v.get("built")?.clone()).ok()
    }

    /// The path an action entry is reported under (it lives in a pack).
    pub(crate) fn action_name(drv: &Digest) -> std::path::PathBuf {
        std::path::PathBuf::from(format!("actions/{}", drv.hex()))
    }

    /// The action entry of `drv`: its record and canonical derivation, `Ok(None)` on a miss.
    pub fn action(&self, drv: &Digest) -> Result<Option<(OutputRecord, Vec<u8>)>> {
        let Some(bytes) = self.packs.get((Kind::Action, *drv))? else {
            return Ok(None);
        };
        let path = Self::action_name(drv);
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
        let p = Self::action_name(drv);
        let bytes = self
            .packs
            .get((Kind::Action, *drv))?
            .ok_or_else(|| StoreError::Corrupt {
                path: p.clone(),
                reason: "no action entry".to_owned(),
            })?;
        derivation_of_action(&bytes).ok_or_else(|| StoreError::Corrupt {
            path: p,
            reason: "action entry has no derivation record".to_owned(),
        })
    }

    /// Stores raw bytes as `drv`'s action entry (tests of what readers do with broken ones).
    #[cfg(test)]
    pub(crate) fn put_raw_action(&self, drv: &Digest, bytes: &[u8]) {
        self.packs
            .put((Kind::Action, *drv), bytes.to_vec())
            .unwrap();
    }
}

/// The canonical derivation bytes kept in an action cache entry.
pub(crate) fn derivation_of_action(bytes: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let drv = v.get("derivation")?;
    Some(kiln_core::canonical::to_canonical_json(drv))
}
