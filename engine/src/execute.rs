//! Running a prepared build: derivation hashes, cache lookups, builds and store writes.

use std::borrow::Cow;
use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Instant;

use kiln_core::attrs::Attrs;
use kiln_core::derivation::DerivationRef;
use kiln_core::error_chain::error_chain;
use kiln_core::graph::RuleGraph;
use kiln_core::interpolate::has_references;
use kiln_core::interpolate::Scope;
use kiln_core::kind::{BuildContext, BuildError, DepOutputs, LoadedSource, Output};
use kiln_core::project::{Project, RuleIdx};
use kiln_core::scheduler::{execute, Outcome, Schedule};
use kiln_core::{Digest, RuleName, Tree};
use kiln_store::{Backend, LocalStore, OutputRecord, StoreError, Substituter};
use petgraph::graph::NodeIndex;

use super::prepare::{source_file_diagnostic, PreparedRule, Selected};
use super::project_sources::ProjectSources;
use super::report::Status;
use super::source_cache::{read_again, ReadAgain};

/// The result of one rule that succeeded.
pub struct Built {
    /// Derivation hash.
    pub derivation: Digest,
    /// The output.
    pub record: OutputRecord,
    /// Built or cached.
    pub status: Status,
    /// Time spent.
    pub duration_ms: f64,
    /// The tree, when it was built in this run or already loaded.
    tree: OnceLock<Arc<Tree>>,
    /// The objects of a tree built in this run and not kept (for the conflicts check).
    objects: Option<Box<crate::conflicts::ArtifactObjects>>,
    /// What `kiln audit` found, in an audit.
    pub audit: Option<Box<Verdict>>,
}

/// What an audit found for one rule.
#[derive(Debug)]
pub enum Verdict {
    /// The rebuild gave the recorded output.
    Identical,
    /// Nothing was recorded for this derivation: built, nothing to compare.
    Unrecorded,
    /// The rebuild gave another output.
    Differs {
        /// The recorded output.
        recorded: Digest,
        /// The rebuilt output.
        rebuilt: Digest,
        /// How they differ, or why the recorded artifact could not be read.
        changes: Result<Vec<crate::treediff::EntryChange>, String>,
    },
}

/// This machine's host name (Linux), for provenance.
fn host_name() -> String {
    static HOST: OnceLock<String> = OnceLock::new();
    HOST.get_or_init(|| {
        std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_owned())
            .unwrap_or_else(|_| "unknown".to_owned())
    })
    .clone()
}

/// The output hash that stands for a dependency not built yet in [`Executor::current_derivations`].
pub fn unknown_output() -> Digest {
    Digest::of(b"kiln: an output not built yet")
}

/// A rule's derivation as the checkout gives it now (see [`Executor::current_derivations`]).
#[derive(Debug, Clone)]
pub struct Current {
    /// The derivation hash.
    pub drv: Digest,
    /// The canonical derivation.
    pub bytes: Vec<u8>,
    /// Its output, when the store knows it (built before).
    pub output: Option<OutputRecord>,
    /// False when a dependency's output is not known yet (it would rebuild first).
    pub exact: bool,
}

/// How an audit runs.
#[derive(Debug, Clone, Default)]
pub struct Audit {
    /// Only these rules are rebuilt (the others contribute their recorded outputs).
    pub rules: Option<BTreeSet<String>>,
    /// Compare with the substituters' (signed) entries instead of the local records.
    pub against_substituters: bool,
}

/// A fresh build that failed: the rule's fault, or the machine's.
enum FreshError {
    Rule(BuildError),
    Infrastructure(BuildError),
}

/// Trees built in this run are kept in memory for their dependents up to this size.
const KEEP_TREES_UP_TO: u64 = 256 << 10;

/// What a fresh build produced: a tree in memory, or a directory in the build's scratch
/// directory (kept alive with it) that the store streams in.
enum Fresh {
    Tree(Tree),
    Dir {
        dir: std::path::PathBuf,
        _scratch: Option<kiln_store::ScratchDir>,
    },
}

impl Fresh {
    /// The tree, reading a directory into memory (audits compare trees).
    fn into_tree(self) -> Result<Tree, FreshError> {
        match self {
            Self::Tree(t) => Ok(t),
            Self::Dir { dir, .. } => Tree::from_dir(&dir).map_err(|e| {
                FreshError::Rule(BuildError::caused("the output is not a valid artifact", e))
            }),
        }
    }
}

impl Built {
    /// The tree, when it was built in this run (or loaded by a dependent).
    pub fn tree(&self) -> Option<&Arc<Tree>> {
        self.tree.get()
    }

    /// The objects of a tree built in this run and not kept in memory.
    pub(crate) fn objects(&self) -> Option<&crate::conflicts::ArtifactObjects> {
        self.objects.as_deref()
    }
}

/// A rule that failed, with a located diagnostic when there is one.
pub struct Failure {
    /// Derivation hash, if it got that far.
    pub derivation: Option<Digest>,
    /// The report shown to humans.
    pub report: miette::Report,
    /// A one-line message for JSON.
    pub message: String,
    /// The store (not the rule) failed: disk full, permissions. Exit 2, not 1.
    pub infrastructure: bool,
    /// Time spent.
    pub duration_ms: f64,
}

/// What the executor needs.
pub struct Executor<'a> {
    /// The project.
    pub project: &'a Project,
    /// The rule graph.
    pub graph: &'a RuleGraph,
    /// Prepared rules, by rule index.
    pub prepared: BTreeMap<RuleIdx, PreparedRule<'a>>,
    /// The environment.
    pub selected: &'a Selected,
    /// The local store: locks, scratch directories, quarantine.
    pub store: &'a LocalStore,
    /// Where artifacts and actions are looked up and stored: the local store, in front of any
    /// further caches.
    pub cache: &'a Backend,
    /// The previous root of this project and environment: derivation -> record.
    pub previous: BTreeMap<Digest, &'a OutputRecord>,
    /// Outputs known to be missing or corrupt: never taken from the previous root.
    pub distrusted: BTreeSet<Digest>,
    /// Outputs this run found missing or corrupt (quarantined), to be rebuilt.
    pub broken: Mutex<BTreeSet<Digest>>,
    /// Remote caches, in order.
    pub substituters: &'a [Arc<dyn Substituter>],
    /// Derivations a remote cache answered (verified), found by [`Executor::substitute`].
    pub substituted: HashMap<Digest, OutputRecord>,
    /// Derivations the substitution pass asked about (not asked again).
    pub looked_up: HashSet<Digest>,
    /// Called after each rule finishes (progress).
    pub on_done: &'a (dyn Fn(&str) + Sync),
    /// Set in `kiln audit`: every rule is rebuilt and compared, nothing stored.
    pub audit: Option<Audit>,
}

/// A rule's attributes with `${dep...}` resolved, and its derivation.
struct Derived<'p> {
    attrs: Cow<'p, Attrs>,
    bytes: Vec<u8>,
    drv: Digest,
}

struct Deps<'a> {
    names: Vec<RuleName>,
    built: BTreeMap<RuleName, &'a Built>,
    store: &'a LocalStore,
    cache: &'a Backend,
    broken: &'a Mutex<BTreeSet<Digest>>,
}

impl DepOutputs for Deps<'_> {
    fn names(&self) -> Vec<RuleName> {
        self.names.clone()
    }

    fn tree(&self, rule: &RuleName) -> Result<Arc<Tree>, BuildError> {
        let b = self.built.get(rule).ok_or_else(|| BuildError::Dependency {
            rule: rule.clone(),
            message: "is not a dependency of this rule".to_owned(),
        })?;
        if let Some(t) = b.tree.get() {
            return Ok(t.clone());
        }
        let out = b.record.output;
        let failure = match self.cache.objects.get(&out) {
            Ok(Some(t)) => return Ok(b.tree.get_or_init(|| Arc::new(t)).clone()),
            Ok(None) => StoreError::Missing(out),
            Err(e) => e,
        };
        Err(self.unreadable(rule, out, &failure))
    }

    /// Streams the dependency's archive to `dir` when it is in the local store and not in
    /// memory already; otherwise writes the tree (pulled from a cache when needed).
    fn write_to(&self, rule: &RuleName, dir: &std::path::Path) -> Result<(), BuildError> {
        let b = self.built.get(rule).ok_or_else(|| BuildError::Dependency {
            rule: rule.clone(),
            message: "is not a dependency of this rule".to_owned(),
        })?;
        let out = b.record.output;
        if b.tree.get().is_some() || !self.store.has_object(&out) {
            let tree = self.tree(rule)?;
            return tree.write_to(dir).map_err(|e| {
                BuildError::caused(format!("failed to stage dependency `{rule}`"), e)
            });
        }
        self.store
            .unpack_into(&out, dir, false)
            .map_err(|failure| self.unreadable(rule, out, &failure))
    }
}

impl Deps<'_> {
    /// A dependency's artifact that could not be read: a missing or corrupt one is moved aside
    /// and recorded, so this run rebuilds it.
    fn unreadable(&self, rule: &RuleName, out: Digest, failure: &StoreError) -> BuildError {
        if failure.is_missing_or_corrupt() {
            let _ = self.store.quarantine(&out);
            self.broken.lock().expect("broken set lock").insert(out);
        }
        BuildError::Dependency {
            rule: rule.clone(),
            message: format!(
                "{}; it is moved aside and rebuilt in this run",
                error_chain(failure)
            ),
        }
    }
}

impl Executor<'_> {
    /// Runs every rule. Outcomes are indexed by node.
    pub fn run(&self, schedule: Schedule) -> Vec<Outcome<Built, Failure>> {
        execute(self.graph, schedule, |node, deps| {
            let start = Instant::now();
            let name = self.project[self.graph.rule_index(node)].name.as_str();
            let r = self.run_rule(node, deps, start);
            (self.on_done)(name);
            r
        })
    }

    // One rule in order: resolve `${dep..}`, derive, previous root / action cache, lock, build,
    // store. The steps share borrowed locals (the scope, the attributes, the dependencies'
    // outputs) that the kind's BuildContext borrows too, so they read best in one place; the
    // self-contained steps are the methods below.
    fn run_rule(
        &self,
        node: NodeIndex,
        deps: &[(NodeIndex, &Built)],
        start: Instant,
    ) -> Result<Built, Failure> {
        let p = &self.prepared[&self.graph.rule_index(node)];
        let started_at = std::time::SystemTime::now();
        let fail = |derivation, e: &BuildError| self.failure(p, start, derivation, e);
        let records: BTreeMap<RuleName, &OutputRecord> = deps
            .iter()
            .map(|(n, b)| (self.name_of(*n).clone(), &b.record))
            .collect();
        let scope = self.scope(&records);
        let Derived { attrs, bytes, drv } = self
            .derive(p, &scope, &records)
            .map_err(|e| fail(None, &e))?;
        let attrs = &*attrs;
        if let Some(audit) = &self.audit {
            return self.audit_rule(audit, p, (drv, attrs), &scope, deps, start);
        }
        let built = |record: OutputRecord, status| Built {
            derivation: drv,
            record,
            status,
            duration_ms: start.elapsed().as_secs_f64() * 1000.0,
            tree: OnceLock::new(),
            objects: None,
            audit: None,
        };
        // The previous GC root needs no check that its objects exist: gc keeps everything a
        // root reaches, `verify` drops root entries whose object it quarantined, and an object
        // found missing or corrupt later in a run is distrusted in the run that heals it.
        if let Some(record) = self.previous.get(&drv) {
            if !self.distrusted.contains(&record.output) {
                return Ok(built((*record).clone(), Status::Cached));
            }
        }
        let store_fail = |e: StoreError| Failure {
            infrastructure: true,
            ..fail(Some(drv), &BuildError::caused("store error", e))
        };
        if let Some(record) = self.usable_output(p, &drv).map_err(store_fail)? {
            return Ok(built(record, Status::Cached));
        }
        // A pulled output found unusable (its archive refused or gone) is built here instead.
        if let Some(record) = self.pulled(&drv) {
            return Ok(built(record, Status::Pulled));
        }
        // Every derivation is built once across processes (as Nix's build locks): whoever holds
        // its lock builds, the others wait and then find it cached. Eight builders of one
        // project on one store built up to twice its rules when in-process kinds went unlocked.
        let _lock = self.store.lock_derivation(&drv).map_err(store_fail)?;
        if let Some(record) = self.usable_output(p, &drv).map_err(store_fail)? {
            return Ok(built(record, Status::Cached));
        }
        let (fresh, srcs) = self
            .build_fresh(p, attrs, &scope, deps)
            .map_err(|e| self.fresh_failure(p, start, drv, e))?;
        let (record, tree) = match fresh {
            Fresh::Tree(tree) => {
                let record = self.cache.objects.put(&tree).map(|output| OutputRecord {
                    output,
                    exports: tree.exports(),
                    entries: tree.len() as u64,
                    size: tree.content_size(),
                });
                (record, Some(tree))
            }
            Fresh::Dir { dir, .. } => {
                let stored_at = Instant::now();
                let record = self.cache.objects.put_dir(&dir);
                tracing::debug!(rule = %p.rule.name, elapsed = ?stored_at.elapsed(), "streamed `$out` into the store");
                (record, None)
            }
        };
        let record = record.map_err(|e| match e {
            // A `$out` that is no artifact is the rule's failure, not the store's.
            StoreError::InvalidOutput { .. } => self.failure(
                p,
                start,
                Some(drv),
                &BuildError::caused("the command's `$out` is not a valid artifact", e),
            ),
            e => store_fail(e),
        })?;
        self.record_output(&drv, &bytes, &record, started_at)
            .map_err(store_fail)?;
        // The sources' content, for `kiln why`; an explanation aid, never worth a failure.
        // A kind that streams its sources never held them: the small ones are read again.
        for (entry, src) in p.srcs.iter().zip(&srcs) {
            let content: Cow<'_, [u8]> = if p.kind.streams_sources() {
                match self.small_source(&entry.path, &entry.digest) {
                    Some(bytes) => Cow::Owned(bytes),
                    None => continue,
                }
            } else {
                Cow::Borrowed(&src.content)
            };
            if let Err(e) = self.store.put_source(&entry.digest, &content) {
                tracing::debug!(error = %error_chain(&e), "could not keep a source for `kiln why`");
            }
        }
        let mut b = built(record, Status::Built);
        // Kept for dependents and the conflicts check while small. Of a large artifact only
        // its objects' digests are kept; dependents read it back from the store, so a build of
        // many large rules does not hold them all until it ends.
        match tree {
            Some(tree) if tree.content_size() <= KEEP_TREES_UP_TO => {
                let _ = b.tree.set(Arc::new(tree));
            }
            Some(tree) => {
                b.objects = Some(Box::new(crate::conflicts::objects_of(
                    b.record.output,
                    &tree,
                )));
            }
            None => {}
        }
        Ok(b)
    }

    /// Builds the rule's tree from its sources and its dependencies' outputs, storing nothing.
    fn build_fresh(
        &self,
        p: &PreparedRule<'_>,
        attrs: &Attrs,
        scope: &Scope<'_>,
        deps: &[(NodeIndex, &Built)],
    ) -> Result<(Fresh, Vec<LoadedSource>), FreshError> {
        let attrs = &attrs.to_value();
        let srcs = self.load_sources(p).map_err(FreshError::Rule)?;
        let dep_access = Deps {
            names: p.rule.deps.iter().map(|d| d.value.clone()).collect(),
            built: deps
                .iter()
                .map(|(n, b)| (self.name_of(*n).clone(), *b))
                .collect(),
            store: self.store,
            cache: self.cache,
            broken: &self.broken,
        };
        let scratch = self.scratch_dir(p).map_err(|e| {
            FreshError::Infrastructure(BuildError::caused(
                "failed to create a scratch directory",
                e,
            ))
        })?;
        let source_files = ProjectSources::new(&self.project.root, &p.srcs, &p.stats);
        let cx = BuildContext {
            rule: &p.rule.name,
            attrs,
            srcs: &srcs,
            deps: &dep_access,
            source_files: &source_files,
            scope,
            scratch: scratch.as_ref().map(kiln_store::ScratchDir::path),
        };
        let fresh = match p.kind.build_output(&cx).map_err(FreshError::Rule)? {
            Output::Tree(tree) => {
                tree.validate().map_err(|e| {
                    FreshError::Rule(BuildError::caused("the output is not a valid tree", e))
                })?;
                Fresh::Tree(tree)
            }
            // Checked as it is streamed into the store.
            Output::Dir(dir) => Fresh::Dir {
                dir,
                _scratch: scratch,
            },
        };
        Ok((fresh, srcs))
    }

    fn fresh_failure(
        &self,
        p: &PreparedRule<'_>,
        start: Instant,
        drv: Digest,
        e: FreshError,
    ) -> Failure {
        match e {
            FreshError::Rule(e) => self.failure(p, start, Some(drv), &e),
            FreshError::Infrastructure(e) => Failure {
                infrastructure: true,
                ..self.failure(p, start, Some(drv), &e)
            },
        }
    }

    /// `kiln audit` of one rule: rebuilt from its dependencies' *recorded* outputs (so a
    /// mismatch never cascades), compared with its own recorded output. Dependents go on with
    /// the recorded output.
    fn audit_rule(
        &self,
        audit: &Audit,
        p: &PreparedRule<'_>,
        derived: (Digest, &Attrs),
        scope: &Scope<'_>,
        deps: &[(NodeIndex, &Built)],
        start: Instant,
    ) -> Result<Built, Failure> {
        let (drv, attrs) = derived;
        let recorded = if audit.against_substituters {
            self.ask_substituters(&drv)
        } else {
            self.previous
                .get(&drv)
                .map(|r| (*r).clone())
                .or_else(|| self.recorded(&drv))
        };
        let selected = audit
            .rules
            .as_ref()
            .is_none_or(|set| set.contains(p.rule.name.as_str()));
        let done = |record: OutputRecord, verdict: Option<Verdict>| Built {
            derivation: drv,
            record,
            status: Status::Cached,
            duration_ms: start.elapsed().as_secs_f64() * 1000.0,
            tree: OnceLock::new(),
            objects: None,
            audit: verdict.map(Box::new),
        };
        if !selected {
            if let Some(record) = recorded {
                return Ok(done(record, None));
            }
        }
        let tree = self
            .build_fresh(p, attrs, scope, deps)
            .and_then(|(fresh, _)| fresh.into_tree())
            .map_err(|e| self.fresh_failure(p, start, drv, e))?;
        let rebuilt = tree.output_hash();
        let fresh_record = || OutputRecord {
            output: rebuilt,
            exports: tree.exports(),
            entries: tree.len() as u64,
            size: tree.content_size(),
        };
        let Some(record) = recorded else {
            let b = done(fresh_record(), Some(Verdict::Unrecorded));
            let _ = b.tree.set(Arc::new(tree));
            return Ok(b);
        };
        if record.output == rebuilt {
            let b = done(record, Some(Verdict::Identical));
            let _ = b.tree.set(Arc::new(tree));
            return Ok(b);
        }
        let changes = match self.cache.objects.get(&record.output) {
            Ok(Some(old)) => Ok(crate::treediff::diff_trees(&old, &tree)),
            Ok(None) => Err("the recorded artifact is in no store or cache".to_owned()),
            Err(e) => Err(error_chain(&e)),
        };
        Ok(done(
            record.clone(),
            Some(Verdict::Differs {
                recorded: record.output,
                rebuilt,
                changes,
            }),
        ))
    }

    /// The name of the rule at `node`.
    fn name_of(&self, node: NodeIndex) -> &RuleName {
        &self.project[self.graph.rule_index(node)].name
    }

    /// The first substituter's record of `drv` (one request each, in order).
    fn ask_substituters(&self, drv: &Digest) -> Option<OutputRecord> {
        self.substituters
            .iter()
            .find_map(|s| s.lookup_many(std::slice::from_ref(drv)).pop().flatten())
    }

    /// The local action cache's record of `drv`, whether or not its artifact is present.
    fn recorded(&self, drv: &Digest) -> Option<OutputRecord> {
        self.store.action(drv).ok().flatten().map(|(r, _)| r)
    }

    /// The interpolation scope of a rule whose dependencies produced `records`.
    fn scope<'s>(&'s self, records: &'s BTreeMap<RuleName, &'s OutputRecord>) -> Scope<'s> {
        Scope {
            env: self.selected.name(),
            project: &self.project.name,
            vars: Some(&self.selected.vars),
            deps: records
                .iter()
                .map(|(n, r)| (n.as_str(), Some(&r.exports)))
                .collect(),
        }
    }

    /// `${dep...}` resolved with the dependencies' exports, and the derivation assembled.
    ///
    /// Early cutoff lives here: dependencies enter the derivation by *output* hash, so a
    /// dependency rebuilt to an identical output leaves this hash, and so this rule, unchanged.
    fn derive<'p>(
        &self,
        p: &'p PreparedRule<'_>,
        scope: &Scope<'_>,
        records: &BTreeMap<RuleName, &OutputRecord>,
    ) -> Result<Derived<'p>, BuildError> {
        // Only `${dep...}` can be left after preparation; most rules have none, and their
        // attributes enter the derivation as the text they are kept in.
        let value = p.attrs.may_have_references().then(|| p.attrs.to_value());
        let attrs = match value {
            Some(value) if has_references(&value) => {
                let resolved = scope.interpolate_value(&value).map_err(|(path, e)| {
                    BuildError::Attribute(kiln_core::kind::AttrError::new(path, e.to_string()))
                })?;
                Cow::Owned(Attrs::from_value(&resolved))
            }
            _ => Cow::Borrowed(&*p.attrs),
        };
        let dep_outputs: BTreeMap<RuleName, Digest> =
            records.iter().map(|(n, r)| (n.clone(), r.output)).collect();
        let bytes = DerivationRef {
            kind: p.kind.name(),
            kind_version: p.kind.version(),
            attrs: &attrs,
            srcs: &p.srcs,
            vars: &p.source_vars,
            deps: &dep_outputs,
        }
        .canonical_bytes();
        let drv = Digest::of(&bytes);
        Ok(Derived { attrs, bytes, drv })
    }

    /// What the local store already has for `drv`: the previous root's record (unless
    /// distrusted), or a usable action cache entry.
    fn local_output(&self, p: &PreparedRule<'_>, drv: &Digest) -> Option<OutputRecord> {
        if let Some(record) = self.previous.get(drv) {
            if !self.distrusted.contains(&record.output) {
                return Some((*record).clone());
            }
        }
        self.usable_output(p, drv).ok().flatten()
    }

    /// The remote caches' record of `drv`, unless distrusted: from the substitution pass, or
    /// asked now for a derivation that pass could not know (a dependency was built locally;
    /// with early cutoff its output often equals the cached one, so the dependents are still
    /// cache hits).
    fn pulled(&self, drv: &Digest) -> Option<OutputRecord> {
        let usable = |r: &OutputRecord| !self.distrusted.contains(&r.output);
        if let Some(record) = self.substituted.get(drv) {
            return usable(record).then(|| record.clone());
        }
        if self.looked_up.contains(drv) {
            return None;
        }
        self.ask_substituters(drv).filter(usable)
    }

    /// Every rule's derivation as the checkout gives it now, without building: a dependency
    /// whose derivation is not known to the store (it would rebuild) enters with a placeholder
    /// output (and the exports `old` recorded for it), and its dependents are marked inexact.
    pub fn current_derivations(
        &self,
        old: &BTreeMap<String, OutputRecord>,
    ) -> Vec<Option<Current>> {
        let placeholder = unknown_output();
        let mut current: Vec<Option<Current>> = (0..self.graph.len()).map(|_| None).collect();
        for &node in self.graph.order() {
            let p = &self.prepared[&self.graph.rule_index(node)];
            let mut owned: BTreeMap<RuleName, OutputRecord> = BTreeMap::new();
            let mut exact = true;
            for dep in self.graph.dependencies(node) {
                let name = self.project[self.graph.rule_index(dep)].name.clone();
                let record = match current[dep.index()].as_ref().and_then(|c| c.output.clone()) {
                    Some(r) => r,
                    None => {
                        exact = false;
                        OutputRecord {
                            output: placeholder,
                            exports: old
                                .get(name.as_str())
                                .map(|r| r.exports.clone())
                                .unwrap_or_default(),
                            entries: 0,
                            size: 0,
                        }
                    }
                };
                owned.insert(name, record);
            }
            let records: BTreeMap<RuleName, &OutputRecord> =
                owned.iter().map(|(n, r)| (n.clone(), r)).collect();
            let scope = self.scope(&records);
            let Ok(Derived { bytes, drv, .. }) = self.derive(p, &scope, &records) else {
                continue;
            };
            let output = exact
                .then(|| self.local_output(p, &drv).or_else(|| self.recorded(&drv)))
                .flatten();
            current[node.index()] = Some(Current {
                drv,
                bytes,
                output,
                exact,
            });
        }
        current
    }

    /// Asks the remote caches, wave by wave through the DAG, for every derivation the local
    /// store lacks: a rule's derivation is known once its dependencies' outputs are, so each
    /// wave's lookups go out together (concurrently, inside each substituter), and the first
    /// rule no cache holds stops its dependents' lookups (they will be built). Only action
    /// entries cross the network here; archives follow lazily, when something reads them.
    pub fn substitute(&mut self) {
        use rayon::prelude::*;
        let substituters = self.substituters;
        if substituters.is_empty() {
            return;
        }
        let mut looked_up = HashSet::new();
        let mut known: HashMap<NodeIndex, OutputRecord> = HashMap::new();
        let mut depth: HashMap<NodeIndex, usize> = HashMap::new();
        let mut waves: Vec<Vec<NodeIndex>> = Vec::new();
        for &node in self.graph.order() {
            let d = self
                .graph
                .dependencies(node)
                .map(|dep| depth[&dep] + 1)
                .max()
                .unwrap_or(0);
            depth.insert(node, d);
            if waves.len() <= d {
                waves.resize_with(d + 1, Vec::new);
            }
            waves[d].push(node);
        }
        let mut substituted = HashMap::new();
        for wave in waves {
            let this = &*self;
            let known_ref = &known;
            // (node, derivation, local record if the store has it)
            let derived: Vec<(NodeIndex, Digest, Option<OutputRecord>)> = wave
                .par_iter()
                .filter_map(|&node| {
                    let p = &this.prepared[&this.graph.rule_index(node)];
                    let mut records = BTreeMap::new();
                    for dep in this.graph.dependencies(node) {
                        let name = this.project[this.graph.rule_index(dep)].name.clone();
                        records.insert(name, known_ref.get(&dep)?);
                    }
                    let scope = this.scope(&records);
                    let drv = this.derive(p, &scope, &records).ok()?.drv;
                    Some((node, drv, this.local_output(p, &drv)))
                })
                .collect();
            let mut missing: Vec<(NodeIndex, Digest)> = Vec::new();
            for (node, drv, local) in derived {
                match local {
                    Some(record) => {
                        known.insert(node, record);
                    }
                    None => missing.push((node, drv)),
                }
            }
            for s in substituters {
                if missing.is_empty() {
                    break;
                }
                let drvs: Vec<Digest> = missing.iter().map(|(_, d)| *d).collect();
                looked_up.extend(drvs.iter().copied());
                let answers = s.lookup_many(&drvs);
                let mut still = Vec::new();
                for ((node, drv), answer) in missing.into_iter().zip(answers) {
                    match answer {
                        Some(record) => {
                            substituted.insert(drv, record.clone());
                            known.insert(node, record);
                        }
                        None => still.push((node, drv)),
                    }
                }
                missing = still;
            }
        }
        tracing::debug!(pulled = substituted.len(), "looked up the remote caches");
        self.substituted = substituted;
        self.looked_up = looked_up;
    }

    /// A failed rule, described for the report.
    fn failure(
        &self,
        p: &PreparedRule<'_>,
        start: Instant,
        derivation: Option<Digest>,
        e: &BuildError,
    ) -> Failure {
        let (report, message) = self.describe(p, e);
        Failure {
            derivation,
            report,
            message,
            infrastructure: false,
            duration_ms: start.elapsed().as_secs_f64() * 1000.0,
        }
    }

    /// The cached output of `drv` when its artifact is there too. A broken action entry is a
    /// miss that is rebuilt (and overwritten); an I/O failure of the store is an error (the
    /// rule fails as infrastructure). An entry whose artifact is gone is a miss too.
    fn usable_output(
        &self,
        p: &PreparedRule<'_>,
        drv: &Digest,
    ) -> Result<Option<OutputRecord>, StoreError> {
        let found = match self.cache.actions.lookup(drv) {
            Ok(found) => found,
            Err(e @ (StoreError::Record { .. } | StoreError::Corrupt { .. })) => {
                tracing::warn!(rule = %p.rule.name, error = %error_chain(&e), "ignoring a broken action cache entry; rebuilding");
                None
            }
            Err(e) => return Err(e),
        };
        match found {
            Some(record) if self.cache.objects.contains(&record.output)? => Ok(Some(record)),
            _ => Ok(None),
        }
    }

    /// The rule's sources, read again and checked against the digests its derivation holds.
    fn load_sources(&self, p: &PreparedRule<'_>) -> Result<Vec<LoadedSource>, BuildError> {
        let mut srcs = Vec::with_capacity(p.srcs.len());
        if p.kind.streams_sources() {
            // Copied from disk by the kind, checked against these digests as it goes.
            for entry in &p.srcs {
                srcs.push(LoadedSource {
                    path: entry.path.clone(),
                    content: Default::default(),
                    executable: entry.executable,
                });
            }
            return Ok(srcs);
        }
        let now = std::time::SystemTime::now();
        for (entry, hashed_at) in p.srcs.iter().zip(&p.stats) {
            let full = self.project.root.join(entry.path.as_str());
            let content = match read_again(&full, hashed_at, &entry.digest, now) {
                Ok(ReadAgain::Same(content)) => content,
                Ok(ReadAgain::Changed) => {
                    return Err(BuildError::failed(format!(
                        "source `{}` changed during the build; run it again",
                        entry.path
                    )))
                }
                Err(e) => {
                    return Err(BuildError::caused(
                        format!("failed to read source `{}`", entry.path),
                        e,
                    ))
                }
            };
            srcs.push(LoadedSource {
                path: entry.path.clone(),
                content: content.into(),
                executable: entry.executable,
            });
        }
        Ok(srcs)
    }

    /// A source file of at most 256 KiB (what the store keeps for `kiln why`), read again from
    /// the project, when it still has the digest the derivation recorded.
    fn small_source(&self, path: &kiln_core::RelPath, digest: &Digest) -> Option<Vec<u8>> {
        let full = self.project.root.join(path.as_str());
        if std::fs::metadata(&full).ok()?.len() > 256 << 10 {
            return None;
        }
        let bytes = std::fs::read(&full).ok()?;
        (Digest::of(&bytes) == *digest).then_some(bytes)
    }

    /// A scratch directory under the store's `tmp/`, for kinds that need one.
    fn scratch_dir(
        &self,
        p: &PreparedRule<'_>,
    ) -> Result<Option<kiln_store::ScratchDir>, StoreError> {
        if !p.kind.needs_scratch() {
            return Ok(None);
        }
        self.store.scratch_dir("build-").map(Some)
    }

    /// Records `drv` -> its stored output in the action cache, with who and what built it
    /// (`started`: when this rule's build began).
    fn record_output(
        &self,
        drv: &Digest,
        derivation: &[u8],
        record: &OutputRecord,
        started: std::time::SystemTime,
    ) -> Result<(), StoreError> {
        let finished = std::time::SystemTime::now();
        let built = kiln_store::BuildInfo {
            kiln: env!("CARGO_PKG_VERSION").to_owned(),
            host: host_name(),
            started: humantime::format_rfc3339_seconds(started).to_string(),
            finished: humantime::format_rfc3339_seconds(finished).to_string(),
            duration_ms: finished
                .duration_since(started)
                .unwrap_or_default()
                .as_secs_f64()
                * 1000.0,
        };
        self.store
            .write_action_built(drv, derivation, record, Some(&built))
    }

    fn describe(&self, p: &PreparedRule<'_>, e: &BuildError) -> (miette::Report, String) {
        let rule = p.rule;
        let located: Option<kiln_core::diagnostic::Diagnostic> = match e {
            BuildError::Attribute(a) => Some(self.project.diagnostic(
                &self.project.attr_location(rule, &a.path),
                Some(&rule.name),
                super::prepare::attr_message(a),
            )),
            BuildError::Source {
                path,
                offset,
                message,
            } => {
                let content =
                    std::fs::read(self.project.root.join(path.as_str())).unwrap_or_default();
                let src = LoadedSource {
                    path: path.clone(),
                    content: content.into(),
                    executable: false,
                };
                Some(source_file_diagnostic(&src, *offset, rule, message.clone()))
            }
            _ => None,
        };
        match located {
            Some(d) => {
                let msg = d.to_string();
                (miette::Report::new(d), msg)
            }
            None => {
                let (line, col) = self
                    .project
                    .file(rule.loc.file)
                    .line_col(rule.loc.span.start);
                let msg = format!(
                    "{}:{line}:{col}: rule `{}` failed: {}",
                    self.project.file(rule.loc.file).display,
                    rule.name,
                    error_chain(e)
                );
                (miette::miette!("{msg}"), msg)
            }
        }
    }
}
