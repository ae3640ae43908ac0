//! What scripts rely on: exit codes keep their meaning and data on stdout is exact (issue 8).

mod common;

use common::Sandbox;

#[test]
fn store_cat_pipes_bytes_unchanged() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.bin]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"printf '\\\\000\\\\377\\\\200abc' > $out/bin.dat; printf 'no newline' > $out/t.txt\"]\n",
    );
    let out = s.kiln().arg("build").arg(s.project()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let cat = |file: &str| s.cat_bytes("bin", file, &[]);
    assert_eq!(cat("bin.dat"), b"\x00\xff\x80abc");
    assert_eq!(cat("t.txt"), b"no newline");
}

#[test]
fn usage_errors_exit_1_never_2() {
    let s = Sandbox::new();
    for args in [
        vec!["plan", "--detailed-exitcod"],
        vec!["build", "--no-such-flag"],
        vec!["frobnicate"],
    ] {
        let out = s.kiln().args(&args).output().unwrap();
        assert_eq!(
            out.status.code(),
            Some(1),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Help and version are not errors.
    assert_eq!(
        s.kiln().arg("--version").output().unwrap().status.code(),
        Some(0)
    );
}

/// A store that cannot take a write (here: its object shards are files, as a full or broken
/// disk would refuse) is an infrastructure failure: exit 2, with the per-rule report and valid
/// `--json` naming the rule it was writing.
#[test]
fn a_store_write_failure_exits_2_with_a_full_report() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.cfg]\nkind = \"configmap\"\nname = \"cfg\"\nliterals = { a = \"1\" }\n",
    );
    // Create the store, then break every object shard.
    let first = s.kiln().arg("build").arg(s.project()).output().unwrap();
    assert!(first.status.success());
    for entry in std::fs::read_dir(s.store().join("objects")).unwrap() {
        let p = entry.unwrap().path();
        std::fs::remove_dir_all(&p).unwrap();
        std::fs::write(&p, "not a directory").unwrap();
    }
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.cfg]\nkind = \"configmap\"\nname = \"cfg\"\nliterals = { a = \"2\" }\n",
    );
    let out = s
        .kiln()
        .arg("build")
        .arg(s.project())
        .arg("--json")
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rule = &report["rules"][0];
    assert_eq!(rule["name"], "cfg");
    assert_eq!(rule["status"], "failed");
    assert_eq!(rule["infrastructure"], true);
    assert!(rule["error"].as_str().unwrap().contains("store"), "{rule}");
}

/// A read-only store (here a read-only bind mount, made with bwrap) still serves `store ls`,
/// `store cat` and a no-op build.
#[test]
fn a_read_only_store_still_serves_reads_and_no_op_builds() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.c]\nkind = \"configmap\"\nname = \"c\"\nliterals = { a = \"1\" }\n",
    );
    s.build(&[]);
    let store = s.store();
    let run = |args: &[&str]| {
        std::process::Command::new("bwrap")
            .args([
                "--bind",
                "/",
                "/",
                "--dev",
                "/dev",
                "--proc",
                "/proc",
                "--ro-bind",
            ])
            .arg(&store)
            .arg(&store)
            .arg("env")
            .arg(format!("KILN_STORE={}", store.display()))
            .arg("KILN_NO_PROGRESS=1")
            .arg(assert_cmd::cargo::cargo_bin("kiln"))
            .args(args)
            .output()
            .unwrap()
    };
    let project = s.project().display().to_string();
    for args in [
        vec!["store", "ls"],
        vec!["store", "cat", "c", &project],
        vec!["build", &project],
    ] {
        let out = run(&args);
        assert!(
            out.status.success(),
            "{args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A build that must write fails as a store error (exit 2), not as a user error.
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.c]\nkind = \"configmap\"\nname = \"c\"\nliterals = { a = \"2\" }\n",
    );
    let out = run(&["build", &project]);
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
