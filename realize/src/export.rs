//! The rendered-manifests export (`kiln export`): the objects apply would send, with the same
//! ownership labels and annotations, as files, for GitOps tools (Argo CD, Flux) and
//! `kubectl apply --server-side -f DIR`.
//!
//! Layout, one file per object: `<namespace | _cluster>/<Kind>.<group | core>/<name>.yaml`,
//! keys sorted, written by the same YAML writer as artifacts, so the same inputs give the same
//! bytes. No cluster is asked: scopes come from the project's own CRDs and a table of the
//! cluster-scoped built-in kinds (other kinds count as namespaced). Secrets whose values kiln
//! resolves from references at apply time are left out (never written), and listed.

use std::collections::BTreeMap;

use crate::desired::{self, Scope};
use crate::error::RealizeError;
use crate::planning::Wanted;
use crate::secrets;

/// Cluster-scoped kinds of the built-in API groups.
const CLUSTER_SCOPED: [&str; 16] = [
    "Namespace",
    "Node",
    "PersistentVolume",
    "ClusterRole.rbac.authorization.k8s.io",
    "ClusterRoleBinding.rbac.authorization.k8s.io",
    "CustomResourceDefinition.apiextensions.k8s.io",
    "StorageClass.storage.k8s.io",
    "CSIDriver.storage.k8s.io",
    "VolumeAttachment.storage.k8s.io",
    "PriorityClass.scheduling.k8s.io",
    "IngressClass.networking.k8s.io",
    "RuntimeClass.node.k8s.io",
    "APIService.apiregistration.k8s.io",
    "MutatingWebhookConfiguration.admissionregistration.k8s.io",
    "ValidatingWebhookConfiguration.admissionregistration.k8s.io",
    "PodSecurityPolicy.policy",
];

/// The export: relative path -> file content, and the secrets left out.
#[derive(Debug, Default)]
pub struct Export {
    /// Files, by relative path.
    pub files: BTreeMap<String, String>,
    /// Objects left out because kiln resolves their values only when applying.
    pub secrets_left_out: Vec<String>,
}

/// The objects `wanted` would apply, as files.
pub fn export(wanted: Wanted, default_namespace: &str) -> Result<Export, RealizeError> {
    let (parent, mut objects, defined_here, declared_refs, lineage) = wanted.into_parts();
    let scope_of = |gk: &str| {
        defined_here
            .get(gk)
            .copied()
            .unwrap_or(if CLUSTER_SCOPED.contains(&gk) {
                Scope::Cluster
            } else {
                Scope::Namespaced
            })
    };
    desired::settle_scopes(&mut objects, scope_of, default_namespace);
    let desired = desired::collect(&lineage, objects, &parent.id())?;
    let mut out = Export::default();
    for d in desired {
        if secrets::references_of(&d.object).is_some_and(|r| declared_refs.contains(r)) {
            out.secrets_left_out.push(d.key.to_string());
            continue;
        }
        // Quantities as the server stores them: `kubectl diff --server-side` then meets the
        // values kiln's field manager owns and reports no conflict.
        let mut object = d.object;
        crate::quantity::canonicalize_quantities(&mut object);
        // The artifact layout, without its `objects/` directory.
        let path = kiln_rules::objects::object_path(&object);
        let path = path
            .as_str()
            .strip_prefix("objects/")
            .unwrap_or(path.as_str());
        out.files
            .insert(path.to_owned(), kiln_rules::objects::to_yaml(&object));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::applyset::Parent;
    use serde_json::json;

    #[test]
    fn objects_become_files_with_their_ownership_and_cluster_kinds_lose_namespaces() {
        let wanted = Wanted::of_rules(
            Parent::for_project("shop", "staging", "default"),
            vec![(
                "app",
                vec![],
                vec![
                    json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "c", "namespace": "shop"}, "data": {"a": "1"}}),
                    json!({"apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole", "metadata": {"name": "r", "namespace": "shop"}}),
                ],
            )],
        );
        let e = export(wanted, "default").unwrap();
        let paths: Vec<&String> = e.files.keys().collect();
        assert_eq!(
            paths,
            [
                "_cluster/ClusterRole.rbac.authorization.k8s.io/r.yaml",
                "shop/ConfigMap.core/c.yaml"
            ]
        );
        let cm = &e.files["shop/ConfigMap.core/c.yaml"];
        assert!(cm.contains("applyset.kubernetes.io/part-of"), "{cm}");
        assert!(cm.contains("kiln.dev/desired-hash"), "{cm}");
        assert!(
            !e.files["_cluster/ClusterRole.rbac.authorization.k8s.io/r.yaml"]
                .contains("namespace:")
        );
    }
}
