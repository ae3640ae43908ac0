//! The plan: desired objects against live set members, as a value. Pure: no I/O.
//!
//! - **create**: desired, not live;
//! - **update**: live, but its `kiln.dev/desired-hash` differs (or, for a Secret, a value does);
//!   carries a unified YAML diff of the fields kiln sets;
//! - **drift**: the hash matches, but a field kiln sets is no longer owned by kiln's field
//!   manager: someone else (`kubectl scale`, `kubectl set image`, an edit) changed it;
//! - **unchanged**;
//! - **delete**: a live member of the set that is no longer desired (prune).
//!
//! Drift is read from `metadata.managedFields`, which the LIST already returned, so it costs no
//! request. Its blind spots: a change made by a manager that also calls itself `kiln`, or an
//! apply by another manager that sets the same value (shared ownership keeps kiln's) is not
//! drift; neither are fields kiln does not set.

use std::collections::{BTreeMap, HashSet};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::applyset::{DESIRED_HASH_ANNOTATION, RULE_ANNOTATION};
use crate::desired::{DesiredObject, ObjectKey};
use crate::diff::{diff, secret_changes};
use crate::drift::{taken_by_updates, unowned_fields};

pub use crate::applyset::FIELD_MANAGER;
/// `--json` format version of a plan.
pub const PLAN_JSON_FORMAT: u32 = 1;

/// What happens to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Created.
    Create,
    /// Exists, but in no kiln set (made by `kubectl apply`, by hand): taken over, its fields
    /// moved to kiln's field manager.
    Adopt,
    /// Updated.
    Update,
    /// Re-applied to revert an out-of-band change.
    Drift,
    /// Deleted (pruned).
    Delete,
    /// Left alone.
    Unchanged,
}

/// One object's line in a plan. It reads back from its JSON (a saved plan's review text is
/// rendered from it), less the fields that JSON leaves out.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Change {
    /// What happens.
    pub action: Action,
    /// `Kind.group`.
    pub group_kind: String,
    /// Namespace (empty for cluster-scoped).
    pub namespace: String,
    /// Name.
    pub name: String,
    /// The rule that produces it (for deletes: the rule that produced it last).
    pub rule: String,
    /// Unified YAML diff of the fields kiln sets (updates). Secret values never appear.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub diff: Option<String>,
    /// Fields someone else took over (drift), as paths.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub drifted_fields: Vec<String>,
    /// Secret keys whose value changed; the values are never shown.
    #[serde(skip_serializing_if = "Vec::is_empty", default)]
    pub secret_values_changed: Vec<String>,
    /// A member whose group-kind the parent does not list (a race, an older kiln, a crash):
    /// found only by `--find-orphans`, deleted only by `apply --prune-orphans`.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub orphan: bool,
    /// For an instance (`--var`): the base set that owns this object, identical in both; the
    /// instance refers to it and leaves it alone (never writes or deletes it).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub shared_with: Option<String>,
    /// Why the server could not dry-run it: its namespace or its kind's CRD is created by this
    /// run (the apply checks it when it is written).
    #[serde(skip_serializing_if = "Option::is_none", default)]
    pub unchecked: Option<String>,
    /// The server's dry run found fields another field manager owns: its message, naming
    /// the manager and the fields. Apply refuses it without `--force-conflicts`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub conflict: Option<String>,
    /// Apply wave (rule depth).
    #[serde(skip)]
    pub wave: usize,
    /// The live object has a health gate it does not pass yet (a rollout or Job still running,
    /// as an interrupted apply leaves it): what apply waits for, even when it writes nothing.
    /// An observation, not an action: a saved plan does not record it.
    #[serde(skip)]
    pub not_ready: Option<&'static str>,
    /// The live object's `resourceVersion` when planned (saved plans check it before apply).
    #[serde(skip)]
    pub live_version: Option<String>,
    /// The live object's `uid` when planned: a prune deletes only that incarnation.
    #[serde(skip)]
    pub live_uid: Option<String>,
}

impl Change {
    /// Whether writing it takes fields back from whoever changed them out of band (drift, or
    /// an update of an object that also drifted): such a write forces ownership.
    pub fn takes_back(&self) -> bool {
        matches!(self.action, Action::Drift | Action::Adopt) || !self.drifted_fields.is_empty()
    }

    /// The object's key.
    pub fn key(&self) -> ObjectKey {
        ObjectKey {
            group_kind: self.group_kind.clone(),
            namespace: self.namespace.clone(),
            name: self.name.clone(),
        }
    }
}

/// A whole plan.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    /// Always [`PLAN_JSON_FORMAT`].
    pub format_version: u32,
    /// The ApplySet id.
    pub applyset: String,
    /// Counts per action.
    pub summary: BTreeMap<Action, usize>,
    /// Every object, changed ones first.
    pub changes: Vec<Change>,
    /// The run covers only some rules (`--rule`): nothing is pruned, and the parent keeps
    /// what it lists.
    #[serde(skip_serializing_if = "std::ops::Not::not", default)]
    pub partial: bool,
}

impl Plan {
    /// Whether applying would write anything.
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::Unchanged)
    }

    /// Keeps only the changes of `rules` (a destroy scoped with `--rule`): the plan becomes
    /// partial, so the parent stays and keeps listing the rest. Gives how many changes were
    /// left out.
    pub fn keep_rules(&mut self, rules: &std::collections::BTreeSet<String>) -> usize {
        let before = self.changes.len();
        self.changes.retain(|c| rules.contains(&c.rule));
        self.partial = true;
        self.settle();
        before - self.changes.len()
    }

    /// Counts the actions again (after the dry runs settled some) and keeps changes first.
    pub fn settle(&mut self) {
        self.changes.sort_by(|a, b| {
            (a.action, a.wave, &a.group_kind, &a.namespace, &a.name).cmp(&(
                b.action,
                b.wave,
                &b.group_kind,
                &b.namespace,
                &b.name,
            ))
        });
        self.summary.clear();
        for c in &self.changes {
            *self.summary.entry(c.action).or_insert(0) += 1;
        }
    }
}

/// Compares desired and live objects. `live` holds the set's members as listed. With
/// `partial` (the run covers only some rules, `--rule`), live members that are not desired are
/// left alone: nothing is pruned.
pub fn compute(
    set_id: &str,
    desired: &[DesiredObject],
    live: &BTreeMap<ObjectKey, Value>,
    partial: bool,
) -> Plan {
    let manager = crate::ownership::field_manager(set_id);
    let mut changes: Vec<Change> = desired
        .iter()
        .map(|d| change_for(d, live.get(&d.key), &manager))
        .collect();
    if !partial {
        changes.extend(prunes(desired, live));
    }
    let mut plan = Plan {
        format_version: PLAN_JSON_FORMAT,
        applyset: set_id.to_owned(),
        summary: BTreeMap::new(),
        changes,
        partial,
    };
    plan.settle();
    plan
}

/// What happens to one desired object, given its live member (if any).
fn change_for(d: &DesiredObject, live: Option<&Value>, manager: &str) -> Change {
    let mut change = Change {
        action: Action::Unchanged,
        group_kind: d.key.group_kind.clone(),
        namespace: d.key.namespace.clone(),
        name: d.key.name.clone(),
        rule: d.rule.clone(),
        diff: None,
        drifted_fields: Vec::new(),
        secret_values_changed: Vec::new(),
        orphan: false,
        shared_with: None,
        unchecked: None,
        conflict: None,
        wave: d.wave,
        not_ready: live
            .filter(|l| !crate::health::is_ready(l))
            .and_then(crate::health::condition),
        live_version: live
            .and_then(|l| l.pointer("/metadata/resourceVersion"))
            .and_then(Value::as_str)
            .map(str::to_owned),
        live_uid: live
            .and_then(|l| l.pointer("/metadata/uid"))
            .and_then(Value::as_str)
            .map(str::to_owned),
    };
    let Some(l) = live else {
        change.action = Action::Create;
        return change;
    };
    let live_hash = l
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(DESIRED_HASH_ANNOTATION))
        .and_then(Value::as_str);
    change.secret_values_changed = secret_changes(&d.object, l);
    // Fields another controller owns are never drift (see `desired::yield_to_controllers`).
    let ours = |fields: Vec<String>| -> Vec<String> {
        fields
            .into_iter()
            .filter(|f| {
                !d.controller_owned.iter().any(|p| {
                    let p = format!(".{p}");
                    *f == p || f.starts_with(&format!("{p}."))
                })
            })
            .collect()
    };
    if live_hash != Some(d.hash.to_string().as_str()) || !change.secret_values_changed.is_empty() {
        change.action = Action::Update;
        // Out-of-band changes to fields kiln sets are taken back in the same write.
        change.drifted_fields = ours(taken_by_updates(&d.object, l, manager));
        change.diff = Some(diff(&d.object, l));
    } else {
        change.drifted_fields = ours(unowned_fields(&d.object, l, manager));
        if !change.drifted_fields.is_empty() {
            change.action = Action::Drift;
            change.diff = Some(diff(&d.object, l));
        }
    }
    change
}

/// Deletions: live members no longer desired.
fn prunes(desired: &[DesiredObject], live: &BTreeMap<ObjectKey, Value>) -> Vec<Change> {
    let desired_keys: HashSet<&ObjectKey> = desired.iter().map(|d| &d.key).collect();
    // The same object under another spelling of its scope (a namespace on a cluster-scoped
    // object, or none on a namespaced one) is never pruned: scopes are settled from discovery
    // before planning, so this only guards against a bug deleting a live, desired object.
    let named: HashSet<(&str, &str)> = desired
        .iter()
        .map(|d| (d.key.group_kind.as_str(), d.key.name.as_str()))
        .collect();
    let named_without_namespace: HashSet<(&str, &str)> = desired
        .iter()
        .filter(|d| d.key.namespace.is_empty())
        .map(|d| (d.key.group_kind.as_str(), d.key.name.as_str()))
        .collect();
    let mut deletions = Vec::new();
    for (key, l) in live {
        if desired_keys.contains(key) {
            continue;
        }
        // Already being deleted (a namespace draining, finalizers running): deleting it again
        // changes nothing, and the plan would never come clean while it drains.
        if l.pointer("/metadata/deletionTimestamp").is_some() {
            continue;
        }
        let gk_name = (key.group_kind.as_str(), key.name.as_str());
        if (key.namespace.is_empty() && named.contains(&gk_name))
            || named_without_namespace.contains(&gk_name)
        {
            continue;
        }
        let rule = l
            .pointer("/metadata/annotations")
            .and_then(|a| a.get(RULE_ANNOTATION))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        deletions.push(Change {
            action: Action::Delete,
            group_kind: key.group_kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            rule,
            diff: None,
            drifted_fields: Vec::new(),
            secret_values_changed: Vec::new(),
            orphan: false,
            shared_with: None,
            unchecked: None,
            conflict: None,
            wave: usize::MAX,
            not_ready: None,
            live_version: l
                .pointer("/metadata/resourceVersion")
                .and_then(Value::as_str)
                .map(str::to_owned),
            live_uid: l
                .pointer("/metadata/uid")
                .and_then(Value::as_str)
                .map(str::to_owned),
        });
    }
    deletions
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::render::render;
    use kiln_core::Digest;
    use serde_json::json;

    fn desired(obj: Value) -> DesiredObject {
        let hash = Digest::of(obj.to_string().as_bytes());
        let mut o = obj;
        o["metadata"]["annotations"] =
            json!({super::super::applyset::DESIRED_HASH_ANNOTATION: hash.to_string()});
        DesiredObject {
            key: ObjectKey::of(&o),
            rule: "r".into(),
            wave: 0,
            object: o,
            hash,
            controller_owned: Vec::new(),
        }
    }

    fn deployment(replicas: i64) -> Value {
        json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "shop"},
               "spec": {"replicas": replicas, "template": {"spec": {"containers": [{"name": "api", "image": "api:1"}]}}}})
    }

    fn live_from(d: &DesiredObject, managed: Value) -> Value {
        let mut l = d.object.clone();
        l["metadata"]["managedFields"] =
            json!([{"manager": "kiln", "operation": "Apply", "fieldsV1": managed}]);
        l
    }

    fn kiln_fields() -> Value {
        json!({"f:metadata": {"f:annotations": {"f:kiln.dev/desired-hash": {}}},
               "f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {"k:{\"name\":\"api\"}": {".": {}, "f:image": {}, "f:name": {}}}}}}})
    }

    #[test]
    fn create_unchanged_update_delete() {
        let d = desired(deployment(2));
        let mut live = BTreeMap::new();
        let p = compute("id", std::slice::from_ref(&d), &live, false);
        assert_eq!(p.changes[0].action, Action::Create);
        live.insert(d.key.clone(), live_from(&d, kiln_fields()));
        let p = compute("id", std::slice::from_ref(&d), &live, false);
        assert_eq!(p.changes[0].action, Action::Unchanged);
        assert!(!p.has_changes());
        let d3 = desired(deployment(3));
        let p = compute("id", std::slice::from_ref(&d3), &live, false);
        assert_eq!(p.changes[0].action, Action::Update);
        let diff = p.changes[0].diff.as_ref().unwrap();
        assert!(
            diff.contains("-  replicas: 2") && diff.contains("+  replicas: 3"),
            "{diff}"
        );
        let p = compute("id", &[], &live, false);
        assert_eq!(p.changes[0].action, Action::Delete);
        // A member that is already terminating is not deleted again.
        let terminating = live.values_mut().next().unwrap();
        terminating["metadata"]["deletionTimestamp"] = Value::from("2026-12-01T00:00:00Z");
        let p = compute("id", &[], &live, false);
        assert!(p.changes.is_empty(), "{:?}", p.changes);
    }

    #[test]
    fn drift_when_another_manager_took_a_field() {
        let d = desired(deployment(2));
        let mut fields = kiln_fields();
        fields["f:spec"]
            .as_object_mut()
            .unwrap()
            .remove("f:replicas");
        let mut live = BTreeMap::new();
        live.insert(d.key.clone(), live_from(&d, fields));
        let p = compute("id", std::slice::from_ref(&d), &live, false);
        assert_eq!(p.changes[0].action, Action::Drift);
        assert_eq!(p.changes[0].drifted_fields, [".spec.replicas"]);
        let mut fields = kiln_fields();
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"api\"}"]
            .as_object_mut()
            .unwrap()
            .remove("f:image");
        live.insert(d.key.clone(), live_from(&d, fields));
        let p = compute("id", std::slice::from_ref(&d), &live, false);
        assert_eq!(
            p.changes[0].drifted_fields,
            [".spec.template.spec.containers[0].image"]
        );
    }

    #[test]
    fn value_changes_without_ownership_changes_are_drift() {
        let d = desired(deployment(2));
        let mut live = BTreeMap::new();
        let mut l = live_from(&d, kiln_fields());
        l["spec"]["replicas"] = json!(7);
        live.insert(d.key.clone(), l);
        let p = compute("id", std::slice::from_ref(&d), &live, false);
        assert_eq!(p.changes[0].drifted_fields, [".spec.replicas"]);
    }

    #[test]
    fn atomic_fields_are_owned_whole() {
        let d = desired(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "shop"},
                               "spec": {"selector": {"matchLabels": {"app": "api"}}}}),
        );
        let mut live = BTreeMap::new();
        live.insert(d.key.clone(), live_from(&d, json!({"f:metadata": {"f:annotations": {"f:kiln.dev/desired-hash": {}}}, "f:spec": {"f:selector": {}}})));
        let p = compute("id", std::slice::from_ref(&d), &live, false);
        assert_eq!(
            p.changes[0].action,
            Action::Unchanged,
            "{:?}",
            p.changes[0].drifted_fields
        );
    }

    #[test]
    fn secret_values_never_appear() {
        let obj = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "db", "namespace": "shop"}, "data": {"password": "bmV3LXNlY3JldA=="}});
        let d = desired(obj);
        let mut l = d.object.clone();
        l["data"]["password"] = json!("b2xkLXNlY3JldA==");
        let mut live = BTreeMap::new();
        live.insert(d.key.clone(), l);
        let p = compute("id", std::slice::from_ref(&d), &live, false);
        assert_eq!(p.changes[0].action, Action::Update);
        assert_eq!(p.changes[0].secret_values_changed, ["password"]);
        let text = render(&p) + &serde_json::to_string(&p).unwrap();
        assert!(text.contains("(value changed)"));
        for secret in [
            "bmV3LXNlY3JldA",
            "b2xkLXNlY3JldA",
            "new-secret",
            "old-secret",
            "bmV3",
            "b2xk",
        ] {
            assert!(!text.contains(secret), "{secret} leaked: {text}");
        }
    }
}
