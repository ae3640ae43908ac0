//! Saved plans: `kiln plan --out FILE`, `kiln show FILE`, `kiln apply FILE` (refused when stale).

mod common;

use std::process::Output;

use common::kubeconfig;
use common::realm::{kubectl_ok, Realm};

const RULES: &str = "[rule.app]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"app\", namespace = \"${var.ns}\" }, data = { mode = \"${var.mode}\" } } ]\n";

fn realm(name: &str, mode: &str) -> Realm {
    let r = Realm::new(name);
    r.rules(RULES);
    set_mode(&r, mode);
    r
}

fn set_mode(r: &Realm, mode: &str) {
    let toml = std::fs::read_to_string(r.s.project().join("kiln.toml")).unwrap();
    let toml = match toml.lines().find(|l| l.starts_with("mode = ")) {
        Some(_) => {
            toml.lines()
                .map(|l| {
                    if l.starts_with("mode = ") {
                        format!("mode = \"{mode}\"")
                    } else {
                        l.to_owned()
                    }
                })
                .collect::<Vec<_>>()
                .join("\n")
                + "\n"
        }
        None => toml.replace("[vars]\n", &format!("[vars]\nmode = \"{mode}\"\n")),
    };
    r.s.write("kiln.toml", &toml);
}

fn plan_to(r: &Realm, file: &std::path::Path) {
    let out = r.kiln("plan", &["--out", file.to_str().unwrap()]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn apply_file(r: &Realm, file: &std::path::Path) -> Output {
    r.s.kiln()
        .arg("apply")
        .arg(file)
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["--yes", "--skip-workload-gates"])
        .output()
        .unwrap()
}

fn mode(r: &Realm) -> String {
    kubectl_ok(&[
        "get",
        "configmap",
        "app",
        "-n",
        &r.ns,
        "-o",
        "jsonpath={.data.mode}",
    ])
}

#[test]
fn a_fresh_saved_plan_applies_exactly_and_show_prints_it() {
    let r = realm("saved", "fast");
    let file = r.s.dir.path().join("plan.kiln");
    plan_to(&r, &file);
    let saved: serde_json::Value = serde_json::from_slice(&std::fs::read(&file).unwrap()).unwrap();
    assert_eq!(saved["format"], "kiln-plan-v1");
    let show = r.s.kiln().arg("show").arg(&file).output().unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(show.status.success() && text.contains("create"), "{text}");
    let json =
        r.s.kiln()
            .arg("show")
            .arg(&file)
            .arg("--json")
            .output()
            .unwrap();
    let plan: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(common::count(&plan, "create"), 2, "{plan}");
    let out = apply_file(&r, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&r), "fast");
    r.assert_converged();
}

#[test]
fn a_saved_plan_is_refused_after_a_cluster_edit() {
    let r = realm("stale-cluster", "fast");
    r.apply(&[]);
    set_mode(&r, "slow");
    let file = r.s.dir.path().join("plan.kiln");
    plan_to(&r, &file);
    kubectl_ok(&[
        "annotate",
        "configmap",
        "app",
        "-n",
        &r.ns,
        "touched=by-hand",
    ]);
    let out = apply_file(&r, &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stale") && stderr.contains("changed on the cluster"),
        "{stderr}"
    );
    assert_eq!(mode(&r), "fast", "nothing was applied");
}

#[test]
fn a_saved_plan_is_refused_after_a_source_edit() {
    let r = realm("stale-source", "fast");
    r.apply(&[]);
    set_mode(&r, "slow");
    let file = r.s.dir.path().join("plan.kiln");
    plan_to(&r, &file);
    set_mode(&r, "reckless");
    let out = apply_file(&r, &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("stale") && stderr.contains("another output"),
        "{stderr}"
    );
    assert_eq!(mode(&r), "fast", "nothing was applied");
    // Back to what was planned: the plan applies.
    set_mode(&r, "slow");
    let out = apply_file(&r, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&r), "slow");
}
