//! A checked Kubernetes object as a type: only [`K8sObject::check`] builds one, so code that
//! holds one may rely on a mapping with a valid `apiVersion`, `kind`, `metadata.name` and (if
//! any) `metadata.namespace`, without `expect` or index assignment that could panic. And the one
//! place a `Kind.group` is parsed: [`GroupKind`].

use std::fmt;

use serde_json::{Map, Value};

/// Why a value is not a Kubernetes object.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectError {
    /// Not a mapping.
    #[error("an object must be a mapping")]
    NotMapping,
    /// `apiVersion` or `kind` is missing.
    #[error("object has no `{0}`")]
    Missing(&'static str),
    /// A field that must be a (non-empty) string is not.
    #[error("`{0}` must be a non-empty string")]
    NotString(&'static str),
    /// `apiVersion` is malformed.
    #[error("`apiVersion` `{0}` is not `VERSION` or `GROUP/VERSION` (a DNS subdomain, then a version such as `v1` or `v1beta1`)")]
    ApiVersion(String),
    /// `kind` is malformed.
    #[error(
        "`kind` `{0}` is not a Kubernetes kind (a letter, then letters and digits, at most 63)"
    )]
    Kind(String),
    /// `metadata` is not a mapping.
    #[error("`metadata` must be a mapping")]
    Metadata,
    /// No `metadata.name`.
    #[error("{0} has no `metadata.name`")]
    NoName(String),
    /// `metadata.name` is malformed.
    #[error("`metadata.name` `{0}` is not a valid Kubernetes name (lowercase letters, digits, `-`, `.`; at most 253)")]
    Name(String),
    /// `metadata.namespace` is malformed.
    #[error("`metadata.namespace` `{0}` is not a valid namespace name")]
    Namespace(String),
    /// `metadata.labels` or `metadata.annotations` is not a mapping.
    #[error("`metadata.{0}` must be a mapping")]
    MetadataMap(&'static str),
    /// A ConfigMap's or Secret's data value is not a string (the API server refuses it; quote
    /// numbers and booleans).
    #[error("`{field}.{key}` must be a string (quote it: `\"{shown}\"`)")]
    DataNotString {
        /// `data`, `stringData` or `binaryData`.
        field: &'static str,
        /// The key.
        key: String,
        /// The value as written.
        shown: String,
    },
}

/// Why an artifact's `objects/` could not be read.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ObjectFileError {
    /// The entry is a symlink, not a file.
    #[error("`{0}` is not a file")]
    NotFile(String),
    /// The file is not UTF-8.
    #[error("`{0}` is not UTF-8")]
    NotUtf8(String),
    /// Flow collections nested too deep to parse safely.
    #[error("`{path}`: YAML nested deeper than {depth} levels")]
    TooDeep {
        /// The file.
        path: String,
        /// The limit.
        depth: usize,
    },
    /// Not YAML.
    #[error("`{path}`: {message}")]
    Yaml {
        /// The file.
        path: String,
        /// The parser's message.
        message: String,
    },
    /// YAML, but not a Kubernetes object.
    #[error("`{path}`: {source}")]
    Object {
        /// The file.
        path: String,
        /// What is wrong with it.
        #[source]
        source: ObjectError,
    },
}

/// A group and kind, as kubectl prints a GroupKind: `Deployment.apps`, or `Namespace` for the
/// core group.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct GroupKind {
    /// The API group, empty for core.
    pub group: String,
    /// The kind.
    pub kind: String,
}

impl GroupKind {
    /// The group-kind of an object of `kind` in `api_version` (`apps/v1`, `v1`).
    pub fn of(api_version: &str, kind: &str) -> Self {
        Self {
            group: api_group(api_version).to_owned(),
            kind: kind.to_owned(),
        }
    }

    /// Parses `Kind.group` (kinds have no dots; groups may).
    pub fn parse(group_kind: &str) -> Self {
        let (kind, group) = split(group_kind);
        Self {
            group: group.to_owned(),
            kind: kind.to_owned(),
        }
    }
}

/// `Kind.group` split into kind and group, borrowed.
pub fn split(group_kind: &str) -> (&str, &str) {
    group_kind.split_once('.').unwrap_or((group_kind, ""))
}

/// The group of an `apiVersion`: empty for core (`v1`).
pub fn api_group(api_version: &str) -> &str {
    api_version.rsplit_once('/').map_or("", |(g, _)| g)
}

impl fmt::Display for GroupKind {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.group.is_empty() {
            f.write_str(&self.kind)
        } else {
            write!(f, "{}.{}", self.kind, self.group)
        }
    }
}

/// A Kubernetes object that passed [`K8sObject::check`].
#[derive(Debug, Clone, PartialEq)]
pub struct K8sObject {
    value: Value,
    group_kind: GroupKind,
}

impl K8sObject {
    /// Checks that `value` is a Kubernetes object: a mapping with string `apiVersion` and
    /// `kind`, a `metadata` mapping with a valid `name`, a valid `namespace` if any, and
    /// `labels`/`annotations` mappings if any.
    pub fn check(value: Value) -> Result<Self, ObjectError> {
        let group_kind = check_value(&value)?;
        Ok(Self { value, group_kind })
    }

    /// The object.
    pub fn as_value(&self) -> &Value {
        &self.value
    }

    /// The object, giving up the guarantee.
    pub fn into_value(self) -> Value {
        self.value
    }

    fn metadata(&self) -> &Map<String, Value> {
        match self.value.get("metadata") {
            Some(Value::Object(m)) => m,
            _ => unreachable!("checked: metadata is a mapping"),
        }
    }

    fn metadata_mut(&mut self) -> &mut Map<String, Value> {
        match self.value.get_mut("metadata") {
            Some(Value::Object(m)) => m,
            _ => unreachable!("checked: metadata is a mapping"),
        }
    }

    /// `apiVersion`.
    pub fn api_version(&self) -> &str {
        self.value["apiVersion"].as_str().unwrap_or_default()
    }

    /// `kind`.
    pub fn kind(&self) -> &str {
        &self.group_kind.kind
    }

    /// The group-kind.
    pub fn group_kind(&self) -> &GroupKind {
        &self.group_kind
    }

    /// `metadata.name`.
    pub fn name(&self) -> &str {
        self.metadata()["name"].as_str().unwrap_or_default()
    }

    /// `metadata.namespace`, if set and not empty.
    pub fn namespace(&self) -> Option<&str> {
        self.metadata()
            .get("namespace")
            .and_then(Value::as_str)
            .filter(|ns| !ns.is_empty())
    }

    /// `spec`, to edit: nothing under it is checked.
    pub fn spec_mut(&mut self) -> Option<&mut Value> {
        self.value.get_mut("spec")
    }

    /// Sets `apiVersion` to another version of the same group (the kind, and so the
    /// group-kind, stay). `false`, and nothing changed, when `api_version` is of another group.
    pub fn set_version(&mut self, api_version: &str) -> bool {
        if api_group(api_version) != api_group(self.api_version()) {
            return false;
        }
        self.value["apiVersion"] = Value::from(api_version);
        true
    }

    /// Sets `metadata.namespace` (a name kiln chose), or removes it; returns the old one.
    pub fn set_namespace(&mut self, namespace: Option<&str>) -> Option<String> {
        let meta = self.metadata_mut();
        let old = match namespace {
            Some(ns) => meta.insert("namespace".into(), Value::from(ns)),
            None => meta.remove("namespace"),
        };
        old.and_then(|v| v.as_str().map(str::to_owned))
    }

    /// Sets `metadata.<field>.<key>` (`field` is `labels` or `annotations`); with `replace`
    /// false, an existing key wins.
    pub fn set_metadata_entry(
        &mut self,
        field: &'static str,
        key: &str,
        value: &str,
        replace: bool,
    ) {
        let meta = self.metadata_mut();
        let entry = meta
            .entry(field)
            .or_insert_with(|| Value::Object(Map::new()));
        if entry.is_null() {
            *entry = Value::Object(Map::new());
        }
        if let Value::Object(map) = entry {
            if replace || !map.contains_key(key) {
                map.insert(key.to_owned(), Value::from(value));
            }
        }
    }
}

/// The checks of [`K8sObject::check`], on a borrowed value; its group-kind when it passes.
pub fn check_value(value: &Value) -> Result<GroupKind, ObjectError> {
    let map = value.as_object().ok_or(ObjectError::NotMapping)?;
    let text = |field: &'static str| match map.get(field) {
        Some(Value::String(s)) if !s.is_empty() => Ok(s.as_str()),
        Some(_) => Err(ObjectError::NotString(field)),
        None => Err(ObjectError::Missing(field)),
    };
    let (api_version, kind) = (text("apiVersion")?, text("kind")?);
    if !valid_api_version(api_version) {
        return Err(ObjectError::ApiVersion(api_version.to_owned()));
    }
    if !valid_kind(kind) {
        return Err(ObjectError::Kind(kind.to_owned()));
    }
    let meta = match map.get("metadata") {
        Some(Value::Object(m)) => m,
        Some(_) => return Err(ObjectError::Metadata),
        None => return Err(ObjectError::NoName(kind.to_owned())),
    };
    let name = match meta.get("name") {
        Some(Value::String(s)) => s,
        Some(_) => return Err(ObjectError::NotString("metadata.name")),
        None => return Err(ObjectError::NoName(kind.to_owned())),
    };
    if !valid_name(name) {
        return Err(ObjectError::Name(name.clone()));
    }
    match meta.get("namespace") {
        None => {}
        Some(Value::String(ns)) if valid_name(ns) && !ns.contains('.') && ns.len() <= 63 => {}
        Some(Value::String(ns)) => return Err(ObjectError::Namespace(ns.clone())),
        Some(_) => return Err(ObjectError::NotString("metadata.namespace")),
    }
    for field in ["labels", "annotations"] {
        if meta
            .get(field)
            .is_some_and(|m| !m.is_object() && !m.is_null())
        {
            return Err(ObjectError::MetadataMap(field));
        }
    }
    if api_version == "v1" && matches!(kind, "ConfigMap" | "Secret") {
        for field in ["data", "stringData", "binaryData"] {
            let Some(Value::Object(entries)) = map.get(field) else {
                continue;
            };
            if let Some((key, v)) = entries.iter().find(|(_, v)| !v.is_string()) {
                return Err(ObjectError::DataNotString {
                    field,
                    key: key.clone(),
                    shown: v.to_string(),
                });
            }
        }
    }
    Ok(GroupKind::of(api_version, kind))
}

/// `v1`, or `group/v1beta1` with a lowercase DNS-subdomain group.
fn valid_api_version(s: &str) -> bool {
    let (group, version) = s.rsplit_once('/').unwrap_or(("", s));
    let label = |l: &str| {
        !l.is_empty()
            && l.len() <= 63
            && l.bytes()
                .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
            && !l.starts_with('-')
            && !l.ends_with('-')
    };
    let version_ok = label(version) && version.starts_with('v');
    let group_ok = if s.contains('/') {
        group.len() <= 253 && group.split('.').all(label)
    } else {
        true
    };
    version_ok && group_ok
}

/// `ConfigMap`, `HorizontalPodAutoscaler`: an ASCII letter, then letters and digits.
fn valid_kind(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 63
        && s.as_bytes()[0].is_ascii_alphabetic()
        && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn valid_name(s: &str) -> bool {
    !s.is_empty()
        && s.len() <= 253
        && s.bytes().all(|b| {
            b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'.' || b == b':'
        })
        && s.as_bytes()[0].is_ascii_alphanumeric()
        && s.as_bytes()[s.len() - 1].is_ascii_alphanumeric()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn group_kinds_print_and_parse_like_kubectl() {
        assert_eq!(
            GroupKind::of("apps/v1", "Deployment").to_string(),
            "Deployment.apps"
        );
        assert_eq!(GroupKind::of("v1", "Namespace").to_string(), "Namespace");
        let gk = GroupKind::parse("Gateway.gateway.networking.k8s.io");
        assert_eq!(gk.kind, "Gateway");
        assert_eq!(gk.group, "gateway.networking.k8s.io");
        assert_eq!(GroupKind::parse("Secret"), GroupKind::of("v1", "Secret"));
    }

    #[test]
    fn only_objects_pass_and_each_fault_is_named() {
        let ok = json!({"apiVersion": "v1", "kind": "ConfigMap",
                        "metadata": {"name": "c", "namespace": "shop"}});
        let o = K8sObject::check(ok).unwrap();
        assert_eq!(
            (o.kind(), o.name(), o.namespace()),
            ("ConfigMap", "c", Some("shop"))
        );
        let cases = [
            (json!([]), ObjectError::NotMapping),
            (json!({"kind": "A"}), ObjectError::Missing("apiVersion")),
            (
                json!({"apiVersion": "v1", "kind": "A", "metadata": "x"}),
                ObjectError::Metadata,
            ),
            (
                json!({"apiVersion": "v1", "kind": "A", "metadata": {}}),
                ObjectError::NoName("A".into()),
            ),
            (
                json!({"apiVersion": "v1", "kind": "A", "metadata": {"name": "B"}}),
                ObjectError::Name("B".into()),
            ),
            (
                json!({"apiVersion": "v1", "kind": "A", "metadata": {"name": "b", "namespace": 3}}),
                ObjectError::NotString("metadata.namespace"),
            ),
            (
                json!({"apiVersion": "v1", "kind": "A", "metadata": {"name": "b", "labels": []}}),
                ObjectError::MetadataMap("labels"),
            ),
            (
                json!({"apiVersion": "Apps/v1", "kind": "A", "metadata": {"name": "b"}}),
                ObjectError::ApiVersion("Apps/v1".into()),
            ),
        ];
        for (value, want) in cases {
            assert_eq!(
                K8sObject::check(value.clone()).unwrap_err(),
                want,
                "{value}"
            );
        }
    }

    #[test]
    fn metadata_edits_never_panic() {
        let mut o = K8sObject::check(json!({"apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {"name": "c", "labels": null}}))
        .unwrap();
        o.set_metadata_entry("labels", "a", "1", false);
        o.set_metadata_entry("labels", "a", "2", false);
        o.set_metadata_entry("annotations", "b", "1", true);
        assert_eq!(o.set_namespace(Some("shop")), None);
        assert_eq!(o.set_namespace(None).as_deref(), Some("shop"));
        assert_eq!(
            o.into_value()["metadata"],
            json!({"name": "c", "labels": {"a": "1"}, "annotations": {"b": "1"}})
        );
    }
}
