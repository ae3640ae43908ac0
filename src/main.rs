//! The `kiln` binary.

// kiln allocates many small values (rules, JSON, paths); mimalloc is markedly faster here than
// the system allocator on the no-op path. Built with `no_thp`: transparent huge pages made its
// arenas touch 2 MiB at a time (+50% peak RSS on a 10k-rule no-op build, and page-clearing time).
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(kiln::main_with_args())
}
