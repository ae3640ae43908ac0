//! `kiln plan`, `kiln apply` and `kiln destroy`.

use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::sync::atomic::Ordering;
use std::time::Duration;

use crate::cli::{ApplyArgs, ClusterArgs, DestroyArgs, LockArgs, PlanArgs};
use crate::commands::Failure;
use crate::printer::Printer;
use crate::realize::lock::{LockGuard, LockOptions};
use crate::realize::plan::render;
use crate::realize::{
    apply as apply_plan, connect_and_plan, connect_for_destroy, destroy as destroy_set,
    ApplyOptions, ApplyReport, PlanOptions, RealizeError, Realized, Target,
};

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

/// Runs `fut` until it ends or the user interrupts (Ctrl-C, SIGTERM); then it is dropped, which
/// stops its requests, and the caller releases the set's lock.
async fn until_interrupted<T>(
    fut: impl std::future::Future<Output = Result<T, RealizeError>>,
) -> Result<T, RealizeError> {
    tokio::select! {
        r = fut => r,
        () = async {
            while !kiln_core::interrupt::interrupted() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } => Err(RealizeError::Interrupted),
    }
}

fn target(args: &ClusterArgs, store: &Path) -> Target {
    Target {
        dir: args.dir.clone(),
        store_dir: store.to_path_buf(),
        env: args.env.clone(),
        kubeconfig: args.kubeconfig.clone(),
        context: args.context.clone(),
        parent_namespace: args.applyset_namespace.clone(),
    }
}

fn lock_options(args: &LockArgs) -> LockOptions {
    LockOptions {
        timeout: Duration::from_secs(args.lock_timeout),
        ttl: Duration::from_secs(args.lock_ttl),
    }
}

fn on_wait(printer: &Printer) -> impl Fn(&str, &str) + '_ {
    move |holder, since| {
        printer.status(&format!(
            "waiting for the set's lock, held by `{holder}` since {since}"
        ));
    }
}

fn print_warnings(r: &Realized, printer: &Printer) {
    for w in &r.warnings {
        printer.status(&format!("warning: {w}"));
    }
}

/// The plan as `--json` prints it (format version 1): the plan, the HTTP counts, the warnings,
/// and for apply and destroy what was done.
fn plan_json(r: &Realized, done: Option<&ApplyReport>) -> serde_json::Value {
    let mut v = serde_json::to_value(&r.plan).expect("plan serializes");
    if let Some(report) = done {
        v["applied"] = serde_json::json!(report);
    }
    v["http"] = http_json(r);
    v["warnings"] = serde_json::json!(r.warnings);
    v
}

fn http_json(r: &Realized) -> serde_json::Value {
    serde_json::json!({
        "requests": r.cluster.counters().requests.load(Ordering::Relaxed),
        "writes": r.cluster.counters().writes.load(Ordering::Relaxed),
    })
}

/// Releases the lock after a run, whatever its outcome; trouble with it is a warning.
fn release(rt: &tokio::runtime::Runtime, guard: Option<LockGuard>, printer: &Printer) {
    let Some(guard) = guard else { return };
    if guard.lost() {
        printer
            .status("warning: the set's lock expired and was taken by another run during this one");
    }
    if let Err(e) = rt.block_on(guard.release()) {
        printer.status(&format!(
            "warning: {}",
            kiln_core::error_chain::error_chain(&e)
        ));
    }
}

/// `kiln plan`: 0, or with `--detailed-exitcode` 0 (no changes) / 2 (changes) / 1 (error).
pub fn plan(args: &PlanArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    let options = PlanOptions {
        find_orphans: args.find_orphans,
        vars: args.cluster.vars.map(),
        unsandboxed: args.cluster.vars.unsandboxed,
        ..PlanOptions::default()
    };
    let r = runtime()
        .block_on(until_interrupted(connect_and_plan(
            &target(&args.cluster, store),
            &options,
            on_wait(printer),
        )))
        .map_err(|e| {
            let mut f = failure(e);
            if args.detailed_exitcode {
                f.code = 1;
            }
            f
        })?;
    print_warnings(&r, printer);
    if args.cluster.json {
        printer.json(&plan_json(&r, None));
    } else {
        printer.data(&render(&r.plan));
    }
    Ok(if args.detailed_exitcode && r.plan.has_changes() {
        2
    } else {
        0
    })
}

fn confirm(what: &str) -> impl FnOnce(usize) -> bool + '_ {
    move |n| {
        if !std::io::stdin().is_terminal() {
            return false;
        }
        let mut err = std::io::stderr();
        let _ = write!(err, "kiln {what} will delete {n} objects. Continue? [y/N] ");
        let _ = err.flush();
        let mut line = String::new();
        let _ = std::io::stdin().lock().read_line(&mut line);
        matches!(line.trim(), "y" | "Y" | "yes")
    }
}

/// `kiln apply`.
pub fn apply(args: &ApplyArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    let rt = runtime();
    let options = PlanOptions {
        lock: Some(lock_options(&args.lock)),
        find_orphans: args.prune_orphans,
        vars: args.cluster.vars.map(),
        unsandboxed: args.cluster.vars.unsandboxed,
    };
    let mut r = rt
        .block_on(until_interrupted(connect_and_plan(
            &target(&args.cluster, store),
            &options,
            on_wait(printer),
        )))
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
    let result = rt.block_on(until_interrupted(apply_plan(
        &r,
        &options,
        confirm("apply"),
    )));
    release(&rt, guard, printer);
    let report = result.map_err(failure)?;
    if args.cluster.json {
        printer.json(&plan_json(&r, Some(&report)));
    }
    printer.status(&format!(
        "applied {} objects, deleted {} ({} requests, {} writes)",
        report.applied, report.deleted, report.requests, report.writes
    ));
    Ok(0)
}

/// `kiln destroy`: every member of the set, then its parent.
pub fn destroy(args: &DestroyArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    let rt = runtime();
    let options = PlanOptions {
        lock: (!args.dry_run).then(|| lock_options(&args.lock)),
        find_orphans: args.find_orphans,
        vars: args.cluster.vars.map(),
        unsandboxed: false,
    };
    let mut r = rt
        .block_on(until_interrupted(connect_for_destroy(
            &target(&args.cluster, store),
            &options,
            on_wait(printer),
        )))
        .map_err(failure)?;
    let guard = r.lock.take();
    if args.dry_run || !args.cluster.json {
        let text = render(&r.plan);
        if args.dry_run && !args.cluster.json {
            printer.data(&text);
        } else {
            printer.status(text.trim_end());
        }
    }
    if args.dry_run {
        if args.cluster.json {
            printer.json(&plan_json(&r, None));
        }
        return Ok(0);
    }
    let wait = args.wait.then(|| Duration::from_secs(args.timeout));
    let result = rt.block_on(until_interrupted(destroy_set(
        &r,
        wait,
        args.yes,
        confirm("destroy"),
    )));
    release(&rt, guard, printer);
    let report = result.map_err(failure)?;
    if args.cluster.json {
        printer.json(&plan_json(&r, Some(&report)));
    }
    printer.status(&format!(
        "deleted {} objects, the parent included ({} requests, {} writes)",
        report.deleted, report.requests, report.writes
    ));
    Ok(0)
}
