//! `kiln plan`, `kiln apply` and `kiln destroy`.

use std::collections::BTreeMap;
use std::io::{BufRead, IsTerminal, Write};
use std::path::Path;
use std::time::{Duration, Instant};

use kiln_realize::applyset::Parent;
use kiln_realize::lock::{LockGuard, LockOptions};
use kiln_realize::render::render;
use kiln_realize::{
    apply_reporting, destroy as destroy_set, plan_set, plan_teardown, ApplyEvent, ApplyOptions,
    ApplyReport, Built, KubeCluster, PlanOptions, RealizeError, Wanted,
};

use crate::build::{BuildOptions, Loaded};
use crate::cli::{ApplyArgs, ClusterArgs, ConnectArgs, DestroyArgs, LockArgs, PlanArgs};
use crate::commands::cache::Caches;
use crate::commands::saved_plan;
pub use crate::commands::target::{Realized, Target};
use crate::commands::Failure;
use crate::printer::Printer;

/// A build that did not succeed: nothing is planned or applied.
/// It carries the rules' own errors (file, line, rule), shown beneath it.
#[derive(Debug, thiserror::Error, miette::Diagnostic)]
#[error("the build failed ({failed} rules failed or were skipped); nothing was applied")]
struct BuildFailed {
    failed: usize,
    #[related]
    causes: Vec<miette::Report>,
}

/// Loads the project and selects the environment with `--var` overrides applied.
fn load(target: &Target) -> Result<Loaded, Failure> {
    let mut loaded = crate::build::load(&target.dir, target.env.as_deref())?;
    loaded.override_vars(&target.vars)?;
    loaded.restrict(&target.rules)?;
    Ok(loaded)
}

/// What a build for realizing leaves beside the wanted objects: what a saved plan records.
pub struct BuiltSet {
    /// The project's name.
    pub project: String,
    /// Every rule's output hash.
    pub outputs: BTreeMap<String, String>,
}

/// Builds the target's environment and reads what its artifacts want on the cluster.
pub fn build_wanted(target: &Target) -> Result<Wanted, Failure> {
    build_wanted_with_outputs(target).map(|(w, _)| w)
}

/// [`build_wanted`], with the project's name and every rule's output hash.
pub fn build_wanted_with_outputs(target: &Target) -> Result<(Wanted, BuiltSet), Failure> {
    let loaded = load(target)?;
    let options = target.caches.apply_to(
        BuildOptions::default()
            .unsandboxed(target.unsandboxed)
            .look_only(!target.records_build),
    );
    let (report, trees) = crate::build::build_and_load(
        &loaded,
        &target.store_dir,
        &options,
        &|_, _| {},
        Instant::now(),
    )?;
    if !report.success() {
        let code = report.exit_code();
        return Err(Failure {
            code,
            report: miette::Report::new(BuildFailed {
                failed: report.summary.failed + report.summary.skipped,
                causes: report.diagnostics,
            }),
        });
    }
    // `--push` (or `push = true` in the config): what this build made goes to the first cache,
    // as after `kiln build`. A push that fails is a warning: the build is in the local store.
    if let Err(f) = target.caches.push_if_asked(
        &target.store_dir,
        &crate::commands::cache::push_items(&report),
    ) {
        tracing::warn!("{:?}", f.report);
    }
    let instance = loaded.selected.instance_name();
    let outputs = report
        .rules
        .iter()
        .filter_map(|r| Some((r.name.clone(), r.output?.to_string())))
        .collect();
    let wanted = Wanted::from_built(&Built {
        project: &loaded.project,
        graph: &loaded.graph,
        trees: &trees,
        instance: &instance,
        base_instance: Some(loaded.selected.name()),
        parent_namespace: &target.parent_namespace,
    })
    .map_err(failure)?;
    let project = loaded.project.name.clone();
    Ok((wanted, BuiltSet { project, outputs }))
}

/// Builds, connects and plans.
pub async fn connect_and_plan(
    target: &Target,
    options: &PlanOptions,
    on_wait: impl Fn(&str, &str),
) -> Result<Realized, Failure> {
    connect_and_plan_with_outputs(target, options, on_wait)
        .await
        .map(|(r, _)| r)
}

/// [`connect_and_plan`], with what the build leaves for a saved plan.
async fn connect_and_plan_with_outputs(
    target: &Target,
    options: &PlanOptions,
    on_wait: impl Fn(&str, &str),
) -> Result<(Realized, BuiltSet), Failure> {
    let (wanted, outputs) = build_wanted_with_outputs(target)?;
    let cluster = connect(target).await?;
    let r = plan_set(cluster, wanted, options, on_wait)
        .await
        .map_err(failure)?;
    Ok((r, outputs))
}

async fn connect(target: &Target) -> Result<KubeCluster, Failure> {
    KubeCluster::connect(
        target.kubeconfig.as_deref(),
        target.context.as_deref(),
        target.request_timeout,
    )
    .await
    .map_err(|e| failure(e.into()))
}

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
async fn until_interrupted<T, E: From<RealizeError>>(
    fut: impl std::future::Future<Output = Result<T, E>>,
) -> Result<T, E> {
    tokio::select! {
        r = fut => r,
        () = async {
            while !kiln_core::interrupt::interrupted() {
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        } => Err(RealizeError::Interrupted.into()),
    }
}

impl From<RealizeError> for Failure {
    fn from(e: RealizeError) -> Self {
        failure(e)
    }
}

/// What names the set and reaches the cluster, shared by plan, apply and destroy.
fn set_target(
    dir: &Path,
    env: &Option<String>,
    connect: &ConnectArgs,
    applyset_namespace: &Option<String>,
    store: &Path,
) -> Target {
    Target {
        dir: dir.to_path_buf(),
        store_dir: store.to_path_buf(),
        env: env.clone(),
        kubeconfig: connect.kubeconfig.clone(),
        context: connect.context.clone(),
        parent_namespace: applyset_namespace
            .clone()
            .unwrap_or_else(|| "default".to_owned()),
        request_timeout: connect.request_timeout.map(Duration::from_secs_f64),
        ..Target::default()
    }
}

fn target(args: &ClusterArgs, store: &Path) -> Result<Target, Failure> {
    Ok(Target {
        vars: args.vars.map(),
        unsandboxed: args.vars.unsandboxed,
        caches: Caches::open(&args.cache)?,
        rules: args.rules.clone(),
        records_build: false,
        ..set_target(
            &args.dir,
            &args.env,
            &args.connect,
            &args.applyset_namespace,
            store,
        )
    })
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
    if r.plan.partial {
        printer.status("note: this run covers only the rules given with --rule (and their dependencies): nothing is pruned");
    }
}

fn plan_json(r: &Realized, done: Option<&ApplyReport>) -> serde_json::Value {
    kiln_realize::render::json(r, done)
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
        adopt: args.adopt,
        partial: !args.cluster.rules.is_empty(),
        ..PlanOptions::default()
    };
    let target = target(&args.cluster, store)?;
    let (r, outputs) = runtime()
        .block_on(until_interrupted(connect_and_plan_with_outputs(
            &target,
            &options,
            on_wait(printer),
        )))
        .map_err(|mut f| {
            if args.detailed_exitcode {
                f.code = 1;
            }
            f
        })?;
    print_warnings(&r, printer);
    if let Some(traffic) = target.caches.traffic_line() {
        printer.status(&traffic);
    }
    if args.cluster.json {
        printer.json(&plan_json(&r, None));
    } else if printer.color_stdout() {
        printer.data(&kiln_realize::render::colorize(&render(&r.plan)));
    } else {
        printer.data(&render(&r.plan));
    }
    if let Some(path) = &args.html {
        write_html_report(args, &plan_json(&r, None), path)?;
        printer.status(&format!("plan report written to {}", path.display()));
    }
    if let Some(out) = &args.out {
        // The project's name comes from the build: no second load.
        let saved = saved_plan::capture(&r, &target, &outputs.project, outputs.outputs);
        saved_plan::write(&saved, out)?;
        printer.status(&format!(
            "plan saved to {}: apply exactly it with `kiln apply {}`",
            out.display(),
            out.display()
        ));
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

/// [`failure`], except that deletions declined at the terminal's prompt are the user's choice,
/// said plainly.
fn unless_declined(e: RealizeError) -> Failure {
    match e {
        RealizeError::NotConfirmed(_) if std::io::stdin().is_terminal() => Failure {
            code: 1,
            report: miette::miette!("aborted: nothing was applied"),
        },
        e => failure(e),
    }
}

/// `kiln apply`.
pub fn apply(args: &ApplyArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    let rt = runtime();
    let options = PlanOptions {
        lock: Some(lock_options(&args.lock)),
        find_orphans: args.prune_orphans,
        adopt: args.adopt,
        partial: !args.cluster.rules.is_empty(),
    };
    // `kiln apply PLANFILE`: the saved plan's project and settings, checked against a fresh
    // plan made under the set's lock; a stale plan is refused before any write.
    let saved = if args.cluster.dir.is_file() {
        let saved = saved_plan::read(&args.cluster.dir)?;
        refuse_flags_beside_a_plan(&args.cluster, &args.cluster.dir, &saved)?;
        check_plan_project(&args.cluster.dir, &saved)?;
        Some(saved)
    } else {
        None
    };
    let mut target = target(&args.cluster, store)?;
    target.records_build = true;
    if let Some(p) = &saved {
        let s = &p.settings;
        target.dir = s.project_dir.clone();
        target.env = s.env.clone();
        target.vars = s.vars.clone();
        target.rules = s.rules.clone();
        target.parent_namespace = s.parent_namespace.clone();
        target.context = target.context.or_else(|| s.context.clone());
    }
    let options = PlanOptions {
        partial: !target.rules.is_empty(),
        ..options
    };
    let (mut r, outputs) = rt.block_on(until_interrupted(connect_and_plan_with_outputs(
        &target,
        &options,
        on_wait(printer),
    )))?;
    let guard = r.lock.take();
    if let Some(reason) = saved
        .as_ref()
        .and_then(|p| saved_plan::staleness(p, &r, &outputs.outputs))
    {
        release(&rt, guard, printer);
        return Err(Failure {
            code: 1,
            report: miette::miette!(
                help = "run `kiln plan --out FILE` again, review it, then apply the new file",
                "the saved plan `{}` is stale: {reason}; nothing was applied",
                args.cluster.dir.display()
            ),
        });
    }
    print_warnings(&r, printer);
    if !args.cluster.json {
        let text = render(&r.plan);
        if printer.color_stderr() {
            printer.status(kiln_realize::render::colorize(&text).trim_end());
        } else {
            printer.status(text.trim_end());
        }
    }
    let options = ApplyOptions {
        force_conflicts: args.force_conflicts,
        wait: !args.no_wait,
        skip_workload_gates: args.skip_workload_gates,
        timeout: Duration::from_secs(args.timeout),
        yes: args.yes,
        parallel: args.parallel,
    };
    let on_event = |e: ApplyEvent<'_>| printer.status(&kiln_realize::render::event(&e));
    let result = rt.block_on(until_interrupted(apply_reporting(
        &r,
        &options,
        confirm("apply"),
        &on_event,
    )));
    release(&rt, guard, printer);
    if let Some(traffic) = target.caches.traffic_line() {
        printer.status(&traffic);
    }
    let report = result.map_err(unless_declined)?;
    if args.cluster.json {
        printer.json(&plan_json(&r, Some(&report)));
    }
    printer.status(&kiln_realize::render::applied(&report));
    Ok(0)
}

/// `kiln show PLANFILE`: a saved plan, as `kiln plan` printed it (or its JSON).
pub fn show(args: &crate::cli::ShowArgs, printer: &Printer) -> Result<u8, Failure> {
    let saved = saved_plan::read(&args.file)?;
    if args.json {
        printer.json(&saved.json());
    } else {
        let s = &saved.settings;
        printer.data(&format!(
            "plan of project {} in {} (env {}), made by kiln {}:",
            s.project,
            s.project_dir.display(),
            s.env.as_deref().unwrap_or("-"),
            s.kiln
        ));
        printer.data(saved.text().trim_end());
    }
    Ok(0)
}

/// A saved plan fixes the environment, the variables, the rules and the set: those flags
/// beside a plan file are refused (as Terraform refuses `-var` with a saved plan), and so is
/// a `--context` other than the plan's.
fn refuse_flags_beside_a_plan(
    args: &ClusterArgs,
    file: &Path,
    saved: &saved_plan::SavedPlan,
) -> Result<(), Failure> {
    let mut given = Vec::new();
    if args.env.is_some() {
        given.push("--env");
    }
    if !args.vars.instance.vars.is_empty() {
        given.push("--var");
    }
    if !args.rules.is_empty() {
        given.push("--rule");
    }
    if args.applyset_namespace.is_some() {
        given.push("--applyset-namespace");
    }
    if let (Some(asked), Some(planned)) = (&args.connect.context, &saved.settings.context) {
        if asked != planned {
            given.push("--context");
        }
    }
    if given.is_empty() {
        return Ok(());
    }
    Err(Failure {
        code: 1,
        report: miette::miette!(
            help = "make a new plan with these settings: `kiln plan --out FILE ...`",
            "{} cannot be given with the saved plan `{}`: the plan fixes them; nothing was applied",
            given.join(", "),
            file.display()
        ),
    })
}

/// The saved plan's directory must still hold the project it was made for; checked before
/// anything is built or any secret reference resolved.
fn check_plan_project(file: &Path, saved: &saved_plan::SavedPlan) -> Result<(), Failure> {
    let s = &saved.settings;
    let holds = kiln_core::load::load_project(&s.project_dir)
        .map(|p| p.name)
        .map_err(|e| Failure {
            code: 1,
            report: miette::miette!(
                "the saved plan `{}` is for project {} in `{}`, which cannot be loaded: {}; nothing was applied",
                file.display(),
                s.project,
                s.project_dir.display(),
                kiln_core::error_chain::error_chain(&e)
            ),
        })?;
    if holds != s.project {
        return Err(Failure {
            code: 1,
            report: miette::miette!(
                "this plan is for project {}; `{}` holds {}; nothing was applied",
                s.project,
                s.project_dir.display(),
                holds
            ),
        });
    }
    Ok(())
}

/// `kiln destroy`: every member of the set, then its parent.
pub fn destroy(args: &DestroyArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    let rt = runtime();
    let options = PlanOptions {
        lock: (!args.dry_run).then(|| lock_options(&args.lock)),
        find_orphans: args.find_orphans,
        adopt: false,
        partial: false,
    };
    let target = Target {
        vars: args.instance.map(),
        rules: args.rules.clone(),
        ..set_target(
            &args.dir,
            &args.env,
            &args.connect,
            &args.applyset_namespace,
            store,
        )
    };
    // Nothing is built: the project is only loaded for its name, its environment and (with
    // `--rule`) the rules whose objects go.
    let loaded = load(&Target {
        rules: Vec::new(),
        ..target.clone()
    })?;
    let scope = (!target.rules.is_empty())
        .then(|| loaded.selected_rules(&target.rules))
        .transpose()?;
    let parent = Parent::for_project(
        &loaded.project.name,
        &loaded.selected.instance_name(),
        &target.parent_namespace,
    );
    let mut r = rt.block_on(until_interrupted(async {
        let cluster = connect(&target).await?;
        plan_teardown(cluster, parent, &options, on_wait(printer))
            .await
            .map_err(Failure::from)
    }))?;
    if let Some(rules) = &scope {
        let kept = r.plan.keep_rules(rules);
        let names: Vec<&str> = rules.iter().map(String::as_str).collect();
        printer.status(&format!(
            "note: only the objects of rule(s) `{}` are deleted; {kept} objects of other rules stay, and so does the set's parent",
            names.join("`, `")
        ));
    }
    let guard = r.lock.take();
    if args.dry_run || !args.json {
        let text = render(&r.plan);
        if args.dry_run && !args.json {
            printer.data(&text);
        } else {
            printer.status(text.trim_end());
        }
    }
    if args.dry_run {
        if args.json {
            printer.json(&plan_json(&r, None));
        }
        return Ok(0);
    }
    let wait = args.wait.then(|| Duration::from_secs(args.timeout));
    let on_event = |e: ApplyEvent<'_>| printer.status(&kiln_realize::render::event(&e));
    let result = rt.block_on(until_interrupted(destroy_set(
        &r,
        wait,
        args.yes,
        confirm("destroy"),
        &on_event,
    )));
    release(&rt, guard, printer);
    let report = result.map_err(unless_declined)?;
    if args.json {
        printer.json(&plan_json(&r, Some(&report)));
    }
    printer.status(&kiln_realize::render::destroyed(&report, r.plan.partial));
    Ok(0)
}

/// `kiln plan --html FILE`: the report page, written whole or not at all.
fn write_html_report(
    args: &PlanArgs,
    plan: &serde_json::Value,
    path: &Path,
) -> Result<(), Failure> {
    let mut loaded = crate::build::load(&args.cluster.dir, args.cluster.env.as_deref())?;
    loaded.restrict(&args.cluster.rules)?;
    let graph_text = kiln_core::render::render(
        &loaded.project,
        &loaded.graph,
        kiln_core::render::GraphFormat::Json,
    );
    let graph: serde_json::Value =
        serde_json::from_str(&graph_text).expect("the graph renders as JSON");
    let title = format!(
        "kiln plan: {} ({})",
        loaded.project.name,
        args.cluster.env.as_deref().unwrap_or("default")
    );
    let html = crate::commands::plan_report::render_html(&title, &graph, plan);
    let fail = |e: std::io::Error| Failure {
        code: 2,
        report: miette::miette!("failed to write the plan report `{}`: {e}", path.display()),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(fail)?;
    std::io::Write::write_all(&mut tmp, html.as_bytes()).map_err(fail)?;
    // A page to share (a CI artifact), not a private file.
    std::fs::set_permissions(
        tmp.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o644),
    )
    .map_err(fail)?;
    tmp.persist(path).map_err(|e| fail(e.error))?;
    Ok(())
}
