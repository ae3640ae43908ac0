//! [`LocalStore`]: the content-addressed store on the local file system.
//!
//! ```text
//! $KILN_STORE/
//!   FORMAT                        "kiln-store-v2" (a v1 store is upgraded when opened)
//!   store.lock                    shared by builds, exclusive for gc
//!   objects/ab/<hex>.tar.zst      artifacts, keyed by output hash; the 256 shard directories
//!                                 are also the build locks' stripes (flock, no lock files)
//!   actions/<hex>.pack            packs of small entries (see `packs`): the action cache
//!                                 (derivation hash -> OutputRecord, plus the canonical
//!                                 derivation record itself for `kiln why` and, for outputs
//!                                 built here, who built them) and the text sources of built
//!                                 rules (`kiln why`)
//!   roots/<project-key>/<env>.root GC roots: the last successful build of a project and env
//!                                 (binary, checksummed; `kiln store ls --json` shows them)
//!   roots/<project-key>/<env>.previous  the root it replaced (`kiln why`, `kiln diff`)
//!   trees/<hex>/                  unpacked, read-only views for `kiln store path`
//!   quarantine/                   entries `verify` found corrupt
//!   fingerprints/<hex>.fp         per build invocation: what its last successful build read
//!                                 and produced (the no-op fast path; gc clears them)
//!   tmp/                          temp files, renamed into place
//! ```
//!
//! Every file is written to `tmp/` and renamed into place, so a crash never leaves a partial
//! file visible. Durability against power loss is batched: one `syncfs` per build
//! ([`LocalStore::sync`]), not one fsync per entry. An entry lost or torn by a power cut reads
//! as corrupt, which is a cache miss, and is rebuilt.

use std::fs::{self, File};
use std::io::Write;
use std::path::{Path, PathBuf};

use kiln_core::Digest;

use crate::error::{Result, StoreError};

mod actions;
pub(crate) mod objects;
pub(crate) mod packs;
mod roots;
mod upgrade;

pub(crate) use actions::derivation_of_action;
pub use actions::{BuildInfo, DerivationLock, OutputRecord};
pub(crate) use roots::{encode_root, parse_root, ROOT_EXT};
pub use roots::{Root, RootEntry};

/// The store format this kiln reads and writes.
pub const STORE_FORMAT: &str = "kiln-store-v2";
/// The format before packs and binary roots; opening one upgrades it.
const STORE_FORMAT_V1: &str = "kiln-store-v1";

/// The local content-addressed store. Holding one keeps a shared lock on the store, so `gc`
/// waits until no build is using it.
#[derive(Debug)]
pub struct LocalStore {
    root: PathBuf,
    /// Dropped before the lock: writing what is pending needs the store.
    packs: packs::Packs,
    _lock: File,
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
            "quarantine",
            "tmp",
            "fingerprints",
        ] {
            let d = root.join(sub);
            fs::create_dir_all(&d).map_err(StoreError::io("create directory", &d))?;
        }
        let format = root.join("FORMAT");
        let mut upgrade = false;
        match fs::read_to_string(&format) {
            Ok(found) if found.trim() == STORE_FORMAT => {}
            Ok(found) if found.trim() == STORE_FORMAT_V1 => upgrade = true,
            Ok(found) => {
                return Err(StoreError::Version {
                    path: root.to_owned(),
                    found: found.trim().to_owned(),
                    expected: STORE_FORMAT,
                })
            }
            Err(_) => {
                // A new store: make the 256 object shards once, so that writes never need a
                // mkdir (and the build locks' stripes exist).
                for b in 0..=255u8 {
                    let d = root.join("objects").join(format!("{b:02x}"));
                    fs::create_dir_all(&d).map_err(StoreError::io("create directory", &d))?;
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
            Err(e) if is_read_only(&e) && !exclusive && !upgrade => {
                File::open(&lock_path).map_err(StoreError::io("open", &lock_path))?
            }
            Err(e) => return Err(StoreError::io("open", &lock_path)(e)),
        };
        if exclusive || upgrade {
            lock.lock()
        } else {
            lock.lock_shared()
        }
        .map_err(StoreError::io("lock", &lock_path))?;
        if upgrade {
            // Another process may have upgraded it while this one waited.
            let found = fs::read_to_string(&format).unwrap_or_default();
            if found.trim() == STORE_FORMAT_V1 {
                upgrade::from_v1(root)?;
                write_atomic(root, &format, format!("{STORE_FORMAT}\n").as_bytes())?;
            }
            if !exclusive {
                lock.lock_shared()
                    .map_err(StoreError::io("lock", &lock_path))?;
            }
        }
        Ok(Self {
            root: root.to_owned(),
            packs: packs::Packs::new(root),
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

    pub(crate) fn packs(&self) -> &packs::Packs {
        &self.packs
    }

    /// An action entry's raw bytes, if there is one.
    pub(crate) fn action_bytes(&self, drv: &Digest) -> Option<Vec<u8>> {
        self.packs.get((packs::Kind::Action, *drv)).ok().flatten()
    }

    /// The paths of every pack and every entry in them (latest wins on duplicates), read
    /// fresh, after writing what is pending. Packs that cannot be read are left out.
    pub(crate) fn pack_entries(&self) -> Result<(Vec<PathBuf>, packs::Entries)> {
        self.packs.flush()?;
        let mut paths = Vec::new();
        let mut entries = std::collections::HashMap::new();
        for pack in self.packs.all_packs().into_iter().flatten() {
            for (key, bytes) in pack.read_all() {
                let bytes = bytes.map_err(StoreError::io("read", &pack.path))?;
                entries.insert(key, bytes);
            }
            paths.push(pack.path.clone());
        }
        Ok((paths, entries.into_iter().collect()))
    }

    /// Replaces the packs `old` by one holding `entries`.
    pub(crate) fn replace_packs(&self, old: &[PathBuf], entries: packs::Entries) -> Result<()> {
        self.packs.replace(old, entries)
    }

    /// Writes the pending small entries (action cache, sources) as a pack. They are also
    /// written every few hundred milliseconds, and when the store is dropped.
    pub fn flush(&self) -> Result<()> {
        self.packs.flush()
    }

    /// Makes everything written so far durable: the pending entries, then one `syncfs` of the
    /// store's file system.
    pub fn sync(&self) -> Result<()> {
        self.flush()?;
        let dir = File::open(&self.root).map_err(StoreError::io("open", &self.root))?;
        rustix::fs::syncfs(&dir).map_err(|e| StoreError::io("sync", &self.root)(e.into()))
    }
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
            // Not checked with a stat: a directory removed meanwhile fails the temp file's
            // creation, and `temp_file` makes it again.
            if root == store_root {
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
    let mut tmp = temp_file(store_root)?;
    tmp.write_all(bytes)
        .map_err(StoreError::io("write", tmp.path().to_owned()))?;
    persist(tmp, dest)
}

/// A new temp file in this thread's directory under the store's `tmp/` (made again if it was
/// removed meanwhile, by gc of a crashed build's `tmp/`).
pub(crate) fn temp_file(store_root: &Path) -> Result<tempfile::NamedTempFile> {
    let tmp_dir = thread_tmp_dir(store_root)?;
    match tempfile::NamedTempFile::new_in(&tmp_dir) {
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(&tmp_dir).map_err(StoreError::io("create directory", &tmp_dir))?;
            tempfile::NamedTempFile::new_in(&tmp_dir)
        }
        other => other,
    }
    .map_err(StoreError::io("create temp file in", &tmp_dir))
}

/// Renames a complete temp file to `dest`.
pub(crate) fn persist(tmp: tempfile::NamedTempFile, dest: &Path) -> Result<()> {
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
    use kiln_core::fixtures::tree_of;
    use kiln_core::Tree;

    fn tree(s: &str) -> Tree {
        tree_of(&[("a.yaml", s)])
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
        s.put_raw_action(&drv, b"{not json");
        assert!(matches!(
            s.usable_output(&drv),
            Err(StoreError::Record { .. })
        ));
        // An entry copied under another derivation's name is caught by its derivation record.
        let other = Digest::of(b"[]");
        s.put(&drv, b"{}", &tree("x")).unwrap();
        let (record, derivation) = s.action(&drv).unwrap().unwrap();
        s.write_action(&drv, &derivation, &record).unwrap();
        let copied = s.packs.get((packs::Kind::Action, drv)).unwrap().unwrap();
        s.put_raw_action(&other, &copied);
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
