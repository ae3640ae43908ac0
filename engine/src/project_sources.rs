//! A rule's source files on disk, for kinds that stream them (`exec`): copied into a build with
//! their content checked on the way, or shown to it in place, read-only, while their stat data
//! says they still hold the content that was hashed.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::SystemTime;

use kiln_core::kind::{BuildError, InPlace, SourceFiles};
use kiln_core::sources::{hash_source, SourceEntry};
use kiln_core::{Digest, RelPath};

use crate::source_cache::{racy_since, Stat};

/// What the derivation holds of one source: its digest, whether it is executable, and its stat
/// data taken before it was hashed.
struct Hashed {
    digest: Digest,
    executable: bool,
    stat: Stat,
}

/// The rule's source files in the project, with the digests its derivation holds.
pub struct ProjectSources<'a> {
    root: &'a Path,
    hashed: HashMap<&'a RelPath, Hashed>,
    /// Directories shown in place -> the stat data of every directory in them (themselves
    /// included), taken when they were found eligible: unchanged afterwards, no entry was
    /// added, removed or renamed in them meanwhile.
    shown_dirs: Mutex<HashMap<RelPath, Vec<(PathBuf, Stat)>>>,
    /// The time the racy window is measured from; `None`: the clock's.
    now: Option<SystemTime>,
}

impl<'a> ProjectSources<'a> {
    /// The sources `srcs` under `root`, with `stats` (same order) taken before each was hashed.
    pub fn new(root: &'a Path, srcs: &'a [SourceEntry], stats: &[Stat]) -> Self {
        let hashed = srcs
            .iter()
            .zip(stats)
            .map(|(e, stat)| {
                (
                    &e.path,
                    Hashed {
                        digest: e.digest,
                        executable: e.executable,
                        stat: *stat,
                    },
                )
            })
            .collect();
        Self {
            root,
            hashed,
            shown_dirs: Mutex::default(),
            now: None,
        }
    }

    /// Measures the racy window from `now` instead of the clock's time (for tests).
    #[cfg(test)]
    fn at(mut self, now: SystemTime) -> Self {
        self.now = Some(now);
        self
    }

    fn racy_since(&self) -> i128 {
        racy_since(self.now.unwrap_or_else(SystemTime::now))
    }

    /// The sources inside directory `dir`.
    fn sources_in<'s>(&'s self, dir: &'s RelPath) -> impl Iterator<Item = &'a RelPath> + 's {
        self.hashed.keys().copied().filter(move |src| {
            src.as_str()
                .strip_prefix(dir.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    fn hashed(&self, path: &RelPath) -> Result<&Hashed, BuildError> {
        self.hashed
            .get(path)
            .ok_or_else(|| BuildError::failed(format!("`{path}` is not a source of this rule")))
    }

    /// Whether the file `meta` describes (source `path`) can be shown in place.
    fn file_in_place(&self, path: &RelPath, meta: &std::fs::Metadata, racy: i128) -> bool {
        let Ok(hashed) = self.hashed(path) else {
            return false;
        };
        let copy_mode = if hashed.executable { 0o755 } else { 0o644 };
        // One link: a copy is a file of its own (tar stores a second link as a link).
        meta.is_file()
            && meta.nlink() == 1
            && meta.mode() & 0o7777 == copy_mode
            && owned_as_a_copy(meta)
            && Stat::from_metadata(meta) == hashed.stat
            && !hashed.stat.changed_since(racy)
    }

    /// Walks directory `dir` (project-relative, on the host at `host`) into `found`, or gives
    /// `None` at the first entry that is not an eligible source or directory.
    fn walk_eligible(
        &self,
        dir: &RelPath,
        host: &Path,
        dev: u64,
        racy: i128,
        found: &mut Walked,
    ) -> Option<()> {
        let meta = std::fs::symlink_metadata(host).ok()?;
        let stat = Stat::from_metadata(&meta);
        let as_staged = meta.mode() & 0o7777 == 0o755 && owned_as_a_copy(&meta);
        if !meta.is_dir() || !as_staged || meta.dev() != dev || stat.changed_since(racy) {
            return None;
        }
        // Staging makes only the directories that hold sources: an empty one would show.
        let files_before = found.files;
        for entry in std::fs::read_dir(host).ok()? {
            let entry = entry.ok()?;
            let name = entry.file_name().into_string().ok()?;
            let rel = RelPath::new(format!("{dir}/{name}")).ok()?;
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).ok()?;
            if meta.is_dir() {
                self.walk_eligible(&rel, &path, dev, racy, found)?;
            } else if meta.dev() == dev && self.file_in_place(&rel, &meta, racy) {
                found.bytes += meta.len();
                found.files += 1;
            } else {
                return None;
            }
        }
        if found.files == files_before {
            return None;
        }
        found.dirs.push((host.to_owned(), stat));
        Some(())
    }
}

/// What a walk of an eligible directory found.
#[derive(Default)]
struct Walked {
    /// The sources' bytes.
    bytes: u64,
    /// How many sources.
    files: usize,
    /// Every directory, with its stat data.
    dirs: Vec<(PathBuf, Stat)>,
}

/// Whether a file or directory is owned as one staged for the build would be (by this
/// process's user and group), so that the build cannot tell it from a copy by its owner.
fn owned_as_a_copy(meta: &std::fs::Metadata) -> bool {
    meta.uid() == rustix::process::geteuid().as_raw()
        && meta.gid() == rustix::process::getegid().as_raw()
}

fn changed(path: &RelPath) -> BuildError {
    BuildError::failed(format!(
        "source `{path}` changed during the build; run it again"
    ))
}

impl SourceFiles for ProjectSources<'_> {
    fn copy_to(&self, path: &RelPath, dest: &Path) -> Result<(), BuildError> {
        let expected = self.hashed(path)?.digest;
        let fail = |e: std::io::Error| BuildError::caused(format!("failed to stage `{path}`"), e);
        let mut from = std::fs::File::open(self.root.join(path.as_str())).map_err(fail)?;
        let mut to = std::fs::File::create(dest).map_err(fail)?;
        let (digest, _) = Digest::of_reader(&mut from, &mut to).map_err(fail)?;
        if digest != expected {
            return Err(changed(path));
        }
        Ok(())
    }

    fn in_place(&self, path: &RelPath) -> Option<InPlace> {
        let host_path = self.root.join(path.as_str());
        let meta = std::fs::symlink_metadata(&host_path).ok()?;
        self.file_in_place(path, &meta, self.racy_since())
            .then_some(InPlace {
                host_path,
                size: meta.len(),
            })
    }

    fn in_place_dir(&self, dir: &RelPath) -> Option<InPlace> {
        let host_path = self.root.join(dir.as_str());
        let dev = std::fs::metadata(self.root).ok()?.dev();
        let mut found = Walked::default();
        self.walk_eligible(dir, &host_path, dev, self.racy_since(), &mut found)?;
        // A source hashed but gone since would be missing from the build.
        if found.files != self.sources_in(dir).count() {
            return None;
        }
        self.shown_dirs
            .lock()
            .expect("not poisoned")
            .insert(dir.clone(), found.dirs);
        Some(InPlace {
            host_path,
            size: found.bytes,
        })
    }

    fn check_in_place(&self, path: &RelPath) -> Result<(), BuildError> {
        let dirs = self.shown_dirs.lock().expect("not poisoned").remove(path);
        let Some(dirs) = dirs else {
            return self.check_file(path);
        };
        if dirs.iter().any(|(p, stat)| Stat::of(p).ok() != Some(*stat)) {
            return Err(BuildError::failed(format!(
                "directory `{path}` changed during the build (an entry was added, removed or renamed); run it again"
            )));
        }
        self.sources_in(path)
            .try_for_each(|src| self.check_file(src))
    }
}

impl ProjectSources<'_> {
    /// Whether source `path` still holds the content that was hashed.
    fn check_file(&self, path: &RelPath) -> Result<(), BuildError> {
        let hashed = self.hashed(path)?;
        let host_path = self.root.join(path.as_str());
        if Stat::of(&host_path).is_ok_and(|now| now == hashed.stat) {
            return Ok(());
        }
        // Touched, or replaced: only its content can tell whether what the build read is
        // what was hashed.
        let again = hash_source(self.root, path)
            .map_err(|e| BuildError::caused(format!("failed to read `{path}`"), e))?;
        if again.digest != hashed.digest {
            return Err(changed(path));
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;
    use std::time::Duration;

    fn entry(root: &Path, rel: &str, content: &[u8], mode: u32) -> (SourceEntry, Stat) {
        let p = root.join(rel);
        std::fs::write(&p, content).unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(mode)).unwrap();
        let stat = Stat::of(&p).unwrap();
        (
            SourceEntry {
                path: RelPath::new(rel).unwrap(),
                executable: mode & 0o111 != 0,
                digest: Digest::of(content),
            },
            stat,
        )
    }

    #[test]
    fn a_source_is_shown_in_place_only_when_its_stat_and_mode_are_as_hashed() {
        let d = tempfile::tempdir().unwrap();
        let (a, sa) = entry(d.path(), "a.yaml", b"a: 1\n", 0o644);
        let (b, sb) = entry(d.path(), "b.yaml", b"b: 1\n", 0o600);
        let (c, sc) = entry(d.path(), "run.sh", b"#!/bin/sh\n", 0o755);
        let srcs = vec![a, b, c];
        let later = SystemTime::now() + Duration::from_secs(60);
        let sources = ProjectSources::new(d.path(), &srcs, &[sa, sb, sc]).at(later);
        let a_path = RelPath::new("a.yaml").unwrap();
        let shown = sources.in_place(&a_path).unwrap();
        assert_eq!(shown.host_path, d.path().join("a.yaml"));
        assert_eq!(shown.size, 5);
        assert!(sources.in_place(&RelPath::new("run.sh").unwrap()).is_some());
        // 0600 is not what a copy gets: the build could tell, so it is copied.
        assert!(sources.in_place(&RelPath::new("b.yaml").unwrap()).is_none());
        // Nor is another owner (only root can make one).
        if rustix::process::geteuid().is_root() {
            let run = d.path().join("run.sh");
            std::os::unix::fs::chown(&run, Some(12345), None).unwrap();
            let (c, sc) = (srcs[2].clone(), Stat::of(&run).unwrap());
            let chowned = [c];
            let other = ProjectSources::new(d.path(), &chowned, &[sc]).at(later);
            assert!(other.in_place(&chowned[0].path).is_none());
            std::os::unix::fs::chown(&run, Some(0), None).unwrap();
        }
        assert!(sources.in_place(&RelPath::new("other").unwrap()).is_none());
        // A file with a second link is not what a copy is either.
        let link = d.path().join("second-link");
        std::fs::hard_link(d.path().join("a.yaml"), &link).unwrap();
        let linked =
            ProjectSources::new(d.path(), &srcs, &[Stat::of(&link).unwrap(), sb, sc]).at(later);
        assert!(linked.in_place(&a_path).is_none());
        std::fs::remove_file(&link).unwrap();
        let sa = Stat::of(&d.path().join("a.yaml")).unwrap();
        let sources = ProjectSources::new(d.path(), &srcs, &[sa, sb, sc]).at(later);
        sources.check_in_place(&a_path).unwrap();
        // Edited after it was hashed: not shown in place, and found changed afterwards.
        std::fs::write(d.path().join("a.yaml"), b"a: 2\n").unwrap();
        assert!(sources.in_place(&a_path).is_none());
        assert!(sources.check_in_place(&a_path).is_err());
        // Same content again, another stat: hashed, and found the same.
        std::fs::write(d.path().join("a.yaml"), b"a: 1\n").unwrap();
        sources.check_in_place(&a_path).unwrap();
    }

    #[test]
    fn a_directory_is_shown_in_place_only_when_it_holds_nothing_but_eligible_sources() {
        let d = tempfile::tempdir().unwrap();
        for dir in ["data", "data/sub"] {
            std::fs::create_dir(d.path().join(dir)).unwrap();
            std::fs::set_permissions(d.path().join(dir), std::fs::Permissions::from_mode(0o755))
                .unwrap();
        }
        let (a, sa) = entry(d.path(), "data/a.yaml", b"a: 1\n", 0o644);
        let (b, sb) = entry(d.path(), "data/sub/b.yaml", b"b: 22\n", 0o644);
        let srcs = vec![a, b];
        let stats = [sa, sb];
        let later = SystemTime::now() + Duration::from_secs(60);
        let data = RelPath::new("data").unwrap();
        let sources = ProjectSources::new(d.path(), &srcs, &stats).at(later);
        let shown = sources.in_place_dir(&data).unwrap();
        assert_eq!(shown.host_path, d.path().join("data"));
        assert_eq!(shown.size, 11);
        sources.check_in_place(&data).unwrap();
        // Within the racy window (the directories were just made): not shown.
        let now = ProjectSources::new(d.path(), &srcs, &stats);
        assert!(now.in_place_dir(&data).is_none());
        // A file added since: the directory changed under the build.
        std::fs::write(d.path().join("data/sub/late.txt"), b"late").unwrap();
        assert!(sources.check_in_place(&data).is_err());
        // ... and a directory holding an undeclared file is not shown.
        let again = ProjectSources::new(d.path(), &srcs, &stats).at(later);
        assert!(again.in_place_dir(&data).is_none());
        std::fs::remove_file(d.path().join("data/sub/late.txt")).unwrap();
        // Nor one holding a directory without sources (staging would not make it).
        std::fs::create_dir(d.path().join("data/empty")).unwrap();
        std::fs::set_permissions(
            d.path().join("data/empty"),
            std::fs::Permissions::from_mode(0o755),
        )
        .unwrap();
        assert!(again.in_place_dir(&data).is_none());
        std::fs::remove_dir(d.path().join("data/empty")).unwrap();
        assert!(again.in_place_dir(&data).is_some());
        // Nor one whose permissions a copy would not have.
        std::fs::set_permissions(
            d.path().join("data/sub"),
            std::fs::Permissions::from_mode(0o700),
        )
        .unwrap();
        assert!(again.in_place_dir(&data).is_none());
    }

    #[test]
    fn a_recently_modified_source_is_copied() {
        let d = tempfile::tempdir().unwrap();
        let p = d.path().join("fresh.yaml");
        std::fs::write(&p, b"x").unwrap();
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o644)).unwrap();
        let srcs = vec![SourceEntry {
            path: RelPath::new("fresh.yaml").unwrap(),
            executable: false,
            digest: Digest::of(b"x"),
        }];
        let sources = ProjectSources::new(d.path(), &srcs, &[Stat::of(&p).unwrap()]);
        assert!(sources.in_place(&srcs[0].path).is_none());
        let dest = d.path().join("copy");
        sources.copy_to(&srcs[0].path, &dest).unwrap();
        assert_eq!(std::fs::read(dest).unwrap(), b"x");
    }
}
