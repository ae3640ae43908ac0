//! The strategic merge table: which fields of which Kubernetes types merge lists by a key, merge
//! primitive lists, or retain keys. Generated from the Kubernetes OpenAPI spec by
//! `scripts/gen-merge-keys` into `merge_keys.tsv` (see the script for its lines).

use std::collections::HashMap;
use std::sync::LazyLock;

/// How a field merges, and the type of its value (or of its list's items).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Field {
    /// The type of the value, when it leads to more fields with a strategy.
    pub child: Option<&'static str>,
    /// `x-kubernetes-patch-strategy` has `merge`.
    pub merge: bool,
    /// `x-kubernetes-patch-strategy` has `retainKeys`.
    pub retain_keys: bool,
    /// `x-kubernetes-patch-merge-key`: the key of a list's items.
    pub key: Option<&'static str>,
    /// `x-kubernetes-list-map-keys`, when there are several (`containerPort,protocol`).
    pub map_keys: Option<&'static str>,
}

impl Field {
    /// The several keys that together identify a list's items.
    pub fn map_keys(&self) -> impl Iterator<Item = &'static str> {
        self.map_keys.into_iter().flat_map(|k| k.split(','))
    }
}

struct Table {
    /// (group, kind) → [(version, type)].
    kinds: HashMap<(&'static str, &'static str), Vec<(&'static str, &'static str)>>,
    /// (type, field) → how it merges.
    fields: HashMap<(&'static str, &'static str), Field>,
}

static TABLE: LazyLock<Table> = LazyLock::new(|| parse(include_str!("merge_keys.tsv")));

fn dash(s: &'static str) -> Option<&'static str> {
    (s != "-").then_some(s)
}

fn parse(text: &'static str) -> Table {
    let mut kinds: HashMap<_, Vec<_>> = HashMap::new();
    let mut fields = HashMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        match line.split('\t').collect::<Vec<_>>().as_slice() {
            ["kind", group, version, kind, ty] => {
                kinds
                    .entry((*group, *kind))
                    .or_default()
                    .push((*version, *ty));
            }
            ["field", ty, field, child, strategy, key, map_keys] => {
                let field_info = Field {
                    child: dash(child),
                    merge: strategy.split(',').any(|s| s == "merge"),
                    retain_keys: strategy.split(',').any(|s| s == "retainKeys"),
                    key: dash(key),
                    map_keys: dash(map_keys),
                };
                fields.insert((*ty, *field), field_info);
            }
            _ => panic!("merge_keys.tsv: a line that is neither `kind` nor `field`: {line}"),
        }
    }
    Table { kinds, fields }
}

/// The type of objects of `api_version` and `kind`: the same version if the table has it, else
/// another version of the same group and kind (the table comes from one Kubernetes release;
/// a kind's versions share their merge keys). `None` for kinds without a schema (custom
/// resources), whose lists are replaced, as kustomize does.
pub fn kind_type(api_version: &str, kind: &str) -> Option<&'static str> {
    let (group, version) = match api_version.rsplit_once('/') {
        Some((g, v)) => (g, v),
        None => ("core", api_version),
    };
    let versions = TABLE.kinds.get(&(group, kind))?;
    versions
        .iter()
        .find(|(v, _)| *v == version)
        .or_else(|| versions.last())
        .map(|(_, ty)| *ty)
}

/// How `field` of `ty` merges; a field the table does not list merges plainly (maps by key,
/// lists replaced).
pub fn field(ty: Option<&str>, field: &str) -> Field {
    ty.and_then(|t| TABLE.fields.get(&(t, field)).copied())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pod_spec_fields_come_from_the_table() {
        let deployment = kind_type("apps/v1", "Deployment").unwrap();
        let spec = field(Some(deployment), "spec").child;
        let template = field(spec, "template").child;
        let pod = field(field(template, "spec").child, "containers");
        assert_eq!(pod.key, Some("name"));
        assert!(pod.merge);
        let volumes = field(field(template, "spec").child, "volumes");
        assert!(volumes.merge && volumes.retain_keys);
        let ports = field(pod.child, "ports");
        assert_eq!(ports.key, Some("containerPort"));
        assert_eq!(
            ports.map_keys().collect::<Vec<_>>(),
            ["containerPort", "protocol"]
        );
        assert_eq!(field(pod.child, "args"), Field::default());
    }

    #[test]
    fn other_versions_of_a_kind_stand_in_and_custom_kinds_have_none() {
        // The 1.20 spec has CronJob only as batch/v1beta1.
        assert!(kind_type("batch/v1", "CronJob").is_some());
        assert!(kind_type("v1", "Service").is_some());
        assert_eq!(kind_type("example.com/v1", "Pipeline"), None);
    }
}
