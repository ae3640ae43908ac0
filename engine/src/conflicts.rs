//! One object, two rules: caught when building, not only when planning.
//!
//! Two rules whose artifacts hold the same object (`objects/<namespace>/<Kind.group>/<name>.yaml`)
//! with different content conflict unless one depends on the other (an overlay over its base),
//! the rule `kiln plan` applies (the CLI's `realize::desired`). Checking needs every realized
//! rule's object list, not only those built now, so the lists are kept in an index next to the
//! GC root (`roots/<project>/<env>.objects`, postcard), keyed by output hash. The no-op path
//! never reads it: a build that built nothing cannot have made a new conflict.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;

use kiln_core::graph::RuleGraph;
use kiln_core::project::{Project, RuleIdx};
use kiln_core::{Digest, Tree};
use kiln_store::LocalStore;
use serde::{Deserialize, Serialize};

use super::EngineError;

/// 128 bits of blake3: of an object's path, or of its content. Enough to tell 2^64 objects
/// apart, and a sixth of the path's printed size, which keeps the index small to read and write.
type Key = [u8; 16];

fn key(bytes: &[u8]) -> Key {
    truncated(&Digest::of(bytes))
}

fn truncated(digest: &Digest) -> Key {
    let mut k = [0; 16];
    k.copy_from_slice(&digest.as_bytes()[..16]);
    k
}

/// The objects of one artifact: (path key, content key). The path itself is recovered from the
/// artifact only to report a conflict.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(crate) struct ArtifactObjects {
    output: [u8; 32],
    objects: Vec<(Key, Key)>,
}

/// rule -> its artifact's objects.
#[derive(Debug, Default, Serialize, Deserialize)]
struct ObjectIndex {
    rules: BTreeMap<String, ArtifactObjects>,
}

pub(crate) fn objects_of(output: Digest, tree: &Tree) -> ArtifactObjects {
    ArtifactObjects {
        output: *output.as_bytes(),
        // The content keys are cut from the digests the output hash computed (or computes
        // now), so a large object is not hashed twice.
        objects: tree
            .iter()
            .zip(tree.content_digests())
            .filter(|((p, _), _)| p.as_str().starts_with("objects/"))
            .filter_map(|((p, _), digest)| {
                Some((key(p.as_str().as_bytes()), truncated(digest.as_ref()?)))
            })
            .collect(),
    }
}

/// Whether `node` depends, directly or through others, on the node with index `on`.
fn depends_on(graph: &RuleGraph, node: petgraph::graph::NodeIndex, on: usize) -> bool {
    let mut stack = vec![node];
    let mut visited = HashSet::new();
    while let Some(n) = stack.pop() {
        for d in graph.dependencies(n) {
            if d.index() == on {
                return true;
            }
            if visited.insert(d.index()) {
                stack.push(d);
            }
        }
    }
    false
}

/// The artifact path whose key is `k`, read from the artifact (only to report a conflict).
fn path_of(k: &Key, out: &RuleOutput<'_>, store: &LocalStore) -> String {
    let find = |tree: &Tree| {
        tree.iter()
            .map(|(p, _)| p.as_str())
            .find(|p| key(p.as_bytes()) == *k)
            .unwrap_or("an object")
            .to_owned()
    };
    match out.tree {
        Some(t) => find(t),
        None => store
            .load(&out.output)
            .map_or_else(|_| "an object".to_owned(), |t| find(&t)),
    }
}

/// A rule's output and, when built in this run, its tree.
pub struct RuleOutput<'a> {
    /// Rule index in the project.
    pub rule: RuleIdx,
    /// Its output hash.
    pub output: Digest,
    /// The tree, when at hand.
    pub tree: Option<&'a Arc<Tree>>,
    /// Its objects, when the tree was built here but not kept (too large to keep).
    pub objects: Option<&'a ArtifactObjects>,
}

/// Checks every pair of realized rules for one object with two contents, updating the index
/// (written back only with `keep_index`: a look-only build leaves it as it was).
/// `outputs` is indexed by graph node.
pub fn check(
    project: &Project,
    graph: &RuleGraph,
    store: &LocalStore,
    index_key: (&str, &str),
    outputs: &[Option<RuleOutput<'_>>],
    keep_index: bool,
) -> Result<(), EngineError> {
    let path = store.object_index_path(index_key.0, index_key.1);
    let mut index: ObjectIndex = std::fs::read(&path)
        .ok()
        .and_then(|b| postcard::from_bytes(&b).ok())
        .unwrap_or_default();
    let mut changed = false;
    // First bring the index up to date: only rules whose output moved are read.
    for &n in graph.order() {
        let Some(out) = &outputs[n.index()] else {
            continue;
        };
        let rule = &project[out.rule];
        if !rule.realize
            || index
                .rules
                .get(rule.name.as_str())
                .is_some_and(|a| a.output == *out.output.as_bytes())
        {
            continue;
        }
        let objects = match (out.tree, out.objects) {
            (Some(t), _) => objects_of(out.output, t),
            (None, Some(o)) => o.clone(),
            // Pulled from a remote cache and not downloaded ("build without the bytes"): left
            // out here; realize checks every object it reads for two rules' contents anyway.
            (None, None) if !store.has_object(&out.output) => {
                changed |= index.rules.remove(rule.name.as_str()).is_some();
                continue;
            }
            // Streamed: an artifact is never held in memory to find its objects.
            (None, None) => ArtifactObjects {
                output: *out.output.as_bytes(),
                objects: store
                    .hash_object(&out.output, |p| p.as_str().starts_with("objects/"))?
                    .into_iter()
                    .map(|(p, d)| (key(p.as_str().as_bytes()), truncated(&d)))
                    .collect(),
            },
        };
        index.rules.insert(rule.name.to_string(), objects);
        changed = true;
    }
    // path -> (node, rule, digest) of the artifact that holds it so far. Ancestry is asked only
    // for a path held with two contents, so the usual case costs one pass over the objects.
    let mut seen: HashMap<&Key, (usize, RuleIdx, &Key)> = HashMap::new();
    for &n in graph.order() {
        let Some(out) = &outputs[n.index()] else {
            continue;
        };
        let rule = &project[out.rule];
        if !rule.realize {
            continue;
        }
        let Some(held) = index.rules.get(rule.name.as_str()) else {
            continue;
        };
        for (p, digest) in &held.objects {
            match seen.get(p) {
                Some((_, _, other_digest)) if *other_digest == digest => {}
                Some(&(other, other_rule, _)) => {
                    // Graph order puts dependencies first: the later rule must depend on it.
                    if !depends_on(graph, n, other) {
                        return Err(EngineError::ObjectConflict {
                            object: path_of(p, out, store),
                            a: project[other_rule].name.to_string(),
                            b: rule.name.to_string(),
                        });
                    }
                    seen.insert(p, (n.index(), out.rule, digest));
                }
                None => {
                    seen.insert(p, (n.index(), out.rule, digest));
                }
            }
        }
    }
    if changed && keep_index {
        let live: HashSet<&str> = project.rules.iter().map(|r| r.name.as_str()).collect();
        index.rules.retain(|r, _| live.contains(r.as_str()));
        let bytes = postcard::to_allocvec(&index).expect("the index serializes");
        store.write_root_file(&path, &bytes)?;
    }
    Ok(())
}
