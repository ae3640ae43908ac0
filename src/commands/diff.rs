//! `kiln diff`: how two environments' rendered platforms differ, or this checkout's from the
//! last build. Objects are compared across the whole environment (every realized rule's
//! `objects/`), with the same structured diffs as `kiln audit`; rules whose output differs are
//! listed beside them.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::Instant;

use kiln_core::{RelPath, Tree};
use kiln_store::LocalStore;
use serde::Serialize;

use crate::build::treediff::{diff_trees, render, EntryChange};
use crate::build::{BuildOptions, EngineError, Loaded};
use crate::cli::DiffArgs;
use crate::commands::Failure;
use crate::printer::Printer;

/// One side: every rule's output, and the project it was built from.
struct Platform {
    label: String,
    loaded: Loaded,
    outputs: BTreeMap<String, kiln_core::Digest>,
}

#[derive(Serialize)]
struct RuleChange {
    name: String,
    change: &'static str,
}

#[derive(Serialize)]
struct DiffReport {
    format_version: u32,
    old: String,
    new: String,
    rules: Vec<RuleChange>,
    objects: Vec<EntryChange>,
}

/// Runs `kiln diff`: exit 0 when nothing differs, 2 when something does (as `diff(1)` uses
/// 1, kiln keeps 1 for errors).
pub fn run(args: &DiffArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    // Only looks: the last build stays the last build, however often this runs.
    let options = BuildOptions::default()
        .look_only(true)
        .vars(args.vars.map())
        .unsandboxed(args.vars.unsandboxed);
    let (old, new) = match (args.env.as_slice(), args.since.as_deref()) {
        ([a, b], None) => (
            build(args, store, &options, Some(a), printer)?,
            build(args, store, &options, Some(b), printer)?,
        ),
        ([_] | [], Some("last")) => {
            let env = args.env.first().map(String::as_str);
            let loaded = load(args, env)?;
            let key = crate::build::project_key(&loaded.project);
            let root = LocalStore::open(store)?
                .read_root(&key, &loaded.selected.instance_name())
                .ok_or_else(|| EngineError::NoEarlierBuild {
                    env: loaded.selected.name().to_owned(),
                })?;
            let outputs = root
                .rules
                .iter()
                .map(|(n, e)| (n.to_string(), e.output.output))
                .collect();
            let old = Platform {
                label: "the last build".into(),
                loaded,
                outputs,
            };
            (old, build(args, store, &options, env, printer)?)
        }
        _ => {
            return Err(Failure {
                code: 1,
                report: miette::miette!(
                    "give two environments (`--env staging --env production`), or one and `--since last`"
                ),
            })
        }
    };
    let rules = rule_changes(&old, &new);
    // Only rules whose output differs (and the bases they may override) can hold objects that
    // differ: the others' objects are the same on both sides, and are not read.
    let changed: BTreeSet<&str> = rules.iter().map(|r| r.name.as_str()).collect();
    let local = LocalStore::open(store)?;
    let objects = diff_trees(
        &objects_of(&old, &changed, &local)?,
        &objects_of(&new, &changed, &local)?,
    );
    let changed = !rules.is_empty() || !objects.is_empty();
    if args.json {
        printer.json(&DiffReport {
            format_version: 1,
            old: old.label.clone(),
            new: new.label.clone(),
            rules,
            objects,
        });
    } else {
        printer.data(&format!("--- {}\n+++ {}", old.label, new.label));
        if !objects.is_empty() {
            printer.data(render(&objects, "").trim_end());
        }
        for r in &rules {
            printer.data(&format!("rule `{}` {}", r.name, r.change));
        }
        if !changed {
            printer.status("no differences");
        }
    }
    Ok(if changed { 2 } else { 0 })
}

fn load(args: &DiffArgs, env: Option<&str>) -> Result<Loaded, Failure> {
    let mut loaded = crate::build::load(&args.dir, env)?;
    loaded.override_vars(&args.vars.map())?;
    Ok(loaded)
}

fn build(
    args: &DiffArgs,
    store: &Path,
    options: &BuildOptions,
    env: Option<&str>,
    printer: &Printer,
) -> Result<Platform, Failure> {
    let loaded = load(args, env)?;
    let report = crate::build::build_loaded(&loaded, store, options, &|_, _| {}, Instant::now())?;
    if !report.success() {
        for d in &report.diagnostics {
            printer.error(d);
        }
        return Err(Failure {
            code: report.exit_code(),
            report: miette::miette!("the build of `{}` failed", loaded.selected.name()),
        });
    }
    let outputs = report
        .rules
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.output?)))
        .collect();
    Ok(Platform {
        label: format!("env {}", loaded.selected.name()),
        loaded,
        outputs,
    })
}

/// The realized objects of `side`'s rules in `changed` and of the rules they depend on, in one
/// tree (a dependent's copy of an object wins, as in realize).
fn objects_of(
    side: &Platform,
    changed: &BTreeSet<&str>,
    store: &LocalStore,
) -> Result<Tree, Failure> {
    let graph = &side.loaded.graph;
    let project = &side.loaded.project;
    let mut wanted: BTreeSet<usize> = BTreeSet::new();
    for &node in graph.order() {
        if changed.contains(project[graph.rule_index(node)].name.as_str()) {
            wanted.insert(node.index());
            wanted.extend(graph.dependencies(node).map(|d| d.index()));
        }
    }
    let mut objects = Tree::new();
    for &node in graph.order() {
        let rule = &project[graph.rule_index(node)];
        if !rule.realize || !wanted.contains(&node.index()) {
            continue;
        }
        let Some(out) = side.outputs.get(rule.name.as_str()) else {
            continue;
        };
        let tree = store.load(out)?;
        for (path, entry) in tree.iter() {
            if path.as_str().starts_with("objects/") {
                let p: RelPath = path.clone();
                objects.insert(p, entry.clone());
            }
        }
    }
    Ok(objects)
}

fn rule_changes(old: &Platform, new: &Platform) -> Vec<RuleChange> {
    let mut out = Vec::new();
    for (name, o) in &new.outputs {
        match old.outputs.get(name) {
            None => out.push(RuleChange {
                name: name.clone(),
                change: "added",
            }),
            Some(p) if p != o => out.push(RuleChange {
                name: name.clone(),
                change: "modified",
            }),
            Some(_) => {}
        }
    }
    for name in old.outputs.keys().filter(|n| !new.outputs.contains_key(*n)) {
        out.push(RuleChange {
            name: name.clone(),
            change: "removed",
        });
    }
    out
}
