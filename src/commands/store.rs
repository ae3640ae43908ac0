//! `kiln store gc|verify|ls|path|cat`.

use std::path::Path;

use kiln_store::LocalStore;

use crate::build::{load, project_key, EngineError};
use crate::cli::{RuleRef, StoreCommand};
use crate::commands::cache::Caches;
use crate::commands::Failure;
use crate::printer::Printer;

/// Runs a store command.
// One arm per `kiln store` subcommand, each a few lines of calling the store and printing:
// the length is the number of subcommands, not logic to split.
/// A report with `format_version` first, as every `--json` output carries (see schemas/).
fn versioned(report: &impl serde::Serialize) -> serde_json::Value {
    let mut v = serde_json::json!({"format_version": 1});
    if let serde_json::Value::Object(fields) =
        serde_json::to_value(report).expect("report serializes")
    {
        v.as_object_mut().expect("object").extend(fields);
    }
    v
}

pub fn run(cmd: &StoreCommand, printer: &Printer, store_dir: &Path) -> Result<u8, Failure> {
    match cmd {
        StoreCommand::Gc { json } => {
            printer.detail("waiting for running builds to finish (gc needs the store to itself)");
            let store = LocalStore::open_exclusive(store_dir)?;
            let r = store.gc()?;
            if *json {
                printer.json(&versioned(&r));
            } else {
                printer.status(&format!(
                    "gc: kept {} roots and {} objects; deleted {} objects, {} records and {} stale roots; freed {:.1} MiB",
                    r.roots_kept,
                    r.objects_kept,
                    r.objects_deleted,
                    r.records_deleted,
                    r.roots_removed,
                    r.bytes_freed as f64 / (1 << 20) as f64
                ));
            }
            Ok(0)
        }
        StoreCommand::Verify { json } => {
            let store = LocalStore::open(store_dir)?;
            let r = store.verify()?;
            if *json {
                printer.json(&versioned(&r));
            }
            for c in &r.corrupt {
                printer.status(&format!(
                    "{} {}: {}",
                    printer.paint("corrupt", false),
                    c.path,
                    c.reason
                ));
            }
            if !r.remote_backed.is_empty() {
                printer.status(&format!(
                    "{} root entries are remote-backed: pulled from a cache, their archives never fetched (kept; a build with the cache fetches them when read)",
                    r.remote_backed.len()
                ));
            }
            printer.status(&format!(
                "verified {} objects and {} action entries: {} corrupt{}",
                r.objects,
                r.actions,
                r.corrupt.len(),
                if r.corrupt.is_empty() {
                    ""
                } else {
                    " (moved aside; the next build rebuilds them)"
                }
            ));
            Ok(if r.corrupt.is_empty() { 0 } else { 1 })
        }
        StoreCommand::Ls { json } => {
            let store = LocalStore::open(store_dir)?;
            let roots = store.roots()?;
            if *json {
                let list: Vec<_> = roots.iter().map(|(_, r)| r).collect();
                printer.json(&serde_json::json!({"format_version": 1, "roots": list}));
            } else {
                for (_, r) in &roots {
                    let size: u64 = r.rules.values().map(|e| e.output.size).sum();
                    printer.data(&format!(
                        "{} [{}] {} ({} rules, {:.1} KiB)",
                        r.project,
                        r.env,
                        r.project_dir.display(),
                        r.rules.len(),
                        size as f64 / 1024.0
                    ));
                    for (name, e) in &r.rules {
                        printer.data(&format!("  {name:<32} {:<10} {}", e.kind, e.output.output));
                    }
                }
            }
            Ok(0)
        }
        StoreCommand::Path(rule) => {
            let (store, out) = resolve(rule, store_dir)?;
            printer.data(&store.materialize(&out)?.display().to_string());
            Ok(0)
        }
        StoreCommand::Cat { rule, file } => {
            let (store, out) = resolve(rule, store_dir)?;
            // Streamed: one file at a time, after the artifact is checked against its hash.
            let mut found = false;
            store.visit_object(&out, |entry| {
                let kiln_store::archive::Visited::File { path, content, .. } = entry else {
                    return Ok(());
                };
                let wanted = match file {
                    Some(f) => path.as_str() == f.as_str(),
                    None => !path.as_str().starts_with(".kiln/"),
                };
                if !wanted {
                    return Ok(());
                }
                found = true;
                if file.is_none() {
                    printer.bytes(format!("# ==> {path} <==\n").as_bytes());
                }
                let mut last = b'\n';
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let n = content.read(&mut buf)?;
                    if n == 0 {
                        break;
                    }
                    printer.bytes(&buf[..n]);
                    last = buf[n - 1];
                }
                if file.is_none() && last != b'\n' {
                    printer.bytes(b"\n");
                }
                Ok(())
            })?;
            if let (Some(f), false) = (file, found) {
                return Err(Failure {
                    code: 1,
                    report: miette::miette!("artifact of `{}` has no file `{f}`", rule.rule),
                });
            }
            Ok(0)
        }
    }
}

fn resolve(r: &RuleRef, store_dir: &Path) -> Result<(LocalStore, kiln_core::Digest), Failure> {
    // The cache settings are checked whether or not a fetch turns out to be needed: a bad key
    // or token file is refused, not ignored.
    let caches = Caches::open(&crate::cli::CacheArgs::from(&r.cache))?;
    let loaded = load(&r.dir, r.env.as_deref())?;
    let store = LocalStore::open(store_dir)?;
    let env = loaded.selected.name().to_owned();
    let not_built = || EngineError::NotBuilt {
        rule: r.rule.clone(),
        env: env.clone(),
    };
    let root = store
        .read_root(&project_key(&loaded.project), &env)
        .ok_or_else(not_built)?;
    let entry = root.rules.get(r.rule.as_str()).ok_or_else(not_built)?;
    let out = entry.output.output;
    if !store.has_object(&out) {
        // Pulled lazily by an earlier build: fetched now, from the caches in effect.
        caches.fetch(store_dir, &out)?;
    }
    Ok((store, out))
}
