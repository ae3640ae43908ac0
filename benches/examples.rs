//! Per example platform: rules, objects, build time (cold, no-op) and apply time (fresh,
//! no-op) on the real test cluster. Run with `cargo bench --bench examples`; uses
//! `KILN_TEST_KUBECONFIG` if set, else starts a fresh test cluster for the run.

#![allow(clippy::print_stdout)] // a bench prints its table

#[path = "support/cluster.rs"]
mod cluster;

use cluster::kubeconfig;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

const EXAMPLES: &[(&str, &[&str])] = &[
    (
        "odordiff-2",
        &[
            "ODORDIFF_SECRET_KEY",
            "ODORDIFF_JWT_SECRET",
            "ODORDIFF_ENCRYPTION_KEY",
            "ODORDIFF_DATABASE_URL",
            "ODORDIFF_POSTGRES_USER",
            "ODORDIFF_POSTGRES_PASSWORD",
        ],
    ),
    (
        "smell-diffusion",
        &[
            "SMELL_JWT_SECRET",
            "SMELL_API_KEYS",
            "SMELL_POSTGRES_PASSWORD",
        ],
    ),
    (
        "data-pipeline",
        &[
            "DATAPROC_API_KEY_SALT",
            "DATAPROC_POSTGRES_PASSWORD",
            "DATAPROC_CLICKHOUSE_PASSWORD",
            "DATAPROC_MINIO_SECRET_KEY",
        ],
    ),
    (
        "ml-platform",
        &[
            "ML_JWT_SECRET_KEY",
            "ML_VECTOR_DB_DSN",
            "ML_MINIO_ROOT_PASSWORD",
            "ML_POSTGRES_PASSWORD",
        ],
    ),
    (
        "footanalytics",
        &["FOOT_FLAGSMITH_KEY", "FOOT_DATABASE_URL"],
    ),
];

fn main() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let kc = kubeconfig(scratch.path());
    println!("| example | env | rules | objects | build cold | build no-op | apply fresh | apply no-op |");
    println!("|---|---|---|---|---|---|---|---|");
    for (name, secrets) in EXAMPLES {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("examples")
            .join(name);
        let store = scratch.path().join(format!("store-{name}"));
        let run = |args: &[&str]| -> (f64, serde_json::Value) {
            let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
            c.env("KILN_STORE", &store)
                .env("KILN_NO_PROGRESS", "1")
                .args(args)
                .arg(&dir);
            for s in *secrets {
                c.env(s, "bench-value");
            }
            let start = Instant::now();
            let out = c.output().unwrap();
            let t = start.elapsed().as_secs_f64() * 1000.0;
            assert!(
                out.status.success(),
                "{args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            );
            (
                t,
                serde_json::from_slice(&out.stdout).unwrap_or(serde_json::Value::Null),
            )
        };
        let kcs = kc.to_str().unwrap();
        let (cold, report) = run(&["build", "--env", "staging", "--json"]);
        let (noop, _) = run(&["build", "--env", "staging", "--json"]);
        let rules = report["summary"]["rules"].as_u64().unwrap();
        let (fresh, applied) = run(&[
            "apply",
            "--env",
            "staging",
            "--json",
            "--yes",
            "--skip-workload-gates",
            "--kubeconfig",
            kcs,
        ]);
        let objects = applied["changes"].as_array().map_or(0, Vec::len);
        let (again, _) = run(&[
            "apply",
            "--env",
            "staging",
            "--json",
            "--yes",
            "--skip-workload-gates",
            "--kubeconfig",
            kcs,
        ]);
        println!("| {name} | staging | {rules} | {objects} | {cold:.0} ms | {noop:.0} ms | {fresh:.0} ms | {again:.0} ms |");
    }
}
