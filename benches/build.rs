//! kiln's build benchmarks. Run with `cargo bench --bench build` (add `-- 1000 10000` to choose
//! sizes; default 1000 10000 100000). Prints a table.
//!
//! For each size: a cold build, the no-op build (median of 5, with peak RSS), a leaf edit and a
//! hub edit whose output stays identical (early cutoff). Then the store's ingest rate for 1 GiB
//! of YAML-like artifacts. `-- generate DIR N` only writes a synthetic project of N rules.

#![allow(clippy::print_stdout)] // a bench prints its table

mod support;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

use kiln_core::{RelPath, Tree};
use serde_json::Value;

fn kiln_build(project: &Path, store: &Path) -> (f64, Value) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_STORE", store)
        .env("KILN_NO_PROGRESS", "1")
        .args(["build", "--json", "-q", "--env", "production"])
        .arg(project)
        .output()
        .expect("run kiln");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (secs, serde_json::from_slice(&out.stdout).expect("json"))
}

/// A build as a user runs it: no JSON report to print.
fn kiln_build_quiet(project: &Path, store: &Path) -> f64 {
    let start = Instant::now();
    let status = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_STORE", store)
        .env("KILN_NO_PROGRESS", "1")
        .args(["build", "-q", "--env", "production"])
        .arg(project)
        .status()
        .expect("run kiln");
    assert!(status.success());
    start.elapsed().as_secs_f64()
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn row(cells: &[String]) {
    let line: Vec<String> = cells.iter().map(|c| format!("{c:>14}")).collect();
    println!("|{}|", line.join("|"));
}

/// Scratch space next to the build output rather than in /tmp: on ext4 without a journal, a
/// directory region with many recently deleted inodes makes every file creation scan them
/// (`recently_deleted`), which measures the disk's history instead of kiln.
fn scratch() -> tempfile::TempDir {
    tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap()
}

fn bench_size(n: usize) {
    let tmp = scratch();
    let project = tmp.path().join("project");
    let store = tmp.path().join("store");
    support::generate(&project, n);

    let (cold, report) = kiln_build(&project, &store);
    let rules = report["summary"]["rules"].as_u64().unwrap();
    let built = report["summary"]["built"].as_u64().unwrap();
    assert_eq!(built, rules);

    let noop = median((0..5).map(|_| kiln_build_quiet(&project, &store)).collect());
    let (_, r) = kiln_build(&project, &store);
    assert_eq!(r["summary"]["built"], 0, "the timed runs were no-ops");
    let rss = r["peak_rss_kib"].as_u64().unwrap_or(0);

    let (leaf, hub) = support::leaf_and_hub(&project);
    let text = std::fs::read_to_string(&leaf).unwrap();
    std::fs::write(&leaf, text.replace("targetPort: 8080", "targetPort: 8081")).unwrap();
    let (leaf_t, r) = kiln_build(&project, &store);
    let leaf_built = r["summary"]["built"].as_u64().unwrap();

    let text = std::fs::read_to_string(&hub).unwrap();
    std::fs::write(&hub, format!("# the namespace of block 0\n{text}")).unwrap();
    let (hub_t, r) = kiln_build(&project, &store);
    let hub_built = r["summary"]["built"].as_u64().unwrap();

    row(&[
        format!("{rules}"),
        format!("{:.0} ms", cold * 1000.0),
        format!("{:.0}/s", rules as f64 / cold),
        format!("{:.1} ms", noop * 1000.0),
        format!("{:.1} MiB", rss as f64 / 1024.0),
        format!("{:.2} KiB", rss as f64 / rules as f64),
        format!("{leaf_built} in {:.0} ms", leaf_t * 1000.0),
        format!("{hub_built} in {:.0} ms", hub_t * 1000.0),
    ]);
}

fn bench_ingest(total_mib: usize) {
    let tmp = scratch();
    let store = kiln_store::LocalStore::open(tmp.path()).unwrap();
    // 1 MiB YAML-like files, each different.
    let mut trees = Vec::new();
    let per_tree = 64;
    for t in 0..total_mib / per_tree {
        let mut tree = Tree::new();
        for f in 0..per_tree {
            let mut text = String::with_capacity(1 << 20);
            let mut i = 0;
            while text.len() < (1 << 20) {
                text.push_str(&format!("- name: item-{t}-{f}-{i}\n  image: registry.example/app:{}\n  replicas: {}\n  labels: {{tier: web, team: t{}}}\n", i % 97, i % 7, i % 13));
                i += 1;
            }
            tree.insert_file(
                RelPath::new(format!("objects/f{f}.yaml")).unwrap(),
                text.into_bytes(),
                false,
            );
        }
        trees.push(tree);
    }
    let bytes: u64 = trees.iter().map(Tree::content_size).sum();
    let start = Instant::now();
    for (i, tree) in trees.iter().enumerate() {
        let drv = kiln_core::Digest::of(format!("drv{i}").as_bytes());
        store.put(&drv, b"{}", tree).unwrap();
    }
    store.sync().unwrap();
    let secs = start.elapsed().as_secs_f64();
    let stored: u64 = walk_size(&tmp.path().join("objects"));
    println!(
        "store ingest: {:.2} GiB in {:.2} s = {:.2} GB/s (hash + tar + zstd + write + one sync), compressed to {:.1}%",
        bytes as f64 / (1u64 << 30) as f64,
        secs,
        bytes as f64 / 1e9 / secs,
        stored as f64 * 100.0 / bytes as f64
    );
}

fn walk_size(p: &Path) -> u64 {
    std::fs::read_dir(p)
        .map(|rd| {
            rd.flatten()
                .map(|e| {
                    if e.path().is_dir() {
                        walk_size(&e.path())
                    } else {
                        e.metadata().map(|m| m.len()).unwrap_or(0)
                    }
                })
                .sum()
        })
        .unwrap_or(0)
}

fn main() {
    let args: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| !a.starts_with("--"))
        .collect();
    // `cargo bench --bench build -- generate DIR N` writes a synthetic project and stops.
    if args.first().map(String::as_str) == Some("generate") {
        let dir = Path::new(args.get(1).expect("generate DIR N"));
        let n = args
            .get(2)
            .and_then(|n| n.parse().ok())
            .expect("generate DIR N");
        support::generate(dir, n);
        return;
    }
    let sizes: Vec<usize> = if args.is_empty() {
        vec![1000, 10_000, 100_000]
    } else {
        args.iter().filter_map(|a| a.parse().ok()).collect()
    };
    println!(
        "kiln build benchmark ({} cores)",
        std::thread::available_parallelism().map_or(1, |n| n.get())
    );
    row(&[
        "rules",
        "cold",
        "cold rate",
        "no-op",
        "no-op RSS",
        "RSS/rule",
        "leaf edit",
        "hub edit",
    ]
    .map(String::from));
    for n in sizes {
        bench_size(n);
    }
    bench_ingest(1024);
}
