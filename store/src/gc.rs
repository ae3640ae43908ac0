//! Garbage collection: delete everything no GC root reaches.

use std::collections::HashSet;
use std::fs;
use std::path::Path;

use crate::error::{Result, StoreError};
use crate::local::packs::Kind;
use crate::local::{LocalStore, OutputRecord};

/// What `gc` did.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct GcReport {
    /// Roots kept.
    pub roots_kept: usize,
    /// Roots removed because their project directory is gone.
    pub roots_removed: usize,
    /// Objects kept.
    pub objects_kept: usize,
    /// Objects deleted.
    pub objects_deleted: usize,
    /// Action cache entries (with their derivation records) deleted.
    pub records_deleted: usize,
    /// Bytes freed.
    pub bytes_freed: u64,
}

fn remove(path: &Path, freed: &mut u64) -> Result<()> {
    let len = fs::symlink_metadata(path).map(|m| m.len()).unwrap_or(0);
    if path.is_dir() {
        // A materialized view: its directories are read-only.
        crate::local::objects::remove_view(path)?;
    } else {
        fs::remove_file(path).map_err(StoreError::io("delete", path))?;
    }
    *freed += len;
    Ok(())
}

fn files_in(dir: &Path) -> impl Iterator<Item = std::path::PathBuf> {
    walkdir::WalkDir::new(dir)
        .min_depth(1)
        .into_iter()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
}

/// The source digests an action entry's derivation records.
fn source_digests(action: &[u8]) -> Vec<kiln_core::Digest> {
    let Ok(v) = serde_json::from_slice::<serde_json::Value>(action) else {
        return Vec::new();
    };
    v["derivation"]["srcs"]
        .as_array()
        .map(|srcs| {
            srcs.iter()
                .filter_map(|s| s["digest"].as_str()?.parse().ok())
                .collect()
        })
        .unwrap_or_default()
}

impl LocalStore {
    /// Deletes objects, records, trees, locks and temp files that no root reaches. Roots whose
    /// project directory no longer has a `kiln.toml` are removed first. Needs a store opened with
    /// [`LocalStore::open_exclusive`], so no build runs meanwhile.
    pub fn gc(&self) -> Result<GcReport> {
        let mut report = GcReport::default();
        let mut live_outputs = HashSet::new();
        let mut live_drvs = HashSet::new();
        for (path, root) in self.roots()? {
            if !root.project_dir.join("kiln.toml").is_file() {
                remove(&path, &mut report.bytes_freed)?;
                report.roots_removed += 1;
                continue;
            }
            report.roots_kept += 1;
            for entry in root.rules.values() {
                live_outputs.insert(entry.output.output);
                live_drvs.insert(entry.derivation);
            }
        }
        // The previous builds' derivation records stay (for `kiln why`), not their objects.
        let recorded_drvs: HashSet<_> = self
            .previous_roots()
            .iter()
            .flat_map(|r| r.rules.values().map(|e| e.derivation))
            .collect();
        // The packs: action entries kept as above, kept sources when a kept entry records
        // them; everything else is dropped by writing the kept entries as one pack.
        let (packs, entries) = self.pack_entries()?;
        let mut live_sources = HashSet::new();
        let mut kept = Vec::new();
        let mut sources = Vec::new();
        for ((kind, digest), bytes) in entries {
            match kind {
                Kind::Source => sources.push(((kind, digest), bytes)),
                Kind::Action => {
                    let keep = recorded_drvs.contains(&digest)
                        || (live_drvs.contains(&digest)
                            && serde_json::from_slice::<OutputRecord>(&bytes)
                                .is_ok_and(|r| live_outputs.contains(&r.output)));
                    if keep {
                        live_sources.extend(source_digests(&bytes));
                        kept.push(((kind, digest), bytes));
                    } else {
                        report.bytes_freed += bytes.len() as u64;
                        report.records_deleted += 1;
                    }
                }
            }
        }
        for (key, bytes) in sources {
            if live_sources.contains(&key.1) {
                kept.push((key, bytes));
            } else {
                report.bytes_freed += bytes.len() as u64;
            }
        }
        if packs.len() > 1 || report.records_deleted > 0 || kept.is_empty() != packs.is_empty() {
            self.replace_packs(&packs, kept)?;
        }
        for path in files_in(&self.dir("objects")).collect::<Vec<_>>() {
            if crate::local::digest_of_file_name(&path).is_some_and(|d| live_outputs.contains(&d)) {
                report.objects_kept += 1;
            } else {
                remove(&path, &mut report.bytes_freed)?;
                report.objects_deleted += 1;
            }
        }
        for sub in ["trees", "tmp", "quarantine", "fingerprints"] {
            let dir = self.dir(sub);
            let entries = fs::read_dir(&dir).map_err(StoreError::io("list", &dir))?;
            for e in entries.flatten() {
                let keep = sub == "trees"
                    && crate::local::digest_of_file_name(&e.path())
                        .is_some_and(|d| live_outputs.contains(&d));
                if !keep {
                    remove(&e.path(), &mut report.bytes_freed)?;
                }
            }
        }
        Ok(report)
    }
}
