//! `kiln plan` / `kiln apply` against kubectl on the real test control plane.
//! Run with `cargo bench --bench realize`; uses `KILN_TEST_KUBECONFIG` if set, else starts the
//! test cluster (scripts/test-cluster) for the run. Prints a table per set size.
//!
//! Two sets: 1,001 objects (one Namespace, 500 ConfigMaps, 500 Deployments with 0 replicas) and
//! 10 (one Namespace, 5 ConfigMaps, 4 Deployments). kubectl and kiln each get their own
//! namespace and the same rendered objects, and take turns per measurement.
//!
//! `KILN_BENCH_NOISE=N` first loads the cluster with N unrelated ConfigMaps and N/10
//! Deployments in ten namespaces of other teams (kept between runs: loading is skipped when
//! they are there), the shape of a shared production cluster.

#![allow(clippy::print_stdout)] // a bench prints its table

#[path = "support/cluster.rs"]
mod cluster;

use cluster::kubeconfig;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

fn objects(ns: &str, pairs: usize, changed: Option<usize>, config_maps: usize) -> String {
    let mut docs = vec![format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
    )];
    for i in 0..config_maps {
        let v = if Some(i) == changed { "2" } else { "1" };
        docs.push(format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}, namespace: {ns}}}\ndata: {{v: \"{v}\"}}\n"));
    }
    for i in 0..pairs {
        docs.push(format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d{i}, namespace: {ns}}}\nspec: {{replicas: 0, selector: {{matchLabels: {{app: a{i}}}}}, template: {{metadata: {{labels: {{app: a{i}}}}}, spec: {{containers: [{{name: c, image: \"nginx:1\", ports: [{{containerPort: 80, protocol: TCP}}]}}]}}}}}}\n"));
    }
    docs.join("---\n")
}

struct Size {
    tag: &'static str,
    label: &'static str,
    config_maps: usize,
    deployments: usize,
}

fn project(dir: &Path, ns: &str, size: &Size, changed: Option<usize>) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("objects.yaml"),
        objects(ns, size.deployments, changed, size.config_maps),
    )
    .unwrap();
    std::fs::write(
        dir.join("kiln.toml"),
        format!("[project]\nname = \"{ns}\"\n[rule.objects]\nkind = \"manifest\"\nsrcs = [\"objects.yaml\"]\n"),
    )
    .unwrap();
}

fn time(mut c: Command, ok_codes: &[i32]) -> (f64, Vec<u8>) {
    let start = Instant::now();
    let out = c.output().expect("run");
    let secs = start.elapsed().as_secs_f64();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        ok_codes.contains(&code),
        "{c:?} exited {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    (secs, out.stdout)
}

struct Tools<'a> {
    kc: &'a Path,
    store: PathBuf,
}

impl Tools<'_> {
    fn kubectl(&self, args: &[&str]) -> Command {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig").arg(self.kc).args(args);
        c
    }

    fn kiln(&self, args: &[&str], dir: &Path) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.env("KILN_STORE", &self.store)
            .env("KILN_NO_PROGRESS", "1");
        c.args(args).arg(dir).arg("--kubeconfig").arg(self.kc);
        c
    }
}

/// Requests a `kiln plan --json` made.
fn requests(json: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    v["http"]["requests"].as_u64().unwrap_or(0)
}

fn measure(t: &Tools<'_>, scratch: &Path, size: &Size, stamp: u32, noise: usize) {
    let tag = size.tag;
    let kdir = scratch.join(format!("kubectl-{tag}"));
    let kns = format!("bench-kubectl-{tag}-{stamp}");
    let ldir = scratch.join(format!("kiln-{tag}"));
    let lns = format!("bench-kiln-{tag}-{stamp}");
    project(&kdir, &kns, size, None);
    project(&ldir, &lns, size, None);
    let file = kdir.join("objects.yaml");
    let f = file.to_str().unwrap();
    // Build once first, so the timings below are realize time (plus a no-op build).
    let status = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_STORE", &t.store)
        .args(["build", "-q"])
        .arg(&ldir)
        .status()
        .unwrap();
    assert!(status.success());
    let apply = ["apply", "-q", "--yes", "--no-wait", "--parallel", "32"];

    let (k_first, _) = time(t.kubectl(&["apply", "--server-side", "-f", f]), &[0]);
    let (l_first, _) = time(t.kiln(&apply, &ldir), &[0]);
    let (k_diff, _) = time(t.kubectl(&["diff", "--server-side", "-f", f]), &[0]);
    let (l_plan, _) = time(t.kiln(&["plan", "-q", "--detailed-exitcode"], &ldir), &[0]);
    let (_, json) = time(t.kiln(&["plan", "-q", "--json"], &ldir), &[0]);
    let plan_requests = requests(&json);
    let (k_noop, _) = time(t.kubectl(&["apply", "--server-side", "-f", f]), &[0]);
    let (l_noop, _) = time(t.kiln(&apply, &ldir), &[0]);
    project(&kdir, &kns, size, Some(3));
    project(&ldir, &lns, size, Some(3));
    let (k_diff_one, _) = time(t.kubectl(&["diff", "--server-side", "-f", f]), &[1]);
    let (l_plan_one, _) = time(t.kiln(&["plan", "-q", "--detailed-exitcode"], &ldir), &[2]);
    let (_, json) = time(t.kiln(&["plan", "-q", "--json"], &ldir), &[0]);
    let plan_one_requests = requests(&json);
    let (k_one, _) = time(t.kubectl(&["apply", "--server-side", "-f", f]), &[0]);
    let (l_one, _) = time(t.kiln(&apply, &ldir), &[0]);

    println!();
    println!(
        "realize benchmark: {} on a cluster with {noise} unrelated ConfigMaps",
        size.label
    );
    println!(
        "| {:<34} | {:>10} | {:>10} | {:>8} | {:>13} |",
        "operation", "kubectl", "kiln", "ratio", "kiln requests"
    );
    let row = |name: &str, k: f64, l: f64, reqs: Option<u64>| {
        let reqs = reqs.map(|r| r.to_string()).unwrap_or_default();
        println!(
            "| {name:<34} | {:>8.3} s | {:>8.3} s | {:>7.1}x | {reqs:>13} |",
            k,
            l,
            k / l
        )
    };
    row("first apply", k_first, l_first, None);
    row("no-op diff / plan", k_diff, l_plan, Some(plan_requests));
    row("no-op apply", k_noop, l_noop, None);
    row(
        "diff / plan of one changed object",
        k_diff_one,
        l_plan_one,
        Some(plan_one_requests),
    );
    row("apply of one changed object", k_one, l_one, None);
}

/// Loads `n` unrelated ConfigMaps and `n / 10` Deployments into ten namespaces, unless they
/// are there from an earlier run.
fn load_noise(t: &Tools<'_>, scratch: &Path, n: usize) {
    let per_ns = n / 10;
    for team in 0..10 {
        let ns = format!("bench-noise-{team}");
        let have = t
            .kubectl(&["get", "configmaps", "-n", &ns, "-o", "name"])
            .output()
            .unwrap();
        let count = String::from_utf8_lossy(&have.stdout).lines().count();
        if count >= per_ns {
            continue;
        }
        let file = scratch.join(format!("{ns}.yaml"));
        std::fs::write(&file, objects(&ns, per_ns / 10, None, per_ns)).unwrap();
        let out = t
            .kubectl(&[
                "apply",
                "--server-side",
                "--force-conflicts",
                "-f",
                file.to_str().unwrap(),
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn main() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let kc = kubeconfig(scratch.path());
    let t = Tools {
        kc: &kc,
        store: scratch.path().join("store"),
    };
    let stamp = std::process::id();
    let noise: usize = std::env::var("KILN_BENCH_NOISE")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(0);
    if noise > 0 {
        let start = Instant::now();
        load_noise(&t, scratch.path(), noise);
        println!(
            "loaded {noise} unrelated ConfigMaps in {:.0} s",
            start.elapsed().as_secs_f64()
        );
    }
    let sizes = [
        Size {
            tag: "large",
            label: "1,001 objects (1 Namespace, 500 ConfigMaps, 500 Deployments with 0 replicas)",
            config_maps: 500,
            deployments: 500,
        },
        Size {
            tag: "small",
            label: "10 objects (1 Namespace, 5 ConfigMaps, 4 Deployments)",
            config_maps: 5,
            deployments: 4,
        },
    ];
    for size in &sizes {
        measure(&t, scratch.path(), size, stamp, noise);
    }
}
