//! Synthetic projects for the benchmarks: DAGs shaped like real platforms.
//!
//! Per block of 100 rules: one namespace manifest (a hub every rule of the block depends on),
//! two configmaps (hubs for config), 92 manifests (a Deployment and a Service each, reading a
//! variable and a configmap's hashed name; each also depends on 0-2 earlier manifests of the
//! block), and 5 bundles of 10 manifests each. Every 10th block also depends on the previous
//! block's namespace. Rules are spread over one include file per block.

use std::fmt::Write as _;
use std::path::Path;

/// Writes a project of about `n` rules under `dir`.
pub fn generate(dir: &Path, n: usize) {
    let blocks = n.div_ceil(100);
    std::fs::create_dir_all(dir.join("rules")).unwrap();
    std::fs::create_dir_all(dir.join("k8s")).unwrap();
    std::fs::create_dir_all(dir.join("config")).unwrap();
    std::fs::write(
        dir.join("kiln.toml"),
        "[project]\nname = \"synthetic\"\ninclude = [\"rules/*.toml\"]\n[vars]\ntag = \"1.0.0\"\nreplicas = 2\n[env.production]\nreplicas = 3\n",
    )
    .unwrap();
    for b in 0..blocks {
        let mut t = String::new();
        let ns = format!("b{b}-ns");
        let _ = writeln!(
            t,
            "[rule.{ns}]\nkind = \"manifest\"\nsrcs = [\"k8s/{ns}.yaml\"]"
        );
        if b % 10 == 9 {
            let _ = writeln!(t, "deps = [\"b{}-ns\"]", b - 1);
        }
        std::fs::write(
            dir.join(format!("k8s/{ns}.yaml")),
            format!("apiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{b}\n"),
        )
        .unwrap();
        for c in 0..2 {
            let _ = writeln!(t, "[rule.b{b}-cfg{c}]\nkind = \"configmap\"\nname = \"cfg{c}\"\nnamespace = \"ns-{b}\"\nsrcs = [\"config/b{b}-cfg{c}.env\"]\ndeps = [\"{ns}\"]");
            std::fs::write(
                dir.join(format!("config/b{b}-cfg{c}.env")),
                format!("BLOCK={b}\nINDEX={c}\nLOG_LEVEL=info\n"),
            )
            .unwrap();
        }
        for m in 0..92 {
            let name = format!("b{b}-m{m}");
            let mut deps = vec![ns.clone(), format!("b{b}-cfg{}", m % 2)];
            if m >= 3 && m % 3 != 0 {
                deps.push(format!("b{b}-m{}", m - 1 - (m % 3)));
            }
            if m >= 7 && m % 7 == 0 {
                deps.push(format!("b{b}-m{}", m - 5));
            }
            let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
            let _ = writeln!(t, "[rule.{name}]\nkind = \"manifest\"\nsrcs = [\"k8s/{name}.yaml\"]\nnamespace = \"ns-{b}\"\ndeps = [{}]", deps.join(", "));
            std::fs::write(
                dir.join(format!("k8s/{name}.yaml")),
                manifest(&name, b, m % 2),
            )
            .unwrap();
        }
        for k in 0..5 {
            let members: Vec<String> = (k * 10..k * 10 + 10)
                .map(|m| format!("\"b{b}-m{m}\""))
                .collect();
            let _ = writeln!(
                t,
                "[rule.b{b}-bundle{k}]\nkind = \"bundle\"\nlayout = \"by-rule\"\ndeps = [{}]",
                members.join(", ")
            );
        }
        std::fs::write(dir.join(format!("rules/block{b:05}.toml")), t).unwrap();
    }
}

fn manifest(name: &str, block: usize, cfg: usize) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  labels: {{app: {name}}}\nspec:\n  replicas: ${{var.replicas}}\n  selector:\n    matchLabels: {{app: {name}}}\n  template:\n    metadata:\n      labels: {{app: {name}}}\n    spec:\n      containers:\n        - name: app\n          image: registry.example/{name}:${{var.tag}}\n          envFrom:\n            - configMapRef: {{name: \"${{dep.b{block}-cfg{cfg}.name}}\"}}\n          resources:\n            requests: {{cpu: 100m, memory: 128Mi}}\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  selector: {{app: {name}}}\n  ports:\n    - port: 80\n      targetPort: 8080\n"
    )
}

/// The manifest rule that nothing depends on (a leaf), and the block's namespace (a hub).
pub fn leaf_and_hub(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    (dir.join("k8s/b0-m91.yaml"), dir.join("k8s/b0-ns.yaml"))
}
