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
use crate::error::{Claimed, RealizeError, Rejection};
use crate::plan::{Action, Plan};

fn version(obj: &Value) -> Option<&str> {
    obj.pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
}

/// Dry-runs the plan's candidates and settles them (see the module's doc).
pub async fn settle(
    cluster: &impl ClusterApi,
    plan: &mut Plan,
    desired: &[DesiredObject],
    live: &BTreeMap<ObjectKey, Value>,
    (set_id, adopt): (&str, bool),
) -> Result<(), RealizeError> {
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
                Existing::Claimed(theirs) => claimed.push(Claimed {
                    rule: d.rule.clone(),
                    object: d.key.to_string(),
                    theirs,
                    ours: set_id.to_owned(),
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
            // yet (as with `kubectl diff`); the apply itself checks it.
            Err(e) if e.is_not_served() => {}
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
    if !claimed.is_empty() {
        return Err(RealizeError::OtherSet(claimed));
    }
    Ok(())
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

/// What to do with an object that exists but is not a member of this set.
enum Existing {
    /// Take it over (it is in no set, or `--adopt`): the live object.
    Adopt(Value),
    /// Another set holds it: that set's id.
    Claimed(String),
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
        Some(other) if !adopt => Existing::Claimed(other.to_owned()),
        _ => Existing::Adopt(live),
    }))
}
