//! The store under concurrency, kill -9 and corruption.

mod common;

use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{small_platform, with_status, Sandbox};

/// A project of `n` independent exec rules that each sleep a little.
fn slow_project(s: &Sandbox, n: usize, sleep: &str) {
    let mut toml = String::from("[project]\nname = \"slow\"\n");
    for i in 0..n {
        toml.push_str(&format!(
            "[rule.r{i}]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"sleep {sleep}; echo {i} > $out/n.txt\"]\n"
        ));
    }
    s.write("kiln.toml", &toml);
}

#[test]
fn two_concurrent_builds_build_each_derivation_once() {
    let s = Sandbox::new();
    slow_project(&s, 12, "0.05");
    let spawn = || {
        std::process::Command::new(assert_cmd::cargo::cargo_bin("kiln"))
            .env("KILN_STORE", s.store())
            .env("KILN_NO_PROGRESS", "1")
            .arg("build")
            .arg(s.project())
            .args(["--json", "-j", "4"])
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap()
    };
    let (a, b) = (spawn(), spawn());
    let (a, b) = (a.wait_with_output().unwrap(), b.wait_with_output().unwrap());
    assert!(a.status.success(), "{}", String::from_utf8_lossy(&a.stderr));
    assert!(b.status.success(), "{}", String::from_utf8_lossy(&b.stderr));
    let ra: serde_json::Value = serde_json::from_slice(&a.stdout).unwrap();
    let rb: serde_json::Value = serde_json::from_slice(&b.stdout).unwrap();
    let built = ra["summary"]["built"].as_u64().unwrap() + rb["summary"]["built"].as_u64().unwrap();
    assert_eq!(
        built, 12,
        "every derivation built exactly once across both processes"
    );
    assert_eq!(common::hashes(&ra), common::hashes(&rb));
    s.kiln().args(["store", "verify"]).assert().success();
}

#[test]
fn kill_9_mid_build_leaves_a_clean_store_and_the_next_build_completes() {
    let s = Sandbox::new();
    slow_project(&s, 40, "0.05");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .env("KILN_STORE", s.store())
        .env("KILN_NO_PROGRESS", "1")
        .arg("build")
        .arg(s.project())
        .args(["-j", "2"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    // Wait until some, but not all, artifacts are in the store.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let n = common::store_files(&s.store().join("objects")).len();
        if n >= 3 {
            break;
        }
        assert!(Instant::now() < deadline, "build made no progress");
        std::thread::sleep(Duration::from_millis(5));
    }
    child.kill().unwrap(); // SIGKILL
    child.wait().unwrap();
    let partial = common::store_files(&s.store().join("objects")).len();
    assert!(partial < 40, "killed mid-build ({partial} objects)");
    s.kiln().args(["store", "verify"]).assert().success();
    let r = s.build(&[]);
    assert_eq!(
        r["summary"]["built"].as_u64().unwrap() + r["summary"]["cached"].as_u64().unwrap(),
        40
    );
    assert!(
        r["summary"]["cached"].as_u64().unwrap() >= 3,
        "finished work is reused"
    );
    s.kiln().args(["store", "verify"]).assert().success();
}

#[test]
fn a_flipped_byte_is_detected_by_verify_and_repaired_by_the_next_build() {
    let s = Sandbox::new();
    small_platform(&s);
    let first = s.build(&["--env", "staging"]);
    let api_out = first["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == "api")
        .unwrap()["output"]
        .as_str()
        .unwrap()
        .to_owned();
    let hex = api_out.strip_prefix("blake3:").unwrap();
    let obj = s
        .store()
        .join("objects")
        .join(&hex[..2])
        .join(format!("{hex}.tar.zst"));
    let mut bytes = std::fs::read(&obj).unwrap();
    let i = bytes.len() / 2;
    bytes[i] ^= 0x40;
    std::fs::write(&obj, bytes).unwrap();

    let out = s.kiln().args(["store", "verify"]).output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(hex), "verify names the corrupt object: {err}");

    let again = s.build(&["--env", "staging"]);
    assert_eq!(with_status(&again, "built"), ["api"]);
    assert_eq!(common::hashes(&first), common::hashes(&again));
    s.kiln().args(["store", "verify"]).assert().success();
}

#[test]
fn gc_keeps_rooted_artifacts_and_deletes_the_rest() {
    let s = Sandbox::new();
    small_platform(&s);
    s.build(&["--env", "staging"]);
    s.write("config/app.env", "LOG_LEVEL=debug\n");
    s.build(&["--env", "staging"]);
    let before = common::store_files(&s.store().join("objects")).len();
    let out = s.kiln().args(["store", "gc", "--json"]).output().unwrap();
    assert!(out.status.success());
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        r["objects_deleted"], 3,
        "old config, api and bundle outputs: {r}"
    );
    assert_eq!(
        common::store_files(&s.store().join("objects")).len(),
        before - 3
    );
    let noop = s.build(&["--env", "staging"]);
    assert_eq!(
        noop["summary"]["built"], 0,
        "gc kept everything the root needs"
    );
    s.kiln().args(["store", "verify"]).assert().success();
}

#[test]
fn secret_values_never_enter_the_store() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"sec\"\n[rule.db]\nkind = \"secret\"\nname = \"db\"\nnamespace = \"shop\"\ndata.password = { env = \"KILN_TEST_DB_PASSWORD\" }\n",
    );
    let out = s
        .kiln()
        .env("KILN_TEST_DB_PASSWORD", "hunter2-very-secret")
        .arg("build")
        .arg(s.project())
        .arg("--json")
        .output()
        .unwrap();
    assert!(out.status.success());
    assert!(!String::from_utf8_lossy(&out.stdout).contains("hunter2"));
    for f in common::store_files(&s.store()) {
        let bytes = std::fs::read(&f).unwrap();
        let text = if f.extension().is_some_and(|e| e == "zst") {
            zstd_text(&bytes)
        } else {
            bytes
        };
        assert!(
            !String::from_utf8_lossy(&text).contains("hunter2"),
            "{}",
            f.display()
        );
    }
    let cat = s
        .kiln()
        .args(["store", "cat", "db"])
        .arg(s.project())
        .output()
        .unwrap();
    let text = String::from_utf8(cat.stdout).unwrap();
    assert!(text.contains("kiln.dev/secret-refs"), "{text}");
    assert!(text.contains("KILN_TEST_DB_PASSWORD"));

    // A literal value is refused.
    s.write("kiln.toml", "[project]\nname = \"sec\"\n[rule.db]\nkind = \"secret\"\nname = \"db\"\ndata.password = \"hunter2\"\n");
    let out = s.build_fails(&[]);
    assert!(String::from_utf8_lossy(&out.stderr).contains("never written in rules"));
}

fn zstd_text(bytes: &[u8]) -> Vec<u8> {
    zstd::decode_all(bytes).unwrap_or_else(|_| bytes.to_vec())
}

fn object_of(s: &Sandbox, report: &serde_json::Value, rule: &str) -> std::path::PathBuf {
    let out = report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == rule)
        .unwrap()["output"]
        .as_str()
        .unwrap()
        .to_owned();
    let hex = out.strip_prefix("blake3:").unwrap().to_owned();
    s.store()
        .join("objects")
        .join(&hex[..2])
        .join(format!("{hex}.tar.zst"))
}

/// A root still says `cached` for a rule whose object is gone or damaged: a build that needs
/// the object rebuilds it in the same run, and every later build succeeds too.
#[test]
fn a_missing_or_corrupt_dependency_is_rebuilt_in_the_same_run() {
    for damage in ["delete", "corrupt"] {
        let s = Sandbox::new();
        small_platform(&s);
        let first = s.build(&["--env", "staging"]);
        let obj = object_of(&s, &first, "ns");
        if damage == "delete" {
            std::fs::remove_file(&obj).unwrap();
        } else {
            let mut bytes = std::fs::read(&obj).unwrap();
            let i = bytes.len() / 2;
            bytes[i] ^= 0x40;
            std::fs::write(&obj, bytes).unwrap();
        }
        // The bundle depends on `ns` and must read its tree: it rebuilds when `api` changes.
        s.write(
            "k8s/api.yaml",
            &std::fs::read_to_string(s.project().join("k8s/api.yaml"))
                .unwrap()
                .replace("replicas: ${var.replicas}", "replicas: 7"),
        );
        let healed = s.build(&["--env", "staging"]);
        assert_eq!(healed["summary"]["failed"], 0, "{damage}: {healed:#}");
        let built = with_status(&healed, "built");
        assert!(
            built.contains(&"ns".to_owned()),
            "{damage}: `ns` rebuilt: {built:?}"
        );
        assert!(built.contains(&"all".to_owned()), "{damage}: {built:?}");
        assert!(obj.is_file(), "{damage}: the object is back");
        for _ in 0..2 {
            let again = s.build(&["--env", "staging"]);
            assert_eq!(
                with_status(&again, "built"),
                Vec::<String>::new(),
                "{damage}"
            );
        }
        s.kiln().args(["store", "verify"]).assert().success();
    }
}

/// `verify` checks roots too: an entry naming a missing object is reported (exit 1) and
/// dropped, so the next build looks the rule up again.
#[test]
fn verify_reports_roots_naming_missing_objects() {
    let s = Sandbox::new();
    small_platform(&s);
    let first = s.build(&["--env", "staging"]);
    let obj = object_of(&s, &first, "worker");
    std::fs::remove_file(&obj).unwrap();
    let out = s
        .kiln()
        .args(["store", "verify", "--json"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        report["corrupt"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["reason"].as_str().unwrap().contains("rule `worker`")),
        "{report:#}"
    );
    let again = s.build(&["--env", "staging"]);
    assert_eq!(with_status(&again, "built"), ["worker"]);
    assert!(obj.is_file());
    s.kiln().args(["store", "verify"]).assert().success();
}

/// Eight `kiln build`s of one project on one store build each derivation once between them,
/// in-process kinds included (each waits for a derivation another holds, as Nix's build
/// locks do), in every one of ten runs.
#[test]
fn eight_concurrent_builders_build_each_derivation_once() {
    let s = Sandbox::new();
    let n = 600;
    let mut toml = String::from("[project]\nname = \"many\"\n");
    for i in 0..n {
        toml.push_str(&format!(
            "[rule.r{i}]\nkind = \"configmap\"\nname = \"r{i}\"\nnamespace = \"default\"\nliterals = {{ i = \"{i}\" }}\n"
        ));
        if i > 0 {
            toml.push_str(&format!("deps = [\"r{}\"]\n", i / 2));
        }
    }
    s.write("kiln.toml", &toml);
    for round in 0..10 {
        let store = s.dir.path().join(format!("store-{round}"));
        let builders: Vec<_> = (0..8)
            .map(|_| {
                std::process::Command::new(assert_cmd::cargo::cargo_bin("kiln"))
                    .env("KILN_STORE", &store)
                    .env("KILN_NO_PROGRESS", "1")
                    .arg("build")
                    .arg(s.project())
                    .args(["--json", "-j", "2"])
                    .stdout(Stdio::piped())
                    .stderr(Stdio::piped())
                    .spawn()
                    .unwrap()
            })
            .collect();
        let mut built = 0;
        let mut outputs = Vec::new();
        for b in builders {
            let out = b.wait_with_output().unwrap();
            assert!(
                out.status.success(),
                "{}",
                String::from_utf8_lossy(&out.stderr)
            );
            let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
            built += r["summary"]["built"].as_u64().unwrap();
            outputs.push(common::hashes(&r));
        }
        assert_eq!(
            built, n,
            "round {round}: every derivation built once across the builders"
        );
        assert!(
            outputs.windows(2).all(|w| w[0] == w[1]),
            "round {round}: one answer"
        );
        let _ = std::fs::remove_dir_all(&store);
    }
}
