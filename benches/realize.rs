//! `kiln plan` / `kiln apply` against kubectl on the real test control plane, on an empty and
//! on a crowded cluster.
//! Run with `cargo bench --bench realize`; uses `KILN_TEST_KUBECONFIG` if set, else starts the
//! test cluster (scripts/test-cluster) for the run. Prints a table per noise level and set size.
//!
//! Two sets: 1,001 objects (500 ConfigMaps, 500 Deployments with 0 replicas, one ClusterRole)
//! and 10 (5 ConfigMaps, 4 Deployments, one ClusterRole). kubectl and kiln each apply the same
//! rendered objects under their own names, in one shared namespace, and take turns per
//! measurement, `KILN_BENCH_ROUNDS` times (default 3; min / median / max are printed).
//!
//! `KILN_BENCH_NOISE=0,30000,100000` (default `0`) measures at each noise level in turn: before
//! a level, the shared namespace is filled up to N unrelated ConfigMaps and N/10 Deployments,
//! the kinds of the sets, unlabeled. That is the worst case for kiln's reads: a LIST of the
//! set's namespace reads every one of them. The noise is kept between runs (only what is
//! missing is loaded); the sets are deleted after each measurement.

#![allow(clippy::print_stdout)] // a bench prints its table

#[path = "support/cluster.rs"]
mod cluster;

use cluster::kubeconfig;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

/// The namespace the noise and both tools' sets share.
const NAMESPACE: &str = "bench-shared";

/// `config_maps` ConfigMaps `{prefix}c{i}` and `deployments` Deployments `{prefix}d{i}` in
/// [`NAMESPACE`], with ConfigMap `changed` holding `value` (the others "1"); with `cluster_role`,
/// a ClusterRole `{prefix}reader` too.
fn objects(
    prefix: &str,
    config_maps: usize,
    deployments: usize,
    changed: Option<(usize, u32)>,
    cluster_role: bool,
) -> String {
    let ns = NAMESPACE;
    let mut docs = Vec::with_capacity(config_maps + deployments + 1);
    if cluster_role {
        docs.push(format!("apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata: {{name: {prefix}reader}}\nrules: [{{apiGroups: [\"\"], resources: [configmaps], verbs: [get]}}]\n"));
    }
    for i in 0..config_maps {
        let v = match changed {
            Some((c, v)) if c == i => v,
            _ => 1,
        };
        docs.push(format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: {prefix}c{i}, namespace: {ns}}}\ndata: {{v: \"{v}\"}}\n"));
    }
    for i in 0..deployments {
        docs.push(format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {prefix}d{i}, namespace: {ns}}}\nspec: {{replicas: 0, selector: {{matchLabels: {{app: {prefix}a{i}}}}}, template: {{metadata: {{labels: {{app: {prefix}a{i}}}}}, spec: {{containers: [{{name: c, image: \"nginx:1\", ports: [{{containerPort: 80, protocol: TCP}}]}}]}}}}}}\n"));
    }
    docs.join("---\n")
}

struct Size {
    tag: &'static str,
    label: &'static str,
    config_maps: usize,
    deployments: usize,
}

/// Writes the set's objects (for kubectl) and, with `project`, the kiln project around them.
fn write_set(dir: &Path, prefix: &str, size: &Size, changed: Option<(usize, u32)>, project: bool) {
    std::fs::create_dir_all(dir).unwrap();
    std::fs::write(
        dir.join("objects.yaml"),
        objects(prefix, size.config_maps, size.deployments, changed, true),
    )
    .unwrap();
    if project {
        std::fs::write(
            dir.join("kiln.toml"),
            format!("[project]\nname = \"{prefix}set\"\n[rule.objects]\nkind = \"manifest\"\nsrcs = [\"objects.yaml\"]\n"),
        )
        .unwrap();
    }
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

    fn must(&self, mut c: Command) {
        let out = c.output().unwrap();
        assert!(
            out.status.success(),
            "{c:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

/// Requests a `kiln plan --json` made.
fn requests(json: &[u8]) -> u64 {
    let v: serde_json::Value = serde_json::from_slice(json).unwrap();
    v["http"]["requests"].as_u64().unwrap_or(0)
}

/// Min, median, max.
fn spread(mut xs: Vec<f64>) -> (f64, f64, f64) {
    xs.sort_by(f64::total_cmp);
    (xs[0], xs[xs.len() / 2], xs[xs.len() - 1])
}

fn secs(s: f64) -> String {
    if s < 1.0 {
        format!("{:.0} ms", s * 1000.0)
    } else {
        format!("{s:.2} s")
    }
}

/// One table row: kubectl's and kiln's times over the rounds.
struct Row {
    name: &'static str,
    kubectl: Vec<f64>,
    kiln: Vec<f64>,
    requests: Option<u64>,
}

impl Row {
    fn new(name: &'static str) -> Self {
        Self {
            name,
            kubectl: Vec::new(),
            kiln: Vec::new(),
            requests: None,
        }
    }

    fn print(&self) {
        let (k0, k, k1) = spread(self.kubectl.clone());
        let (l0, l, l1) = spread(self.kiln.clone());
        let reqs = self.requests.map(|r| r.to_string()).unwrap_or_default();
        println!(
            "| {} | {} / **{}** / {} | {} / **{}** / {} | {:.1}× | {reqs} |",
            self.name,
            secs(k0),
            secs(k),
            secs(k1),
            secs(l0),
            secs(l),
            secs(l1),
            k / l
        );
    }
}

fn measure(
    t: &Tools<'_>,
    scratch: &Path,
    size: &Size,
    (noise, noise_deployments): (usize, usize),
    rounds: u32,
) {
    let stamp = std::process::id();
    let tag = size.tag;
    let kdir = scratch.join(format!("kubectl-{tag}-{noise}"));
    let ldir = scratch.join(format!("kiln-{tag}-{noise}"));
    let (kprefix, lprefix) = (
        format!("kubectl-{tag}-{stamp}-{noise}-"),
        format!("kiln-{tag}-{stamp}-{noise}-"),
    );
    write_set(&kdir, &kprefix, size, None, false);
    write_set(&ldir, &lprefix, size, None, true);
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
    let plan = ["plan", "-q", "--detailed-exitcode"];

    let mut first = Row::new("first apply");
    first
        .kubectl
        .push(time(t.kubectl(&["apply", "--server-side", "-f", f]), &[0]).0);
    first.kiln.push(time(t.kiln(&apply, &ldir), &[0]).0);
    let mut noop_plan = Row::new("no-op diff / plan");
    let mut noop_apply = Row::new("no-op apply");
    let mut one_plan = Row::new("diff / plan of one changed object");
    let mut one_apply = Row::new("apply of one changed object");
    let (_, json) = time(t.kiln(&["plan", "-q", "--json"], &ldir), &[0]);
    noop_plan.requests = Some(requests(&json));
    for round in 0..rounds {
        noop_plan
            .kubectl
            .push(time(t.kubectl(&["diff", "--server-side", "-f", f]), &[0]).0);
        noop_plan.kiln.push(time(t.kiln(&plan, &ldir), &[0]).0);
        noop_apply
            .kubectl
            .push(time(t.kubectl(&["apply", "--server-side", "-f", f]), &[0]).0);
        noop_apply.kiln.push(time(t.kiln(&apply, &ldir), &[0]).0);
        // Each round changes ConfigMap 3 to a value it never held.
        let changed = Some((3, round + 2));
        write_set(&kdir, &kprefix, size, changed, false);
        write_set(&ldir, &lprefix, size, changed, true);
        one_plan
            .kubectl
            .push(time(t.kubectl(&["diff", "--server-side", "-f", f]), &[1]).0);
        one_plan.kiln.push(time(t.kiln(&plan, &ldir), &[2]).0);
        if round == 0 {
            let (_, json) = time(t.kiln(&["plan", "-q", "--json"], &ldir), &[0]);
            one_plan.requests = Some(requests(&json));
        }
        one_apply
            .kubectl
            .push(time(t.kubectl(&["apply", "--server-side", "-f", f]), &[0]).0);
        one_apply.kiln.push(time(t.kiln(&apply, &ldir), &[0]).0);
    }

    println!();
    println!(
        "realize benchmark: {} among {noise} unrelated ConfigMaps and {noise_deployments} Deployments in the set's namespace, {rounds} rounds",
        size.label,
    );
    println!("| operation | kubectl (min / **median** / max) | kiln (min / **median** / max) | ratio (medians) | kiln requests |");
    println!("|---|---:|---:|---:|---:|");
    for row in [&first, &noop_plan, &noop_apply, &one_plan, &one_apply] {
        row.print();
    }

    // The sets go, so the next level's noise is only the noise.
    t.must(t.kubectl(&["delete", "--wait=false", "-f", f]));
    t.must(t.kiln(&["destroy", "-q", "--yes"], &ldir));
}

/// How many objects of `resource` (under the API path `api`) [`NAMESPACE`] holds: one LIST of
/// one item, which tells how many remain.
fn count(t: &Tools<'_>, api: &str, resource: &str) -> usize {
    let path = format!("{api}/namespaces/{NAMESPACE}/{resource}?limit=1");
    let out = t.kubectl(&["get", "--raw", &path]).output().unwrap();
    if !out.status.success() {
        return 0;
    }
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let items = v["items"].as_array().map_or(0, Vec::len);
    items
        + v["metadata"]["remainingItemCount"]
            .as_u64()
            .unwrap_or_default() as usize
}

/// Fills [`NAMESPACE`] up to `n` unrelated ConfigMaps and `n / 10` Deployments, in files of
/// 5,000 objects applied two at a time.
fn load_noise(t: &Tools<'_>, scratch: &Path, n: usize) {
    let (have_cm, have_deploy) = noise_counts(t);
    let chunk = 5000;
    let mut files = Vec::new();
    let mut from = have_cm.min(n);
    while from < n {
        let to = (from + chunk).min(n);
        files.push(noise_file(scratch, "c", from, to));
        from = to;
    }
    let mut from = have_deploy.min(n / 10);
    while from < n / 10 {
        let to = (from + chunk).min(n / 10);
        files.push(noise_file(scratch, "d", from, to));
        from = to;
    }
    for pair in files.chunks(2) {
        let children: Vec<_> = pair
            .iter()
            .map(|file| {
                t.kubectl(&[
                    "apply",
                    "--server-side",
                    "--force-conflicts",
                    "--field-manager",
                    "bench-noise",
                    "-f",
                    file.to_str().unwrap(),
                ])
                .stdout(std::process::Stdio::null())
                .spawn()
                .unwrap()
            })
            .collect();
        for mut c in children {
            assert!(c.wait().unwrap().success(), "loading the noise failed");
        }
    }
}

/// The ConfigMaps and Deployments in [`NAMESPACE`].
fn noise_counts(t: &Tools<'_>) -> (usize, usize) {
    (
        count(t, "/api/v1", "configmaps"),
        count(t, "/apis/apps/v1", "deployments"),
    )
}

/// A file of noise objects `noise-{kind}{from..to}` (ConfigMaps for "c", Deployments for "d").
fn noise_file(scratch: &Path, kind: &str, from: usize, to: usize) -> PathBuf {
    let mut docs = Vec::with_capacity(to - from);
    for i in from..to {
        let one = if kind == "c" {
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: noise-c{i}, namespace: {NAMESPACE}}}\ndata: {{v: \"1\"}}\n")
        } else {
            format!("apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: noise-d{i}, namespace: {NAMESPACE}}}\nspec: {{replicas: 0, selector: {{matchLabels: {{app: noise{i}}}}}, template: {{metadata: {{labels: {{app: noise{i}}}}}, spec: {{containers: [{{name: c, image: \"nginx:1\"}}]}}}}}}\n")
        };
        docs.push(one);
    }
    let file = scratch.join(format!("noise-{kind}{from}.yaml"));
    std::fs::write(&file, docs.join("---\n")).unwrap();
    file
}

fn main() {
    let scratch = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let kc = kubeconfig(scratch.path());
    let t = Tools {
        kc: &kc,
        store: scratch.path().join("store"),
    };
    let levels: Vec<usize> = std::env::var("KILN_BENCH_NOISE")
        .unwrap_or_else(|_| "0".into())
        .split(',')
        .map(|n| {
            n.trim()
                .parse()
                .expect("KILN_BENCH_NOISE: numbers, comma-separated")
        })
        .collect();
    let rounds: u32 = std::env::var("KILN_BENCH_ROUNDS")
        .ok()
        .and_then(|n| n.parse().ok())
        .unwrap_or(3);
    let _ = t
        .kubectl(&["create", "namespace", NAMESPACE])
        .stderr(std::process::Stdio::null())
        .status();
    let sizes = [
        Size {
            tag: "large",
            label: "1,001 objects (500 ConfigMaps, 500 Deployments with 0 replicas, 1 ClusterRole)",
            config_maps: 500,
            deployments: 500,
        },
        Size {
            tag: "small",
            label: "10 objects (5 ConfigMaps, 4 Deployments, 1 ClusterRole)",
            config_maps: 5,
            deployments: 4,
        },
    ];
    for level in levels {
        let start = Instant::now();
        load_noise(&t, scratch.path(), level);
        // What is there: noise of an earlier run may exceed the level.
        let (config_maps, deployments) = noise_counts(&t);
        println!(
            "\nthe set's namespace holds {config_maps} unrelated ConfigMaps and {deployments} Deployments (loading took {:.0} s)",
            start.elapsed().as_secs_f64()
        );
        for size in &sizes {
            measure(&t, scratch.path(), size, (config_maps, deployments), rounds);
        }
    }
}
