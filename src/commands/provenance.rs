//! `kiln provenance`: where an artifact came from, as an in-toto SLSA v1 statement.

use std::path::Path;

use kiln_cache::keys::{PublicKey, SecretKey};
use kiln_cache::provenance::{self, Envelope, Facts};
use kiln_cache::CacheError;
use kiln_store::LocalStore;
use sha2::Digest as _;

use crate::build::{project_key, EngineError};
use crate::cli::ProvenanceArgs;
use crate::commands::Failure;
use crate::printer::Printer;

/// Runs `kiln provenance`: prints the statement (or envelope); with `--verify`, exit 0 when the
/// envelope verifies and 1 when it does not.
pub fn run(args: &ProvenanceArgs, printer: &Printer, store: &Path) -> Result<u8, Failure> {
    if let Some(file) = &args.verify {
        return verify(file, &args.trusted_keys, printer);
    }
    let rule = args
        .rule
        .as_deref()
        .expect("clap requires RULE without --verify");
    let loaded = crate::build::load(&args.dir, args.env.as_deref())?;
    let env = loaded.selected.instance_name();
    let local = LocalStore::open(store)?;
    let not_built = || EngineError::NotBuilt {
        rule: rule.to_owned(),
        env: loaded.selected.name().to_owned(),
    };
    let root = local
        .read_root(&project_key(&loaded.project), &env)
        .ok_or_else(not_built)?;
    let entry = root.rules.get(rule).ok_or_else(not_built)?;
    let (_, derivation) = local.action(&entry.derivation)?.ok_or_else(not_built)?;
    let archive_path = local.object_path(&entry.output.output);
    let archive = std::fs::read(&archive_path).map_err(|e| CacheError::Io {
        action: "read the artifact's archive (fetch it with `kiln cache pull`)",
        path: archive_path.clone(),
        source: e,
    })?;
    let facts = Facts {
        project: loaded.project.name.clone(),
        env: loaded.selected.name().to_owned(),
        rule: rule.to_owned(),
        derivation: serde_json::from_slice(&derivation)
            .map_err(|e| CacheError::Key(e.to_string()))?,
        derivation_hash: entry.derivation.to_string(),
        output_blake3: entry.output.output.hex(),
        archive_sha256: hex::encode(sha2::Sha256::digest(&archive)),
        built: local.build_info(&entry.derivation),
    };
    let statement = provenance::statement(&facts);
    match &args.sign {
        Some(key_file) => {
            let text = std::fs::read_to_string(key_file).map_err(|e| CacheError::Io {
                action: "read the signing key",
                path: key_file.clone(),
                source: e,
            })?;
            let key = SecretKey::parse(&text)?;
            printer.json(&provenance::sign(&statement, &key));
        }
        None => printer.json(&statement),
    }
    Ok(0)
}

fn verify(file: &Path, trusted: &[String], printer: &Printer) -> Result<u8, Failure> {
    let trusted: Vec<PublicKey> = trusted
        .iter()
        .map(|k| PublicKey::parse(k))
        .collect::<Result<_, _>>()?;
    if trusted.is_empty() {
        return Err(CacheError::Key("--verify needs at least one --trusted-key".into()).into());
    }
    let text = std::fs::read(file).map_err(|e| CacheError::Io {
        action: "read",
        path: file.to_owned(),
        source: e,
    })?;
    let envelope: Envelope = match serde_json::from_slice(&text) {
        Ok(e) => e,
        Err(e) => {
            printer.status(&format!("{}: not a DSSE envelope: {e}", file.display()));
            return Ok(1);
        }
    };
    match provenance::verify(&envelope, &trusted) {
        Ok(statement) => {
            for s in &statement.subject {
                printer.status(&format!(
                    "verified: {} {}",
                    s.name.as_deref().unwrap_or("?"),
                    s.digest
                        .iter()
                        .map(|(k, v)| format!("{k}:{v}"))
                        .collect::<Vec<_>>()
                        .join(" ")
                ));
            }
            Ok(0)
        }
        Err(e) => {
            printer.status(&format!("{}: {e}", file.display()));
            Ok(1)
        }
    }
}
