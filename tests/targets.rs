//! `--rule NAME[+]`: build, graph, plan and apply one rule and its closure.

mod common;

use common::realm::{kubectl_ok, Realm};
use common::{small_platform, with_status, Sandbox};
use serde_json::Value;

#[test]
fn build_and_graph_cover_the_rule_and_its_dependencies() {
    let s = Sandbox::new();
    small_platform(&s);
    let r = s.build(&["--env", "staging", "--rule", "api"]);
    assert_eq!(with_status(&r, "built"), ["api", "config", "ns"]);
    // `+` adds the dependents: config's are api and all.
    let r = s.build(&["--env", "staging", "--rule", "config+"]);
    assert_eq!(with_status(&r, "built"), ["all", "worker"], "{r}");
    assert_eq!(with_status(&r, "cached"), ["api", "config", "ns"]);
    // The partial builds kept each other's entries: a full build has nothing left to do, and
    // every rule's artifact is reachable.
    let full = s.build(&["--env", "staging"]);
    assert_eq!(full["summary"]["built"], 0, "{full}");
    s.cat(
        "worker",
        "objects/shop/Deployment.apps/worker.yaml",
        &["--env", "staging"],
    );
    let out = s
        .kiln()
        .arg("graph")
        .arg(s.project())
        .args(["--env", "staging", "--rule", "api", "--format", "json"])
        .output()
        .unwrap();
    let g: Value = serde_json::from_slice(&out.stdout).unwrap();
    let text = g.to_string();
    assert!(
        text.contains("\"api\"") && text.contains("\"config\"") && !text.contains("\"worker\""),
        "{text}"
    );
    let unknown = s
        .kiln()
        .arg("build")
        .arg(s.project())
        .args(["--env", "staging", "--rule", "nope"])
        .output()
        .unwrap();
    assert_eq!(unknown.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&unknown.stderr).contains("no rule `nope`"));
}

#[test]
fn a_partial_apply_changes_its_rules_and_prunes_nothing() {
    let r = Realm::new("targets");
    r.rules("[rule.one]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"one\", namespace = \"${var.ns}\" }, data = { v = \"${var.v}\" } } ]\n[rule.two]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"two\", namespace = \"${var.ns}\" }, data = { v = \"${var.v}\" } } ]\n");
    let toml = std::fs::read_to_string(r.s.project().join("kiln.toml")).unwrap();
    r.s.write(
        "kiln.toml",
        &toml.replace("[vars]\n", "[vars]\nv = \"1\"\n"),
    );
    r.apply(&[]);
    // Both change; only `one` is applied; `two` is neither updated nor pruned.
    let toml = std::fs::read_to_string(r.s.project().join("kiln.toml")).unwrap();
    r.s.write("kiln.toml", &toml.replace("v = \"1\"", "v = \"2\""));
    let plan = r.json("plan", &["--rule", "one"]);
    assert_eq!(plan["partial"], true);
    assert_eq!(common::count(&plan, "update"), 1, "{plan}");
    assert_eq!(common::count(&plan, "delete"), 0, "{plan}");
    let out = r.kiln(
        "apply",
        &["--rule", "one", "--yes", "--skip-workload-gates"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("nothing is pruned"));
    let value = |name: &str| {
        kubectl_ok(&[
            "get",
            "configmap",
            name,
            "-n",
            &r.ns,
            "-o",
            "jsonpath={.data.v}",
        ])
    };
    assert_eq!(value("one"), "2");
    assert_eq!(value("two"), "1", "not part of the run");
    // The parent still lists what the whole set holds: a full run sees `two` and updates it.
    let plan = r.plan();
    assert_eq!(
        common::changed(&plan, "update"),
        ["ConfigMap/two"],
        "{plan}"
    );
    r.apply(&[]);
    r.assert_converged();
}
