//! Artifacts larger than the memory a build may use: an `exec` rule's `$out` is streamed into
//! the store, and read back (`store verify`, `store cat`, `store path`) as a stream.
//!
//! The limit is a memory cgroup (v1 `memory.limit_in_bytes`, or v2 `memory.max`) around the
//! `kiln` process. `ulimit -v` would not do: it limits address space, which allocators and
//! zstd's workers reserve far beyond what they touch. A machine without a writable memory
//! cgroup fails this test (it never skips).

mod common;

use std::path::PathBuf;
use std::process::Command;

use common::Sandbox;

/// The memory limit: well below the artifact's size.
const LIMIT: u64 = 160 << 20;
/// The artifact: 600 MB of YAML-like lines.
const SIZE: u64 = 600_000_000;

/// A fresh memory cgroup limited to `LIMIT`, removed when dropped.
struct Cgroup {
    dir: PathBuf,
}

impl Cgroup {
    fn new() -> Self {
        let name = format!("kiln-test-{}", std::process::id());
        let v1 = PathBuf::from("/sys/fs/cgroup/memory");
        let v2 = PathBuf::from("/sys/fs/cgroup");
        let (dir, limit_file) = if v1.join("memory.limit_in_bytes").is_file() {
            (v1.join(&name), "memory.limit_in_bytes")
        } else if std::fs::read_to_string(v2.join("cgroup.controllers"))
            .is_ok_and(|c| c.split_whitespace().any(|x| x == "memory"))
        {
            (v2.join(&name), "memory.max")
        } else {
            panic!("this test needs a writable memory cgroup (v1 or v2) to limit kiln's memory");
        };
        std::fs::create_dir_all(&dir)
            .unwrap_or_else(|e| panic!("cannot create the cgroup {}: {e}", dir.display()));
        std::fs::write(dir.join(limit_file), LIMIT.to_string()).unwrap();
        Self { dir }
    }

    /// Runs `script` under `sh` inside the cgroup, with `kiln` on PATH and the sandbox's
    /// store.
    fn run(&self, s: &Sandbox, script: &str) -> std::process::Output {
        let kiln = assert_cmd::cargo::cargo_bin("kiln");
        Command::new("sh")
            .arg("-c")
            .arg(format!(
                "echo $$ > {}/cgroup.procs && {script}",
                self.dir.display()
            ))
            .env("KILN", kiln)
            .env("KILN_STORE", s.store())
            .env("KILN_NO_PROGRESS", "1")
            .env("XDG_CONFIG_HOME", s.dir.path().join("config"))
            .env_remove("KILN_LOG")
            .current_dir(s.project())
            .output()
            .unwrap()
    }
}

impl Drop for Cgroup {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.dir);
    }
}

#[test]
fn an_artifact_larger_than_the_memory_limit_is_built_verified_and_read() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        &format!(
            r#"[project]
name = "big"

[rule.big]
kind = "exec"
realize = false
command = ["sh", "-c", "yes 'key: a-value-of-a-yaml-file' | head -c {SIZE} > $out/big.yaml && echo small > $out/small.txt"]
"#
        ),
    );
    let cg = Cgroup::new();
    let ok = |out: &std::process::Output, what: &str| {
        assert!(
            out.status.success(),
            "{what} under a {} MiB limit: {}",
            LIMIT >> 20,
            String::from_utf8_lossy(&out.stderr)
        );
    };
    let built = cg.run(&s, "\"$KILN\" build . --json");
    ok(&built, "build");
    let report: serde_json::Value = serde_json::from_slice(&built.stdout).unwrap();
    assert_eq!(report["summary"]["built"], 1, "{report}");

    ok(&cg.run(&s, "\"$KILN\" store verify"), "verify");
    let cat = cg.run(&s, "\"$KILN\" store cat big --file big.yaml | wc -c");
    ok(&cat, "store cat");
    assert_eq!(
        String::from_utf8_lossy(&cat.stdout).trim(),
        SIZE.to_string()
    );
    let path = cg.run(&s, "\"$KILN\" store path big");
    ok(&path, "store path");
    let view = PathBuf::from(String::from_utf8_lossy(&path.stdout).trim());
    assert_eq!(
        std::fs::metadata(view.join("big.yaml")).unwrap().len(),
        SIZE
    );
    assert_eq!(
        std::fs::read_to_string(view.join("small.txt")).unwrap(),
        "small\n"
    );
    // The limit held: what the cgroup saw at its peak (page cache included) stayed under it.
    let peak = ["memory.max_usage_in_bytes", "memory.peak"]
        .iter()
        .find_map(|f| std::fs::read_to_string(cg.dir.join(f)).ok())
        .and_then(|v| v.trim().parse::<u64>().ok());
    if let Some(peak) = peak {
        assert!(peak <= LIMIT, "peak {peak} above the limit {LIMIT}");
    }
}

const _: () = assert!(SIZE > 3 * LIMIT, "the artifact must not fit in the limit");
