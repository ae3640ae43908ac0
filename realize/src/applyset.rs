//! ApplySet ownership (KEP-3659), with the labels and annotations exactly as kubectl writes them.

use base64::Engine as _;
use kiln_rules::k8s::GroupKind;
use serde_json::{json, Value};
use sha2::{Digest as _, Sha256};

/// kiln's field manager for server-side apply.
pub const FIELD_MANAGER: &str = "kiln";
/// Label on the parent: the set's id.
pub const ID_LABEL: &str = "applyset.kubernetes.io/id";
/// Label on every member: the id of the set it belongs to.
pub const PART_OF_LABEL: &str = "applyset.kubernetes.io/part-of";
/// Annotation on the parent: `<tool>/<version>`.
pub const TOOLING_ANNOTATION: &str = "applyset.kubernetes.io/tooling";
/// Annotation on the parent: the members' group-kinds, sorted, comma-separated.
pub const GROUP_KINDS_ANNOTATION: &str = "applyset.kubernetes.io/contains-group-kinds";
/// Annotation on the parent: namespaces holding members, other than the parent's own.
pub const NAMESPACES_ANNOTATION: &str = "applyset.kubernetes.io/additional-namespaces";
/// Annotation on applied objects: blake3 of their desired (normalized) form.
pub const DESIRED_HASH_ANNOTATION: &str = "kiln.dev/desired-hash";
/// Annotation on applied objects: the rule that produced them.
pub const RULE_ANNOTATION: &str = "kiln.dev/rule";

/// This tool's `tooling` value.
pub fn tooling() -> String {
    format!("kiln/{}", env!("CARGO_PKG_VERSION"))
}

/// The set id of a parent: `applyset-<base64url(sha256(name.namespace.kind.group))>-v1`.
pub fn applyset_id(name: &str, namespace: &str, kind: &str, group: &str) -> String {
    let digest = Sha256::digest(format!("{name}.{namespace}.{kind}.{group}").as_bytes());
    format!(
        "applyset-{}-v1",
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(digest)
    )
}

/// The parent of a project's set in one environment: a Secret, as kubectl uses by default.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parent {
    /// The Secret's name.
    pub name: String,
    /// Its namespace.
    pub namespace: String,
}

impl Parent {
    /// `kiln-<project>-<env>` in `namespace`.
    pub fn for_project(project: &str, env: &str, namespace: &str) -> Self {
        let raw = format!("kiln-{project}-{env}").to_lowercase();
        let name: String = raw
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '-' || c == '.' {
                    c
                } else {
                    '-'
                }
            })
            .collect();
        Self {
            name: name.trim_matches('-').to_owned(),
            namespace: namespace.to_owned(),
        }
    }

    /// The set id.
    pub fn id(&self) -> String {
        applyset_id(&self.name, &self.namespace, "Secret", "")
    }

    /// The parent object to apply, listing `group_kinds` and `namespaces`.
    pub fn object(&self, group_kinds: &[String], namespaces: &[String]) -> Value {
        let extra: Vec<&str> = namespaces
            .iter()
            .map(String::as_str)
            .filter(|n| *n != self.namespace)
            .collect();
        json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": "Opaque",
            "metadata": {
                "name": self.name,
                "namespace": self.namespace,
                "labels": {ID_LABEL: self.id()},
                "annotations": {
                    TOOLING_ANNOTATION: tooling(),
                    GROUP_KINDS_ANNOTATION: group_kinds.join(","),
                    NAMESPACES_ANNOTATION: extra.join(","),
                },
            },
        })
    }
}

/// `Kind.group` as kubectl prints a GroupKind (`Deployment.apps`, or `Namespace` for core).
pub fn group_kind(api_version: &str, kind: &str) -> String {
    GroupKind::of(api_version, kind).to_string()
}

/// Splits `Kind.group` back into kind and group.
pub fn split_group_kind(gk: &str) -> (&str, &str) {
    kiln_rules::k8s::split(gk)
}

/// A parent's annotation `key`, if set.
fn annotation<'a>(parent: &'a Value, key: &str) -> Option<&'a str> {
    parent
        .pointer("/metadata/annotations")
        .and_then(|a| a.get(key))
        .and_then(Value::as_str)
}

/// A parent's comma-separated list annotation `key`.
fn annotation_list(parent: &Value, key: &str) -> Vec<String> {
    annotation(parent, key)
        .map(|s| {
            s.split(',')
                .filter(|x| !x.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// Reads a parent's `contains-group-kinds` and `tooling`.
pub fn parent_state(parent: &Value) -> (Vec<String>, Option<String>) {
    (
        annotation_list(parent, GROUP_KINDS_ANNOTATION),
        annotation(parent, TOOLING_ANNOTATION).map(str::to_owned),
    )
}

/// The namespaces a parent records its members in, besides its own
/// (`additional-namespaces`).
pub fn parent_namespaces(parent: &Value) -> Vec<String> {
    annotation_list(parent, NAMESPACES_ANNOTATION)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_follows_the_kep_format() {
        let id = applyset_id("my-set", "default", "Secret", "");
        assert!(id.starts_with("applyset-") && id.ends_with("-v1"));
        let body = &id["applyset-".len()..id.len() - 3];
        assert_eq!(body.len(), 43, "unpadded base64url of 32 bytes");
        assert!(!body.contains(['+', '/', '=']));
        // Pinned: sha256("my-set.default.Secret.") in base64url.
        let expected = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .encode(Sha256::digest(b"my-set.default.Secret."));
        assert_eq!(body, expected);
    }

    #[test]
    fn group_kinds_print_like_kubectl() {
        assert_eq!(group_kind("apps/v1", "Deployment"), "Deployment.apps");
        assert_eq!(group_kind("v1", "Namespace"), "Namespace");
        assert_eq!(split_group_kind("Deployment.apps"), ("Deployment", "apps"));
        assert_eq!(
            split_group_kind("HorizontalPodAutoscaler.autoscaling"),
            ("HorizontalPodAutoscaler", "autoscaling")
        );
        assert_eq!(split_group_kind("Namespace"), ("Namespace", ""));
    }

    #[test]
    fn parent_object() {
        let p = Parent::for_project("OdorDiff", "production", "default");
        assert_eq!(p.name, "kiln-odordiff-production");
        let o = p.object(
            &["ConfigMap".into(), "Deployment.apps".into()],
            &["default".into(), "shop".into()],
        );
        assert_eq!(o["metadata"]["labels"][ID_LABEL], p.id());
        assert_eq!(
            o["metadata"]["annotations"][GROUP_KINDS_ANNOTATION],
            "ConfigMap,Deployment.apps"
        );
        assert_eq!(o["metadata"]["annotations"][NAMESPACES_ANNOTATION], "shop");
        assert_eq!(parent_state(&o).1.unwrap(), tooling());
    }
}
