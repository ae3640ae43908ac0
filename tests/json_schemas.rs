//! Every `--json` output carries `format_version` and matches its JSON Schema in `schemas/`
//! (the one place the formats are documented). The real outputs are validated: build, store
//! gc/verify/ls and audit here, plan and apply on the real test cluster.

mod common;

use std::path::Path;

use common::realm::Realm;
use common::Sandbox;
use serde_json::Value;

fn schema(name: &str) -> jsonschema::Validator {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(format!("schemas/{name}.schema.json"));
    let text = std::fs::read_to_string(&path).unwrap();
    let schema: Value = serde_json::from_str(&text).unwrap();
    jsonschema::validator_for(&schema).unwrap_or_else(|e| panic!("{name}: {e}"))
}

fn assert_valid(name: &str, output: &Value) {
    let v = schema(name);
    let errors: Vec<String> = v
        .iter_errors(output)
        .map(|e| format!("{} at {}", e, e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name}: {}\n{output:#}",
        errors.join("\n")
    );
    assert_eq!(output["format_version"], 1, "{name}");
    // The schema is not vacuous: the same output without its version, or with an unknown
    // field, is refused.
    let mut broken = output.clone();
    broken.as_object_mut().unwrap().remove("format_version");
    assert!(
        !v.is_valid(&broken),
        "{name} accepts an output without format_version"
    );
    let mut broken = output.clone();
    broken["undocumented"] = Value::Bool(true);
    assert!(!v.is_valid(&broken), "{name} accepts an undocumented field");
}

fn json_of(out: std::process::Output) -> Value {
    assert!(
        matches!(out.status.code(), Some(0 | 2)),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

#[test]
fn store_and_build_outputs_match_their_schemas() {
    let s = Sandbox::new();
    common::small_platform(&s);
    let build = s.build(&["--env", "staging"]);
    assert_valid("build", &build);
    for (name, args) in [
        ("store-gc", vec!["store", "gc", "--json"]),
        ("store-verify", vec!["store", "verify", "--json"]),
        ("store-ls", vec!["store", "ls", "--json"]),
    ] {
        assert_valid(name, &json_of(s.kiln().args(args).output().unwrap()));
    }
    let audit = s
        .kiln()
        .arg("audit")
        .arg(s.project())
        .args(["--env", "staging", "--json"])
        .output()
        .unwrap();
    assert_valid("audit", &json_of(audit));
}

#[test]
fn plan_and_apply_outputs_match_their_schemas() {
    let r = Realm::new("schemas");
    r.rules("\n[rule.app]\nkind = \"manifest\"\nsrcs = [\"app.yaml\"]\ndeps = [\"ns\"]\nnamespace = \"${var.ns}\"\n");
    r.s.write(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: \"1\"}\n",
    );
    assert_valid("plan", &r.plan());
    let applied = r.apply(&[]);
    assert_valid("apply", &applied);
    r.s.write(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: {k: \"2\"}\n",
    );
    let update = r.plan();
    assert!(update["changes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|c| c["diff"].is_string()));
    assert_valid("plan", &update);
    assert_valid("apply", &r.apply(&[]));
}
