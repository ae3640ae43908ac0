//! `overlay`: patch the objects of dependencies per environment, kustomize-style.
//!
//! ```toml
//! [rule.api-production]
//! kind = "overlay"
//! deps = ["api"]
//! envs = ["production"]
//! srcs = ["overlays/production/*.yaml"]   # strategic merge patches, matched by kind + name
//! namespace = "shop-prod"                  # sets the namespace of every namespaced object
//! images = { "shop/api" = "1.4.2" }        # new tag, or a full reference with `:`/`@`
//! replicas = { api = 5 }                   # by workload name
//! [[rule.api-production.patches]]
//! target = { kind = "Deployment", name = "api" }
//! strategic = { spec = { template = { spec = { containers = [ { name = "api", resources = { limits = { memory = "2Gi" } } } ] } } } }
//! [[rule.api-production.patches]]
//! target = { kind = "Service", name = "api" }
//! merge = { spec = { type = "LoadBalancer" } }          # RFC 7386 JSON merge patch
//! [[rule.api-production.patches]]
//! target = { kind = "Deployment" }
//! json = [ { op = "add", path = "/metadata/labels/tier", value = "web" } ]   # RFC 6902
//! ```
//!
//! A patch or image whose target matches no object is an error, so typos do not pass silently.

use std::collections::BTreeMap;

use kiln_core::interpolate::{references, Reference};
use kiln_core::kind::{parse_attrs, AttrError, BuildContext, BuildError, Kind, LoadedSource};
use kiln_core::Tree;
use serde::Deserialize;
use serde_json::Value;

use crate::k8s::K8sObject;
use crate::objects::{identity, parse_documents, read_objects, write_objects, CLUSTER_SCOPED};
use crate::strategic::strategic_merge;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(default)]
    patches: Vec<PatchAttr>,
    #[serde(default)]
    images: BTreeMap<String, String>,
    #[serde(default)]
    replicas: BTreeMap<String, i64>,
    #[serde(default)]
    namespace: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, String>,
    #[serde(default)]
    annotations: BTreeMap<String, String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct PatchAttr {
    target: Target,
    #[serde(default)]
    merge: Option<Value>,
    #[serde(default)]
    strategic: Option<Value>,
    #[serde(default)]
    json: Option<json_patch::Patch>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct Target {
    #[serde(default)]
    kind: Option<String>,
    #[serde(default)]
    name: Option<String>,
    #[serde(default)]
    namespace: Option<String>,
}

impl Target {
    fn matches(&self, obj: &Value) -> bool {
        let (kind, name, ns) = identity(obj);
        self.kind.as_deref().is_none_or(|k| k == kind)
            && self.name.as_deref().is_none_or(|n| n == name)
            && self.namespace.as_deref().is_none_or(|n| Some(n) == ns)
    }

    fn describe(&self) -> String {
        format!(
            "{} `{}`{}",
            self.kind.as_deref().unwrap_or("any kind"),
            self.name.as_deref().unwrap_or("*"),
            self.namespace
                .as_deref()
                .map(|n| format!(" in `{n}`"))
                .unwrap_or_default()
        )
    }
}

/// The `overlay` kind.
pub struct Overlay;

impl Kind for Overlay {
    fn name(&self) -> &'static str {
        "overlay"
    }

    fn version(&self) -> u32 {
        // 2: YAML written so that YAML 1.1 readers (kubectl, Helm, PyYAML) read it the same.
        2
    }

    fn check(&self, attrs: &Value) -> Result<(), AttrError> {
        let a: Attrs = parse_attrs(attrs)?;
        for (i, p) in a.patches.iter().enumerate() {
            let n = usize::from(p.merge.is_some())
                + usize::from(p.strategic.is_some())
                + usize::from(p.json.is_some());
            if n != 1 {
                return Err(AttrError::new(
                    format!("patches[{i}]"),
                    "give exactly one of `merge`, `strategic` or `json`",
                ));
            }
        }
        Ok(())
    }

    fn source_references(
        &self,
        _attrs: &Value,
        src: &LoadedSource,
    ) -> Result<Vec<Reference>, BuildError> {
        references(src.text()?)
            .map_err(|e| BuildError::source(&src.path, Some(e.offset()), e.to_string()))
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Tree, BuildError> {
        let a: Attrs = parse_attrs(cx.attrs)?;
        let mut objects = Vec::new();
        for dep in cx.deps.names() {
            let tree = cx.deps.tree(&dep)?;
            let objs = read_objects(&tree).map_err(|m| BuildError::Dependency {
                rule: dep.clone(),
                message: m.to_string(),
            })?;
            objects.extend(objs.into_iter().map(K8sObject::into_value));
        }
        if objects.is_empty() {
            return Err(BuildError::failed(
                "an overlay needs dependencies that produce Kubernetes objects",
            ));
        }
        apply_patch_files(cx, &mut objects)?;
        for (i, p) in a.patches.iter().enumerate() {
            let hits = apply(&mut objects, &p.target, |o| {
                if let Some(m) = &p.merge {
                    json_patch::merge(o, m);
                } else if let Some(s) = &p.strategic {
                    strategic_merge(o, s);
                } else if let Some(j) = &p.json {
                    json_patch::patch(o, j)
                        .map_err(|e| AttrError::new(format!("patches[{i}].json"), e.to_string()))?;
                }
                Ok(())
            })?;
            if hits == 0 {
                return Err(AttrError::new(
                    format!("patches[{i}].target"),
                    format!("{} matches no object", p.target.describe()),
                )
                .into());
            }
        }
        for (image, new) in &a.images {
            let hits: usize = objects.iter_mut().map(|o| set_image(o, image, new)).sum();
            if hits == 0 {
                return Err(AttrError::new(
                    format!("images.{image}"),
                    format!("no container uses image `{image}`"),
                )
                .into());
            }
        }
        for (name, n) in &a.replicas {
            let t = Target {
                name: Some(name.clone()),
                ..Default::default()
            };
            let hits = apply(&mut objects, &t, |o| {
                if let Some(spec) = o
                    .get_mut("spec")
                    .and_then(Value::as_object_mut)
                    .filter(|s| s.contains_key("template"))
                {
                    spec.insert("replicas".into(), Value::from(*n));
                }
                Ok(())
            })?;
            if hits == 0 {
                return Err(AttrError::new(
                    format!("replicas.{name}"),
                    format!("no workload is called `{name}`"),
                )
                .into());
            }
        }
        let checked = with_metadata(objects, &a)?;
        let mut tree = Tree::new();
        write_objects(&mut tree, checked)?;
        Ok(tree)
    }
}

/// Applies the patch files in `srcs` (strategic merge, interpolated first): each selects its
/// target by `kind` and `metadata.name` (and namespace) and must match an object.
fn apply_patch_files(cx: &BuildContext<'_>, objects: &mut [Value]) -> Result<(), BuildError> {
    for src in cx.srcs {
        let text = cx
            .scope
            .interpolate_text(src.text()?)
            .map_err(|e| BuildError::source(&src.path, Some(e.offset()), e.to_string()))?;
        for patch in parse_documents(&text, &src.path)? {
            let target = Target {
                kind: patch.get("kind").and_then(Value::as_str).map(str::to_owned),
                name: patch
                    .pointer("/metadata/name")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                namespace: patch
                    .pointer("/metadata/namespace")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
            };
            if target.kind.is_none() || target.name.is_none() {
                return Err(BuildError::source(
                    &src.path,
                    None,
                    "a patch file needs `kind` and `metadata.name` to select its target",
                ));
            }
            let hits = apply(objects, &target, |o| {
                strategic_merge(o, &patch);
                Ok(())
            })?;
            if hits == 0 {
                return Err(BuildError::source(
                    &src.path,
                    None,
                    format!("patch target {} matches no object", target.describe()),
                ));
            }
        }
    }
    Ok(())
}

/// Checks every object again (patches may have made anything of one) and sets the overlay's
/// namespace, labels and annotations through the checked type.
fn with_metadata(objects: Vec<Value>, a: &Attrs) -> Result<Vec<Value>, BuildError> {
    let mut checked = Vec::with_capacity(objects.len());
    for o in objects {
        let mut o = K8sObject::check(o).map_err(|e| {
            BuildError::failed(format!(
                "an object is no longer valid after the patches: {e}"
            ))
        })?;
        if let Some(ns) = &a.namespace {
            if !CLUSTER_SCOPED.contains(&o.kind()) {
                o.set_namespace(Some(ns));
            }
        }
        for (field, entries) in [("labels", &a.labels), ("annotations", &a.annotations)] {
            for (k, v) in entries {
                o.set_metadata_entry(field, k, v, false);
            }
        }
        checked.push(o.into_value());
    }
    Ok(checked)
}

fn apply(
    objects: &mut [Value],
    target: &Target,
    mut f: impl FnMut(&mut Value) -> Result<(), AttrError>,
) -> Result<usize, BuildError> {
    let mut hits = 0;
    for o in objects.iter_mut().filter(|o| target.matches(o)) {
        f(o)?;
        hits += 1;
    }
    Ok(hits)
}

/// Image name without tag or digest.
fn image_name(image: &str) -> &str {
    let no_digest = image.split('@').next().unwrap_or(image);
    match no_digest.rfind(':') {
        Some(i) if !no_digest[i..].contains('/') => &no_digest[..i],
        _ => no_digest,
    }
}

/// Replaces the image of every container whose image name is `name`; returns how many.
fn set_image(v: &mut Value, name: &str, new: &str) -> usize {
    match v {
        Value::Object(m) => {
            let mut n = 0;
            let is_container = m.get("name").is_some_and(Value::is_string);
            if let (true, Some(Value::String(img))) = (is_container, m.get("image")) {
                if image_name(img) == name {
                    let replacement = if new.contains(':') || new.contains('@') || new.contains('/')
                    {
                        new.to_owned()
                    } else {
                        format!("{name}:{new}")
                    };
                    m.insert("image".into(), Value::from(replacement));
                    n += 1;
                }
            }
            n + m
                .values_mut()
                .map(|c| set_image(c, name, new))
                .sum::<usize>()
        }
        Value::Array(items) => items.iter_mut().map(|c| set_image(c, name, new)).sum(),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn image_names() {
        assert_eq!(image_name("shop/api:1.2"), "shop/api");
        assert_eq!(
            image_name("registry:5000/shop/api"),
            "registry:5000/shop/api"
        );
        assert_eq!(
            image_name("registry:5000/shop/api:1@sha256:ab"),
            "registry:5000/shop/api"
        );
        let mut d = json!({"spec": {"template": {"spec": {"containers": [{"name": "a", "image": "shop/api:1"}, {"name": "b", "image": "other:1"}]}}}});
        assert_eq!(set_image(&mut d, "shop/api", "2"), 1);
        assert_eq!(
            d["spec"]["template"]["spec"]["containers"][0]["image"],
            "shop/api:2"
        );
    }
}
