//! `kiln why RULE`.

use std::path::{Path, PathBuf};

use crate::build::{BuildOptions, Since};
use crate::cli::WhyArgs;
use crate::commands::Failure;
use crate::printer::Printer;

/// Runs `kiln why`: prints what moved the rule's derivation. Exit 0.
pub fn run(args: &WhyArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    let mut loaded = crate::build::load(&args.dir, args.env.as_deref())?;
    loaded.override_vars(&args.vars.map())?;
    let since = match args.since.as_str() {
        "last" => Since::Last,
        file => Since::Root(PathBuf::from(file)),
    };
    // Only derivations are computed (nothing is built), so there is no sandbox to choose.
    let options = BuildOptions::default().vars(args.vars.map());
    let (with, explanation) = crate::build::why(&loaded, store, &options, &args.rule, &since)?;
    if args.json {
        printer.json(&serde_json::json!({
            "format_version": 1,
            "compared_with": with,
            "explanation": explanation,
        }));
    } else {
        printer.data(&format!("compared with {with}:"));
        printer.data(crate::build::why::render(&explanation).trim_end());
    }
    Ok(0)
}
