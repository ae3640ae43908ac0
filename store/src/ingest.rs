//! Streaming a directory (an `exec` rule's `$out`) into the store in one pass: each file is
//! read once, in chunks, feeding both its blake3 hash and a tar stream compressed by zstd
//! (multithreaded for large artifacts) into a temp file, which is renamed into place once the
//! tree's output hash is known. Memory stays at a few buffers and zstd's windows, whatever the
//! size of the artifact or of its largest file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::Path;

use kiln_core::tree::{list_dir, parse_exports, CanonicalHasher, DirItem, TreeError, EXPORTS_PATH};
use kiln_core::{Digest, RelPath, Tree};

use crate::archive::{encoder, TarWriter, UnpackLimits};
use crate::error::{Result, StoreError};
use crate::local::{persist, temp_file, LocalStore, OutputRecord};

/// Artifacts at least this large are compressed by zstd's worker threads.
const MULTITHREAD_FROM: u64 = 8 << 20;
/// Exports files larger than this are not read (they are not a string map a rule wrote).
const MAX_EXPORTS: u64 = 1 << 20;

/// The entries of `dir` in canonical order (see [`list_dir`]), checked like a tree (no
/// escaping symlinks, no file and directory at one path) and against the artifact limits,
/// without reading any content. Gives them with their content size (as
/// [`Tree::content_size`] counts it).
fn list(
    dir: &Path,
    limits: UnpackLimits,
) -> std::result::Result<(Vec<(RelPath, DirItem)>, u64), TreeError> {
    let items = list_dir(dir)?;
    let mut shape = Tree::new();
    let mut total: u64 = 0;
    for (rel, item) in &items {
        match item {
            DirItem::File { size, .. } => {
                total = total.saturating_add(*size);
                shape.insert_placeholder(rel.clone());
            }
            DirItem::Symlink(target) => {
                total = total.saturating_add(target.len() as u64);
                shape.insert_symlink(rel.clone(), target.clone());
            }
        }
    }
    if total > limits.max_total_bytes || items.len() as u64 > limits.max_entries {
        return Err(TreeError::TooLarge {
            size: total,
            limit: limits.max_total_bytes,
        });
    }
    shape.validate()?;
    Ok((items, total))
}

/// A reader that hashes what it reads, and counts it.
struct Hashing<R> {
    inner: R,
    hasher: blake3::Hasher,
    read: u64,
}

impl<R: Read> Read for Hashing<R> {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        let n = self.inner.read(buf)?;
        self.hasher.update(&buf[..n]);
        self.read += n as u64;
        Ok(n)
    }
}

/// Files up to this size are read ahead, in parallel, a window at a time: for a tree of many
/// tiny files, opening and reading each costs more than archiving it, and two cores open twice
/// as many. A window holds at most `PREFETCH_WINDOW * PREFETCH_UP_TO` bytes (16 MiB).
const PREFETCH_UP_TO: u64 = 64 << 10;
/// Entries per read-ahead window.
const PREFETCH_WINDOW: usize = 256;

/// The content of every file of `window` no larger than [`PREFETCH_UP_TO`], read in
/// parallel (`None` for larger files and symlinks, which are streamed in order).
fn prefetch_small_files(window: &[(RelPath, DirItem)]) -> Result<Vec<Option<Vec<u8>>>> {
    use rayon::prelude::*;
    window
        .par_iter()
        .map(|(_, item)| match item {
            DirItem::File { path, size, .. } if *size <= PREFETCH_UP_TO => {
                let file = File::open(path).map_err(StoreError::io("read", path))?;
                let mut bytes = Vec::with_capacity(*size as usize);
                file.take(*size)
                    .read_to_end(&mut bytes)
                    .map_err(StoreError::io("read", path))?;
                if bytes.len() as u64 != *size {
                    return Err(changed_size(path));
                }
                Ok(Some(bytes))
            }
            _ => Ok(None),
        })
        .collect()
}

fn changed_size(path: &Path) -> StoreError {
    StoreError::io("read", path)(std::io::Error::other(
        "the file changed size while it was stored",
    ))
}

impl LocalStore {
    /// Stores the directory `dir` as an artifact, streaming: one read of every file, hashed
    /// and archived in the same pass. Gives the record a build keeps in the action cache.
    pub fn put_dir(&self, dir: &Path) -> Result<OutputRecord> {
        let invalid = |source| StoreError::InvalidOutput {
            dir: dir.to_owned(),
            source,
        };
        let (items, size) = list(dir, UnpackLimits::default()).map_err(invalid)?;
        let tmp = temp_file(self.root())?;
        let tmp_path = tmp.path().to_owned();
        let io = |e| StoreError::io("write", &tmp_path)(e);
        let writer = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let mut tar = TarWriter::new(encoder(writer, size >= MULTITHREAD_FROM).map_err(io)?);
        let mut canonical = CanonicalHasher::new();
        let mut exports = BTreeMap::new();
        for window in items.chunks(PREFETCH_WINDOW) {
            let mut prefetched = prefetch_small_files(window)?.into_iter();
            for (rel, item) in window {
                let content = prefetched.next().flatten();
                match item {
                    DirItem::File {
                        path,
                        size,
                        executable,
                    } => {
                        let read_err = |e| StoreError::io("read", path)(e);
                        let digest: Digest = match content {
                            Some(bytes) => {
                                tar.file(rel.as_str(), *executable, *size, &mut bytes.as_slice())
                                    .map_err(io)?;
                                Digest::of(&bytes)
                            }
                            None => {
                                let file = File::open(path).map_err(read_err)?;
                                let mut reader = Hashing {
                                    inner: std::io::BufReader::with_capacity(
                                        256 << 10,
                                        file.take(*size),
                                    ),
                                    hasher: blake3::Hasher::new(),
                                    read: 0,
                                };
                                tar.file(rel.as_str(), *executable, *size, &mut reader)
                                    .map_err(io)?;
                                if reader.read != *size {
                                    return Err(changed_size(path));
                                }
                                reader.hasher.finalize().into()
                            }
                        };
                        canonical.file(rel, *executable, *size, &digest);
                        if rel.as_str() == EXPORTS_PATH && *size <= MAX_EXPORTS {
                            let bytes = std::fs::read(path).map_err(read_err)?;
                            if Digest::of(&bytes) == digest {
                                exports = parse_exports(&bytes);
                            }
                        }
                    }
                    DirItem::Symlink(target) => {
                        tar.symlink(rel.as_str(), target).map_err(io)?;
                        canonical.symlink(rel, target);
                    }
                }
            }
        }
        let mut writer = tar.finish().map_err(io)?.finish().map_err(io)?;
        writer.flush().map_err(io)?;
        drop(writer);
        let output = canonical.finish();
        let dest = self.object_path(&output);
        if !dest.is_file() {
            persist(tmp, &dest)?;
        }
        Ok(OutputRecord {
            output,
            exports: exports.into(),
            entries: items.len() as u64,
            size,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, rel: &str, content: &[u8]) {
        let p = dir.join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, content).unwrap();
    }

    #[test]
    fn a_streamed_directory_is_the_tree_read_into_memory() {
        use std::os::unix::fs::PermissionsExt;
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(&d.path().join("store")).unwrap();
        let out = d.path().join("out");
        write(&out, "a.txt", b"a");
        write(&out, "a/b.yaml", &vec![b'x'; 9 << 20]);
        write(&out, ".kiln/exports.json", br#"{"k":"v"}"#);
        write(&out, "bin/run", b"#!/bin/sh\n");
        std::fs::set_permissions(out.join("bin/run"), std::fs::Permissions::from_mode(0o755))
            .unwrap();
        std::os::unix::fs::symlink("../a.txt", out.join("a/link")).unwrap();
        let record = s.put_dir(&out).unwrap();
        let tree = Tree::from_dir(&out).unwrap();
        assert_eq!(record.output, tree.output_hash());
        assert_eq!(record.entries, tree.len() as u64);
        assert_eq!(record.size, tree.content_size());
        assert_eq!(record.exports, tree.exports());
        assert_eq!(s.load(&record.output).unwrap(), tree);
    }

    #[test]
    fn an_escaping_symlink_or_a_fifo_is_refused_and_nothing_is_stored() {
        let d = tempfile::tempdir().unwrap();
        let s = LocalStore::open(&d.path().join("store")).unwrap();
        let out = d.path().join("out");
        write(&out, "a", b"a");
        std::os::unix::fs::symlink("../../etc/passwd", out.join("l")).unwrap();
        assert!(matches!(
            s.put_dir(&out),
            Err(StoreError::InvalidOutput { .. })
        ));
        std::fs::remove_file(out.join("l")).unwrap();
        rustix::fs::mknodat(
            rustix::fs::CWD,
            out.join("fifo"),
            rustix::fs::FileType::Fifo,
            rustix::fs::Mode::from_raw_mode(0o644),
            0,
        )
        .unwrap();
        assert!(matches!(
            s.put_dir(&out),
            Err(StoreError::InvalidOutput { .. })
        ));
        let objects = walkdir::WalkDir::new(d.path().join("store/objects"))
            .into_iter()
            .filter_map(std::result::Result::ok)
            .filter(|e| e.file_type().is_file())
            .count();
        assert_eq!(objects, 0);
    }
}
