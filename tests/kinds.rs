//! The built-in kinds end to end through the CLI.

mod common;

use common::Sandbox;

fn cat(s: &Sandbox, rule: &str, file: &str, env: &[&str]) -> String {
    s.cat(rule, file, env)
}

#[test]
fn exec_runs_in_a_cleared_environment_with_a_fixed_epoch() {
    let s = Sandbox::new();
    s.write("in.txt", "hello\n");
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.x]\nkind = \"exec\"\nsrcs = [\"in.txt\"]\nenv = { GREETING = \"hi\" }\ncommand = [\"sh\", \"-c\", \"env | sort > $out/env.txt; cp in/in.txt $out/copy.txt\"]\n",
    );
    s.kiln()
        .env("KILN_TEST_LEAK", "leaked")
        .arg("build")
        .arg(s.project())
        .assert()
        .success();
    let env = cat(&s, "x", "env.txt", &[]);
    assert!(env.contains("SOURCE_DATE_EPOCH=315532800"), "{env}");
    assert!(env.contains("GREETING=hi"));
    assert!(env.contains("TZ=UTC"));
    assert!(
        !env.contains("KILN_TEST_LEAK"),
        "host environment leaked: {env}"
    );
    assert!(!env.contains("KILN_STORE"));
    assert_eq!(cat(&s, "x", "copy.txt", &[]), "hello\n");
}

#[test]
fn exec_has_no_network_but_a_down_loopback() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.x]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"cat /proc/net/dev | tail -n +3 | cut -d: -f1 | tr -d ' ' > $out/ifaces\"]\n",
    );
    s.kiln().arg("build").arg(s.project()).assert().success();
    assert_eq!(
        cat(&s, "x", "ifaces", &[]).trim(),
        "lo",
        "only a loopback interface"
    );
}

/// Where the sandbox cannot run (here: no `bwrap` on PATH), exec rules are refused with a clear
/// error, never run silently without it; `--unsandboxed` runs them, with a warning.
#[test]
fn exec_without_a_sandbox_is_refused_unless_unsandboxed() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.x]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo hi > $out/f\"]\n",
    );
    let out = s
        .kiln()
        .env("PATH", "/nonexistent")
        .arg("build")
        .arg(s.project())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("install bubblewrap") && err.contains("--unsandboxed"),
        "{err}"
    );
    let out = s
        .kiln()
        .env("PATH", "/nonexistent")
        .arg("build")
        .arg(s.project())
        .arg("--unsandboxed")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(String::from_utf8_lossy(&out.stderr).contains("without the sandbox"));
    assert_eq!(cat(&s, "x", "f", &[]), "hi\n");
}

#[test]
fn template_overlay_and_bundle() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        r#"[project]
name = "p"
[vars]
ns = "shop"
[env.prod]
memory = "2Gi"
[rule.prom]
kind = "template"
srcs = ["templates/prometheus.yml.j2"]
strip_prefix = "templates"
values = { interval = "15s" }
[rule.prom-config]
kind = "configmap"
name = "prometheus"
namespace = "${var.ns}"
deps = ["prom"]
from = ["prom"]
[rule.api]
kind = "manifest"
srcs = ["api.yaml"]
namespace = "${var.ns}"
[rule.api-prod]
kind = "overlay"
deps = ["api"]
images = { "shop/api" = "2.0.0" }
replicas = { api = 4 }
[[rule.api-prod.patches]]
target = { kind = "Deployment", name = "api" }
strategic = { spec = { template = { spec = { containers = [ { name = "api", resources = { limits = { memory = "${var.memory}" } } } ] } } } }
[[rule.api-prod.patches]]
target = { kind = "Deployment" }
merge = { metadata = { labels = { tier = "web" } } }
[rule.all]
kind = "bundle"
layout = "by-rule"
deps = ["prom-config", "api-prod"]
"#,
    );
    s.write("templates/prometheus.yml.j2", "global:\n  scrape_interval: {{ values.interval }}\n  env: {{ kiln.env }}\n  ns: {{ var.ns }}\n");
    s.write(
        "api.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: api}\nspec:\n  replicas: 1\n  template:\n    spec:\n      containers:\n        - {name: api, image: \"shop/api:1.0.0\", resources: {requests: {cpu: 100m}}}\n        - {name: proxy, image: \"envoy:1\"}\n",
    );
    s.build(&["--env", "prod"]);
    let prom = cat(&s, "prom", "prometheus.yml", &["--env", "prod"]);
    assert_eq!(
        prom,
        "global:\n  scrape_interval: 15s\n  env: prod\n  ns: shop\n"
    );
    let api = cat(
        &s,
        "all",
        "api-prod/objects/shop/Deployment.apps/api.yaml",
        &["--env", "prod"],
    );
    assert!(api.contains("image: shop/api:2.0.0"), "{api}");
    assert!(
        api.contains("image: envoy:1"),
        "the other container is untouched: {api}"
    );
    assert!(
        api.contains("memory: 2Gi") && api.contains("cpu: 100m"),
        "strategic merge keeps siblings: {api}"
    );
    assert!(
        api.contains("replicas: 4") && api.contains("tier: web"),
        "{api}"
    );
    let out = s
        .kiln()
        .args(["store", "cat", "prom-config", "--env", "prod"])
        .arg(s.project())
        .output()
        .unwrap();
    let cm = String::from_utf8(out.stdout).unwrap();
    assert!(
        cm.contains("# ==> objects/shop/ConfigMap.core/prometheus-"),
        "{cm}"
    );
    assert!(
        cm.contains("prometheus.yml: |") && cm.contains("scrape_interval: 15s"),
        "the template's output is the ConfigMap's data: {cm}"
    );
}

#[test]
fn graph_formats() {
    let s = Sandbox::new();
    common::small_platform(&s);
    let dot = s
        .kiln()
        .args(["graph", "--format", "dot", "--env", "staging"])
        .arg(s.project())
        .output()
        .unwrap();
    let dot = String::from_utf8(dot.stdout).unwrap();
    assert!(dot.starts_with("digraph \"shop\""));
    assert!(dot.contains("\"config\" -> \"api\";"));
    let json = s
        .kiln()
        .args(["graph", "--format", "json", "--env", "staging"])
        .arg(s.project())
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&json.stdout).unwrap();
    assert_eq!(v["format_version"], 1);
    let api = v["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|n| n["name"] == "api")
        .unwrap();
    assert_eq!(api["deps"], serde_json::json!(["config", "ns"]));
    let mermaid = s
        .kiln()
        .args(["graph", "--format", "mermaid", "--env", "staging"])
        .arg(s.project())
        .output()
        .unwrap();
    assert!(String::from_utf8(mermaid.stdout)
        .unwrap()
        .contains("config --> api"));
}

#[test]
fn configmap_reads_env_files_line_by_line_and_names_a_bad_line() {
    let s = Sandbox::new();
    s.write(
        "config/app.env",
        "# defaults\nLOG_LEVEL=info\nURL=http://db/?a=b\n",
    );
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.c]\nkind = \"configmap\"\nname = \"c\"\nsrcs = [\"config/app.env\"]\nsrcs_as = \"env\"\n",
    );
    s.kiln().arg("build").arg(s.project()).assert().success();
    let out = s
        .kiln()
        .args(["store", "cat", "c"])
        .arg(s.project())
        .output()
        .unwrap();
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.contains("  LOG_LEVEL: info\n") && text.contains("  URL: http://db/?a=b\n"),
        "{text}"
    );
    assert!(
        !text.contains("app.env:"),
        "the file is not one key: {text}"
    );

    s.write("config/app.env", "LOG_LEVEL=info\nHOME\n");
    let out = s.build_fails(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config/app.env:2") && err.contains("rule `c`"),
        "{err}"
    );
    assert!(err.contains("not KEY=VALUE"), "{err}");
}

/// Upstream manifests carry shell `${VAR}`s of their own: by default a manifest's `${...}` is a
/// kiln reference (an unknown one is refused, naming file and line); with `interpolate = false`
/// the files are taken as they are.
#[test]
fn manifest_sources_can_be_taken_verbatim() {
    let s = Sandbox::new();
    s.write(
        "job.yaml",
        "apiVersion: batch/v1\nkind: Job\nmetadata: {name: ping}\nspec:\n  template:\n    spec:\n      restartPolicy: Never\n      containers:\n        - name: ping\n          image: busybox\n          command: [sh, -c, 'wget http://${FRONTEND_ADDR}']\n",
    );
    let rules = |extra: &str| {
        format!("[project]\nname = \"p\"\n[rule.job]\nkind = \"manifest\"\nsrcs = [\"job.yaml\"]\n{extra}")
    };
    s.write("kiln.toml", &rules(""));
    let out = s.build_fails(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("job.yaml:11") && err.contains("${FRONTEND_ADDR}"),
        "{err}"
    );
    s.write("kiln.toml", &rules("interpolate = false\n"));
    s.build_ok(&[]);
    let job = cat(&s, "job", "objects/_cluster/Job.batch/ping.yaml", &[]);
    assert!(job.contains("wget http://${FRONTEND_ADDR}"), "{job}");
}
