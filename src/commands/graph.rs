//! `kiln graph`.

use kiln_core::render::{render, GraphFormat};

use crate::build::load;
use crate::cli::{GraphArgs, GraphFormatArg};
use crate::commands::Failure;
use crate::printer::Printer;

/// Prints the rule graph.
pub fn run(args: &GraphArgs, printer: &Printer) -> Result<u8, Failure> {
    let mut loaded = load(&args.dir, args.env.as_deref())?;
    loaded.restrict(&args.rules)?;
    let format = match args.format {
        GraphFormatArg::Dot | GraphFormatArg::Svg => GraphFormat::Dot,
        GraphFormatArg::Mermaid => GraphFormat::Mermaid,
        GraphFormatArg::Json => GraphFormat::Json,
    };
    let text = render(&loaded.project, &loaded.graph, format);
    if matches!(args.format, GraphFormatArg::Svg) {
        printer.bytes(&svg(&text)?);
    } else {
        printer.data(&text);
    }
    Ok(0)
}

/// `dot` drawn as SVG by Graphviz.
fn svg(dot: &str) -> Result<Vec<u8>, Failure> {
    use std::io::Write as _;
    let fail = |why: String| Failure {
        code: 2,
        report: miette::miette!(
            help = "install Graphviz (Debian: `apt-get install graphviz`), or use `--format dot`",
            "could not draw the graph with Graphviz's `dot`: {why}"
        ),
    };
    let mut child = std::process::Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .map_err(|e| fail(e.to_string()))?;
    child
        .stdin
        .take()
        .expect("piped")
        .write_all(dot.as_bytes())
        .map_err(|e| fail(e.to_string()))?;
    let out = child.wait_with_output().map_err(|e| fail(e.to_string()))?;
    if !out.status.success() {
        return Err(fail(String::from_utf8_lossy(&out.stderr).trim().to_owned()));
    }
    Ok(out.stdout)
}
