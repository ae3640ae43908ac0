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
//! The command runs in a fresh build directory holding `in/` (the sources, at their project
//! paths), `deps/<rule>/` (each dependency's output) and an empty `out/`, which becomes the
//! artifact. The environment is cleared and set to: `PATH`, `HOME` and `TMPDIR` inside the build
//! directory, `out` (the absolute path of `out/`), `SOURCE_DATE_EPOCH=315532800`, `TZ=UTC`,
//! `LC_ALL=C`, plus the declared `env`.
//!
//! It runs in the sandbox of [`crate::sandbox`] (bubblewrap): no network, no host file system
//! beyond read-only tool directories, every process killed when the command ends. There `in/`
//! is read-only, and sources of at least [`IN_PLACE_FROM`] bytes are mounted into it from
//! where they lie instead of copied (while their stat data shows them unchanged since they
//! were hashed, and checked again once the command has run), so a gigabyte of sources costs
//! no gigabyte of writes. Unsandboxed, or with `network = true`, every source is copied. Where the
//! sandbox cannot run, exec rules are refused unless the build passes `--unsandboxed`. With
//! `tools = ["jq", "helm"]`, each tool is resolved through `PATH` when the build starts, its
//! content hash enters the derivation (another jq version, another hash), and only those
//! tools and `sh` are visible inside.

use std::collections::{BTreeMap, HashSet};
use std::io::Read;
use std::os::unix::fs::PermissionsExt;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kiln_core::kind::{
    parse_attrs, AttrError, BuildContext, BuildError, InPlace, Kind, LoadedSource, Output,
    SourceFiles,
};
use kiln_core::{Digest, RelPath};

use crate::sandbox::{self, Inputs, Spec, Tool};
use kiln_core::Tree;
use rayon::prelude::*;
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
    /// As written: names; once prepared: name -> content hash of the binary.
    #[serde(default)]
    tools: Option<Tools>,
}

/// `tools`: names as written, or name -> blake3 of the binary once resolved (what the
/// derivation holds: no host path enters it).
#[derive(Debug, Deserialize)]
#[serde(untagged)]
enum Tools {
    Names(Vec<String>),
    Resolved(BTreeMap<String, String>),
}

/// Resolves `tools = [...]` of exec attributes through `path_var`: each becomes
/// `name -> blake3:<hash of the binary>`, and `sh` is always among them. The derivation then
/// covers the tools' versions. An unknown tool is an error naming it.
pub fn resolve_tools(attrs: &mut Value, path_var: &str) -> Result<(), AttrError> {
    let Some(Value::Array(names)) = attrs.get("tools") else {
        return Ok(());
    };
    let mut resolved = serde_json::Map::new();
    let mut all: Vec<String> = names
        .iter()
        .map(|n| n.as_str().unwrap_or_default().to_owned())
        .collect();
    all.push("sh".to_owned());
    for (i, name) in all.iter().enumerate() {
        let path = sandbox::find_tool(name, path_var).ok_or_else(|| {
            AttrError::new(
                format!("tools[{i}]"),
                format!("tool `{name}` is not on PATH"),
            )
        })?;
        let bytes = std::fs::read(&path).map_err(|e| {
            AttrError::new(
                format!("tools[{i}]"),
                format!("cannot read `{}`: {e}", path.display()),
            )
        })?;
        if let Some(interpreter) = hidden_interpreter(&bytes) {
            return Err(AttrError::new(
                format!("tools[{i}]"),
                format!(
                    "tool `{name}` is a script run by `{interpreter}`, which the sandbox does not show with `tools` (only the declared tools, under {}, and the shared libraries); declare a binary, or drop `tools` to show all of /usr",
                    sandbox::TOOLS_DIR
                ),
            ));
        }
        resolved.insert(name.clone(), Value::from(Digest::of(&bytes).to_string()));
    }
    attrs["tools"] = Value::Object(resolved);
    Ok(())
}

/// The interpreter of a `#!` script that a sandbox with `tools` does not show (it shows the
/// declared tools under [`sandbox::TOOLS_DIR`] and the shared library directories, not
/// `/usr/bin`): such a tool could only fail inside, or be skipped by a command that ignores
/// its failure.
fn hidden_interpreter(bytes: &[u8]) -> Option<String> {
    let rest = bytes.strip_prefix(b"#!")?;
    let line = rest.split(|b| *b == b'\n').next().unwrap_or_default();
    let line = String::from_utf8_lossy(&line[..line.len().min(256)]).into_owned();
    let interpreter = line.split_whitespace().next()?.to_owned();
    let visible = [
        "/usr/lib/",
        "/usr/lib32/",
        "/usr/lib64/",
        "/usr/libexec/",
        "/usr/share/",
    ]
    .iter()
    .any(|dir| interpreter.starts_with(dir))
        || interpreter.starts_with(&format!("{}/", sandbox::TOOLS_DIR));
    (!visible).then_some(interpreter)
}

/// Where the tools of resolved exec attributes come from on this host: each tool as found on
/// `path_var` (symlinks not resolved, so a retargeted link reads as changed) with the digest
/// the derivation holds. A build's fingerprint records them; other kinds have none.
pub fn tool_origins(attrs: &Value, path_var: &str) -> Vec<(PathBuf, Option<Digest>)> {
    let Some(Value::Object(tools)) = attrs.get("tools") else {
        return Vec::new();
    };
    tools
        .iter()
        .filter_map(|(name, digest)| {
            let path = sandbox::find_on_path(name, path_var)?;
            Some((path, digest.as_str().and_then(|d| d.parse().ok())))
        })
        .collect()
}

fn default_timeout() -> u64 {
    600
}

/// The `exec` kind.
#[derive(Default)]
pub struct Exec {
    /// Run commands without the sandbox (`--unsandboxed`), with a warning.
    pub unsandboxed: bool,
}

impl Kind for Exec {
    fn name(&self) -> &'static str {
        "exec"
    }

    fn version(&self) -> u32 {
        // 2: the sandbox (`/build` inside, only declared tools with `tools`).
        2
    }

    fn needs_scratch(&self) -> bool {
        true
    }

    fn runs_programs(&self) -> bool {
        true
    }

    fn streams_sources(&self) -> bool {
        true
    }

    fn check(&self, attrs: &Value) -> Result<(), AttrError> {
        let a: Attrs = parse_attrs(attrs)?;
        if a.command.is_empty() || a.command[0].is_empty() {
            return Err(AttrError::new("command", "must name a program"));
        }
        if let Some(Tools::Names(names)) = &a.tools {
            for (i, n) in names.iter().enumerate() {
                if n.is_empty() || n.contains('/') {
                    return Err(AttrError::new(
                        format!("tools[{i}]"),
                        "a tool is a program name found on PATH, not a path",
                    ));
                }
            }
        }
        Ok(())
    }

    fn host_inputs(&self, attrs: &Value) -> Result<Option<Value>, AttrError> {
        if !matches!(attrs.get("tools"), Some(Value::Array(_))) {
            return Ok(None);
        }
        let mut resolved = attrs.clone();
        resolve_tools(&mut resolved, &std::env::var("PATH").unwrap_or_default())?;
        Ok(Some(resolved))
    }

    fn build(&self, cx: &BuildContext<'_>) -> Result<Tree, BuildError> {
        match self.build_output(cx)? {
            Output::Tree(t) => Ok(t),
            Output::Dir(out) => Tree::from_dir(&out)
                .map_err(|e| BuildError::caused("the command's `$out` is not a valid artifact", e)),
        }
    }

    /// Runs the command; its `$out` is the output, streamed into the store by the caller.
    fn build_output(&self, cx: &BuildContext<'_>) -> Result<Output, BuildError> {
        let a: Attrs = parse_attrs(cx.attrs)?;
        let root = cx
            .scratch
            .ok_or_else(|| BuildError::failed("exec needs a scratch directory"))?;
        let sandboxed = !self.unsandboxed;
        // A source is checked once the command has run: until then, one swapped for a link
        // would show the command what it points to. Without a network, and with its output
        // and its stderr dropped when the check fails, nothing of it leaves the sandbox; with
        // a network it could, so then every source is copied (and checked before it runs).
        let staged_at = Instant::now();
        let Staged { out, in_place } = stage(cx, root, sandboxed && !a.network)?;
        tracing::debug!(rule = %cx.rule, elapsed = ?staged_at.elapsed(), in_place = in_place.len(), "staged the build directory");
        let spec = Spec {
            network: a.network,
            tools: resolved_tools(&a)?,
            inputs: sandboxed.then(|| Inputs {
                dir: root.join("in"),
                in_place: in_place
                    .all()
                    .map(|(path, shown)| (shown.host_path.clone(), path.as_str().to_owned()))
                    .collect(),
            }),
        };
        if sandboxed {
            sandbox::available().map_err(|why| {
                BuildError::failed(format!(
                    "exec rules run in a sandbox, and it cannot run here: {why}; install bubblewrap, or pass --unsandboxed to run commands without it"
                ))
            })?;
        } else {
            tracing::warn!(rule = %cx.rule, "running `exec` without the sandbox (--unsandboxed): it can read the host and use the network");
        }
        let cmd = command(&a, &spec, root, sandboxed)?;
        let ran_at = Instant::now();
        let (status, stderr) = run(cmd, &a, sandboxed)?;
        tracing::debug!(rule = %cx.rule, elapsed = ?ran_at.elapsed(), %status, "ran the command");
        // What the command read in place must still be what was hashed (checked before its
        // status: a failed command's stderr is not shown when it read something else).
        for (path, _) in in_place.all() {
            cx.source_files.check_in_place(path)?;
        }
        if !status.success() {
            let text = String::from_utf8_lossy(&stderr);
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
        Ok(Output::Dir(out))
    }
}

fn io(what: &str) -> impl Fn(std::io::Error) -> BuildError {
    let what = what.to_owned();
    move |e: std::io::Error| BuildError::caused(format!("failed to {what}"), e)
}

/// Sources at least this large are shown to a sandboxed command in place (read-only bind
/// mounts) instead of copied into `in/`, when [`SourceFiles::in_place`] allows it: a large
/// source then costs a mount instead of its size in writes. Smaller ones are copied, which
/// costs less than a mount.
pub const IN_PLACE_FROM: u64 = 512 << 10;
/// At most this many sources of one rule are shown in place (the largest); the rest are
/// copied. bwrap reads the mount table again for each mount it makes, so n mounts cost
/// about n² (measured: 256 in 0.11 s, 1,024 in 1.5 s, against about 0.25 s to copy 256 MB).
pub const MAX_IN_PLACE: usize = 256;

/// At most this many directories are tried for [`in_place_sources`] (each try walks the
/// directory), so a deep tree of ineligible directories costs bounded time.
const MAX_DIR_TRIES: usize = 64;

/// The sources a build is shown in place: whole directories, and files outside them.
#[derive(Default)]
struct InPlaceSources {
    dirs: Vec<(RelPath, InPlace)>,
    files: Vec<(RelPath, InPlace)>,
}

impl InPlaceSources {
    /// Whether `path` lies inside a directory shown in place.
    fn covers(&self, path: &str) -> bool {
        self.dirs.iter().any(|(d, _)| {
            path.strip_prefix(d.as_str())
                .is_some_and(|rest| rest.starts_with('/'))
        })
    }

    /// Every mount: the directories, then the files.
    fn all(&self) -> impl Iterator<Item = &(RelPath, InPlace)> {
        self.dirs.iter().chain(&self.files)
    }

    fn len(&self) -> usize {
        self.dirs.len() + self.files.len()
    }
}

/// The sources to show in place. First whole directories, top down: one that holds only
/// sources of this rule (see [`SourceFiles::in_place_dir`]) is one mount, whatever the number
/// of files in it. Then, of the sources left, the largest of those [`SourceFiles::in_place`]
/// allows. Each of at least [`IN_PLACE_FROM`] bytes, at most [`MAX_IN_PLACE`] mounts in all.
fn in_place_sources(srcs: &[LoadedSource], files: &dyn SourceFiles) -> InPlaceSources {
    // Each directory that holds at least two sources; a parent sorts before its children.
    let mut per_dir: BTreeMap<&str, usize> = BTreeMap::new();
    for s in srcs {
        let path = s.path.as_str();
        for (i, _) in path.match_indices('/') {
            *per_dir.entry(&path[..i]).or_default() += 1;
        }
    }
    let mut shown = InPlaceSources::default();
    let mut tries = 0;
    for dir in per_dir.into_iter().filter(|(_, n)| *n >= 2).map(|(d, _)| d) {
        if shown.dirs.len() == MAX_IN_PLACE || tries == MAX_DIR_TRIES {
            break;
        }
        // Inside a directory already shown: nothing to try.
        if shown.covers(dir) {
            continue;
        }
        tries += 1;
        let Ok(rel) = RelPath::new(dir) else { continue };
        if let Some(place) = files.in_place_dir(&rel) {
            if place.size >= IN_PLACE_FROM {
                shown.dirs.push((rel, place));
            }
        }
    }
    let mut large: Vec<(RelPath, InPlace)> = srcs
        .iter()
        .filter(|s| !shown.covers(s.path.as_str()))
        .filter_map(|s| {
            let place = files.in_place(&s.path)?;
            (place.size >= IN_PLACE_FROM).then(|| (s.path.clone(), place))
        })
        .collect();
    large.sort_by(|a, b| b.1.size.cmp(&a.1.size).then_with(|| a.0.cmp(&b.0)));
    large.truncate(MAX_IN_PLACE - shown.dirs.len());
    shown.files = large;
    shown
}

/// A staged build directory.
struct Staged {
    /// `out/`.
    out: PathBuf,
    /// The sources shown in place rather than copied, with where they lie.
    in_place: InPlaceSources,
}

/// Stages the sources in `in/` and each dependency in `deps/<name>/`, and makes `out/`,
/// `home/` and `tmp/`. In the sandbox, large sources are shown in place: `in/` holds an empty
/// file or directory where each of them is mounted.
fn stage(cx: &BuildContext<'_>, root: &Path, sandboxed: bool) -> Result<Staged, BuildError> {
    let (inputs, out, home, tmp) = (
        root.join("in"),
        root.join("out"),
        root.join("home"),
        root.join("tmp"),
    );
    for d in [&inputs, &out, &home, &tmp] {
        std::fs::create_dir_all(d).map_err(io("create the scratch directory"))?;
    }
    let in_place = if sandboxed {
        in_place_sources(cx.srcs, cx.source_files)
    } else {
        InPlaceSources::default()
    };
    for (dir, _) in &in_place.dirs {
        std::fs::create_dir_all(inputs.join(dir.as_str()))
            .map_err(io("create the scratch directory"))?;
    }
    let shown_files: HashSet<&RelPath> = in_place.files.iter().map(|(p, _)| p).collect();
    // Copied from disk, checked against their digests on the way: never held in memory. In
    // parallel: many large sources were staged at the speed of one core.
    cx.srcs.par_iter().try_for_each(|s| {
        if in_place.covers(s.path.as_str()) {
            return Ok(());
        }
        let dest = inputs.join(s.path.as_str());
        if let Some(parent) = dest.parent() {
            std::fs::create_dir_all(parent).map_err(io("create the scratch directory"))?;
        }
        if shown_files.contains(&s.path) {
            std::fs::File::create(&dest).map_err(io("stage a source"))?;
        } else {
            cx.source_files.copy_to(&s.path, &dest)?;
        }
        let mode = if s.executable { 0o755 } else { 0o644 };
        std::fs::set_permissions(&dest, std::fs::Permissions::from_mode(mode))
            .map_err(io("stage a source"))
    })?;
    for dep in cx.deps.names() {
        let dir = root.join("deps").join(dep.as_str());
        std::fs::create_dir_all(&dir).map_err(io("create the scratch directory"))?;
        cx.deps.write_to(&dep, &dir)?;
    }
    Ok(Staged { out, in_place })
}

/// The declared tools, found again on the host and checked against the digests the
/// derivation holds.
fn resolved_tools(a: &Attrs) -> Result<Option<Vec<Tool>>, BuildError> {
    Ok(match &a.tools {
        None => None,
        Some(Tools::Names(_)) => {
            return Err(BuildError::failed(
                "`tools` were not resolved before the build",
            ))
        }
        Some(Tools::Resolved(map)) => {
            let host_path = std::env::var("PATH").unwrap_or_default();
            let mut tools = Vec::new();
            for (name, digest) in map {
                let path = sandbox::find_tool(name, &host_path).ok_or_else(|| {
                    BuildError::failed(format!("tool `{name}` is no longer on PATH"))
                })?;
                let bytes = std::fs::read(&path).map_err(io("read a tool"))?;
                if Digest::of(&bytes).to_string() != *digest {
                    return Err(BuildError::failed(format!(
                        "tool `{name}` changed since the build started; run it again"
                    )));
                }
                tools.push(Tool {
                    name: name.clone(),
                    path,
                });
            }
            Some(tools)
        }
    })
}

/// The command, in the sandbox or not, with a clean, fixed environment.
fn command(a: &Attrs, spec: &Spec, root: &Path, sandboxed: bool) -> Result<Command, BuildError> {
    let (work, path_var) = if sandboxed {
        (Path::new(sandbox::BUILD_DIR).to_path_buf(), spec.path_var())
    } else {
        (root.to_path_buf(), "/usr/local/bin:/usr/bin:/bin")
    };
    let mut cmd = if sandboxed {
        let bwrap = sandbox::find_tool("bwrap", &std::env::var("PATH").unwrap_or_default())
            .ok_or_else(|| BuildError::failed("`bwrap` is not on PATH"))?;
        let mut c = spec.command(root, &a.command);
        c.env_clear();
        // The program itself is resolved on the host, not on the sandbox's PATH.
        let mut outer = Command::new(bwrap);
        outer.args(c.get_args());
        sandbox::attach_seccomp(&mut outer)
            .map_err(|e| BuildError::caused("failed to set up the sandbox's seccomp filter", e))?;
        outer
    } else {
        let mut c = Command::new(&a.command[0]);
        c.args(&a.command[1..]).process_group(0);
        c
    };
    cmd.current_dir(root)
        .env_clear()
        .env("PATH", path_var)
        .env("HOME", work.join("home"))
        .env("TMPDIR", work.join("tmp"))
        .env("out", work.join("out"))
        .env("SOURCE_DATE_EPOCH", SOURCE_DATE_EPOCH)
        .env("TZ", "UTC")
        .env("LC_ALL", "C")
        .envs(&a.env)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    Ok(cmd)
}

/// Runs the command to its end, its deadline, or an interrupt (killing everything it
/// started); its exit status and stderr.
fn run(
    mut cmd: Command,
    a: &Attrs,
    sandboxed: bool,
) -> Result<(std::process::ExitStatus, Vec<u8>), BuildError> {
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
    // Sandboxed, killing bwrap kills its PID namespace and everything in it; unsandboxed,
    // the command's process group is the best there is.
    let kill_all = |child: &mut std::process::Child| {
        if !sandboxed {
            if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
                let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
            }
        }
        let _ = child.kill();
        let _ = child.wait();
    };
    let deadline = Instant::now() + Duration::from_secs(a.timeout_secs);
    let status = loop {
        if let Some(status) = child.try_wait().map_err(io("wait for the command"))? {
            break status;
        }
        if kiln_core::interrupt::interrupted() {
            kill_all(&mut child);
            return Err(BuildError::failed("interrupted"));
        }
        if Instant::now() > deadline {
            kill_all(&mut child);
            return Err(BuildError::failed(format!(
                "command timed out after {} s",
                a.timeout_secs
            )));
        }
        std::thread::sleep(Duration::from_millis(5));
    };
    if !sandboxed {
        // Background children that outlive the command would hold its output open.
        if let Some(pid) = rustix::process::Pid::from_raw(child.id() as i32) {
            let _ = rustix::process::kill_process_group(pid, rustix::process::Signal::KILL);
        }
    }
    let _ = out_reader.join();
    let err = err_reader.join().unwrap_or_default();
    Ok((status, err))
}

#[cfg(test)]
mod tests {
    #[test]
    fn a_script_tools_interpreter_must_be_visible_in_the_sandbox() {
        assert_eq!(
            super::hidden_interpreter(b"#!/usr/bin/python3\nprint(1)\n").as_deref(),
            Some("/usr/bin/python3")
        );
        assert_eq!(
            super::hidden_interpreter(b"#!/usr/bin/env bash\n").as_deref(),
            Some("/usr/bin/env")
        );
        assert_eq!(super::hidden_interpreter(b"#!/usr/lib/x/run\n"), None);
        assert_eq!(super::hidden_interpreter(b"\x7fELF\x02\x01"), None);
    }

    use super::*;
    use std::sync::Mutex;

    /// Sources whose sizes are known; directories listed in `dirs` are eligible.
    struct Fake {
        sizes: BTreeMap<String, u64>,
        dirs: Vec<&'static str>,
        tried: Mutex<Vec<String>>,
    }

    impl SourceFiles for Fake {
        fn copy_to(&self, _: &RelPath, _: &Path) -> Result<(), BuildError> {
            unreachable!("not copied here")
        }

        fn in_place(&self, path: &RelPath) -> Option<InPlace> {
            Some(InPlace {
                host_path: PathBuf::from("/p").join(path.as_str()),
                size: self.sizes[path.as_str()],
            })
        }

        fn in_place_dir(&self, dir: &RelPath) -> Option<InPlace> {
            self.tried.lock().unwrap().push(dir.to_string());
            self.dirs.contains(&dir.as_str()).then(|| InPlace {
                host_path: PathBuf::from("/p").join(dir.as_str()),
                size: self
                    .sizes
                    .iter()
                    .filter(|(p, _)| p.starts_with(&format!("{dir}/")))
                    .map(|(_, s)| s)
                    .sum(),
            })
        }
    }

    fn fake(files: &[(&str, u64)], dirs: Vec<&'static str>) -> (Vec<LoadedSource>, Fake) {
        let srcs = files
            .iter()
            .map(|(p, _)| LoadedSource {
                path: RelPath::new(*p).unwrap(),
                content: Default::default(),
                executable: false,
            })
            .collect();
        let sizes = files.iter().map(|(p, s)| ((*p).to_owned(), *s)).collect();
        let tried = Mutex::default();
        (srcs, Fake { sizes, dirs, tried })
    }

    fn shown(list: &InPlaceSources) -> Vec<&str> {
        list.all().map(|(p, _)| p.as_str()).collect()
    }

    const MB: u64 = 1 << 20;

    #[test]
    fn an_eligible_directory_is_one_mount_then_the_largest_files() {
        let (srcs, files) = fake(
            &[
                ("data/a.yaml", MB),
                ("data/sub/b.yaml", MB),
                ("data/sub/c.yaml", MB),
                ("mixed/big.bin", 8 * MB),
                ("mixed/small.txt", 10),
                ("top.bin", 2 * MB),
            ],
            vec!["data"],
        );
        let list = in_place_sources(&srcs, &files);
        assert_eq!(shown(&list), ["data", "mixed/big.bin", "top.bin"]);
        assert_eq!(list.dirs[0].1.size, 3 * MB);
        // `data/sub` lies in a directory already shown: never walked.
        assert_eq!(*files.tried.lock().unwrap(), ["data", "mixed"]);
    }

    #[test]
    fn small_sources_are_copied_and_mounts_are_capped_at_the_largest() {
        let many: Vec<(String, u64)> = (0..MAX_IN_PLACE as u64 + 10)
            .map(|i| (format!("f{i:04}.bin"), IN_PLACE_FROM + i))
            .chain([("tiny.txt".to_owned(), 100)])
            .collect();
        let refs: Vec<(&str, u64)> = many.iter().map(|(p, s)| (p.as_str(), *s)).collect();
        let (srcs, files) = fake(&refs, vec![]);
        let list = in_place_sources(&srcs, &files);
        assert_eq!(list.len(), MAX_IN_PLACE);
        // The largest are the ones mounted; the 10 smallest large ones and the tiny one copied.
        assert!(list.all().all(|(_, p)| p.size >= IN_PLACE_FROM + 10));
        assert!(!shown(&list).contains(&"tiny.txt"));
    }
}
