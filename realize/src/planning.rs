//! Planning: the desired set settled against discovery, the live set read (under the set's
//! lock, for apply), and the plan computed as a value.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use futures::stream::{self, StreamExt, TryStreamExt};
use kiln_core::graph::RuleGraph;
use kiln_core::project::Project;
use kiln_core::Tree;
use serde_json::Value;

use crate::api::{ClusterApi, ClusterError, Listed, ReadFrom};
use crate::applyset::{self, parent_namespaces, parent_state, Parent};
use crate::desired::{self, DesiredObject, Lineage, ObjectKey, RawObject, Scope};
use crate::dry_run;
use crate::error::RealizeError;
use crate::lock::{self, LockGuard, LockOptions};
use crate::plan::{self, Plan};
use crate::secrets;

/// How to plan.
#[derive(Debug, Clone, Default)]
pub struct PlanOptions {
    /// Take the set's lock first (apply).
    pub lock: Option<LockOptions>,
    /// Also list every served kind for members the parent does not name.
    pub find_orphans: bool,
    /// Take over objects that are members of another kiln set (refused otherwise).
    pub adopt: bool,
    /// The desired set covers only some rules (`--rule`): plan no prune, narrow no parent.
    pub partial: bool,
}

/// What a built environment wants on the cluster, before the cluster is asked anything.
pub struct Wanted {
    /// The set's parent.
    pub parent: Parent,
    /// Every realized artifact's objects, in DAG order.
    objects: Vec<RawObject>,
    /// Scopes of the kinds whose CRD the project itself defines.
    defined_here: BTreeMap<String, Scope>,
    /// For an instance (`--var`), the set id of its environment's base set: objects identical
    /// in both stay the base set's (the instance refers to them, does not own them).
    base: Option<String>,
    /// Secret references that a `secret` rule declared (only these are resolved).
    declared_refs: HashSet<String>,
    /// Waves and ancestors of the rules.
    lineage: Lineage,
}

/// A built environment: the project, its rule graph and every rule's artifact.
pub struct Built<'a> {
    /// The project.
    pub project: &'a Project,
    /// The environment's rule graph.
    pub graph: &'a RuleGraph,
    /// Output trees by rule name.
    pub trees: &'a BTreeMap<String, Arc<Tree>>,
    /// The instance name (`<env>` or `<env>-<8 hex>` with `--var`).
    pub instance: &'a str,
    /// For an instance made with `--var`, the environment's own instance name (`<env>`).
    pub base_instance: Option<&'a str>,
    /// Namespace of the ApplySet parent.
    pub parent_namespace: &'a str,
}

impl Wanted {
    /// Reads the objects of a built environment's artifacts. Pure: no cluster yet.
    pub fn from_built(built: &Built<'_>) -> Result<Self, RealizeError> {
        let parent =
            Parent::for_project(&built.project.name, built.instance, built.parent_namespace);
        let objects = desired::read(built.project, built.graph, built.trees)?;
        let defined_here = desired::scopes_defined_by_crds(&objects);
        // Only references that a `secret` rule declared are resolved: an artifact of another
        // kind (an `exec` output, a template, a cache entry) cannot make kiln run a command or
        // read a file by carrying the annotation.
        let declared_refs = objects
            .iter()
            .filter(|o| {
                built
                    .project
                    .rule(&o.rule)
                    .is_some_and(|r| r.kind.value == "secret")
            })
            .filter_map(|o| secrets::references_of(o.object.as_value()).map(str::to_owned))
            .collect();
        let base = built
            .base_instance
            .filter(|b| *b != built.instance)
            .map(|b| Parent::for_project(&built.project.name, b, built.parent_namespace).id());
        Ok(Self {
            parent,
            objects,
            defined_here,
            base,
            declared_refs,
            lineage: Lineage::of(built.graph),
        })
    }

    /// Its parts, for the offline export.
    pub(crate) fn into_parts(
        self,
    ) -> (
        Parent,
        Vec<RawObject>,
        BTreeMap<String, Scope>,
        HashSet<String>,
        Lineage,
    ) {
        (
            self.parent,
            self.objects,
            self.defined_here,
            self.declared_refs,
            self.lineage,
        )
    }

    /// Rules given directly: (name, indices of its dependencies, objects), in dependency order.
    #[cfg(test)]
    pub(crate) fn of_rules(parent: Parent, rules: Vec<(&str, Vec<usize>, Vec<Value>)>) -> Self {
        let lineage = Lineage::from_order(
            rules.len(),
            rules
                .iter()
                .enumerate()
                .map(|(i, (_, deps, _))| (i, deps.clone())),
        );
        let objects: Vec<RawObject> = rules
            .into_iter()
            .enumerate()
            .flat_map(|(i, (rule, _, objs))| {
                objs.into_iter().map(move |o| RawObject::new(i, rule, o))
            })
            .collect();
        Self {
            parent,
            defined_here: desired::scopes_defined_by_crds(&objects),
            base: None,
            objects,
            declared_refs: HashSet::new(),
            lineage,
        }
    }
}

/// A planned realization: everything `apply` needs.
pub struct Realized<C> {
    /// The connection.
    pub cluster: C,
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

/// Current API versions that older clusters serve under an earlier version with the same
/// fields: (current, earlier, kind). When discovery lacks the current one, objects are applied
/// in the earlier one. The build stays hermetic: artifacts keep the current version, and only
/// realize, which already depends on the cluster, picks what the cluster serves.
pub const EARLIER_VERSIONS: [(&str, &str, &str); 5] = [
    (
        "autoscaling/v2",
        "autoscaling/v2beta2",
        "HorizontalPodAutoscaler",
    ),
    ("batch/v1", "batch/v1beta1", "CronJob"),
    ("policy/v1", "policy/v1beta1", "PodDisruptionBudget"),
    (
        "discovery.k8s.io/v1",
        "discovery.k8s.io/v1beta1",
        "EndpointSlice",
    ),
    ("node.k8s.io/v1", "node.k8s.io/v1beta1", "RuntimeClass"),
];

/// What discovery says of the desired kinds: each group-kind's scope, and the version to apply
/// in where the cluster does not serve the one written (see [`EARLIER_VERSIONS`]).
struct Served {
    scopes: BTreeMap<String, Scope>,
    /// (written apiVersion, kind) -> the apiVersion this cluster serves.
    versions: BTreeMap<(String, String), String>,
}

/// An object kind applied in another version than written.
struct Rewrite {
    written: String,
    kind: String,
    served: String,
}

/// The scope of every group-kind among `objects`: from the project's own CRDs first (their
/// kinds may not be served yet), else from discovery (one request per group-version). A kind
/// that neither knows is an error naming the rule; a current version the cluster lacks is
/// replaced by its earlier one ([`EARLIER_VERSIONS`]).
async fn resolve_scopes(
    cluster: &impl ClusterApi,
    objects: &[RawObject],
    defined_here: &BTreeMap<String, Scope>,
) -> Result<Served, RealizeError> {
    let mut wanted: BTreeMap<(&str, &str), &str> = BTreeMap::new();
    for o in objects {
        let (api_version, kind) = o.type_meta();
        let gk = applyset::group_kind(api_version, kind);
        if !defined_here.contains_key(&gk) {
            wanted.entry((api_version, kind)).or_insert(&o.rule);
        }
    }
    let resolved: Vec<(String, Scope, Option<Rewrite>)> = stream::iter(wanted)
        .map(|((api_version, kind), rule)| async move {
            let gk = applyset::group_kind(api_version, kind);
            let error = |source| match source {
                // Not the rule's kind: the cluster itself is out of reach.
                ClusterError::Unreachable { .. } => RealizeError::Cluster(source),
                source => RealizeError::Kind {
                    rule: rule.to_owned(),
                    source: Box::new(source),
                },
            };
            match cluster.scope(api_version, kind).await {
                Ok(scope) => Ok((gk, scope, None)),
                Err(e) if e.is_not_served() => {
                    let Some((_, earlier, _)) = EARLIER_VERSIONS
                        .iter()
                        .find(|(now, _, k)| *now == api_version && *k == kind)
                    else {
                        return Err(error(e));
                    };
                    let scope = cluster.scope(earlier, kind).await.map_err(|_| error(e))?;
                    tracing::info!(
                        kind,
                        "this cluster does not serve {api_version}: applying as {earlier}"
                    );
                    let rewrite = Rewrite {
                        written: api_version.to_owned(),
                        kind: kind.to_owned(),
                        served: (*earlier).to_owned(),
                    };
                    Ok((gk, scope, Some(rewrite)))
                }
                Err(e) => Err(error(e)),
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let mut scopes = defined_here.clone();
    let mut versions = BTreeMap::new();
    for (gk, scope, rewrite) in resolved {
        scopes.insert(gk, scope);
        if let Some(r) = rewrite {
            versions.insert((r.written, r.kind), r.served);
        }
    }
    Ok(Served { scopes, versions })
}

/// Settles scopes and namespaces, adds ownership and resolves the declared secret references.
async fn settle(
    cluster: &impl ClusterApi,
    wanted: Wanted,
) -> Result<(Vec<DesiredObject>, Vec<desired::ScopeWarning>), RealizeError> {
    let Wanted {
        parent,
        mut objects,
        defined_here,
        declared_refs,
        lineage,
        base: _,
    } = wanted;
    let Served { scopes, versions } = resolve_scopes(cluster, &objects, &defined_here).await?;
    for o in &mut objects {
        let (api_version, kind) = o.type_meta();
        if let Some(served) = versions.get(&(api_version.to_owned(), kind.to_owned())) {
            o.object.set_version(served);
        }
    }
    let warnings = desired::settle_scopes(
        &mut objects,
        |gk| scopes.get(gk).copied().unwrap_or(Scope::Namespaced),
        cluster.default_namespace(),
    );
    for w in &warnings {
        tracing::debug!(%w, "namespace dropped");
    }
    let mut desired = desired::collect(&lineage, objects, &parent.id())?;
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
    Ok((desired, warnings))
}

/// Plans `wanted` on `cluster`.
///
/// With `options.lock`, the set's lock is taken (waiting for another apply to finish; `on_wait`
/// is told who holds it) before the parent and members are read, so the plan cannot go stale
/// under another apply.
pub async fn plan_set<C: ClusterApi>(
    cluster: C,
    wanted: Wanted,
    options: &PlanOptions,
    on_wait: impl Fn(&str, &str),
) -> Result<Realized<C>, RealizeError> {
    let parent = wanted.parent.clone();
    let defined_here = wanted.defined_here.clone();
    let base = wanted.base.clone();
    let (mut desired, warnings) = settle(&cluster, wanted).await?;
    let mut lock = lock_set(&cluster, &parent, options.lock.as_ref(), on_wait).await?;
    let (live_parent, plan) = holding(
        &mut lock,
        read_and_plan(
            &cluster,
            &parent,
            &mut desired,
            (&defined_here, base.as_deref()),
            options,
        ),
    )
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

/// Reads the parent and the set's members, and plans `desired` against them.
async fn read_and_plan(
    cluster: &impl ClusterApi,
    parent: &Parent,
    desired: &mut [DesiredObject],
    (defined_here, base): (&BTreeMap<String, Scope>, Option<&str>),
    options: &PlanOptions,
) -> Result<(Option<Value>, Plan), RealizeError> {
    let set_id = parent.id();
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
    // The parent first: the namespaces it records may hold members that left the desired set
    // (to prune), and with the desired ones they decide how each kind is read.
    let live_parent = cluster
        .get("v1", "Secret", &parent.namespace, &parent.name)
        .await?;
    let mut namespaces: BTreeSet<String> = desired
        .iter()
        .map(|d| d.key.namespace.clone())
        .filter(|ns| !ns.is_empty())
        .collect();
    namespaces.insert(parent.namespace.clone());
    let desired_gks: BTreeSet<String> = desired.iter().map(|d| d.key.group_kind.clone()).collect();
    let mut gks = desired_gks.clone();
    if let Some(p) = &live_parent {
        namespaces.extend(parent_namespaces(p));
        // Kinds the set held before and no rule produces now: their members are to be pruned.
        gks.extend(kiln_parent_kinds(parent, p)?);
    }
    let namespaced: BTreeSet<&str> = desired
        .iter()
        .filter(|d| !d.key.namespace.is_empty())
        .map(|d| d.key.group_kind.as_str())
        .collect();
    let (selector_ref, versions_ref, namespaces_ref) = (&selector, &versions, &namespaces);
    // Kinds with few desired objects whose recorded members are exactly those: a GET each.
    let recorded = live_parent
        .as_ref()
        .map(crate::members::recorded)
        .unwrap_or_default();
    let desired_digests = crate::members::digests(desired.iter().map(|d| &d.key));
    let mut few: BTreeMap<&str, Vec<&DesiredObject>> = BTreeMap::new();
    for d in desired.iter() {
        few.entry(d.key.group_kind.as_str()).or_default().push(d);
    }
    few.retain(|gk, objs| {
        objs.len() <= GET_MAX
            && recorded.contains_key(*gk)
            && recorded.get(*gk) == desired_digests.get(*gk)
    });
    // A set without a parent has no members: its first apply writes the parent before any
    // member, so there is nothing of it to read. An object that exists already shows in the
    // dry run of its create, and is adopted or refused there. `--find-orphans` reads anyway.
    if live_parent.is_none() && !options.find_orphans {
        gks.clear();
    }
    // Kinds whose members this set's applies wrote last (not pruned): a watch cache that has
    // seen the newest of those writes can serve their LIST.
    let floors = live_parent
        .as_ref()
        .map(crate::members::recorded_versions)
        .unwrap_or_default();
    let (few_ref, set_id_ref, floors_ref) = (&few, &set_id, &floors);
    let lists: Vec<Vec<Value>> = stream::iter(gks)
        .map(|gk| {
            let per_namespace =
                namespaced.contains(gk.as_str()) && namespaces_ref.len() <= PER_NAMESPACE_MAX;
            async move {
                let read = Read {
                    api_version: versions_ref.get(gk.as_str()).copied(),
                    selector: selector_ref,
                    namespaces: namespaces_ref,
                    per_namespace,
                    floor: floors_ref.get(gk.as_str()).copied(),
                };
                let members = match few_ref.get(gk.as_str()) {
                    Some(objs) => get_members(cluster, objs, set_id_ref).await,
                    None => list_members(cluster, &gk, &read).await,
                };
                match members {
                    // A kind whose CRD this run creates has no members yet.
                    Err(e) if defined_here.contains_key(&gk) && e.is_not_served() => Ok(Vec::new()),
                    other => other,
                }
            }
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let mut live: BTreeMap<ObjectKey, Value> = lists
        .into_iter()
        .flatten()
        .map(|o| (ObjectKey::of(&o), o))
        .collect();
    tracing::debug!(members = live.len(), "listed the set");
    let orphans = if options.find_orphans {
        let mut known: BTreeSet<String> = live_parent
            .as_ref()
            .map(|p| parent_state(p).0.into_iter().collect())
            .unwrap_or_default();
        known.extend(desired_gks);
        add_orphans(cluster, &known, &selector, &mut live).await?
    } else {
        HashSet::new()
    };
    desired::yield_to_controllers(desired, &live);
    let desired = &*desired;
    let mut plan = planned_with_orphans(&set_id, desired, &live, &orphans, options.partial);
    let parent_name = format!("{}/{}", parent.namespace, parent.name);
    let set = dry_run::SetOf {
        id: &set_id,
        name: &parent_name,
        base,
        adopt: options.adopt,
    };
    dry_run::settle(cluster, &mut plan, desired, &live, set).await?;
    Ok((live_parent, plan))
}

/// Plans the teardown of a set: every member of the kinds its parent lists, and with
/// `find_orphans` of every served kind, is to be deleted. With `options.lock`, the set's lock is
/// taken first, as for apply.
pub async fn plan_teardown<C: ClusterApi>(
    cluster: C,
    parent: Parent,
    options: &PlanOptions,
    on_wait: impl Fn(&str, &str),
) -> Result<Realized<C>, RealizeError> {
    let mut lock = lock_set(&cluster, &parent, options.lock.as_ref(), on_wait).await?;
    let (live_parent, plan) =
        holding(&mut lock, read_for_teardown(&cluster, &parent, options)).await?;
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

async fn read_for_teardown(
    cluster: &impl ClusterApi,
    parent: &Parent,
    options: &PlanOptions,
) -> Result<(Option<Value>, Plan), RealizeError> {
    let set_id = parent.id();
    let live_parent = cluster
        .get("v1", "Secret", &parent.namespace, &parent.name)
        .await?;
    let selector = format!("{}={set_id}", applyset::PART_OF_LABEL);
    let mut live = BTreeMap::new();
    let mut known = BTreeSet::new();
    if let Some(p) = &live_parent {
        let mut namespaces: BTreeSet<String> = parent_namespaces(p).into_iter().collect();
        namespaces.insert(parent.namespace.clone());
        for gk in kiln_parent_kinds(parent, p)? {
            let read = Read {
                api_version: None,
                selector: &selector,
                namespaces: &namespaces,
                per_namespace: false,
                floor: None,
            };
            match list_members(cluster, &gk, &read).await {
                Ok(items) => live.extend(items.into_iter().map(|o| (ObjectKey::of(&o), o))),
                Err(e) if e.is_not_served() => {}
                Err(e) => return Err(e.into()),
            }
            known.insert(gk);
        }
    }
    let orphans = if options.find_orphans {
        add_orphans(cluster, &known, &selector, &mut live).await?
    } else {
        HashSet::new()
    };
    Ok((
        live_parent,
        planned_with_orphans(&set_id, &[], &live, &orphans, false),
    ))
}

/// A kind with at most this many desired objects, whose members the parent records as exactly
/// those, is read with a GET per object rather than a LIST: in a namespace that also holds
/// 30,000 unrelated ConfigMaps, a label-selected LIST took 177–381 ms on the test server and
/// five GETs 5–9 ms in all; in an empty one a LIST costs about one GET.
pub const GET_MAX: usize = 8;

/// The set's members among `objs`, one GET each (an object without the set's label is not a
/// member, as a LIST by label would not return it).
async fn get_members(
    cluster: &impl ClusterApi,
    objs: &[&DesiredObject],
    set_id: &str,
) -> Result<Vec<Value>, ClusterError> {
    let got: Vec<Option<Value>> = stream::iter(objs)
        .map(|d| {
            cluster.get(
                d.object["apiVersion"].as_str().unwrap_or_default(),
                d.object["kind"].as_str().unwrap_or_default(),
                &d.key.namespace,
                &d.key.name,
            )
        })
        .buffer_unordered(8)
        .try_collect()
        .await?;
    let label = format!(
        "/metadata/labels/{}",
        applyset::PART_OF_LABEL.replace('/', "~1")
    );
    Ok(got
        .into_iter()
        .flatten()
        .filter(|o| o.pointer(&label).and_then(Value::as_str) == Some(set_id))
        .collect())
}

/// A set spanning at most this many namespaces has its namespaced kinds read with one LIST per
/// namespace (the API server then reads only those namespaces' objects, not the whole
/// cluster's); a wider set is read with one cluster-wide LIST per kind.
pub const PER_NAMESPACE_MAX: usize = 8;

/// How to read one group-kind's members.
struct Read<'a> {
    api_version: Option<&'a str>,
    selector: &'a str,
    /// Every namespace of the set: the desired objects', the parent's and those it records.
    namespaces: &'a BTreeSet<String>,
    /// Namespaced kind and few namespaces: LIST each namespace.
    per_namespace: bool,
    /// The newest resourceVersion this set's applies wrote to the kind, when the parent
    /// records it (`members::VERSIONS_ANNOTATION`): the watch cache may serve the LIST once
    /// it has got that far.
    floor: Option<u64>,
}

/// The set's members of one group-kind.
///
/// With a recorded `floor`, first from the API server's watch cache: in a namespace crowded
/// with other objects, a LIST from storage reads every object of the kind there (30,000
/// ConfigMaps: 100–400 ms on the test server), the cache filters in memory (5–12 ms). Its
/// answer is used only when it was served at the floor or later, that is, once the cache has
/// seen every write kiln made to the set's members of the kind; a cache behind it is not used,
/// and the kind is read from storage. So the cache is never older than this set's own last
/// apply. It may lag writes by others, by the moments the watch takes to deliver them: drift
/// made in those moments shows at the next plan; an object deleted by someone else in them
/// shows as still there (an apply then updates it, which server-side apply makes a create),
/// and a prune of it finds it gone. Kinds pruned since the set's last write of them carry no
/// floor (a delete's answer has no version to wait for) and are read from storage.
///
/// Without one, from storage: per namespace of the set when `read.per_namespace`, else one
/// cluster-wide LIST; when that is forbidden (a user whose Roles cover only some namespaces),
/// per namespace after all.
async fn list_members(
    cluster: &impl ClusterApi,
    gk: &str,
    read: &Read<'_>,
) -> Result<Vec<Value>, ClusterError> {
    if let Some(floor) = read.floor {
        let lists = list_from(cluster, gk, read, ReadFrom::Cache).await?;
        if lists
            .iter()
            .all(|l| l.resource_version.is_some_and(|rv| rv >= floor))
        {
            tracing::debug!(group_kind = gk, floor, "read from the watch cache");
            return Ok(lists.into_iter().flat_map(|l| l.items).collect());
        }
        tracing::debug!(
            group_kind = gk,
            floor,
            "the watch cache has not seen this set's last write of the kind; reading from storage"
        );
    }
    let lists = list_from(cluster, gk, read, ReadFrom::Storage).await?;
    Ok(lists.into_iter().flat_map(|l| l.items).collect())
}

/// One LIST per namespace of the set, or one cluster-wide (per namespace after all when that
/// is forbidden), served `from` storage or the cache.
async fn list_from(
    cluster: &impl ClusterApi,
    gk: &str,
    read: &Read<'_>,
    from: ReadFrom,
) -> Result<Vec<Listed>, ClusterError> {
    let per_namespace = || {
        stream::iter(read.namespaces)
            .map(|ns| cluster.list(gk, read.api_version, read.selector, Some(ns), from))
            .buffer_unordered(8)
            .try_collect()
    };
    if read.per_namespace {
        return per_namespace().await;
    }
    match cluster
        .list(gk, read.api_version, read.selector, None, from)
        .await
    {
        Err(e) if e.status_code() == Some(403) && !read.namespaces.is_empty() => {
            tracing::debug!(
                group_kind = gk,
                "cluster-wide LIST forbidden; listing per namespace"
            );
            per_namespace().await
        }
        other => other.map(|l| vec![l]),
    }
}

/// Takes the set's lock when `options` asks for it.
async fn lock_set(
    cluster: &impl ClusterApi,
    parent: &Parent,
    options: Option<&LockOptions>,
    on_wait: impl Fn(&str, &str),
) -> Result<Option<LockGuard>, RealizeError> {
    let Some(options) = options else {
        return Ok(None);
    };
    let leases = cluster.leases().ok_or(RealizeError::NoLock)?;
    let guard = lock::acquire(leases, &parent.namespace, &parent.name, options, on_wait).await?;
    cluster.fence_writes(guard.fence());
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
    cluster: &impl ClusterApi,
    known: &BTreeSet<String>,
    selector: &str,
    live: &mut BTreeMap<ObjectKey, Value>,
) -> Result<HashSet<ObjectKey>, RealizeError> {
    let mut orphans = HashSet::new();
    for o in cluster.list_other_kinds(known, selector).await? {
        let key = ObjectKey::of(&o);
        if made_by_a_controller(&o, &key, live) {
            continue;
        }
        orphans.insert(key.clone());
        live.insert(key, o);
    }
    Ok(orphans)
}

/// Whether a labeled object of a kind the parent does not list was made by a controller, not
/// by kiln: it has an owner (endpoint slices, replica sets, pods, jobs of cron jobs, ...), or
/// it is the Endpoints of a Service of the set (the endpoints controller copies the Service's
/// labels, the set's included, and sets no owner). Such an object is never an orphan: its
/// controller deletes it with its owner.
fn made_by_a_controller(o: &Value, key: &ObjectKey, members: &BTreeMap<ObjectKey, Value>) -> bool {
    let owned = o
        .pointer("/metadata/ownerReferences")
        .and_then(Value::as_array)
        .is_some_and(|refs| !refs.is_empty());
    let endpoints_of_a_member = key.group_kind == "Endpoints"
        && members.contains_key(&ObjectKey {
            group_kind: "Service".to_owned(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
        });
    owned || endpoints_of_a_member
}

/// [`plan::compute`], with the orphans among the deletes marked.
fn planned_with_orphans(
    set_id: &str,
    desired: &[DesiredObject],
    live: &BTreeMap<ObjectKey, Value>,
    orphans: &HashSet<ObjectKey>,
    partial: bool,
) -> Plan {
    let mut plan = plan::compute(set_id, desired, live, partial);
    for c in &mut plan.changes {
        c.orphan = orphans.contains(&c.key());
    }
    plan
}
