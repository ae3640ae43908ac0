//! `kiln why` and `kiln diff` on a small platform: what moved a hash, and what differs.

mod common;

use common::{small_platform, Sandbox};
use serde_json::Value;

fn why(s: &Sandbox, rule: &str) -> String {
    let out = s
        .kiln()
        .args(["why", rule])
        .arg(s.project())
        .args(["--env", "staging"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

fn staging(s: &Sandbox) {
    s.build(&["--env", "staging"]);
}

const WORKER: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: worker\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: worker}}\n  template:\n    metadata: {labels: {app: worker}}\n    spec:\n      containers:\n        - name: worker\n          image: shop/worker:1\n";

#[test]
fn a_source_edit_names_the_file_and_the_hunk() {
    let s = Sandbox::new();
    small_platform(&s);
    staging(&s);
    s.write(
        "k8s/worker.yaml",
        &WORKER.replace("shop/worker:1", "shop/worker:2"),
    );
    // Before building: it would rebuild, because of this hunk.
    let text = why(&s, "worker");
    assert!(text.contains("`worker` would rebuild"), "{text}");
    assert!(text.contains("source k8s/worker.yaml modified"), "{text}");
    assert!(text.contains("-          image: shop/worker:1"), "{text}");
    assert!(text.contains("+          image: shop/worker:2"), "{text}");
    // After building: it was rebuilt in the last build, for the same reason.
    staging(&s);
    let text = why(&s, "worker");
    assert!(text.contains("the build before the last one"), "{text}");
    assert!(text.contains("`worker` was rebuilt"), "{text}");
    assert!(text.contains("+          image: shop/worker:2"), "{text}");
}

/// An `exec` rule never holds its sources in memory (they are streamed into the sandbox); the
/// small ones are still kept for `kiln why`.
#[test]
fn a_source_edit_of_an_exec_rule_names_the_hunk() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"x\"\n[rule.gen]\nkind = \"exec\"\nsrcs = [\"in.txt\"]\ncommand = [\"sh\", \"-c\", \"cp in/in.txt $out/out.txt\"]\n",
    );
    s.write("in.txt", "one\ntwo\n");
    s.build(&[]);
    s.write("in.txt", "one\nthree\n");
    s.build(&[]);
    let out = s
        .kiln()
        .args(["why", "gen"])
        .arg(s.project())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("source in.txt modified"), "{text}");
    assert!(text.contains("-two"), "{text}");
    assert!(text.contains("+three"), "{text}");
}

#[test]
fn a_variable_change_names_the_variable() {
    let s = Sandbox::new();
    small_platform(&s);
    staging(&s);
    let toml = std::fs::read_to_string(s.project().join("kiln.toml")).unwrap();
    s.write(
        "kiln.toml",
        &toml.replace("tag = \"1.0.0\"", "tag = \"1.1.0\""),
    );
    let text = why(&s, "api");
    assert!(
        text.contains("variable var.tag: \"1.0.0\" → \"1.1.0\""),
        "{text}"
    );
    assert!(!text.contains("source"), "only the variable moved: {text}");
}

#[test]
fn a_change_two_levels_down_names_the_root_cause_through_the_chain() {
    let s = Sandbox::new();
    small_platform(&s);
    staging(&s);
    s.write("config/app.env", "LOG_LEVEL=debug\n");
    staging(&s);
    let out = s
        .kiln()
        .args(["why", "all"])
        .arg(s.project())
        .args(["--env", "staging", "--json"])
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = &v["explanation"];
    assert_eq!(e["rule"], "all");
    assert_eq!(e["state"], "rebuilt");
    // all -> api -> config -> config/app.env
    let api = e["causes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rule"] == "api")
        .unwrap_or_else(|| panic!("{e}"));
    let config = api["causes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["rule"] == "config")
        .unwrap_or_else(|| panic!("{api}"));
    let source = &config["causes"][0];
    assert_eq!(source["cause"], "source", "{config}");
    assert_eq!(source["path"], "config/app.env");
    assert!(source["hunks"]
        .as_str()
        .unwrap()
        .contains("+LOG_LEVEL=debug"));
    let text = why(&s, "all");
    assert!(
        text.contains("dependency `api` changed its output"),
        "{text}"
    );
    assert!(text.contains("source config/app.env modified"), "{text}");
}

#[test]
fn an_early_cutoff_says_the_dependents_were_not_rebuilt() {
    let s = Sandbox::new();
    small_platform(&s);
    staging(&s);
    // A comment: the source changes, the rendered object does not.
    s.write(
        "k8s/worker.yaml",
        &format!("# owned by the worker team\n{WORKER}"),
    );
    let r = s.build(&["--env", "staging"]);
    assert_eq!(common::with_status(&r, "built"), ["worker"]);
    let text = why(&s, "worker");
    assert!(
        text.contains("early cutoff") && text.contains("its dependents were not rebuilt"),
        "{text}"
    );
    assert!(text.contains("+# owned by the worker team"), "{text}");
    let text = why(&s, "all");
    assert!(text.contains("`all` is unchanged"), "{text}");
    assert!(
        text.contains(
            "dependency `worker` changed its derivation but not its output (early cutoff)"
        ),
        "{text}"
    );
}

fn diff(s: &Sandbox, args: &[&str]) -> (Option<i32>, Value) {
    let out = s
        .kiln()
        .arg("diff")
        .arg(s.project())
        .arg("--json")
        .args(args)
        .output()
        .unwrap();
    let v = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stderr)));
    (out.status.code(), v)
}

fn object_paths(v: &Value) -> Vec<String> {
    v["objects"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["path"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn diff_of_two_environments_lists_exactly_the_objects_they_change() {
    let s = Sandbox::new();
    small_platform(&s);
    let (code, v) = diff(&s, &["--env", "staging", "--env", "production"]);
    assert_eq!(code, Some(2), "differences exit 2: {v}");
    // production sets replicas = 3: the api Deployment, and nothing else.
    assert_eq!(
        object_paths(&v),
        ["objects/shop/Deployment.apps/api.yaml"],
        "{v}"
    );
    let fields = &v["objects"][0]["content"]["changes"];
    assert_eq!(fields[0]["path"], "spec.replicas");
    assert_eq!(fields[0]["old"], 1);
    assert_eq!(fields[0]["new"], 3);
    let (code, v) = diff(&s, &["--env", "staging", "--env", "staging"]);
    assert_eq!(code, Some(0), "{v}");
    assert_eq!(object_paths(&v), Vec::<String>::new());
}

#[test]
fn diff_since_the_last_build_shows_what_this_checkout_changes() {
    let s = Sandbox::new();
    small_platform(&s);
    staging(&s);
    s.write(
        "k8s/worker.yaml",
        &WORKER.replace("shop/worker:1", "shop/worker:2"),
    );
    let (code, v) = diff(&s, &["--env", "staging", "--since", "last"]);
    assert_eq!(code, Some(2));
    assert_eq!(
        object_paths(&v),
        ["objects/shop/Deployment.apps/worker.yaml"],
        "{v}"
    );
    let f = &v["objects"][0]["content"]["changes"][0];
    assert_eq!(f["path"], "spec.template.spec.containers[0].image");
    assert_eq!(f["old"], "shop/worker:1");
    assert_eq!(f["new"], "shop/worker:2");
}
