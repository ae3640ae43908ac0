//! Commands that only look (`show`, `diff`, `why`, `audit`, `graph`, `plan`, `export --check`,
//! `store ls/cat/path`) change no state: run twice, each gives the same answer, and every file
//! under the store's `roots/` (GC roots, previous roots, object indexes, stat caches,
//! fingerprints) is byte-identical before and after.

mod common;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use common::realm::Realm;
use common::{kubeconfig, Sandbox};

/// Every file under `store/roots`, with its bytes.
fn roots(store: &Path) -> BTreeMap<PathBuf, Vec<u8>> {
    walkdir::WalkDir::new(store.join("roots"))
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| (e.path().to_owned(), std::fs::read(e.path()).unwrap()))
        .collect()
}

/// Runs `kiln ARGS` twice; asserts both runs answer the same (exit code and stdout) and leave
/// `roots/` byte for byte as it was. Gives the exit code and stdout.
fn twice_unchanged(s: &Sandbox, args: &[&str]) -> (Option<i32>, String) {
    let before = roots(&s.store());
    assert!(!before.is_empty(), "a build left roots to compare");
    let run = || {
        let out = s.kiln().args(args).output().unwrap();
        assert!(
            matches!(out.status.code(), Some(0 | 2)),
            "kiln {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    let first = run();
    assert_eq!(roots(&s.store()), before, "kiln {args:?} moved a root");
    let second = run();
    assert_eq!(
        first, second,
        "kiln {args:?} answered differently the second time"
    );
    assert_eq!(roots(&s.store()), before, "kiln {args:?} moved a root");
    first
}

#[test]
fn review_commands_answer_the_same_twice_and_move_no_root() {
    let s = Sandbox::new();
    common::small_platform(&s);
    s.build_ok(&["--env", "staging"]);
    s.build_ok(&["--env", "production"]);
    // An edit not yet built: what `diff --since last` and `why` report.
    s.write("config/app.env", "LOG_LEVEL=debug\n");
    let project = s.project();
    let p = project.to_str().unwrap();

    let (code, out) = twice_unchanged(&s, &["diff", p, "--env", "staging", "--since", "last"]);
    assert_eq!(code, Some(2), "the edit is a difference: {out}");
    assert!(out.contains("rule `config` modified"), "{out}");
    let (_, out) = twice_unchanged(&s, &["why", "api", p, "--env", "staging"]);
    assert!(
        out.contains("config"),
        "why names the changed dependency: {out}"
    );
    twice_unchanged(&s, &["diff", p, "--env", "staging", "--env", "production"]);
    twice_unchanged(&s, &["audit", p, "--env", "staging"]);
    twice_unchanged(&s, &["graph", p, "--env", "staging"]);
    twice_unchanged(&s, &["store", "ls"]);
    twice_unchanged(&s, &["store", "cat", "config", p, "--env", "staging"]);
    twice_unchanged(&s, &["store", "path", "api", p, "--env", "staging"]);
    let export = s.dir.path().join("export");
    let export = export.to_str().unwrap();
    twice_unchanged(&s, &["export", p, "--env", "staging", "--out", export]);
    let (code, _) = twice_unchanged(
        &s,
        &["export", p, "--env", "staging", "--out", export, "--check"],
    );
    assert_eq!(code, Some(0), "the export just written is up to date");

    // The edit is still a difference: nothing above recorded the checkout as the last build.
    let out = s
        .kiln()
        .args(["diff", p, "--env", "staging", "--since", "last"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // A real build does move the root.
    let before = roots(&s.store());
    s.build_ok(&["--env", "staging"]);
    assert_ne!(roots(&s.store()), before, "build records the last build");
    let out = s
        .kiln()
        .args(["diff", p, "--env", "staging", "--since", "last"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn plan_and_show_move_no_root() {
    let r = Realm::new("look-only");
    r.rules("[rule.app]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"app\", namespace = \"${var.ns}\" }, data = { mode = \"fast\" } } ]\n");
    let out = r.kiln("apply", &["--yes", "--skip-workload-gates"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    r.rules("[rule.app]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"app\", namespace = \"${var.ns}\" }, data = { mode = \"slow\" } } ]\n");
    let file = r.s.dir.path().join("plan.kiln");
    let before = roots(&r.s.store());
    for _ in 0..2 {
        let out = r.kiln("plan", &["--out", file.to_str().unwrap()]);
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        assert_eq!(roots(&r.s.store()), before, "plan moved a root");
        let show = r.s.kiln().arg("show").arg(&file).output().unwrap();
        assert!(show.status.success());
        assert_eq!(roots(&r.s.store()), before, "show moved a root");
    }
    // `diff --since last` still compares with the last apply's build.
    let out =
        r.s.kiln()
            .args(["diff"])
            .arg(r.s.project())
            .args(["--since", "last"])
            .output()
            .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    // Apply is a build that counts: it moves the root.
    let out =
        r.s.kiln()
            .arg("apply")
            .arg(&file)
            .arg("--kubeconfig")
            .arg(kubeconfig())
            .args(["--yes", "--skip-workload-gates"])
            .output()
            .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_ne!(roots(&r.s.store()), before, "apply records its build");
}
