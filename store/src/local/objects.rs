//! Objects: artifacts as tar+zstd archives keyed by output hash, loaded and verified,
//! quarantined when corrupt, unpacked into read-only views.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_core::{Digest, Tree};

use super::{shard, write_atomic, LocalStore};
use crate::archive::{self, UnpackLimits};
use crate::error::{Result, StoreError};

impl LocalStore {
    /// Path of the archive of output `out`.
    pub fn object_path(&self, out: &Digest) -> PathBuf {
        Self::object_path_in(&self.root, out)
    }

    /// Path of the archive of output `out` in the store at `store_root`, without opening it.
    pub fn object_path_in(store_root: &Path, out: &Digest) -> PathBuf {
        shard(&store_root.join("objects"), out, ".tar.zst")
    }

    /// Whether the archive of `out` exists.
    pub fn has_object(&self, out: &Digest) -> bool {
        self.object_path(out).is_file()
    }

    /// Stores the archive of `tree` unless present; returns its output hash.
    pub(crate) fn put_object(&self, tree: &Tree) -> Result<Digest> {
        let output = tree.output_hash();
        let obj = self.object_path(&output);
        if !obj.is_file() {
            let bytes = archive::pack(tree).map_err(StoreError::io("pack archive for", &obj))?;
            write_atomic(&self.root, &obj, &bytes)?;
        }
        Ok(output)
    }

    /// Loads and checks the artifact `out`. A corrupt archive is an error, never a tree.
    pub fn load(&self, out: &Digest) -> Result<Tree> {
        let path = self.object_path(out);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                return Err(StoreError::Missing(*out))
            }
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        };
        let tree = archive::unpack(&bytes, UnpackLimits::default()).map_err(|source| {
            StoreError::Archive {
                object: *out,
                source,
            }
        })?;
        let actual = tree.output_hash();
        if actual != *out {
            return Err(StoreError::Corrupt {
                path,
                reason: format!("content hashes to {actual}"),
            });
        }
        Ok(tree)
    }

    fn source_path(&self, digest: &Digest) -> PathBuf {
        self.dir("sources").join(digest.hex())
    }

    /// Keeps a source file's content under its digest (the one derivations record), so that
    /// `kiln why` can show what changed in it. Text files up to 256 KiB only; kept once.
    pub fn put_source(&self, digest: &Digest, content: &[u8]) -> Result<()> {
        let path = self.source_path(digest);
        if content.len() > 256 << 10 || std::str::from_utf8(content).is_err() || path.is_file() {
            return Ok(());
        }
        write_atomic(&self.root, &path, content)
    }

    /// A kept source file's content, checked against its digest.
    pub fn source(&self, digest: &Digest) -> Option<Vec<u8>> {
        let bytes = fs::read(self.source_path(digest)).ok()?;
        (Digest::of(&bytes) == *digest).then_some(bytes)
    }

    /// Moves a corrupt object out of the way so that it reads as a miss.
    pub fn quarantine(&self, out: &Digest) -> Result<()> {
        let from = self.object_path(out);
        let to = self
            .dir("quarantine")
            .join(format!("{}.tar.zst", out.hex()));
        match fs::rename(&from, &to) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(StoreError::io("quarantine", from)(e)),
        }
    }

    /// An unpacked, read-only directory holding artifact `out`, created on first use.
    pub fn materialize(&self, out: &Digest) -> Result<PathBuf> {
        let dest = self.dir("trees").join(out.hex());
        if dest.is_dir() {
            return Ok(dest);
        }
        let tree = self.load(out)?;
        let tmp = tempfile::Builder::new()
            .prefix("tree-")
            .tempdir_in(self.dir("tmp"))
            .map_err(StoreError::io("create temp dir in", self.dir("tmp")))?;
        tree.write_to(tmp.path()).map_err(|e| StoreError::Io {
            action: "write tree to",
            path: tmp.path().to_owned(),
            source: std::io::Error::other(e),
        })?;
        // Read-only files: a view of a content-addressed artifact is not a scratch copy
        // (`verify` rehashes the views and rebuilds any that were changed anyway).
        for (path, entry) in tree.iter() {
            if let kiln_core::tree::Entry::File { executable, .. } = entry {
                use std::os::unix::fs::PermissionsExt;
                let file = tmp.path().join(path.as_str());
                let mode = if *executable { 0o555 } else { 0o444 };
                fs::set_permissions(&file, fs::Permissions::from_mode(mode))
                    .map_err(StoreError::io("make read-only", &file))?;
            }
        }
        let tmp = tmp.keep();
        match fs::rename(&tmp, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => {
                let _ = fs::remove_dir_all(&tmp);
                Ok(dest)
            }
            Err(e) => Err(StoreError::io("rename", &dest)(e)),
        }
    }
}
