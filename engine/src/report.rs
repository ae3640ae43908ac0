//! [`BuildReport`]: what a build did, for humans and for `--json` (format version 1).

use std::time::Duration;

use kiln_core::Digest;
use serde::Serialize;

/// The `--json` format version.
pub const BUILD_JSON_FORMAT: u32 = 1;

/// What happened to one rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Built in this run.
    Built,
    /// Found in the store.
    Cached,
    /// Found in a remote cache (its artifact is downloaded only when something reads it).
    Pulled,
    /// Its build failed.
    Failed,
    /// Not built because a dependency failed.
    Skipped,
    /// Not built because the build stopped after a failure.
    Cancelled,
}

/// One rule's line in the report.
#[derive(Debug, Clone, Serialize)]
pub struct RuleReport {
    /// Rule name.
    pub name: String,
    /// Its kind.
    pub kind: String,
    /// What happened.
    pub status: Status,
    /// Derivation hash, when it could be computed.
    pub derivation: Option<Digest>,
    /// Output hash, when built or cached.
    pub output: Option<Digest>,
    /// Time spent on this rule, in milliseconds.
    pub duration_ms: f64,
    /// The error, for failed rules.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    /// The failure was the store's (disk full, permissions), not the rule's.
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub infrastructure: bool,
}

/// Counts per status.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Summary {
    /// Rules in the graph.
    pub rules: usize,
    /// Built in this run.
    pub built: usize,
    /// Found in the store.
    pub cached: usize,
    /// Found in a remote cache.
    pub pulled: usize,
    /// Failed.
    pub failed: usize,
    /// Skipped or cancelled.
    pub skipped: usize,
}

/// The whole build.
#[derive(Debug, Serialize)]
pub struct BuildReport {
    /// Always [`BUILD_JSON_FORMAT`].
    pub format_version: u32,
    /// Project name.
    pub project: String,
    /// Environment (`-` when none).
    pub env: String,
    /// Store directory.
    pub store: String,
    /// Wall time in milliseconds.
    pub duration_ms: f64,
    /// Counts.
    pub summary: Summary,
    /// Peak resident memory of the kiln process, in KiB (Linux only).
    pub peak_rss_kib: Option<u64>,
    /// Every rule in topological order.
    pub rules: Vec<RuleReport>,
    /// Located errors of failed rules, for humans.
    #[serde(skip)]
    pub diagnostics: Vec<miette::Report>,
    /// The store failed after the rules ran (sync or GC root): nothing is lost but the root.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub store_error: Option<String>,
    /// What the remote caches cost (requests, bytes, hits, refusals), when any is configured;
    /// filled in by the caller that owns the caches.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub cache: Option<serde_json::Value>,
}

impl BuildReport {
    /// Builds the report and its counts.
    pub fn new(
        project: String,
        env: String,
        store: String,
        elapsed: Duration,
        rules: Vec<RuleReport>,
        diagnostics: Vec<miette::Report>,
    ) -> Self {
        let mut summary = Summary {
            rules: rules.len(),
            ..Summary::default()
        };
        for r in &rules {
            match r.status {
                Status::Built => summary.built += 1,
                Status::Cached => summary.cached += 1,
                Status::Pulled => summary.pulled += 1,
                Status::Failed => summary.failed += 1,
                Status::Skipped | Status::Cancelled => summary.skipped += 1,
            }
        }
        Self {
            format_version: BUILD_JSON_FORMAT,
            project,
            env,
            store,
            duration_ms: elapsed.as_secs_f64() * 1000.0,
            summary,
            peak_rss_kib: peak_rss_kib(),
            rules,
            diagnostics,
            store_error: None,
            cache: None,
        }
    }

    /// Whether every rule was built or cached, and the store kept the result.
    pub fn success(&self) -> bool {
        self.summary.failed == 0 && self.summary.skipped == 0 && self.store_error.is_none()
    }

    /// 0 on success; 2 when the store failed (a rule's write, the sync or the GC root);
    /// 1 when a rule failed.
    pub fn exit_code(&self) -> u8 {
        if self.store_error.is_some() || self.rules.iter().any(|r| r.infrastructure) {
            2
        } else if self.success() {
            0
        } else {
            1
        }
    }
}

/// `VmHWM` from `/proc/self/status`.
fn peak_rss_kib() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmHWM:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}
