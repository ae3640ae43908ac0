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
        GraphFormatArg::Dot => GraphFormat::Dot,
        GraphFormatArg::Mermaid => GraphFormat::Mermaid,
        GraphFormatArg::Json => GraphFormat::Json,
    };
    printer.data(&render(&loaded.project, &loaded.graph, format));
    Ok(0)
}
