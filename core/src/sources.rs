//! Expanding `srcs` patterns and hashing source files by content.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::digest::Digest;
use crate::relpath::RelPath;

/// A source file as it enters a derivation: relative path, executable bit and content hash.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, serde::Serialize, serde::Deserialize)]
pub struct SourceEntry {
    /// Path relative to the project root.
    pub path: RelPath,
    /// Whether any execute bit is set.
    pub executable: bool,
    /// blake3 of the content.
    pub digest: Digest,
}

/// Why a `srcs` pattern could not be expanded or read.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    /// The pattern is absolute or climbs out of the project.
    #[error("source `{pattern}` is outside the project")]
    OutsideProject {
        /// The pattern.
        pattern: String,
    },
    /// A literal path that does not exist.
    #[error("source file `{pattern}` does not exist")]
    NotFound {
        /// The pattern.
        pattern: String,
    },
    /// A glob that matches nothing.
    #[error("source pattern `{pattern}` matches no file")]
    NoMatch {
        /// The pattern.
        pattern: String,
    },
    /// An invalid glob.
    #[error("source pattern `{pattern}` is not a valid glob")]
    BadGlob {
        /// The pattern.
        pattern: String,
        /// The cause.
        #[source]
        source: globset::Error,
    },
    /// A path that resolves, through a symlink, to somewhere outside the project.
    #[error("source `{path}` resolves outside the project, to `{target}`")]
    Escapes {
        /// The path inside the project.
        path: String,
        /// Where it resolves to.
        target: String,
    },
    /// The project directory, or a directory below it, could not be resolved or walked.
    #[error("failed to resolve `{path}` inside the project")]
    Resolve {
        /// The path.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Reading a file failed.
    #[error("failed to read source `{path}`")]
    Read {
        /// The file.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

const SKIPPED_DIRS: &[&str] = &[".git", "target", ".kiln", "node_modules"];

/// The project directory as the boundary of everything a build may read: every source and
/// include must resolve, symlinks followed, to a file inside it. Symlinks that stay inside are
/// followed, in literal paths and globs alike; one that leads outside is an error, never
/// skipped. Directories already found inside are remembered, so a plain file costs one `lstat`.
#[derive(Debug)]
pub struct Confinement {
    root: PathBuf,
    real: PathBuf,
    dirs_inside: Mutex<HashMap<PathBuf, bool>>,
    listed: Mutex<Vec<ListedDir>>,
}

/// A directory a glob or directory source listed, with its metadata (symlinks followed): an
/// entry added or removed changes the directory's mtime, so a build's fingerprint can tell
/// that the glob may now match other files. The metadata is read just after the listing, so a
/// fingerprint treats a directory modified since its build began as changed.
#[derive(Debug, Clone)]
pub struct ListedDir {
    /// Relative to the project root (`""` for the root itself).
    pub path: String,
    /// Its metadata when it was listed.
    pub metadata: std::fs::Metadata,
}

impl Confinement {
    /// Resolves the project directory.
    pub fn new(root: &Path) -> Result<Self, SourceError> {
        let real = std::fs::canonicalize(root).map_err(|source| SourceError::Resolve {
            path: root.display().to_string(),
            source,
        })?;
        Ok(Self {
            root: root.to_path_buf(),
            real,
            dirs_inside: Mutex::default(),
            listed: Mutex::default(),
        })
    }

    /// Every directory listed so far by globs and directory sources, each once.
    pub fn take_listed(&self) -> Vec<ListedDir> {
        let mut listed = std::mem::take(&mut *self.listed.lock().expect("lock"));
        listed.sort_by(|a, b| a.path.cmp(&b.path));
        listed.dedup_by(|a, b| a.path == b.path);
        listed
    }

    /// The project directory as given.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn escapes(&self, rel: &str, full: &Path) -> Result<(), SourceError> {
        match std::fs::canonicalize(full) {
            Ok(target) if target.starts_with(&self.real) => Ok(()),
            Ok(target) => Err(SourceError::Escapes {
                path: rel.to_owned(),
                target: target.display().to_string(),
            }),
            Err(source) => Err(SourceError::Resolve {
                path: rel.to_owned(),
                source,
            }),
        }
    }

    /// Checks that directory `rel_dir` (relative, `""` for the root) resolves inside.
    fn check_dir(&self, rel_dir: &Path) -> Result<(), SourceError> {
        if rel_dir.as_os_str().is_empty() {
            return Ok(());
        }
        if let Some(&inside) = self.dirs_inside.lock().expect("lock").get(rel_dir) {
            return if inside {
                Ok(())
            } else {
                self.escapes(&rel_dir.to_string_lossy(), &self.root.join(rel_dir))
            };
        }
        let result = self.escapes(&rel_dir.to_string_lossy(), &self.root.join(rel_dir));
        if !matches!(result, Err(SourceError::Resolve { .. })) {
            self.dirs_inside
                .lock()
                .expect("lock")
                .insert(rel_dir.to_path_buf(), result.is_ok());
        }
        result
    }

    /// The metadata of `rel` (symlinks followed) once it is known to resolve inside the
    /// project; `Ok(None)` when it does not exist.
    pub fn metadata(&self, rel: &RelPath) -> Result<Option<std::fs::Metadata>, SourceError> {
        let full = self.root.join(rel.as_str());
        let meta = match std::fs::symlink_metadata(&full) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                // A missing file, or a path under a symlinked directory that leads nowhere.
                return Ok(None);
            }
            Err(source) => {
                return Err(SourceError::Resolve {
                    path: rel.to_string(),
                    source,
                })
            }
        };
        let parent = Path::new(rel.as_str()).parent().unwrap_or(Path::new(""));
        self.check_dir(parent)?;
        if meta.file_type().is_symlink() {
            self.escapes(rel.as_str(), &full)?;
            return std::fs::metadata(&full)
                .map(Some)
                .map_err(|source| SourceError::Read {
                    path: rel.to_string(),
                    source,
                });
        }
        Ok(Some(meta))
    }

    /// Files under directory `dir` (already checked inside) that `wanted` accepts, symlinks
    /// followed and checked. A symlinked directory that leads outside is an error wherever the
    /// walk meets it (the walk would take files from outside); a file symlink only when wanted.
    fn walk_under(
        &self,
        dir: &Path,
        wanted: impl Fn(&str) -> bool,
    ) -> Result<Vec<String>, SourceError> {
        let mut out = Vec::new();
        let mut listed = Vec::new();
        let walk = walkdir::WalkDir::new(dir)
            .follow_links(true)
            .sort_by_file_name()
            .into_iter()
            .filter_entry(|e| {
                e.depth() == 0
                    || !(e.file_type().is_dir()
                        && (SKIPPED_DIRS.contains(&e.file_name().to_string_lossy().as_ref())
                            || e.file_name().to_string_lossy().starts_with('.')))
            });
        for entry in walk {
            let entry = entry.map_err(|e| {
                let path = e
                    .path()
                    .and_then(|p| p.strip_prefix(&self.root).ok())
                    .map(|p| p.to_string_lossy().into_owned())
                    .unwrap_or_default();
                SourceError::Resolve {
                    path,
                    source: e.into(),
                }
            })?;
            let Ok(rel) = entry.path().strip_prefix(&self.root) else {
                continue;
            };
            let rel = rel.to_string_lossy().into_owned();
            if entry.file_type().is_dir() {
                if let Ok(metadata) = std::fs::metadata(entry.path()) {
                    listed.push(ListedDir {
                        path: rel.clone(),
                        metadata,
                    });
                }
            }
            let is_file = entry.file_type().is_file();
            if is_file && !wanted(&rel) {
                continue;
            }
            if entry.path_is_symlink() {
                // Everything below a symlinked directory is inside once the link is.
                self.escapes(&rel, entry.path())?;
            }
            if is_file {
                out.push(rel);
            }
        }
        self.listed.lock().expect("lock").extend(listed);
        Ok(out)
    }
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Expands one `srcs` pattern into sorted file paths. A literal path names a file, or a
/// directory whose files are all taken; a glob (`*`, `**`, `?`, `[...]`, `{a,b}`) must match at
/// least one file. Every path resolves inside the project ([`Confinement`]).
pub fn expand(project: &Confinement, pattern: &str) -> Result<Vec<RelPath>, SourceError> {
    let root = project.root();
    let trimmed = pattern.trim_start_matches("./");
    let outside = || SourceError::OutsideProject {
        pattern: pattern.to_owned(),
    };
    if !is_glob(trimmed) {
        let rel = RelPath::new(trimmed.trim_end_matches('/')).map_err(|_| outside())?;
        let meta = project
            .metadata(&rel)?
            .ok_or_else(|| SourceError::NotFound {
                pattern: pattern.to_owned(),
            })?;
        if meta.is_dir() {
            let full = root.join(rel.as_str());
            let files: Vec<RelPath> = project
                .walk_under(&full, |_| true)?
                .into_iter()
                .filter_map(|p| RelPath::new(p).ok())
                .collect();
            if files.is_empty() {
                return Err(SourceError::NoMatch {
                    pattern: pattern.to_owned(),
                });
            }
            return Ok(files);
        }
        return Ok(vec![rel]);
    }
    // Walk only from the literal directory prefix of the glob.
    let literal: Vec<&str> = trimmed.split('/').take_while(|c| !is_glob(c)).collect();
    let base = literal.join("/");
    if !base.is_empty() {
        let rel = RelPath::new(base.as_str()).map_err(|_| outside())?;
        if project.metadata(&rel)?.is_none() {
            return Err(SourceError::NoMatch {
                pattern: pattern.to_owned(),
            });
        }
    }
    if trimmed.split('/').any(|c| c == "..") || trimmed.starts_with('/') {
        return Err(outside());
    }
    let matcher = globset::GlobBuilder::new(trimmed)
        .literal_separator(true)
        .build()
        .map_err(|source| SourceError::BadGlob {
            pattern: pattern.to_owned(),
            source,
        })?
        .compile_matcher();
    let start = root.join(&base);
    let mut out: Vec<RelPath> = project
        .walk_under(&start, |p| matcher.is_match(p))?
        .into_iter()
        .filter_map(|p| RelPath::new(p).ok())
        .collect();
    out.sort();
    if out.is_empty() {
        return Err(SourceError::NoMatch {
            pattern: pattern.to_owned(),
        });
    }
    Ok(out)
}

/// Reads a source file and returns its entry and bytes.
pub fn read_source(root: &Path, path: &RelPath) -> Result<(SourceEntry, Vec<u8>), SourceError> {
    use std::os::unix::fs::PermissionsExt;
    let full = root.join(path.as_str());
    let err = |source| SourceError::Read {
        path: path.to_string(),
        source,
    };
    let content = std::fs::read(&full).map_err(err)?;
    let meta = std::fs::metadata(&full).map_err(err)?;
    Ok((
        SourceEntry {
            path: path.clone(),
            executable: meta.permissions().mode() & 0o111 != 0,
            digest: Digest::of(&content),
        },
        content,
    ))
}

/// A source's entry (digest and executable bit) hashed from disk in chunks, for kinds that
/// never hold their sources in memory.
pub fn hash_source(root: &Path, path: &RelPath) -> Result<SourceEntry, SourceError> {
    use std::os::unix::fs::PermissionsExt;
    let full = root.join(path.as_str());
    let err = |source| SourceError::Read {
        path: path.to_string(),
        source,
    };
    let mut file = std::fs::File::open(&full).map_err(err)?;
    let meta = file.metadata().map_err(err)?;
    let (digest, _) = Digest::of_reader(&mut file, &mut std::io::sink()).map_err(err)?;
    Ok(SourceEntry {
        path: path.clone(),
        executable: meta.permissions().mode() & 0o111 != 0,
        digest,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tree() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        for p in [
            "k8s/a.yaml",
            "k8s/b.yaml",
            "k8s/sub/c.yaml",
            "config/app.env",
            ".git/x",
            "k8s/.hidden/d.yaml",
        ] {
            let f = d.path().join(p);
            std::fs::create_dir_all(f.parent().unwrap()).unwrap();
            std::fs::write(f, p).unwrap();
        }
        d
    }

    fn expand(root: &Path, pattern: &str) -> Result<Vec<RelPath>, SourceError> {
        super::expand(&Confinement::new(root).unwrap(), pattern)
    }

    fn names(v: Vec<RelPath>) -> Vec<String> {
        v.into_iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn expands_literals_dirs_and_globs() {
        let d = tree();
        assert_eq!(
            names(expand(d.path(), "config/app.env").unwrap()),
            ["config/app.env"]
        );
        assert_eq!(
            names(expand(d.path(), "./config/app.env").unwrap()),
            ["config/app.env"]
        );
        assert_eq!(
            names(expand(d.path(), "k8s/*.yaml").unwrap()),
            ["k8s/a.yaml", "k8s/b.yaml"]
        );
        assert_eq!(
            names(expand(d.path(), "k8s/**/*.yaml").unwrap()),
            ["k8s/a.yaml", "k8s/b.yaml", "k8s/sub/c.yaml"]
        );
        assert_eq!(
            names(expand(d.path(), "k8s").unwrap()),
            ["k8s/a.yaml", "k8s/b.yaml", "k8s/sub/c.yaml"]
        );
    }

    #[test]
    fn reports_missing_and_outside() {
        let d = tree();
        assert!(matches!(
            expand(d.path(), "nope.yaml"),
            Err(SourceError::NotFound { .. })
        ));
        assert!(matches!(
            expand(d.path(), "k8s/*.json"),
            Err(SourceError::NoMatch { .. })
        ));
        assert!(matches!(
            expand(d.path(), "../etc/passwd"),
            Err(SourceError::OutsideProject { .. })
        ));
        assert!(matches!(
            expand(d.path(), "/etc/passwd"),
            Err(SourceError::OutsideProject { .. })
        ));
        assert!(matches!(
            expand(d.path(), "../*"),
            Err(SourceError::OutsideProject { .. })
        ));
    }

    #[test]
    fn symlinks_inside_are_followed_and_outside_refused() {
        use std::os::unix::fs::symlink;
        let outside = tempfile::tempdir().unwrap();
        std::fs::write(outside.path().join("secret"), "s").unwrap();
        let d = tree();
        symlink("a.yaml", d.path().join("k8s/alias.yaml")).unwrap();
        symlink("sub", d.path().join("k8s/subalias")).unwrap();
        assert_eq!(
            names(expand(d.path(), "k8s/alias.yaml").unwrap()),
            ["k8s/alias.yaml"]
        );
        assert_eq!(
            names(expand(d.path(), "k8s/**/*.yaml").unwrap()),
            [
                "k8s/a.yaml",
                "k8s/alias.yaml",
                "k8s/b.yaml",
                "k8s/sub/c.yaml",
                "k8s/subalias/c.yaml"
            ]
        );
        // A file link, a directory link and a chain through an inside link, each leading out.
        symlink(
            outside.path().join("secret"),
            d.path().join("config/passwd"),
        )
        .unwrap();
        symlink(outside.path(), d.path().join("etc")).unwrap();
        symlink("../etc", d.path().join("config/hop")).unwrap();
        for pattern in [
            "config/passwd",
            "config/*",
            "config",
            "**/passwd",
            "etc/secret",
            "etc",
            "etc/*",
            "config/hop/secret",
            "**/*.yaml",
        ] {
            match expand(d.path(), pattern) {
                Err(SourceError::Escapes { target, .. }) => {
                    assert!(
                        target.starts_with(
                            &outside.path().canonicalize().unwrap().display().to_string()
                        ),
                        "{pattern}: {target}"
                    );
                }
                other => panic!("{pattern}: {other:?}"),
            }
        }
        // A file link leading out that the pattern does not take is no concern of it; a
        // directory link leading out is refused wherever a walk meets it.
        assert!(matches!(
            expand(d.path(), "config/*.env"),
            Err(SourceError::Escapes { .. })
        ));
        std::fs::remove_file(d.path().join("config/hop")).unwrap();
        assert_eq!(
            names(expand(d.path(), "config/*.env").unwrap()),
            ["config/app.env"]
        );
    }
}
