//! `kiln audit`: are the recorded outputs reproducible?

use std::path::Path;

use kiln_core::scheduler::Schedule;

use crate::build::audit::{AuditReport, AuditStatus};
use crate::build::{Audit, BuildOptions};
use crate::cli::{AuditArgs, CacheArgs, CacheReadArgs};
use crate::commands::cache::Caches;
use crate::commands::Failure;
use crate::printer::Printer;

/// Runs `kiln audit`: exit 0 when every rebuild matched, 1 on any mismatch or failure.
pub fn run(args: &AuditArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    let mut loaded = crate::build::load(&args.dir, args.env.as_deref())?;
    loaded.override_vars(&args.vars.map())?;
    let unknown: Vec<String> = args
        .rules
        .iter()
        .filter(|r| !loaded.project.rules.iter().any(|x| x.name.as_str() == *r))
        .map(|r| format!("`{r}`"))
        .collect();
    if !unknown.is_empty() {
        return Err(Failure {
            code: 1,
            report: miette::miette!("no rule {} in this project", unknown.join(", ")),
        });
    }
    // Only looks: no GC root moves (see `BuildOptions::look_only`).
    let base = BuildOptions::default()
        .look_only(true)
        .schedule(Schedule::default().jobs(args.jobs))
        .vars(args.vars.map())
        .unsandboxed(args.vars.unsandboxed);
    let against = match &args.against {
        Some(url) => Some(Caches::open(&CacheArgs::from(&CacheReadArgs {
            caches: vec![url.clone()],
            trusted_keys: args.trusted_keys.clone(),
            ..CacheReadArgs::default()
        }))?),
        None => {
            // The records to compare with: the last build, made now if there is none (a no-op
            // when the project is built).
            let built = crate::build::build_loaded(
                &loaded,
                store,
                &base,
                &|_, _| {},
                std::time::Instant::now(),
            )?;
            if !built.success() {
                for d in &built.diagnostics {
                    printer.error(d);
                }
                return Ok(built.exit_code());
            }
            None
        }
    };
    let options = match &against {
        Some(caches) => caches.apply_to(base),
        None => base,
    };
    let audit = Audit {
        rules: (!args.rules.is_empty()).then(|| args.rules.iter().cloned().collect()),
        against_substituters: against.is_some(),
    };
    let report = crate::build::audit(&loaded, store, &options, audit)?;
    for d in &report.diagnostics {
        printer.error(d);
    }
    if args.json {
        printer.json(&report);
    } else {
        print_text(&report, printer);
    }
    Ok(report.exit_code())
}

fn print_text(report: &AuditReport, printer: &Printer) {
    for r in &report.rules {
        match r.status {
            AuditStatus::Differs | AuditStatus::Nondeterministic => {
                let label = if r.status == AuditStatus::Differs {
                    printer.paint("differs", false)
                } else {
                    "nondeterministic (declared)".to_owned()
                };
                printer.status(&format!(
                    "{label} {} ({}): recorded {} → rebuilt {}",
                    r.name,
                    r.kind,
                    r.recorded.map(|d| d.short()).unwrap_or_default(),
                    r.rebuilt.map(|d| d.short()).unwrap_or_default()
                ));
                printer.status(crate::build::treediff::render(&r.changes, "    ").trim_end());
                if let Some(e) = &r.error {
                    printer.status(&format!("    {e}"));
                }
            }
            AuditStatus::Unrecorded => {
                printer.status(&format!(
                    "unrecorded {} ({}): nothing to compare with",
                    r.name, r.kind
                ));
            }
            AuditStatus::Failed => {
                printer.status(&format!(
                    "failed {} ({}): {}",
                    r.name,
                    r.kind,
                    r.error.as_deref().unwrap_or("")
                ));
            }
            AuditStatus::Identical | AuditStatus::Skipped => {}
        }
    }
    let s = &report.summary;
    printer.status(&format!(
        "{:>8} {:>10} {:>10} {:>17} {:>11} {:>7} {:>10}",
        "checked", "identical", "differing", "nondeterministic", "unrecorded", "failed", "time"
    ));
    printer.status(&format!(
        "{:>8} {:>10} {:>10} {:>17} {:>11} {:>7} {:>8.0}ms",
        s.checked,
        s.identical,
        s.differing,
        s.nondeterministic,
        s.unrecorded,
        s.failed,
        report.duration_ms
    ));
}
