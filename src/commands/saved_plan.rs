//! Saved plans (`kiln plan --out FILE`, `kiln apply FILE`, `kiln show FILE`): a review gate,
//! as Terraform's plan files. The file is JSON, versioned (`kiln-plan-v1`) and self-describing;
//! it holds what the plan shows (never a secret value) and what makes it stale.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::commands::realize::{Realized, Target};
use crate::commands::Failure;

/// The file format.
pub const SAVED_PLAN_FORMAT: &str = "kiln-plan-v1";

/// One object of a saved plan, with what must still hold when it is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SavedObject {
    /// `Kind.group ns/name`.
    pub object: String,
    /// The planned action.
    pub action: String,
    /// The live object's resourceVersion when planned (none: it did not exist).
    pub resource_version: Option<String>,
    /// The desired object's hash (none: a deletion).
    pub desired_hash: Option<String>,
}

/// A saved plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct SavedPlan {
    /// [`SAVED_PLAN_FORMAT`].
    pub format: String,
    /// The kiln that wrote it.
    pub kiln: String,
    /// The project directory.
    pub project_dir: PathBuf,
    /// `--env`.
    pub env: Option<String>,
    /// `--var` overrides.
    pub vars: BTreeMap<String, Value>,
    /// `--rule` selectors.
    pub rules: Vec<String>,
    /// `--applyset-namespace`.
    pub parent_namespace: String,
    /// `--context`, if given.
    pub context: Option<String>,
    /// Every rule's output hash: a rebuild that differs makes the plan stale.
    pub outputs: BTreeMap<String, String>,
    /// Every object the plan covers.
    pub objects: Vec<SavedObject>,
    /// The plan as `kiln plan` printed it.
    pub text: String,
    /// The plan as `kiln plan --json` printed it.
    pub plan: Value,
}

fn objects_of(r: &Realized) -> Vec<SavedObject> {
    let hashes: BTreeMap<String, String> = r
        .desired
        .iter()
        .map(|d| (d.key.to_string(), d.hash.to_string()))
        .collect();
    r.plan
        .changes
        .iter()
        .map(|c| {
            let key = c.key().to_string();
            SavedObject {
                desired_hash: hashes.get(&key).cloned(),
                object: key,
                action: serde_json::to_value(c.action)
                    .ok()
                    .and_then(|v| v.as_str().map(str::to_owned))
                    .unwrap_or_default(),
                resource_version: c.live_version.clone(),
            }
        })
        .collect()
}

/// The saved form of plan `r` of `target`, whose build gave `outputs`.
pub fn capture(
    r: &Realized,
    target: &Target,
    outputs: BTreeMap<String, String>,
    json: Value,
) -> SavedPlan {
    SavedPlan {
        format: SAVED_PLAN_FORMAT.to_owned(),
        kiln: env!("CARGO_PKG_VERSION").to_owned(),
        project_dir: target.dir.clone(),
        env: target.env.clone(),
        vars: target.vars.clone(),
        rules: target.rules.clone(),
        parent_namespace: target.parent_namespace.clone(),
        context: target.context.clone(),
        outputs,
        objects: objects_of(r),
        text: kiln_realize::render::render(&r.plan),
        plan: json,
    }
}

/// Why `saved` no longer describes what applying now would do, if it does not.
pub fn staleness(
    saved: &SavedPlan,
    fresh: &Realized,
    outputs: &BTreeMap<String, String>,
) -> Option<String> {
    for (rule, out) in outputs {
        if saved.outputs.get(rule) != Some(out) {
            return Some(format!(
                "rule `{rule}` builds to another output than when planned"
            ));
        }
    }
    if let Some(rule) = saved.outputs.keys().find(|r| !outputs.contains_key(*r)) {
        return Some(format!("rule `{rule}` is gone from the project"));
    }
    let now: BTreeMap<String, SavedObject> = objects_of(fresh)
        .into_iter()
        .map(|o| (o.object.clone(), o))
        .collect();
    for o in &saved.objects {
        match now.get(&o.object) {
            None => return Some(format!("{} is no longer part of the plan", o.object)),
            Some(n) if n.resource_version != o.resource_version => {
                return Some(format!(
                    "{} changed on the cluster since the plan was made",
                    o.object
                ))
            }
            Some(n) if n != o => {
                return Some(format!(
                    "{} would now be `{}`, planned `{}`",
                    o.object, n.action, o.action
                ))
            }
            Some(_) => {}
        }
    }
    if let Some(extra) = now
        .keys()
        .find(|k| !saved.objects.iter().any(|o| &o.object == *k))
    {
        return Some(format!("{extra} is new in the plan"));
    }
    None
}

/// Writes `plan` to `path` atomically.
pub fn write(plan: &SavedPlan, path: &Path) -> Result<(), Failure> {
    let fail = |e: String| Failure {
        code: 2,
        report: miette::miette!("failed to write the plan to `{}`: {e}", path.display()),
    };
    let dir = path
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    let mut tmp = tempfile::NamedTempFile::new_in(dir).map_err(|e| fail(e.to_string()))?;
    serde_json::to_writer_pretty(&mut tmp, plan).map_err(|e| fail(e.to_string()))?;
    tmp.persist(path).map_err(|e| fail(e.to_string()))?;
    Ok(())
}

/// Reads a saved plan, refusing other files and other formats.
pub fn read(path: &Path) -> Result<SavedPlan, Failure> {
    let fail = |e: String| Failure {
        code: 1,
        report: miette::miette!("`{}` is not a kiln plan: {e}", path.display()),
    };
    let bytes = std::fs::read(path).map_err(|e| fail(e.to_string()))?;
    let v: Value = serde_json::from_slice(&bytes).map_err(|e| fail(e.to_string()))?;
    if v["format"] != SAVED_PLAN_FORMAT {
        return Err(fail(format!(
            "its format is {}, this kiln reads {SAVED_PLAN_FORMAT}",
            v["format"]
        )));
    }
    serde_json::from_value(v).map_err(|e| fail(e.to_string()))
}
