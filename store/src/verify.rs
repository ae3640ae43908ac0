//! Verification: rehash every entry of the store.

use std::fs;
use std::path::Path;

use kiln_core::error_chain::error_chain;
use kiln_core::Digest;
use rayon::prelude::*;

use crate::error::Result;
use crate::local::{LocalStore, OutputRecord};

/// One corrupt entry found by `verify`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct CorruptEntry {
    /// The file, relative to the store.
    pub path: String,
    /// What is wrong.
    pub reason: String,
}

/// What `verify` found.
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct VerifyReport {
    /// Objects rehashed.
    pub objects: usize,
    /// Action cache entries checked.
    pub actions: usize,
    /// Corrupt entries; each was moved to `quarantine/` (objects) or deleted (records), so it
    /// reads as a miss and the next build rebuilds it.
    pub corrupt: Vec<CorruptEntry>,
}

impl LocalStore {
    /// Rehashes every object and record. Corrupt objects are quarantined and corrupt records
    /// deleted, so that they read as cache misses.
    pub fn verify(&self) -> Result<VerifyReport> {
        let mut report = VerifyReport::default();
        let rel = |p: &std::path::Path| {
            p.strip_prefix(self.root())
                .unwrap_or(p)
                .display()
                .to_string()
        };
        let objects: Vec<_> = walk(&self.dir("objects"));
        report.objects = objects.len();
        let bad: Vec<CorruptEntry> = objects
            .par_iter()
            .filter_map(|path| {
                let reason = match stem(path) {
                    None => "file name is not a digest".to_owned(),
                    Some(d) => match self.load(&d) {
                        Ok(_) => return None,
                        Err(e) => error_chain(&e),
                    },
                };
                if let Some(d) = stem(path) {
                    let _ = self.quarantine(&d);
                } else {
                    let _ = fs::remove_file(path);
                }
                Some(CorruptEntry {
                    path: rel(path),
                    reason,
                })
            })
            .collect();
        // Forget the quarantined objects everywhere they are named, so every build misses them.
        let gone: std::collections::HashSet<String> = bad
            .iter()
            .filter_map(|c| {
                Path::new(&c.path)
                    .file_name()?
                    .to_str()?
                    .split('.')
                    .next()
                    .map(str::to_owned)
            })
            .collect();
        if !gone.is_empty() {
            self.forget_outputs(&gone)?;
        }
        report.corrupt.extend(bad);

        let actions = walk(&self.dir("actions"));
        report.actions = actions.len();
        for path in actions {
            let bytes = fs::read(&path).unwrap_or_default();
            let record = serde_json::from_slice::<OutputRecord>(&bytes).ok();
            let derivation = crate::local::derivation_of_action(&bytes);
            let reason = match (stem(&path), record, derivation) {
                (None, _, _) => Some("file name is not a digest"),
                (_, None, _) => Some("unreadable action cache entry"),
                (_, _, None) => Some("action cache entry has no derivation record"),
                (Some(d), Some(_), Some(drv)) if Digest::of(&drv) != d => {
                    Some("derivation record does not hash to its name")
                }
                _ => None,
            };
            if let Some(reason) = reason {
                let _ = fs::remove_file(&path);
                report.corrupt.push(CorruptEntry {
                    path: rel(&path),
                    reason: reason.to_owned(),
                });
            }
        }
        report.corrupt.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(report)
    }
}

impl LocalStore {
    /// Drops GC root entries and action cache entries that name one of `outputs` (hex digests).
    fn forget_outputs(&self, outputs: &std::collections::HashSet<String>) -> Result<()> {
        for (_, mut root) in self.roots()? {
            let before = root.rules.len();
            root.rules
                .retain(|_, e| !outputs.contains(&e.output.output.hex()));
            if root.rules.len() != before {
                let key = self.root_key_of(&root);
                self.write_root(&key, &root)?;
            }
        }
        for path in walk(&self.dir("actions")) {
            let names_gone = fs::read(&path)
                .ok()
                .and_then(|b| serde_json::from_slice::<OutputRecord>(&b).ok())
                .is_some_and(|r| outputs.contains(&r.output.hex()));
            if names_gone {
                let _ = fs::remove_file(&path);
            }
        }
        Ok(())
    }
}

fn walk(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut v: Vec<_> = walkdir::WalkDir::new(dir)
        .min_depth(2)
        .into_iter()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(walkdir::DirEntry::into_path)
        .collect();
    v.sort();
    v
}

fn stem(path: &std::path::Path) -> Option<Digest> {
    let name = path.file_name()?.to_str()?;
    Digest::from_hex(name.split('.').next()?).ok()
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::{RelPath, Tree};

    #[test]
    fn finds_and_quarantines_a_flipped_byte() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        let mut t = Tree::new();
        t.insert_file(
            RelPath::new("f").unwrap(),
            b"some content that compresses".repeat(10),
            false,
        );
        let drv = Digest::of(b"{}");
        let rec = s.put(&drv, b"{}", &t).unwrap();
        assert!(s.verify().unwrap().corrupt.is_empty());
        let obj = s.object_path(&rec.output);
        let mut bytes = fs::read(&obj).unwrap();
        let i = bytes.len() - 5;
        bytes[i] ^= 1;
        fs::write(&obj, bytes).unwrap();
        let r = s.verify().unwrap();
        assert_eq!(r.corrupt.len(), 1, "{r:?}");
        assert!(r.corrupt[0].path.starts_with("objects/"));
        assert!(s.lookup(&drv).is_none());
        assert!(s.verify().unwrap().corrupt.is_empty());
    }
}
