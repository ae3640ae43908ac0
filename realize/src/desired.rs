//! The desired state: every Kubernetes object the built artifacts hold, each attributed to the
//! rule that produced it, with kiln's ownership labels and annotations added.

use std::collections::{BTreeMap, HashSet};

use kiln_core::canonical::to_canonical_json;
use kiln_core::graph::RuleGraph;
use kiln_core::project::Project;
use kiln_core::{Digest, Tree};
use kiln_rules::k8s::K8sObject;
use kiln_rules::objects::{identity, read_object_files};
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
    /// blake3 of the object as built (before ownership metadata), without the fields that
    /// other controllers own.
    pub hash: Digest,
    /// Fields another controller owns (`spec.replicas` of an HPA's or a Flagger Canary's
    /// target, or those named in [`CONTROLLER_OWNED_ANNOTATION`]): set when kiln creates the
    /// object, then left to that controller (see [`yield_to_controllers`]).
    pub controller_owned: Vec<String>,
}

/// An annotation naming fields other controllers own, as dotted paths separated by commas
/// (`kiln.dev/controller-owned: "spec.replicas,spec.template.metadata.annotations"`), like
/// Argo CD's `ignoreDifferences`: kiln sets them on create and never takes them back.
pub const CONTROLLER_OWNED_ANNOTATION: &str = "kiln.dev/controller-owned";

/// Kinds whose objects scale another object, and where they name it.
const SCALERS: [(&str, &str); 2] = [
    (
        "HorizontalPodAutoscaler.autoscaling",
        "/spec/scaleTargetRef",
    ),
    ("Canary.flagger.app", "/spec/targetRef"),
];

/// The objects that an HPA or a Flagger Canary of the set scales.
fn scaled_targets<'a>(
    objects: impl Iterator<Item = (&'a ObjectKey, &'a Value)>,
) -> HashSet<ObjectKey> {
    let mut out = HashSet::new();
    for (key, obj) in objects {
        let Some((_, pointer)) = SCALERS.iter().find(|(gk, _)| *gk == key.group_kind) else {
            continue;
        };
        let Some(target) = obj.pointer(pointer) else {
            continue;
        };
        let (Some(kind), Some(name)) = (target["kind"].as_str(), target["name"].as_str()) else {
            continue;
        };
        let api_version = target["apiVersion"].as_str().unwrap_or("apps/v1");
        out.insert(ObjectKey {
            group_kind: group_kind(api_version, kind),
            namespace: key.namespace.clone(),
            name: name.to_owned(),
        });
    }
    out
}

/// The dotted paths of `CONTROLLER_OWNED_ANNOTATION` on `obj`.
fn annotated_paths(obj: &Value) -> Vec<String> {
    obj.pointer("/metadata/annotations")
        .and_then(|a| a.get(CONTROLLER_OWNED_ANNOTATION))
        .and_then(Value::as_str)
        .map(|s| {
            s.split(',')
                .map(str::trim)
                .filter(|p| !p.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

fn pointer_of(dotted: &str) -> String {
    format!("/{}", dotted.replace('.', "/"))
}

/// `obj` without the fields at `paths`.
fn without(obj: &Value, paths: &[String]) -> Value {
    let mut v = obj.clone();
    for p in paths {
        let pointer = pointer_of(p);
        if let Some((parent, field)) = pointer.rsplit_once('/') {
            if let Some(Value::Object(m)) = v.pointer_mut(parent) {
                m.remove(field);
            }
        }
    }
    v
}

/// For objects that exist: the controller-owned fields take their live values (or go when the
/// live object has none), so kiln neither reverts a controller nor resets what it owns. An
/// object kiln creates keeps the values of its rules.
pub fn yield_to_controllers(desired: &mut [DesiredObject], live: &BTreeMap<ObjectKey, Value>) {
    for d in desired
        .iter_mut()
        .filter(|d| !d.controller_owned.is_empty())
    {
        let Some(l) = live.get(&d.key) else { continue };
        for p in &d.controller_owned {
            let pointer = pointer_of(p);
            let Some((parent, field)) = pointer.rsplit_once('/') else {
                continue;
            };
            let live_value = l.pointer(&pointer).cloned();
            if let Some(Value::Object(m)) = d.object.pointer_mut(parent) {
                match live_value {
                    Some(v) => {
                        m.insert(field.to_owned(), v);
                    }
                    None => {
                        m.remove(field);
                    }
                }
            }
        }
    }
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

/// Whether a kind's objects live in a namespace, as API discovery (or a CRD of the project) says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Namespaced objects.
    Namespaced,
    /// Cluster-scoped objects: a namespace on them is meaningless.
    Cluster,
}

/// One object as a rule's artifact holds it, before scope and ownership are settled.
#[derive(Debug, Clone)]
pub struct RawObject {
    /// The rule's node index in the graph.
    node: usize,
    /// The rule.
    pub rule: String,
    /// The artifact file it was read from (`objects/…`).
    pub path: String,
    /// The object, checked.
    pub object: K8sObject,
}

impl RawObject {
    /// An object of the rule at graph node `node`.
    #[cfg(test)]
    pub(crate) fn new(node: usize, rule: &str, object: Value) -> Self {
        Self {
            node,
            rule: rule.to_owned(),
            path: String::new(),
            object: K8sObject::check(object).expect("test objects are valid"),
        }
    }

    /// `apiVersion` and `kind`.
    pub fn type_meta(&self) -> (&str, &str) {
        (self.object.api_version(), self.object.kind())
    }
}

/// Reads the objects of every realized rule's artifact, in DAG order.
pub fn read(
    project: &Project,
    graph: &RuleGraph,
    trees: &BTreeMap<String, std::sync::Arc<Tree>>,
) -> Result<Vec<RawObject>, DesiredError> {
    let mut out = Vec::new();
    for &n in graph.order() {
        let r = &project[graph.rule_index(n)];
        if !r.realize {
            continue;
        }
        let rule = r.name.to_string();
        let Some(tree) = trees.get(&rule) else {
            continue;
        };
        let objects = read_object_files(tree).map_err(|e| DesiredError::Unreadable {
            rule: rule.clone(),
            message: e.to_string(),
        })?;
        out.extend(objects.into_iter().map(|(path, object)| RawObject {
            node: n.index(),
            rule: rule.clone(),
            path,
            object,
        }));
    }
    Ok(out)
}

/// The scopes of kinds that CRDs among `objects` define (`Kind.group` -> scope), for kinds the
/// cluster does not serve yet.
pub fn scopes_defined_by_crds(objects: &[RawObject]) -> BTreeMap<String, Scope> {
    objects
        .iter()
        .filter(|o| {
            o.type_meta().1 == "CustomResourceDefinition"
                && o.type_meta().0.starts_with("apiextensions.k8s.io/")
        })
        .filter_map(|o| {
            let spec = o.object.as_value().get("spec")?;
            let gk = format!(
                "{}.{}",
                spec.pointer("/names/kind")?.as_str()?,
                spec.get("group")?.as_str()?
            );
            let scope = match spec.get("scope").and_then(Value::as_str) {
                Some("Cluster") => Scope::Cluster,
                _ => Scope::Namespaced,
            };
            Some((gk, scope))
        })
        .collect()
}

/// A namespace that kiln dropped from a cluster-scoped object.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ScopeWarning {
    /// The rule.
    pub rule: String,
    /// The artifact file.
    pub path: String,
    /// `Kind.group name`.
    pub object: String,
    /// The namespace dropped.
    pub namespace: String,
}

impl std::fmt::Display for ScopeWarning {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "rule `{}`: {} is cluster-scoped; its namespace `{}` is ignored (`{}`)",
            self.rule, self.object, self.namespace, self.path
        )
    }
}

/// Settles each object's namespace by its kind's scope: a cluster-scoped object loses any
/// namespace (with a warning), a namespaced object without one gets `default_namespace` (as
/// kubectl does). `scope_of` answers for every `Kind.group` among the objects.
pub fn settle_scopes(
    objects: &mut [RawObject],
    scope_of: impl Fn(&str) -> Scope,
    default_namespace: &str,
) -> Vec<ScopeWarning> {
    let mut warnings = Vec::new();
    for o in objects {
        let (api_version, kind) = o.type_meta();
        let gk = group_kind(api_version, kind);
        match scope_of(&gk) {
            Scope::Cluster => {
                if let Some(namespace) = o.object.set_namespace(None) {
                    warnings.push(ScopeWarning {
                        rule: o.rule.clone(),
                        path: o.path.clone(),
                        object: format!("{gk} {}", o.object.name()),
                        namespace,
                    });
                }
            }
            Scope::Namespaced => {
                if o.object.namespace().is_none() {
                    o.object.set_namespace(Some(default_namespace));
                }
            }
        }
    }
    warnings
}

/// Each rule's wave and ancestors, by node index: what [`collect`] needs of the rule graph.
#[derive(Debug, Clone, Default)]
pub struct Lineage {
    /// 0 for rules without dependencies, else 1 + the deepest dependency's.
    waves: Vec<usize>,
    /// Every rule each rule (transitively) depends on.
    ancestors: Vec<HashSet<usize>>,
}

impl Lineage {
    /// The lineage of every rule of `graph`.
    pub fn of(graph: &RuleGraph) -> Self {
        Self::from_order(
            graph.len(),
            graph.order().iter().map(|&n| {
                let deps: Vec<usize> = graph.dependencies(n).map(|d| d.index()).collect();
                (n.index(), deps)
            }),
        )
    }

    /// The lineage of `len` rules given as (rule, its dependencies) in dependency order.
    pub(crate) fn from_order(
        len: usize,
        order: impl IntoIterator<Item = (usize, Vec<usize>)>,
    ) -> Self {
        let mut waves = vec![0usize; len];
        let mut ancestors: Vec<HashSet<usize>> = vec![HashSet::new(); len];
        for (n, deps) in order {
            let mut wave = 0;
            let mut anc = HashSet::new();
            for d in deps {
                wave = wave.max(waves[d] + 1);
                anc.insert(d);
                anc.extend(ancestors[d].iter().copied());
            }
            waves[n] = wave;
            ancestors[n] = anc;
        }
        Self { waves, ancestors }
    }
}

/// Collects the objects of every rule's artifact (scopes settled, see [`settle_scopes`]). When
/// several rules hold the same object with different content, a rule that (transitively)
/// depends on the others wins (an overlay replaces its base); identical copies (a bundle
/// repeating its parts) stay with the first rule.
pub fn collect(
    lineage: &Lineage,
    objects: Vec<RawObject>,
    set_id: &str,
) -> Result<Vec<DesiredObject>, DesiredError> {
    let Lineage { waves, ancestors } = lineage;
    let mut chosen: BTreeMap<ObjectKey, (usize, String, K8sObject)> = BTreeMap::new();
    for RawObject {
        node, rule, object, ..
    } in objects
    {
        let key = ObjectKey::of(object.as_value());
        match chosen.get(&key) {
            Some((other, other_rule, other_obj)) => {
                if *other_obj == object {
                    // A bundle repeating its part: the part's rule keeps it (and its wave).
                } else if ancestors[node].contains(other) {
                    chosen.insert(key, (node, rule, object));
                } else {
                    return Err(DesiredError::Conflict {
                        key,
                        a: other_rule.clone(),
                        b: rule,
                    });
                }
            }
            None => {
                chosen.insert(key, (node, rule, object));
            }
        }
    }
    let scaled = scaled_targets(chosen.iter().map(|(k, (_, _, o))| (k, o.as_value())));
    Ok(chosen
        .into_iter()
        .map(|(key, (node, rule, mut obj))| {
            let kind = obj.kind().to_owned();
            default_port_protocols(&kind, obj.spec_mut());
            let mut controller_owned = annotated_paths(obj.as_value());
            if scaled.contains(&key) && !controller_owned.iter().any(|p| p == "spec.replicas") {
                controller_owned.push("spec.replicas".to_owned());
            }
            let hash = Digest::of(&to_canonical_json(&without(
                obj.as_value(),
                &controller_owned,
            )));
            let object = with_ownership(obj, set_id, &rule, &hash);
            DesiredObject {
                key,
                rule,
                wave: waves[node],
                object,
                hash,
                controller_owned,
            }
        })
        .collect())
}

/// Spells out `protocol: TCP` on Service and container ports that omit it. The API server
/// defaults it to the same value, but before 1.25 server-side apply rejects port lists whose
/// items omit a key field (kubernetes#105610).
fn default_port_protocols(kind: &str, spec: Option<&mut Value>) {
    let Some(spec) = spec else { return };
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
    match kind {
        "Service" => fill(spec.get_mut("ports")),
        "Pod" => containers(Some(spec)),
        "CronJob" => containers(spec.pointer_mut("/jobTemplate/spec/template/spec")),
        _ => containers(spec.pointer_mut("/template/spec")),
    }
}

fn with_ownership(mut obj: K8sObject, set_id: &str, rule: &str, hash: &Digest) -> Value {
    obj.set_metadata_entry("labels", PART_OF_LABEL, set_id, true);
    obj.set_metadata_entry(
        "annotations",
        DESIRED_HASH_ANNOTATION,
        &hash.to_string(),
        true,
    );
    obj.set_metadata_entry("annotations", RULE_ANNOTATION, rule, true);
    obj.into_value()
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
    use serde_json::json;

    fn raw(object: Value) -> RawObject {
        RawObject {
            node: 0,
            rule: "gw".into(),
            path: "objects/x/y.yaml".into(),
            object: K8sObject::check(object).unwrap(),
        }
    }

    #[test]
    fn cluster_scoped_objects_lose_their_namespace_with_a_warning() {
        let mut objs = vec![
            raw(
                json!({"apiVersion": "gateway.example.io/v1", "kind": "GatewayClass",
                       "metadata": {"name": "edge", "namespace": "shop"}}),
            ),
            raw(
                json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                       "metadata": {"name": "reader"}}),
            ),
            raw(json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c"}})),
            raw(json!({"apiVersion": "v1", "kind": "ConfigMap",
                       "metadata": {"name": "d", "namespace": "shop"}})),
        ];
        let warnings = settle_scopes(
            &mut objs,
            |gk| match gk {
                "ConfigMap" => Scope::Namespaced,
                _ => Scope::Cluster,
            },
            "team",
        );
        assert_eq!(warnings.len(), 1);
        assert_eq!(warnings[0].rule, "gw");
        assert_eq!(warnings[0].namespace, "shop");
        assert!(warnings[0]
            .to_string()
            .contains("GatewayClass.gateway.example.io edge"));
        assert_eq!(objs[0].object.namespace(), None);
        assert_eq!(objs[1].object.namespace(), None);
        assert_eq!(objs[2].object.namespace(), Some("team"));
        assert_eq!(objs[3].object.namespace(), Some("shop"));
    }

    #[test]
    fn crds_of_the_project_give_their_kinds_scope() {
        let objs = vec![
            raw(
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                       "metadata": {"name": "gatewayclasses.gateway.example.io"},
                       "spec": {"group": "gateway.example.io", "scope": "Cluster",
                                "names": {"kind": "GatewayClass", "plural": "gatewayclasses"}}}),
            ),
            raw(
                json!({"apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                       "metadata": {"name": "routes.gateway.example.io"},
                       "spec": {"group": "gateway.example.io", "scope": "Namespaced",
                                "names": {"kind": "Route", "plural": "routes"}}}),
            ),
        ];
        let scopes = scopes_defined_by_crds(&objs);
        assert_eq!(scopes["GatewayClass.gateway.example.io"], Scope::Cluster);
        assert_eq!(scopes["Route.gateway.example.io"], Scope::Namespaced);
    }

    #[test]
    fn an_hpa_target_leaves_its_replicas_to_the_hpa() {
        let deployment = |replicas: u64| {
            json!({"apiVersion": "apps/v1", "kind": "Deployment",
                   "metadata": {"name": "api", "namespace": "shop"},
                   "spec": {"replicas": replicas, "template": {"spec": {"containers": []}}}})
        };
        let hpa = json!({"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
                         "metadata": {"name": "api", "namespace": "shop"},
                         "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
                                  "minReplicas": 2, "maxReplicas": 5}});
        let lineage = Lineage::from_order(1, [(0, vec![])]);
        let with = |replicas| {
            collect(
                &lineage,
                vec![raw(deployment(replicas)), raw(hpa.clone())],
                "set",
            )
            .unwrap()
        };
        let (a, b) = (with(2), with(3));
        let dep = |v: &[DesiredObject]| {
            v.iter()
                .find(|d| d.key.group_kind == "Deployment.apps")
                .unwrap()
                .clone()
        };
        assert_eq!(dep(&a).controller_owned, ["spec.replicas"]);
        assert_eq!(dep(&a).hash, dep(&b).hash, "replicas do not move the hash");
        assert_eq!(dep(&a).object["spec"]["replicas"], 2, "kept for the create");
        // Live: the HPA scaled it to 4; kiln sends 4, not 2.
        let mut desired = vec![dep(&a)];
        let mut live_obj = deployment(4);
        live_obj["metadata"]["uid"] = json!("x");
        let live: BTreeMap<ObjectKey, Value> = [(desired[0].key.clone(), live_obj)].into();
        yield_to_controllers(&mut desired, &live);
        assert_eq!(desired[0].object["spec"]["replicas"], 4);
        // Without the HPA, replicas are kiln's.
        let alone = collect(&lineage, vec![raw(deployment(2))], "set").unwrap();
        assert!(alone[0].controller_owned.is_empty());
    }

    #[test]
    fn the_annotation_names_controller_owned_fields() {
        let mut d = json!({"apiVersion": "apps/v1", "kind": "Deployment",
                           "metadata": {"name": "w", "namespace": "shop",
                                        "annotations": {CONTROLLER_OWNED_ANNOTATION: "spec.replicas, spec.paused"}},
                           "spec": {"replicas": 1, "paused": false}});
        let lineage = Lineage::from_order(1, [(0, vec![])]);
        let a = collect(&lineage, vec![raw(d.clone())], "set").unwrap();
        assert_eq!(a[0].controller_owned, ["spec.replicas", "spec.paused"]);
        d["spec"]["replicas"] = json!(7);
        let b = collect(&lineage, vec![raw(d)], "set").unwrap();
        assert_eq!(a[0].hash, b[0].hash);
    }

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
