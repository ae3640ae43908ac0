//! Verification: rehash every entry of the store.

use std::fs;
use std::path::Path;

use kiln_core::error_chain::error_chain;
use kiln_core::Digest;
use rayon::prelude::*;

use crate::error::Result;
use crate::local::packs::{Key, Kind};
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
    /// GC roots checked.
    pub roots: usize,
    /// Materialized views (`trees/`) rehashed.
    pub trees: usize,
    /// Corrupt entries; each was moved to `quarantine/` (objects) or deleted (records), so it
    /// reads as a miss and the next build rebuilds it.
    pub corrupt: Vec<CorruptEntry>,
    /// Root entries whose output was pulled from a remote cache and never fetched (no local
    /// action entry, no local object): not corrupt, kept; a build with the cache fetches the
    /// archive when something reads it.
    pub remote_backed: Vec<String>,
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
                let reason = match crate::local::digest_of_file_name(path) {
                    None => "file name is not a digest".to_owned(),
                    Some(d) => match self.hash_object(&d, |_| false) {
                        Ok(_) => return None,
                        Err(e) => error_chain(&e),
                    },
                };
                if let Some(d) = crate::local::digest_of_file_name(path) {
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
        self.verify_roots(&mut report)?;
        self.verify_trees(&mut report)?;
        if !gone.is_empty() {
            self.forget_outputs(&gone)?;
        }
        report.corrupt.extend(bad);

        self.verify_packs(&mut report)?;
        report.corrupt.sort_by(|a, b| a.path.cmp(&b.path));
        Ok(report)
    }
}

impl LocalStore {
    /// Checks every GC root: it parses and matches its checksum (else it is moved to
    /// `quarantine/`), every entry's object exists, and every entry agrees with the action
    /// cache entry of its derivation (else the entry is dropped, so the next build looks it up
    /// again and rebuilds what is missing).
    fn verify_roots(&self, report: &mut VerifyReport) -> Result<()> {
        let rel = |p: &Path| {
            p.strip_prefix(self.root())
                .unwrap_or(p)
                .display()
                .to_string()
        };
        for path in walk(&self.dir("roots")) {
            if path.extension().is_none_or(|e| e != crate::local::ROOT_EXT) {
                continue;
            }
            report.roots += 1;
            let bytes = fs::read(&path).map_err(crate::error::StoreError::io("read", &path))?;
            let mut root = match crate::local::parse_root(&bytes) {
                Ok(root) => root,
                Err(reason) => {
                    let aside = self
                        .dir("quarantine")
                        .join(format!("root-{}", rel(&path).replace('/', "-")));
                    fs::rename(&path, &aside)
                        .map_err(crate::error::StoreError::io("quarantine", &path))?;
                    report.corrupt.push(CorruptEntry {
                        path: rel(&path),
                        reason,
                    });
                    continue;
                }
            };
            let before = root.rules.len();
            let mut remote_backed = Vec::new();
            root.rules.retain(|name, entry| {
                // Pulled lazily: substituted from a cache, so no local action entry was ever
                // written, and its archive not fetched yet.
                if !self.has_object(&entry.output.output)
                    && self.action_bytes(&entry.derivation).is_none()
                {
                    remote_backed.push(format!("{}: rule `{name}`", rel(&path)));
                    return true;
                }
                let reason = if !self.has_object(&entry.output.output) {
                    Some(format!(
                        "rule `{name}` names a missing object {}",
                        entry.output.output
                    ))
                } else {
                    self.action_bytes(&entry.derivation)
                        .and_then(|b| serde_json::from_slice::<OutputRecord>(&b).ok())
                        .filter(|action| action.output != entry.output.output)
                        .map(|action| {
                            format!(
                                "rule `{name}` names {} but its derivation built {}",
                                entry.output.output, action.output
                            )
                        })
                };
                match reason {
                    Some(reason) => {
                        report.corrupt.push(CorruptEntry {
                            path: rel(&path),
                            reason,
                        });
                        false
                    }
                    None => true,
                }
            });
            report.remote_backed.extend(remote_backed);
            if root.rules.len() != before {
                crate::local::write_atomic(self.root(), &path, &crate::local::encode_root(&root))?;
            }
        }
        Ok(())
    }

    /// Rehashes every materialized view under `trees/` against its name. A view that was
    /// edited is replaced by a fresh one from its object (or removed, when the object is gone).
    fn verify_trees(&self, report: &mut VerifyReport) -> Result<()> {
        let dir = self.dir("trees");
        let Ok(entries) = fs::read_dir(&dir) else {
            return Ok(());
        };
        for entry in entries.flatten() {
            let path = entry.path();
            report.trees += 1;
            let expected = path
                .file_name()
                .and_then(|n| n.to_str())
                .and_then(|n| Digest::from_hex(n).ok());
            let reason = match (expected, kiln_core::Tree::from_dir(&path)) {
                (None, _) => Some("name is not a digest".to_owned()),
                (Some(_), Err(e)) => Some(error_chain(&e)),
                (Some(d), Ok(t)) if t.output_hash() != d => {
                    Some(format!("content hashes to {}", t.output_hash()))
                }
                _ => None,
            };
            let Some(reason) = reason else { continue };
            crate::local::objects::remove_view(&path)?;
            report.corrupt.push(CorruptEntry {
                path: format!("trees/{}", entry.file_name().to_string_lossy()),
                reason: format!("materialized view was changed: {reason}"),
            });
            if let Some(d) = expected.filter(|d| self.has_object(d)) {
                self.materialize(&d)?;
            }
        }
        Ok(())
    }

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
        let (packs, entries) = self.pack_entries()?;
        let before = entries.len();
        let kept: Vec<_> = entries
            .into_iter()
            .filter(|((kind, _), bytes)| {
                *kind != Kind::Action
                    || !serde_json::from_slice::<OutputRecord>(bytes)
                        .is_ok_and(|r| outputs.contains(&r.output.hex()))
            })
            .collect();
        if kept.len() != before {
            self.replace_packs(&packs, kept)?;
        }
        Ok(())
    }

    /// Checks every pack: its index and entries against their checksums, and every entry (an
    /// action entry parses and its derivation hashes to its name; a source hashes to its name).
    /// A pack whose index is unreadable is quarantined; bad entries are dropped by rewriting
    /// the packs without them.
    fn verify_packs(&self, report: &mut VerifyReport) -> Result<()> {
        let mut paths = Vec::new();
        let mut good: std::collections::HashMap<Key, Vec<u8>> = Default::default();
        let mut rewrite = false;
        for pack in self.packs().all_packs() {
            let pack = match pack {
                Ok(p) => p,
                Err((path, reason)) => {
                    let name = path.file_name().unwrap_or_default().to_string_lossy();
                    let aside = self.dir("quarantine").join(format!("pack-{name}"));
                    fs::rename(&path, &aside)
                        .map_err(crate::error::StoreError::io("quarantine", &path))?;
                    report.corrupt.push(CorruptEntry {
                        path: format!("actions/{name}"),
                        reason,
                    });
                    continue;
                }
            };
            let name = pack.path.file_name().unwrap_or_default().to_string_lossy();
            if let Err(reason) = pack.check_entries() {
                report.corrupt.push(CorruptEntry {
                    path: format!("actions/{name}"),
                    reason,
                });
                rewrite = true;
            }
            for ((kind, digest), bytes) in pack.read_all() {
                let bytes = bytes.unwrap_or_default();
                let reason = match kind {
                    Kind::Action => {
                        report.actions += 1;
                        let record = serde_json::from_slice::<OutputRecord>(&bytes).ok();
                        let derivation = crate::local::derivation_of_action(&bytes);
                        match (record, derivation) {
                            (None, _) => Some("unreadable action cache entry"),
                            (_, None) => Some("action cache entry has no derivation record"),
                            (Some(_), Some(drv)) if Digest::of(&drv) != digest => {
                                Some("derivation record does not hash to its name")
                            }
                            _ => None,
                        }
                    }
                    Kind::Source => (Digest::of(&bytes) != digest)
                        .then_some("kept source does not hash to its name"),
                };
                match reason {
                    Some(reason) => {
                        rewrite = true;
                        report.corrupt.push(CorruptEntry {
                            path: format!("actions/{name}: {}", digest.hex()),
                            reason: reason.to_owned(),
                        });
                    }
                    None => {
                        good.insert((kind, digest), bytes);
                    }
                }
            }
            paths.push(pack.path.clone());
        }
        if rewrite {
            self.replace_packs(&paths, good.into_iter().collect())?;
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
        assert!(s.usable_output(&drv).unwrap().is_none());
        assert!(s.verify().unwrap().corrupt.is_empty());
    }

    fn root_with(s: &LocalStore, entries: &[(&str, Digest, OutputRecord)]) -> std::path::PathBuf {
        let root = crate::local::Root {
            format_version: 1,
            project: "p".into(),
            project_dir: "/p".into(),
            env: "prod".into(),
            rules: entries
                .iter()
                .map(|(n, drv, rec)| {
                    (
                        kiln_core::RuleName::new(*n).unwrap(),
                        crate::local::RootEntry {
                            kind: "manifest".into(),
                            derivation: *drv,
                            output: rec.clone(),
                        },
                    )
                })
                .collect(),
        };
        s.write_root("p-key", &root).unwrap();
        s.root().join("roots/p-key/prod.root")
    }

    fn put(s: &LocalStore, content: &str) -> (Digest, OutputRecord) {
        let mut t = Tree::new();
        t.insert_file(
            RelPath::new("f").unwrap(),
            content.as_bytes().to_vec(),
            false,
        );
        let drv_bytes = format!("{{\"c\":\"{content}\"}}");
        let drv = Digest::of(drv_bytes.as_bytes());
        (drv, s.put(&drv, drv_bytes.as_bytes(), &t).unwrap())
    }

    #[test]
    fn roots_naming_missing_or_other_objects_are_found_and_repaired() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        let (drv_a, rec_a) = put(&s, "a");
        let (drv_b, rec_b) = put(&s, "b");
        // `b` points at `a`'s valid object: the action cache disagrees.
        root_with(
            &s,
            &[("a", drv_a, rec_a.clone()), ("b", drv_b, rec_a.clone())],
        );
        let r = s.verify().unwrap();
        assert_eq!(r.roots, 1);
        assert_eq!(r.corrupt.len(), 1, "{r:?}");
        assert!(r.corrupt[0].reason.contains("rule `b`"), "{r:?}");
        let root = s.read_root("p-key", "prod").unwrap();
        assert_eq!(
            root.rules.keys().map(|k| k.as_str()).collect::<Vec<_>>(),
            ["a"]
        );
        // A missing object.
        root_with(
            &s,
            &[("a", drv_a, rec_a.clone()), ("b", drv_b, rec_b.clone())],
        );
        fs::remove_file(s.object_path(&rec_b.output)).unwrap();
        let r = s.verify().unwrap();
        assert!(
            r.corrupt
                .iter()
                .any(|c| c.reason.contains("missing object")),
            "{r:?}"
        );
        assert!(s.verify().unwrap().corrupt.is_empty());
    }

    #[test]
    fn views_are_read_only_and_an_edited_view_is_rebuilt() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        let (_, rec) = put(&s, "a");
        let view = s.materialize(&rec.output).unwrap();
        let file = view.join("f");
        assert_eq!(
            fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o444
        );
        // The owner (or root) can still force a change: verify notices and rebuilds the view.
        fs::set_permissions(&file, fs::Permissions::from_mode(0o644)).unwrap();
        fs::write(&file, "edited").unwrap();
        let r = s.verify().unwrap();
        assert_eq!(r.trees, 1);
        assert_eq!(r.corrupt.len(), 1, "{r:?}");
        assert!(r.corrupt[0].path.starts_with("trees/"), "{r:?}");
        assert_eq!(fs::read_to_string(&file).unwrap(), "a");
        assert!(s.verify().unwrap().corrupt.is_empty());
    }

    #[test]
    fn an_unparsable_or_edited_root_is_reported_and_set_aside() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        let (drv_a, rec_a) = put(&s, "a");
        let path = root_with(&s, &[("a", drv_a, rec_a)]);
        assert!(s.read_root("p-key", "prod").is_some());
        let mut bytes = fs::read(&path).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 1;
        fs::write(&path, bytes).unwrap();
        assert!(
            s.read_root("p-key", "prod").is_none(),
            "an edited root is not trusted"
        );
        let r = s.verify().unwrap();
        assert_eq!(r.corrupt.len(), 1, "{r:?}");
        assert!(r.corrupt[0].reason.contains("checksum"), "{r:?}");
        assert!(!path.exists());
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, "{not json").unwrap();
        assert_eq!(s.verify().unwrap().corrupt.len(), 1);
    }
}
