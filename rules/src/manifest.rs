//! `manifest`: Kubernetes objects from YAML/JSON files (multi-document) or inline TOML.
//!
//! ```toml
//! [rule.api]
//! kind = "manifest"
//! srcs = ["k8s/api/*.yaml"]          # `${var.X}` / `${dep.R.K}` are interpolated in the text
//! namespace = "${var.namespace}"     # default namespace for namespaced objects
//! labels = { "app.kubernetes.io/part-of" = "shop" }
//! objects = [ { apiVersion = "v1", kind = "ServiceAccount", metadata = { name = "api" } } ]
//! from = ["api-rendered"]            # YAML files of dependencies (for example a `template` rule)
//! ```
//!
//! `interpolate = false` takes the files as they are: upstream install manifests often carry
//! shell `${VAR}`s in their commands, which are not kiln's to read.

use std::collections::BTreeMap;

use kiln_core::interpolate::{references, Reference};
use kiln_core::kind::{parse_attrs, AttrError, BuildContext, BuildError, Kind, LoadedSource};
use kiln_core::Tree;
use serde::Deserialize;
use serde_json::Value;

use crate::objects::{parse_documents, write_objects, MetadataAttrs};

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(default)]
    objects: Vec<Value>,
    #[serde(default)]
    from: Vec<String>,
    /// Whether `${...}` in the source files are kiln references (the default) or plain text.
    #[serde(default = "yes")]
    interpolate: bool,
    #[serde(flatten)]
    meta: MetadataAttrs,
}

fn yes() -> bool {
    true
}

/// The `manifest` kind.
pub struct Manifest;

/// Parses `text` and checks each object, locating the first bad one by its `kind:` line.
fn check_documents(text: &str, path: &kiln_core::RelPath) -> Result<Vec<Value>, BuildError> {
    let docs = parse_documents(text, path)?;
    for obj in &docs {
        crate::objects::check_object(obj).map_err(|m| {
            let name = obj.pointer("/metadata/name").and_then(Value::as_str);
            let offset = name.and_then(|n| text.find(n));
            BuildError::source(path, offset, m.to_string())
        })?;
    }
    Ok(docs)
}

impl Kind for Manifest {
    fn name(&self) -> &'static str {
        "manifest"
    }

    fn version(&self) -> u32 {
        // 2: YAML written so that YAML 1.1 readers (kubectl, Helm, PyYAML) read it the same.
        2
    }

    fn check(&self, attrs: &Value) -> Result<(), AttrError> {
        let a: Attrs = parse_attrs(attrs)?;
        for (i, o) in a.objects.iter().enumerate() {
            crate::objects::check_object(o)
                .map_err(|m| AttrError::new(format!("objects[{i}]"), m.to_string()))?;
        }
        Ok(())
    }

    fn source_references(
        &self,
        attrs: &Value,
        src: &LoadedSource,
    ) -> Result<Vec<Reference>, BuildError> {
        let text = src.text()?;
        let verbatim = !parse_attrs::<Attrs>(attrs).map_or(true, |a| a.interpolate);
        if verbatim {
            check_documents(text, &src.path)?;
            return Ok(Vec::new());
        }
        let refs = references(text)
            .map_err(|e| BuildError::source(&src.path, Some(e.offset()), e.to_string()))?;
        // A file without references is final text: its YAML and objects are checked here,
        // before anything is built or written (files with references are checked once
        // interpolated, at build time).
        if refs.is_empty() {
            check_documents(text, &src.path)?;
        }
        Ok(refs)
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Tree, BuildError> {
        let a: Attrs = parse_attrs(cx.attrs)?;
        let mut objects = Vec::new();
        for src in cx.srcs {
            let text = if a.interpolate {
                cx.scope
                    .interpolate_text(src.text()?)
                    .map_err(|e| BuildError::source(&src.path, Some(e.offset()), e.to_string()))?
            } else {
                src.text()?.to_owned()
            };
            objects.extend(check_documents(&text, &src.path)?);
        }
        // YAML files produced by dependencies (typically `template` rules).
        for f in crate::from_deps::files_from(cx, &a.from)? {
            let dep_err = |message: String| BuildError::Dependency {
                rule: f.rule.clone(),
                message,
            };
            let text = std::str::from_utf8(&f.content)
                .map_err(|_| dep_err(format!("`{}` is not UTF-8", f.path)))?;
            for obj in parse_documents(text, &f.path)? {
                crate::objects::check_object(&obj)
                    .map_err(|m| dep_err(format!("`{}`: {m}", f.path)))?;
                objects.push(obj);
            }
        }
        objects.extend(a.objects);
        for obj in &mut objects {
            a.meta.apply(obj);
        }
        let mut exports = BTreeMap::new();
        if let [only] = objects.as_slice() {
            exports.insert(
                "name".to_owned(),
                crate::objects::identity(only).1.to_owned(),
            );
        }
        let mut tree = Tree::new();
        write_objects(&mut tree, objects)?;
        tree.set_exports(&exports);
        Ok(tree)
    }
}
