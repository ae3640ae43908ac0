//! Store backends behind two traits, in the spirit of snix's `BlobService` and
//! `DirectoryService`: an [`ObjectStore`] (artifacts by output hash) and an [`ActionCache`]
//! (derivation hash -> output record, with the canonical derivation). The local store
//! implements both; [`MemoryStore`] serves unit tests; [`Layered`] puts a local store in front
//! of further caches; [`from_addr`] picks a backend from a URL (`file://`, `memory://`; the
//! remote cache adds `http(s)://` and `s3://`).
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
}

impl ActionCache for LocalStore {
    fn lookup(&self, drv: &Digest) -> Result<Option<OutputRecord>> {
        self.read_action(drv)
            .map(|entry| entry.map(|(record, _)| record))
    }

    fn derivation(&self, drv: &Digest) -> Result<Option<Vec<u8>>> {
        self.read_action(drv)
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
    /// The artifact `out`, unpacked under the store's limits and checked against its hash.
    fn fetch(&self, out: &Digest) -> Option<Tree>;
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
            if let Some(tree) = s.fetch(out) {
                self.local.put_object(&tree)?;
                return Ok(Some(tree));
            }
        }
        Ok(None)
    }

    fn put(&self, tree: &Tree) -> Result<Digest> {
        self.local.put_object(tree)
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

/// A local backend in front of further caches. Reads go to the first layer, then the others
/// in order; what a later layer has is copied into the first (pull-through). A later layer
/// that fails (down, slow, lying) is a warning and a miss, never a failed build: only the
/// first layer's errors are errors. Writes go to the first layer only; pushing to a shared
/// cache is explicit.
pub struct Layered {
    first: Backend,
    rest: Vec<Backend>,
}

impl Layered {
    /// `first` in front of `rest`.
    pub fn new(first: Backend, rest: Vec<Backend>) -> Self {
        Self { first, rest }
    }

    /// As one backend.
    pub fn into_backend(self) -> Backend {
        Backend::of(self)
    }
}

fn degraded<T>(layer: usize, what: &str, r: Result<Option<T>>) -> Option<T> {
    match r {
        Ok(v) => v,
        Err(e) => {
            tracing::warn!(layer, error = %kiln_core::error_chain::error_chain(&e), "cache layer failed to {what}; treated as a miss");
            None
        }
    }
}

impl ObjectStore for Layered {
    fn contains(&self, out: &Digest) -> Result<bool> {
        if self.first.objects.contains(out)? {
            return Ok(true);
        }
        Ok(self.rest.iter().enumerate().any(|(i, b)| {
            degraded(i + 1, "check an object", b.objects.contains(out).map(Some)) == Some(true)
        }))
    }

    fn get(&self, out: &Digest) -> Result<Option<Tree>> {
        if let Some(t) = self.first.objects.get(out)? {
            return Ok(Some(t));
        }
        for (i, b) in self.rest.iter().enumerate() {
            if let Some(t) = degraded(i + 1, "read an object", b.objects.get(out)) {
                self.first.objects.put(&t)?;
                return Ok(Some(t));
            }
        }
        Ok(None)
    }

    fn put(&self, tree: &Tree) -> Result<Digest> {
        self.first.objects.put(tree)
    }
}

impl ActionCache for Layered {
    fn lookup(&self, drv: &Digest) -> Result<Option<OutputRecord>> {
        if let Some(r) = self.first.actions.lookup(drv)? {
            return Ok(Some(r));
        }
        for (i, b) in self.rest.iter().enumerate() {
            if let Some(r) = degraded(i + 1, "look up an action", b.actions.lookup(drv)) {
                if let Some(d) = degraded(i + 1, "read a derivation", b.actions.derivation(drv)) {
                    self.first.actions.record(drv, &d, &r)?;
                }
                return Ok(Some(r));
            }
        }
        Ok(None)
    }

    fn derivation(&self, drv: &Digest) -> Result<Option<Vec<u8>>> {
        if let Some(d) = self.first.actions.derivation(drv)? {
            return Ok(Some(d));
        }
        Ok(self
            .rest
            .iter()
            .enumerate()
            .find_map(|(i, b)| degraded(i + 1, "read a derivation", b.actions.derivation(drv))))
    }

    fn record(&self, drv: &Digest, derivation: &[u8], record: &OutputRecord) -> Result<()> {
        self.first.actions.record(drv, derivation, record)
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

    /// A backend that fails every request, as a cache that is down would.
    struct Down;

    impl ObjectStore for Down {
        fn contains(&self, _: &Digest) -> Result<bool> {
            Err(StoreError::UnsupportedAddress("down".into()))
        }
        fn get(&self, _: &Digest) -> Result<Option<Tree>> {
            Err(StoreError::UnsupportedAddress("down".into()))
        }
        fn put(&self, _: &Tree) -> Result<Digest> {
            Err(StoreError::UnsupportedAddress("down".into()))
        }
    }

    impl ActionCache for Down {
        fn lookup(&self, _: &Digest) -> Result<Option<OutputRecord>> {
            Err(StoreError::UnsupportedAddress("down".into()))
        }
        fn derivation(&self, _: &Digest) -> Result<Option<Vec<u8>>> {
            Err(StoreError::UnsupportedAddress("down".into()))
        }
        fn record(&self, _: &Digest, _: &[u8], _: &OutputRecord) -> Result<()> {
            Err(StoreError::UnsupportedAddress("down".into()))
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
    backend_suite!(layered, {
        let dir = tempfile::tempdir().unwrap();
        let local = Backend::of(LocalStore::open(&dir.path().join("store")).unwrap());
        let remotes = vec![Backend::of(Down), Backend::of(MemoryStore::default())];
        (Layered::new(local, remotes).into_backend(), dir)
    });

    #[test]
    fn a_later_layer_fills_the_first_and_a_down_one_is_a_miss() {
        let remote = Backend::of(MemoryStore::default());
        let t = tree("kind: D\n");
        let derivation = b"{}";
        let drv = Digest::of(derivation);
        remote.objects.put(&t).unwrap();
        remote
            .actions
            .record(&drv, derivation, &record(&t))
            .unwrap();
        let first = Backend::of(MemoryStore::default());
        let layered = Layered::new(first.clone(), vec![Backend::of(Down), remote]);
        assert_eq!(layered.lookup(&drv).unwrap(), Some(record(&t)));
        assert!(layered.get(&t.output_hash()).unwrap().is_some());
        assert!(
            first.objects.contains(&t.output_hash()).unwrap(),
            "pulled through"
        );
        assert_eq!(first.actions.lookup(&drv).unwrap(), Some(record(&t)));
        let only_down = Layered::new(Backend::of(MemoryStore::default()), vec![Backend::of(Down)]);
        assert_eq!(
            only_down.lookup(&drv).unwrap(),
            None,
            "a cache that is down is a miss"
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
