//! Objects: artifacts as tar+zstd archives keyed by output hash, loaded and verified,
//! quarantined when corrupt, unpacked into read-only views.

use std::fs;
use std::path::{Path, PathBuf};

use kiln_core::{Digest, Tree};

use super::packs::Kind;
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

    /// A temporary file in the store, for an archive being received (see
    /// [`LocalStore::adopt_archive`]); removed when dropped.
    pub fn incoming_archive(&self) -> Result<tempfile::NamedTempFile> {
        tempfile::NamedTempFile::new_in(self.dir("tmp"))
            .map_err(StoreError::io("create a temp file in", self.dir("tmp")))
    }

    /// Enters the archive received into `file` as object `out`, when it unpacks under `limits`
    /// and hashes to `out`. It is read as a stream (memory holds a read buffer and entry paths,
    /// never a file's content); `Ok(Err(reason))` refuses it, and the file is removed.
    pub fn adopt_archive(
        &self,
        file: tempfile::NamedTempFile,
        out: &Digest,
        limits: archive::UnpackLimits,
    ) -> Result<std::result::Result<(), String>> {
        let reader = fs::File::open(file.path()).map_err(StoreError::io("read", file.path()))?;
        let hashed = match archive::hash_stream(std::io::BufReader::new(reader), limits, |_| false)
        {
            Ok(h) => h,
            Err(e) => return Ok(Err(kiln_core::error_chain::error_chain(&e))),
        };
        if hashed.output != *out {
            return Ok(Err(format!("its content hashes to {}", hashed.output)));
        }
        let dest = self.object_path(out);
        if !dest.is_file() {
            super::persist(file, &dest)?;
        }
        Ok(Ok(()))
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

    /// Keeps a source file's content under its digest (the one derivations record), so that
    /// `kiln why` can show what changed in it. Text files up to 256 KiB only; kept once.
    pub fn put_source(&self, digest: &Digest, content: &[u8]) -> Result<()> {
        let key = (Kind::Source, *digest);
        if content.len() > 256 << 10
            || std::str::from_utf8(content).is_err()
            || self.packs.contains(key)
        {
            return Ok(());
        }
        self.packs.put(key, content.to_vec())
    }

    /// A kept source file's content, checked against its digest.
    pub fn source(&self, digest: &Digest) -> Option<Vec<u8>> {
        let bytes = self.packs.get((Kind::Source, *digest)).ok()??;
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

    fn open_object(&self, out: &Digest) -> Result<std::io::BufReader<fs::File>> {
        let path = self.object_path(out);
        match fs::File::open(&path) {
            Ok(f) => Ok(std::io::BufReader::with_capacity(256 << 10, f)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(StoreError::Missing(*out)),
            Err(e) => Err(StoreError::io("read", &path)(e)),
        }
    }

    fn check_hash(&self, out: &Digest, actual: Digest) -> Result<()> {
        if actual == *out {
            return Ok(());
        }
        Err(StoreError::Corrupt {
            path: self.object_path(out),
            reason: format!("content hashes to {actual}"),
        })
    }

    /// Checks artifact `out` against its hash by streaming it (no file is held in memory), and
    /// gives the content digests of the files `keep` selects.
    pub fn hash_object(
        &self,
        out: &Digest,
        keep: impl Fn(&kiln_core::RelPath) -> bool,
    ) -> Result<Vec<(kiln_core::RelPath, Digest)>> {
        let hashed = archive::hash_stream(self.open_object(out)?, UnpackLimits::default(), keep)
            .map_err(|source| StoreError::Archive {
                object: *out,
                source,
            })?;
        self.check_hash(out, hashed.output)?;
        Ok(hashed.digests)
    }

    /// Hands every entry of artifact `out` to `f`, streaming, after checking the artifact
    /// against its hash in a first streaming pass: `f` only ever sees checked content, and
    /// memory holds what `f` keeps.
    pub fn visit_object(
        &self,
        out: &Digest,
        f: impl FnMut(archive::Visited<'_>) -> std::io::Result<()>,
    ) -> Result<()> {
        self.hash_object(out, |_| false)?;
        archive::visit(self.open_object(out)?, UnpackLimits::default(), f).map_err(|source| {
            StoreError::Archive {
                object: *out,
                source,
            }
        })
    }

    /// An unpacked, read-only directory holding artifact `out`, created on first use. A view
    /// that exists is checked (rehashed) before it is served; one that was changed is replaced
    /// by a fresh one. Files are 0444/0555 and directories 0555. The archive is checked
    /// (limits and hash, streaming) before anything is written, so an archive over the entry
    /// or size limit is refused after one read of its headers, with no file to clean up.
    pub fn materialize(&self, out: &Digest) -> Result<PathBuf> {
        let dest = self.dir("trees").join(out.hex());
        if dest.is_dir() {
            match Tree::from_dir(&dest) {
                Ok(t) if t.output_hash() == *out => return Ok(dest),
                _ => {
                    tracing::warn!(view = %dest.display(), "a materialized view was changed: replacing it");
                    remove_view(&dest)?;
                }
            }
        }
        self.hash_object(out, |_| false)?;
        let tmp = tempfile::Builder::new()
            .prefix("tree-")
            .tempdir_in(self.dir("tmp"))
            .map_err(StoreError::io("create temp dir in", self.dir("tmp")))?;
        // Read-only: a view of a content-addressed artifact is not a scratch copy (`verify`
        // rehashes the views and rebuilds any that were changed anyway).
        self.unpack_into(out, tmp.path(), true)?;
        let tmp = tmp.keep();
        set_dirs_mode(&tmp, 0o555)?;
        match fs::rename(&tmp, &dest) {
            Ok(()) => Ok(dest),
            Err(_) if dest.is_dir() => {
                let _ = remove_view(&tmp);
                Ok(dest)
            }
            Err(e) => Err(StoreError::io("rename", &dest)(e)),
        }
    }

    /// Writes artifact `out` under `root` (an empty directory), streaming: no file is held in
    /// memory, each is hashed on the way, and the whole is checked against `out` at the end
    /// (on a mismatch the caller discards `root`). Symlinks are made last, once the archive's
    /// shape is checked, so no file is ever written through one. Files are made read-only when
    /// `read_only` (0444/0555), else 0644/0755.
    pub fn unpack_into(&self, out: &Digest, root: &Path, read_only: bool) -> Result<()> {
        use std::os::unix::fs::PermissionsExt;
        let mut canonical = kiln_core::tree::CanonicalHasher::new();
        let mut links = Vec::new();
        archive::visit(self.open_object(out)?, UnpackLimits::default(), |entry| {
            match entry {
                archive::Visited::File {
                    path,
                    executable,
                    size,
                    content,
                } => {
                    let file_path = root.join(path.as_str());
                    if let Some(parent) = file_path.parent() {
                        fs::create_dir_all(parent)?;
                    }
                    let mut file = fs::File::create(&file_path)?;
                    let (digest, _) = Digest::of_reader(content, &mut file)?;
                    canonical.file(&path, executable, size, &digest);
                    let mode = match (read_only, executable) {
                        (true, true) => 0o555,
                        (true, false) => 0o444,
                        (false, true) => 0o755,
                        (false, false) => 0o644,
                    };
                    fs::set_permissions(&file_path, fs::Permissions::from_mode(mode))?;
                }
                archive::Visited::Symlink { path, target } => {
                    canonical.symlink(&path, &target);
                    links.push((path, target));
                }
            }
            Ok(())
        })
        .map_err(|source| StoreError::Archive {
            object: *out,
            source,
        })?;
        self.check_hash(out, canonical.finish())?;
        for (path, target) in links {
            let link = root.join(path.as_str());
            if let Some(parent) = link.parent() {
                fs::create_dir_all(parent).map_err(StoreError::io("create directory", parent))?;
            }
            std::os::unix::fs::symlink(&target, &link)
                .map_err(StoreError::io("create symlink", &link))?;
        }
        Ok(())
    }
}

/// Sets the mode of every directory under (and including) `root`, deepest first.
fn set_dirs_mode(root: &Path, mode: u32) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    let dirs: Vec<PathBuf> = walkdir::WalkDir::new(root)
        .contents_first(true)
        .into_iter()
        .filter_map(std::result::Result::ok)
        .filter(|e| e.file_type().is_dir())
        .map(walkdir::DirEntry::into_path)
        .collect();
    for d in dirs {
        fs::set_permissions(&d, fs::Permissions::from_mode(mode))
            .map_err(StoreError::io("set the mode of", &d))?;
    }
    Ok(())
}

/// Removes a materialized view, whose directories are read-only.
pub(crate) fn remove_view(root: &Path) -> Result<()> {
    use std::os::unix::fs::PermissionsExt;
    // Writable again from the top down, so that every entry can be unlinked.
    for e in walkdir::WalkDir::new(root)
        .into_iter()
        .filter_map(std::result::Result::ok)
    {
        if e.file_type().is_dir() {
            let _ = fs::set_permissions(e.path(), fs::Permissions::from_mode(0o755));
        }
    }
    crate::scratch::remove_tree(root).map_err(StoreError::io("remove", root))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A zstd-compressed tar of `n` empty files, as a hostile store or cache could hold.
    fn archive_of_empty_files(n: u64) -> Vec<u8> {
        let encoder = zstd::Encoder::new(Vec::new(), 1).unwrap();
        let mut builder = tar::Builder::new(encoder);
        for i in 0..n {
            let mut header = tar::Header::new_gnu();
            header.set_size(0);
            header.set_mode(0o644);
            header.set_entry_type(tar::EntryType::Regular);
            builder
                .append_data(
                    &mut header,
                    format!("d{}/f{}", i / 1000, i % 1000),
                    std::io::empty(),
                )
                .unwrap();
        }
        builder.into_inner().unwrap().finish().unwrap()
    }

    fn entries_under(dir: &Path) -> usize {
        walkdir::WalkDir::new(dir).min_depth(1).into_iter().count()
    }

    #[test]
    fn a_view_of_an_archive_over_the_entry_limit_is_refused_before_anything_is_written() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        let limit = UnpackLimits::default().max_entries;
        let out = Digest::of(b"over the entry limit");
        let path = s.object_path(&out);
        fs::create_dir_all(path.parent().unwrap()).unwrap();
        fs::write(&path, archive_of_empty_files(limit + 1)).unwrap();
        let before = entries_under(&d.path().join("tmp"));

        let err = s.materialize(&out).unwrap_err();
        let chain = kiln_core::error_chain::error_chain(&err);
        assert!(
            chain.contains(&format!("more than {limit} entries")),
            "{chain}"
        );
        assert_eq!(
            entries_under(&d.path().join("tmp")),
            before,
            "nothing unpacked"
        );
        assert_eq!(entries_under(&d.path().join("trees")), 0, "no view");
    }
}
