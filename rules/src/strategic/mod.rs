//! Strategic merge patch, as kustomize applies a patch file (`patches:`), with the merge keys
//! of the Kubernetes schema ([`schema`], generated from its OpenAPI spec).
//!
//! - Maps merge recursively; `null` deletes a key.
//! - A list whose field has the `merge` strategy and a merge key (`containers` by `name`,
//!   `volumeMounts` by `mountPath`, `ports` by `containerPort`, Service `ports` by `port`, ...)
//!   merges item by item: the patch's items first, in its order, each merged into the base item
//!   with the same key, then the base items the patch does not name, in their order (what
//!   kustomize produces). A `merge` list of scalars (`finalizers`) is the patch's values, then
//!   the base values not among them. Every other list is replaced, and so is every list of a
//!   kind without a schema (custom resources), as in kustomize.
//! - Directives: `$patch: replace` (a map, or an item `{$patch: replace}` in a list) replaces
//!   instead of merging; `$patch: delete` deletes a map, or the list item with its key;
//!   `$patch: merge` is the default. These three are what kustomize implements. kiln also
//!   implements, as Kubernetes' own strategic merge defines them, the directives kustomize
//!   passes through unread: `$retainKeys: [..]` (after the merge, only those keys stay, for
//!   fields with the `retainKeys` strategy such as a volume's source or a Deployment's
//!   `strategy`), `$setElementOrder/FIELD: [..]` (the order of a merged list) and
//!   `$deleteFromPrimitiveList/FIELD: [..]` (values removed from a list of scalars).

pub mod schema;

use serde_json::{Map, Value};

use schema::Field;

/// Applies `patch` to `base` in place; `base`'s `apiVersion` and `kind` choose the schema.
pub fn strategic_merge(base: &mut Value, patch: &Value) {
    let ty = schema::kind_type(
        base["apiVersion"].as_str().unwrap_or_default(),
        base["kind"].as_str().unwrap_or_default(),
    );
    merge_value(base, patch, ty);
}

fn directive(m: &Map<String, Value>) -> Option<&str> {
    m.get("$patch").and_then(Value::as_str)
}

fn is_directive(key: &str) -> bool {
    key.starts_with('$')
}

/// Merges `patch` into `base` (of type `ty`, when known).
fn merge_value(base: &mut Value, patch: &Value, ty: Option<&'static str>) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => merge_map(b, p, ty),
        (b, p) => *b = stripped(p),
    }
}

fn merge_map(base: &mut Map<String, Value>, patch: &Map<String, Value>, ty: Option<&'static str>) {
    if directive(patch) == Some("replace") {
        let Value::Object(m) = stripped(&Value::Object(patch.clone())) else {
            unreachable!("a map stays a map")
        };
        *base = m;
        return;
    }
    for (k, pv) in patch.iter().filter(|(k, _)| !is_directive(k)) {
        if pv.is_null() {
            base.remove(k);
            continue;
        }
        let field = schema::field(ty, k);
        match (base.get_mut(k), pv) {
            (Some(Value::Object(_)), Value::Object(pm)) if directive(pm) == Some("delete") => {
                base.remove(k);
            }
            (None, Value::Object(pm)) if directive(pm) == Some("delete") => {}
            (Some(bv @ Value::Object(_)), Value::Object(_)) => merge_value(bv, pv, field.child),
            (Some(Value::Array(bl)), Value::Array(pl)) => merge_list(bl, pl, field),
            _ => {
                base.insert(k.clone(), stripped(pv));
            }
        }
    }
    for (k, pv) in patch {
        if let Some(name) = k.strip_prefix("$deleteFromPrimitiveList/") {
            if let (Some(Value::Array(bl)), Value::Array(gone)) = (base.get_mut(name), pv) {
                bl.retain(|v| !gone.contains(v));
            }
        }
    }
    for (k, pv) in patch {
        if let Some(name) = k.strip_prefix("$setElementOrder/") {
            if let (Some(Value::Array(bl)), Value::Array(order)) = (base.get_mut(name), pv) {
                set_element_order(bl, order, schema::field(ty, name).key);
            }
        }
    }
    if let Some(Value::Array(keep)) = patch.get("$retainKeys") {
        base.retain(|k, _| keep.iter().any(|name| name.as_str() == Some(k)));
    }
}

fn merge_list(base: &mut Vec<Value>, patch: &[Value], field: Field) {
    let replace = patch.iter().any(is_replace_item);
    let items = || patch.iter().filter(|i| !is_replace_item(i));
    let composite: Vec<&str> = field.map_keys().collect();
    let by_all_keys =
        !composite.is_empty() && items().all(|i| composite.iter().all(|k| i.get(*k).is_some()));
    match (field.merge, field.key) {
        (true, Some(_)) if !replace && by_all_keys => {
            merge_by_map_keys(base, patch, &composite, field.child);
        }
        (true, Some(key)) if !replace => merge_keyed(base, patch, key, field.child),
        (true, None) if !replace => {
            let mut out: Vec<Value> = patch.to_vec();
            out.extend(base.iter().filter(|v| !patch.contains(v)).cloned());
            *base = out;
        }
        _ => {
            *base = patch
                .iter()
                .filter(|i| i.as_object().is_none_or(|m| directive(m).is_none()))
                .map(stripped)
                .collect();
        }
    }
}

/// `{$patch: replace}`, the list item that makes a list replace instead of merging.
fn is_replace_item(item: &Value) -> bool {
    item.as_object()
        .is_some_and(|m| directive(m) == Some("replace") && m.len() == 1)
}

/// Items identified by several keys together (`x-kubernetes-list-map-keys`, when every item of
/// the patch has them all: a port's `containerPort` and `protocol`): the patch's new items
/// first, then the base items in their order, each merged with the patch item of the same keys
/// (what kustomize produces for such lists). A missing `protocol` matches `TCP`.
fn merge_by_map_keys(
    base: &mut Vec<Value>,
    patch: &[Value],
    keys: &[&str],
    child: Option<&'static str>,
) {
    // A port without a protocol is TCP, the server's default.
    let key = |item: &Value, k: &str| match item.get(k) {
        None if k == "protocol" => Some(Value::from("TCP")),
        v => v.cloned(),
    };
    let same = |a: &Value, b: &Value| keys.iter().all(|k| key(a, k) == key(b, k));
    let mut out: Vec<Value> = patch
        .iter()
        .filter(|p| !base.iter().any(|b| same(b, p)))
        .filter(|p| p.as_object().and_then(directive) != Some("delete"))
        .map(stripped)
        .collect();
    for b in base.drain(..) {
        match patch.iter().find(|p| same(&b, p)) {
            Some(p) if p.as_object().and_then(directive) == Some("delete") => {}
            Some(p) => {
                let mut merged = b;
                merge_value(&mut merged, p, child);
                out.push(merged);
            }
            None => out.push(b),
        }
    }
    *base = out;
}

/// The patch's items first (merged into the base item with the same key), then the base items
/// it does not name.
fn merge_keyed(base: &mut Vec<Value>, patch: &[Value], key: &str, child: Option<&'static str>) {
    let mut rest = std::mem::take(base);
    for item in patch {
        let Some(id) = item.get(key) else {
            base.push(stripped(item));
            continue;
        };
        let pos = rest.iter().position(|b| b.get(key) == Some(id));
        let delete = item.as_object().and_then(directive) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                rest.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => {
                let mut merged = rest.remove(i);
                merge_value(&mut merged, item, child);
                base.push(merged);
            }
            (None, false) => base.push(stripped(item)),
        }
    }
    base.extend(rest);
}

/// Orders `list` as `order` gives (items matched by `key`, or scalars by value); items that
/// `order` does not name keep their relative order after those it does.
fn set_element_order(list: &mut [Value], order: &[Value], key: Option<&str>) {
    let id = |v: &Value| -> Option<Value> {
        match key {
            Some(k) => v.get(k).cloned(),
            None => Some(v.clone()),
        }
    };
    let rank = |v: &Value| {
        id(v)
            .and_then(|i| order.iter().position(|o| id(o) == Some(i.clone())))
            .unwrap_or(order.len())
    };
    list.sort_by_key(rank);
}

/// `v` without directives, for content that is set rather than merged.
fn stripped(v: &Value) -> Value {
    match v {
        Value::Object(m) => Value::Object(
            m.iter()
                .filter(|(k, _)| !is_directive(k))
                .map(|(k, v)| (k.clone(), stripped(v)))
                .collect(),
        ),
        Value::Array(items) => Value::Array(
            items
                .iter()
                .filter(|i| i.as_object().is_none_or(|m| directive(m) != Some("delete")))
                .map(stripped)
                .collect(),
        ),
        other => other.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_containers_by_name() {
        let mut base = json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": {"containers": [
            {"name": "api", "image": "api:1", "env": [{"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]},
            {"name": "sidecar", "image": "proxy:1"}
        ]}}}});
        let patch = json!({"spec": {"template": {"spec": {"containers": [
            {"name": "api", "image": "api:2", "env": [{"name": "B", "value": "2"}]},
            {"name": "sidecar", "$patch": "delete"}
        ]}}}});
        strategic_merge(&mut base, &patch);
        assert_eq!(
            base,
            json!({"apiVersion": "apps/v1", "kind": "Deployment", "spec": {"template": {"spec": {"containers": [
                {"name": "api", "image": "api:2", "env": [{"name": "B", "value": "2"}, {"name": "A", "value": "1"}], "ports": [{"containerPort": 80}]}
            ]}}}})
        );
    }

    #[test]
    fn null_deletes_and_other_lists_replace() {
        let mut base = json!({"a": 1, "args": ["x", "y"], "m": {"k": 1}});
        strategic_merge(&mut base, &json!({"a": null, "args": ["z"], "m": {"j": 2}}));
        assert_eq!(base, json!({"args": ["z"], "m": {"k": 1, "j": 2}}));
    }

    mod properties {
        use super::*;
        use proptest::prelude::*;

        /// Maps of maps and scalars (no lists, no directives), as most patches are.
        fn maps() -> impl Strategy<Value = Value> {
            let leaf = prop_oneof![
                any::<i32>().prop_map(Value::from),
                "[a-z]{0,4}".prop_map(Value::from)
            ];
            leaf.prop_recursive(3, 24, 4, |inner| {
                proptest::collection::btree_map("[a-c]", inner, 0..4)
                    .prop_map(|m| Value::Object(m.into_iter().collect()))
            })
            .prop_filter("a map", Value::is_object)
        }

        proptest! {
            /// An empty patch changes nothing, a patch applied twice is applied once, and
            /// after it every value the patch sets is what the object holds.
            #[test]
            fn merge_laws(base in maps(), patch in maps()) {
                let mut same = base.clone();
                strategic_merge(&mut same, &json!({}));
                prop_assert_eq!(&same, &base);
                let mut once = base.clone();
                strategic_merge(&mut once, &patch);
                let mut twice = once.clone();
                strategic_merge(&mut twice, &patch);
                prop_assert_eq!(&twice, &once);
                fn holds(obj: &Value, patch: &Value) -> bool {
                    match (obj, patch) {
                        (Value::Object(o), Value::Object(p)) => p.iter().all(|(k, pv)| {
                            pv.is_null() || o.get(k).is_some_and(|ov| holds(ov, pv))
                        }),
                        (o, p) => o == p,
                    }
                }
                prop_assert!(holds(&once, &patch));
            }
        }
    }
}
