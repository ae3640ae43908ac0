//! `kiln build`.

use std::path::Path;

use indicatif::{ProgressBar, ProgressStyle};
use kiln_core::scheduler::Schedule;

use crate::build::{build, BuildOptions, Status};
use crate::cli::BuildArgs;
use crate::commands::cache::{push_items, Caches};
use crate::commands::Failure;
use crate::printer::{Printer, Verbosity};

/// Runs `kiln build`: exit 0 when every rule is built or cached, 1 when a rule failed.
pub fn run(args: &BuildArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    let bar = printer.progress_enabled().then(|| {
        let bar = ProgressBar::hidden();
        bar.set_style(
            ProgressStyle::with_template("{spinner} [{bar:30}] {pos}/{len} {wide_msg}")
                .expect("valid template")
                .progress_chars("=> "),
        );
        bar.set_draw_target(indicatif::ProgressDrawTarget::stderr());
        bar
    });
    let on_progress = |total: usize, rule: &str| {
        if let Some(bar) = &bar {
            if rule.is_empty() {
                bar.set_length(total as u64);
            } else {
                bar.inc(1);
                bar.set_message(rule.to_owned());
            }
        }
    };
    let caches = Caches::open(&args.cache)?;
    let options = BuildOptions::default()
        .env(args.env.clone())
        .schedule(
            Schedule::default()
                .jobs(args.jobs)
                .keep_going(args.keep_going),
        )
        .vars(args.vars.map())
        .unsandboxed(args.vars.unsandboxed)
        .rules(args.rules.clone());
    let options = caches.apply_to(options);
    let result = build(&args.dir, store, &options, &on_progress);
    if let Some(bar) = &bar {
        bar.finish_and_clear();
    }
    let mut report = result?;
    // A push that fails leaves the build in the local store, but `--push` was not done: it is
    // said, and the exit code is 2 (a CI step that was to share the build must not pass).
    let mut push_failed = false;
    if report.success() {
        if let Err(f) = caches.push_if_asked(store, &push_items(&report)) {
            printer.error(&f.report);
            push_failed = true;
        }
    }
    report.cache = caches.traffic_json();
    for d in &report.diagnostics {
        printer.error(d);
    }
    if args.json {
        printer.json(&report);
    }
    let s = &report.summary;
    let verbose = printer.verbosity() >= Verbosity::Verbose;
    if verbose || s.built <= 50 {
        for r in report
            .rules
            .iter()
            .filter(|r| verbose || r.status == Status::Built)
        {
            printer.status(&format!(
                "  {:<9} {} ({}) {}",
                format!("{:?}", r.status).to_lowercase(),
                r.name,
                r.kind,
                r.output.map(|o| o.short()).unwrap_or_default()
            ));
        }
    }
    let pulled = if caches.is_empty() {
        String::new()
    } else {
        format!(", {} pulled", s.pulled)
    };
    let line = format!(
        "{} {} rules in {:.0} ms: {} built, {} cached{pulled}, {} failed, {} skipped (env {}, store {})",
        if report.success() {
            printer.paint("built", true)
        } else {
            printer.paint("failed", false)
        },
        s.rules,
        report.duration_ms,
        s.built,
        s.cached,
        s.failed,
        s.skipped,
        report.env,
        report.store
    );
    printer.status(&line);
    if let Some(traffic) = caches.traffic_line() {
        printer.status(&traffic);
    }
    if push_failed && report.exit_code() == 0 {
        printer.status("error: the build succeeded, but --push did not push everything");
        return Ok(2);
    }
    Ok(report.exit_code())
}
