//! [`RuleGraph`]: the DAG of the rules that take part in one environment.

use std::collections::HashMap;

use petgraph::graph::{DiGraph, NodeIndex};
use petgraph::Direction;

use crate::diagnostic::Diagnostic;
use crate::name::EnvName;
use crate::project::{Project, RuleIdx};

/// The rule DAG. Edges run from a dependency to its dependent. Node weights are indices into
/// [`Project::rules`].
#[derive(Debug, Clone)]
pub struct RuleGraph {
    graph: DiGraph<RuleIdx, ()>,
    /// Nodes in a topological order (dependencies first), ties broken by rule name.
    order: Vec<NodeIndex>,
}

impl RuleGraph {
    /// Builds the graph of the rules in `env`, checking that every dependency exists there and
    /// that there is no cycle; the first error (see [`RuleGraph::build_all`]).
    pub fn build(project: &Project, env: Option<&EnvName>) -> Result<Self, Box<Diagnostic>> {
        Self::build_all(project, env).map_err(|mut errors| Box::new(errors.remove(0)))
    }

    /// [`RuleGraph::build`], reporting every rule with a dependency that does not exist (or
    /// that is itself), in rule-name order; a cycle is looked for once every edge exists.
    pub fn build_all(project: &Project, env: Option<&EnvName>) -> Result<Self, Vec<Diagnostic>> {
        let mut graph = DiGraph::new();
        let mut index: HashMap<&str, NodeIndex> = HashMap::new();
        for (i, rule) in project.indexed_rules() {
            if rule.in_env(env) {
                index.insert(rule.name.as_str(), graph.add_node(i));
            }
        }
        let mut seen: std::collections::HashSet<NodeIndex> = std::collections::HashSet::new();
        let mut errors = Vec::new();
        for node in graph.node_indices().collect::<Vec<_>>() {
            let rule = &project[graph[node]];
            seen.clear();
            for dep in &rule.deps {
                let Some(&from) = index.get(dep.value.as_str()) else {
                    let d = if let Some(other) = project.rule(dep.value.as_str()) {
                        project
                            .diagnostic(
                                &dep.loc,
                                Some(&rule.name),
                                format!(
                                    "dependency `{}` does not exist in environment `{}`",
                                    dep.value,
                                    env.map_or("(none)", EnvName::as_str)
                                ),
                            )
                            .with_hint(format!(
                                "`{}` is limited by `envs` to {:?}",
                                other.name,
                                other
                                    .envs
                                    .as_deref()
                                    .unwrap_or_default()
                                    .iter()
                                    .map(EnvName::as_str)
                                    .collect::<Vec<_>>()
                            ))
                    } else {
                        project.diagnostic(
                            &dep.loc,
                            Some(&rule.name),
                            format!("unknown dependency `{}`", dep.value),
                        )
                    };
                    errors.push(d);
                    continue;
                };
                if from == node {
                    errors.push(project.diagnostic(
                        &dep.loc,
                        Some(&rule.name),
                        "a rule cannot depend on itself",
                    ));
                    continue;
                }
                // A dependency named twice is one edge, added where it was first named. Not
                // `update_edge`, which scans the dependency's outgoing edges each time:
                // quadratic for a rule that 100,000 others depend on (a wide fan-out took 7.5 s).
                if seen.insert(from) {
                    graph.add_edge(from, node, ());
                }
            }
        }
        if !errors.is_empty() {
            return Err(errors);
        }
        let mut g = Self {
            graph,
            order: Vec::new(),
        };
        g.order = g.topological_order(project).map_err(|e| vec![*e])?;
        Ok(g)
    }

    /// Kahn's algorithm with a name-ordered ready set, so the order is deterministic.
    fn topological_order(&self, project: &Project) -> Result<Vec<NodeIndex>, Box<Diagnostic>> {
        let mut indegree: Vec<usize> = self
            .graph
            .node_indices()
            .map(|n| {
                self.graph
                    .neighbors_directed(n, Direction::Incoming)
                    .count()
            })
            .collect();
        let mut ready: std::collections::BTreeSet<(RuleIdx, NodeIndex)> = self
            .graph
            .node_indices()
            .filter(|n| indegree[n.index()] == 0)
            .map(|n| (self.graph[n], n))
            .collect();
        let mut order = Vec::with_capacity(self.graph.node_count());
        while let Some((_, n)) = ready.pop_first() {
            order.push(n);
            for m in self.graph.neighbors_directed(n, Direction::Outgoing) {
                indegree[m.index()] -= 1;
                if indegree[m.index()] == 0 {
                    ready.insert((self.graph[m], m));
                }
            }
        }
        if order.len() == self.graph.node_count() {
            return Ok(order);
        }
        Err(Box::new(self.cycle_diagnostic(project)))
    }

    fn cycle_diagnostic(&self, project: &Project) -> Diagnostic {
        let sccs = petgraph::algo::tarjan_scc(&self.graph);
        let scc = sccs
            .into_iter()
            .filter(|c| c.len() > 1)
            .min_by_key(|c| c.iter().map(|n| self.graph[*n]).min())
            .expect("a graph that is not a DAG has a cycle");
        let members: std::collections::HashSet<NodeIndex> = scc.iter().copied().collect();
        let start = *scc
            .iter()
            .min_by_key(|n| self.graph[**n])
            .expect("non-empty");
        // Walk inside the component, preferring the smallest-named next rule, until we return.
        let mut path = vec![start];
        let mut seen = std::collections::HashSet::new();
        let mut cur = start;
        loop {
            seen.insert(cur);
            let next = self
                .graph
                .neighbors_directed(cur, Direction::Incoming)
                .filter(|n| members.contains(n))
                .min_by_key(|n| (*n != start, self.graph[*n]))
                .expect("a node in a cycle has a dependency in it");
            if next == start || seen.contains(&next) {
                path.push(next);
                break;
            }
            path.push(next);
            cur = next;
        }
        let names: Vec<&str> = path
            .iter()
            .map(|n| project[self.graph[*n]].name.as_str())
            .collect();
        let first = &project[self.graph[start]];
        let loc = first
            .deps
            .iter()
            .find(|d| d.value.as_str() == names[1])
            .map_or(first.loc.clone(), |d| d.loc.clone());
        project
            .diagnostic(
                &loc,
                Some(&first.name),
                format!("dependency cycle: {}", names.join(" -> ")),
            )
            .with_hint("each arrow reads \"depends on\"; remove one of these `deps` entries")
    }

    /// Nodes in topological order.
    pub fn order(&self) -> &[NodeIndex] {
        &self.order
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.graph.node_count()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.graph.node_count() == 0
    }

    /// The index into [`Project::rules`] of `node`.
    pub fn rule_index(&self, node: NodeIndex) -> RuleIdx {
        self.graph[node]
    }

    /// Direct dependencies of `node`.
    pub fn dependencies(&self, node: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.neighbors_directed(node, Direction::Incoming)
    }

    /// Direct dependents of `node`.
    pub fn dependents(&self, node: NodeIndex) -> impl Iterator<Item = NodeIndex> + '_ {
        self.graph.neighbors_directed(node, Direction::Outgoing)
    }

    /// Every edge as (dependency, dependent).
    pub fn edges(&self) -> impl Iterator<Item = (NodeIndex, NodeIndex)> + '_ {
        use petgraph::visit::EdgeRef;
        self.graph
            .edge_references()
            .map(|e| (e.source(), e.target()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::{load_project, LoadError};

    fn load(toml: &str) -> Project {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("kiln.toml"), toml).unwrap();
        match load_project(d.path()) {
            Ok(p) => p,
            Err(LoadError::Invalid(e)) => panic!("{e}"),
            Err(e) => panic!("{e}"),
        }
    }

    #[test]
    fn orders_dependencies_first() {
        let p = load("[project]\nname='p'\n[rule.c]\nkind='k'\ndeps=['b']\n[rule.b]\nkind='k'\ndeps=['a']\n[rule.a]\nkind='k'\n");
        let g = RuleGraph::build(&p, None).unwrap();
        let names: Vec<_> = g
            .order()
            .iter()
            .map(|n| p[g.rule_index(*n)].name.to_string())
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
    }

    #[test]
    fn lists_the_cycle() {
        let p = load("[project]\nname='p'\n[rule.a]\nkind='k'\ndeps=['c']\n[rule.b]\nkind='k'\ndeps=['a']\n[rule.c]\nkind='k'\ndeps=['b']\n[rule.d]\nkind='k'\n");
        let e = RuleGraph::build(&p, None).unwrap_err();
        assert!(
            e.message.contains("dependency cycle: a -> c -> b -> a"),
            "{}",
            e.message
        );
        assert_eq!((e.line, e.rule.as_deref()), (5, Some("a")));
    }

    #[test]
    fn a_dependency_named_twice_is_one_edge_in_the_order_first_written() {
        let p = load("[project]\nname='p'\n[rule.a]\nkind='k'\n[rule.b]\nkind='k'\n[rule.c]\nkind='k'\ndeps=['b', 'a', 'b']\n");
        let g = RuleGraph::build(&p, None).unwrap();
        let c = g.order()[2];
        let deps: Vec<_> = g
            .dependencies(c)
            .map(|n| p[g.rule_index(n)].name.to_string())
            .collect();
        let mut sorted = deps.clone();
        sorted.sort();
        assert_eq!(sorted, ["a", "b"]);
        assert_eq!(g.edges().count(), 2);
    }

    #[test]
    fn every_unknown_dependency_is_reported_in_one_run() {
        let p = load("[project]\nname='p'\n[rule.a]\nkind='k'\ndeps=['nope1']\n[rule.b]\nkind='k'\ndeps=['nope2', 'b']\n[rule.c]\nkind='k'\ndeps=['a']\n");
        let errors = RuleGraph::build_all(&p, None).unwrap_err();
        let messages: Vec<(&str, Option<&str>)> = errors
            .iter()
            .map(|e| (e.message.as_str(), e.rule.as_deref()))
            .collect();
        assert_eq!(
            messages,
            [
                ("unknown dependency `nope1`", Some("a")),
                ("unknown dependency `nope2`", Some("b")),
                ("a rule cannot depend on itself", Some("b")),
            ]
        );
    }

    #[test]
    fn unknown_dependency_is_located() {
        let p = load("[project]\nname='p'\n[rule.a]\nkind='k'\ndeps=['nope']\n");
        let e = RuleGraph::build(&p, None).unwrap_err();
        assert_eq!(e.message, "unknown dependency `nope`");
        assert_eq!((e.line, e.column), (5, 7));
    }

    #[test]
    fn env_filtering() {
        let p = load("[project]\nname='p'\n[env.prod]\n[env.dev]\n[rule.a]\nkind='k'\nenvs=['prod']\n[rule.b]\nkind='k'\ndeps=['a']\n");
        let prod = EnvName::new("prod").unwrap();
        assert_eq!(RuleGraph::build(&p, Some(&prod)).unwrap().len(), 2);
        let dev = EnvName::new("dev").unwrap();
        let e = RuleGraph::build(&p, Some(&dev)).unwrap_err();
        assert!(e.message.contains("does not exist in environment `dev`"));
    }
}
