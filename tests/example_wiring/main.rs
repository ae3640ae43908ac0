//! The example platforms are wired as their guides say, checked on the built objects of both
//! environments, without a cluster: every ConfigMap, Secret, volume, claim, service account,
//! Service, Ingress backend, autoscaler target and issuer a object names is in the set; every
//! ConfigMap and Secret is used; and the NetworkPolicies admit each flow the guide describes
//! (and the DNS lookups of every pod they restrict), while refusing the ones it forbids.

#[path = "../common/mod.rs"]
mod common;
mod selectors;
mod wiring;

use std::path::Path;

use serde_json::Value;

use common::Sandbox;
use selectors::{admitted, Endpoint, Labels};
use wiring::{walk, External, Set};

/// Where a connection starts or ends.
#[derive(Clone, Copy)]
enum Peer {
    /// A workload of the set, by name.
    Workload(&'static str),
    /// A pod outside the set: its namespace and its labels.
    Outside(&'static str, &'static [(&'static str, &'static str)]),
    /// A pod an operator makes in a workload's namespace: that workload, the pod's labels.
    Beside(&'static str, &'static [(&'static str, &'static str)]),
}

fn labels_of(labels: &[(&str, &str)]) -> Labels {
    labels
        .iter()
        .map(|(k, v)| ((*k).to_owned(), Value::String((*v).into())))
        .collect()
}

const INGRESS_NGINX: Peer = Peer::Outside(
    "ingress-nginx",
    &[("app.kubernetes.io/name", "ingress-nginx")],
);
const KUBE_DNS: Peer = Peer::Outside("kube-system", &[("k8s-app", "kube-dns")]);

/// (from, to, TCP port): a connection the guide says is made.
type Flow = (Peer, Peer, u64);

struct Example {
    dir: &'static str,
    secrets: &'static [&'static str],
    /// Objects provided, or consumed, outside the set, each with the reason in a comment.
    external: External<'static>,
    flows: &'static [Flow],
    /// Connections the policies must refuse.
    refused: &'static [Flow],
}

fn built_set(ex: &Example, env: &str) -> Set {
    let s = Sandbox::new();
    let project = Path::new(env!("CARGO_MANIFEST_DIR")).join(ex.dir);
    let with_secrets = |c: &mut assert_cmd::Command| {
        for var in ex.secrets {
            c.env(var, "test-value");
        }
    };
    let out_dir = s.dir.path().join("export");
    let mut export = s.kiln();
    export
        .arg("export")
        .arg(&project)
        .args(["--env", env, "--out"])
        .arg(&out_dir);
    with_secrets(&mut export);
    export.assert().success();
    let mut objects = Vec::new();
    for entry in walkdir::WalkDir::new(&out_dir).sort_by_file_name() {
        let entry = entry.unwrap();
        if entry.file_type().is_file() {
            objects.extend(parse(&std::fs::read_to_string(entry.path()).unwrap()));
        }
    }
    // Export leaves Secrets out (their values are resolved at apply); their artifacts name the
    // keys they will hold.
    let mut build = s.kiln();
    build
        .arg("build")
        .arg(&project)
        .args(["--json", "--env", env]);
    with_secrets(&mut build);
    let out = build.output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    for rule in report["rules"].as_array().unwrap() {
        if rule["kind"] == "secret" {
            let mut cat = s.kiln();
            cat.args(["store", "cat", "--env", env])
                .arg(rule["name"].as_str().unwrap())
                .arg(&project);
            with_secrets(&mut cat);
            let out = cat.output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            objects.extend(parse(&String::from_utf8(out.stdout).unwrap()));
        }
    }
    Set { objects }
}

fn parse(text: &str) -> Vec<Value> {
    let path = kiln_core::RelPath::new("objects.yaml").unwrap();
    kiln_rules::objects::parse_documents(text, &path).unwrap()
}

fn endpoint(set: &Set, peer: Peer) -> Endpoint {
    match peer {
        Peer::Workload(name) => {
            let pods = set.pods();
            let pod = pods
                .iter()
                .find(|p| p.workload == name)
                // Or one whose name carries a suffix (a size, a content hash).
                .or_else(|| {
                    pods.iter()
                        .find(|p| p.workload.starts_with(&format!("{name}-")))
                })
                .unwrap_or_else(|| panic!("no workload {name}"));
            set.endpoint(pod)
        }
        Peer::Outside(namespace, labels) => Endpoint {
            namespace: namespace.into(),
            namespace_labels: set.namespace_labels(namespace),
            labels: labels_of(labels),
            named_ports: Vec::new(),
        },
        Peer::Beside(workload, labels) => {
            let namespace = endpoint(set, Peer::Workload(workload)).namespace;
            Endpoint {
                namespace_labels: set.namespace_labels(&namespace),
                namespace,
                labels: labels_of(labels),
                named_ports: Vec::new(),
            }
        }
    }
}

fn describe(peer: Peer) -> String {
    match peer {
        Peer::Workload(name) => name.into(),
        Peer::Outside(ns, _) => format!("pods of {ns}"),
        Peer::Beside(_, labels) => format!("pods {labels:?}"),
    }
}

fn check(ex: &Example) {
    for env in ["staging", "production"] {
        let set = built_set(ex, env);
        let mut problems = walk(&set, ex.external).0;
        let policies: Vec<&Value> = set
            .objects
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .collect();
        for &(from, to, port) in ex.flows {
            let (a, b) = (endpoint(&set, from), endpoint(&set, to));
            if let Err(why) = admitted(&policies, &a, &b, port, "TCP") {
                problems.push(format!(
                    "{} -> {}:{port}: {why}",
                    describe(from),
                    describe(to)
                ));
            }
        }
        for &(from, to, port) in ex.refused {
            let (a, b) = (endpoint(&set, from), endpoint(&set, to));
            if admitted(&policies, &a, &b, port, "TCP").is_ok() {
                problems.push(format!(
                    "{} -> {}:{port} is admitted; the guide forbids it",
                    describe(from),
                    describe(to)
                ));
            }
        }
        let dns = endpoint(&set, KUBE_DNS);
        for pod in set.pods() {
            if admitted(&policies, &set.endpoint(&pod), &dns, 53, "UDP").is_err() {
                problems.push(format!(
                    "{}: DNS lookups (UDP 53 to kube-dns) are refused",
                    pod.workload
                ));
            }
        }
        assert!(
            problems.is_empty(),
            "{} ({env}):\n  {}",
            ex.dir,
            problems.join("\n  ")
        );
    }
}

const SMELL: Example = Example {
    dir: "examples/smell-diffusion",
    secrets: &[
        "SMELL_JWT_SECRET",
        "SMELL_API_KEYS",
        "SMELL_POSTGRES_PASSWORD",
    ],
    external: &[],
    flows: &[
        (INGRESS_NGINX, Peer::Workload("api-gateway"), 8080),
        (INGRESS_NGINX, Peer::Workload("web-ui"), 8080),
        (
            Peer::Workload("api-gateway"),
            Peer::Workload("auth-service"),
            8081,
        ),
        (
            Peer::Workload("api-gateway"),
            Peer::Workload("core-api"),
            8000,
        ),
        (
            Peer::Workload("api-gateway"),
            Peer::Workload("research-api"),
            8001,
        ),
        (
            Peer::Workload("core-api"),
            Peer::Workload("orchestrator"),
            8002,
        ),
        (
            Peer::Workload("core-api"),
            Peer::Workload("postgresql"),
            5432,
        ),
        (Peer::Workload("core-api"), Peer::Workload("redis"), 6379),
        (
            Peer::Workload("orchestrator"),
            Peer::Workload("redis"),
            6379,
        ),
        (
            Peer::Workload("worker-dit-smell"),
            Peer::Workload("redis"),
            6379,
        ),
        (
            Peer::Workload("worker-optimized"),
            Peer::Workload("postgresql"),
            5432,
        ),
        (
            Peer::Workload("postgres-backup"),
            Peer::Workload("postgresql"),
            5432,
        ),
        (
            Peer::Workload("prometheus"),
            Peer::Workload("core-api"),
            8000,
        ),
        (Peer::Workload("prometheus"), Peer::Workload("web-ui"), 8080),
        (
            Peer::Workload("prometheus"),
            Peer::Workload("jaeger"),
            14269,
        ),
        (
            Peer::Workload("orchestrator"),
            Peer::Workload("jaeger"),
            4317,
        ),
        (Peer::Workload("web-ui"), Peer::Workload("jaeger"), 4318),
    ],
    refused: &[
        // The ingress controller reaches only what the Ingress routes to.
        (INGRESS_NGINX, Peer::Workload("core-api"), 8000),
        (INGRESS_NGINX, Peer::Workload("postgresql"), 5432),
        // The web UI talks to the API through the gateway, never to the data layer.
        (Peer::Workload("web-ui"), Peer::Workload("postgresql"), 5432),
        (Peer::Workload("web-ui"), Peer::Workload("core-api"), 8000),
    ],
};

#[test]
fn smell_diffusion() {
    check(&SMELL);
}

/// Where two environments' objects differ: `Kind/name:/json/pointer`, after the staging names
/// are mapped to production's (`renames`) and content hashes of ConfigMap names are masked.
fn environment_differences(ex: &Example, renames: &[(&str, &str)]) -> Vec<String> {
    let hash = regex::Regex::new(r"-[0-9a-f]{10}\b").unwrap();
    let normal = |objects: Vec<Value>, renames: &[(&str, &str)]| {
        let mut by_id = std::collections::BTreeMap::new();
        for mut o in objects {
            for field in ["labels", "annotations"] {
                if let Some(m) = o["metadata"][field].as_object_mut() {
                    m.retain(|k, _| {
                        !k.starts_with("kiln.dev/") && !k.starts_with("applyset.kubernetes.io/")
                    });
                }
            }
            let mut text = serde_json::to_string(&o).unwrap();
            for (from, to) in renames {
                text = text.replace(from, to);
            }
            let o: Value = serde_json::from_str(&hash.replace_all(&text, "-#")).unwrap();
            let id = format!(
                "{}/{}",
                o["kind"].as_str().unwrap(),
                o["metadata"]["name"].as_str().unwrap()
            );
            by_id.insert(id, o);
        }
        by_id
    };
    let staging = normal(built_set(ex, "staging").objects, renames);
    let production = normal(built_set(ex, "production").objects, &[]);
    let mut out = Vec::new();
    fn walk(a: Option<&Value>, b: Option<&Value>, at: String, out: &mut Vec<String>) {
        match (a, b) {
            (Some(Value::Object(x)), Some(Value::Object(y))) => {
                let keys: std::collections::BTreeSet<&String> = x.keys().chain(y.keys()).collect();
                for k in keys {
                    walk(
                        x.get(k),
                        y.get(k),
                        format!("{at}/{}", k.replace('~', "~0").replace('/', "~1")),
                        out,
                    );
                }
            }
            (Some(Value::Array(x)), Some(Value::Array(y))) if x.len() == y.len() => {
                for (i, (a, b)) in x.iter().zip(y).enumerate() {
                    walk(Some(a), Some(b), format!("{at}/{i}"), out);
                }
            }
            (a, b) if a == b => {}
            _ => out.push(at),
        }
    }
    let ids: std::collections::BTreeSet<&String> =
        staging.keys().chain(production.keys()).collect();
    for id in ids {
        let mut paths = Vec::new();
        walk(
            staging.get(id),
            production.get(id),
            String::new(),
            &mut paths,
        );
        out.extend(paths.into_iter().map(|p| format!("{id}:{p}")));
    }
    out
}

/// Staging and production differ exactly where the guide says (each entry is a prefix of the
/// differing paths it covers, and each must match at least one).
fn differ_as_expected(ex: &Example, renames: &[(&str, &str)], expected: &[&str]) {
    let found = environment_differences(ex, renames);
    let unexpected: Vec<&String> = found
        .iter()
        .filter(|d| !expected.iter().any(|e| d.starts_with(e)))
        .collect();
    let missing: Vec<&&str> = expected
        .iter()
        .filter(|e| !found.iter().any(|d| d.starts_with(**e)))
        .collect();
    assert!(
        unexpected.is_empty() && missing.is_empty(),
        "{}: unexpected differences:\n  {}\nexpected but the same:\n  {}",
        ex.dir,
        unexpected
            .iter()
            .map(|s| s.as_str())
            .collect::<Vec<_>>()
            .join("\n  "),
        missing.iter().map(|s| **s).collect::<Vec<_>>().join("\n  ")
    );
}

#[test]
fn smell_diffusion_environments_differ_as_the_guide_says() {
    differ_as_expected(
        &SMELL,
        &[("smell-diffusion-staging", "smell-diffusion")],
        &[
            // Let's Encrypt's staging endpoint for staging.
            "ClusterIssuer/letsencrypt-prod:",
            "ClusterIssuer/letsencrypt-staging:",
            "Ingress/smell-diffusion:/metadata/annotations/cert-manager.io~1cluster-issuer",
            // Its own domain, CORS origin and rate limit.
            "Ingress/smell-diffusion:/spec/rules/0/host",
            "Ingress/smell-diffusion:/spec/tls/0/hosts/0",
            "Ingress/smell-diffusion:/metadata/annotations/nginx.ingress.kubernetes.io~1limit-rpm",
            "ConfigMap/smell-config-#:/data/CORS_ALLOWED_ORIGINS",
            "ConfigMap/smell-config-#:/data/ENVIRONMENT",
            "ConfigMap/smell-config-#:/data/OTEL_RESOURCE_ATTRIBUTES",
            // Fewer replicas, a lower autoscaling ceiling.
            "Deployment/api-gateway:/spec/replicas",
            "Deployment/auth-service:/spec/replicas",
            "Deployment/core-api:/spec/replicas",
            "Deployment/web-ui:/spec/replicas",
            "Deployment/worker-baseline:/spec/replicas",
            "Deployment/worker-dit-smell:/spec/replicas",
            "Deployment/worker-optimized:/spec/replicas",
            "HorizontalPodAutoscaler/core-api:/spec/m",
            "HorizontalPodAutoscaler/worker-dit-smell:/spec/m",
            // Smaller volumes, shorter retention, looser alert thresholds.
            "PersistentVolumeClaim/model-storage:/spec/resources/requests/storage",
            "PersistentVolumeClaim/postgres-backups:/spec/resources/requests/storage",
            "PersistentVolumeClaim/prometheus-data:/spec/resources/requests/storage",
            "Deployment/prometheus:/spec/template/spec/containers/0/args/2",
            "Deployment/jaeger:/spec/template/spec/containers/0/args/0",
            "CronJob/postgres-backup:/spec/jobTemplate/spec/template/spec/containers/0/args/0",
            "ConfigMap/prometheus-config-#:/data/alerts.yml",
            "ConfigMap/prometheus-config-#:/data/prometheus.yml",
        ],
    );
}
const ISTIO_GATEWAY: Peer = Peer::Outside("istio-system", &[("istio", "ingressgateway")]);
const KUBE_PROMETHEUS: Peer =
    Peer::Outside("monitoring", &[("app.kubernetes.io/name", "prometheus")]);
const CNPG_OPERATOR: Peer = Peer::Outside(
    "cnpg-system",
    &[("app.kubernetes.io/name", "cloudnative-pg")],
);
const ODORDIFF_DB: Peer = Peer::Beside("odordiff-api", &[("cnpg.io/cluster", "odordiff-db")]);
const ODORDIFF: Example = Example {
    dir: "examples/odordiff-2",
    secrets: &[
        "ODORDIFF_SECRET_KEY",
        "ODORDIFF_JWT_SECRET",
        "ODORDIFF_ENCRYPTION_KEY",
        "ODORDIFF_DATABASE_URL",
        "ODORDIFF_POSTGRES_USER",
        "ODORDIFF_POSTGRES_PASSWORD",
    ],
    external: &[
        // Made by the installs of Argo CD, Istio and Velero.
        ("Namespace", "", "argocd"),
        ("Namespace", "", "istio-system"),
        ("Namespace", "", "velero"),
        // Vault's service registration labels the active pod at run time.
        ("Service", "", "vault-active"),
    ],
    flows: &[
        (ISTIO_GATEWAY, Peer::Workload("odordiff-api"), 8000),
        (KUBE_PROMETHEUS, Peer::Workload("odordiff-api"), 8000),
        (
            Peer::Workload("load-test"),
            Peer::Workload("odordiff-api"),
            8000,
        ),
        (Peer::Workload("odordiff-api"), ODORDIFF_DB, 5432),
        (Peer::Workload("odordiff-worker"), ODORDIFF_DB, 5432),
        (ODORDIFF_DB, ODORDIFF_DB, 5432),
        (CNPG_OPERATOR, ODORDIFF_DB, 8000),
        (KUBE_PROMETHEUS, ODORDIFF_DB, 9187),
        (
            Peer::Workload("odordiff-api"),
            Peer::Workload("redis"),
            6379,
        ),
        (
            Peer::Workload("odordiff-worker"),
            Peer::Workload("redis"),
            6379,
        ),
        (Peer::Workload("redis"), Peer::Workload("redis"), 16379),
        (
            Peer::Workload("redis-cluster-create"),
            Peer::Workload("redis"),
            6379,
        ),
    ],
    refused: &[
        // Only the API takes outside traffic; the data layer only its clients'.
        (ISTIO_GATEWAY, Peer::Workload("redis"), 6379),
        (ISTIO_GATEWAY, ODORDIFF_DB, 5432),
        (Peer::Workload("load-test"), ODORDIFF_DB, 5432),
        (
            Peer::Workload("odordiff-api"),
            Peer::Workload("redis"),
            16379,
        ),
    ],
};

#[test]
fn odordiff_2() {
    check(&ODORDIFF);
}

#[test]
fn odordiff_2_environments_differ_as_the_guide_says() {
    differ_as_expected(
        &ODORDIFF,
        &[
            // Names that carry the environment.
            ("odordiff-staging-", "odordiff-production-"),
            ("tls-staging", "tls-production"),
            ("odordiff-2-staging", "odordiff-2-production"),
            ("delegator-staging", "delegator-production"),
            ("odordiff-ssd-staging", "odordiff-ssd-production"),
            ("deploy/staging", "deploy/production"),
            // Namespaces.
            ("odordiff-staging", "odordiff"),
            ("security-staging", "security"),
            ("monitoring-staging", "monitoring"),
        ],
        &[
            // Its own domain and certificate issuer (Let's Encrypt's staging endpoint).
            "Gateway/odordiff-gateway:/spec/servers/0/hosts/0",
            "VirtualService/odordiff-api:/spec/hosts/0",
            "ClusterIssuer/letsencrypt-prod:",
            "ClusterIssuer/letsencrypt-staging:",
            "Certificate/odordiff-api-tls-production:/spec/dnsNames/0",
            "Certificate/odordiff-api-tls-production:/spec/issuerRef/name",
            "Namespace/",
            "ConfigMap/odordiff-api-config-#:/data/ENVIRONMENT",
            "ConfigMap/odordiff-api-config-#:/data/LOG_LEVEL",
            // Production: the guide's replica counts and HA; staging: one of each.
            "Deployment/odordiff-api:/spec/replicas",
            "Deployment/odordiff-worker:/spec/replicas",
            "HorizontalPodAutoscaler/odordiff-api-hpa:/spec/m",
            "Cluster/odordiff-db:/spec/instances",
            "Cluster/odordiff-db:/spec/affinity/podAntiAffinityType",
            "Cluster/odordiff-db:/spec/storage/size",
            "StatefulSet/redis:/spec/replicas",
            "Job/redis-cluster-create-3:",
            "Job/redis-cluster-create-6:",
            "StatefulSet/vault:/spec/replicas",
            "ConfigMap/vault-config-#:/data/vault.hcl",
            // Production's vertical scaling of the API (the `api-production` overlay).
            "Deployment/odordiff-api:/spec/template/spec/containers/0/resources/",
            // A week of backups in staging, thirty days in production.
            "Schedule/odordiff-production-daily:/spec/template/ttl",
        ],
    );
}

const ML_INGRESS: Peer = Peer::Outside(
    "ingress-nginx",
    &[("app.kubernetes.io/name", "ingress-nginx")],
);
const ML_DB: Peer = Peer::Beside("model-serving", &[("cnpg.io/cluster", "postgres")]);

const ML_PLATFORM: Example = Example {
    dir: "examples/ml-platform",
    secrets: &[
        "ML_JWT_SECRET_KEY",
        "ML_VECTOR_DB_DSN",
        "ML_MINIO_ROOT_PASSWORD",
        "ML_POSTGRES_PASSWORD",
        "ML_BACKUP_S3_ACCESS_KEY",
        "ML_BACKUP_S3_SECRET_KEY",
    ],
    external: &[],
    flows: &[
        (ML_INGRESS, Peer::Workload("model-serving"), 9005),
        (ML_INGRESS, Peer::Workload("embedding-service"), 9006),
        (ML_INGRESS, Peer::Workload("search-service"), 9007),
        (
            Peer::Workload("search-service"),
            Peer::Workload("embedding-service"),
            9006,
        ),
        (
            Peer::Workload("model-serving"),
            Peer::Workload("mlflow-server"),
            5000,
        ),
        (
            Peer::Workload("mlflow-server"),
            Peer::Workload("minio"),
            9000,
        ),
        (
            Peer::Workload("minio-backup"),
            Peer::Workload("minio"),
            9000,
        ),
        (Peer::Workload("minio"), Peer::Workload("minio"), 9000),
        (
            Peer::Outside("monitoring", &[("app.kubernetes.io/name", "prometheus")]),
            Peer::Workload("search-service"),
            9007,
        ),
        (
            Peer::Workload("model-serving"),
            Peer::Workload("jaeger"),
            4317,
        ),
    ],
    refused: &[
        // Only the three routes are reachable from outside; MLflow and the data are not.
        (ML_INGRESS, Peer::Workload("mlflow-server"), 5000),
        (ML_INGRESS, Peer::Workload("minio"), 9000),
        // The other environment's pods: staging never reaches production.
        (
            Peer::Outside("ml-platform-other", &[("app", "ml-platform")]),
            Peer::Workload("model-serving"),
            9005,
        ),
    ],
};

/// Each environment's data tier, which differs (HA in production only), and its flows.
fn ml_data_flows(env: &str) -> Vec<Flow> {
    if env == "production" {
        vec![
            (Peer::Workload("mlflow-server"), ML_DB, 5432),
            (Peer::Workload("postgres-backup"), ML_DB, 5432),
            (ML_DB, ML_DB, 5432),
            (
                Peer::Workload("model-serving"),
                Peer::Workload("redis-cluster"),
                6379,
            ),
            (
                Peer::Workload("redis-cluster"),
                Peer::Workload("redis-cluster"),
                16379,
            ),
            (
                Peer::Workload("redis-cluster-create"),
                Peer::Workload("redis-cluster"),
                6379,
            ),
        ]
    } else {
        vec![
            (
                Peer::Workload("mlflow-server"),
                Peer::Workload("postgres"),
                5432,
            ),
            (
                Peer::Workload("postgres-backup"),
                Peer::Workload("postgres"),
                5432,
            ),
            (
                Peer::Workload("model-serving"),
                Peer::Workload("redis"),
                6379,
            ),
            (Peer::Workload("redis"), Peer::Workload("redis"), 6379),
        ]
    }
}

#[test]
fn ml_platform() {
    check(&ML_PLATFORM);
    for env in ["staging", "production"] {
        let set = built_set(&ML_PLATFORM, env);
        let policies: Vec<&Value> = set
            .objects
            .iter()
            .filter(|o| o["kind"] == "NetworkPolicy")
            .collect();
        for (from, to, port) in ml_data_flows(env) {
            let (a, b) = (endpoint(&set, from), endpoint(&set, to));
            admitted(&policies, &a, &b, port, "TCP").unwrap_or_else(|why| {
                panic!(
                    "{env}: {} -> {}:{port}: {why}",
                    describe(from),
                    describe(to)
                )
            });
        }
    }
}

const PIPELINE: Example = Example {
    dir: "examples/data-pipeline",
    secrets: &[
        "DATAPROC_API_KEY_SALT",
        "DATAPROC_POSTGRES_PASSWORD",
        "DATAPROC_CLICKHOUSE_PASSWORD",
        "DATAPROC_MINIO_SECRET_KEY",
    ],
    external: &[
        // Made by `velero install`.
        ("Namespace", "", "velero"),
    ],
    flows: &[],
    refused: &[],
};

#[test]
fn data_pipeline() {
    check(&PIPELINE);
}

#[test]
fn data_pipeline_environments_differ_as_the_guide_says() {
    differ_as_expected(
        &PIPELINE,
        &[
            (
                "prometheus-data-processing-staging",
                "prometheus-data-processing-production",
            ),
            ("data-processing-staging-", "data-processing-production-"),
            ("data-processing-staging", "data-processing"),
        ],
        &[
            "ConfigMap/service-config-#:/data/DATA_PROC_ENVIRONMENT",
            // Each environment's own PostgreSQL and ClickHouse (and a smaller pool in staging).
            "ConfigMap/service-config-#:/data/DATA_PROC_CLICKHOUSE_HOST",
            "ConfigMap/pgbouncer-#:/data/pgbouncer.ini",
            "Job/clickhouse-migrations-#:/spec/template/spec/containers/0/env/0/value",
            "Job/postgres-migrations-#:/spec/template/spec/containers/0/env/0/value",
            // The guide's autoscaling range (2-10) in production; 1-3 in staging.
            "Deployment/aggregation-service:/spec/replicas",
            "Deployment/enrichment-service:/spec/replicas",
            "Deployment/normalization-service:/spec/replicas",
            "Deployment/projection-service:/spec/replicas",
            "HorizontalPodAutoscaler/aggregation-service:/spec/m",
            "HorizontalPodAutoscaler/enrichment-service:/spec/m",
            "HorizontalPodAutoscaler/normalization-service:/spec/m",
            "HorizontalPodAutoscaler/projection-service:/spec/m",
            // Canaries: the guide's 50% ceiling in production; staging goes to 100%.
            "Canary/aggregation-service:/spec/analysis/maxWeight",
            "Canary/enrichment-service:/spec/analysis/maxWeight",
            "Canary/normalization-service:/spec/analysis/maxWeight",
            "Canary/projection-service:/spec/analysis/maxWeight",
            // The guide's key-metric thresholds in production, looser ones in staging.
            "ConfigMap/prometheus-config-#:/data/alert_rules.yml",
            "ConfigMap/prometheus-config-#:/data/prometheus.yml",
            // Smaller volumes, shorter retention.
            "Deployment/prometheus:/spec/template/spec/containers/0/args/2",
            "PersistentVolumeClaim/prometheus-data:/spec/resources/requests/storage",
            "StatefulSet/minio:/spec/volumeClaimTemplates/0/spec/resources/requests/storage",
            "Schedule/data-processing-production-daily-full-backup:/spec/template/ttl",
        ],
    );
}

const FOOTANALYTICS: Example = Example {
    dir: "examples/footanalytics",
    secrets: &["FOOT_FLAGSMITH_KEY", "FOOT_DATABASE_URL"],
    external: &[
        // Made by the install of Argo CD.
        ("Namespace", "", "argocd"),
    ],
    flows: &[
        (
            Peer::Outside("istio-system", &[("istio", "ingressgateway")]),
            Peer::Workload("api-gateway-blue"),
            3000,
        ),
        (
            Peer::Outside("istio-system", &[("istio", "ingressgateway")]),
            Peer::Workload("api-gateway-green"),
            3000,
        ),
        (
            Peer::Workload("api-gateway-green"),
            Peer::Workload("analytics-engine"),
            8080,
        ),
        (
            Peer::Workload("analytics-engine"),
            Peer::Workload("ml-pipeline"),
            8000,
        ),
        (
            Peer::Workload("analytics-engine"),
            Peer::Workload("jaeger"),
            4317,
        ),
        (
            Peer::Workload("ml-pipeline"),
            Peer::Workload("jaeger"),
            4317,
        ),
        (
            Peer::Beside("jaeger", &[("app.kubernetes.io/name", "prometheus")]),
            Peer::Workload("analytics-engine"),
            8080,
        ),
        (
            Peer::Beside("jaeger", &[("app.kubernetes.io/name", "prometheus")]),
            Peer::Workload("ml-pipeline"),
            15020,
        ),
    ],
    refused: &[
        // The ML pipeline is reached only through the analytics engine.
        (
            Peer::Outside("istio-system", &[("istio", "ingressgateway")]),
            Peer::Workload("ml-pipeline"),
            8000,
        ),
        (
            Peer::Workload("api-gateway-blue"),
            Peer::Workload("ml-pipeline"),
            8000,
        ),
        // Outside traffic enters through the gateway only.
        (
            Peer::Outside("istio-system", &[("istio", "ingressgateway")]),
            Peer::Workload("analytics-engine"),
            8080,
        ),
    ],
};

#[test]
fn footanalytics() {
    check(&FOOTANALYTICS);
}

#[test]
fn footanalytics_environments_differ_as_the_guide_says() {
    differ_as_expected(
        &FOOTANALYTICS,
        &[
            // Argo CD's objects carry the environment in their names.
            ("platform-staging", "platform-production"),
            ("footanalytics-app-staging", "footanalytics-app-production"),
            ("footanalytics-ai-staging", "footanalytics-ai-production"),
            ("prometheus-stack-staging", "prometheus-stack-production"),
            ("deploy/staging", "deploy/production"),
            // Namespaces.
            ("footanalytics-monitoring-staging", "monitoring"),
            ("footanalytics-staging", "footanalytics"),
            ("ai-processing-staging", "ai-processing"),
        ],
        &[
            "AppProject/footanalytics-platform-production:/spec/description",
            "Namespace/",
            "ConfigMap/platform-config-#:/data/ENVIRONMENT",
            "ConfigMap/platform-config-#:/data/OTEL_RESOURCE_ATTRIBUTES",
            // Every trace in staging, one in ten in production.
            "ConfigMap/platform-config-#:/data/OTEL_TRACES_SAMPLER_ARG",
            "Deployment/jaeger:/spec/template/spec/containers/0/args/0",
            // Blue/green: each environment has its own active color.
            "Service/api-gateway:/spec/selector/version",
            // The GPU pipeline's autoscaling range (2-10 in production).
            "Deployment/ml-pipeline:/spec/replicas",
            "HorizontalPodAutoscaler/ml-pipeline:/spec/m",
            // The guide's SLOs and thresholds in production, looser ones in staging; retention.
            "PrometheusRule/footanalytics-alerts:/spec/groups/",
            "Application/footanalytics-prometheus-stack-production:/spec/source/helm/valuesObject/prometheus/prometheusSpec/",
        ],
    );
}

#[test]
fn ml_platform_environments_differ_as_the_guide_says() {
    differ_as_expected(
        &ML_PLATFORM,
        &[("ml-platform-staging", "ml-platform-production")],
        &[
            // The guide's HA infrastructure in production only: PostgreSQL HA x3 instead of
            // one server, a Redis cluster of six instead of a master and a replica, MinIO
            // distributed over four nodes instead of one.
            "Cluster/postgres:",
            "StatefulSet/postgres:",
            "Service/postgres:",
            "StatefulSet/redis:",
            "Service/redis:",
            "Service/redis-headless:",
            "StatefulSet/redis-cluster:",
            "Service/redis-cluster:",
            "Service/redis-cluster-headless:",
            "Job/redis-cluster-create-6:",
            "ConfigMap/ml-platform-config-#:/data/ML_REDIS_URL",
            "Deployment/mlflow-server:/spec/template/spec/containers/0/args/2",
            "CronJob/postgres-backup:/spec/jobTemplate/spec/template/spec/containers/0/env/0/value",
            "StatefulSet/minio:/spec/replicas",
            "StatefulSet/minio:/spec/template/spec/containers/0/args/1",
            "StatefulSet/minio:/spec/volumeClaimTemplates/0/spec/resources/requests/storage",
            // GPU nodes for the embeddings in production.
            "Deployment/embedding-service:/spec/template/spec/containers/0/resources/limits/nvidia.com~1gpu",
            "Deployment/embedding-service:/spec/template/spec/nodeSelector",
            "Deployment/embedding-service:/spec/template/spec/tolerations",
            // `:staging` images against release tags, as the guide's `kubectl set image`.
            "Deployment/embedding-service:/spec/template/spec/containers/0/image",
            "Deployment/model-serving:/spec/template/spec/containers/0/image",
            "Deployment/search-service:/spec/template/spec/containers/0/image",
            // The serving HPA's range (3-20 in production).
            "Deployment/model-serving:/spec/replicas",
            "HorizontalPodAutoscaler/model-serving-hpa:/spec/m",
            // Host and issuer.
            "Ingress/ml-platform:",
            "ClusterIssuer/letsencrypt-prod:",
            "ClusterIssuer/letsencrypt-staging:",
            "Namespace/ml-platform-production:/metadata/labels/environment",
            "ConfigMap/ml-platform-config-#:/data/ML_ENV",
            "ConfigMap/ml-platform-config-#:/data/OTEL_RESOURCE_ATTRIBUTES",
            // Backups: 30 days in production, a week in staging, each its own bucket.
            "CronJob/postgres-backup:/spec/jobTemplate/spec/template/spec/containers/0/args/0",
            "CronJob/minio-backup:/spec/jobTemplate/spec/template/spec/containers/0/args/3",
            "PersistentVolumeClaim/postgres-backups:/spec/resources/requests/storage",
            "Deployment/jaeger:/spec/template/spec/containers/0/args/0",
        ],
    );
}
