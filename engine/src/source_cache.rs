//! A stat cache for source files, like git's index: when a file's size, mtime, ctime and inode
//! are unchanged, its content hash and the references its kind found in it are reused instead of
//! reading the file again. It only saves I/O: every hash is still a content hash, and an entry
//! that does not match the file's metadata exactly is ignored.
//!
//! Racily clean files (modified within [`RACY_WINDOW`] of the cache being written, where a later
//! edit could keep the same mtime) are not cached.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use kiln_core::interpolate::{references, Reference};
use kiln_core::sources::SourceEntry;
use kiln_core::{Digest, RelPath};
use serde::{Deserialize, Serialize};

/// Files modified this recently are not cached.
pub const RACY_WINDOW: Duration = Duration::from_secs(2);

const FORMAT: u32 = 1;

/// What identifies a file's content without reading it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Stat {
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
    ino: u64,
    executable: bool,
}

impl Stat {
    /// Stats `path`.
    pub fn of(path: &Path) -> std::io::Result<Self> {
        Ok(Self::from_metadata(&std::fs::metadata(path)?))
    }

    /// Whether the file's mtime or ctime is at or after `ns` (nanoseconds since the epoch):
    /// then a later edit may have kept the same stat data, and only its content can tell.
    pub fn changed_since(&self, ns: i128) -> bool {
        self.mtime_ns >= ns || self.ctime_ns >= ns
    }

    /// The stat data of `m`.
    pub fn from_metadata(m: &std::fs::Metadata) -> Self {
        Self {
            size: m.len(),
            mtime_ns: i128::from(m.mtime()) * 1_000_000_000 + i128::from(m.mtime_nsec()),
            ctime_ns: i128::from(m.ctime()) * 1_000_000_000 + i128::from(m.ctime_nsec()),
            ino: m.ino(),
            executable: m.mode() & 0o111 != 0,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Entry {
    stat: Stat,
    digest: [u8; 32],
    /// `kind@version` -> the references that kind found, as written (`${var.x}`).
    refs: Vec<(String, Vec<String>)>,
}

#[derive(Debug, Default, Serialize, Deserialize)]
struct File {
    format: u32,
    entries: Vec<(String, Entry)>,
}

/// The cache: read once before validation, updated during it, written after the build.
#[derive(Debug, Default)]
pub struct SourceCache {
    entries: HashMap<String, Entry>,
    updates: Mutex<Vec<(String, Entry)>>,
}

/// A cache hit: the entry for the derivation and the references.
pub struct Hit {
    /// The source entry.
    pub entry: SourceEntry,
    /// The references, if this kind's scan is cached.
    pub refs: Option<Vec<Reference>>,
}

impl SourceCache {
    /// Decodes a cache file; anything unreadable gives an empty cache.
    pub fn decode(bytes: Option<&[u8]>) -> Self {
        let file: File = bytes
            .and_then(|b| postcard::from_bytes(b).ok())
            .unwrap_or_default();
        if file.format != FORMAT {
            return Self::default();
        }
        Self {
            entries: file.entries.into_iter().collect(),
            updates: Mutex::default(),
        }
    }

    /// Looks `path` up by its current metadata.
    pub fn lookup(&self, path: &RelPath, stat: &Stat, kind_key: &str) -> Option<Hit> {
        let e = self
            .entries
            .get(path.as_str())
            .filter(|e| e.stat == *stat)?;
        let refs = e.refs.iter().find(|(k, _)| k == kind_key).map(|(_, r)| {
            r.iter()
                .filter_map(|s| references(s).ok())
                .flatten()
                .collect()
        });
        Some(Hit {
            entry: SourceEntry {
                path: path.clone(),
                executable: stat.executable,
                digest: Digest::from_bytes(e.digest),
            },
            refs,
        })
    }

    /// Records what was learned about a file.
    pub fn record(
        &self,
        path: &RelPath,
        stat: Stat,
        digest: &Digest,
        kind_key: &str,
        refs: &[Reference],
    ) {
        let mut all = self
            .entries
            .get(path.as_str())
            .filter(|e| e.stat == stat && e.digest == *digest.as_bytes())
            .map(|e| e.refs.clone())
            .unwrap_or_default();
        all.retain(|(k, _)| k != kind_key);
        all.push((
            kind_key.to_owned(),
            refs.iter().map(ToString::to_string).collect(),
        ));
        let entry = Entry {
            stat,
            digest: *digest.as_bytes(),
            refs: all,
        };
        self.updates
            .lock()
            .expect("not poisoned")
            .push((path.to_string(), entry));
    }

    /// The new cache file, or `None` when nothing changed.
    pub fn encode_if_changed(self, now: SystemTime) -> Option<Vec<u8>> {
        let updates = self.updates.into_inner().expect("not poisoned");
        if updates.is_empty() {
            return None;
        }
        let cutoff = now
            .checked_sub(RACY_WINDOW)
            .unwrap_or(SystemTime::UNIX_EPOCH);
        let cutoff_ns = cutoff
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i128);
        let mut entries = self.entries;
        for (path, entry) in updates {
            if entry.stat.mtime_ns < cutoff_ns && entry.stat.ctime_ns < cutoff_ns {
                entries.insert(path, entry);
            } else {
                entries.remove(&path);
            }
        }
        let mut list: Vec<(String, Entry)> = entries.into_iter().collect();
        list.sort_by(|a, b| a.0.cmp(&b.0));
        postcard::to_stdvec(&File {
            format: FORMAT,
            entries: list,
        })
        .ok()
    }
}

/// The start of the racy window before `now`, in nanoseconds since the epoch: a file whose
/// mtime or ctime is at or after it may have been edited again without a change of stat data.
pub fn racy_since(now: SystemTime) -> i128 {
    now.checked_sub(RACY_WINDOW)
        .and_then(|t| t.duration_since(SystemTime::UNIX_EPOCH).ok())
        .map_or(0, |d| d.as_nanos() as i128)
}

/// A source read again for its build, with the digest its derivation holds.
pub enum ReadAgain {
    /// The content is the content that was hashed.
    Same(Vec<u8>),
    /// The file changed since it was hashed.
    Changed,
}

/// Reads the source at `path` again for its build. When the file's stat data is the stat data
/// `hashed_at` taken before it was hashed, both before and after this read, and it was not
/// modified within [`RACY_WINDOW`], its content is the content hashed, as the stat cache already
/// trusts from one run to the next, and it is not hashed a second time. Otherwise it is hashed
/// and compared with `digest`.
pub fn read_again(
    path: &Path,
    hashed_at: &Stat,
    digest: &Digest,
    now: SystemTime,
) -> std::io::Result<ReadAgain> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?;
    let before = Stat::from_metadata(&file.metadata()?);
    let mut content = Vec::with_capacity(before.size as usize);
    file.read_to_end(&mut content)?;
    let after = Stat::from_metadata(&file.metadata()?);
    let unchanged =
        before == *hashed_at && after == before && !before.changed_since(racy_since(now));
    Ok(if unchanged || Digest::of(&content) == *digest {
        ReadAgain::Same(content)
    } else {
        ReadAgain::Changed
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_source_read_again_is_hashed_unless_its_stat_is_old_and_unchanged() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "a: 1\n").unwrap();
        let stat = Stat::of(&f).unwrap();
        let digest = Digest::of(b"a: 1\n");
        let wrong = Digest::of(b"something else");
        let later = SystemTime::now() + Duration::from_secs(10);
        let same = |r: ReadAgain| matches!(r, ReadAgain::Same(c) if c == b"a: 1\n");
        // Old and unchanged: trusted without hashing (a wrong digest is not even looked at).
        assert!(same(read_again(&f, &stat, &wrong, later).unwrap()));
        // Recent: hashed, so the wrong digest is caught and the right one accepted.
        let now = SystemTime::now();
        assert!(matches!(
            read_again(&f, &stat, &wrong, now).unwrap(),
            ReadAgain::Changed
        ));
        assert!(same(read_again(&f, &stat, &digest, now).unwrap()));
        // Rewritten since it was hashed: its stat differs, so it is hashed and found changed.
        std::fs::write(&f, "a: 2\n").unwrap();
        assert!(matches!(
            read_again(&f, &stat, &digest, later).unwrap(),
            ReadAgain::Changed
        ));
        // Another stat (another inode, same content): hashed, and found the same.
        std::fs::write(&f, "a: 1\n").unwrap();
        let other = Stat {
            ino: stat.ino + 1,
            ..stat
        };
        assert!(same(read_again(&f, &other, &digest, later).unwrap()));
    }

    #[test]
    fn hits_only_on_identical_metadata_and_skips_racy_files() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("a.yaml");
        std::fs::write(&f, "x: ${var.a}\n").unwrap();
        let stat = Stat::of(&f).unwrap();
        let path = RelPath::new("a.yaml").unwrap();
        let digest = Digest::of(b"x: ${var.a}\n");
        let cache = SourceCache::default();
        cache.record(
            &path,
            stat,
            &digest,
            "manifest@1",
            &[Reference::Var("a".into())],
        );
        // Written "now": the file is racily clean, so it is not cached.
        let bytes = cache.encode_if_changed(SystemTime::now());
        let cache = SourceCache::decode(bytes.as_deref());
        assert!(cache.lookup(&path, &stat, "manifest@1").is_none());
        // Written later: cached.
        let cache2 = SourceCache::default();
        cache2.record(
            &path,
            stat,
            &digest,
            "manifest@1",
            &[Reference::Var("a".into())],
        );
        let bytes = cache2.encode_if_changed(SystemTime::now() + Duration::from_secs(10));
        let cache = SourceCache::decode(bytes.as_deref());
        let hit = cache.lookup(&path, &stat, "manifest@1").unwrap();
        assert_eq!(hit.entry.digest, digest);
        assert_eq!(hit.refs.unwrap(), vec![Reference::Var("a".into())]);
        assert!(cache
            .lookup(&path, &stat, "template@1")
            .unwrap()
            .refs
            .is_none());
        // Another mtime or size misses.
        let other = Stat {
            size: stat.size + 1,
            ..stat
        };
        assert!(cache.lookup(&path, &other, "manifest@1").is_none());
        assert!(SourceCache::decode(Some(b"garbage")).entries.is_empty());
    }
}
