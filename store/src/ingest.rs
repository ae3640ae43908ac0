//! Streaming a directory (an `exec` rule's `$out`) into the store in one pass: each file is
//! read once, in chunks, feeding both its blake3 hash and a tar stream compressed by zstd
//! (multithreaded for large artifacts) into a temp file, which is renamed into place once the
//! tree's output hash is known. Memory stays at a few buffers and zstd's windows, whatever the
//! size of the artifact or of its largest file.

use std::collections::BTreeMap;
use std::fs::File;
use std::io::{BufWriter, Read, Write};
use std::path::{Path, PathBuf};

use kiln_core::tree::{parse_exports, CanonicalHasher, TreeError, EXPORTS_PATH};
use kiln_core::{Digest, RelPath, Tree};

use crate::archive::{UnpackLimits, ZSTD_LEVEL};
use crate::error::{Result, StoreError};
use crate::local::{thread_tmp_dir, LocalStore, OutputRecord};

/// Artifacts at least this large are compressed by zstd's worker threads.
const MULTITHREAD_FROM: u64 = 8 << 20;
/// Exports files larger than this are not read (they are not a string map a rule wrote).
const MAX_EXPORTS: u64 = 1 << 20;

/// One entry of a directory, before its content is read.
enum Item {
    File {
        path: PathBuf,
        size: u64,
        executable: bool,
    },
    Symlink(String),
}

/// The entries of `dir` in canonical order, checked like a tree (no devices, no escaping
/// symlinks) and against the artifact size limit, without reading any content.
fn list(dir: &Path, limits: UnpackLimits) -> std::result::Result<Vec<(RelPath, Item)>, TreeError> {
    use std::os::unix::fs::PermissionsExt;
    let mut items = Vec::new();
    let mut shape = Tree::new();
    let mut total: u64 = 0;
    for item in walkdir::WalkDir::new(dir).min_depth(1) {
        let item = item.map_err(|e| TreeError::Read {
            path: dir.display().to_string(),
            source: e.into(),
        })?;
        let rel = item
            .path()
            .strip_prefix(dir)
            .expect("walkdir stays under its root")
            .to_string_lossy()
            .into_owned();
        let read_err = |source| TreeError::Read {
            path: item.path().display().to_string(),
            source,
        };
        let ft = item.file_type();
        if ft.is_dir() {
            continue;
        }
        let rel = RelPath::new(rel)?;
        if ft.is_symlink() {
            let target = std::fs::read_link(item.path())
                .map_err(read_err)?
                .to_string_lossy()
                .into_owned();
            shape.insert_symlink(rel.clone(), target.clone());
            items.push((rel, Item::Symlink(target)));
        } else if ft.is_file() {
            let meta = item.metadata().map_err(|e| read_err(e.into()))?;
            total = total.saturating_add(meta.len());
            if total > limits.max_total_bytes {
                return Err(TreeError::TooLarge {
                    size: total,
                    limit: limits.max_total_bytes,
                });
            }
            shape.insert_placeholder(rel.clone());
            items.push((
                rel,
                Item::File {
                    path: item.path().to_owned(),
                    size: meta.len(),
                    executable: meta.permissions().mode() & 0o111 != 0,
                },
            ));
        } else {
            return Err(TreeError::UnsupportedFileType(rel.as_str().to_owned()));
        }
    }
    if items.len() as u64 > limits.max_entries {
        return Err(TreeError::TooLarge {
            size: total,
            limit: limits.max_total_bytes,
        });
    }
    shape.validate()?;
    items.sort_by(|a, b| a.0.cmp(&b.0));
    Ok(items)
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

impl LocalStore {
    /// Stores the directory `dir` as an artifact, streaming: one read of every file, hashed
    /// and archived in the same pass. Gives the record a build keeps in the action cache.
    pub fn put_dir(&self, dir: &Path) -> Result<OutputRecord> {
        let invalid = |source| StoreError::InvalidOutput {
            dir: dir.to_owned(),
            source,
        };
        let items = list(dir, UnpackLimits::default()).map_err(invalid)?;
        let size: u64 = items
            .iter()
            .map(|(_, i)| match i {
                Item::File { size, .. } => *size,
                Item::Symlink(target) => target.len() as u64,
            })
            .sum();
        let tmp_dir = thread_tmp_dir(self.root())?;
        let tmp = tempfile::NamedTempFile::new_in(&tmp_dir)
            .map_err(StoreError::io("create temp file in", &tmp_dir))?;
        let tmp_path = tmp.path().to_owned();
        let io = |e| StoreError::io("write", &tmp_path)(e);
        let writer = BufWriter::with_capacity(1 << 20, tmp.as_file());
        let mut encoder = zstd::Encoder::new(writer, ZSTD_LEVEL).map_err(io)?;
        if size >= MULTITHREAD_FROM {
            let workers = std::thread::available_parallelism().map_or(1, |n| n.get()) as u32;
            if workers > 1 {
                encoder.multithread(workers).map_err(io)?;
            }
        }
        let mut builder = tar::Builder::new(encoder);
        builder.mode(tar::HeaderMode::Deterministic);
        let mut canonical = CanonicalHasher::new();
        let mut exports = BTreeMap::new();
        for (rel, item) in &items {
            let mut header = tar::Header::new_gnu();
            header.set_mtime(0);
            header.set_uid(0);
            header.set_gid(0);
            match item {
                Item::File {
                    path,
                    size,
                    executable,
                } => {
                    let read_err = |e| StoreError::io("read", path)(e);
                    let file = File::open(path).map_err(read_err)?;
                    header.set_entry_type(tar::EntryType::Regular);
                    header.set_mode(if *executable { 0o755 } else { 0o644 });
                    header.set_size(*size);
                    let mut reader = Hashing {
                        inner: std::io::BufReader::with_capacity(256 << 10, file.take(*size)),
                        hasher: blake3::Hasher::new(),
                        read: 0,
                    };
                    builder
                        .append_data(&mut header, rel.as_str(), &mut reader)
                        .map_err(io)?;
                    if reader.read != *size {
                        return Err(StoreError::io("read", path)(std::io::Error::other(
                            "the file changed size while it was stored",
                        )));
                    }
                    let digest: Digest = reader.hasher.finalize().into();
                    canonical.file(rel, *executable, *size, &digest);
                    if rel.as_str() == EXPORTS_PATH && *size <= MAX_EXPORTS {
                        let bytes = std::fs::read(path).map_err(read_err)?;
                        if Digest::of(&bytes) == digest {
                            exports = parse_exports(&bytes);
                        }
                    }
                }
                Item::Symlink(target) => {
                    header.set_entry_type(tar::EntryType::Symlink);
                    header.set_mode(0o777);
                    header.set_size(0);
                    builder
                        .append_link(&mut header, rel.as_str(), target)
                        .map_err(io)?;
                    canonical.symlink(rel, target);
                }
            }
        }
        let encoder = builder.into_inner().map_err(io)?;
        let mut writer = encoder.finish().map_err(io)?;
        writer.flush().map_err(io)?;
        drop(writer);
        let output = canonical.finish();
        let dest = self.object_path(&output);
        if !dest.is_file() {
            tmp.persist(&dest)
                .map_err(|e| StoreError::io("rename into", &dest)(e.error))?;
        }
        Ok(OutputRecord {
            output,
            exports,
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
