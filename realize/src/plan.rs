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

use serde::Serialize;
use serde_json::Value;

use super::desired::{DesiredObject, ObjectKey};

/// kiln's field manager.
pub const FIELD_MANAGER: &str = "kiln";
/// `--json` format version of a plan.
pub const PLAN_JSON_FORMAT: u32 = 1;

/// What happens to one object.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Action {
    /// Created.
    Create,
    /// Updated.
    Update,
    /// Re-applied to revert an out-of-band change.
    Drift,
    /// Deleted (pruned).
    Delete,
    /// Left alone.
    Unchanged,
}

/// One object's line in a plan.
#[derive(Debug, Clone, Serialize)]
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
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub drifted_fields: Vec<String>,
    /// Secret keys whose value changed; the values are never shown.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub secret_values_changed: Vec<String>,
    /// A member whose group-kind the parent does not list (a race, an older kiln, a crash):
    /// found only by `--find-orphans`, deleted only by `apply --prune-orphans`.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub orphan: bool,
    /// Apply wave (rule depth).
    #[serde(skip)]
    pub wave: usize,
}

impl Change {
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
#[derive(Debug, Clone, Serialize)]
pub struct Plan {
    /// Always [`PLAN_JSON_FORMAT`].
    pub format_version: u32,
    /// The ApplySet id.
    pub applyset: String,
    /// Counts per action.
    pub summary: BTreeMap<Action, usize>,
    /// Every object, changed ones first.
    pub changes: Vec<Change>,
}

impl Plan {
    /// Whether applying would write anything.
    pub fn has_changes(&self) -> bool {
        self.changes.iter().any(|c| c.action != Action::Unchanged)
    }
}

/// Compares desired and live objects. `live` holds the set's members as listed.
pub fn compute(set_id: &str, desired: &[DesiredObject], live: &BTreeMap<ObjectKey, Value>) -> Plan {
    let mut changes = Vec::new();
    for d in desired {
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
            wave: d.wave,
        };
        match live.get(&d.key) {
            None => change.action = Action::Create,
            Some(l) => {
                let live_hash = l
                    .pointer("/metadata/annotations")
                    .and_then(|a| a.get(super::applyset::DESIRED_HASH_ANNOTATION))
                    .and_then(Value::as_str);
                change.secret_values_changed = secret_changes(&d.object, l);
                if live_hash != Some(d.hash.to_string().as_str())
                    || !change.secret_values_changed.is_empty()
                {
                    change.action = Action::Update;
                    change.diff = Some(diff(&d.object, l));
                } else {
                    change.drifted_fields = unowned_fields(&d.object, l);
                    if !change.drifted_fields.is_empty() {
                        change.action = Action::Drift;
                        change.diff = Some(diff(&d.object, l));
                    }
                }
            }
        }
        changes.push(change);
    }
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
    for (key, l) in live {
        if desired_keys.contains(key) {
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
            .and_then(|a| a.get(super::applyset::RULE_ANNOTATION))
            .and_then(Value::as_str)
            .unwrap_or("?")
            .to_owned();
        changes.push(Change {
            action: Action::Delete,
            group_kind: key.group_kind.clone(),
            namespace: key.namespace.clone(),
            name: key.name.clone(),
            rule,
            diff: None,
            drifted_fields: Vec::new(),
            secret_values_changed: Vec::new(),
            orphan: false,
            wave: usize::MAX,
        });
    }
    changes.sort_by(|a, b| {
        (a.action, a.wave, &a.group_kind, &a.namespace, &a.name).cmp(&(
            b.action,
            b.wave,
            &b.group_kind,
            &b.namespace,
            &b.name,
        ))
    });
    let mut summary = BTreeMap::new();
    for c in &changes {
        *summary.entry(c.action).or_insert(0) += 1;
    }
    Plan {
        format_version: PLAN_JSON_FORMAT,
        applyset: set_id.to_owned(),
        summary,
        changes,
    }
}

fn secret_changes(desired: &Value, live: &Value) -> Vec<String> {
    if desired["kind"] != "Secret" || desired["apiVersion"] != "v1" {
        return Vec::new();
    }
    use base64::Engine as _;
    let empty = serde_json::Map::new();
    // What the desired object will store: `data`, plus `stringData` encoded (the server keeps
    // only `data`).
    let mut d = desired
        .get("data")
        .and_then(Value::as_object)
        .cloned()
        .unwrap_or_default();
    for (k, v) in desired
        .get("stringData")
        .and_then(Value::as_object)
        .unwrap_or(&empty)
    {
        let text = v.as_str().unwrap_or_default();
        d.insert(
            k.clone(),
            Value::from(base64::engine::general_purpose::STANDARD.encode(text)),
        );
    }
    if d.is_empty() {
        return Vec::new();
    }
    let l = live
        .get("data")
        .and_then(Value::as_object)
        .unwrap_or(&empty);
    let mut keys: Vec<String> = d
        .iter()
        .filter(|(k, v)| l.get(*k) != Some(v))
        .map(|(k, _)| k.clone())
        .collect();
    keys.extend(l.keys().filter(|k| !d.contains_key(*k)).cloned());
    keys.sort();
    keys
}

/// The live object restricted to the fields the desired object sets (lists taken whole), with
/// Secret values masked and kiln's bookkeeping annotations dropped.
fn project(desired: &Value, live: &Value) -> Value {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => {
            let mut out = serde_json::Map::new();
            for (k, dv) in d {
                if let Some(lv) = l.get(k) {
                    out.insert(k.clone(), project(dv, lv));
                }
            }
            Value::Object(out)
        }
        (_, l) => l.clone(),
    }
}

fn presentable(mut v: Value) -> Value {
    if v["kind"] == "Secret" {
        for field in ["data", "stringData"] {
            if let Some(map) = v.get_mut(field).and_then(Value::as_object_mut) {
                for val in map.values_mut() {
                    *val = Value::from("(hidden)");
                }
            }
        }
    }
    if let Some(ann) = v
        .pointer_mut("/metadata/annotations")
        .and_then(Value::as_object_mut)
    {
        ann.remove(super::applyset::DESIRED_HASH_ANNOTATION);
    }
    v
}

fn diff(desired: &Value, live: &Value) -> String {
    let old = kiln_rules::objects::to_yaml(&presentable(project(desired, live)));
    let new = kiln_rules::objects::to_yaml(&presentable(desired.clone()));
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header("live", "desired")
        .to_string()
}

/// Fields the desired object sets that kiln's field manager no longer owns in `live`, or whose
/// live value differs from the desired one (a change some API paths make without moving
/// ownership, such as the scale subresource on older servers). Quantities compare by value
/// (`1000m` equals `1`).
pub fn unowned_fields(desired: &Value, live: &Value) -> Vec<String> {
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let Some(fields) = entries
        .iter()
        .find(|e| e["manager"] == FIELD_MANAGER && e["operation"] == "Apply")
        .and_then(|e| e.get("fieldsV1"))
    else {
        return vec![".".to_owned()];
    };
    let mut out = Vec::new();
    if let Value::Object(d) = desired {
        for (k, v) in d {
            match k.as_str() {
                "apiVersion" | "kind" => {}
                // Write-only: the server folds it into `data`, compared by value above.
                "stringData" if desired["kind"] == "Secret" => {}
                "metadata" => {
                    for sub in ["labels", "annotations"] {
                        if let Some(dv) = v.get(sub) {
                            let f = fields
                                .get("f:metadata")
                                .and_then(|m| m.get(format!("f:{sub}")));
                            let lv = live.pointer(&format!("/metadata/{sub}"));
                            walk(dv, f, lv, &format!(".metadata.{sub}"), &mut out);
                        }
                    }
                }
                _ => walk(
                    v,
                    fields.get(format!("f:{k}")),
                    live.get(k),
                    &format!(".{k}"),
                    &mut out,
                ),
            }
        }
    }
    out
}

fn walk(
    desired: &Value,
    fields: Option<&Value>,
    live: Option<&Value>,
    path: &str,
    out: &mut Vec<String>,
) {
    let (Some(fields), Some(live)) = (fields, live) else {
        out.push(path.to_owned());
        return;
    };
    // An empty entry is a leaf: the field is owned whole (scalars, atomic maps such as selectors).
    if fields.as_object().is_some_and(serde_json::Map::is_empty) {
        if !equivalent(desired, live) {
            out.push(path.to_owned());
        }
        return;
    }
    match desired {
        Value::Object(map) => {
            for (k, v) in map {
                walk(
                    v,
                    fields.get(format!("f:{k}")),
                    live.get(k),
                    &format!("{path}.{k}"),
                    out,
                );
            }
        }
        Value::Array(items) => {
            let Some(fmap) = fields.as_object() else {
                return;
            };
            let keyed: Vec<(serde_json::Map<String, Value>, &Value)> = fmap
                .iter()
                .filter_map(|(k, v)| {
                    let key: Value = serde_json::from_str(k.strip_prefix("k:")?).ok()?;
                    Some((key.as_object()?.clone(), v))
                })
                .collect();
            if keyed.is_empty() {
                if !equivalent(desired, live) {
                    out.push(path.to_owned());
                }
                return;
            }
            let live_items = live.as_array().map(Vec::as_slice).unwrap_or_default();
            for (i, item) in items.iter().enumerate() {
                let matches = |key: &serde_json::Map<String, Value>, it: &Value| {
                    key.iter()
                        .all(|(kf, kv)| it.get(kf).is_none_or(|iv| iv == kv))
                        && key.keys().any(|kf| it.get(kf).is_some())
                };
                let found = keyed.iter().find(|(key, _)| matches(key, item));
                let live_item =
                    found.and_then(|(key, _)| live_items.iter().find(|l| matches(key, l)));
                match found {
                    Some((_, sub)) => {
                        walk(item, Some(sub), live_item, &format!("{path}[{i}]"), out)
                    }
                    None => out.push(format!("{path}[{i}]")),
                }
            }
        }
        _ => {
            if !equivalent(desired, live) {
                out.push(path.to_owned());
            }
        }
    }
}

/// Whether the live value says what the desired one says: every desired key present and
/// equivalent (the server may add defaults), lists item by item, numbers by value, quantities
/// by amount.
fn equivalent(desired: &Value, live: &Value) -> bool {
    match (desired, live) {
        (Value::Object(d), Value::Object(l)) => d
            .iter()
            .all(|(k, v)| l.get(k).is_some_and(|lv| equivalent(v, lv))),
        (Value::Array(d), Value::Array(l)) => {
            d.len() == l.len()
                && (d.iter().zip(l).all(|(a, b)| equivalent(a, b))
                    // Lists of objects some servers store reordered (HPA metrics on 1.20, which
                    // round-trip through autoscaling/v1): match them as a set. Lists of scalars
                    // (args, command) keep their order.
                    || (d.iter().all(Value::is_object) && same_items_in_any_order(d, l)))
        }
        (Value::Number(a), Value::Number(b)) => a.as_f64() == b.as_f64(),
        (a, b) if a == b => true,
        (a, b) => match (quantity(a), quantity(b)) {
            (Some(x), Some(y)) => (x - y).abs() <= 1e-9 * x.abs().max(1.0),
            _ => false,
        },
    }
}

fn same_items_in_any_order(desired: &[Value], live: &[Value]) -> bool {
    let mut used = vec![false; live.len()];
    desired.iter().all(|d| {
        let hit = live
            .iter()
            .enumerate()
            .find(|(i, l)| !used[*i] && equivalent(d, l))
            .map(|(i, _)| i);
        hit.map(|i| used[i] = true).is_some()
    })
}

/// A Kubernetes quantity (`100m`, `1.5Gi`, `2`, `1e3`) as a number.
fn quantity(v: &Value) -> Option<f64> {
    let s = match v {
        Value::String(s) => s.as_str(),
        Value::Number(n) => return n.as_f64(),
        _ => return None,
    };
    let split = s
        .find(|c: char| !(c.is_ascii_digit() || c == '.' || c == '+' || c == '-'))
        .unwrap_or(s.len());
    let (num, suffix) = s.split_at(split);
    let n: f64 = num.parse().ok()?;
    let factor = match suffix {
        "" => 1.0,
        "m" => 1e-3,
        "k" => 1e3,
        "M" => 1e6,
        "G" => 1e9,
        "T" => 1e12,
        "P" => 1e15,
        "E" => 1e18,
        "Ki" => 1024.0,
        "Mi" => 1024.0 * 1024.0,
        "Gi" => 1024.0 * 1024.0 * 1024.0,
        "Ti" => 1024f64.powi(4),
        "Pi" => 1024f64.powi(5),
        "Ei" => 1024f64.powi(6),
        e if e.starts_with(['e', 'E']) => 10f64.powi(e[1..].parse().ok()?),
        _ => return None,
    };
    Some(n * factor)
}

/// The plan as text for humans.
pub fn render(plan: &Plan) -> String {
    use std::fmt::Write as _;
    let mut out = String::new();
    for c in plan
        .changes
        .iter()
        .filter(|c| c.action != Action::Unchanged)
    {
        let sign = match c.action {
            Action::Create => "+",
            Action::Update => "~",
            Action::Drift => "!",
            Action::Delete => "-",
            Action::Unchanged => " ",
        };
        let key = c.key();
        let _ = writeln!(
            out,
            "{sign} {:<9} {key}  (rule `{}`)",
            format!("{:?}", c.action).to_lowercase(),
            c.rule
        );
        if c.orphan {
            let _ = writeln!(
                out,
                "    orphan: a member whose kind the ApplySet parent does not list"
            );
        }
        if !c.drifted_fields.is_empty() {
            let _ = writeln!(
                out,
                "    changed outside kiln: {}",
                c.drifted_fields.join(", ")
            );
        }
        for k in &c.secret_values_changed {
            let _ = writeln!(out, "    data.{k}: (value changed)");
        }
        if let Some(d) = &c.diff {
            for line in d.lines() {
                let _ = writeln!(out, "    {line}");
            }
        }
    }
    let count = |a| plan.summary.get(&a).copied().unwrap_or(0);
    let _ = writeln!(
        out,
        "plan: {} to create, {} to update, {} drifted, {} to delete, {} unchanged",
        count(Action::Create),
        count(Action::Update),
        count(Action::Drift),
        count(Action::Delete),
        count(Action::Unchanged)
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let p = compute("id", std::slice::from_ref(&d), &live);
        assert_eq!(p.changes[0].action, Action::Create);
        live.insert(d.key.clone(), live_from(&d, kiln_fields()));
        let p = compute("id", std::slice::from_ref(&d), &live);
        assert_eq!(p.changes[0].action, Action::Unchanged);
        assert!(!p.has_changes());
        let d3 = desired(deployment(3));
        let p = compute("id", std::slice::from_ref(&d3), &live);
        assert_eq!(p.changes[0].action, Action::Update);
        let diff = p.changes[0].diff.as_ref().unwrap();
        assert!(
            diff.contains("-  replicas: 2") && diff.contains("+  replicas: 3"),
            "{diff}"
        );
        let p = compute("id", &[], &live);
        assert_eq!(p.changes[0].action, Action::Delete);
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
        let p = compute("id", std::slice::from_ref(&d), &live);
        assert_eq!(p.changes[0].action, Action::Drift);
        assert_eq!(p.changes[0].drifted_fields, [".spec.replicas"]);
        let mut fields = kiln_fields();
        fields["f:spec"]["f:template"]["f:spec"]["f:containers"]["k:{\"name\":\"api\"}"]
            .as_object_mut()
            .unwrap()
            .remove("f:image");
        live.insert(d.key.clone(), live_from(&d, fields));
        let p = compute("id", std::slice::from_ref(&d), &live);
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
        let p = compute("id", std::slice::from_ref(&d), &live);
        assert_eq!(p.changes[0].drifted_fields, [".spec.replicas"]);
    }

    #[test]
    fn quantities_and_defaults_are_not_drift() {
        assert!(equivalent(&json!("1000m"), &json!("1")));
        assert!(equivalent(&json!("1536Mi"), &json!("1.5Gi")));
        assert!(!equivalent(&json!("1Gi"), &json!("1G")));
        assert!(equivalent(
            &json!({"a": 1}),
            &json!({"a": 1.0, "defaulted": true})
        ));
        assert!(!equivalent(&json!(["a", "b"]), &json!(["a"])));
        assert!(
            !equivalent(&json!(["a", "b"]), &json!(["b", "a"])),
            "scalar lists keep order"
        );
        assert!(equivalent(
            &json!([{"n": "cpu"}, {"n": "mem"}]),
            &json!([{"n": "mem"}, {"n": "cpu"}])
        ));
        assert!(!equivalent(
            &json!([{"n": "cpu"}, {"n": "cpu"}]),
            &json!([{"n": "mem"}, {"n": "cpu"}])
        ));
        assert!(!equivalent(&json!("api:1"), &json!("api:2")));
    }

    #[test]
    fn atomic_fields_are_owned_whole() {
        let d = desired(
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "metadata": {"name": "api", "namespace": "shop"},
                               "spec": {"selector": {"matchLabels": {"app": "api"}}}}),
        );
        let mut live = BTreeMap::new();
        live.insert(d.key.clone(), live_from(&d, json!({"f:metadata": {"f:annotations": {"f:kiln.dev/desired-hash": {}}}, "f:spec": {"f:selector": {}}})));
        let p = compute("id", std::slice::from_ref(&d), &live);
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
        let p = compute("id", std::slice::from_ref(&d), &live);
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
