//! The `exec` sandbox (issue 8): each attack fails inside it or is killed, and the build says
//! so. Runs wherever scripts/test runs (it installs bubblewrap).

mod common;

use std::time::{Duration, Instant};

use common::Sandbox;

fn exec_project(s: &Sandbox, command: &str, extra: &str) {
    let command = command.replace('\\', "\\\\").replace('"', "\\\"");
    s.write(
        "kiln.toml",
        &format!("[project]\nname = \"p\"\n[rule.x]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"{command}\"]\n{extra}\n"),
    );
}

/// Builds, expecting the rule to fail; returns stderr.
fn rule_fails(s: &Sandbox) -> String {
    let out = s.build_fails(&[]);
    assert_eq!(out.status.code(), Some(1));
    String::from_utf8_lossy(&out.stderr).into_owned()
}

fn built_file(s: &Sandbox, file: &str) -> String {
    s.cat("x", file, &[])
}

#[test]
fn host_secrets_the_project_and_the_store_are_not_visible() {
    let s = Sandbox::new();
    s.write("secret.txt", "TOP-SECRET\n");
    let project_file = s.project().join("secret.txt");
    for (what, command) in [
        ("/etc/shadow", "cat /etc/shadow > $out/x".to_owned()),
        ("/etc/passwd", "cat /etc/passwd > $out/x".to_owned()),
        (
            "an undeclared project file",
            format!("cat {} > $out/x", project_file.display()),
        ),
        ("the store", format!("ls {} > $out/x", s.store().display())),
        ("the user's home", "ls /root > $out/x".to_owned()),
    ] {
        exec_project(&s, &command, "");
        let err = rule_fails(&s);
        assert!(
            err.contains("rule `x`") || err.contains("x (exec)") || err.contains("failed"),
            "{what}: {err}"
        );
        assert!(!err.contains("TOP-SECRET"), "{what}");
    }
}

#[test]
fn writes_outside_out_fail_and_the_store_stays_untouched() {
    let s = Sandbox::new();
    // Create the store first, with one action entry to aim at.
    exec_project(&s, "echo ok > $out/f", "");
    s.build(&[]);
    let before = common::store_files(&s.store());
    for command in [
        "echo evil > /usr/evil".to_owned(),
        format!("echo evil > {}/FORMAT", s.store().display()),
        format!(
            "mkdir -p {0}/roots && echo evil > {0}/roots/evil.json",
            s.store().display()
        ),
        format!("echo evil > {}/kiln.toml", s.project().display()),
    ] {
        exec_project(&s, &command, "");
        rule_fails(&s);
    }
    let format = std::fs::read_to_string(s.store().join("FORMAT")).unwrap();
    assert_eq!(format.trim(), "kiln-store-v2");
    assert!(!s.store().join("roots/evil.json").exists());
    let after = common::store_files(&s.store());
    assert!(
        after.iter().all(|p| !p.to_string_lossy().contains("evil")),
        "{after:?}"
    );
    assert!(before.len() <= after.len());
}

#[test]
fn background_and_setsid_children_die_with_the_command() {
    let s = Sandbox::new();
    exec_project(
        &s,
        "sleep 31.25 & setsid sleep 31.5 & echo done > $out/f",
        "timeout_secs = 60",
    );
    let start = Instant::now();
    s.build(&[]);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "the build waited for a background child"
    );
    assert_eq!(built_file(&s, "f"), "done\n");
    std::thread::sleep(Duration::from_millis(300));
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    let ps = String::from_utf8_lossy(&ps.stdout);
    assert!(
        !ps.contains("sleep 31.25") && !ps.contains("sleep 31.5"),
        "{ps}"
    );
}

#[test]
fn a_timeout_kills_a_child_holding_stdout() {
    let s = Sandbox::new();
    exec_project(&s, "sleep 32.25 & exec sleep 32.5", "timeout_secs = 2");
    let start = Instant::now();
    let err = rule_fails(&s);
    assert!(
        start.elapsed() < Duration::from_secs(15),
        "took {:?}",
        start.elapsed()
    );
    assert!(err.contains("timed out after 2 s"), "{err}");
    std::thread::sleep(Duration::from_millis(300));
    let ps = std::process::Command::new("ps")
        .args(["-eo", "args"])
        .output()
        .unwrap();
    assert!(!String::from_utf8_lossy(&ps.stdout).contains("sleep 32."));
}

#[test]
fn there_is_no_network() {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = listener.local_addr().unwrap().port();
    listener.set_nonblocking(true).unwrap();
    let s = Sandbox::new();
    exec_project(
        &s,
        &format!("python3 -c 'import socket; socket.create_connection((\"127.0.0.1\", {port}), 2)' && echo connected > $out/f"),
        "",
    );
    rule_fails(&s);
    assert!(
        listener.accept().is_err(),
        "the sandbox reached the host's loopback"
    );
}

#[test]
fn declared_tools_enter_the_hash_and_are_all_that_is_visible() {
    let s = Sandbox::new();
    exec_project(
        &s,
        "cat in/a.txt > $out/f; ls / > $out/ls 2>&1 || echo no-ls > $out/ls",
        "srcs = [\"a.txt\"]\ntools = [\"cat\"]",
    );
    s.write("a.txt", "A\n");
    let first = s.build(&[]);
    assert_eq!(built_file(&s, "f"), "A\n");
    assert_eq!(
        built_file(&s, "ls"),
        "no-ls\n",
        "only declared tools are visible"
    );
    // Another `cat` first on PATH: another derivation.
    let fake = tempfile::tempdir().unwrap();
    let fake_cat = fake.path().join("cat");
    // Another binary (a `#!` script would be refused: the sandbox cannot show its interpreter).
    std::fs::copy("/usr/bin/true", &fake_cat).unwrap();
    let path = format!(
        "{}:{}",
        fake.path().display(),
        std::env::var("PATH").unwrap()
    );
    let out = s
        .kiln()
        .env("PATH", path)
        .arg("build")
        .arg(s.project())
        .arg("--json")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let second: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_ne!(
        first["rules"][0]["derivation"], second["rules"][0]["derivation"],
        "a different tool binary must change the derivation"
    );
    // A tool that does not exist is a located error.
    exec_project(&s, "true", "tools = [\"no-such-tool-xyz\"]");
    let out = s.build_fails(&[]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("kiln.toml:6:") && err.contains("`no-such-tool-xyz` is not on PATH"),
        "{err}"
    );
}

/// SIGINT during a long exec rule: the command is killed, temp files are removed, no lock is
/// left held, and kiln exits 130.
#[test]
fn ctrl_c_stops_cleanly_with_130() {
    let s = Sandbox::new();
    exec_project(&s, "sleep 33.75; echo late > $out/f", "");
    let mut child = std::process::Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .env("KILN_STORE", s.store())
        .env("KILN_NO_PROGRESS", "1")
        .arg("build")
        .arg(s.project())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let running = || {
        let ps = std::process::Command::new("ps")
            .args(["-eo", "args"])
            .output()
            .unwrap();
        String::from_utf8_lossy(&ps.stdout).contains("sleep 33.75")
    };
    let deadline = Instant::now() + Duration::from_secs(20);
    while !running() {
        assert!(Instant::now() < deadline, "the exec rule never started");
        std::thread::sleep(Duration::from_millis(50));
    }
    let pid = rustix::process::Pid::from_raw(child.id() as i32).unwrap();
    rustix::process::kill_process(pid, rustix::process::Signal::INT).unwrap();
    let start = Instant::now();
    let status = child.wait().unwrap();
    assert!(
        start.elapsed() < Duration::from_secs(5),
        "took {:?}",
        start.elapsed()
    );
    assert_eq!(status.code(), Some(130));
    std::thread::sleep(Duration::from_millis(300));
    assert!(!running(), "the command outlived kiln");
    let leftovers: Vec<_> = common::store_files(&s.store().join("tmp"));
    assert!(leftovers.is_empty(), "temp files left: {leftovers:?}");
    // No lock left: gc takes the store's exclusive lock at once.
    let gc = std::process::Command::new(assert_cmd::cargo::cargo_bin("kiln"))
        .env("KILN_STORE", s.store())
        .args(["store", "gc"])
        .output()
        .unwrap();
    assert!(
        gc.status.success(),
        "{}",
        String::from_utf8_lossy(&gc.stderr)
    );
}

/// A declared tool that is a `#!` script whose interpreter the sandbox does not show fails the
/// rule before it runs, naming the tool and the interpreter (inside it could only fail, or be
/// skipped by a command that ignores its failure).
#[test]
fn a_script_tool_whose_interpreter_is_hidden_is_refused() {
    let s = Sandbox::new();
    let bin = s.dir.path().join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let tool = bin.join("greet");
    std::fs::write(&tool, "#!/usr/bin/python3\nprint('hi')\n").unwrap();
    std::fs::set_permissions(&tool, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    exec_project(&s, "greet > $out/x || true", "tools = [\"greet\"]");
    let path = format!("{}:{}", bin.display(), std::env::var("PATH").unwrap());
    let out = s
        .kiln()
        .arg("build")
        .arg(s.project())
        .env("PATH", path)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains("tool `greet` is a script run by `/usr/bin/python3`")
            && stderr.contains("rule `x`"),
        "{stderr}"
    );
}
