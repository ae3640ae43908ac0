//! The examples build, in every environment, and a second build is a no-op.

mod common;

use std::path::Path;

use common::Sandbox;

fn build_example(dir: &Path, env: &str) {
    let s = Sandbox::new();
    let run = || {
        let out = s
            .kiln()
            .arg("build")
            .arg(dir)
            .args(["--json", "--env", env])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()
    };
    let cold = run();
    assert!(cold["summary"]["built"].as_u64().unwrap() > 5);
    assert_eq!(cold["summary"]["failed"], 0);
    let noop = run();
    assert_eq!(noop["summary"]["built"], 0);
    s.kiln().args(["store", "verify"]).assert().success();
}

#[test]
fn odordiff_builds_for_staging_and_production() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/odordiff-2");
    build_example(&dir, "staging");
    build_example(&dir, "production");
}
