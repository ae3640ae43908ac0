//! The `kiln` binary.

// kiln allocates many small values (rules, JSON, paths); mimalloc is markedly faster here than
// the system allocator on the no-op path.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(kiln::main_with_args())
}
