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
//! srcs_as = "env"                     # optional: each source is a KEY=VALUE file, one key per line
//! ```
//!
//! With `srcs_as = "env"`, each source is read as `kubectl create configmap --from-env-file`
//! reads it: one `KEY=VALUE` per line, the value taken literally, blank lines and `#` comments
//! skipped. A line without `=` is refused (kubectl would read the value from the environment of
//! whoever runs it, which would make the build depend on the machine).
//!
//! Exports `name` (the hashed name) and `base_name`. Workloads refer to
//! `${dep.api-config.name}`, so they roll when the content changes.

use std::collections::BTreeMap;

use base64::Engine as _;
use kiln_core::kind::{parse_attrs, AttrError, BuildContext, BuildError, Kind};
use kiln_core::Tree;
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
    #[serde(default)]
    srcs_as: SrcsAs,
    #[serde(flatten)]
    meta: MetadataAttrs,
}

/// How the sources become keys.
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum SrcsAs {
    /// One key per file, named after it.
    #[default]
    Files,
    /// One key per `KEY=VALUE` line.
    Env,
}

/// The `KEY=VALUE` pairs of an env file, or the line (1-based) and why it is refused.
fn parse_env_file(text: &str) -> Result<Vec<(&str, &str)>, (usize, String)> {
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once('=') else {
            return Err((
                i + 1,
                format!("`{trimmed}` is not KEY=VALUE (a value from the environment of the machine that builds is not allowed)"),
            ));
        };
        if !valid_env_name(key) {
            return Err((
                i + 1,
                format!("`{key}` is not a valid environment variable name"),
            ));
        }
        out.push((key, value));
    }
    Ok(out)
}

/// A name shells and programs can read: letters, digits and `_`, not starting with a digit.
fn valid_env_name(k: &str) -> bool {
    k.bytes()
        .next()
        .is_some_and(|b| b.is_ascii_alphabetic() || b == b'_')
        && k.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
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

/// The byte offset where a 1-based line starts.
fn line_offset(text: &str, line: usize) -> Option<usize> {
    if line <= 1 {
        return Some(0);
    }
    text.match_indices('\n').nth(line - 2).map(|(i, _)| i + 1)
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
            let origin = format!("source `{}`", src.path);
            if a.srcs_as == SrcsAs::Env {
                let pairs = parse_env_file(src.text()?).map_err(|(line, why)| {
                    BuildError::source(&src.path, line_offset(src.text().unwrap_or(""), line), why)
                })?;
                for (k, v) in pairs {
                    add(k, v.as_bytes(), &origin)?;
                }
            } else {
                add(src.path.file_name(), &src.content, &origin)?;
            }
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
        let body = Value::Object(body);
        let name = if a.hash_suffix {
            let digest = kiln_core::canonical::digest(&body);
            format!("{}-{}", a.name, &digest.hex()[..10])
        } else {
            a.name.clone()
        };
        let Value::Object(body) = body else {
            unreachable!("built as an object")
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_files_read_as_kubectl_reads_them() {
        let text = "# settings\nA=1\n\n  B = x\nURL=http://h/?a=b\nEMPTY=\n";
        let pairs = parse_env_file(text);
        assert!(
            pairs.is_err(),
            "a space before = makes `B ` an invalid name"
        );
        let text = "# settings\nA=1\n\nURL=http://h/?a=b\nEMPTY=\nQUOTED=\"kept\"\n";
        assert_eq!(
            parse_env_file(text).unwrap(),
            vec![
                ("A", "1"),
                ("URL", "http://h/?a=b"),
                ("EMPTY", ""),
                ("QUOTED", "\"kept\"")
            ]
        );
    }

    #[test]
    fn a_line_without_a_value_or_a_bad_name_is_refused_with_its_line() {
        assert_eq!(parse_env_file("A=1\nHOME\n").unwrap_err().0, 2);
        assert_eq!(parse_env_file("1A=x\n").unwrap_err().0, 1);
        assert_eq!(parse_env_file("a.b=x\n").unwrap_err().0, 1);
        assert_eq!(line_offset("a\nbc\nd", 3), Some(5));
        assert_eq!(line_offset("a\nbc\nd", 1), Some(0));
    }
}
