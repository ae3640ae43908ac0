//! Deterministic tar+zstd archives of [`Tree`]s, and a strict unpacker for untrusted ones.
//!
//! Packing: entries sorted by path, regular files and symlinks only (directories are implied),
//! mtime 0, uid/gid 0, empty user/group names, mode 0644 or 0755 (symlinks 0777), zstd level 1.
//! The same tree always packs to the same bytes, but identity is the output hash of the tree,
//! never a hash of these bytes.
//!
//! Unpacking validates every entry itself and refuses (never skips) absolute paths, `..`,
//! duplicate paths, hard links, devices, FIFOs and other special entries, symlinks that escape
//! the tree, and output beyond the configured limits.

use std::io::{Read, Write};

use kiln_core::tree::{Entry, Tree};
use kiln_core::{Digest, RelPath};

/// zstd compression level: 1, not zstd's default 3. On the YAML of `benches/ingest.sh` level 3
/// cost about 40% more CPU for archives of the same size (level 1's were 1% smaller), and
/// ingest is CPU-bound on small machines. Archives are not identity (the tree's output
/// hash is), so the level can change without changing any hash.
pub const ZSTD_LEVEL: i32 = 1;

/// Limits applied while unpacking.
#[derive(Clone, Copy, Debug)]
pub struct UnpackLimits {
    /// Maximum total size of all files, in bytes.
    pub max_total_bytes: u64,
    /// Maximum number of entries.
    pub max_entries: u64,
}

impl Default for UnpackLimits {
    /// 1 GiB of content and a million entries per artifact: far above what rendered platform
    /// artifacts need, and low enough that a hostile archive cannot exhaust a CI runner's
    /// memory. `KILN_MAX_ARTIFACT_BYTES` raises or lowers the byte limit.
    fn default() -> Self {
        let max_total_bytes = std::env::var("KILN_MAX_ARTIFACT_BYTES")
            .ok()
            .and_then(|v| v.trim().parse().ok())
            .unwrap_or(DEFAULT_MAX_ARTIFACT_BYTES);
        Self {
            max_total_bytes,
            max_entries: 1_000_000,
        }
    }
}

/// The default limit on an artifact's total file size.
pub const DEFAULT_MAX_ARTIFACT_BYTES: u64 = 1 << 30;

/// Memory reserved up front for one file at most: a declared size is only a claim until the
/// bytes arrive, so larger files grow as they are read.
const MAX_PREALLOCATION: u64 = 16 << 20;

/// Why an archive was refused.
#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    /// Reading the stream failed (truncated, bad zstd, bad tar).
    #[error("unreadable archive")]
    Read(#[source] std::io::Error),
    /// An entry path that is absolute, climbs out or is not normalized.
    #[error("entry path `{path}` is not a safe relative path")]
    UnsafePath {
        /// The path as written in the archive.
        path: String,
        /// Why.
        #[source]
        source: kiln_core::relpath::RelPathError,
    },
    /// A device, FIFO, hard link or other special entry.
    #[error("entry `{path}` has forbidden type {kind:?}")]
    ForbiddenType {
        /// The entry.
        path: String,
        /// Its tar type.
        kind: tar::EntryType,
    },
    /// The same path twice.
    #[error("entry `{0}` appears twice")]
    Duplicate(String),
    /// More bytes or entries than allowed.
    #[error("archive expands beyond the limit ({0})")]
    TooLarge(String),
    /// The entries do not form a valid tree (escaping symlink, file/directory conflict).
    #[error("invalid tree")]
    Tree(#[source] kiln_core::tree::TreeError),
}

/// Trees larger than this are compressed by a multithreaded streaming encoder; smaller ones by a
/// per-thread reusable compressor (a zstd context costs about a megabyte to set up).
const STREAMING_THRESHOLD: u64 = 8 << 20;

thread_local! {
    static COMPRESSOR: std::cell::RefCell<Option<zstd::bulk::Compressor<'static>>> =
        const { std::cell::RefCell::new(None) };
}

/// Packs `tree` into deterministic tar+zstd bytes.
pub fn pack(tree: &Tree) -> std::io::Result<Vec<u8>> {
    if tree.content_size() >= STREAMING_THRESHOLD {
        return pack_streaming(tree);
    }
    let capacity = tree.content_size() as usize + 1024 * (tree.len() + 2);
    let tar = write_tar(tree, Vec::with_capacity(capacity))?;
    COMPRESSOR.with(|c| {
        let mut c = c.borrow_mut();
        if c.is_none() {
            *c = Some(zstd::bulk::Compressor::new(ZSTD_LEVEL)?);
        }
        c.as_mut().expect("set above").compress(&tar)
    })
}

fn pack_streaming(tree: &Tree) -> std::io::Result<Vec<u8>> {
    let buf = Vec::with_capacity(tree.content_size() as usize / 4 + 1024);
    let encoder = write_tar(tree, encoder(buf, true)?)?;
    let mut out = encoder.finish()?;
    out.flush()?;
    Ok(out)
}

/// A zstd stream encoder at [`ZSTD_LEVEL`], with a worker per core when `multithread` (for
/// large artifacts).
pub(crate) fn encoder<W: Write>(
    out: W,
    multithread: bool,
) -> std::io::Result<zstd::Encoder<'static, W>> {
    let mut encoder = zstd::Encoder::new(out, ZSTD_LEVEL)?;
    let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
    if multithread && workers > 1 {
        encoder.multithread(workers)?;
    }
    Ok(encoder)
}

/// A tar stream with the archive's deterministic headers (see the module docs).
pub(crate) struct TarWriter<W: Write> {
    builder: tar::Builder<W>,
}

impl<W: Write> TarWriter<W> {
    pub(crate) fn new(out: W) -> Self {
        let mut builder = tar::Builder::new(out);
        builder.mode(tar::HeaderMode::Deterministic);
        Self { builder }
    }

    fn header(kind: tar::EntryType, mode: u32, size: u64) -> tar::Header {
        let mut header = tar::Header::new_gnu();
        header.set_mtime(0);
        header.set_uid(0);
        header.set_gid(0);
        header.set_entry_type(kind);
        header.set_mode(mode);
        header.set_size(size);
        header
    }

    /// A regular file of `size` bytes, read from `content` (which must yield exactly that).
    pub(crate) fn file(
        &mut self,
        path: &str,
        executable: bool,
        size: u64,
        content: impl Read,
    ) -> std::io::Result<()> {
        let mode = if executable { 0o755 } else { 0o644 };
        let mut header = Self::header(tar::EntryType::Regular, mode, size);
        self.builder.append_data(&mut header, path, content)
    }

    /// A symlink.
    pub(crate) fn symlink(&mut self, path: &str, target: &str) -> std::io::Result<()> {
        let mut header = Self::header(tar::EntryType::Symlink, 0o777, 0);
        self.builder.append_link(&mut header, path, target)
    }

    /// The stream the archive was written to.
    pub(crate) fn finish(self) -> std::io::Result<W> {
        self.builder.into_inner()
    }
}

fn write_tar<W: Write>(tree: &Tree, out: W) -> std::io::Result<W> {
    let mut tar = TarWriter::new(out);
    for (path, entry) in tree.iter() {
        match entry {
            Entry::File {
                content,
                executable,
            } => tar.file(
                path.as_str(),
                *executable,
                content.len() as u64,
                &content[..],
            )?,
            Entry::Symlink { target } => tar.symlink(path.as_str(), target)?,
        }
    }
    tar.finish()
}

/// One entry of an archive read as a stream (see [`visit`]).
pub enum Visited<'a> {
    /// A regular file: `content` yields exactly `size` bytes (a short entry is an error when
    /// the visitor returns). Whatever the visitor leaves unread is skipped.
    File {
        /// Its path.
        path: RelPath,
        /// Whether it is executable.
        executable: bool,
        /// Its size.
        size: u64,
        /// Its content.
        content: &'a mut dyn Read,
    },
    /// A symlink.
    Symlink {
        /// Its path.
        path: RelPath,
        /// Its target.
        target: String,
    },
}

/// Reads archive bytes from `reader` as a stream and hands every entry to `f`, holding no
/// content itself: what stays in memory is what `f` keeps, plus each entry's path. Every entry
/// is checked as it comes (unsafe paths, duplicates, special types, limits); the shape of the
/// whole (escaping symlinks, a file and a directory at one path) is checked at the end, so a
/// visitor that writes to disk must treat its work as tentative until `visit` returns `Ok`.
pub fn visit<R: Read>(
    reader: R,
    limits: UnpackLimits,
    mut f: impl FnMut(Visited<'_>) -> std::io::Result<()>,
) -> Result<(), ArchiveError> {
    let decoder = zstd::Decoder::new(reader).map_err(ArchiveError::Read)?;
    // Cap the raw tar stream too, so a decompression bomb stops early: headers and padding add
    // at most 1.5 KiB per entry beyond file content.
    let cap = limits.max_total_bytes + limits.max_entries.saturating_mul(1536) + 10240;
    let mut archive = tar::Archive::new(decoder.take(cap));
    let mut shape = Tree::new();
    let mut total: u64 = 0;
    let mut count: u64 = 0;
    for entry in archive.entries().map_err(ArchiveError::Read)? {
        let mut entry = entry.map_err(ArchiveError::Read)?;
        count += 1;
        if count > limits.max_entries {
            return Err(ArchiveError::TooLarge(format!(
                "more than {} entries",
                limits.max_entries
            )));
        }
        let raw_path = String::from_utf8_lossy(&entry.path_bytes()).into_owned();
        let kind = entry.header().entry_type();
        let trimmed = raw_path.trim_end_matches('/');
        let path = RelPath::new(trimmed).map_err(|source| ArchiveError::UnsafePath {
            path: raw_path.clone(),
            source,
        })?;
        if shape.get(path.as_str()).is_some() {
            return Err(ArchiveError::Duplicate(raw_path));
        }
        match kind {
            tar::EntryType::Regular | tar::EntryType::Continuous => {
                let size = entry.header().size().map_err(ArchiveError::Read)?;
                total = total.saturating_add(size);
                if total > limits.max_total_bytes {
                    return Err(ArchiveError::TooLarge(format!(
                        "more than {} bytes",
                        limits.max_total_bytes
                    )));
                }
                let mode = entry.header().mode().map_err(ArchiveError::Read)?;
                shape.insert_placeholder(path.clone());
                let mut counted = Counted {
                    inner: &mut entry,
                    read: 0,
                };
                f(Visited::File {
                    path,
                    executable: mode & 0o111 != 0,
                    size,
                    content: &mut counted,
                })
                .map_err(ArchiveError::Read)?;
                // Whatever the visitor left is read here, so a short entry is always caught.
                let read = counted.read;
                let rest =
                    std::io::copy(&mut entry, &mut std::io::sink()).map_err(ArchiveError::Read)?;
                if read + rest != size {
                    return Err(ArchiveError::Read(std::io::Error::new(
                        std::io::ErrorKind::UnexpectedEof,
                        "truncated entry",
                    )));
                }
            }
            tar::EntryType::Symlink => {
                let target = entry
                    .link_name_bytes()
                    .map(|b| String::from_utf8_lossy(&b).into_owned())
                    .unwrap_or_default();
                shape.insert_symlink(path.clone(), target.clone());
                f(Visited::Symlink { path, target }).map_err(ArchiveError::Read)?;
            }
            tar::EntryType::Directory => {}
            other => {
                return Err(ArchiveError::ForbiddenType {
                    path: raw_path,
                    kind: other,
                });
            }
        }
    }
    shape.validate().map_err(ArchiveError::Tree)
}

/// A reader that counts what it reads.
struct Counted<'a, R> {
    inner: &'a mut R,
    read: u64,
}

impl<R: Read> Read for Counted<'_, R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.read += n as u64;
        Ok(n)
    }
}

/// Unpacks and validates archive bytes into a tree. The caller checks the tree's hash.
pub fn unpack(bytes: &[u8], limits: UnpackLimits) -> Result<Tree, ArchiveError> {
    let mut tree = Tree::new();
    visit(bytes, limits, |entry| {
        match entry {
            Visited::File {
                path,
                executable,
                size,
                content,
            } => {
                let mut buf = Vec::with_capacity(size.min(MAX_PREALLOCATION) as usize);
                content.read_to_end(&mut buf)?;
                tree.insert_file(path, buf, executable);
            }
            Visited::Symlink { path, target } => tree.insert_symlink(path, target),
        }
        Ok(())
    })?;
    Ok(tree)
}

/// What [`hash_stream`] found: the output hash of the archive's tree, and its files' content
/// digests by path (only for paths `keep` selects).
#[derive(Debug)]
pub struct Hashed {
    /// The tree's output hash.
    pub output: Digest,
    /// Digests of the selected files.
    pub digests: Vec<(RelPath, Digest)>,
}

/// The output hash of an archive read as a stream, and the content digests of the files `keep`
/// selects: memory holds a read buffer and the entries' paths, never a file. The order of the
/// entries does not matter (the canonical encoding sorts them), as for [`unpack`].
pub fn hash_stream<R: Read>(
    reader: R,
    limits: UnpackLimits,
    keep: impl Fn(&RelPath) -> bool,
) -> Result<Hashed, ArchiveError> {
    let mut canonical = kiln_core::tree::CanonicalHasher::new();
    let mut digests = Vec::new();
    visit(reader, limits, |entry| {
        match entry {
            Visited::File {
                path,
                executable,
                size,
                content,
            } => {
                let (digest, _) = Digest::of_reader(content, &mut std::io::sink())?;
                canonical.file(&path, executable, size, &digest);
                if keep(&path) {
                    digests.push((path, digest));
                }
            }
            Visited::Symlink { path, target } => canonical.symlink(&path, &target),
        }
        Ok(())
    })?;
    Ok(Hashed {
        output: canonical.finish(),
        digests,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    use kiln_core::fixtures::{rel as p, sample_tree};

    /// The shared sample, with a path longer than tar's 100-byte name field.
    fn sample() -> Tree {
        let mut t = sample_tree();
        t.insert_file(
            p(&format!("deep/{}/f", "x".repeat(200))),
            b"long".to_vec(),
            false,
        );
        t
    }

    #[test]
    fn round_trip_and_determinism() {
        let t = sample();
        let a = pack(&t).unwrap();
        let b = pack(&t.clone()).unwrap();
        assert_eq!(a, b);
        let back = unpack(&a, UnpackLimits::default()).unwrap();
        assert_eq!(back, t);
        assert_eq!(back.output_hash(), t.output_hash());
    }

    /// Builds a raw tar (uncompressed) with hand-made headers, then zstd-compresses it.
    fn evil(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut b = tar::Builder::new(Vec::new());
        build(&mut b);
        let raw = b.into_inner().unwrap();
        zstd::encode_all(&raw[..], 3).unwrap()
    }

    /// A header claiming 3 GiB (below the old 8 GiB limit), with a stream that really holds
    /// that many zeros: refused by the declared size before any of it is read or allocated.
    #[test]
    fn a_huge_declared_size_is_refused_before_reading() {
        let mut raw = Vec::new();
        raw.extend_from_slice(raw_header("big", tar::EntryType::Regular, 3 << 30).as_bytes());
        let mut enc = zstd::Encoder::new(Vec::new(), 3).unwrap();
        enc.write_all(&raw).unwrap();
        let zeros = vec![0u8; 1 << 20];
        for _ in 0..64 {
            enc.write_all(&zeros).unwrap();
        }
        let bytes = enc.finish().unwrap();
        let start = std::time::Instant::now();
        assert!(matches!(
            unpack(&bytes, UnpackLimits::default()),
            Err(ArchiveError::TooLarge(_))
        ));
        assert!(start.elapsed() < std::time::Duration::from_secs(2));
        // Below the limit but truncated: refused, after growing only with what arrived.
        let limits = UnpackLimits {
            max_total_bytes: 4 << 30,
            max_entries: 10,
        };
        assert!(matches!(unpack(&bytes, limits), Err(ArchiveError::Read(_))));
    }

    fn raw_header(name: &str, kind: tar::EntryType, size: u64) -> tar::Header {
        let mut h = tar::Header::new_old();
        {
            let bytes = h.as_old_mut();
            bytes.name[..name.len()].copy_from_slice(name.as_bytes());
        }
        h.set_entry_type(kind);
        h.set_size(size);
        h.set_mode(0o644);
        h.set_cksum();
        h
    }

    #[test]
    fn refuses_traversal_absolute_devices_links_and_bombs() {
        let dotdot = evil(|b| {
            b.append(
                &raw_header("../escape", tar::EntryType::Regular, 1),
                &b"x"[..],
            )
            .unwrap()
        });
        assert!(matches!(
            unpack(&dotdot, UnpackLimits::default()),
            Err(ArchiveError::UnsafePath { .. })
        ));

        let abs = evil(|b| {
            b.append(
                &raw_header("/etc/passwd", tar::EntryType::Regular, 1),
                &b"x"[..],
            )
            .unwrap()
        });
        assert!(matches!(
            unpack(&abs, UnpackLimits::default()),
            Err(ArchiveError::UnsafePath { .. })
        ));

        let dev = evil(|b| {
            b.append(&raw_header("dev", tar::EntryType::Char, 0), &b""[..])
                .unwrap()
        });
        assert!(matches!(
            unpack(&dev, UnpackLimits::default()),
            Err(ArchiveError::ForbiddenType { .. })
        ));

        let hard = evil(|b| {
            b.append(&raw_header("h", tar::EntryType::Link, 0), &b""[..])
                .unwrap()
        });
        assert!(matches!(
            unpack(&hard, UnpackLimits::default()),
            Err(ArchiveError::ForbiddenType { .. })
        ));

        let link = evil(|b| {
            let mut h = raw_header("l", tar::EntryType::Symlink, 0);
            h.set_link_name("../../etc/shadow").unwrap();
            h.set_cksum();
            b.append(&h, &b""[..]).unwrap();
        });
        assert!(matches!(
            unpack(&link, UnpackLimits::default()),
            Err(ArchiveError::Tree(_))
        ));

        let dup = evil(|b| {
            b.append(&raw_header("a", tar::EntryType::Regular, 1), &b"x"[..])
                .unwrap();
            b.append(&raw_header("a", tar::EntryType::Regular, 1), &b"y"[..])
                .unwrap();
        });
        assert!(matches!(
            unpack(&dup, UnpackLimits::default()),
            Err(ArchiveError::Duplicate(_))
        ));

        let big = evil(|b| {
            b.append(
                &raw_header("big", tar::EntryType::Regular, 4096),
                &vec![0u8; 4096][..],
            )
            .unwrap()
        });
        let small = UnpackLimits {
            max_total_bytes: 1024,
            max_entries: 10,
        };
        assert!(matches!(
            unpack(&big, small),
            Err(ArchiveError::TooLarge(_))
        ));
    }

    #[test]
    fn refuses_garbage_and_truncation() {
        assert!(unpack(b"not zstd", UnpackLimits::default()).is_err());
        let good = pack(&sample()).unwrap();
        assert!(unpack(&good[..good.len() / 2], UnpackLimits::default()).is_err());
    }
}
