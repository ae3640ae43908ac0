//! kiln: the command-line tool. It parses arguments, settles settings (config file, `KILN_*`,
//! flags), and calls the build pipeline ([`build`], the `kiln-engine` crate), realization on a
//! cluster ([`realize`]) and the remote cache (`kiln-cache`); it prints through one
//! [`printer::Printer`] and maps errors to exit codes at this edge.

/// The build pipeline (the `kiln-engine` crate).
pub use kiln_engine as build;
/// Realization on a cluster (the `kiln-realize` crate).
pub use kiln_realize as realize;
pub mod cli;
pub mod commands;
pub mod printer;
pub mod settings;

use clap::{CommandFactory, FromArgMatches};

use crate::cli::{Cli, Command};
use crate::printer::Printer;

/// Exit codes: 0 success; 1 user error (invalid project, a rule failed, corrupt store entries
/// found by `verify`, a command-line usage error); 2 infrastructure error (store I/O, the
/// cluster) or, with `plan --detailed-exitcode`, changes; 130 interrupted.
pub fn main_with_args() -> u8 {
    let parsed = Cli::command()
        .color(clap_color_from_args())
        .try_get_matches()
        .and_then(|m| Cli::from_arg_matches(&m).map(|cli| (cli, m)));
    let (mut cli, matches) = match parsed {
        Ok(parsed) => parsed,
        Err(e) => {
            // A usage error exits 1, as in Terraform: 2 means "changes" to `plan
            // --detailed-exitcode` and "infrastructure" elsewhere. Help and version exit 0.
            let _ = e.print();
            return if e.use_stderr() { 1 } else { 0 };
        }
    };
    // The user's defaults fill what the command line left open (before anything prints, as
    // they may set the colour).
    let user_config = settings::UserConfig::load();
    let effective = match &user_config {
        Ok(config) => settings::apply(&mut cli, &matches, config),
        Err(_) => Vec::new(),
    };
    let printer = Printer::new(&cli.global);
    let user_config = match user_config {
        Ok(c) => c,
        Err(f) => {
            printer.error(&f.report);
            return f.code;
        }
    };
    // Ctrl-C / SIGTERM: the first asks every part to stop (exec children are killed, pending
    // rules cancelled, temp files removed by their owners, the set's lock released); a second
    // one exits at once.
    let _ = ctrlc::set_handler(|| {
        if kiln_core::interrupt::interrupted() {
            std::process::exit(130);
        }
        kiln_core::interrupt::interrupt();
    });
    let level = match (cli.global.quiet, cli.global.verbose) {
        (true, _) => "error",
        (_, 0) => "warn",
        (_, 1) => "info",
        (_, 2) => "debug",
        _ => "trace",
    };
    // kube's client logs every 5xx answer at ERROR; kiln reports the same failure once, as the
    // server's message with its object and rule, so the client's lines show only with -v.
    let kube_level = if cli.global.verbose == 0 {
        "off"
    } else {
        level
    };
    let filter = tracing_subscriber::EnvFilter::try_from_env("KILN_LOG").unwrap_or_else(|_| {
        // `kiln cache serve` logs one access line per request.
        tracing_subscriber::EnvFilter::new(format!(
            "{level},kube_client={kube_level},kiln::cache::access=info"
        ))
    });
    let _ = tracing_subscriber::fmt()
        .with_ansi(printer.color_stderr())
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .with_target(false)
        .try_init();
    let store = build::store_dir(cli.global.store.clone());
    let result = match &cli.command {
        Command::Build(args) => commands::build::run(args, &printer, &store),
        Command::Graph(args) => commands::graph::run(args, &printer),
        Command::Store(cmd) => commands::store::run(cmd, &printer, &store),
        Command::Plan(args) => commands::realize::plan(args, &printer, &store),
        Command::Apply(args) => commands::realize::apply(args, &printer, &store),
        Command::Destroy(args) => commands::realize::destroy(args, &printer, &store),
        Command::Cache(cmd) => commands::cache::run(cmd, &printer, &store),
        Command::Audit(args) => commands::audit::run(args, &printer, &store),
        Command::Why(args) => commands::why::run(args, &printer, &store),
        Command::Diff(args) => commands::diff::run(args, &printer, &store),
        Command::Provenance(args) => commands::provenance::run(args, &printer, &store),
        Command::Show(args) => commands::realize::show(args, &printer),
        Command::Export(args) => commands::export::run(args, &printer, &store),
        Command::Config(crate::cli::ConfigCommand::Show(args)) => {
            commands::config::show(args, &printer, &user_config, &effective)
        }
        Command::Completions { shell } => commands::docs::completions(*shell, &printer),
        Command::Manpages { dir } => commands::docs::manpages(dir, &printer),
    };
    let code = match result {
        Ok(code) => code,
        Err(f) => {
            printer.error(&f.report);
            f.code
        }
    };
    if kiln_core::interrupt::interrupted() {
        printer.status("interrupted");
        return 130;
    }
    code
}

/// The colour of clap's own messages (usage errors, help), settled before the arguments are
/// parsed: `--color never|always` as given (`--color=never` too), else `NO_COLOR`, else auto.
fn clap_color_from_args() -> clap::ColorChoice {
    let args: Vec<String> = std::env::args().collect();
    let given = args.iter().enumerate().find_map(|(i, a)| {
        a.strip_prefix("--color=")
            .map(str::to_owned)
            .or_else(|| (a == "--color").then(|| args.get(i + 1).cloned()).flatten())
    });
    match given.as_deref() {
        Some("never") => clap::ColorChoice::Never,
        Some("always") => clap::ColorChoice::Always,
        _ if std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty()) => {
            clap::ColorChoice::Never
        }
        _ => clap::ColorChoice::Auto,
    }
}
