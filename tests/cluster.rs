//! `kiln plan` / `kiln apply` against the real test control plane (etcd, kube-apiserver,
//! kube-controller-manager built by scripts/test-cluster). One cluster per test run: the one
//! `scripts/test` started (`KILN_TEST_KUBECONFIG`), else one this binary starts and stops. Each
//! test uses its own namespace and ApplySet. These tests never skip: no cluster is a failure.

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::realm::{kubectl, kubectl_ok, Realm};
use common::{changed, count, kubeconfig};
use serde_json::Value;

const WEB: &str = r#"

[rule.config]
kind = "configmap"
name = "web-config"
namespace = "${var.ns}"
srcs = ["app.env"]

[rule.creds]
kind = "secret"
name = "web-creds"
namespace = "${var.ns}"
data.password = { env = "KILN_TEST_SECRET" }

[rule.web]
kind = "manifest"
srcs = ["web.yaml"]
deps = ["ns", "config", "creds"]
namespace = "${var.ns}"
"#;

fn web_yaml(tag: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 0\n  selector: {{matchLabels: {{app: web}}}}\n  template:\n    metadata: {{labels: {{app: web}}}}\n    spec:\n      containers:\n        - name: web\n          image: nginx:{tag}\n          envFrom: [{{configMapRef: {{name: \"${{dep.config.name}}\"}}}}, {{secretRef: {{name: \"${{dep.creds.name}}\"}}}}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector: {{app: web}}\n  ports: [{{port: 80, targetPort: 8080}}]\n"
    )
}

fn web(name: &str) -> Realm {
    let r = Realm::new(name);
    r.rules(WEB);
    r.s.write("app.env", "MODE=fast\n");
    r.s.write("web.yaml", &web_yaml("1.25"));
    r
}

#[test]
fn apply_creates_the_set_and_plan_is_clean_after() {
    let r = web("basic");
    let plan = r.plan();
    assert_eq!(plan["format_version"], 1);
    assert_eq!(count(&plan, "create"), 5, "{plan}");
    // Health gates on: a Deployment with 0 replicas becomes ready through the real controller.
    let out = r.kiln("apply", &["--yes", "--json", "--timeout", "60"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let applied: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(applied["applied"]["applied"], 5);

    let id = plan["applyset"].as_str().unwrap();
    let listed = kubectl_ok(&[
        "get",
        "deployments,services,configmaps,secrets",
        "-n",
        &r.ns,
        "-l",
        &format!("applyset.kubernetes.io/part-of={id}"),
        "-o",
        "name",
    ]);
    assert!(
        listed.contains("deployment.apps/web") && listed.contains("service/web"),
        "{listed}"
    );
    assert!(
        listed.contains("configmap/web-config-") && listed.contains("secret/web-creds"),
        "{listed}"
    );
    let parent = kubectl_ok(&[
        "get",
        "secrets",
        "-n",
        "default",
        "-l",
        &format!("applyset.kubernetes.io/id={id}"),
        "-o",
        "json",
    ]);
    let parent: Value = serde_json::from_str(&parent).unwrap();
    let ann = &parent["items"][0]["metadata"]["annotations"];
    assert!(ann["applyset.kubernetes.io/tooling"]
        .as_str()
        .unwrap()
        .starts_with("kiln/"));
    assert_eq!(
        ann["applyset.kubernetes.io/contains-group-kinds"],
        "ConfigMap,Deployment.apps,Namespace,Secret,Service"
    );

    let deploy: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        &r.ns,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(deploy["metadata"]["annotations"]["kiln.dev/rule"], "web");
    assert!(deploy["metadata"]["annotations"]["kiln.dev/desired-hash"]
        .as_str()
        .unwrap()
        .starts_with("blake3:"));

    let again = r.kiln("plan", &["--json", "--detailed-exitcode"]);
    assert_eq!(
        again.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&again.stderr)
    );
    let again: Value = serde_json::from_slice(&again.stdout).unwrap();
    assert_eq!(count(&again, "unchanged"), 5);
    assert_eq!(again["http"]["writes"], 0);
}

#[test]
fn drift_from_kubectl_is_planned_and_reverted() {
    let r = web("drift");
    r.apply(&[]);
    kubectl_ok(&["scale", "deployment/web", "-n", &r.ns, "--replicas=3"]);
    kubectl_ok(&[
        "set",
        "image",
        "deployment/web",
        "-n",
        &r.ns,
        "web=evil:6.6.6",
    ]);
    let out = r.kiln("plan", &["--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("drift") && text.contains(".spec.replicas") && text.contains("image"),
        "{text}"
    );
    let plan = r.plan();
    assert_eq!(changed(&plan, "drift"), ["Deployment.apps/web"]);
    let applied = r.apply(&[]);
    assert_eq!(applied["applied"]["applied"], 1);
    let d: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        &r.ns,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(d["spec"]["replicas"], 0);
    assert_eq!(
        d["spec"]["template"]["spec"]["containers"][0]["image"],
        "nginx:1.25"
    );
    assert_eq!(count(&r.plan(), "unchanged"), 5);
}

#[test]
fn a_change_updates_only_what_depends_on_it_and_prunes_the_old_configmap() {
    let r = web("change");
    r.apply(&[]);
    r.s.write("web.yaml", &web_yaml("1.27"));
    let plan = r.plan();
    assert_eq!(changed(&plan, "update"), ["Deployment.apps/web"]);
    assert_eq!(count(&plan, "unchanged"), 4);
    let diff = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "update")
        .unwrap()["diff"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        diff.contains("-        image: nginx:1.25") && diff.contains("+        image: nginx:1.27"),
        "{diff}"
    );
    let applied = r.apply(&[]);
    assert_eq!(applied["http"]["writes"], 1, "exactly one write: {applied}");

    // New config content: new ConfigMap name, the Deployment follows, the old one is pruned.
    let old = kubectl_ok(&["get", "configmaps", "-n", &r.ns, "-o", "name"]);
    r.s.write("app.env", "MODE=careful\n");
    let plan = r.plan();
    assert_eq!(count(&plan, "create"), 1);
    assert_eq!(changed(&plan, "update"), ["Deployment.apps/web"]);
    assert_eq!(count(&plan, "delete"), 1);
    r.apply(&[]);
    let new = kubectl_ok(&["get", "configmaps", "-n", &r.ns, "-o", "name"]);
    let old_cm = old.lines().find(|l| l.contains("web-config-")).unwrap();
    assert!(!new.contains(old_cm), "old ConfigMap pruned: {new}");
    assert_eq!(new.lines().filter(|l| l.contains("web-config-")).count(), 1);
    assert_eq!(count(&r.plan(), "unchanged"), 5);
}

#[test]
fn prune_asks_first_and_never_touches_unlabeled_objects() {
    let r = web("prune");
    r.apply(&[]);
    kubectl_ok(&[
        "create",
        "configmap",
        "not-ours",
        "-n",
        &r.ns,
        "--from-literal=a=b",
    ]);
    // Remove the secret rule (and the web rule's use of it).
    r.s.write(
        "web.yaml",
        &web_yaml("1.25").replace(", {secretRef: {name: \"${dep.creds.name}\"}}", ""),
    );
    let text = WEB.replace(
        "deps = [\"ns\", \"config\", \"creds\"]",
        "deps = [\"ns\", \"config\"]",
    );
    let text = text.split("[rule.creds]").next().unwrap().to_owned()
        + "[rule.web]"
        + text.split("[rule.web]").nth(1).unwrap();
    r.rules(&text);
    let plan = r.plan();
    assert_eq!(changed(&plan, "delete"), ["Secret/web-creds"], "{plan}");
    let out = r.kiln("apply", &["--skip-workload-gates"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("refusing to delete 1 objects"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        kubectl(&["get", "secret", "web-creds", "-n", &r.ns])
            .status
            .success(),
        "nothing deleted without --yes"
    );
    r.apply(&[]);
    assert!(
        !kubectl(&["get", "secret", "web-creds", "-n", &r.ns])
            .status
            .success(),
        "pruned"
    );
    assert!(
        kubectl(&["get", "configmap", "not-ours", "-n", &r.ns])
            .status
            .success(),
        "unlabeled objects are never touched"
    );
}

#[test]
fn a_set_whose_parent_names_another_tool_is_refused() {
    let r = web("foreign");
    let id = r.plan()["applyset"].as_str().unwrap().to_owned();
    let parent = format!(
        "apiVersion: v1\nkind: Secret\nmetadata:\n  name: kiln-{}\n  namespace: default\n  labels: {{applyset.kubernetes.io/id: {id}}}\n  annotations: {{applyset.kubernetes.io/tooling: kubectl/v1.32.0, applyset.kubernetes.io/contains-group-kinds: ConfigMap}}\n",
        r.ns
    );
    let file = r.s.dir.path().join("parent.yaml");
    std::fs::write(&file, parent).unwrap();
    kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    let out = r.kiln("apply", &["--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("managed by `kubectl/v1.32.0`"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        !kubectl(&["get", "namespace", &r.ns]).status.success(),
        "nothing applied"
    );
}

#[test]
fn crds_are_established_before_their_custom_resources() {
    let r = Realm::new("crd");
    let group = format!("{}.kiln.test", r.ns);
    r.rules(
        r#"
[rule.widgets]
kind = "manifest"
srcs = ["widgets.yaml"]
deps = ["ns"]
namespace = "${var.ns}"
"#,
    );
    r.s.write(
        "widgets.yaml",
        &format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: widgets.{group}}}\nspec:\n  group: {group}\n  scope: Namespaced\n  names: {{plural: widgets, singular: widget, kind: Widget}}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:\n          type: object\n          properties:\n            spec: {{type: object, properties: {{size: {{type: integer}}}}}}\n---\napiVersion: {group}/v1\nkind: Widget\nmetadata: {{name: w1}}\nspec: {{size: 3}}\n"
        ),
    );
    let out = r.kiln("apply", &["--yes", "--json"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let w: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        &format!("widgets.{group}"),
        "w1",
        "-n",
        &r.ns,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(w["spec"]["size"], 3);
    assert_eq!(count(&r.plan(), "unchanged"), 3);
}

#[test]
fn a_failing_health_gate_names_the_object_and_stops_dependents() {
    let r = Realm::new("gate");
    r.rules(
        r#"
[rule.app]
kind = "manifest"
srcs = ["app.yaml"]
deps = ["ns"]
namespace = "${var.ns}"
[rule.after]
kind = "configmap"
name = "after"
namespace = "${var.ns}"
deps = ["app"]
literals = { A = "1" }
"#,
    );
    // One replica can never become available: this control plane has no scheduler or kubelet.
    r.s.write(
        "app.yaml",
        &web_yaml("1")
            .replace("name: web", "name: app")
            .replace("replicas: 0", "replicas: 1")
            .replace(", {secretRef: {name: \"${dep.creds.name}\"}}", "")
            .replace(
                "envFrom: [{configMapRef: {name: \"${dep.config.name}\"}}]",
                "args: [run]",
            ),
    );
    let out = r.kiln("apply", &["--yes", "--timeout", "3"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("Deployment.apps {}/app", r.ns)) && err.contains("rollout complete"),
        "{err}"
    );
    assert!(
        !kubectl(&["get", "configmap", "-n", &r.ns, "-o", "name"])
            .stdout
            .windows(6)
            .any(|w| w == b"after-"),
        "dependents stopped"
    );
    assert!(
        kubectl(&["get", "deployment", "app", "-n", &r.ns])
            .status
            .success(),
        "applied objects stay"
    );
    // Without the workload gate, a rerun converges.
    r.apply(&[]);
    assert_eq!(count(&r.plan(), "create"), 0);
}

#[test]
fn conflicts_name_the_other_field_manager() {
    let r = Realm::new("conflict");
    r.rules(
        r#"
[rule.shared]
kind = "manifest"
deps = ["ns"]
objects = [ { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "shared", namespace = "${var.ns}" }, data = { k = "ours" } } ]
"#,
    );
    kubectl_ok(&["create", "namespace", &r.ns]);
    let file = r.s.dir.path().join("theirs.yaml");
    std::fs::write(&file, format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: shared, namespace: {}}}\ndata: {{k: theirs}}\n", r.ns)).unwrap();
    kubectl_ok(&[
        "apply",
        "--server-side",
        "--field-manager=other-tool",
        "-f",
        file.to_str().unwrap(),
    ]);
    let out = r.kiln("apply", &["--yes"]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("other-tool") && err.contains(".data.k"),
        "{err}"
    );
    let out = r.kiln("apply", &["--yes", "--force-conflicts"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        kubectl_ok(&[
            "get",
            "configmap",
            "shared",
            "-n",
            &r.ns,
            "-o",
            "jsonpath={.data.k}"
        ]),
        "ours"
    );
}

#[test]
fn secret_values_never_appear_in_plans() {
    let r = web("secret");
    r.apply(&[]);
    let out = r.kiln_env(
        "plan",
        &["--json"],
        &[("KILN_TEST_SECRET", "hunter2-second")],
    );
    let json = String::from_utf8(out.stdout).unwrap();
    let out = r.kiln_env("plan", &[], &[("KILN_TEST_SECRET", "hunter2-second")]);
    let text = String::from_utf8(out.stdout).unwrap() + &String::from_utf8(out.stderr).unwrap();
    assert!(text.contains("data.password: (value changed)"), "{text}");
    let b64 = |s: &str| base64_encode(s.as_bytes());
    for leaked in [
        "hunter2",
        &b64("hunter2-first")[..12],
        &b64("hunter2-second")[..12],
    ] {
        assert!(
            !json.contains(leaked) && !text.contains(leaked),
            "{leaked} leaked"
        );
    }
    let plan: Value = serde_json::from_str(&json).unwrap();
    assert_eq!(changed(&plan, "update"), ["Secret/web-creds"]);
}

fn base64_encode(b: &[u8]) -> String {
    const T: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::new();
    for c in b.chunks(3) {
        let n = (u32::from(c[0]) << 16)
            | (u32::from(*c.get(1).unwrap_or(&0)) << 8)
            | u32::from(*c.get(2).unwrap_or(&0));
        for i in 0..=c.len() {
            out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
        }
    }
    out
}

/// 1,000 objects of 5 kinds: a no-op plan costs at most 20 requests (discovery, the parent, one
/// LIST per group-kind), and one changed object costs exactly one write.
#[test]
fn a_thousand_objects_plan_cheaply_and_one_change_is_one_write() {
    let r = Realm::new("thousand");
    let mut rules = String::new();
    let kinds = [
        "configmaps",
        "services",
        "serviceaccounts",
        "deployments",
        "secrets",
    ];
    for k in kinds {
        rules.push_str(&format!("[rule.{k}]\nkind = \"manifest\"\nsrcs = [\"{k}.yaml\"]\ndeps = [\"ns\"]\nnamespace = \"${{var.ns}}\"\n"));
    }
    r.rules(&rules);
    let gen = |k: &str, i: usize, v: &str| {
        match k {
        "configmaps" => format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\ndata: {{v: \"{v}\"}}\n"),
        "services" => format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{selector: {{app: a{i}}}, ports: [{{port: 80}}]}}\n"),
        "serviceaccounts" => format!("apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: sa{i}}}\n"),
        "deployments" => format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d{i}}}\nspec: {{replicas: 0, selector: {{matchLabels: {{app: a{i}}}}}, template: {{metadata: {{labels: {{app: a{i}}}}}, spec: {{containers: [{{name: c, image: \"nginx:1\"}}]}}}}}}\n"),
        _ => format!("apiVersion: v1\nkind: Secret\nmetadata: {{name: x{i}}}\nstringData: {{v: \"{v}\"}}\n"),
    }
    };
    let write = |changed: Option<usize>| {
        for k in kinds {
            let docs: Vec<String> = (0..200)
                .map(|i| {
                    gen(
                        k,
                        i,
                        if Some(i) == changed && k == "configmaps" {
                            "2"
                        } else {
                            "1"
                        },
                    )
                })
                .collect();
            r.s.write(&format!("{k}.yaml"), &docs.join("---\n"));
        }
    };
    write(None);
    let applied = r.apply(&["--no-wait", "--parallel", "32"]);
    assert_eq!(applied["applied"]["applied"], 1001);
    let plan = r.plan();
    assert_eq!(count(&plan, "unchanged"), 1001, "{}", plan["summary"]);
    let requests = plan["http"]["requests"].as_u64().unwrap();
    assert!(
        requests <= 20,
        "a no-op plan over 1,000 objects took {requests} requests"
    );
    assert_eq!(plan["http"]["writes"], 0);
    write(Some(7));
    let applied = r.apply(&["--no-wait"]);
    assert_eq!(changed(&applied, "update"), ["ConfigMap/c7"]);
    assert_eq!(
        applied["http"]["writes"], 1,
        "one changed object, one write"
    );
}

#[test]
fn kill_9_during_apply_converges_without_duplicates_or_orphans() {
    let r = Realm::new("kill");
    let mut rules = String::new();
    rules.push_str("[rule.many]\nkind = \"manifest\"\nsrcs = [\"many.yaml\"]\ndeps = [\"ns\"]\nnamespace = \"${var.ns}\"\n");
    r.rules(&rules);
    let docs: Vec<String> = (0..400)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: m{i}}}\ndata: {{i: \"{i}\"}}\n"
            )
        })
        .collect();
    r.s.write("many.yaml", &docs.join("---\n"));
    // Build first, so the apply spends its time talking to the cluster.
    r.s.kiln()
        .arg("build")
        .arg(r.s.project())
        .assert()
        .success();
    let mut child = Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .env("KILN_STORE", r.s.store())
        .env("KILN_NO_PROGRESS", "1")
        .args(["apply", "--yes", "--parallel", "1", "--kubeconfig"])
        .arg(kubeconfig())
        .arg(r.s.project())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let n = kubectl(&["get", "configmaps", "-n", &r.ns, "-o", "name"])
            .stdout
            .split(|b| *b == b'\n')
            .filter(|l| l.starts_with(b"configmap/m"))
            .count();
        if n >= 20 {
            break;
        }
        assert!(Instant::now() < deadline, "apply made no progress");
        std::thread::sleep(Duration::from_millis(20));
    }
    child.kill().unwrap();
    child.wait().unwrap();
    let plan = r.plan();
    let created = 401 - count(&plan, "create");
    assert!(
        (20..401).contains(&created),
        "killed mid-apply ({created} existed)"
    );
    assert_eq!(count(&plan, "delete"), 0);
    r.apply(&[]);
    let listed = kubectl_ok(&[
        "get",
        "configmaps",
        "-n",
        &r.ns,
        "-l",
        &format!(
            "applyset.kubernetes.io/part-of={}",
            plan["applyset"].as_str().unwrap()
        ),
        "-o",
        "name",
    ]);
    assert_eq!(listed.lines().count(), 400, "every member exactly once");
    assert_eq!(count(&r.plan(), "unchanged"), 401);
    // No orphans: dropping the rule prunes every object the killed run had created too.
    r.rules("");
    let plan = r.plan();
    assert_eq!(count(&plan, "delete"), 400);
    r.apply(&[]);
    let left = kubectl_ok(&["get", "configmaps", "-n", &r.ns, "-o", "name"]);
    assert!(!left.contains("configmap/m"), "{left}");
}
