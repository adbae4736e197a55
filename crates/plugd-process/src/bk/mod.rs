//! bk-plugin projects: folders written for BlueKing's Python bk-plugin-framework, run unchanged.
//!
//! A project is a folder with `bk_plugin/versions/` and `bk_plugin/meta.py`. [`load_bk`] imports it
//! once (in a short-lived Python process, under the reaper like any plugin process) to learn its
//! versions, descriptions and pydantic schemas; each version becomes a [`BkPlugin`], a
//! [`DynPlugin`] like any other. Executes run in a pool of persistent Python hosts that import the
//! project once and answer executes as JSON lines over pipes ([`pool`]): plugd ships the kit they
//! import (`bk_plugin_framework.kit`, written from the framework's documented behaviour) and the
//! host itself, embedded in the binary; models are the project's own pydantic (v1 API).

mod install;
mod pool;

pub use install::install_bk;

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use plugd_sdk::{
    ApiError, ApiReply, ApiRequest, BoxFuture, DynPlugin, ExecuteError, ExecuteRequest, ExecuteResponse, Outcome,
    PluginError, PluginInfo, PluginSchemas,
};
use serde_json::{json, Map, Value};

use crate::spawn::{ENV_ALLOWLIST, WITHHELD_ENV};
use crate::{LoadError, ProcessOptions};

/// The files plugd writes for the host: the kit, the host script and its package (`plugd_host`,
/// found beside the script like the kit: Python puts the script's folder first on `sys.path`).
const KIT: [(&str, &str); 14] = [
    ("plugd_bkhost.py", include_str!("../bkpython/plugd_bkhost.py")),
    ("plugd_host/__init__.py", include_str!("../bkpython/plugd_host/__init__.py")),
    ("plugd_host/protocol.py", include_str!("../bkpython/plugd_host/protocol.py")),
    ("plugd_host/process_limits.py", include_str!("../bkpython/plugd_host/process_limits.py")),
    ("plugd_host/log_capture.py", include_str!("../bkpython/plugd_host/log_capture.py")),
    ("plugd_host/project.py", include_str!("../bkpython/plugd_host/project.py")),
    ("plugd_host/describe.py", include_str!("../bkpython/plugd_host/describe.py")),
    ("plugd_host/execute.py", include_str!("../bkpython/plugd_host/execute.py")),
    ("plugd_host/django_emulation.py", include_str!("../bkpython/plugd_host/django_emulation.py")),
    ("bk_plugin_framework/__init__.py", include_str!("../bkpython/bk_plugin_framework/__init__.py")),
    ("bk_plugin_framework/constants.py", include_str!("../bkpython/bk_plugin_framework/constants.py")),
    ("bk_plugin_framework/kit/__init__.py", include_str!("../bkpython/bk_plugin_framework/kit/__init__.py")),
    ("bk_plugin_framework/kit/plugin.py", include_str!("../bkpython/bk_plugin_framework/kit/plugin.py")),
    ("bk_plugin_framework/kit/api.py", include_str!("../bkpython/bk_plugin_framework/kit/api.py")),
];

/// How long importing a project to describe it may take.
const DESCRIBE_TIMEOUT: Duration = Duration::from_secs(120);

/// The most a project's description (versions and schemas) may weigh.
const MAX_DESCRIPTION: u64 = 64 * 1024 * 1024;

/// Packages a project's `requirements.txt` names that plugd replaces (never installed).
pub const REPLACED_PACKAGES: [&str; 2] = ["bk-plugin-framework", "bk-plugin-runtime"];

/// How bk-plugin projects run.
#[derive(Debug, Clone, Default)]
pub struct PythonOptions {
    /// The interpreter when the project has no `.venv/` (`--python`, `PLUGD_PYTHON`); `python3`
    /// on `PATH` without it.
    pub python: Option<PathBuf>,
    /// Python hosts per project; `None`: the number of cores.
    pub hosts: Option<usize>,
    /// Executes each host runs at once, on threads; `None`: 16 (the framework's gunicorn threads).
    pub threads: Option<usize>,
    /// The address-space limit of each host, in bytes (`RLIMIT_AS`); `None`: no limit (the command
    /// line's default is 1 GiB, `PLUGD_PYTHON_MEMORY`).
    pub memory: Option<u64>,
    /// The plugin code, overriding `app_desc.yml` and the folder's name.
    pub name: Option<String>,
}

/// The default of [`PythonOptions::threads`].
const DEFAULT_THREADS: usize = 16;

/// Whether `dir` is a bk-plugin project: `bk_plugin/versions/` and `bk_plugin/meta.py`.
pub fn is_bk_project(dir: &Path) -> bool {
    dir.join("bk_plugin/versions").is_dir() && dir.join("bk_plugin/meta.py").is_file()
}

/// The interpreter of a project: its `.venv/`, else `python`, else `python3`.
pub fn interpreter(dir: &Path, python: Option<&Path>) -> PathBuf {
    let venv = dir.join(".venv/bin/python");
    if venv.exists() {
        return venv;
    }
    python.map(Path::to_owned).unwrap_or_else(|| PathBuf::from("python3"))
}

/// A loaded bk-plugin project: its code, description and one [`BkPlugin`] per version.
pub struct BkProject {
    dir: PathBuf,
    code: String,
    description: String,
    python: PathBuf,
    versions: Vec<Arc<BkPlugin>>,
}

impl std::fmt::Debug for BkProject {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BkProject").field("dir", &self.dir).field("code", &self.code).finish_non_exhaustive()
    }
}

impl BkProject {
    /// The project folder.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The plugin code (`meta.code`).
    pub fn code(&self) -> &str {
        &self.code
    }

    /// The description from `bk_plugin/meta.py`.
    pub fn description(&self) -> &str {
        &self.description
    }

    /// The interpreter its hosts run.
    pub fn python(&self) -> &Path {
        &self.python
    }

    /// Its versions, as plugins.
    pub fn plugins(&self) -> Vec<Arc<dyn DynPlugin>> {
        self.versions.iter().map(|v| v.clone() as Arc<dyn DynPlugin>).collect()
    }
}

/// What every version of a project shares: the host pool and the kit's folder.
struct Shared {
    pool: pool::Pool,
    description: String,
    apis: Apis,
    _kit: tempfile::TempDir,
}

/// The project's data-source views, as its import found them.
enum Apis {
    /// No `bk_plugin/apis/urls.py`.
    None,
    /// Views the hosts serve.
    Served,
    /// Views whose packages the environment lacks: why they answer 501.
    Unavailable(String),
}

impl Apis {
    fn of(described: &Value, python: &Path) -> Apis {
        let apis = described.get("apis");
        if !apis.and_then(|a| a.get("urls")).and_then(Value::as_bool).unwrap_or(false) {
            return Apis::None;
        }
        let missing: Vec<&str> = apis
            .and_then(|a| a.get("missing"))
            .and_then(Value::as_array)
            .map(|m| m.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        if missing.is_empty() {
            return Apis::Served;
        }
        let missing = missing.join(" and ");
        Apis::Unavailable(format!(
            "this plugin's data-source APIs (bk_plugin/apis/) need {missing}, which {} cannot import: add \
             {missing} to requirements.txt and run `plugd install` on the project again (or pip install them \
             into that environment)",
            python.display()
        ))
    }
}

/// One version of a bk-plugin project, run by the project's Python hosts.
pub struct BkPlugin {
    info: PluginInfo,
    schemas: PluginSchemas,
    shared: Arc<Shared>,
}

impl std::fmt::Debug for BkPlugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("BkPlugin").field("info", &self.info).finish_non_exhaustive()
    }
}

/// The environment of a project's Python processes.
fn host_env(options: &ProcessOptions, python: &PythonOptions, dir: &Path) -> Vec<(String, String)> {
    let mut env: Vec<(String, String)> = if options.inherit_env {
        std::env::vars().filter(|(key, _)| !WITHHELD_ENV.contains(&key.as_str())).collect()
    } else {
        ENV_ALLOWLIST.iter().filter_map(|k| std::env::var(k).ok().map(|v| ((*k).to_owned(), v))).collect()
    };
    env.retain(|(key, _)| key != "PYTHONPATH" && key != "PYTHONHOME");
    env.extend([
        ("PYTHONDONTWRITEBYTECODE".to_owned(), "1".to_owned()),
        ("PYTHONUNBUFFERED".to_owned(), "1".to_owned()),
        ("PYTHONIOENCODING".to_owned(), "utf-8".to_owned()),
        ("PLUGD_PLUGIN_DIR".to_owned(), dir.display().to_string()),
        ("BKPAAS_ENVIRONMENT".to_owned(), std::env::var("BKPAAS_ENVIRONMENT").unwrap_or_else(|_| "prod".into())),
    ]);
    if let Some(memory) = python.memory {
        env.push(("PLUGD_HOST_MEMORY".to_owned(), memory.to_string()));
    }
    env
}

/// Writes the kit and the host into a new folder, readable by a plugin user.
fn write_kit() -> Result<tempfile::TempDir, String> {
    let kit = tempfile::Builder::new()
        .prefix("plugd-bk-")
        .tempdir()
        .map_err(|e| format!("cannot create a temp folder: {e}"))?;
    for (path, text) in KIT {
        let file = kit.path().join(path);
        let parent = file.parent().unwrap_or(kit.path());
        std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::write(&file, text))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(kit.path(), std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("cannot open up {}: {e}", kit.path().display()))?;
    Ok(kit)
}

/// The plugin code: `name`, else the install record's, else `app_desc.yml` (`app_code`, `bk_app_code` or `app.bk_app_code`),
/// else the folder's name.
pub(crate) fn project_code(dir: &Path, name: Option<&str>) -> Result<String, LoadError> {
    let from_desc = || -> Result<Option<String>, LoadError> {
        let file = dir.join("app_desc.yml");
        let Ok(text) = std::fs::read_to_string(&file) else { return Ok(None) };
        let doc: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).map_err(|e| LoadError::yaml(&file, &e))?;
        let code = doc
            .get("app_code")
            .or_else(|| doc.get("bk_app_code"))
            .or_else(|| doc.get("app").and_then(|app| app.get("bk_app_code")))
            .and_then(|v| v.as_str())
            .map(str::to_owned);
        Ok(code)
    };
    let folder = || dir.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
    // An installed copy keeps the code it was installed under.
    let installed = || -> Option<String> {
        let record = std::fs::read_to_string(dir.join(".plugd-install.json")).ok()?;
        let record: Value = serde_json::from_str(&record).ok()?;
        record.get("id")?.as_str().map(str::to_owned)
    };
    let code = match name.map(str::to_owned).or_else(installed) {
        Some(name) => name,
        None => from_desc()?.unwrap_or_else(folder),
    };
    if !plugd_sdk::is_valid_name(&code) {
        return Err(LoadError {
            file: dir.to_owned(),
            line: None,
            field: None,
            message: format!("{code:?} is not a valid plugin code; give one with app_desc.yml (app_code) or --name"),
        });
    }
    Ok(code)
}

/// Loads the bk-plugin project in `dir`: imports it once with its interpreter to learn its versions.
pub fn load_bk(dir: &Path, options: &ProcessOptions, python: &PythonOptions) -> Result<Arc<BkProject>, LoadError> {
    let dir = dir.canonicalize().map_err(|e| LoadError::io(dir, e))?;
    let fail = |message: String| LoadError { file: dir.clone(), line: None, field: None, message };
    if !is_bk_project(&dir) {
        return Err(fail("not a bk-plugin project: expected bk_plugin/versions/ and bk_plugin/meta.py".into()));
    }
    let code = project_code(&dir, python.name.as_deref())?;
    let interpreter = interpreter(&dir, python.python.as_deref());
    let kit = write_kit().map_err(fail)?;
    let config = pool::HostConfig {
        python: interpreter.clone(),
        script: kit.path().join("plugd_bkhost.py"),
        project: dir.clone(),
        env: host_env(options, python, &dir),
        reaper: options.reaper.clone(),
        user: options.user_for(&code).cloned(),
        threads: python.threads.unwrap_or(DEFAULT_THREADS).max(1),
        hosts: python
            .hosts
            .unwrap_or_else(|| std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1))
            .max(1),
        timeout: options.default_timeout,
        echo: options.echo,
    };
    let described = describe(&config).map_err(fail)?;
    if let Some(error) = described.get("error").and_then(Value::as_str) {
        return Err(fail(format!("cannot import the project with {}:\n{error}", interpreter.display())));
    }
    let description = described.get("description").and_then(Value::as_str).unwrap_or_default().to_owned();
    let apis = Apis::of(&described, &interpreter);
    let shared = Arc::new(Shared { pool: pool::Pool::new(config), description: description.clone(), apis, _kit: kit });
    let mut versions = Vec::new();
    for detail in described.get("versions").and_then(Value::as_array).cloned().unwrap_or_default() {
        let text = |key: &str| detail.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
        let version = text("version");
        let form = std::fs::read_to_string(dir.join("bk_plugin/forms").join(&version).join("form.js")).ok();
        let info = PluginInfo {
            name: code.clone(),
            version: version.clone(),
            description: text("desc"),
            enable_plugin_callback: detail.get("enable_plugin_callback").and_then(Value::as_bool).unwrap_or(false),
            form,
            origin: format!("{} ({})", dir.join("bk_plugin/versions").display(), text("class")),
        };
        let schema = |key: &str| detail.get(key).cloned().unwrap_or_else(|| json!({"type": "object"}));
        let schemas = PluginSchemas {
            inputs: schema("inputs"),
            context_inputs: schema("context_inputs"),
            outputs: schema("outputs"),
        };
        versions.push(Arc::new(BkPlugin { info, schemas, shared: shared.clone() }));
    }
    if versions.is_empty() {
        return Err(fail("the project defines no plugin version in bk_plugin/versions/".into()));
    }
    Ok(Arc::new(BkProject { dir, code, description, python: interpreter, versions }))
}

/// Runs `plugd_bkhost.py describe` and reads the JSON it writes.
fn describe(config: &pool::HostConfig) -> Result<Value, String> {
    let mut command = config.command("describe");
    command.stdin(Stdio::null());
    let mut child = command.spawn().map_err(|e| {
        format!(
            "cannot start {} to import the project: {e} (create a .venv in the project, or give --python or PLUGD_PYTHON)",
            config.python.display()
        )
    })?;
    let read = |mut stream: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = stream.by_ref().take(MAX_DESCRIPTION).read_to_end(&mut bytes);
            bytes
        })
    };
    let stdout = read(Box::new(child.stdout.take().expect("piped stdout")));
    let stderr = read(Box::new(child.stderr.take().expect("piped stderr")));
    let deadline = std::time::Instant::now() + DESCRIBE_TIMEOUT;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break Some(status),
            Ok(None) if std::time::Instant::now() < deadline => std::thread::sleep(Duration::from_millis(10)),
            _ => {
                let _ = nix::sys::signal::killpg(
                    nix::unistd::Pid::from_raw(i32::try_from(child.id()).unwrap_or(i32::MAX)),
                    nix::sys::signal::Signal::SIGKILL,
                );
                let _ = child.wait();
                break None;
            }
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr.join().unwrap_or_default()).trim().to_owned();
    let Some(status) = status else {
        return Err(format!("importing the project took over {}s", DESCRIBE_TIMEOUT.as_secs()));
    };
    serde_json::from_slice(&stdout).map_err(|_| {
        let stderr = stderr.lines().rev().take(20).collect::<Vec<_>>().into_iter().rev().collect::<Vec<_>>().join("\n");
        format!("{} could not import the project ({status}):\n{stderr}", config.python.display())
    })
}

impl BkPlugin {
    async fn run(&self, request: ExecuteRequest) -> ExecuteResponse {
        let prepared = request.callbacks.prepare_callback(&request.trace_id).ok();
        let mut message = Map::new();
        message.insert("version".into(), self.info.version.clone().into());
        message.insert("trace_id".into(), request.trace_id.clone().into());
        message.insert("state".into(), request.state.name().into());
        message.insert("invoke_count".into(), request.invoke_count.into());
        message.insert("inputs".into(), request.inputs);
        message.insert("context".into(), request.context);
        message.insert("storage".into(), Value::Object(request.storage.clone()));
        message.insert("outputs".into(), Value::Object(request.outputs.clone()));
        message
            .insert("callback".into(), request.callback.as_ref().map(|c| json!({"id": c.id, "data": c.data})).into());
        message.insert("prepared_callback".into(), prepared.as_ref().map(|p| json!({"id": p.id, "url": p.url})).into());
        let reply = match self.shared.pool.execute(message).await {
            Ok(reply) => reply,
            Err(e) => {
                return ExecuteResponse {
                    result: Err(ExecuteError::Plugin(PluginError::Unexpected(e.to_string()))),
                    storage: request.storage,
                    outputs: request.outputs,
                    reports: Vec::new(),
                }
            }
        };
        log(&reply.logs);
        let message = reply.message.clone().unwrap_or_default();
        let result = match reply.result.as_str() {
            "success" => Ok(Outcome::Success),
            "poll" => {
                let seconds = reply.poll_after.filter(|s| s.is_finite()).unwrap_or(0.0).clamp(0.0, 366.0 * 86400.0);
                Ok(Outcome::Poll(Duration::from_secs_f64(seconds)))
            }
            "callback" => Ok(Outcome::Callback),
            "failed" => Err(ExecuteError::Plugin(PluginError::Failed(message))),
            "inputs" => Err(ExecuteError::Inputs(message)),
            "context" => Err(ExecuteError::Context(message)),
            "unexpected" => Err(ExecuteError::Plugin(PluginError::Unexpected(message))),
            other => Err(ExecuteError::Plugin(PluginError::Unexpected(format!("the Python host answered {other:?}")))),
        };
        ExecuteResponse { result, storage: reply.storage, outputs: reply.outputs, reports: Vec::new() }
    }
}

/// Log lines of one execute or view that plugd reads: the host keeps to it, and a project that
/// appends to the host's list itself is cut here.
const MAX_LOG_LINES: usize = 1000;

/// Logs what the plugin logged during an execute or a view, at its level (at most [`MAX_LOG_LINES`]).
fn log(logs: &[(String, String)]) {
    if logs.len() > MAX_LOG_LINES {
        let dropped = logs.len() - MAX_LOG_LINES;
        tracing::warn!(target: "plugd::plugin", "{dropped} more log lines dropped: at most {MAX_LOG_LINES} per execute");
    }
    for (level, line) in logs.iter().take(MAX_LOG_LINES) {
        match level.as_str() {
            "ERROR" | "CRITICAL" => tracing::error!(target: "plugd::plugin", "{line}"),
            "WARNING" => tracing::warn!(target: "plugd::plugin", "{line}"),
            "DEBUG" => tracing::debug!(target: "plugd::plugin", "{line}"),
            _ => tracing::info!(target: "plugd::plugin", "{line}"),
        }
    }
}

impl BkPlugin {
    /// One data-source call, answered by the project's views in a host.
    async fn call(&self, request: ApiRequest) -> Result<ApiReply, ApiError> {
        let mut message = Map::new();
        message.insert("kind".into(), "api".into());
        message.insert("method".into(), request.method.to_string().into());
        message.insert("path".into(), request.path.into());
        message.insert("query".into(), Value::Object(request.query));
        message.insert("body".into(), request.body);
        message.insert("username".into(), request.username.into());
        message.insert("headers".into(), json!(request.headers));
        let reply =
            self.shared.pool.execute(message).await.map_err(|e| ApiError { status: 500, message: e.to_string() })?;
        log(&reply.logs);
        let message = reply.message.unwrap_or_default();
        match reply.result.as_str() {
            "api" => Ok(ApiReply { status: reply.status.unwrap_or(200), body: reply.data }),
            "api_missing" => Err(ApiError { status: 404, message: "no view has this path".into() }),
            "api_unavailable" => Err(ApiError { status: 501, message }),
            _ => Err(ApiError { status: 500, message }),
        }
    }
}

impl DynPlugin for BkPlugin {
    fn call_api(&self, request: ApiRequest) -> Option<BoxFuture<'_, Result<ApiReply, ApiError>>> {
        match &self.shared.apis {
            Apis::None => None,
            Apis::Unavailable(why) => {
                let error = ApiError { status: 501, message: why.clone() };
                Some(Box::pin(std::future::ready(Err(error))))
            }
            Apis::Served => Some(Box::pin(self.call(request))),
        }
    }

    fn info(&self) -> PluginInfo {
        self.info.clone()
    }

    fn schemas(&self) -> PluginSchemas {
        self.schemas.clone()
    }

    fn execute(&self, request: ExecuteRequest) -> BoxFuture<'_, ExecuteResponse> {
        Box::pin(self.run(request))
    }

    fn validates_inputs(&self) -> bool {
        true
    }

    fn plugin_description(&self) -> Option<String> {
        Some(self.shared.description.clone())
    }

    fn language(&self) -> &'static str {
        "python"
    }
}
