//! The remote cache against real servers: `kiln cache serve` (started here, as a CI team
//! would run it), an S3-speaking server (moto, installed by scripts/test), and faulty HTTP
//! servers on real sockets for the failure cases.

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command as StdCommand, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{copy_dir, small_platform, with_status, Sandbox};
use serde_json::Value;

/// `kiln cache serve` on a free port, with its access log collected.
struct Server {
    child: Child,
    url: String,
    log: Arc<Mutex<String>>,
}

impl Server {
    fn start(dir: &Path, token: Option<&Path>) -> Self {
        let mut cmd = StdCommand::new(assert_cmd::cargo::cargo_bin("kiln"));
        cmd.args(["cache", "serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .env_remove("KILN_LOG")
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        if let Some(t) = token {
            cmd.arg("--token-file").arg(t);
        }
        let mut child = cmd.spawn().unwrap();
        let mut lines = BufReader::new(child.stderr.take().unwrap()).lines();
        let first = lines.next().unwrap().unwrap();
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap_or_else(|| panic!("no address in {first:?}"))
            .to_owned();
        let log = Arc::new(Mutex::new(String::new()));
        let sink = log.clone();
        std::thread::spawn(move || {
            for line in lines.map_while(Result::ok) {
                let mut l = sink.lock().unwrap();
                l.push_str(&line);
                l.push('\n');
            }
        });
        Self { child, url, log }
    }

    /// Access-log lines so far, and clears them.
    fn take_log(&self) -> String {
        std::thread::sleep(Duration::from_millis(100));
        std::mem::take(&mut *self.log.lock().unwrap())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A CI team's setup: a key pair, a push token, a server directory.
struct Team {
    dir: tempfile::TempDir,
    public: String,
}

impl Team {
    fn new() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let out = StdCommand::new(assert_cmd::cargo::cargo_bin("kiln"))
            .args(["cache", "keygen", "ci-main", "--out"])
            .arg(dir.path().join("ci-main.key"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::fs::write(dir.path().join("push.token"), "s3cret-push-token\n").unwrap();
        let public = String::from_utf8(out.stdout).unwrap().trim().to_owned();
        Self { dir, public }
    }

    fn key(&self) -> PathBuf {
        self.dir.path().join("ci-main.key")
    }

    fn token(&self) -> PathBuf {
        self.dir.path().join("push.token")
    }

    fn cache_dir(&self) -> PathBuf {
        self.dir.path().join("cache")
    }

    fn serve(&self) -> Server {
        Server::start(&self.cache_dir(), Some(&self.token()))
    }

    /// The flags of a CI run on main: push, signed.
    fn push_flags(&self, url: &str) -> Vec<String> {
        vec![
            "--cache".into(),
            url.into(),
            "--push".into(),
            "--signing-key".into(),
            self.key().display().to_string(),
            "--cache-token-file".into(),
            self.token().display().to_string(),
        ]
    }

    /// `kiln cache verify --json` of the team's cache directory, asserting it found no problem.
    fn verify(&self) -> Value {
        let out = StdCommand::new(assert_cmd::cargo::cargo_bin("kiln"))
            .args([
                "cache",
                "verify",
                "--json",
                "--trusted-key",
                &self.public,
                "--cache",
            ])
            .arg(format!("file://{}", self.cache_dir().display()))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert!(out.status.success(), "{v}");
        v
    }

    /// The flags of any other runner: pull, trusting the team's key.
    fn pull_flags(&self, url: &str) -> Vec<String> {
        vec![
            "--cache".into(),
            url.into(),
            "--trusted-key".into(),
            self.public.clone(),
        ]
    }
}

const STAGING: &[&str] = &["--env", "staging"];

fn strs(v: &[String]) -> Vec<&str> {
    v.iter().map(String::as_str).collect()
}

/// `kiln build --json` with `flags`, asserting success; the report and stderr.
fn build(s: &Sandbox, env: Option<&str>, flags: &[String]) -> (Value, String) {
    let mut args: Vec<&str> = vec!["--json"];
    if let Some(e) = env {
        args.extend(["--env", e]);
    }
    args.extend(strs(flags));
    let out = s.build_ok(&args);
    (
        serde_json::from_slice(&out.stdout).unwrap(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn archives_in(store: &Path) -> usize {
    common::store_files(store)
        .iter()
        .filter(|p| {
            p.to_string_lossy().ends_with(".tar.zst") && p.to_string_lossy().contains("/objects/")
        })
        .count()
}

/// A sandbox whose project is a copy of an example, at its own path.
fn checkout(example: &str) -> Sandbox {
    let s = Sandbox::new();
    let src = Path::new(env!("CARGO_MANIFEST_DIR"))
        .join("examples")
        .join(example);
    copy_dir(&src, &s.project());
    s
}

fn rule_field(report: &Value, rule: &str, field: &str) -> String {
    report["rules"]
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["name"] == rule)
        .unwrap_or_else(|| panic!("no rule {rule}"))[field]
        .as_str()
        .unwrap()
        .to_owned()
}

fn warnings(stderr: &str) -> usize {
    stderr.matches("WARN").count()
}

#[test]
fn two_ci_runners_share_an_example_through_kiln_cache_serve() {
    let team = Team::new();
    let server = team.serve();
    let a = checkout("odordiff-2");
    let (first, _) = build(&a, Some("staging"), &team.push_flags(&server.url));
    let rules = first["summary"]["rules"].as_u64().unwrap();
    assert_eq!(first["summary"]["built"], rules);
    assert_eq!(first["cache"][0]["pushed_entries"], rules);
    let _ = server.take_log();

    // Runner B: another checkout path, an empty store. Everything is pulled, nothing built,
    // and only action entries cross the network.
    let b = checkout("odordiff-2");
    let (pulled, stderr) = build(&b, Some("staging"), &team.pull_flags(&server.url));
    assert_eq!(pulled["summary"]["built"], 0, "{stderr}");
    assert_eq!(pulled["summary"]["pulled"], rules);
    assert_eq!(pulled["cache"][0]["hits"], rules);
    assert_eq!(
        pulled["cache"][0]["requests"], rules,
        "one request per rule"
    );
    let log = server.take_log();
    assert_eq!(log.matches("GET ").count() as u64, rules, "{log}");
    assert!(!log.contains("/cas/") && !log.contains("HEAD "), "{log}");
    assert_eq!(archives_in(&b.store()), 0, "no archive was downloaded");
    assert_eq!(warnings(&stderr), 0, "{stderr}");
    for r in pulled["rules"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        assert_eq!(r["output"], rule_field(&first, name, "output").as_str());
    }

    // B changes one source: exactly the rules whose derivation moved are built (the changed
    // one and its dependents), everything else comes from B's store or the cache.
    let env = b.project().join("config/api.env");
    let mut text = std::fs::read_to_string(&env).unwrap();
    text.push_str("FEATURE_X=on\n");
    std::fs::write(&env, text).unwrap();
    let (changed, stderr) = build(&b, Some("staging"), &team.pull_flags(&server.url));
    let moved: Vec<String> = changed["rules"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            r["derivation"]
                != rule_field(&first, r["name"].as_str().unwrap(), "derivation").as_str()
        })
        .map(|r| r["name"].as_str().unwrap().to_owned())
        .collect::<std::collections::BTreeSet<_>>()
        .into_iter()
        .collect();
    assert!(
        !moved.is_empty() && (moved.len() as u64) < rules,
        "{moved:?}"
    );
    assert_eq!(with_status(&changed, "built"), moved, "{stderr}");
    assert_eq!(changed["summary"]["failed"], 0);
    // The rebuilt rules read their unchanged dependencies' archives, fetched on demand.
    assert!(server.take_log().contains("/cas/"));
    // B's artifacts equal what a clean local build of the same sources gives.
    let local = Sandbox::new();
    copy_dir(&b.project(), &local.project());
    let (reference, _) = build(&local, Some("staging"), &[]);
    for r in reference["rules"].as_array().unwrap() {
        let name = r["name"].as_str().unwrap();
        assert_eq!(
            r["output"],
            rule_field(&changed, name, "output").as_str(),
            "{name}"
        );
    }
}

/// The team's cache holding `small_platform`, built and pushed by runner A.
fn pushed_small_platform(team: &Team, server: &Server) -> (Sandbox, Value) {
    let a = Sandbox::new();
    small_platform(&a);
    let (report, _) = build(&a, Some("staging"), &team.push_flags(&server.url));
    assert_eq!(report["cache"][0]["pushed_entries"], 5);
    assert_eq!(report["cache"][0]["pushed_archives"], 5);
    (a, report)
}

fn small_platform_runner() -> Sandbox {
    let b = Sandbox::new();
    small_platform(&b);
    b
}

fn kiln_in(s: &Sandbox, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = s.kiln();
    c.args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

/// `kiln cache pull --all` on a fresh runner: succeeds, with `worker` built locally after a
/// refusal, and the store holding only good objects.
fn pull_refuses_worker(team: &Team, server: &Server, a: &Sandbox, env: &[(&str, &str)]) -> String {
    let b = small_platform_runner();
    let mut args = vec!["cache", "pull", "--all", "--env", "staging"];
    let project = b.project().display().to_string();
    args.push(&project);
    let flags = team.pull_flags(&server.url);
    args.extend(strs(&flags));
    let out = kiln_in(&b, &args, env);
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    assert!(stderr.contains("refused archive"), "{stderr}");
    assert!(stderr.contains("building them locally"), "{stderr}");
    let verify = kiln_in(&b, &["store", "verify", "--json"], &[]);
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stdout)
    );
    let ours = b.cat_bytes(
        "worker",
        "objects/shop/Deployment.apps/worker.yaml",
        STAGING,
    );
    let theirs = a.cat_bytes(
        "worker",
        "objects/shop/Deployment.apps/worker.yaml",
        STAGING,
    );
    assert_eq!(ours, theirs, "the locally built artifact is the right one");
    stderr
}

fn archive_path(team: &Team, report: &Value, rule: &str) -> PathBuf {
    let out = rule_field(report, rule, "output");
    team.cache_dir()
        .join("cas")
        .join(format!("{}.tar.zst", out.trim_start_matches("blake3:")))
}

fn entry_path(team: &Team, report: &Value, rule: &str) -> PathBuf {
    let drv = rule_field(report, rule, "derivation");
    team.cache_dir()
        .join("ac")
        .join(drv.trim_start_matches("blake3:"))
}

#[test]
fn tampered_and_swapped_archives_are_refused_and_built_locally() {
    let team = Team::new();
    let server = team.serve();
    let (a, report) = pushed_small_platform(&team, &server);
    let worker = archive_path(&team, &report, "worker");
    let good = std::fs::read(&worker).unwrap();

    // One flipped byte.
    let mut bad = good.clone();
    let mid = bad.len() / 2;
    bad[mid] ^= 0x40;
    std::fs::write(&worker, &bad).unwrap();
    pull_refuses_worker(&team, &server, &a, &[]);

    // A valid archive under another key.
    std::fs::copy(archive_path(&team, &report, "ns"), &worker).unwrap();
    let stderr = pull_refuses_worker(&team, &server, &a, &[]);
    assert!(stderr.contains("hashes to"), "{stderr}");
    std::fs::write(&worker, &good).unwrap();
}

/// Raw tar entries, zstd-compressed: the store tests' hostile archives.
fn hostile(entries: &[(&str, tar::EntryType, &[u8], Option<&str>)]) -> Vec<u8> {
    let mut b = tar::Builder::new(Vec::new());
    for (name, kind, data, link) in entries {
        let mut h = tar::Header::new_old();
        h.as_old_mut().name[..name.len()].copy_from_slice(name.as_bytes());
        h.set_entry_type(*kind);
        h.set_size(data.len() as u64);
        h.set_mode(0o644);
        if let Some(l) = link {
            h.set_link_name(l).unwrap();
        }
        h.set_cksum();
        b.append(&h, *data).unwrap();
    }
    zstd::encode_all(&b.into_inner().unwrap()[..], 3).unwrap()
}

#[test]
fn every_hostile_archive_served_by_the_cache_is_refused() {
    use tar::EntryType as T;
    let team = Team::new();
    let server = team.serve();
    let (a, report) = pushed_small_platform(&team, &server);
    let worker = archive_path(&team, &report, "worker");
    let bomb = vec![0u8; 4096];
    let cases: Vec<(&str, Vec<u8>)> = vec![
        ("dotdot", hostile(&[("../escape", T::Regular, b"x", None)])),
        (
            "absolute",
            hostile(&[("/etc/passwd", T::Regular, b"x", None)]),
        ),
        ("device", hostile(&[("dev", T::Char, b"", None)])),
        ("hard link", hostile(&[("h", T::Link, b"", None)])),
        (
            "escaping symlink",
            hostile(&[("l", T::Symlink, b"", Some("../../etc/shadow"))]),
        ),
        (
            "duplicate",
            hostile(&[("a", T::Regular, b"x", None), ("a", T::Regular, b"y", None)]),
        ),
        ("oversized", hostile(&[("big", T::Regular, &bomb, None)])),
        ("garbage", b"not zstd at all".to_vec()),
    ];
    for (name, bytes) in cases {
        std::fs::write(&worker, &bytes).unwrap();
        let stderr =
            pull_refuses_worker(&team, &server, &a, &[("KILN_MAX_ARTIFACT_BYTES", "2048")]);
        assert!(
            stderr.contains("worker") || stderr.contains("cas/"),
            "{name}: {stderr}"
        );
    }
}

#[test]
fn forged_unsigned_and_copied_entries_are_refused_with_trusted_keys() {
    let team = Team::new();
    let server = team.serve();
    let (_a, report) = pushed_small_platform(&team, &server);
    let worker = entry_path(&team, &report, "worker");
    let good = std::fs::read(&worker).unwrap();
    let entry: Value = serde_json::from_slice(&good).unwrap();
    let ns_entry: Value =
        serde_json::from_slice(&std::fs::read(entry_path(&team, &report, "ns")).unwrap()).unwrap();

    // A key of the same name that is not the team's.
    let forger = Team::new();
    let forged_sig = {
        // Sign the worker entry with the forger's key by pushing the same project to the
        // forger's own cache, then take that signature.
        let server = forger.serve();
        let f = small_platform_runner();
        build(&f, Some("staging"), &forger.push_flags(&server.url));
        let e: Value =
            serde_json::from_slice(&std::fs::read(entry_path(&forger, &report, "worker")).unwrap())
                .unwrap();
        e["signatures"].clone()
    };
    let with_signatures = |sigs: Value| {
        let mut e = entry.clone();
        e["signatures"] = sigs;
        serde_json::to_vec(&e).unwrap()
    };
    let cases = [
        ("forged", with_signatures(forged_sig), "does not verify"),
        (
            "unsigned",
            with_signatures(serde_json::json!([])),
            "unsigned",
        ),
        (
            "copied",
            with_signatures(ns_entry["signatures"].clone()),
            "does not verify",
        ),
        (
            "unknown key",
            with_signatures(serde_json::json!([{"key": "laptop", "sig": "AAAA"}])),
            "not a trusted key",
        ),
    ];
    for (name, bytes, reason) in cases {
        std::fs::write(&worker, &bytes).unwrap();
        let b = small_platform_runner();
        let (r, stderr) = build(&b, Some("staging"), &team.pull_flags(&server.url));
        assert_eq!(with_status(&r, "built"), ["worker"], "{name}: {stderr}");
        assert_eq!(r["summary"]["pulled"], 4, "{name}");
        assert_eq!(r["cache"][0]["refused"], 1, "{name}");
        assert!(
            stderr.contains("refused entry") && stderr.contains(reason),
            "{name}: {stderr}"
        );
        assert_eq!(
            rule_field(&r, "worker", "output"),
            rule_field(&report, "worker", "output")
        );
    }
    std::fs::write(&worker, &good).unwrap();
    // Without trusted keys, the unsigned entry would be accepted: the refusals above come
    // from the key check, not from the entry's shape.
    std::fs::write(&worker, with_signatures(serde_json::json!([]))).unwrap();
    let b = small_platform_runner();
    let (r, _) = build(&b, Some("staging"), &["--cache".into(), server.url.clone()]);
    assert_eq!(r["summary"]["pulled"], 5);
}

/// How a faulty test server misbehaves.
#[derive(Clone, Copy)]
enum Fault {
    /// Answers 500 to everything.
    ServerError,
    /// Accepts and never answers.
    Stall,
    /// Serves `dir` faithfully for this many requests, then dies (closes every socket and
    /// stops listening), as a server killed in the middle of a pull.
    DieAfter(usize),
    /// Serves entries faithfully, and archives with half their body (a truncated transfer).
    Truncate,
}

/// A small HTTP/1.1 server on a real socket that serves a cache directory with a fault.
fn faulty_server(dir: PathBuf, fault: Fault) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let served = Arc::new(AtomicUsize::new(0));
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(stream) = stream else { continue };
            if let Fault::DieAfter(n) = fault {
                if served.load(Ordering::SeqCst) >= n {
                    drop(stream);
                    return; // the listener goes with the thread
                }
            }
            let dir = dir.clone();
            let served = served.clone();
            std::thread::spawn(move || answer(stream, &dir, fault, &served));
        }
    });
    url
}

fn answer(mut stream: TcpStream, dir: &Path, fault: Fault, served: &AtomicUsize) {
    let mut reader = BufReader::new(stream.try_clone().unwrap());
    let mut request_line = String::new();
    if reader.read_line(&mut request_line).is_err() {
        return;
    }
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).unwrap_or(0) == 0 || line == "\r\n" {
            break;
        }
    }
    let mut parts = request_line.split_whitespace();
    let method = parts.next().unwrap_or("").to_owned();
    let path = parts
        .next()
        .unwrap_or("/")
        .trim_start_matches('/')
        .to_owned();
    match fault {
        Fault::ServerError => {
            let _ = stream.write_all(b"HTTP/1.1 500 Internal Server Error\r\ncontent-length: 4\r\nconnection: close\r\n\r\nboom");
            return;
        }
        Fault::Stall => {
            std::thread::sleep(Duration::from_secs(30));
            return;
        }
        _ => {}
    }
    served.fetch_add(1, Ordering::SeqCst);
    let file = dir.join(&path);
    let Ok(body) = std::fs::read(&file) else {
        let _ = stream
            .write_all(b"HTTP/1.1 404 Not Found\r\ncontent-length: 0\r\nconnection: close\r\n\r\n");
        return;
    };
    let head = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    let _ = stream.write_all(head.as_bytes());
    if method == "HEAD" {
        return;
    }
    let send = match fault {
        Fault::Truncate if path.starts_with("cas/") => &body[..body.len() / 2],
        _ => &body[..],
    };
    let _ = stream.write_all(send);
    let _ = stream.flush();
}

/// A runner pulling from `url`: the build succeeds locally with exactly one warning.
fn builds_locally_with_one_warning(url: &str, extra: &[&str]) -> (Value, String, Duration) {
    let b = small_platform_runner();
    let mut flags = vec!["--cache".to_owned(), url.to_owned()];
    flags.extend(extra.iter().map(|s| (*s).to_owned()));
    let start = Instant::now();
    let (r, stderr) = build(&b, Some("staging"), &flags);
    let took = start.elapsed();
    assert_eq!(r["summary"]["failed"], 0, "{stderr}");
    assert_eq!(warnings(&stderr), 1, "exactly one warning: {stderr}");
    assert!(stderr.contains("remote cache failed"), "{stderr}");
    (r, stderr, took)
}

#[test]
fn a_cache_that_is_down_broken_or_slow_never_fails_the_build() {
    // Nothing listens on the port.
    let closed = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", closed.local_addr().unwrap());
    drop(closed);
    let (r, _, _) = builds_locally_with_one_warning(&url, &[]);
    assert_eq!(r["summary"]["built"], 5);
    assert!(r["cache"][0]["failures"].as_u64().unwrap() >= 1);

    // 500 on every request.
    let dir = tempfile::tempdir().unwrap();
    let url = faulty_server(dir.path().to_owned(), Fault::ServerError);
    let (r, stderr, _) = builds_locally_with_one_warning(&url, &[]);
    assert_eq!(r["summary"]["built"], 5);
    assert!(stderr.contains("500"), "names the status: {stderr}");

    // A server that stalls: bounded by the timeout, then built locally.
    let url = faulty_server(dir.path().to_owned(), Fault::Stall);
    let (r, _, took) = builds_locally_with_one_warning(&url, &["--cache-timeout", "1"]);
    assert_eq!(r["summary"]["built"], 5);
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[test]
fn a_server_that_dies_or_truncates_mid_pull_leaves_a_local_build() {
    let team = Team::new();
    let server = team.serve();
    let (a, _) = pushed_small_platform(&team, &server);

    // The first wave's entries arrive, then the server is gone.
    let url = faulty_server(team.cache_dir(), Fault::DieAfter(2));
    let (r, _, _) = builds_locally_with_one_warning(&url, &[]);
    assert_eq!(r["summary"]["failed"], 0);
    assert_eq!(r["cache"][0]["gave_up"], true, "{r}");
    assert!(r["summary"]["built"].as_u64().unwrap() >= 1, "{r}");

    // Archives cut off halfway: refused as unreadable, the rules that need them built.
    let url = faulty_server(team.cache_dir(), Fault::Truncate);
    let b = small_platform_runner();
    let project = b.project().display().to_string();
    let out = kiln_in(
        &b,
        &[
            "cache", "pull", "--all", "--env", "staging", &project, "--cache", &url,
        ],
        &[],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    // The client sees the body end early (a failed transfer, one warning); were the bytes
    // to arrive cut at a length that looks whole, the archive check would refuse them.
    assert!(
        stderr.contains("failed to download an archive") || stderr.contains("refused archive"),
        "{stderr}"
    );
    assert!(stderr.contains("building them locally"), "{stderr}");
    assert!(kiln_in(&b, &["store", "verify"], &[]).status.success());
    assert_eq!(
        b.cat("api", "objects/shop/Deployment.apps/api.yaml", STAGING),
        a.cat("api", "objects/shop/Deployment.apps/api.yaml", STAGING)
    );
}

/// A raw request to the server; the status code.
fn http(url: &str, method: &str, path: &str, token: Option<&str>, body: &[u8]) -> u16 {
    let host = url.trim_start_matches("http://");
    let mut s = TcpStream::connect(host).unwrap();
    let auth = token
        .map(|t| format!("authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.1\r\nhost: {host}\r\n{auth}content-length: {}\r\nconnection: close\r\n\r\n",
        body.len()
    );
    s.write_all(head.as_bytes()).unwrap();
    s.write_all(body).unwrap();
    let mut response = Vec::new();
    let _ = s.read_to_end(&mut response);
    let response = String::from_utf8_lossy(&response);
    response
        .split_whitespace()
        .nth(1)
        .unwrap_or_else(|| panic!("{method} {path}: no response"))
        .parse()
        .unwrap()
}

#[test]
fn the_server_checks_tokens_paths_and_uploads() {
    let team = Team::new();
    let server = team.serve();
    let (_a, report) = pushed_small_platform(&team, &server);
    let token = "s3cret-push-token";
    let ns_out = rule_field(&report, "ns", "output");
    let ns_hex = ns_out.trim_start_matches("blake3:");
    let ns_archive = std::fs::read(archive_path(&team, &report, "ns")).unwrap();
    let u = &server.url;
    assert_eq!(http(u, "GET", "/kiln-cache-info", None, b""), 200);
    assert_eq!(
        http(u, "GET", &format!("/cas/{ns_hex}.tar.zst"), None, b""),
        200
    );
    assert_eq!(
        http(
            u,
            "HEAD",
            &format!("/prefix/cas/{ns_hex}.tar.zst"),
            None,
            b""
        ),
        200
    );
    assert_eq!(http(u, "GET", "/../etc/passwd", None, b""), 404);
    assert_eq!(
        http(
            u,
            "GET",
            &format!("/cas/{}.tar.zst", ns_hex.to_uppercase()),
            None,
            b""
        ),
        404
    );
    // Writes need the token.
    let path = format!("/cas/{ns_hex}.tar.zst");
    assert_eq!(http(u, "PUT", &path, None, &ns_archive), 401);
    assert_eq!(http(u, "PUT", &path, Some("wrong"), &ns_archive), 401);
    // Append-only: the archive is there already; the same bytes again are fine...
    assert_eq!(http(u, "PUT", &path, Some(token), &ns_archive), 200);
    // ...other bytes under a key that exists are refused: a push token cannot swap the signed
    // entry for an unsigned one, and the entry stays as the first writer wrote it.
    let signed = std::fs::read(entry_path(&team, &report, "ns")).unwrap();
    let mut unsigned: Value = serde_json::from_slice(&signed).unwrap();
    assert!(!unsigned["signatures"].as_array().unwrap().is_empty());
    unsigned["signatures"] = serde_json::json!([]);
    let ns_drv = rule_field(&report, "ns", "derivation");
    let ns_drv_hex = ns_drv.trim_start_matches("blake3:");
    assert_eq!(
        http(
            u,
            "PUT",
            &format!("/ac/{ns_drv_hex}"),
            Some(token),
            &serde_json::to_vec(&unsigned).unwrap()
        ),
        409
    );
    assert_eq!(
        http(u, "PUT", &format!("/ac/{ns_drv_hex}"), Some(token), &signed),
        200
    );
    assert_eq!(
        std::fs::read(entry_path(&team, &report, "ns")).unwrap(),
        signed
    );
    // Garbage is never stored: an archive under the wrong key, a hostile one, an entry whose
    // derivation does not hash to its key, an entry without its archive.
    let other = "0".repeat(64);
    assert_eq!(
        http(
            u,
            "PUT",
            &format!("/cas/{other}.tar.zst"),
            Some(token),
            &ns_archive
        ),
        422
    );
    let evil = hostile(&[("../x", tar::EntryType::Regular, b"x", None)]);
    assert_eq!(
        http(
            u,
            "PUT",
            &format!("/cas/{other}.tar.zst"),
            Some(token),
            &evil
        ),
        422
    );
    let entry = std::fs::read(entry_path(&team, &report, "ns")).unwrap();
    assert_eq!(
        http(u, "PUT", &format!("/ac/{other}"), Some(token), &entry),
        422
    );
    let mut orphan: Value = serde_json::from_slice(&entry).unwrap();
    orphan["record"]["output"] = Value::String(format!("blake3:{other}"));
    let drv = rule_field(&report, "ns", "derivation");
    let drv_hex = drv.trim_start_matches("blake3:");
    assert_eq!(
        http(
            u,
            "PUT",
            &format!("/ac/{drv_hex}"),
            Some(token),
            &serde_json::to_vec(&orphan).unwrap()
        ),
        422
    );
    assert!(!team
        .cache_dir()
        .join("cas")
        .join(format!("{other}.tar.zst"))
        .exists());
    // What is stored verifies.
    let v = team.verify();
    assert_eq!(v[0]["entries"], 5);
    assert_eq!(v[0]["archives"], 5);

    // A push with the wrong token: said, naming the cache and the status, and exit 2 (the
    // build itself is in the local store).
    let wrong = team.dir.path().join("wrong.token");
    std::fs::write(&wrong, "not-the-token\n").unwrap();
    let c = small_platform_runner();
    c.write("config/app.env", "LOG_LEVEL=trace\n");
    let flags = vec![
        "--cache".to_owned(),
        server.url.clone(),
        "--push".into(),
        "--cache-token-file".into(),
        wrong.display().to_string(),
    ];
    let out = c
        .kiln()
        .arg("build")
        .arg(c.project())
        .args(["--json", "--env", "staging"])
        .args(&flags)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["summary"]["failed"], 0);
    assert!(
        stderr.contains("401")
            && stderr.contains(&server.url)
            && stderr.contains("--push did not push everything"),
        "{stderr}"
    );
    assert_eq!(r["cache"][0]["pushed_entries"], 0);
}

#[test]
fn eight_runners_push_and_pull_at_once_and_every_entry_verifies() {
    let team = Team::new();
    let server = team.serve();
    let runners: Vec<Sandbox> = (0..8).map(|_| small_platform_runner()).collect();
    let flags = team.push_flags(&server.url);
    let children: Vec<Child> = runners
        .iter()
        .map(|r| {
            StdCommand::new(assert_cmd::cargo::cargo_bin("kiln"))
                .arg("build")
                .arg(r.project())
                .args(["--json", "--env", "staging"])
                .args(&flags)
                .args(["--trusted-key", &team.public])
                .env("KILN_STORE", r.store())
                .env("KILN_NO_PROGRESS", "1")
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap()
        })
        .collect();
    let mut outputs = std::collections::BTreeSet::new();
    for c in children {
        let out = c.wait_with_output().unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let r: Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(r["summary"]["failed"], 0);
        outputs.insert(rule_field(&r, "all", "output"));
    }
    assert_eq!(outputs.len(), 1, "every runner has the same result");
    let v = team.verify();
    assert_eq!(v[0]["entries"], 5);
    assert_eq!(v[0]["archives"], 5);
    assert_eq!(v[0]["problems"], serde_json::json!([]));
    let leftovers: Vec<_> = walkdir::WalkDir::new(team.cache_dir())
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_file())
        .filter(|e| {
            kiln_cache::layout::Key::parse(
                &e.path()
                    .strip_prefix(team.cache_dir())
                    .unwrap()
                    .to_string_lossy(),
            )
            .is_none()
        })
        .collect();
    assert!(leftovers.is_empty(), "no temp files left: {leftovers:?}");
}

/// `moto` in server mode: a real S3 API (SigV4-signed requests) on loopback.
struct S3 {
    child: Child,
    endpoint: String,
}

impl S3 {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
        let child = StdCommand::new("python3")
            .args([
                "-m",
                "moto.server",
                "-H",
                "127.0.0.1",
                "-p",
                &port.to_string(),
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("moto (scripts/test installs it: pip install 'moto[server]')");
        let endpoint = format!("http://127.0.0.1:{port}");
        let deadline = Instant::now() + Duration::from_secs(30);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "moto did not start");
            std::thread::sleep(Duration::from_millis(100));
        }
        Self { child, endpoint }
    }

    fn env(&self) -> Vec<(&'static str, String)> {
        vec![
            ("AWS_ACCESS_KEY_ID", "kiln-test".into()),
            ("AWS_SECRET_ACCESS_KEY", "kiln-test-secret".into()),
            ("AWS_REGION", "us-east-1".into()),
            ("AWS_ENDPOINT", self.endpoint.clone()),
            ("AWS_ALLOW_HTTP", "true".into()),
        ]
    }
}

impl Drop for S3 {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[test]
fn two_runners_share_through_s3() {
    let s3 = S3::start();
    assert_eq!(
        http(&s3.endpoint, "PUT", "/platform-cache", None, b""),
        200,
        "bucket created"
    );
    let team = Team::new();
    let url = "s3://platform-cache/kiln".to_owned();
    let run = |s: &Sandbox, flags: &[String]| {
        let mut c = s.kiln();
        c.arg("build")
            .arg(s.project())
            .args(["--json", "--env", "staging"])
            .args(flags);
        for (k, v) in s3.env() {
            c.env(k, v);
        }
        let out = c.output().unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
        assert!(out.status.success(), "{stderr}");
        (
            serde_json::from_slice::<Value>(&out.stdout).unwrap(),
            stderr,
        )
    };
    let a = small_platform_runner();
    let mut push = vec!["--cache".to_owned(), url.clone(), "--push".into()];
    push.extend(["--signing-key".to_owned(), team.key().display().to_string()]);
    let (first, stderr) = run(&a, &push);
    assert_eq!(first["cache"][0]["pushed_entries"], 5, "{stderr}");

    let b = small_platform_runner();
    let pull = team.pull_flags(&url);
    let (r, stderr) = run(&b, &pull);
    assert_eq!(r["summary"]["built"], 0, "{stderr}");
    assert_eq!(r["summary"]["pulled"], 5);
    assert_eq!(archives_in(&b.store()), 0);
    assert_eq!(warnings(&stderr), 0, "{stderr}");

    b.write("config/app.env", "LOG_LEVEL=debug\n");
    let (r, stderr) = run(&b, &pull);
    assert_eq!(
        with_status(&r, "built"),
        ["all", "api", "config"],
        "{stderr}"
    );
    assert_eq!(with_status(&r, "cached"), ["ns", "worker"]);
}

#[test]
fn settings_come_from_the_config_file_and_the_environment() {
    let team = Team::new();
    let server = team.serve();
    pushed_small_platform(&team, &server);
    let config_home = tempfile::tempdir().unwrap();
    std::fs::create_dir_all(config_home.path().join("kiln")).unwrap();
    std::fs::write(
        config_home.path().join("kiln/config.toml"),
        format!(
            "substituters = [\"{}\"]\ntrusted_keys = [\"{}\"]\n",
            server.url, team.public
        ),
    )
    .unwrap();
    let b = small_platform_runner();
    let xdg = config_home.path().display().to_string();
    let out = kiln_in(
        &b,
        &[
            "build",
            &b.project().display().to_string(),
            "--json",
            "--env",
            "staging",
        ],
        &[("XDG_CONFIG_HOME", &xdg)],
    );
    assert!(out.status.success());
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["summary"]["pulled"], 5, "from the config file");

    // The environment overrides the file: a cache that is not there.
    let c = small_platform_runner();
    let out = kiln_in(
        &c,
        &[
            "build",
            &c.project().display().to_string(),
            "--json",
            "--env",
            "staging",
        ],
        &[
            ("XDG_CONFIG_HOME", &xdg),
            ("KILN_CACHE", "http://127.0.0.1:9/none"),
        ],
    );
    let r: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["summary"]["built"], 5);
    assert_eq!(r["cache"][0]["address"], "http://127.0.0.1:9/none");

    // A malformed file is an error naming it and the line.
    std::fs::write(
        config_home.path().join("kiln/config.toml"),
        "push = true\nsubstitutors = []\n",
    )
    .unwrap();
    let out = kiln_in(
        &c,
        &[
            "build",
            &c.project().display().to_string(),
            "--env",
            "staging",
        ],
        &[("XDG_CONFIG_HOME", &xdg)],
    );
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("config.toml: line 2"), "{stderr}");
}

#[test]
fn keygen_writes_a_private_key_file_and_never_overwrites_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let run = || {
        StdCommand::new(assert_cmd::cargo::cargo_bin("kiln"))
            .current_dir(dir.path())
            .args(["cache", "keygen", "ci-main"])
            .output()
            .unwrap()
    };
    let out = run();
    assert!(out.status.success());
    let public = String::from_utf8(out.stdout).unwrap();
    assert!(
        public.starts_with("ci-main:") && public.trim().len() > 40,
        "{public}"
    );
    let key = dir.path().join("ci-main.key");
    assert_eq!(
        std::fs::metadata(&key).unwrap().permissions().mode() & 0o777,
        0o600
    );
    let secret = std::fs::read_to_string(&key).unwrap();
    assert!(!secret.contains(public.trim().split(':').nth(1).unwrap()));
    let again = run();
    assert_eq!(again.status.code(), Some(1));
    assert_eq!(
        std::fs::read_to_string(&key).unwrap(),
        secret,
        "not overwritten"
    );
}

#[test]
fn a_runner_with_an_empty_store_plans_and_applies_from_the_cache() {
    use common::realm::Realm;
    let team = Team::new();
    let server = team.serve();
    let rules = "[rule.config]\nkind = \"configmap\"\nname = \"app\"\nnamespace = \"${var.ns}\"\nsrcs = [\"app.env\"]\ndeps = [\"ns\"]\n";
    // Runner A: CI on main builds and pushes.
    let a = Realm::new("cache-a");
    a.rules(rules);
    a.s.write("app.env", "MODE=cached\n");
    build(&a.s, None, &team.push_flags(&server.url));
    let _ = server.take_log();
    // Runner B: the same project (same set), an empty store; plan and apply pull, build nothing,
    // and fetch exactly the archives realize reads.
    let b = Realm {
        s: small_platform_runner(),
        ns: a.ns.clone(),
    };
    b.rules(rules);
    b.s.write("app.env", "MODE=cached\n");
    let pull = team.pull_flags(&server.url);
    let plan = b.json("plan", &strs(&pull));
    assert_eq!(common::count(&plan, "create"), 2, "{plan}");
    let log = server.take_log();
    assert_eq!(log.matches("GET /cas/").count(), 2, "{log}");
    let mut flags = strs(&pull);
    flags.extend(["--yes", "--skip-workload-gates"]);
    b.json("apply", &flags);
    let out = common::realm::kubectl_ok(&["get", "configmap", "-n", &b.ns, "-o", "name"]);
    assert!(out.contains("configmap/app-"), "{out}");
    let report = b.s.build(&[]);
    assert_eq!(
        report["summary"]["built"], 0,
        "nothing was built on B: {report}"
    );
    let destroy = b.kiln("destroy", &["--yes"]);
    assert!(
        destroy.status.success(),
        "{}",
        String::from_utf8_lossy(&destroy.stderr)
    );
}

/// After a build that pulled every rule lazily, `store verify` calls the entries
/// remote-backed, not corrupt, and keeps them: the next build without the cache rebuilds
/// nothing. A materialized view that was changed is rehashed and replaced before it is served.
#[test]
fn lazily_pulled_entries_are_remote_backed_and_views_are_checked_before_use() {
    let team = Team::new();
    let server = team.serve();
    pushed_small_platform(&team, &server);
    let b = small_platform_runner();
    let (r, _) = build(&b, Some("staging"), &team.pull_flags(&server.url));
    assert_eq!(r["summary"]["pulled"], 5);
    assert_eq!(
        archives_in(&b.store()),
        0,
        "pulled lazily: no archive fetched"
    );
    let out = b
        .kiln()
        .args(["store", "verify", "--json"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{stderr}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["corrupt"].as_array().unwrap().len(), 0, "{v:#}");
    assert_eq!(v["remote_backed"].as_array().unwrap().len(), 5, "{v:#}");
    assert!(stderr.contains("remote-backed"), "{stderr}");
    // Nothing was dropped from the root: a build without the cache has nothing to rebuild.
    let (again, _) = build(&b, Some("staging"), &[]);
    assert_eq!(again["summary"]["built"], 0, "{again:#}");

    // A view served by `store path` is read-only, and checked before it is served again.
    let a = small_platform_runner();
    build(&a, Some("staging"), &[]);
    let path = |s: &Sandbox| {
        let out = s
            .kiln()
            .args(["store", "path", "api"])
            .arg(s.project())
            .args(["--env", "staging"])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
        std::path::PathBuf::from(String::from_utf8(out.stdout).unwrap().trim())
    };
    let view = path(&a);
    use std::os::unix::fs::PermissionsExt;
    let dirs: Vec<_> = walkdir::WalkDir::new(&view)
        .into_iter()
        .filter_map(Result::ok)
        .filter(|e| e.file_type().is_dir())
        .collect();
    assert!(!dirs.is_empty());
    for d in &dirs {
        assert_eq!(
            d.metadata().unwrap().permissions().mode() & 0o777,
            0o555,
            "{}",
            d.path().display()
        );
    }
    let file = walkdir::WalkDir::new(&view)
        .into_iter()
        .filter_map(Result::ok)
        .find(|e| e.file_type().is_file())
        .unwrap()
        .into_path();
    let original = std::fs::read(&file).unwrap();
    // As root, modes do not stop a write: the rehash does.
    std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o644)).unwrap();
    std::fs::write(&file, b"tampered").unwrap();
    let again = path(&a);
    assert_eq!(again, view);
    assert_eq!(
        std::fs::read(&file).unwrap(),
        original,
        "the changed view was replaced"
    );
}
