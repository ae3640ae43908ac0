//! `kiln plan` / `kiln apply` against kubectl on the real test control plane.
//! Run with `cargo bench --bench realize`; uses `KILN_TEST_KUBECONFIG` if set, else starts the
//! test cluster (scripts/test-cluster) for the run. Prints a table.
//!
//! 1,001 objects: one Namespace, 500 ConfigMaps, 500 Deployments with 0 replicas. kubectl and kiln
//! each get their own namespace and the same rendered objects.

#![allow(clippy::print_stdout)] // a bench prints its table

#[path = "support/cluster.rs"]
mod cluster;

use cluster::kubeconfig;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn project(dir: &Path, ns: &str, changed: Option<usize>) {
    std::fs::create_dir_all(dir).unwrap();
    let mut docs = vec![format!(
        "apiVersion: v1\nkind: Namespace\nmetadata: {{name: {ns}}}\n"
    )];
    for i in 0..500 {
        let v = if Some(i) == changed { "2" } else { "1" };
        docs.push(format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}, namespace: {ns}}}\ndata: {{v: \"{v}\"}}\n"));
        docs.push(format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: d{i}, namespace: {ns}}}\nspec: {{replicas: 0, selector: {{matchLabels: {{app: a{i}}}}}, template: {{metadata: {{labels: {{app: a{i}}}}}, spec: {{containers: [{{name: c, image: \"nginx:1\", ports: [{{containerPort: 80, protocol: TCP}}]}}]}}}}}}\n"));
    }
    std::fs::write(dir.join("objects.yaml"), docs.join("---\n")).unwrap();
    std::fs::write(
        dir.join("kiln.toml"),
        format!("[project]\nname = \"{ns}\"\n[rule.objects]\nkind = \"manifest\"\nsrcs = [\"objects.yaml\"]\n"),
    )
    .unwrap();
}

fn time(mut c: Command, ok_codes: &[i32]) -> f64 {
    let start = Instant::now();
    let out = c.output().expect("run");
    let secs = start.elapsed().as_secs_f64();
    let code = out.status.code().unwrap_or(-1);
    assert!(
        ok_codes.contains(&code),
        "{c:?} exited {code}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    secs
}

fn main() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let kc = kubeconfig(scratch.path());
    let stamp = std::process::id();
    let kubectl = |args: &[&str]| {
        let mut c = Command::new("kubectl");
        c.arg("--kubeconfig").arg(&kc).args(args);
        c
    };
    let kiln = |args: &[&str], dir: &Path| {
        let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
        c.env("KILN_STORE", scratch.path().join("store"))
            .env("KILN_NO_PROGRESS", "1");
        c.args(args).arg(dir).arg("--kubeconfig").arg(&kc);
        c
    };

    // kubectl
    let kdir = scratch.path().join("kubectl");
    let kns = format!("bench-kubectl-{stamp}");
    project(&kdir, &kns, None);
    let file = kdir.join("objects.yaml");
    let f = file.to_str().unwrap();
    let k_first = time(kubectl(&["apply", "--server-side", "-f", f]), &[0]);
    let k_diff = time(kubectl(&["diff", "--server-side", "-f", f]), &[0]);
    let k_noop = time(kubectl(&["apply", "--server-side", "-f", f]), &[0]);
    project(&kdir, &kns, Some(7));
    let k_one = time(kubectl(&["apply", "--server-side", "-f", f]), &[0]);

    // kiln
    let ldir = scratch.path().join("kiln");
    let lns = format!("bench-kiln-{stamp}");
    project(&ldir, &lns, None);
    // Build once first, so the timings below are realize time (plus a no-op build).
    let status = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_STORE", scratch.path().join("store"))
        .args(["build", "-q"])
        .arg(&ldir)
        .status()
        .unwrap();
    assert!(status.success());
    let l_first = time(
        kiln(
            &["apply", "-q", "--yes", "--no-wait", "--parallel", "32"],
            &ldir,
        ),
        &[0],
    );
    let l_plan = time(kiln(&["plan", "-q", "--detailed-exitcode"], &ldir), &[0]);
    let l_noop = time(kiln(&["apply", "-q", "--yes", "--no-wait"], &ldir), &[0]);
    project(&ldir, &lns, Some(7));
    let l_one = time(kiln(&["apply", "-q", "--yes", "--no-wait"], &ldir), &[0]);

    println!("realize benchmark: 1,001 objects (1 Namespace, 500 ConfigMaps, 500 Deployments with 0 replicas)");
    println!(
        "| {:<34} | {:>10} | {:>10} | {:>8} |",
        "operation", "kubectl", "kiln", "ratio"
    );
    let row = |name: &str, k: f64, l: f64| {
        println!(
            "| {name:<34} | {:>8.3} s | {:>8.3} s | {:>7.1}x |",
            k,
            l,
            k / l
        )
    };
    row("first apply", k_first, l_first);
    row("no-op diff / plan", k_diff, l_plan);
    row("no-op apply", k_noop, l_noop);
    row("apply of one changed object", k_one, l_one);
}
