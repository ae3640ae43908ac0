//! `configmap`: a ConfigMap from files and literals, named with a content-hash suffix.
//!
//! ```toml
//! [rule.api-config]
//! kind = "configmap"
//! name = "api-config"                 # the object is `api-config-<10 hex>`
//! namespace = "${var.namespace}"
//! srcs = ["config/api.env"]           # key = file name
//! from = ["prometheus-config"]        # every file of these dependencies' outputs, key = file name
//! literals = { LOG_LEVEL = "info" }
//! ```
//!
//! Exports `name` (the hashed name) and `base_name`. Workloads refer to
//! `${dep.api-config.name}`, so they roll when the content changes.

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_core::kind::{parse_attrs, AttrError, BuildContext, BuildError, Kind};
use kiln_core::{Digest, Tree};
use serde::Deserialize;
use serde_json::{json, Value};

use crate::objects::{write_objects, MetadataAttrs};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    name: String,
    #[serde(default)]
    literals: BTreeMap<String, Scalar>,
    #[serde(default)]
    from: Vec<String>,
    #[serde(default = "yes")]
    hash_suffix: bool,
    #[serde(default)]
    immutable: bool,
    #[serde(flatten)]
    meta: MetadataAttrs,
}

fn yes() -> bool {
    true
}

/// A literal value: TOML strings, numbers and booleans all become strings.
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Scalar {
    Str(String),
    Int(i64),
    Float(f64),
    Bool(bool),
}

impl Scalar {
    fn into_string(self) -> String {
        match self {
            Scalar::Str(s) => s,
            Scalar::Int(i) => i.to_string(),
            Scalar::Float(f) => f.to_string(),
            Scalar::Bool(b) => b.to_string(),
        }
    }
}

/// The `configmap` kind.
pub struct ConfigMap;

fn valid_key(k: &str) -> bool {
    !k.is_empty()
        && k.len() <= 253
        && k.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"-_.".contains(&b))
}

impl Kind for ConfigMap {
    fn name(&self) -> &'static str {
        "configmap"
    }

    fn version(&self) -> u32 {
        // 2: YAML written so that YAML 1.1 readers (kubectl, Helm, PyYAML) read it the same.
        2
    }

    fn check(&self, attrs: &Value) -> Result<(), AttrError> {
        let a: Attrs = parse_attrs(attrs)?;
        if a.name.is_empty() || a.name.len() > 242 {
            return Err(AttrError::new(
                "name",
                "must be 1 to 242 characters (room for the hash suffix)",
            ));
        }
        for k in a.literals.keys() {
            if !valid_key(k) {
                return Err(AttrError::new(
                    format!("literals.{k}"),
                    format!("`{k}` is not a valid ConfigMap key"),
                ));
            }
        }
        Ok(())
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Tree, BuildError> {
        let a: Attrs = parse_attrs(cx.attrs)?;
        const MAX_CONFIGMAP_BYTES: usize = 1024 * 1024;
        let mut data = BTreeMap::new();
        let mut binary = BTreeMap::new();
        let mut total = 0usize;
        let mut add = |key: &str, bytes: &[u8], origin: &str| -> Result<(), BuildError> {
            total += key.len() + bytes.len();
            if total > MAX_CONFIGMAP_BYTES {
                return Err(BuildError::failed(format!(
                    "the ConfigMap's data passes Kubernetes' limit of 1 MiB at `{key}` (from {origin}); the API server would refuse it"
                )));
            }
            if !valid_key(key) {
                return Err(BuildError::failed(format!(
                    "`{key}` (from {origin}) is not a valid ConfigMap key"
                )));
            }
            if data.contains_key(key) || binary.contains_key(key) {
                return Err(BuildError::failed(format!(
                    "key `{key}` appears twice (again from {origin})"
                )));
            }
            match std::str::from_utf8(bytes) {
                Ok(s) => data.insert(key.to_owned(), Value::from(s)),
                Err(_) => binary.insert(
                    key.to_owned(),
                    Value::from(base64::engine::general_purpose::STANDARD.encode(bytes)),
                ),
            };
            Ok(())
        };
        for src in cx.srcs {
            add(
                src.path.file_name(),
                &src.content,
                &format!("source `{}`", src.path),
            )?;
        }
        for f in crate::from_deps::files_from(cx, &a.from)? {
            add(
                f.path.file_name(),
                &f.content,
                &format!("`{}` of `{}`", f.path, f.rule),
            )?;
        }
        for (k, v) in a.literals {
            add(&k, v.into_string().as_bytes(), "literals")?;
        }
        let mut body = serde_json::Map::new();
        if !data.is_empty() {
            body.insert("data".into(), Value::Object(data.into_iter().collect()));
        }
        if !binary.is_empty() {
            body.insert(
                "binaryData".into(),
                Value::Object(binary.into_iter().collect()),
            );
        }
        if a.immutable {
            body.insert("immutable".into(), Value::Bool(true));
        }
        let name = if a.hash_suffix {
            let content = kiln_core::canonical::to_canonical_json(&Value::Object(body.clone()));
            format!("{}-{}", a.name, &Digest::of(&content).hex()[..10])
        } else {
            a.name.clone()
        };
        let mut obj = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": name}});
        obj.as_object_mut().expect("object").extend(body);
        a.meta.apply(&mut obj);
        let mut tree = Tree::new();
        write_objects(&mut tree, [obj])?;
        let mut exports = BTreeMap::new();
        exports.insert("name".to_owned(), name);
        exports.insert("base_name".to_owned(), a.name);
        tree.set_exports(&exports);
        Ok(tree)
    }
}
