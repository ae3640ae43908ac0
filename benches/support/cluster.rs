//! The test cluster for benchmarks that talk to Kubernetes.

use std::path::{Path, PathBuf};
use std::process::Command;

/// `KILN_TEST_KUBECONFIG` if set, else a fresh test cluster under `scratch` that stops when this
/// process exits.
pub fn kubeconfig(scratch: &Path) -> PathBuf {
    if let Some(p) = std::env::var_os("KILN_TEST_KUBECONFIG") {
        return PathBuf::from(p);
    }
    let dir = scratch.join("cluster");
    let status = Command::new(Path::new(env!("CARGO_MANIFEST_DIR")).join("scripts/test-cluster"))
        .arg("start")
        .arg(&dir)
        .args(["--watch-pid", &std::process::id().to_string()])
        .status()
        .expect("start the test cluster");
    assert!(status.success());
    dir.join("kubeconfig")
}
