//! `secret`: a Secret that holds only *references* to its values.
//!
//! ```toml
//! [rule.db-credentials]
//! kind = "secret"
//! name = "db-credentials"
//! namespace = "${var.namespace}"
//! type = "Opaque"
//! data.password = { env = "POSTGRES_PASSWORD" }          # an environment variable of kiln apply
//! data.tls-key  = { file = "/run/secrets/tls.key" }      # an absolute file outside the project
//! data.token    = { command = ["vault", "kv", "get", "-field=token", "secret/api"] }
//! ```
//!
//! The artifact is a Secret without `data`, whose `kiln.dev/secret-refs` annotation holds the
//! references. Values are resolved only when the secret is applied to a cluster; they never
//! enter the store, logs or plans. A literal value is refused.

use std::collections::BTreeMap;

use kiln_core::kind::{parse_attrs, AttrError, BuildContext, BuildError, Kind};
use kiln_core::Tree;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};

use crate::objects::{write_objects, MetadataAttrs};

/// The annotation that carries a secret's value references.
pub const SECRET_REFS_ANNOTATION: &str = "kiln.dev/secret-refs";

/// Where a secret value comes from at realize time.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "lowercase")]
pub enum SecretRef {
    /// An environment variable of the `kiln apply` process.
    Env(String),
    /// An absolute path outside the project.
    File(String),
    /// A command whose standard output is the value.
    Command(Vec<String>),
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    name: String,
    #[serde(default = "opaque", rename = "type")]
    secret_type: String,
    data: BTreeMap<String, RefAttr>,
    #[serde(flatten)]
    meta: MetadataAttrs,
}

fn opaque() -> String {
    "Opaque".to_owned()
}

/// `{ env = "X" }`, `{ file = "/p" }` or `{ command = [...] }`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RefAttr {
    env: Option<String>,
    file: Option<String>,
    command: Option<Vec<String>>,
}

impl RefAttr {
    fn to_ref(&self, key: &str) -> Result<SecretRef, AttrError> {
        let path = format!("data.{key}");
        match (&self.env, &self.file, &self.command) {
            (Some(e), None, None) if !e.is_empty() => Ok(SecretRef::Env(e.clone())),
            (None, Some(f), None) if f.starts_with('/') => Ok(SecretRef::File(f.clone())),
            (None, Some(f), None) => Err(AttrError::new(
                path,
                format!("file `{f}` must be an absolute path outside the project"),
            )),
            (None, None, Some(c)) if !c.is_empty() => Ok(SecretRef::Command(c.clone())),
            _ => Err(AttrError::new(
                path,
                "give exactly one of `env`, `file` or `command`",
            )),
        }
    }
}

/// The `secret` kind.
pub struct Secret;

impl Secret {
    fn parse(attrs: &Value) -> Result<(Attrs, BTreeMap<String, SecretRef>), AttrError> {
        if let Some(data) = attrs.get("data").and_then(Value::as_object) {
            for (k, v) in data {
                if !v.is_object() {
                    return Err(AttrError::new(
                        format!("data.{k}"),
                        "secret values are never written in rules: reference them with `{ env = \"VAR\" }`, `{ file = \"/abs/path\" }` or `{ command = [...] }`",
                    ));
                }
            }
        }
        let a: Attrs = parse_attrs(attrs)?;
        let refs = a
            .data
            .iter()
            .map(|(k, r)| Ok((k.clone(), r.to_ref(k)?)))
            .collect::<Result<_, AttrError>>()?;
        Ok((a, refs))
    }
}

impl Kind for Secret {
    fn name(&self) -> &'static str {
        "secret"
    }

    fn version(&self) -> u32 {
        // 2: YAML written so that YAML 1.1 readers (kubectl, Helm, PyYAML) read it the same.
        2
    }

    fn check(&self, attrs: &Value) -> Result<(), AttrError> {
        Self::parse(attrs).map(|_| ())
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Tree, BuildError> {
        if !cx.srcs.is_empty() {
            return Err(BuildError::failed(
                "a secret takes no `srcs`: its values must never enter the store",
            ));
        }
        let (a, refs) = Self::parse(cx.attrs)?;
        let refs_json = String::from_utf8(kiln_core::canonical::to_canonical_json(
            &serde_json::to_value(&refs).expect("refs"),
        ))
        .expect("utf-8");
        let mut obj = json!({
            "apiVersion": "v1",
            "kind": "Secret",
            "type": a.secret_type,
            "metadata": {"name": a.name, "annotations": {SECRET_REFS_ANNOTATION: refs_json}},
        });
        a.meta.apply(&mut obj);
        let mut tree = Tree::new();
        write_objects(&mut tree, [obj])?;
        let mut exports = BTreeMap::new();
        exports.insert("name".to_owned(), a.name);
        tree.set_exports(&exports);
        Ok(tree)
    }
}
