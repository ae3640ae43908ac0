//! Field ownership: each set applies with its own field manager (`kiln/<set id>`), so two sets
//! on one cluster never silently share or take each other's fields, and server-side apply
//! itself reports a clash as a conflict. Objects that other appliers left behind are migrated
//! into the set's manager once kiln owns them, as `kubectl`'s own client-side to server-side
//! upgrade does (csaupgrade): otherwise a field removed from the rules would stay, still owned
//! by the old manager.
//! - `kubectl apply` (client-side): the `kubectl-client-side-apply` manager (operation Update)
//!   and the `kubectl.kubernetes.io/last-applied-configuration` annotation;
//! - kiln before per-set managers: the manager `kiln` (operation Apply).

use serde_json::{json, Map, Value};

use crate::applyset::FIELD_MANAGER;

/// The manager `kubectl apply` (client-side) records its fields under.
pub const CLIENT_SIDE_APPLY_MANAGER: &str = "kubectl-client-side-apply";
/// The annotation client-side apply keeps its last applied object in.
pub const LAST_APPLIED_ANNOTATION: &str = "kubectl.kubernetes.io/last-applied-configuration";

/// The field manager of one set.
pub fn field_manager(set_id: &str) -> String {
    format!("{FIELD_MANAGER}/{set_id}")
}

/// Whether a managedFields entry is this set's own: its manager, or kiln's manager from before
/// per-set managers (until it is migrated).
pub fn is_ours(entry: &Value, ours: &str) -> bool {
    entry["operation"] == "Apply"
        && entry.get("subresource").is_none_or(|s| s == "")
        && (entry["manager"] == ours || entry["manager"] == FIELD_MANAGER)
}

/// The fields this set owns in `live` (the union of its entries), or `None`.
pub fn our_fields(live: &Value, ours: &str) -> Option<Value> {
    let entries = live.pointer("/metadata/managedFields")?.as_array()?;
    let mut merged: Option<Value> = None;
    for e in entries.iter().filter(|e| is_ours(e, ours)) {
        let fields = e.get("fieldsV1").cloned().unwrap_or_else(|| json!({}));
        merged = Some(match merged {
            None => fields,
            Some(mut m) => {
                union(&mut m, &fields);
                m
            }
        });
    }
    merged
}

/// `into` gains every path of `from` (fieldsV1 trees: maps of maps, leaves `{}`).
fn union(into: &mut Value, from: &Value) {
    if let (Value::Object(a), Value::Object(b)) = (into, from) {
        for (k, v) in b {
            match a.get_mut(k) {
                Some(existing) => union(existing, v),
                None => {
                    a.insert(k.clone(), v.clone());
                }
            }
        }
    }
}

/// The manager to dry-run `live` with: kiln's old shared manager while it still holds the
/// object alone (so the dry run sees what the apply will, after its migration), else `ours`.
pub fn dry_run_manager<'a>(live: &Value, ours: &'a str) -> &'a str {
    let entries = live
        .pointer("/metadata/managedFields")
        .and_then(Value::as_array);
    let has = |m: &str| {
        entries.is_some_and(|es| {
            es.iter()
                .any(|e| e["manager"] == m && e["operation"] == "Apply")
        })
    };
    if has(FIELD_MANAGER) && !has(ours) {
        FIELD_MANAGER
    } else {
        ours
    }
}

/// The merge patch that renames kiln's old shared manager to `ours` on an object it holds and
/// `ours` does not (the first apply after the upgrade), conditional on its resourceVersion;
/// `None` when there is nothing to rename.
pub fn rename_patch(live: &Value, ours: &str) -> Option<Value> {
    let entries = live.pointer("/metadata/managedFields")?.as_array()?;
    if dry_run_manager(live, ours) != FIELD_MANAGER {
        return None;
    }
    let renamed: Vec<Value> = entries
        .iter()
        .map(|e| {
            let mut e = e.clone();
            if e["manager"] == FIELD_MANAGER && e["operation"] == "Apply" {
                e["manager"] = json!(ours);
            }
            e
        })
        .collect();
    Some(json!({"metadata": {
        "resourceVersion": live.pointer("/metadata/resourceVersion")?.clone(),
        "managedFields": renamed,
    }}))
}

/// An entry whose fields become this set's once the object is its member: kiln's old shared
/// manager, another kiln set's manager (the object was adopted from that set), and
/// `kubectl apply` client-side.
fn is_legacy(entry: &Value, ours: &str) -> bool {
    let manager = entry["manager"].as_str().unwrap_or_default();
    let top_level = entry.get("subresource").is_none_or(|s| s == "");
    let kiln = manager == FIELD_MANAGER || manager.starts_with(&format!("{FIELD_MANAGER}/"));
    top_level
        && ((kiln && entry["operation"] == "Apply")
            || (manager == CLIENT_SIDE_APPLY_MANAGER && entry["operation"] == "Update"))
        && manager != ours
}

/// Whether an entry is another kiln set's (an object adopted from it gives its fields to the
/// adopting set, which takes them).
pub fn is_other_set(entry: &Value, ours: &str) -> bool {
    let manager = entry["manager"].as_str().unwrap_or_default();
    manager.starts_with(&format!("{FIELD_MANAGER}/")) && manager != ours
}

/// The merge patch that moves the legacy appliers' fields into `ours` and drops the
/// last-applied annotation, conditional on the object's resourceVersion (a patch that sets it
/// is refused with a conflict when the object moved); `None` when there is nothing to migrate,
/// or `ours` has no entry yet (it migrates after kiln's first apply).
pub fn migration_patch(live: &Value, ours: &str) -> Option<Value> {
    let entries = live.pointer("/metadata/managedFields")?.as_array()?;
    let annotation = live
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(LAST_APPLIED_ANNOTATION))
        .is_some();
    if !entries.iter().any(|e| is_legacy(e, ours)) && !annotation {
        return None;
    }
    let ours_at = entries
        .iter()
        .position(|e| e["manager"] == ours && e["operation"] == "Apply")?;
    let mut merged = entries[ours_at].clone();
    let mut fields = merged.get("fieldsV1").cloned().unwrap_or_else(|| json!({}));
    for e in entries.iter().filter(|e| is_legacy(e, ours)) {
        if let Some(f) = e.get("fieldsV1") {
            union(&mut fields, f);
        }
    }
    // The annotation goes, so nobody owns it.
    if let Some(Value::Object(a)) = fields
        .get_mut("f:metadata")
        .and_then(|m| m.get_mut("f:annotations"))
    {
        a.remove(&format!("f:{LAST_APPLIED_ANNOTATION}"));
    }
    merged["fieldsV1"] = fields;
    let kept: Vec<Value> = entries
        .iter()
        .enumerate()
        .filter(|(i, e)| *i != ours_at && !is_legacy(e, ours))
        .map(|(_, e)| e.clone())
        .chain(std::iter::once(merged))
        .collect();
    let mut metadata = Map::new();
    metadata.insert(
        "resourceVersion".into(),
        live.pointer("/metadata/resourceVersion")?.clone(),
    );
    metadata.insert("managedFields".into(), Value::Array(kept));
    if annotation {
        metadata.insert(
            "annotations".into(),
            json!({ LAST_APPLIED_ANNOTATION: null }),
        );
    }
    Some(json!({ "metadata": metadata }))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A managedFields entry.
    fn entry(manager: &str, operation: &str, fields: Value) -> Value {
        let mut m = Map::new();
        m.insert("manager".into(), json!(manager));
        m.insert("operation".into(), json!(operation));
        m.insert("apiVersion".into(), json!("v1"));
        m.insert("fieldsType".into(), json!("FieldsV1"));
        m.insert("fieldsV1".into(), fields);
        Value::Object(m)
    }

    const OURS: &str = "kiln/applyset-abc-v1";

    fn live(entries: Vec<Value>, annotated: bool) -> Value {
        let mut v =
            json!({"metadata": {"name": "a", "resourceVersion": "7", "managedFields": entries}});
        if annotated {
            v["metadata"]["annotations"] = json!({LAST_APPLIED_ANNOTATION: "{}"});
        }
        v
    }

    #[test]
    fn client_side_apply_fields_move_to_the_set_and_the_annotation_goes() {
        let csa = entry(
            CLIENT_SIDE_APPLY_MANAGER,
            "Update",
            json!({"f:data": {"f:a": {}, "f:b": {}}, "f:metadata": {"f:annotations": {".": {}, format!("f:{LAST_APPLIED_ANNOTATION}"): {}}}}),
        );
        let ours = entry(OURS, "Apply", json!({"f:data": {"f:a": {}}}));
        let other = entry("kube-controller-manager", "Update", json!({"f:status": {}}));
        let obj = live(vec![csa, other.clone(), ours], true);
        let patch = migration_patch(&obj, OURS).unwrap();
        assert_eq!(
            patch["metadata"]["resourceVersion"], "7",
            "conditional on the version seen"
        );
        let kept = patch["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(kept.len(), 2, "the client-side entry is gone: {kept:?}");
        assert_eq!(kept[0], other);
        assert_eq!(kept[1]["manager"], OURS);
        assert_eq!(kept[1]["fieldsV1"]["f:data"], json!({"f:a": {}, "f:b": {}}));
        assert!(kept[1]["fieldsV1"]["f:metadata"]["f:annotations"]
            .get(format!("f:{LAST_APPLIED_ANNOTATION}"))
            .is_none());
        assert_eq!(
            patch["metadata"]["annotations"][LAST_APPLIED_ANNOTATION],
            Value::Null
        );
        assert!(patch["metadata"]["annotations"]
            .as_object()
            .unwrap()
            .contains_key(LAST_APPLIED_ANNOTATION));
    }

    #[test]
    fn kiln_before_per_set_managers_counts_as_ours_until_migrated() {
        let legacy = entry(FIELD_MANAGER, "Apply", json!({"f:data": {"f:x": {}}}));
        let obj = live(vec![legacy.clone()], false);
        assert!(is_ours(&legacy, OURS));
        assert_eq!(
            our_fields(&obj, OURS).unwrap(),
            json!({"f:data": {"f:x": {}}})
        );
        assert!(
            migration_patch(&obj, OURS).is_none(),
            "not before the set's own entry exists"
        );
        let obj = live(
            vec![legacy, entry(OURS, "Apply", json!({"f:data": {"f:y": {}}}))],
            false,
        );
        let patch = migration_patch(&obj, OURS).unwrap();
        let kept = patch["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(
            kept[0]["fieldsV1"],
            json!({"f:data": {"f:x": {}, "f:y": {}}})
        );
    }

    #[test]
    fn the_old_shared_manager_is_renamed_before_the_first_apply() {
        let legacy = entry(FIELD_MANAGER, "Apply", json!({"f:data": {"f:x": {}}}));
        let obj = live(
            vec![legacy.clone(), entry("kubectl-edit", "Update", json!({}))],
            false,
        );
        assert_eq!(dry_run_manager(&obj, OURS), FIELD_MANAGER);
        let patch = rename_patch(&obj, OURS).unwrap();
        let entries = patch["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(entries[0]["manager"], OURS);
        assert_eq!(entries[1]["manager"], "kubectl-edit");
        let migrated = live(vec![entry(OURS, "Apply", json!({}))], false);
        assert_eq!(dry_run_manager(&migrated, OURS), OURS);
        assert!(rename_patch(&migrated, OURS).is_none());
    }

    #[test]
    fn another_sets_manager_is_not_ours_but_an_adopted_objects_fields_become_ours() {
        let theirs = entry(
            "kiln/applyset-other-v1",
            "Apply",
            json!({"f:data": {"f:a": {}}}),
        );
        assert!(!is_ours(&theirs, OURS) && is_other_set(&theirs, OURS));
        let obj = live(vec![theirs, entry(OURS, "Apply", json!({}))], false);
        let patch = migration_patch(&obj, OURS).unwrap();
        let kept = patch["metadata"]["managedFields"].as_array().unwrap();
        assert_eq!(kept.len(), 1);
        assert_eq!(kept[0]["fieldsV1"], json!({"f:data": {"f:a": {}}}));
        let clean = live(vec![entry(OURS, "Apply", json!({}))], false);
        assert!(migration_patch(&clean, OURS).is_none());
        assert_eq!(field_manager("applyset-abc-v1"), OURS);
    }
}
