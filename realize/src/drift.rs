//! Drift: fields kiln sets that its field manager no longer owns, or whose live value no longer
//! says what kiln's does. Read from `metadata.managedFields`, which the LIST already returned.

use serde_json::Value;

use crate::ownership::{is_ours, our_fields};
use crate::quantity::quantity;

/// Fields the desired object sets that kiln's field manager no longer owns in `live`, or whose
/// live value differs from the desired one (a change some API paths make without moving
/// ownership, such as the scale subresource on older servers). Quantities compare by value
/// (`1000m` equals `1`).
pub fn unowned_fields(desired: &Value, live: &Value, ours: &str) -> Vec<String> {
    if live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
        .is_none()
    {
        return Vec::new();
    }
    let Some(fields) = our_fields(live, ours) else {
        return vec![".".to_owned()];
    };
    let fields = &fields;
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

/// Fields the desired object sets that another field manager took with an imperative write
/// (operation `Update`: `kubectl edit`, `patch`, `set image`, a controller): out-of-band
/// changes, which apply takes back. A manager that *applies* the same field is a co-owner, not
/// drift, and is not listed. Status is never listed.
pub fn taken_by_updates(desired: &Value, live: &Value, ours: &str) -> Vec<String> {
    let Some(entries) = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array)
    else {
        return Vec::new();
    };
    let mut out = Vec::new();
    for e in entries {
        if is_ours(e, ours)
            || e["manager"] == ours
            || e["operation"] != "Update"
            || e.get("subresource").and_then(Value::as_str) == Some("status")
        {
            continue;
        }
        let Some(Value::Object(fields)) = e.get("fieldsV1") else {
            continue;
        };
        let Value::Object(d) = desired else { continue };
        for (k, v) in d {
            let f = fields.get(&format!("f:{k}"));
            match (k.as_str(), f) {
                ("apiVersion" | "kind" | "status", _) | (_, None) => {}
                ("metadata", Some(f)) => {
                    for sub in ["labels", "annotations"] {
                        if let (Some(dv), Some(sf)) = (v.get(sub), f.get(format!("f:{sub}"))) {
                            owned_paths(dv, sf, &format!(".metadata.{sub}"), &mut out);
                        }
                    }
                }
                (_, Some(f)) => owned_paths(v, f, &format!(".{k}"), &mut out),
            }
        }
    }
    out.sort();
    out.dedup();
    out
}

/// Paths under `desired` that the fieldsV1 tree `fields` owns.
fn owned_paths(desired: &Value, fields: &Value, path: &str, out: &mut Vec<String>) {
    let Some(fmap) = fields.as_object() else {
        return;
    };
    if fmap.is_empty() {
        out.push(path.to_owned());
        return;
    }
    match desired {
        Value::Object(map) => {
            for (k, v) in map {
                if let Some(f) = fmap.get(&format!("f:{k}")) {
                    owned_paths(v, f, &format!("{path}.{k}"), out);
                }
            }
        }
        Value::Array(items) => {
            for (i, item) in items.iter().enumerate() {
                let sub = fmap.iter().find_map(|(k, v)| {
                    let key: Value = serde_json::from_str(k.strip_prefix("k:")?).ok()?;
                    let key = key.as_object()?;
                    key.iter()
                        .all(|(kf, kv)| item.get(kf) == Some(kv))
                        .then_some(v)
                });
                if let Some(sub) = sub {
                    // `.` alone: the item exists, its fields belong to others.
                    let rest: serde_json::Map<String, Value> = sub
                        .as_object()
                        .map(|m| {
                            m.iter()
                                .filter(|(k, _)| *k != ".")
                                .map(|(k, v)| (k.clone(), v.clone()))
                                .collect()
                        })
                        .unwrap_or_default();
                    if !rest.is_empty() {
                        owned_paths(item, &Value::Object(rest), &format!("{path}[{i}]"), out);
                    }
                }
            }
        }
        _ => {}
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

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn fields_taken_by_imperative_writes_are_found_and_co_owners_are_not() {
        let desired = json!({"apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": "web"},
            "spec": {"replicas": 2, "template": {"spec": {"containers": [
                {"name": "app", "image": "a:2"}, {"name": "side", "image": "s:1"}]}}}});
        let live = json!({"metadata": {"managedFields": [
            {"manager": "kiln", "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
            {"manager": "kubectl-patch", "operation": "Update",
             "fieldsV1": {"f:spec": {"f:replicas": {}, "f:template": {"f:spec": {"f:containers": {
                 "k:{\"name\":\"side\"}": {".": {}, "f:image": {}}}}}}}},
            {"manager": "other-tool", "operation": "Apply",
             "fieldsV1": {"f:spec": {"f:template": {"f:spec": {"f:containers": {
                 "k:{\"name\":\"app\"}": {"f:image": {}}}}}}}},
            {"manager": "kube-controller-manager", "operation": "Update", "subresource": "status",
             "fieldsV1": {"f:status": {"f:replicas": {}}}}
        ]}});
        assert_eq!(
            taken_by_updates(&desired, &live, "kiln/applyset-x-v1"),
            [".spec.replicas", ".spec.template.spec.containers[1].image"]
        );
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
}
