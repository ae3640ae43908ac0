//! Many hands on one cluster (issue 15), on the real test control plane: concurrent applies of
//! one set are serialized by its Lease, a killed holder's lock expires, and a lost update of the
//! parent is detected.

mod common;

use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::realm::{kubectl, kubectl_ok, Realm};
use common::{count, kubeconfig, Sandbox};
use serde_json::Value;

/// `n` ConfigMaps and, when `services > 0`, that many Services, in namespace `ns`.
fn version(ns: &str, services: usize) -> String {
    let mut toml = format!(
        "[project]\nname = \"{ns}\"\n[vars]\nns = \"{ns}\"\n{}\n[rule.config]\nkind = \"manifest\"\nsrcs = [\"config.yaml\"]\ndeps = [\"ns\"]\nnamespace = \"{ns}\"\n",
        common::realm::NS_RULE
    );
    if services > 0 {
        toml.push_str(&format!(
            "[rule.services]\nkind = \"manifest\"\nsrcs = [\"services.yaml\"]\ndeps = [\"ns\"]\nnamespace = \"{ns}\"\n"
        ));
    }
    toml
}

fn write_version(s: &Sandbox, ns: &str, configmaps: usize, services: usize) {
    s.write("kiln.toml", &version(ns, services));
    let cms: Vec<String> = (0..configmaps)
        .map(|i| {
            format!(
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\ndata: {{k: \"{i}\"}}\n"
            )
        })
        .collect();
    s.write("config.yaml", &cms.join("---\n"));
    let svcs: Vec<String> = (0..services)
        .map(|i| format!("apiVersion: v1\nkind: Service\nmetadata: {{name: s{i}}}\nspec: {{selector: {{app: x}}, ports: [{{port: 80}}]}}\n"))
        .collect();
    s.write("services.yaml", &svcs.join("---\n"));
}

fn spawn_apply(s: &Sandbox, extra: &[&str]) -> Child {
    Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .env("KILN_STORE", s.store())
        .env("KILN_NO_PROGRESS", "1")
        .arg("apply")
        .arg(s.project())
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["--yes", "--skip-workload-gates"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap()
}

fn finished(c: Child) -> Output {
    let out = c.wait_with_output().unwrap();
    assert!(
        out.status.success(),
        "apply failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    out
}

fn labeled(kind: &str, ns: &str, set_id: &str) -> usize {
    kubectl_ok(&[
        "get",
        kind,
        "-n",
        ns,
        "-l",
        &format!("applyset.kubernetes.io/part-of={set_id}"),
        "-o",
        "name",
    ])
    .lines()
    .count()
}

/// Two versions of one project applied at once, 20 rounds with random offsets: version B
/// (no Services) settles, and not one Service of version A is left behind. Without the lock,
/// a narrowing run hid other runs' Services from every later plan.
#[test]
fn concurrent_applies_are_serialized_and_leave_no_orphans() {
    let ns = format!("kt-race-{}", std::process::id());
    let (a, b) = (Sandbox::new(), Sandbox::new());
    write_version(&a, &ns, 60, 30);
    write_version(&b, &ns, 60, 0);
    // Build both once so the rounds race on the cluster, not on the first build.
    a.build(&[]);
    b.build(&[]);
    let mut seed: u64 = u64::from(std::process::id()) | 1;
    let mut random_ms = || {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        seed % 400
    };
    let mut waited = 0;
    let mut set_id = String::new();
    for round in 0..20 {
        let (first, second, offset) = if round % 2 == 0 {
            (&a, &b, random_ms())
        } else {
            (&b, &a, random_ms())
        };
        let one = spawn_apply(first, &[]);
        std::thread::sleep(Duration::from_millis(offset));
        let two = spawn_apply(second, &[]);
        for out in [finished(one), finished(two)] {
            if String::from_utf8_lossy(&out.stderr).contains("waiting for the set's lock") {
                waited += 1;
            }
        }
        // Settle on B, then nothing of A's Services may remain.
        let settle = finished(spawn_apply(&b, &["--json"]));
        let report: Value = serde_json::from_slice(&settle.stdout).unwrap();
        set_id = report["applyset"].as_str().unwrap().to_owned();
        assert_eq!(
            labeled("services", &ns, &set_id),
            0,
            "round {round}: orphaned Services"
        );
        assert_eq!(labeled("configmaps", &ns, &set_id), 60, "round {round}");
    }
    assert!(waited > 0, "no apply ever waited for the lock");
    // The lock is released after each apply.
    let leases = kubectl_ok(&["get", "leases", "-n", "default", "-o", "name"]);
    assert!(!leases.contains(&format!("kiln-{ns}")), "{leases}");
    assert!(!set_id.is_empty());
}

/// An apply killed with kill -9 while holding the lock: the next apply waits, then takes the
/// expired lock after the TTL, and the state converges.
#[test]
fn a_killed_holders_lock_expires_after_its_ttl() {
    let r = Realm::new("killed");
    r.rules(
        r#"
[rule.app]
kind = "manifest"
srcs = ["app.yaml"]
deps = ["ns"]
namespace = "${var.ns}"
"#,
    );
    // One replica on a control plane without nodes: its rollout gate never passes.
    r.s.write(
        "app.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: a, image: nginx}]}\n",
    );
    r.s.build(&[]);
    let mut holder = Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .env("KILN_STORE", r.s.store())
        .env("KILN_NO_PROGRESS", "1")
        .arg("apply")
        .arg(r.s.project())
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["--yes", "--timeout", "120", "--lock-ttl", "3"])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let lease = format!("kiln-{}--", r.ns);
    let lease = lease.trim_end_matches('-');
    let deadline = Instant::now() + Duration::from_secs(60);
    // Wait until the holder wrote the Deployment (it is then waiting on its gate).
    loop {
        let got = kubectl(&["get", "deployment", "app", "-n", &r.ns]);
        if got.status.success() {
            break;
        }
        assert!(Instant::now() < deadline, "the first apply never wrote");
        std::thread::sleep(Duration::from_millis(100));
    }
    kubectl_ok(&["get", "lease", lease, "-n", "default"]);
    holder.kill().unwrap();
    holder.wait().unwrap();
    let start = Instant::now();
    let out = r.kiln(
        "apply",
        &["--yes", "--skip-workload-gates", "--lock-timeout", "60"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("waiting for the set's lock"), "{err}");
    assert!(err.contains("pid"), "the holder is named: {err}");
    assert!(
        start.elapsed() >= Duration::from_secs(1),
        "it waited for the TTL"
    );
    assert_eq!(count(&r.plan(), "unchanged"), 2);
    assert!(!kubectl(&["get", "lease", lease, "-n", "default"])
        .status
        .success());
}

/// A second apply that cannot get the lock in time fails with a clear message, naming the
/// holder.
#[test]
fn a_lock_timeout_names_the_holder() {
    let r = Realm::new("locktimeout");
    r.rules("");
    let lease = format!("kiln-{}-", r.ns);
    let lease = lease.trim_end_matches('-');
    let manifest = format!(
        "{{\"apiVersion\":\"coordination.k8s.io/v1\",\"kind\":\"Lease\",\"metadata\":{{\"name\":\"{lease}\",\"namespace\":\"default\"}},\"spec\":{{\"holderIdentity\":\"kiln someone@elsewhere pid 1\",\"leaseDurationSeconds\":3600,\"renewTime\":\"{now}\",\"acquireTime\":\"{now}\"}}}}",
        now = utc_now_micro()
    );
    let file = r.s.dir.path().join("lease.json");
    std::fs::write(&file, manifest).unwrap();
    kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    let out = r.kiln("apply", &["--yes", "--lock-timeout", "2"]);
    kubectl_ok(&["delete", "lease", lease, "-n", "default"]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("kiln someone@elsewhere pid 1"), "{err}");
    assert!(err.contains("locked"), "{err}");
}

fn utc_now_micro() -> String {
    let out = Command::new("date")
        .args(["-u", "+%Y-%m-%dT%H:%M:%S.000000Z"])
        .output()
        .unwrap();
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// Without the lock (a plan made, then the parent changed by someone else), the parent update
/// is conditional on the resourceVersion read: the lost update is detected, not written over.
#[test]
fn a_parent_update_with_a_stale_resource_version_is_detected() {
    let r = Realm::new("stale");
    r.rules("");
    r.apply(&[]);
    // Add a rule of a new kind, so the apply must widen the parent.
    r.rules("\n[rule.sa]\nkind = \"manifest\"\ndeps = [\"ns\"]\nnamespace = \"${var.ns}\"\nobjects = [ { apiVersion = \"v1\", kind = \"ServiceAccount\", metadata = { name = \"sa\" } } ]\n");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let kc = kubeconfig();
    let realized = rt
        .block_on(kiln::realize::connect_and_plan(
            &r.s.project(),
            &r.s.store(),
            None,
            Some(&kc),
            None,
            "default",
            None,
            |_, _| {},
        ))
        .unwrap();
    let parent = format!("kiln-{}--", r.ns);
    let parent = parent.trim_end_matches('-');
    kubectl_ok(&[
        "annotate",
        "secret",
        parent,
        "-n",
        "default",
        "someone=else",
    ]);
    let options = kiln::realize::ApplyOptions {
        force_conflicts: false,
        wait: false,
        skip_workload_gates: true,
        timeout: Duration::from_secs(10),
        yes: true,
        parallel: 4,
    };
    let err = rt
        .block_on(kiln::realize::apply(&realized, &options, |_| true))
        .expect_err("a stale parent update must fail");
    assert!(
        matches!(err, kiln::realize::RealizeError::ParentChanged { .. }),
        "{err:?}"
    );
    assert!(err.to_string().contains("changed while this apply ran"));
}
