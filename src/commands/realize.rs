//! `kiln plan` and `kiln apply`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::cli::{ApplyArgs, ClusterArgs, PlanArgs};
use crate::commands::Failure;
use crate::printer::Printer;
use crate::realize::lock::LockOptions;
use crate::realize::plan::render;
use crate::realize::{apply as apply_plan, connect_and_plan, ApplyOptions, RealizeError, Realized};

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn failure(e: RealizeError) -> Failure {
    Failure {
        code: e.exit_code(),
        report: miette::Report::new(e),
    }
}

async fn plan_for(
    args: &ClusterArgs,
    store: &Path,
    lock: Option<&LockOptions>,
    printer: &Printer,
) -> Result<Realized, RealizeError> {
    connect_and_plan(
        &args.dir,
        store,
        args.env.clone(),
        args.kubeconfig.as_deref(),
        args.context.as_deref(),
        &args.applyset_namespace,
        lock,
        |holder, since| {
            printer.status(&format!(
                "waiting for the set's lock, held by `{holder}` since {since}"
            ));
        },
    )
    .await
}

fn print_warnings(r: &Realized, printer: &Printer) {
    for w in &r.warnings {
        printer.status(&format!("warning: {w}"));
    }
}

fn http_json(r: &Realized) -> serde_json::Value {
    serde_json::json!({
        "requests": r.cluster.counters().requests.load(Ordering::Relaxed),
        "writes": r.cluster.counters().writes.load(Ordering::Relaxed),
    })
}

/// `kiln plan`: 0, or with `--detailed-exitcode` 0 (no changes) / 2 (changes) / 1 (error).
pub fn plan(args: &PlanArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    let r = runtime()
        .block_on(plan_for(&args.cluster, store, None, printer))
        .map_err(|e| {
            let mut f = failure(e);
            if args.detailed_exitcode {
                f.code = 1;
            }
            f
        })?;
    print_warnings(&r, printer);
    if args.cluster.json {
        let mut v = serde_json::to_value(&r.plan).expect("plan serializes");
        v["http"] = http_json(&r);
        v["warnings"] = serde_json::json!(r.warnings);
        printer.json(&v);
    } else {
        printer.data(&render(&r.plan));
    }
    Ok(if args.detailed_exitcode && r.plan.has_changes() {
        2
    } else {
        0
    })
}

fn confirm(n: usize) -> bool {
    if !std::io::stdin().is_terminal() {
        return false;
    }
    let mut err = std::io::stderr();
    let _ = write!(err, "kiln apply will delete {n} objects. Continue? [y/N] ");
    let _ = err.flush();
    let mut line = String::new();
    let _ = std::io::stdin().lock().read_line(&mut line);
    matches!(line.trim(), "y" | "Y" | "yes")
}

/// `kiln apply`.
pub fn apply(args: &ApplyArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    let rt = runtime();
    let lock = LockOptions {
        timeout: Duration::from_secs(args.lock_timeout),
        ttl: Duration::from_secs(args.lock_ttl),
    };
    let mut r = rt
        .block_on(plan_for(&args.cluster, store, Some(&lock), printer))
        .map_err(failure)?;
    let guard = r.lock.take();
    print_warnings(&r, printer);
    if !args.cluster.json {
        printer.status(render(&r.plan).trim_end());
    }
    let options = ApplyOptions {
        force_conflicts: args.force_conflicts,
        wait: !args.no_wait,
        skip_workload_gates: args.skip_workload_gates,
        timeout: Duration::from_secs(args.timeout),
        yes: args.yes,
        parallel: args.parallel,
    };
    let result = rt.block_on(apply_plan(&r, &options, confirm));
    if let Some(guard) = guard {
        if guard.lost() {
            printer.status(
                "warning: the set's lock expired and was taken by another apply during this one",
            );
        }
        if let Err(e) = rt.block_on(guard.release()) {
            printer.status(&format!(
                "warning: {}",
                kiln_core::error_chain::error_chain(&e)
            ));
        }
    }
    let report = result.map_err(failure)?;
    if args.cluster.json {
        let mut v = serde_json::to_value(&r.plan).expect("plan serializes");
        v["applied"] = serde_json::json!(report);
        v["http"] = http_json(&r);
        v["warnings"] = serde_json::json!(r.warnings);
        printer.json(&v);
    }
    printer.status(&format!(
        "applied {} objects, deleted {} ({} requests, {} writes)",
        report.applied, report.deleted, report.requests, report.writes
    ));
    Ok(0)
}
