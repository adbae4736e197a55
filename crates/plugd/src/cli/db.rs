//! `plugd db`: copy a service's database to another backend, and show what a database holds.

use std::io::IsTerminal;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use clap::{Args, Subcommand};
use indicatif::{ProgressBar, ProgressStyle};
use plugd_core::cluster::ClusterView;
use plugd_core::transfer::{self, CopyProgress, Transfer};
use plugd_sdk::State;
use plugd_store_postgres::PgOptions;
use plugd_store_sqlite::SqliteOptions;
use serde_json::json;

use crate::store::{open_transfer, DbUrl, OpenError, StoreOptions};

use super::{CliError, CliResult};

/// Arguments of `plugd db`.
#[derive(Debug, Args)]
pub(crate) struct DbArgs {
    #[command(subcommand)]
    command: DbCommand,
}

#[derive(Debug, Subcommand)]
enum DbCommand {
    /// Copy everything a stopped service owns (invocations, pending ones included, callbacks,
    /// finish callbacks, reports, the callback secret) into another database, e.g. from SQLite
    /// to PostgreSQL. Stop every node using either database first.
    Copy {
        /// The database to copy from: sqlite://PATH or postgres://...
        #[arg(long, value_name = "URL")]
        from: String,
        /// The database to copy into (created and migrated if needed); it must be empty.
        #[arg(long, value_name = "URL")]
        to: String,
        /// Copy into a database that is not empty, deleting everything it holds first.
        #[arg(long)]
        force: bool,
    },
    /// Bring a database's schema to this plugd's version, as an explicit step: for operators who
    /// migrate before a rolling deploy (then start nodes with `serve --no-migrate`). Says which
    /// migrations ran and whether older releases keep running on the result.
    Migrate {
        /// The database: sqlite://PATH or postgres://...
        #[arg(long, env = "PLUGD_DB", default_value = "sqlite://./plugd.db", hide_env_values = true)]
        db: String,
    },
    /// Show a database's backend, schema version, invocations by state, the nodes that share it
    /// (live and dead) and the due invocations that no live node serves. Never migrates.
    Status {
        /// The database: sqlite://PATH or postgres://...
        #[arg(long, env = "PLUGD_DB", default_value = "sqlite://./plugd.db", hide_env_values = true)]
        db: String,
        /// Print JSON.
        #[arg(long)]
        json: bool,
    },
}

pub(crate) fn db(args: DbArgs) -> CliResult {
    let runtime = super::runtime()?;
    match args.command {
        DbCommand::Copy { from, to, force } => runtime.block_on(copy(&from, &to, force)),
        DbCommand::Migrate { db } => runtime.block_on(migrate(&db)),
        DbCommand::Status { db, json } => runtime.block_on(status(&db, json)),
    }
}

/// Opens `url`; `create` says whether a SQLite file that does not exist may be created, `migrate`
/// whether an older schema is migrated (or refused).
async fn open(url: &str, flag: &str, create: bool, migrate: bool) -> CliResult<Arc<dyn Transfer>> {
    let db = DbUrl::parse(url).map_err(|e| CliError::Usage(e.to_string().replacen("--db", flag, 1)))?;
    if let DbUrl::Sqlite(path) = &db {
        if !create && !path.exists() {
            return Err(CliError::Usage(format!("{flag}: the database {} does not exist", path.display())));
        }
    }
    // One operation at a time, and pages of reports may be large: a longer timeout than a server's.
    let options = StoreOptions {
        postgres: PgOptions { pool_size: 2, timeout: Duration::from_secs(120), migrate, ..PgOptions::default() },
        sqlite: SqliteOptions { migrate, ..SqliteOptions::default() },
    };
    match open_transfer(url, options).await {
        Ok(store) => Ok(store),
        Err(OpenError::Url(e)) => Err(CliError::Usage(e.replacen("--db", flag, 1))),
        // As `plugd serve`: a PostgreSQL URL that does not open is a configuration error.
        Err(OpenError::Open(e)) if matches!(db, DbUrl::Postgres(_)) => Err(CliError::Usage(e)),
        Err(OpenError::Open(e)) => Err(CliError::Failed(anyhow::anyhow!(e))),
    }
}

fn failed(e: plugd_core::store::StoreError) -> CliError {
    CliError::Failed(anyhow::anyhow!(e.message))
}

/// Shows how far a copy is: a bar on a terminal, a line per kind (and every few seconds) otherwise.
struct Shown {
    bar: Option<ProgressBar>,
    last: Instant,
}

impl Shown {
    fn new() -> Shown {
        let bar = std::io::stderr().is_terminal().then(|| {
            let bar = ProgressBar::new(0);
            let style = ProgressStyle::with_template("{msg:>16} [{bar:30}] {pos}/{len} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_bar());
            bar.set_style(style.progress_chars("=> "));
            bar
        });
        Shown { bar, last: Instant::now() }
    }

    fn show(&mut self, p: CopyProgress) {
        match &self.bar {
            Some(bar) => {
                if bar.message() != p.what {
                    bar.set_message(p.what);
                    bar.set_length(p.total);
                }
                bar.set_position(p.done);
            }
            None => {
                let edge = p.done == 0 || p.done == p.total;
                if edge || self.last.elapsed() >= Duration::from_secs(2) {
                    self.last = Instant::now();
                    eprintln!("plugd db copy: {} {}/{}", p.what, p.done, p.total);
                }
            }
        }
    }

    fn finish(&self) {
        if let Some(bar) = &self.bar {
            bar.finish_and_clear();
        }
    }
}

async fn copy(from: &str, to: &str, force: bool) -> CliResult {
    let source = open(from, "--from", false, true).await?;
    let target = open(to, "--to", true, true).await?;
    let (source_info, target_info) = (source.info().await.map_err(failed)?, target.info().await.map_err(failed)?);
    if source_info.backend == target_info.backend && source_info.location == target_info.location {
        return Err(CliError::Usage("--from and --to are the same database".into()));
    }
    eprintln!(
        "plugd db copy: from {} {} to {} {}",
        source_info.backend, source_info.location, target_info.backend, target_info.location
    );
    let mut shown = Shown::new();
    let started = Instant::now();
    let copied = transfer::copy(source.as_ref(), target.as_ref(), force, |p| shown.show(p)).await;
    shown.finish();
    let copied = copied.map_err(|e| match e.kind {
        plugd_core::store::StoreErrorKind::Conflict if !force => CliError::Failed(anyhow::anyhow!(
            "{} {}: {}; copy into an empty database, or pass --force to delete what it holds first",
            target_info.backend,
            target_info.location,
            e.message
        )),
        _ => CliError::Failed(anyhow::anyhow!("the copy stopped: {}", e.message)),
    })?;
    println!(
        "copied {} invocations ({} pending), {} callbacks, {} finish callbacks, {} report files and {} settings \
         in {:.1}s",
        copied.invocations,
        copied.pending,
        copied.callbacks,
        copied.outbox,
        copied.report_files,
        copied.settings,
        started.elapsed().as_secs_f64()
    );
    Ok(ExitCode::SUCCESS)
}

async fn migrate(url: &str) -> CliResult {
    let store = open(url, "--db", true, true).await?;
    let info = store.info().await.map_err(failed)?;
    println!(
        "{} {}: schema version {} (this plugd knows {})",
        info.backend, info.location, info.schema_version, info.known_schema_version
    );
    Ok(ExitCode::SUCCESS)
}

async fn status(url: &str, as_json: bool) -> CliResult {
    let store = open(url, "--db", false, false).await?;
    let info = store.info().await.map_err(failed)?;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    let stats = store.stats(now).await.map_err(failed)?;
    let cluster = store.cluster(now).await.map_err(failed)?;
    let states: Vec<(State, u64)> =
        (1..=5u8).filter_map(|code| Some((State::from_code(code)?, stats.by_state[code as usize]))).collect();
    let total: u64 = states.iter().map(|(_, n)| n).sum();
    if as_json {
        let by_state: serde_json::Map<String, serde_json::Value> =
            states.iter().map(|(state, n)| (state.to_string(), json!(n))).collect();
        let mut out = json!({
            "backend": info.backend,
            "location": info.location,
            "schema_version": info.schema_version,
            "invocations": total,
            "by_state": by_state,
            "due": stats.due,
            "finish_callbacks_pending": stats.outbox_pending,
        });
        if let (Some(out), serde_json::Value::Object(cluster)) = (out.as_object_mut(), cluster.report()) {
            out.extend(cluster.into_iter().filter(|(key, _)| key != "now"));
        }
        println!("{out:#}");
        return Ok(ExitCode::SUCCESS);
    }
    println!("backend:         {}", info.backend);
    println!("location:        {}", info.location);
    println!("schema version:  {}", info.schema_version);
    println!("invocations:     {total}");
    for (state, n) in &states {
        println!("  {:<14} {n}", state.to_string());
    }
    println!("due now:         {}", stats.due);
    println!("finish callbacks waiting: {}", stats.outbox_pending);
    print_cluster(&cluster);
    Ok(ExitCode::SUCCESS)
}

/// The nodes (live first) and the due work no live node serves, for operators during a rolling deploy.
fn print_cluster(cluster: &ClusterView) {
    let ago = |at: i64| humantime::format_duration(Duration::from_secs((cluster.now - at).max(0) as u64 / 1000));
    let live = cluster.live().count();
    println!("nodes:           {live} live, {} dead", cluster.nodes.len() - live);
    let (alive, dead): (Vec<_>, Vec<_>) = cluster.nodes.iter().partition(|n| n.is_live(cluster.now));
    for node in alive.into_iter().chain(dead) {
        let status = match (node.is_live(cluster.now), node.stopped_at) {
            (true, _) => "live".to_owned(),
            (false, Some(at)) => format!("stopped {} ago", ago(at)),
            (false, None) => format!("dead, last seen {} ago", ago(node.last_seen)),
        };
        let serves = node.info.served.keys();
        println!(
            "  {}  {status}  plugd {}  schema {}  serves {}",
            node.info.node_id,
            node.info.plugd_version,
            node.info.schema_version,
            if serves.is_empty() { "nothing".to_owned() } else { serves.join(", ") }
        );
    }
    let unserved = cluster.unserved();
    if unserved.is_empty() {
        println!("due invocations no live node serves: none");
        return;
    }
    println!("due invocations no live node serves (they wait, nothing fails):");
    for group in unserved {
        let key = plugd_core::cluster::key(&group.plugin, &group.version);
        println!("  {key}  {} due, the oldest for {}", group.count, ago(group.oldest_due_at));
    }
}
