//! [`Tree`]: an artifact's canonical file tree, and its output hash.
//!
//! Canonical tree encoding, version 1 (`kiln-tree-v1`), hashed with blake3 to give the output hash:
//!
//! ```text
//! "kiln-tree-v1\0"
//! u64le  number of entries
//! per entry, entries MUST be sorted by path (byte order):
//!   u64le path length, path bytes (a RelPath: relative, normalized, `/`-separated)
//!   u8    entry type: 1 = regular file, 2 = symlink
//!   file:    u8 executable (0 or 1), u64le size, 32 bytes blake3 of the content
//!   symlink: u64le target length, target bytes
//! ```
//!
//! Directories are implied by the paths; empty directories are not part of a tree. Nothing else
//! (mtime, owner, permission bits other than executable, archive bytes) enters the hash.

use std::collections::{BTreeMap, HashSet};
use std::path::Path;
use std::sync::Arc;

use rayon::prelude::*;

use crate::digest::Digest;
use crate::exports::Exports;
use crate::relpath::{RelPath, RelPathError};
use crate::Bytes;

/// Magic and version of the canonical tree encoding.
pub const TREE_ENCODING: &[u8] = b"kiln-tree-v1\0";

/// Where an artifact keeps the small string values it exports to its dependents' interpolation
/// (`${dep.RULE.KEY}`). Part of the tree, so covered by the output hash.
pub const EXPORTS_PATH: &str = ".kiln/exports.json";

/// One entry of a [`Tree`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Entry {
    /// A regular file.
    File {
        /// The bytes.
        content: Bytes,
        /// Whether any execute bit is set.
        executable: bool,
    },
    /// A symbolic link, relative, pointing inside the tree.
    Symlink {
        /// The link target as written.
        target: String,
    },
}

/// Why a set of entries is not a valid tree.
#[derive(Debug, thiserror::Error)]
pub enum TreeError {
    /// A path that is not a normalized relative path.
    #[error("invalid path in tree")]
    Path(#[from] RelPathError),
    /// A path used both as a file and as a directory.
    #[error("`{0}` is both a file and a directory")]
    FileDirConflict(String),
    /// A symlink that is absolute or climbs out of the tree.
    #[error("symlink `{path}` points outside the tree (`{target}`)")]
    EscapingSymlink {
        /// The link.
        path: String,
        /// Its target.
        target: String,
    },
    /// A device, FIFO or socket in a directory being read as a tree.
    #[error("`{0}` is not a regular file, directory or symlink")]
    UnsupportedFileType(String),
    /// A directory holds more bytes than an artifact may.
    #[error(
        "the artifact holds {size} bytes, more than the limit of {limit} (KILN_MAX_ARTIFACT_BYTES)"
    )]
    TooLarge {
        /// Its size.
        size: u64,
        /// The limit.
        limit: u64,
    },
    /// Reading a directory from disk failed.
    #[error("failed to read `{path}`")]
    Read {
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// Writing a tree to disk failed.
    #[error("failed to write `{path}`")]
    Write {
        /// The file or directory.
        path: String,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
}

/// A canonical file tree: the content of one artifact. Entries are kept sorted by path.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Tree {
    entries: BTreeMap<RelPath, Entry>,
    digests: ContentDigests,
}

/// The blake3 digests of a tree's entries' content (`None` for a symlink), in path order:
/// computed once, for the output hash, and read again by whoever needs a file's digest (the
/// engine's conflicts index), so a large file is not hashed twice. Any change to the entries
/// forgets them. A cache, not content: two trees compare equal whatever it holds.
#[derive(Clone, Debug, Default)]
struct ContentDigests(std::sync::OnceLock<Arc<[Option<Digest>]>>);

impl PartialEq for ContentDigests {
    fn eq(&self, _: &Self) -> bool {
        true
    }
}

impl Eq for ContentDigests {}

impl Tree {
    /// An empty tree.
    pub fn new() -> Self {
        Self::default()
    }

    /// Adds or replaces a regular file.
    pub fn insert_file(&mut self, path: RelPath, content: impl Into<Bytes>, executable: bool) {
        self.digests.0.take();
        self.entries.insert(
            path,
            Entry::File {
                content: content.into(),
                executable,
            },
        );
    }

    /// Adds or replaces a symlink. [`Tree::validate`] checks that it stays inside the tree.
    pub fn insert_symlink(&mut self, path: RelPath, target: impl Into<String>) {
        self.digests.0.take();
        self.entries.insert(
            path,
            Entry::Symlink {
                target: target.into(),
            },
        );
    }

    /// Adds an entry.
    pub fn insert(&mut self, path: RelPath, entry: Entry) {
        self.digests.0.take();
        self.entries.insert(path, entry);
    }

    /// The entry at `path`.
    pub fn get(&self, path: &str) -> Option<&Entry> {
        RelPath::new(path).ok().and_then(|p| self.entries.get(&p))
    }

    /// The content of the regular file at `path`.
    pub fn file(&self, path: &str) -> Option<&[u8]> {
        match self.get(path)? {
            Entry::File { content, .. } => Some(content),
            Entry::Symlink { .. } => None,
        }
    }

    /// Entries sorted by path.
    pub fn iter(&self) -> impl Iterator<Item = (&RelPath, &Entry)> {
        self.entries.iter()
    }

    /// Number of entries.
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    /// Whether the tree has no entries.
    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Sum of file sizes in bytes.
    pub fn content_size(&self) -> u64 {
        self.entries
            .values()
            .map(|e| match e {
                Entry::File { content, .. } => content.len() as u64,
                Entry::Symlink { target } => target.len() as u64,
            })
            .sum()
    }

    /// The values this artifact exports to dependents, from [`EXPORTS_PATH`].
    pub fn exports(&self) -> Exports {
        self.file(EXPORTS_PATH)
            .map(|bytes| Exports::from(parse_exports(bytes)))
            .unwrap_or_default()
    }

    /// Writes `exports` to [`EXPORTS_PATH`] in canonical (sorted) JSON.
    pub fn set_exports(&mut self, exports: &BTreeMap<String, String>) {
        if exports.is_empty() {
            self.digests.0.take();
            self.entries
                .remove(&RelPath::new(EXPORTS_PATH).expect("valid"));
            return;
        }
        let json = serde_json::to_vec(exports).expect("string map serializes");
        self.insert_file(RelPath::new(EXPORTS_PATH).expect("valid"), json, false);
    }

    /// Checks the invariants an archive from an untrusted cache must meet: no path is both a file
    /// and a directory, and every symlink is relative and resolves inside the tree.
    pub fn validate(&self) -> Result<(), TreeError> {
        let mut dirs: HashSet<&str> = HashSet::new();
        for path in self.entries.keys() {
            let s = path.as_str();
            let mut idx = 0;
            while let Some(pos) = s[idx..].find('/') {
                dirs.insert(&s[..idx + pos]);
                idx += pos + 1;
            }
        }
        for (path, entry) in &self.entries {
            if dirs.contains(path.as_str()) {
                return Err(TreeError::FileDirConflict(path.to_string()));
            }
            if let Entry::Symlink { target } = entry {
                if !symlink_stays_inside(path, target) || !self.resolves_inside(path, target) {
                    return Err(TreeError::EscapingSymlink {
                        path: path.to_string(),
                        target: target.clone(),
                    });
                }
            }
        }
        Ok(())
    }

    /// Whether `target` of the symlink `link` stays inside the tree when resolved as the kernel
    /// would: every component that names another symlink of the tree is replaced by that
    /// link's target (at most 40 hops, as Linux allows), so a chain such as `a/d -> ..` with
    /// `a/x -> d/../..` is seen to leave the tree although each text alone stays inside.
    fn resolves_inside(&self, link: &RelPath, target: &str) -> bool {
        let mut at: Vec<String> = link.components().map(str::to_owned).collect();
        at.pop();
        let mut pending: std::collections::VecDeque<String> =
            target.split('/').map(str::to_owned).collect();
        let mut hops = 0;
        while let Some(c) = pending.pop_front() {
            match c.as_str() {
                "" | "." => {}
                ".." => {
                    if at.pop().is_none() {
                        return false;
                    }
                }
                _ => {
                    at.push(c);
                    if let Some(Entry::Symlink { target: next }) = self.get(&at.join("/")) {
                        hops += 1;
                        if hops > 40 || next.starts_with('/') {
                            return false;
                        }
                        at.pop();
                        for part in next.split('/').rev() {
                            pending.push_front(part.to_owned());
                        }
                    }
                }
            }
        }
        true
    }

    /// The canonical encoding described in the module docs.
    pub fn canonical_encoding(&self) -> Vec<u8> {
        let mut canonical = CanonicalHasher::new();
        for ((path, entry), hash) in self.entries.iter().zip(self.content_digests()) {
            match entry {
                Entry::File {
                    content,
                    executable,
                } => canonical.file(
                    path,
                    *executable,
                    content.len() as u64,
                    hash.as_ref().expect("file has a hash"),
                ),
                Entry::Symlink { target } => canonical.symlink(path, target),
            }
        }
        canonical.encoding()
    }

    /// blake3 of each entry's content (`None` for a symlink), in the order of [`Tree::iter`]:
    /// hashed in parallel on first use, then kept until the tree changes.
    pub fn content_digests(&self) -> &[Option<Digest>] {
        self.digests.0.get_or_init(|| {
            self.entries
                .par_iter()
                .map(|(_, e)| match e {
                    Entry::File { content, .. } => Some(hash_content(content)),
                    Entry::Symlink { .. } => None,
                })
                .collect()
        })
    }

    /// The output hash: blake3 over [`Tree::canonical_encoding`].
    pub fn output_hash(&self) -> Digest {
        Digest::of(&self.canonical_encoding())
    }

    /// Every path, with files' content left empty: what [`Tree::validate`] needs to check a
    /// directory's shape without holding its content (see the store's streaming ingest).
    pub fn insert_placeholder(&mut self, path: RelPath) {
        self.insert_file(path, Bytes::new(), false);
    }

    /// Reads a directory from disk. Rejects devices, FIFOs and sockets.
    pub fn from_dir(root: &Path) -> Result<Self, TreeError> {
        let mut tree = Tree::new();
        for (rel, item) in list_dir(root)? {
            match item {
                DirItem::File {
                    path, executable, ..
                } => {
                    let content = std::fs::read(&path).map_err(|source| TreeError::Read {
                        path: path.display().to_string(),
                        source,
                    })?;
                    tree.insert_file(rel, content, executable);
                }
                DirItem::Symlink(target) => tree.insert_symlink(rel, target),
            }
        }
        tree.validate()?;
        Ok(tree)
    }

    /// Writes the tree under `root` (which must exist), with modes 0644/0755.
    pub fn write_to(&self, root: &Path) -> Result<(), TreeError> {
        use std::os::unix::fs::PermissionsExt;
        self.validate()?;
        for (path, entry) in &self.entries {
            let dest = root.join(path.as_str());
            let werr = |source| TreeError::Write {
                path: dest.display().to_string(),
                source,
            };
            if let Some(parent) = dest.parent() {
                std::fs::create_dir_all(parent).map_err(werr)?;
            }
            match entry {
                Entry::File {
                    content,
                    executable,
                } => {
                    std::fs::write(&dest, content).map_err(werr)?;
                    let mode = if *executable { 0o755 } else { 0o644 };
                    std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
                        .map_err(werr)?;
                }
                Entry::Symlink { target } => {
                    std::os::unix::fs::symlink(target, &dest).map_err(werr)?;
                }
            }
        }
        Ok(())
    }
}

impl FromIterator<(RelPath, Entry)> for Tree {
    fn from_iter<I: IntoIterator<Item = (RelPath, Entry)>>(iter: I) -> Self {
        Self {
            entries: iter.into_iter().collect(),
            digests: ContentDigests::default(),
        }
    }
}

/// One entry of a directory read as a tree, before any content is read.
#[derive(Debug)]
pub enum DirItem {
    /// A regular file.
    File {
        /// Where it is.
        path: std::path::PathBuf,
        /// Its size.
        size: u64,
        /// Whether any execute bit is set.
        executable: bool,
    },
    /// A symlink, with its target as written.
    Symlink(String),
}

/// The files and symlinks under `root`, sorted by path (the tree's order), reading metadata
/// only. Devices, FIFOs and sockets are refused; directories are implied by the paths.
pub fn list_dir(root: &Path) -> Result<Vec<(RelPath, DirItem)>, TreeError> {
    use std::os::unix::fs::PermissionsExt;
    let mut items = Vec::new();
    for item in walkdir::WalkDir::new(root).min_depth(1) {
        let item = item.map_err(|e| TreeError::Read {
            path: root.display().to_string(),
            source: e.into(),
        })?;
        let read_err = |source| TreeError::Read {
            path: item.path().display().to_string(),
            source,
        };
        let ft = item.file_type();
        if ft.is_dir() {
            continue;
        }
        let rel = item
            .path()
            .strip_prefix(root)
            .expect("walkdir stays under its root")
            .to_string_lossy()
            .into_owned();
        if ft.is_symlink() {
            let target = std::fs::read_link(item.path()).map_err(read_err)?;
            items.push((
                RelPath::new(rel)?,
                DirItem::Symlink(target.to_string_lossy().into_owned()),
            ));
        } else if ft.is_file() {
            let meta = item.metadata().map_err(|e| read_err(e.into()))?;
            items.push((
                RelPath::new(rel)?,
                DirItem::File {
                    path: item.path().to_owned(),
                    size: meta.len(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                },
            ));
        } else {
            return Err(TreeError::UnsupportedFileType(rel));
        }
    }
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(items)
}

/// The exports an artifact's [`EXPORTS_PATH`] file holds (none when it is not a string map).
pub fn parse_exports(bytes: &[u8]) -> BTreeMap<String, String> {
    serde_json::from_slice(bytes).unwrap_or_default()
}

/// The canonical encoding of a tree given entry by entry, in any order, without its content:
/// files by size and content digest. [`Tree::canonical_encoding`] is built with it, so a tree
/// streamed from disk or from an archive hashes exactly as the same tree in memory. It keeps
/// each entry's path and encoding (the count comes first in the encoding, and a stream does not
/// know it up front), never content, and sorts them by path when it finishes.
#[derive(Debug, Default)]
pub struct CanonicalHasher {
    entries: Vec<(RelPath, Vec<u8>)>,
}

impl CanonicalHasher {
    /// A hasher with no entries yet.
    pub fn new() -> Self {
        Self::default()
    }

    /// A regular file of `size` bytes whose content hashes to `content`.
    pub fn file(&mut self, path: &RelPath, executable: bool, size: u64, content: &Digest) {
        let mut e = Vec::with_capacity(2 + 8 + 32);
        e.extend_from_slice(&[1, u8::from(executable)]);
        e.extend_from_slice(&size.to_le_bytes());
        e.extend_from_slice(content.as_bytes());
        self.entries.push((path.clone(), e));
    }

    /// A symlink.
    pub fn symlink(&mut self, path: &RelPath, target: &str) {
        let mut e = vec![2];
        put_bytes(&mut e, target.as_bytes());
        self.entries.push((path.clone(), e));
    }

    /// The canonical encoding of the entries given (described in the module docs).
    pub fn encoding(mut self) -> Vec<u8> {
        self.entries.sort_by(|a, b| a.0.cmp(&b.0));
        let size: usize = self
            .entries
            .iter()
            .map(|(p, e)| 8 + p.as_str().len() + e.len())
            .sum();
        let mut out = Vec::with_capacity(TREE_ENCODING.len() + 8 + size);
        out.extend_from_slice(TREE_ENCODING);
        out.extend_from_slice(&(self.entries.len() as u64).to_le_bytes());
        for (path, e) in &self.entries {
            put_bytes(&mut out, path.as_str().as_bytes());
            out.extend_from_slice(e);
        }
        out
    }

    /// The output hash: blake3 of [`CanonicalHasher::encoding`].
    pub fn finish(self) -> Digest {
        Digest::of(&self.encoding())
    }
}

fn hash_content(content: &[u8]) -> Digest {
    if content.len() >= 1 << 20 {
        let mut h = blake3::Hasher::new();
        h.update_rayon(content);
        h.finalize().into()
    } else {
        Digest::of(content)
    }
}

fn put_bytes(out: &mut Vec<u8>, b: &[u8]) {
    out.extend_from_slice(&(b.len() as u64).to_le_bytes());
    out.extend_from_slice(b);
}

/// Whether `target`, read relative to the directory holding `link`, stays inside the tree root.
pub fn symlink_stays_inside(link: &RelPath, target: &str) -> bool {
    if target.is_empty() || target.starts_with('/') || target.contains('\0') {
        return false;
    }
    let mut depth: Vec<&str> = link.components().collect();
    depth.pop();
    for c in target.split('/') {
        match c {
            "" | "." => {}
            ".." => {
                if depth.pop().is_none() {
                    return false;
                }
            }
            other => depth.push(other),
        }
    }
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_canonical_hasher_agrees_with_the_tree() {
        let mut t = Tree::new();
        t.insert_file(RelPath::new("a.txt").unwrap(), b"a".to_vec(), false);
        t.insert_file(RelPath::new("a/b").unwrap(), vec![7u8; 3 << 20], true);
        t.insert_symlink(RelPath::new("l").unwrap(), "a.txt");
        let hashed = |entries: Vec<(&RelPath, &Entry)>| {
            let mut h = CanonicalHasher::new();
            for (path, entry) in entries {
                match entry {
                    Entry::File {
                        content,
                        executable,
                    } => h.file(
                        path,
                        *executable,
                        content.len() as u64,
                        &Digest::of(content),
                    ),
                    Entry::Symlink { target } => h.symlink(path, target),
                }
            }
            h.finish()
        };
        assert_eq!(hashed(t.iter().collect()), t.output_hash());
        assert_eq!(CanonicalHasher::new().finish(), Tree::new().output_hash());
        // Entries in another order (an archive not made by kiln) hash the same.
        assert_eq!(
            hashed(t.iter().collect::<Vec<_>>().into_iter().rev().collect()),
            t.output_hash()
        );
    }

    #[test]
    fn symlink_chains_are_resolved_whole() {
        let mut t = Tree::new();
        t.insert_file(RelPath::new("a/f").unwrap(), b"x".to_vec(), false);
        t.insert_symlink(RelPath::new("a/d").unwrap(), "..");
        t.insert_symlink(RelPath::new("a/ok").unwrap(), "d/a/f");
        assert!(t.validate().is_ok());
        // Each text stays inside on its own; through `a/d` the chain leaves the tree.
        t.insert_symlink(RelPath::new("a/x").unwrap(), "d/../..");
        assert!(matches!(
            t.validate(),
            Err(TreeError::EscapingSymlink { .. })
        ));
        // A loop is refused, not followed forever.
        let mut l = Tree::new();
        l.insert_symlink(RelPath::new("p").unwrap(), "q/x");
        l.insert_symlink(RelPath::new("q").unwrap(), "p");
        assert!(l.validate().is_err());
    }

    use crate::fixtures::{rel as p, sample_tree as sample};

    #[test]
    fn golden_tree_hash() {
        // Pins kiln-tree-v1. If this fails, the output hash encoding changed: bump the version.
        assert_eq!(
            sample().output_hash().to_string(),
            "blake3:cc2627c15f61ead40f6c0d750f2d6230b6426a44ef28667c216af4ac031ebf0d"
        );
        assert_eq!(
            Tree::new().output_hash().to_string(),
            "blake3:d339380eb837644aa36130f9b341ee84434639e5272d42f4423493080270b6a5"
        );
    }

    #[test]
    fn insertion_order_does_not_matter() {
        let mut t = Tree::new();
        t.insert_symlink(p("latest"), "objects/a.yaml");
        t.insert_file(p("bin/run"), b"#!/bin/sh\n".to_vec(), true);
        t.insert_file(p("objects/a.yaml"), b"kind: A\n".to_vec(), false);
        assert_eq!(t.output_hash(), sample().output_hash());
    }

    #[test]
    fn every_field_changes_the_hash() {
        let base = sample().output_hash();
        let mut t = sample();
        t.insert_file(p("bin/run"), b"#!/bin/sh\n".to_vec(), false);
        assert_ne!(t.output_hash(), base, "executable bit");
        let mut t = sample();
        t.insert_file(p("objects/a.yaml"), b"kind: B\n".to_vec(), false);
        assert_ne!(t.output_hash(), base, "content");
        let mut t = sample();
        t.insert_symlink(p("latest"), "bin/run");
        assert_ne!(t.output_hash(), base, "symlink target");
        let mut t = sample();
        t.insert_file(p("latest"), b"objects/a.yaml".to_vec(), false);
        assert_ne!(t.output_hash(), base, "entry type");
    }

    #[test]
    fn kept_content_digests_are_forgotten_when_the_tree_changes() {
        let mut t = sample();
        let before = t.output_hash();
        assert_eq!(t.content_digests().len(), t.len());
        t.insert_file(p("objects/a.yaml"), b"kind: B\n".to_vec(), false);
        let mut fresh = sample();
        fresh.insert_file(p("objects/a.yaml"), b"kind: B\n".to_vec(), false);
        assert_ne!(t.output_hash(), before);
        assert_eq!(t.output_hash(), fresh.output_hash());
        assert_eq!(t.content_digests()[0], fresh.content_digests()[0]);
        t.set_exports(&BTreeMap::new());
        t.insert_symlink(p("latest"), "bin/run");
        fresh.insert_symlink(p("latest"), "bin/run");
        assert_eq!(t.output_hash(), fresh.output_hash());
        assert_eq!(
            t, fresh,
            "the digests kept are no part of a tree's equality"
        );
    }

    #[test]
    fn validate_rejects_escapes_and_conflicts() {
        let mut t = Tree::new();
        t.insert_symlink(p("a/link"), "../../etc/passwd");
        assert!(matches!(
            t.validate(),
            Err(TreeError::EscapingSymlink { .. })
        ));
        let mut t = Tree::new();
        t.insert_symlink(p("a/link"), "/etc/passwd");
        assert!(t.validate().is_err());
        let mut t = Tree::new();
        t.insert_symlink(p("a/link"), "../b");
        assert!(t.validate().is_ok());
        let mut t = Tree::new();
        t.insert_file(p("a"), b"x".to_vec(), false);
        t.insert_file(p("a/b"), b"y".to_vec(), false);
        assert!(matches!(t.validate(), Err(TreeError::FileDirConflict(_))));
    }

    #[test]
    fn exports_round_trip() {
        let mut t = Tree::new();
        let mut ex = BTreeMap::new();
        ex.insert("name".to_owned(), "api-config-5f2a".to_owned());
        t.set_exports(&ex);
        assert_eq!(t.exports(), Exports::from(ex));
    }

    #[test]
    fn dir_round_trip() {
        let dir = tempfile::tempdir().unwrap();
        sample().write_to(dir.path()).unwrap();
        let back = Tree::from_dir(dir.path()).unwrap();
        assert_eq!(back, sample());
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        fn entries() -> impl Strategy<Value = Vec<(String, Vec<u8>, bool)>> {
            proptest::collection::vec(
                (
                    // Files end in `.f` and directories do not, so no file is another's directory.
                    "[a-d]{1,3}(/[a-d]{1,3}){0,2}\\.f",
                    proptest::collection::vec(any::<u8>(), 0..64),
                    any::<bool>(),
                ),
                0..24,
            )
        }

        /// A tree of the generated files; later entries replace earlier ones at the same path.
        fn build(items: &[(String, Vec<u8>, bool)]) -> Tree {
            let mut t = Tree::new();
            for (path, c, x) in items {
                t.insert_file(p(path), c.clone(), *x);
            }
            t
        }

        proptest! {
            /// Every kind of change to a tree moves its hash: a content byte, the executable
            /// bit, a path, a symlink's target. (An encoding that dropped or merged any of
            /// them, say the mode, or a path and content without length prefixes, fails here.)
            #[test]
            fn every_change_moves_the_hash(
                list in entries(),
                pick in any::<prop::sample::Index>(),
                byte in any::<u8>(),
                which in 0u8..4,
            ) {
                prop_assume!(!list.is_empty());
                let t = build(&list);
                let before = t.output_hash();
                let path = p(&list[pick.index(list.len())].0);
                let Some(Entry::File { content, executable }) = t.get(path.as_str()).cloned() else {
                    unreachable!("generated entries are files")
                };
                let mut changed = t.clone();
                match which {
                    0 => {
                        let mut c = content.to_vec();
                        c.push(byte);
                        changed.insert_file(path, c, executable);
                    }
                    1 => changed.insert_file(path, content, !executable),
                    2 => {
                        changed.entries.remove(&path);
                        let moved = p(&format!("{}z", path.as_str()));
                        prop_assume!(t.get(moved.as_str()).is_none());
                        changed.insert_file(moved, content, executable);
                    }
                    _ => changed.insert_symlink(path, String::from_utf8_lossy(&content).into_owned()),
                }
                prop_assert_ne!(before, changed.output_hash());
            }

            /// A tree written to disk and read back is the same tree (modes and links kept).
            #[test]
            fn disk_round_trip(list in entries()) {
                let mut t = build(&list);
                t.insert_symlink(p("link"), "a.f");
                let dir = tempfile::tempdir().unwrap();
                t.write_to(dir.path()).unwrap();
                prop_assert_eq!(Tree::from_dir(dir.path()).unwrap(), t);
            }

            /// Two trees hash alike exactly when they are equal.
            #[test]
            fn hash_distinguishes_trees(a in entries(), b in entries()) {
                let (ta, tb) = (build(&a), build(&b));
                prop_assert_eq!(ta == tb, ta.output_hash() == tb.output_hash());
            }
        }
    }
}
