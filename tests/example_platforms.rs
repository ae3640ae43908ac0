//! The example platforms are the acceptance suite: each is built for staging and production and
//! realized on the real test cluster (see tests/cluster.rs for how the cluster is found), then
//! changed the way its users change it. Those steps apply with `--skip-workload-gates` (CRD
//! gates still apply); a last step applies with every gate on, on the test cluster's node.
//!
//! The examples' images are not on this machine and nothing is pulled. For tests only,
//! `scripts/test-node alias` makes the node's local busybox image answer to each image the
//! example names, so its pods start with their own commands, arguments, probes, config and
//! Secrets, on a stand-in binary. Which gates pass and which fail (and why, in the failing gate's
//! own words) is printed per example; a failure must name its object, its rule and the reason.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::{changed, copy_dir, count, kubeconfig, Sandbox};
use serde_json::Value;

/// How one example is exercised.
struct Example {
    dir: &'static str,
    /// Environment variables its secret references read.
    secrets: &'static [&'static str],
    /// Namespaces the platform's own installs make (Istio, Argo CD, Velero): created first, as
    /// those installs would.
    installed_namespaces: &'static [&'static str],
    /// (file, from, to): a variable change.
    variable: (&'static str, &'static str, &'static str),
    /// Objects that change with it (`Kind.group/name`).
    variable_changes: &'static [&'static str],
    /// (file, text appended): a config file edit.
    config: (&'static str, &'static str),
    /// The ConfigMap's base name, and the workloads that refer to it.
    config_map: &'static str,
    config_users: &'static [&'static str],
    /// A rule to remove, and the objects that go with it.
    removed_rule: &'static str,
    removed_objects: &'static [&'static str],
}

struct Run<'a> {
    ex: &'a Example,
    s: Sandbox,
}

impl Run<'_> {
    fn project(&self) -> PathBuf {
        self.s.project()
    }

    fn kiln(&self, args: &[&str]) -> Output {
        let mut c = self.s.kiln();
        c.args(args).arg(self.project());
        for var in self.ex.secrets {
            c.env(var, format!("test-value-of-{var}"));
        }
        c.output().unwrap()
    }

    fn realize(&self, cmd: &str, extra: &[&str]) -> Value {
        // The examples are separate platforms (each would own its cluster) sharing the one test
        // cluster: their cluster-scoped objects (argo's CRDs and namespace) are members of
        // whichever example ran last, so each takes them over in its turn.
        let mut args = vec![cmd, "--env", "staging", "--json", "--adopt", "--kubeconfig"];
        let kc = kubeconfig();
        args.push(kc.to_str().unwrap());
        args.extend_from_slice(extra);
        let out = self.kiln(&args);
        assert!(
            out.status.success(),
            "kiln {cmd} failed:\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice(&out.stdout).unwrap()
    }

    fn plan(&self) -> Value {
        self.realize("plan", &[])
    }

    fn apply(&self) -> Value {
        self.realize("apply", &["--yes", "--skip-workload-gates"])
    }

    fn edit(&self, file: &str, f: impl FnOnce(String) -> String) {
        let p = self.project().join(file);
        let text = std::fs::read_to_string(&p).unwrap();
        let new = f(text.clone());
        assert_ne!(text, new, "edit of {file} changed nothing");
        std::fs::write(p, new).unwrap();
    }
}

/// The images the example's staging objects name, from `kiln export`.
fn images(r: &Run<'_>) -> Vec<String> {
    let out_dir = r.s.dir.path().join("export");
    let out = r.kiln(&[
        "export",
        "--env",
        "staging",
        "--out",
        out_dir.to_str().unwrap(),
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let mut images = std::collections::BTreeSet::new();
    for file in common::store_files(&out_dir) {
        let text = std::fs::read_to_string(&file).unwrap();
        for line in text.lines() {
            let line = line.trim_start().trim_start_matches("- ");
            if let Some(image) = line.strip_prefix("image: ") {
                images.insert(image.trim_matches(['"', '\'']).to_owned());
            }
        }
    }
    images.into_iter().collect()
}

/// Tests only: the node's busybox image answers to each of `images` (`scripts/test-node alias`).
fn alias_on_the_node(images: &[String]) {
    let cluster_dir = kubeconfig().parent().unwrap().to_owned();
    let out = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-node"))
        .arg("alias")
        .arg(&cluster_dir)
        .args(images)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "scripts/test-node alias: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// The changes of a plan that are not `unchanged` (for failure messages).
fn not_unchanged(plan: &Value) -> Value {
    Value::Array(
        plan["changes"]
            .as_array()
            .unwrap()
            .iter()
            .filter(|c| c["action"] != "unchanged")
            .cloned()
            .collect(),
    )
}

fn sorted(v: &[&str]) -> Vec<String> {
    let mut v: Vec<String> = v.iter().map(|s| (*s).to_owned()).collect();
    v.sort();
    v
}

fn exercise(ex: &Example) {
    // One example at a time: examples share cluster-scoped CRDs (schedules.velero.io), and an
    // apply takes a CRD into its own set, so interleaved examples would see each other's moves.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());
    let _turn = ONE_AT_A_TIME
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let r = Run {
        ex,
        s: Sandbox::new(),
    };
    std::fs::remove_dir_all(r.project()).unwrap();
    copy_dir(
        &Path::new(env!("CARGO_MANIFEST_DIR")).join(ex.dir),
        &r.project(),
    );

    let images = images(&r);
    assert!(!images.is_empty(), "{} names no image", ex.dir);
    alias_on_the_node(&images);

    for ns in ex.installed_namespaces {
        let out = Command::new("kubectl")
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["create", "namespace", ns])
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            out.status.success() || err.contains("AlreadyExists"),
            "{err}"
        );
    }

    // 1. Both environments build; a second build is a no-op.
    for env in ["staging", "production", "staging"] {
        let out = r.kiln(&["build", "--env", env, "--json"]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        if env == "staging" && report["summary"]["cached"].as_u64().unwrap() > 0 {
            assert_eq!(report["summary"]["built"], 0, "second build is a no-op");
        }
    }

    // 2. Apply creates everything; the objects exist.
    let plan = r.plan();
    let total = plan["changes"].as_array().unwrap().len() as u64 - count(&plan, "delete");
    // On a fresh cluster everything is a create. On one this example was applied to before, the
    // leftovers of that run (other values, removed rules) show up, and apply repairs them.
    r.apply();
    let id = plan["applyset"].as_str().unwrap();
    let kc = kubeconfig();
    let deployments = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["group_kind"] == "Deployment.apps")
        .count();
    let listed = Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(&kc)
        .args([
            "get",
            "deployments",
            "-A",
            "-l",
            &format!("applyset.kubernetes.io/part-of={id}"),
            "-o",
            "name",
        ])
        .output()
        .unwrap();
    assert_eq!(
        String::from_utf8_lossy(&listed.stdout).lines().count(),
        deployments
    );

    // 3. Plan right after: nothing to do, no writes.
    let clean = r.plan();
    assert_eq!(
        count(&clean, "unchanged"),
        total,
        "{} created: {:?} updated: {:?} changes: {:#}",
        clean["summary"],
        changed(&clean, "create"),
        changed(&clean, "update"),
        Value::Array(
            clean["changes"]
                .as_array()
                .unwrap()
                .iter()
                .filter(|c| c["action"] != "unchanged")
                .cloned()
                .collect()
        )
    );
    assert_eq!(clean["http"]["writes"], 0);

    // 4. One variable: exactly the objects that read it.
    let (file, from, to) = ex.variable;
    r.edit(file, |t| t.replacen(from, to, 1));
    let plan = r.plan();
    assert_eq!(changed(&plan, "update"), sorted(ex.variable_changes));
    assert_eq!(
        count(&plan, "create") + count(&plan, "delete"),
        0,
        "created: {:?} deleted: {:?}",
        changed(&plan, "create"),
        changed(&plan, "delete")
    );
    let applied = r.apply();
    assert_eq!(
        applied["http"]["writes"].as_u64().unwrap(),
        ex.variable_changes.len() as u64
    );

    // 5. One config file: a new hashed ConfigMap, its users follow, the old one is pruned.
    let (file, extra) = ex.config;
    r.edit(file, |t| t + extra);
    let plan = r.plan();
    let created = changed(&plan, "create");
    let deleted = changed(&plan, "delete");
    assert_eq!(created.len(), 1, "{created:?}");
    assert!(
        created[0].starts_with(&format!("ConfigMap/{}-", ex.config_map)),
        "{created:?}"
    );
    assert_eq!(deleted.len(), 1, "{deleted:?}");
    assert!(
        deleted[0].starts_with(&format!("ConfigMap/{}-", ex.config_map)),
        "{deleted:?}"
    );
    assert_eq!(changed(&plan, "update"), sorted(ex.config_users));
    r.apply();
    let after = r.plan();
    assert_eq!(
        count(&after, "unchanged"),
        total,
        "{:#}",
        not_unchanged(&after)
    );

    // 6. Remove a rule: its objects are pruned.
    let rule = ex.removed_rule;
    for entry in std::fs::read_dir(r.project().join("rules"))
        .unwrap()
        .flatten()
    {
        let text = std::fs::read_to_string(entry.path()).unwrap();
        let mut out = String::new();
        let mut skipping = false;
        for line in text.lines() {
            if line.starts_with('[') {
                skipping = line == format!("[rule.{rule}]");
            }
            if !skipping {
                out.push_str(
                    &line
                        .replace(&format!("\"{rule}\", "), "")
                        .replace(&format!(", \"{rule}\""), ""),
                );
                out.push('\n');
            }
        }
        std::fs::write(entry.path(), out).unwrap();
    }
    let plan = r.plan();
    assert_eq!(changed(&plan, "delete"), sorted(ex.removed_objects));
    r.apply();
    let after = r.plan();
    assert_eq!(
        count(&after, "unchanged"),
        total - ex.removed_objects.len() as u64
    );
    assert_eq!(count(&after, "delete"), 0);

    // 7. The graph renders, and Graphviz (installed by scripts/test) draws it.
    let out = r.kiln(&["graph", "--format", "dot", "--env", "production"]);
    let dot = String::from_utf8(out.stdout).unwrap();
    assert!(dot.starts_with("digraph") && dot.contains("->"), "{dot}");
    let mut child = Command::new("dot")
        .arg("-Tsvg")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .expect("Graphviz `dot` (scripts/test installs it)");
    std::io::Write::write_all(child.stdin.as_mut().unwrap(), dot.as_bytes()).unwrap();
    drop(child.stdin.take());
    let svg = child.wait_with_output().unwrap();
    assert!(svg.status.success() && String::from_utf8_lossy(&svg.stdout).contains("<svg"));

    // 8. Every gate on, on the node: apply writes nothing new and waits for each object that
    // is not ready, wave by wave. Either all pass, or the first failing gate stops it naming
    // its object, rule and reason, well within its timeout for a pod that cannot run.
    let kc = kubeconfig();
    let started = Instant::now();
    let out = r.kiln(&[
        "apply",
        "--env",
        "staging",
        "--adopt",
        "--yes",
        "--timeout",
        "45",
        "--kubeconfig",
        kc.to_str().unwrap(),
    ]);
    let took = started.elapsed();
    let stderr = String::from_utf8_lossy(&out.stderr);
    let outcome = match out.status.code() {
        Some(0) => "every gate passed".to_owned(),
        Some(2) => {
            // The error as miette wraps it: from its first line to its help.
            let failure: String = stderr
                .lines()
                .skip_while(|l| !(l.contains(" failed: ") || l.contains(" did not become ready ")))
                .take_while(|l| !l.trim_start().starts_with("help:"))
                .map(|l| l.trim_start_matches([' ', '×', '│']).trim_end())
                .collect::<Vec<_>>()
                .join(" ");
            assert!(
                !failure.is_empty(),
                "exit 2 without a failing gate:\n{stderr}"
            );
            assert!(failure.contains(" (rule `"), "names the rule: {failure}");
            // Why: a failure's reason, or for a rollout that timed out, its pods' state (a
            // claim waits for a provisioner the test cluster does not have).
            assert!(
                failure.contains(" failed: pod `")
                    || failure.contains(" failed: condition ")
                    || failure.contains("; pod `")
                    || failure.starts_with("PersistentVolumeClaim "),
                "says why: {failure}"
            );
            let waited = stderr.lines().filter(|l| l.starts_with("waiting ")).count();
            format!("{waited} progress lines, then: {failure}")
        }
        _ => panic!("kiln apply with gates: {stderr}"),
    };
    // The outcome per example, for the reader of the test log (`--nocapture`).
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "gates of {} (staging, on stand-in images, {took:.0?}): {outcome}",
            ex.dir
        );
    }
    assert!(took < Duration::from_secs(120), "{took:?}: {stderr}");
}

#[test]
fn odordiff_2() {
    exercise(&Example {
        dir: "examples/odordiff-2",
        installed_namespaces: &["argocd", "istio-system", "velero"],
        secrets: &[
            "ODORDIFF_SECRET_KEY",
            "ODORDIFF_JWT_SECRET",
            "ODORDIFF_ENCRYPTION_KEY",
            "ODORDIFF_DATABASE_URL",
            "ODORDIFF_POSTGRES_USER",
            "ODORDIFF_POSTGRES_PASSWORD",
        ],
        variable: (
            "kiln.toml",
            "image_tag = \"1.0.0\"",
            "image_tag = \"1.0.1\"",
        ),
        variable_changes: &[
            "Deployment.apps/odordiff-api",
            "Deployment.apps/odordiff-worker",
        ],
        config: ("config/api.env", "FEATURE_FLAGS=beta\n"),
        config_map: "odordiff-api-config",
        config_users: &[
            "Deployment.apps/odordiff-api",
            "Deployment.apps/odordiff-worker",
        ],
        removed_rule: "jaeger",
        removed_objects: &["Deployment.apps/jaeger", "Service/jaeger"],
    });
}

const SMELL_DEPLOYMENTS: &[&str] = &[
    "Deployment.apps/api-gateway",
    "Deployment.apps/auth-service",
    "Deployment.apps/core-api",
    "Deployment.apps/orchestrator",
    "Deployment.apps/research-api",
    "Deployment.apps/web-ui",
    "Deployment.apps/worker-baseline",
    "Deployment.apps/worker-dit-smell",
    "Deployment.apps/worker-optimized",
];

#[test]
fn smell_diffusion() {
    exercise(&Example {
        dir: "examples/smell-diffusion",
        installed_namespaces: &[],
        secrets: &[
            "SMELL_JWT_SECRET",
            "SMELL_API_KEYS",
            "SMELL_POSTGRES_PASSWORD",
        ],
        variable: (
            "kiln.toml",
            "image_tag = \"1.0.0\"",
            "image_tag = \"1.1.0\"",
        ),
        variable_changes: SMELL_DEPLOYMENTS,
        config: ("config/app.env", "GENERATION_TIMEOUT_SECONDS=60\n"),
        config_map: "smell-config",
        config_users: SMELL_DEPLOYMENTS,
        removed_rule: "network-policies",
        removed_objects: &[
            "NetworkPolicy.networking.k8s.io/data-from-apps",
            "NetworkPolicy.networking.k8s.io/default-deny",
            "NetworkPolicy.networking.k8s.io/edge-from-ingress",
            "NetworkPolicy.networking.k8s.io/internal",
            "NetworkPolicy.networking.k8s.io/metrics-from-prometheus",
            "NetworkPolicy.networking.k8s.io/traces-to-jaeger",
        ],
    });
}

const PIPELINE_SERVICES: &[&str] = &[
    "Deployment.apps/aggregation-service",
    "Deployment.apps/enrichment-service",
    "Deployment.apps/normalization-service",
    "Deployment.apps/projection-service",
];

#[test]
fn data_pipeline() {
    exercise(&Example {
        dir: "examples/data-pipeline",
        installed_namespaces: &["velero"],
        secrets: &[
            "DATAPROC_API_KEY_SALT",
            "DATAPROC_POSTGRES_PASSWORD",
            "DATAPROC_CLICKHOUSE_PASSWORD",
            "DATAPROC_MINIO_SECRET_KEY",
        ],
        variable: (
            "kiln.toml",
            "image_tag = \"v1.2.3\"",
            "image_tag = \"v1.2.4\"",
        ),
        variable_changes: PIPELINE_SERVICES,
        config: (
            "config/service.env",
            "DATA_PROC_KAFKA_MAX_POLL_RECORDS=500\n",
        ),
        config_map: "service-config",
        config_users: PIPELINE_SERVICES,
        removed_rule: "pyroscope",
        removed_objects: &["Deployment.apps/pyroscope", "Service/pyroscope"],
    });
}

#[test]
fn ml_platform() {
    exercise(&Example {
        dir: "examples/ml-platform",
        installed_namespaces: &[],
        secrets: &[
            "ML_JWT_SECRET_KEY",
            "ML_VECTOR_DB_DSN",
            "ML_MINIO_ROOT_PASSWORD",
            "ML_POSTGRES_PASSWORD",
            "ML_BACKUP_S3_ACCESS_KEY",
            "ML_BACKUP_S3_SECRET_KEY",
        ],
        // Staging's image tag is its own variable, as in the guide (`:staging` images).
        variable: (
            "kiln.toml",
            "image_tag = \"staging\"",
            "image_tag = \"staging-2\"",
        ),
        variable_changes: &[
            "Deployment.apps/embedding-service",
            "Deployment.apps/model-serving",
            "Deployment.apps/search-service",
        ],
        config: ("config/ml-platform.env", "ML_SEARCH_RERANK=true\n"),
        config_map: "ml-platform-config",
        config_users: &[
            "Deployment.apps/embedding-service",
            "Deployment.apps/mlflow-server",
            "Deployment.apps/model-serving",
            "Deployment.apps/search-service",
        ],
        removed_rule: "backups",
        removed_objects: &[
            "CronJob.batch/minio-backup",
            "CronJob.batch/postgres-backup",
            "PersistentVolumeClaim/postgres-backups",
        ],
    });
}

#[test]
fn footanalytics() {
    exercise(&Example {
        dir: "examples/footanalytics",
        installed_namespaces: &["argocd"],
        secrets: &["FOOT_FLAGSMITH_KEY", "FOOT_DATABASE_URL"],
        // Blue/green: switching the active color moves only the Service's selector.
        variable: (
            "kiln.toml",
            "active_color = \"green\"",
            "active_color = \"blue\"",
        ),
        variable_changes: &["Service/api-gateway"],
        config: (
            "config/platform.env",
            "FLAGSMITH_REQUEST_TIMEOUT_SECONDS=5\n",
        ),
        config_map: "platform-config",
        config_users: &[
            "Deployment.apps/analytics-engine",
            "Deployment.apps/api-gateway-blue",
            "Deployment.apps/api-gateway-green",
        ],
        removed_rule: "chaos",
        removed_objects: &[
            "ChaosSchedule.litmuschaos.io/analytics-engine-chaos",
            "Role.rbac.authorization.k8s.io/litmus-admin",
            "RoleBinding.rbac.authorization.k8s.io/litmus-admin",
            "ServiceAccount/litmus-admin",
        ],
    });
}
