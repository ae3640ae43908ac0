//! `--color never` removes every ANSI code, clap's usage errors and log lines included, even on
//! a terminal; on a terminal, colour is on by default. Runs under a pty (`script`, from
//! util-linux), so that "a terminal" is real.

mod common;

use std::process::Command;

use common::Sandbox;

/// Runs kiln with `args` under a pseudo-terminal; everything it printed.
fn on_a_terminal(s: &Sandbox, args: &str) -> String {
    let kiln = assert_cmd::cargo::cargo_bin("kiln");
    let out = Command::new("script")
        .args(["-qec", &format!("{} {args}", kiln.display()), "/dev/null"])
        .env("KILN_STORE", s.store())
        .env("XDG_CONFIG_HOME", s.dir.path().join("config"))
        .env_remove("NO_COLOR")
        .env("TERM", "xterm-256color")
        .output()
        .expect("script (util-linux)");
    String::from_utf8_lossy(&out.stdout).into_owned()
}

#[test]
fn never_means_no_escape_codes_anywhere() {
    let s = Sandbox::new();
    // clap's usage error: coloured on a terminal by default, plain with --color never.
    let auto = on_a_terminal(&s, "no-such-command");
    assert!(auto.contains('\u{1b}'), "a terminal gets colour: {auto:?}");
    let never = on_a_terminal(&s, "--color never no-such-command");
    assert!(never.contains("no-such-command"), "{never:?}");
    assert!(!never.contains('\u{1b}'), "{never:?}");
    let never = on_a_terminal(&s, "--color=never no-such-command");
    assert!(!never.contains('\u{1b}'), "{never:?}");

    // A failing build with logs on: errors and log lines.
    s.write(
        "kiln.toml",
        "[project]\nname = \"p\"\n[rule.a]\nkind = \"manifest\"\nsrcs = [\"missing.yaml\"]\n",
    );
    let project = s.project();
    let always = on_a_terminal(
        &s,
        &format!("-vv --color always build {}", project.display()),
    );
    assert!(
        always.contains('\u{1b}') && always.contains("missing.yaml"),
        "{always:?}"
    );
    let never = on_a_terminal(
        &s,
        &format!("-vv --color never build {}", project.display()),
    );
    assert!(never.contains("missing.yaml"), "{never:?}");
    assert!(
        never.contains("INFO") || never.contains("DEBUG"),
        "log lines are there: {never:?}"
    );
    assert!(!never.contains('\u{1b}'), "{never:?}");
}

/// On a terminal, a build shows a progress bar (`[===   ] N/M`); `--no-progress` and
/// `KILN_NO_PROGRESS` hide it.
#[test]
fn progress_bars_show_on_a_terminal_unless_no_progress() {
    let s = Sandbox::new();
    // Enough slow rules that the bar is drawn at least once.
    let mut toml = String::from("[project]\nname = \"p\"\n");
    for i in 0..6 {
        toml.push_str(&format!(
            "[rule.r{i}]\nkind = \"exec\"\ncommand = [\"sh\", \"-c\", \"sleep 0.3; echo {i} > $out/x\"]\n"
        ));
    }
    s.write("kiln.toml", &toml);
    let project = s.project().display().to_string();
    let bar = on_a_terminal(&s, &format!("--color never build {project} -j 1"));
    assert!(bar.contains("/6"), "a bar counting rules: {bar:?}");
    std::fs::remove_dir_all(s.store()).unwrap();
    let plain = on_a_terminal(
        &s,
        &format!("--color never build {project} -j 1 --no-progress"),
    );
    assert!(plain.contains("built 6 rules"), "{plain:?}");
    assert!(
        !plain.contains("/6"),
        "no bar with --no-progress: {plain:?}"
    );
}
