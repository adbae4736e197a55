//! `plugd serve`: the bk-plugin HTTP API on an embedded SQLite database, or on PostgreSQL shared by
//! several nodes.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context as _;
use clap::{Args, ValueEnum};
use plugd_core::RegistryBuilder;
use plugd_server::{AuthConfig, LogCapture, ServerConfig};
use plugd_store_postgres::PgOptions;
use plugd_store_sqlite::{SqliteOptions, Synchronous};

use crate::store::{open_store, DbUrl, OpenError, StoreOptions};
use serde_json::Value;

use super::{parse_duration, parse_positive_duration, CliError, CliResult};

/// Arguments of `plugd serve`; each can also come from the environment variable named.
#[derive(Debug, Args)]
pub(crate) struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "PLUGD_LISTEN", default_value = "127.0.0.1:8000")]
    listen: SocketAddr,
    /// The database: sqlite://PATH (one node), or postgres://USER:PASSWORD@HOST:PORT/DB[?sslmode=require|verify-full]
    /// shared by any number of nodes.
    #[arg(long, env = "PLUGD_DB", default_value = "sqlite://./plugd.db", hide_env_values = true)]
    db: String,
    /// PostgreSQL: connections in each node's pool.
    #[arg(long, env = "PLUGD_DB_POOL_SIZE", default_value_t = 16, value_parser = clap::value_parser!(u32).range(1..))]
    db_pool_size: u32,
    /// PostgreSQL: how long an operation may take (a connection included) before the request that
    /// needs it is answered 503.
    #[arg(long, env = "PLUGD_DB_TIMEOUT", default_value = "5s", value_parser = parse_positive_duration)]
    db_timeout: Duration,
    /// Refuse to start on a database whose schema is older than this plugd's, instead of migrating it:
    /// for deployments that migrate as their own step (`plugd db migrate`) before rolling nodes.
    #[arg(long, env = "PLUGD_NO_MIGRATE")]
    no_migrate: bool,
    /// The URL callers reach this server at (callback URLs start with it) [default: http://<listen>].
    #[arg(long, env = "PLUGD_PUBLIC_URL")]
    public_url: Option<String>,
    /// Callback URLs are <callback-base>/callback/<token>/ [default: <public-url>/bk_plugin]; behind
    /// the BlueKing API gateway, its stage URL (https://bkapi.example.com/api/<gateway>/<stage>).
    #[arg(long, env = "PLUGD_CALLBACK_BASE")]
    callback_base: Option<String>,
    /// Executes running at once.
    #[arg(long, env = "PLUGD_WORKERS", default_value_t = 64)]
    workers: usize,
    /// The plugin that also answers under /bk_plugin/ [default: the only plugin, if one].
    #[arg(long, env = "PLUGD_DEFAULT_PLUGIN")]
    default_plugin: Option<String>,
    /// How long callback URLs stay valid.
    #[arg(long, env = "PLUGD_CALLBACK_TTL", default_value = "7d", value_parser = parse_duration)]
    callback_ttl: Duration,
    /// Fail invocations that would execute more often than this.
    #[arg(long, env = "PLUGD_MAX_INVOKE_COUNT")]
    max_invoke_count: Option<u32>,
    /// Fail invocations still pending this long after they were accepted (e.g. 1d).
    #[arg(long, env = "PLUGD_DEADLINE", value_parser = parse_duration)]
    deadline: Option<Duration>,
    /// Fail invocations that wait this long for a callback, unless their plugin sets its own wait (e.g. 1d).
    #[arg(long, env = "PLUGD_CALLBACK_TIMEOUT", value_parser = parse_positive_duration)]
    callback_timeout: Option<Duration>,
    /// Days to keep finished invocations, their logs and callbacks.
    #[arg(long, env = "SCHEDULE_PERSISTENT_DAYS", default_value_t = 30)]
    retention_days: u32,
    /// On SIGINT/SIGTERM, how long running executes may finish.
    #[arg(long, env = "PLUGD_GRACE_PERIOD", default_value = "10s", value_parser = parse_duration)]
    grace_period: Duration,
    /// How long a claim on an invocation lasts unless renewed (renewed while executing).
    #[arg(long, env = "PLUGD_LEASE", default_value = "30s", value_parser = parse_duration)]
    lease: Duration,
    /// Finish callbacks: attempts before giving up.
    #[arg(long, env = "PLUGD_FINISH_CALLBACK_ATTEMPTS", default_value_t = 8)]
    finish_callback_attempts: u32,
    /// Finish callbacks: first retry delay, doubled each retry (with jitter, at most 5m).
    #[arg(long, env = "PLUGD_FINISH_CALLBACK_BACKOFF", default_value = "1s", value_parser = parse_duration)]
    finish_callback_backoff: Duration,
    /// Finish callbacks: timeout of one attempt.
    #[arg(long, env = "PLUGD_FINISH_CALLBACK_TIMEOUT", default_value = "30s", value_parser = parse_duration)]
    finish_callback_timeout: Duration,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "PLUGD_MAX_BODY", default_value_t = 1024 * 1024)]
    max_body: usize,
    /// The memory that large answers (64 KiB and more) being sent may hold at once, in bytes: a client
    /// that asks for many and reads them slowly holds them; beyond it, such an answer is a 503.
    #[arg(long, env = "PLUGD_MAX_ANSWER_MEMORY", default_value_t = 256 * 1024 * 1024, value_parser = clap::value_parser!(u64).range(65536..))]
    max_answer_memory: u64,
    /// Event streams (the panel's live view of an invocation) open at once; one app may hold a quarter.
    #[arg(long, env = "PLUGD_MAX_EVENT_STREAMS", default_value_t = 256, value_parser = clap::value_parser!(u32).range(1..))]
    max_event_streams: u32,
    /// The most an execute may hand back, in bytes of JSON (its outputs, storage and error message
    /// together); more fails the execute.
    #[arg(long, env = "PLUGD_MAX_OUTPUTS", default_value_t = 1024 * 1024, value_parser = clap::value_parser!(u64).range(1..))]
    max_outputs: u64,
    /// Connections open at once; at the cap, the one idle the longest (a half-sent request, an idle
    /// keep-alive) is closed to make room [default: half the open-files limit, which plugd raises to
    /// its hard limit at start, at most 65536].
    #[arg(long, env = "PLUGD_MAX_CONNECTIONS", value_parser = clap::value_parser!(u32).range(1..))]
    max_connections: Option<u32>,
    /// Close a connection whose request head has not arrived within this time.
    #[arg(long, env = "PLUGD_HEADER_READ_TIMEOUT", default_value = "10s", value_parser = parse_positive_duration)]
    header_read_timeout: Duration,
    /// Answer 408 to a request whose body has not arrived within this time.
    #[arg(long, env = "PLUGD_BODY_READ_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    body_read_timeout: Duration,
    /// Close a connection whose client has read nothing of its answers for this long (a client that
    /// pipelines requests, or opens an event stream, and never reads).
    #[arg(long, env = "PLUGD_WRITE_TIMEOUT", default_value = "30s", value_parser = parse_positive_duration)]
    write_timeout: Duration,
    /// Also serve this built-in plugin that acts on the host or holds credentials (command, webhook,
    /// email, amqp, gitlab-pipeline); repeat, or comma-separate in PLUGD_ENABLE_PLUGINS.
    #[arg(long = "enable-plugin", env = "PLUGD_ENABLE_PLUGINS", value_delimiter = ',', value_name = "NAME")]
    enable_plugins: Vec<String>,
    /// `schedule` answers only callers with credentials, for their own app's invocations (as `logs`
    /// does); BK-SOPS then needs to call it through the API gateway.
    #[arg(long, env = "PLUGD_PRIVATE_SCHEDULE")]
    private_schedule: bool,
    /// Validate inputs and context as declared, without converting them first the way the Python
    /// framework (pydantic v1) does: "3" for an integer, 123 for a string, "yes" for a boolean,
    /// null for an optional field.
    #[arg(long, env = "PLUGD_STRICT_INPUTS")]
    strict_inputs: bool,
    /// SQLite durability: normal survives crashes, full also power loss.
    #[arg(long, env = "PLUGD_SQLITE_SYNCHRONOUS", value_enum, default_value_t = SyncMode::Normal)]
    sqlite_synchronous: SyncMode,
    /// A file of bearer tokens, one APP:TOKEN per line (also PLUGD_AUTH_TOKENS=APP:TOKEN,...).
    #[arg(long, env = "PLUGD_AUTH_TOKENS_FILE")]
    auth_tokens_file: Option<PathBuf>,
    /// A file of admin tokens, one NAME:TOKEN per line (also PLUGD_ADMIN_TOKENS=NAME:TOKEN,...): their
    /// callers see and cancel every invocation, those no app created included (other tokens see only
    /// their own app's).
    #[arg(long, env = "PLUGD_ADMIN_TOKENS_FILE")]
    admin_tokens_file: Option<PathBuf>,
    /// The API gateway's RSA public key (PEM), to verify X-Bkapi-JWT.
    #[arg(long, env = "PLUGD_APIGW_PUBLIC_KEY_FILE")]
    apigw_public_key: Option<PathBuf>,
    /// A JSON file {"<plugin>": {"<app_code>": {"type": "...", "value": ["..."]}}}: the bk-plugin allow_scope.
    #[arg(long, env = "PLUGD_ALLOW_SCOPE_FILE")]
    allow_scope: Option<PathBuf>,
    /// A folder of plugin folders (plugin.yaml or qciplugin.yml) to serve beside the others.
    #[arg(long, env = "PLUGD_PLUGINS_DIR", value_name = "DIR")]
    plugins: Vec<PathBuf>,
    /// The folder process plugins run in, and the only one their report files may come from
    /// [default: <database>-workspace next to a SQLite database; $PLUGD_HOME/workspace with
    /// PostgreSQL]; it must not hold plugd's own files.
    #[arg(long, env = "PLUGD_WORKSPACE", value_name = "DIR")]
    workspace: Option<PathBuf>,
    /// A file holding the callback signing secret (also PLUGD_CALLBACK_SECRET) [default: generated, kept in the database].
    #[arg(long, env = "PLUGD_CALLBACK_SECRET_FILE")]
    callback_secret_file: Option<PathBuf>,
    /// Run process plugins, bk-plugin projects and the command plugin as this user (plugd must run as
    /// root); `CODE=NAME` runs only that plugin or project as NAME, so that projects which must not
    /// reach each other's processes run as users of their own. Repeat, or comma-separate.
    #[arg(long, env = "PLUGD_PLUGIN_USER", value_name = "[CODE=]NAME", value_delimiter = ',')]
    plugin_user: Vec<String>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum SyncMode {
    Normal,
    Full,
}

fn read(path: &Path, what: &str) -> CliResult<String> {
    std::fs::read_to_string(path).map_err(|e| CliError::Usage(format!("{what}: cannot read {}: {e}", path.display())))
}

/// `APP:TOKEN` entries, from a comma- or newline-separated list.
fn parse_tokens(text: &str, source: &str) -> CliResult<Vec<(String, String)>> {
    text.split([',', '\n'])
        .map(str::trim)
        .filter(|entry| !entry.is_empty() && !entry.starts_with('#'))
        .enumerate()
        .map(|(i, entry)| match entry.split_once(':').map(|(app, token)| (app.trim(), token.trim())) {
            // Trimmed as presented tokens are, so `app: token` works as it reads.
            Some((app, token)) if !app.is_empty() && !token.is_empty() => Ok((app.to_owned(), token.to_owned())),
            // Never echo the entry: it may be a token.
            _ => Err(CliError::Usage(format!("{source}: entry {} is not APP:TOKEN", i + 1))),
        })
        .collect()
}

/// Half the open-files limit, after raising it to the hard limit (each connection is a descriptor;
/// the other half is for the database, plugin processes and files), at most 65536.
fn default_max_connections() -> usize {
    let files = raise_open_files_limit();
    usize::try_from(files / 2).unwrap_or(usize::MAX).clamp(64, 65_536)
}

/// Raises the soft limit of open files to the hard one (the usual soft default, 1024, is far below what
/// a server holding many connections needs): the limit now in force.
#[cfg(target_os = "linux")]
fn raise_open_files_limit() -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    match getrlimit(Resource::RLIMIT_NOFILE) {
        Ok((soft, hard)) if soft < hard => match setrlimit(Resource::RLIMIT_NOFILE, hard, hard) {
            Ok(()) => hard,
            Err(e) => {
                tracing::warn!("cannot raise the open-files limit from {soft} to {hard}: {e}");
                soft
            }
        },
        Ok((soft, _)) => soft,
        Err(_) => 1024,
    }
}

#[cfg(not(target_os = "linux"))]
fn raise_open_files_limit() -> u64 {
    1024
}

/// The tokens of the environment variable `var` and of the file `file` (given as `flag`).
fn configured_tokens(var: &str, file: Option<&Path>, flag: &str) -> CliResult<Vec<(String, String)>> {
    let mut tokens = Vec::new();
    if let Ok(text) = std::env::var(var) {
        tokens.extend(parse_tokens(&text, var)?);
    }
    if let Some(path) = file {
        tokens.extend(parse_tokens(&read(path, flag)?, &path.display().to_string())?);
    }
    Ok(tokens)
}

fn config(args: &ServeArgs) -> CliResult<ServerConfig> {
    let mut config = ServerConfig::new(args.listen);
    let http_url = |flag: &str, url: &str| {
        if url.starts_with("http://") || url.starts_with("https://") {
            Ok(url.trim_end_matches('/').to_owned())
        } else {
            Err(CliError::Usage(format!("{flag} {url:?}: expected an http:// or https:// URL")))
        }
    };
    if let Some(url) = &args.public_url {
        config.public_url = http_url("--public-url", url)?;
    }
    if let Some(url) = &args.callback_base {
        config.callback_base = Some(http_url("--callback-base", url)?);
    }
    config.default_plugin = args.default_plugin.clone();
    config.workers = args.workers.max(1);
    config.callback_ttl = args.callback_ttl;
    config.max_invoke_count = args.max_invoke_count;
    config.deadline = args.deadline;
    config.callback_timeout = args.callback_timeout;
    config.retention = Duration::from_secs(u64::from(args.retention_days) * 86_400);
    config.grace_period = args.grace_period;
    config.lease = args.lease.max(Duration::from_secs(1));
    config.finish_callback_attempts = args.finish_callback_attempts.max(1);
    config.finish_callback_backoff = args.finish_callback_backoff;
    config.finish_callback_timeout = args.finish_callback_timeout;
    config.max_body = args.max_body;
    config.max_outputs = usize::try_from(args.max_outputs).unwrap_or(usize::MAX);
    config.max_event_streams = args.max_event_streams as usize;
    config.max_answer_memory = usize::try_from(args.max_answer_memory).unwrap_or(usize::MAX);
    config.max_connections = match args.max_connections {
        Some(n) => n as usize,
        None => default_max_connections(),
    };
    config.header_read_timeout = args.header_read_timeout;
    config.body_read_timeout = args.body_read_timeout;
    config.write_timeout = args.write_timeout;
    config.private_schedule = args.private_schedule;
    config.strict_inputs = args.strict_inputs;

    let tokens = configured_tokens("PLUGD_AUTH_TOKENS", args.auth_tokens_file.as_deref(), "--auth-tokens-file")?;
    let admin_tokens =
        configured_tokens("PLUGD_ADMIN_TOKENS", args.admin_tokens_file.as_deref(), "--admin-tokens-file")?;
    // One token for two names would make a caller of one the other (an app an admin): whichever is
    // listed first would win.
    let all: Vec<&(String, String)> = tokens.iter().chain(&admin_tokens).collect();
    for (i, (app, token)) in all.iter().enumerate() {
        if let Some((other, _)) = all[..i].iter().find(|(other, t)| t == token && other != app) {
            return Err(CliError::Usage(format!(
                "the same token is configured for apps {other:?} and {app:?}: give each app a token of its own"
            )));
        }
    }
    let mut auth = AuthConfig { tokens, admin_tokens, jwt_key: None };
    if let Some(path) = &args.apigw_public_key {
        let pem = read(path, "--apigw-public-key")?;
        auth = auth
            .with_gateway_public_key(pem.as_bytes())
            .map_err(|e| CliError::Usage(format!("--apigw-public-key {}: {e}", path.display())))?;
    }
    config.auth = auth;
    if let Some(path) = &args.allow_scope {
        let text = read(path, "--allow-scope")?;
        let scopes: BTreeMap<String, Value> = serde_json::from_str(&text).map_err(|e| {
            CliError::Usage(format!("--allow-scope {}: line {} column {}: {e}", path.display(), e.line(), e.column()))
        })?;
        for (plugin, scope) in &scopes {
            check_scope_shape(scope)
                .map_err(|e| CliError::Usage(format!("--allow-scope {}: /{plugin}{e}", path.display())))?;
        }
        config.allow_scope = scopes;
    }
    let secret = match (&args.callback_secret_file, std::env::var("PLUGD_CALLBACK_SECRET")) {
        (Some(path), _) => Some(read(path, "--callback-secret-file")?.trim().as_bytes().to_vec()),
        (None, Ok(secret)) => Some(secret.into_bytes()),
        (None, Err(_)) => None,
    };
    if secret.as_ref().is_some_and(|s| s.len() < 16) {
        return Err(CliError::Usage("the callback secret must be at least 16 bytes long".into()));
    }
    config.secret = secret;
    Ok(config)
}

/// `{app_code: {"type": str, "value": [str]}}`; the error is a JSON path suffix and a reason.
fn check_scope_shape(scope: &Value) -> Result<(), String> {
    let Value::Object(apps) = scope else {
        return Err(": expected an object of app codes".into());
    };
    for (app, rule) in apps {
        if !rule["type"].is_string() {
            return Err(format!("/{app}/type: expected a string"));
        }
        if !rule["value"].as_array().is_some_and(|v| v.iter().all(Value::is_string)) {
            return Err(format!("/{app}/value: expected an array of strings"));
        }
    }
    Ok(())
}

/// The built-in plugins of [`crate::SERVE_OPT_IN`] that `--enable-plugin` does not name.
fn disabled_plugins(enabled: &[String]) -> CliResult<Vec<&'static str>> {
    if let Some(unknown) = enabled.iter().find(|name| !crate::SERVE_OPT_IN.contains(&name.as_str())) {
        return Err(CliError::Usage(format!(
            "--enable-plugin {unknown:?}: only these plugins need enabling: {}",
            crate::SERVE_OPT_IN.join(", ")
        )));
    }
    Ok(crate::SERVE_OPT_IN.iter().copied().filter(|name| !enabled.iter().any(|e| e == name)).collect())
}

/// The files that hold plugd's secrets and state: the database (report files are in it), credentials.
fn own_files(args: &ServeArgs, database: Option<&Path>) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = database.into_iter().map(Path::to_owned).collect();
    files.extend(
        [
            &args.auth_tokens_file,
            &args.admin_tokens_file,
            &args.apigw_public_key,
            &args.allow_scope,
            &args.callback_secret_file,
        ]
        .into_iter()
        .flatten()
        .cloned(),
    );
    files
}

/// A report may copy any regular file of the workspace to its callers: refuses a workspace that
/// holds the database (and so the callback secret), another invocation's reports, or credentials.
fn check_workspace(workspace: &Path, own: &[PathBuf]) -> CliResult<()> {
    // A path not yet created is taken as written.
    let resolve = |path: &Path| {
        std::fs::canonicalize(path)
            .or_else(|_| std::path::absolute(path).map(|p| p.components().collect::<PathBuf>()))
            .unwrap_or_else(|_| path.to_owned())
    };
    let workspace = resolve(workspace);
    for file in own {
        let resolved = resolve(file);
        if resolved.starts_with(&workspace) {
            return Err(CliError::Usage(format!(
                "the workspace {} holds {}: plugins could report it to their callers; give --workspace \
                 a folder of its own",
                workspace.display(),
                file.display()
            )));
        }
    }
    Ok(())
}

/// Makes this process's memory and environment (`/proc/<pid>/environ`, `mem`, `maps`) unreadable to
/// other processes of the same user, plugins included, as ssh-agent does: they hold the tokens and
/// the callback secret.
fn protect_process_memory() {
    #[cfg(target_os = "linux")]
    if let Err(e) = nix::sys::prctl::set_dumpable(false) {
        tracing::warn!("cannot make the process non-dumpable: {e}");
    }
}

pub(crate) fn serve(plugins: RegistryBuilder, args: ServeArgs, verbose: bool) -> CliResult {
    let capture = LogCapture::new();
    super::init_logging_with(verbose, "info", Some(capture.clone()));
    protect_process_memory();
    let disabled = disabled_plugins(&args.enable_plugins)?;
    let db = DbUrl::parse(&args.db).map_err(|e| CliError::Usage(e.to_string()))?;
    let path = match &db {
        DbUrl::Sqlite(path) => Some(path.clone()),
        DbUrl::Postgres(_) => None,
    };
    let default_workspace = match &path {
        Some(path) => {
            let mut name = path.file_name().unwrap_or_default().to_owned();
            name.push("-workspace");
            path.with_file_name(name)
        }
        // A database elsewhere: plugd's data directory, not whatever folder the server was started in.
        None => plugd_process::home::plugd_home().join("workspace"),
    };
    let mut config = config(&args)?;
    // Report files must be inside the folder plugins run in, which holds none of plugd's own.
    config.workspace = args.workspace.clone().unwrap_or(default_workspace);
    check_workspace(&config.workspace, &own_files(&args, path.as_deref()))?;
    let mut options = super::plugins::process_options(super::plugins::RunFor::Server, &args.plugin_user)?;
    options.workspace = config.workspace.clone();
    let (builder, folders) = super::plugins::with_dirs(plugins.without(&disabled), &args.plugins, &options)?;
    let registry = super::plugins::build(builder)?;
    plugd_server::check_config(&config, &registry).map_err(|e| CliError::Usage(e.to_string()))?;
    let options = StoreOptions {
        sqlite: SqliteOptions {
            synchronous: match args.sqlite_synchronous {
                SyncMode::Normal => Synchronous::Normal,
                SyncMode::Full => Synchronous::Full,
            },
            migrate: !args.no_migrate,
            ..SqliteOptions::default()
        },
        postgres: PgOptions {
            pool_size: args.db_pool_size as usize,
            timeout: args.db_timeout,
            migrate: !args.no_migrate,
            ..PgOptions::default()
        },
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot start the async runtime: {e}")))?;
    runtime.block_on(async move {
        super::plugins::install_all(&folders).await?;
        let store = match open_store(&args.db, options).await {
            Ok(store) => store,
            // A PostgreSQL URL that does not open (unreachable, refused, no such database) is a
            // configuration error; a SQLite file that does not open is an operational one.
            Err(OpenError::Url(e)) => return Err(CliError::Usage(e)),
            Err(OpenError::Open(e)) if path.is_none() => return Err(CliError::Usage(e)),
            Err(OpenError::Open(e)) => return Err(CliError::Failed(anyhow::anyhow!(e))),
        };
        let location = store.info().await.map(|info| info.location).unwrap_or_default();
        match std::fs::create_dir_all(&config.workspace) {
            Err(e) if e.kind() != std::io::ErrorKind::AlreadyExists => {
                return Err(CliError::Usage(format!("--workspace {}: {e}", config.workspace.display())));
            }
            _ => {}
        }

        let listener = tokio::net::TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let address = listener.local_addr().context("no local address")?;
        let mut config = config;
        if args.public_url.is_none() {
            config.public_url = format!("http://{address}");
        }
        let shutdown = shutdown_signal();
        let names: Vec<&str> = registry.names().collect();
        eprintln!("plugd serve: listening on http://{address} (plugins: {}; database: {})", names.join(", "), location);
        if !disabled.is_empty() {
            eprintln!("plugd serve: not serving {} (see --enable-plugin)", disabled.join(", "));
        }
        eprintln!("plugd serve: debug panel at http://{address}/");
        plugd_server::serve(listener, config, registry.clone(), store, capture, shutdown)
            .await
            .context("the server stopped")?;
        eprintln!("plugd serve: stopped");
        Ok::<_, CliError>(ExitCode::SUCCESS)
    })
}

/// SIGINT or SIGTERM. The handlers are installed when this is called, not when the future is first
/// polled: a deploy's SIGTERM that comes as soon as the server says it listens still stops it gracefully
/// (it drains, gives back its claims and says it left) instead of killing it.
fn shutdown_signal() -> impl std::future::Future<Output = ()> + Send {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{signal, SignalKind};
        let signals = (signal(SignalKind::interrupt()), signal(SignalKind::terminate()));
        async move {
            match signals {
                (Ok(mut interrupt), Ok(mut terminate)) => {
                    tokio::select! {
                        _ = interrupt.recv() => {}
                        _ = terminate.recv() => {}
                    }
                }
                (Err(e), _) | (_, Err(e)) => {
                    tracing::error!("cannot listen for SIGINT and SIGTERM: {e}");
                    std::future::pending::<()>().await;
                }
            }
        }
    }
    #[cfg(not(unix))]
    async {
        let _ = tokio::signal::ctrl_c().await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tokens_parse_without_echoing_secrets() {
        assert_eq!(
            parse_tokens("bk_sops:abc, ci:def\n# comment\n", "x").unwrap(),
            [("bk_sops".to_owned(), "abc".to_owned()), ("ci".to_owned(), "def".to_owned())]
        );
        let error = parse_tokens("bk_sops:abc,supersecret", "PLUGD_AUTH_TOKENS").unwrap_err().to_string();
        assert_eq!(error, "PLUGD_AUTH_TOKENS: entry 2 is not APP:TOKEN");
        assert_eq!(parse_tokens("ci : def ", "x").unwrap(), [("ci".to_owned(), "def".to_owned())], "trimmed");
        assert!(parse_tokens("ci: ", "x").is_err(), "a blank token is no token");
    }

    #[test]
    fn scope_shapes_are_checked_with_a_path() {
        use serde_json::json;
        assert!(check_scope_shape(&json!({"bk_sops": {"type": "project", "value": ["1"]}})).is_ok());
        assert_eq!(
            check_scope_shape(&json!({"bk_sops": {"type": 1, "value": []}})).unwrap_err(),
            "/bk_sops/type: expected a string"
        );
        assert_eq!(
            check_scope_shape(&json!({"bk_sops": {"type": "p", "value": [1]}})).unwrap_err(),
            "/bk_sops/value: expected an array of strings"
        );
    }
}
