//! What a cluster command acts on: the project, the store and the cluster ([`Target`]), and the
//! plan made there ([`Realized`]). Shared by plan/apply/destroy, saved plans and export.

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

use kiln_realize::KubeCluster;
use serde_json::Value;

use crate::commands::cache::Caches;

/// A plan on the real cluster.
pub type Realized = kiln_realize::Realized<KubeCluster>;

/// Where to plan: the project, the store and the cluster.
#[derive(Debug, Clone, Default)]
pub struct Target {
    /// The project directory.
    pub dir: PathBuf,
    /// The store.
    pub store_dir: PathBuf,
    /// The environment.
    pub env: Option<String>,
    /// `--kubeconfig`.
    pub kubeconfig: Option<PathBuf>,
    /// `--context`.
    pub context: Option<String>,
    /// Namespace of the ApplySet parent.
    pub parent_namespace: String,
    /// `--var NAME=VALUE` overrides.
    pub vars: BTreeMap<String, Value>,
    /// `exec` without the sandbox.
    pub unsandboxed: bool,
    /// Remote caches the build pulls from.
    pub caches: Caches,
    /// `--rule`: only these rules (and their dependencies; `NAME+` adds dependents).
    pub rules: Vec<String>,
    /// `--request-timeout`: the longest a cluster request may take.
    pub request_timeout: Option<Duration>,
    /// The build becomes the environment's last build (moves its GC root): only `apply`.
    /// Otherwise it only looks (`plan`, `export`): see [`crate::build::BuildOptions::look_only`].
    pub records_build: bool,
}
