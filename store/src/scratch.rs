//! Scratch directories under the store's `tmp/`: where a rule's command runs and writes
//! `$out` before the store ingests it. A scratch directory is removed when dropped, with the
//! directory's entries unlinked in parallel: a rule that writes 200,000 files would otherwise
//! spend longer deleting them one by one than the store spends ingesting them.

use std::path::{Path, PathBuf};

use crate::error::{Result, StoreError};
use crate::local::LocalStore;

/// A directory under the store's `tmp/`, removed (in parallel) when dropped. What `gc`
/// finds left in `tmp/` by a killed process is removed there.
#[derive(Debug)]
pub struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        if let Err(e) = remove_tree(&self.path) {
            tracing::warn!(dir = %self.path.display(), error = %e, "could not remove a scratch directory");
        }
    }
}

/// Removes `dir` and everything under it, unlinking entries in parallel. A directory already
/// gone is not an error.
pub fn remove_tree(dir: &Path) -> std::io::Result<()> {
    match remove_dir_all::remove_dir_all(dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        other => other,
    }
}

impl LocalStore {
    /// A fresh, empty scratch directory under `tmp/`, named `PREFIX…`.
    pub fn scratch_dir(&self, prefix: &str) -> Result<ScratchDir> {
        let tmp = self.dir("tmp");
        let dir = tempfile::Builder::new()
            .prefix(prefix)
            .tempdir_in(&tmp)
            .map_err(StoreError::io("create a scratch directory in", &tmp))?;
        Ok(ScratchDir { path: dir.keep() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_scratch_directory_and_everything_in_it_is_removed_when_dropped() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        let scratch = s.scratch_dir("build-").unwrap();
        let path = scratch.path().to_owned();
        assert!(path.starts_with(d.path().join("tmp")));
        for i in 0..50 {
            let sub = path.join(format!("d{i}/e"));
            std::fs::create_dir_all(&sub).unwrap();
            std::fs::write(sub.join("f"), "x").unwrap();
            std::os::unix::fs::symlink("../../d0", sub.join("l")).unwrap();
        }
        drop(scratch);
        assert!(!path.exists());
    }

    #[test]
    fn removing_a_tree_that_is_gone_is_not_an_error() {
        let d = tempfile::tempdir().unwrap();
        remove_tree(&d.path().join("never-made")).unwrap();
    }
}
