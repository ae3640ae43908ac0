//! The report of `kiln audit`: per rule, whether a rebuild gave the recorded output, and how
//! the artifacts differ where it did not. JSON format version 1.

use std::time::Duration;

use kiln_core::scheduler::Outcome;
use kiln_core::Digest;
use serde::Serialize;

use crate::execute::{Built, Failure, Verdict};
use crate::treediff::EntryChange;
use crate::Loaded;

/// `kiln audit --json` format version.
pub const AUDIT_JSON_FORMAT: u32 = 1;

/// What the audit found for one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum AuditStatus {
    /// Rebuilt to the recorded output.
    Identical,
    /// Rebuilt to another output.
    Differs,
    /// Rebuilt to another output, and declared `nondeterministic = true`.
    Nondeterministic,
    /// Nothing recorded to compare with (never built, or not in the `--against` cache).
    Unrecorded,
    /// Not selected (`--rules`): its recorded output was used.
    Skipped,
    /// The rebuild failed, or a dependency did.
    Failed,
}

/// One rule of the audit.
#[derive(Debug, Serialize)]
pub struct AuditRule {
    /// The rule.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// The verdict.
    pub status: AuditStatus,
    /// Its derivation hash.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub derivation: Option<Digest>,
    /// The recorded output.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub recorded: Option<Digest>,
    /// The rebuilt output, when it differs.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub rebuilt: Option<Digest>,
    /// How the artifacts differ.
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub changes: Vec<EntryChange>,
    /// Why it failed, or why the recorded artifact could not be compared.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
}

/// Counts.
#[derive(Debug, Default, Serialize)]
pub struct AuditSummary {
    /// Rules rebuilt and compared.
    pub checked: usize,
    /// Identical.
    pub identical: usize,
    /// Differing (and not declared nondeterministic).
    pub differing: usize,
    /// Differing, as declared.
    pub nondeterministic: usize,
    /// Nothing to compare with.
    pub unrecorded: usize,
    /// Failed.
    pub failed: usize,
}

/// The whole audit.
#[derive(Debug, Serialize)]
pub struct AuditReport {
    /// [`AUDIT_JSON_FORMAT`].
    pub format_version: u32,
    /// The project.
    pub project: String,
    /// The environment.
    pub env: String,
    /// Wall time in milliseconds.
    pub duration_ms: f64,
    /// Counts.
    pub summary: AuditSummary,
    /// Every rule, in DAG order.
    pub rules: Vec<AuditRule>,
    /// Located errors of failed rules, for humans.
    #[serde(skip)]
    pub diagnostics: Vec<miette::Report>,
}

impl AuditReport {
    pub(crate) fn new(
        loaded: &Loaded,
        outcomes: Vec<Outcome<Built, Failure>>,
        elapsed: Duration,
    ) -> Self {
        let mut outcomes: Vec<Option<Outcome<Built, Failure>>> =
            outcomes.into_iter().map(Some).collect();
        let mut rules = Vec::new();
        let mut diagnostics = Vec::new();
        let mut summary = AuditSummary::default();
        for &node in loaded.graph.order() {
            let rule = &loaded.project[loaded.graph.rule_index(node)];
            let mut r = AuditRule {
                name: rule.name.to_string(),
                kind: rule.kind.value.clone(),
                status: AuditStatus::Failed,
                derivation: None,
                recorded: None,
                rebuilt: None,
                changes: Vec::new(),
                error: None,
            };
            match outcomes[node.index()].take().expect("one outcome per node") {
                Outcome::Done(b) => {
                    r.derivation = Some(b.derivation);
                    r.recorded = Some(b.record.output);
                    r.status = match b.audit.map(|v| *v) {
                        None => AuditStatus::Skipped,
                        Some(Verdict::Identical) => AuditStatus::Identical,
                        Some(Verdict::Unrecorded) => {
                            r.recorded = None;
                            AuditStatus::Unrecorded
                        }
                        Some(Verdict::Differs {
                            rebuilt, changes, ..
                        }) => {
                            r.rebuilt = Some(rebuilt);
                            match changes {
                                Ok(c) => r.changes = c,
                                Err(e) => r.error = Some(e),
                            }
                            if rule.nondeterministic {
                                AuditStatus::Nondeterministic
                            } else {
                                AuditStatus::Differs
                            }
                        }
                    };
                }
                Outcome::Failed(f) => {
                    r.derivation = f.derivation;
                    r.error = Some(f.message);
                    diagnostics.push(f.report);
                }
                Outcome::Skipped { failed_dependency } => {
                    let dep = &loaded.project[loaded.graph.rule_index(failed_dependency)].name;
                    r.error = Some(format!("dependency `{dep}` failed"));
                }
                Outcome::Cancelled => r.error = Some("cancelled".to_owned()),
            }
            match r.status {
                AuditStatus::Identical => summary.identical += 1,
                AuditStatus::Differs => summary.differing += 1,
                AuditStatus::Nondeterministic => summary.nondeterministic += 1,
                AuditStatus::Unrecorded => summary.unrecorded += 1,
                AuditStatus::Failed => summary.failed += 1,
                AuditStatus::Skipped => {}
            }
            rules.push(r);
        }
        summary.checked = summary.identical + summary.differing + summary.nondeterministic;
        Self {
            format_version: AUDIT_JSON_FORMAT,
            project: loaded.project.name.clone(),
            env: loaded.selected.name().to_owned(),
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            summary,
            rules,
            diagnostics,
        }
    }

    /// 0 when every rebuild matched (or differed as declared); 1 on any mismatch or failure.
    pub fn exit_code(&self) -> u8 {
        if self.summary.differing > 0 || self.summary.failed > 0 {
            1
        } else {
            0
        }
    }
}
