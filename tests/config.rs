//! The user's config file: defaults for the store, parallelism, colour and clusters, and
//! `kiln config show` saying where each setting came from.

mod common;

use common::Sandbox;
use serde_json::Value;

fn with_config(s: &Sandbox, text: &str) {
    let dir = s.dir.path().join("config/kiln");
    std::fs::create_dir_all(&dir).unwrap();
    std::fs::write(dir.join("config.toml"), text).unwrap();
}

fn show(
    s: &Sandbox,
    cmd: &mut assert_cmd::Command,
    extra: &[&str],
) -> Vec<(String, Value, String)> {
    let out = cmd
        .args(["config", "show", "--json"])
        .arg(s.project())
        .args(extra)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["format_version"], 1);
    v["settings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|s| {
            (
                s["name"].as_str().unwrap().to_owned(),
                s["value"].clone(),
                s["source"]["kind"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn setting<'a>(all: &'a [(String, Value, String)], name: &str) -> (&'a Value, &'a str) {
    let (_, v, src) = all.iter().find(|(n, _, _)| n == name).unwrap();
    (v, src)
}

#[test]
fn the_file_gives_defaults_and_show_names_each_source() {
    let s = Sandbox::new();
    common::small_platform(&s);
    let store = s.dir.path().join("store-from-config");
    with_config(
        &s,
        &format!(
            "trusted_keys = [\"ci:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\"]\n\n[defaults]\nstore = \"{}\"\njobs = 3\ncolor = \"never\"\n\n[[clusters]]\nproject = \"shop\"\nenv = \"production\"\ncontext = \"prod-eu\"\n",
            store.display()
        ),
    );
    // Without KILN_STORE, the file's store is used, and a build fills it.
    let mut build = s.kiln();
    build
        .env_remove("KILN_STORE")
        .arg("build")
        .arg(s.project())
        .args(["--env", "staging"])
        .assert()
        .success();
    assert!(
        store.join("objects").exists() || store.join("trees").exists(),
        "the file's store holds the build"
    );

    let mut cmd = s.kiln();
    cmd.env_remove("KILN_STORE")
        .env_remove("KILN_CACHE")
        .env_remove("KUBECONFIG");
    let all = show(&s, &mut cmd, &["--env", "production"]);
    assert_eq!(
        setting(&all, "store"),
        (&Value::from(store.display().to_string()), "file")
    );
    assert_eq!(setting(&all, "jobs"), (&Value::from("3"), "file"));
    assert_eq!(setting(&all, "color"), (&Value::from("never"), "file"));
    assert_eq!(setting(&all, "context"), (&Value::from("prod-eu"), "file"));
    assert_eq!(
        setting(&all, "trusted_keys"),
        (
            &Value::from("ci:AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA="),
            "file"
        )
    );
    assert_eq!(setting(&all, "substituters").1, "default");
    // Staging matches no [[clusters]] entry: the kubeconfig's current context.
    let mut cmd = s.kiln();
    cmd.env_remove("KUBECONFIG");
    let all = show(&s, &mut cmd, &["--env", "staging"]);
    assert_eq!(setting(&all, "context"), (&Value::Null, "default"));
    // The environment beats the file, and a flag beats both.
    let mut cmd = s.kiln();
    let all = show(
        &s,
        cmd.env("KILN_STORE", "/tmp/from-env")
            .env("KILN_CACHE", "file:///c"),
        &[],
    );
    assert_eq!(
        setting(&all, "store"),
        (&Value::from("/tmp/from-env"), "environment")
    );
    assert_eq!(
        setting(&all, "substituters"),
        (&Value::from("file:///c"), "environment")
    );
    let mut cmd = s.kiln();
    let all = show(
        &s,
        &mut cmd,
        &["--store", "/tmp/from-flag", "--color", "always"],
    );
    assert_eq!(
        setting(&all, "store"),
        (&Value::from("/tmp/from-flag"), "flag")
    );
    assert_eq!(setting(&all, "color"), (&Value::from("always"), "flag"));
}

#[test]
fn a_context_from_the_file_reaches_the_cluster_connection() {
    let s = Sandbox::new();
    common::small_platform(&s);
    let kubeconfig = s.dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\nusers: [{name: u, user: {token: t}}]\ncontexts: [{name: dev, context: {cluster: c, user: u}}]\ncurrent-context: dev\n",
    )
    .unwrap();
    with_config(
        &s,
        &format!(
            "[defaults]\nkubeconfig = \"{}\"\n\n[[clusters]]\nproject = \"shop\"\ncontext = \"prod-eu\"\n",
            kubeconfig.display()
        ),
    );
    let out = s
        .kiln()
        .env_remove("KUBECONFIG")
        .arg("plan")
        .arg(s.project())
        .args(["--env", "staging"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "a kubeconfig without the context"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("prod-eu") && err.contains("dev"),
        "the file's context is used, and the kubeconfig's are listed: {err}"
    );
}

#[test]
fn a_bad_config_file_is_refused_with_its_path_and_table() {
    let s = Sandbox::new();
    common::small_platform(&s);
    with_config(&s, "[defaults]\njbos = 3\n");
    let out = s
        .kiln()
        .arg("build")
        .arg(s.project())
        .args(["--env", "staging"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("config.toml") && err.contains("[defaults]") && err.contains("jbos"),
        "{err}"
    );
}
