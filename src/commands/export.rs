//! `kiln export`: the rendered manifests of an environment, for GitOps.

use std::collections::BTreeMap;
use std::path::Path;

use crate::cli::ExportArgs;
use crate::commands::realize::{build_wanted, Target};
use crate::commands::Failure;
use crate::printer::Printer;

/// Runs `kiln export`: writes (or with `--check` compares) the directory. Exit 0, or 1 when
/// `--check` finds it out of date.
pub fn run(args: &ExportArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    let target = Target {
        dir: args.dir.clone(),
        store_dir: store.to_path_buf(),
        env: args.env.clone(),
        parent_namespace: args.applyset_namespace.clone(),
        vars: args.vars.map(),
        unsandboxed: args.vars.unsandboxed,
        ..Target::default()
    };
    let wanted = build_wanted(&target)?;
    let export = kiln_realize::export::export(wanted, "default").map_err(|e| Failure {
        code: 1,
        report: miette::miette!("{}", kiln_core::error_chain::error_chain(&e)),
    })?;
    for s in &export.secrets_left_out {
        printer.status(&format!(
            "note: {s} is left out: its values are resolved only when kiln applies it"
        ));
    }
    let existing = read_tree(&args.out).map_err(|e| io_failure(&args.out, e))?;
    let stale: Vec<String> = export
        .files
        .iter()
        .filter(|(p, c)| existing.get(*p) != Some(*c))
        .map(|(p, _)| p.clone())
        .chain(
            existing
                .keys()
                .filter(|p| !export.files.contains_key(*p))
                .cloned(),
        )
        .collect();
    if args.check {
        for p in &stale {
            printer.status(&format!("out of date: {p}"));
        }
        if stale.is_empty() {
            printer.status(&format!("{} is up to date", args.out.display()));
            return Ok(0);
        }
        return Ok(1);
    }
    for (path, content) in &export.files {
        if existing.get(path) == Some(content) {
            continue;
        }
        let file = args.out.join(path);
        if let Some(dir) = file.parent() {
            std::fs::create_dir_all(dir).map_err(|e| io_failure(dir, e))?;
        }
        std::fs::write(&file, content).map_err(|e| io_failure(&file, e))?;
    }
    for path in existing.keys().filter(|p| !export.files.contains_key(*p)) {
        let file = args.out.join(path);
        std::fs::remove_file(&file).map_err(|e| io_failure(&file, e))?;
        // Directories the removal emptied go too (a failure leaves an empty directory).
        let mut dir = file.parent();
        while let Some(d) = dir.filter(|d| *d != args.out) {
            if std::fs::remove_dir(d).is_err() {
                break;
            }
            dir = d.parent();
        }
    }
    printer.status(&format!(
        "exported {} objects to {} ({} files changed)",
        export.files.len(),
        args.out.display(),
        stale.len()
    ));
    Ok(0)
}

fn io_failure(path: &Path, e: std::io::Error) -> Failure {
    Failure {
        code: 2,
        report: miette::miette!("`{}`: {e}", path.display()),
    }
}

/// The exported files already in `dir` (`*/*/*.yaml`, the layout's shape), by relative path.
fn read_tree(dir: &Path) -> std::io::Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    if !dir.is_dir() {
        return Ok(out);
    }
    for ns in std::fs::read_dir(dir)? {
        let ns = ns?;
        if !ns.file_type()?.is_dir() {
            continue;
        }
        for kind in std::fs::read_dir(ns.path())? {
            let kind = kind?;
            if !kind.file_type()?.is_dir() {
                continue;
            }
            for file in std::fs::read_dir(kind.path())? {
                let file = file?;
                let name = file.file_name().to_string_lossy().into_owned();
                if !file.file_type()?.is_file() || !name.ends_with(".yaml") {
                    continue;
                }
                let rel = format!(
                    "{}/{}/{name}",
                    ns.file_name().to_string_lossy(),
                    kind.file_name().to_string_lossy()
                );
                out.insert(rel, std::fs::read_to_string(file.path())?);
            }
        }
    }
    Ok(out)
}
