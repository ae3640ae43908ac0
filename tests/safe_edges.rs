//! Destructive paths are safe by construction: no flag is accepted and then ignored.
//! `destroy --rule` deletes exactly that rule's objects; build and cache flags are not
//! `destroy`'s; `--var` values take their variable's type.

mod common;

use common::realm::{kubectl, kubectl_ok, Realm};
use common::Sandbox;

const TWO_RULES: &str = "\n[rule.a]\nkind = \"configmap\"\nname = \"a\"\nnamespace = \"${var.ns}\"\ndeps = [\"ns\"]\nliterals = { k = \"1\" }\nhash_suffix = false\n\n[rule.b]\nkind = \"configmap\"\nname = \"b\"\nnamespace = \"${var.ns}\"\ndeps = [\"ns\"]\nliterals = { k = \"2\" }\nhash_suffix = false\n";

fn exists(kind: &str, name: &str, ns: &str) -> bool {
    kubectl(&["get", kind, name, "-n", ns]).status.success()
}

#[test]
fn destroy_with_rule_deletes_exactly_that_rules_objects_and_keeps_the_parent() {
    let r = Realm::new("scoped-destroy");
    r.rules(TWO_RULES);
    r.apply(&[]);
    let out = r.kiln("destroy", &["--rule", "a", "--yes"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 objects of other rules stay")
            || stderr.contains("2 objects of other rules stay"),
        "says what stays: {stderr}"
    );
    assert!(stderr.contains("the parent kept"), "{stderr}");
    assert!(!exists("configmap", "a", &r.ns), "a is gone");
    assert!(exists("configmap", "b", &r.ns), "b stays");
    kubectl_ok(&["get", "namespace", &r.ns]);
    // The set still knows b and the namespace: a plan recreates a only.
    let plan = r.plan();
    assert_eq!(common::count(&plan, "create"), 1, "{plan:#}");
    assert_eq!(
        common::changed(&plan, "create"),
        vec!["ConfigMap/a".to_owned()]
    );
    assert_eq!(common::count(&plan, "delete"), 0, "{plan:#}");
    // An unknown rule is refused and deletes nothing.
    let out = r.kiln("destroy", &["--rule", "nope", "--yes"]);
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no rule `nope`"));
    assert!(exists("configmap", "b", &r.ns));
    // Then the whole set goes, the parent with it.
    let out = r.kiln("destroy", &["--yes", "--wait", "--timeout", "120"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!exists("configmap", "b", &r.ns));
    assert!(!kubectl(&["get", "namespace", &r.ns]).status.success());
}

#[test]
fn destroy_refuses_the_build_and_cache_flags_it_would_ignore() {
    let s = Sandbox::new();
    s.write("kiln.toml", "[project]\nname = \"p\"\n");
    for flag in [
        &["--unsandboxed"][..],
        &["--cache", "file:///tmp/x"],
        &["--push"],
        &["--signing-key", "k"],
        &["--trusted-key", "a:b"],
        &["--cache-timeout", "3"],
    ] {
        let out = s
            .kiln()
            .arg("destroy")
            .arg(s.project())
            .args(flag)
            .args(["--dry-run"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(
            out.status.code(),
            Some(1),
            "a usage error: {flag:?}: {stderr}"
        );
        assert!(stderr.contains("unexpected argument"), "{flag:?}: {stderr}");
    }
}

fn typed_project(s: &Sandbox) {
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n\n[vars]\napi_replicas = 2\ntag = \"1.0.0\"\ndebug = false\n\n[env.staging]\n\n[env.production]\napi_replicas = 3\n\n[rule.cm]\nkind = \"manifest\"\nobjects = [ { apiVersion = \"example.io/v1\", kind = \"Setting\", metadata = { name = \"cm\", namespace = \"default\" }, spec = { r = \"${var.api_replicas}\", t = \"${var.tag}\", d = \"${var.debug}\" } } ]\n",
    );
}

#[test]
fn a_var_of_the_wrong_type_is_refused_at_its_definition() {
    let s = Sandbox::new();
    typed_project(&s);
    let out = s
        .kiln()
        .arg("build")
        .arg(s.project())
        .args(["--env", "production", "--var", "api_replicas=abc"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("variable `api_replicas` is an integer") && stderr.contains("kiln.toml:12"),
        "names the variable and where production sets it: {stderr}"
    );
    assert!(
        !s.store().join("roots").exists(),
        "nothing was built: {stderr}"
    );
    // Two wrong values: both reported in one run.
    let out = s
        .kiln()
        .arg("build")
        .arg(s.project())
        .args([
            "--env",
            "staging",
            "--var",
            "api_replicas=1.5",
            "--var",
            "debug=yes",
        ])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("`api_replicas` is an integer") && stderr.contains("`debug` is a boolean"),
        "{stderr}"
    );
}

#[test]
fn a_var_takes_the_type_of_its_default() {
    let s = Sandbox::new();
    typed_project(&s);
    s.build_ok(&[
        "--env",
        "staging",
        "--var",
        "api_replicas=4",
        "--var",
        "tag=1.10",
        "--var",
        "debug=true",
    ]);
    let out = s.dir.path().join("export");
    let run = s
        .kiln()
        .arg("export")
        .arg(s.project())
        .args([
            "--env",
            "staging",
            "--var",
            "api_replicas=4",
            "--var",
            "tag=1.10",
        ])
        .args(["--var", "debug=true", "--out"])
        .arg(&out)
        .output()
        .unwrap();
    assert!(
        run.status.success(),
        "{}",
        String::from_utf8_lossy(&run.stderr)
    );
    let cm = std::fs::read_to_string(out.join("default/Setting.example.io/cm.yaml")).unwrap();
    // An integer stays an integer and a boolean a boolean...
    assert!(cm.contains("r: 4\n") && cm.contains("d: true\n"), "{cm}");
    // ...and a string the string written: not the float 1.1.
    assert!(
        cm.contains("t: \"1.10\"") || cm.contains("t: '1.10'"),
        "{cm}"
    );
}

#[test]
fn out_of_range_durations_are_refused_everywhere_without_a_panic() {
    let s = Sandbox::new();
    s.write("kiln.toml", "[project]\nname = \"p\"\n");
    let huge = "18446744073709551615";
    let runs: Vec<Vec<&str>> = vec![
        vec!["plan", "--request-timeout", huge],
        vec!["plan", "--request-timeout", "1e300"],
        vec!["apply", "--timeout", huge],
        vec!["apply", "--lock-ttl", huge],
        vec!["apply", "--lock-timeout", huge],
        vec!["destroy", "--wait", "--timeout", huge],
        vec!["plan", "--cache-timeout", "9223372036854775807"],
        vec!["apply", "--timeout", "0"],
    ];
    for args in runs {
        let out = s
            .kiln()
            .arg(args[0])
            .arg(s.project())
            .args(&args[1..])
            .args(["--kubeconfig", "/nonexistent"])
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "{args:?}: {stderr}");
        assert!(stderr.contains("number of seconds"), "{args:?}: {stderr}");
    }
    // The same values in the config file and the environment.
    let config = s.dir.path().join("config/kiln");
    std::fs::create_dir_all(&config).unwrap();
    for (file, env) in [
        ("[defaults]\nrequest_timeout = 1e300\n", None),
        ("timeout_secs = 9223372036854775807\n", None),
        ("", Some(huge)),
    ] {
        std::fs::write(config.join("config.toml"), file).unwrap();
        let mut c = s.kiln();
        c.arg("plan")
            .arg(s.project())
            .args(["--kubeconfig", "/nonexistent"]);
        if let Some(v) = env {
            c.env("KILN_CACHE_TIMEOUT", v);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{file}: {stderr}");
        assert!(!stderr.contains("panicked"), "{file}: {stderr}");
        assert!(
            stderr.contains("number of seconds") || stderr.contains("out of range"),
            "{file}: {stderr}"
        );
    }
}

#[test]
fn a_cluster_that_is_down_is_named_by_its_server_and_context() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.a]\nkind = \"manifest\"\nobjects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"a\", namespace = \"default\" } } ]\n",
    );
    // The test cluster's kubeconfig, pointed at a port nothing listens on.
    let text = std::fs::read_to_string(common::kubeconfig()).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_owned();
    let dead = "https://127.0.0.1:1";
    let kubeconfig = s.dir.path().join("dead.kubeconfig");
    std::fs::write(&kubeconfig, text.replace(&server, dead)).unwrap();
    for cmd in ["plan", "apply", "destroy"] {
        let extra: &[&str] = if cmd == "plan" { &[] } else { &["--yes"] };
        let out = s
            .kiln()
            .arg(cmd)
            .arg(s.project())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        if cmd == "plan" {
            assert!(
                stderr.contains(&format!("cannot reach the cluster at {dead}"))
                    && stderr.contains("context `"),
                "{cmd}: {stderr}"
            );
            assert!(
                !stderr.contains("cannot resolve its object's kind"),
                "{stderr}"
            );
        }
    }
}

#[test]
fn every_unknown_dependency_is_reported_in_one_run() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.a]\nkind = \"manifest\"\ndeps = [\"nope1\"]\nobjects = []\n[rule.b]\nkind = \"manifest\"\ndeps = [\"nope2\"]\nobjects = []\n",
    );
    let out = s.build_fails(&[]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("unknown dependency `nope1`")
            && stderr.contains("unknown dependency `nope2`"),
        "{stderr}"
    );
}

/// Waits until `kubectl get ARGS` succeeds (a controller made the object).
fn eventually(args: &[&str]) {
    for _ in 0..100 {
        if kubectl(args).status.success() {
            return;
        }
        std::thread::sleep(std::time::Duration::from_millis(200));
    }
    panic!("kubectl get {args:?} never succeeded");
}

#[test]
fn objects_controllers_make_from_members_are_never_orphans() {
    let r = Realm::new("controller-made");
    r.rules("\n[rule.svc]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ { apiVersion = \"v1\", kind = \"Service\", metadata = { name = \"web\", namespace = \"${var.ns}\" }, spec = { selector = { app = \"web\" }, ports = [ { port = 80 } ] } } ]\n");
    r.apply(&[]);
    // The endpoints controller copies the Service's labels (the set's included) onto the
    // Endpoints; the endpoint slice controller onto slices it owns.
    eventually(&["get", "endpoints", "web", "-n", &r.ns]);
    let labels = kubectl_ok(&[
        "get",
        "endpoints",
        "web",
        "-n",
        &r.ns,
        "-o",
        "jsonpath={.metadata.labels}",
    ]);
    assert!(
        labels.contains("applyset.kubernetes.io/part-of"),
        "{labels}"
    );
    let plan = r.json("plan", &["--find-orphans"]);
    assert_eq!(common::count(&plan, "delete"), 0, "{plan:#}");
    let applied = r.apply(&["--prune-orphans"]);
    assert_eq!(applied["applied"]["deleted"], 0, "{applied:#}");
    kubectl_ok(&["get", "endpoints", "web", "-n", &r.ns]);
}

#[test]
fn an_unavailable_aggregated_api_is_skipped_with_a_warning() {
    let r = Realm::new("aggregated");
    r.rules("\n[rule.cm]\nkind = \"configmap\"\nname = \"cm\"\nnamespace = \"${var.ns}\"\ndeps = [\"ns\"]\nliterals = { a = \"1\" }\nhash_suffix = false\n");
    r.apply(&[]);
    // An APIService whose backing Service does not exist: its discovery answers 503, as a
    // metrics-server that is not running does.
    let group = format!("kt-broken-{}.example.com", std::process::id());
    let apiservice = format!(
        "apiVersion: apiregistration.k8s.io/v1\nkind: APIService\nmetadata:\n  name: v1.{group}\nspec:\n  group: {group}\n  version: v1\n  groupPriorityMinimum: 1000\n  versionPriority: 15\n  insecureSkipTLSVerify: true\n  service:\n    name: nothing-here\n    namespace: default\n"
    );
    let file = r.s.dir.path().join("apiservice.yaml");
    std::fs::write(&file, apiservice).unwrap();
    kubectl_ok(&["apply", "-f", file.to_str().unwrap()]);
    let plan = r.kiln("plan", &["--find-orphans"]);
    let destroy = r.kiln("destroy", &["--find-orphans", "--yes"]);
    kubectl(&["delete", "apiservice", &format!("v1.{group}")]);
    let stderr = String::from_utf8_lossy(&plan.stderr);
    assert!(plan.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("{group}/v1")) && stderr.contains("unavailable"),
        "{stderr}"
    );
    let stderr = String::from_utf8_lossy(&destroy.stderr);
    assert!(destroy.status.success(), "{stderr}");
    assert!(!exists("configmap", "cm", &r.ns));
}

#[test]
fn a_namespace_nobody_creates_is_refused_before_any_write() {
    let r = Realm::new("gap");
    let missing = format!("{}-missing", r.ns);
    r.rules(&format!(
        "\n[rule.here]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ {{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"here\", namespace = \"${{var.ns}}\" }} }} ]\n\n[rule.velero]\nkind = \"manifest\"\nobjects = [ {{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"backup\", namespace = \"{missing}\" }} }} ]\n"
    ));
    for cmd in ["plan", "apply"] {
        let extra: &[&str] = if cmd == "apply" {
            &["--yes", "--skip-workload-gates"]
        } else {
            &[]
        };
        let out = r.kiln(cmd, extra);
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(1), "{cmd}: {stderr}");
        assert!(
            stderr.contains("rule `velero`")
                && stderr.contains(&format!("namespace `{missing}` does not exist"))
                && stderr.contains("nothing was written"),
            "{cmd}: {stderr}"
        );
    }
    assert!(
        !kubectl(&["get", "namespace", &r.ns]).status.success(),
        "nothing was written, not even the namespace of the first wave"
    );
    // The namespace in the set closes the gap: the plan says which objects it could not
    // dry-run, and why.
    r.rules(&format!(
        "\n[rule.missing-ns]\nkind = \"manifest\"\nobjects = [ {{ apiVersion = \"v1\", kind = \"Namespace\", metadata = {{ name = \"{missing}\" }} }} ]\n\n[rule.velero]\nkind = \"manifest\"\ndeps = [\"missing-ns\"]\nobjects = [ {{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"backup\", namespace = \"{missing}\" }} }} ]\n"
    ));
    let out = r.kiln("plan", &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains(&format!(
            "not dry-run: 1 objects (rules `velero`): its namespace `{missing}` is created by this run"
        )),
        "{text}"
    );
    r.apply(&[]);
    kubectl_ok(&["get", "configmap", "backup", "-n", &missing]);
    let _ = kubectl(&["delete", "namespace", &missing, "--wait=false"]);
}

/// `resourceVersion` of an object (`kubectl get ARGS`).
fn version_of(args: &[&str]) -> String {
    let mut a = vec!["get"];
    a.extend_from_slice(args);
    a.extend_from_slice(&["-o", "jsonpath={.metadata.resourceVersion}"]);
    kubectl_ok(&a)
}

#[test]
fn a_preview_instance_shares_what_it_does_not_change_and_its_destroy_keeps_the_base() {
    let r = Realm::new("preview-share");
    let role = format!("{}-reader", r.ns);
    let rules = |role_verbs: &str| {
        format!(
            "\n[rule.shared]\nkind = \"manifest\"\nobjects = [ {{ apiVersion = \"rbac.authorization.k8s.io/v1\", kind = \"ClusterRole\", metadata = {{ name = \"{role}\" }}, rules = [ {{ apiGroups = [\"\"], resources = [\"configmaps\"], verbs = [{role_verbs}] }} ] }} ]\n\n[rule.app]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ {{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"app-${{var.mode}}\", namespace = \"${{var.ns}}\" }}, data = {{ mode = \"${{var.mode}}\" }} }} ]\n"
        )
    };
    r.rules(&rules("\"get\""));
    let toml = std::fs::read_to_string(r.s.project().join("kiln.toml")).unwrap();
    r.s.write(
        "kiln.toml",
        &toml.replace("[vars]\n", "[vars]\nmode = \"base\"\n"),
    );
    r.apply(&[]);
    let before = (
        version_of(&["namespace", &r.ns]),
        version_of(&["clusterrole", &role]),
        version_of(&["configmap", "app-base", "-n", &r.ns]),
    );
    // The preview: the namespace and the ClusterRole are identical, so they stay the base's.
    let preview = r.apply(&["--var", "mode=pr-1"]);
    assert_eq!(common::count(&preview, "create"), 1, "{preview:#}");
    let shared: Vec<&str> = preview["changes"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|c| c["shared_with"].is_string())
        .map(|c| c["name"].as_str().unwrap())
        .collect();
    assert_eq!(shared.len(), 2, "{preview:#}");
    kubectl_ok(&["get", "configmap", "app-pr-1", "-n", &r.ns]);
    // Destroying the preview deletes only what it owns.
    let out = r.kiln(
        "destroy",
        &["--var", "mode=pr-1", "--yes", "--wait", "--timeout", "60"],
    );
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(!exists("configmap", "app-pr-1", &r.ns));
    let after = (
        version_of(&["namespace", &r.ns]),
        version_of(&["clusterrole", &role]),
        version_of(&["configmap", "app-base", "-n", &r.ns]),
    );
    assert_eq!(before, after, "every base object is present and unchanged");
    r.assert_converged();

    // A preview that would change a base object is refused, and the hint says what --adopt
    // would do instead of just suggesting it.
    let toml = std::fs::read_to_string(r.s.project().join("kiln.toml")).unwrap();
    r.s.write(
        "kiln.toml",
        &toml.replace("verbs = [\"get\"]", "verbs = [\"${var.mode}\"]"),
    );
    let out = r.kiln("plan", &["--var", "mode=list"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&role) && stderr.contains("destroy"),
        "{stderr}"
    );
    let _ = kubectl(&["delete", "clusterrole", &role]);
}

/// A kubeconfig like the test cluster's whose server accepts connections and never answers.
fn stalled_kubeconfig(dir: &std::path::Path) -> (std::path::PathBuf, std::net::TcpListener) {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    let text = std::fs::read_to_string(common::kubeconfig()).unwrap();
    let server = text
        .lines()
        .find_map(|l| l.trim().strip_prefix("server: "))
        .unwrap()
        .to_owned();
    let path = dir.join("stalled.kubeconfig");
    std::fs::write(
        &path,
        text.replace(&server, &format!("https://127.0.0.1:{port}")),
    )
    .unwrap();
    (path, listener)
}

#[test]
fn a_request_timeout_ends_a_stalled_request() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.a]\nkind = \"manifest\"\nobjects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"a\", namespace = \"default\" } } ]\n",
    );
    let (kubeconfig, listener) = stalled_kubeconfig(s.dir.path());
    // Accept every connection and hold it open, answering nothing.
    std::thread::spawn(move || {
        let mut held = Vec::new();
        for c in listener.incoming().flatten() {
            held.push(c);
        }
    });
    for (cmd, extra) in [
        ("plan", &[][..]),
        ("apply", &["--yes", "--lock-timeout", "0"][..]),
        ("destroy", &["--yes", "--lock-timeout", "0"][..]),
    ] {
        let started = std::time::Instant::now();
        let out = s
            .kiln()
            .arg(cmd)
            .arg(s.project())
            .arg("--kubeconfig")
            .arg(&kubeconfig)
            .args(["--request-timeout", "1"])
            .args(extra)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cmd}: {stderr}");
        assert!(
            started.elapsed() < std::time::Duration::from_secs(30),
            "{cmd} took {:?} with --request-timeout 1: {stderr}",
            started.elapsed()
        );
    }
}

/// The test cluster has no node: a Deployment's rollout gate never passes.
fn never_ready(image: &str) -> String {
    format!("\n[rule.web]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ {{ apiVersion = \"apps/v1\", kind = \"Deployment\", metadata = {{ name = \"web\", namespace = \"${{var.ns}}\" }}, spec = {{ replicas = 1, selector = {{ matchLabels = {{ app = \"web\" }} }}, template = {{ metadata = {{ labels = {{ app = \"web\" }} }}, spec = {{ containers = [ {{ name = \"web\", image = \"{image}\" }} ] }} }} }} }} ]\n")
}

#[test]
fn health_gates_are_waited_for_skipped_or_not_waited_for_as_asked() {
    let r = Realm::new("gates");
    let timed = |extra: &[&str]| {
        let started = std::time::Instant::now();
        let out = r.kiln("apply", extra);
        (out, started.elapsed())
    };
    // --no-wait: written, not waited for.
    r.rules(&never_ready("web:1"));
    let (out, took) = timed(&["--yes", "--no-wait"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(took < std::time::Duration::from_secs(20), "{took:?}");
    // Gates on, --timeout 2: the rollout that cannot happen fails the apply, naming it.
    r.rules(&never_ready("web:2"));
    let (out, took) = timed(&["--yes", "--timeout", "2"]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("web"), "{stderr}");
    assert!(
        took < std::time::Duration::from_secs(30),
        "{took:?}: {stderr}"
    );
    // --skip-workload-gates: the rollout gate is not waited for.
    r.rules(&never_ready("web:3"));
    let (out, _) = timed(&["--yes", "--skip-workload-gates", "--timeout", "2"]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

#[test]
fn parallel_bounds_the_writes_in_flight() {
    let r = Realm::new("parallel");
    let rules = |v: &str| {
        let objects: Vec<String> = (0..40)
            .map(|i| format!("{{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"c{i}\", namespace = \"${{var.ns}}\" }}, data = {{ v = \"{v}\" }} }}"))
            .collect();
        format!(
            "\n[rule.many]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ {} ]\n",
            objects.join(", ")
        )
    };
    r.rules(&rules("1"));
    let one = r.apply(&["--parallel", "1"]);
    assert_eq!(
        one["applied"]["max_concurrent_writes"], 1,
        "{:#}",
        one["applied"]
    );
    r.rules(&rules("2"));
    let eight = r.apply(&["--parallel", "8"]);
    let most = eight["applied"]["max_concurrent_writes"].as_u64().unwrap();
    assert!((2..=8).contains(&most), "{most}");
}

#[test]
fn destroy_wait_ends_at_its_timeout_naming_what_is_left() {
    let r = Realm::new("destroy-wait");
    r.rules("\n[rule.held]\nkind = \"manifest\"\ndeps = [\"ns\"]\nobjects = [ { apiVersion = \"v1\", kind = \"ConfigMap\", metadata = { name = \"held\", namespace = \"${var.ns}\", finalizers = [\"kiln.dev/test-hold\"] } } ]\n");
    let applied = r.apply(&[]);
    let id = applied["applyset"].as_str().unwrap().to_owned();
    // An orphan: labeled as the set's, of a kind the parent does not list.
    let orphan = r.s.dir.path().join("orphan.json");
    std::fs::write(
        &orphan,
        format!("{{\"apiVersion\":\"v1\",\"kind\":\"Service\",\"metadata\":{{\"name\":\"orphan\",\"namespace\":\"{}\",\"labels\":{{\"applyset.kubernetes.io/part-of\":\"{id}\"}}}},\"spec\":{{\"ports\":[{{\"port\":80,\"protocol\":\"TCP\"}}]}}}}", r.ns),
    )
    .unwrap();
    kubectl_ok(&["create", "-f", orphan.to_str().unwrap()]);
    // The destroy waits on the held ConfigMap, holding the set's lock with its own TTL.
    let first = std::process::Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .env("KILN_STORE", r.s.store())
        .env("KILN_NO_PROGRESS", "1")
        .arg("destroy")
        .arg(r.s.project())
        .arg("--kubeconfig")
        .arg(common::kubeconfig())
        .args([
            "--yes",
            "--wait",
            "--timeout",
            "8",
            "--lock-ttl",
            "7",
            "--find-orphans",
        ])
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let lease = format!("kiln-{}--", r.ns);
    let lease = lease.trim_end_matches('-');
    let mut ttl = String::new();
    for _ in 0..50 {
        let got = kubectl(&[
            "get",
            "lease",
            lease,
            "-n",
            "default",
            "-o",
            "jsonpath={.spec.leaseDurationSeconds}",
        ]);
        if got.status.success() {
            ttl = String::from_utf8_lossy(&got.stdout).into_owned();
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(100));
    }
    assert_eq!(ttl, "7", "destroy's lock carries --lock-ttl");
    // A second destroy gives up on the lock after --lock-timeout.
    let second = r.kiln("destroy", &["--yes", "--lock-timeout", "1"]);
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("locked by"), "{stderr}");
    let out = first.wait_with_output().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains("held"), "names what is left: {stderr}");
    assert!(
        !exists("service", "orphan", &r.ns),
        "--find-orphans deleted the orphan"
    );
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
