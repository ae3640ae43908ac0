//! A project realized on the test cluster, in its own namespace and ApplySet, and kubectl.

use std::process::{Command, Output};

use serde_json::Value;

use super::{kubeconfig, Sandbox};

pub fn kubectl(args: &[&str]) -> Output {
    Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(args)
        .output()
        .expect("run kubectl")
}

pub fn kubectl_ok(args: &[&str]) -> String {
    let out = kubectl(args);
    assert!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap()
}

/// A project realized into its own namespace.
pub struct Realm {
    pub s: Sandbox,
    pub ns: String,
}

impl Realm {
    pub fn new(name: &str) -> Self {
        let s = Sandbox::new();
        Self {
            s,
            ns: format!("kt-{name}-{}", std::process::id()),
        }
    }

    /// Writes kiln.toml: `[project] name = ns`, `[vars] ns = ...`, the `ns` rule that
    /// creates the namespace, then `rules`.
    pub fn rules(&self, rules: &str) {
        self.s.write(
            "kiln.toml",
            &format!(
                "[project]\nname = \"{}\"\n[vars]\nns = \"{}\"\n{NS_RULE}{rules}",
                self.ns, self.ns
            ),
        );
    }

    pub fn kiln(&self, cmd: &str, extra: &[&str]) -> Output {
        self.kiln_env(cmd, extra, &[])
    }

    pub fn kiln_env(&self, cmd: &str, extra: &[&str], env: &[(&str, &str)]) -> Output {
        let mut c = self.s.kiln();
        c.arg(cmd)
            .arg(self.s.project())
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(extra);
        c.env("KILN_TEST_SECRET", "hunter2-first");
        for (k, v) in env {
            c.env(k, v);
        }
        c.output().unwrap()
    }

    pub fn json(&self, cmd: &str, extra: &[&str]) -> Value {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.kiln(cmd, &args);
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "kiln {cmd} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout)
            .unwrap_or_else(|e| panic!("{e}: {}", String::from_utf8_lossy(&out.stdout)))
    }

    pub fn apply(&self, extra: &[&str]) -> Value {
        let mut args = vec!["--yes", "--skip-workload-gates"];
        args.extend_from_slice(extra);
        self.json("apply", &args)
    }

    pub fn plan(&self) -> Value {
        self.json("plan", &[])
    }

    /// Asserts that the set has converged: `kiln plan --detailed-exitcode` exits 0.
    pub fn assert_converged(&self) {
        let out = self.kiln("plan", &["--detailed-exitcode"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "a converged set plans no change:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Every test project's namespace, as a rule the others depend on.
pub const NS_RULE: &str = "[rule.ns]\nkind = \"manifest\"\nobjects = [ { apiVersion = \"v1\", kind = \"Namespace\", metadata = { name = \"${var.ns}\" } } ]\n";
