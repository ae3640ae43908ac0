//! Health gates on a real node (scripts/test-node): pods run, probes pass or fail, images are
//! there or not, and `kiln apply` waits for what it applied, or fails fast naming why.
//! Images are the local test images (kiln.local/busybox:1 and :2), never pulled.

mod common;

use std::time::{Duration, Instant};

use common::realm::{kubectl, kubectl_ok, Realm};
use serde_json::Value;

/// Asserts that the test cluster has a Ready node: these tests need pods to run.
fn has_a_node() {
    let ready = kubectl_ok(&[
        "get",
        "nodes",
        "-o",
        "jsonpath={.items[*].status.conditions[?(@.type==\"Ready\")].status}",
    ]);
    assert!(
        ready.split_whitespace().any(|s| s == "True"),
        "the test cluster has no Ready node: start it with `scripts/test-cluster start DIR --node` (scripts/test does)"
    );
}

/// A Deployment rule of `replicas` busybox pods serving HTTP on 8080 with a readiness probe
/// on `probe_port`, depending on the rules `deps` (a TOML list's items).
fn web(
    name: &str,
    image: &str,
    replicas: u32,
    command: &str,
    probe_port: u16,
    deps: &str,
) -> String {
    format!(
        r#"
[rule.{name}]
kind = "manifest"
deps = [{deps}]
objects = [ {{ apiVersion = "apps/v1", kind = "Deployment", metadata = {{ name = "{name}", namespace = "${{var.ns}}" }}, spec = {{ replicas = {replicas}, progressDeadlineSeconds = 12, selector = {{ matchLabels = {{ app = "{name}" }} }}, template = {{ metadata = {{ labels = {{ app = "{name}" }} }}, spec = {{ terminationGracePeriodSeconds = 1, containers = [ {{ name = "app", image = "{image}", imagePullPolicy = "Never", command = {command}, readinessProbe = {{ periodSeconds = 1, httpGet = {{ path = "/", port = {probe_port} }} }} }} ] }} }} }} }} ]
"#
    )
}

/// The namespace rule, as a dependency list.
const NS: &str = r#""ns""#;

const HTTPD: &str = r#"["httpd", "-f", "-p", "8080", "-h", "/www"]"#;

/// A rule depending on `dep`, making one ConfigMap: the next wave.
fn after(dep: &str) -> String {
    format!(
        r#"
[rule.after]
kind = "manifest"
deps = ["{dep}"]
objects = [ {{ apiVersion = "v1", kind = "ConfigMap", metadata = {{ name = "after", namespace = "${{var.ns}}" }}, data = {{ k = "v" }} }} ]
"#
    )
}

fn apply_with_gates(r: &Realm) -> (std::process::Output, Duration) {
    let started = Instant::now();
    let out = r.kiln("apply", &["--yes", "--timeout", "120"]);
    (out, started.elapsed())
}

fn text(out: &std::process::Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn deployment(r: &Realm, name: &str) -> Value {
    serde_json::from_str(&kubectl_ok(&[
        "get",
        "deployment",
        name,
        "-n",
        &r.ns,
        "-o",
        "json",
    ]))
    .unwrap()
}

fn exists(r: &Realm, kind: &str, name: &str) -> bool {
    kubectl(&["get", kind, name, "-n", &r.ns]).status.success()
}

fn cleanup(r: &Realm) {
    let _ = kubectl(&["delete", "namespace", &r.ns, "--wait=false"]);
}

#[test]
fn apply_returns_once_a_deployment_is_available_and_waits_for_a_new_image_to_roll_out() {
    has_a_node();
    let r = Realm::new("node-rollout");
    r.rules(&web("web", "kiln.local/busybox:1", 2, HTTPD, 8080, NS));
    let (out, _) = apply_with_gates(&r);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Available when apply returned, not later.
    let d = deployment(&r, "web");
    assert_eq!(d["status"]["availableReplicas"], 2, "{d:#}");
    // Progress lines as it changes, while the first pods start.
    let waiting = format!("waiting   Deployment.apps {}/web: ", r.ns);
    assert!(
        text(&out).contains(&format!("{waiting}0/2 updated"))
            || text(&out).contains(&format!("{waiting}waiting for the controller")),
        "progress is reported: {}",
        text(&out)
    );

    // A new image: apply waits for the new ReplicaSet to take over.
    r.rules(&web("web", "kiln.local/busybox:2", 2, HTTPD, 8080, NS));
    let (out, _) = apply_with_gates(&r);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    // Progress while the new ReplicaSet takes over: fewer than 2 pods updated at first.
    let all = text(&out);
    let rolling: Vec<&str> = all.lines().filter(|l| l.starts_with(&waiting)).collect();
    assert!(
        rolling
            .iter()
            .any(|l| l.contains(": 0/2 updated") || l.contains(": 1/2 updated")),
        "progress of the new ReplicaSet is reported: {all}"
    );
    let d = deployment(&r, "web");
    assert_eq!(d["status"]["updatedReplicas"], 2, "{d:#}");
    assert_eq!(d["status"]["availableReplicas"], 2, "{d:#}");
    assert_eq!(
        d["status"]["replicas"], 2,
        "the old ReplicaSet is scaled down: {d:#}"
    );
    // The pods that stay (not those terminating) all run the new image.
    let pods: Value = serde_json::from_str(&kubectl_ok(&[
        "get", "pods", "-n", &r.ns, "-l", "app=web", "-o", "json",
    ]))
    .unwrap();
    let staying: Vec<&str> = pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| p["spec"]["containers"][0]["image"].as_str().unwrap())
        .collect();
    assert_eq!(staying, ["kiln.local/busybox:2"; 2], "{pods:#}");
    r.assert_converged();
    cleanup(&r);
}

/// Each rollout that can never become ready fails the apply (exit 2) well within the
/// progress deadline, naming the object, the reason and the rule; the next wave is not applied.
#[test]
fn a_rollout_that_can_never_become_ready_fails_fast_naming_the_reason() {
    has_a_node();
    let cases = [
        (
            "crash",
            web(
                "web",
                "kiln.local/busybox:1",
                1,
                r#"["sh", "-c", "echo starting; echo 'fatal: no DATABASE_URL'; exit 3"]"#,
                8080,
                NS,
            ),
            "CrashLoopBackOff",
            Some("fatal: no DATABASE_URL"),
        ),
        (
            "noimage",
            web("web", "kiln.local/absent:1", 1, HTTPD, 8080, NS),
            "ErrImageNeverPull",
            None,
        ),
        (
            "unready",
            web("web", "kiln.local/busybox:1", 1, HTTPD, 9999, NS),
            "ProgressDeadlineExceeded",
            None,
        ),
    ];
    let realms: Vec<(Realm, &str, Option<&str>)> = cases
        .into_iter()
        .map(|(name, rule, reason, log)| {
            let r = Realm::new(&format!("node-{name}"));
            r.rules(&format!("{rule}{}", after("web")));
            (r, reason, log)
        })
        .collect();
    std::thread::scope(|scope| {
        for (r, reason, log) in &realms {
            scope.spawn(move || {
                let (out, took) = apply_with_gates(r);
                let all = text(&out);
                assert_eq!(out.status.code(), Some(2), "{reason}: {all}");
                assert!(all.contains(reason), "{reason}: {all}");
                assert!(
                    all.contains(&format!("Deployment.apps {}/web", r.ns)),
                    "{reason}: {all}"
                );
                assert!(
                    all.contains("rule `web`") || all.contains("rule web"),
                    "{reason}: names the rule: {all}"
                );
                if let Some(log) = log {
                    assert!(
                        all.contains(log),
                        "{reason}: the crashed container's log: {all}"
                    );
                }
                // Fast: the crash and the missing image are seen on the pods; the probe that
                // never passes at the deadline (12 s), not at the gate's timeout (120 s).
                assert!(took < Duration::from_secs(60), "{reason}: took {took:?}");
                assert!(
                    !exists(r, "configmap", "after"),
                    "{reason}: the next wave was applied"
                );
            });
        }
    });
    for (r, _, _) in &realms {
        cleanup(r);
    }
}

fn job(name: &str, command: &str, deps: &str) -> String {
    format!(
        r#"
[rule.{name}]
kind = "manifest"
deps = [{deps}]
objects = [ {{ apiVersion = "batch/v1", kind = "Job", metadata = {{ name = "{name}", namespace = "${{var.ns}}" }}, spec = {{ backoffLimit = 0, template = {{ spec = {{ restartPolicy = "Never", terminationGracePeriodSeconds = 1, containers = [ {{ name = "job", image = "kiln.local/busybox:1", imagePullPolicy = "Never", command = {command} }} ] }} }} }} }} ]
"#
    )
}

#[test]
fn a_job_gates_its_dependents_and_a_failed_job_stops_the_apply_with_its_log() {
    has_a_node();
    let r = Realm::new("node-job");
    let migrate = job("migrate", r#"["sh", "-c", "sleep 2; echo migrated"]"#, NS);
    r.rules(&format!(
        "{migrate}{}",
        web(
            "api",
            "kiln.local/busybox:1",
            1,
            HTTPD,
            8080,
            r#""ns", "migrate""#
        )
    ));
    let (out, _) = apply_with_gates(&r);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let migration: Value = serde_json::from_str(&kubectl_ok(&[
        "get", "job", "migrate", "-n", &r.ns, "-o", "json",
    ]))
    .unwrap();
    let completed = migration["status"]["completionTime"]
        .as_str()
        .unwrap()
        .to_owned();
    let created = deployment(&r, "api")["metadata"]["creationTimestamp"]
        .as_str()
        .unwrap()
        .to_owned();
    assert!(
        created >= completed,
        "the Deployment ({created}) waited for the Job ({completed})"
    );

    let f = Realm::new("node-jobfail");
    let broken = job(
        "migrate",
        r#"["sh", "-c", "echo applying 0042_add_index; echo 'ERROR: relation users does not exist' >&2; exit 1"]"#,
        NS,
    );
    f.rules(&format!("{broken}{}", after("migrate")));
    let (out, _) = apply_with_gates(&f);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(&format!("Job.batch {}/migrate", f.ns)),
        "{all}"
    );
    assert!(all.contains("BackoffLimitExceeded"), "{all}");
    assert!(
        all.contains("ERROR: relation users does not exist"),
        "the pod's last log lines: {all}"
    );
    assert!(
        !exists(&f, "configmap", "after"),
        "the next wave was applied: {all}"
    );
    cleanup(&r);
    cleanup(&f);
}

/// Ctrl-C while apply waits for a rollout: kiln exits 130 at once, releases the set's lock and
/// leaves what it wrote; the next apply writes nothing and waits for the same rollout.
#[test]
fn ctrl_c_during_a_wait_releases_the_lock_and_the_next_apply_resumes_the_wait() {
    use std::io::BufRead as _;
    has_a_node();
    let r = Realm::new("node-ctrlc");
    // Ready only after 6 s: its httpd starts late.
    r.rules(&web(
        "web",
        "kiln.local/busybox:1",
        1,
        r#"["sh", "-c", "sleep 6; exec httpd -f -p 8080 -h /www"]"#,
        8080,
        NS,
    ));
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .env("KILN_STORE", r.s.store())
        .env("XDG_CONFIG_HOME", r.s.dir.path().join("config"))
        .env("KILN_NO_PROGRESS", "1")
        .env_remove("KILN_LOG")
        .arg("apply")
        .arg(r.s.project())
        .arg("--kubeconfig")
        .arg(common::kubeconfig())
        .args(["--yes", "--timeout", "120"])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    // Status lines (writes, progress) go to stderr.
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stderr)
            .lines()
            .map_while(Result::ok)
        {
            let _ = tx.send(line);
        }
    });
    let mut seen = Vec::new();
    while !seen.iter().any(|l: &String| l.starts_with("waiting")) {
        match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(line) => seen.push(line),
            Err(e) => panic!("no progress line ({e}): {seen:#?}"),
        }
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let interrupted = Instant::now();
    let status = child.wait().unwrap();
    assert!(
        interrupted.elapsed() < Duration::from_secs(5),
        "{:?}",
        interrupted.elapsed()
    );
    assert_eq!(status.code(), Some(130), "{seen:#?}");
    // The lock is released: no Lease of the set is left.
    let leases = kubectl_ok(&["get", "leases", "-n", "default", "-o", "name"]);
    assert!(!leases.contains(&format!("kiln-{}", r.ns)), "{leases}");
    // What was written stays, not ready yet.
    let d = deployment(&r, "web");
    assert_ne!(
        d["status"]["availableReplicas"], 1,
        "ready before the interrupt: {d:#}"
    );

    // The next apply: nothing to write; it waits for the rollout and returns once it is done.
    let (out, _) = apply_with_gates(&r);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(all.contains("applied 0 objects"), "{all}");
    assert!(
        all.contains(&format!("waiting   Deployment.apps {}/web: ", r.ns)),
        "it waited: {all}"
    );
    assert_eq!(deployment(&r, "web")["status"]["availableReplicas"], 1);
    cleanup(&r);
}

/// A StatefulSet (headless Service, two ordered pods) and a DaemonSet of `image`.
fn stateful_and_daemon(image: &str) -> String {
    let pod = format!(
        r#"terminationGracePeriodSeconds = 1, containers = [ {{ name = "app", image = "{image}", imagePullPolicy = "Never", command = {HTTPD}, readinessProbe = {{ periodSeconds = 1, httpGet = {{ path = "/", port = 8080 }} }} }} ]"#
    );
    format!(
        r#"
[rule.db]
kind = "manifest"
deps = [{NS}]
objects = [
  {{ apiVersion = "v1", kind = "Service", metadata = {{ name = "db", namespace = "${{var.ns}}" }}, spec = {{ clusterIP = "None", selector = {{ app = "db" }}, ports = [ {{ port = 8080 }} ] }} }},
  {{ apiVersion = "apps/v1", kind = "StatefulSet", metadata = {{ name = "db", namespace = "${{var.ns}}" }}, spec = {{ serviceName = "db", replicas = 2, selector = {{ matchLabels = {{ app = "db" }} }}, template = {{ metadata = {{ labels = {{ app = "db" }} }}, spec = {{ {pod} }} }} }} }},
]

[rule.agent]
kind = "manifest"
deps = [{NS}]
objects = [ {{ apiVersion = "apps/v1", kind = "DaemonSet", metadata = {{ name = "agent", namespace = "${{var.ns}}" }}, spec = {{ selector = {{ matchLabels = {{ app = "agent" }} }}, template = {{ metadata = {{ labels = {{ app = "agent" }} }}, spec = {{ {pod} }} }} }} }} ]
"#
    )
}

fn images_of(r: &Realm, app: &str) -> Vec<String> {
    let pods: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "pods",
        "-n",
        &r.ns,
        "-l",
        &format!("app={app}"),
        "-o",
        "json",
    ]))
    .unwrap();
    pods["items"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|p| p["metadata"]["deletionTimestamp"].is_null())
        .map(|p| {
            p["spec"]["containers"][0]["image"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

/// A StatefulSet's rolling update and a DaemonSet's on the one node: apply returns when every
/// pod runs the new image and is ready.
#[test]
fn statefulset_and_daemonset_rolling_updates_are_waited_for() {
    has_a_node();
    let r = Realm::new("node-sts");
    r.rules(&stateful_and_daemon("kiln.local/busybox:1"));
    let (out, _) = apply_with_gates(&r);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    assert_eq!(images_of(&r, "db"), ["kiln.local/busybox:1"; 2]);
    assert_eq!(images_of(&r, "agent"), ["kiln.local/busybox:1"]);

    r.rules(&stateful_and_daemon("kiln.local/busybox:2"));
    let (out, _) = apply_with_gates(&r);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(
        all.contains(&format!("waiting   StatefulSet.apps {}/db: ", r.ns)),
        "{all}"
    );
    let sts: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "statefulset",
        "db",
        "-n",
        &r.ns,
        "-o",
        "json",
    ]))
    .unwrap();
    assert_eq!(sts["status"]["readyReplicas"], 2, "{sts:#}");
    assert_eq!(
        sts["status"]["currentRevision"], sts["status"]["updateRevision"],
        "{sts:#}"
    );
    assert_eq!(images_of(&r, "db"), ["kiln.local/busybox:2"; 2]);
    assert_eq!(images_of(&r, "agent"), ["kiln.local/busybox:2"]);
    r.assert_converged();
    cleanup(&r);
}

/// A claim whose StorageClass binds on first consumer passes its gate while Pending (its
/// consumer may come in a later wave, as on EKS, AKS and GKE's default classes); a claim nothing
/// provisions times out naming why.
#[test]
fn a_claim_waiting_for_its_first_consumer_does_not_block_the_next_wave() {
    let r = Realm::new("node-pvc");
    let class = format!("{}-late", r.ns);
    r.rules(&format!(
        r#"
[rule.storage]
kind = "manifest"
deps = [{NS}]
objects = [
  {{ apiVersion = "storage.k8s.io/v1", kind = "StorageClass", metadata = {{ name = "{class}" }}, provisioner = "kiln.test/none", volumeBindingMode = "WaitForFirstConsumer" }},
  {{ apiVersion = "v1", kind = "PersistentVolumeClaim", metadata = {{ name = "data", namespace = "${{var.ns}}" }}, spec = {{ storageClassName = "{class}", accessModes = ["ReadWriteOnce"], resources = {{ requests = {{ storage = "1Gi" }} }} }} }},
]
{}"#,
        after("storage")
    ));
    let (out, took) = apply_with_gates(&r);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(0), "{all}");
    assert!(took < Duration::from_secs(30), "{took:?}: {all}");
    assert!(all.contains("WaitForFirstConsumer"), "{all}");
    assert!(exists(&r, "configmap", "after"), "{all}");

    // No class named, and the test cluster has no default one: nothing will provision it.
    let u = Realm::new("node-pvc-none");
    u.rules(&format!(
        r#"
[rule.storage]
kind = "manifest"
deps = [{NS}]
objects = [ {{ apiVersion = "v1", kind = "PersistentVolumeClaim", metadata = {{ name = "data", namespace = "${{var.ns}}" }}, spec = {{ accessModes = ["ReadWriteOnce"], resources = {{ requests = {{ storage = "1Gi" }} }} }} }} ]
{}"#,
        after("storage")
    ));
    let out = u.kiln("apply", &["--yes", "--timeout", "3"]);
    let all = text(&out);
    assert_eq!(out.status.code(), Some(2), "{all}");
    assert!(
        all.contains(&format!(
            "PersistentVolumeClaim {}/data (rule `storage`) did not become ready",
            u.ns
        )),
        "{all}"
    );
    assert!(all.contains("no default StorageClass"), "{all}");
    assert!(!exists(&u, "configmap", "after"), "{all}");
    let _ = kubectl(&["delete", "storageclass", &class]);
    cleanup(&r);
    cleanup(&u);
}
