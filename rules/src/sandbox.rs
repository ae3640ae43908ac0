//! The `exec` sandbox: bubblewrap (`bwrap`, Debian's `bubblewrap`), the same kernel mechanism
//! as Nix's Linux sandbox, driven by a tool that has been hardened for exactly this (Flatpak
//! runs on it) rather than by namespace code of our own.
//!
//! Inside, a command has:
//! - new user, mount, PID, network, IPC and UTS namespaces (`--unshare-all`); with `network =
//!   true` only the network is shared, with the host's resolver and CA certificates;
//! - a root file system holding only the build directory (`/build`: `in/`, `deps/`, `out/`,
//!   `home/`, `tmp/` (`TMPDIR`); the only writable place, but for `in/`, the sources, which
//!   is read-only, large sources being mounted there from where they lie rather than copied),
//!   `/proc`, a minimal `/dev`, a read-only root with no `/tmp`, and
//!   read-only host tool directories: `/usr` (with `/bin`, `/lib*`, `/sbin` as on the host) and
//!   `/etc/alternatives`. With `tools = [...]`, `/usr/bin` is *not* visible: only the declared
//!   tools and `sh`, under `/kiln/tools`, and the shared libraries. The store, the project and
//!   the user's home are never visible;
//! - its own session (`--new-session`), and bwrap as PID 1 of its PID namespace: when the
//!   command exits, times out or kiln is stopped (`--die-with-parent`), every process it
//!   started dies with the namespace, background and `setsid` children included;
//! - no privilege, also when kiln runs as root: the command runs as uid/gid [`SANDBOX_UID`]
//!   in its own user namespace (`--unshare-user --uid --gid`), with every capability dropped
//!   (`--cap-drop ALL`), `no_new_privs` (bwrap sets it), no further user namespaces
//!   (`--disable-userns`), and the seccomp filters of [`crate::seccomp`] (no mount, ptrace,
//!   keyctl, bpf, unshare/setns, ...). Read-only mounts stay read-only: nothing inside can
//!   remount them. `/proc` is read-only too: the namespace maps the command's uid to kiln's,
//!   and when that is root, the kernel's mode checks on global sysctls would let it write
//!   them.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::OnceLock;

/// Where the build directory appears inside the sandbox.
pub const BUILD_DIR: &str = "/build";
/// The unprivileged uid and gid a sandboxed command runs as (kiln's own uid outside).
pub const SANDBOX_UID: u32 = 1000;
/// The descriptors bwrap reads the seccomp filters from.
const SECCOMP_FDS: [i32; 2] = [10, 11];

/// The flags that take every privilege away from the command (see the module docs).
fn unprivileged() -> Vec<String> {
    let id = SANDBOX_UID.to_string();
    let mut args: Vec<String> = [
        "--unshare-user",
        "--uid",
        &id,
        "--gid",
        &id,
        "--disable-userns",
        "--cap-drop",
        "ALL",
    ]
    .map(str::to_owned)
    .to_vec();
    for fd in SECCOMP_FDS {
        args.push("--add-seccomp-fd".into());
        args.push(fd.to_string());
    }
    args
}

/// Hands the seccomp filters to a `bwrap` command made by [`Spec::command`] (as the
/// descriptors its `--add-seccomp-fd` flags name).
pub fn attach_seccomp(cmd: &mut Command) -> Result<(), crate::seccomp::SeccompError> {
    use command_fds::{CommandFdExt, FdMapping};
    let mut mappings = Vec::new();
    for (program, child_fd) in crate::seccomp::programs()?.iter().zip(SECCOMP_FDS) {
        mappings.push(FdMapping {
            parent_fd: crate::seccomp::memfd(program)?,
            child_fd,
        });
    }
    cmd.fd_mappings(mappings)
        .expect("the seccomp descriptors are distinct");
    Ok(())
}

/// Where declared tools appear inside the sandbox.
pub const TOOLS_DIR: &str = "/kiln/tools";

/// Why the sandbox cannot run here.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Unavailable {
    /// `bwrap` is not on the PATH.
    #[error("bubblewrap (`bwrap`) is not installed")]
    NotInstalled,
    /// `bwrap` could not be started.
    #[error("`bwrap` could not run: {0}")]
    CannotRun(String),
    /// `bwrap` ran but could not create the namespaces (a container without user namespaces).
    #[error("`bwrap` cannot create namespaces here: {0}")]
    NoNamespaces(String),
}

/// Whether bwrap is installed and can create the namespaces here (checked once).
pub fn available() -> Result<(), Unavailable> {
    static AVAILABLE: OnceLock<Result<(), Unavailable>> = OnceLock::new();
    AVAILABLE
        .get_or_init(|| {
            let mut probe = Command::new("bwrap");
            probe
                .args(["--unshare-all", "--die-with-parent", "--new-session"])
                .args(unprivileged())
                .args(["--ro-bind", "/usr", "/usr"])
                .args(host_root_links())
                .args([
                    "--proc", "/proc", "--dev", "/dev", "--", "/bin/sh", "-c", "true",
                ])
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::piped());
            if let Err(e) = attach_seccomp(&mut probe) {
                return Err(Unavailable::CannotRun(e.to_string()));
            }
            match probe.output() {
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
                    Err(Unavailable::NotInstalled)
                }
                Err(e) => Err(Unavailable::CannotRun(e.to_string())),
                Ok(o) if o.status.success() => Ok(()),
                Ok(o) => Err(Unavailable::NoNamespaces(
                    String::from_utf8_lossy(&o.stderr).trim().to_owned(),
                )),
            }
        })
        .clone()
}

/// `/bin`, `/lib`, `/lib64`, `/sbin` as the host has them: symlinks into `/usr` on a
/// merged-`/usr` system, read-only directories otherwise.
fn host_root_links() -> Vec<String> {
    let mut args = Vec::new();
    for dir in ["bin", "sbin", "lib", "lib32", "lib64", "libx32"] {
        let host = Path::new("/").join(dir);
        match std::fs::read_link(&host) {
            Ok(target) => args.extend([
                "--symlink".to_owned(),
                target.display().to_string(),
                host.display().to_string(),
            ]),
            Err(_) if host.is_dir() => args.extend([
                "--ro-bind".to_owned(),
                host.display().to_string(),
                host.display().to_string(),
            ]),
            Err(_) => {}
        }
    }
    args
}

/// A tool resolved on the host: its name inside the sandbox and the file it is.
#[derive(Debug, Clone)]
pub struct Tool {
    /// The name the command calls it by.
    pub name: String,
    /// The binary on the host (symlinks resolved).
    pub path: PathBuf,
}

/// Finds `name` in `path_var` (a `PATH`), symlinks resolved.
pub fn find_tool(name: &str, path_var: &str) -> Option<PathBuf> {
    find_on_path(name, path_var).and_then(|p| std::fs::canonicalize(p).ok())
}

/// The first `DIR/name` that is a file, for DIR in `path_var`, symlinks not resolved.
pub fn find_on_path(name: &str, path_var: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return None;
    }
    std::env::split_paths(path_var)
        .map(|dir| dir.join(name))
        .find(|p| p.is_file())
}

/// What the sandbox shows.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    /// Share the host network (and its resolver and certificates).
    pub network: bool,
    /// `Some`: only these tools (and `sh`) instead of all of `/usr/bin`.
    pub tools: Option<Vec<Tool>>,
    /// `Some`: `in/` is read-only, with these sources mounted in it from where they lie.
    pub inputs: Option<Inputs>,
}

/// The build's inputs, shown read-only.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    /// `in/` of the build directory on the host.
    pub dir: PathBuf,
    /// Sources shown in place: the file on the host, and its path under `in/` (where an empty
    /// file stands for it).
    pub in_place: Vec<(PathBuf, String)>,
}

impl Spec {
    /// The `bwrap` command running `argv` with `build_dir` as [`BUILD_DIR`].
    pub fn command(&self, build_dir: &Path, argv: &[String]) -> Command {
        let mut c = Command::new("bwrap");
        c.args(["--unshare-all", "--die-with-parent", "--new-session"]);
        c.args(unprivileged());
        if self.network {
            c.arg("--share-net");
            for f in [
                "/etc/resolv.conf",
                "/etc/hosts",
                "/etc/nsswitch.conf",
                "/etc/ssl",
                "/etc/ca-certificates",
            ] {
                c.args(["--ro-bind-try", f, f]);
            }
        }
        match &self.tools {
            None => {
                c.args(["--ro-bind", "/usr", "/usr"]);
            }
            Some(tools) => {
                for lib in [
                    "/usr/lib",
                    "/usr/lib32",
                    "/usr/lib64",
                    "/usr/libexec",
                    "/usr/share",
                ] {
                    c.args(["--ro-bind-try", lib, lib]);
                }
                for t in tools {
                    c.arg("--ro-bind")
                        .arg(&t.path)
                        .arg(format!("{TOOLS_DIR}/{}", t.name));
                }
            }
        }
        c.args(host_root_links());
        c.args(["--ro-bind-try", "/etc/alternatives", "/etc/alternatives"])
            .args(["--ro-bind-try", "/etc/ld.so.cache", "/etc/ld.so.cache"])
            .args(["--proc", "/proc", "--dev", "/dev"])
            // The command's uid maps to kiln's: as root, that is the host's root to the
            // kernel's permission checks on files, so nothing of procfs may be writable
            // (`/proc/sys/kernel/core_pattern` is global and only mode-checked).
            .args(["--remount-ro", "/proc"])
            .arg("--bind")
            .arg(build_dir)
            .arg(BUILD_DIR);
        if let Some(inputs) = &self.inputs {
            c.arg("--ro-bind")
                .arg(&inputs.dir)
                .arg(format!("{BUILD_DIR}/in"));
            for (host, rel) in &inputs.in_place {
                c.arg("--ro-bind")
                    .arg(host)
                    .arg(format!("{BUILD_DIR}/in/{rel}"));
            }
        }
        c
            // The root holds only mount points: nothing can be written there.
            .args(["--remount-ro", "/"])
            .args(["--chdir", BUILD_DIR])
            .arg("--")
            .args(argv);
        c
    }

    /// The `PATH` inside.
    pub fn path_var(&self) -> &'static str {
        match self.tools {
            None => "/usr/local/bin:/usr/bin:/bin",
            Some(_) => TOOLS_DIR,
        }
    }
}
