//! Command-line tests: each runs the real `plugd` binary and checks its output and exit code.

/// The `Plugd` command builder and a raw HTTP client for callbacks.
mod util;

/// `plugd run`: success, versions, input sources, polls and timeouts.
mod run;

/// `plugd run` of the approval plugin: callbacks posted over HTTP.
mod callback;

/// Usage and validation errors, with their exact messages and exit code 2.
mod usage;

/// `plugd list`, `plugd describe` and debug logging.
mod describe;

/// `plugd serve` as a process: restarts, `kill -9`, finish callbacks, bad configuration.
mod serve;

/// `plugd serve` on PostgreSQL: three nodes on one database, bad `--db` URLs, NUL bytes kept.
mod postgres;

/// A rolling deploy on PostgreSQL: nodes that serve different versions, stopped and killed midway.
mod rolling;

/// `plugd db copy` from SQLite to PostgreSQL with pending work, and `plugd db status`.
mod db;

/// `plugd serve` probed as an attacker would: host-acting plugins, token theft, slow clients.
mod security;

/// `plugd serve` on a damaged database, a full disk, a read-only directory.
mod health;

/// Plugins in any language: plugin.yaml, qciplugin.yml, `plugd new`, safety limits.
mod process;

/// `plugd dev`: plugin folders and the built-ins on loopback, the debug panel's URL.
mod dev;

/// A real bk-plugin project (the Python framework's layout) served and run by plugd.
mod bk;

/// A CI plugin reading its job's environment, under `plugd run` and `plugd serve`.
mod ci_env;

/// The local registry: `plugd install`, `uninstall`, hostile archives.
mod install;

/// `plugd new --lang rust`: the generated project compiles, tests, runs and serves (slow, gated).
mod scaffold;

/// Release hooks with the command, webhook, email and AMQP plugins against real servers.
mod hooks;

/// GitLab batch CI against a fake GitLab built from the API contract.
mod gitlab;

/// ARCHITECTURE.md kept true: the crates' dependency rule and every path it names (no `plugd` run).
mod tidy;
