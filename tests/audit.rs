//! `kiln audit` and reproducibility across machines: every example audits clean, builds in two
//! differently set up places agree bit for bit, and a nondeterministic rule is caught with the
//! file and line that differ.

mod common;

use std::path::Path;
use std::process::Command as StdCommand;

use common::Sandbox;
use serde_json::Value;

const EXAMPLES: [&str; 5] = [
    "odordiff-2",
    "smell-diffusion",
    "data-pipeline",
    "ml-platform",
    "footanalytics",
];

fn example(name: &str) -> std::path::PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(name)
}

fn audit(s: &Sandbox, dir: &Path, extra: &[&str]) -> (Option<i32>, Value, String) {
    let out = s
        .kiln()
        .arg("audit")
        .arg(dir)
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let report = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}\n{stderr}", String::from_utf8_lossy(&out.stdout)));
    (out.status.code(), report, stderr)
}

fn rule<'r>(report: &'r Value, name: &str) -> &'r Value {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == name)
        .unwrap_or_else(|| panic!("no rule {name} in {report}"))
}

fn statuses(report: &Value, status: &str) -> Vec<String> {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn every_example_audits_clean_in_both_environments() {
    let s = Sandbox::new();
    for name in EXAMPLES {
        for env in ["staging", "production"] {
            let (code, report, stderr) = audit(&s, &example(name), &["--env", env]);
            assert_eq!(code, Some(0), "{name} {env}: {stderr}");
            let rules = report["rules"].as_array().unwrap().len();
            assert_eq!(
                report["summary"]["checked"], rules,
                "{name} {env}: every rule checked"
            );
            assert_eq!(report["summary"]["identical"], rules, "{name} {env}");
            assert_eq!(report["summary"]["differing"], 0);
        }
    }
}

/// Builds every example in both environments with the command `build(example, env)` makes;
/// `example/env/rule` -> output, sorted.
fn outputs(build: impl Fn(&str, &str) -> std::process::Command) -> Vec<(String, String)> {
    let mut all = Vec::new();
    for name in EXAMPLES {
        for env in ["staging", "production"] {
            let out = build(name, env).output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let r: Value = serde_json::from_slice(&out.stdout).unwrap();
            for rule in r["rules"].as_array().unwrap() {
                all.push((
                    format!("{name}/{env}/{}", rule["name"].as_str().unwrap()),
                    rule["output"].as_str().unwrap().to_owned(),
                ));
            }
        }
    }
    all.sort();
    all
}

fn copy_examples(to: &Path) {
    for name in EXAMPLES {
        let src = example(name);
        for entry in walkdir::WalkDir::new(&src) {
            let entry = entry.unwrap();
            let dest = to.join(name).join(entry.path().strip_prefix(&src).unwrap());
            if entry.file_type().is_dir() {
                std::fs::create_dir_all(&dest).unwrap();
            } else {
                std::fs::copy(entry.path(), &dest).unwrap();
            }
        }
    }
}

#[test]
fn two_machines_build_every_example_bit_for_bit_alike() {
    let a = Sandbox::new();
    let b = Sandbox::new();
    let deep = b.dir.path().join("some/other/checkout");
    copy_examples(&a.project());
    copy_examples(&deep);
    let first = outputs(|name, env| {
        let mut c = StdCommand::new(assert_cmd::cargo::cargo_bin("kiln"));
        c.arg("build")
            .arg(a.project().join(name))
            .args(["--json", "--env", env, "-j", "1"])
            .env("KILN_STORE", a.store())
            .env("KILN_NO_PROGRESS", "1")
            .env("TZ", "UTC")
            .env("LC_ALL", "C");
        c
    });
    // The other machine: another path, two jobs, another time zone and locale, and a umask
    // that gives group-writable files (sh -c sets it for the kiln process it starts).
    let second = outputs(|name, env| {
        let mut c = StdCommand::new("sh");
        c.arg("-c")
            .arg(format!(
                "umask 0002 && exec \"$0\" build \"$1\" --json --env {env} -j 2"
            ))
            .arg(assert_cmd::cargo::cargo_bin("kiln"))
            .arg(deep.join(name))
            .env("KILN_STORE", b.store())
            .env("KILN_NO_PROGRESS", "1")
            .env("TZ", "Pacific/Chatham")
            .env("LC_ALL", "de_DE.UTF-8")
            .env("LANG", "de_DE.UTF-8");
        c
    });
    assert!(first.len() > 200, "{} rules", first.len());
    assert_eq!(first, second);
}

const STAMP_PROJECT: &str = r#"[project]
name = "nd"

[rule.stamp]
kind = "exec"
command = ["sh", "-c", "mkdir -p out && printf 'built at\n' > out/stamp.txt && date +%s%N >> out/stamp.txt && echo same > out/same.txt"]

[rule.cfg]
kind = "manifest"
objects = [ { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "c", namespace = "x" }, data = { a = "1" } } ]

[rule.all]
kind = "bundle"
deps = ["stamp", "cfg"]
"#;

#[test]
fn a_nondeterministic_rule_is_caught_with_its_file_and_line() {
    let s = Sandbox::new();
    s.write("kiln.toml", STAMP_PROJECT);
    let (code, report, _) = audit(&s, &s.project(), &[]);
    assert_eq!(code, Some(1), "a mismatch exits 1: {report}");
    assert_eq!(statuses(&report, "differs"), ["stamp"]);
    // The others are still checked, on the recorded output of `stamp`: no cascade.
    assert_eq!(statuses(&report, "identical"), ["cfg", "all"]);
    let stamp = rule(&report, "stamp");
    assert_eq!(stamp["changes"].as_array().unwrap().len(), 1, "{stamp}");
    assert_eq!(stamp["changes"][0]["path"], "stamp.txt");
    let unified = stamp["changes"][0]["content"]["unified"].as_str().unwrap();
    assert!(
        unified.contains("@@ -2 +2 @@") || unified.contains("@@ -1,2 +1,2 @@"),
        "{unified}"
    );
    assert!(
        !unified.contains("-built at"),
        "only the differing line: {unified}"
    );

    // The text report names the rule, the file and the line too.
    let out = s.kiln().arg("audit").arg(s.project()).output().unwrap();
    let text = String::from_utf8_lossy(&out.stderr);
    assert!(
        text.contains("differs stamp (exec)") && text.contains("~ stamp.txt"),
        "{text}"
    );
    assert!(
        text.lines()
            .any(|l| l.trim_start().starts_with('-') && l.trim().len() > 10),
        "{text}"
    );

    // Declared nondeterministic: reported as such, exit 0.
    s.write(
        "kiln.toml",
        &STAMP_PROJECT.replace(
            "kind = \"exec\"\n",
            "kind = \"exec\"\nnondeterministic = true\n",
        ),
    );
    let (code, report, _) = audit(&s, &s.project(), &[]);
    assert_eq!(code, Some(0), "{report}");
    assert_eq!(statuses(&report, "nondeterministic"), ["stamp"]);
    assert_eq!(report["summary"]["nondeterministic"], 1);
}

#[test]
fn only_the_selected_rules_are_rebuilt() {
    let s = Sandbox::new();
    common::small_platform(&s);
    let (code, _, stderr) = audit(&s, &s.project(), &["--env", "staging"]);
    assert_eq!(code, Some(0), "{stderr}");
    let (_, report, _) = audit(&s, &s.project(), &["--env", "staging", "--rules", "worker"]);
    assert_eq!(
        report["summary"]["checked"], 1,
        "only the selected rule: {report}"
    );
    assert_eq!(statuses(&report, "skipped").len(), 4);
}

#[test]
fn an_audit_against_another_machines_cache_compares_its_signed_entries() {
    let cache = tempfile::tempdir().unwrap();
    let url = format!("file://{}", cache.path().join("c").display());
    let key_dir = tempfile::tempdir().unwrap();
    let key = key_dir.path().join("ci.key");
    let out = StdCommand::new(assert_cmd::cargo::cargo_bin("kiln"))
        .args(["cache", "keygen", "ci", "--out"])
        .arg(&key)
        .output()
        .unwrap();
    let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
    // Machine A builds and pushes, signed.
    let a = Sandbox::new();
    a.write("kiln.toml", STAMP_PROJECT);
    let out = a
        .kiln()
        .arg("build")
        .arg(a.project())
        .args(["--cache", &url, "--push", "--signing-key"])
        .arg(&key)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Machine B audits its rebuild against A's entries.
    let b = Sandbox::new();
    b.write("kiln.toml", STAMP_PROJECT);
    let (code, report, stderr) = audit(
        &b,
        &b.project(),
        &["--against", &url, "--trusted-key", &public],
    );
    assert_eq!(code, Some(1), "{stderr}");
    assert_eq!(statuses(&report, "differs"), ["stamp"]);
    assert_eq!(statuses(&report, "identical"), ["cfg", "all"]);
    assert_eq!(rule(&report, "stamp")["changes"][0]["path"], "stamp.txt");
    // An untrusted key: nothing recorded to compare with.
    let stranger = public.replacen("ci:", "ci2:", 1);
    let (_, report, _) = audit(
        &b,
        &b.project(),
        &["--against", &url, "--trusted-key", &stranger],
    );
    assert_eq!(report["summary"]["unrecorded"], 3, "{report}");
}
