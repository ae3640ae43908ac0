//! `kiln diff`: how two environments' rendered platforms differ, or this checkout's from the
//! last build. Objects are compared across the whole environment (every realized rule's
//! `objects/`), with the same structured diffs as `kiln audit`; rules whose output differs are
//! listed beside them.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::time::Instant;

use kiln_core::{RelPath, Tree};
use kiln_store::LocalStore;
use serde::Serialize;

use crate::build::treediff::{diff_trees, render, EntryChange};
use crate::build::{BuildOptions, EngineError, Loaded};
use crate::cli::DiffArgs;
use crate::commands::Failure;
use crate::printer::Printer;

/// One side: every rule's output and tree, and which rules are realized.
struct Platform {
    label: String,
    outputs: BTreeMap<String, kiln_core::Digest>,
    objects: Tree,
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
    let options = BuildOptions::default()
        .vars(args.vars.map())
        .unsandboxed(args.vars.unsandboxed);
    let (old, new) = match (args.env.as_slice(), args.since.as_deref()) {
        ([a, b], None) => (
            build(args, store, &options, Some(a))?,
            build(args, store, &options, Some(b))?,
        ),
        ([_] | [], Some("last")) => {
            let env = args.env.first().map(String::as_str);
            let loaded = load(args, env)?;
            let key = crate::build::project_key(&loaded.project);
            let s = LocalStore::open(store)?;
            let root = s
                .read_root(&key, &loaded.selected.instance_name())
                .ok_or_else(|| EngineError::NoEarlierBuild {
                    env: loaded.selected.name().to_owned(),
                })?;
            let mut trees = BTreeMap::new();
            for (name, e) in &root.rules {
                trees.insert(name.to_string(), Arc::new(s.load(&e.output.output)?));
            }
            let old = platform(&loaded, "the last build".into(), &trees);
            (old, build(args, store, &options, env)?)
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
    let objects = diff_trees(&old.objects, &new.objects);
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
    loaded.selected.override_vars(&args.vars.map())?;
    Ok(loaded)
}

fn build(
    args: &DiffArgs,
    store: &Path,
    options: &BuildOptions,
    env: Option<&str>,
) -> Result<Platform, Failure> {
    let loaded = load(args, env)?;
    let (report, trees) =
        crate::build::build_and_load(&loaded, store, options, &|_, _| {}, Instant::now())?;
    if !report.success() {
        return Err(Failure {
            code: report.exit_code(),
            report: miette::miette!("the build of `{}` failed", loaded.selected.name()),
        });
    }
    Ok(platform(
        &loaded,
        format!("env {}", loaded.selected.name()),
        &trees,
    ))
}

/// Every realized rule's objects in one tree (`objects/…` paths are unique across rules of a
/// valid project; a dependent's copy of an object wins, as in realize).
fn platform(loaded: &Loaded, label: String, trees: &BTreeMap<String, Arc<Tree>>) -> Platform {
    let mut objects = Tree::new();
    let mut outputs = BTreeMap::new();
    for &node in loaded.graph.order() {
        let rule = &loaded.project[loaded.graph.rule_index(node)];
        let Some(tree) = trees.get(rule.name.as_str()) else {
            continue;
        };
        outputs.insert(rule.name.to_string(), tree.output_hash());
        if !rule.realize {
            continue;
        }
        for (path, entry) in tree.iter() {
            if path.as_str().starts_with("objects/") {
                let p: RelPath = path.clone();
                objects.insert(p, entry.clone());
            }
        }
    }
    Platform {
        label,
        outputs,
        objects,
    }
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
