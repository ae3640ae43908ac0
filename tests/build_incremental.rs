//! Cold, no-op and incremental builds, early cutoff, location and thread-count independence.

mod common;

use common::{hashes, small_platform, with_status, Sandbox};

#[test]
fn cold_build_builds_everything_and_noop_builds_nothing() {
    let s = Sandbox::new();
    small_platform(&s);
    let cold = s.build(&["--env", "staging"]);
    assert_eq!(cold["format_version"], 1);
    assert_eq!(cold["summary"]["built"], 5);
    assert_eq!(
        with_status(&cold, "built"),
        ["all", "api", "config", "ns", "worker"]
    );
    for r in cold["rules"].as_array().unwrap() {
        assert!(r["derivation"].as_str().unwrap().starts_with("blake3:"));
        assert!(r["output"].as_str().unwrap().starts_with("blake3:"));
        assert!(r["duration_ms"].as_f64().unwrap() >= 0.0);
    }
    let noop = s.build(&["--env", "staging"]);
    assert_eq!(noop["summary"]["built"], 0);
    assert_eq!(noop["summary"]["cached"], 5);
    assert_eq!(hashes(&cold), hashes(&noop));
}

#[test]
fn one_source_change_rebuilds_exactly_the_affected_rules() {
    let s = Sandbox::new();
    small_platform(&s);
    s.build(&["--env", "staging"]);
    // The config file feeds config -> (hashed name) -> api -> all. worker and ns stay.
    s.write("config/app.env", "LOG_LEVEL=debug\n");
    let r = s.build(&["--env", "staging"]);
    assert_eq!(with_status(&r, "built"), ["all", "api", "config"]);
    assert_eq!(with_status(&r, "cached"), ["ns", "worker"]);
}

#[test]
fn a_variable_change_rebuilds_only_the_rules_that_read_it() {
    let s = Sandbox::new();
    small_platform(&s);
    let before = s.build(&["--env", "staging"]);
    let text = std::fs::read_to_string(s.project().join("kiln.toml"))
        .unwrap()
        .replace("tag = \"1.0.0\"", "tag = \"1.0.1\"");
    s.write("kiln.toml", &text);
    let after = s.build(&["--env", "staging"]);
    assert_eq!(with_status(&after, "built"), ["all", "api"]);
    assert_ne!(hashes(&before)["api"], hashes(&after)["api"]);
    assert_eq!(hashes(&before)["worker"], hashes(&after)["worker"]);
}

#[test]
fn early_cutoff_stops_at_an_identical_output() {
    let s = Sandbox::new();
    small_platform(&s);
    let before = s.build(&["--env", "staging"]);
    // Same object, written differently: a comment and another key order. The worker's source
    // hash changes, so worker rebuilds; its normalized output does not, so `all` is cached.
    s.write(
        "k8s/worker.yaml",
        "# the worker\nkind: Deployment\napiVersion: apps/v1\nmetadata: {name: worker}\nspec:\n  selector: {matchLabels: {app: worker}}\n  replicas: 1\n  template:\n    metadata: {labels: {app: worker}}\n    spec:\n      containers: [{image: \"shop/worker:1\", name: worker}]\n",
    );
    let after = s.build(&["--env", "staging"]);
    assert_eq!(with_status(&after, "built"), ["worker"]);
    assert_eq!(
        with_status(&after, "cached"),
        ["all", "api", "config", "ns"]
    );
    let (b, a) = (hashes(&before), hashes(&after));
    assert_ne!(b["worker"].0, a["worker"].0, "derivation changed");
    assert_eq!(b["worker"].1, a["worker"].1, "output identical");
    assert_eq!(b["all"], a["all"]);
}

#[test]
fn environments_differ_where_variables_differ() {
    let s = Sandbox::new();
    small_platform(&s);
    let staging = hashes(&s.build(&["--env", "staging"]));
    let production = hashes(&s.build(&["--env", "production"]));
    assert_ne!(staging["api"], production["api"], "replicas differ");
    assert_eq!(
        staging["worker"], production["worker"],
        "worker reads no variable that differs"
    );
}

#[test]
fn hashes_do_not_depend_on_location_mtimes_or_threads() {
    let a = Sandbox::new();
    small_platform(&a);
    let b = Sandbox::new();
    small_platform(&b);
    let ha = hashes(&a.build(&["--env", "production", "-j", "1"]));
    // Other absolute path, other store, other thread count, files touched later.
    std::thread::sleep(std::time::Duration::from_millis(20));
    for f in ["k8s/api.yaml", "config/app.env"] {
        let p = b.project().join(f);
        let t = std::fs::read(&p).unwrap();
        std::fs::write(&p, t).unwrap();
    }
    let hb = hashes(&b.build(&["--env", "production", "-j", "4"]));
    assert_eq!(ha, hb);
}

#[test]
fn configmap_name_carries_a_content_hash_and_workloads_follow() {
    let s = Sandbox::new();
    small_platform(&s);
    s.build(&["--env", "staging"]);
    let cat = |file: &str| {
        let out = s
            .kiln()
            .args(["store", "cat", "all", "--env", "staging", "--file", file])
            .arg(s.project())
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8(out.stdout).unwrap()
    };
    let all = cat("all.yaml");
    let name = all
        .lines()
        .find_map(|l| l.trim().strip_prefix("name: api-config-"))
        .expect("hashed configmap name")
        .to_owned();
    assert_eq!(name.len(), 10);
    assert!(all.contains(&format!("name: api-config-{name}")));
    assert_eq!(
        all.matches(&format!("api-config-{name}")).count(),
        2,
        "the object and the Deployment's reference"
    );
    s.write("config/app.env", "LOG_LEVEL=warn\n");
    s.build(&["--env", "staging"]);
    let all2 = cat("all.yaml");
    assert!(!all2.contains(&name), "new content, new name");
}
