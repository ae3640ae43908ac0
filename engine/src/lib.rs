//! kiln-engine: the build pipeline, from a project directory to artifacts in the store. The
//! CLI, `plan`/`apply` (which build first) and the benches call it; it prints nothing.
//!
//! load (core) -> select env -> graph (core) -> prepare: validate everything, write nothing ->
//! open the store -> execute in parallel: derivation hash, cache lookup, build (rules), store
//! write -> one sync -> GC root -> report.

pub mod audit;
mod conflicts;
mod error;
mod execute;
mod fingerprint;
mod prepare;
mod project_sources;
mod report;
mod source_cache;
pub mod treediff;
mod var_override;
pub mod why;

pub use error::EngineError;
pub use execute::{Audit, Current, Verdict};
pub use prepare::{parse_var, select_env, Selected};
pub use report::{BuildReport, RuleReport, Status, Summary, BUILD_JSON_FORMAT};

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Instant;

use kiln_core::graph::RuleGraph;
use kiln_core::load::load_project;
use kiln_core::project::Project;
use kiln_core::scheduler::{Outcome, Schedule};
use kiln_core::{Digest, Tree};
use kiln_rules::BuiltinKinds;
use kiln_store::{Backend, LocalStore, ObjectStore, PullThrough, Root, RootEntry, Substituter};

/// Options of one build.
#[derive(Clone, Default)]
pub struct BuildOptions {
    env: Option<String>,
    schedule: Schedule,
    distrusted: BTreeSet<Digest>,
    vars: BTreeMap<String, serde_json::Value>,
    unsandboxed: bool,
    substituters: Vec<Arc<dyn Substituter>>,
    audit: Option<execute::Audit>,
    rules: Vec<String>,
    /// Leave `roots/` as it was: see [`BuildOptions::look_only`].
    look_only: bool,
    /// Set by [`build`]: record what the build read, for the next one's fast path.
    fingerprint: Option<fingerprint::Invocation>,
}

impl std::fmt::Debug for BuildOptions {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BuildOptions")
            .field("env", &self.env)
            .field("schedule", &self.schedule)
            .field("distrusted", &self.distrusted)
            .field("vars", &self.vars)
            .field("unsandboxed", &self.unsandboxed)
            .field("rules", &self.rules)
            .field("look_only", &self.look_only)
            .field(
                "substituters",
                &self
                    .substituters
                    .iter()
                    .map(|s| s.address())
                    .collect::<Vec<_>>(),
            )
            .finish()
    }
}

impl BuildOptions {
    /// The environment to build.
    #[must_use]
    pub fn env(mut self, env: Option<String>) -> Self {
        self.env = env;
        self
    }

    /// Variable overrides (`--var`), making a separate instance of the environment.
    #[must_use]
    pub fn vars(mut self, vars: BTreeMap<String, serde_json::Value>) -> Self {
        self.vars = vars;
        self
    }

    /// Run `exec` commands without the sandbox (a warning per rule).
    #[must_use]
    pub fn unsandboxed(mut self, unsandboxed: bool) -> Self {
        self.unsandboxed = unsandboxed;
        self
    }

    /// A build for a command that only looks (`plan`, `diff`, `audit`, `export --check`): it
    /// may add objects and action entries to the store, but moves no GC root. The root, the
    /// previous root, the object index, the source stat cache and the fingerprint stay byte
    /// for byte as they were, so `kiln diff --since last` and `kiln why` keep comparing with
    /// the last real build.
    #[must_use]
    pub fn look_only(mut self, look_only: bool) -> Self {
        self.look_only = look_only;
        self
    }

    /// How rules are scheduled: parallel jobs, keep going after a failure.
    #[must_use]
    pub fn schedule(mut self, schedule: Schedule) -> Self {
        self.schedule = schedule;
        self
    }

    /// Only these rules and their dependencies (`NAME+`: and its dependents), see
    /// [`Loaded::restrict`]; read by [`build`] (a loaded project is restricted by its caller).
    #[must_use]
    pub fn rules(mut self, rules: Vec<String>) -> Self {
        self.rules = rules;
        self
    }

    /// Remote caches to pull from, in order: rules the local store lacks are looked up there
    /// (wave by wave, concurrently) before anything is built, and their artifacts downloaded
    /// only when something reads them.
    #[must_use]
    pub fn substituters(mut self, substituters: Vec<Arc<dyn Substituter>>) -> Self {
        self.substituters = substituters;
        self
    }

    /// Where artifacts are read: the local store, and the substituters on a miss.
    fn objects(&self, store: Arc<LocalStore>) -> Arc<dyn ObjectStore> {
        if self.substituters.is_empty() {
            store
        } else {
            Arc::new(PullThrough::new(store, self.substituters.clone()))
        }
    }

    /// Outputs known to be missing or corrupt: rules whose previous output is one of them are
    /// looked up in the action cache (which checks the object) instead of trusted.
    #[must_use]
    pub fn distrust(mut self, outputs: impl IntoIterator<Item = Digest>) -> Self {
        self.distrusted.extend(outputs);
        self
    }
}

/// A loaded project with its environment and graph, ready for `build`, `graph` or `store`.
pub struct Loaded {
    /// The project.
    pub project: Project,
    /// The selected environment.
    pub selected: Selected,
    /// The rule graph of that environment.
    pub graph: RuleGraph,
    /// Only some rules were selected (`--rule`): the graph holds their closure, the GC root
    /// keeps the other rules' entries, and realize prunes nothing.
    pub partial: bool,
}

impl Loaded {
    /// Overrides variables (`--var`), each typed by its default (see [`var_override`]): every
    /// value of the wrong type is reported at once, at the variable's definition.
    pub fn override_vars(
        &mut self,
        vars: &BTreeMap<String, serde_json::Value>,
    ) -> Result<(), EngineError> {
        let mut typed = BTreeMap::new();
        let mut wrong = Vec::new();
        for (name, given) in vars {
            match self.selected.vars.get(name) {
                Some(default) => match var_override::typed(given, default) {
                    Ok(v) => {
                        typed.insert(name.clone(), v);
                    }
                    Err(want) => wrong.push(var_override::wrong_type(
                        &self.project,
                        self.selected.env.as_ref(),
                        name,
                        given,
                        want,
                    )),
                },
                // Unknown names are refused, with the names defined, below.
                None => {
                    typed.insert(name.clone(), given.clone());
                }
            }
        }
        match wrong.len() {
            0 => self.selected.override_vars(&typed),
            1 => Err(EngineError::Invalid(Box::new(wrong.remove(0)))),
            _ => Err(EngineError::InvalidVars(wrong)),
        }
    }

    /// The rules `selectors` name, exactly; `NAME+` adds NAME's dependents (and theirs).
    /// An unknown name is an error naming the environment.
    pub fn selected_rules(&self, selectors: &[String]) -> Result<BTreeSet<String>, EngineError> {
        Ok(self
            .select(selectors)?
            .into_iter()
            .map(|n| self.project[self.graph.rule_index(n)].name.to_string())
            .collect())
    }

    fn select(&self, selectors: &[String]) -> Result<Vec<petgraph::graph::NodeIndex>, EngineError> {
        let by_name: std::collections::HashMap<&str, petgraph::graph::NodeIndex> = self
            .graph
            .order()
            .iter()
            .map(|&n| (self.project[self.graph.rule_index(n)].name.as_str(), n))
            .collect();
        let mut seeds = Vec::new();
        for selector in selectors {
            let (name, with_dependents) = match selector.strip_suffix('+') {
                Some(n) => (n, true),
                None => (selector.as_str(), false),
            };
            let node = *by_name.get(name).ok_or_else(|| EngineError::UnknownRule {
                rule: name.to_owned(),
                env: self.selected.name().to_owned(),
            })?;
            seeds.push(node);
            if with_dependents {
                let mut stack = vec![node];
                while let Some(n) = stack.pop() {
                    for d in self.graph.dependents(n) {
                        if !seeds.contains(&d) {
                            seeds.push(d);
                            stack.push(d);
                        }
                    }
                }
            }
        }
        Ok(seeds)
    }

    /// Keeps only the rules `selectors` name and everything they depend on; `NAME+` also
    /// keeps NAME's dependents (and theirs). No selectors: everything.
    pub fn restrict(&mut self, selectors: &[String]) -> Result<(), EngineError> {
        if selectors.is_empty() {
            return Ok(());
        }
        let seeds = self.select(selectors)?;
        let mut keep: BTreeSet<usize> = BTreeSet::new();
        let mut stack = seeds;
        while let Some(n) = stack.pop() {
            if keep.insert(self.graph.rule_index(n).get()) {
                stack.extend(self.graph.dependencies(n));
            }
        }
        let mut i = 0;
        self.project.rules.retain(|_| {
            let kept = keep.contains(&i);
            i += 1;
            kept
        });
        self.graph = RuleGraph::build(&self.project, self.selected.env.as_ref())?;
        self.partial = true;
        Ok(())
    }
}

/// Loads `dir` and selects `env`.
pub fn load(dir: &Path, env: Option<&str>) -> Result<Loaded, EngineError> {
    let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
    let project = load_project(&dir)?;
    let selected = select_env(&project, env)?;
    let graph = RuleGraph::build_all(&project, selected.env.as_ref()).map_err(|mut errors| {
        if errors.len() == 1 {
            EngineError::Invalid(Box::new(errors.remove(0)))
        } else {
            EngineError::InvalidRules(errors)
        }
    })?;
    Ok(Loaded {
        project,
        selected,
        graph,
        partial: false,
    })
}

/// The key of a loaded project's GC roots.
pub fn project_key(project: &Project) -> String {
    LocalStore::project_key(&project.name, &project.root)
}

/// Builds the project in `dir` into the store at `store_dir`. `on_progress(total, finished_rule)`
/// is called once with `("", total)` first and then per finished rule.
pub fn build(
    dir: &Path,
    store_dir: &Path,
    options: &BuildOptions,
    on_progress: &(dyn Fn(usize, &str) + Sync),
) -> Result<BuildReport, EngineError> {
    let start = Instant::now();
    let started = std::time::SystemTime::now();
    let mut options = options.clone();
    // The fast path: the last build with these arguments read exactly what is there now.
    if options.rules.is_empty() && options.audit.is_none() && options.distrusted.is_empty() {
        let dir = std::fs::canonicalize(dir).unwrap_or_else(|_| dir.to_path_buf());
        let invocation = fingerprint::Invocation::new(
            &dir,
            options.env.as_deref(),
            &options.vars,
            options.unsandboxed,
            started,
        );
        if let Some(report) = fingerprint::check(store_dir, &invocation, start) {
            tracing::debug!(elapsed = ?start.elapsed(), "the fingerprint holds: nothing changed");
            on_progress(report.rules.len(), "");
            return Ok(report);
        }
        options.fingerprint = Some(invocation);
    }
    let mut loaded = load(dir, options.env.as_deref())?;
    loaded.override_vars(&options.vars)?;
    loaded.restrict(&options.rules)?;
    tracing::debug!(elapsed = ?start.elapsed(), rss_kib = rss_kib(), "loaded the project");
    build_loaded(&loaded, store_dir, &options, on_progress, start)
}

/// [`build`] for a project already loaded (`kiln plan`/`apply` keep it for realizing). The
/// environment is the one `loaded` was loaded for; `options.env` is not read here.
pub fn build_loaded(
    loaded: &Loaded,
    store_dir: &Path,
    options: &BuildOptions,
    on_progress: &(dyn Fn(usize, &str) + Sync),
    start: Instant,
) -> Result<BuildReport, EngineError> {
    let Loaded {
        project,
        selected,
        graph,
        ..
    } = loaded;
    execute_loaded(
        loaded,
        store_dir,
        options,
        on_progress,
        start,
        Job::Schedule,
        |ran| {
            let Ran {
                outcomes,
                current: _,
                store,
                previous_root,
                source_cache,
                key,
                reads,
            } = ran;
            let mut summary =
                Outcomes::summarize(project, graph, outcomes, previous_root.map(|(r, _)| r));
            summary.check_conflicts(
                project,
                graph,
                store,
                (key, &selected.instance_name()),
                !options.look_only,
            )?;
            tracing::debug!(elapsed = ?start.elapsed(), "checked for objects from two rules");
            // The stat cache only saves work: failing to write it is not worth failing the build.
            let changed_cache = (!options.look_only)
                .then(|| source_cache.encode_if_changed(std::time::SystemTime::now()))
                .flatten();
            if let Some(bytes) = changed_cache {
                if let Err(e) = store.write_source_cache(key, &bytes) {
                    tracing::warn!(error = %kiln_core::error_chain::error_chain(&e), "could not save the source stat cache");
                }
            }
            // Durability: one `syncfs` when something was built; else only the pending
            // entries (pulled outputs' action entries) are written.
            let sync_error = if summary.any_built {
                store.sync().err()
            } else {
                store.flush().err()
            };
            tracing::debug!(elapsed = ?start.elapsed(), rss_kib = rss_kib(), "synced");
            let report = BuildReport::new(
                project.name.clone(),
                selected.name().to_owned(),
                store.root().display().to_string(),
                start.elapsed(),
                std::mem::take(&mut summary.rules),
                std::mem::take(&mut summary.diagnostics),
            );
            let (report, root_checksum) = persist(
                report,
                summary,
                sync_error,
                store,
                loaded,
                (key, previous_root),
                !options.look_only,
            );
            if let (Some(invocation), Some(reads), Some(checksum), false) = (
                &options.fingerprint,
                reads,
                root_checksum,
                options.look_only,
            ) {
                if report.success() && !loaded.partial {
                    let root_rel = LocalStore::root_rel_path(key, &selected.instance_name());
                    fingerprint::record(store, invocation, reads, (&root_rel, checksum), &report);
                    tracing::debug!(elapsed = ?start.elapsed(), "recorded the build's fingerprint");
                }
            }
            Ok(report)
        },
    )?
}

/// What a run of the executor leaves for its caller: the outcomes and the state it ran in.
struct Ran<'r> {
    outcomes: Vec<Outcome<execute::Built, execute::Failure>>,
    current: Vec<Option<execute::Current>>,
    store: &'r Arc<LocalStore>,
    previous_root: Option<&'r (Root, Digest)>,
    source_cache: source_cache::SourceCache,
    key: &'r str,
    /// What the build read, when it records a fingerprint.
    reads: Option<fingerprint::Reads>,
}

/// What [`execute_loaded`] does with the executor.
enum Job<'j> {
    /// Run the schedule (a build, or an audit).
    Schedule,
    /// Only compute every rule's current derivation; `old` gives placeholder exports.
    Derive(&'j BTreeMap<String, kiln_store::OutputRecord>),
}

/// Validates every rule, opens the store, runs the executor (a build, or with
/// `options.audit` an audit) and hands the outcomes to `then`.
fn execute_loaded<R>(
    loaded: &Loaded,
    store_dir: &Path,
    options: &BuildOptions,
    on_progress: &(dyn Fn(usize, &str) + Sync),
    start: Instant,
    job: Job<'_>,
    then: impl FnOnce(Ran<'_>) -> R,
) -> Result<R, EngineError> {
    let Loaded {
        project,
        selected,
        graph,
        ..
    } = loaded;
    let kinds = BuiltinKinds::new(options.unsandboxed);
    let key = project_key(project);
    let cache_bytes = std::fs::read(LocalStore::source_cache_path(store_dir, &key)).ok();
    let cache = source_cache::SourceCache::decode(cache_bytes.as_deref());
    // Validate while the previous root is read and parsed.
    let (prepared, previous_root) = rayon::join(
        || prepare::prepare(project, graph, selected, &kinds, &cache),
        || LocalStore::peek_root_checksummed(store_dir, &key, &selected.instance_name()),
    );
    let prepare::Prepared {
        rules: prepared,
        listed_dirs,
    } = prepared?;
    tracing::debug!(elapsed = ?start.elapsed(), rss_kib = rss_kib(), "validated every rule");

    // Only now, with the whole project valid, is the store touched.
    let store = Arc::new(LocalStore::open(store_dir)?);
    let backend = Backend {
        objects: options.objects(store.clone()),
        actions: store.clone(),
    };
    let previous = previous_root
        .as_ref()
        .map(|(r, _)| {
            r.rules
                .values()
                .map(|e| (e.derivation, &e.output))
                .collect()
        })
        .unwrap_or_default();
    on_progress(graph.len(), "");
    let on_done = |name: &str| on_progress(graph.len(), name);
    let mut executor = execute::Executor {
        project,
        graph,
        prepared,
        selected,
        store: &store,
        cache: &backend,
        previous,
        distrusted: options.distrusted.clone(),
        broken: Default::default(),
        substituters: &options.substituters,
        substituted: Default::default(),
        looked_up: Default::default(),
        on_done: &on_done,
        audit: options.audit.clone(),
    };
    tracing::debug!(elapsed = ?start.elapsed(), "opened the store, read the previous root");
    let (outcomes, current) = match job {
        Job::Schedule => {
            if executor.audit.is_none() {
                executor.substitute();
            }
            (run_healing(&mut executor, options.schedule), Vec::new())
        }
        Job::Derive(old) => (Vec::new(), executor.current_derivations(old)),
    };
    tracing::debug!(elapsed = ?start.elapsed(), rss_kib = rss_kib(), "executed");
    let reads = options
        .fingerprint
        .as_ref()
        .map(|_| fingerprint::Reads::gather(project, executor.prepared.values(), &listed_dirs));
    drop(executor);
    Ok(then(Ran {
        outcomes,
        current,
        store: &store,
        previous_root: previous_root.as_ref(),
        source_cache: cache,
        key: &key,
        reads,
    }))
}

/// `kiln audit`: every rule (or `audit.rules`) rebuilt from its dependencies' recorded outputs,
/// ignoring every cache, and compared with its recorded output; nothing is stored.
pub fn audit(
    loaded: &Loaded,
    store_dir: &Path,
    options: &BuildOptions,
    audit: execute::Audit,
) -> Result<audit::AuditReport, EngineError> {
    let start = Instant::now();
    let options = BuildOptions {
        audit: Some(audit),
        ..options.clone()
    };
    execute_loaded(
        loaded,
        store_dir,
        &options,
        &|_, _| {},
        start,
        Job::Schedule,
        |ran| audit::AuditReport::new(loaded, ran.outcomes, start.elapsed()),
    )
}

/// What `kiln why` and `kiln diff --since` compare the checkout with.
#[derive(Debug, Clone)]
pub enum Since {
    /// The last successful build of the environment.
    Last,
    /// A GC root file.
    Root(PathBuf),
}

/// `kiln why RULE`: what moved the rule's derivation, against `since`. When nothing moved
/// since the last build, the last build is compared with the one before it (why the rule was
/// rebuilt then).
pub fn why(
    loaded: &Loaded,
    store_dir: &Path,
    options: &BuildOptions,
    rule: &str,
    since: &Since,
) -> Result<(String, why::Explanation), EngineError> {
    let env = loaded.selected.instance_name();
    if !loaded
        .graph
        .order()
        .iter()
        .any(|&n| loaded.project[loaded.graph.rule_index(n)].name.as_str() == rule)
    {
        return Err(EngineError::UnknownRule {
            rule: rule.to_owned(),
            env: loaded.selected.name().to_owned(),
        });
    }
    let store = LocalStore::open(store_dir)?;
    let key = project_key(&loaded.project);
    let old_root = match since {
        Since::Last => store.read_root(&key, &env),
        Since::Root(path) => Some(LocalStore::read_root_file(path)?),
    }
    .ok_or_else(|| EngineError::NoEarlierBuild {
        env: loaded.selected.name().to_owned(),
    })?;
    let new = current_sides(loaded, store_dir, options, &old_root)?;
    let old = root_sides(&old_root);
    let project_root = loaded.project.root.clone();
    let source = |path: &str, digest: &Digest| {
        store.source(digest).or_else(|| {
            let bytes = std::fs::read(project_root.join(path)).ok()?;
            (Digest::of(&bytes) == *digest).then_some(bytes)
        })
    };
    let record = |drv: &Digest| store.action(drv).ok().flatten().map(|(_, d)| d);
    let compare = |old, new| why::Comparison {
        old,
        new,
        unknown_output: execute::unknown_output(),
        source: &source,
        record: &record,
    };
    let explanation = compare(&old, &new).explain(rule);
    if explanation.state == why::State::Unchanged && matches!(since, Since::Last) {
        if let Some(previous) = store.read_previous_root(&key, &env) {
            let older = root_sides(&previous);
            let before = compare(&older, &old).explain(rule);
            if before.state != why::State::Unchanged || !before.causes.is_empty() {
                return Ok(("the build before the last one".to_owned(), before));
            }
        }
    }
    let with = match since {
        Since::Last => "the last build".to_owned(),
        Since::Root(p) => format!("the root `{}`", p.display()),
    };
    Ok((with, explanation))
}

/// A root's rules as one side of a comparison (their derivation records are read from the
/// action cache when an explanation visits them).
fn root_sides(root: &Root) -> BTreeMap<String, why::Side> {
    root.rules
        .iter()
        .map(|(name, e)| {
            (
                name.to_string(),
                why::Side {
                    drv: e.derivation,
                    record: None,
                    output: Some(e.output.output),
                },
            )
        })
        .collect()
}

/// The checkout's rules as one side: their current derivations (nothing is built).
fn current_sides(
    loaded: &Loaded,
    store_dir: &Path,
    options: &BuildOptions,
    old_root: &Root,
) -> Result<BTreeMap<String, why::Side>, EngineError> {
    let old_records: BTreeMap<String, kiln_store::OutputRecord> = old_root
        .rules
        .iter()
        .map(|(n, e)| (n.to_string(), e.output.clone()))
        .collect();
    let start = Instant::now();
    let current = execute_loaded(
        loaded,
        store_dir,
        options,
        &|_, _| {},
        start,
        Job::Derive(&old_records),
        |ran| ran.current,
    )?;
    Ok(loaded
        .graph
        .order()
        .iter()
        .filter_map(|&n| {
            let c = current[n.index()].clone()?;
            Some((
                loaded.project[loaded.graph.rule_index(n)].name.to_string(),
                why::Side {
                    drv: c.drv,
                    record: Some(c.bytes),
                    output: c.output.map(|r| r.output),
                },
            ))
        })
        .collect())
}

/// Writes the GC root when it changed, the build succeeded and `record_root` (the build is not
/// [`BuildOptions::look_only`]). Store failures (the sync's, the root's) still leave a full
/// report (and valid --json), with exit 2. Also gives the checksum of the root the build
/// leaves, when it left one.
fn persist(
    mut report: BuildReport,
    summary: Outcomes,
    mut store_error: Option<kiln_store::StoreError>,
    store: &LocalStore,
    loaded: &Loaded,
    (key, previous_root): (&str, Option<&(Root, Digest)>),
    record_root: bool,
) -> (BuildReport, Option<Digest>) {
    let mut checksum = None;
    if store_error.is_none() && report.success() && summary.same_root {
        checksum = previous_root.map(|(_, c)| *c);
    }
    let previous_root = previous_root.map(|(r, _)| r);
    if record_root && store_error.is_none() && report.success() && !summary.same_root {
        let mut root = summary.into_root(
            &loaded.project,
            &loaded.graph,
            loaded.selected.instance_name(),
        );
        // A `--rule` build covered part of the project: the other rules' entries stay.
        if loaded.partial {
            for (name, entry) in previous_root.iter().flat_map(|r| r.rules.iter()) {
                root.rules
                    .entry(name.clone())
                    .or_insert_with(|| entry.clone());
            }
        }
        match store.write_root(key, &root) {
            Ok(c) => checksum = Some(c),
            Err(e) => store_error = Some(e),
        }
    }
    if let Some(e) = store_error {
        report.store_error = Some(kiln_core::error_chain::error_chain(&e));
        report
            .diagnostics
            .push(miette::Report::new(EngineError::Store(e)));
        checksum = None;
    }
    (report, checksum)
}

/// Runs the executor; then, while objects were found missing or corrupt (and quarantined),
/// again with them distrusted, so they are rebuilt in this run with whatever failed because of
/// them. Each pass can only shrink what is broken, since a rebuilt object is written afresh; a
/// few passes cover damage found at several depths.
fn run_healing(
    executor: &mut execute::Executor<'_>,
    schedule: Schedule,
) -> Vec<Outcome<execute::Built, execute::Failure>> {
    let mut outcomes = executor.run(schedule);
    for _ in 0..3 {
        let broken = std::mem::take(&mut *executor.broken.lock().expect("broken set lock"));
        if broken.is_empty() || broken.is_subset(&executor.distrusted) {
            break;
        }
        // Archives of pulled rules that could not be fetched were already warned about by
        // their cache; only damage to the local store is news.
        let pulled: BTreeSet<Digest> = executor.substituted.values().map(|r| r.output).collect();
        if broken.iter().any(|o| !pulled.contains(o)) {
            tracing::warn!(
                objects = broken.len(),
                "objects in the store were missing or corrupt: rebuilding what produced them"
            );
        } else {
            tracing::debug!(
                objects = broken.len(),
                "pulled archives unavailable: building them"
            );
        }
        executor.distrusted.extend(broken);
        outcomes = executor.run(schedule);
    }
    outcomes
}

/// Every rule's outcome, read into reports, and what they say about the previous root.
struct Outcomes {
    /// One report per rule, in DAG order.
    rules: Vec<RuleReport>,
    /// The failures' diagnostics.
    diagnostics: Vec<miette::Report>,
    /// Whether some rule was built (not only taken from the cache).
    any_built: bool,
    /// Whether a rule's output differs from the last successful build's (only then can a new
    /// conflict between two rules' objects have appeared; a failed check leaves the root as it
    /// was, so the next run checks again).
    new_outputs: bool,
    /// Whether the new GC root would equal the previous one (then it is not rewritten).
    same_root: bool,
    /// The outcomes by node index; the built ones are kept for the GC root.
    outcomes: Vec<Option<Outcome<execute::Built, execute::Failure>>>,
}

impl Outcomes {
    fn summarize(
        project: &Project,
        graph: &RuleGraph,
        outcomes: Vec<Outcome<execute::Built, execute::Failure>>,
        previous_root: Option<&Root>,
    ) -> Self {
        let mut this = Self {
            rules: Vec::with_capacity(graph.len()),
            diagnostics: Vec::new(),
            any_built: false,
            new_outputs: false,
            same_root: previous_root.is_some_and(|r| r.rules.len() == graph.len()),
            outcomes: outcomes.into_iter().map(Some).collect(),
        };
        for &node in graph.order() {
            let rule = &project[graph.rule_index(node)];
            let base = |status, derivation, output, duration_ms, error| RuleReport {
                name: rule.name.to_string(),
                kind: rule.kind.value.clone(),
                status,
                derivation,
                output,
                duration_ms,
                error,
                infrastructure: false,
            };
            let previous = previous_root.and_then(|r| r.rules.get(rule.name.as_str()));
            match this.outcomes[node.index()]
                .take()
                .expect("one outcome per node")
            {
                Outcome::Done(b) => {
                    this.any_built |= b.status == Status::Built;
                    this.new_outputs |= previous.is_none_or(|e| e.output.output != b.record.output);
                    this.same_root &= previous.is_some_and(|e| {
                        e.derivation == b.derivation
                            && e.output == b.record
                            && e.kind == rule.kind.value
                    });
                    this.rules.push(base(
                        b.status,
                        Some(b.derivation),
                        Some(b.record.output),
                        b.duration_ms,
                        None,
                    ));
                    this.outcomes[node.index()] = Some(Outcome::Done(b));
                }
                Outcome::Failed(f) => {
                    this.rules.push(RuleReport {
                        infrastructure: f.infrastructure,
                        ..base(
                            Status::Failed,
                            f.derivation,
                            None,
                            f.duration_ms,
                            Some(f.message),
                        )
                    });
                    this.diagnostics.push(f.report);
                }
                Outcome::Skipped { failed_dependency } => {
                    let dep = &project[graph.rule_index(failed_dependency)].name;
                    this.rules.push(base(
                        Status::Skipped,
                        None,
                        None,
                        0.0,
                        Some(format!("dependency `{dep}` failed")),
                    ));
                }
                Outcome::Cancelled => {
                    this.rules
                        .push(base(Status::Cancelled, None, None, 0.0, None))
                }
            }
        }
        this
    }

    /// One object from two unrelated rules: caught here, when some rule's output is not the one
    /// the last successful build recorded (a no-op build, or one whose rebuilt outputs came out
    /// the same, cannot have made a new conflict), and every rule succeeded.
    fn check_conflicts(
        &self,
        project: &Project,
        graph: &RuleGraph,
        store: &LocalStore,
        root: (&str, &str),
        keep_index: bool,
    ) -> Result<(), EngineError> {
        let all_good = self
            .rules
            .iter()
            .all(|r| matches!(r.status, Status::Built | Status::Cached | Status::Pulled));
        if !self.new_outputs || !all_good {
            return Ok(());
        }
        let outputs: Vec<Option<conflicts::RuleOutput<'_>>> = (0..graph.len())
            .map(|i| match &self.outcomes[i] {
                Some(Outcome::Done(b)) => Some(conflicts::RuleOutput {
                    rule: graph.rule_index(petgraph::graph::NodeIndex::new(i)),
                    output: b.record.output,
                    tree: b.tree(),
                    objects: b.objects(),
                }),
                _ => None,
            })
            .collect();
        conflicts::check(project, graph, store, root, &outputs, keep_index)
    }

    /// The GC root of a successful build: every rule's derivation and output.
    fn into_root(mut self, project: &Project, graph: &RuleGraph, instance: String) -> Root {
        let rules = graph
            .order()
            .iter()
            .filter_map(|&node| {
                let rule = &project[graph.rule_index(node)];
                match self.outcomes[node.index()].take()? {
                    Outcome::Done(b) => Some((
                        rule.name.clone(),
                        RootEntry {
                            kind: rule.kind.value.clone(),
                            derivation: b.derivation,
                            output: b.record,
                        },
                    )),
                    _ => None,
                }
            })
            .collect();
        Root {
            format_version: 1,
            project: project.name.clone(),
            project_dir: project.root.clone(),
            env: instance,
            rules,
        }
    }
}

/// [`build_loaded`], then the artifact of every rule that succeeded, loaded and checked. An
/// object found missing or corrupt while loading is quarantined and its rule rebuilt in this
/// run (the store heals itself); the user is never asked to run again.
pub fn build_and_load(
    loaded: &Loaded,
    store_dir: &Path,
    options: &BuildOptions,
    on_progress: &(dyn Fn(usize, &str) + Sync),
    start: Instant,
) -> Result<(BuildReport, BTreeMap<String, Arc<Tree>>), EngineError> {
    let mut options = options.clone();
    for _ in 0..3 {
        let report = build_loaded(loaded, store_dir, &options, on_progress, start)?;
        if !report.success() {
            return Ok((report, BTreeMap::new()));
        }
        let store = Arc::new(LocalStore::open(store_dir)?);
        if !options.substituters.is_empty() {
            // Pulled artifacts arrive together rather than one request at a time below.
            let outs: Vec<Digest> = report.rules.iter().filter_map(|r| r.output).collect();
            PullThrough::new(store.clone(), options.substituters.clone()).prefetch(&outs)?;
        }
        let objects = options.objects(store.clone());
        let mut trees = BTreeMap::new();
        let mut broken = Vec::new();
        for r in &report.rules {
            let Some(out) = r.output else { continue };
            let loaded = objects
                .get(&out)
                .and_then(|t| t.ok_or(kiln_store::StoreError::Missing(out)));
            match loaded {
                Ok(tree) => {
                    trees.insert(r.name.clone(), Arc::new(tree));
                }
                Err(e) if e.is_missing_or_corrupt() => {
                    tracing::warn!(rule = %r.name, "its artifact in the store is missing or corrupt: rebuilding it");
                    store.quarantine(&out)?;
                    broken.push(out);
                }
                Err(e) => return Err(e.into()),
            }
        }
        if broken.is_empty() {
            return Ok((report, trees));
        }
        options = options.distrust(broken);
    }
    Err(EngineError::Unhealable)
}

/// Current resident memory in KiB (Linux), for debug logs.
fn rss_kib() -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1)?.parse().ok())
        })
        .unwrap_or(0)
}

/// The store directory: `--store`, else [`LocalStore::default_location`].
pub fn store_dir(flag: Option<PathBuf>) -> PathBuf {
    flag.unwrap_or_else(LocalStore::default_location)
}
