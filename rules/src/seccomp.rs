//! The seccomp filters of the `exec` sandbox, built with `seccompiler` (rust-vmm's BPF
//! compiler) and handed to bwrap as `--add-seccomp-fd`. The command already runs without
//! capabilities, as an unprivileged uid, with `no_new_privs`; the filters close the kernel
//! interfaces a build never needs and an escape would (defence in depth, as Flatpak and
//! Docker's default profile do):
//! - refused with `EPERM`: mounting (`mount`, `umount2`, `pivot_root` and the new mount API),
//!   namespaces (`unshare`, `setns`, `clone` with any `CLONE_NEW*` flag), tracing other
//!   processes (`ptrace`, `process_vm_*`, `kcmp`), keyrings, `bpf`, `perf_event_open`,
//!   `userfaultfd`, file handles, kernel modules, kexec, reboot, swap, clocks, `acct`,
//!   `quotactl`, `syslog`, `iopl`/`ioperm`;
//! - `clone3` answers `ENOSYS`: its flags sit in memory a filter cannot read, and C libraries
//!   fall back to `clone` on `ENOSYS`, which the first filter checks.

use std::collections::BTreeMap;
use std::io::Write;
use std::os::fd::OwnedFd;

use seccompiler::{
    BpfProgram, SeccompAction, SeccompCmpArgLen, SeccompCmpOp, SeccompCondition, SeccompFilter,
    SeccompRule, TargetArch,
};

/// Why the filters could not be made.
#[derive(Debug, thiserror::Error)]
pub enum SeccompError {
    /// This architecture has no syscall table in seccompiler.
    #[error("no seccomp filter for architecture `{0}`")]
    Arch(&'static str),
    /// seccompiler refused the rules (a bug here).
    #[error("failed to compile the seccomp filter")]
    Compile(#[source] seccompiler::BackendError),
    /// The memory file that carries a filter to bwrap could not be written.
    #[error("failed to hand the seccomp filter to bwrap")]
    Io(#[source] std::io::Error),
}

/// Syscalls refused outright.
const REFUSED: &[libc::c_long] = &[
    libc::SYS_mount,
    libc::SYS_umount2,
    libc::SYS_pivot_root,
    libc::SYS_open_tree,
    libc::SYS_move_mount,
    libc::SYS_fsopen,
    libc::SYS_fsconfig,
    libc::SYS_fsmount,
    libc::SYS_fspick,
    libc::SYS_mount_setattr,
    libc::SYS_unshare,
    libc::SYS_setns,
    libc::SYS_ptrace,
    libc::SYS_process_vm_readv,
    libc::SYS_process_vm_writev,
    libc::SYS_kcmp,
    libc::SYS_keyctl,
    libc::SYS_add_key,
    libc::SYS_request_key,
    libc::SYS_bpf,
    libc::SYS_perf_event_open,
    libc::SYS_userfaultfd,
    libc::SYS_open_by_handle_at,
    libc::SYS_name_to_handle_at,
    libc::SYS_init_module,
    libc::SYS_finit_module,
    libc::SYS_delete_module,
    libc::SYS_kexec_load,
    libc::SYS_kexec_file_load,
    libc::SYS_reboot,
    libc::SYS_swapon,
    libc::SYS_swapoff,
    libc::SYS_settimeofday,
    libc::SYS_clock_settime,
    libc::SYS_clock_adjtime,
    libc::SYS_adjtimex,
    libc::SYS_acct,
    libc::SYS_quotactl,
    libc::SYS_syslog,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_iopl,
    #[cfg(target_arch = "x86_64")]
    libc::SYS_ioperm,
];

/// The `clone` flags that make a namespace.
const NAMESPACE_FLAGS: &[u64] = &[
    libc::CLONE_NEWNS as u64,
    libc::CLONE_NEWCGROUP as u64,
    libc::CLONE_NEWUTS as u64,
    libc::CLONE_NEWIPC as u64,
    libc::CLONE_NEWUSER as u64,
    libc::CLONE_NEWPID as u64,
    libc::CLONE_NEWNET as u64,
    0x80, // CLONE_NEWTIME
];

fn arch() -> Result<TargetArch, SeccompError> {
    TargetArch::try_from(std::env::consts::ARCH)
        .map_err(|_| SeccompError::Arch(std::env::consts::ARCH))
}

fn compile(rules: BTreeMap<i64, Vec<SeccompRule>>, errno: i32) -> Result<BpfProgram, SeccompError> {
    let filter = SeccompFilter::new(
        rules,
        SeccompAction::Allow,
        SeccompAction::Errno(errno as u32),
        arch()?,
    )
    .map_err(SeccompError::Compile)?;
    filter.try_into().map_err(SeccompError::Compile)
}

/// The two filters: the refusals (`EPERM`), then `clone3` (`ENOSYS`).
pub fn programs() -> Result<[BpfProgram; 2], SeccompError> {
    let mut refused: BTreeMap<i64, Vec<SeccompRule>> =
        REFUSED.iter().map(|&n| (n, Vec::new())).collect();
    let namespaces = NAMESPACE_FLAGS
        .iter()
        .map(|&flag| {
            SeccompCondition::new(
                0,
                SeccompCmpArgLen::Qword,
                SeccompCmpOp::MaskedEq(flag),
                flag,
            )
            .and_then(|c| SeccompRule::new(vec![c]))
        })
        .collect::<Result<Vec<_>, _>>()
        .map_err(SeccompError::Compile)?;
    refused.insert(libc::SYS_clone, namespaces);
    let clone3 = BTreeMap::from([(libc::SYS_clone3, Vec::new())]);
    Ok([
        compile(refused, libc::EPERM)?,
        compile(clone3, libc::ENOSYS)?,
    ])
}

/// A program as the kernel reads it (`struct sock_filter[]`), in a sealed-off memory file
/// positioned at its start, for bwrap to read from an inherited descriptor.
pub fn memfd(program: &BpfProgram) -> Result<OwnedFd, SeccompError> {
    let mut bytes = Vec::with_capacity(program.len() * 8);
    for f in program {
        bytes.extend_from_slice(&f.code.to_ne_bytes());
        bytes.push(f.jt);
        bytes.push(f.jf);
        bytes.extend_from_slice(&f.k.to_ne_bytes());
    }
    let fd = rustix::fs::memfd_create("kiln-seccomp", rustix::fs::MemfdFlags::CLOEXEC)
        .map_err(|e| SeccompError::Io(e.into()))?;
    let mut file = std::fs::File::from(fd);
    file.write_all(&bytes).map_err(SeccompError::Io)?;
    rustix::fs::seek(&file, rustix::fs::SeekFrom::Start(0))
        .map_err(|e| SeccompError::Io(e.into()))?;
    Ok(file.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn both_filters_compile_for_this_machine() {
        let [refused, clone3] = programs().unwrap();
        // One instruction per refused syscall at least, plus the architecture check.
        assert!(refused.len() > REFUSED.len(), "{}", refused.len());
        assert!(!clone3.is_empty());
    }

    #[test]
    fn a_program_is_written_as_the_kernel_reads_it() {
        let [refused, _] = programs().unwrap();
        let fd = memfd(&refused).unwrap();
        let mut bytes = Vec::new();
        std::io::Read::read_to_end(&mut std::fs::File::from(fd), &mut bytes).unwrap();
        assert_eq!(bytes.len(), refused.len() * 8);
        assert_eq!(bytes[..2], refused[0].code.to_ne_bytes());
    }
}
