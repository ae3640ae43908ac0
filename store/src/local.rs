//! [`LocalStore`]: the content-addressed store on the local file system.
//!
//! ```text
//! $KILN_STORE/
//!   FORMAT                        "kiln-store-v1"
//!   store.lock                    shared by builds, exclusive for gc
//!   objects/ab/<hex>.tar.zst      artifacts, keyed by output hash
//!   actions/ab/<hex>.json         action cache: derivation hash -> OutputRecord, plus the
//!                                 canonical derivation record itself (for `kiln why`)
//!   roots/<project-key>/<env>.json GC roots: the last successful build of a project and env
//!   trees/<hex>/                  unpacked, read-only views for `kiln store path`
//!   locks/<abc>.lock              build locks, striped by the first 3 hex digits of the
//!                                 derivation hash (4096 reusable files, not one per build)
//!   quarantine/                   entries `verify` found corrupt
//!   tmp/                          temp files, renamed into place
//! ```
//!
//! Every entry is written to `tmp/` and renamed into place, so a crash never leaves a partial
//! entry visible. Durability against power loss is batched: one `syncfs` per build
//! ([`LocalStore::sync`]), not one fsync per entry. An entry lost or torn by a power cut reads
//! as corrupt, which is a cache miss, and is rebuilt.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_core::{Digest, Tree};
use serde::{Deserialize, Serialize};

use crate::archive::{self, UnpackLimits};
use crate::error::{Result, StoreError};

/// The store format this kiln reads and writes.
pub const STORE_FORMAT: &str = "kiln-store-v1";

/// What the action cache records for a derivation.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct OutputRecord {
    /// The output hash.
    pub output: Digest,
    /// Values the artifact exports to dependents (a copy of its `.kiln/exports.json`).
    #[serde(default)]
    pub exports: BTreeMap<String, String>,
    /// Number of entries in the tree.
    pub entries: u64,
    /// Total size of the files, in bytes.
    pub size: u64,
}

/// One rule's entry in a GC root.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct RootEntry {
    /// The rule's kind.
    pub kind: String,
    /// Its derivation hash.
    pub derivation: Digest,
    /// Its output.
    #[serde(flatten)]
    pub output: OutputRecord,
}

/// A GC root: the last successful build of one project in one environment.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Root {
    /// Root format, `1`.
    pub format_version: u32,
    /// Project name.
    pub project: String,
    /// Absolute project directory, so stale roots can be found.
    pub project_dir: PathBuf,
    /// Environment name (`-` when the project has none).
    pub env: String,
    /// Every rule of the build.
    pub rules: BTreeMap<String, RootEntry>,
}

/// The local content-addressed store. Holding one keeps a shared lock on the store, so `gc`
/// waits until no build is using it.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    _lock: File,
}

/// An exclusive lock on one derivation, held while it is built.
#[derive(Debug)]
pub struct DerivationLock {
    _file: File,
}

fn shard(dir: &Path, d: &Digest, ext: &str) -> PathBuf {
    let hex = d.hex();
    dir.join(&hex[..2]).join(format!("{hex}{ext}"))
}

impl LocalStore {
    /// `$KILN_STORE`, else `$XDG_DATA_HOME/kiln/store`, else `~/.local/share/kiln/store`.
    pub fn default_location() -> PathBuf {
        if let Some(p) = std::env::var_os("KILN_STORE").filter(|p| !p.is_empty()) {
            return PathBuf::from(p);
        }
        if let Some(p) = std::env::var_os("XDG_DATA_HOME").filter(|p| !p.is_empty()) {
            return PathBuf::from(p).join("kiln/store");
        }
        let home = std::env::var_os("HOME").map_or_else(|| PathBuf::from("/"), PathBuf::from);
        home.join(".local/share/kiln/store")
    }

    /// Opens (creating if needed) the store at `root` for building: takes a shared lock.
    pub fn open(root: &Path) -> Result<Self> {
        Self::open_with(root, false)
    }

    /// Opens the store for maintenance (gc): takes the exclusive lock, waiting for builds.
    pub fn open_exclusive(root: &Path) -> Result<Self> {
        Self::open_with(root, true)
    }

    fn open_with(root: &Path, exclusive: bool) -> Result<Self> {
        for sub in [
            "objects",
            "actions",
            "roots",
            "trees",
            "locks",
            "quarantine",
            "tmp",
        ] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(StoreError::io("create directory", &d))?;
        }
        let format = root.join("FORMAT");
        match fs::read_to_string(&format) {
            Ok(found) if found.trim() == STORE_FORMAT => {}
            Ok(found) => {
                return Err(StoreError::Version {
                    path: root.to_owned(),
                    found: found.trim().to_owned(),
                    expected: STORE_FORMAT,
                })
            }
            Err(_) => {
                // A new store: make the 256 shards of each sharded directory once, so that
                // writes never need a mkdir.
                for sub in ["objects", "actions"] {
                    for b in 0..=255u8 {
                        let d = root.join(sub).join(format!("{b:02x}"));
                        fs::create_dir_all(&d).map_err(StoreError::io("create directory", &d))?;
                    }
                }
                write_atomic(root, &format, format!("{STORE_FORMAT}\n").as_bytes())?
            }
        }
        let lock_path = root.join("store.lock");
        let lock = match File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
        {
            Ok(f) => f,
            // A read-only store (a read-only mount, a shared cache directory) still serves
            // reads: `store ls`, `store cat`, a no-op build, `plan`. flock works on a read-only
            // descriptor; any write then fails as the store error it is.
            Err(e) if is_read_only(&e) && !exclusive => {
                File::open(&lock_path).map_err(StoreError::io("open", &lock_path))?
            }
            Err(e) => return Err(StoreError::io("open", &lock_path)(e)),
        };
        if exclusive {
            lock.lock()
        } else {
            lock.lock_shared()
        }
        .map_err(StoreError::io("lock", &lock_path))?;
        Ok(Self {
            root: root.to_owned(),
            _lock: lock,
        })
    }

    /// The store's directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    pub(crate) fn dir(&self, sub: &str) -> PathBuf {
        self.root.join(sub)
    }

    /// Path of the archive of output `out`.
    pub fn object_path(&self, out: &Digest) -> PathBuf {
        shard(&self.dir("objects"), out, ".tar.zst")
    }

    pub(crate) fn action_path(&self, drv: &Digest) -> PathBuf {
        shard(&self.dir("actions"), drv, ".json")
    }

    /// Takes the build lock of derivation `drv`, waiting while another process holds it.
    pub fn lock_derivation(&self, drv: &Digest) -> Result<DerivationLock> {
        // Striped: two derivations sharing a stripe (1 in 4096) build one after the other, which
        // is still correct, and no build creates a new inode for its lock.
        let path = self.dir("locks").join(format!("{}.lock", &drv.hex()[..3]));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .map_err(StoreError::io("open", &path))?;
        file.lock().map_err(StoreError::io("lock", &path))?;
        Ok(DerivationLock { _file: file })
    }

    /// The action cache entry of `drv` when its object exists too (what a build can use):
    /// `Ok(None)` on a miss, or when the object is gone (it will be rebuilt); an entry that
    /// cannot be read or parsed is an error the caller decides about.
    pub fn usable_output(&self, drv: &Digest) -> Result<Option<OutputRecord>> {
        Ok(self
            .read_action(drv)?
            .map(|(record, _)| record)
            .filter(|r| self.has_object(&r.output)))
    }

    /// Whether the archive of `out` exists.
    pub fn has_object(&self, out: &Digest) -> bool {
        self.object_path(out).is_file()
    }

    /// Stores a built artifact: its archive (unless present), then the action cache entry
    /// with the derivation it was built from. Each file appears atomically.
    pub fn put(&self, drv: &Digest, derivation: &[u8], tree: &Tree) -> Result<OutputRecord> {
        let output = self.put_object(tree)?;
        let record = OutputRecord {
            output,
            exports: tree.exports(),
            entries: tree.len() as u64,
            size: tree.content_size(),
        };
        self.write_action(drv, derivation, &record)?;
        Ok(record)
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

    /// One file per action: the record, and the derivation it was built from.
    pub(crate) fn write_action(
        &self,
        drv: &Digest,
        derivation: &[u8],
        record: &OutputRecord,
    ) -> Result<()> {
        let mut json = serde_json::to_vec(record).expect("record serializes");
        json.pop(); // the closing brace
        json.extend_from_slice(b",\"derivation\":");
        json.extend_from_slice(derivation);
        json.push(b'}');
        write_atomic(&self.root, &self.action_path(drv), &json)
    }

    /// The action entry of `drv`: its record and derivation; `Ok(None)` when absent.
    pub(crate) fn read_action(&self, drv: &Digest) -> Result<Option<(OutputRecord, Vec<u8>)>> {
        let path = self.action_path(drv);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(StoreError::io("read", &path)(e)),
        };
        let record: OutputRecord =
            serde_json::from_slice(&bytes).map_err(|source| StoreError::Record {
                path: path.clone(),
                source,
            })?;
        let derivation = derivation_of_action(&bytes).ok_or_else(|| StoreError::Corrupt {
            path: path.clone(),
            reason: "action entry has no derivation record".to_owned(),
        })?;
        if Digest::of(&derivation) != *drv {
            return Err(StoreError::Corrupt {
                path,
                reason: "the derivation record does not hash to the entry's name".to_owned(),
            });
        }
        Ok(Some((record, derivation)))
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

    /// The canonical derivation record of `drv`.
    pub fn derivation(&self, drv: &Digest) -> Result<Vec<u8>> {
        let p = self.action_path(drv);
        let bytes = fs::read(&p).map_err(StoreError::io("read", &p))?;
        derivation_of_action(&bytes).ok_or_else(|| StoreError::Corrupt {
            path: p,
            reason: "action entry has no derivation record".to_owned(),
        })
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

    /// The key under which a project's roots are kept: its name and a hash of its directory.
    pub fn project_key(name: &str, dir: &Path) -> String {
        let safe: String = name
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '_' {
                    c
                } else {
                    '_'
                }
            })
            .collect();
        format!(
            "{safe}-{}",
            &Digest::of(dir.as_os_str().as_encoded_bytes()).hex()[..12]
        )
    }

    fn root_path(&self, project_key: &str, env: &str) -> PathBuf {
        self.dir("roots")
            .join(project_key)
            .join(format!("{env}.json"))
    }

    /// The GC root of a project and environment.
    pub fn read_root(&self, project_key: &str, env: &str) -> Option<Root> {
        Self::peek_root(&self.root, project_key, env)
    }

    /// The project key a root is stored under.
    pub fn root_key_of(&self, root: &Root) -> String {
        Self::project_key(&root.project, &root.project_dir)
    }

    /// Reads a GC root without opening (or creating) the store. A root that cannot be parsed
    /// or fails its checksum is not trusted: `None` (the build then asks the action cache,
    /// which checks every object, and writes a fresh root).
    pub fn peek_root(store_root: &Path, project_key: &str, env: &str) -> Option<Root> {
        let path = store_root
            .join("roots")
            .join(project_key)
            .join(format!("{env}.json"));
        let bytes = fs::read(&path).ok()?;
        match parse_root(&bytes) {
            Ok(root) => Some(root),
            Err(reason) => {
                tracing::warn!(root = %path.display(), %reason, "ignoring a GC root");
                None
            }
        }
    }

    /// Replaces the GC root of a project and environment.
    pub fn write_root(&self, project_key: &str, root: &Root) -> Result<()> {
        let path = self.root_path(project_key, &root.env);
        write_atomic(&self.root, &path, &encode_root(root))
    }

    /// Where the object index of a project's environment lives (see the CLI's
    /// `build::conflicts`): which objects each rule's artifact holds.
    pub fn object_index_path(&self, project_key: &str, env: &str) -> PathBuf {
        self.dir("roots")
            .join(project_key)
            .join(format!("{env}.objects"))
    }

    /// Replaces a file under `roots/` (an object index) atomically.
    pub fn write_root_file(&self, path: &Path, bytes: &[u8]) -> Result<()> {
        write_atomic(&self.root, path, bytes)
    }

    /// Where the source stat cache of a project lives (see the CLI's `source_cache`).
    pub fn source_cache_path(store_root: &Path, project_key: &str) -> PathBuf {
        store_root
            .join("roots")
            .join(project_key)
            .join("sources.cache")
    }

    /// Replaces the source stat cache of a project.
    pub fn write_source_cache(&self, project_key: &str, bytes: &[u8]) -> Result<()> {
        write_atomic(
            &self.root,
            &Self::source_cache_path(&self.root, project_key),
            bytes,
        )
    }

    /// Every GC root, with its path.
    pub fn roots(&self) -> Result<Vec<(PathBuf, Root)>> {
        let mut out = Vec::new();
        for item in walkdir::WalkDir::new(self.dir("roots"))
            .min_depth(2)
            .max_depth(2)
            .sort_by_file_name()
        {
            let item = item.map_err(|e| StoreError::io("list", self.dir("roots"))(e.into()))?;
            if item.path().extension().is_none_or(|e| e != "json") {
                continue;
            }
            let bytes = fs::read(item.path()).map_err(StoreError::io("read", item.path()))?;
            let root = parse_root(&bytes).map_err(|reason| StoreError::Corrupt {
                path: item.path().to_owned(),
                reason,
            })?;
            out.push((item.path().to_owned(), root));
        }
        Ok(out)
    }

    /// Makes everything written so far durable: one `syncfs` of the store's file system.
    pub fn sync(&self) -> Result<()> {
        let dir = File::open(&self.root).map_err(StoreError::io("open", &self.root))?;
        rustix::fs::syncfs(&dir).map_err(|e| StoreError::io("sync", &self.root)(e.into()))
    }
}

const ROOT_CHECKSUM_KEY: &[u8] = b",\"checksum\":\"";

/// A root's bytes: its JSON, then a `checksum` member holding blake3 of everything before it,
/// so a torn, truncated or hand-edited root is detected when read.
pub(crate) fn encode_root(root: &Root) -> Vec<u8> {
    let mut json = serde_json::to_vec(root).expect("root serializes");
    json.pop(); // the closing brace
    let checksum = Digest::of(&json);
    json.extend_from_slice(ROOT_CHECKSUM_KEY);
    json.extend_from_slice(checksum.to_string().as_bytes());
    json.extend_from_slice(b"\"}");
    json
}

/// Parses a root written by [`encode_root`], checking its checksum.
pub(crate) fn parse_root(bytes: &[u8]) -> std::result::Result<Root, String> {
    // `,"checksum":"blake3:<64 hex>"}` ends the file.
    let tail = ROOT_CHECKSUM_KEY.len() + "blake3:".len() + 64 + 2;
    if bytes.len() < tail || !bytes[bytes.len() - tail..].starts_with(ROOT_CHECKSUM_KEY) {
        return Err("the root has no checksum".to_owned());
    }
    let (body, rest) = bytes.split_at(bytes.len() - tail);
    let recorded = std::str::from_utf8(&rest[ROOT_CHECKSUM_KEY.len()..rest.len() - 2])
        .ok()
        .and_then(|s| s.parse::<Digest>().ok())
        .ok_or("the root's checksum is unreadable")?;
    if Digest::of(body) != recorded {
        return Err("the root does not match its checksum".to_owned());
    }
    serde_json::from_slice(bytes).map_err(|e| format!("unreadable root: {e}"))
}

/// The digest an entry's file is named after (`<hex>.tar.zst`, `<hex>.json`, `<hex>/`).
pub(crate) fn digest_of_file_name(path: &Path) -> Option<Digest> {
    let name = path.file_name()?.to_str()?;
    Digest::from_hex(name.split('.').next()?).ok()
}

fn is_read_only(e: &std::io::Error) -> bool {
    e.kind() == std::io::ErrorKind::ReadOnlyFilesystem
        || e.kind() == std::io::ErrorKind::PermissionDenied
}

/// The canonical derivation bytes kept in an action cache entry.
pub(crate) fn derivation_of_action(bytes: &[u8]) -> Option<Vec<u8>> {
    let v: serde_json::Value = serde_json::from_slice(bytes).ok()?;
    let drv = v.get("derivation")?;
    Some(kiln_core::canonical::to_canonical_json(drv))
}

/// This thread's temp directory under the store's `tmp/`. Threads (and processes) do not share
/// one: every create and rename locks the directory, and one shared `tmp/` serializes builders.
fn thread_tmp_dir(store_root: &Path) -> Result<PathBuf> {
    use std::cell::RefCell;
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    thread_local! {
        static DIR: RefCell<Option<(PathBuf, PathBuf)>> = const { RefCell::new(None) };
    }
    DIR.with(|d| {
        let mut d = d.borrow_mut();
        if let Some((root, dir)) = d.as_ref() {
            if root == store_root && dir.is_dir() {
                return Ok(dir.clone());
            }
        }
        let name = format!(
            "{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        );
        let dir = store_root.join("tmp").join(name);
        fs::create_dir_all(&dir).map_err(StoreError::io("create directory", &dir))?;
        *d = Some((store_root.to_owned(), dir.clone()));
        Ok(dir)
    })
}

/// Writes `bytes` to `dest` through a temp file in the store's `tmp/`, then renames it, so a
/// crash never leaves a partial `dest`. No fsync here: durability is one `syncfs` per build.
pub(crate) fn write_atomic(store_root: &Path, dest: &Path, bytes: &[u8]) -> Result<()> {
    let tmp_dir = thread_tmp_dir(store_root)?;
    let mut tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
        .map_err(StoreError::io("create temp file in", &tmp_dir))?;
    tmp.write_all(bytes)
        .map_err(StoreError::io("write", tmp.path().to_owned()))?;
    match tmp.persist(dest) {
        Ok(_) => Ok(()),
        Err(e) if e.error.kind() == std::io::ErrorKind::NotFound => {
            // The destination directory is missing (a new root's project directory, or a shard
            // removed by hand): make it and retry once.
            let parent = dest.parent().expect("store paths have a parent");
            fs::create_dir_all(parent).map_err(StoreError::io("create directory", parent))?;
            e.file
                .persist(dest)
                .map_err(|e| StoreError::io("rename into", dest)(e.error))?;
            Ok(())
        }
        Err(e) => Err(StoreError::io("rename into", dest)(e.error)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::RelPath;

    fn tree(s: &str) -> Tree {
        let mut t = Tree::new();
        t.insert_file(
            RelPath::new("a.yaml").unwrap(),
            s.as_bytes().to_vec(),
            false,
        );
        t
    }

    fn common_files(dir: &Path) -> usize {
        walkdir::WalkDir::new(dir)
            .into_iter()
            .filter_map(std::result::Result::ok)
            .filter(|e| e.file_type().is_file())
            .count()
    }

    #[test]
    fn put_lookup_load() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        let drv = Digest::of(b"{}");
        assert!(s.usable_output(&drv).unwrap().is_none());
        let rec = s.put(&drv, b"{}", &tree("x")).unwrap();
        assert_eq!(s.usable_output(&drv).unwrap().unwrap(), rec);
        assert_eq!(s.load(&rec.output).unwrap(), tree("x"));
        assert_eq!(s.derivation(&drv).unwrap(), b"{}");
        assert!(s.derivation(&Digest::of(b"other")).is_err());
        let dir = s.materialize(&rec.output).unwrap();
        assert_eq!(fs::read_to_string(dir.join("a.yaml")).unwrap(), "x");
        assert_eq!(common_files(&d.path().join("tmp")), 0, "no temp files left");
    }

    #[test]
    fn corrupt_object_is_an_error_and_quarantine_makes_it_a_miss() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        let drv = Digest::of(b"{}");
        let rec = s.put(&drv, b"{}", &tree("hello world")).unwrap();
        let obj = s.object_path(&rec.output);
        let mut bytes = fs::read(&obj).unwrap();
        let mid = bytes.len() / 2;
        bytes[mid] ^= 0xff;
        fs::write(&obj, bytes).unwrap();
        assert!(s.load(&rec.output).is_err());
        s.quarantine(&rec.output).unwrap();
        assert!(s.usable_output(&drv).unwrap().is_none());
    }

    #[test]
    fn a_broken_action_entry_is_an_error_not_a_miss() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(d.path()).unwrap();
        let drv = Digest::of(b"{}");
        s.put(&drv, b"{}", &tree("x")).unwrap();
        fs::write(s.action_path(&drv), b"{not json").unwrap();
        assert!(matches!(
            s.usable_output(&drv),
            Err(StoreError::Record { .. })
        ));
        // An entry copied under another derivation's name is caught by its derivation record.
        let other = Digest::of(b"[]");
        s.put(&drv, b"{}", &tree("x")).unwrap();
        fs::copy(s.action_path(&drv), s.action_path(&other)).unwrap();
        assert!(matches!(
            s.usable_output(&other),
            Err(StoreError::Corrupt { .. })
        ));
    }

    #[test]
    fn refuses_other_formats() {
        let d = tempfile::tempdir().unwrap();
        fs::write(d.path().join("FORMAT"), "kiln-store-v0\n").unwrap();
        assert!(matches!(
            LocalStore::open(d.path()),
            Err(StoreError::Version { .. })
        ));
    }
}
