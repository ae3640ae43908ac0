//! `kiln completions` and `kiln manpages`, generated from the CLI definition.

use std::process::Command;

fn kiln() -> Command {
    Command::new(assert_cmd::cargo::cargo_bin("kiln"))
}

#[test]
fn every_shell_gets_a_completion_script_and_bash_loads_it() {
    for shell in ["bash", "zsh", "fish", "elvish", "powershell"] {
        let out = kiln().args(["completions", shell]).output().unwrap();
        assert!(out.status.success(), "{shell}");
        let script = String::from_utf8(out.stdout).unwrap();
        assert!(
            script.contains("audit") && script.contains("provenance"),
            "{shell}: subcommands listed"
        );
    }
    // bash sources it and completes `kiln b` to `build`.
    let bin = assert_cmd::cargo::cargo_bin("kiln");
    let out = Command::new("bash")
        .arg("-c")
        .arg(format!(
            "source <('{}' completions bash) && complete -p kiln && COMP_WORDS=(kiln bu) COMP_CWORD=1 && _kiln kiln bu kiln && printf '%s\\n' \"${{COMPREPLY[@]}}\"",
            bin.display()
        ))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("complete -o bashdefault -o default -o nosort -F _kiln kiln"),
        "{text}"
    );
    assert!(text.lines().any(|l| l == "build"), "{text}");
}

#[test]
fn man_pages_cover_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let out = kiln().arg("manpages").arg(dir.path()).output().unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for page in [
        "kiln.1",
        "kiln-build.1",
        "kiln-audit.1",
        "kiln-cache-serve.1",
        "kiln-store-gc.1",
    ] {
        let text =
            std::fs::read_to_string(dir.path().join(page)).unwrap_or_else(|_| panic!("{page}"));
        assert!(
            text.starts_with(".ie") || text.contains(".TH"),
            "{page} is roff"
        );
    }
    let build = std::fs::read_to_string(dir.path().join("kiln-build.1")).unwrap();
    assert!(
        build.contains("keep\\-going") || build.contains("keep-going"),
        "options documented"
    );
}

#[test]
fn the_graph_draws_as_svg() {
    let example = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("examples/odordiff-2");
    let out = kiln()
        .arg("graph")
        .arg(&example)
        .args(["--env", "staging", "--format", "svg"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let svg = String::from_utf8(out.stdout).unwrap();
    assert!(svg.contains("<svg") && svg.contains("</svg>"), "{svg}");
    // Every rule is a node of the drawing (Graphviz escapes `-` in titles).
    for rule in ["api", "worker", "platform&#45;staging"] {
        assert!(
            svg.contains(&format!("<title>{rule}</title>")),
            "{rule} missing"
        );
    }
}
