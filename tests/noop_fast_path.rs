//! The no-op fast path (issue 13): a build whose inputs did not change answers from the last
//! build's fingerprint, and any change it could miss sends the build down the full path.

mod common;

use std::time::Duration;

use common::{hashes, small_platform, with_status, Sandbox};
use serde_json::Value;

/// The racy window of the fingerprint (2 s) and a margin: after this, stat data alone vouches.
const PAST_RACY_WINDOW: Duration = Duration::from_millis(2300);

/// `kiln build --json` with the engine's debug log; the report and whether the fast path
/// answered.
fn build_traced(s: &Sandbox, extra: &[&str]) -> (Value, bool) {
    build_traced_on(s, extra, &std::env::var("PATH").unwrap_or_default())
}

/// [`build_traced`] with `PATH` set to `path`.
fn build_traced_on(s: &Sandbox, extra: &[&str], path: &str) -> (Value, bool) {
    let out = s
        .kiln()
        .env("PATH", path)
        .env("KILN_LOG", "kiln_engine=debug")
        .arg("build")
        .arg(s.project())
        .arg("--json")
        .args(extra)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "build failed: {stderr}");
    let report = serde_json::from_slice(&out.stdout).unwrap();
    (report, stderr.contains("the fingerprint holds"))
}

/// A report without what legitimately differs between two builds of the same inputs.
fn stable(mut report: Value) -> Value {
    report["duration_ms"] = Value::Null;
    report["peak_rss_kib"] = Value::Null;
    if let Some(rules) = report["rules"].as_array_mut() {
        for r in rules {
            r["duration_ms"] = Value::Null;
        }
    }
    report
}

fn settled_build(s: &Sandbox, extra: &[&str]) -> Value {
    s.build(extra);
    std::thread::sleep(PAST_RACY_WINDOW);
    // Records a fingerprint whose stat data is out of the racy window.
    s.build(extra)
}

#[test]
fn an_unchanged_project_is_answered_from_the_fingerprint_with_the_same_report() {
    let s = Sandbox::new();
    small_platform(&s);
    let full = settled_build(&s, &["--env", "staging"]);
    let (fast, took) = build_traced(&s, &["--env", "staging"]);
    assert!(took, "an unchanged project takes the fast path");
    assert_eq!(stable(full), stable(fast));
    assert!(
        std::fs::read_dir(s.store().join("fingerprints"))
            .unwrap()
            .count()
            >= 1
    );
}

#[test]
fn an_edit_right_after_a_build_is_seen_even_with_the_same_size() {
    let s = Sandbox::new();
    small_platform(&s);
    s.build(&["--env", "staging"]);
    // Same length, at once: stat data may not tell; the racy window makes content decide.
    s.write("config/app.env", "LOG_LEVEL=warn\n");
    let (r, took) = build_traced(&s, &["--env", "staging"]);
    assert!(!took);
    assert_eq!(with_status(&r, "built"), ["all", "api", "config"]);
}

#[test]
fn an_edit_with_its_mtime_put_back_is_seen() {
    let s = Sandbox::new();
    small_platform(&s);
    settled_build(&s, &["--env", "staging"]);
    let path = s.project().join("config/app.env");
    let mtime = std::fs::metadata(&path).unwrap().modified().unwrap();
    std::fs::write(&path, "LOG_LEVEL=warn\n").unwrap();
    std::fs::File::options()
        .write(true)
        .open(&path)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
    let (r, took) = build_traced(&s, &["--env", "staging"]);
    assert!(!took, "the ctime moved");
    assert_eq!(with_status(&r, "built"), ["all", "api", "config"]);
}

#[test]
fn kiln_toml_includes_and_globbed_directories_are_part_of_the_fingerprint() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\ninclude = [\"rules/*.toml\"]\n[rule.cfg]\nkind = \"configmap\"\nname = \"cfg\"\nsrcs = [\"conf/*.env\"]\n",
    );
    s.write(
        "rules/a.toml",
        "[rule.a]\nkind = \"configmap\"\nname = \"a\"\nsrcs = [\"conf/a.env\"]\n",
    );
    s.write("conf/a.env", "A=1\n");
    let first = settled_build(&s, &[]);
    assert!(build_traced(&s, &[]).1);

    // A new file that the source glob matches.
    s.write("conf/b.env", "B=1\n");
    let (r, took) = build_traced(&s, &[]);
    assert!(!took);
    assert_eq!(with_status(&r, "built"), ["cfg"]);
    let out = s
        .kiln()
        .args(["store", "cat", "cfg"])
        .arg(s.project())
        .output()
        .unwrap();
    assert!(String::from_utf8_lossy(&out.stdout).contains("B=1"));

    // A file removed from it: the output of before, already in the store.
    std::fs::remove_file(s.project().join("conf/b.env")).unwrap();
    let (r, took) = build_traced(&s, &[]);
    assert!(!took);
    assert_eq!(with_status(&r, "cached"), ["a", "cfg"]);
    assert_eq!(hashes(&r)["cfg"], hashes(&first)["cfg"]);

    // A new include.
    s.write(
        "rules/b.toml",
        "[rule.b]\nkind = \"configmap\"\nname = \"b\"\nsrcs = [\"conf/a.env\"]\n",
    );
    let (r, took) = build_traced(&s, &[]);
    assert!(!took);
    assert_eq!(with_status(&r, "built"), ["b"]);

    // An edit of an include.
    s.write(
        "rules/b.toml",
        "[rule.b]\nkind = \"configmap\"\nname = \"b2\"\nsrcs = [\"conf/a.env\"]\n",
    );
    let (r, took) = build_traced(&s, &[]);
    assert!(!took);
    assert_eq!(with_status(&r, "built"), ["b"]);

    // kiln.toml itself.
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\ninclude = [\"rules/*.toml\"]\n[rule.cfg]\nkind = \"configmap\"\nname = \"cfg2\"\nsrcs = [\"conf/*.env\"]\n",
    );
    let (r, took) = build_traced(&s, &[]);
    assert!(!took);
    assert_eq!(with_status(&r, "built"), ["cfg"]);
}

#[test]
fn variables_and_environments_have_fingerprints_of_their_own() {
    let s = Sandbox::new();
    small_platform(&s);
    let plain = s.build(&["--env", "staging"]);
    let tagged = s.build(&["--env", "staging", "--var", "tag=2.0.0"]);
    let production = s.build(&["--env", "production"]);
    assert_ne!(hashes(&plain)["api"], hashes(&tagged)["api"]);
    assert_ne!(hashes(&plain)["api"], hashes(&production)["api"]);
    std::thread::sleep(PAST_RACY_WINDOW);
    for (args, expected) in [
        (&["--env", "staging"][..], &plain),
        (&["--env", "staging", "--var", "tag=2.0.0"][..], &tagged),
        (&["--env", "production"][..], &production),
    ] {
        s.build(args);
        let (fast, took) = build_traced(&s, args);
        assert!(took, "{args:?}");
        assert_eq!(hashes(&fast), hashes(expected), "{args:?}");
    }
}

#[test]
fn a_root_removed_or_rewritten_sends_the_build_down_the_full_path() {
    let s = Sandbox::new();
    small_platform(&s);
    let before = settled_build(&s, &["--env", "staging"]);
    let roots: Vec<_> = common::store_files(&s.store())
        .into_iter()
        .filter(|p| p.ends_with("staging.root"))
        .collect();
    assert_eq!(roots.len(), 1, "{roots:?}");
    let root = &roots[0];
    let text = std::fs::read(root).unwrap();

    std::fs::remove_file(root).unwrap();
    let (r, took) = build_traced(&s, &["--env", "staging"]);
    assert!(!took);
    assert_eq!(hashes(&r), hashes(&before));
    assert!(root.is_file(), "the full path wrote the root again");

    // The same bytes written again (as a restore from backup would): stat data changed.
    std::fs::write(root, &text).unwrap();
    std::thread::sleep(PAST_RACY_WINDOW);
    assert!(!build_traced(&s, &["--env", "staging"]).1);
    assert!(build_traced(&s, &["--env", "staging"]).1);
}

#[test]
fn an_archive_deleted_from_the_store_sends_the_build_down_the_full_path() {
    let s = Sandbox::new();
    small_platform(&s);
    let before = settled_build(&s, &["--env", "staging"]);
    let worker = &hashes(&before)["worker"].1;
    let hex = worker.trim_start_matches("blake3:");
    let archive = s
        .store()
        .join("objects")
        .join(&hex[..2])
        .join(format!("{hex}.tar.zst"));
    std::fs::remove_file(&archive).unwrap();
    let (r, took) = build_traced(&s, &["--env", "staging"]);
    assert!(!took);
    assert_eq!(hashes(&before), hashes(&r));
    // The full path answers the same: an archive no rule needed is not rebuilt by a build (as
    // with pulled rules, built without the bytes). Its fingerprint then no longer expects it.
    assert!(build_traced(&s, &["--env", "staging"]).1);
}

#[test]
fn a_changed_tool_or_path_is_seen() {
    let s = Sandbox::new();
    let dir = |name: &str| {
        let d = s.dir.path().join(name);
        std::fs::create_dir_all(&d).unwrap();
        d
    };
    let (bin, earlier) = (dir("bin"), dir("earlier"));
    // The tool `greet` is a copy of a host binary (a script's interpreter is not in the
    // sandbox); which one shows in what it makes of `a/b`.
    let write_tool = |dir: &std::path::Path, host_tool: &str| {
        let from = which(host_tool);
        let to = dir.join("greet");
        let _ = std::fs::remove_file(&to);
        std::fs::copy(from, to).unwrap();
    };
    write_tool(&bin, "echo");
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.x]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"greet a/b > $out/greeting\"]\ntools = [\"greet\"]\n",
    );
    let host_path = std::env::var("PATH").unwrap_or_default();
    let path = format!("{}:{}:{host_path}", earlier.display(), bin.display());
    let build = |path: &str| build_traced_on(&s, &[], path);
    let greeting = |path: &str| {
        let out = s
            .kiln()
            .env("PATH", path)
            .args(["store", "cat", "x", "--file", "greeting"])
            .arg(s.project())
            .output()
            .unwrap();
        String::from_utf8_lossy(&out.stdout).trim_end().to_owned()
    };
    build(&path);
    std::thread::sleep(PAST_RACY_WINDOW);
    build(&path);
    assert!(build(&path).1, "nothing changed");

    // The tool's content.
    write_tool(&bin, "basename");
    let (r, took) = build(&path);
    assert!(!took);
    assert_eq!(with_status(&r, "built"), ["x"]);
    assert_eq!(greeting(&path), "b");

    // A tool of that name put earlier on PATH.
    std::thread::sleep(PAST_RACY_WINDOW);
    build(&path);
    assert!(build(&path).1);
    write_tool(&earlier, "dirname");
    let (r, took) = build(&path);
    assert!(!took);
    assert_eq!(with_status(&r, "built"), ["x"]);
    assert_eq!(greeting(&path), "a");

    // PATH itself.
    let other = format!("{}:{host_path}", bin.display());
    let (r, took) = build(&other);
    assert!(!took);
    assert_eq!(
        with_status(&r, "cached"),
        ["x"],
        "built with this tool before"
    );
    assert_eq!(greeting(&other), "b");
}

/// A host tool's path.
fn which(name: &str) -> std::path::PathBuf {
    std::env::split_paths(&std::env::var_os("PATH").unwrap())
        .map(|d| d.join(name))
        .find(|p| p.is_file())
        .unwrap_or_else(|| panic!("`{name}` is not on PATH"))
}
