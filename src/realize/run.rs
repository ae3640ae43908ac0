//! The plan and apply procedures.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::path::PathBuf;
use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;

use super::applyset::{self, parent_state, Parent};
use super::cluster::{Cluster, ClusterError};
use super::desired::{self, kind_rank, DesiredObject, ObjectKey, Scope};
use super::health;
use super::lock::{self, LockError, LockGuard, LockOptions};
use super::plan::{self, Action, Plan};
use super::secrets;
use crate::build::{BuildOptions, EngineError, Loaded};

/// Why planning or applying failed.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
pub enum RealizeError {
    /// The build failed or the project is invalid.
    #[error(transparent)]
    #[diagnostic(transparent)]
    Build(#[from] EngineError),
    /// Some rules failed to build.
    #[error("the build failed ({0} rules failed or were skipped); nothing was applied")]
    BuildFailed(usize),
    /// The desired state is inconsistent.
    #[error(transparent)]
    Desired(#[from] desired::DesiredError),
    /// Secret references could not be resolved: every one that failed.
    #[error("{} secret references could not be resolved", .0.len())]
    Secrets(#[related] Vec<secrets::SecretError>),
    /// The cluster refused or failed.
    #[error(transparent)]
    Cluster(#[from] ClusterError),
    /// Ctrl-C or SIGTERM.
    #[error("interrupted")]
    Interrupted,
    /// The set's lock could not be taken.
    #[error(transparent)]
    #[diagnostic(help(
        "another `kiln apply` of this set is running; wait for it, or raise --lock-timeout"
    ))]
    Lock(#[from] LockError),
    /// The parent changed between this run's read and its write: another apply ran.
    #[error("the ApplySet parent Secret `{namespace}/{name}` changed while this apply ran; refusing to overwrite another run's work")]
    #[diagnostic(help("run `kiln apply` again: it plans against what the set holds now"))]
    ParentChanged {
        /// Parent name.
        name: String,
        /// Parent namespace.
        namespace: String,
    },
    /// A rule's object has a kind the cluster cannot resolve.
    #[error("rule `{rule}`: cannot resolve its object's kind")]
    Kind {
        /// The rule.
        rule: String,
        /// The cause.
        #[source]
        source: ClusterError,
    },
    /// The set's parent belongs to another tool.
    #[error("the ApplySet parent Secret `{namespace}/{name}` is managed by `{tooling}`, not kiln; refusing to touch its set")]
    ForeignParent {
        /// Parent name.
        name: String,
        /// Parent namespace.
        namespace: String,
        /// Its tooling annotation.
        tooling: String,
    },
    /// Pruning needs confirmation.
    #[error("refusing to delete {0} objects without confirmation")]
    #[diagnostic(help("pass --yes, or run on a terminal to be asked"))]
    NotConfirmed(usize),
    /// A health gate failed for good (a failed Job, a Deployment past its progress deadline).
    #[error("{object} failed: {condition}")]
    #[diagnostic(help(
        "objects already applied stay; fix the cause and run `kiln apply` again to converge"
    ))]
    GateFailed {
        /// The object.
        object: String,
        /// The failing condition, its reason and message.
        condition: String,
    },
    /// A health gate did not pass.
    #[error("{object} did not become ready within {timeout:?}: waited for {condition}")]
    #[diagnostic(help(
        "objects already applied stay; fix the cause and run `kiln apply` again to converge"
    ))]
    Unhealthy {
        /// The object.
        object: String,
        /// The condition.
        condition: String,
        /// The timeout.
        timeout: Duration,
    },
}

impl RealizeError {
    /// Exit code: 1 for the user's input, 2 for the cluster or store.
    pub fn exit_code(&self) -> u8 {
        match self {
            RealizeError::Interrupted => 130,
            RealizeError::Build(e) => e.exit_code() as u8,
            RealizeError::Cluster(ClusterError::Conflict { .. }) => 1,
            RealizeError::Kind { source, .. } if source.is_not_served() => 1,
            RealizeError::Cluster(_)
            | RealizeError::Kind { .. }
            | RealizeError::Unhealthy { .. }
            | RealizeError::GateFailed { .. }
            | RealizeError::Lock(_)
            | RealizeError::ParentChanged { .. } => 2,
            _ => 1,
        }
    }
}

/// Where to plan: the project, the store and the cluster.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The project directory.
    pub dir: PathBuf,
    /// The store.
    pub store_dir: PathBuf,
    /// The environment.
    pub env: Option<String>,
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// Namespace of the ApplySet parent.
    pub parent_namespace: String,
}

/// How to plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Take the set's lock first (apply).
    pub lock: Option<LockOptions>,
    /// Also list every served kind for members the parent does not name.
    pub find_orphans: bool,
    /// `--var NAME=VALUE` overrides.
    pub vars: BTreeMap<String, Value>,
    /// `exec` without the sandbox.
    pub unsandboxed: bool,
}

/// A planned realization: everything `apply` needs.
pub struct Realized {
    /// The connection.
    pub cluster: Cluster,
    /// The set's parent.
    pub parent: Parent,
    /// The live parent, if the set exists.
    pub live_parent: Option<Value>,
    /// Desired objects, secrets resolved.
    pub desired: Vec<DesiredObject>,
    /// The plan.
    pub plan: Plan,
    /// Namespaces dropped from cluster-scoped objects.
    pub warnings: Vec<desired::ScopeWarning>,
    /// The set's lock, when the plan was made for an apply.
    pub lock: Option<LockGuard>,
}

/// The scope of every group-kind among `objects`: from the project's own CRDs first (their
/// kinds may not be served yet), else from discovery (one request per group-version). A kind
/// that neither knows is an error naming the rule.
async fn resolve_scopes(
    cluster: &Cluster,
    objects: &[desired::RawObject],
    defined_here: &BTreeMap<String, Scope>,
) -> Result<BTreeMap<String, Scope>, RealizeError> {
    let mut wanted: BTreeMap<String, (&str, &str, &str)> = BTreeMap::new();
    for o in objects {
        let (api_version, kind) = o.type_meta();
        let gk = applyset::group_kind(api_version, kind);
        if !defined_here.contains_key(&gk) {
            wanted.entry(gk).or_insert((api_version, kind, &o.rule));
        }
    }
    let resolved: Vec<(String, Scope)> = stream::iter(wanted)
        .map(|(gk, (api_version, kind, rule))| async move {
            match cluster.scope(api_version, kind).await {
                Ok(kube::discovery::Scope::Cluster) => Ok((gk, Scope::Cluster)),
                Ok(kube::discovery::Scope::Namespaced) => Ok((gk, Scope::Namespaced)),
                Err(source) => Err(RealizeError::Kind {
                    rule: rule.to_owned(),
                    source,
                }),
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let mut scopes = defined_here.clone();
    scopes.extend(resolved);
    Ok(scopes)
}

/// Builds the project, connects, and computes the plan.
///
/// With `lock`, the set's lock is taken (waiting for another apply to finish; `on_wait` is told
/// who holds it) before the parent and members are read, so the plan cannot go stale under
/// another apply.
pub async fn connect_and_plan(
    target: &Target,
    options: &PlanOptions,
    on_wait: impl Fn(&str, &str),
) -> Result<Realized, RealizeError> {
    let Target {
        dir,
        store_dir,
        env,
        kubeconfig,
        context,
        parent_namespace,
    } = target;
    let (kubeconfig, context) = (kubeconfig.as_deref(), context.as_deref());
    let lock = options.lock.as_ref();
    let start = Instant::now();
    let mut loaded = crate::build::load(dir, env.as_deref())?;
    loaded.selected.override_vars(&options.vars)?;
    let (report, trees) = crate::build::build_and_load(
        &loaded,
        store_dir,
        &BuildOptions::default().unsandboxed(options.unsandboxed),
        &|_, _| {},
        start,
    )?;
    if !report.success() {
        return Err(RealizeError::BuildFailed(
            report.summary.failed + report.summary.skipped,
        ));
    }
    let Loaded {
        project,
        graph,
        selected,
    } = loaded;
    let parent = Parent::for_project(&project.name, &selected.instance_name(), parent_namespace);
    let set_id = parent.id();
    let mut raw = desired::read(&project, &graph, &trees)?;
    let cluster = Cluster::connect(kubeconfig, context).await?;
    // Kinds whose CRD this run creates may not be served yet: the CRD says their scope, and
    // they have no members.
    let defined_here = desired::scopes_defined_by_crds(&raw);
    let scopes = resolve_scopes(&cluster, &raw, &defined_here).await?;
    let warnings = desired::settle_scopes(
        &mut raw,
        |gk| scopes.get(gk).copied().unwrap_or(Scope::Namespaced),
        cluster.default_namespace(),
    );
    for w in &warnings {
        tracing::debug!(%w, "namespace dropped");
    }
    // Only references that a `secret` rule declared are resolved: an artifact of another
    // kind (an `exec` output, a template, a cache entry) cannot make kiln run a command or read
    // a file by carrying the annotation.
    let declared_refs: HashSet<String> = raw
        .iter()
        .filter(|o| {
            project
                .rule(&o.rule)
                .is_some_and(|r| r.kind.value == "secret")
        })
        .filter_map(|o| secrets::references_of(&o.object).map(str::to_owned))
        .collect();
    let mut desired = desired::collect(&graph, raw, &set_id)?;
    let mut secret_errors = Vec::new();
    for d in &mut desired {
        match secrets::references_of(&d.object) {
            Some(refs) if declared_refs.contains(refs) => {
                if let Err(e) = secrets::resolve(&mut d.object) {
                    secret_errors.extend(e);
                }
            }
            Some(_) => {
                tracing::warn!(rule = %d.rule, object = %d.key, "ignoring secret references that no `secret` rule declared");
            }
            None => {}
        }
    }
    if !secret_errors.is_empty() {
        return Err(RealizeError::Secrets(secret_errors));
    }
    let mut lock = lock_set(&cluster, &parent, lock, on_wait).await?;

    let (live_parent, plan) = holding(&mut lock, async {
        tracing::debug!(elapsed = ?start.elapsed(), objects = desired.len(), "desired state assembled");
        let selector = format!("{}={set_id}", applyset::PART_OF_LABEL);
        let versions: BTreeMap<&str, &str> = desired
            .iter()
            .map(|d| {
                (
                    d.key.group_kind.as_str(),
                    d.object["apiVersion"].as_str().unwrap_or_default(),
                )
            })
            .collect();
        let list_all = |gks: Vec<String>| {
            let (cluster, selector, versions, defined_here) =
                (&cluster, &selector, &versions, &defined_here);
            stream::iter(gks)
                .map(move |gk| async move {
                    match cluster
                        .list(&gk, versions.get(gk.as_str()).copied(), selector)
                        .await
                    {
                        Err(e) if defined_here.contains_key(&gk) && e.is_not_served() => Ok(Vec::new()),
                        other => other,
                    }
                })
                .buffer_unordered(8)
                .try_collect::<Vec<Vec<Value>>>()
        };
        // The parent and the members of the kinds kiln wants read together: reads only.
        let desired_gks: BTreeSet<String> = desired.iter().map(|d| d.key.group_kind.clone()).collect();
        let (live_parent, mut lists) = futures::try_join!(
            cluster.get("v1", "Secret", &parent.namespace, &parent.name),
            list_all(desired_gks.iter().cloned().collect()),
        )?;
        tracing::debug!(elapsed = ?start.elapsed(), "read the parent and listed the desired kinds");
        if let Some(p) = &live_parent {
            let gks = kiln_parent_kinds(&parent, p)?;
            // Kinds the set held before and no rule produces now: their members are to be pruned.
            let extra: Vec<String> = gks
                .into_iter()
                .filter(|g| !desired_gks.contains(g))
                .collect();
            if !extra.is_empty() {
                lists.extend(list_all(extra).await?);
            }
        }
        let live: BTreeMap<ObjectKey, Value> = lists
            .into_iter()
            .flatten()
            .map(|o| (ObjectKey::of(&o), o))
            .collect();
        tracing::debug!(elapsed = ?start.elapsed(), members = live.len(), "listed the set");
        let mut live = live;
        let orphans = if options.find_orphans {
            let mut known: BTreeSet<String> = live_parent
                .as_ref()
                .map(|p| parent_state(p).0.into_iter().collect())
                .unwrap_or_default();
            known.extend(desired_gks.iter().cloned());
            add_orphans(&cluster, &known, &selector, &mut live).await?
        } else {
            HashSet::new()
        };
        let plan = planned_with_orphans(&set_id, &desired, &live, &orphans);
        tracing::debug!(elapsed = ?start.elapsed(), "planned");
        Ok((live_parent, plan))
    })
    .await?;
    Ok(Realized {
        cluster,
        parent,
        live_parent,
        desired,
        plan,
        warnings,
        lock,
    })
}

/// Options of `kiln apply`.
#[derive(Debug, Clone)]
pub struct ApplyOptions {
    /// Override other field managers' ownership.
    pub force_conflicts: bool,
    /// Wait for health gates.
    pub wait: bool,
    /// Skip the rollout gates of workloads (CRD and PVC gates still apply).
    pub skip_workload_gates: bool,
    /// How long each wave may wait.
    pub timeout: Duration,
    /// Deletions are confirmed.
    pub yes: bool,
    /// Concurrent writes inside a wave.
    pub parallel: usize,
}

/// What `apply` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ApplyReport {
    /// Objects written (created, updated, drift reverted).
    pub applied: usize,
    /// Objects deleted.
    pub deleted: usize,
    /// HTTP requests, and writes among them.
    pub requests: usize,
    /// Writes.
    pub writes: usize,
}

fn parent_lists(desired: &[DesiredObject], extra_gks: &[String]) -> (Vec<String>, Vec<String>) {
    let mut gks: BTreeSet<String> = desired.iter().map(|d| d.key.group_kind.clone()).collect();
    gks.extend(extra_gks.iter().cloned());
    let namespaces: BTreeSet<String> = desired
        .iter()
        .map(|d| d.key.namespace.clone())
        .filter(|n| !n.is_empty())
        .collect();
    (gks.into_iter().collect(), namespaces.into_iter().collect())
}

/// Applies the parent listing `gks` and `namespaces` unless `current` already says so; returns
/// the parent as it now is.
async fn write_parent_if_changed(
    r: &Realized,
    current: Option<Value>,
    gks: &[String],
    namespaces: &[String],
    force: bool,
) -> Result<Option<Value>, RealizeError> {
    let obj = r.parent.object(gks, namespaces);
    let same = current.as_ref().is_some_and(|live| {
        let ann = |v: &Value, k: &str| {
            v.pointer("/metadata/annotations")
                .and_then(|a| a.get(k))
                .cloned()
        };
        [
            applyset::GROUP_KINDS_ANNOTATION,
            applyset::NAMESPACES_ANNOTATION,
            applyset::TOOLING_ANNOTATION,
        ]
        .iter()
        .all(|k| ann(live, k) == ann(&obj, k))
            && live.pointer(&format!(
                "/metadata/labels/{}",
                applyset::ID_LABEL.replace('/', "~1")
            )) == obj.pointer(&format!(
                "/metadata/labels/{}",
                applyset::ID_LABEL.replace('/', "~1")
            ))
    });
    if same {
        return Ok(current);
    }
    // Conditional on the parent as this run last saw it: a lost update (another run widened
    // or narrowed it meanwhile) fails instead of overwriting that run's group-kinds.
    let mut obj = obj;
    if let Some(rv) = current
        .as_ref()
        .and_then(|c| c.pointer("/metadata/resourceVersion"))
    {
        obj["metadata"]["resourceVersion"] = rv.clone();
    }
    match r.cluster.apply(&obj, force).await {
        Ok(v) => Ok(Some(v)),
        Err(ClusterError::Conflict { message, .. }) if message.contains("has been modified") => {
            Err(RealizeError::ParentChanged {
                name: r.parent.name.clone(),
                namespace: r.parent.namespace.clone(),
            })
        }
        Err(e) => Err(e.into()),
    }
}

async fn wait_ready(cluster: &Cluster, obj: &Value, timeout: Duration) -> Result<(), RealizeError> {
    let Some(condition) = health::condition(obj) else {
        return Ok(());
    };
    let key = ObjectKey::of(obj);
    let api_version = obj["apiVersion"].as_str().unwrap_or_default();
    let kind = obj["kind"].as_str().unwrap_or_default();
    let deadline = Instant::now() + timeout;
    let mut delay = Duration::from_millis(100);
    loop {
        if let Some(live) = cluster
            .get(api_version, kind, &key.namespace, &key.name)
            .await?
        {
            if health::is_ready(&live) {
                return Ok(());
            }
            // A condition that says it failed for good ends the wait at once.
            if let Some(failed) = health::failure(&live) {
                return Err(RealizeError::GateFailed {
                    object: key.to_string(),
                    condition: failed,
                });
            }
            tracing::info!(object = %key, waiting_for = condition, progress = health::progress(&live).as_deref().unwrap_or("-"), "waiting");
        }
        if Instant::now() >= deadline {
            return Err(RealizeError::Unhealthy {
                object: key.to_string(),
                condition: condition.to_owned(),
                timeout,
            });
        }
        tokio::time::sleep(delay).await;
        delay = (delay * 2).min(Duration::from_secs(2));
    }
}

/// Applies a plan: creates, updates and drift reverts in waves, then prunes.
pub async fn apply(
    r: &Realized,
    options: &ApplyOptions,
    confirm: impl FnOnce(usize) -> bool,
) -> Result<ApplyReport, RealizeError> {
    let deletions: Vec<_> = r
        .plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .collect();
    if !deletions.is_empty() && !options.yes && !confirm(deletions.len()) {
        return Err(RealizeError::NotConfirmed(deletions.len()));
    }
    let old_gks = r
        .live_parent
        .as_ref()
        .map(|p| parent_state(p).0)
        .unwrap_or_default();
    // Widen the parent first, so an interrupted apply leaves no member the next run cannot find.
    let (gks, namespaces) = parent_lists(&r.desired, &old_gks);
    let current = write_parent_if_changed(
        r,
        r.live_parent.clone(),
        &gks,
        &namespaces,
        options.force_conflicts,
    )
    .await?;

    let by_key: BTreeMap<&ObjectKey, &DesiredObject> =
        r.desired.iter().map(|d| (&d.key, d)).collect();
    let mut to_write: BTreeMap<usize, BTreeMap<u8, Vec<&DesiredObject>>> = BTreeMap::new();
    for c in &r.plan.changes {
        if matches!(c.action, Action::Create | Action::Update | Action::Drift) {
            let d = by_key[&c.key()];
            to_write
                .entry(d.wave)
                .or_default()
                .entry(kind_rank(&d.key.group_kind))
                .or_default()
                .push(d);
        }
    }
    let drifted: HashSet<ObjectKey> = r
        .plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Drift)
        .map(|c| c.key())
        .collect();
    let mut report = ApplyReport::default();
    for ranks in to_write.values() {
        let mut written = Vec::new();
        for objs in ranks.values() {
            let applied: Vec<Value> = stream::iter(objs.iter())
                .map(|d| {
                    // Reverting drift takes the fields back from whoever changed them; a new
                    // field another manager owns is a conflict unless --force-conflicts.
                    let force = options.force_conflicts || drifted.contains(&d.key);
                    r.cluster.apply(&d.object, force)
                })
                .buffer_unordered(options.parallel.max(1))
                .try_collect()
                .await?;
            report.applied += applied.len();
            // A CRD created in this run must be Established before its custom resources.
            for d in objs
                .iter()
                .filter(|d| d.key.group_kind.starts_with("CustomResourceDefinition."))
            {
                wait_ready(&r.cluster, &d.object, options.timeout).await?;
            }
            written.extend(objs.iter().copied());
        }
        if options.wait {
            let gated: Vec<&&DesiredObject> = written
                .iter()
                .filter(|d| health::condition(&d.object).is_some())
                .filter(|d| !(options.skip_workload_gates && health::is_workload(&d.object)))
                .collect();
            stream::iter(gated)
                .map(|d| wait_ready(&r.cluster, &d.object, options.timeout))
                .buffer_unordered(options.parallel.max(1))
                .try_collect::<Vec<()>>()
                .await?;
        }
    }
    report.deleted += delete_in_order(&r.cluster, deletions).await?;
    // Narrow the parent to what the set now holds.
    let (gks, namespaces) = parent_lists(&r.desired, &[]);
    write_parent_if_changed(r, current, &gks, &namespaces, options.force_conflicts).await?;
    report.requests = r.cluster.counters().requests.load(Ordering::Relaxed);
    report.writes = r.cluster.counters().writes.load(Ordering::Relaxed);
    Ok(report)
}

/// Deletes `changes` in reverse kind order: custom resources first, namespaces last.
async fn delete_in_order(
    cluster: &Cluster,
    mut changes: Vec<&plan::Change>,
) -> Result<usize, RealizeError> {
    changes.sort_by_key(|c| std::cmp::Reverse(kind_rank(&c.group_kind)));
    for c in &changes {
        cluster.delete(&c.group_kind, &c.namespace, &c.name).await?;
    }
    Ok(changes.len())
}

/// Plans the teardown of an environment's set (nothing is built; the project is only loaded
/// for its name and environment): every member of the kinds its parent lists, and with
/// `find_orphans` of every served kind, is to be deleted. With `options.lock`, the set's lock is
/// taken first, as for apply.
pub async fn connect_for_destroy(
    target: &Target,
    options: &PlanOptions,
    on_wait: impl Fn(&str, &str),
) -> Result<Realized, RealizeError> {
    let mut loaded = crate::build::load(&target.dir, target.env.as_deref())?;
    loaded.selected.override_vars(&options.vars)?;
    let parent = Parent::for_project(
        &loaded.project.name,
        &loaded.selected.instance_name(),
        &target.parent_namespace,
    );
    let set_id = parent.id();
    let cluster = Cluster::connect(target.kubeconfig.as_deref(), target.context.as_deref()).await?;
    let mut lock = lock_set(&cluster, &parent, options.lock.as_ref(), on_wait).await?;
    let (live_parent, plan) = holding(&mut lock, async {
        let live_parent = cluster
            .get("v1", "Secret", &parent.namespace, &parent.name)
            .await?;
        let selector = format!("{}={set_id}", applyset::PART_OF_LABEL);
        let mut live = BTreeMap::new();
        let mut known = BTreeSet::new();
        if let Some(p) = &live_parent {
            for gk in kiln_parent_kinds(&parent, p)? {
                match cluster.list(&gk, None, &selector).await {
                    Ok(items) => live.extend(items.into_iter().map(|o| (ObjectKey::of(&o), o))),
                    Err(e) if e.is_not_served() => {}
                    Err(e) => return Err(e.into()),
                }
                known.insert(gk);
            }
        }
        let orphans = if options.find_orphans {
            add_orphans(&cluster, &known, &selector, &mut live).await?
        } else {
            HashSet::new()
        };
        Ok((
            live_parent,
            planned_with_orphans(&set_id, &[], &live, &orphans),
        ))
    })
    .await?;
    Ok(Realized {
        cluster,
        parent,
        live_parent,
        desired: Vec::new(),
        plan,
        warnings: Vec::new(),
        lock,
    })
}

/// Takes the set's lock when `options` asks for it.
async fn lock_set(
    cluster: &Cluster,
    parent: &Parent,
    options: Option<&LockOptions>,
    on_wait: impl Fn(&str, &str),
) -> Result<Option<LockGuard>, RealizeError> {
    let Some(options) = options else {
        return Ok(None);
    };
    let guard = lock::acquire(
        cluster.lock_client(),
        &parent.namespace,
        &parent.name,
        options,
        on_wait,
    )
    .await?;
    Ok(Some(guard))
}

/// Runs `read` while `lock` is held; when it fails, the lock is released before the error is
/// returned, so a failed plan never leaves the set locked until the TTL runs out.
async fn holding<T>(
    lock: &mut Option<LockGuard>,
    read: impl std::future::Future<Output = Result<T, RealizeError>>,
) -> Result<T, RealizeError> {
    let result = read.await;
    if result.is_err() {
        if let Some(guard) = lock.take() {
            let _ = guard.release().await;
        }
    }
    result
}

/// The group-kinds a live parent lists, once it is known to be kiln's.
// The crate's one error type, as every async step here returns it (where clippy does not look).
#[allow(clippy::result_large_err)]
fn kiln_parent_kinds(parent: &Parent, live: &Value) -> Result<Vec<String>, RealizeError> {
    let (gks, tooling) = parent_state(live);
    let tooling = tooling.unwrap_or_default();
    if !tooling.starts_with("kiln/") {
        return Err(RealizeError::ForeignParent {
            name: parent.name.clone(),
            namespace: parent.namespace.clone(),
            tooling,
        });
    }
    Ok(gks)
}

/// Adds to `live` the set's members of every listable kind not in `known` (kinds the parent does
/// not name: a normal plan never sees them, so no prune would reach them); returns their keys.
async fn add_orphans(
    cluster: &Cluster,
    known: &BTreeSet<String>,
    selector: &str,
    live: &mut BTreeMap<ObjectKey, Value>,
) -> Result<HashSet<ObjectKey>, RealizeError> {
    let mut orphans = HashSet::new();
    for o in cluster.list_other_kinds(known, selector).await? {
        let key = ObjectKey::of(&o);
        orphans.insert(key.clone());
        live.insert(key, o);
    }
    Ok(orphans)
}

/// [`plan::compute`], with the orphans among the deletes marked.
fn planned_with_orphans(
    set_id: &str,
    desired: &[DesiredObject],
    live: &BTreeMap<ObjectKey, Value>,
    orphans: &HashSet<ObjectKey>,
) -> Plan {
    let mut plan = plan::compute(set_id, desired, live);
    for c in &mut plan.changes {
        c.orphan = orphans.contains(&c.key());
    }
    plan
}

/// Deletes every member planned by [`connect_for_destroy`], then (with `wait`, once they are
/// gone) the parent.
pub async fn destroy(
    r: &Realized,
    wait: Option<Duration>,
    yes: bool,
    confirm: impl FnOnce(usize) -> bool,
) -> Result<ApplyReport, RealizeError> {
    let deletions: Vec<&plan::Change> = r
        .plan
        .changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .collect();
    if !deletions.is_empty() && !yes && !confirm(deletions.len()) {
        return Err(RealizeError::NotConfirmed(deletions.len()));
    }
    let mut report = ApplyReport {
        deleted: delete_in_order(&r.cluster, deletions.clone()).await?,
        ..ApplyReport::default()
    };
    if let Some(timeout) = wait {
        let deadline = Instant::now() + timeout;
        for c in &deletions {
            let mut delay = Duration::from_millis(100);
            while r
                .cluster
                .exists(&c.group_kind, &c.namespace, &c.name)
                .await?
            {
                if Instant::now() >= deadline {
                    return Err(RealizeError::Unhealthy {
                        object: c.key().to_string(),
                        condition: "deleted".to_owned(),
                        timeout,
                    });
                }
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(2));
            }
        }
    }
    if r.live_parent.is_some() {
        r.cluster
            .delete("Secret", &r.parent.namespace, &r.parent.name)
            .await?;
        report.deleted += 1;
    }
    report.requests = r.cluster.counters().requests.load(Ordering::Relaxed);
    report.writes = r.cluster.counters().writes.load(Ordering::Relaxed);
    Ok(report)
}
