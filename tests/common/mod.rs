//! Shared helpers for the CLI integration tests: a scratch project and store, and a way to run
//! the real `kiln` binary.

#![allow(dead_code)]

pub mod realm;

use std::path::{Path, PathBuf};
use std::process::Output;

use assert_cmd::Command;
use serde_json::Value;

/// A scratch project directory and store.
pub struct Sandbox {
    pub dir: tempfile::TempDir,
}

impl Sandbox {
    pub fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir_all(dir.path().join("project")).unwrap();
        Self { dir }
    }

    pub fn project(&self) -> PathBuf {
        self.dir.path().join("project")
    }

    pub fn store(&self) -> PathBuf {
        self.dir.path().join("store")
    }

    pub fn write(&self, rel: &str, text: &str) {
        let p = self.project().join(rel);
        std::fs::create_dir_all(p.parent().unwrap()).unwrap();
        std::fs::write(p, text).unwrap();
    }

    /// A `kiln` command with this sandbox's store and no progress bars.
    pub fn kiln(&self) -> Command {
        self.kiln_in(&self.store())
    }

    /// A `kiln` command with store `store` (another than this sandbox's) and no progress bars.
    pub fn kiln_in(&self, store: &Path) -> Command {
        let mut c = Command::cargo_bin("kiln").unwrap();
        // The user's own config file never reaches a test: an empty config directory.
        c.env("KILN_STORE", store)
            .env("XDG_CONFIG_HOME", self.dir.path().join("config"))
            .env("KILN_NO_PROGRESS", "1")
            .env_remove("KILN_LOG");
        c
    }

    /// `kiln build PROJECT --json [extra]`, asserting success, returning the JSON report.
    pub fn build(&self, extra: &[&str]) -> Value {
        self.build_in(&self.store(), extra)
    }

    /// [`Sandbox::build`] with store `store`.
    pub fn build_in(&self, store: &Path, extra: &[&str]) -> Value {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        serde_json::from_slice(&self.build_ok_in(store, &args).stdout).unwrap()
    }

    /// `kiln build PROJECT [extra]`, asserting success.
    pub fn build_ok(&self, extra: &[&str]) -> Output {
        self.build_ok_in(&self.store(), extra)
    }

    fn build_ok_in(&self, store: &Path, extra: &[&str]) -> Output {
        let out = self
            .kiln_in(store)
            .arg("build")
            .arg(self.project())
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "build failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        out
    }

    /// `kiln store cat RULE --file FILE` of this project (`extra`: more arguments such as
    /// `--env E`), asserting success; the file's bytes.
    pub fn cat_bytes(&self, rule: &str, file: &str, extra: &[&str]) -> Vec<u8> {
        self.cat_bytes_in(&self.store(), rule, file, extra)
    }

    /// [`Sandbox::cat_bytes`] with store `store`.
    pub fn cat_bytes_in(&self, store: &Path, rule: &str, file: &str, extra: &[&str]) -> Vec<u8> {
        let out = self
            .kiln_in(store)
            .args(["store", "cat", rule, "--file", file])
            .arg(self.project())
            .args(extra)
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        out.stdout
    }

    /// [`Sandbox::cat_bytes`] as text.
    pub fn cat(&self, rule: &str, file: &str, extra: &[&str]) -> String {
        String::from_utf8(self.cat_bytes(rule, file, extra)).unwrap()
    }

    /// Runs `kiln build` expecting failure; returns the output.
    pub fn build_fails(&self, extra: &[&str]) -> Output {
        let out = self
            .kiln()
            .arg("build")
            .arg(self.project())
            .args(extra)
            .output()
            .unwrap();
        assert!(!out.status.success(), "build unexpectedly succeeded");
        out
    }
}

/// The names of the rules with `status` in a build report, sorted.
pub fn with_status(report: &Value, status: &str) -> Vec<String> {
    let mut v: Vec<String> = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["status"] == status)
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect();
    v.sort();
    v
}

/// rule name -> (derivation, output)
pub fn hashes(report: &Value) -> std::collections::BTreeMap<String, (String, String)> {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            (
                r["name"].as_str().unwrap().to_owned(),
                (
                    r["derivation"].as_str().unwrap().to_owned(),
                    r["output"].as_str().unwrap().to_owned(),
                ),
            )
        })
        .collect()
}

/// A small platform: namespace, configmap, api (uses the configmap's hashed name), worker,
/// an overlay for production and a bundle.
pub fn small_platform(s: &Sandbox) {
    s.write(
        "kiln.toml",
        r#"[project]
name = "shop"

[vars]
namespace = "shop"
tag = "1.0.0"
replicas = 1

[env.staging]

[env.production]
replicas = 3

[rule.ns]
kind = "manifest"
objects = [ { apiVersion = "v1", kind = "Namespace", metadata = { name = "${var.namespace}" } } ]

[rule.config]
kind = "configmap"
name = "api-config"
namespace = "${var.namespace}"
srcs = ["config/app.env"]

[rule.api]
kind = "manifest"
srcs = ["k8s/api.yaml"]
deps = ["ns", "config"]
namespace = "${var.namespace}"

[rule.worker]
kind = "manifest"
srcs = ["k8s/worker.yaml"]
deps = ["ns"]
namespace = "${var.namespace}"

[rule.all]
kind = "bundle"
deps = ["ns", "config", "api", "worker"]
all_in_one = "all.yaml"
"#,
    );
    s.write("config/app.env", "LOG_LEVEL=info\n");
    s.write(
        "k8s/api.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: ${var.replicas}\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec:\n      containers:\n        - name: api\n          image: shop/api:${var.tag}\n          envFrom: [{configMapRef: {name: \"${dep.config.name}\"}}]\n",
    );
    s.write(
        "k8s/worker.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: worker\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: worker}}\n  template:\n    metadata: {labels: {app: worker}}\n    spec:\n      containers:\n        - name: worker\n          image: shop/worker:1\n",
    );
}

pub fn store_files(store: &Path) -> Vec<PathBuf> {
    walkdir(store)
}

fn walkdir(p: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    if let Ok(rd) = std::fs::read_dir(p) {
        for e in rd.flatten() {
            let path = e.path();
            if path.is_dir() {
                out.extend(walkdir(&path));
            } else {
                out.push(path);
            }
        }
    }
    out
}

/// Copies the directory tree `from` to `to` (an example or corpus project into a sandbox).
pub fn copy_dir(from: &Path, to: &Path) {
    for entry in walkdir::WalkDir::new(from) {
        let entry = entry.unwrap();
        let dest = to.join(entry.path().strip_prefix(from).unwrap());
        if entry.file_type().is_dir() {
            std::fs::create_dir_all(&dest).unwrap();
        } else {
            std::fs::copy(entry.path(), &dest).unwrap();
        }
    }
}

/// The test cluster's kubeconfig: the cluster scripts/test started (`KILN_TEST_KUBECONFIG`),
/// else one this test binary starts once, with a node, and that stops when it exits. Never skipped: no
/// cluster is a failure.
pub fn kubeconfig() -> PathBuf {
    static KUBECONFIG: std::sync::OnceLock<PathBuf> = std::sync::OnceLock::new();
    KUBECONFIG
        .get_or_init(|| {
            if let Some(p) = std::env::var_os("KILN_TEST_KUBECONFIG") {
                return PathBuf::from(p);
            }
            let dir =
                std::env::temp_dir().join(format!("kiln-test-cluster-{}", std::process::id()));
            let status = std::process::Command::new(
                Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-cluster"),
            )
            .arg("start")
            .arg(&dir)
            .args(["--node", "--watch-pid", &std::process::id().to_string()])
            .status()
            .expect("run scripts/test-cluster");
            assert!(
                status.success(),
                "the test cluster did not start (see scripts/test-cluster)"
            );
            dir.join("kubeconfig")
        })
        .clone()
}

/// How many changes of `action` a plan (`kiln plan --json`) has.
pub fn count(plan: &Value, action: &str) -> u64 {
    plan["summary"][action].as_u64().unwrap_or(0)
}

/// The changes of `action` in a plan, as sorted `Kind.group/name`.
pub fn changed(plan: &Value, action: &str) -> Vec<String> {
    let mut v: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == action)
        .map(|c| {
            format!(
                "{}/{}",
                c["group_kind"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            )
        })
        .collect();
    v.sort();
    v
}

/// The shared test data of other projects' files (`../shared/corpus` beside the repository, or
/// `KILN_SHARED_CORPUS`): never committed here. Missing is a failure, not a skip.
pub fn shared_corpus() -> PathBuf {
    let dir = std::env::var_os("KILN_SHARED_CORPUS")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/corpus"));
    assert!(
        dir.join("upstream").is_dir(),
        "the shared corpus is not at {} (set KILN_SHARED_CORPUS to where it is)",
        dir.display()
    );
    dir
}
