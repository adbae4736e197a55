//! The built-in `command` plugin: runs a program without a shell (the rez `command` hook).

use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::RwLock;
use std::time::Duration;

use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::spawn::WITHHELD_ENV;
use crate::spawn::{self, Spawn};
use crate::{PluginUser, ProcessOptions};

/// Arguments: a list, or a string split on whitespace.
#[derive(Debug, Clone, Deserialize, JsonSchema)]
#[serde(untagged)]
pub enum Args {
    /// Each element is one argument.
    List(Vec<String>),
    /// Split on whitespace (no quoting: use a list for arguments with spaces).
    Line(String),
}

fn default_timeout() -> u64 {
    600
}

fn yes() -> bool {
    true
}

/// Inputs of `command`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Inputs {
    /// The program: a path, or a name looked up on PATH.
    pub command: String,
    /// Its arguments.
    #[serde(default)]
    pub args: Option<Args>,
    /// Variables added to the inherited environment (one holding a NUL byte is left out).
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// The working directory (default: plugd's).
    #[serde(default)]
    pub cwd: Option<String>,
    /// Seconds before the program (and everything it started) is killed.
    #[serde(default = "default_timeout")]
    #[schemars(range(min = 1))]
    pub timeout: u64,
    /// Show the program's output as it runs.
    #[serde(default = "yes")]
    pub print_output: bool,
}

/// Outputs of `command`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Outputs {
    /// The exit code (0).
    pub exit_code: i32,
    /// The last lines of output.
    pub output: String,
}

/// `command` 1.0.0.
#[derive(Debug, Clone, Copy)]
pub struct Command;

/// The reaper and user of every `command` execute (see [`set_containment`]).
static CONTAINMENT: RwLock<(Option<PathBuf>, Option<PluginUser>)> = RwLock::new((None, None));

/// Runs every later `command` execute in this process as process plugins run under `options`:
/// under [`ProcessOptions::reaper`] and as [`ProcessOptions::plugin_user`]. (`command` is a
/// built-in plugin, registered before the command line is read; this is how it learns them.)
pub fn set_containment(options: &ProcessOptions) {
    *CONTAINMENT.write().unwrap_or_else(|p| p.into_inner()) = (options.reaper.clone(), options.plugin_user.clone());
}

/// `name` on PATH, or `name` itself when it is a path.
pub(crate) fn resolve(name: &str) -> Option<PathBuf> {
    if name.contains('/') {
        return Some(PathBuf::from(name));
    }
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path).map(|dir| dir.join(name)).find(|p| p.is_file())
}

impl Plugin for Command {
    type Inputs = Inputs;
    type ContextInputs = Empty;
    type Outputs = Outputs;
    const META: Meta = Meta::new("command", "1.0.0")
        .description("Runs a program without a shell; a non-zero exit fails with the last lines of its output.");

    async fn execute(&self, inputs: Inputs, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        let program = resolve(&inputs.command)
            .ok_or_else(|| PluginError::failed(format!("{}: command not found", inputs.command)))?;
        let mut argv = vec![program.display().to_string()];
        match inputs.args {
            Some(Args::List(args)) => argv.extend(args),
            Some(Args::Line(line)) => argv.extend(line.split_whitespace().map(str::to_owned)),
            None => {}
        }
        let cwd = match &inputs.cwd {
            Some(cwd) => PathBuf::from(cwd),
            None => std::env::current_dir()?,
        };
        // The command inherits plugd's environment (as rez's command hook does), less plugd's own
        // secrets: under `plugd serve` a command must not read the server's credentials.
        let mut env: Vec<(String, String)> =
            std::env::vars().filter(|(key, _)| !WITHHELD_ENV.contains(&key.as_str())).collect();
        env.extend(inputs.env.clone());
        // Arguments may carry templated secrets (a token in a header, say): log the program only.
        tracing::info!("running {} with {} arguments", argv[0], argv.len() - 1);
        let (reaper, user) = CONTAINMENT.read().unwrap_or_else(|p| p.into_inner()).clone();
        let finished = spawn::run(Spawn {
            argv: &argv,
            plugin_dir: &cwd,
            cwd: &cwd,
            env,
            stdin: Vec::new(),
            timeout: Duration::from_secs(inputs.timeout),
            echo: inputs.print_output,
            reaper: reaper.as_deref(),
            user: user.as_ref(),
        })
        .await
        .map_err(PluginError::failed)?;
        if finished.timed_out {
            return Err(PluginError::failed(format!(
                "{} timed out after {}s and was killed",
                inputs.command, inputs.timeout
            )));
        }
        match finished.code {
            Some(0) => {
                ctx.set_outputs(&Outputs { exit_code: 0, output: finished.tail })?;
                Ok(Outcome::Success)
            }
            _ => {
                // The last lines of output after a colon, when there are any; never a blank line.
                let exit = crate::plugin::describe_exit(&finished);
                let tail = finished.tail.trim_end();
                let message = if tail.is_empty() {
                    format!("command failed ({exit})")
                } else {
                    format!("command failed ({exit}):\n{tail}")
                };
                Err(PluginError::failed(message))
            }
        }
    }
}
