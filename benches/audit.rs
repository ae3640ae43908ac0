//! Audit, why and diff on a synthetic project. Run with `cargo bench --bench audit` (add
//! `-- N` for the size, default 10000). Prints a table.
//!
//! - `kiln audit`: every rule rebuilt and compared, in rules/s (median of 3);
//! - `kiln why LEAF` after a leaf edit, before building (median of 5);
//! - `kiln why` of the bundle that holds the edited rule (one level of recursion);
//! - `kiln diff --since last` after the leaf edit (median of 5).

#![allow(clippy::print_stdout)] // a bench prints its table

#[allow(dead_code)] // the build bench uses all of it
mod support;

use std::path::Path;
use std::process::Command;
use std::time::Instant;

fn kiln(store: &Path, args: &[&str], project: &Path) -> (f64, std::process::Output) {
    let start = Instant::now();
    let out = Command::new(env!("CARGO_BIN_EXE_kiln"))
        .env("KILN_STORE", store)
        .env("KILN_NO_PROGRESS", "1")
        .args(args)
        .arg(project)
        .args(["--env", "production"])
        .output()
        .expect("run kiln");
    (start.elapsed().as_secs_f64(), out)
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn row(cells: &[String]) {
    let line: Vec<String> = cells.iter().map(|c| format!("{c:>22}")).collect();
    println!("|{}|", line.join("|"));
}

fn main() {
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let project = tmp.path().join("project");
    let store = tmp.path().join("store");
    support::generate(&project, n);
    let (cold, out) = kiln(&store, &["build", "-q"], &project);
    assert!(out.status.success());

    let audits: Vec<f64> = (0..3)
        .map(|_| {
            let (t, out) = kiln(&store, &["audit", "--json"], &project);
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            assert_eq!(report["summary"]["checked"], report["summary"]["identical"]);
            assert_eq!(
                report["summary"]["checked"].as_u64().unwrap() as usize,
                report["rules"].as_array().unwrap().len()
            );
            t
        })
        .collect();
    let audit = median(audits);

    // b0-m45: only its bundle (b0-bundle4) depends on it.
    let leaf = project.join("k8s/b0-m45.yaml");
    let text = std::fs::read_to_string(&leaf).unwrap();
    std::fs::write(&leaf, text.replace("targetPort: 8080", "targetPort: 8081")).unwrap();
    let why_leaf = median(
        (0..5)
            .map(|_| {
                let (t, out) = kiln(&store, &["why", "b0-m45"], &project);
                assert!(String::from_utf8_lossy(&out.stdout).contains("would rebuild"));
                t
            })
            .collect(),
    );
    let why_bundle = median(
        (0..5)
            .map(|_| kiln(&store, &["why", "b0-bundle4"], &project).0)
            .collect(),
    );
    let diff = median(
        (0..5)
            .map(|_| {
                let (t, out) = kiln(&store, &["diff", "--since", "last"], &project);
                assert_eq!(out.status.code(), Some(2));
                // Put the last build back, so every run diffs the same edit.
                std::fs::write(&leaf, &text).unwrap();
                kiln(&store, &["build", "-q"], &project);
                std::fs::write(&leaf, text.replace("targetPort: 8080", "targetPort: 8081"))
                    .unwrap();
                t
            })
            .collect(),
    );

    println!("audit, why and diff, {n} rules (cold build {cold:.2} s)");
    row(&["operation".into(), "wall".into(), "rate".into()]);
    row(&vec!["---".to_owned(); 3]);
    row(&[
        "audit (all rules)".into(),
        format!("{audit:.2} s"),
        format!("{:.0} rules/s", n as f64 / audit),
    ]);
    row(&[
        "why (edited leaf)".into(),
        format!("{:.0} ms", why_leaf * 1000.0),
        "-".into(),
    ]);
    row(&[
        "why (its bundle)".into(),
        format!("{:.0} ms", why_bundle * 1000.0),
        "-".into(),
    ]);
    row(&[
        "diff --since last".into(),
        format!("{:.0} ms", diff * 1000.0),
        "-".into(),
    ]);
}
