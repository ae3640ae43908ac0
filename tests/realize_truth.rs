//! Plan and apply tell the truth about what they change (issue 7), on the real test control
//! plane: a run after a converged apply writes nothing and deletes nothing.

mod common;

use common::count;
use common::realm::{kubectl_ok, Realm};
use serde_json::Value;

/// A `manifest` rule `app` reading `app.yaml` into the realm's namespace.
const APP_RULE: &str =
    "\n[rule.app]\nkind = \"manifest\"\nsrcs = [\"app.yaml\"]\ndeps = [\"ns\"]\nnamespace = \"${var.ns}\"\n";

fn writes_and_deletes(report: &Value) -> (u64, u64) {
    (
        report["applied"]["applied"].as_u64().unwrap(),
        report["applied"]["deleted"].as_u64().unwrap(),
    )
}

/// A cluster-scoped custom kind in a rule with `namespace = ...`, and a ClusterRole with an
/// explicit `metadata.namespace`: scope comes from discovery (or the project's CRD), the
/// namespace is dropped with a warning, and nothing flips between created and pruned.
#[test]
fn cluster_scoped_objects_with_a_namespace_converge() {
    let r = Realm::new("scope");
    let group = format!("{}.kiln.test", r.ns);
    r.rules(
        r#"
[rule.classes]
kind = "manifest"
srcs = ["classes.yaml"]
deps = ["ns"]
namespace = "${var.ns}"

[rule.rbac]
kind = "manifest"
srcs = ["rbac.yaml"]
deps = ["ns"]
"#,
    );
    r.s.write(
        "classes.yaml",
        &format!(
            "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\nmetadata: {{name: gatewayclasses.{group}}}\nspec:\n  group: {group}\n  scope: Cluster\n  names: {{plural: gatewayclasses, singular: gatewayclass, kind: GatewayClass}}\n  versions:\n    - name: v1\n      served: true\n      storage: true\n      schema:\n        openAPIV3Schema:\n          type: object\n          properties:\n            spec: {{type: object, properties: {{controller: {{type: string}}}}}}\n---\napiVersion: {group}/v1\nkind: GatewayClass\nmetadata: {{name: edge-{ns}}}\nspec: {{controller: example.io/edge}}\n",
            ns = r.ns
        ),
    );
    r.s.write(
        "rbac.yaml",
        &format!(
            "apiVersion: rbac.authorization.k8s.io/v1\nkind: ClusterRole\nmetadata:\n  name: reader-{ns}\n  namespace: {ns}\nrules:\n  - apiGroups: [\"\"]\n    resources: [configmaps]\n    verbs: [get]\n",
            ns = r.ns
        ),
    );

    let first = r.apply(&[]);
    assert_eq!(count(&first, "create"), 4, "{first:#}");
    let warnings = first["warnings"].as_array().unwrap();
    assert_eq!(warnings.len(), 2, "{first:#}");
    assert!(warnings
        .iter()
        .any(|w| w["rule"] == "classes"
            && w["object"].as_str().unwrap().starts_with("GatewayClass.")));
    assert!(warnings.iter().any(|w| w["rule"] == "rbac"
        && w["path"].as_str().unwrap().ends_with(".yaml")
        && w["namespace"] == r.ns.as_str()));
    for run in 2..=3 {
        let again = r.apply(&[]);
        assert_eq!(
            writes_and_deletes(&again),
            (0, 0),
            "run {run} changed something: {again:#}"
        );
        assert_eq!(count(&again, "unchanged"), 4, "run {run}: {again:#}");
    }
    // The objects exist, cluster-scoped.
    kubectl_ok(&[
        "get",
        &format!("gatewayclasses.{group}"),
        &format!("edge-{}", r.ns),
    ]);
    kubectl_ok(&["get", "clusterrole", &format!("reader-{}", r.ns)]);
    let plan = r.plan();
    assert_eq!(
        count(&plan, "delete") + count(&plan, "create"),
        0,
        "{plan:#}"
    );
}

/// Every secret reference that cannot be resolved is reported in one run; and references on an
/// object no `secret` rule declared (here forged by an `exec` rule) are never resolved: an
/// artifact cannot make `kiln plan` run a command.
#[test]
fn secret_references_all_reported_and_only_declared_ones_resolved() {
    let r = Realm::new("secrets");
    let marker = std::env::temp_dir().join(format!("kiln-pwned-{}", std::process::id()));
    let _ = std::fs::remove_file(&marker);
    r.s.write(
        "forged.yaml",
        &format!(
            "apiVersion: v1\nkind: Secret\nmetadata:\n  name: forged\n  namespace: {ns}\n  annotations:\n    kiln.dev/secret-refs: '{{\"x\":{{\"command\":[\"touch\",\"{m}\"]}}}}'\n",
            ns = r.ns,
            m = marker.display()
        ),
    );
    r.rules(&format!(
        r#"
[rule.creds]
kind = "secret"
name = "creds"
namespace = "${{var.ns}}"
deps = ["ns"]
data.a = {{ env = "KILN_T_MISSING_A" }}
data.b = {{ env = "KILN_T_MISSING_B" }}

[rule.forger]
kind = "exec"
deps = ["ns"]
srcs = ["forged.yaml"]
command = ["sh", "-c", "mkdir -p $out/objects/{ns}/Secret.core && cp in/forged.yaml $out/objects/{ns}/Secret.core/"]
"#,
        ns = r.ns
    ));
    let out = r.kiln("plan", &[]);
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("KILN_T_MISSING_A") && err.contains("KILN_T_MISSING_B"),
        "{err}"
    );
    // With the variables set, the plan goes through; the forged reference never ran.
    let out = r.kiln_env(
        "plan",
        &["--json"],
        &[("KILN_T_MISSING_A", "a"), ("KILN_T_MISSING_B", "b")],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!marker.exists(), "a forged reference ran a command");
}

/// What kiln writes into artifacts reads back the same in other tools: strings that YAML 1.1
/// readers take as booleans or numbers (`no`, `on`, `0755`, `1e3`, `12:30`, ...) are quoted, so
/// kubectl parses each built object into exactly what kiln sends.
#[test]
fn built_yaml_reads_back_the_same_in_kubectl() {
    let r = Realm::new("yaml11");
    let values = [
        "no", "yes", "on", "off", "y", "n", "True", "NO", "~", "null", "0755", "1e3", ".inf",
        "0x1F", "1_000", "12:30", "+1", "-.5",
    ];
    let data: Vec<String> = values
        .iter()
        .enumerate()
        .map(|(i, v)| format!("k{i} = \"{v}\""))
        .collect();
    r.rules(&format!(
        "\n[rule.cm]\nkind = \"manifest\"\nnamespace = \"${{var.ns}}\"\nobjects = [ {{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"ambiguous\" }}, data = {{ {} }} }} ]\n",
        data.join(", ")
    ));
    r.s.build(&[]);
    let out =
        r.s.kiln()
            .args(["store", "cat", "cm"])
            .arg(r.s.project())
            .output()
            .unwrap();
    assert!(out.status.success());
    let text = String::from_utf8(out.stdout).unwrap();
    let yaml: String = text
        .lines()
        .filter(|l| !l.starts_with("# ==>"))
        .collect::<Vec<_>>()
        .join("\n");
    let file = r.s.dir.path().join("built.yaml");
    std::fs::write(&file, yaml).unwrap();
    let parsed: Value = serde_json::from_str(&kubectl_ok(&[
        "create",
        "--dry-run=client",
        "-o",
        "json",
        "-f",
        file.to_str().unwrap(),
    ]))
    .unwrap();
    for (i, v) in values.iter().enumerate() {
        assert_eq!(
            parsed["data"][format!("k{i}")],
            *v,
            "kubectl read `{v}` differently"
        );
    }
}

/// A Deployment past its progress deadline stops the wait at once, naming the condition, instead
/// of waiting out `--timeout` (here the control plane has no nodes: its pod never starts).
#[test]
fn waiting_stops_at_a_failed_condition() {
    let r = Realm::new("deadline");
    r.rules(APP_RULE);
    r.s.write(
        "app.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: app}\nspec:\n  replicas: 1\n  progressDeadlineSeconds: 2\n  selector: {matchLabels: {app: a}}\n  template:\n    metadata: {labels: {app: a}}\n    spec: {containers: [{name: a, image: nginx}]}\n",
    );
    let start = std::time::Instant::now();
    let out = r.kiln("apply", &["--yes", "--timeout", "120"]);
    assert!(
        start.elapsed() < std::time::Duration::from_secs(60),
        "waited {:?}",
        start.elapsed()
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("Deployment.apps") && err.contains("ProgressDeadlineExceeded"),
        "{err}"
    );
}

fn deployment_yaml(name: &str, image: &str, extra_pod_spec: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: {name}}}\nspec:\n  replicas: 1\n  minReadySeconds: 0\n  selector: {{matchLabels: {{app: {name}}}}}\n  template:\n    metadata: {{labels: {{app: {name}}}}}\n    spec:\n      containers:\n        - name: app\n          image: {image}\n          resources: {{}}\n          securityContext: {{}}\n          volumeMounts: [{{name: scratch, mountPath: /tmp}}]\n      volumes: [{{name: scratch, emptyDir: {{}}}}]\n{extra_pod_spec}"
    )
}

/// Class 2: empty and zero values that the server drops or defaults (`emptyDir: {}`,
/// `resources: {}`, `securityContext: {}`, `nodeSelector: {}`, `tolerations: []`,
/// `minReadySeconds: 0`, `data: null`) are no drift: after an apply, the plan is empty
/// (`--detailed-exitcode` 0) and a second apply writes nothing.
#[test]
fn zero_values_the_server_drops_are_not_drift() {
    let r = Realm::new("zero");
    r.rules(APP_RULE);
    let pod_extras = "      nodeSelector: {}\n      tolerations: []\n      securityContext: {}\n";
    r.s.write(
        "app.yaml",
        &format!(
            "{}---\napiVersion: v1\nkind: ConfigMap\nmetadata: {{name: empty}}\ndata: null\n",
            deployment_yaml("zero", "registry.invalid/app:1", pod_extras)
        ),
    );
    let first = r.apply(&[]);
    assert_eq!(count(&first, "create"), 3, "{first:#}");
    // Apply says what it wrote, in order: the namespace's wave first.
    let written = first["applied"]["written"].as_array().unwrap();
    assert_eq!(written.len(), 3, "{first:#}");
    assert_eq!(written[0]["object"], format!("Namespace {}", r.ns));
    assert!(written.iter().all(|w| w["action"] == "create"));
    r.assert_converged();
    let second = r.apply(&[]);
    assert_eq!(writes_and_deletes(&second), (0, 0), "{second:#}");
    assert_eq!(second["http"]["writes"], 0, "{second:#}");
}

/// Class 3: the diff of an update is what the server would change, defaults on both sides:
/// changing an image shows exactly that line, no `- imagePullPolicy`, no quantity noise.
#[test]
fn an_image_change_diffs_as_exactly_that_line() {
    let r = Realm::new("diff");
    r.rules(APP_RULE);
    let resources = "";
    r.s.write(
        "app.yaml",
        &deployment_yaml("web", "registry.invalid/app:1", resources).replace(
            "resources: {}",
            "resources: {limits: {cpu: '1', memory: 1Gi}}",
        ),
    );
    r.apply(&[]);
    r.s.write(
        "app.yaml",
        &deployment_yaml("web", "registry.invalid/app:2", resources).replace(
            "resources: {}",
            "resources: {limits: {cpu: 1000m, memory: 1024Mi}}",
        ),
    );
    let plan = r.plan();
    let update = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["action"] == "update")
        .unwrap_or_else(|| panic!("{plan:#}"));
    let diff = update["diff"].as_str().unwrap();
    let changed: Vec<&str> = diff
        .lines()
        .filter(|l| {
            (l.starts_with('+') || l.starts_with('-'))
                && !l.starts_with("+++")
                && !l.starts_with("---")
        })
        .collect();
    assert_eq!(
        changed,
        [
            "-      - image: registry.invalid/app:1",
            "+      - image: registry.invalid/app:2"
        ],
        "{diff}"
    );
    // On a terminal (here: `--color always`) the plan is coloured: the update yellow, the
    // diff's lines green and red; `--color never` prints the same text with no codes at all.
    let text = |color: &str| {
        let out = r.kiln("plan", &["--color", color]);
        String::from_utf8(out.stdout).unwrap()
    };
    let coloured = text("always");
    assert!(coloured.contains("\u{1b}[33m~ update"), "{coloured:?}");
    assert!(
        coloured.contains("\u{1b}[31m    -      - image: registry.invalid/app:1"),
        "{coloured:?}"
    );
    assert!(
        coloured.contains("\u{1b}[32m    +      - image: registry.invalid/app:2"),
        "{coloured:?}"
    );
    let plain = text("never");
    assert!(
        !plain.contains('\u{1b}') && plain.contains("~ update"),
        "{plain:?}"
    );
}

/// Class 4: an object the server rejects fails `kiln plan` naming the rule, and fails `kiln
/// apply` before anything is written: the ConfigMap changed in the same run stays as it was.
#[test]
fn a_rejected_object_fails_plan_and_apply_before_any_write() {
    let r = Realm::new("reject");
    r.rules(
        "\n[rule.config]\nkind = \"manifest\"\nsrcs = [\"config.yaml\"]\ndeps = [\"ns\"]\nnamespace = \"${var.ns}\"\n\n[rule.app]\nkind = \"manifest\"\nsrcs = [\"app.yaml\"]\ndeps = [\"config\"]\nnamespace = \"${var.ns}\"\n",
    );
    r.s.write(
        "config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: old}\n",
    );
    r.s.write(
        "app.yaml",
        &deployment_yaml("api", "registry.invalid/app:1", ""),
    );
    r.apply(&[]);

    r.s.write(
        "config.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: settings}\ndata: {mode: new}\n",
    );
    r.s.write(
        "app.yaml",
        &deployment_yaml("api", "registry.invalid/app:1", "")
            .replace("replicas: 1", "replicas: -1"),
    );
    for cmd in ["plan", "apply"] {
        let out = r.kiln(
            cmd,
            &["--yes", "--skip-workload-gates"][..if cmd == "plan" { 0 } else { 2 }],
        );
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {err}");
        assert!(err.contains("rule `app`"), "{cmd}: {err}");
        assert!(err.contains("replicas"), "{cmd}: {err}");
        assert!(err.contains("nothing was written"), "{cmd}: {err}");
        assert!(!err.contains("Status {"), "no debug dump: {err}");
    }
    let mode = kubectl_ok(&[
        "get",
        "configmap",
        "settings",
        "-n",
        &r.ns,
        "-o",
        "jsonpath={.data.mode}",
    ]);
    assert_eq!(
        mode, "old",
        "apply wrote part of a change the server rejects"
    );
}

/// Class 4: a field the server does not declare (a gRPC probe, Kubernetes 1.24+, on the 1.20
/// test server: its server-side apply answers 500) fails plan with the server's message, the
/// object and the rule, once: kube's client does not log the same answer again at ERROR.
#[test]
fn a_field_the_server_does_not_know_is_reported_once() {
    let r = Realm::new("unknownfield");
    r.rules(APP_RULE);
    r.s.write(
        "app.yaml",
        &deployment_yaml("grpc", "registry.invalid/app:1", "").replace(
            "          resources: {}\n",
            "          resources: {}\n          readinessProbe: {grpc: {port: 9555}}\n",
        ),
    );
    let out = r.kiln("plan", &[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("rule `app`"), "{err}");
    assert_eq!(
        err.matches("readinessProbe.grpc: field not declared")
            .count(),
        1,
        "{err}"
    );
    assert!(!err.contains("ERROR"), "{err}");
}

/// Class 5: an object with both an out-of-band change (`kubectl patch` of replicas) and a
/// desired change (a new image) shows both, and one apply takes the drifted field back and
/// writes the change, without a conflict.
#[test]
fn drift_and_a_change_together_are_applied_in_one_write() {
    let r = Realm::new("both");
    r.rules(APP_RULE);
    r.s.write(
        "app.yaml",
        &deployment_yaml("web", "registry.invalid/app:1", ""),
    );
    r.apply(&[]);
    kubectl_ok(&[
        "patch",
        "deployment",
        "web",
        "-n",
        &r.ns,
        "--type",
        "merge",
        "-p",
        r#"{"spec":{"replicas":5}}"#,
    ]);
    r.s.write(
        "app.yaml",
        &deployment_yaml("web", "registry.invalid/app:2", ""),
    );
    let plan = r.plan();
    let update = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "web")
        .unwrap();
    assert_eq!(update["action"], "update", "{plan:#}");
    assert_eq!(update["drifted_fields"][0], ".spec.replicas", "{plan:#}");
    assert!(update.get("conflict").is_none(), "{plan:#}");
    let applied = r.apply(&[]);
    assert_eq!(writes_and_deletes(&applied), (1, 0), "{applied:#}");
    let live = kubectl_ok(&[
        "get",
        "deployment",
        "web",
        "-n",
        &r.ns,
        "-o",
        "jsonpath={.spec.replicas} {.spec.template.spec.containers[0].image}",
    ]);
    assert_eq!(live, "1 registry.invalid/app:2");
    r.assert_converged();
}

/// Class 8: a user whose Role covers one namespace only plans and applies a project that lives
/// there. Cluster-wide LISTs are forbidden to them; kiln lists per namespace of the set instead.
#[test]
fn a_namespace_scoped_user_can_plan_and_apply() {
    let r = Realm::new("nsuser");
    let ns = r.ns.clone();
    kubectl_ok(&["create", "namespace", &ns]);
    kubectl_ok(&["create", "serviceaccount", "deployer", "-n", &ns]);
    kubectl_ok(&[
        "create",
        "role",
        "all",
        "-n",
        &ns,
        "--verb=*",
        "--resource=*.*",
    ]);
    kubectl_ok(&[
        "create",
        "rolebinding",
        "deployer",
        "-n",
        &ns,
        "--role=all",
        &format!("--serviceaccount={ns}:deployer"),
    ]);
    // A token from the TokenRequest API (the test cluster runs no token controller).
    let request = r.s.dir.path().join("token-request.json");
    std::fs::write(
        &request,
        r#"{"apiVersion":"authentication.k8s.io/v1","kind":"TokenRequest","spec":{"expirationSeconds":3600}}"#,
    )
    .unwrap();
    let answer = kubectl_ok(&[
        "create",
        "--raw",
        &format!("/api/v1/namespaces/{ns}/serviceaccounts/deployer/token"),
        "-f",
        request.to_str().unwrap(),
    ]);
    let answer: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let token = answer["status"]["token"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(!token.is_empty(), "no ServiceAccount token");
    let server = kubectl_ok(&[
        "config",
        "view",
        "-o",
        "jsonpath={.clusters[0].cluster.server}",
    ]);
    let kubeconfig = r.s.dir.path().join("user-kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"{server}\", insecure-skip-tls-verify: true}}\nusers:\n- name: u\n  user: {{token: \"{token}\"}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: {ns}}}\ncurrent-context: x\n"
        ),
    )
    .unwrap();
    // The user really may not list cluster-wide.
    let denied = common::realm::kubectl(&[
        "--kubeconfig",
        kubeconfig.to_str().unwrap(),
        "get",
        "configmaps",
        "-A",
    ]);
    assert!(!denied.status.success());

    let project = |objects: &str| {
        r.s.write(
            "kiln.toml",
            &format!("[project]\nname = \"{ns}\"\n[rule.app]\nkind = \"manifest\"\nnamespace = \"{ns}\"\nobjects = [ {objects} ]\n"),
        );
    };
    let run = |cmd: &str, extra: &[&str]| {
        let out =
            r.s.kiln()
                .arg(cmd)
                .arg(r.s.project())
                .arg("--kubeconfig")
                .arg(&kubeconfig)
                .args(["--applyset-namespace", ns.as_str()])
                .args(extra)
                .output()
                .unwrap();
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    project(
        r#"{ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "a" }, data = { k = "v" } }, { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "b" } }"#,
    );
    let (code, err, _) = run("apply", &["--yes"]);
    assert_eq!(code, Some(0), "{err}");
    let (code, err, out) = run("plan", &["--detailed-exitcode"]);
    assert_eq!(code, Some(0), "{err}{out}");
    project(
        r#"{ apiVersion = "v1", kind = "ConfigMap", metadata = { name = "a" }, data = { k = "v" } }"#,
    );
    let (code, err, _) = run("apply", &["--yes"]);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("deleted   ConfigMap"), "{err}");
    let left = kubectl_ok(&["get", "configmaps", "-n", &ns, "-o", "name"]);
    assert!(
        left.contains("configmap/a") && !left.contains("configmap/b"),
        "{left}"
    );
}

/// Classes 6 and 7: an object made by `kubectl apply` is adopted (the plan says so, not
/// "create"), and an object of another kiln set is refused, naming both sets, unless `--adopt`.
#[test]
fn existing_objects_are_adopted_and_other_sets_members_refused() {
    let r = Realm::new("adopt");
    r.rules(APP_RULE);
    r.s.write(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: handmade}\ndata: {mode: kiln}\n",
    );
    kubectl_ok(&["create", "namespace", &r.ns]);
    let by_hand = r.s.dir.path().join("by-hand.yaml");
    std::fs::write(
        &by_hand,
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: handmade, namespace: {}}}\ndata: {{mode: hand}}\n", r.ns),
    )
    .unwrap();
    kubectl_ok(&["apply", "-f", by_hand.to_str().unwrap()]);
    let plan = r.plan();
    assert_eq!(
        count(&plan, "adopt"),
        2,
        "the namespace and the ConfigMap: {plan:#}"
    );
    assert_eq!(count(&plan, "create"), 0, "{plan:#}");
    let applied = r.apply(&[]);
    assert_eq!(writes_and_deletes(&applied), (2, 0), "{applied:#}");
    let mode = kubectl_ok(&[
        "get",
        "cm",
        "handmade",
        "-n",
        &r.ns,
        "-o",
        "jsonpath={.data.mode}",
    ]);
    assert_eq!(mode, "kiln");
    r.assert_converged();

    // A second project that produces the same ConfigMap: refused, naming both sets.
    let other = common::Sandbox::new();
    other.write(
        "kiln.toml",
        &format!("[project]\nname = \"other-{ns}\"\n[rule.app]\nkind = \"manifest\"\nnamespace = \"{ns}\"\nobjects = [ {{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"handmade\" }}, data = {{ mode = \"other\" }} }} ]\n", ns = r.ns),
    );
    let run = |extra: &[&str]| {
        other
            .kiln()
            .arg("plan")
            .arg(other.project())
            .arg("--kubeconfig")
            .arg(common::kubeconfig())
            .args(extra)
            .output()
            .unwrap()
    };
    let refused = run(&[]);
    let err = String::from_utf8_lossy(&refused.stderr);
    assert_eq!(refused.status.code(), Some(1), "{err}");
    // Both projects are named (their parents are `kiln-<project>-<env>`), and what --adopt
    // would do is said, not only suggested.
    // (miette wraps long lines: read them joined.)
    let flat: String = err
        .lines()
        .map(|l| l.trim_start().trim_start_matches('│').trim_start())
        .collect();
    assert!(
        flat.contains(&format!("is a member of the set `default/kiln-{}`", r.ns))
            && flat.contains(&format!("not of this set `default/kiln-other-{}`", r.ns))
            && flat.contains("--adopt")
            && flat.contains("deletes them"),
        "{err}"
    );
    // The same refusal has the same exit code in apply, and writes nothing.
    let applied = other
        .kiln()
        .arg("apply")
        .arg(other.project())
        .arg("--kubeconfig")
        .arg(common::kubeconfig())
        .args(["--yes", "--skip-workload-gates"])
        .output()
        .unwrap();
    assert_eq!(
        applied.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&applied.stderr)
    );
    let adopting = run(&["--adopt", "--json"]);
    assert_eq!(
        adopting.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&adopting.stderr)
    );
    let plan: Value = serde_json::from_slice(&adopting.stdout).unwrap();
    assert_eq!(count(&plan, "adopt"), 1, "{plan:#}");
}

/// Issue 16: kinds are read per namespace of the set, yet prune stays exact: a member in a
/// namespace that left the desired set (known only from the parent) and a cluster-scoped member
/// are both found and deleted.
#[test]
fn per_namespace_reads_keep_prune_exact() {
    let r = Realm::new("prune");
    let (a, b) = (format!("{}-a", r.ns), format!("{}-b", r.ns));
    let rules = |configmaps: &str, cluster_role: bool| {
        let mut objects = format!(
            "{{ apiVersion = \"v1\", kind = \"Namespace\", metadata = {{ name = \"{a}\" }} }}, {{ apiVersion = \"v1\", kind = \"Namespace\", metadata = {{ name = \"{b}\" }} }}"
        );
        if cluster_role {
            objects.push_str(&format!(", {{ apiVersion = \"rbac.authorization.k8s.io/v1\", kind = \"ClusterRole\", metadata = {{ name = \"{}-reader\" }} }}", r.ns));
        }
        r.rules(&format!(
            "\n[rule.spaces]\nkind = \"manifest\"\nobjects = [ {objects} ]\n\n[rule.config]\nkind = \"manifest\"\ndeps = [\"spaces\"]\nobjects = [ {configmaps} ]\n"
        ));
    };
    let cm = |ns: &str, name: &str| {
        format!("{{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"{name}\", namespace = \"{ns}\" }} }}")
    };
    rules(&format!("{}, {}", cm(&a, "x"), cm(&b, "y")), true);
    r.apply(&[]);
    // Every object of namespace `a` and the ClusterRole leave the rules; `a` itself stays.
    rules(&cm(&b, "y"), false);
    let plan = r.plan();
    let mut deleted = common::changed(&plan, "delete");
    deleted.sort();
    assert_eq!(deleted.len(), 2, "{plan:#}");
    assert!(
        deleted.iter().any(|d| d.starts_with("ClusterRole")),
        "{deleted:?}"
    );
    assert!(
        deleted
            .iter()
            .any(|d| d.starts_with("ConfigMap") && d.ends_with("/x")),
        "{deleted:?}"
    );
    let applied = r.apply(&[]);
    assert_eq!(writes_and_deletes(&applied).1, 2, "{applied:#}");
    assert!(!kubectl_ok(&["get", "cm", "-n", &a, "-o", "name"]).contains("configmap/x"));
    r.assert_converged();
}

/// Issue 16: kinds with more objects than GETs are worth are read from the API server's watch
/// cache once it holds the set's last members (namespaced kinds per namespace, cluster-scoped
/// ones cluster-wide), and prune stays exact: a namespace's members leaving the rules, one more
/// in another namespace, and a cluster-scoped member are all deleted, and nothing else.
#[test]
fn watch_cache_reads_keep_prune_exact() {
    let r = Realm::new("cached");
    let (a, b) = (format!("{}-a", r.ns), format!("{}-b", r.ns));
    let rules = |in_a: usize, in_b: usize, roles: usize| {
        let mut objects = vec![
            format!(
                "{{ apiVersion = \"v1\", kind = \"Namespace\", metadata = {{ name = \"{a}\" }} }}"
            ),
            format!(
                "{{ apiVersion = \"v1\", kind = \"Namespace\", metadata = {{ name = \"{b}\" }} }}"
            ),
        ];
        for i in 0..roles {
            objects.push(format!("{{ apiVersion = \"rbac.authorization.k8s.io/v1\", kind = \"ClusterRole\", metadata = {{ name = \"{}-role-{i}\" }} }}", r.ns));
        }
        let cm = |ns: &str, i: usize| {
            format!("{{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"c{i}\", namespace = \"{ns}\" }} }}")
        };
        let configmaps: Vec<String> = (0..in_a)
            .map(|i| cm(&a, i))
            .chain((0..in_b).map(|i| cm(&b, i)))
            .collect();
        r.rules(&format!(
            "\n[rule.spaces]\nkind = \"manifest\"\nobjects = [ {} ]\n\n[rule.config]\nkind = \"manifest\"\ndeps = [\"spaces\"]\nobjects = [ {} ]\n",
            objects.join(", "),
            configmaps.join(", ")
        ));
    };
    rules(6, 6, 10);
    r.apply(&[]);
    let cached = |out: &std::process::Output| -> Vec<String> {
        String::from_utf8_lossy(&out.stderr)
            .lines()
            .filter(|l| l.contains("read from the watch cache"))
            .map(str::to_owned)
            .collect()
    };
    let debug = [("KILN_LOG", "kiln_realize=debug")];
    let again = r.kiln_env("plan", &["--detailed-exitcode"], &debug);
    assert_eq!(again.status.code(), Some(0), "no changes");
    let lines = cached(&again);
    assert!(lines.iter().any(|l| l.contains("ConfigMap")), "{lines:?}");
    assert!(lines.iter().any(|l| l.contains("ClusterRole")), "{lines:?}");

    // Namespace `a` keeps no ConfigMap, `b` loses one, one ClusterRole goes.
    rules(0, 5, 9);
    let out = r.kiln_env("plan", &["--json"], &debug);
    assert!(
        cached(&out).iter().any(|l| l.contains("ConfigMap")),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let plan: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut deleted: Vec<String> = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["action"] == "delete")
        .map(|c| match c["namespace"].as_str().unwrap_or_default() {
            "" => format!(
                "{} {}",
                c["group_kind"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            ),
            ns => format!(
                "{} {ns}/{}",
                c["group_kind"].as_str().unwrap(),
                c["name"].as_str().unwrap()
            ),
        })
        .collect();
    deleted.sort();
    let mut expected: Vec<String> = (0..6)
        .map(|i| format!("ConfigMap {a}/c{i}"))
        .chain([
            format!("ConfigMap {b}/c5"),
            format!("ClusterRole.rbac.authorization.k8s.io {}-role-9", r.ns),
        ])
        .collect();
    expected.sort();
    assert_eq!(deleted, expected, "{plan:#}");
    let applied = r.apply(&[]);
    assert_eq!(writes_and_deletes(&applied).1, 8, "{applied:#}");
    assert_eq!(
        kubectl_ok(&["get", "cm", "-n", &a, "-o", "name"])
            .lines()
            .filter(|l| l.contains("configmap/c"))
            .count(),
        0
    );
    // After a prune the kind is read from storage until kiln adds members again.
    let after = r.kiln_env("plan", &["--detailed-exitcode"], &debug);
    assert_eq!(after.status.code(), Some(0));
    assert!(!cached(&after).iter().any(|l| l.contains("ConfigMap")));
    r.assert_converged();
}

/// A Deployment (and, with `hpa`, an HPA that scales it) in the realm's namespace.
fn scaled(name: &str, hpa: bool, annotated: bool) -> Realm {
    let r = Realm::new(name);
    let annotation = if annotated {
        "  annotations: {kiln.dev/controller-owned: spec.replicas}\n"
    } else {
        ""
    };
    let mut yaml = format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\n{annotation}spec:\n  replicas: 2\n  selector: {{matchLabels: {{app: api}}}}\n  template:\n    metadata: {{labels: {{app: api}}}}\n    spec:\n      containers:\n        - name: api\n          image: nginx:1.25\n"
    );
    if hpa {
        // autoscaling/v1: served by the 1.20 test server and by current clusters alike.
        yaml.push_str("---\napiVersion: autoscaling/v1\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: api\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}\n  minReplicas: 2\n  maxReplicas: 5\n  targetCPUUtilizationPercentage: 80\n");
    }
    r.rules("[rule.app]\nkind = \"manifest\"\nsrcs = [\"app.yaml\"]\nnamespace = \"${var.ns}\"\ndeps = [\"ns\"]\n");
    r.s.write("app.yaml", &yaml);
    r
}

fn live_replicas(r: &Realm) -> u64 {
    let d: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "deployment",
        "api",
        "-n",
        &r.ns,
        "-o",
        "json",
    ]))
    .unwrap();
    d["spec"]["replicas"].as_u64().unwrap()
}

#[test]
fn kiln_does_not_fight_the_autoscaler_of_a_workload() {
    for (name, hpa, annotated) in [("hpa", true, false), ("owned", false, true)] {
        let r = scaled(name, hpa, annotated);
        r.apply(&[]);
        assert_eq!(
            live_replicas(&r),
            2,
            "{name}: created with the rules' replicas"
        );
        kubectl_ok(&["scale", "deployment/api", "-n", &r.ns, "--replicas=4"]);
        let out = r.kiln("plan", &["--detailed-exitcode"]);
        assert_eq!(
            out.status.code(),
            Some(0),
            "{name}: a scale by the controller's side is not drift: {}",
            String::from_utf8_lossy(&out.stdout)
        );
        let applied = r.apply(&[]);
        assert_eq!(applied["http"]["writes"], 0, "{name}: {applied}");
        assert_eq!(live_replicas(&r), 4, "{name}: the scale stands");
        // A real change of the workload keeps the controller's replicas.
        r.s.write(
            "app.yaml",
            &std::fs::read_to_string(r.s.project().join("app.yaml"))
                .unwrap()
                .replace("nginx:1.25", "nginx:1.26"),
        );
        let applied = r.apply(&[]);
        assert!(
            applied["applied"]["applied"].as_u64().unwrap() >= 1,
            "{applied}"
        );
        assert_eq!(
            live_replicas(&r),
            4,
            "{name}: an update leaves replicas alone"
        );
        r.assert_converged();
    }
}

#[test]
fn without_an_autoscaler_a_scale_is_drift_and_reverted() {
    let r = scaled("noscaler", false, false);
    r.apply(&[]);
    kubectl_ok(&["scale", "deployment/api", "-n", &r.ns, "--replicas=4"]);
    let out = r.kiln("plan", &["--detailed-exitcode"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stdout).contains(".spec.replicas"));
    r.apply(&[]);
    assert_eq!(live_replicas(&r), 2, "reverted to the rules' value");
    r.assert_converged();
}

#[test]
fn current_api_versions_apply_on_a_cluster_that_serves_only_earlier_ones() {
    let r = Realm::new("apiversions");
    r.rules("[rule.app]\nkind = \"manifest\"\nsrcs = [\"app.yaml\"]\nnamespace = \"${var.ns}\"\ndeps = [\"ns\"]\n");
    r.s.write(
        "app.yaml",
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: api\nspec:\n  replicas: 1\n  selector: {matchLabels: {app: api}}\n  template:\n    metadata: {labels: {app: api}}\n    spec:\n      containers: [{name: api, image: nginx:1.25}]\n---\napiVersion: autoscaling/v2\nkind: HorizontalPodAutoscaler\nmetadata:\n  name: api\nspec:\n  scaleTargetRef: {apiVersion: apps/v1, kind: Deployment, name: api}\n  minReplicas: 1\n  maxReplicas: 3\n  metrics:\n    - type: Resource\n      resource: {name: cpu, target: {type: Utilization, averageUtilization: 70}}\n---\napiVersion: batch/v1\nkind: CronJob\nmetadata:\n  name: backup\nspec:\n  schedule: \"0 3 * * *\"\n  jobTemplate:\n    spec:\n      template:\n        spec:\n          restartPolicy: OnFailure\n          containers: [{name: backup, image: busybox:1.36, command: [\"true\"]}]\n---\napiVersion: policy/v1\nkind: PodDisruptionBudget\nmetadata:\n  name: api\nspec:\n  minAvailable: 1\n  selector: {matchLabels: {app: api}}\n",
    );
    // The 1.20 test server serves none of the three current versions.
    let served = kubectl_ok(&["api-versions"]);
    assert!(!served.lines().any(|l| l == "autoscaling/v2"), "{served}");
    assert!(!served.lines().any(|l| l == "policy/v1"), "{served}");
    let applied = r.apply(&[]);
    assert_eq!(applied["applied"]["applied"], 5, "{applied}");
    for (kind, name) in [("hpa", "api"), ("cronjob", "backup"), ("pdb", "api")] {
        kubectl_ok(&["get", kind, name, "-n", &r.ns]);
    }
    r.assert_converged();
    // The build is hermetic: the artifact keeps the versions written.
    let artifact = r.s.cat(
        "app",
        &format!(
            "objects/{}/HorizontalPodAutoscaler.autoscaling/api.yaml",
            r.ns
        ),
        &[],
    );
    assert!(
        artifact.contains("apiVersion: autoscaling/v2\n"),
        "{artifact}"
    );
}

#[test]
fn the_cluster_interface_says_what_is_wrong() {
    let r = Realm::new("iface");
    r.rules("[rule.one]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"one\", namespace = \"${var.ns}\" } } ]\n[rule.two]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"two\", namespace = \"${var.ns}\" } } ]\n");
    // An unknown context lists the ones there are.
    let out = r.kiln("plan", &["--context", "nope"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(
        stderr.contains("no context `nope`") && stderr.contains("its contexts:"),
        "{stderr}"
    );
    // A request timeout is taken, and a nonsensical one refused.
    let out = r.kiln("plan", &["--request-timeout", "30"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert_eq!(
        r.kiln("plan", &["--request-timeout", "-1"]).status.code(),
        Some(1)
    );
    // Answering no at the prune prompt, on a terminal: aborted, exit 1, nothing deleted.
    r.apply(&[]);
    let toml = std::fs::read_to_string(r.s.project().join("kiln.toml")).unwrap();
    r.s.write("kiln.toml", &toml[..toml.find("[rule.two]").unwrap()]);
    let command = format!(
        "'{}' apply '{}' --kubeconfig '{}' --skip-workload-gates",
        assert_cmd::cargo::cargo_bin("kiln").display(),
        r.s.project().display(),
        common::kubeconfig().display()
    );
    let mut script = std::process::Command::new("script")
        .args(["-qec", &command, "/dev/null"])
        .env("KILN_STORE", r.s.store())
        .env("KILN_NO_PROGRESS", "1")
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    {
        use std::io::Write as _;
        let mut stdin = script.stdin.take().unwrap();
        std::thread::sleep(std::time::Duration::from_secs(3));
        let _ = stdin.write_all(b"n\n");
    }
    let out = script.wait_with_output().unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("Continue? [y/N]"), "{text}");
    assert!(text.contains("aborted: nothing was applied"), "{text}");
    assert_eq!(out.status.code(), Some(1), "{text}");
    kubectl_ok(&["get", "configmap", "two", "-n", &r.ns]);
}

/// A pruned member that a finalizer holds (a namespace draining, a controller cleaning up) is
/// already being deleted: the next plan shows nothing to do instead of deleting it again.
#[test]
fn a_member_that_is_already_terminating_is_not_deleted_again() {
    let r = Realm::new("terminating");
    let held = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: held\n  finalizers: [kiln.test/hold]\ndata: {a: \"1\"}\n";
    r.rules(APP_RULE);
    r.s.write("app.yaml", held);
    assert_eq!(count(&r.apply(&[]), "create"), 2);
    r.assert_converged();
    // Removed from the project: apply deletes it, and the finalizer keeps it terminating.
    r.s.write(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: other}\ndata: {b: \"2\"}\n",
    );
    let removed = r.apply(&[]);
    assert_eq!(count(&removed, "delete"), 1, "{removed:#}");
    let live = kubectl_ok(&[
        "get",
        "configmap",
        "held",
        "-n",
        &r.ns,
        "-o",
        "jsonpath={.metadata.deletionTimestamp}",
    ]);
    assert!(!live.trim().is_empty(), "held by its finalizer");
    let plan = r.plan();
    assert_eq!(count(&plan, "delete"), 0, "{plan:#}");
    r.assert_converged();
    kubectl_ok(&[
        "patch",
        "configmap",
        "held",
        "-n",
        &r.ns,
        "--type=merge",
        "-p",
        "{\"metadata\":{\"finalizers\":null}}",
    ]);
}

/// The managers of an object: (manager, operation) pairs from its managedFields.
fn managers(ns: &str, name: &str) -> Vec<(String, String)> {
    let live: Value = serde_json::from_str(&kubectl_ok(&[
        "get",
        "configmap",
        name,
        "-n",
        ns,
        "-o",
        "json",
        "--show-managed-fields",
    ]))
    .unwrap();
    live["metadata"]["managedFields"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| {
            (
                e["manager"].as_str().unwrap().to_owned(),
                e["operation"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// Issue 7, class 6: an object made by `kubectl apply` (client-side) is adopted, its
/// ownership moves to the set's own field manager (the client-side manager's entry and the
/// last-applied annotation go), and a field later removed from the rules is really removed.
#[test]
fn client_side_applied_objects_migrate_to_the_sets_manager() {
    let r = Realm::new("csa");
    r.rules(APP_RULE);
    kubectl_ok(&["create", "namespace", &r.ns]);
    let by_hand = r.s.dir.path().join("by-hand.yaml");
    std::fs::write(
        &by_hand,
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: legacy, namespace: {}}}\ndata: {{a: \"1\", b: \"2\"}}\n", r.ns),
    )
    .unwrap();
    kubectl_ok(&["apply", "-f", by_hand.to_str().unwrap()]);
    assert!(
        managers(&r.ns, "legacy").contains(&("kubectl-client-side-apply".into(), "Update".into()))
    );
    r.s.write(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: legacy}\ndata: {a: \"1\", b: \"2\"}\n",
    );
    let plan = r.plan();
    let legacy = plan["changes"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == "legacy")
        .unwrap();
    assert_eq!(legacy["action"], "adopt", "{plan:#}");
    let set = plan["applyset"].as_str().unwrap().to_owned();
    r.apply(&[]);
    let ours = format!("kiln/{set}");
    assert_eq!(
        managers(&r.ns, "legacy"),
        [(ours.clone(), "Apply".to_owned())]
    );
    let annotation = kubectl_ok(&[
        "get",
        "cm",
        "legacy",
        "-n",
        &r.ns,
        "-o",
        "jsonpath={.metadata.annotations}",
    ]);
    assert!(
        !annotation.contains("last-applied-configuration"),
        "{annotation}"
    );
    r.assert_converged();
    // A key removed from the rules is removed from the cluster.
    r.s.write(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: legacy}\ndata: {a: \"1\"}\n",
    );
    r.apply(&[]);
    let data = kubectl_ok(&["get", "cm", "legacy", "-n", &r.ns, "-o", "jsonpath={.data}"]);
    assert!(data.contains("\"a\"") && !data.contains("\"b\""), "{data}");
    r.assert_converged();
}

/// Issue 7, class 7: each set applies with its own field manager (`kiln/<set id>`). Objects that
/// kiln's old shared manager `kiln` holds are taken over on the first apply, and a second set
/// that adopts a member takes its fields, so removing one from its rules removes it.
#[test]
fn every_set_has_its_own_field_manager() {
    let r = Realm::new("managers");
    r.rules(APP_RULE);
    r.s.write(
        "app.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: shared}\ndata: {a: \"1\", b: \"2\"}\n",
    );
    let plan = r.plan();
    let set = plan["applyset"].as_str().unwrap().to_owned();
    // As an older kiln wrote it: server-side apply by the shared manager `kiln`, a member.
    kubectl_ok(&["create", "namespace", &r.ns]);
    let old = r.s.dir.path().join("old.yaml");
    std::fs::write(
        &old,
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: shared, namespace: {}, labels: {{applyset.kubernetes.io/part-of: {set}}}}}\ndata: {{a: \"0\", b: \"2\"}}\n", r.ns),
    )
    .unwrap();
    kubectl_ok(&[
        "apply",
        "--server-side",
        "--field-manager=kiln",
        "-f",
        old.to_str().unwrap(),
    ]);
    let first = r.apply(&[]);
    assert_eq!(count(&first, "delete"), 0, "{first:#}");
    let ours = format!("kiln/{set}");
    assert_eq!(
        managers(&r.ns, "shared"),
        [(ours.clone(), "Apply".to_owned())],
        "the old manager is taken over"
    );
    let a = kubectl_ok(&[
        "get",
        "cm",
        "shared",
        "-n",
        &r.ns,
        "-o",
        "jsonpath={.data.a}",
    ]);
    assert_eq!(a, "1");
    r.assert_converged();

    // Another project adopts it: its own manager, and the first set's fields become its own.
    let other = common::Sandbox::new();
    other.write(
        "kiln.toml",
        &format!("[project]\nname = \"other-{ns}\"\n[rule.app]\nkind = \"manifest\"\nnamespace = \"{ns}\"\nobjects = [ {{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"shared\" }}, data = {{ a = \"1\" }} }} ]\n", ns = r.ns),
    );
    let kc = common::kubeconfig();
    let adopt = other
        .kiln()
        .arg("apply")
        .arg(other.project())
        .arg("--kubeconfig")
        .arg(&kc)
        .args(["--yes", "--adopt", "--json"])
        .output()
        .unwrap();
    assert!(
        adopt.status.success(),
        "{}",
        String::from_utf8_lossy(&adopt.stderr)
    );
    let theirs: Value = serde_json::from_slice(&adopt.stdout).unwrap();
    let their_set = theirs["applyset"].as_str().unwrap();
    assert_ne!(their_set, set);
    assert_eq!(
        managers(&r.ns, "shared"),
        [(format!("kiln/{their_set}"), "Apply".to_owned())],
        "one owner, the adopting set"
    );
    let data = kubectl_ok(&["get", "cm", "shared", "-n", &r.ns, "-o", "jsonpath={.data}"]);
    assert!(
        !data.contains("\"b\""),
        "b, which only the first set had, is gone: {data}"
    );
}
