//! Large `exec` sources shown in place (issue 17): in the sandbox, a directory holding only a
//! rule's sources, or a large source file, is mounted read-only where it lies instead of
//! copied. The build cannot tell the difference, sees nothing undeclared, cannot write its
//! inputs, and fails when a source changes under it.

mod common;

use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::path::Path;
use std::time::Duration;

use common::Sandbox;

/// Past the stat cache's racy window (2 s), so that sources may be shown in place.
const PAST_RACY_WINDOW: Duration = Duration::from_millis(2_500);

/// A large YAML-like text (over the 512 KiB from which a source is shown in place).
fn large(seed: &str) -> String {
    (0..20_000)
        .map(|i| format!("- name: {seed}-{i}\n  image: registry.example/app:{i}\n"))
        .collect()
}

fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// `data/a.yaml` and `data/b.yaml` (large), `small.txt`, with the modes a copy would get.
fn sources(s: &Sandbox) {
    s.write("data/a.yaml", &large("a"));
    s.write("data/b.yaml", &large("b"));
    s.write("small.txt", "small\n");
    for f in ["data/a.yaml", "data/b.yaml", "small.txt"] {
        set_mode(&s.project().join(f), 0o644);
    }
    set_mode(&s.project().join("data"), 0o755);
}

fn set_mtimes(s: &Sandbox, t: std::time::SystemTime) {
    for f in ["data/a.yaml", "data/b.yaml", "small.txt"] {
        std::fs::File::options()
            .append(true)
            .open(s.project().join(f))
            .unwrap()
            .set_modified(t)
            .unwrap();
    }
}

fn project(s: &Sandbox, srcs: &str, command: &str) {
    s.write(
        "kiln.toml",
        &format!(
            "[project]\nname = \"p\"\n\n[rule.copy]\nkind = \"exec\"\nsrcs = {srcs}\n\
             command = [\"sh\", \"-c\", \"cp -r in/data $out/data && cp in/small.txt $out/\"]\n\n\
             [rule.probe]\nkind = \"exec\"\nsrcs = {srcs}\ncommand = [\"sh\", \"-c\", \"{command}\"]\n"
        ),
    );
}

/// A command writing `$out/how`: `in-place` when the build sees `data/a.yaml` as the
/// project's own file (its inode), `copied` when it sees a copy (a new file).
fn how_probe(s: &Sandbox) -> String {
    let host_ino = std::fs::metadata(s.project().join("data/a.yaml"))
        .unwrap()
        .ino();
    format!(
        "if [ $(stat -c %i in/data/a.yaml) = {host_ino} ]; then echo in-place; else echo copied; fi > $out/how"
    )
}

fn cat(s: &Sandbox, store: &Path, rule: &str, file: &str) -> String {
    String::from_utf8(s.cat_bytes_in(store, rule, file, &[])).unwrap()
}

#[test]
fn a_directory_of_sources_is_shown_in_place_and_builds_what_a_copy_builds() {
    let s = Sandbox::new();
    sources(&s);
    // The probe tells a mount from a copy by the inode, tries to write its inputs, and lists
    // what it sees.
    project(
        &s,
        r#"["data/*.yaml", "small.txt"]"#,
        &format!(
            "{}; \
             (echo x >> in/data/a.yaml) 2>/dev/null && echo writable > $out/write || echo read-only > $out/write; \
             (echo x > in/new.txt) 2>/dev/null && echo writable >> $out/write || echo read-only >> $out/write; \
             ls -A in in/data > $out/seen",
            how_probe(&s)
        ),
    );
    // Modified "in the future": within the racy window, so copied.
    let now = std::time::SystemTime::now();
    set_mtimes(&s, now + Duration::from_secs(600));
    let copied_store = s.dir.path().join("store-copied");
    let copied = s.build_in(&copied_store, &[]);
    assert_eq!(cat(&s, &copied_store, "probe", "how"), "copied\n");
    set_mtimes(&s, now - Duration::from_secs(600));
    std::thread::sleep(PAST_RACY_WINDOW);
    let shown_store = s.dir.path().join("store-shown");
    let shown = s.build_in(&shown_store, &[]);
    assert_eq!(cat(&s, &shown_store, "probe", "how"), "in-place\n");
    // Same derivation, same output, whichever way the sources reached the build.
    assert_eq!(
        common::hashes(&copied)["copy"],
        common::hashes(&shown)["copy"]
    );
    assert_eq!(
        cat(&s, &shown_store, "copy", "data/b.yaml"),
        large("b"),
        "the artifact holds the source's bytes"
    );
    // Inputs are read-only either way, and nothing undeclared is seen.
    for store in [&copied_store, &shown_store] {
        assert_eq!(cat(&s, store, "probe", "write"), "read-only\nread-only\n");
        assert_eq!(
            cat(&s, store, "probe", "seen"),
            "in:\ndata\nsmall.txt\n\nin/data:\na.yaml\nb.yaml\n"
        );
    }
    // The user's files are untouched: not written, not linked.
    assert_eq!(
        std::fs::read_to_string(s.project().join("data/a.yaml")).unwrap(),
        large("a")
    );
    assert_eq!(
        std::fs::metadata(s.project().join("data/a.yaml"))
            .unwrap()
            .nlink(),
        1
    );
}

#[test]
fn an_undeclared_file_beside_large_sources_stays_invisible() {
    let s = Sandbox::new();
    sources(&s);
    s.write("data/secret.txt", "TOP-SECRET\n");
    set_mode(&s.project().join("data/secret.txt"), 0o644);
    project(
        &s,
        r#"["data/*.yaml", "small.txt"]"#,
        "ls -A in/data > $out/seen; cat in/data/secret.txt > $out/leak 2>/dev/null; true",
    );
    std::thread::sleep(PAST_RACY_WINDOW);
    s.build(&[]);
    // The directory is not eligible; its large files are shown one by one, and the secret
    // is neither listed nor readable.
    assert_eq!(s.cat("probe", "seen", &[]), "a.yaml\nb.yaml\n");
    assert_eq!(s.cat("probe", "leak", &[]), "");
}

#[test]
fn a_source_changed_while_the_command_runs_fails_the_build() {
    for change in ["edit a source", "add a file"] {
        let s = Sandbox::new();
        sources(&s);
        project(
            &s,
            r#"["data/*.yaml", "small.txt"]"#,
            "sleep 3; echo done > $out/x",
        );
        std::thread::sleep(PAST_RACY_WINDOW);
        let waiter = {
            let store = s.store();
            let project = s.project();
            let change = change.to_owned();
            std::thread::spawn(move || {
                // Once a build directory exists, the sources were hashed and staged.
                let staged = || {
                    std::fs::read_dir(store.join("tmp")).is_ok_and(|mut d| {
                        d.any(|e| {
                            e.unwrap()
                                .file_name()
                                .to_string_lossy()
                                .starts_with("build-")
                        })
                    })
                };
                let deadline = std::time::Instant::now() + Duration::from_secs(60);
                while !staged() && std::time::Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(20));
                }
                std::thread::sleep(Duration::from_millis(300));
                match change.as_str() {
                    "edit a source" => {
                        std::fs::write(project.join("data/a.yaml"), large("edited")).unwrap()
                    }
                    _ => std::fs::write(project.join("data/late.txt"), "late\n").unwrap(),
                }
            })
        };
        let build = s
            .kiln()
            .arg("build")
            .arg(s.project())
            .timeout(Duration::from_secs(120))
            .output();
        let out = build.unwrap();
        waiter.join().unwrap();
        assert!(!out.status.success(), "{change}: the build succeeded");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("changed during the build"), "{change}: {err}");
    }
}

#[test]
fn with_a_network_every_source_is_copied() {
    let s = Sandbox::new();
    sources(&s);
    let probe = how_probe(&s);
    s.write(
        "kiln.toml",
        &format!(
            "[project]\nname = \"p\"\n\n[rule.probe]\nkind = \"exec\"\nsrcs = [\"data/*.yaml\"]\n\
             network = true\ncommand = [\"sh\", \"-c\", \"{probe}\"]\n"
        ),
    );
    std::thread::sleep(PAST_RACY_WINDOW);
    s.build(&[]);
    assert_eq!(s.cat("probe", "how", &[]), "copied\n");
    // Without the network, the same sources are shown in place.
    let text = std::fs::read_to_string(s.project().join("kiln.toml")).unwrap();
    s.write("kiln.toml", &text.replace("network = true\n", ""));
    s.build(&[]);
    assert_eq!(s.cat("probe", "how", &[]), "in-place\n");
}
