//! Expanding `srcs` patterns and hashing source files by content.

use std::path::Path;

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

fn walk_under<'a>(root: &'a Path, dir: &Path) -> impl Iterator<Item = String> + 'a {
    walkdir::WalkDir::new(dir)
        .sort_by_file_name()
        .into_iter()
        .filter_entry(|e| {
            e.depth() == 0
                || !(e.file_type().is_dir()
                    && (SKIPPED_DIRS.contains(&e.file_name().to_string_lossy().as_ref())
                        || e.file_name().to_string_lossy().starts_with('.')))
        })
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter_map(move |e| {
            e.path()
                .strip_prefix(root)
                .ok()
                .map(|p| p.to_string_lossy().into_owned())
        })
}

fn is_glob(s: &str) -> bool {
    s.contains(['*', '?', '[', '{'])
}

/// Expands one `srcs` pattern into sorted file paths. A literal path names a file, or a
/// directory whose files are all taken; a glob (`*`, `**`, `?`, `[...]`, `{a,b}`) must match at
/// least one file.
pub fn expand(root: &Path, pattern: &str) -> Result<Vec<RelPath>, SourceError> {
    let trimmed = pattern.trim_start_matches("./");
    let outside = || SourceError::OutsideProject {
        pattern: pattern.to_owned(),
    };
    if !is_glob(trimmed) {
        let rel = RelPath::new(trimmed.trim_end_matches('/')).map_err(|_| outside())?;
        let full = root.join(rel.as_str());
        let meta = std::fs::metadata(&full).map_err(|_| SourceError::NotFound {
            pattern: pattern.to_owned(),
        })?;
        if meta.is_dir() {
            let files: Vec<RelPath> = walk_under(root, &full)
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
        RelPath::new(base.as_str()).map_err(|_| outside())?;
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
    let mut out: Vec<RelPath> = walk_under(root, &start)
        .filter(|p| matcher.is_match(p))
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
}
