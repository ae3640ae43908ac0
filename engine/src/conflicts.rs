//! One object, two rules: caught when building, not only when planning.
//!
//! Two rules whose artifacts hold the same object (`objects/<namespace>/<Kind.group>/<name>.yaml`)
//! with different content conflict unless one depends on the other (an overlay over its base),
//! the rule `kiln plan` applies (the CLI's `realize::desired`). Checking needs every realized
//! rule's object list, not only those built now, so the lists are kept in an index next to the
//! GC root (`roots/<project>/<env>.objects`, postcard), keyed by output hash. The no-op path
//! never reads it: a build that built nothing cannot have made a new conflict.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;

use kiln_core::graph::RuleGraph;
use kiln_core::project::Project;
use kiln_core::{Digest, Tree};
use kiln_store::LocalStore;
use serde::{Deserialize, Serialize};

use super::EngineError;

/// The objects of one artifact: path -> content hash.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct ArtifactObjects {
    output: Digest,
    objects: Vec<(String, Digest)>,
}

/// rule -> its artifact's objects.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ObjectIndex {
    rules: BTreeMap<String, ArtifactObjects>,
}

fn objects_of(output: Digest, tree: &Tree) -> ArtifactObjects {
    ArtifactObjects {
        output,
        objects: tree
            .iter()
            .filter(|(p, _)| p.as_str().starts_with("objects/"))
            .filter_map(|(p, e)| match e {
                kiln_core::tree::Entry::File { content, .. } => {
                    Some((p.to_string(), Digest::of(content)))
                }
                kiln_core::tree::Entry::Symlink { .. } => None,
            })
            .collect(),
    }
}

/// A rule's output and, when built in this run, its tree.
pub struct RuleOutput<'a> {
    /// Rule index in the project.
    pub rule: usize,
    /// Its output hash.
    pub output: Digest,
    /// The tree, when at hand.
    pub tree: Option<&'a Arc<Tree>>,
}

/// Checks every pair of realized rules for one object with two contents, updating the index.
/// `outputs` is indexed by graph node.
pub fn check(
    project: &Project,
    graph: &RuleGraph,
    store: &LocalStore,
    index_key: (&str, &str),
    outputs: &[Option<RuleOutput<'_>>],
) -> Result<(), EngineError> {
    let path = store.object_index_path(index_key.0, index_key.1);
    let mut index: ObjectIndex = std::fs::read(&path)
        .ok()
        .and_then(|b| postcard::from_bytes(&b).ok())
        .unwrap_or_default();
    let mut changed = false;
    let mut ancestors: Vec<HashSet<usize>> = vec![HashSet::new(); graph.len()];
    // path -> (node, rule, digest) of the artifact that holds it so far.
    let mut seen: BTreeMap<String, (usize, usize, Digest)> = BTreeMap::new();
    for &n in graph.order() {
        let mut anc = HashSet::new();
        for d in graph.dependencies(n) {
            anc.insert(d.index());
            anc.extend(ancestors[d.index()].iter().copied());
        }
        ancestors[n.index()] = anc;
        let Some(out) = &outputs[n.index()] else {
            continue;
        };
        let rule = &project.rules[out.rule];
        if !rule.realize {
            continue;
        }
        let name = rule.name.to_string();
        let fresh = index
            .rules
            .get(&name)
            .is_some_and(|a| a.output == out.output);
        if !fresh {
            let objects = match out.tree {
                Some(t) => objects_of(out.output, t),
                None => objects_of(out.output, &store.load(&out.output)?),
            };
            index.rules.insert(name.clone(), objects);
            changed = true;
        }
        for (p, digest) in &index.rules[&name].objects {
            match seen.get(p) {
                Some((other, other_rule, other_digest)) => {
                    if other_digest != digest && !ancestors[n.index()].contains(other) {
                        return Err(EngineError::ObjectConflict {
                            object: p.clone(),
                            a: project.rules[*other_rule].name.to_string(),
                            b: name,
                        });
                    }
                    if other_digest != digest {
                        seen.insert(p.clone(), (n.index(), out.rule, *digest));
                    }
                }
                None => {
                    seen.insert(p.clone(), (n.index(), out.rule, *digest));
                }
            }
        }
    }
    if changed {
        let live: HashSet<&str> = project.rules.iter().map(|r| r.name.as_str()).collect();
        index.rules.retain(|r, _| live.contains(r.as_str()));
        let bytes = postcard::to_allocvec(&index).expect("the index serializes");
        store.write_root_file(&path, &bytes)?;
    }
    Ok(())
}
