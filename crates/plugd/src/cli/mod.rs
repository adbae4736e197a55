//! The `plugd` command line: clap arguments, then one small function per command.

mod apigw;
mod db;
mod describe;
mod dev;
mod gitlab;
mod home;
mod hooks;
mod inputs;
mod plugins;
mod progress;
mod run;
mod serve;
mod table;

use std::ffi::OsString;
use std::fmt;
use std::process::ExitCode;
use std::sync::Arc;

use clap::{Parser, Subcommand};
use plugd_core::{Registry, RegistryBuilder};

use crate::exit;

/// plugd: write a plugin once, run it anywhere.
#[derive(Debug, Parser)]
#[command(name = "plugd", version, propagate_version = true)]
struct Args {
    /// Debug logs tagged with the trace_id (also PLUGD_DEBUG=1).
    #[arg(short, long, global = true)]
    verbose: bool,
    /// The Python interpreter of bk-plugin projects that have no .venv/ (also PLUGD_PYTHON).
    #[arg(long, global = true, value_name = "PATH")]
    python: Option<std::path::PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run a plugin to its end: `plugd run <plugin>[@<version>] [--<input> <value>]...`.
    Run(run::RunArgs),
    /// List plugins and their versions: built-in, installed, and those of --plugins folders.
    List {
        /// Print JSON instead of a table.
        #[arg(long)]
        json: bool,
        /// A folder of plugin folders to include.
        #[arg(long, value_name = "DIR")]
        plugins: Vec<std::path::PathBuf>,
    },
    /// Show a plugin version's description, inputs, context inputs and outputs.
    Describe {
        /// `<plugin>` or `<plugin>@<version>` (default: the newest version).
        plugin: String,
        /// Print the JSON schemas (the shape of the bk-plugin `detail` endpoint).
        #[arg(long)]
        json: bool,
    },
    /// Serve the bk-plugin HTTP API, durable on an embedded SQLite database.
    Serve(Box<serve::ServeArgs>),
    /// Move a service's database between backends (`db copy`) and show what one holds (`db status`).
    Db(db::DbArgs),
    /// Try plugins in the browser: serve PLUGIN_FOLDERs and the built-in plugins on loopback, on a
    /// temporary database, and print the debug panel's URL.
    Dev(dev::DevArgs),
    /// Install a plugin folder or .tar.gz archive into $PLUGD_HOME/plugins/<id>/<version>/.
    Install {
        /// A folder with plugin.yaml or qciplugin.yml, or a .tar.gz of one.
        source: std::path::PathBuf,
        /// Replace an installed copy of the same version.
        #[arg(long)]
        force: bool,
        /// The plugin code of a bk-plugin project (default: app_desc.yml's app_code, else the
        /// folder's name).
        #[arg(long, value_name = "CODE")]
        name: Option<String>,
    },
    /// Remove an installed plugin version.
    Uninstall {
        /// `<id>@<version>`, or `<id>` when one version is installed.
        plugin: String,
    },
    /// Create a working plugin project.
    New(home::NewArgs),
    /// Release hooks: run or check the stages of plugd-hooks.yaml.
    Hooks(hooks::HooksArgs),
    /// GitLab batch CI: run pipelines across projects and collect image tags; protect branches.
    Gitlab(gitlab::GitlabArgs),
    /// The BlueKing API gateway: the resources to import for a plugd server.
    Apigw(apigw::ApigwArgs),
}

/// A command's failure, with its exit code.
#[derive(Debug)]
pub(crate) enum CliError {
    /// Bad usage or input: exit code 2, nothing ran.
    Usage(String),
    /// Something went wrong while running: exit code 1.
    Failed(anyhow::Error),
}

impl fmt::Display for CliError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            CliError::Usage(message) => f.write_str(message),
            CliError::Failed(error) => write!(f, "{error:#}"),
        }
    }
}

impl From<anyhow::Error> for CliError {
    fn from(error: anyhow::Error) -> CliError {
        CliError::Failed(error)
    }
}

pub(crate) type CliResult<T = ExitCode> = Result<T, CliError>;

pub(crate) fn main(plugins: RegistryBuilder, argv: impl IntoIterator<Item = OsString>) -> ExitCode {
    let args = match Args::try_parse_from(argv) {
        Ok(args) => args,
        Err(e) => {
            let _ = e.print();
            return ExitCode::from(if e.use_stderr() { exit::USAGE } else { exit::SUCCESS });
        }
    };
    if let Some(python) = &args.python {
        let _ = plugins::PYTHON.set(python.clone());
    }
    // `plugd run` and `plugd serve` start logging themselves.
    if !matches!(args.command, Command::Run(_) | Command::Serve(_) | Command::Dev(_)) {
        init_logging(args.verbose);
    }
    let quiet = plugd_process::ProcessOptions::default();
    let result = match args.command {
        Command::Run(run_args) => run::run(plugins, run_args, args.verbose),
        Command::List { json, plugins: dirs } => (|| {
            let (builder, _) = plugins::with_dirs(plugins, &dirs, &quiet)?;
            let registry = plugins::build(builder)?;
            describe::list(&registry, json)
        })(),
        Command::Describe { plugin, json } => (|| {
            let (registry, spec, _) = plugins::for_spec(plugins, &plugin, &quiet)?;
            describe::describe(&registry, &spec, json)
        })(),
        Command::Serve(serve_args) => serve::serve(plugins, *serve_args, args.verbose),
        Command::Dev(dev_args) => dev::dev(plugins, dev_args, args.verbose),
        Command::Db(db_args) => db::db(db_args),
        Command::Install { source, force, name } => home::install(plugins, &source, force, name),
        Command::Uninstall { plugin } => home::uninstall(&plugin),
        Command::New(new_args) => home::new(new_args),
        Command::Hooks(hooks_args) => hooks::hooks(plugins, hooks_args),
        Command::Gitlab(gitlab_args) => gitlab::gitlab(gitlab_args),
        Command::Apigw(apigw_args) => apigw::apigw(plugins, apigw_args),
    };
    match result {
        Ok(code) => code,
        Err(e) => {
            eprintln!("error: {e}");
            ExitCode::from(match e {
                CliError::Usage(_) => exit::USAGE,
                CliError::Failed(_) => exit::FAILED,
            })
        }
    }
}

pub(crate) fn init_logging(verbose: bool) {
    init_logging_with(verbose, "warn", None);
}

/// Logs to standard error at `level` for plugd's crates (debug with `-v` or `PLUGD_DEBUG=1`,
/// anything with `PLUGD_LOG`), plus `capture`, which keeps what executes log for `logs/{trace_id}`.
pub(crate) fn init_logging_with(verbose: bool, level: &str, capture: Option<plugd_server::LogCapture>) {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::{filter::LevelFilter, EnvFilter, Layer};
    let debug = verbose || std::env::var("PLUGD_DEBUG").is_ok_and(|v| !v.is_empty() && v != "0");
    let level = if debug { "debug" } else { level };
    let crates = [
        "plugd",
        "plugd_core",
        "plugd_sdk",
        "plugd_plugins",
        "plugd_server",
        "plugd_store_sqlite",
        "plugd_store_postgres",
    ];
    let default: Vec<String> =
        std::iter::once("warn".to_owned()).chain(crates.iter().map(|c| format!("{c}={level}"))).collect();
    let filter = EnvFilter::try_from_env("PLUGD_LOG").unwrap_or_else(|_| EnvFilter::new(default.join(",")));
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let console = tracing_subscriber::fmt::layer().with_ansi(ansi).with_writer(std::io::stderr).with_filter(filter);
    let capture = capture.map(|c| c.with_filter(LevelFilter::INFO));
    let _ = tracing_subscriber::registry().with(console).with(capture).try_init();
}

/// A duration such as `30s`, `5m`, `1h30m` or `7d`; a bare number is seconds.
pub(crate) fn parse_duration(raw: &str) -> Result<std::time::Duration, String> {
    if let Ok(seconds) = raw.parse::<u64>() {
        return Ok(std::time::Duration::from_secs(seconds));
    }
    humantime::parse_duration(raw).map_err(|e| format!("{e} (expected e.g. 90s, 5m, 1h30m)"))
}

/// [`parse_duration`], refusing zero.
pub(crate) fn parse_positive_duration(raw: &str) -> Result<std::time::Duration, String> {
    parse_duration(raw).and_then(|d| if d.is_zero() { Err("must be more than zero".into()) } else { Ok(d) })
}

/// A single-threaded runtime: enough for one local run, and the fastest to start.
pub(crate) fn runtime() -> CliResult<tokio::runtime::Runtime> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| CliError::Failed(anyhow::anyhow!("cannot start the async runtime: {e}")))
}

/// Looks up `plugin` or `plugin@version`, as a usage error when missing.
pub(crate) fn lookup(registry: &Registry, spec: &str) -> CliResult<Arc<plugd_core::RegisteredPlugin>> {
    registry.get_spec(spec).map_err(|e| CliError::Usage(e.to_string()))
}
