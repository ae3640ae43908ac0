//! Store backends behind two traits, in the spirit of snix's `BlobService` and
//! `DirectoryService`: an [`ObjectStore`] (artifacts by output hash) and an [`ActionCache`]
//! (derivation hash -> output record, with the canonical derivation). The local store
//! implements both; [`MemoryStore`] serves unit tests; [`from_addr`] picks a backend from a URL
//! (`file://`, `memory://`). Remote caches (kiln-cache) are [`Substituter`]s: verified,
//! concurrent lookups whose failures are misses, with [`PullThrough`] fetching their artifacts
//! into the local store when something reads them.
//!
//! Lookups return `Result<Option<_>>`: a miss is `Ok(None)`, a broken entry or an I/O failure
//! is an error that the caller decides about. Every backend passes one test suite
//! (`backend_suite!` in this module's tests).

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use kiln_core::{Digest, Tree};

use crate::error::{Result, StoreError};
use crate::local::{LocalStore, OutputRecord};

/// Artifacts by output hash.
pub trait ObjectStore: Send + Sync {
    /// Whether the artifact is present (without reading it).
    fn contains(&self, out: &Digest) -> Result<bool>;
    /// The artifact, checked against its hash; `Ok(None)` when absent. Content that does not
    /// hash to `out` is an error, never a tree.
    fn get(&self, out: &Digest) -> Result<Option<Tree>>;
    /// Stores `tree` under its output hash, which it returns. Storing twice is harmless.
    fn put(&self, tree: &Tree) -> Result<Digest>;
    /// Stores the directory `dir` as an artifact; gives its record. The local store streams it
    /// (see [`LocalStore::put_dir`]); the default reads it into memory first.
    fn put_dir(&self, dir: &std::path::Path) -> Result<OutputRecord> {
        let tree = Tree::from_dir(dir).map_err(|source| StoreError::InvalidOutput {
            dir: dir.to_owned(),
            source,
        })?;
        Ok(OutputRecord {
            output: self.put(&tree)?,
            exports: tree.exports(),
            entries: tree.len() as u64,
            size: tree.content_size(),
        })
    }
}

/// Derivation hash -> output record and the canonical derivation it was built from.
pub trait ActionCache: Send + Sync {
    /// The record of `drv`; `Ok(None)` on a miss.
    fn lookup(&self, drv: &Digest) -> Result<Option<OutputRecord>>;
    /// The canonical derivation bytes of `drv`; `Ok(None)` on a miss.
    fn derivation(&self, drv: &Digest) -> Result<Option<Vec<u8>>>;
    /// Records that `derivation` (which hashes to `drv`) built `record`.
    fn record(&self, drv: &Digest, derivation: &[u8], record: &OutputRecord) -> Result<()>;
}

/// Both halves of one backend.
#[derive(Clone)]
pub struct Backend {
    /// Artifacts.
    pub objects: Arc<dyn ObjectStore>,
    /// Actions.
    pub actions: Arc<dyn ActionCache>,
}

impl Backend {
    /// A backend whose two halves are one value (the local store, the memory store).
    pub fn of<T: ObjectStore + ActionCache + 'static>(store: T) -> Self {
        let store = Arc::new(store);
        Self {
            objects: store.clone(),
            actions: store,
        }
    }
}

/// Picks a backend from an address: `file:///path/to/store` (the local store, opened for
/// building) or `memory://` (empty, in memory).
pub fn from_addr(addr: &str) -> Result<Backend> {
    let unsupported = || StoreError::UnsupportedAddress(addr.to_owned());
    let (scheme, rest) = addr.split_once("://").ok_or_else(unsupported)?;
    match scheme {
        "file" if rest.starts_with('/') => Ok(Backend::of(LocalStore::open(&PathBuf::from(rest))?)),
        "memory" if rest.is_empty() => Ok(Backend::of(MemoryStore::default())),
        _ => Err(unsupported()),
    }
}

impl ObjectStore for LocalStore {
    fn contains(&self, out: &Digest) -> Result<bool> {
        Ok(self.has_object(out))
    }

    fn get(&self, out: &Digest) -> Result<Option<Tree>> {
        match self.load(out) {
            Ok(t) => Ok(Some(t)),
            Err(StoreError::Missing(_)) => Ok(None),
            Err(e) => Err(e),
        }
    }

    fn put(&self, tree: &Tree) -> Result<Digest> {
        self.put_object(tree)
    }

    fn put_dir(&self, dir: &std::path::Path) -> Result<OutputRecord> {
        LocalStore::put_dir(self, dir)
    }
}

impl ActionCache for LocalStore {
    fn lookup(&self, drv: &Digest) -> Result<Option<OutputRecord>> {
        self.action(drv)
            .map(|entry| entry.map(|(record, _)| record))
    }

    fn derivation(&self, drv: &Digest) -> Result<Option<Vec<u8>>> {
        self.action(drv)
            .map(|entry| entry.map(|(_, derivation)| derivation))
    }

    fn record(&self, drv: &Digest, derivation: &[u8], record: &OutputRecord) -> Result<()> {
        self.write_action(drv, derivation, record)
    }
}

/// A shared cache a build pulls from (kiln-cache's remote caches implement it). Its answers are
/// verified before they are returned, and its failures are its own business: a cache that is
/// down, slow or lying answers `None` (after a warning), never an error, so it cannot fail a
/// build.
pub trait Substituter: Send + Sync {
    /// The cache's address, for messages.
    fn address(&self) -> &str;
    /// Looks every derivation up at once (concurrently); one answer per input, in order.
    fn lookup_many(&self, drvs: &[Digest]) -> Vec<Option<OutputRecord>>;
    /// Makes the artifact `out` an object of `local`: received as a stream into the store,
    /// checked under the store's limits and against its hash, then entered (never held whole
    /// in memory). Whether it is there now.
    fn fetch_into(&self, out: &Digest, local: &LocalStore) -> bool;
    /// [`Substituter::fetch_into`] of every output at once (concurrently); one answer per input.
    fn fetch_many_into(&self, outs: &[Digest], local: &LocalStore) -> Vec<bool> {
        outs.iter().map(|o| self.fetch_into(o, local)).collect()
    }
}

/// Objects from the local store, fetched from substituters on a miss ("build without the
/// bytes": an artifact crosses the network only when something reads it) and then kept locally.
pub struct PullThrough {
    local: Arc<LocalStore>,
    substituters: Vec<Arc<dyn Substituter>>,
}

impl PullThrough {
    /// `local` in front of `substituters`, tried in order.
    pub fn new(local: Arc<LocalStore>, substituters: Vec<Arc<dyn Substituter>>) -> Self {
        Self {
            local,
            substituters,
        }
    }
}

impl PullThrough {
    /// Makes every one of `outs` local that a substituter has, fetching them concurrently
    /// (one batch per substituter, in order); what none has stays missing.
    pub fn prefetch(&self, outs: &[Digest]) -> Result<()> {
        let mut missing: Vec<Digest> = outs
            .iter()
            .filter(|o| !self.local.has_object(o))
            .copied()
            .collect();
        missing.sort();
        missing.dedup();
        for s in &self.substituters {
            if missing.is_empty() {
                break;
            }
            let mut still = Vec::new();
            // In chunks, so that only a chunk of downloads is in flight at once.
            for chunk in missing.chunks(256) {
                for (out, got) in chunk.iter().zip(s.fetch_many_into(chunk, &self.local)) {
                    if !got {
                        still.push(*out);
                    }
                }
            }
            missing = still;
        }
        Ok(())
    }
}

impl ObjectStore for PullThrough {
    /// Local presence only: asking the caches here would cost a request per rule.
    fn contains(&self, out: &Digest) -> Result<bool> {
        Ok(self.local.has_object(out))
    }

    fn get(&self, out: &Digest) -> Result<Option<Tree>> {
        match self.local.load(out) {
            Ok(t) => return Ok(Some(t)),
            Err(StoreError::Missing(_)) => {}
            Err(e) => return Err(e),
        }
        for s in &self.substituters {
            if s.fetch_into(out, &self.local) {
                return self.local.load(out).map(Some);
            }
        }
        Ok(None)
    }

    fn put(&self, tree: &Tree) -> Result<Digest> {
        self.local.put_object(tree)
    }

    fn put_dir(&self, dir: &std::path::Path) -> Result<OutputRecord> {
        self.local.put_dir(dir)
    }
}

/// An in-memory backend, for unit tests.
#[derive(Default)]
pub struct MemoryStore {
    objects: Mutex<HashMap<Digest, Tree>>,
    actions: Mutex<HashMap<Digest, (OutputRecord, Vec<u8>)>>,
}

impl ObjectStore for MemoryStore {
    fn contains(&self, out: &Digest) -> Result<bool> {
        Ok(self.objects.lock().expect("lock").contains_key(out))
    }

    fn get(&self, out: &Digest) -> Result<Option<Tree>> {
        Ok(self.objects.lock().expect("lock").get(out).cloned())
    }

    fn put(&self, tree: &Tree) -> Result<Digest> {
        let out = tree.output_hash();
        self.objects
            .lock()
            .expect("lock")
            .entry(out)
            .or_insert_with(|| tree.clone());
        Ok(out)
    }
}

impl ActionCache for MemoryStore {
    fn lookup(&self, drv: &Digest) -> Result<Option<OutputRecord>> {
        Ok(self
            .actions
            .lock()
            .expect("lock")
            .get(drv)
            .map(|(r, _)| r.clone()))
    }

    fn derivation(&self, drv: &Digest) -> Result<Option<Vec<u8>>> {
        Ok(self
            .actions
            .lock()
            .expect("lock")
            .get(drv)
            .map(|(_, d)| d.clone()))
    }

    fn record(&self, drv: &Digest, derivation: &[u8], record: &OutputRecord) -> Result<()> {
        self.actions
            .lock()
            .expect("lock")
            .insert(*drv, (record.clone(), derivation.to_vec()));
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_core::fixtures::{rel, tree_of};

    fn tree(content: &str) -> Tree {
        let mut t = tree_of(&[("objects/a.yaml", content)]);
        t.insert_symlink(rel("latest"), "objects/a.yaml");
        t
    }

    fn record(t: &Tree) -> OutputRecord {
        OutputRecord {
            output: t.output_hash(),
            exports: Default::default(),
            entries: t.len() as u64,
            size: t.content_size(),
        }
    }

    /// The suite every backend passes. `$make` returns `(Backend, guard)`; the guard keeps
    /// temporary directories alive.
    macro_rules! backend_suite {
        ($module:ident, $make:expr) => {
            mod $module {
                use super::*;

                #[test]
                fn objects_round_trip_and_misses_are_none() {
                    let (b, _guard) = $make;
                    let t = tree("kind: A\n");
                    let out = t.output_hash();
                    assert_eq!(b.objects.get(&out).unwrap(), None);
                    assert!(!b.objects.contains(&out).unwrap());
                    assert_eq!(b.objects.put(&t).unwrap(), out);
                    assert_eq!(b.objects.put(&t).unwrap(), out, "putting twice is harmless");
                    assert!(b.objects.contains(&out).unwrap());
                    let back = b.objects.get(&out).unwrap().unwrap();
                    assert_eq!(back.output_hash(), out);
                    assert_eq!(back.file("objects/a.yaml"), Some(&b"kind: A\n"[..]));
                }

                #[test]
                fn actions_round_trip_and_misses_are_none() {
                    let (b, _guard) = $make;
                    let t = tree("kind: B\n");
                    let derivation = br#"{"encoding":"kiln-drv-v1"}"#;
                    let drv = Digest::of(derivation);
                    assert_eq!(b.actions.lookup(&drv).unwrap(), None);
                    assert_eq!(b.actions.derivation(&drv).unwrap(), None);
                    b.objects.put(&t).unwrap();
                    b.actions.record(&drv, derivation, &record(&t)).unwrap();
                    assert_eq!(b.actions.lookup(&drv).unwrap(), Some(record(&t)));
                    assert_eq!(b.actions.derivation(&drv).unwrap().unwrap(), derivation);
                }

                #[test]
                fn concurrent_writers_agree() {
                    let (b, _guard) = $make;
                    let t = tree("kind: C\n");
                    std::thread::scope(|s| {
                        for _ in 0..4 {
                            s.spawn(|| b.objects.put(&t).unwrap());
                        }
                    });
                    assert_eq!(
                        b.objects
                            .get(&t.output_hash())
                            .unwrap()
                            .unwrap()
                            .output_hash(),
                        t.output_hash()
                    );
                }
            }
        };
    }

    backend_suite!(local, {
        let dir = tempfile::tempdir().unwrap();
        let addr = format!("file://{}", dir.path().join("store").display());
        (from_addr(&addr).unwrap(), dir)
    });
    backend_suite!(memory, (from_addr("memory://").unwrap(), ()));
    /// A substituter over a memory store that counts its fetches.
    #[derive(Default)]
    struct Counting {
        inner: MemoryStore,
        fetches: std::sync::atomic::AtomicUsize,
    }

    impl Substituter for Counting {
        fn address(&self) -> &str {
            "memory://counting"
        }
        fn lookup_many(&self, drvs: &[Digest]) -> Vec<Option<OutputRecord>> {
            drvs.iter().map(|d| self.inner.lookup(d).unwrap()).collect()
        }
        fn fetch_into(&self, out: &Digest, local: &LocalStore) -> bool {
            self.fetches
                .fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            match ObjectStore::get(&self.inner, out).unwrap() {
                Some(tree) => local.put_object(&tree).is_ok(),
                None => false,
            }
        }
    }

    #[test]
    fn pull_through_fetches_a_missing_object_once_and_keeps_it() {
        let dir = tempfile::tempdir().unwrap();
        let local = Arc::new(LocalStore::open(&dir.path().join("store")).unwrap());
        let remote = Arc::new(Counting::default());
        let t = tree("kind: D\n");
        let out = t.output_hash();
        ObjectStore::put(&remote.inner, &t).unwrap();
        let objects = PullThrough::new(local.clone(), vec![remote.clone()]);
        assert!(
            !objects.contains(&out).unwrap(),
            "contains asks only the local store"
        );
        assert_eq!(remote.fetches.load(std::sync::atomic::Ordering::SeqCst), 0);
        assert_eq!(objects.get(&out).unwrap().unwrap().output_hash(), out);
        assert!(local.has_object(&out), "kept locally");
        assert_eq!(objects.get(&out).unwrap().unwrap().output_hash(), out);
        assert_eq!(remote.fetches.load(std::sync::atomic::Ordering::SeqCst), 1);
        let absent = tree("kind: E\n").output_hash();
        assert_eq!(
            objects.get(&absent).unwrap(),
            None,
            "a miss everywhere is None"
        );
    }

    #[test]
    fn unknown_addresses_are_refused() {
        for addr in ["s3://bucket", "file://relative", "memory://x", "nonsense"] {
            assert!(
                matches!(from_addr(addr), Err(StoreError::UnsupportedAddress(_))),
                "{addr}"
            );
        }
    }
}
