//! Bad input: each error names the file, line and rule, exits 1 and writes nothing to the store.

mod common;

use common::Sandbox;

fn fails(project: &[(&str, &str)], expect: &[&str]) {
    fails_with(&[], project, expect);
}

fn fails_with(args: &[&str], project: &[(&str, &str)], expect: &[&str]) {
    let s = Sandbox::new();
    for (p, t) in project {
        s.write(p, t);
    }
    let out = s.build_fails(args);
    assert_eq!(out.status.code(), Some(1), "user errors exit 1");
    let err = String::from_utf8_lossy(&out.stderr);
    for e in expect {
        assert!(err.contains(e), "stderr lacks {e:?}:\n{err}");
    }
    assert!(!s.store().exists(), "nothing may be written to the store");
}

#[test]
fn malformed_toml() {
    fails(
        &[(
            "kiln.toml",
            "[project]\nname = \"p\"\n\n[rule.api]\nkind = \"manifest\"\nsrcs = [\"a.yaml\"\n",
        )],
        &["kiln.toml:6:17", "invalid TOML", "unclosed array"],
    );
}

#[test]
fn unknown_kind() {
    fails(
        &[(
            "kiln.toml",
            "[project]\nname = \"p\"\n\n[rule.api]\nkind = \"helmchart\"\n",
        )],
        &[
            "kiln.toml:5:8",
            "rule `api`",
            "unknown kind `helmchart`",
            "manifest",
        ],
    );
}

#[test]
fn missing_dependency() {
    fails(
        &[(
            "kiln.toml",
            "[project]\nname = \"p\"\n[rule.api]\nkind = \"bundle\"\ndeps = [\"db\"]\n",
        )],
        &["kiln.toml:5:9", "rule `api`", "unknown dependency `db`"],
    );
}

#[test]
fn cycle() {
    fails(
        &[("kiln.toml", "[project]\nname = \"p\"\n[rule.a]\nkind = \"bundle\"\ndeps = [\"b\"]\n[rule.b]\nkind = \"bundle\"\ndeps = [\"a\"]\n")],
        &["kiln.toml:5:", "rule `a`", "dependency cycle: a -> b -> a"],
    );
}

#[test]
fn missing_source_file() {
    fails(
        &[(
            "kiln.toml",
            "[project]\nname = \"p\"\n[rule.api]\nkind = \"manifest\"\nsrcs = [\"k8s/api.yaml\"]\n",
        )],
        &[
            "kiln.toml:5:9",
            "rule `api`",
            "source file `k8s/api.yaml` does not exist",
        ],
    );
}

#[test]
fn attribute_type_error() {
    fails(
        &[("kiln.toml", "[project]\nname = \"p\"\n[rule.cfg]\nkind = \"configmap\"\nname = \"cfg\"\nhash_suffix = \"yes\"\n")],
        &["kiln.toml:6:15", "rule `cfg`", "attribute `hash_suffix`", "expected a boolean"],
    );
}

#[test]
fn unknown_attribute_in_an_included_file() {
    fails(
        &[
            ("kiln.toml", "[project]\nname = \"p\"\ninclude = [\"rules/*.toml\"]\n"),
            ("rules/web.toml", "# web\n[rule.cfg]\nkind = \"configmap\"\nname = \"cfg\"\nliterlas = { A = \"1\" }\n"),
        ],
        &["rules/web.toml:5:1", "rule `cfg`", "unknown field `literlas`"],
    );
}

#[test]
fn undefined_variable_in_a_source_file() {
    fails_with(
        &["--env", "prod"],
        &[
            ("kiln.toml", "[project]\nname = \"p\"\n[env.prod]\n[rule.api]\nkind = \"manifest\"\nsrcs = [\"api.yaml\"]\n"),
            ("api.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: x\ndata:\n  tag: ${var.tag}\n"),
        ],
        &["api.yaml:6:", "rule `api`", "variable `tag` is not defined for environment `prod`"],
    );
}

#[test]
fn unknown_environment_lists_the_known_ones() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[env.staging]\n[env.production]\n[rule.a]\nkind = \"bundle\"\n",
    );
    let out = s.build_fails(&["--env", "prod"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("unknown environment `prod`") && err.contains("production, staging"),
        "{err}"
    );
    assert!(!s.store().exists());
}

#[test]
fn a_failing_rule_stops_dependents_and_keep_going_builds_the_rest() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.bad]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo broken >&2; exit 3\"]\n[rule.after]\nkind = \"bundle\"\ndeps = [\"bad\"]\n[rule.other]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"echo ok > $out/ok\"]\n",
    );
    let out = s
        .kiln()
        .arg("build")
        .arg(s.project())
        .args(["--json", "--keep-going"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kiln.toml:3:") && err.contains("rule `bad` failed") && err.contains("broken"),
        "{err}"
    );
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(common::with_status(&r, "failed"), ["bad"]);
    assert_eq!(common::with_status(&r, "skipped"), ["after"]);
    assert_eq!(common::with_status(&r, "built"), ["other"]);
}

/// Input that used to panic or hang: each is a located user error (exit 1), quickly.
#[test]
fn hostile_objects_and_yaml_are_located_errors_not_panics() {
    let start = std::time::Instant::now();
    for (yaml, expect) in [
        (
            "apiVersion: v1/../x\nkind: ConfigMap\nmetadata: {name: a}\n".to_owned(),
            "is not `VERSION` or `GROUP/VERSION`",
        ),
        (
            "apiVersion: v1\nkind: Config/Map\nmetadata: {name: a}\n".to_owned(),
            "is not a Kubernetes kind",
        ),
        (
            format!("apiVersion: v1\nkind: ConfigMap\nmetadata: {{name: a}}\ndata: {{x: \"{}\", z: [}}\n", "y".repeat(70_000)),
            "a.yaml:4:",
        ),
        (format!("a: {}", "[".repeat(100_000)), "nested deeper than 256 levels"),
    ] {
        let s = common::Sandbox::new();
        s.write(
            "kiln.toml",
            "[project]\nname = \"p\"\n[rule.a]\nkind = \"manifest\"\nsrcs = [\"a.yaml\"]\n",
        );
        s.write("a.yaml", &yaml);
        let out = s.build_fails(&[]);
        assert_eq!(out.status.code(), Some(1), "{expect}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(expect), "stderr lacks {expect:?}:\n{}", &err[..err.len().min(2000)]);
        assert!(err.contains("rule `a`"), "{}", &err[..err.len().min(2000)]);
        assert!(!err.contains("panicked"));
    }
    // Inline objects too: checked at validation.
    fails(
        &[(
            "kiln.toml",
            "[project]\nname = \"p\"\n[rule.a]\nkind = \"manifest\"\nobjects = [ { apiVersion = \"v1\", kind = \"../x\", metadata = { name = \"a\" } } ]\n",
        )],
        &["kiln.toml:5:", "rule `a`", "is not a Kubernetes kind"],
    );
    assert!(start.elapsed() < std::time::Duration::from_secs(20));
}

/// What used to be accepted silently is now a located error.
#[test]
fn silent_accepts_are_errors() {
    // `envs` naming an environment the project does not have.
    fails(
        &[(
            "kiln.toml",
            "[project]\nname = \"p\"\n[env.staging]\n[env.production]\n[rule.a]\nkind = \"manifest\"\nenvs = [\"production\", \"stagin\"]\n",
        )],
        &["kiln.toml:7:", "rule `a`", "`stagin`", "production, staging"],
    );
    // `from` naming a rule that is not a dependency: caught before anything is built.
    fails(
        &[(
            "kiln.toml",
            "[project]\nname = \"p\"\n[rule.t]\nkind = \"template\"\nsrcs = [\"t.j2\"]\n[rule.c]\nkind = \"configmap\"\nname = \"c\"\nfrom = [\"t\"]\n",
        ), ("t.j2", "x\n")],
        &["kiln.toml:9:", "rule `c`", "`from` names `t`, which is not in `deps`"],
    );
    // `envs = []`: a rule in no environment.
    fails(
        &[(
            "kiln.toml",
            "[project]\nname = \"p\"\n[env.staging]\n[rule.a]\nkind = \"manifest\"\nenvs = []\n",
        )],
        &[
            "kiln.toml:6:",
            "rule `a`",
            "`envs = []` puts the rule in no environment",
        ],
    );
    // A ConfigMap data value that is not a string (the API server would refuse it at apply).
    fails(
        &[
            (
                "kiln.toml",
                "[project]\nname = \"p\"\n[rule.a]\nkind = \"manifest\"\nsrcs = [\"cm.yaml\"]\n",
            ),
            (
                "cm.yaml",
                "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: default}\ndata:\n  port: 8080\n",
            ),
        ],
        &["cm.yaml", "rule `a`", "`data.port` must be a string", "\"8080\""],
    );
    // Invalid UTF-8 in kiln.toml.
    let s = common::Sandbox::new();
    std::fs::create_dir_all(s.project()).unwrap();
    std::fs::write(
        s.project().join("kiln.toml"),
        b"[project]\nname = \"p\"\n# caf\xe9\n",
    )
    .unwrap();
    let out = s.build_fails(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kiln.toml:3:6") && err.contains("not valid UTF-8"),
        "{err}"
    );
    assert!(!s.store().exists());
}

/// Build-time refusals: a duplicate YAML key and a ConfigMap over 1 MiB, each naming the rule.
#[test]
fn duplicate_yaml_keys_and_oversized_configmaps_fail_their_rule() {
    for (files, expect) in [
        (
            vec![
                ("kiln.toml", "[project]\nname = \"p\"\n[rule.a]\nkind = \"manifest\"\nsrcs = [\"a.yaml\"]\n".to_owned()),
                ("a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata:\n  k: 1\n  k: 2\n".to_owned()),
            ],
            vec!["a.yaml:5:", "rule `a`", "duplicate entry with key \"k\""],
        ),
        (
            vec![
                ("kiln.toml", "[project]\nname = \"p\"\n[rule.big]\nkind = \"configmap\"\nname = \"big\"\nsrcs = [\"big.txt\"]\n".to_owned()),
                ("big.txt", "x".repeat(1024 * 1024 + 1)),
            ],
            vec!["rule `big`", "1 MiB"],
        ),
    ] {
        let s = common::Sandbox::new();
        for (p, t) in &files {
            s.write(p, t);
        }
        let out = s.build_fails(&[]);
        assert_eq!(out.status.code(), Some(1));
        let err = String::from_utf8_lossy(&out.stderr);
        for e in &expect {
            assert!(err.contains(e), "stderr lacks {e:?}:\n{err}");
        }
    }
}

/// Every invalid rule of a project in one run, and YAML/object errors found before the store
/// (or its source cache) is created.
#[test]
fn all_validation_errors_in_one_run_and_nothing_written() {
    fails(
        &[
            (
                "kiln.toml",
                "[project]\nname = \"p\"\n[rule.a]\nkind = \"manifest\"\nsrcs = [\"a.yaml\"]\n[rule.b]\nkind = \"manifest\"\nsrcs = [\"b.yaml\"]\n[rule.c]\nkind = \"configmap\"\nname = \"c\"\nsrcs = [\"missing.env\"]\n[rule.d]\nkind = \"helmchart\"\n",
            ),
            ("a.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: a}\ndata: [\n"),
            ("b.yaml", "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: Bad_Name}\n"),
        ],
        &[
            "4 rules are invalid",
            "a.yaml:5:",
            "rule `a`",
            "b.yaml:3:",
            "rule `b`",
            "`Bad_Name` is not a valid Kubernetes name",
            "kiln.toml:12:",
            "rule `c`",
            "kiln.toml:14:",
            "unknown kind `helmchart`",
        ],
    );
}

/// One object from two unrelated rules with different content fails the build (not only the
/// plan), also when one of the rules was built long before; identical copies and a rule over
/// its dependency are fine.
#[test]
fn an_object_defined_by_two_rules_fails_the_build() {
    let s = common::Sandbox::new();
    let cm = |rule: &str, value: &str, deps: &str| {
        format!("[rule.{rule}]\nkind = \"manifest\"\nnamespace = \"n\"\n{deps}objects = [ {{ apiVersion = \"v1\", kind = \"ConfigMap\", metadata = {{ name = \"x\" }}, data = {{ v = \"{value}\" }} }} ]\n")
    };
    s.write(
        "kiln.toml",
        &format!("[project]\nname = \"p\"\n{}", cm("a", "1", "")),
    );
    s.build(&[]);
    // Identical copies: fine.
    s.write(
        "kiln.toml",
        &format!(
            "[project]\nname = \"p\"\n{}{}",
            cm("a", "1", ""),
            cm("b", "1", "")
        ),
    );
    s.build(&[]);
    // A rule over its dependency: fine.
    s.write(
        "kiln.toml",
        &format!(
            "[project]\nname = \"p\"\n{}{}",
            cm("a", "1", ""),
            cm("b", "2", "deps = [\"a\"]\n")
        ),
    );
    s.build(&[]);
    // Unrelated, different: `a` is cached, `b` is built; the build fails naming both.
    s.write(
        "kiln.toml",
        &format!(
            "[project]\nname = \"p\"\n{}{}",
            cm("a", "1", ""),
            cm("b", "3", "")
        ),
    );
    let out = s.build_fails(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("rules `a` and `b` both produce `objects/n/ConfigMap.core/x.yaml`"),
        "{err}"
    );
    // Again, now that both are in the action cache: still refused.
    let again = s.build_fails(&[]);
    assert!(String::from_utf8_lossy(&again.stderr).contains("both produce"));
}

/// A patch that breaks an object's metadata fails its overlay rule with a named error; it used
/// to panic on an index assignment when the overlay then set the namespace.
#[test]
fn a_patch_that_breaks_metadata_fails_the_overlay_without_a_panic() {
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        r#"[project]
name = "p"

[rule.base]
kind = "manifest"
objects = [ { apiVersion = "v1", kind = "ConfigMap", metadata = { name = "c" } } ]

[rule.o]
kind = "overlay"
deps = ["base"]
namespace = "shop"
patches = [ { target = { kind = "ConfigMap", name = "c" }, json = [ { op = "replace", path = "/metadata", value = "gone" } ] } ]
"#,
    );
    let out = s.build_fails(&[]);
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("rule `o`"), "{err}");
    assert!(
        err.contains("no longer valid after the patches")
            && err.contains("`metadata` must be a mapping"),
        "{err}"
    );
    assert!(!err.contains("panicked"), "{err}");
}

#[test]
fn export_and_plan_show_the_rules_own_errors() {
    // Commands that build before they act (export, plan, apply) say which rule failed, where,
    // and why, as `kiln build` does, not only that the build failed.
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n\n[rule.api]\nkind = \"manifest\"\nsrcs = [\"api.yaml\"]\n\n\
         [rule.ok]\nkind = \"manifest\"\nsrcs = [\"ok.yaml\"]\ndeps = [\"api\"]\n",
    );
    s.write(
        "ok.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: ok}\n",
    );
    // Interpolated, so it is parsed when the rule builds (not when the project loads).
    s.write(
        "api.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: \"${kiln.env}\"\n",
    );
    let out = s
        .kiln()
        .arg("export")
        .arg(s.project())
        .arg("--out")
        .arg(s.dir.path().join("out"))
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    for e in [
        "the build failed",
        "api.yaml:",
        "rule `api`",
        "invalid YAML",
    ] {
        assert!(err.contains(e), "stderr lacks {e:?}:\n{err}");
    }
    assert!(!s.dir.path().join("out").exists(), "nothing exported");
}

/// YAML merge keys (`<<: *anchor`) are applied, as kubectl reads them, not kept as a `<<` field.
#[test]
fn yaml_merge_keys_are_applied() {
    let s = common::Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.a]\nkind = \"manifest\"\nsrcs = [\"d.yaml\"]\n",
    );
    s.write(
        "d.yaml",
        "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: c, namespace: default}\ndata:\n  <<: &defaults {level: info, format: json}\n  level: debug\n",
    );
    s.build_ok(&[]);
    let cm = s.cat("a", "objects/default/ConfigMap.core/c.yaml", &[]);
    assert!(
        cm.contains("format: json") && cm.contains("level: debug") && !cm.contains("<<"),
        "{cm}"
    );
}
