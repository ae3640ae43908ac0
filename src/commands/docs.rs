//! `kiln completions` and `kiln manpages`, generated from the clap definitions.

use std::path::Path;

use clap::CommandFactory;

use crate::cli::Cli;
use crate::commands::Failure;
use crate::printer::Printer;

/// Prints the completion script of `shell` on stdout.
pub fn completions(shell: clap_complete::Shell, printer: &Printer) -> Result<u8, Failure> {
    let mut cmd = Cli::command();
    // Into memory first: the generator panics on a closed pipe (`| head`), the printer does not.
    let mut script = Vec::new();
    clap_complete::generate(shell, &mut cmd, "kiln", &mut script);
    printer.bytes(&script);
    Ok(0)
}

/// Writes `kiln.1` and a page per subcommand (`kiln-build.1`, `kiln-store-gc.1`, …) into `dir`.
pub fn manpages(dir: &Path, printer: &Printer) -> Result<u8, Failure> {
    let fail = |e: std::io::Error| Failure {
        code: 2,
        report: miette::miette!("failed to write man pages into `{}`: {e}", dir.display()),
    };
    std::fs::create_dir_all(dir).map_err(fail)?;
    clap_mangen::generate_to(Cli::command(), dir).map_err(fail)?;
    let count = std::fs::read_dir(dir).map_err(fail)?.count();
    printer.status(&format!("wrote {count} man pages into {}", dir.display()));
    Ok(0)
}
