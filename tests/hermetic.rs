//! Nothing from outside the project reaches the store (issue 8): sources and includes that
//! resolve outside the project through symlinks are refused with a located error, and nothing
//! is written.

mod common;

use std::os::unix::fs::symlink;

use common::Sandbox;

/// A sandbox whose project holds links leading out to a file with a known secret.
fn with_links_out() -> (Sandbox, tempfile::TempDir) {
    let s = Sandbox::new();
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(
        outside.path().join("shadow"),
        "root:SECRET-HASH:19000::::::\n",
    )
    .unwrap();
    std::fs::write(
        outside.path().join("evil.toml"),
        "[rule.evil]\nkind = \"configmap\"\nname = \"evil\"\nliterals = { a = \"b\" }\n",
    )
    .unwrap();
    s.write("config/app.env", "A=1\n");
    symlink(
        outside.path().join("shadow"),
        s.project().join("config/shadow"),
    )
    .unwrap();
    symlink(outside.path(), s.project().join("host")).unwrap();
    symlink(
        outside.path().join("evil.toml"),
        s.project().join("more.toml"),
    )
    .unwrap();
    (s, outside)
}

fn refused(s: &Sandbox, srcs: &str, include: &str, expect: &[&str]) {
    s.write(
        "kiln.toml",
        &format!(
            "[project]\nname = \"p\"\n{include}\n[rule.cfg]\nkind = \"configmap\"\nname = \"cfg\"\nsrcs = [{srcs}]\n"
        ),
    );
    let out = s.build_fails(&[]);
    assert_eq!(out.status.code(), Some(1), "a user error exits 1");
    let err = String::from_utf8_lossy(&out.stderr);
    for e in expect {
        assert!(err.contains(e), "stderr lacks {e:?}:\n{err}");
    }
    assert!(!err.contains("SECRET-HASH"));
    assert!(!s.store().exists(), "nothing may be written to the store");
}

#[test]
fn a_literal_source_linking_outside_is_refused() {
    let (s, _out) = with_links_out();
    refused(
        &s,
        "\"config/shadow\"",
        "",
        &[
            "kiln.toml:7:",
            "rule `cfg`",
            "`config/shadow` resolves outside the project",
        ],
    );
}

#[test]
fn a_glob_matching_a_link_outside_is_refused_not_skipped() {
    let (s, _out) = with_links_out();
    refused(
        &s,
        "\"config/*\"",
        "",
        &[
            "kiln.toml:7:",
            "rule `cfg`",
            "`config/shadow` resolves outside the project",
        ],
    );
    refused(
        &s,
        "\"**/shadow\"",
        "",
        &["rule `cfg`", "resolves outside the project"],
    );
}

#[test]
fn a_path_through_a_directory_link_outside_is_refused() {
    let (s, _out) = with_links_out();
    refused(
        &s,
        "\"host/shadow\"",
        "",
        &["kiln.toml:7:", "`host` resolves outside the project"],
    );
    refused(
        &s,
        "\"host\"",
        "",
        &["kiln.toml:7:", "`host` resolves outside the project"],
    );
}

#[test]
fn an_include_linking_outside_is_refused() {
    let (s, _out) = with_links_out();
    refused(
        &s,
        "\"config/app.env\"",
        "include = [\"more.toml\"]",
        &["kiln.toml:3:", "`more.toml` resolves outside the project"],
    );
}

#[test]
fn links_that_stay_inside_are_followed_in_literals_and_globs() {
    let s = Sandbox::new();
    s.write("config/app.env", "A=1\n");
    symlink("app.env", s.project().join("config/alias.env")).unwrap();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.lit]\nkind = \"configmap\"\nname = \"lit\"\nsrcs = [\"config/alias.env\"]\n[rule.glob]\nkind = \"configmap\"\nname = \"glob\"\nsrcs = [\"config/*.env\"]\n",
    );
    s.build(&[]);
    let files = |rule: &str| {
        let out = s
            .kiln()
            .args(["store", "path", rule])
            .arg(s.project())
            .output()
            .unwrap();
        let dir = String::from_utf8(out.stdout).unwrap();
        let mut v: Vec<String> = walk(std::path::Path::new(dir.trim()));
        v.sort();
        v
    };
    let lit = files("lit");
    let glob = files("glob");
    assert_eq!(lit.len(), 1, "{lit:?}");
    assert_eq!(glob.len(), 1, "{glob:?}");
    let glob_cm = std::fs::read_to_string(&glob[0]).unwrap();
    assert!(
        glob_cm.contains("alias.env") && glob_cm.contains("app.env"),
        "{glob_cm}"
    );
}

fn walk(dir: &std::path::Path) -> Vec<String> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            if p.file_name().unwrap() != ".kiln" {
                out.extend(walk(&p));
            }
        } else {
            out.push(p.display().to_string());
        }
    }
    out
}
