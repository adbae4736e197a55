//! The `plugd` binary: the command line over the built-in plugins.

fn main() -> std::process::ExitCode {
    plugd::main(plugd::builtin())
}
