//! Packs: the store's small entries (action cache entries, kept sources), many to a file.
//!
//! One file per small entry cost a 4 KiB block, an inode and a create-and-rename each: at 10k
//! rules most of a cold build's time went to the kernel creating them. A build now collects its
//! entries in memory and writes them as one immutable pack every few hundred milliseconds (and
//! when it ends), through a temp file and a rename like every other store file.
//!
//! ```text
//! actions/<hex>.pack
//!   "KILNPACK2\n"
//!   blocks: the entries in key order, about 8 KiB of them at a time, each block one zstd frame
//!   index: count x (kind u8, digest [32], block offset u64 LE, block length u32 LE,
//!          offset in the block u32 LE, length u32 LE), sorted by (kind, digest)
//!   trailer: index offset u64 LE, count u64 LE, blake3(index) [32], blake3(blocks) [32], "KPAK"
//! ```
//!
//! A pack is named after blake3 of its bytes. Readers keep an in-memory index of every pack's
//! index (53 bytes an entry on disk) and read an entry with one `pread` and the decompression
//! of its block (8 KiB: microseconds). Action entries compress about 4× in blocks. An index that fails its
//! checksum makes the pack unreadable (its entries are misses, `verify` quarantines it); an
//! entry's own bytes are checked by whoever reads it (an action entry's derivation must hash to
//! its name, a source to its digest).
//!
//! Packs accumulate one per flush. When four packs fall in one size class (a power of four),
//! the writer merges them, so an entry is rewritten O(log n) times over the store's life.

use std::collections::{HashMap, HashSet};
use std::ffi::OsString;
use std::fs::{self, File};
use std::os::unix::fs::FileExt;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant, SystemTime};

use kiln_core::Digest;

use super::write_atomic;
use crate::error::{Result, StoreError};

const MAGIC: &[u8] = b"KILNPACK2\n";
const END: &[u8] = b"KPAK";
const INDEX_ENTRY: usize = 1 + 32 + 8 + 4 + 4 + 4;
/// Entries are compressed together in blocks of about this many bytes: action entries (JSON
/// with their derivation records) shrink about 4× that way, against 1.5× one by one, and a
/// read decompresses one small block.
const BLOCK: usize = 8 << 10;
const TRAILER: usize = 8 + 8 + 32 + 32 + END.len();

/// Pending entries are written once they are this old (a background thread checks), so a
/// derivation lock another process waits for is released within about this long.
const FLUSH_AGE: Duration = Duration::from_millis(200);
/// ... or once this many are pending, or this many bytes.
const FLUSH_COUNT: usize = 8192;
const FLUSH_BYTES: usize = 8 << 20;
/// ... or once the builds they record took this long together: writing a pack costs well under
/// a millisecond, so work that took longer than this is not left to a `kill -9` to lose.
const FLUSH_COST: Duration = Duration::from_millis(20);

/// The packs an index keeps open before it is read again from the directory.
const MAX_OPEN_PACKS: usize = 64;

/// What a pack entry is.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub(crate) enum Kind {
    /// An action cache entry, named by its derivation hash.
    Action = 1,
    /// A kept source file's content, named by its digest.
    Source = 2,
}

impl Kind {
    fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(Self::Action),
            2 => Some(Self::Source),
            _ => None,
        }
    }
}

pub(crate) type Key = (Kind, Digest);

/// Entries with their bytes.
pub(crate) type Entries = Vec<(Key, Vec<u8>)>;

/// Where an entry lives in its pack: the compressed block holding it (offset and length in
/// the file), and the entry's place in the block once decompressed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Slot {
    offset: u64,
    len: u32,
    within: u32,
    size: u32,
}

impl Slot {
    /// The entry's bytes in its decompressed block.
    fn cut(self, block: &[u8]) -> std::io::Result<Vec<u8>> {
        let start = self.within as usize;
        block
            .get(start..start + self.size as usize)
            .map(<[u8]>::to_vec)
            .ok_or_else(|| std::io::Error::other("a pack entry lies outside its block"))
    }
}

/// Where an entry lives.
#[derive(Clone, Copy, Debug)]
struct Loc {
    pack: u32,
    slot: Slot,
}

/// A pack file read: its index and the file, kept open so a merge that deletes it does not
/// pull it from under a reader.
#[derive(Debug)]
pub(crate) struct Pack {
    pub(crate) path: PathBuf,
    file: File,
    pub(crate) entries: Vec<(Key, Slot)>,
    /// The length of its entries region (for the size classes of merging).
    data_len: u64,
}

impl Pack {
    /// Opens a pack and reads its index, checking the index's checksum.
    pub(crate) fn open(path: &Path) -> std::result::Result<Self, String> {
        let file = File::open(path).map_err(|e| format!("cannot open: {e}"))?;
        let len = file.metadata().map_err(|e| e.to_string())?.len();
        if len < (MAGIC.len() + TRAILER) as u64 {
            return Err("too short to be a pack".to_owned());
        }
        let mut magic = [0u8; MAGIC.len()];
        file.read_exact_at(&mut magic, 0)
            .map_err(|e| e.to_string())?;
        if magic != MAGIC {
            return Err("not a pack of this format".to_owned());
        }
        let mut trailer = [0u8; TRAILER];
        file.read_exact_at(&mut trailer, len - TRAILER as u64)
            .map_err(|e| e.to_string())?;
        if &trailer[TRAILER - END.len()..] != END {
            return Err("no pack trailer".to_owned());
        }
        let index_at = u64::from_le_bytes(trailer[0..8].try_into().expect("8 bytes"));
        let count = u64::from_le_bytes(trailer[8..16].try_into().expect("8 bytes"));
        let index_len = count
            .checked_mul(INDEX_ENTRY as u64)
            .filter(|n| index_at.checked_add(*n) == Some(len - TRAILER as u64))
            .filter(|_| index_at >= MAGIC.len() as u64)
            .ok_or("the trailer does not describe the file")?;
        let mut index = vec![0u8; usize::try_from(index_len).map_err(|e| e.to_string())?];
        file.read_exact_at(&mut index, index_at)
            .map_err(|e| e.to_string())?;
        if blake3::hash(&index).as_bytes()[..] != trailer[16..48] {
            return Err("the index does not match its checksum".to_owned());
        }
        let mut entries = Vec::with_capacity(index.len() / INDEX_ENTRY);
        for e in index.chunks_exact(INDEX_ENTRY) {
            let kind = Kind::from_byte(e[0]).ok_or("unknown entry kind")?;
            let digest = Digest::try_from(&e[1..33]).map_err(|e| e.to_string())?;
            let u32_at = |at: usize| u32::from_le_bytes(e[at..at + 4].try_into().expect("4 bytes"));
            let slot = Slot {
                offset: u64::from_le_bytes(e[33..41].try_into().expect("8 bytes")),
                len: u32_at(41),
                within: u32_at(45),
                size: u32_at(49),
            };
            if slot.offset < MAGIC.len() as u64 || slot.offset + u64::from(slot.len) > index_at {
                return Err("an entry lies outside the entries region".to_owned());
            }
            entries.push(((kind, digest), slot));
        }
        Ok(Self {
            path: path.to_owned(),
            file,
            entries,
            data_len: index_at - MAGIC.len() as u64,
        })
    }

    /// Reads one entry's bytes: its block, decompressed, cut to the entry.
    pub(crate) fn read(&self, slot: Slot) -> std::io::Result<Vec<u8>> {
        slot.cut(&self.block(slot)?)
    }

    /// The decompressed block holding `slot`. The frame declares its size; a block claiming
    /// more than a block of entries can hold is refused before anything is allocated for it.
    fn block(&self, slot: Slot) -> std::io::Result<Vec<u8>> {
        let mut compressed = vec![0u8; slot.len as usize];
        self.file.read_exact_at(&mut compressed, slot.offset)?;
        zstd::bulk::decompress(&compressed, BLOCK.max(slot.size as usize) + (1 << 20))
    }

    /// Every entry with its bytes, each block decompressed once (merges, `gc`, `verify`). An
    /// entry that cannot be read is given as its error.
    pub(crate) fn read_all(&self) -> Vec<(Key, std::io::Result<Vec<u8>>)> {
        let mut out = Vec::with_capacity(self.entries.len());
        let mut block: Option<(u64, std::io::Result<Vec<u8>>)> = None;
        for &(key, slot) in &self.entries {
            if block.as_ref().is_none_or(|(at, _)| *at != slot.offset) {
                block = Some((slot.offset, self.block(slot)));
            }
            let bytes = match &block.as_ref().expect("set above").1 {
                Ok(raw) => slot.cut(raw),
                Err(e) => Err(std::io::Error::new(e.kind(), e.to_string())),
            };
            out.push((key, bytes));
        }
        out
    }

    /// Whether the entries region matches the checksum in the trailer (`verify`).
    pub(crate) fn check_entries(&self) -> std::result::Result<(), String> {
        let len = self.file.metadata().map_err(|e| e.to_string())?.len();
        let mut trailer = [0u8; TRAILER];
        self.file
            .read_exact_at(&mut trailer, len - TRAILER as u64)
            .map_err(|e| e.to_string())?;
        let mut hasher = blake3::Hasher::new();
        let mut at = MAGIC.len() as u64;
        let end = at + self.data_len;
        let mut buf = vec![0u8; 1 << 20];
        while at < end {
            let n = usize::try_from((end - at).min(buf.len() as u64)).expect("fits");
            self.file
                .read_exact_at(&mut buf[..n], at)
                .map_err(|e| e.to_string())?;
            hasher.update(&buf[..n]);
            at += n as u64;
        }
        if hasher.finalize().as_bytes()[..] != trailer[48..80] {
            return Err("the entries do not match their checksum".to_owned());
        }
        Ok(())
    }
}

/// Encodes entries (in any order) as a pack.
pub(crate) fn encode(entries: &mut [(Key, Vec<u8>)]) -> Vec<u8> {
    entries.sort_by_key(|e| e.0);
    let data: usize = entries.iter().map(|(_, b)| b.len()).sum();
    let mut out =
        Vec::with_capacity(MAGIC.len() + data / 3 + entries.len() * INDEX_ENTRY + TRAILER);
    out.extend_from_slice(MAGIC);
    let mut index = Vec::with_capacity(entries.len() * INDEX_ENTRY);
    let mut compressor = zstd::bulk::Compressor::new(1).expect("a zstd context");
    let mut start = 0;
    while start < entries.len() {
        // One block: entries until it holds BLOCK bytes (at least one entry).
        let mut end = start;
        let mut raw = Vec::with_capacity(BLOCK);
        while end < entries.len() && (end == start || raw.len() + entries[end].1.len() <= BLOCK) {
            raw.extend_from_slice(&entries[end].1);
            end += 1;
        }
        let compressed = compressor.compress(&raw).expect("compressing to memory");
        let offset = out.len() as u64;
        let len = u32::try_from(compressed.len()).expect("pack blocks are small");
        out.extend_from_slice(&compressed);
        let mut within = 0u32;
        for ((kind, digest), bytes) in &entries[start..end] {
            let size = u32::try_from(bytes.len()).expect("pack entries are small");
            index.push(*kind as u8);
            index.extend_from_slice(digest.as_bytes());
            index.extend_from_slice(&offset.to_le_bytes());
            index.extend_from_slice(&len.to_le_bytes());
            index.extend_from_slice(&within.to_le_bytes());
            index.extend_from_slice(&size.to_le_bytes());
            within += size;
        }
        start = end;
    }
    let entries_sum = blake3::hash(&out[MAGIC.len()..]);
    let index_at = out.len() as u64;
    out.extend_from_slice(&index);
    out.extend_from_slice(&index_at.to_le_bytes());
    out.extend_from_slice(&(entries.len() as u64).to_le_bytes());
    out.extend_from_slice(blake3::hash(&index).as_bytes());
    out.extend_from_slice(entries_sum.as_bytes());
    out.extend_from_slice(END);
    out
}

/// Every pack file in `dir`, sorted.
pub(crate) fn pack_files(dir: &Path) -> Vec<PathBuf> {
    let mut v: Vec<PathBuf> = fs::read_dir(dir)
        .into_iter()
        .flatten()
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "pack"))
        .collect();
    v.sort();
    v
}

/// Writes `entries` as a pack into `dir`; gives its path.
pub(crate) fn write_pack(
    store_root: &Path,
    dir: &Path,
    entries: &mut [(Key, Vec<u8>)],
) -> Result<PathBuf> {
    let bytes = encode(entries);
    let name = &blake3::hash(&bytes).to_hex()[..32];
    let path = dir.join(format!("{name}.pack"));
    write_atomic(store_root, &path, &bytes)?;
    Ok(path)
}

/// The in-memory index of every pack read so far.
#[derive(Debug, Default)]
struct Index {
    packs: Vec<Arc<Pack>>,
    names: HashSet<OsString>,
    map: HashMap<Key, Loc>,
    /// When the directory was last listed, and its mtime then.
    listed: Option<(SystemTime, SystemTime)>,
    /// When a miss last checked whether the listing may be stale.
    checked: Option<Instant>,
}

impl Index {
    /// The index, read from `dir` on first use.
    fn loaded<'a>(index: &'a mut Option<Index>, dir: &Path) -> &'a mut Index {
        index.get_or_insert_with(|| Index::read(dir))
    }

    /// An index of every pack now in `dir`.
    fn read(dir: &Path) -> Index {
        let mut index = Index::default();
        index.refresh(dir);
        index
    }

    fn add(&mut self, mut pack: Pack) {
        let n = u32::try_from(self.packs.len()).expect("fewer than 4 billion packs");
        for (key, slot) in std::mem::take(&mut pack.entries) {
            self.map.insert(key, Loc { pack: n, slot });
        }
        if let Some(name) = pack.path.file_name() {
            self.names.insert(name.to_owned());
        }
        self.packs.push(Arc::new(pack));
    }

    /// Reads the packs not read yet. A pack that cannot be read is skipped (its entries are
    /// misses) and reported once.
    fn refresh(&mut self, dir: &Path) {
        // A pack merged away between the listing and its open has its entries in the merged
        // pack, which a listing made before the merge did not see: list again then (a few
        // times at most; merges are rare).
        for _ in 0..4 {
            let before = SystemTime::now();
            let mtime = fs::metadata(dir).and_then(|m| m.modified()).ok();
            let mut vanished = false;
            for path in pack_files(dir) {
                let Some(name) = path.file_name() else {
                    continue;
                };
                if self.names.contains(name) {
                    continue;
                }
                match Pack::open(&path) {
                    Ok(p) => self.add(p),
                    Err(_) if !path.exists() => vanished = true,
                    Err(reason) => {
                        tracing::warn!(pack = %path.display(), %reason, "ignoring an unreadable pack");
                        self.names.insert(name.to_owned());
                    }
                }
            }
            self.listed = mtime.map(|m| (before, m));
            if !vanished {
                break;
            }
        }
    }

    /// Whether a pack may have appeared since the last listing: the directory's mtime moved,
    /// or the listing was so close to the mtime that a rename in the same clock tick could
    /// have been missed.
    ///
    /// Checked at most every 10 ms: a lookup that misses a pack written meanwhile only builds
    /// again what another process built (a build that waited for another's lock re-lists).
    fn may_be_stale(&mut self, dir: &Path) -> bool {
        let Some((listed_at, mtime)) = self.listed else {
            return true;
        };
        let now = Instant::now();
        if self
            .checked
            .is_some_and(|at| now.duration_since(at) < Duration::from_millis(10))
        {
            return false;
        }
        self.checked = Some(now);
        let current = fs::metadata(dir).and_then(|m| m.modified()).ok();
        current != Some(mtime)
            || listed_at
                .duration_since(mtime)
                .map_or(true, |d| d < Duration::from_millis(50))
    }
}

/// Entries not written yet, and the derivation stripes they keep locked.
#[derive(Debug, Default)]
struct Pending {
    entries: HashMap<Key, Vec<u8>>,
    bytes: usize,
    since: Option<Instant>,
    /// How long the builds recorded by the pending entries took.
    cost: Duration,
}

#[derive(Debug)]
struct State {
    pending: Pending,
    index: Option<Index>,
    /// Set after waiting for another process's lock: its entries may be in a new pack.
    stale: bool,
    flusher: Option<std::sync::mpsc::Sender<()>>,
    flusher_thread: Option<std::thread::JoinHandle<()>>,
}

/// A held stripe lock: the file it is held through, the builds using it, and whether a pending
/// entry keeps it (an entry written here must be visible before another process may build it).
#[derive(Debug)]
struct Held {
    _file: File,
    users: usize,
    pinned: bool,
}

#[derive(Debug)]
pub(crate) struct Shared {
    store_root: PathBuf,
    dir: PathBuf,
    state: Mutex<State>,
    stripes: Mutex<HashMap<u8, Held>>,
}

/// The packs of one store, with this process's pending entries and held stripe locks.
#[derive(Debug)]
pub(crate) struct Packs {
    shared: Arc<Shared>,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(std::sync::PoisonError::into_inner)
}

impl Packs {
    pub(crate) fn new(store_root: &Path) -> Self {
        Self {
            shared: Arc::new(Shared {
                store_root: store_root.to_owned(),
                dir: store_root.join("actions"),
                state: Mutex::new(State {
                    pending: Pending::default(),
                    index: None,
                    stale: false,
                    flusher: None,
                    flusher_thread: None,
                }),
                stripes: Mutex::new(HashMap::new()),
            }),
        }
    }

    #[cfg(test)]
    pub(crate) fn dir(&self) -> &Path {
        &self.shared.dir
    }

    /// An entry's bytes: pending here, else in a pack (re-listing the packs once when one may
    /// have appeared since). `Ok(None)` when there is none.
    pub(crate) fn get(&self, key: Key) -> Result<Option<Vec<u8>>> {
        let (pack, loc) = {
            let mut st = lock(&self.shared.state);
            if let Some(b) = st.pending.entries.get(&key) {
                return Ok(Some(b.clone()));
            }
            let stale = std::mem::take(&mut st.stale);
            let dir = &self.shared.dir;
            let index = Index::loaded(&mut st.index, dir);
            if !index.map.contains_key(&key) && (stale || index.may_be_stale(dir)) {
                index.refresh(dir);
            }
            let Some(loc) = index.map.get(&key).copied() else {
                return Ok(None);
            };
            (Arc::clone(&index.packs[loc.pack as usize]), loc)
        };
        pack.read(loc.slot)
            .map(Some)
            .map_err(StoreError::io("read", &pack.path))
    }

    /// Whether an entry exists (pending or packed).
    pub(crate) fn contains(&self, key: Key) -> bool {
        let mut st = lock(&self.shared.state);
        if st.pending.entries.contains_key(&key) {
            return true;
        }
        Index::loaded(&mut st.index, &self.shared.dir)
            .map
            .contains_key(&key)
    }

    /// Adds an entry; it is written with the next pack. An action entry keeps its derivation's
    /// stripe locked until then.
    pub(crate) fn put(&self, key: Key, bytes: Vec<u8>) -> Result<()> {
        self.put_costed(key, bytes, Duration::ZERO)
    }

    /// [`Packs::put`] of an entry whose build took `cost`.
    pub(crate) fn put_costed(&self, key: Key, bytes: Vec<u8>, cost: Duration) -> Result<()> {
        let full = {
            let mut st = lock(&self.shared.state);
            self.start_flusher(&mut st);
            let p = &mut st.pending;
            p.since.get_or_insert_with(Instant::now);
            p.bytes += bytes.len();
            p.cost += cost;
            p.entries.insert(key, bytes);
            if key.0 == Kind::Action {
                if let Some(h) = lock(&self.shared.stripes).get_mut(&stripe_of(&key.1)) {
                    h.pinned = true;
                }
            }
            p.entries.len() >= FLUSH_COUNT || p.bytes >= FLUSH_BYTES || p.cost >= FLUSH_COST
        };
        if full {
            self.flush()?;
        }
        Ok(())
    }

    /// Writes the pending entries as one pack, releases the stripes they kept locked, and
    /// merges packs when a size class has filled up.
    pub(crate) fn flush(&self) -> Result<()> {
        self.shared.flush(Duration::ZERO)
    }

    fn start_flusher(&self, st: &mut State) {
        if st.flusher.is_some() {
            return;
        }
        let (tx, rx) = std::sync::mpsc::channel::<()>();
        let shared = Arc::downgrade(&self.shared);
        let thread = std::thread::Builder::new()
            .name("kiln-pack-flusher".to_owned())
            .spawn(move || loop {
                match rx.recv_timeout(FLUSH_AGE / 2) {
                    Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                        let Some(shared) = shared.upgrade() else {
                            return;
                        };
                        if let Err(e) = shared.flush(FLUSH_AGE) {
                            tracing::warn!(error = %kiln_core::error_chain::error_chain(&e), "could not write the action cache; will retry");
                        }
                    }
                    _ => return,
                }
            });
        match thread {
            Ok(t) => {
                st.flusher = Some(tx);
                st.flusher_thread = Some(t);
            }
            // No thread: entries are written when full and at the end, which is still correct.
            Err(e) => tracing::debug!(error = %e, "no pack flusher thread"),
        }
    }

    /// Takes the lock of `drv`'s stripe (one of 256: the object shard directory named by its
    /// first byte, so no lock file is ever created). Builds in this process share a held
    /// stripe; another process waits until no build here uses it and no pending entry keeps it.
    pub(crate) fn lock_stripe(&self, objects: &Path, drv: &Digest) -> Result<StripeGuard> {
        let stripe = stripe_of(drv);
        let mut guard = StripeGuard {
            shared: Arc::clone(&self.shared),
            stripe,
            fresh: false,
        };
        let dir = objects.join(format!("{stripe:02x}"));
        let file = {
            let mut held = lock(&self.shared.stripes);
            if let Some(h) = held.get_mut(&stripe) {
                h.users += 1;
                return Ok(guard);
            }
            let file = open_dir(&dir)?;
            match file.try_lock() {
                Ok(()) => {
                    guard.fresh = true;
                    held.insert(
                        stripe,
                        Held {
                            _file: file,
                            users: 1,
                            pinned: false,
                        },
                    );
                    return Ok(guard);
                }
                Err(std::fs::TryLockError::WouldBlock) => file,
                Err(std::fs::TryLockError::Error(e)) => {
                    return Err(StoreError::io("lock", &dir)(e))
                }
            }
        };
        // Another process holds it. Write what is pending first: it may be waiting for a
        // stripe this process keeps, and its entries may be what this build is about to need.
        self.flush()?;
        // Blocking: while a thread here holds the stripe through another file, flock makes
        // this one wait too, so no stripe is ever held here twice.
        file.lock().map_err(StoreError::io("lock", &dir))?;
        lock(&self.shared.stripes).insert(
            stripe,
            Held {
                _file: file,
                users: 1,
                pinned: false,
            },
        );
        lock(&self.shared.state).stale = true;
        guard.fresh = true;
        Ok(guard)
    }

    /// Reads the packs written since the index was last listed, now (after taking a stripe
    /// that another process may have written under).
    pub(crate) fn refresh(&self) {
        let mut st = lock(&self.shared.state);
        let dir = &self.shared.dir;
        Index::loaded(&mut st.index, dir).refresh(dir);
    }

    /// Every entry of every pack, read fresh from disk (for `gc` and `verify`, which hold the
    /// store exclusively or only read).
    pub(crate) fn all_packs(&self) -> Vec<std::result::Result<Pack, (PathBuf, String)>> {
        pack_files(&self.shared.dir)
            .into_iter()
            .map(|p| Pack::open(&p).map_err(|e| (p, e)))
            .collect()
    }

    /// Replaces `old` packs by one holding `entries` (or by none, when empty), and forgets the
    /// in-memory index so the next lookup reads the packs again.
    pub(crate) fn replace(&self, old: &[PathBuf], mut entries: Vec<(Key, Vec<u8>)>) -> Result<()> {
        if !entries.is_empty() {
            write_pack(&self.shared.store_root, &self.shared.dir, &mut entries)?;
        }
        for p in old {
            match fs::remove_file(p) {
                Ok(()) => {}
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                Err(e) => return Err(StoreError::io("delete", p)(e)),
            }
        }
        lock(&self.shared.state).index = None;
        Ok(())
    }
}

fn open_dir(dir: &Path) -> Result<File> {
    match File::open(dir) {
        Ok(f) => Ok(f),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            fs::create_dir_all(dir).map_err(StoreError::io("create directory", dir))?;
            File::open(dir).map_err(StoreError::io("open", dir))
        }
        Err(e) => Err(StoreError::io("open", dir)(e)),
    }
}

/// A pack's size class for merging: powers of four of its file's length.
fn size_class(len: u64) -> u32 {
    len.max(1).ilog2() / 2
}

fn stripe_of(d: &Digest) -> u8 {
    d.as_bytes()[0]
}

impl Shared {
    /// Writes the pending entries if there are any at least `min_age` old.
    fn flush(&self, min_age: Duration) -> Result<()> {
        let mut st = lock(&self.state);
        let due = st
            .pending
            .since
            .is_some_and(|since| since.elapsed() >= min_age);
        if !due || st.pending.entries.is_empty() {
            return Ok(());
        }
        let mut entries: Vec<(Key, Vec<u8>)> = st.pending.entries.drain().collect();
        st.pending.bytes = 0;
        st.pending.since = None;
        st.pending.cost = Duration::ZERO;
        let path = match write_pack(&self.store_root, &self.dir, &mut entries) {
            Ok(p) => p,
            Err(e) => {
                // Keep them pending: the next flush tries again.
                st.pending.bytes = entries.iter().map(|(_, b)| b.len()).sum();
                st.pending.since = Some(Instant::now());
                st.pending.entries.extend(entries);
                return Err(e);
            }
        };
        if let Some(index) = st.index.as_mut() {
            match Pack::open(&path) {
                Ok(p) => index.add(p),
                Err(_) => index.listed = None,
            }
            // Every pack read stays open (a merge must not pull entries from under a reader),
            // so a long build that writes many packs would run out of file descriptors: past
            // a bound, the index is read again from the directory, which merging keeps small.
            if index.packs.len() > MAX_OPEN_PACKS {
                *index = Index::read(&self.dir);
            }
        }
        // Unpinned while the state is still locked: an entry put after the drain (by another
        // thread) pins its stripe again only once this is done, so no stripe is released while
        // an entry under it is pending (another process would build that derivation again).
        let mut held = lock(&self.stripes);
        held.retain(|_, h| {
            h.pinned = false;
            h.users > 0
        });
        drop(held);
        drop(st);
        self.merge_full_classes();
        Ok(())
    }

    /// Merges the packs of any size class that holds four or more, while one does. Only one
    /// process merges at a time (a try-lock on the packs' directory); the others skip it.
    fn merge_full_classes(&self) {
        let Ok(dir_lock) = File::open(&self.dir) else {
            return;
        };
        if dir_lock.try_lock().is_err() {
            return;
        }
        for _ in 0..8 {
            // Classes from the files' sizes: only the packs of a full class are opened (opening
            // every pack after every flush read every index each time, which made a 1M-rule
            // cold build superlinear).
            let mut classes: HashMap<u32, Vec<PathBuf>> = HashMap::new();
            for path in pack_files(&self.dir) {
                let Ok(len) = fs::metadata(&path).map(|m| m.len()) else {
                    continue;
                };
                classes.entry(size_class(len)).or_default().push(path);
            }
            let Some(paths) = classes.into_values().find(|g| g.len() >= 4) else {
                return;
            };
            let Ok(group) = paths
                .iter()
                .map(|p| Pack::open(p))
                .collect::<std::result::Result<Vec<Pack>, String>>()
            else {
                // One merged away or unreadable meanwhile: verify's business, not a merge's.
                return;
            };
            let mut entries: HashMap<Key, Vec<u8>> = HashMap::new();
            for p in &group {
                for (key, bytes) in p.read_all() {
                    match bytes {
                        Ok(b) => {
                            entries.insert(key, b);
                        }
                        Err(_) => return,
                    }
                }
            }
            let mut entries: Vec<_> = entries.into_iter().collect();
            if write_pack(&self.store_root, &self.dir, &mut entries).is_err() {
                return;
            }
            for p in &group {
                let _ = fs::remove_file(&p.path);
            }
            // Readers keep the merged packs' files open; the merge is found at their next
            // listing.
        }
    }
}

impl Drop for Packs {
    fn drop(&mut self) {
        let thread = {
            let mut st = lock(&self.shared.state);
            st.flusher = None;
            st.flusher_thread.take()
        };
        if let Some(t) = thread {
            let _ = t.join();
        }
        if let Err(e) = self.flush() {
            tracing::warn!(error = %kiln_core::error_chain::error_chain(&e), "could not write the action cache");
        }
    }
}

/// A derivation's stripe lock, held while it is built.
#[derive(Debug)]
pub(crate) struct StripeGuard {
    shared: Arc<Shared>,
    stripe: u8,
    /// The stripe's file lock was taken by this call (no build here held it): another process
    /// may have written entries under it since this one last looked.
    pub(crate) fresh: bool,
}

impl Drop for StripeGuard {
    fn drop(&mut self) {
        let mut held = lock(&self.shared.stripes);
        if let Some(h) = held.get_mut(&self.stripe) {
            h.users -= 1;
            if h.users == 0 && !h.pinned {
                held.remove(&self.stripe);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u8) -> Key {
        (Kind::Action, Digest::of(&[n]))
    }

    /// A directory with what packs need of a store: `actions/` and `tmp/`.
    fn store_dir() -> tempfile::TempDir {
        let d = tempfile::tempdir().unwrap();
        fs::create_dir_all(d.path().join("actions")).unwrap();
        fs::create_dir_all(d.path().join("tmp")).unwrap();
        d
    }

    #[test]
    fn a_pack_round_trips_and_refuses_a_changed_index() {
        let d = tempfile::tempdir().unwrap();
        // About 60 KB in all, with one entry larger than a block: several blocks.
        let size = |n: u8| usize::from(n) * 40 + if n == 7 { 20_000 } else { 0 };
        let mut entries: Vec<(Key, Vec<u8>)> =
            (0..50).map(|n| (key(n), vec![n; size(n)])).collect();
        let path = d.path().join("x.pack");
        fs::write(&path, encode(&mut entries)).unwrap();
        let pack = Pack::open(&path).unwrap();
        assert_eq!(pack.entries.len(), 50);
        pack.check_entries().unwrap();
        let blocks: HashSet<u64> = pack.entries.iter().map(|(_, s)| s.offset).collect();
        assert!(blocks.len() > 3, "{} blocks", blocks.len());
        for &(k, slot) in &pack.entries {
            let n = (0..50).find(|n| key(*n) == k).unwrap();
            assert_eq!(pack.read(slot).unwrap(), vec![n; size(n)]);
        }
        let mut bytes = fs::read(&path).unwrap();
        let i = bytes.len() - TRAILER - 3;
        bytes[i] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(Pack::open(&path).unwrap_err().contains("checksum"));
        // A flipped entry byte passes the index check and fails the entries check.
        let mut bytes = fs::read(&path).unwrap();
        bytes[i] ^= 1;
        bytes[MAGIC.len() + 3] ^= 1;
        fs::write(&path, &bytes).unwrap();
        assert!(Pack::open(&path).unwrap().check_entries().is_err());
    }

    #[test]
    fn a_truncated_pack_is_refused() {
        let d = tempfile::tempdir().unwrap();
        let mut entries = vec![(key(1), b"hello".to_vec())];
        let bytes = encode(&mut entries);
        let path = d.path().join("x.pack");
        for cut in [0, 5, bytes.len() / 2, bytes.len() - 1] {
            fs::write(&path, &bytes[..cut]).unwrap();
            assert!(Pack::open(&path).is_err(), "cut at {cut}");
        }
    }

    #[test]
    fn pending_entries_are_visible_and_written_on_flush_and_merged_by_class() {
        let d = store_dir();
        let packs = Packs::new(d.path());
        for n in 0..64u8 {
            packs.put(key(n), vec![n; 10]).unwrap();
            assert_eq!(packs.get(key(n)).unwrap(), Some(vec![n; 10]));
            packs.flush().unwrap();
        }
        // 64 flushes of one small entry: merged as size classes filled (at most three packs
        // a class), never 64 files.
        let files = pack_files(packs.dir()).len();
        assert!(files <= 8, "{files} packs");
        let other = Packs::new(d.path());
        for n in 0..64u8 {
            assert_eq!(other.get(key(n)).unwrap(), Some(vec![n; 10]));
        }
        assert_eq!(other.get(key(99)).unwrap(), None);
    }

    #[test]
    fn a_long_build_does_not_keep_every_pack_it_wrote_open() {
        let d = store_dir();
        let packs = Packs::new(d.path());
        assert_eq!(packs.get(key(0)).unwrap(), None); // loads the index
        for n in 0..=255u8 {
            packs.put(key(n), vec![n; 100]).unwrap();
            packs.flush().unwrap();
        }
        let open = lock(&packs.shared.state)
            .index
            .as_ref()
            .unwrap()
            .packs
            .len();
        assert!(open <= MAX_OPEN_PACKS, "{open} packs open");
        for n in 0..=255u8 {
            assert_eq!(packs.get(key(n)).unwrap(), Some(vec![n; 100]));
        }
    }

    #[test]
    fn a_pack_written_by_another_process_is_found() {
        let d = store_dir();
        let reader = Packs::new(d.path());
        assert_eq!(reader.get(key(1)).unwrap(), None);
        let writer = Packs::new(d.path());
        writer.put(key(1), b"x".to_vec()).unwrap();
        drop(writer);
        // Misses look for new packs at most every 10 ms.
        std::thread::sleep(Duration::from_millis(15));
        assert_eq!(reader.get(key(1)).unwrap(), Some(b"x".to_vec()));
    }
}
