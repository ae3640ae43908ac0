//! kiln-rules: the built-in rule kinds.
//!
//! Each kind implements [`kiln_core::kind::Kind`]: it type-checks its attributes, names the
//! references it reads from source text, and builds a [`kiln_core::Tree`] from a
//! [`kiln_core::kind::BuildContext`]. Kinds do no I/O outside their scratch directory (except
//! `exec`, which runs a command) and never see the store or a cluster.
//!
//! | kind | builds |
//! |---|---|
//! | `manifest` | Kubernetes objects from YAML/JSON files or inline TOML |
//! | `configmap` | a ConfigMap with a content-hash name suffix |
//! | `secret` | a Secret holding only references to its values |
//! | `template` | text files rendered with minijinja |
//! | `overlay` | dependencies' objects, patched per environment |
//! | `exec` | whatever a declared command writes to `$out` |
//! | `bundle` | the union of dependencies' outputs |

pub mod bundle;
pub mod configmap;
pub mod exec;
pub mod from_deps;
pub mod k8s;
pub mod manifest;
pub mod objects;
pub mod overlay;
pub mod sandbox;
pub mod seccomp;
pub mod secret;
pub mod strategic;
pub mod template;
mod yaml;

use kiln_core::kind::{Kind, KindRegistry};

/// The built-in kinds.
pub struct BuiltinKinds {
    kinds: Vec<Box<dyn Kind>>,
}

impl Default for BuiltinKinds {
    fn default() -> Self {
        Self::new(false)
    }
}

impl BuiltinKinds {
    /// The kinds; `unsandboxed` lets `exec` run commands without the sandbox.
    pub fn new(unsandboxed: bool) -> Self {
        let mut kinds: Vec<Box<dyn Kind>> = vec![
            Box::new(bundle::Bundle),
            Box::new(configmap::ConfigMap),
            Box::new(exec::Exec { unsandboxed }),
            Box::new(manifest::Manifest),
            Box::new(overlay::Overlay),
            Box::new(secret::Secret),
            Box::new(template::Template),
        ];
        kinds.sort_by_key(|k| k.name());
        Self { kinds }
    }
}

impl KindRegistry for BuiltinKinds {
    fn get(&self, name: &str) -> Option<&dyn Kind> {
        self.kinds
            .iter()
            .find(|k| k.name() == name)
            .map(AsRef::as_ref)
    }

    fn names(&self) -> Vec<&'static str> {
        self.kinds.iter().map(|k| k.name()).collect()
    }
}
