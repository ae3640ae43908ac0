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
        .block_on(kiln::commands::realize::connect_and_plan(
            &kiln::commands::realize::Target {
                dir: r.s.project(),
                store_dir: r.s.store(),
                kubeconfig: Some(kc),
                parent_namespace: "default".into(),
                ..Default::default()
            },
            &kiln::realize::PlanOptions::default(),
            |_, _| {},
        ))
        .unwrap_or_else(|f| panic!("{:?}", f.report));
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

/// Orphans made on purpose: a Service labeled as a member while the parent lists no Service.
/// `plan --find-orphans` reports exactly it, a plain plan does not, `apply --prune-orphans`
/// deletes it, and unlabeled objects and other sets' objects stay.
#[test]
fn orphans_are_found_and_pruned_and_nothing_else_is_touched() {
    let r = Realm::new("orphans");
    r.rules("\n[rule.cfg]\nkind = \"configmap\"\nname = \"cfg\"\nnamespace = \"${var.ns}\"\nliterals = { a = \"1\" }\nhash_suffix = false\n");
    let applied = r.apply(&[]);
    let id = applied["applyset"].as_str().unwrap().to_owned();
    let service = |name: &str, label: Option<&str>| {
        let labels = label
            .map(|l| format!(",\"labels\":{{\"applyset.kubernetes.io/part-of\":\"{l}\"}}"))
            .unwrap_or_default();
        let file = r.s.dir.path().join(format!("{name}.json"));
        std::fs::write(
            &file,
            format!("{{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{{\"name\":\"{name}\",\"namespace\":\"{ns}\"{labels}}},\"spec\":{{\"ports\":[{{\"port\":80,\"protocol\":\"TCP\"}}]}}}}", ns = r.ns),
        )
        .unwrap();
        kubectl_ok(&["create", "-f", file.to_str().unwrap()]);
    };
    service("orphan", Some(&id));
    service("unlabeled", None);
    service("other-set", Some("applyset-someone-else-v1"));
    let plain = r.plan();
    assert_eq!(count(&plain, "delete"), 0, "{plain:#}");
    let found = r.json("plan", &["--find-orphans"]);
    let orphans: Vec<&Value> = found["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["orphan"] == true)
        .collect();
    assert_eq!(orphans.len(), 1, "{found:#}");
    assert_eq!(orphans[0]["name"], "orphan");
    assert_eq!(orphans[0]["action"], "delete");
    let pruned = r.apply(&["--prune-orphans"]);
    assert_eq!(pruned["applied"]["deleted"], 1, "{pruned:#}");
    assert!(!kubectl(&["get", "service", "orphan", "-n", &r.ns])
        .status
        .success());
    kubectl_ok(&["get", "service", "unlabeled", "-n", &r.ns]);
    kubectl_ok(&["get", "service", "other-set", "-n", &r.ns]);
    kubectl_ok(&["get", "configmap", "cfg", "-n", &r.ns]);
}

/// Two instances of one environment (`--var ns=...`) are two sets; destroying one leaves the
/// other, unlabeled objects and other sets' objects untouched.
#[test]
fn destroy_removes_one_instance_and_leaves_the_other() {
    let r = Realm::new("preview");
    r.rules("\n[rule.cfg]\nkind = \"configmap\"\nname = \"cfg\"\nnamespace = \"${var.ns}\"\ndeps = [\"ns\"]\nliterals = { a = \"1\" }\nhash_suffix = false\n");
    let (one, two) = (format!("{}-one", r.ns), format!("{}-two", r.ns));
    let var_one = format!("ns={one}");
    let var_two = format!("ns={two}");
    let a = r.apply(&["--var", &var_one]);
    let b = r.apply(&["--var", &var_two]);
    assert_ne!(a["applyset"], b["applyset"], "two instances, two sets");
    assert_eq!(count(&a, "create"), 2);
    assert_eq!(
        count(&b, "create"),
        2,
        "the second instance does not see the first: {b:#}"
    );
    kubectl_ok(&["create", "configmap", "bystander", "-n", &two]);
    // The dry run lists and deletes nothing.
    let dry = r.kiln("destroy", &["--var", &var_one, "--dry-run"]);
    assert!(
        dry.status.success(),
        "{}",
        String::from_utf8_lossy(&dry.stderr)
    );
    let listed = String::from_utf8_lossy(&dry.stdout);
    assert!(
        listed.contains(&format!("ConfigMap {one}/cfg"))
            && listed.contains(&format!("Namespace {one}")),
        "{listed}"
    );
    kubectl_ok(&["get", "configmap", "cfg", "-n", &one]);
    // Without a terminal and without --yes, nothing is deleted.
    let refused = r.kiln("destroy", &["--var", &var_one]);
    assert_eq!(refused.status.code(), Some(1));
    kubectl_ok(&["get", "configmap", "cfg", "-n", &one]);
    let out = r.kiln(
        "destroy",
        &["--var", &var_one, "--yes", "--wait", "--timeout", "120"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!kubectl(&["get", "namespace", &one]).status.success());
    kubectl_ok(&["get", "configmap", "cfg", "-n", &two]);
    kubectl_ok(&["get", "configmap", "bystander", "-n", &two]);
    let again = r.json("plan", &["--var", &var_two]);
    assert_eq!(count(&again, "unchanged"), 2, "{again:#}");
    // The destroyed instance has no parent left: a plan would create everything again.
    let gone = r.json("plan", &["--var", &var_one]);
    assert_eq!(count(&gone, "create"), 2, "{gone:#}");
}

/// Every ConfigMap of namespace `ns`: name -> (resourceVersion, data.k).
fn configmaps(ns: &str) -> std::collections::BTreeMap<String, (String, String)> {
    let out = kubectl_ok(&["get", "configmaps", "-n", ns, "-o", "json"]);
    let v: Value = serde_json::from_str(&out).unwrap();
    v["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|o| o["metadata"]["name"].as_str().unwrap().starts_with('c'))
        .map(|o| {
            (
                o["metadata"]["name"].as_str().unwrap().to_owned(),
                (
                    o["metadata"]["resourceVersion"]
                        .as_str()
                        .unwrap()
                        .to_owned(),
                    o["data"]["k"].as_str().unwrap_or_default().to_owned(),
                ),
            )
        })
        .collect()
}

/// A holder paused past its Lease's TTL (SIGSTOP) while writing: a second apply takes the lock
/// over and finishes; the first, resumed, writes nothing more and exits 2.
#[test]
fn a_paused_holder_resumes_to_a_closed_fence_and_writes_nothing() {
    use rustix::process::{kill_process, Pid, Signal};
    let s = Sandbox::new();
    let ns = format!("kt-fenced-{}", std::process::id());
    let n = 600;
    write_version(&s, &ns, n, 0);
    s.build(&[]);
    let mut first = spawn_apply(&s, &["--lock-ttl", "3", "--parallel", "1"]);
    let pid = Pid::from_child(&first);
    let deadline = Instant::now() + Duration::from_secs(120);
    // Stop it in the middle of its writes.
    loop {
        let written = configmaps(&ns).len();
        if written >= 30 {
            break;
        }
        assert!(Instant::now() < deadline, "the first apply never wrote");
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_process(pid, Signal::STOP).unwrap();
    // The second apply writes other values, after the first's TTL runs out.
    let cms: Vec<String> = (0..n)
        .map(|i| format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: c{i}}}\ndata: {{k: \"second-{i}\"}}\n"))
        .collect();
    s.write("config.yaml", &cms.join("---\n"));
    let second = Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .env("KILN_STORE", s.store())
        .env("KILN_NO_PROGRESS", "1")
        .arg("apply")
        .arg(s.project())
        .arg("--kubeconfig")
        .arg(kubeconfig())
        .args(["--yes", "--skip-workload-gates", "--lock-timeout", "60"])
        .output()
        .unwrap();
    assert!(
        second.status.success(),
        "{}",
        String::from_utf8_lossy(&second.stderr)
    );
    let after_second = configmaps(&ns);
    assert_eq!(after_second.len(), n);
    assert!(after_second.values().all(|(_, k)| k.starts_with("second-")));
    // Resume the first: its fence is closed, so it writes nothing and exits 2.
    kill_process(pid, Signal::CONT).unwrap();
    let waited = Instant::now();
    let status = loop {
        if let Some(status) = first.try_wait().unwrap() {
            break status;
        }
        if waited.elapsed() > Duration::from_secs(60) {
            let _ = first.kill();
            panic!("the first apply never ended: it kept writing after it lost the lock");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let out = finished_output(first);
    let stderr = String::from_utf8_lossy(&out);
    assert_eq!(status.code(), Some(2), "{stderr}");
    assert!(
        stderr.contains("no longer holds the set's lock"),
        "{stderr}"
    );
    // The resumed holder sends nothing: every write checks the fence before each poll. One
    // request the HTTP client had already taken over when the process was stopped can still
    // reach the wire (a server-side apply create has no precondition to refuse it): at most
    // one object, never a wave.
    let after_first = configmaps(&ns);
    let changed: Vec<&String> = after_first
        .iter()
        .filter(|(k, v)| after_second.get(*k) != Some(*v))
        .map(|(k, _)| k)
        .collect();
    assert!(
        changed.len() <= 1,
        "the second apply's result is intact: {} objects changed after the first resumed: {changed:?}",
        changed.len()
    );
    assert_eq!(after_first.len(), n);
    let _ = kubectl(&["delete", "namespace", &ns, "--wait=false"]);
}

/// The rest of a finished child's stderr.
fn finished_output(mut c: Child) -> Vec<u8> {
    let mut err = Vec::new();
    if let Some(mut e) = c.stderr.take() {
        let _ = std::io::Read::read_to_end(&mut e, &mut err);
    }
    err
}
