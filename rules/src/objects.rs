//! Kubernetes objects inside artifacts: parsing, checking, normalizing and laying out.
//!
//! Object-producing kinds write each object to
//! `objects/<namespace or _cluster>/<Kind>.<group or core>/<name>.yaml`, as YAML with keys in
//! sorted order. Kinds that consume objects (overlay, bundle, realize) read that directory.

use std::collections::BTreeMap;

use kiln_core::kind::BuildError;
use kiln_core::{RelPath, Tree};
use serde::Deserialize;
use serde_json::Value;

use crate::k8s::{api_group, check_value, K8sObject, ObjectError, ObjectFileError};

/// The directory of an artifact that holds Kubernetes objects.
pub const OBJECTS_DIR: &str = "objects";

/// Kinds that are not namespaced; they get no default namespace.
pub const CLUSTER_SCOPED: &[&str] = &[
    "Namespace",
    "CustomResourceDefinition",
    "ClusterRole",
    "ClusterRoleBinding",
    "PersistentVolume",
    "StorageClass",
    "PriorityClass",
    "ValidatingWebhookConfiguration",
    "MutatingWebhookConfiguration",
    "APIService",
    "IngressClass",
    "RuntimeClass",
    "PodSecurityPolicy",
    "CSIDriver",
    "VolumeSnapshotClass",
    "ClusterIssuer",
    "Node",
];

/// Checks that `obj` is a Kubernetes object ([`K8sObject::check`], borrowed).
pub fn check_object(obj: &Value) -> Result<(), ObjectError> {
    check_value(obj).map(|_| ())
}

/// `kind`, `metadata.name` and `metadata.namespace` of a checked object.
pub fn identity(obj: &Value) -> (&str, &str, Option<&str>) {
    (
        obj["kind"].as_str().unwrap_or_default(),
        obj.pointer("/metadata/name")
            .and_then(Value::as_str)
            .unwrap_or_default(),
        obj.pointer("/metadata/namespace").and_then(Value::as_str),
    )
}

/// Where a checked object lives in an artifact.
pub fn object_path(obj: &Value) -> RelPath {
    let (kind, name, ns) = identity(obj);
    let group = match api_group(obj["apiVersion"].as_str().unwrap_or_default()) {
        "" => "core",
        g => g,
    };
    RelPath::new(format!(
        "{OBJECTS_DIR}/{}/{kind}.{group}/{name}.yaml",
        ns.unwrap_or("_cluster")
    ))
    .expect("checked names make valid paths")
}

/// Sets `metadata.namespace` on a namespaced object that has none.
pub fn default_namespace(obj: &mut Value, ns: &str) {
    let kind = obj["kind"].as_str().unwrap_or_default();
    if CLUSTER_SCOPED.contains(&kind) || obj.pointer("/metadata/namespace").is_some() {
        return;
    }
    if let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) {
        meta.insert("namespace".into(), Value::from(ns));
    }
}

/// Adds labels or annotations (`field` is `labels` or `annotations`) without overriding.
pub fn add_metadata_map(obj: &mut Value, field: &str, values: &BTreeMap<String, String>) {
    if values.is_empty() {
        return;
    }
    let Some(meta) = obj.get_mut("metadata").and_then(Value::as_object_mut) else {
        return;
    };
    let map = meta
        .entry(field)
        .or_insert_with(|| Value::Object(Default::default()));
    if let Some(map) = map.as_object_mut() {
        for (k, v) in values {
            map.entry(k.clone())
                .or_insert_with(|| Value::from(v.as_str()));
        }
    }
}

pub use crate::yaml::to_yaml;

/// Flow collections (`[`, `{`) nested deeper than this are refused before parsing: the YAML
/// parser's time grows with the square of the depth (100,000 levels took 35 s).
pub const MAX_FLOW_DEPTH: usize = 256;

/// Scans `text` for flow nesting deeper than [`MAX_FLOW_DEPTH`]; `Err(offset)` of the bracket
/// that goes too deep. Quoted strings and comments are skipped; a bracket counts only where a
/// flow collection can start (after `:`, `-` or at the start of a line, and inside a flow
/// collection after `,`, `[` or `{`), so brackets inside plain text do not.
pub fn check_nesting(text: &str) -> Result<(), usize> {
    let bytes = text.as_bytes();
    let (mut depth, mut i) = (0usize, 0usize);
    let mut prev = b'\n'; // the last byte that is not a space or tab
    while i < bytes.len() {
        let b = bytes[i];
        match b {
            b'\'' => {
                i += 1;
                while i < bytes.len() {
                    if bytes[i] == b'\'' {
                        if bytes.get(i + 1) == Some(&b'\'') {
                            i += 1;
                        } else {
                            break;
                        }
                    }
                    i += 1;
                }
            }
            b'"' => {
                i += 1;
                while i < bytes.len() && bytes[i] != b'"' {
                    if bytes[i] == b'\\' {
                        i += 1;
                    }
                    i += 1;
                }
            }
            b'#' if matches!(prev, b'\n') || i == 0 || matches!(bytes[i - 1], b' ' | b'\t') => {
                while i < bytes.len() && bytes[i] != b'\n' {
                    i += 1;
                }
                continue;
            }
            b'[' | b'{'
                if matches!(prev, b':' | b'-' | b'\n')
                    || (depth > 0 && matches!(prev, b',' | b'[' | b'{')) =>
            {
                depth += 1;
                if depth > MAX_FLOW_DEPTH {
                    return Err(i);
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
        if i < bytes.len() && !matches!(bytes[i], b' ' | b'\t') {
            prev = bytes[i];
        }
        i += 1;
    }
    Ok(())
}

/// Parses YAML (or JSON) text holding one or more documents. Empty documents are skipped and
/// `kind: List` documents are flattened into their items.
pub fn parse_documents(text: &str, path: &RelPath) -> Result<Vec<Value>, BuildError> {
    check_nesting(text).map_err(|offset| {
        BuildError::source(
            path,
            Some(offset),
            format!("YAML nested deeper than {MAX_FLOW_DEPTH} levels"),
        )
    })?;
    let mut out = Vec::new();
    for doc in serde_norway::Deserializer::from_str(text) {
        // Through YAML's own value type, which refuses a key given twice in one mapping (a
        // JSON map would keep the last silently).
        let mut yaml = serde_norway::Value::deserialize(doc).map_err(|e| {
            let offset = e.location().map(|l| l.index());
            BuildError::source(path, offset, format!("invalid YAML: {e}"))
        })?;
        // YAML 1.1 merge keys (`<<: *defaults`) are applied, as kubectl's YAML reader does,
        // never kept as a literal `<<` field.
        yaml.apply_merge().map_err(|e| {
            BuildError::source(path, None, format!("invalid YAML merge key (`<<`): {e}"))
        })?;
        let v = serde_json::to_value(yaml).map_err(|e| {
            BuildError::source(path, None, format!("YAML that JSON cannot hold: {e}"))
        })?;
        match v {
            Value::Null => {}
            Value::Object(ref m) if m.get("kind").and_then(Value::as_str) == Some("List") => {
                if let Some(Value::Array(items)) = m.get("items") {
                    out.extend(items.iter().cloned());
                }
            }
            other => out.push(other),
        }
    }
    Ok(out)
}

/// The objects in an artifact's `objects/` directory, in path order.
pub fn read_objects(tree: &Tree) -> Result<Vec<K8sObject>, ObjectFileError> {
    Ok(read_object_files(tree)?
        .into_iter()
        .map(|(_, v)| v)
        .collect())
}

/// The objects in an artifact's `objects/` directory with the files they were read from, in
/// path order. Each object is checked ([`check_object`]): artifacts are untrusted input.
pub fn read_object_files(tree: &Tree) -> Result<Vec<(String, K8sObject)>, ObjectFileError> {
    let mut out = Vec::new();
    for (path, _) in tree.iter() {
        if path.strip_dir(OBJECTS_DIR).is_none() {
            continue;
        }
        let path = path.to_string();
        let Some(bytes) = tree.file(&path) else {
            return Err(ObjectFileError::NotFile(path));
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return Err(ObjectFileError::NotUtf8(path));
        };
        if check_nesting(text).is_err() {
            return Err(ObjectFileError::TooDeep {
                path,
                depth: MAX_FLOW_DEPTH,
            });
        }
        let v: Value = match serde_norway::from_str(text) {
            Ok(v) => v,
            Err(e) => {
                return Err(ObjectFileError::Yaml {
                    path,
                    message: e.to_string(),
                })
            }
        };
        match K8sObject::check(v) {
            Ok(o) => out.push((path, o)),
            Err(source) => return Err(ObjectFileError::Object { path, source }),
        }
    }
    Ok(out)
}

/// Checks and adds objects to a tree; two objects with the same identity are an error.
pub fn write_objects(
    tree: &mut Tree,
    objects: impl IntoIterator<Item = Value>,
) -> Result<(), BuildError> {
    for obj in objects {
        check_object(&obj).map_err(|e| BuildError::failed(e.to_string()))?;
        let path = object_path(&obj);
        if tree.get(path.as_str()).is_some() {
            let (kind, name, ns) = identity(&obj);
            return Err(BuildError::failed(format!(
                "two objects are {kind} `{}{name}`",
                ns.map(|n| format!("{n}/")).unwrap_or_default()
            )));
        }
        tree.insert_file(path, to_yaml(&obj).into_bytes(), false);
    }
    Ok(())
}

/// Common object attributes of the object-producing kinds.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetadataAttrs {
    /// Namespace for namespaced objects that have none.
    #[serde(default)]
    pub namespace: Option<String>,
    /// Labels added to every object (existing keys win).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
    /// Annotations added to every object (existing keys win).
    #[serde(default)]
    pub annotations: BTreeMap<String, String>,
}

impl MetadataAttrs {
    /// Applies namespace, labels and annotations to `obj`.
    pub fn apply(&self, obj: &mut Value) {
        if let Some(ns) = &self.namespace {
            default_namespace(obj, ns);
        }
        add_metadata_map(obj, "labels", &self.labels);
        add_metadata_map(obj, "annotations", &self.annotations);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn checks_required_fields() {
        assert!(check_object(
            &json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "a"}})
        )
        .is_ok());
        assert!(
            check_object(&json!({"kind": "ConfigMap", "metadata": {"name": "a"}}))
                .unwrap_err()
                .to_string()
                .contains("apiVersion")
        );
        assert!(
            check_object(&json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {}}))
                .unwrap_err()
                .to_string()
                .contains("metadata.name")
        );
        assert!(check_object(
            &json!({"apiVersion": "v1", "kind": "X", "metadata": {"name": "Bad_Name"}})
        )
        .is_err());
    }

    #[test]
    fn api_versions_and_kinds_follow_the_kubernetes_grammar() {
        let obj = |api: &str, kind: &str| {
            check_object(&json!({"apiVersion": api, "kind": kind, "metadata": {"name": "a"}}))
        };
        for (api, kind) in [
            ("v1", "ConfigMap"),
            ("apps/v1", "Deployment"),
            ("gateway.networking.k8s.io/v1beta1", "GatewayClass"),
            ("cert-manager.io/v1", "ClusterIssuer"),
        ] {
            assert!(obj(api, kind).is_ok(), "{api} {kind}");
        }
        for (api, kind) in [
            ("v1/../x", "ConfigMap"),
            ("/v1", "ConfigMap"),
            ("apps//v1", "Deployment"),
            ("apps/", "Deployment"),
            ("Apps/v1", "Deployment"),
            ("apps/v1/x", "Deployment"),
            ("1", "ConfigMap"),
            ("v1", "Config/Map"),
            ("v1", "../x"),
            ("v1", "Config Map"),
            ("v1", "9Lives"),
        ] {
            assert!(obj(api, kind).is_err(), "{api} {kind}");
        }
    }

    #[test]
    fn deep_flow_nesting_is_refused_before_parsing() {
        let deep = format!("a: {}", "[".repeat(100_000));
        let start = std::time::Instant::now();
        assert_eq!(check_nesting(&deep), Err(3 + MAX_FLOW_DEPTH));
        assert!(start.elapsed() < std::time::Duration::from_secs(1));
        let p = RelPath::new("deep.yaml").unwrap();
        assert!(matches!(
            parse_documents(&deep, &p),
            Err(BuildError::Source {
                offset: Some(259),
                ..
            })
        ));
        // Brackets in strings, comments and plain text are not nesting.
        let text = format!(
            "a: \"{0}\"\nb: '{0}'\n# {0}\nc: text {0}\nd: [[1, 2], {{e: [3]}}]\n",
            "[".repeat(1000)
        );
        assert_eq!(check_nesting(&text), Ok(()));
        assert_eq!(
            check_nesting(&format!("a: {}{}", "[".repeat(256), "]".repeat(256))),
            Ok(())
        );
    }

    #[test]
    fn duplicate_keys_are_refused_with_a_location() {
        let p = RelPath::new("k.yaml").unwrap();
        match parse_documents("a: 1\nb:\n  c: 1\n  c: 2\n", &p) {
            Err(BuildError::Source {
                offset: Some(o),
                message,
                ..
            }) => {
                assert!(
                    message.contains("duplicate entry with key \"c\""),
                    "{message}"
                );
                assert!(o >= 10, "{o}");
            }
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn paths_and_yaml_are_canonical() {
        let o = json!({"metadata": {"name": "api", "namespace": "shop"}, "kind": "Deployment", "apiVersion": "apps/v1", "spec": {"b": 1, "a": 2}});
        assert_eq!(
            object_path(&o).as_str(),
            "objects/shop/Deployment.apps/api.yaml"
        );
        let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
        assert_eq!(
            object_path(&ns).as_str(),
            "objects/_cluster/Namespace.core/shop.yaml"
        );
        assert_eq!(
            to_yaml(&o),
            "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n  namespace: shop\nspec:\n  a: 2\n  b: 1\n"
        );
    }

    #[test]
    fn parses_multi_documents_with_locations() {
        let p = RelPath::new("k.yaml").unwrap();
        let docs =
            parse_documents("a: 1\n---\n---\nkind: List\nitems: [{b: 2}, {c: 3}]\n", &p).unwrap();
        assert_eq!(
            docs,
            vec![json!({"a": 1}), json!({"b": 2}), json!({"c": 3})]
        );
        match parse_documents("a: 1\nb: [\n", &p) {
            Err(BuildError::Source {
                offset: Some(_), ..
            }) => {}
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn namespace_defaults_skip_cluster_scoped() {
        let mut ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "x"}});
        default_namespace(&mut ns, "shop");
        assert!(ns.pointer("/metadata/namespace").is_none());
        let mut cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "x"}});
        default_namespace(&mut cm, "shop");
        assert_eq!(cm["metadata"]["namespace"], "shop");
    }
}
