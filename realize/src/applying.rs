//! Applying a plan: the parent widened first, then waves in DAG order with kinds in order inside
//! a wave, CRDs waited on, health gates, prune in reverse kind order, the parent narrowed last.
//! And destroying a set: every member, then the parent.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::time::Duration;

use futures::stream::{self, StreamExt, TryStreamExt};
use serde_json::Value;

use crate::api::{ApplyParams, ClusterApi, ClusterError, Deleted, RequestCounts};
use crate::applyset::{self, parent_state};
use crate::desired::{kind_rank, DesiredObject, ObjectKey};
use crate::error::RealizeError;
use crate::health;
use crate::members;
use crate::plan::{Action, Change};
use crate::planning::Realized;
use crate::wait;

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

/// One object written or deleted by apply or destroy, in the order it happened.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Written {
    /// `create`, `update`, `drift` (reverted) or `delete`.
    pub action: Action,
    /// `Kind.group namespace/name`.
    pub object: String,
    /// The rule that produces it (for deletes: that produced it last).
    pub rule: String,
}

/// What apply and destroy tell their caller as it happens.
#[derive(Debug, Clone, Copy)]
pub enum ApplyEvent<'a> {
    /// An object was written or deleted.
    Written(&'a Written),
    /// A health gate is waiting, and its object's progress changed.
    Waiting {
        /// `Kind.group namespace/name`.
        object: &'a str,
        /// The rule that produces it.
        rule: &'a str,
        /// How far it got (`1/2 updated, 1/2 available`).
        progress: &'a str,
    },
}

/// Records every write as it completes and tells the caller at once (so that after a failure
/// the user has seen exactly what was written).
struct Journal<'a> {
    on_event: &'a dyn Fn(ApplyEvent<'_>),
    log: std::sync::Mutex<Vec<Written>>,
    /// Object writes in flight now, and the most there were at once.
    in_flight: std::sync::atomic::AtomicUsize,
    most_in_flight: std::sync::atomic::AtomicUsize,
}

/// One object write in flight (see [`Journal::writing`]).
struct InFlight<'j>(&'j std::sync::atomic::AtomicUsize);

impl Drop for InFlight<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
    }
}

impl<'a> Journal<'a> {
    fn new(on_event: &'a dyn Fn(ApplyEvent<'_>)) -> Self {
        Self {
            on_event,
            log: std::sync::Mutex::default(),
            in_flight: std::sync::atomic::AtomicUsize::new(0),
            most_in_flight: std::sync::atomic::AtomicUsize::new(0),
        }
    }

    /// Counts an object write until the guard drops (the `--parallel` bound, measured).
    fn writing(&self) -> InFlight<'_> {
        use std::sync::atomic::Ordering;
        let now = self.in_flight.fetch_add(1, Ordering::SeqCst) + 1;
        self.most_in_flight.fetch_max(now, Ordering::SeqCst);
        InFlight(&self.in_flight)
    }

    fn most_in_flight(&self) -> usize {
        self.most_in_flight
            .load(std::sync::atomic::Ordering::SeqCst)
    }

    fn record(&self, action: Action, object: &ObjectKey, rule: &str) {
        let w = Written {
            action,
            object: object.to_string(),
            rule: rule.to_owned(),
        };
        (self.on_event)(ApplyEvent::Written(&w));
        self.log.lock().expect("journal lock").push(w);
    }

    /// Tells the caller how far the object of `rule` a gate waits on got.
    fn waiting(&self, object: &ObjectKey, rule: &str, progress: &str) {
        (self.on_event)(ApplyEvent::Waiting {
            object: &object.to_string(),
            rule,
            progress,
        });
    }

    fn into_written(self) -> Vec<Written> {
        self.log.into_inner().expect("journal lock")
    }
}

/// What `apply` or `destroy` did.
#[derive(Debug, Default, serde::Serialize)]
pub struct ApplyReport {
    /// Every object written or deleted, in order.
    pub written: Vec<Written>,
    /// Objects written (created, updated, drift reverted).
    pub applied: usize,
    /// Objects deleted.
    pub deleted: usize,
    /// HTTP requests, and writes among them.
    pub requests: usize,
    /// Writes.
    pub writes: usize,
    /// The most object writes that were in flight at once (bounded by `--parallel`).
    pub max_concurrent_writes: usize,
}

impl ApplyReport {
    fn counted(mut self, counts: RequestCounts) -> Self {
        self.requests = counts.requests;
        self.writes = counts.writes;
        self
    }
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

/// What the desired objects need listed, plus everything the live parent lists.
fn keeping_the_parent<C>(r: &Realized<C>, old_gks: &[String]) -> (Vec<String>, Vec<String>) {
    let (gks, mut namespaces) = parent_lists(&r.desired, old_gks);
    if let Some(p) = &r.live_parent {
        namespaces.extend(applyset::parent_namespaces(p));
    }
    let namespaces: BTreeSet<String> = namespaces.into_iter().collect();
    (gks, namespaces.into_iter().collect())
}

/// Whether the live parent already lists what `wanted` does (and carries the same id).
fn parent_says(live: &Value, wanted: &Value) -> bool {
    let ann = |v: &Value, k: &str| {
        v.pointer("/metadata/annotations")
            .and_then(|a| a.get(k))
            .cloned()
    };
    let id = format!("/metadata/labels/{}", applyset::ID_LABEL.replace('/', "~1"));
    [
        applyset::GROUP_KINDS_ANNOTATION,
        applyset::NAMESPACES_ANNOTATION,
        applyset::TOOLING_ANNOTATION,
        members::ANNOTATION,
        members::VERSIONS_ANNOTATION,
    ]
    .iter()
    .all(|k| ann(live, k) == ann(wanted, k))
        && live.pointer(&id) == wanted.pointer(&id)
}

/// What the parent records of the set's members: their digests and versions by kind
/// (`members.rs`).
struct MemberRecords<'a> {
    digests: &'a BTreeMap<String, String>,
    versions: &'a BTreeMap<String, u64>,
}

/// Applies the parent listing `gks` and `namespaces` unless `current` already says so; returns
/// the parent as it now is.
async fn write_parent_if_changed<C: ClusterApi>(
    r: &Realized<C>,
    current: Option<Value>,
    (gks, namespaces): (Vec<String>, Vec<String>),
    records: MemberRecords<'_>,
    force: bool,
) -> Result<Option<Value>, RealizeError> {
    let mut obj = r.parent.object(&gks, &namespaces);
    obj["metadata"]["annotations"][members::ANNOTATION] =
        Value::from(members::annotation_value(records.digests));
    if !records.versions.is_empty() {
        obj["metadata"]["annotations"][members::VERSIONS_ANNOTATION] =
            Value::from(members::annotation_value(records.versions));
    }
    if current.as_ref().is_some_and(|live| parent_says(live, &obj)) {
        return Ok(current);
    }
    let manager = crate::ownership::field_manager(&r.plan.applyset);
    // A parent written by kiln's old shared manager: this set's manager takes it over first.
    let current = match current
        .as_ref()
        .and_then(|live| crate::ownership::rename_patch(live, &manager))
    {
        Some(patch) => Some(
            r.cluster
                .merge_patch(current.as_ref().expect("checked"), &patch)
                .await?,
        ),
        None => current,
    };
    // Conditional on the parent as this run last saw it: a lost update (another run widened
    // or narrowed it meanwhile) fails instead of overwriting that run's group-kinds.
    if let Some(rv) = current
        .as_ref()
        .and_then(|c| c.pointer("/metadata/resourceVersion"))
    {
        obj["metadata"]["resourceVersion"] = rv.clone();
    }
    let params = ApplyParams {
        force,
        dry_run: false,
        manager: &manager,
    };
    match r.cluster.apply(&obj, params).await {
        Ok(v) => Ok(Some(v)),
        Err(ClusterError::Modified { .. }) => Err(RealizeError::ParentChanged {
            name: r.parent.name.clone(),
            namespace: r.parent.namespace.clone(),
        }),
        Err(e) => Err(e.into()),
    }
}

/// The plan's deletions, confirmed (by `yes` or `confirm`).
fn confirmed_deletions(
    changes: &[Change],
    yes: bool,
    confirm: impl FnOnce(usize) -> bool,
) -> Result<Vec<&Change>, RealizeError> {
    let deletions: Vec<&Change> = changes
        .iter()
        .filter(|c| c.action == Action::Delete)
        .collect();
    if !deletions.is_empty() && !yes && !confirm(deletions.len()) {
        return Err(RealizeError::NotConfirmed(deletions.len()));
    }
    Ok(deletions)
}

/// One wave of an apply.
#[derive(Default)]
struct Wave<'a> {
    /// The objects to write, by kind rank.
    write: BTreeMap<u8, Vec<&'a DesiredObject>>,
    /// Unchanged objects whose live state does not pass their health gate yet (an interrupted
    /// apply's rollout): waited on without a write.
    not_ready: Vec<&'a DesiredObject>,
}

/// The waves of an apply, in order.
fn waves<C>(r: &Realized<C>) -> BTreeMap<usize, Wave<'_>> {
    let by_key: BTreeMap<&ObjectKey, &DesiredObject> =
        r.desired.iter().map(|d| (&d.key, d)).collect();
    let mut waves: BTreeMap<usize, Wave<'_>> = BTreeMap::new();
    for c in &r.plan.changes {
        let writes = matches!(
            c.action,
            Action::Create | Action::Adopt | Action::Update | Action::Drift
        );
        let awaited = c.action == Action::Unchanged && c.not_ready.is_some();
        if !(writes || awaited) {
            continue;
        }
        let d = by_key[&c.key()];
        let wave = waves.entry(d.wave).or_default();
        if writes {
            wave.write
                .entry(kind_rank(&d.key.group_kind))
                .or_default()
                .push(d);
        } else {
            wave.not_ready.push(d);
        }
    }
    waves
}

/// Applies a plan: creates, updates and drift reverts in waves, then prunes.
pub async fn apply<C: ClusterApi>(
    r: &Realized<C>,
    options: &ApplyOptions,
    confirm: impl FnOnce(usize) -> bool,
) -> Result<ApplyReport, RealizeError> {
    apply_reporting(r, options, confirm, &|_| {}).await
}

/// [`apply`], telling `on_event` of each object as soon as it is written or deleted, and of
/// each health gate's progress as it changes.
pub async fn apply_reporting<C: ClusterApi>(
    r: &Realized<C>,
    options: &ApplyOptions,
    confirm: impl FnOnce(usize) -> bool,
    on_event: &dyn Fn(ApplyEvent<'_>),
) -> Result<ApplyReport, RealizeError> {
    let conflicts = r
        .plan
        .changes
        .iter()
        .filter(|c| c.conflict.is_some())
        .count();
    if conflicts > 0 && !options.force_conflicts {
        return Err(RealizeError::Conflicts(conflicts));
    }
    let deletions = confirmed_deletions(&r.plan.changes, options.yes, confirm)?;
    let old_gks = r
        .live_parent
        .as_ref()
        .map(|p| parent_state(p).0)
        .unwrap_or_default();
    // Widen the parent first, so an interrupted apply leaves no member the next run cannot find.
    // Its member digests must hold however far this run gets (`members::Changing`).
    let widened = if r.plan.partial {
        keeping_the_parent(r, &old_gks)
    } else {
        parent_lists(&r.desired, &old_gks)
    };
    let recorded = r
        .live_parent
        .as_ref()
        .map(members::recorded)
        .unwrap_or_default();
    let desired_digests = members::digests(r.desired.iter().map(|d| &d.key));
    let kinds = |wanted: fn(Action) -> bool| -> BTreeSet<&str> {
        r.plan
            .changes
            .iter()
            .filter(|c| wanted(c.action))
            .map(|c| c.group_kind.as_str())
            .collect()
    };
    let changing = members::Changing {
        joining: kinds(|a| matches!(a, Action::Create | Action::Adopt)),
        pruning: kinds(|a| a == Action::Delete),
        partial: r.plan.partial,
    };
    let still_true = changing.digests_kept(recorded, &desired_digests);
    let versions_kept = changing.versions_kept(
        r.live_parent
            .as_ref()
            .map(members::recorded_versions)
            .unwrap_or_default(),
    );
    let current = write_parent_if_changed(
        r,
        r.live_parent.clone(),
        widened,
        MemberRecords {
            digests: &still_true,
            versions: &versions_kept,
        },
        options.force_conflicts,
    )
    .await?;
    let actions: HashMap<ObjectKey, (Action, bool)> = r
        .plan
        .changes
        .iter()
        .map(|c| (c.key(), (c.action, c.takes_back())))
        .collect();
    let journal = Journal::new(on_event);
    let mut report = ApplyReport::default();
    let mut written_versions = BTreeMap::new();
    for wave in waves(r).values() {
        let manager = crate::ownership::field_manager(&r.plan.applyset);
        report.applied += apply_wave(
            &r.cluster,
            wave,
            &actions,
            options,
            &journal,
            &manager,
            &mut written_versions,
        )
        .await?;
    }
    report.max_concurrent_writes = journal.most_in_flight();
    let (deleted, replaced) = delete_in_order(&r.cluster, deletions, &journal).await?;
    report.deleted += deleted;
    // Narrow the parent to what the set now holds; a partial run (`--rule`) saw only part of
    // the set, so it keeps every kind and namespace the parent lists.
    let lists = if r.plan.partial {
        keeping_the_parent(r, &old_gks)
    } else {
        parent_lists(&r.desired, &[])
    };
    // A complete run knows every kind's members: the desired ones (less a kind where an object
    // was replaced under a prune, which stays a member nobody planned).
    let digests = if r.plan.partial {
        still_true
    } else {
        desired_digests
            .into_iter()
            .filter(|(gk, _)| !replaced.contains(gk))
            .collect()
    };
    let versions = changing.versions_after(versions_kept, &written_versions);
    let records = MemberRecords {
        digests: &digests,
        versions: &versions,
    };
    write_parent_if_changed(r, current, lists, records, options.force_conflicts).await?;
    report.written = journal.into_written();
    Ok(report.counted(r.cluster.counts()))
}

/// Writes one wave, kind rank by kind rank (CRDs Established before what follows them), then
/// waits for its health gates (those of what it wrote, and of unchanged objects not ready yet);
/// returns how many objects were written. `versions` gets the newest resourceVersion written
/// per kind (`None` once a write's answer had no numeric one).
async fn apply_wave(
    cluster: &impl ClusterApi,
    wave: &Wave<'_>,
    actions: &HashMap<ObjectKey, (Action, bool)>,
    options: &ApplyOptions,
    journal: &Journal<'_>,
    manager: &str,
    versions: &mut BTreeMap<String, Option<u64>>,
) -> Result<usize, RealizeError> {
    let mut written = Vec::new();
    for objs in wave.write.values() {
        let answers: Vec<(&str, Option<u64>)> = stream::iter(objs.iter())
            .map(|d| async move {
                let (action, takes_back) = actions
                    .get(&d.key)
                    .copied()
                    .unwrap_or((Action::Update, false));
                // Reverting drift takes the fields back from whoever changed them; a new
                // field another manager owns is a conflict unless --force-conflicts.
                let params = ApplyParams {
                    force: options.force_conflicts || takes_back,
                    dry_run: false,
                    manager,
                };
                let in_flight = journal.writing();
                let mut applied = match cluster.apply(&d.object, params).await {
                    // Fields kiln's old shared manager holds: rename it to this set's (the
                    // first apply after the upgrade), then apply again.
                    Err(conflict @ ClusterError::Conflict { .. }) => {
                        let kind = d.object["kind"].as_str().unwrap_or_default();
                        let api_version = d.object["apiVersion"].as_str().unwrap_or_default();
                        let live = cluster
                            .get(api_version, kind, &d.key.namespace, &d.key.name)
                            .await?;
                        let rename = live
                            .and_then(|l| Some((crate::ownership::rename_patch(&l, manager)?, l)));
                        let Some((patch, live)) = rename else {
                            return Err(conflict);
                        };
                        cluster.merge_patch(&live, &patch).await?;
                        cluster.apply(&d.object, params).await?
                    }
                    other => other?,
                };
                // Fields that `kubectl apply` (client-side) or an older kiln left under their
                // managers move to this set's, so that removing one from the rules removes it.
                if move_ownership(cluster, &d.key, &d.object, &applied, manager).await? {
                    // Now the set owns them, fields it does not declare are dropped.
                    applied = cluster.apply(&d.object, params).await?;
                }
                drop(in_flight);
                journal.record(action, &d.key, &d.rule);
                let version = crate::api::numeric(
                    applied
                        .pointer("/metadata/resourceVersion")
                        .and_then(Value::as_str),
                );
                Ok::<_, ClusterError>((d.key.group_kind.as_str(), version))
            })
            .buffer_unordered(options.parallel.max(1))
            .try_collect()
            .await?;
        for (gk, version) in answers {
            let newest = versions.entry(gk.to_owned()).or_insert(version);
            *newest = newest.zip(version).map(|(a, b)| a.max(b));
        }
        // A CRD created in this run must be Established before its custom resources.
        for d in objs
            .iter()
            .filter(|d| d.key.group_kind.starts_with("CustomResourceDefinition."))
        {
            wait::ready(cluster, &d.object, options.timeout, &|_| {})
                .await
                .map_err(|e| e.in_rule(&d.rule))?;
            wait::served(cluster, &d.object, options.timeout).await?;
        }
        written.extend(objs.iter().copied());
    }
    if options.wait {
        let gated: Vec<&DesiredObject> = written
            .iter()
            .chain(&wave.not_ready)
            .copied()
            .filter(|d| health::condition(&d.object).is_some())
            .filter(|d| !(options.skip_workload_gates && health::is_workload(&d.object)))
            .collect();
        stream::iter(gated)
            .map(|d| async move {
                let progress = |p: &str| journal.waiting(&d.key, &d.rule, p);
                wait::ready(cluster, &d.object, options.timeout, &progress)
                    .await
                    .map_err(|e| e.in_rule(&d.rule))
            })
            .buffer_unordered(options.parallel.max(1))
            .try_collect::<Vec<()>>()
            .await?;
    }
    Ok(written.len())
}

/// Deletes `changes` in reverse kind order: custom resources first, namespaces last; returns
/// how many were deleted and the kinds where an object was replaced since the plan.
async fn delete_in_order(
    cluster: &impl ClusterApi,
    mut changes: Vec<&Change>,
    journal: &Journal<'_>,
) -> Result<(usize, BTreeSet<String>), RealizeError> {
    let mut replaced = BTreeSet::new();
    changes.sort_by_key(|c| std::cmp::Reverse(kind_rank(&c.group_kind)));
    let mut deleted = 0;
    for c in &changes {
        // Only the object the plan read: one deleted and made again since is not the member
        // that was planned away.
        match cluster
            .delete(&c.group_kind, &c.namespace, &c.name, c.live_uid.as_deref())
            .await?
        {
            Deleted::Replaced => {
                tracing::warn!(object = %c.key(), "replaced since the plan read it; left alone");
                replaced.insert(c.group_kind.clone());
            }
            Deleted::Deleted | Deleted::Gone => {
                journal.record(Action::Delete, &c.key(), &c.rule);
                deleted += 1;
            }
        }
    }
    Ok((deleted, replaced))
}

/// Deletes every member planned by [`plan_teardown`](crate::plan_teardown), then (with `wait`,
/// once they are gone) the parent.
pub async fn destroy<C: ClusterApi>(
    r: &Realized<C>,
    wait: Option<Duration>,
    yes: bool,
    confirm: impl FnOnce(usize) -> bool,
    on_event: &dyn Fn(ApplyEvent<'_>),
) -> Result<ApplyReport, RealizeError> {
    let deletions = confirmed_deletions(&r.plan.changes, yes, confirm)?;
    let journal = Journal::new(on_event);
    let mut report = ApplyReport {
        deleted: delete_in_order(&r.cluster, deletions.clone(), &journal)
            .await?
            .0,
        ..ApplyReport::default()
    };
    if let Some(timeout) = wait {
        let deadline = tokio::time::Instant::now() + timeout;
        for c in &deletions {
            let left = deadline.saturating_duration_since(tokio::time::Instant::now());
            wait::gone(&r.cluster, &c.key(), left)
                .await
                .map_err(|e| e.in_rule(&c.rule))
                .map_err(|e| match e {
                    RealizeError::Unhealthy {
                        object,
                        condition,
                        rule,
                        ..
                    } => RealizeError::Unhealthy {
                        object,
                        condition,
                        timeout,
                        rule,
                    },
                    e => e,
                })?;
        }
    }
    // A scoped destroy (`--rule`) keeps the parent: it still lists the other rules' members.
    if r.live_parent.is_some() && !r.plan.partial {
        r.cluster
            .delete("Secret", &r.parent.namespace, &r.parent.name, None)
            .await?;
        report.deleted += 1;
    }
    report.written = journal.into_written();
    Ok(report.counted(r.cluster.counts()))
}

/// Moves the fields other managers hold on `applied` to `manager` (see
/// `ownership::migration_patch`), re-reading and patching again when a controller changed the
/// object in between (409 "the object has been modified"), a few times. Whether a patch was
/// written.
async fn move_ownership(
    cluster: &impl ClusterApi,
    key: &ObjectKey,
    desired: &Value,
    applied: &Value,
    manager: &str,
) -> Result<bool, ClusterError> {
    let mut current = applied.clone();
    for attempt in 0..5 {
        let Some(patch) = crate::ownership::migration_patch(&current, manager) else {
            return Ok(false);
        };
        match cluster.merge_patch(&current, &patch).await {
            Ok(_) => return Ok(true),
            Err(ClusterError::Modified { .. }) if attempt < 4 => {
                let api_version = desired["apiVersion"].as_str().unwrap_or_default();
                let kind = desired["kind"].as_str().unwrap_or_default();
                match cluster
                    .get(api_version, kind, &key.namespace, &key.name)
                    .await?
                {
                    Some(live) => current = live,
                    None => return Ok(false),
                }
            }
            Err(e) => return Err(e),
        }
    }
    Ok(true)
}

#[cfg(test)]
mod tests {
    use serde_json::{json, Value};

    use super::*;
    use crate::applyset::Parent;
    use crate::fake::{FakeCluster, Health};
    use crate::planning::{plan_set, PlanOptions, Wanted};

    fn ns(name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}})
    }

    fn cm(namespace: &str, name: &str) -> Value {
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": name, "namespace": namespace}, "data": {"k": "v"}})
    }

    fn deployment(namespace: &str, name: &str) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment",
               "metadata": {"name": name, "namespace": namespace},
               "spec": {"replicas": 2, "selector": {"matchLabels": {"app": name}},
                        "template": {"metadata": {"labels": {"app": name}},
                                     "spec": {"containers": [{"name": "c", "image": "i"}]}}}})
    }

    fn crd() -> Value {
        json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
               "metadata": {"name": "widgets.example.io"},
               "spec": {"group": "example.io", "scope": "Namespaced",
                        "names": {"kind": "Widget", "plural": "widgets"},
                        "versions": [{"name": "v1", "served": true, "storage": true}]}})
    }

    fn widget(namespace: &str, name: &str) -> Value {
        json!({"apiVersion": "example.io/v1", "kind": "Widget",
               "metadata": {"name": name, "namespace": namespace}})
    }

    fn parent() -> Parent {
        Parent::for_project("shop", "test", "default")
    }

    /// The platform of these tests: `base` (a namespace and a CRD), `app` on it (config, a
    /// custom resource and a Deployment), `extra` on `app`.
    fn platform(extra: Vec<Value>) -> Wanted {
        Wanted::of_rules(
            parent(),
            vec![
                ("base", vec![], vec![crd(), ns("shop")]),
                (
                    "app",
                    vec![0],
                    vec![
                        deployment("shop", "web"),
                        widget("shop", "w"),
                        cm("shop", "config"),
                    ],
                ),
                ("extra", vec![1], extra),
            ],
        )
    }

    fn options() -> ApplyOptions {
        ApplyOptions {
            force_conflicts: false,
            wait: true,
            skip_workload_gates: false,
            timeout: Duration::from_secs(30),
            yes: true,
            parallel: 1,
        }
    }

    async fn plan(cluster: FakeCluster, wanted: Wanted) -> Realized<FakeCluster> {
        plan_set(cluster, wanted, &PlanOptions::default(), |_, _| {})
            .await
            .expect("planned")
    }

    fn position(writes: &[String], what: &str) -> usize {
        writes
            .iter()
            .position(|w| w == what)
            .unwrap_or_else(|| panic!("{what} not in {writes:#?}"))
    }

    #[tokio::test(start_paused = true)]
    async fn writes_go_parent_first_then_waves_in_kind_order_and_a_second_run_writes_nothing() {
        let r = plan(FakeCluster::default(), platform(vec![cm("shop", "late")])).await;
        let report = apply(&r, &options(), |_| true).await.unwrap();
        assert_eq!(report.applied, 6);
        let w = r.cluster.writes();
        assert!(
            w[0].starts_with("apply Secret default/kiln-shop-test"),
            "{w:#?}"
        );
        let at = |what: &str| position(&w, what);
        assert!(at("apply Namespace shop") < at("apply ConfigMap shop/config"));
        assert!(
            at("apply CustomResourceDefinition.apiextensions.k8s.io widgets.example.io")
                < at("apply Widget.example.io shop/w")
        );
        assert!(at("apply ConfigMap shop/config") < at("apply Deployment.apps shop/web"));
        assert!(at("apply Deployment.apps shop/web") < at("apply Widget.example.io shop/w"));
        assert!(at("apply Widget.example.io shop/w") < at("apply ConfigMap shop/late"));
        // The parent lists every kind once, written before the members and once after them,
        // with the versions written (nothing to narrow).
        assert_eq!(w.iter().filter(|w| w.contains("Secret")).count(), 2);
        assert!(w
            .last()
            .unwrap()
            .starts_with("apply Secret default/kiln-shop-test"));
        let parent = r
            .cluster
            .object("Secret", "default", "kiln-shop-test")
            .unwrap();
        assert_eq!(
            members::recorded_versions(&parent)
                .keys()
                .collect::<Vec<_>>(),
            [
                "ConfigMap",
                "CustomResourceDefinition.apiextensions.k8s.io",
                "Deployment.apps",
                "Namespace",
                "Widget.example.io"
            ]
        );

        let again = plan(r.cluster, platform(vec![cm("shop", "late")])).await;
        assert!(!again.plan.has_changes(), "{:#?}", again.plan.changes);
        again.cluster.clear_writes();
        let report = apply(&again, &options(), |_| true).await.unwrap();
        assert_eq!((report.applied, report.deleted), (0, 0));
        assert!(again.cluster.writes().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn an_invalid_object_stops_the_apply_at_its_wave_with_the_parent_already_widened() {
        let fake = FakeCluster::default();
        fake.fail("apply", "config", 422, 1);
        let r = plan(fake, platform(vec![cm("shop", "late")])).await;
        let told = std::sync::Mutex::new(Vec::new());
        let on_event = |e: ApplyEvent<'_>| {
            if let ApplyEvent::Written(w) = e {
                told.lock().unwrap().push(format!("apply {}", w.object));
            }
        };
        let err = apply_reporting(&r, &options(), |_| true, &on_event)
            .await
            .unwrap_err();
        // Exactly what was written was told, in order, though the apply failed.
        let members: Vec<String> = r
            .cluster
            .writes()
            .into_iter()
            .filter(|w| !w.starts_with("apply Secret default/"))
            .collect();
        assert_eq!(*told.lock().unwrap(), members);
        assert!(!members.is_empty());
        assert!(
            matches!(&err, RealizeError::Cluster(e) if e.status_code() == Some(422)),
            "{err:?}"
        );
        assert_eq!(
            err.exit_code(),
            1,
            "an object the server rejects is the user's to fix"
        );
        let w = r.cluster.writes();
        assert!(w.contains(&"apply Namespace shop".to_owned()));
        assert!(
            !w.iter().any(|w| w.contains("shop/late")),
            "later waves wait: {w:#?}"
        );
        // The parent was widened before any member: the next run finds what this one wrote.
        let live_parent = r
            .cluster
            .object("Secret", "default", "kiln-shop-test")
            .unwrap();
        assert!(parent_state(&live_parent)
            .0
            .contains(&"Deployment.apps".to_owned()));

        // The next run converges: it creates only what is missing.
        let again = plan(r.cluster, platform(vec![cm("shop", "late")])).await;
        let created: Vec<String> = again
            .plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Create)
            .map(|c| c.name.clone())
            .collect();
        assert!(created.contains(&"config".to_owned()) && created.contains(&"late".to_owned()));
        assert!(!created.contains(&"shop".to_owned()), "{created:?}");
        apply(&again, &options(), |_| true).await.unwrap();
    }

    #[tokio::test(start_paused = true)]
    async fn a_conflict_is_the_users_and_a_server_error_the_clusters() {
        let fake = FakeCluster::default();
        fake.fail("apply", "web", 409, 1);
        let r = plan(fake, platform(vec![])).await;
        let err = apply(&r, &options(), |_| true).await.unwrap_err();
        assert!(matches!(
            err,
            RealizeError::Cluster(ClusterError::Conflict { .. })
        ));
        assert_eq!(err.exit_code(), 1);

        let fake = FakeCluster::default();
        fake.fail("apply", "web", 503, 1);
        let r = plan(fake, platform(vec![])).await;
        let err = apply(&r, &options(), |_| true).await.unwrap_err();
        assert_eq!(err.exit_code(), 2, "{err:?}");
        assert!(!r.cluster.writes().iter().any(|w| w.contains("Widget")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failing_list_fails_the_plan_before_any_write() {
        let r = plan(FakeCluster::default(), platform(vec![])).await;
        apply(&r, &options(), |_| true).await.unwrap();
        r.cluster.clear_writes();
        // A new ConfigMap: the recorded members are not the desired ones, so a LIST.
        r.cluster.fail("list", "ConfigMap", 500, 1);
        let wanted = platform(vec![cm("shop", "late")]);
        let err = plan_set(r.cluster, wanted, &PlanOptions::default(), |_, _| {})
            .await
            .err()
            .expect("the plan fails");
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("list `ConfigMap`: injected 500"),
            "{err}"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn a_stuck_rollout_times_out_and_a_failed_one_ends_the_wait_at_once() {
        let fake = FakeCluster::default();
        fake.health("web", Health::Stuck);
        let r = plan(fake, platform(vec![cm("shop", "late")])).await;
        let started = tokio::time::Instant::now();
        let err = apply(&r, &options(), |_| true).await.unwrap_err();
        assert!(matches!(err, RealizeError::Unhealthy { .. }), "{err:?}");
        assert!(started.elapsed() >= Duration::from_secs(30));
        assert!(err.to_string().contains("Deployment.apps shop/web"));
        assert!(!r.cluster.writes().iter().any(|w| w.contains("shop/late")));

        let fake = FakeCluster::default();
        fake.health("web", Health::Failed);
        let r = plan(fake, platform(vec![])).await;
        let started = tokio::time::Instant::now();
        let err = apply(&r, &options(), |_| true).await.unwrap_err();
        assert!(
            matches!(&err, RealizeError::GateFailed { condition, .. } if condition.contains("ProgressDeadlineExceeded")),
            "{err:?}"
        );
        assert!(started.elapsed() < Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn an_unchanged_object_left_not_ready_is_waited_on_again_without_a_write() {
        let fake = FakeCluster::default();
        fake.health("web", Health::Stuck);
        let r = plan(fake, platform(vec![cm("shop", "late")])).await;
        apply(&r, &options(), |_| true).await.unwrap_err();
        // The next run: nothing to write for `web`, but its rollout is not done.
        let again = plan(r.cluster, platform(vec![cm("shop", "late")])).await;
        let web = again.plan.changes.iter().find(|c| c.name == "web").unwrap();
        assert_eq!(web.action, Action::Unchanged);
        assert!(web.not_ready.is_some());
        assert!(
            crate::render::render(&again.plan).contains("not ready Deployment.apps shop/web"),
            "{}",
            crate::render::render(&again.plan)
        );
        again.cluster.clear_writes();
        let mut ready = again
            .cluster
            .object("Deployment.apps", "shop", "web")
            .unwrap();
        ready["status"] = json!({"observedGeneration": 1, "replicas": 2,
            "updatedReplicas": 2, "availableReplicas": 2});
        let started = tokio::time::Instant::now();
        let rollout = async {
            tokio::time::sleep(Duration::from_secs(5)).await;
            again.cluster.put_object(ready);
        };
        let options = options();
        let (report, ()) = tokio::join!(apply(&again, &options, |_| true), rollout);
        let report = report.unwrap();
        assert!(started.elapsed() >= Duration::from_secs(5), "it waited");
        let w = again.cluster.writes();
        assert!(!w.iter().any(|w| w.contains("shop/web")), "{w:#?}");
        assert!(w.iter().any(|w| w == "apply ConfigMap shop/late"), "{w:#?}");
        assert_eq!(report.applied, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn pruning_deletes_custom_resources_before_their_crd_and_namespaces_last() {
        let r = plan(FakeCluster::default(), platform(vec![])).await;
        apply(&r, &options(), |_| true).await.unwrap();
        r.cluster.clear_writes();
        let r = plan(r.cluster, Wanted::of_rules(parent(), vec![])).await;
        let report = apply(&r, &options(), |_| true).await.unwrap();
        assert_eq!(report.deleted, 5);
        let w = r.cluster.writes();
        let at = |what: &str| position(&w, what);
        assert!(
            at("delete Widget.example.io shop/w")
                < at("delete CustomResourceDefinition.apiextensions.k8s.io widgets.example.io")
        );
        assert!(at("delete ConfigMap shop/config") < at("delete Namespace shop"));
        assert_eq!(w.last().unwrap(), "apply Secret default/kiln-shop-test");
    }

    /// After a complete apply the parent records each kind's members: a plan of the same set
    /// reads kinds with few objects by GETs (a LIST of them would fail here), and one that drops
    /// a member LISTs that kind again, so prune still finds every member.
    #[tokio::test(start_paused = true)]
    async fn recorded_members_let_small_kinds_be_read_by_get_and_prune_stays_exact() {
        let r = plan(FakeCluster::default(), platform(vec![cm("shop", "late")])).await;
        apply(&r, &options(), |_| true).await.unwrap();
        let live_parent = r
            .cluster
            .object("Secret", "default", "kiln-shop-test")
            .unwrap();
        assert!(members::recorded(&live_parent).contains_key("ConfigMap"));
        r.cluster.fail("list", "ConfigMap", 500, 10);
        let again = plan(r.cluster, platform(vec![cm("shop", "late")])).await;
        assert!(!again.plan.has_changes(), "{:#?}", again.plan.changes);
        // Without `late`, the recorded ConfigMaps are not the desired ones: a LIST (which fails
        // here, as injected), never a plan that misses the member to prune.
        let options = PlanOptions::default();
        let dropped = plan_set(again.cluster, platform(vec![]), &options, |_, _| {}).await;
        assert!(dropped.is_err());
    }

    /// A set with no parent has no members: its first plan reads none (a LIST would fail
    /// here), and its apply writes the parent first.
    #[tokio::test(start_paused = true)]
    async fn a_first_plan_reads_no_members() {
        let fake = FakeCluster::default();
        fake.fail("list", "", 500, 10);
        fake.fail("get", "late", 500, 10);
        let r = plan(fake, platform(vec![cm("shop", "late")])).await;
        assert_eq!(r.cluster.lists(), (0, 0));
        assert!(r.plan.changes.iter().all(|c| c.action == Action::Create));
        apply(&r, &options(), |_| true).await.unwrap();
        assert!(r.cluster.writes()[0].starts_with("apply Secret default/kiln-shop-test"));
    }

    /// A kind with more members than GETs are worth is read from the watch cache once the
    /// cache has seen the set's last write of it. A cache behind that write is not used, so a
    /// member the write made is still found, and pruned when it leaves the set.
    #[tokio::test(start_paused = true)]
    async fn the_watch_cache_serves_a_list_only_once_it_has_seen_the_sets_last_write() {
        let many =
            |n: usize| -> Vec<Value> { (0..n).map(|i| cm("shop", &format!("c{i}"))).collect() };
        let r = plan(FakeCluster::default(), platform(many(10))).await;
        apply(&r, &options(), |_| true).await.unwrap();
        let (storage, cache) = r.cluster.lists();
        let again = plan(r.cluster, platform(many(10))).await;
        assert!(!again.plan.has_changes(), "{:#?}", again.plan.changes);
        // The 11 ConfigMaps from the cache (per namespace of the set), the rest by GET.
        let (storage_now, cache_now) = again.cluster.lists();
        assert_eq!(storage_now, storage);
        assert!(cache_now > cache);

        // The cache stops; an apply makes `c10`; the next plan no longer wants it.
        again.cluster.freeze_cache();
        let grown = plan(again.cluster, platform(many(11))).await;
        apply(&grown, &options(), |_| true).await.unwrap();
        let (storage, _) = grown.cluster.lists();
        let shrunk = plan(grown.cluster, platform(many(10))).await;
        let deletes: Vec<String> = shrunk
            .plan
            .changes
            .iter()
            .filter(|c| c.action == Action::Delete)
            .map(|c| c.key().to_string())
            .collect();
        assert_eq!(deletes, ["ConfigMap shop/c10"]);
        assert!(shrunk.cluster.lists().0 > storage, "read from storage");
    }

    /// Prune deletes the object the plan read, by uid: one deleted and made again meanwhile
    /// (same name, same set label) is left alone.
    #[tokio::test(start_paused = true)]
    async fn a_member_replaced_after_the_plan_is_not_pruned() {
        let r = plan(FakeCluster::default(), platform(vec![cm("shop", "late")])).await;
        apply(&r, &options(), |_| true).await.unwrap();
        let mut first = r.cluster.object("ConfigMap", "shop", "late").unwrap();
        first["metadata"]["uid"] = json!("uid-1");
        r.cluster.put(first.clone());
        let r = plan(r.cluster, platform(vec![])).await;
        let mut again = first;
        again["metadata"]["uid"] = json!("uid-2");
        r.cluster.put(again);
        r.cluster.clear_writes();
        let report = apply(&r, &options(), |_| true).await.unwrap();
        assert_eq!(report.deleted, 0);
        assert!(r.cluster.object("ConfigMap", "shop", "late").is_some());
        assert!(!r.cluster.writes().iter().any(|w| w.starts_with("delete")));
    }

    #[tokio::test(start_paused = true)]
    async fn a_failed_prune_leaves_the_parent_wide_for_the_next_run() {
        let r = plan(FakeCluster::default(), platform(vec![cm("shop", "late")])).await;
        apply(&r, &options(), |_| true).await.unwrap();
        r.cluster.fail("delete", "late", 500, 1);
        let r = plan(r.cluster, platform(vec![])).await;
        assert!(apply(&r, &options(), |_| true).await.is_err());
        let live_parent = r
            .cluster
            .object("Secret", "default", "kiln-shop-test")
            .unwrap();
        assert!(parent_state(&live_parent)
            .0
            .contains(&"ConfigMap".to_owned()));
        let r = plan(r.cluster, platform(vec![])).await;
        let report = apply(&r, &options(), |_| true).await.unwrap();
        assert_eq!(report.deleted, 1);
        assert!(r.cluster.object("ConfigMap", "shop", "late").is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn deletions_need_confirmation_and_a_refusal_writes_nothing() {
        let r = plan(FakeCluster::default(), platform(vec![cm("shop", "late")])).await;
        apply(&r, &options(), |_| true).await.unwrap();
        r.cluster.clear_writes();
        let r = plan(r.cluster, platform(vec![])).await;
        let no = ApplyOptions {
            yes: false,
            ..options()
        };
        let err = apply(&r, &no, |n| {
            assert_eq!(n, 1);
            false
        })
        .await
        .unwrap_err();
        assert!(matches!(err, RealizeError::NotConfirmed(1)));
        assert!(r.cluster.writes().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_parent_changed_by_another_run_is_not_overwritten() {
        let r = plan(FakeCluster::default(), platform(vec![])).await;
        apply(&r, &options(), |_| true).await.unwrap();
        // A new kind makes the next apply widen the parent; another run touches it meanwhile.
        let extra = json!({"apiVersion": "v1", "kind": "ServiceAccount",
                           "metadata": {"name": "sa", "namespace": "shop"}});
        let r = plan(r.cluster, platform(vec![extra])).await;
        r.cluster
            .touch("Secret", "default", "kiln-shop-test", "someone/else");
        r.cluster.clear_writes();
        let err = apply(&r, &options(), |_| true).await.unwrap_err();
        assert!(matches!(err, RealizeError::ParentChanged { .. }), "{err:?}");
        assert!(r.cluster.writes().is_empty());
    }

    #[tokio::test(start_paused = true)]
    async fn a_locked_plan_holds_the_sets_lease_and_a_paused_holder_writes_nothing() {
        let locked = PlanOptions {
            lock: Some(crate::lock::LockOptions::default()),
            ..PlanOptions::default()
        };
        let r = plan_set(FakeCluster::default(), platform(vec![]), &locked, |_, _| {})
            .await
            .expect("planned");
        let lease = r.cluster.leases.lease("default", "kiln-shop-test").unwrap();
        assert_eq!(lease.holder, crate::lock::holder_identity());
        // The process was stopped past its lease: it resumes to a closed fence.
        r.cluster.leases.pause(Duration::from_secs(60));
        let err = apply(&r, &options(), |_| true).await.unwrap_err();
        assert!(
            err.to_string().contains("no longer holds the set's lock"),
            "{err}"
        );
        assert!(r.cluster.writes().is_empty(), "{:#?}", r.cluster.writes());
    }

    #[tokio::test(start_paused = true)]
    async fn objects_the_server_rejects_fail_the_plan_all_at_once_before_any_write() {
        let r = plan(FakeCluster::default(), platform(vec![])).await;
        apply(&r, &options(), |_| true).await.unwrap();
        r.cluster.clear_writes();
        r.cluster.fail("dry-run", "late", 422, 1);
        r.cluster.fail("dry-run", "later", 422, 1);
        let err = plan_set(
            r.cluster,
            platform(vec![cm("shop", "late"), cm("shop", "later")]),
            &PlanOptions::default(),
            |_, _| {},
        )
        .await
        .err()
        .expect("the plan fails");
        let RealizeError::Rejected(rejections) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(rejections.len(), 2, "every rejection, not the first");
        assert!(rejections.iter().all(|r| r.rule == "extra"));
        assert!(
            rejections[0].to_string().contains("injected 422"),
            "{}",
            rejections[0]
        );
        assert_eq!(err.exit_code(), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn a_conflict_found_by_the_dry_run_is_in_the_plan_and_stops_apply_before_any_write() {
        let r = plan(FakeCluster::default(), platform(vec![])).await;
        apply(&r, &options(), |_| true).await.unwrap();
        r.cluster.fail("dry-run", "late", 409, 1);
        let r = plan(r.cluster, platform(vec![cm("shop", "late")])).await;
        let change = r.plan.changes.iter().find(|c| c.name == "late").unwrap();
        assert!(change.conflict.is_some());
        assert!(crate::render::render(&r.plan).contains("--force-conflicts"));
        r.cluster.clear_writes();
        let err = apply(&r, &options(), |_| true).await.unwrap_err();
        assert!(matches!(err, RealizeError::Conflicts(1)), "{err:?}");
        assert!(r.cluster.writes().is_empty());
        let forced = ApplyOptions {
            force_conflicts: true,
            ..options()
        };
        apply(&r, &forced, |_| true).await.unwrap();
        assert!(r.cluster.object("ConfigMap", "shop", "late").is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn a_user_without_cluster_wide_lists_plans_and_prunes_per_namespace() {
        let fake = FakeCluster::default();
        fake.namespaced_user();
        // The namespace exists (an admin made it); the project lives in it.
        let shop = Wanted::of_rules(parent(), vec![("app", vec![], vec![cm("default", "a")])]);
        let r = plan(fake, shop).await;
        apply(&r, &options(), |_| true).await.unwrap();
        let again = Wanted::of_rules(parent(), vec![("app", vec![], vec![cm("default", "a")])]);
        let r = plan(r.cluster, again).await;
        assert!(!r.plan.has_changes(), "{:#?}", r.plan.changes);
        let pruned = Wanted::of_rules(parent(), vec![]);
        let r = plan(r.cluster, pruned).await;
        assert_eq!(apply(&r, &options(), |_| true).await.unwrap().deleted, 1);
        assert!(r.cluster.object("ConfigMap", "default", "a").is_none());
    }

    #[tokio::test]
    async fn a_closed_fence_refuses_every_write_and_nothing_is_written() {
        use crate::fence::{boot_clock, Fence};
        let fake = FakeCluster::default();
        let r = plan(fake, platform(vec![cm("shop", "a"), cm("shop", "b")])).await;
        assert!(r.plan.has_changes());
        r.cluster.fence_writes(std::sync::Arc::new(Fence::until(
            boot_clock() - Duration::from_millis(1),
        )));
        r.cluster.clear_writes();
        let err = apply(&r, &options(), |_| true).await.unwrap_err();
        assert!(
            matches!(err, RealizeError::Cluster(ClusterError::Fenced { .. })),
            "{err:?}"
        );
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("no longer holds") || format!("{err:?}").contains("Fenced")
        );
        assert!(r.cluster.writes().is_empty(), "{:?}", r.cluster.writes());
    }

    #[tokio::test]
    async fn moving_kubectls_fields_re_reads_and_retries_when_the_object_changed_meanwhile() {
        let fake = FakeCluster::default();
        let manager = "kiln/set";
        let mut live = cm("shop", "late");
        live["metadata"]["resourceVersion"] = json!("7");
        live["metadata"]["managedFields"] = json!([
            {"manager": "kubectl-client-side-apply", "operation": "Update",
             "fieldsV1": {"f:data": {"f:k": {}}}},
            {"manager": manager, "operation": "Apply", "fieldsV1": {"f:metadata": {}}},
        ]);
        fake.put(live.clone());
        // A controller changes the object twice between kiln's read and its patch.
        fake.fail("patch", "late", 409, 2);
        let key = ObjectKey::of(&live);
        let moved = move_ownership(&fake, &key, &live, &live, manager)
            .await
            .unwrap();
        assert!(moved, "the third patch went through");
        let counts = fake.counts();
        assert_eq!(
            counts.writes, 3,
            "two refused patches and the one that went through"
        );
        assert_eq!(
            counts.requests, 5,
            "and a GET after each refusal: {counts:?}"
        );
        // A 409 that is not a field conflict is not reported as one.
        fake.fail("patch", "late", 409, 5);
        let err = move_ownership(&fake, &key, &live, &live, manager)
            .await
            .unwrap_err();
        assert!(matches!(err, ClusterError::Modified { .. }), "{err:?}");
        assert!(!err.to_string().contains("field manager"), "{err}");
    }

    #[tokio::test(start_paused = true)]
    async fn an_existing_object_outside_any_set_is_adopted_and_another_sets_member_refused() {
        let fake = FakeCluster::default();
        fake.put(ns("shop"));
        fake.put(cm("shop", "late"));
        let r = plan(fake, platform(vec![cm("shop", "late")])).await;
        let late = r.plan.changes.iter().find(|c| c.name == "late").unwrap();
        assert_eq!(late.action, Action::Adopt);
        let shop = r.plan.changes.iter().find(|c| c.name == "shop").unwrap();
        assert_eq!(shop.action, Action::Adopt);
        apply(&r, &options(), |_| true).await.unwrap();
        let r = plan(r.cluster, platform(vec![cm("shop", "late")])).await;
        assert!(!r.plan.has_changes(), "{:#?}", r.plan.changes);

        // Another set's member: refused, naming both sets, unless --adopt.
        let theirs = Parent::for_project("other", "prod", "default").id();
        let mut claimed = cm("shop", "taken");
        claimed["metadata"]["labels"] = json!({ crate::applyset::PART_OF_LABEL: theirs.clone() });
        r.cluster.put(claimed);
        let err = plan_set(
            r.cluster,
            platform(vec![cm("shop", "late"), cm("shop", "taken")]),
            &PlanOptions::default(),
            |_, _| {},
        )
        .await
        .err()
        .expect("refused");
        let RealizeError::OtherSet(claims) = &err else {
            panic!("{err:?}")
        };
        assert_eq!(claims[0].theirs, theirs);
        assert_eq!(claims[0].ours, parent().id());
        assert_eq!(err.exit_code(), 1);
    }
}
