//! Parallel execution over the rule DAG.
//!
//! A node starts as soon as all its dependencies are done, on a rayon pool of `jobs` threads.
//! A failed node skips its dependents; unless `keep_going`, no new node starts after a failure.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::OnceLock;

use petgraph::graph::NodeIndex;

use crate::graph::RuleGraph;

/// What happened to one node.
#[derive(Debug)]
pub enum Outcome<T, E> {
    /// It ran and succeeded.
    Done(T),
    /// It ran and failed.
    Failed(E),
    /// It did not run because a dependency failed or was skipped.
    Skipped {
        /// The dependency that failed first.
        failed_dependency: NodeIndex,
    },
    /// It did not run because the build stopped after a failure elsewhere.
    Cancelled,
}

impl<T, E> Outcome<T, E> {
    /// The value, when it ran and succeeded.
    pub fn done(&self) -> Option<&T> {
        match self {
            Outcome::Done(v) => Some(v),
            _ => None,
        }
    }
}

/// Options for [`execute`].
#[derive(Clone, Copy, Debug, Default)]
pub struct Schedule {
    jobs: usize,
    keep_going: bool,
}

impl Schedule {
    /// Number of parallel jobs; 0 means one per CPU.
    #[must_use]
    pub fn jobs(mut self, jobs: usize) -> Self {
        self.jobs = jobs;
        self
    }

    /// Whether to keep building independent rules after a failure.
    #[must_use]
    pub fn keep_going(mut self, keep_going: bool) -> Self {
        self.keep_going = keep_going;
        self
    }
}

/// Runs `work` on every node of `graph`, each after its dependencies. `work` gets the node and
/// its dependencies' results. Returns one outcome per node, indexed by `NodeIndex::index()`.
pub fn execute<T, E, F>(graph: &RuleGraph, schedule: Schedule, work: F) -> Vec<Outcome<T, E>>
where
    T: Send + Sync,
    E: Send + Sync,
    F: Fn(NodeIndex, &[(NodeIndex, &T)]) -> Result<T, E> + Sync,
{
    let n = graph.len();
    let results: Vec<OnceLock<Outcome<T, E>>> = (0..n).map(|_| OnceLock::new()).collect();
    let pending: Vec<AtomicUsize> = (0..n)
        .map(|i| AtomicUsize::new(graph.dependencies(NodeIndex::new(i)).count()))
        .collect();
    let stop = AtomicBool::new(false);
    let pool = rayon::ThreadPoolBuilder::new()
        .num_threads(schedule.jobs)
        .thread_name(|i| format!("kiln-build-{i}"))
        .build()
        .expect("thread pool");
    tracing::debug!(
        "scheduling {n} rules, at most {} rules at once",
        pool.current_num_threads()
    );
    let cx = Cx {
        graph,
        results: &results,
        pending: &pending,
        stop: &stop,
        keep_going: schedule.keep_going,
        work: &work,
    };
    pool.scope(|s| {
        // Roots are the nodes without dependencies, not those whose count reads zero: rules
        // spawned here finish while the loop goes on, and the dependents they release (count
        // at zero) must not be spawned a second time by this loop. A double run decremented
        // their dependents twice, which then ran before their other dependencies and were
        // skipped (seen on a 100,000-rule fan-out once building its graph got fast).
        for &node in graph.order() {
            if graph.dependencies(node).next().is_none() {
                let cx = &cx;
                s.spawn(move |s| cx.run(s, node));
            }
        }
    });
    results
        .into_iter()
        .map(|r| r.into_inner().unwrap_or(Outcome::Cancelled))
        .collect()
}

struct Cx<'a, T, E, F> {
    graph: &'a RuleGraph,
    results: &'a [OnceLock<Outcome<T, E>>],
    pending: &'a [AtomicUsize],
    stop: &'a AtomicBool,
    keep_going: bool,
    work: &'a F,
}

impl<'a, T, E, F> Cx<'a, T, E, F>
where
    T: Send + Sync,
    E: Send + Sync,
    F: Fn(NodeIndex, &[(NodeIndex, &T)]) -> Result<T, E> + Sync,
{
    fn run<'s>(&'s self, s: &rayon::Scope<'s>, node: NodeIndex) {
        let mut deps = Vec::new();
        let mut failed = None;
        for d in self.graph.dependencies(node) {
            match self.results[d.index()].get() {
                Some(Outcome::Done(v)) => deps.push((d, v)),
                _ => {
                    failed.get_or_insert(d);
                }
            }
        }
        deps.sort_by_key(|(d, _)| d.index());
        let outcome = if let Some(failed_dependency) = failed {
            Outcome::Skipped { failed_dependency }
        } else if self.stop.load(Ordering::Relaxed) || crate::interrupt::interrupted() {
            // Leave it unset: it becomes Cancelled, and so do its dependents.
            return;
        } else {
            match (self.work)(node, &deps) {
                Ok(v) => Outcome::Done(v),
                Err(e) => {
                    if !self.keep_going {
                        self.stop.store(true, Ordering::Relaxed);
                    }
                    Outcome::Failed(e)
                }
            }
        };
        let _ = self.results[node.index()].set(outcome);
        for next in self.graph.dependents(node) {
            if self.pending[next.index()].fetch_sub(1, Ordering::AcqRel) == 1 {
                s.spawn(move |s| self.run(s, next));
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::load::load_project;
    use crate::project::Project;
    use std::sync::Mutex;

    fn diamond() -> (tempfile::TempDir, Project) {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(
            d.path().join("kiln.toml"),
            "[project]\nname='p'\n[rule.a]\nkind='k'\n[rule.b]\nkind='k'\ndeps=['a']\n[rule.c]\nkind='k'\ndeps=['a']\n[rule.d]\nkind='k'\ndeps=['b','c']\n[rule.e]\nkind='k'\n",
        )
        .unwrap();
        let p = load_project(d.path()).unwrap();
        (d, p)
    }

    fn name(p: &Project, g: &RuleGraph, n: NodeIndex) -> String {
        p[g.rule_index(n)].name.to_string()
    }

    #[test]
    fn runs_after_dependencies_in_parallel() {
        for jobs in [1, 2, 8] {
            let (_d, p) = diamond();
            let g = RuleGraph::build(&p, None).unwrap();
            let log = Mutex::new(Vec::new());
            let out = execute(&g, Schedule::default().jobs(jobs), |n, deps| {
                let me = name(&p, &g, n);
                let sum: usize = deps.iter().map(|(_, v)| **v).sum();
                log.lock().unwrap().push(me);
                Ok::<usize, ()>(sum + 1)
            });
            let by_name = |s: &str| {
                out[g
                    .order()
                    .iter()
                    .find(|n| name(&p, &g, **n) == s)
                    .unwrap()
                    .index()]
                .done()
                .copied()
            };
            assert_eq!(by_name("d"), Some(5));
            let log = log.into_inner().unwrap();
            let pos = |s: &str| log.iter().position(|x| x == s).unwrap();
            assert!(pos("a") < pos("b") && pos("b") < pos("d") && pos("c") < pos("d"));
        }
    }

    #[test]
    fn every_rule_runs_once_while_the_roots_are_still_being_started() {
        // A root that finishes at once releases thousands of dependents while the starting
        // loop still walks them: none may start twice, none may run before its dependencies.
        let d = tempfile::tempdir().unwrap();
        let mut toml = String::from("[project]\nname='p'\n[rule.a]\nkind='k'\n");
        let leaves: Vec<String> = (0..3000).map(|i| format!("l{i:04}")).collect();
        for l in &leaves {
            toml.push_str(&format!("[rule.{l}]\nkind='k'\ndeps=['a']\n"));
        }
        toml.push_str(&format!(
            "[rule.z]\nkind='k'\ndeps=[{}]\n",
            leaves
                .iter()
                .map(|l| format!("'{l}'"))
                .collect::<Vec<_>>()
                .join(",")
        ));
        std::fs::write(d.path().join("kiln.toml"), toml).unwrap();
        let p = load_project(d.path()).unwrap();
        let g = RuleGraph::build(&p, None).unwrap();
        for _ in 0..5 {
            let runs: Vec<AtomicUsize> = (0..g.len()).map(|_| AtomicUsize::new(0)).collect();
            let out = execute(&g, Schedule::default().jobs(2), |n, deps| {
                runs[n.index()].fetch_add(1, Ordering::SeqCst);
                Ok::<usize, ()>(deps.len())
            });
            assert!(runs.iter().all(|r| r.load(Ordering::SeqCst) == 1));
            assert!(out.iter().all(|o| o.done().is_some()));
            let z = g.order()[g.len() - 1];
            assert_eq!(out[z.index()].done(), Some(&3000));
        }
    }

    #[test]
    fn failure_skips_dependents_and_keep_going_continues() {
        let (_d, p) = diamond();
        let g = RuleGraph::build(&p, None).unwrap();
        let out = execute(&g, Schedule::default().jobs(1).keep_going(true), |n, _| {
            if name(&p, &g, n) == "b" {
                Err("boom")
            } else {
                Ok(())
            }
        });
        let get = |s: &str| {
            &out[g
                .order()
                .iter()
                .find(|n| name(&p, &g, **n) == s)
                .unwrap()
                .index()]
        };
        assert!(matches!(get("b"), Outcome::Failed("boom")));
        assert!(matches!(get("d"), Outcome::Skipped { .. }));
        assert!(matches!(get("c"), Outcome::Done(())));
        assert!(matches!(get("e"), Outcome::Done(())));
    }

    #[test]
    fn without_keep_going_nothing_new_starts() {
        let (_d, p) = diamond();
        let g = RuleGraph::build(&p, None).unwrap();
        // One job: once `a` has failed, no other node starts (not even independent `e`, unless
        // it ran before `a`).
        let log = Mutex::new(Vec::new());
        let out = execute(&g, Schedule::default().jobs(1), |n, _| {
            let me = name(&p, &g, n);
            log.lock().unwrap().push(me.clone());
            if me == "a" {
                Err(())
            } else {
                Ok(())
            }
        });
        let log = log.into_inner().unwrap();
        assert_eq!(log.last().map(String::as_str), Some("a"), "{log:?}");
        assert!(log.len() <= 2);
        let cancelled = out
            .iter()
            .filter(|o| matches!(o, Outcome::Cancelled | Outcome::Skipped { .. }))
            .count();
        assert_eq!(cancelled, 5 - log.len());
    }
}
