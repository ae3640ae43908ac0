//! The remote cache's benchmarks. Run with `cargo bench --bench cache` (add `-- N` for the
//! project size, default 10000). Prints a table.
//!
//! A synthetic project (benches/support) is built once and pushed to `kiln cache serve` on
//! loopback. Then, each into an empty store:
//! - warm-cache CI pull (`kiln build --cache`): everything cached, only action entries move;
//!   directly, and through a proxy that adds 10 ms and 50 ms of round-trip latency;
//! - full pull (`kiln cache pull --all`): every archive too, in bytes/s, beside the raw
//!   throughput of a loopback TCP connection measured in the same run;
//! - push (`kiln cache push --all` from the building runner into an empty cache): rules/s.

#![allow(clippy::print_stdout)] // a bench prints its table

#[allow(dead_code)] // the build bench uses all of it
mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use serde_json::Value;

fn kiln() -> Command {
    let mut c = Command::new(env!("CARGO_BIN_EXE_kiln"));
    c.env("KILN_NO_PROGRESS", "1").env_remove("KILN_LOG");
    c
}

fn run_json(mut c: Command) -> (f64, Value) {
    let start = Instant::now();
    let out = c.output().expect("run kiln");
    let secs = start.elapsed().as_secs_f64();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    (
        secs,
        serde_json::from_slice(&out.stdout).unwrap_or(Value::Null),
    )
}

fn run(mut c: Command) -> (f64, String) {
    let start = Instant::now();
    let out = c.output().expect("run kiln");
    let secs = start.elapsed().as_secs_f64();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(out.status.success(), "{stderr}");
    (secs, stderr)
}

struct Server(Child, String);

impl Server {
    fn start(dir: &Path, token: &Path) -> Self {
        let mut child = kiln()
            .args(["cache", "serve", "--listen", "127.0.0.1:0", "--dir"])
            .arg(dir)
            .arg("--token-file")
            .arg(token)
            .env("KILN_LOG", "warn")
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let mut first = String::new();
        BufReader::new(child.stderr.take().unwrap())
            .read_line(&mut first)
            .unwrap();
        let url = first
            .split_whitespace()
            .find(|w| w.starts_with("http://"))
            .unwrap()
            .to_owned();
        Self(child, url)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// A TCP proxy to `upstream` that delivers every chunk half of `rtt` after it arrived, in each
/// direction, as `tc netem` delays packets: chunks in flight overlap, so the added cost is the
/// round trip, not a sleep per chunk.
fn latency_proxy(upstream: String, rtt: Duration) -> String {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    let half = rtt / 2;
    std::thread::spawn(move || {
        for client in listener.incoming().map_while(Result::ok) {
            let server = TcpStream::connect(&upstream).unwrap();
            let _ = client.set_nodelay(true);
            let _ = server.set_nodelay(true);
            for (from, to) in [
                (client.try_clone().unwrap(), server.try_clone().unwrap()),
                (server, client),
            ] {
                delayed_pipe(from, to, half);
            }
        }
    });
    url
}

fn delayed_pipe(mut from: TcpStream, mut to: TcpStream, delay: Duration) {
    let (tx, rx) = std::sync::mpsc::channel::<(Instant, Vec<u8>)>();
    std::thread::spawn(move || {
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => return, // dropping tx ends the writer
                Ok(n) => {
                    if tx
                        .send((Instant::now() + delay, buf[..n].to_vec()))
                        .is_err()
                    {
                        return;
                    }
                }
            }
        }
    });
    std::thread::spawn(move || {
        for (due, bytes) in rx {
            if let Some(wait) = due.checked_duration_since(Instant::now()) {
                std::thread::sleep(wait);
            }
            if to.write_all(&bytes).is_err() {
                return;
            }
        }
        let _ = to.shutdown(std::net::Shutdown::Write);
    });
}

/// Raw loopback TCP throughput, bytes/s: 1 GiB through one connection.
fn loopback_throughput() -> f64 {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let total: usize = 1 << 30;
    let reader = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        let mut buf = vec![0u8; 1 << 20];
        let mut got = 0;
        while got < total {
            got += s.read(&mut buf).unwrap();
        }
    });
    let start = Instant::now();
    let mut s = TcpStream::connect(addr).unwrap();
    let chunk = vec![7u8; 1 << 20];
    for _ in 0..(total >> 20) {
        s.write_all(&chunk).unwrap();
    }
    reader.join().unwrap();
    total as f64 / start.elapsed().as_secs_f64()
}

fn row(cells: &[String]) {
    let line: Vec<String> = cells.iter().map(|c| format!("{c:>16}")).collect();
    println!("|{}|", line.join("|"));
}

fn mib(b: f64) -> String {
    format!("{:.1} MiB", b / f64::from(1 << 20))
}

fn build_cmd(project: &Path, store: &Path, extra: &[&str]) -> Command {
    let mut c = kiln();
    c.env("KILN_STORE", store)
        .args(["build", "--json", "-q", "--env", "production"])
        .arg(project)
        .args(extra);
    c
}

fn transfer_cmd(verb: &str, project: &Path, store: &Path, extra: &[&str]) -> Command {
    let mut c = kiln();
    c.env("KILN_STORE", store)
        .args(["cache", verb, "--all", "--env", "production"])
        .arg(project)
        .args(extra);
    c
}

fn main() {
    let args: Vec<String> = std::env::args().skip(1).collect();
    // `-- generate DIR N` writes the synthetic project and stops (for profiling by hand).
    if args.first().map(String::as_str) == Some("generate") {
        let n = args.get(2).and_then(|v| v.parse().ok()).unwrap_or(10_000);
        support::generate(Path::new(&args[1]), n);
        return;
    }
    let n: usize = std::env::args()
        .skip(1)
        .find_map(|a| a.parse().ok())
        .unwrap_or(10_000);
    let tmp = tempfile::tempdir_in(env!("CARGO_TARGET_TMPDIR")).unwrap();
    let p = |s: &str| -> PathBuf { tmp.path().join(s) };
    let project = p("project");
    support::generate(&project, n);
    std::fs::write(p("token"), "bench-token\n").unwrap();
    let token = p("token").display().to_string();

    // Runner A builds, then pushes everything into an empty cache.
    let (cold, report) = run_json(build_cmd(&project, &p("store-a"), &[]));
    let rules = report["summary"]["rules"].as_u64().unwrap();
    let server = Server::start(&p("cache"), &p("token"));
    let (push_secs, _) = run(transfer_cmd(
        "push",
        &project,
        &p("store-a"),
        &["--cache", &server.1, "--cache-token-file", &token],
    ));
    let upstream = server.1.trim_start_matches("http://").to_owned();

    println!("remote cache, {rules} rules (cold local build {cold:.2} s)");
    row(&[
        "case".into(),
        "wall".into(),
        "requests".into(),
        "bytes down".into(),
        "built".into(),
    ]);
    row(&vec!["---".to_owned(); 5]);
    row(&[
        "push (all)".into(),
        format!("{push_secs:.2} s"),
        "-".into(),
        "-".into(),
        format!("{:.0} rules/s", rules as f64 / push_secs),
    ]);
    for (label, rtt) in [
        ("warm pull, lo", None),
        ("warm pull, 10ms", Some(10)),
        ("warm pull, 50ms", Some(50)),
    ] {
        let url = match rtt {
            None => server.1.clone(),
            Some(ms) => latency_proxy(upstream.clone(), Duration::from_millis(ms)),
        };
        let store = p(&format!("store-{label}").replace([' ', ','], "-"));
        let (secs, r) = run_json(build_cmd(&project, &store, &["--cache", &url]));
        let c = &r["cache"][0];
        row(&[
            label.into(),
            format!("{secs:.2} s"),
            c["requests"].to_string(),
            mib(c["bytes_down"].as_f64().unwrap()),
            r["summary"]["built"].to_string(),
        ]);
    }
    let raw = loopback_throughput();
    let store = p("store-full");
    let (secs, r) = run_json(transfer_cmd(
        "pull",
        &project,
        &store,
        &["--cache", &server.1, "--json"],
    ));
    let down = r["cache"][0]["bytes_down"].as_f64().unwrap();
    row(&[
        "full pull, lo".into(),
        format!("{secs:.2} s"),
        "-".into(),
        mib(down),
        format!("{}/s", mib(down / secs)),
    ]);
    println!("raw loopback TCP throughput in this run: {}/s", mib(raw));
}
