//! `bundle`: merge dependencies' outputs into one artifact.
//!
//! ```toml
//! [rule.platform]
//! kind = "bundle"
//! deps = ["namespace", "api", "worker", "postgres"]
//! layout = "merged"          # "merged" (default): one tree, objects/ of all deps together
//!                            # "by-rule": each dependency under <rule>/
//! all_in_one = "platform.yaml"   # optional: every object in one multi-document YAML file
//! ```
//!
//! With `merged`, two dependencies writing the same path with different content is an error.

use kiln_core::kind::{parse_attrs, AttrError, BuildContext, BuildError, Kind};
use kiln_core::tree::Entry;
use kiln_core::{RelPath, Tree};
use serde::Deserialize;
use serde_json::Value;

use crate::objects::{read_objects, to_yaml};

#[derive(Debug, Deserialize, Default, PartialEq, Eq, Clone, Copy)]
#[serde(rename_all = "kebab-case")]
enum Layout {
    #[default]
    Merged,
    ByRule,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    #[serde(default)]
    layout: Layout,
    #[serde(default)]
    all_in_one: Option<String>,
}

/// The `bundle` kind.
pub struct Bundle;

impl Kind for Bundle {
    fn name(&self) -> &'static str {
        "bundle"
    }

    fn version(&self) -> u32 {
        // 2: YAML written so that YAML 1.1 readers (kubectl, Helm, PyYAML) read it the same.
        2
    }

    fn check(&self, attrs: &Value) -> Result<(), AttrError> {
        let a: Attrs = parse_attrs(attrs)?;
        if let Some(p) = &a.all_in_one {
            RelPath::new(p.as_str()).map_err(|e| AttrError::new("all_in_one", e.to_string()))?;
        }
        Ok(())
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Tree, BuildError> {
        let a: Attrs = parse_attrs(cx.attrs)?;
        if !cx.srcs.is_empty() {
            return Err(BuildError::failed("a bundle takes no `srcs`, only `deps`"));
        }
        let mut tree = Tree::new();
        for dep in cx.deps.names() {
            let dep_tree = cx.deps.tree(&dep)?;
            let prefix = RelPath::new(dep.as_str()).expect("rule names are valid paths");
            for (path, entry) in dep_tree.iter() {
                if path.as_str().starts_with(".kiln/") {
                    continue;
                }
                let dest = match a.layout {
                    Layout::Merged => path.clone(),
                    Layout::ByRule => prefix.join(path),
                };
                if let Some(existing) = tree.get(dest.as_str()) {
                    if existing != entry {
                        return Err(BuildError::Dependency {
                            rule: dep.clone(),
                            message: format!("`{dest}` is also produced, with other content, by an earlier dependency"),
                        });
                    }
                    continue;
                }
                tree.insert(dest, entry.clone());
            }
        }
        if let Some(name) = &a.all_in_one {
            let objects = read_objects(&merged_objects_view(&tree))
                .map_err(|e| BuildError::failed(e.to_string()))?;
            let docs: Vec<String> = objects.iter().map(|o| to_yaml(o.as_value())).collect();
            tree.insert_file(
                RelPath::new(name.as_str()).expect("checked"),
                docs.join("---\n").into_bytes(),
                false,
            );
        }
        tree.validate()
            .map_err(|e| BuildError::caused("the bundle is not a valid tree", e))?;
        Ok(tree)
    }
}

/// A view of `tree` with every `objects/` file (at any depth) moved to the top `objects/`.
fn merged_objects_view(tree: &Tree) -> Tree {
    tree.iter()
        .filter_map(|(p, e)| {
            let s = p.as_str();
            let idx = if s.starts_with("objects/") {
                Some(0)
            } else {
                s.find("/objects/").map(|i| i + 1)
            }?;
            Some((RelPath::new(&s[idx..]).ok()?, e.clone()))
        })
        .collect::<Vec<(RelPath, Entry)>>()
        .into_iter()
        .collect()
}
