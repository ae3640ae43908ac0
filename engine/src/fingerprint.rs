//! The no-op fast path: a fingerprint of everything a successful build read, checked before the
//! project is even parsed. When every recorded file, directory listing and host input is as it
//! was, and the GC root is still the one that build left, the build's result is known: every
//! rule cached, with the derivations and outputs the fingerprint holds.
//!
//! What a fingerprint covers, and why that is enough:
//! - the invocation (project directory, `--env`, `--var`s, `--unsandboxed`), in its file name;
//! - this kiln (its version and the stat data of its own executable);
//! - `kiln.toml` and every include, by stat data and content digest;
//! - every source file, by the stat data taken *before* it was hashed, and that digest;
//! - every directory a glob or directory source or include listed (an entry added or removed
//!   changes its mtime), symlinks followed;
//! - for `exec` rules with `tools`: `PATH`, each `PATH` directory (or its absence) and each
//!   tool as found there, so a new tool earlier on `PATH` or a changed binary counts;
//! - the GC root (its stat data and checksum), and every rule's output archive still being
//!   there: the shard directories holding them (an archive quarantined, collected or deleted
//!   by hand changes its directory), and one stat per archive of a changed shard.
//!
//! Stat data can stay the same across an edit made within the file system's timestamp
//! granularity. Like git's racily clean entries, anything whose mtime or ctime is later than
//! [`RACY_WINDOW`] before the recorded build *began* is not trusted by its stat data alone: a
//! file is compared by content, a directory listing sends the build down the
//! full path. Every other mismatch does too, so the fast path can only be taken when the full
//! build would compute the same derivations.

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::{Instant, SystemTime};

use kiln_core::sources::ListedDir;
use kiln_core::Digest;
use kiln_store::LocalStore;
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use crate::prepare::PreparedRule;
use crate::report::{BuildReport, RuleReport, Status};
use crate::source_cache::{Stat, RACY_WINDOW};

/// Bump when what a fingerprint records changes.
const FORMAT: u32 = 2;

/// One build invocation, as far as its outputs can depend on it.
#[derive(Debug, Clone)]
pub struct Invocation {
    key: Digest,
    dir: PathBuf,
    started_ns: i128,
}

impl Invocation {
    /// The invocation of a build of `dir` (canonical) with `env`, `vars` and `unsandboxed`,
    /// started at `started`.
    pub fn new(
        dir: &Path,
        env: Option<&str>,
        vars: &BTreeMap<String, serde_json::Value>,
        unsandboxed: bool,
        started: SystemTime,
    ) -> Self {
        let text = serde_json::json!({
            "dir": dir.to_string_lossy(),
            "env": env,
            "vars": vars,
            "unsandboxed": unsandboxed,
        });
        Self {
            key: Digest::of(text.to_string().as_bytes()),
            dir: dir.to_path_buf(),
            started_ns: epoch_ns(started),
        }
    }
}

fn epoch_ns(t: SystemTime) -> i128 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i128)
}

/// How a recorded path is checked beyond its stat data once it is racily clean.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
enum Identity {
    /// A file: blake3 of its content.
    Content([u8; 32]),
    /// A GC root: the checksum its file ends with.
    RootChecksum([u8; 32]),
    /// A directory: its listing, which only stat data can vouch for.
    Listing,
}

/// A path as the build saw it: its stat data (`None`: it did not exist) and identity.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct Mark<'a> {
    #[serde(borrow)]
    path: Cow<'a, str>,
    stat: Option<Stat>,
    identity: Identity,
}

impl Mark<'_> {
    fn of(path: &Path, base: &Path, identity: Identity) -> Mark<'static> {
        let rel = path.strip_prefix(base).unwrap_or(path);
        Mark {
            path: Cow::Owned(rel.to_string_lossy().into_owned()),
            stat: Stat::of(path).ok(),
            identity,
        }
    }

    /// Whether the path is still what the build saw. `racy_from`: stat data at or after this
    /// (ns since the epoch) cannot vouch for the content.
    fn holds(&self, base: &Path, racy_from: i128) -> bool {
        let path = base.join(&*self.path);
        let now = match std::fs::metadata(&path) {
            Ok(m) => Stat::from_metadata(&m),
            Err(e) => return self.stat.is_none() && e.kind() == std::io::ErrorKind::NotFound,
        };
        if self.stat != Some(now) {
            return false;
        }
        if !now.changed_since(racy_from) {
            return true;
        }
        match self.identity {
            Identity::Content(d) => {
                std::fs::read(&path).is_ok_and(|b| *Digest::of(&b).as_bytes() == d)
            }
            Identity::RootChecksum(d) => {
                LocalStore::root_file_checksum(&path).is_some_and(|c| *c.as_bytes() == d)
            }
            Identity::Listing => false,
        }
    }
}

/// One rule's line of the report a fast path gives.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct RuleLine<'a> {
    #[serde(borrow)]
    name: Cow<'a, str>,
    #[serde(borrow)]
    kind: Cow<'a, str>,
    derivation: [u8; 32],
    output: [u8; 32],
    /// Whether the output's archive was in the store (a rule pulled from a remote cache can
    /// be cached without it, as the full path would say again).
    local: bool,
}

/// The file: what a successful build read and what it produced.
#[derive(Debug, Serialize, Deserialize)]
struct Fingerprint<'a> {
    format: u32,
    #[serde(borrow)]
    kiln: Cow<'a, str>,
    exe: Option<Stat>,
    key: [u8; 32],
    started_ns: i128,
    #[serde(borrow)]
    path_var: Option<Cow<'a, str>>,
    /// Relative to the store.
    #[serde(borrow)]
    in_store: Vec<Mark<'a>>,
    /// Relative to the project directory, or absolute (host tools).
    #[serde(borrow)]
    in_project: Vec<Mark<'a>>,
    #[serde(borrow)]
    project: Cow<'a, str>,
    #[serde(borrow)]
    env: Cow<'a, str>,
    /// The object shard directories holding the rules' local outputs, by first byte (sorted).
    #[serde(borrow)]
    shards: Vec<(u8, Mark<'a>)>,
    #[serde(borrow)]
    rules: Vec<RuleLine<'a>>,
}

fn this_exe() -> Option<Stat> {
    Stat::of(&std::env::current_exe().ok()?).ok()
}

/// The report of a build whose fingerprint holds, or `None` (then build as usual).
pub fn check(store_dir: &Path, invocation: &Invocation, start: Instant) -> Option<BuildReport> {
    let bytes = std::fs::read(LocalStore::fingerprint_path(store_dir, &invocation.key)).ok()?;
    let mut fp: Fingerprint<'_> = postcard::from_bytes(&bytes).ok()?;
    let racy_from = fp.started_ns - RACY_WINDOW.as_nanos() as i128;
    let holds = fp.format == FORMAT
        && fp.kiln == env!("CARGO_PKG_VERSION")
        && fp.key == *invocation.key.as_bytes()
        && fp.exe.is_some()
        && fp.exe == this_exe()
        && fp
            .path_var
            .as_deref()
            .is_none_or(|p| std::env::var("PATH").is_ok_and(|now| now == p))
        && fp.in_store.iter().all(|m| m.holds(store_dir, racy_from))
        && fp
            .in_project
            .par_iter()
            .all(|m| m.holds(&invocation.dir, racy_from))
        && objects_exist(store_dir, &fp, racy_from);
    if !holds {
        tracing::debug!("the build's inputs may have changed: no fast path");
        return None;
    }
    refresh(store_dir, invocation, &mut fp, racy_from);
    let rules = fp
        .rules
        .iter()
        .map(|r| RuleReport {
            name: r.name.clone().into_owned(),
            kind: r.kind.clone().into_owned(),
            status: Status::Cached,
            derivation: Some(Digest::from_bytes(r.derivation)),
            output: Some(Digest::from_bytes(r.output)),
            duration_ms: 0.0,
            error: None,
            infrastructure: false,
        })
        .collect();
    Some(BuildReport::new(
        fp.project.into_owned(),
        fp.env.into_owned(),
        store_dir.display().to_string(),
        start.elapsed(),
        rules,
        Vec::new(),
    ))
}

/// A fingerprint that held only thanks to content checks (marks changed within its racy
/// window, such as everything a cold build wrote) is written again, stamped with this check's
/// start: every mark was just verified, after that start, so the next check can trust the same
/// stat data alone once they are out of the new window. Without this, each no-op after a cold
/// build would hash the project's files again.
fn refresh(store_dir: &Path, invocation: &Invocation, fp: &mut Fingerprint<'_>, racy_from: i128) {
    let racy = |m: &Mark<'_>| m.stat.is_some_and(|s| s.changed_since(racy_from));
    let new_racy_from = invocation.started_ns - RACY_WINDOW.as_nanos() as i128;
    let settled = |m: &Mark<'_>| m.stat.is_none_or(|s| !s.changed_since(new_racy_from));
    let marks = || {
        fp.in_store
            .iter()
            .chain(&fp.in_project)
            .chain(fp.shards.iter().map(|(_, m)| m))
    };
    // Only worth a write when something racy then is settled now.
    if !marks().any(|m| racy(m) && settled(m)) {
        return;
    }
    fp.started_ns = invocation.started_ns;
    save(store_dir, invocation, fp);
}

/// Writes `fp` as the invocation's fingerprint. It only saves time later: a failure is logged.
fn save(store_dir: &Path, invocation: &Invocation, fp: &Fingerprint<'_>) {
    let result = postcard::to_stdvec(fp)
        .map_err(|e| e.to_string())
        .and_then(|bytes| {
            LocalStore::write_fingerprint(store_dir, &invocation.key, &bytes)
                .map_err(|e| kiln_core::error_chain::error_chain(&e))
        });
    if let Err(error) = result {
        tracing::debug!(%error, "could not write the build's fingerprint");
    }
}

/// Whether every output archive the rules name that was in the store still is (not deleted by
/// hand since). A shard directory whose stat data holds had no entry added or removed, so its
/// archives are all there: only the archives of changed (or racy) shards are stat'ed one by one.
fn objects_exist(store_dir: &Path, fp: &Fingerprint<'_>, racy_from: i128) -> bool {
    let changed: Vec<u8> = fp
        .shards
        .iter()
        .filter(|(_, m)| !m.holds(store_dir, racy_from))
        .map(|(s, _)| *s)
        .collect();
    if changed.is_empty() {
        return true;
    }
    let mut outputs: Vec<[u8; 32]> = fp
        .rules
        .iter()
        .filter(|r| r.local && changed.binary_search(&r.output[0]).is_ok())
        .map(|r| r.output)
        .collect();
    outputs.par_sort_unstable();
    outputs.dedup();
    outputs
        .par_iter()
        .all(|o| LocalStore::object_path_in(store_dir, &Digest::from_bytes(*o)).is_file())
}

/// The shard directories (by first byte) that hold the local outputs of `rules`, as marks.
fn shard_marks(store_dir: &Path, rules: &[RuleLine<'_>]) -> Vec<(u8, Mark<'static>)> {
    let mut shards: Vec<u8> = rules
        .iter()
        .filter(|r| r.local)
        .map(|r| r.output[0])
        .collect();
    shards.sort_unstable();
    shards.dedup();
    shards
        .into_iter()
        .map(|s| {
            let dir = LocalStore::object_path_in(store_dir, &Digest::from_bytes([s; 32]));
            let dir = dir.parent().unwrap_or(store_dir);
            (s, Mark::of(dir, store_dir, Identity::Listing))
        })
        .collect()
}

/// What a build read from the file system, gathered while its prepared rules are at hand.
#[derive(Debug, Default)]
pub struct Reads {
    marks: Vec<Mark<'static>>,
    path_var: Option<String>,
    /// Something was read that a fingerprint cannot vouch for (a relative `PATH` entry).
    unusable: bool,
}

impl Reads {
    /// The sources and listings of `prepared` rules, the project's files and listings, and the
    /// host tools of `exec` rules.
    pub fn gather<'p>(
        project: &kiln_core::project::Project,
        prepared: impl Iterator<Item = &'p PreparedRule<'p>>,
        listed: &[ListedDir],
    ) -> Self {
        let root = &project.root;
        let mut marks = Vec::new();
        let mut path_var = None;
        let mut unusable = false;
        for p in prepared {
            for (src, stat) in p.srcs.iter().zip(&p.stats) {
                marks.push(Mark {
                    path: Cow::Owned(src.path.as_str().to_owned()),
                    stat: Some(*stat),
                    identity: Identity::Content(*src.digest.as_bytes()),
                });
            }
            if p.kind.name() == "exec" {
                let path =
                    path_var.get_or_insert_with(|| std::env::var("PATH").unwrap_or_default());
                for (tool, digest) in kiln_rules::exec::tool_origins(&p.attrs.to_value(), path) {
                    match digest {
                        Some(d) => {
                            marks.push(Mark::of(&tool, root, Identity::Content(*d.as_bytes())))
                        }
                        None => unusable = true,
                    }
                }
            }
        }
        if let Some(path) = &path_var {
            // A tool put in an earlier PATH directory would be found instead.
            for dir in std::env::split_paths(path) {
                // A relative entry is found from the working directory, which is not recorded.
                unusable |= dir.is_relative();
                marks.push(Mark::of(&dir, root, Identity::Listing));
            }
        }
        for f in &project.files {
            let digest = Digest::of(f.text.as_bytes());
            marks.push(Mark::of(
                &root.join(&f.display),
                root,
                Identity::Content(*digest.as_bytes()),
            ));
        }
        for d in listed.iter().chain(&project.listed_dirs) {
            marks.push(Mark {
                path: Cow::Owned(d.path.clone()),
                stat: Some(Stat::from_metadata(&d.metadata)),
                identity: Identity::Listing,
            });
        }
        marks.sort_by(|a, b| a.path.cmp(&b.path));
        marks.dedup_by(|a, b| a.path == b.path);
        Self {
            marks,
            path_var,
            unusable,
        }
    }
}

/// Records the fingerprint of a successful build whose GC root (`root_rel` in the store) ends
/// with `root_checksum`. Only saves time later: failures are logged and otherwise ignored.
pub fn record(
    store: &LocalStore,
    invocation: &Invocation,
    reads: Reads,
    (root_rel, root_checksum): (&Path, Digest),
    report: &BuildReport,
) {
    let store_dir = store.root();
    let root_path = store_dir.join(root_rel);
    // An object quarantined or deleted since leaves its shard directory: see `objects_exist`.
    let in_store = vec![Mark::of(
        &root_path,
        store_dir,
        Identity::RootChecksum(*root_checksum.as_bytes()),
    )];
    // Another build of the same invocation replaced the root meanwhile: its root is not this
    // build's result.
    if reads.unusable
        || !report.diagnostics.is_empty()
        || LocalStore::root_file_checksum(&root_path) != Some(root_checksum)
        || in_store.iter().any(|m| m.stat.is_none())
    {
        return;
    }
    let rules = report
        .rules
        .par_iter()
        .filter_map(|r| {
            let output = r.output?;
            Some(RuleLine {
                name: Cow::Borrowed(r.name.as_str()),
                kind: Cow::Borrowed(r.kind.as_str()),
                derivation: *r.derivation?.as_bytes(),
                output: *output.as_bytes(),
                local: LocalStore::object_path_in(store_dir, &output).is_file(),
            })
        })
        .collect::<Vec<_>>();
    if rules.len() != report.rules.len() {
        return;
    }
    let fp = Fingerprint {
        format: FORMAT,
        kiln: Cow::Borrowed(env!("CARGO_PKG_VERSION")),
        exe: this_exe(),
        key: *invocation.key.as_bytes(),
        started_ns: invocation.started_ns,
        path_var: reads.path_var.as_deref().map(Cow::Borrowed),
        in_store,
        in_project: reads.marks,
        project: Cow::Borrowed(&report.project),
        env: Cow::Borrowed(&report.env),
        shards: shard_marks(store_dir, &rules),
        rules,
    };
    save(store_dir, invocation, &fp);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn now_ns() -> i128 {
        epoch_ns(SystemTime::now())
    }

    #[test]
    fn a_racily_clean_file_is_vouched_for_by_its_content_only() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("a.txt");
        std::fs::write(&file, "one").unwrap();
        let mark = Mark::of(
            &file,
            dir.path(),
            Identity::Content(*Digest::of(b"one").as_bytes()),
        );
        assert_eq!(mark.path, "a.txt");
        // Written just now: racy from an hour ago, the content decides.
        let racy = now_ns() - 3_600_000_000_000;
        assert!(mark.holds(dir.path(), racy));
        let lying = Mark {
            identity: Identity::Content(*Digest::of(b"two").as_bytes()),
            ..mark.clone()
        };
        assert!(!lying.holds(dir.path(), racy));
        // Not racy: the stat data alone vouches (the content is not read).
        assert!(lying.holds(dir.path(), now_ns() + 3_600_000_000_000));
    }

    #[test]
    fn a_racily_clean_listing_never_holds_and_absence_is_a_fact_too() {
        let dir = tempfile::tempdir().unwrap();
        let listing = Mark::of(dir.path(), dir.path(), Identity::Listing);
        assert!(!listing.holds(dir.path(), now_ns() - 3_600_000_000_000));
        assert!(listing.holds(dir.path(), now_ns() + 3_600_000_000_000));

        let missing = Mark::of(&dir.path().join("none"), dir.path(), Identity::Listing);
        assert!(missing.stat.is_none());
        assert!(missing.holds(dir.path(), 0));
        std::fs::create_dir(dir.path().join("none")).unwrap();
        assert!(!missing.holds(dir.path(), 0));
    }

    #[test]
    fn the_invocation_key_covers_every_argument() {
        let t = SystemTime::now();
        let vars = BTreeMap::new();
        let mut tagged = BTreeMap::new();
        tagged.insert("tag".to_owned(), serde_json::json!("2"));
        let base = Invocation::new(Path::new("/p"), Some("staging"), &vars, false, t).key;
        for other in [
            Invocation::new(Path::new("/q"), Some("staging"), &vars, false, t),
            Invocation::new(Path::new("/p"), None, &vars, false, t),
            Invocation::new(Path::new("/p"), Some("staging"), &tagged, false, t),
            Invocation::new(Path::new("/p"), Some("staging"), &vars, true, t),
        ] {
            assert_ne!(other.key, base);
        }
        let later = t + std::time::Duration::from_secs(5);
        assert_eq!(
            Invocation::new(Path::new("/p"), Some("staging"), &vars, false, later).key,
            base
        );
    }
}
