//! A remote cache on any `object_store` backend: `file://`, `http(s)://` (kiln's own server or
//! any static server), `s3://` (AWS, MinIO, R2 and other S3-speaking stores), `gs://`, `az://`.
//!
//! Every answer is verified before kiln uses it (entries: format, key, signatures; archives:
//! unpacked under the store's limits and rehashed). Every failure is a warning and a miss:
//! the first failure of a cache warns once, three in a row open a circuit breaker that skips
//! the cache for the rest of the run.

use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering};
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use kiln_core::{Digest, Tree};
use kiln_store::archive::{self, UnpackLimits};
use kiln_store::{LocalStore, OutputRecord, Substituter};
use object_store::path::Path as StorePath;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};
use serde::Serialize;

use crate::address::RemoteOptions;
use crate::entry::{ActionEntry, Refusal};
use crate::error::CacheError;
use crate::keys::SecretKey;
use crate::layout::Key;

/// Consecutive failures after which a cache is skipped for the rest of the run.
const BREAKER_THRESHOLD: u32 = 3;

/// What a cache cost in one run: reported in `--json` and the summary line.
#[derive(Debug, Default, Serialize)]
pub struct Traffic {
    /// The cache's address.
    pub address: String,
    /// Requests sent.
    pub requests: u64,
    /// Body bytes received.
    pub bytes_down: u64,
    /// Body bytes sent.
    pub bytes_up: u64,
    /// Entries found and accepted.
    pub hits: u64,
    /// Entries or archives refused (bad signature, wrong hash, hostile archive).
    pub refused: u64,
    /// Requests that failed (down, 5xx, timeout, 401/403).
    pub failures: u64,
    /// Whether the circuit breaker opened.
    pub gave_up: bool,
    /// Action entries pushed.
    pub pushed_entries: u64,
    /// Archives pushed.
    pub pushed_archives: u64,
}

#[derive(Default)]
struct Counters {
    requests: AtomicU64,
    bytes_down: AtomicU64,
    bytes_up: AtomicU64,
    hits: AtomicU64,
    refused: AtomicU64,
    failures: AtomicU64,
    pushed_entries: AtomicU64,
    pushed_archives: AtomicU64,
}

/// One remote cache.
pub struct RemoteCache {
    address: String,
    store: Arc<dyn ObjectStore>,
    prefix: String,
    options: RemoteOptions,
    runtime: Option<tokio::runtime::Runtime>,
    counters: Counters,
    consecutive_failures: AtomicU32,
    broken: AtomicBool,
    warned: AtomicBool,
}

/// One rule's result to push: its derivation and the record it built.
#[derive(Clone, Debug)]
pub struct PushItem {
    /// The derivation hash.
    pub derivation: Digest,
    /// Its output.
    pub output: Digest,
}

enum Fetched {
    Found(Vec<u8>),
    Missing,
    Failed,
    /// The body ran past the bound for its kind (read no further).
    TooLarge(u64),
}

/// The most an action entry (or the layout's info file) may be: entries are a few hundred
/// bytes; a server that sends more is refused while it streams, whatever its length header.
const MAX_ENTRY_BYTES: u64 = 1 << 20;

/// The most an archive's compressed body may be: its content's limit, and room for framing.
fn max_archive_bytes() -> u64 {
    UnpackLimits::default()
        .max_total_bytes
        .saturating_add(16 << 20)
}

impl RemoteCache {
    /// Opens the cache at `address`. Nothing is requested yet.
    pub fn open(address: &str, options: RemoteOptions) -> Result<Self, CacheError> {
        let (store, prefix) = crate::address::open_store(address, &options)?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .thread_name("kiln-cache")
            .enable_all()
            .build()
            .map_err(|e| CacheError::Remote {
                cache: address.to_owned(),
                message: format!("cannot start the I/O runtime: {e}"),
            })?;
        Ok(Self {
            address: crate::address::redacted(address),
            store,
            prefix,
            options,
            runtime: Some(runtime),
            counters: Counters::default(),
            consecutive_failures: AtomicU32::new(0),
            broken: AtomicBool::new(false),
            warned: AtomicBool::new(false),
        })
    }

    /// Runs `fut` on the cache's own runtime. Called from inside another runtime (`kiln plan`
    /// builds inside the cluster client's), it runs on a scoped thread, since a runtime cannot
    /// block a thread that drives another.
    fn block_on<F>(&self, fut: F) -> F::Output
    where
        F: std::future::Future + Send,
        F::Output: Send,
    {
        let rt = self
            .runtime
            .as_ref()
            .expect("the runtime lives as long as the cache");
        if tokio::runtime::Handle::try_current().is_ok() {
            std::thread::scope(|s| {
                s.spawn(|| rt.block_on(fut))
                    .join()
                    .expect("the cache's I/O thread panicked")
            })
        } else {
            rt.block_on(fut)
        }
    }

    /// What this cache cost so far.
    pub fn traffic(&self) -> Traffic {
        let c = &self.counters;
        Traffic {
            address: self.address.clone(),
            requests: c.requests.load(Ordering::Relaxed),
            bytes_down: c.bytes_down.load(Ordering::Relaxed),
            bytes_up: c.bytes_up.load(Ordering::Relaxed),
            hits: c.hits.load(Ordering::Relaxed),
            refused: c.refused.load(Ordering::Relaxed),
            failures: c.failures.load(Ordering::Relaxed),
            gave_up: self.broken.load(Ordering::Relaxed),
            pushed_entries: c.pushed_entries.load(Ordering::Relaxed),
            pushed_archives: c.pushed_archives.load(Ordering::Relaxed),
        }
    }

    fn path(&self, key: Key) -> StorePath {
        StorePath::from(format!("{}{}", self.prefix, key.path()))
    }

    fn failed(&self, what: &str, e: &object_store::Error) {
        self.counters.failures.fetch_add(1, Ordering::Relaxed);
        let message = describe(e);
        if !self.warned.swap(true, Ordering::Relaxed) {
            tracing::warn!(cache = %self.address, "remote cache failed to {what}: {message}; building locally");
        } else {
            tracing::debug!(cache = %self.address, "remote cache failed to {what}: {message}");
        }
        let n = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if n >= BREAKER_THRESHOLD && !self.broken.swap(true, Ordering::Relaxed) {
            tracing::info!(cache = %self.address, "{n} requests in a row failed: not asking this cache again in this run");
        }
    }

    /// Something the cache sent was refused: one warning per cache (the rest are counted in
    /// its summary line), and refusals count toward the circuit breaker like failures.
    fn refused(&self, what: String) {
        let n = self.counters.refused.fetch_add(1, Ordering::Relaxed) + 1;
        if n == 1 {
            tracing::warn!(cache = %self.address, "refused {what}; building locally (further refusals from this cache are counted in its summary)");
        } else {
            tracing::debug!(cache = %self.address, "refused {what}");
        }
        let failures = self.consecutive_failures.fetch_add(1, Ordering::Relaxed) + 1;
        if failures >= BREAKER_THRESHOLD && !self.broken.swap(true, Ordering::Relaxed) {
            tracing::info!(cache = %self.address, "{failures} answers in a row failed or were refused: not asking this cache again in this run");
        }
    }

    /// The body of `key`, streamed into `sink` up to `cap` bytes: a length header is never
    /// trusted (nothing is sized from it) and the body is cut off as soon as it passes `cap`.
    async fn stream<W: std::io::Write>(
        &self,
        key: Key,
        what: &str,
        cap: u64,
        sink: &mut W,
    ) -> Result<Fetched, std::io::Error> {
        if self.broken.load(Ordering::Relaxed) {
            return Ok(Fetched::Failed);
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let path = self.path(key);
        let mut body = match self.store.get(&path).await {
            Ok(r) => r.into_stream(),
            Err(object_store::Error::NotFound { .. }) => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                return Ok(Fetched::Missing);
            }
            Err(e) => {
                self.failed(what, &e);
                return Ok(Fetched::Failed);
            }
        };
        let mut received: u64 = 0;
        while let Some(chunk) = body.next().await {
            let chunk = match chunk {
                Ok(c) => c,
                Err(e) => {
                    self.failed(what, &e);
                    return Ok(Fetched::Failed);
                }
            };
            received += chunk.len() as u64;
            self.counters
                .bytes_down
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
            if received > cap {
                return Ok(Fetched::TooLarge(received));
            }
            sink.write_all(&chunk)?;
        }
        self.consecutive_failures.store(0, Ordering::Relaxed);
        Ok(Fetched::Found(Vec::new()))
    }

    /// A small object (an entry, the info file), read whole: at most [`MAX_ENTRY_BYTES`].
    async fn fetch(&self, key: Key, what: &str) -> Fetched {
        let mut bytes = Vec::new();
        match self.stream(key, what, MAX_ENTRY_BYTES, &mut bytes).await {
            Ok(Fetched::Found(_)) => Fetched::Found(bytes),
            Ok(Fetched::TooLarge(n)) => {
                self.refused(format!(
                    "`{}`: more than {MAX_ENTRY_BYTES} bytes ({n} received before it was cut off)",
                    key.path()
                ));
                Fetched::TooLarge(n)
            }
            Ok(other) => other,
            Err(_) => Fetched::Failed,
        }
    }

    /// An archive streamed into `file` (at most [`max_archive_bytes`]); whether it arrived.
    async fn fetch_archive_file(&self, out: Digest, file: &mut std::fs::File) -> bool {
        let what = format!("archive `cas/{}.tar.zst`", out.hex());
        let mut sink = std::io::BufWriter::new(file);
        let got = self
            .stream(
                Key::Archive(out),
                "download an archive",
                max_archive_bytes(),
                &mut sink,
            )
            .await;
        match (got, std::io::Write::flush(&mut sink)) {
            (Ok(Fetched::Found(_)), Ok(())) => true,
            (Ok(Fetched::TooLarge(n)), _) => {
                self.refused(format!(
                    "{what}: more than {} bytes ({n} received before it was cut off)",
                    max_archive_bytes()
                ));
                false
            }
            (Err(e), _) | (_, Err(e)) => {
                tracing::warn!(cache = %self.address, "cannot write {what} into the store: {e}");
                false
            }
            _ => false,
        }
    }

    async fn exists(&self, key: Key) -> Result<bool, ()> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(());
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        match self.store.head(&self.path(key)).await {
            Ok(_) => Ok(true),
            Err(object_store::Error::NotFound { .. }) => Ok(false),
            Err(e) => {
                self.failed("check an entry", &e);
                Err(())
            }
        }
    }

    async fn upload(&self, key: Key, bytes: Vec<u8>) -> Result<(), ()> {
        if self.broken.load(Ordering::Relaxed) {
            return Err(());
        }
        self.counters.requests.fetch_add(1, Ordering::Relaxed);
        let len = bytes.len() as u64;
        match self
            .store
            .put(&self.path(key), PutPayload::from(bytes))
            .await
        {
            Ok(_) => {
                self.consecutive_failures.store(0, Ordering::Relaxed);
                self.counters.bytes_up.fetch_add(len, Ordering::Relaxed);
                Ok(())
            }
            Err(e) => {
                self.failed("upload", &e);
                Err(())
            }
        }
    }

    async fn lookup(&self, drv: Digest) -> Option<OutputRecord> {
        let Fetched::Found(bytes) = self.fetch(Key::Action(drv), "look up an entry").await else {
            return None;
        };
        match self.checked_entry(&bytes, &drv) {
            Ok(entry) => {
                self.counters.hits.fetch_add(1, Ordering::Relaxed);
                Some(entry.record)
            }
            Err(refusal) => {
                self.refused(format!("entry `ac/{}`: {refusal}", drv.hex()));
                None
            }
        }
    }

    /// An entry as a puller accepts it: well formed, under its key, trusted-signed.
    fn checked_entry(&self, bytes: &[u8], drv: &Digest) -> Result<ActionEntry, Refusal> {
        let entry = ActionEntry::parse(bytes, drv)?;
        entry.check_signatures(&self.options.trusted)?;
        Ok(entry)
    }

    /// Makes archive `out` an object of `local`: streamed into the store's temp directory,
    /// checked as a stream (limits, hash), then renamed into place.
    async fn fetch_archive_into(&self, out: Digest, local: &LocalStore) -> bool {
        let mut tmp = match local.incoming_archive() {
            Ok(t) => t,
            Err(e) => {
                tracing::warn!(error = %kiln_core::error_chain::error_chain(&e), "cannot receive an archive into the store");
                return false;
            }
        };
        if !self.fetch_archive_file(out, tmp.as_file_mut()).await {
            return false;
        }
        let checked =
            tokio::task::block_in_place(|| local.adopt_archive(tmp, &out, UnpackLimits::default()));
        match checked {
            Ok(Ok(())) => true,
            Ok(Err(reason)) => {
                self.refused(format!("archive `cas/{}.tar.zst`: {reason}", out.hex()));
                false
            }
            Err(e) => {
                tracing::warn!(error = %kiln_core::error_chain::error_chain(&e), "cannot enter a pulled archive into the store");
                false
            }
        }
    }

    /// Uploads what the cache lacks of `items`: per item, the archive (unless present) first
    /// and the entry last, so an interrupted push never leaves an entry without its archive.
    /// With `key`, entries are signed. Items whose entry the cache has are skipped; items whose
    /// archive is not in the local store (pulled lazily from elsewhere) are skipped too.
    pub fn push(
        &self,
        local: &LocalStore,
        items: &[PushItem],
        key: Option<&SecretKey>,
    ) -> Result<(), CacheError> {
        let failures_before = self.counters.failures.load(Ordering::Relaxed);
        let outcomes: Vec<Result<(), CacheError>> = self.block_on(
            futures::stream::iter(items)
                .map(|item| self.push_one(local, item, key))
                .buffer_unordered(self.options.concurrency)
                .collect(),
        );
        outcomes.into_iter().collect::<Result<Vec<()>, _>>()?;
        if self.counters.failures.load(Ordering::Relaxed) > failures_before {
            return Err(CacheError::Remote {
                cache: self.address.clone(),
                message: "some uploads failed (see the warnings above)".into(),
            });
        }
        Ok(())
    }

    async fn push_one(
        &self,
        local: &LocalStore,
        item: &PushItem,
        key: Option<&SecretKey>,
    ) -> Result<(), CacheError> {
        if self.exists(Key::Action(item.derivation)).await != Ok(false) {
            return Ok(());
        }
        let Some((record, derivation)) = local.action(&item.derivation)? else {
            return Ok(());
        };
        let archive_path = local.object_path(&item.output);
        if self.exists(Key::Archive(item.output)).await == Ok(false) {
            let bytes = match tokio::fs::read(&archive_path).await {
                Ok(b) => b,
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(()),
                Err(e) => return Err(CacheError::io("read", archive_path)(e)),
            };
            if self.upload(Key::Archive(item.output), bytes).await.is_err() {
                return Ok(());
            }
            self.counters
                .pushed_archives
                .fetch_add(1, Ordering::Relaxed);
        }
        let mut entry = ActionEntry::new(&derivation, record).map_err(|r| CacheError::Remote {
            cache: self.address.clone(),
            message: format!("cannot push `{}`: {r}", item.derivation),
        })?;
        if let Some(k) = key {
            entry.sign(k);
        }
        if self
            .upload(Key::Action(item.derivation), entry.to_bytes())
            .await
            .is_ok()
        {
            self.counters.pushed_entries.fetch_add(1, Ordering::Relaxed);
        }
        Ok(())
    }

    /// Writes `kiln-cache-info` unless present (a fresh bucket or directory).
    pub fn ensure_info(&self) -> Result<(), CacheError> {
        self.block_on(async {
            match self.exists(Key::Info).await {
                Ok(true) => Ok(()),
                Ok(false) => self
                    .upload(Key::Info, crate::layout::info_body().into_bytes())
                    .await
                    .map_err(|()| self.unavailable()),
                Err(()) => Err(self.unavailable()),
            }
        })
    }

    fn unavailable(&self) -> CacheError {
        CacheError::Remote {
            cache: self.address.clone(),
            message: "not reachable (see the warning above)".into(),
        }
    }

    /// Every object under the cache's prefix (for checks and tests).
    pub fn list(&self) -> Result<Vec<String>, CacheError> {
        let prefix =
            (!self.prefix.is_empty()).then(|| StorePath::from(self.prefix.trim_end_matches('/')));
        self.block_on(self.store.list(prefix.as_ref()).try_collect::<Vec<_>>())
            .map(|metas| {
                metas
                    .into_iter()
                    .map(|m| {
                        let p = m.location.to_string();
                        p.strip_prefix(&self.prefix).unwrap_or(&p).to_owned()
                    })
                    .collect()
            })
            .map_err(|e| CacheError::Remote {
                cache: self.address.clone(),
                message: describe(&e),
            })
    }
}

impl Drop for RemoteCache {
    /// Never blocks: dropping a runtime inside another one's context would panic.
    fn drop(&mut self) {
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_background();
        }
    }
}

/// What `kiln cache verify` found.
#[derive(Debug, Default, Serialize)]
pub struct VerifyReport {
    /// The cache.
    pub address: String,
    /// Action entries checked.
    pub entries: u64,
    /// Archives checked.
    pub archives: u64,
    /// Everything wrong, one line each.
    pub problems: Vec<String>,
}

impl RemoteCache {
    /// Checks every object of the cache: entries parse, hash to their key, carry a trusted
    /// signature (when keys are trusted) and point at a present archive; archives unpack and
    /// hash to their key; nothing else lives in the layout.
    pub fn verify_all(&self) -> Result<VerifyReport, CacheError> {
        if self.address.starts_with("http://") || self.address.starts_with("https://") {
            return Err(CacheError::Remote {
                cache: self.address.clone(),
                message: "an HTTP cache cannot be listed: verify the directory or bucket behind it (`--cache file:///…` or `s3://…`)".into(),
            });
        }
        let paths = self.list()?;
        let mut report = VerifyReport {
            address: self.address.clone(),
            ..VerifyReport::default()
        };
        let present: std::collections::HashSet<&str> = paths.iter().map(String::as_str).collect();
        let checks: Vec<Option<String>> = self.block_on(
            futures::stream::iter(&paths)
                .map(|path| self.verify_one(path, &present))
                .buffer_unordered(self.options.concurrency)
                .collect(),
        );
        for path in &paths {
            match Key::parse(path) {
                Some(Key::Action(_)) => report.entries += 1,
                Some(Key::Archive(_)) => report.archives += 1,
                _ => {}
            }
        }
        report.problems = checks.into_iter().flatten().collect();
        report.problems.sort();
        Ok(report)
    }

    async fn verify_one(
        &self,
        path: &str,
        present: &std::collections::HashSet<&str>,
    ) -> Option<String> {
        let key = match Key::parse(path) {
            Some(k) => k,
            None => return Some(format!("`{path}` is not part of the layout")),
        };
        if let Key::Archive(out) = key {
            // Streamed to an unnamed temp file and checked as a stream, as a pull does.
            let Ok(mut file) = tempfile::tempfile() else {
                return Some(format!("`{path}` could not be received: no temp file"));
            };
            if !self.fetch_archive_file(out, &mut file).await {
                return Some(format!("`{path}` could not be read"));
            }
            let reader = std::io::BufReader::new(file);
            let checked = tokio::task::block_in_place(|| {
                std::io::Seek::rewind(&mut std::io::BufReader::get_ref(&reader))
                    .map_err(|e| e.to_string())?;
                archive::hash_stream(reader, UnpackLimits::default(), |_| false)
                    .map_err(|e| kiln_core::error_chain::error_chain(&e))
            });
            return match checked {
                Ok(h) if h.output == out => None,
                Ok(h) => Some(format!("`{path}`: its content hashes to {}", h.output)),
                Err(reason) => Some(format!("`{path}`: {reason}")),
            };
        }
        let bytes = match self.fetch(key, "read an object").await {
            Fetched::Found(b) => b,
            _ => return Some(format!("`{path}` could not be read")),
        };
        match key {
            Key::Info => None,
            Key::Action(drv) => {
                let entry = match self.checked_entry(&bytes, &drv) {
                    Ok(e) => e,
                    Err(r) => return Some(format!("`{path}`: {r}")),
                };
                let archive = Key::Archive(entry.record.output).path();
                (!present.contains(archive.as_str()))
                    .then(|| format!("`{path}` points at `{archive}`, which is missing"))
            }
            Key::Archive(_) => None,
        }
    }
}

/// An archive's tree, when it unpacks under the store's limits and hashes to `out`.
pub fn verified_tree(bytes: &[u8], out: &Digest) -> Result<Tree, String> {
    let tree = archive::unpack(bytes, UnpackLimits::default())
        .map_err(|e| kiln_core::error_chain::error_chain(&e))?;
    let actual = tree.output_hash();
    if actual != *out {
        return Err(format!("its content hashes to {actual}"));
    }
    Ok(tree)
}

impl Substituter for RemoteCache {
    fn address(&self) -> &str {
        &self.address
    }

    fn lookup_many(&self, drvs: &[Digest]) -> Vec<Option<OutputRecord>> {
        if drvs.is_empty() || self.broken.load(Ordering::Relaxed) {
            return vec![None; drvs.len()];
        }
        self.block_on(
            futures::stream::iter(drvs)
                .map(|d| self.lookup(*d))
                .buffered(self.options.concurrency)
                .collect(),
        )
    }

    fn fetch_into(&self, out: &Digest, local: &LocalStore) -> bool {
        self.block_on(self.fetch_archive_into(*out, local))
    }

    fn fetch_many_into(&self, outs: &[Digest], local: &LocalStore) -> Vec<bool> {
        if outs.is_empty() || self.broken.load(Ordering::Relaxed) {
            return vec![false; outs.len()];
        }
        self.block_on(
            futures::stream::iter(outs)
                .map(|o| self.fetch_archive_into(*o, local))
                .buffered(self.options.concurrency)
                .collect(),
        )
    }
}

/// One line for a failed request: the HTTP status where there is one.
fn describe(e: &object_store::Error) -> String {
    use object_store::Error as E;
    match e {
        E::Unauthenticated { .. } => {
            "401 Unauthenticated: the token is missing or wrong".to_owned()
        }
        E::PermissionDenied { .. } => "403 Forbidden: the token may not do this".to_owned(),
        // object_store nests the same message several times; its innermost cause says it
        // best ("Connection refused", "500 Internal Server Error", "operation timed out").
        other => {
            let mut cause: &dyn std::error::Error = other;
            while let Some(next) = cause.source() {
                cause = next;
            }
            cause.to_string()
        }
    }
}

/// Reads a token file, trimmed.
pub fn read_token(path: &std::path::Path) -> Result<String, CacheError> {
    let text = std::fs::read_to_string(path).map_err(CacheError::io("read", path))?;
    let token = text.trim().to_owned();
    if token.is_empty() {
        return Err(CacheError::Key(format!(
            "token file `{}` is empty",
            path.display()
        )));
    }
    Ok(token)
}

/// The default secret key path for `name` (`<name>.key` in the working directory).
pub fn default_key_path(name: &str) -> PathBuf {
    PathBuf::from(format!("{name}.key"))
}
