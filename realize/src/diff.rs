//! What an update changes, for the plan: a unified YAML diff of the fields kiln sets (Secret
//! values masked, kiln's bookkeeping dropped) and the names of changed Secret keys.

use serde_json::Value;

use crate::applyset::DESIRED_HASH_ANNOTATION;

/// Keys of a Secret whose stored value would change (names only, never values).
pub fn secret_changes(desired: &Value, live: &Value) -> Vec<String> {
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
        ann.remove(DESIRED_HASH_ANNOTATION);
    }
    v
}

/// `obj` without what the server keeps for itself: status, managed fields, resourceVersion,
/// generation, uid, creationTimestamp, selfLink.
pub fn without_server_fields(obj: &Value) -> Value {
    let mut v = obj.clone();
    if let Some(map) = v.as_object_mut() {
        map.remove("status");
    }
    if let Some(meta) = v.get_mut("metadata").and_then(Value::as_object_mut) {
        for k in [
            "managedFields",
            "resourceVersion",
            "generation",
            "uid",
            "creationTimestamp",
            "selfLink",
        ] {
            meta.remove(k);
        }
    }
    v
}

/// The unified diff from the live object to what the server's dry run says it would become,
/// as `kubectl diff --server-side` shows it: defaults on both sides, so only real changes
/// appear. Secret values are masked and kiln's hash annotation left out.
pub fn server_diff(live: &Value, dry_run: &Value) -> String {
    let old = kiln_rules::objects::to_yaml(&presentable(without_server_fields(live)));
    let new = kiln_rules::objects::to_yaml(&presentable(without_server_fields(dry_run)));
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header("live", "desired")
        .to_string()
}

/// The unified diff from the live object (restricted to what kiln sets) to the desired one.
pub fn diff(desired: &Value, live: &Value) -> String {
    let old = kiln_rules::objects::to_yaml(&presentable(project(desired, live)));
    let new = kiln_rules::objects::to_yaml(&presentable(desired.clone()));
    similar::TextDiff::from_lines(&old, &new)
        .unified_diff()
        .context_radius(3)
        .header("live", "desired")
        .to_string()
}
