//! GC roots: the last successful build of each project and environment (with a checksum),
//! the object index beside it, and the source stat cache.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

use kiln_core::{Digest, RuleName};
use serde::{Deserialize, Serialize};

use super::{write_atomic, LocalStore, OutputRecord};
use crate::error::{Result, StoreError};

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
    pub rules: BTreeMap<RuleName, RootEntry>,
}

impl LocalStore {
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
            .join(format!("{env}.{ROOT_EXT}"))
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
        Self::peek_root_checksummed(store_root, project_key, env).map(|(root, _)| root)
    }

    /// [`LocalStore::peek_root`], with the checksum the root file ends with (blake3 of its
    /// body: what identifies this root's content).
    pub fn peek_root_checksummed(
        store_root: &Path,
        project_key: &str,
        env: &str,
    ) -> Option<(Root, Digest)> {
        let path = store_root.join(Self::root_rel_path(project_key, env));
        let bytes = fs::read(&path).ok()?;
        match parse_root(&bytes) {
            Ok(root) => Some((root, root_checksum(&bytes)?)),
            Err(reason) => {
                tracing::warn!(root = %path.display(), %reason, "ignoring a GC root");
                None
            }
        }
    }

    /// The checksum at the end of a root file, read without reading the rest (not verified
    /// against the body: a fingerprint compares it with the one its build wrote or read).
    pub fn root_file_checksum(path: &Path) -> Option<Digest> {
        use std::io::{Read, Seek, SeekFrom};
        let mut file = fs::File::open(path).ok()?;
        let tail = root_tail_len();
        file.seek(SeekFrom::End(-i64::try_from(tail).ok()?)).ok()?;
        let mut bytes = Vec::with_capacity(tail);
        file.take(tail as u64).read_to_end(&mut bytes).ok()?;
        root_checksum(&bytes)
    }

    /// Replaces the GC root of a project and environment. The root it replaces is kept as
    /// `<env>.previous` (for `kiln why` and `kiln diff --since`): not a GC root for objects,
    /// but gc keeps its derivation records and sources.
    /// Gives the checksum the new root file ends with.
    pub fn write_root(&self, project_key: &str, root: &Root) -> Result<Digest> {
        let path = self.root_path(project_key, &root.env);
        let previous = self.previous_root_path(project_key, &root.env);
        match fs::rename(&path, &previous) {
            Ok(()) => {}
            // No root yet, or a concurrent build of the same project moved it first.
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(e) => return Err(StoreError::io("keep the previous root as", &previous)(e)),
        }
        let bytes = encode_root(root);
        write_atomic(&self.root, &path, &bytes)?;
        Ok(root_checksum(&bytes).expect("an encoded root ends with its checksum"))
    }

    fn previous_root_path(&self, project_key: &str, env: &str) -> PathBuf {
        self.dir("roots")
            .join(project_key)
            .join(format!("{env}.previous"))
    }

    /// The root the last successful build replaced, if any.
    pub fn read_previous_root(&self, project_key: &str, env: &str) -> Option<Root> {
        let bytes = fs::read(self.previous_root_path(project_key, env)).ok()?;
        parse_root(&bytes).ok()
    }

    /// A root read from a file (`kiln why --since FILE`).
    pub fn read_root_file(path: &Path) -> Result<Root> {
        let bytes = fs::read(path).map_err(StoreError::io("read", path))?;
        parse_root(&bytes).map_err(|reason| StoreError::Corrupt {
            path: path.to_owned(),
            reason,
        })
    }

    /// Every previous root (see [`LocalStore::write_root`]).
    pub(crate) fn previous_roots(&self) -> Vec<Root> {
        walkdir::WalkDir::new(self.dir("roots"))
            .min_depth(2)
            .max_depth(2)
            .into_iter()
            .filter_map(std::result::Result::ok)
            .filter(|e| e.path().extension().is_some_and(|x| x == "previous"))
            .filter_map(|e| parse_root(&fs::read(e.path()).ok()?).ok())
            .collect()
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

    /// Where the fingerprint of a build invocation lives (see the engine's `fingerprint`): what
    /// the last successful build with these arguments read, and what it produced. Only a cache:
    /// gc deletes them all.
    pub fn fingerprint_path(store_root: &Path, key: &Digest) -> PathBuf {
        store_root
            .join("fingerprints")
            .join(format!("{}.fp", key.hex()))
    }

    /// Replaces the fingerprint of a build invocation.
    pub fn write_fingerprint(store_root: &Path, key: &Digest, bytes: &[u8]) -> Result<()> {
        write_atomic(store_root, &Self::fingerprint_path(store_root, key), bytes)
    }

    /// The path of a root, relative to the store (for a fingerprint to check it unchanged).
    pub fn root_rel_path(project_key: &str, env: &str) -> PathBuf {
        Path::new("roots")
            .join(project_key)
            .join(format!("{env}.{ROOT_EXT}"))
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
            if item.path().extension().is_none_or(|e| e != ROOT_EXT) {
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
}

/// The extension of a root file.
pub(crate) const ROOT_EXT: &str = "root";

const ROOT_MAGIC: &[u8] = b"KILNROOT1\n";
const ROOT_CHECKSUM_KEY: &[u8] = b"KSUM";

/// A root as written: compact (digests as bytes, no field names), so a root of 100k rules is a
/// few MB, not 25.
#[derive(Serialize, Deserialize)]
struct WireRoot {
    format_version: u32,
    project: String,
    project_dir: PathBuf,
    env: String,
    rules: Vec<WireEntry>,
}

#[derive(Serialize, Deserialize)]
struct WireEntry {
    name: String,
    kind: String,
    derivation: [u8; 32],
    output: [u8; 32],
    exports: Vec<(String, String)>,
    entries: u64,
    size: u64,
}

/// A root's bytes: a magic line, the root in postcard compressed with zstd, then `KSUM` and
/// blake3 of everything before it, so a torn, truncated or hand-edited root is detected when
/// read.
pub(crate) fn encode_root(root: &Root) -> Vec<u8> {
    let wire = WireRoot {
        format_version: root.format_version,
        project: root.project.clone(),
        project_dir: root.project_dir.clone(),
        env: root.env.clone(),
        rules: root
            .rules
            .iter()
            .map(|(name, e)| WireEntry {
                name: name.to_string(),
                kind: e.kind.clone(),
                derivation: *e.derivation.as_bytes(),
                output: *e.output.output.as_bytes(),
                exports: e
                    .output
                    .exports
                    .iter()
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .collect(),
                entries: e.output.entries,
                size: e.output.size,
            })
            .collect(),
    };
    let body = postcard::to_stdvec(&wire).expect("a root serializes");
    let mut out = ROOT_MAGIC.to_vec();
    zstd::stream::copy_encode(&body[..], &mut out, 1).expect("compressing to memory");
    let checksum = Digest::of(&out);
    out.extend_from_slice(ROOT_CHECKSUM_KEY);
    out.extend_from_slice(checksum.as_bytes());
    out
}

/// The length of the `KSUM<32 bytes>` that ends a root file.
fn root_tail_len() -> usize {
    ROOT_CHECKSUM_KEY.len() + 32
}

/// The checksum that ends `bytes` (a whole root file, or its tail).
fn root_checksum(bytes: &[u8]) -> Option<Digest> {
    let tail = root_tail_len();
    if bytes.len() < tail || !bytes[bytes.len() - tail..].starts_with(ROOT_CHECKSUM_KEY) {
        return None;
    }
    Digest::try_from(&bytes[bytes.len() - 32..]).ok()
}

/// Parses a root written by [`encode_root`], checking its checksum. A root in the JSON form
/// of store format 1 is read too (`kiln why --since` an old file, and the upgrade).
pub(crate) fn parse_root(bytes: &[u8]) -> std::result::Result<Root, String> {
    if bytes.first() == Some(&b'{') {
        return parse_root_v1(bytes);
    }
    let tail = root_tail_len();
    if bytes.len() < ROOT_MAGIC.len() + tail || !bytes.starts_with(ROOT_MAGIC) {
        return Err("not a root".to_owned());
    }
    let recorded = root_checksum(bytes).ok_or("the root has no checksum")?;
    let body = &bytes[..bytes.len() - tail];
    if Digest::of(body) != recorded {
        return Err("the root does not match its checksum".to_owned());
    }
    let raw = zstd::stream::decode_all(&body[ROOT_MAGIC.len()..])
        .map_err(|e| format!("unreadable root: {e}"))?;
    let wire: WireRoot = postcard::from_bytes(&raw).map_err(|e| format!("unreadable root: {e}"))?;
    let mut rules = BTreeMap::new();
    for e in wire.rules {
        let name = RuleName::new(e.name).map_err(|err| format!("unreadable root: {err}"))?;
        rules.insert(
            name,
            RootEntry {
                kind: e.kind,
                derivation: Digest::try_from(&e.derivation[..]).map_err(|e| e.to_string())?,
                output: OutputRecord {
                    output: Digest::try_from(&e.output[..]).map_err(|e| e.to_string())?,
                    exports: e.exports.into_iter().collect(),
                    entries: e.entries,
                    size: e.size,
                },
            },
        );
    }
    Ok(Root {
        format_version: wire.format_version,
        project: wire.project,
        project_dir: wire.project_dir,
        env: wire.env,
        rules,
    })
}

/// Parses a root in store format 1's JSON, ending in a `checksum` member over what precedes it.
fn parse_root_v1(bytes: &[u8]) -> std::result::Result<Root, String> {
    const KEY: &[u8] = b",\"checksum\":\"";
    let tail = KEY.len() + "blake3:".len() + 64 + 2;
    if bytes.len() < tail || !bytes[bytes.len() - tail..].starts_with(KEY) {
        return Err("the root has no checksum".to_owned());
    }
    let body = &bytes[..bytes.len() - tail];
    let rest = &bytes[bytes.len() - tail..];
    let recorded: Digest = std::str::from_utf8(&rest[KEY.len()..rest.len() - 2])
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or("the root's checksum is unreadable")?;
    if Digest::of(body) != recorded {
        return Err("the root does not match its checksum".to_owned());
    }
    serde_json::from_slice(bytes).map_err(|e| format!("unreadable root: {e}"))
}
