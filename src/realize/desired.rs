//! The desired state: every Kubernetes object the built artifacts hold, each attributed to the
//! rule that produced it, with kiln's ownership labels and annotations added.

use std::collections::{BTreeMap, HashSet};

use kiln_core::canonical::to_canonical_json;
use kiln_core::graph::RuleGraph;
use kiln_core::project::Project;
use kiln_core::{Digest, Tree};
use kiln_rules::objects::{identity, read_objects};
use serde_json::Value;

use super::applyset::{group_kind, DESIRED_HASH_ANNOTATION, PART_OF_LABEL, RULE_ANNOTATION};

/// Identifies an object in a cluster.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct ObjectKey {
    /// `Kind.group` (`Deployment.apps`, `Namespace`).
    pub group_kind: String,
    /// Namespace, empty for cluster-scoped objects.
    pub namespace: String,
    /// Name.
    pub name: String,
}

impl ObjectKey {
    /// The key of an object value.
    pub fn of(obj: &Value) -> Self {
        let (kind, name, ns) = identity(obj);
        Self {
            group_kind: group_kind(obj["apiVersion"].as_str().unwrap_or_default(), kind),
            namespace: ns.unwrap_or_default().to_owned(),
            name: name.to_owned(),
        }
    }
}

impl std::fmt::Display for ObjectKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        if self.namespace.is_empty() {
            write!(f, "{} {}", self.group_kind, self.name)
        } else {
            write!(f, "{} {}/{}", self.group_kind, self.namespace, self.name)
        }
    }
}

/// One object to realize.
#[derive(Debug, Clone)]
pub struct DesiredObject {
    /// Its identity.
    pub key: ObjectKey,
    /// The rule that produced it.
    pub rule: String,
    /// The rule's wave: 0 for rules without dependencies, else 1 + the deepest dependency's.
    pub wave: usize,
    /// The object with ownership labels and annotations.
    pub object: Value,
    /// blake3 of the object as built (before ownership metadata).
    pub hash: Digest,
}

/// Why the desired state could not be assembled.
#[derive(Debug, thiserror::Error)]
pub enum DesiredError {
    /// Two unrelated rules produce the same object with different content.
    #[error("rules `{a}` and `{b}` both produce {key} with different content, and neither depends on the other")]
    Conflict {
        /// The object.
        key: ObjectKey,
        /// One rule.
        a: String,
        /// The other.
        b: String,
    },
    /// An artifact's objects could not be read.
    #[error("the artifact of rule `{rule}` has unreadable objects: {message}")]
    Unreadable {
        /// The rule.
        rule: String,
        /// What went wrong.
        message: String,
    },
}

/// Collects the objects of every rule's artifact. When several rules hold the same object with
/// different content, a rule that (transitively) depends on the others wins (an overlay replaces
/// its base); identical copies (a bundle repeating its parts) stay with the first rule.
pub fn collect(
    project: &Project,
    graph: &RuleGraph,
    trees: &BTreeMap<String, std::sync::Arc<Tree>>,
    set_id: &str,
) -> Result<Vec<DesiredObject>, DesiredError> {
    let mut waves = vec![0usize; graph.len()];
    let mut ancestors: Vec<HashSet<usize>> = vec![HashSet::new(); graph.len()];
    for &n in graph.order() {
        let mut wave = 0;
        let mut anc = HashSet::new();
        for d in graph.dependencies(n) {
            wave = wave.max(waves[d.index()] + 1);
            anc.insert(d.index());
            anc.extend(ancestors[d.index()].iter().copied());
        }
        waves[n.index()] = wave;
        ancestors[n.index()] = anc;
    }
    let mut chosen: BTreeMap<ObjectKey, (usize, String, Value)> = BTreeMap::new();
    for &n in graph.order() {
        let r = &project.rules[graph.rule_index(n)];
        if !r.realize {
            continue;
        }
        let rule = r.name.to_string();
        let Some(tree) = trees.get(&rule) else {
            continue;
        };
        let objects = read_objects(tree).map_err(|message| DesiredError::Unreadable {
            rule: rule.clone(),
            message,
        })?;
        for obj in objects {
            let key = ObjectKey::of(&obj);
            match chosen.get(&key) {
                Some((other, other_rule, other_obj)) => {
                    if *other_obj == obj {
                        // A bundle repeating its part: the part's rule keeps it (and its wave).
                    } else if ancestors[n.index()].contains(other) {
                        chosen.insert(key, (n.index(), rule.clone(), obj));
                    } else {
                        return Err(DesiredError::Conflict {
                            key,
                            a: other_rule.clone(),
                            b: rule.clone(),
                        });
                    }
                }
                None => {
                    chosen.insert(key, (n.index(), rule.clone(), obj));
                }
            }
        }
    }
    Ok(chosen
        .into_iter()
        .map(|(key, (node, rule, mut obj))| {
            default_port_protocols(&mut obj);
            let hash = Digest::of(&to_canonical_json(&obj));
            let object = with_ownership(obj, set_id, &rule, &hash);
            DesiredObject {
                key,
                rule,
                wave: waves[node],
                object,
                hash,
            }
        })
        .collect())
}

/// Spells out `protocol: TCP` on Service and container ports that omit it. The API server
/// defaults it to the same value, but before 1.25 server-side apply rejects port lists whose
/// items omit a key field (kubernetes#105610).
fn default_port_protocols(obj: &mut Value) {
    fn fill(ports: Option<&mut Value>) {
        if let Some(Value::Array(items)) = ports {
            for p in items.iter_mut().filter_map(Value::as_object_mut) {
                p.entry("protocol").or_insert_with(|| Value::from("TCP"));
            }
        }
    }
    fn containers(spec: Option<&mut Value>) {
        let Some(spec) = spec else { return };
        for field in ["containers", "initContainers"] {
            if let Some(Value::Array(cs)) = spec.get_mut(field) {
                for c in cs {
                    fill(c.get_mut("ports"));
                }
            }
        }
    }
    match obj["kind"].as_str() {
        Some("Service") => fill(obj.pointer_mut("/spec/ports")),
        Some("Pod") => containers(obj.get_mut("spec")),
        Some("CronJob") => containers(obj.pointer_mut("/spec/jobTemplate/spec/template/spec")),
        _ => containers(obj.pointer_mut("/spec/template/spec")),
    }
}

fn with_ownership(mut obj: Value, set_id: &str, rule: &str, hash: &Digest) -> Value {
    let meta = obj["metadata"]
        .as_object_mut()
        .expect("checked objects have metadata");
    let labels = meta
        .entry("labels")
        .or_insert_with(|| Value::Object(Default::default()));
    labels[PART_OF_LABEL] = Value::from(set_id);
    let ann = meta
        .entry("annotations")
        .or_insert_with(|| Value::Object(Default::default()));
    ann[DESIRED_HASH_ANNOTATION] = Value::from(hash.to_string());
    ann[RULE_ANNOTATION] = Value::from(rule);
    obj
}

/// The apply order of kinds inside a rule: namespaces, CRDs, RBAC, config, storage, services,
/// workloads, autoscaling and disruption budgets, other built-in kinds, custom resources last.
pub fn kind_rank(group_kind: &str) -> u8 {
    let (kind, group) = super::applyset::split_group_kind(group_kind);
    match (kind, group) {
        ("Namespace", "") => 0,
        ("CustomResourceDefinition", _) => 1,
        ("ServiceAccount", "") | (_, "rbac.authorization.k8s.io") => 2,
        ("ConfigMap" | "Secret", "") => 3,
        ("PersistentVolume" | "PersistentVolumeClaim", "") | ("StorageClass", _) => 4,
        ("Service", "") => 5,
        ("Deployment" | "StatefulSet" | "DaemonSet" | "ReplicaSet", "apps")
        | ("Job" | "CronJob", "batch")
        | ("Pod", "") => 6,
        ("HorizontalPodAutoscaler", "autoscaling") | ("PodDisruptionBudget", "policy") => 7,
        (_, g) if is_builtin_group(g) => 8,
        _ => 9,
    }
}

fn is_builtin_group(group: &str) -> bool {
    group.is_empty() || !group.contains('.') || group.ends_with(".k8s.io")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kind_order() {
        let mut kinds = vec![
            "Canary.flagger.app",
            "Deployment.apps",
            "Service",
            "ConfigMap",
            "Namespace",
            "CustomResourceDefinition.apiextensions.k8s.io",
            "HorizontalPodAutoscaler.autoscaling",
            "Role.rbac.authorization.k8s.io",
            "NetworkPolicy.networking.k8s.io",
            "PersistentVolumeClaim",
        ];
        kinds.sort_by_key(|k| kind_rank(k));
        assert_eq!(
            kinds,
            [
                "Namespace",
                "CustomResourceDefinition.apiextensions.k8s.io",
                "Role.rbac.authorization.k8s.io",
                "ConfigMap",
                "PersistentVolumeClaim",
                "Service",
                "Deployment.apps",
                "HorizontalPodAutoscaler.autoscaling",
                "NetworkPolicy.networking.k8s.io",
                "Canary.flagger.app"
            ]
        );
    }
}
