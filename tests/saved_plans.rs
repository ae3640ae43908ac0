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
    assert_eq!(saved["format"], "kiln-plan-v2");
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

/// Whether the test namespace's ConfigMap `app` exists.
fn app_exists(r: &Realm) -> bool {
    common::realm::kubectl(&["get", "configmap", "app", "-n", &r.ns])
        .status
        .success()
}

fn edited(file: &std::path::Path, edit: impl FnOnce(&mut serde_json::Value)) -> std::path::PathBuf {
    let mut v: serde_json::Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    edit(&mut v);
    let out = file.with_extension("edited");
    std::fs::write(&out, serde_json::to_vec_pretty(&v).unwrap()).unwrap();
    out
}

/// The digest kiln binds a section with: blake3 over its canonical JSON.
fn digest(v: &serde_json::Value) -> String {
    kiln_core::canonical::digest(v).to_string()
}

/// A change to a saved plan's JSON.
type Edit = Box<dyn Fn(&mut serde_json::Value)>;

/// Drops the create of ConfigMap `app` from the plan's actions and summary.
fn drop_app_create(v: &mut serde_json::Value) {
    let changes = v["plan"]["changes"].as_array_mut().unwrap();
    changes.retain(|c| c["kind"] != "ConfigMap" && c["name"] != "app");
    v["plan"]["summary"]["create"] = serde_json::json!(1);
}

#[test]
fn a_saved_plan_changed_in_any_section_is_refused_by_show_and_apply() {
    let r = realm("tamper", "fast");
    let file = r.s.dir.path().join("plan.kiln");
    plan_to(&r, &file);
    let edits: Vec<(&str, Edit)> = vec![
        ("plan", Box::new(drop_app_create)),
        (
            "plan",
            Box::new(|v| v["warnings"] = serde_json::json!(["all good"])),
        ),
        (
            "objects",
            Box::new(|v| v["objects"][0]["action"] = serde_json::json!("unchanged")),
        ),
        (
            "objects",
            Box::new(|v| v["objects"][0]["resource_version"] = serde_json::json!("1")),
        ),
        (
            "objects",
            Box::new(|v| v["objects"][1]["desired_hash"] = serde_json::json!("blake3:00")),
        ),
        (
            "outputs",
            Box::new(|v| {
                let first = v["outputs"]
                    .as_object()
                    .unwrap()
                    .keys()
                    .next()
                    .unwrap()
                    .clone();
                v["outputs"][first] = serde_json::json!("blake3:00");
            }),
        ),
        (
            "settings",
            Box::new(|v| v["settings"]["env"] = serde_json::json!("production")),
        ),
    ];
    for (section, edit) in edits {
        let bad = edited(&file, edit);
        let show = r.s.kiln().arg("show").arg(&bad).output().unwrap();
        let stderr = String::from_utf8_lossy(&show.stderr);
        assert_eq!(show.status.code(), Some(1), "show: {stderr}");
        assert!(stderr.contains(&format!("`{section}` section")), "{stderr}");
        let out = apply_file(&r, &bad);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "apply: {stderr}");
        assert!(stderr.contains(&format!("`{section}` section")), "{stderr}");
        assert!(!app_exists(&r), "nothing was applied ({section})");
    }
    // A second copy of the text, as older plans kept: not part of the format.
    let bad = edited(&file, |v| v["text"] = serde_json::json!("+ create nothing"));
    let out = apply_file(&r, &bad);
    assert_eq!(out.status.code(), Some(1));
    assert!(!app_exists(&r));
    // Untouched, it applies.
    let out = apply_file(&r, &file);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(app_exists(&r));
}

#[test]
fn a_consistently_forged_plan_shows_what_it_claims_and_apply_refuses_it() {
    let r = realm("forged", "fast");
    let file = r.s.dir.path().join("plan.kiln");
    plan_to(&r, &file);
    // Whoever edits the actions and recomputes their digest gets a file `show` accepts...
    let forged = edited(&file, |v| {
        drop_app_create(v);
        v["digests"]["plan"] = serde_json::json!(digest(&serde_json::json!([
            v["plan"].clone(),
            v["warnings"].clone()
        ])));
    });
    let show = r.s.kiln().arg("show").arg(&forged).output().unwrap();
    let text = String::from_utf8_lossy(&show.stdout);
    assert!(
        show.status.success(),
        "{}",
        String::from_utf8_lossy(&show.stderr)
    );
    assert_eq!(text.matches("+ create").count(), 1, "{text}");
    // ...and that shows one create; apply would make two, so it refuses and writes nothing.
    let out = apply_file(&r, &forged);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`plan` section") && stderr.contains("app"),
        "{stderr}"
    );
    assert!(!app_exists(&r), "nothing was applied");
    let ns = common::realm::kubectl(&["get", "namespace", &r.ns]);
    assert!(!ns.status.success(), "the namespace was not created either");
}

#[test]
fn flags_a_saved_plan_fixes_are_refused_beside_it() {
    let r = realm("plan-flags", "fast");
    let file = r.s.dir.path().join("plan.kiln");
    plan_to(&r, &file);
    for extra in [
        &["--env", "production"][..],
        &["--var", "mode=slow"],
        &["--rule", "app"],
        &["--applyset-namespace", "kube-system"],
    ] {
        let out =
            r.s.kiln()
                .arg("apply")
                .arg(&file)
                .arg("--kubeconfig")
                .arg(kubeconfig())
                .args(["--yes", "--skip-workload-gates"])
                .args(extra)
                .output()
                .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{extra:?}: {stderr}");
        assert!(
            stderr.contains(extra[0]) && stderr.contains("cannot be given"),
            "{stderr}"
        );
        assert!(!app_exists(&r), "nothing was applied");
    }
}

#[test]
fn a_saved_plan_applies_from_another_directory_and_is_refused_for_another_project() {
    let r = realm("plan-elsewhere", "fast");
    let file = r.s.dir.path().join("plan.kiln");
    plan_to(&r, &file);
    // Another working directory, and a relative path to the plan: it applies.
    let elsewhere = tempfile::tempdir().unwrap();
    std::fs::copy(&file, elsewhere.path().join("p.kiln")).unwrap();
    let out =
        r.s.kiln()
            .current_dir(elsewhere.path())
            .args(["apply", "p.kiln", "--kubeconfig"])
            .arg(kubeconfig())
            .args(["--yes", "--skip-workload-gates"])
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(mode(&r), "fast");

    // The directory now holds another project, whose secret reference would fail if resolved.
    set_mode(&r, "slow");
    plan_to(&r, &file);
    r.s.write(
        "kiln.toml",
        "[project]\nname = \"shop\"\n[rule.s]\nkind = \"secret\"\nname = \"s\"\nnamespace = \"default\"\ndata.k = { env = \"KILN_NOT_SET_ANYWHERE\" }\n",
    );
    let out = apply_file(&r, &file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("this plan is for project {}", r.ns))
            && stderr.contains("holds shop"),
        "{stderr}"
    );
    assert!(
        !stderr.contains("KILN_NOT_SET_ANYWHERE"),
        "no secret was resolved: {stderr}"
    );
    assert_eq!(mode(&r), "fast", "nothing was applied");
}
