//! The `plugd` binary: the command line over the built-in plugins.

// A request allocates many small, short-lived objects (JSON values, headers, futures) on several
// threads; mimalloc serves them with far less contention than the system allocator.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    plugd::main(plugd::builtin())
}
