//! [`ProcessPlugin`]: a plugin folder run as a process, behind the same [`DynPlugin`] face as
//! Rust plugins, POLL and CALLBACK included.

use std::path::{Path, PathBuf};
use std::time::Duration;

use plugd_sdk::beneath::Beneath;
use plugd_sdk::{
    BoxFuture, DynPlugin, ExecuteError, ExecuteRequest, ExecuteResponse, Outcome, PluginError, PluginInfo,
    PluginSchemas,
};
use serde_json::{json, Value};

use crate::protocol::{self, PROTOCOL_VERSION};
use crate::qci::QciEntry;
use crate::spawn::{self, Spawn, ENV_ALLOWLIST, WITHHELD_ENV};
use crate::PluginUser;

/// How plugd runs process plugins.
#[derive(Debug, Clone)]
pub struct ProcessOptions {
    /// The working directory of plugin processes (`PLUGD_WORKSPACE`).
    pub workspace: PathBuf,
    /// Copy plugin output to plugd's standard error as it comes (`plugd run`).
    pub echo: bool,
    /// How long one execute (or install command) may run when the manifest says nothing
    /// (`qciplugin.yml` never does): 10 minutes unless set.
    pub default_timeout: Duration,
    /// The program each plugin process runs under: `<reaper> __plugd-reaper ... -- <command>`
    /// (see [`crate::reaper`]), so that nothing the plugin starts outlives its execute. It must be
    /// a binary whose `main` is `plugd::main` (plugd's own, usually). `None` runs plugin processes
    /// directly: their process group is still killed, but what left it (`setsid`) is not.
    pub reaper: Option<PathBuf>,
    /// The user plugin processes run as (executes, not `install` commands); `None`: plugd's own.
    /// Each execute's temp folder is given to that user.
    pub plugin_user: Option<PluginUser>,
    /// Users of particular plugins or bk-plugin projects, by code, instead of [`Self::plugin_user`]:
    /// projects that must not reach each other's processes run as users of their own.
    pub users_by_code: std::collections::BTreeMap<String, PluginUser>,
    /// Plugins see plugd's whole environment, less plugd's secrets: under `plugd run` and
    /// `plugd hooks` the caller is the user, or a CI job whose variables (`TAG_NAME`, `CI_COMMIT_*`,
    /// `GITHUB_REF`) a step expects, as every CI runner hands them. Off (`plugd serve`), the
    /// environment is cleared to a short allow-list plus what a manifest's `entry.env_passthrough`
    /// names.
    pub inherit_env: bool,
}

/// The default of [`ProcessOptions::default_timeout`].
const DEFAULT_PROCESS_TIMEOUT: Duration = Duration::from_secs(600);

impl Default for ProcessOptions {
    fn default() -> ProcessOptions {
        ProcessOptions {
            workspace: std::env::current_dir().unwrap_or_else(|_| PathBuf::from(".")),
            echo: false,
            default_timeout: DEFAULT_PROCESS_TIMEOUT,
            reaper: None,
            plugin_user: None,
            users_by_code: Default::default(),
            inherit_env: false,
        }
    }
}

impl ProcessOptions {
    /// The user the plugin or project `code` runs as: its own if it has one, else
    /// [`Self::plugin_user`], else plugd's (`None`).
    pub fn user_for(&self, code: &str) -> Option<&PluginUser> {
        self.users_by_code.get(code).or(self.plugin_user.as_ref())
    }
}

pub(crate) enum Entry {
    /// `plugin.yaml`: a fixed argv, the invocation on stdin.
    Protocol { start: Vec<String>, env: Vec<(String, String)>, passthrough: Vec<String> },
    /// `qciplugin.yml`: argv and env built from the inputs.
    Qci(QciEntry),
}

/// A plugin in any language: a folder with `plugin.yaml` or `qciplugin.yml`.
pub struct ProcessPlugin {
    pub(crate) info: PluginInfo,
    pub(crate) schemas: PluginSchemas,
    pub(crate) dir: PathBuf,
    pub(crate) entry: Entry,
    pub(crate) install: Vec<Vec<String>>,
    pub(crate) timeout: Duration,
    pub(crate) options: ProcessOptions,
}

impl std::fmt::Debug for ProcessPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProcessPlugin").field("info", &self.info).field("dir", &self.dir).finish_non_exhaustive()
    }
}

/// The variables of plugd's own environment that pass through to a plugin: all but plugd's
/// secrets when `options.inherit_env`, else the allow-list and the manifest's `passthrough` names.
fn base_env(options: &ProcessOptions, passthrough: &[String]) -> Vec<(String, String)> {
    if options.inherit_env {
        return std::env::vars().filter(|(key, _)| !WITHHELD_ENV.contains(&key.as_str())).collect();
    }
    let names = ENV_ALLOWLIST.iter().copied().chain(passthrough.iter().map(String::as_str));
    names.filter_map(|k| std::env::var(k).ok().map(|v| (k.to_owned(), v))).collect()
}

/// Input values longer than this stay out of the environment (the kernel refuses a variable over
/// 128 KiB, and the whole environment shares one limit); the plugin reads them from stdin.
const MAX_INPUT_ENV: usize = 32 * 1024;

/// `PLUGD_INPUT_<NAME>` for each top-level input: strings as they are, anything else as JSON.
/// None for a value over [`MAX_INPUT_ENV`], nor (by [`spawn::run`], which applies
/// [`spawn::fits_environment`] to every variable) for one holding a NUL byte, which no environment
/// can hold: the plugin reads those from stdin, where JSON escapes a NUL as `\u0000`.
fn input_env(inputs: &Value) -> Vec<(String, String)> {
    let Some(inputs) = inputs.as_object() else { return Vec::new() };
    inputs
        .iter()
        .filter(|(name, _)| name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-'))
        .filter_map(|(name, value)| {
            let key = format!("PLUGD_INPUT_{}", name.to_ascii_uppercase().replace('-', "_"));
            let value = match value {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            (value.len() <= MAX_INPUT_ENV).then_some((key, value))
        })
        .collect()
}

/// An `install` command of a plugin that could not run or did not succeed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum InstallError {
    /// The command could not be started, or waited for.
    #[error("{reason}")]
    Start {
        /// The command, its arguments joined by spaces.
        command: String,
        /// Why it could not run.
        reason: String,
    },
    /// The command timed out, or ended with a signal or an exit code other than 0.
    #[error("install command {command:?} failed ({exit}): {tail}")]
    Failed {
        /// The command, its arguments joined by spaces.
        command: String,
        /// How it ended: `exit code 1`, `killed by signal 9`...
        exit: String,
        /// The last lines of its output.
        tail: String,
    },
}

impl ProcessPlugin {
    /// The plugin's folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The names of plugd's environment a served plugin's manifest asks for (`entry.env_passthrough`).
    fn passthrough(&self) -> &[String] {
        match &self.entry {
            Entry::Protocol { passthrough, .. } => passthrough,
            Entry::Qci(_) => &[],
        }
    }

    /// `${PLUGD_PLUGIN_DIR}` (or `$PLUGD_PLUGIN_DIR`) in an argument becomes the plugin folder, so a
    /// manifest can name its own files while the process runs in the workspace.
    fn plugin_dir_in(&self, arg: &str) -> String {
        let dir = self.dir.display().to_string();
        arg.replace("${PLUGD_PLUGIN_DIR}", &dir).replace("$PLUGD_PLUGIN_DIR", &dir)
    }

    /// Runs the manifest's `install` commands in the plugin folder, one after the other.
    pub async fn install(&self) -> Result<(), InstallError> {
        let mut env = base_env(&self.options, self.passthrough());
        if let Entry::Qci(qci) = &self.entry {
            env.extend(qci.install_env());
        }
        for argv in &self.install {
            let argv = match &self.entry {
                Entry::Qci(qci) => qci.expand_install(argv),
                Entry::Protocol { .. } => argv.iter().map(|arg| self.plugin_dir_in(arg)).collect(),
            };
            let finished = spawn::run(Spawn {
                argv: &argv,
                plugin_dir: &self.dir,
                cwd: &self.dir,
                env: env.clone(),
                stdin: Vec::new(),
                timeout: self.timeout,
                echo: self.options.echo,
                reaper: self.options.reaper.as_deref(),
                user: None,
            })
            .await
            .map_err(|reason| InstallError::Start { command: argv.join(" "), reason })?;
            if finished.timed_out || finished.code != Some(0) {
                return Err(InstallError::Failed {
                    command: argv.join(" "),
                    exit: describe_exit(&finished),
                    tail: finished.tail,
                });
            }
        }
        Ok(())
    }

    async fn run(&self, request: ExecuteRequest) -> Result<ExecuteResponse, String> {
        let temp = tempfile::Builder::new()
            .prefix("plugd-")
            .tempdir()
            .map_err(|e| format!("cannot create a temp folder: {e}"))?;
        // Held open from now on: the answer files are read beneath this very folder, whatever
        // the plugin does to its path.
        let folder = Beneath::open(temp.path()).map_err(|e| format!("cannot open {}: {e}", temp.path().display()))?;
        let result_file = temp.path().join("result.json");
        let outputs_file = temp.path().join("outputs.env");
        let reports_file = temp.path().join("reports.jsonl");
        for file in [&outputs_file, &reports_file] {
            std::fs::write(file, "").map_err(|e| format!("cannot create {}: {e}", file.display()))?;
        }
        let prepared = request.callbacks.prepare_callback(&request.trace_id).ok();
        let invocation = json!({
            "protocol": PROTOCOL_VERSION,
            "trace_id": request.trace_id,
            "plugin": self.info.name,
            "version": self.info.version,
            "state": request.state.name(),
            "invoke_count": request.invoke_count,
            "inputs": request.inputs,
            "context": request.context,
            "storage": request.storage,
            "outputs": request.outputs,
            "callback": request.callback.as_ref().map(|c| json!({"id": c.id, "data": c.data})),
            "prepared_callback": prepared.as_ref().map(|p| json!({"id": p.id, "url": p.url})),
        });
        let path = |p: &Path| p.display().to_string();
        let mut env = base_env(&self.options, self.passthrough());
        // Python writes no `__pycache__` into the plugin's folder (a manifest's env may say otherwise).
        env.push(("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()));
        env.extend([
            ("PLUGD_PROTOCOL".to_owned(), PROTOCOL_VERSION.to_string()),
            ("PLUGD_PLUGIN_DIR".to_owned(), path(&self.dir)),
            ("PLUGD_WORKSPACE".to_owned(), path(&self.options.workspace)),
            ("PLUGD_TEMP_DIR".to_owned(), path(temp.path())),
            ("PLUGD_RESULT_FILE".to_owned(), path(&result_file)),
            ("PLUGD_OUTPUT_FILE".to_owned(), path(&outputs_file)),
            ("PLUGD_REPORTS_FILE".to_owned(), path(&reports_file)),
            ("PLUGD_TRACE_ID".to_owned(), request.trace_id.clone()),
            ("PLUGD_STATE".to_owned(), request.state.name().to_owned()),
            ("PLUGD_INVOKE_COUNT".to_owned(), request.invoke_count.to_string()),
        ]);
        if let Some(prepared) = &prepared {
            env.push(("PLUGD_CALLBACK_ID".to_owned(), prepared.id.clone()));
            env.push(("PLUGD_CALLBACK_URL".to_owned(), prepared.url.clone()));
        }
        env.extend(input_env(&request.inputs));
        let (argv, status_file) = match &self.entry {
            Entry::Protocol { start, env: declared, .. } => {
                env.extend(declared.iter().cloned());
                (start.iter().map(|arg| self.plugin_dir_in(arg)).collect(), None)
            }
            Entry::Qci(qci) => {
                let built = qci.build(&request.inputs, &self.options.workspace, &outputs_file, temp.path());
                let sdk = crate::qci::write_sdk(temp.path())?;
                env.push(("PYTHONPATH".to_owned(), sdk.display().to_string()));
                env.extend(built.env);
                if self.options.echo && std::env::var("QCI_PLUGIN_DEBUG").is_ok_and(|v| v == "1") {
                    eprintln!("[qci-plugin debug] run: {}", shell_words::join(&built.argv));
                }
                (built.argv, built.status)
            }
        };
        let user = self.options.user_for(&self.info.name);
        if let Some(user) = user {
            // The folder last: until then no one else can reach what is in it.
            for path in [&outputs_file, &reports_file, &temp.path().to_owned()] {
                std::os::unix::fs::lchown(path, Some(user.uid), Some(user.gid))
                    .map_err(|e| format!("cannot give {} to {}: {e}", path.display(), user.name))?;
            }
        }
        let finished = spawn::run(Spawn {
            argv: &argv,
            plugin_dir: &self.dir,
            cwd: &self.options.workspace,
            env,
            stdin: invocation.to_string().into_bytes(),
            timeout: self.timeout,
            echo: self.options.echo,
            reaper: self.options.reaper.as_deref(),
            user,
        })
        .await?;
        if finished.timed_out {
            return Err(format!(
                "the plugin timed out after {}s; its process group was killed",
                self.timeout.as_secs_f64()
            ));
        }

        let mut outputs = request.outputs.clone();
        let mut storage = request.storage.clone();
        let outcome = if let Some(text) = protocol::read_capped(&folder, &result_file)? {
            let decision = protocol::parse_result(&text)?;
            if let (Some(example), Some(prepared)) = (&decision.callback_example, &prepared) {
                request.callbacks.note_example(&request.trace_id, &prepared.id, example);
            }
            outputs.extend(decision.outputs);
            if let Some(new_storage) = decision.storage {
                storage = new_storage;
            }
            decision.outcome
        } else {
            let status = match &status_file {
                Some(status_file) => crate::qci::read_status(&folder, status_file)?,
                None => None,
            };
            status.unwrap_or_else(|| match finished.code {
                Some(0) => Ok(Outcome::Success),
                _ => Err(PluginError::failed(format!("{}: {}", describe_exit(&finished), finished.tail))),
            })
        };
        if let Some(text) = protocol::read_capped(&folder, &outputs_file)? {
            for (key, value) in protocol::parse_env_file(&text)? {
                let value = protocol::typed_output(&self.schemas.outputs, &key, value);
                outputs.insert(key, value);
            }
        }
        let reports = match protocol::read_capped(&folder, &reports_file)? {
            Some(text) => protocol::parse_reports(&text)?,
            None => Vec::new(),
        };
        Ok(ExecuteResponse { result: outcome.map_err(ExecuteError::Plugin), storage, outputs, reports })
    }
}

pub(crate) fn describe_exit(finished: &spawn::Finished) -> String {
    match finished.code {
        Some(code) => format!("exit code {code}"),
        None => match finished.signal {
            Some(signal) => format!("killed by signal {signal}"),
            None => "killed by a signal".to_owned(),
        },
    }
}

impl DynPlugin for ProcessPlugin {
    fn info(&self) -> PluginInfo {
        self.info.clone()
    }

    fn schemas(&self) -> PluginSchemas {
        self.schemas.clone()
    }

    fn execute(&self, request: ExecuteRequest) -> BoxFuture<'_, ExecuteResponse> {
        Box::pin(async move {
            let (storage, outputs) = (request.storage.clone(), request.outputs.clone());
            match self.run(request).await {
                Ok(response) => response,
                Err(error) => ExecuteResponse {
                    result: Err(ExecuteError::Plugin(PluginError::Unexpected(error))),
                    storage,
                    outputs,
                    reports: Vec::new(),
                },
            }
        })
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    #[test]
    fn inputs_become_environment_variables_unless_too_long() {
        let inputs = json!({"name": "x y", "max-count": 3, "big": "a".repeat(40_000), "bad name": "z"});
        assert_eq!(
            super::input_env(&inputs),
            [("PLUGD_INPUT_NAME".to_owned(), "x y".to_owned()), ("PLUGD_INPUT_MAX_COUNT".to_owned(), "3".to_owned())]
        );
    }
}
