//! [`Printer`]: all output goes through here. Data on stdout, everything else on stderr.

use std::io::{IsTerminal, Write};

use crate::cli::{ColorChoice, GlobalArgs};

/// How much to say.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub enum Verbosity {
    /// Errors only.
    Quiet,
    /// Normal.
    Normal,
    /// More.
    Verbose,
}

/// The one place that writes to the terminal.
#[derive(Debug, Clone)]
pub struct Printer {
    color: bool,
    stdout_color: bool,
    progress: bool,
    verbosity: Verbosity,
}

impl Printer {
    /// From the global flags.
    pub fn new(g: &GlobalArgs) -> Self {
        let stderr_tty = std::io::stderr().is_terminal();
        let no_color = std::env::var_os("NO_COLOR").is_some_and(|v| !v.is_empty());
        let color_on = |tty: bool| match g.color {
            ColorChoice::Always => true,
            ColorChoice::Never => false,
            ColorChoice::Auto => tty && !no_color,
        };
        let color = color_on(stderr_tty);
        let stdout_color = color_on(std::io::stdout().is_terminal());
        let verbosity = if g.quiet {
            Verbosity::Quiet
        } else if g.verbose > 0 {
            Verbosity::Verbose
        } else {
            Verbosity::Normal
        };
        Self {
            color,
            stdout_color,
            progress: stderr_tty && !g.no_progress && verbosity == Verbosity::Normal,
            verbosity,
        }
    }

    /// Whether progress bars may be shown.
    pub fn progress_enabled(&self) -> bool {
        self.progress
    }

    /// The verbosity.
    pub fn verbosity(&self) -> Verbosity {
        self.verbosity
    }

    /// Writes data to stdout.
    pub fn data(&self, text: &str) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(text.as_bytes());
        if !text.ends_with('\n') {
            let _ = out.write_all(b"\n");
        }
        let _ = out.flush();
    }

    /// Writes bytes to stdout exactly as given (`kiln store cat`).
    pub fn bytes(&self, bytes: &[u8]) {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(bytes);
        let _ = out.flush();
    }

    /// Writes pretty JSON to stdout.
    pub fn json(&self, value: &impl serde::Serialize) {
        self.data(&serde_json::to_string_pretty(value).expect("serializable"));
    }

    /// A status line on stderr (hidden with `-q`).
    pub fn status(&self, text: &str) {
        if self.verbosity >= Verbosity::Normal {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }

    /// A status line shown only with `-v`.
    pub fn detail(&self, text: &str) {
        if self.verbosity >= Verbosity::Verbose {
            let _ = writeln!(std::io::stderr().lock(), "{text}");
        }
    }

    /// An error with its causes, locations and hints, on stderr.
    pub fn error(&self, report: &miette::Report) {
        let theme = if self.color {
            miette::GraphicalTheme::unicode()
        } else {
            miette::GraphicalTheme::unicode_nocolor()
        };
        // On a terminal long lines wrap to fit; in a log (CI, a file) a message stays on one
        // line, so that it can be searched for whole.
        use std::io::IsTerminal as _;
        let handler = miette::GraphicalReportHandler::new_themed(theme)
            .with_context_lines(1)
            .with_wrap_lines(std::io::stderr().is_terminal());
        let mut out = String::new();
        if handler.render_report(&mut out, report.as_ref()).is_err() {
            out = format!("error: {report:?}\n");
        }
        let _ = write!(std::io::stderr().lock(), "{out}");
    }

    /// Whether what goes to stderr (status, errors, logs) is coloured.
    pub fn color_stderr(&self) -> bool {
        self.color
    }

    /// Whether data on stdout (a plan) is coloured: a terminal there, or `--color always`.
    pub fn color_stdout(&self) -> bool {
        self.stdout_color
    }

    /// A green/red word when colour is on.
    pub fn paint(&self, text: &str, good: bool) -> String {
        if !self.color {
            return text.to_owned();
        }
        let code = if good { "32" } else { "31" };
        format!("\u{1b}[{code}m{text}\u{1b}[0m")
    }
}
