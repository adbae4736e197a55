/*!
plugd: a plugin framework and runtime for CI/DevOps automation.

This crate is what a plugin project depends on. It re-exports the plugin kit ([`Plugin`],
[`Context`], [`Outcome`], ...), and exposes the whole `plugd` command line as one function,
[`main`], that takes the plugins to serve. A plugin project's `main.rs` is three lines:

```no_run
fn main() -> std::process::ExitCode {
    plugd::main(plugd::Registry::builder().plugin(plugd::plugins::hello::HelloV1))
}
```

The `plugd` binary itself is that same function over [`builtin`], the plugins that ship with it.

# Modules
- [`local`]: the local runner behind `plugd run` (in-process polls, a temporary callback listener).
- [`exit`]: the documented exit codes of the command line.
*/
#![deny(missing_docs)]

mod cli;
pub mod exit;
pub mod hooks;
pub mod local;
pub mod store;

pub use plugd_core::{Executor, Invocation, Registry, RegistryBuilder};
pub use plugd_plugins as plugins;
pub use plugd_sdk::{
    schema_for, schemars, serde, serde_json, Callback, CallbackPreparation, Context, Empty, Meta, Outcome, Plugin,
    PluginError, State,
};

/// The plugins that ship with plugd: the examples `hello`, `countdown` and `approval`, and the
/// release-hook plugins `command`, `webhook`, `email` and `amqp`, and `gitlab-pipeline`.
pub fn builtin() -> RegistryBuilder {
    plugd_plugins::all()
        .into_iter()
        .fold(Registry::builder(), RegistryBuilder::dyn_plugin)
        .plugin(plugd_process::command::Command)
        .plugin(plugd_gitlab::GitlabPipeline)
}

/// The built-in plugins that act on the host or hold the server's credentials (they run programs,
/// send mail and messages, reach GitLab with its token). `plugd run` and `plugd hooks` offer them,
/// since their caller is the user; `plugd serve` serves them only when told to
/// (`--enable-plugin`), because any caller of its API could otherwise use them.
pub const SERVE_OPT_IN: &[&str] = &["command", "webhook", "email", "amqp", "gitlab-pipeline"];

/// Runs the `plugd` command line over `plugins`, reading `std::env::args`.
///
/// Returns the process exit code (see [`exit`]); a registry that fails its checks (a duplicate
/// version, an invalid version) is reported and exits with [`exit::USAGE`].
///
/// Process plugins run under this same binary, started again with a hidden first argument as
/// their reaper (see `plugd_process::reaper`); that is handled here, before anything else.
pub fn main(plugins: RegistryBuilder) -> std::process::ExitCode {
    if std::env::args_os().nth(1).is_some_and(|arg| arg == plugd_process::reaper::REAPER_ARG) {
        plugd_process::reaper::main(std::env::args_os().skip(2));
    }
    cli::main(plugins, std::env::args_os())
}

// Compiles and runs the Rust code blocks of README.md as doctests, so the documented example works.
#[doc = include_str!("../../../README.md")]
#[cfg(doctest)]
pub struct ReadmeDoctests;
