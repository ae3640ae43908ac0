//! The `exec` sandbox holds when kiln runs as root (as CI and most users run it): the command
//! runs with no capabilities, as an unprivileged uid, with `no_new_privs` and seccomp, so
//! every way out below is refused and the host's files are unchanged (checked by hash).

mod common;

use common::Sandbox;

/// Each attack runs in a subshell; its exit code is recorded as `name=code` in `$out/report`.
const ATTACKS: &str = r#"
try() { name=$1; shift; ( "$@" ) >/dev/null 2>&1; echo "$name=$?" >> $out/report; }
grep -E '^(CapEff|CapPrm|CapBnd|NoNewPrivs|Seccomp):' /proc/self/status > $out/status
id -u > $out/uid
try remount_source sh -c 'mount -o remount,bind,rw in/data/big.bin && echo evil >> in/data/big.bin'
try write_source sh -c 'echo evil >> in/data/big.bin'
try remount_usr mount -o remount,bind,rw /usr
try write_usr sh -c 'echo evil > /usr/evil'
try mount_tmpfs mount -t tmpfs none /build/tmp
try proc_sys sh -c 'echo evil > /proc/sys/kernel/domainname'
try proc_sys_global sh -c 'v=$(cat /proc/sys/kernel/core_pattern) && echo "$v" > /proc/sys/kernel/core_pattern'
try sys sh -c 'echo evil > /sys/kernel/uevent_helper'
try unshare_user unshare -U true
try unshare_mount unshare -m true
try unshare_net unshare -n true
try mknod_device mknod $out/null c 1 3
try raw_socket python3 -c 'import socket; socket.socket(socket.AF_INET, socket.SOCK_RAW, 1)'
try keyctl python3 -c 'import ctypes, sys; sys.exit(1 if ctypes.CDLL(None).syscall(250, 0, 0) < 0 else 0)'
sleep 30 & victim=$!
try ptrace python3 -c "import ctypes, sys; sys.exit(1 if ctypes.CDLL(None).ptrace(16, $victim, 0, 0) < 0 else 0)"
kill $victim
cp /bin/sh $out/sh && chmod 4755 $out/sh
echo ok > $out/done
"#;

fn digest(path: &std::path::Path) -> blake3::Hash {
    blake3::hash(&std::fs::read(path).unwrap())
}

#[test]
fn a_sandboxed_command_run_as_root_has_no_privilege_and_every_escape_is_refused() {
    let s = Sandbox::new();
    s.write("attack.sh", ATTACKS);
    // Large enough to be shown in place (a read-only bind mount of the user's file).
    s.write("data/big.bin", &"x".repeat(2 << 20));
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.x]\nkind = \"exec\"\nsrcs = [\"attack.sh\", \"data/big.bin\"]\ncommand = [\"sh\", \"in/attack.sh\"]\n",
    );
    let source = s.project().join("data/big.bin");
    let watched = [
        source.clone(),
        s.project().join("kiln.toml"),
        "/usr/bin/env".into(),
    ];
    let before: Vec<_> = watched.iter().map(|p| digest(p)).collect();
    s.build_ok(&[]);
    assert_eq!(
        s.cat("x", "done", &[]),
        "ok\n",
        "the command ran to its end"
    );

    let status = s.cat("x", "status", &[]);
    for line in [
        "CapEff:\t0000000000000000",
        "CapPrm:\t0000000000000000",
        "CapBnd:\t0000000000000000",
        "NoNewPrivs:\t1",
        "Seccomp:\t2",
    ] {
        assert!(status.contains(line), "{line} in:\n{status}");
    }
    assert_eq!(s.cat("x", "uid", &[]).trim(), "1000", "an unprivileged uid");

    let report = s.cat("x", "report", &[]);
    let attacks: Vec<(&str, &str)> = report.lines().filter_map(|l| l.split_once('=')).collect();
    assert_eq!(attacks.len(), 15, "{report}");
    for (name, code) in &attacks {
        assert_ne!(
            *code, "0",
            "`{name}` succeeded inside the sandbox:\n{report}"
        );
    }
    let after: Vec<_> = watched.iter().map(|p| digest(p)).collect();
    assert_eq!(before, after, "the host's files are unchanged");
    assert!(!std::path::Path::new("/usr/evil").exists());

    // A setuid bit the command set does not survive into the store.
    let path = s
        .kiln()
        .args(["store", "path", "x"])
        .arg(s.project())
        .output()
        .unwrap();
    assert!(path.status.success());
    let dir = String::from_utf8(path.stdout).unwrap();
    let mode = std::os::unix::fs::PermissionsExt::mode(
        &std::fs::metadata(std::path::Path::new(dir.trim()).join("sh"))
            .unwrap()
            .permissions(),
    );
    assert_eq!(mode & 0o7000, 0, "mode {mode:o}");
    assert!(std::fs::metadata(std::path::Path::new(dir.trim()).join("null")).is_err());
}

#[test]
fn kiln_runs_this_test_as_root() {
    // CI runs as root; this suite is meant to prove the sandbox there, never to skip.
    if std::env::var_os("CI").is_some() {
        assert!(
            rustix::process::getuid().is_root(),
            "CI runs the sandbox tests as root"
        );
    }
}
