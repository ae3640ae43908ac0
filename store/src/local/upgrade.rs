//! Upgrading a store of format 1 (one file per action entry and per kept source, JSON roots,
//! lock files) to format 2 (packs, binary roots, stripe locks on the object shards). Runs once,
//! under the store's exclusive lock.

use std::fs;
use std::path::Path;

use super::packs::{write_pack, Key, Kind};
use super::roots::{encode_root, parse_root, ROOT_EXT};
use super::write_atomic;
use crate::error::{Result, StoreError};

/// Moves every action entry and kept source into one pack, rewrites the roots, and removes
/// what format 2 no longer has. An entry that cannot be read is dropped (a miss, rebuilt).
pub(super) fn from_v1(root: &Path) -> Result<()> {
    let mut entries: Vec<(Key, Vec<u8>)> = Vec::new();
    let actions = root.join("actions");
    let sources = root.join("sources");
    for (dir, kind) in [(&actions, Kind::Action), (&sources, Kind::Source)] {
        for e in walkdir::WalkDir::new(dir)
            .min_depth(1)
            .into_iter()
            .filter_map(std::result::Result::ok)
            .filter(|e| e.file_type().is_file())
        {
            let Some(digest) = super::digest_of_file_name(e.path()) else {
                continue;
            };
            if let Ok(bytes) = fs::read(e.path()) {
                entries.push(((kind, digest), bytes));
            }
        }
    }
    tracing::info!(
        entries = entries.len(),
        "upgrading the store to format 2 (packs)"
    );
    if !entries.is_empty() {
        write_pack(root, &actions, &mut entries)?;
    }
    for b in 0..=255u8 {
        let d = actions.join(format!("{b:02x}"));
        if d.is_dir() {
            fs::remove_dir_all(&d).map_err(StoreError::io("remove", &d))?;
        }
    }
    for d in [sources, root.join("locks")] {
        if d.is_dir() {
            fs::remove_dir_all(&d).map_err(StoreError::io("remove", &d))?;
        }
    }
    for e in walkdir::WalkDir::new(root.join("roots"))
        .min_depth(2)
        .max_depth(2)
        .into_iter()
        .filter_map(std::result::Result::ok)
    {
        let path = e.path();
        let ext = path.extension().and_then(|x| x.to_str());
        if !matches!(ext, Some("json" | "previous")) {
            continue;
        }
        let Some(parsed) = fs::read(path).ok().and_then(|b| parse_root(&b).ok()) else {
            let _ = fs::remove_file(path);
            continue;
        };
        let dest = if ext == Some("json") {
            path.with_extension(ROOT_EXT)
        } else {
            path.to_owned()
        };
        write_atomic(root, &dest, &encode_root(&parsed))?;
        if dest != path {
            fs::remove_file(path).map_err(StoreError::io("remove", path))?;
        }
    }
    // Fingerprints name the roots' old checksums: they no longer hold, so the first build
    // after the upgrade takes the full path.
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::{LocalStore, Root, RootEntry, STORE_FORMAT};
    use kiln_core::fixtures::tree_of;
    use kiln_core::Digest;
    use std::fs;

    /// A root in format 1's JSON, with its checksum member.
    fn v1_root(root: &Root) -> Vec<u8> {
        let mut json = serde_json::to_vec(root).unwrap();
        json.pop();
        let sum = Digest::of(&json);
        json.extend_from_slice(format!(",\"checksum\":\"{sum}\"}}").as_bytes());
        json
    }

    #[test]
    fn a_format_1_store_is_upgraded_once_and_keeps_its_entries() {
        let d = tempfile::tempdir().unwrap();
        // Make the entries with a v2 store, then lay them out as format 1 did.
        let (drv, record, derivation, src) = {
            let s = LocalStore::open(d.path()).unwrap();
            let drv = Digest::of(b"{\"a\":1}");
            let rec = s
                .put(&drv, b"{\"a\":1}", &tree_of(&[("a.yaml", "x")]))
                .unwrap();
            (drv, rec, b"{\"a\":1}".to_vec(), b"source text".to_vec())
        };
        for p in super::super::packs::pack_files(&d.path().join("actions")) {
            fs::remove_file(p).unwrap();
        }
        let mut action = serde_json::to_vec(&record).unwrap();
        action.pop();
        action.extend_from_slice(b",\"derivation\":");
        action.extend_from_slice(&derivation);
        action.push(b'}');
        let hex = drv.hex();
        fs::create_dir_all(d.path().join("actions").join(&hex[..2])).unwrap();
        fs::write(
            d.path().join(format!("actions/{}/{hex}.json", &hex[..2])),
            &action,
        )
        .unwrap();
        fs::create_dir_all(d.path().join("sources")).unwrap();
        fs::write(d.path().join("sources").join(Digest::of(&src).hex()), &src).unwrap();
        fs::create_dir_all(d.path().join("locks")).unwrap();
        fs::write(d.path().join("locks/abc.lock"), "").unwrap();
        let root = Root {
            format_version: 1,
            project: "p".into(),
            project_dir: "/p".into(),
            env: "prod".into(),
            rules: [(
                kiln_core::RuleName::new("a").unwrap(),
                RootEntry {
                    kind: "manifest".into(),
                    derivation: drv,
                    output: record.clone(),
                },
            )]
            .into(),
        };
        fs::create_dir_all(d.path().join("roots/p-key")).unwrap();
        fs::write(d.path().join("roots/p-key/prod.json"), v1_root(&root)).unwrap();
        fs::write(d.path().join("FORMAT"), "kiln-store-v1\n").unwrap();

        let s = LocalStore::open(d.path()).unwrap();
        assert_eq!(
            fs::read_to_string(d.path().join("FORMAT")).unwrap().trim(),
            STORE_FORMAT
        );
        assert_eq!(s.usable_output(&drv).unwrap(), Some(record));
        assert_eq!(s.source(&Digest::of(&src)), Some(src));
        assert_eq!(s.read_root("p-key", "prod"), Some(root));
        assert!(!d.path().join("roots/p-key/prod.json").exists());
        assert!(!d.path().join("locks").exists());
        assert!(!d.path().join("sources").exists());
        assert!(!d.path().join(format!("actions/{}", &hex[..2])).exists());
        assert!(s.verify().unwrap().corrupt.is_empty());
    }
}
