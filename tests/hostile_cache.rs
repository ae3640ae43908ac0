//! Nothing a cache server sends is held whole in memory: a length header that lies, a body
//! that never ends, an archive far over the limit and a server that stalls each cost a
//! bounded amount of memory and time, end in one warning, and the build goes on locally.
//! The server is a small Python HTTP server on loopback, serving real entries pushed by kiln
//! (so lookups hit) and hostile bodies for the rest.

mod common;

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{small_platform, Sandbox};
use serde_json::Value;

const SERVER: &str = r#"
import os, sys, time, http.server, socketserver
root = sys.argv[1]
class H(http.server.BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    def log_message(self, *a): pass
    def do_HEAD(self): self.do_GET()
    def do_GET(self):
        mode, _, rest = self.path.lstrip("/").partition("/")
        if mode == "stall":
            time.sleep(600); return
        if mode == "lie":
            self.send_response(200)
            self.send_header("Content-Length", "100000000000")
            self.end_headers()
            self.wfile.write(b"x" * 10)
            self.wfile.flush()
            return
        path = os.path.join(root, rest)
        if rest.startswith("cas/") and mode == "endless":
            self.send_response(200)
            self.send_header("Content-Length", "100000000000")
            self.end_headers()
            chunk = b"\0" * (1 << 20)
            try:
                while True: self.wfile.write(chunk)
            except Exception: return
        if not os.path.isfile(path):
            self.send_response(404); self.send_header("Content-Length", "0"); self.end_headers(); return
        body = open(path, "rb").read()
        self.send_response(200); self.send_header("Content-Length", str(len(body))); self.end_headers()
        self.wfile.write(body)
class S(socketserver.ThreadingMixIn, http.server.HTTPServer):
    daemon_threads = True
s = S(("127.0.0.1", 0), H)
print(s.server_address[1], flush=True)
s.serve_forever()
"#;

struct Server {
    child: Child,
    port: u16,
}

impl Server {
    fn start(root: &std::path::Path) -> Self {
        let mut child = Command::new("python3")
            .args(["-c", SERVER])
            .arg(root)
            .stdout(Stdio::piped())
            .spawn()
            .unwrap();
        let mut line = String::new();
        BufReader::new(child.stdout.take().unwrap())
            .read_line(&mut line)
            .unwrap();
        Self {
            child,
            port: line.trim().parse().unwrap(),
        }
    }

    fn url(&self, mode: &str) -> String {
        format!("http://127.0.0.1:{}/{mode}", self.port)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
    }
}

/// `kiln <command> <project> --env staging --cache <cache>` on a fresh runner under GNU time:
/// its stdout, stderr, peak RSS in MiB and the time taken. `pull` downloads every archive.
fn run_with(command: &[&str], cache: &str, timeout: &str) -> (String, String, u64, Duration) {
    let s = Sandbox::new();
    small_platform(&s);
    let started = Instant::now();
    let out = Command::new("/usr/bin/time")
        .args(["-f", "peak-rss-kib=%M"])
        .arg(assert_cmd::cargo::cargo_bin("kiln"))
        .args(command)
        .arg(s.project())
        .args([
            "--env",
            "staging",
            "--cache",
            cache,
            "--cache-timeout",
            timeout,
        ])
        .env("KILN_STORE", s.store())
        .env("KILN_NO_PROGRESS", "1")
        .env("XDG_CONFIG_HOME", s.dir.path().join("config"))
        // A small artifact limit keeps the over-the-limit body short on CI.
        .env("KILN_MAX_ARTIFACT_BYTES", "8000000")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(out.status.code(), Some(0), "{command:?}: {stderr}");
    let rss = stderr
        .lines()
        .find_map(|l| l.strip_prefix("peak-rss-kib="))
        .and_then(|v| v.trim().parse::<u64>().ok())
        .unwrap_or_else(|| panic!("no peak RSS in {stderr}"));
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr,
        rss / 1024,
        started.elapsed(),
    )
}

fn warnings(stderr: &str) -> usize {
    stderr.lines().filter(|l| l.contains("WARN")).count()
}

#[test]
fn hostile_responses_cost_bounded_memory_and_time_and_the_build_goes_on() {
    // Real entries, pushed by kiln, so that every lookup hits and every archive is asked for.
    let cache = tempfile::tempdir().unwrap();
    let pusher = Sandbox::new();
    small_platform(&pusher);
    let url = format!("file://{}", cache.path().display());
    pusher.build_ok(&["--env", "staging", "--cache", &url, "--push"]);
    let server = Server::start(cache.path());

    for (mode, command, what) in [
        (
            "lie",
            &["build", "--json"][..],
            "a length header of 100 GB on every answer",
        ),
        (
            "endless",
            &["cache", "pull", "--all"][..],
            "archives that never end, announced as 100 GB",
        ),
    ] {
        let (_, stderr, rss_mib, took) = run_with(command, &server.url(mode), "5");
        assert!(rss_mib <= 128, "{what}: peak RSS {rss_mib} MiB: {stderr}");
        assert!(took < Duration::from_secs(60), "{what}: {took:?}");
        assert!(
            warnings(&stderr) <= 2,
            "{what}: one warning, not one per rule:\n{stderr}"
        );
        if mode == "endless" {
            assert!(stderr.contains("cut off"), "{what}: {stderr}");
        }
    }

    // A server that accepts and never answers: the build ends within its timeouts.
    let (stdout, stderr, _, took) = run_with(&["build", "--json"], &server.url("stall"), "2");
    let report: Value = serde_json::from_str(&stdout).unwrap();
    assert_eq!(report["summary"]["failed"], 0, "{stderr}");
    assert!(
        took < Duration::from_secs(20),
        "a stall took {took:?}: {stderr}"
    );
}

/// The peak RSS of process `pid` (VmHWM), in MiB.
fn peak_rss_mib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .unwrap()
        / 1024
}

#[test]
fn the_cache_server_streams_uploads_to_disk() {
    let d = tempfile::tempdir().unwrap();
    let token = d.path().join("push.token");
    std::fs::write(&token, "t0ken\n").unwrap();
    let mut server = Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .args(["cache", "serve", "--listen", "127.0.0.1:0", "--dir"])
        .arg(d.path().join("cache"))
        .arg("--token-file")
        .arg(&token)
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut stderr = BufReader::new(server.stderr.take().unwrap());
    let mut line = String::new();
    stderr.read_line(&mut line).unwrap();
    std::thread::spawn(move || std::io::copy(&mut stderr, &mut std::io::sink()));
    let url = line
        .split_whitespace()
        .find(|w| w.starts_with("http://"))
        .unwrap()
        .to_owned();
    // A 200 MB artifact of incompressible bytes, built and pushed.
    let s = Sandbox::new();
    s.write(
        "kiln.toml",
        "[project]\nname = \"big\"\n[rule.big]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"head -c 200000000 /dev/urandom > $out/blob\"]\n",
    );
    let out = s
        .kiln()
        .arg("build")
        .arg(s.project())
        .args(["--cache", &url, "--push", "--cache-token-file"])
        .arg(&token)
        .args(["--cache-timeout", "120"])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("pushed 1 entries and 1 archives"),
        "{stderr}"
    );
    let rss = peak_rss_mib(server.id());
    let _ = server.kill();
    let _ = server.wait();
    assert!(rss <= 128, "the server held {rss} MiB for a 200 MB upload");
}
