//! `kiln export`: the objects apply sends, as files that `kubectl diff --server-side` and
//! GitOps tools see as kiln's.

mod common;

use std::process::Output;

use common::kubeconfig;
use common::realm::Realm;

const RULES: &str = "[rule.config]\nkind = \"configmap\"\nname = \"app\"\nnamespace = \"${var.ns}\"\nsrcs = [\"app.env\"]\ndeps = [\"ns\"]\n[rule.app]\nkind = \"manifest\"\nsrcs = [\"app.yaml\"]\nnamespace = \"${var.ns}\"\ndeps = [\"ns\", \"config\"]\n";

const APP: &str = "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: 0\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec:\n      containers:\n        - name: api\n          image: nginx:1.25\n          resources: {limits: {cpu: 1000m, memory: 1024Mi}, requests: {cpu: \"0.5\", memory: 0.5Gi}}\n          envFrom: [{configMapRef: {name: \"${dep.config.name}\"}}]\n---\napiVersion: v1\nkind: Service\nmetadata:\n  name: api\nspec:\n  selector: {app: api}\n  ports: [{port: 80, targetPort: 8080}]\n";

fn export(r: &Realm, dir: &std::path::Path, extra: &[&str]) -> Output {
    r.s.kiln()
        .arg("export")
        .arg(r.s.project())
        .arg("--out")
        .arg(dir)
        .args(extra)
        .output()
        .unwrap()
}

fn files(dir: &std::path::Path) -> Vec<String> {
    let mut v: Vec<String> = walkdir::WalkDir::new(dir)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .map(|e| e.path().strip_prefix(dir).unwrap().display().to_string())
        .collect();
    v.sort();
    v
}

#[test]
fn the_export_is_what_apply_sends_and_stays_in_step() {
    let r = Realm::new("export");
    r.rules(RULES);
    r.s.write("app.env", "MODE=fast\n");
    r.s.write("app.yaml", APP);
    r.apply(&[]);
    let dir = r.s.dir.path().join("rendered");
    let out = export(&r, &dir, &[]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let listed = files(&dir);
    assert_eq!(listed.len(), 4, "{listed:?}");
    assert!(
        listed.contains(&format!("_cluster/Namespace.core/{}.yaml", r.ns)),
        "{listed:?}"
    );
    assert!(
        listed.contains(&format!("{}/Deployment.apps/api.yaml", r.ns)),
        "{listed:?}"
    );
    // kubectl sees exactly the objects kiln applied: README's command, as written (no
    // --force-conflicts; quantities the server canonicalizes, `1000m` -> `1`, are exported in
    // its form, so kubectl's field manager meets the same values).
    let deployment =
        std::fs::read_to_string(dir.join(format!("{}/Deployment.apps/api.yaml", r.ns))).unwrap();
    assert!(
        deployment.contains("cpu: '1'") || deployment.contains("cpu: \"1\""),
        "{deployment}"
    );
    assert!(
        deployment.contains("memory: 1Gi") && deployment.contains("cpu: 500m"),
        "{deployment}"
    );
    let diff = std::process::Command::new("kubectl")
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["diff", "--server-side", "-R", "-f"])
        .arg(&dir)
        .output()
        .unwrap();
    assert_eq!(
        diff.status.code(),
        Some(0),
        "kubectl diff: {}{}",
        String::from_utf8_lossy(&diff.stdout),
        String::from_utf8_lossy(&diff.stderr)
    );
    // Stable bytes, and --check agrees.
    let before: Vec<Vec<u8>> = listed
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    assert!(export(&r, &dir, &[]).status.success());
    let after: Vec<Vec<u8>> = listed
        .iter()
        .map(|f| std::fs::read(dir.join(f)).unwrap())
        .collect();
    assert_eq!(before, after, "byte-identical across runs");
    assert_eq!(export(&r, &dir, &["--check"]).status.code(), Some(0));
    // A config change: --check fails; the export replaces the hashed ConfigMap's file and
    // removes the old one.
    r.s.write("app.env", "MODE=slow\n");
    let check = export(&r, &dir, &["--check"]);
    assert_eq!(check.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&check.stderr).contains("out of date"));
    assert!(export(&r, &dir, &[]).status.success());
    let now = files(&dir);
    assert_eq!(now.len(), 4, "{now:?}");
    let old_cm: Vec<&String> = listed.iter().filter(|f| f.contains("ConfigMap")).collect();
    assert!(
        !now.contains(old_cm[0]),
        "the old ConfigMap's file is gone: {now:?}"
    );
    assert_eq!(export(&r, &dir, &["--check"]).status.code(), Some(0));
}
