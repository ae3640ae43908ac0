//! The flag audit: every flag of every command either changes what the command does, or is
//! refused. The audit walks `kiln <command> --help` for every command and every flag, and each
//! flag found must have a proof in [`proofs`]; a flag without one (a new flag nobody checked)
//! or a proof of a flag that is gone fails the audit.
//!
//! A proof is one of:
//! - **Shows**: the command with the flag prints something (stdout, stderr, or its exit code as
//!   `exit=N`) that the same command without it does not, or the reverse (**Hides**);
//! - **Tested**: an integration test asserts the flag's effect where it needs a set-up of its
//!   own (a gate that never passes, a lock held by another process, a stalled server); the
//!   audit checks that the test exists and uses the flag.
//!
//! The global flags (`-v`, `-q`, `--color`, `--no-progress`, `--store`) are proved once, on
//! `build`. Cluster commands run against the test control plane.

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::process::Command;

use common::Sandbox;

const GLOBAL: &[&str] = &[
    "--verbose",
    "--quiet",
    "--color",
    "--no-progress",
    "--store",
    "--help",
    "--version",
];

const COMMANDS: &[&str] = &[
    "build",
    "graph",
    "plan",
    "apply",
    "destroy",
    "audit",
    "why",
    "diff",
    "provenance",
    "show",
    "export",
    "completions",
    "manpages",
    "store gc",
    "store verify",
    "store ls",
    "store path",
    "store cat",
    "cache keygen",
    "cache serve",
    "cache push",
    "cache pull",
    "cache verify",
    "config show",
];

/// How a flag is proved.
enum Proof {
    /// `with` prints `needle`, `base` does not (arguments as one string, with `{P}` the project,
    /// `{KC}` the kubeconfig, `{D}` a scratch directory).
    Shows {
        base: &'static str,
        with: &'static str,
        needle: &'static str,
    },
    /// `base` prints `needle`, `with` does not.
    Hides {
        base: &'static str,
        with: &'static str,
        needle: &'static str,
    },
    /// The test `test` in `tests/<file>` asserts the flag's effect.
    Tested {
        file: &'static str,
        test: &'static str,
    },
}

use Proof::{Hides, Shows, Tested};

const B: &str = "build {P} --env staging";
const PL: &str = "plan {P} --env staging --kubeconfig {KC}";

/// Every command's flags with their proofs, in the order they run.
#[allow(clippy::too_many_lines)]
fn proofs() -> Vec<(&'static str, &'static str, Proof)> {
    vec![
        // Global flags, once.
        ("build", "--verbose", Shows { base: B, with: "build {P} --env staging -vv", needle: "DEBUG" }),
        ("build", "--quiet", Hides { base: B, with: "build {P} --env staging -q", needle: "rules in" }),
        ("build", "--color", Shows { base: "build {P} --env nope", with: "build {P} --env nope --color always", needle: "\u{1b}[" }),
        ("build", "--no-progress", Tested { file: "color.rs", test: "progress_bars_show_on_a_terminal_unless_no_progress" }),
        ("build", "--store", Shows { base: B, with: "build {P} --env staging --store {D}/other-store", needle: "other-store" }),
        // build
        ("build", "--env", Shows { base: B, with: "build {P} --env production", needle: "env production" }),
        ("build", "--jobs", Shows { base: "build {P} --env staging -vv --var tag=9.0.1", with: "build {P} --env staging -vv --jobs 7 --var tag=9.0.2", needle: "at most 7 rules at once" }),
        ("build", "--json", Shows { base: B, with: "build {P} --env staging --json", needle: "\"format_version\"" }),
        ("build", "--keep-going", Tested { file: "bad_input.rs", test: "a_failing_rule_stops_dependents_and_keep_going_builds_the_rest" }),
        ("build", "--rule", Shows { base: "build {P} --env staging --json", with: "build {P} --env staging --json --rule config", needle: "\"rules\": 2," }),
        ("build", "--unsandboxed", Tested { file: "kinds.rs", test: "exec_without_a_sandbox_is_refused_unless_unsandboxed" }),
        ("build", "--var", Shows { base: "build {P} --env staging --json", with: "build {P} --env staging --json --var tag=2.0.0", needle: "\"built\": 2," }),
        ("build", "--cache", Shows { base: B, with: "build {P} --env staging --cache file://{D}/c", needle: "cache file://" }),
        ("build", "--trusted-key", Shows { base: B, with: "build {P} --env staging --trusted-key not-a-key", needle: "not-a-key" }),
        ("build", "--cache-token-file", Shows { base: "build {P} --env staging --cache file://{D}/c", with: "build {P} --env staging --cache file://{D}/c --cache-token-file {D}/no-token", needle: "no-token" }),
        ("build", "--cache-timeout", Shows { base: B, with: "build {P} --env staging --cache-timeout 4000", needle: "out of range" }),
        ("build", "--push", Shows { base: "build {P} --env staging --cache file://{D}/c", with: "build {P} --env staging --cache file://{D}/c --push", needle: "pushed" }),
        ("build", "--signing-key", Shows { base: "build {P} --env staging --cache file://{D}/c --push", with: "build {P} --env staging --cache file://{D}/c --push --signing-key {D}/no-key", needle: "no-key" }),
        // graph
        ("graph", "--env", Shows { base: "graph {P} --env staging", with: "graph {P} --env production", needle: "prod-only" }),
        ("graph", "--format", Shows { base: "graph {P} --env staging", with: "graph {P} --env staging --format mermaid", needle: "flowchart" }),
        ("graph", "--rule", Hides { base: "graph {P} --env staging", with: "graph {P} --env staging --rule config", needle: "stamp" }),
        // plan (the set was applied, then a source edited: the plan has an update)
        ("plan", "--env", Shows { base: PL, with: "plan {P} --env production --kubeconfig {KC}", needle: "production`" }),
        ("plan", "--kubeconfig", Shows { base: "plan {P} --env staging", with: PL, needle: "plan: " }),
        ("plan", "--context", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --context nope", needle: "nope" }),
        ("plan", "--request-timeout", Tested { file: "safe_edges.rs", test: "a_request_timeout_ends_a_stalled_request" }),
        ("plan", "--applyset-namespace", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --applyset-namespace kube-public", needle: "another kiln set" }),
        ("plan", "--json", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --json", needle: "\"format_version\"" }),
        ("plan", "--rule", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --rule config", needle: "only the rules given with --rule" }),
        ("plan", "--unsandboxed", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --unsandboxed --var tag=3.0.0", needle: "without the sandbox" }),
        ("plan", "--var", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --var replicas=1", needle: "shared: " }),
        ("plan", "--cache", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --cache file://{D}/c", needle: "cache file://" }),
        ("plan", "--trusted-key", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --trusted-key not-a-key", needle: "not-a-key" }),
        ("plan", "--cache-token-file", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --cache file://{D}/c --cache-token-file {D}/no-token", needle: "no-token" }),
        ("plan", "--cache-timeout", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --cache-timeout 4000", needle: "out of range" }),
        ("plan", "--push", Shows { base: "plan {P} --env staging --kubeconfig {KC} --cache file://{D}/c-plan", with: "plan {P} --env staging --kubeconfig {KC} --cache file://{D}/c-plan --push", needle: "pushed" }),
        ("plan", "--signing-key", Shows { base: "plan {P} --env staging --kubeconfig {KC} --cache file://{D}/c --push", with: "plan {P} --env staging --kubeconfig {KC} --cache file://{D}/c --push --signing-key {D}/no-key", needle: "no-key" }),
        ("plan", "--find-orphans", Tested { file: "concurrency.rs", test: "orphans_are_found_and_pruned_and_nothing_else_is_touched" }),
        ("plan", "--adopt", Tested { file: "realize_truth.rs", test: "existing_objects_are_adopted_and_other_sets_members_refused" }),
        ("plan", "--detailed-exitcode", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --detailed-exitcode", needle: "exit=2" }),
        ("plan", "--out", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --out {D}/plan.kiln", needle: "plan saved to" }),
        ("plan", "--html", Shows { base: PL, with: "plan {P} --env staging --kubeconfig {KC} --html {D}/plan.html", needle: "plan report written" }),
        // apply: refusals and reports that write nothing first, then writes
        ("apply", "--kubeconfig", Shows { base: "apply {P} --env staging --skip-workload-gates --yes", with: "apply {P} --env staging --skip-workload-gates --yes --kubeconfig {KC}", needle: "applied " }),
        ("apply", "--context", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --context nope", needle: "nope" }),
        ("apply", "--request-timeout", Tested { file: "safe_edges.rs", test: "a_request_timeout_ends_a_stalled_request" }),
        ("apply", "--applyset-namespace", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --applyset-namespace kube-public", needle: "another kiln set" }),
        ("apply", "--json", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --json", needle: "\"format_version\"" }),
        ("apply", "--rule", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --rule config", needle: "only the rules given with --rule" }),
        ("apply", "--unsandboxed", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --unsandboxed --var tag=4.0.0 --rule stamp", needle: "without the sandbox" }),
        ("apply", "--trusted-key", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --trusted-key not-a-key", needle: "not-a-key" }),
        ("apply", "--cache-token-file", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --cache file://{D}/c", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --cache file://{D}/c --cache-token-file {D}/no-token", needle: "no-token" }),
        ("apply", "--cache-timeout", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --cache-timeout 4000", needle: "out of range" }),
        ("apply", "--signing-key", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --cache file://{D}/c --push", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --cache file://{D}/c --push --signing-key {D}/no-key", needle: "no-key" }),
        ("apply", "--cache", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --cache file://{D}/c", needle: "cache file://" }),
        ("apply", "--push", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --cache file://{D}/c-apply", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --cache file://{D}/c-apply --push", needle: "pushed" }),
        ("apply", "--env", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes", with: "apply {P} --env production --kubeconfig {KC} --skip-workload-gates --yes", needle: "production`" }),
        ("apply", "--var", Shows { base: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes", with: "apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes --var replicas=1", needle: "shared: " }),
        ("apply", "--yes", Tested { file: "concurrency.rs", test: "destroy_removes_one_instance_and_leaves_the_other" }),
        ("apply", "--force-conflicts", Tested { file: "cluster.rs", test: "conflicts_name_the_other_field_manager" }),
        ("apply", "--no-wait", Tested { file: "safe_edges.rs", test: "health_gates_are_waited_for_skipped_or_not_waited_for_as_asked" }),
        ("apply", "--skip-workload-gates", Tested { file: "safe_edges.rs", test: "health_gates_are_waited_for_skipped_or_not_waited_for_as_asked" }),
        ("apply", "--timeout", Tested { file: "safe_edges.rs", test: "health_gates_are_waited_for_skipped_or_not_waited_for_as_asked" }),
        ("apply", "--parallel", Tested { file: "safe_edges.rs", test: "parallel_bounds_the_writes_in_flight" }),
        ("apply", "--prune-orphans", Tested { file: "concurrency.rs", test: "orphans_are_found_and_pruned_and_nothing_else_is_touched" }),
        ("apply", "--adopt", Tested { file: "realize_truth.rs", test: "existing_objects_are_adopted_and_other_sets_members_refused" }),
        ("apply", "--lock-timeout", Tested { file: "concurrency.rs", test: "a_lock_timeout_names_the_holder" }),
        ("apply", "--lock-ttl", Tested { file: "concurrency.rs", test: "a_paused_holder_resumes_to_a_closed_fence_and_writes_nothing" }),
        // destroy (dry runs: nothing is deleted)
        ("destroy", "--env", Hides { base: "destroy {P} --env staging --kubeconfig {KC} --dry-run", with: "destroy {P} --env production --kubeconfig {KC} --dry-run", needle: "ConfigMap" }),
        ("destroy", "--kubeconfig", Shows { base: "destroy {P} --env staging --dry-run", with: "destroy {P} --env staging --dry-run --kubeconfig {KC}", needle: "ConfigMap" }),
        ("destroy", "--context", Shows { base: "destroy {P} --env staging --kubeconfig {KC} --dry-run", with: "destroy {P} --env staging --kubeconfig {KC} --dry-run --context nope", needle: "nope" }),
        ("destroy", "--request-timeout", Tested { file: "safe_edges.rs", test: "a_request_timeout_ends_a_stalled_request" }),
        ("destroy", "--applyset-namespace", Hides { base: "destroy {P} --env staging --kubeconfig {KC} --dry-run", with: "destroy {P} --env staging --kubeconfig {KC} --dry-run --applyset-namespace kube-public", needle: "ConfigMap" }),
        ("destroy", "--json", Shows { base: "destroy {P} --env staging --kubeconfig {KC} --dry-run", with: "destroy {P} --env staging --kubeconfig {KC} --dry-run --json", needle: "\"format_version\"" }),
        ("destroy", "--rule", Shows { base: "destroy {P} --env staging --kubeconfig {KC} --dry-run", with: "destroy {P} --env staging --kubeconfig {KC} --dry-run --rule config", needle: "only the objects of rule(s)" }),
        ("destroy", "--var", Hides { base: "destroy {P} --env staging --kubeconfig {KC} --dry-run", with: "destroy {P} --env staging --kubeconfig {KC} --dry-run --var replicas=1", needle: "ConfigMap" }),
        ("destroy", "--dry-run", Shows { base: "destroy {P} --env staging --kubeconfig {KC}", with: "destroy {P} --env staging --kubeconfig {KC} --dry-run", needle: "exit=0" }),
        ("destroy", "--yes", Tested { file: "concurrency.rs", test: "destroy_removes_one_instance_and_leaves_the_other" }),
        ("destroy", "--wait", Tested { file: "concurrency.rs", test: "destroy_removes_one_instance_and_leaves_the_other" }),
        ("destroy", "--timeout", Tested { file: "safe_edges.rs", test: "destroy_wait_ends_at_its_timeout_naming_what_is_left" }),
        ("destroy", "--find-orphans", Tested { file: "safe_edges.rs", test: "destroy_wait_ends_at_its_timeout_naming_what_is_left" }),
        ("destroy", "--lock-timeout", Tested { file: "safe_edges.rs", test: "destroy_wait_ends_at_its_timeout_naming_what_is_left" }),
        ("destroy", "--lock-ttl", Tested { file: "safe_edges.rs", test: "destroy_wait_ends_at_its_timeout_naming_what_is_left" }),
        // audit
        ("audit", "--env", Shows { base: "audit {P} --env staging --json", with: "audit {P} --env production --json", needle: "prod-only" }),
        ("audit", "--jobs", Shows { base: "audit {P} --env staging -vv", with: "audit {P} --env staging -vv --jobs 7", needle: "at most 7 rules at once" }),
        ("audit", "--rules", Shows { base: "audit {P} --env staging --json", with: "audit {P} --env staging --json --rules config", needle: "\"checked\": 1" }),
        ("audit", "--against", Shows { base: "audit {P} --env staging --json", with: "audit {P} --env staging --json --against file://{D}/c-empty", needle: "\"unrecorded\": 4" }),
        ("audit", "--trusted-key", Shows { base: "audit {P} --env staging --against file://{D}/c", with: "audit {P} --env staging --against file://{D}/c --trusted-key not-a-key", needle: "not-a-key" }),
        ("audit", "--json", Shows { base: "audit {P} --env staging", with: "audit {P} --env staging --json", needle: "\"format_version\"" }),
        ("audit", "--unsandboxed", Shows { base: "audit {P} --env staging --rules stamp", with: "audit {P} --env staging --rules stamp --unsandboxed", needle: "without the sandbox" }),
        ("audit", "--var", Shows { base: "audit {P} --env staging --json", with: "audit {P} --env staging --json --var replicas=abc", needle: "is an integer" }),
        // why
        ("why", "--env", Shows { base: "why api {P} --env staging", with: "why prod-only {P} --env production", needle: "prod-only" }),
        ("why", "--since", Shows { base: "why api {P} --env staging", with: "why api {P} --env staging --since {D}/no-root", needle: "no-root" }),
        ("why", "--json", Shows { base: "why api {P} --env staging", with: "why api {P} --env staging --json", needle: "\"format_version\"" }),
        ("why", "--var", Shows { base: "why api {P} --env staging", with: "why api {P} --env staging --var tag=6.0.0", needle: "no earlier build" }),
        // diff
        ("diff", "--env", Shows { base: "diff {P} --env staging --since last", with: "diff {P} --env staging --env production", needle: "prod-only" }),
        ("diff", "--since", Shows { base: "diff {P} --env staging", with: "diff {P} --env staging --since last", needle: "the last build" }),
        ("diff", "--json", Shows { base: "diff {P} --env staging --since last", with: "diff {P} --env staging --since last --json", needle: "\"format_version\"" }),
        ("diff", "--unsandboxed", Shows { base: "diff {P} --env staging --env production --var tag=11.0.1", with: "diff {P} --env staging --env production --var tag=11.0.2 --unsandboxed", needle: "without the sandbox" }),
        ("diff", "--var", Shows { base: "diff {P} --env staging --since last", with: "diff {P} --env staging --since last --var tag=7.0.0", needle: "no earlier build" }),
        // provenance
        ("provenance", "--env", Shows { base: "provenance prod-only {P} --env staging", with: "provenance prod-only {P} --env production", needle: "\"_type\"" }),
        ("provenance", "--sign", Tested { file: "provenance.rs", test: "a_signed_envelope_verifies_and_one_changed_byte_fails" }),
        ("provenance", "--verify", Tested { file: "provenance.rs", test: "a_signed_envelope_verifies_and_one_changed_byte_fails" }),
        ("provenance", "--trusted-key", Tested { file: "provenance.rs", test: "a_signed_envelope_verifies_and_one_changed_byte_fails" }),
        // show
        ("show", "--json", Tested { file: "saved_plans.rs", test: "a_fresh_saved_plan_applies_exactly_and_show_prints_it" }),
        // export
        ("export", "--out", Shows { base: "export {P} --env staging", with: "export {P} --env staging --out {D}/rendered", needle: "exported" }),
        ("export", "--env", Shows { base: "export {P} --env staging --out {D}/rendered --check", with: "export {P} --env production --out {D}/rendered --check", needle: "prod-only" }),
        ("export", "--check", Tested { file: "export.rs", test: "the_export_is_what_apply_sends_and_stays_in_step" }),
        ("export", "--unsandboxed", Shows { base: "export {P} --env staging --out {D}/rendered --var tag=8.0.1", with: "export {P} --env staging --out {D}/rendered --var tag=8.0.2 --unsandboxed", needle: "without the sandbox" }),
        ("export", "--var", Tested { file: "safe_edges.rs", test: "a_var_takes_the_type_of_its_default" }),
        ("export", "--applyset-namespace", Shows { base: "export {P} --env staging --out {D}/r3", with: "export {P} --env staging --out {D}/r3 --check --applyset-namespace other", needle: "exit=1" }),
        // store
        ("store gc", "--json", Shows { base: "store gc", with: "store gc --json", needle: "\"format_version\"" }),
        ("store verify", "--json", Shows { base: "store verify", with: "store verify --json", needle: "\"format_version\"" }),
        ("store ls", "--json", Shows { base: "store ls", with: "store ls --json", needle: "\"format_version\"" }),
        ("store path", "--env", Tested { file: "why_diff.rs", test: "diff_of_two_environments_lists_exactly_the_objects_they_change" }),
        ("store path", "--cache", Tested { file: "remote_cache.rs", test: "a_server_that_dies_or_truncates_mid_pull_leaves_a_local_build" }),
        ("store path", "--trusted-key", Shows { base: "store path api {P} --env staging", with: "store path api {P} --env staging --trusted-key not-a-key", needle: "not-a-key" }),
        ("store path", "--cache-token-file", Shows { base: "store path api {P} --env staging --cache file://{D}/c", with: "store path api {P} --env staging --cache file://{D}/c --cache-token-file {D}/no-token", needle: "no-token" }),
        ("store path", "--cache-timeout", Shows { base: "store path api {P} --env staging", with: "store path api {P} --env staging --cache-timeout 4000", needle: "out of range" }),
        ("store cat", "--env", Shows { base: "store cat api {P} --env staging", with: "store cat api {P} --env production", needle: "replicas: 3" }),
        ("store cat", "--cache", Tested { file: "remote_cache.rs", test: "a_server_that_dies_or_truncates_mid_pull_leaves_a_local_build" }),
        ("store cat", "--trusted-key", Shows { base: "store cat api {P} --env staging", with: "store cat api {P} --env staging --trusted-key not-a-key", needle: "not-a-key" }),
        ("store cat", "--cache-token-file", Shows { base: "store cat api {P} --env staging --cache file://{D}/c", with: "store cat api {P} --env staging --cache file://{D}/c --cache-token-file {D}/no-token", needle: "no-token" }),
        ("store cat", "--cache-timeout", Shows { base: "store cat api {P} --env staging", with: "store cat api {P} --env staging --cache-timeout 4000", needle: "out of range" }),
        ("store cat", "--file", Hides { base: "store cat api {P} --env staging", with: "store cat api {P} --env staging --file objects/shop/Deployment.apps/api.yaml", needle: "==> " }),
        // cache
        ("cache keygen", "--out", Tested { file: "provenance.rs", test: "a_signed_envelope_verifies_and_one_changed_byte_fails" }),
        ("cache serve", "--dir", Tested { file: "flag_audit.rs", test: "cache_serve_flags_are_each_read" }),
        ("cache serve", "--listen", Tested { file: "flag_audit.rs", test: "cache_serve_flags_are_each_read" }),
        ("cache serve", "--token-file", Tested { file: "flag_audit.rs", test: "cache_serve_flags_are_each_read" }),
        ("cache serve", "--backend", Tested { file: "flag_audit.rs", test: "cache_serve_flags_are_each_read" }),
        ("cache serve", "--read-token-file", Tested { file: "flag_audit.rs", test: "cache_serve_flags_are_each_read" }),
        ("cache serve", "--max-upload-bytes", Tested { file: "flag_audit.rs", test: "cache_serve_flags_are_each_read" }),
        ("cache push", "--env", Shows { base: "cache push {P} --env staging --all --cache file://{D}/c-env", with: "cache push {P} --env production --all --cache file://{D}/c-env", needle: "pushed 2 entries" }),
        ("cache push", "--all", Shows { base: "cache push {P} --env staging --rule config --cache file://{D}/c-all --json", with: "cache push {P} --env staging --all --cache file://{D}/c-all --json", needle: "pushed 3 entries" }),
        ("cache push", "--rule", Shows { base: "cache push {P} --env staging --cache file://{D}/c", with: "cache push {P} --env staging --cache file://{D}/c --rule config", needle: "exit=0" }),
        ("cache push", "--json", Shows { base: "cache push {P} --env staging --all --cache file://{D}/c", with: "cache push {P} --env staging --all --cache file://{D}/c --json", needle: "\"cache\"" }),
        ("cache push", "--cache", Shows { base: "cache push {P} --env staging --all", with: "cache push {P} --env staging --all --cache file://{D}/c", needle: "exit=0" }),
        ("cache push", "--trusted-key", Shows { base: "cache push {P} --env staging --all --cache file://{D}/c", with: "cache push {P} --env staging --all --cache file://{D}/c --trusted-key not-a-key", needle: "not-a-key" }),
        ("cache push", "--cache-token-file", Shows { base: "cache push {P} --env staging --all --cache file://{D}/c", with: "cache push {P} --env staging --all --cache file://{D}/c --cache-token-file {D}/no-token", needle: "no-token" }),
        ("cache push", "--cache-timeout", Shows { base: "cache push {P} --env staging --all --cache file://{D}/c", with: "cache push {P} --env staging --all --cache file://{D}/c --cache-timeout 4000", needle: "out of range" }),
        ("cache push", "--signing-key", Shows { base: "cache push {P} --env staging --all --cache file://{D}/c", with: "cache push {P} --env staging --all --cache file://{D}/c --signing-key {D}/no-key", needle: "no-key" }),
        ("cache pull", "--env", Shows { base: "cache pull {P} --env staging --all --cache file://{D}/c --store {D}/ps1", with: "cache pull {P} --env production --all --cache file://{D}/c --store {D}/ps2", needle: " 3 hits" }),
        ("cache pull", "--all", Shows { base: "cache pull {P} --env staging --cache file://{D}/c", with: "cache pull {P} --env staging --cache file://{D}/c --all", needle: "exit=0" }),
        ("cache pull", "--rule", Shows { base: "cache pull {P} --env staging --cache file://{D}/c", with: "cache pull {P} --env staging --cache file://{D}/c --rule config", needle: "exit=0" }),
        ("cache pull", "--json", Shows { base: "cache pull {P} --env staging --all --cache file://{D}/c", with: "cache pull {P} --env staging --all --cache file://{D}/c --json", needle: "\"cache\"" }),
        ("cache pull", "--cache", Shows { base: "cache pull {P} --env staging --all", with: "cache pull {P} --env staging --all --cache file://{D}/c", needle: "exit=0" }),
        ("cache pull", "--trusted-key", Shows { base: "cache pull {P} --env staging --all --cache file://{D}/c", with: "cache pull {P} --env staging --all --cache file://{D}/c --trusted-key not-a-key", needle: "not-a-key" }),
        ("cache pull", "--cache-token-file", Shows { base: "cache pull {P} --env staging --all --cache file://{D}/c", with: "cache pull {P} --env staging --all --cache file://{D}/c --cache-token-file {D}/no-token", needle: "no-token" }),
        ("cache pull", "--cache-timeout", Shows { base: "cache pull {P} --env staging --all --cache file://{D}/c", with: "cache pull {P} --env staging --all --cache file://{D}/c --cache-timeout 4000", needle: "out of range" }),
        ("cache verify", "--cache", Shows { base: "cache verify", with: "cache verify --cache file://{D}/c", needle: "exit=0" }),
        ("cache verify", "--trusted-key", Shows { base: "cache verify --cache file://{D}/c", with: "cache verify --cache file://{D}/c --trusted-key not-a-key", needle: "not-a-key" }),
        ("cache verify", "--cache-token-file", Shows { base: "cache verify --cache file://{D}/c", with: "cache verify --cache file://{D}/c --cache-token-file {D}/no-token", needle: "no-token" }),
        ("cache verify", "--cache-timeout", Shows { base: "cache verify --cache file://{D}/c", with: "cache verify --cache file://{D}/c --cache-timeout 4000", needle: "out of range" }),
        ("cache verify", "--json", Shows { base: "cache verify --cache file://{D}/c", with: "cache verify --cache file://{D}/c --json", needle: "\"problems\"" }),
        // config
        ("config show", "--env", Tested { file: "config.rs", test: "the_file_gives_defaults_and_show_names_each_source" }),
        ("config show", "--json", Shows { base: "config show {P}", with: "config show {P} --json", needle: "\"settings\"" }),
    ]
}

/// The flags `kiln <command> --help` lists.
fn help_flags(command: &str) -> BTreeSet<String> {
    let out = Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .args(command.split(' '))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success(), "kiln {command} --help");
    String::from_utf8(out.stdout)
        .unwrap()
        .lines()
        .filter_map(|l| {
            let l = l.trim_start();
            let l = l
                .strip_prefix('-')
                .filter(|r| r.len() > 2 && &r[1..3] == ", ")
                .map_or(l, |r| &r[3..]);
            l.starts_with("--").then(|| {
                l.split([' ', '=', '[', '<', '.'])
                    .next()
                    .unwrap()
                    .to_owned()
            })
        })
        .collect()
}

/// The project every proof runs on.
fn project(s: &Sandbox, name: &str) {
    s.write(
        "kiln.toml",
        &format!(
            r#"[project]
name = "{name}"

[vars]
namespace = "{name}"
tag = "1.0.0"
replicas = 1

[env.staging]

[env.production]
replicas = 3

[rule.ns]
kind = "manifest"
objects = [ {{ apiVersion = "v1", kind = "Namespace", metadata = {{ name = "${{var.namespace}}" }} }} ]

[rule.config]
kind = "configmap"
name = "api-config"
namespace = "${{var.namespace}}"
srcs = ["config/app.env"]
deps = ["ns"]

[rule.api]
kind = "manifest"
srcs = ["k8s/api.yaml"]
deps = ["ns", "config"]
namespace = "${{var.namespace}}"

[rule.prod-only]
kind = "configmap"
name = "prod-only"
namespace = "${{var.namespace}}"
envs = ["production"]
literals = {{ a = "1" }}
hash_suffix = false
deps = ["ns"]

[rule.stamp]
kind = "exec"
command = ["sh", "-c", "echo ${{var.tag}} > $out/stamp"]
"#
        ),
    );
    s.write("config/app.env", "LOG_LEVEL=info\n");
    s.write(
        "k8s/api.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: ${var.replicas}\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec:\n      containers:\n        - name: api\n          image: shop/api:${var.tag}\n",
    );
}

struct Runner {
    s: Sandbox,
    vars: BTreeMap<&'static str, String>,
}

impl Runner {
    fn args(&self, text: &str) -> Vec<String> {
        text.split_whitespace()
            .map(|a| {
                let mut a = a.to_owned();
                for (k, v) in &self.vars {
                    a = a.replace(k, v);
                }
                a
            })
            .collect()
    }

    /// `exit=N`, then stdout and stderr.
    fn run(&self, text: &str) -> String {
        let out = self
            .s
            .kiln()
            .current_dir(self.s.dir.path())
            .env("HOME", self.s.dir.path())
            .env_remove("KUBECONFIG")
            .args(self.args(text))
            .output()
            .unwrap();
        format!(
            "exit={}\n{}{}",
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        )
    }
}

/// Whether `body` names `flag` as a whole word (`--cache` is not in `--cache-timeout`).
fn uses_flag(body: &str, flag: &str) -> bool {
    body.match_indices(flag).any(|(at, _)| {
        let next = body[at + flag.len()..].chars().next();
        !matches!(next, Some(c) if c.is_ascii_alphanumeric() || c == '-')
    })
}

/// The body of `fn test` in `file`, if there is one.
fn test_body(file: &Path, test: &str) -> Option<String> {
    let src = std::fs::read_to_string(file).ok()?;
    let start = src.find(&format!("fn {test}("))?;
    let end = src[start..].find("\n}\n").map_or(src.len(), |e| start + e);
    Some(src[start..end].to_owned())
}

#[test]
fn every_flag_of_every_command_changes_what_it_does_or_is_refused() {
    let table = proofs();
    // 1. The table covers exactly the flags the commands have.
    let mut listed: BTreeSet<(String, String)> = BTreeSet::new();
    for cmd in COMMANDS {
        for flag in help_flags(cmd) {
            if !GLOBAL.contains(&flag.as_str()) {
                listed.insert(((*cmd).to_owned(), flag));
            }
        }
    }
    let proved: BTreeSet<(String, String)> = table
        .iter()
        .filter(|(_, f, _)| !GLOBAL.contains(f))
        .map(|(c, f, _)| ((*c).to_owned(), (*f).to_owned()))
        .collect();
    let unproved: Vec<_> = listed.difference(&proved).collect();
    assert!(unproved.is_empty(), "flags without a proof: {unproved:?}");
    let gone: Vec<_> = proved.difference(&listed).collect();
    assert!(gone.is_empty(), "proofs of flags that are gone: {gone:?}");

    // 2. Each proof holds.
    let s = Sandbox::new();
    let name = format!("audit-{}", std::process::id());
    project(&s, &name);
    let d = s.dir.path().to_owned();
    let r = Runner {
        vars: BTreeMap::from([
            ("{P}", s.project().display().to_string()),
            ("{KC}", common::kubeconfig().display().to_string()),
            ("{D}", d.display().to_string()),
        ]),
        s,
    };
    // The set is applied, then a source edited, so that the plan has an update to show.
    let setup = r.run("apply {P} --env staging --kubeconfig {KC} --skip-workload-gates --yes");
    assert!(setup.starts_with("exit=0"), "{setup}");
    r.s.write("config/app.env", "LOG_LEVEL=debug\n");
    let tests = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests");
    let mut failures = Vec::new();
    for (cmd, flag, proof) in &table {
        match proof {
            Shows { base, with, needle } | Hides { base, with, needle } => {
                let (base_out, with_out) = (r.run(base), r.run(with));
                let needle = r.args(needle).join(" ");
                let (present, absent) = match proof {
                    Shows { .. } => (&with_out, &base_out),
                    _ => (&base_out, &with_out),
                };
                if !present.contains(&needle) || absent.contains(&needle) {
                    failures.push(format!(
                        "kiln {cmd} {flag}: `{needle}` should be in one output only\n--- without ({base}):\n{base_out}\n--- with ({with}):\n{with_out}"
                    ));
                }
            }
            Tested { file, test } => match test_body(&tests.join(file), test) {
                Some(body) if uses_flag(&body, flag) => {}
                Some(_) => failures.push(format!(
                    "kiln {cmd} {flag}: {file}::{test} does not use the flag"
                )),
                None => failures.push(format!("kiln {cmd} {flag}: no test {file}::{test}")),
            },
        }
    }
    let _ = common::realm::kubectl(&["delete", "namespace", &name, "--wait=false"]);
    assert!(
        failures.is_empty(),
        "{} proofs failed:\n\n{}",
        failures.len(),
        failures.join("\n\n")
    );
}

/// `kiln cache serve`'s flags that the remote cache tests do not use: `--backend` serves from
/// an object store URL, `--read-token-file` guards reads, `--max-upload-bytes` bounds a PUT.
#[test]
fn cache_serve_flags_are_each_read() {
    let d = tempfile::tempdir().unwrap();
    let serve = |args: &[&str]| {
        let mut child = Command::new(assert_cmd::cargo::cargo_bin("kiln"))
            .args(["cache", "serve", "--listen", "127.0.0.1:0"])
            .args(args)
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        let mut stderr = std::io::BufReader::new(child.stderr.take().unwrap());
        let mut line = String::new();
        std::io::BufRead::read_line(&mut stderr, &mut line).unwrap();
        // Keep reading its access log, or the server's writes to a closed pipe end it.
        std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
        let url = line
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("{line}"))
            .trim_end_matches(['.', ','])
            .to_owned();
        (child, url)
    };
    let get = |url: &str, token: Option<&str>| {
        let mut c = Command::new("python3");
        c.args(["-c", "import sys, urllib.request as u\nr = u.Request(sys.argv[1], method=sys.argv[3] if len(sys.argv) > 3 else 'GET', data=b'x' * int(sys.argv[4]) if len(sys.argv) > 4 else None)\nif sys.argv[2]: r.add_header('Authorization', 'Bearer ' + sys.argv[2])\ntry:\n  print(u.urlopen(r).status)\nexcept Exception as e:\n  print(getattr(e, 'code', e))"]);
        c.arg(url).arg(token.unwrap_or(""));
        String::from_utf8(c.output().unwrap().stdout)
            .unwrap()
            .trim()
            .to_owned()
    };
    let read_token = d.path().join("read.token");
    std::fs::write(&read_token, "r34d\n").unwrap();
    let dir = d.path().join("cache");
    std::fs::create_dir_all(&dir).unwrap();
    // --read-token-file: reads need it.
    let (mut open, url) = serve(&["--dir", dir.to_str().unwrap()]);
    let (mut guarded, guarded_url) = serve(&[
        "--dir",
        dir.to_str().unwrap(),
        "--read-token-file",
        read_token.to_str().unwrap(),
    ]);
    let probe = "/ac/0000000000000000000000000000000000000000000000000000000000000000";
    assert_eq!(get(&format!("{url}{probe}"), None), "404");
    assert_eq!(get(&format!("{guarded_url}{probe}"), None), "401");
    assert_eq!(get(&format!("{guarded_url}{probe}"), Some("r34d")), "404");
    let _ = (open.kill(), guarded.kill());
    // --backend: the same cache through an object store URL.
    let (mut backed, backed_url) = serve(&["--backend", &format!("file://{}", dir.display())]);
    assert_eq!(get(&format!("{backed_url}{probe}"), None), "404");
    let _ = backed.kill();
    // --max-upload-bytes: a larger PUT is refused.
    let push_token = d.path().join("push.token");
    std::fs::write(&push_token, "pu5h\n").unwrap();
    let (mut small, small_url) = serve(&[
        "--dir",
        dir.to_str().unwrap(),
        "--token-file",
        push_token.to_str().unwrap(),
        "--max-upload-bytes",
        "10",
    ]);
    let put = |n: usize| {
        String::from_utf8(
            Command::new("python3")
                .args(["-c", "import sys, urllib.request as u\nr = u.Request(sys.argv[1], method='PUT', data=b'x' * int(sys.argv[2]))\nr.add_header('Authorization', 'Bearer pu5h')\ntry:\n  print(u.urlopen(r).status)\nexcept Exception as e:\n  print(getattr(e, 'code', e))"])
                .arg(format!("{small_url}/cas/{}.tar.zst", "0".repeat(64)))
                .arg(n.to_string())
                .output()
                .unwrap()
                .stdout,
        )
        .unwrap()
        .trim()
        .to_owned()
    };
    assert_eq!(put(100), "413", "an upload over --max-upload-bytes");
    let _ = small.kill();
    // With both tokens, the push token reads too (a pushing runner holds one token).
    let (mut both, both_url) = serve(&[
        "--dir",
        dir.to_str().unwrap(),
        "--token-file",
        push_token.to_str().unwrap(),
        "--read-token-file",
        read_token.to_str().unwrap(),
    ]);
    assert_eq!(get(&format!("{both_url}{probe}"), None), "401");
    assert_eq!(get(&format!("{both_url}{probe}"), Some("pu5h")), "404");
    assert_eq!(get(&format!("{both_url}{probe}"), Some("r34d")), "404");
    let _ = both.kill();
}
