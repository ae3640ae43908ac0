//! Saved plans (`kiln plan --out FILE`, `kiln apply FILE`, `kiln show FILE`): a review gate,
//! as Terraform's plan files. The file is JSON, versioned (`kiln-plan-v2`) and self-describing;
//! it holds what the plan shows (never a secret value) and what makes it stale.
//!
//! What a reviewer reads is what apply does:
//! - the plan is kept once, as its actions (`plan`); `kiln show` renders the review text and
//!   the JSON from them, so no second copy can disagree with them;
//! - every section carries a digest (`digests`), checked by `show` and `apply` before anything
//!   else: a file changed after kiln wrote it is refused, naming the section;
//! - apply makes a fresh plan under the set's lock and refuses unless it equals the saved one
//!   (same outputs, same resourceVersions, same actions, same diffs).

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kiln_realize::plan::Plan;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::commands::target::{Realized, Target};
use crate::commands::Failure;

/// The file format.
pub const SAVED_PLAN_FORMAT: &str = "kiln-plan-v2";

/// One object of a saved plan, with what must still hold when it is applied.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
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

/// What the plan was made for: fixed by the file, never by flags given to `apply`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    /// The kiln that wrote it.
    pub kiln: String,
    /// The project's name (`[project] name`).
    pub project: String,
    /// The project directory, absolute.
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
}

/// The digest of each section, `blake3:<hex>` over its canonical JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Digests {
    /// Of `settings`.
    pub settings: String,
    /// Of `outputs`.
    pub outputs: String,
    /// Of `objects`.
    pub objects: String,
    /// Of `plan` and `warnings` together.
    pub plan: String,
}

/// A saved plan.
#[derive(Debug, Clone, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SavedPlan {
    /// [`SAVED_PLAN_FORMAT`].
    pub format: String,
    /// What the plan was made for.
    pub settings: Settings,
    /// Every rule's output hash: a rebuild that differs makes the plan stale.
    pub outputs: BTreeMap<String, String>,
    /// Every object the plan covers, with its resourceVersion and desired hash.
    pub objects: Vec<SavedObject>,
    /// The plan's actions: what `kiln show` renders and `kiln apply` must find again.
    pub plan: Plan,
    /// The plan's warnings, as `kiln plan --json` printed them.
    pub warnings: Vec<Value>,
    /// One digest per section.
    pub digests: Digests,
}

fn digest_of(v: &impl Serialize) -> String {
    let value = serde_json::to_value(v).expect("a saved plan's sections serialize");
    kiln_core::canonical::digest(&value).to_string()
}

impl SavedPlan {
    fn digests(&self) -> Digests {
        Digests {
            settings: digest_of(&self.settings),
            outputs: digest_of(&self.outputs),
            objects: digest_of(&self.objects),
            plan: digest_of(&(&self.plan, &self.warnings)),
        }
    }

    /// The first section whose content does not match its digest, if any.
    pub fn altered_section(&self) -> Option<&'static str> {
        let now = self.digests();
        [
            ("settings", now.settings == self.digests.settings),
            ("outputs", now.outputs == self.digests.outputs),
            ("objects", now.objects == self.digests.objects),
            ("plan", now.plan == self.digests.plan),
        ]
        .into_iter()
        .find(|(_, same)| !same)
        .map(|(name, _)| name)
    }

    /// The review text, rendered from the actions (what `kiln plan` printed).
    pub fn text(&self) -> String {
        kiln_realize::render::render(&self.plan)
    }

    /// The plan as `kiln plan --json` printed it (less the request counts of that run).
    pub fn json(&self) -> Value {
        let mut v = serde_json::to_value(&self.plan).expect("plan serializes");
        v["warnings"] = serde_json::json!(self.warnings);
        v
    }
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

/// The saved form of plan `r` of `target` (project `project`), whose build gave `outputs`.
pub fn capture(
    r: &Realized,
    target: &Target,
    project: &str,
    outputs: BTreeMap<String, String>,
) -> SavedPlan {
    let mut saved = SavedPlan {
        format: SAVED_PLAN_FORMAT.to_owned(),
        settings: Settings {
            kiln: env!("CARGO_PKG_VERSION").to_owned(),
            project: project.to_owned(),
            project_dir: std::fs::canonicalize(&target.dir).unwrap_or_else(|_| target.dir.clone()),
            env: target.env.clone(),
            vars: target.vars.clone(),
            rules: target.rules.clone(),
            parent_namespace: target.parent_namespace.clone(),
            context: target.context.clone(),
        },
        outputs,
        objects: objects_of(r),
        plan: r.plan.clone(),
        warnings: r
            .warnings
            .iter()
            .map(|w| serde_json::to_value(w).expect("a warning serializes"))
            .collect(),
        digests: Digests {
            settings: String::new(),
            outputs: String::new(),
            objects: String::new(),
            plan: String::new(),
        },
    };
    saved.digests = saved.digests();
    saved
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
    mismatch(&saved.plan, &fresh.plan)
}

/// How the reviewed actions differ from the fresh plan's, if they do: the reviewed text is
/// rendered from `saved`, so equal actions mean apply does what the reviewer read.
fn mismatch(saved: &Plan, fresh: &Plan) -> Option<String> {
    let as_json = |p: &Plan| serde_json::to_value(p).expect("plan serializes");
    if as_json(saved) == as_json(fresh) {
        return None;
    }
    let by_key = |p: &Plan| -> BTreeMap<String, Value> {
        p.changes
            .iter()
            .map(|c| {
                (
                    c.key().to_string(),
                    serde_json::to_value(c).expect("change serializes"),
                )
            })
            .collect()
    };
    let (old, new) = (by_key(saved), by_key(fresh));
    let differing = old
        .iter()
        .find(|(k, v)| new.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .or_else(|| new.keys().find(|k| !old.contains_key(*k)));
    Some(match differing {
        Some(k) => format!("its `plan` section does not match what applying now would do to {k}"),
        None => "its `plan` section does not match what applying now would do".to_owned(),
    })
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

/// Reads a saved plan, refusing other files, other formats and a file changed after kiln
/// wrote it (naming the section).
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
    let saved: SavedPlan = serde_json::from_value(v).map_err(|e| fail(e.to_string()))?;
    if let Some(section) = saved.altered_section() {
        return Err(Failure {
            code: 1,
            report: miette::miette!(
                help = "run `kiln plan --out FILE` again and review the new file",
                "the saved plan `{}` was changed after kiln wrote it: its `{section}` section does not match its digest; nothing was applied",
                path.display()
            ),
        });
    }
    Ok(saved)
}

#[cfg(test)]
mod tests {
    use super::*;
    use kiln_realize::plan::{Action, Change};

    fn change(name: &str, action: Action) -> Change {
        Change {
            action,
            group_kind: "ConfigMap".into(),
            namespace: "ns".into(),
            name: name.into(),
            rule: "app".into(),
            diff: None,
            drifted_fields: Vec::new(),
            secret_values_changed: Vec::new(),
            orphan: false,
            shared_with: None,
            unchecked: None,
            conflict: None,
            wave: 0,
            not_ready: None,
            live_version: None,
            live_uid: None,
        }
    }

    fn plan(changes: Vec<Change>) -> Plan {
        let mut p = Plan {
            format_version: 1,
            applyset: "set".into(),
            summary: BTreeMap::new(),
            changes,
            partial: false,
        };
        p.settle();
        p
    }

    fn saved(p: Plan) -> SavedPlan {
        let mut s = SavedPlan {
            format: SAVED_PLAN_FORMAT.into(),
            settings: Settings {
                kiln: "0".into(),
                project: "shop".into(),
                project_dir: "/p".into(),
                env: Some("staging".into()),
                vars: BTreeMap::new(),
                rules: Vec::new(),
                parent_namespace: "default".into(),
                context: None,
            },
            outputs: BTreeMap::from([("app".into(), "blake3:00".into())]),
            objects: Vec::new(),
            plan: p,
            warnings: Vec::new(),
            digests: Digests {
                settings: String::new(),
                outputs: String::new(),
                objects: String::new(),
                plan: String::new(),
            },
        };
        s.digests = s.digests();
        s
    }

    #[test]
    fn every_section_is_bound_by_its_digest() {
        let s = saved(plan(vec![change("a", Action::Create)]));
        assert_eq!(s.altered_section(), None);
        let mut t = s.clone();
        t.settings.env = Some("production".into());
        assert_eq!(t.altered_section(), Some("settings"));
        let mut t = s.clone();
        t.outputs.insert("app".into(), "blake3:01".into());
        assert_eq!(t.altered_section(), Some("outputs"));
        let mut t = s.clone();
        t.objects.push(SavedObject {
            object: "x".into(),
            action: "create".into(),
            resource_version: None,
            desired_hash: None,
        });
        assert_eq!(t.altered_section(), Some("objects"));
        let mut t = s.clone();
        t.plan.changes.clear();
        assert_eq!(t.altered_section(), Some("plan"));
        let mut t = s;
        t.warnings.push(Value::from("w"));
        assert_eq!(t.altered_section(), Some("plan"));
    }

    #[test]
    fn the_review_text_is_rendered_from_the_actions() {
        let s = saved(plan(vec![
            change("a", Action::Create),
            change("b", Action::Create),
        ]));
        let text = s.text();
        assert!(text.contains("ns/a") && text.contains("ns/b"), "{text}");
        let back: SavedPlan = serde_json::from_str(&serde_json::to_string(&s).unwrap()).unwrap();
        assert_eq!(back.text(), text);
        assert_eq!(back.altered_section(), None);
    }

    #[test]
    fn a_reviewed_plan_that_lost_an_action_does_not_match_the_fresh_one() {
        let fresh = plan(vec![
            change("a", Action::Create),
            change("b", Action::Create),
        ]);
        let reviewed = plan(vec![change("a", Action::Create)]);
        let why = mismatch(&reviewed, &fresh).unwrap();
        assert!(why.contains("ns/b"), "{why}");
        assert_eq!(mismatch(&fresh.clone(), &fresh), None);
    }
}
