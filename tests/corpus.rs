//! Public projects' install manifests (our kiln.toml in tests/corpus around the upstream files in
//! `../shared/corpus/upstream/`; see tests/corpus/README.md for sources, licences and what was
//! changed) realized on the real test cluster as their users would: apply, then a plan
//! is clean (exit 0 with `--detailed-exitcode`), then a second apply makes no request that
//! writes. Manifests we did not write are the judge of plan and apply (issue 7).

mod common;

use std::path::Path;
use std::process::Output;

use common::{copy_dir, kubeconfig, Sandbox};
use serde_json::Value;

struct Corpus {
    s: Sandbox,
    /// One project at a time, from its first apply to its destroy: two applies racing for
    /// the cluster's discovery after new CRDs would only test the race.
    _turn: std::sync::MutexGuard<'static, ()>,
}

/// The test cluster is shared with the other cluster tests: a corpus project leaves nothing
/// behind (ingress-nginx's admission webhook would refuse every later Ingress), even when its
/// test fails.
impl Drop for Corpus {
    fn drop(&mut self) {
        let out = self.kiln("destroy", &["--yes", "--wait"]);
        if !out.status.success() && !std::thread::panicking() {
            panic!(
                "kiln destroy failed:\n{}",
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
}

impl Corpus {
    fn new(name: &str) -> Self {
        static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
        let turn = ONE_AT_A_TIME
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let s = Sandbox::new();
        std::fs::remove_dir_all(s.project()).unwrap();
        // Our kiln.toml, around the upstream files kept outside the repository.
        copy_dir(
            &Path::new(env!("CARGO_MANIFEST_DIR"))
                .join("tests/corpus")
                .join(name),
            &s.project(),
        );
        copy_dir(
            &common::shared_corpus().join("upstream").join(name),
            &s.project().join("upstream"),
        );
        Corpus { s, _turn: turn }
    }

    fn kiln(&self, cmd: &str, extra: &[&str]) -> Output {
        let mut c = self.s.kiln();
        c.arg(cmd)
            .arg(self.s.project())
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(extra);
        c.output().unwrap()
    }

    fn json(&self, cmd: &str, extra: &[&str]) -> Value {
        let mut args = vec!["--json"];
        args.extend_from_slice(extra);
        let out = self.kiln(cmd, &args);
        assert!(
            out.status.success(),
            "kiln {cmd} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    /// Workload rollouts cannot finish on a control plane without kubelets; CRD gates apply.
    /// `--adopt`: the example platforms carry minimal copies of some of these CRDs
    /// (ServiceMonitor, PrometheusRule) and share the test cluster; whichever runs later takes
    /// them over, as README's answer for shared cluster-scoped objects says.
    fn apply(&self) -> Value {
        self.json("apply", &["--yes", "--skip-workload-gates", "--adopt"])
    }
}

/// The objects an apply wrote or deleted, as `Kind.group namespace/name`.
fn written(apply: &Value) -> Vec<String> {
    apply["applied"]["written"]
        .as_array()
        .unwrap()
        .iter()
        .map(|w| w["object"].as_str().unwrap().to_owned())
        .collect()
}

/// Every object a plan covers, as `Kind.group namespace/name` (or `Kind.group name`).
fn planned(plan: &Value) -> Vec<String> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "delete")
        .map(|c| {
            let (kind, ns, name) = (&c["group_kind"], &c["namespace"], &c["name"]);
            match ns.as_str() {
                Some(ns) if !ns.is_empty() => {
                    format!("{} {ns}/{}", kind.as_str().unwrap(), name.as_str().unwrap())
                }
                _ => format!("{} {}", kind.as_str().unwrap(), name.as_str().unwrap()),
            }
        })
        .collect()
}

fn not_unchanged(plan: &Value) -> Vec<&Value> {
    plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] != "unchanged")
        .collect()
}

/// Apply, plan clean, apply again without a write; returns the plan made before the first
/// apply (every object of the project) and the first apply's report. On a fresh cluster the
/// first apply creates everything; on one where the project was applied before, it repairs
/// what is left of that run.
fn converges(name: &str) -> (Corpus, Value, Value) {
    let c = Corpus::new(name);
    let before = c.json("plan", &["--adopt"]);
    let first = c.apply();

    let plan = c.json("plan", &[]);
    assert!(
        not_unchanged(&plan).is_empty(),
        "{name}: the plan after apply is not clean: {:#?}",
        not_unchanged(&plan)
    );
    let exit = c.kiln("plan", &["--detailed-exitcode"]);
    assert_eq!(
        exit.status.code(),
        Some(0),
        "{name}: {}",
        String::from_utf8_lossy(&exit.stdout)
    );

    let second = c.apply();
    assert_eq!(second["http"]["writes"], 0, "{name}: {second:#}");
    assert_eq!(written(&second), Vec::<String>::new(), "{name}");
    assert_eq!(second["applied"]["deleted"], 0, "{name}");
    (c, before, first)
}

#[test]
fn ingress_nginx_converges() {
    let (_, plan, _) = converges("ingress-nginx");
    // Its certgen Jobs carry `ttlSecondsAfterFinished`, which the 1.20 server drops (the
    // field's gate is off): the dry run, not the desired text, decides that this is no drift.
    let objects = planned(&plan);
    for object in [
        "Job.batch ingress-nginx/ingress-nginx-admission-create",
        "IngressClass.networking.k8s.io nginx",
        "ValidatingWebhookConfiguration.admissionregistration.k8s.io ingress-nginx-admission",
    ] {
        assert!(
            objects.iter().any(|o| o == object),
            "{object} not applied: {objects:?}"
        );
    }
}

#[test]
fn online_boutique_converges() {
    let (_, plan, _) = converges("online-boutique");
    let deployments = planned(&plan)
        .iter()
        .filter(|o| o.starts_with("Deployment.apps online-boutique/"))
        .count();
    assert_eq!(deployments, 12);
}

#[test]
fn gateway_api_converges_and_its_gateway_class_stays_cluster_scoped() {
    let (c, plan, first) = converges("gateway-api");
    // The examples' rule gives its objects a namespace; the GatewayClass (cluster-scoped by its
    // CRD) drops it, with a warning that names the rule and the file.
    let warnings = first["warnings"].to_string();
    assert!(
        warnings.contains("GatewayClass") && warnings.contains("routes"),
        "{warnings}"
    );
    let objects = planned(&plan);
    assert!(
        objects
            .iter()
            .any(|o| o == "GatewayClass.gateway.networking.k8s.io example"),
        "{objects:?}"
    );
    assert!(
        objects
            .iter()
            .any(|o| o == "HTTPRoute.gateway.networking.k8s.io gateway-demo/http-app-1"),
        "{objects:?}"
    );
    // A third apply still writes and deletes nothing (the class never flips).
    let third = c.apply();
    assert_eq!(third["http"]["writes"], 0);
}

#[test]
fn monitoring_stack_converges() {
    let (_, plan, _) = converges("monitoring");
    let objects = planned(&plan);
    for object in [
        "PrometheusRule.monitoring.coreos.com default/prometheus-example-rules",
        "ServiceMonitor.monitoring.coreos.com default/prometheus-operator",
        "Deployment.apps kube-system/kube-state-metrics",
    ] {
        assert!(
            objects.iter().any(|o| o == object),
            "{object} not applied: {objects:?}"
        );
    }
}
