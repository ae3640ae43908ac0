//! Strategic merge patch, the subset kustomize users rely on.
//!
//! Maps merge recursively and `null` deletes a key, as in a JSON merge patch. Lists of known
//! Kubernetes fields merge by their key instead of being replaced: `containers`,
//! `initContainers`, `ephemeralContainers`, `volumes`, `env`, `imagePullSecrets` by `name`;
//! `volumeMounts` by `mountPath`; `ports` by `containerPort` (or `port` for Services). A list
//! item `{"name": "x", "$patch": "delete"}` removes the item. Other lists are replaced.

use serde_json::Value;

fn merge_key(field: &str, items: &[Value]) -> Option<&'static str> {
    match field {
        "containers"
        | "initContainers"
        | "ephemeralContainers"
        | "volumes"
        | "env"
        | "imagePullSecrets" => Some("name"),
        "volumeMounts" => Some("mountPath"),
        "ports" => Some(if items.iter().any(|i| i.get("containerPort").is_some()) {
            "containerPort"
        } else {
            "port"
        }),
        _ => None,
    }
}

/// Applies `patch` to `base` in place.
pub fn strategic_merge(base: &mut Value, patch: &Value) {
    match (base, patch) {
        (Value::Object(b), Value::Object(p)) => {
            for (k, pv) in p {
                if pv.is_null() {
                    b.remove(k);
                    continue;
                }
                match (b.get_mut(k), pv) {
                    (Some(Value::Array(bl)), Value::Array(pl)) => {
                        let mut all = bl.clone();
                        all.extend(pl.iter().cloned());
                        match merge_key(k, &all) {
                            Some(key) => merge_list(bl, pl, key),
                            None => *bl = pl.clone(),
                        }
                    }
                    (Some(bv @ Value::Object(_)), Value::Object(_)) => strategic_merge(bv, pv),
                    _ => {
                        let mut v = pv.clone();
                        strip_directives(&mut v);
                        b.insert(k.clone(), v);
                    }
                }
            }
        }
        (b, p) => {
            *b = p.clone();
            strip_directives(b);
        }
    }
}

fn merge_list(base: &mut Vec<Value>, patch: &[Value], key: &str) {
    for item in patch {
        let Some(id) = item.get(key) else {
            base.push(item.clone());
            continue;
        };
        let pos = base.iter().position(|b| b.get(key) == Some(id));
        let delete = item.get("$patch").and_then(Value::as_str) == Some("delete");
        match (pos, delete) {
            (Some(i), true) => {
                base.remove(i);
            }
            (None, true) => {}
            (Some(i), false) => strategic_merge(&mut base[i], item),
            (None, false) => {
                let mut v = item.clone();
                strip_directives(&mut v);
                base.push(v);
            }
        }
    }
}

fn strip_directives(v: &mut Value) {
    match v {
        Value::Object(m) => {
            m.remove("$patch");
            m.values_mut().for_each(strip_directives);
        }
        Value::Array(items) => items.iter_mut().for_each(strip_directives),
        _ => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn merges_containers_by_name() {
        let mut base = json!({"spec": {"template": {"spec": {"containers": [
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
            json!({"spec": {"template": {"spec": {"containers": [
                {"name": "api", "image": "api:2", "env": [{"name": "A", "value": "1"}, {"name": "B", "value": "2"}], "ports": [{"containerPort": 80}]}
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
