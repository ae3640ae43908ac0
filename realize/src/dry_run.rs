//! Server-side dry runs of the plan's candidates, as `kubectl diff --server-side` does: every
//! create, update and drift is sent as a server-side apply with `dryRun=All` (concurrently;
//! unchanged objects cost nothing), so that
//! - an object the server rejects (a 422, a schema violation) fails the plan, naming the rule,
//!   before anything is written;
//! - a conflict with another field manager shows in the plan;
//! - an update's diff is live against what the server would store (defaults on both sides);
//! - "drift" that the server would not change (`emptyDir: {}`, zero values it drops, fields an
//!   older server does not know) is no drift.

use std::collections::BTreeMap;

use futures::stream::{self, StreamExt};
use serde_json::Value;

use crate::api::{ApplyParams, ClusterApi, ClusterError};
use crate::applyset::PART_OF_LABEL;
use crate::desired::{DesiredObject, ObjectKey};
use crate::diff::{server_diff, without_server_fields};
use crate::error::{Claimed, Gap, RealizeError, Rejection};
use crate::plan::{Action, Plan};

fn version(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

/// The set a plan is for.
pub struct SetOf<'a> {
    /// Its id.
    pub id: &'a str,
    /// Its parent, `ns/name` (the name carries the project and environment).
    pub name: &'a str,
    /// For an instance (`--var`), its environment's base set id.
    pub base: Option<&'a str>,
    /// `--adopt`: take over other sets' members.
    pub adopt: bool,
}

/// Dry-runs the plan's candidates and settles them (see the module's doc).
pub async fn settle(
    cluster: &impl ClusterApi,
    plan: &mut Plan,
    desired: &[DesiredObject],
    live: &BTreeMap<ObjectKey, Value>,
    set: SetOf<'_>,
) -> Result<(), RealizeError> {
    let (set_id, adopt) = (set.id, set.adopt);
    let manager = crate::ownership::field_manager(set_id);
    let manager = manager.as_str();
    let by_key: BTreeMap<&ObjectKey, &DesiredObject> =
        desired.iter().map(|d| (&d.key, d)).collect();
    let candidates: Vec<(usize, &DesiredObject, Action, bool)> = plan
        .changes
        .iter()
        .enumerate()
        .filter(|(_, c)| matches!(c.action, Action::Create | Action::Update | Action::Drift))
        .map(|(i, c)| (i, by_key[&c.key()], c.action, c.takes_back()))
        .collect();
    let results: Vec<(usize, &DesiredObject, Action, Result<Value, ClusterError>)> =
        stream::iter(candidates)
            .map(|(i, d, action, takes_back)| async move {
                // Reverting drift takes the fields back, as apply will.
                let params = ApplyParams {
                    force: takes_back,
                    dry_run: true,
                    manager: live
                        .get(&d.key)
                        .map_or(manager, |l| crate::ownership::dry_run_manager(l, manager)),
                };
                (i, d, action, cluster.apply(&d.object, params).await)
            })
            .buffer_unordered(8)
            .collect()
            .await;
    let mut rejected = Vec::new();
    let mut claimed = Vec::new();
    let mut gaps = Vec::new();
    let mut namespaces = BTreeMap::new();
    for (i, d, action, result) in results {
        let change = &mut plan.changes[i];
        // A "create" whose object already exists (the dry run answers with its
        // resourceVersion, or conflicts with its managers) is not a member of this set.
        let exists = match &result {
            Ok(dry) => dry
                .pointer("/metadata/resourceVersion")
                .is_some_and(|v| v != ""),
            Err(ClusterError::Conflict { .. }) => true,
            Err(_) => false,
        };
        let found = if action == Action::Create && exists {
            existing(cluster, d, set_id, adopt).await?
        } else {
            None
        };
        if let Some(found) = found {
            match found {
                Existing::Adopt(live) => {
                    change.action = Action::Adopt;
                    // Fields that another tool *applies* (a co-owner) stay a conflict, for the
                    // user to decide; fields written imperatively (`kubectl apply` client-side,
                    // `create`, edits) are taken over.
                    change.conflict = match &result {
                        Err(ClusterError::Conflict { message, .. })
                            if has_other_appliers(&live, manager) =>
                        {
                            Some(message.clone())
                        }
                        _ => None,
                    };
                    let forced = ApplyParams {
                        force: true,
                        dry_run: true,
                        manager,
                    };
                    if let Ok(dry) = cluster.apply(&d.object, forced).await {
                        change.diff = Some(server_diff(&live, &dry));
                    }
                }
                // An instance's object identical to its base set's (it does not depend on the
                // instance's variables: a CRD, an operator's namespace, a ClusterIssuer): the
                // base set keeps owning it; the instance refers to it.
                Existing::Claimed(theirs, live)
                    if set.base == Some(theirs.as_str()) && same_desired_hash(&live, d) =>
                {
                    change.action = Action::Unchanged;
                    change.shared_with = Some(theirs);
                }
                Existing::Claimed(theirs, _) => claimed.push(Claimed {
                    rule: d.rule.clone(),
                    object: d.key.to_string(),
                    theirs_name: String::new(),
                    theirs,
                    ours: set_id.to_owned(),
                    ours_name: set.name.to_owned(),
                }),
            }
            continue;
        }
        match result {
            Ok(dry) => {
                let Some(listed) = live.get(&d.key) else {
                    continue;
                };
                // The object moved between the listing and the dry run (a controller bumped
                // an annotation, as the Deployment controller does after a rollout): compare
                // with the object as it is now, or the race would read as drift.
                let fresh = if version(&dry) != version(listed) {
                    let api_version = d.object["apiVersion"].as_str().unwrap_or_default();
                    let kind = d.object["kind"].as_str().unwrap_or_default();
                    cluster
                        .get(api_version, kind, &d.key.namespace, &d.key.name)
                        .await?
                } else {
                    None
                };
                let l = fresh.as_ref().unwrap_or(listed);
                if without_server_fields(&dry) == without_server_fields(l)
                    && change.secret_values_changed.is_empty()
                {
                    // The server would store exactly what it has: nothing to do.
                    change.action = Action::Unchanged;
                    change.diff = None;
                    change.drifted_fields.clear();
                } else if action != Action::Create {
                    change.diff = Some(server_diff(l, &dry));
                }
            }
            Err(ClusterError::Conflict { message, .. }) => change.conflict = Some(message),
            // A namespace or a CRD that this run creates first: nothing to validate against
            // yet (as with `kubectl diff`); the apply itself checks it. A namespace that
            // neither exists nor is created here is a gap: refused before any write.
            Err(e) if e.is_not_served() => {
                match why_unchecked(cluster, d, desired, &mut namespaces).await? {
                    Ok(reason) => change.unchecked = Some(reason),
                    Err(reason) => gaps.push(Gap {
                        rule: d.rule.clone(),
                        object: d.key.to_string(),
                        reason,
                    }),
                }
            }
            Err(e) if e.rejects_the_object() => {
                rejected.push(Rejection {
                    rule: d.rule.clone(),
                    object: d.key.to_string(),
                    message: e.server_message(),
                });
            }
            Err(e) => return Err(e.into()),
        }
    }
    plan.settle();
    if !rejected.is_empty() {
        return Err(RealizeError::Rejected(rejected));
    }
    if !gaps.is_empty() {
        return Err(RealizeError::Gaps(gaps));
    }
    if !claimed.is_empty() {
        let mut names: BTreeMap<String, String> = BTreeMap::new();
        for c in &mut claimed {
            if !names.contains_key(&c.theirs) {
                let name = parent_name(cluster, &c.theirs).await;
                names.insert(c.theirs.clone(), name);
            }
            c.theirs_name = names[&c.theirs].clone();
        }
        return Err(RealizeError::OtherSet(claimed));
    }
    Ok(())
}

/// Why the server could not dry-run `d` (404): `Ok` when this run closes the gap (its
/// namespace, or its kind's CRD, is created first), `Err` when it does not (a namespace that
/// does not exist and no rule creates). `namespaces` caches which namespaces exist.
async fn why_unchecked(
    cluster: &impl ClusterApi,
    d: &DesiredObject,
    desired: &[DesiredObject],
    namespaces: &mut BTreeMap<String, bool>,
) -> Result<Result<String, String>, RealizeError> {
    let ns = &d.key.namespace;
    if ns.is_empty() {
        return Ok(Ok("its kind's CRD is created by this run".to_owned()));
    }
    let created_here = desired
        .iter()
        .any(|o| o.key.group_kind == "Namespace" && &o.key.name == ns);
    if created_here {
        return Ok(Ok(format!("its namespace `{ns}` is created by this run")));
    }
    let exists = match namespaces.get(ns) {
        Some(e) => *e,
        None => {
            let e = cluster.get("v1", "Namespace", "", ns).await?.is_some();
            namespaces.insert(ns.clone(), e);
            e
        }
    };
    Ok(if exists {
        Ok("its kind's CRD is created by this run".to_owned())
    } else {
        Err(format!(
            "its namespace `{ns}` does not exist on the cluster and no rule of this set creates it"
        ))
    })
}

/// Whether a tool other than kiln owns fields of `live` through server-side apply (another
/// kiln set's fields go with the object when it is adopted).
fn has_other_appliers(live: &Value, ours: &str) -> bool {
    live.pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_some_and(|entries| {
            entries.iter().any(|e| {
                e["operation"] == "Apply"
                    && !crate::ownership::is_ours(e, ours)
                    && !crate::ownership::is_other_set(e, ours)
            })
        })
}

/// The parent Secret of set `id`, `` `ns/kiln-<project>-<env>` `` (it names the project), found
/// by its id label; a placeholder when it cannot be read.
async fn parent_name(cluster: &impl ClusterApi, id: &str) -> String {
    let selector = format!("{}={id}", crate::applyset::ID_LABEL);
    let listed = cluster
        .list(
            "Secret",
            Some("v1"),
            &selector,
            None,
            crate::api::ReadFrom::Cache,
        )
        .await;
    match listed.ok().and_then(|l| l.items.into_iter().next()) {
        Some(p) => format!(
            "`{}/{}`",
            p.pointer("/metadata/namespace")
                .and_then(Value::as_str)
                .unwrap_or_default(),
            p.pointer("/metadata/name")
                .and_then(Value::as_str)
                .unwrap_or_default()
        ),
        None => "(its parent was not found)".to_owned(),
    }
}

/// Whether `live` was applied from the same desired content as `d` (the desired-hash
/// annotation is taken before ownership labels, so two sets' copies of one object agree).
fn same_desired_hash(live: &Value, d: &DesiredObject) -> bool {
    live.pointer("/metadata/annotations")
        .and_then(|a| a.get(crate::applyset::DESIRED_HASH_ANNOTATION))
        .and_then(Value::as_str)
        == Some(d.hash.to_string().as_str())
}

/// What to do with an object that exists but is not a member of this set.
enum Existing {
    /// Take it over (it is in no set, or `--adopt`): the live object.
    Adopt(Value),
    /// Another set holds it: that set's id, and the live object.
    Claimed(String, Value),
}

async fn existing(
    cluster: &impl ClusterApi,
    d: &DesiredObject,
    set_id: &str,
    adopt: bool,
) -> Result<Option<Existing>, RealizeError> {
    let api_version = d.object["apiVersion"].as_str().unwrap_or_default();
    let kind = d.object["kind"].as_str().unwrap_or_default();
    let Some(live) = cluster
        .get(api_version, kind, &d.key.namespace, &d.key.name)
        .await?
    else {
        return Ok(None);
    };
    let theirs = live
        .pointer("/metadata/labels")
        .and_then(|l| l.get(PART_OF_LABEL))
        .and_then(Value::as_str)
        .filter(|other| *other != set_id);
    Ok(Some(match theirs {
        Some(other) if !adopt => Existing::Claimed(other.to_owned(), live),
        _ => Existing::Adopt(live),
    }))
}
