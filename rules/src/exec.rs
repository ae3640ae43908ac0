//! `exec`: run a declared command over declared inputs, like a Nix derivation.
//!
//! ```toml
//! [rule.dashboards]
//! kind = "exec"
//! srcs = ["dashboards/*.jsonnet"]
//! deps = ["api"]
//! command = ["sh", "-c", "mkdir -p $out/dashboards && cp in/dashboards/* $out/dashboards/"]
//! env = { MODE = "${kiln.env}" }
//! timeout_secs = 120
//! network = false
//! ```
//!
//! The command runs in a fresh scratch directory holding `in/` (the sources, at their project
//! paths), `deps/<rule>/` (each dependency's output) and an empty `out/`, which becomes the
//! artifact. The environment is cleared and set to: `PATH=/usr/local/bin:/usr/bin:/bin`,
//! `HOME` and `TMPDIR` inside the scratch directory, `out` (absolute path of `out/`),
//! `SOURCE_DATE_EPOCH=315532800`, `TZ=UTC`, `LC_ALL=C`, plus the declared `env`.
//!
//! Isolation, honestly: when the OS allows unprivileged user and network namespaces
//! (`unshare -Urn`), the command runs with no network at all (only a loopback that is down).
//! Otherwise it runs with the host network and kiln logs a warning. It is *not* a full sandbox:
//! it can read the host file system (tools in `/usr`, but also anything else readable), and the
//! result may depend on those tools' versions, which are not part of the derivation. Declare
//! what you can in `env` and `srcs`, and use `kiln audit` (planned) to catch nondeterminism.

use std::collections::BTreeMap;
use std::io::Read;
use std::process::{Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use kiln_core::kind::{parse_attrs, AttrError, BuildContext, BuildError, Kind};
use kiln_core::Tree;
use serde::Deserialize;
use serde_json::Value;

/// The fixed `SOURCE_DATE_EPOCH` of every exec build (1980-01-01, safe for zip).
pub const SOURCE_DATE_EPOCH: &str = "315532800";

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct Attrs {
    command: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default = "default_timeout")]
    timeout_secs: u64,
    #[serde(default)]
    network: bool,
}

fn default_timeout() -> u64 {
    600
}

/// Whether `unshare -Urn` works here (checked once).
pub fn network_sandbox_available() -> bool {
    static AVAILABLE: OnceLock<bool> = OnceLock::new();
    *AVAILABLE.get_or_init(|| {
        Command::new("unshare")
            .args(["-Urn", "true"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status()
            .is_ok_and(|s| s.success())
    })
}

/// The `exec` kind.
pub struct Exec;

impl Kind for Exec {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn version(&self) -> u32 {
        1
    }

    fn needs_scratch(&self) -> bool {
        true
    }

    fn check(&self, attrs: &Value) -> Result<(), AttrError> {
        let a: Attrs = parse_attrs(attrs)?;
        if a.command.is_empty() {
            return Err(AttrError::new("command", "must name a program"));
        }
        Ok(())
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Tree, BuildError> {
        let a: Attrs = parse_attrs(cx.attrs)?;
        let io = |what: &str| {
            let what = what.to_owned();
            move |e: std::io::Error| BuildError::caused(format!("failed to {what}"), e)
        };
        let root = cx
            .scratch
            .ok_or_else(|| BuildError::failed("exec needs a scratch directory"))?;
        let (inputs, out, home, tmp) = (
            root.join("in"),
            root.join("out"),
            root.join("home"),
            root.join("tmp"),
        );
        for d in [&inputs, &out, &home, &tmp] {
            std::fs::create_dir_all(d).map_err(io("create the scratch directory"))?;
        }
        let mut in_tree = Tree::new();
        for s in cx.srcs {
            in_tree.insert_file(s.path.clone(), s.content.clone(), s.executable);
        }
        in_tree
            .write_to(&inputs)
            .map_err(|e| BuildError::caused("failed to stage sources", e))?;
        for dep in cx.deps.names() {
            let dir = root.join("deps").join(dep.as_str());
            std::fs::create_dir_all(&dir).map_err(io("create the scratch directory"))?;
            cx.deps.tree(&dep)?.write_to(&dir).map_err(|e| {
                BuildError::caused(format!("failed to stage dependency `{dep}`"), e)
            })?;
        }
        let sandboxed = !a.network && network_sandbox_available();
        if !a.network && !sandboxed {
            tracing::warn!(rule = %cx.rule, "no user/network namespaces here: `exec` runs with the host network");
        }
        let mut cmd = if sandboxed {
            let mut c = Command::new("unshare");
            c.args(["-Urn", "--"]).args(&a.command);
            c
        } else {
            let mut c = Command::new(&a.command[0]);
            c.args(&a.command[1..]);
            c
        };
        cmd.current_dir(root)
            .env_clear()
            .env("PATH", "/usr/local/bin:/usr/bin:/bin")
            .env("HOME", &home)
            .env("TMPDIR", &tmp)
            .env("out", &out)
            .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
            .env("TZ", "UTC")
            .env("LC_ALL", "C")
            .envs(&a.env)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = cmd
            .spawn()
            .map_err(|e| BuildError::caused(format!("failed to start `{}`", a.command[0]), e))?;
        let mut stdout = child.stdout.take().expect("piped");
        let mut stderr = child.stderr.take().expect("piped");
        let out_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stdout.read_to_end(&mut s);
            s
        });
        let err_reader = std::thread::spawn(move || {
            let mut s = Vec::new();
            let _ = stderr.read_to_end(&mut s);
            s
        });
        let deadline = Instant::now() + Duration::from_secs(a.timeout_secs);
        let status = loop {
            if let Some(status) = child.try_wait().map_err(io("wait for the command"))? {
                break status;
            }
            if Instant::now() > deadline {
                let _ = child.kill();
                let _ = child.wait();
                return Err(BuildError::failed(format!(
                    "command timed out after {} s",
                    a.timeout_secs
                )));
            }
            std::thread::sleep(Duration::from_millis(5));
        };
        let _ = out_reader.join();
        let err = err_reader.join().unwrap_or_default();
        if !status.success() {
            let text = String::from_utf8_lossy(&err);
            let tail: Vec<&str> = text.lines().rev().take(20).collect();
            let tail: Vec<&str> = tail.into_iter().rev().collect();
            return Err(BuildError::failed(format!(
                "command `{}` failed ({status}){}",
                a.command.join(" "),
                if tail.is_empty() {
                    String::new()
                } else {
                    format!("; its last output:\n{}", tail.join("\n"))
                }
            )));
        }
        Tree::from_dir(&out)
            .map_err(|e| BuildError::caused("the command's `$out` is not a valid artifact", e))
    }
}
