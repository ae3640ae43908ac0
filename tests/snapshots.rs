//! What users read of `kiln build`, pinned: the text summary and the `--json` report of a
//! first build and a no-op rebuild. Durations, store paths and the project's directory are
//! redacted; hashes are not (they are the format's promise). A change is a reviewed diff of
//! `tests/snapshots/`.

mod common;

use common::Sandbox;

fn project() -> Sandbox {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        r#"[project]
name = "snap"

[vars]
replicas = 2

[env.prod]
replicas = 3

[rule.ns]
kind = "manifest"
objects = [ { apiVersion = "v1", kind = "Namespace", metadata = { name = "shop" } } ]

[rule.config]
kind = "configmap"
deps = ["ns"]
name = "app-config"
namespace = "shop"
literals = { replicas = "${var.replicas}" }

[rule.all]
kind = "bundle"
deps = ["ns", "config"]
"#,
    );
    s
}

fn settings(s: &Sandbox) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.add_filter(&regex::escape(&s.store().display().to_string()), "[store]");
    settings.add_filter(
        &regex::escape(&s.project().display().to_string()),
        "[project]",
    );
    settings.add_filter(r"\d+(\.\d+)?\s?(ms|s)\b", "[duration]");
    settings
}

fn text_build(s: &Sandbox) -> String {
    let out = s.build_ok(&["--env", "prod"]);
    format!(
        "stdout:\n{}\nstderr:\n{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn build_text_first_and_no_op() {
    let s = project();
    settings(&s).bind(|| {
        insta::assert_snapshot!("build_text_first", text_build(&s));
        insta::assert_snapshot!("build_text_no_op", text_build(&s));
    });
}

#[test]
fn build_json_report() {
    let s = project();
    let report = s.build(&["--env", "prod"]);
    settings(&s).bind(|| {
        insta::assert_json_snapshot!("build_json", report, {
            ".duration_ms" => "[duration]",
            ".rules[].duration_ms" => "[duration]",
            ".store" => "[store]",
            ".peak_rss_kib" => "[rss]",
        });
    });
}
