//! The `kiln` binary.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(kiln::main_with_args())
}
