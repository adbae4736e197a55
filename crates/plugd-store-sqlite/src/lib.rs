/*!
The embedded SQLite store of plugd, the default behind `plugd serve --db sqlite://./plugd.db`.

- One dedicated writer thread owns the only writable connection. Write operations queue on a
  channel; the writer drains what is queued into one `BEGIN IMMEDIATE` transaction (group commit), runs
  each operation under its own savepoint so one failure rolls back alone, commits, and only then
  answers each caller. A caller that got `Ok` has its write on disk (WAL).
- A small pool of read-only connections serves reads, which never wait for the writer (WAL).
- The schema is created and migrated on open, with versioned migrations (`PRAGMA user_version`).
- Open refuses a damaged database (`PRAGMA quick_check`, with the way to recover in the error) and a
  directory it cannot write in; [`Store::check_writable`] probes writes for readiness checks.

`synchronous=NORMAL` (the default) survives any process crash, `kill -9` included: a commit is in the
WAL before the caller hears of it. `synchronous=FULL` also survives power loss; group commit keeps it cheap.
*/
#![deny(missing_docs)]

mod health;
mod migrations;
mod nodes;
mod ops;
mod pool;
mod transfer;
mod writer;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugd_core::cluster::{ClusterView, NodeInfo, Served};
use plugd_core::store::{
    CallbackReceipt, CancelOutcome, Claim, Completion, Delivery, ExecuteRecord, FinishCallback, HistoryPage,
    HistoryQuery, Millis, NewInvocation, OutboxItem, Store, StoreError, StoreErrorKind, StoreFuture, StoreInfo,
    StoreStats, StoredInvocation,
};
use plugd_sdk::Callback;

use pool::ReaderPool;
use writer::Writer;

/// How hard commits are pushed to disk.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Synchronous {
    /// Survives process crashes; the last commits may be lost on power loss.
    #[default]
    Normal,
    /// Survives power loss too.
    Full,
}

/// Options of [`SqliteStore::open`].
#[derive(Debug, Clone)]
pub struct SqliteOptions {
    /// Durability level.
    pub synchronous: Synchronous,
    /// Read-only connections.
    pub readers: usize,
    /// Most operations committed in one transaction.
    pub max_batch: usize,
    /// Whether open migrates an older schema (`true`), or refuses it (`plugd serve --no-migrate`).
    pub migrate: bool,
    /// Migrations after this build's own: how tests make a schema "one release newer".
    #[doc(hidden)]
    pub extra_migrations: &'static [plugd_core::schema::Migration],
}

impl Default for SqliteOptions {
    fn default() -> SqliteOptions {
        SqliteOptions {
            synchronous: Synchronous::Normal,
            readers: 4,
            max_batch: 512,
            migrate: true,
            extra_migrations: &[],
        }
    }
}

/// How long the result of a write probe answers [`Store::check_writable`].
const PROBE_REUSE: Duration = Duration::from_secs(1);

/// The last write probe: when, and how it went.
type LastProbe = Option<(Instant, Result<(), StoreError>)>;

/// The SQLite [`Store`].
#[derive(Clone)]
pub struct SqliteStore {
    writer: Arc<Writer>,
    readers: Arc<ReaderPool>,
    path: PathBuf,
    last_probe: Arc<tokio::sync::Mutex<LastProbe>>,
    /// The newest schema version this build (with its test migrations) knows.
    known_schema_version: i64,
}

impl std::fmt::Debug for SqliteStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SqliteStore").field("path", &self.path).finish_non_exhaustive()
    }
}

pub(crate) fn data_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Data, e.to_string())
}

pub(crate) fn sql_error(e: rusqlite::Error) -> StoreError {
    use rusqlite::ErrorCode::{DatabaseBusy, DatabaseLocked};
    match e.sqlite_error_code() {
        Some(DatabaseBusy | DatabaseLocked) => StoreError::new(StoreErrorKind::Unavailable, e.to_string()),
        Some(rusqlite::ErrorCode::ConstraintViolation) => StoreError::new(StoreErrorKind::Conflict, e.to_string()),
        _ => data_error(e),
    }
}

/// A database URL that names no SQLite file: `sqlite://` (or `sqlite:`) with nothing after it, or nothing at all.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("invalid database URL {url:?}: expected sqlite://PATH")]
pub struct SqliteUrlError {
    /// The URL as given.
    pub url: String,
}

impl SqliteStore {
    /// Opens (creating and migrating if needed) the database at `path`, after checking that its
    /// directory takes writes and that `PRAGMA quick_check` finds it sound.
    pub fn open(path: &Path, options: SqliteOptions) -> Result<SqliteStore, StoreError> {
        let writer = Writer::open(path, &options)?;
        let readers = ReaderPool::new(path, options.readers.max(1));
        Ok(SqliteStore {
            writer: Arc::new(writer),
            readers: Arc::new(readers),
            path: path.to_owned(),
            last_probe: Arc::default(),
            known_schema_version: migrations::LATEST + options.extra_migrations.len() as i64,
        })
    }

    /// Parses `sqlite://PATH` (or a bare path) into a path.
    pub fn path_from_url(url: &str) -> Result<PathBuf, SqliteUrlError> {
        let path = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:")).unwrap_or(url);
        if path.is_empty() {
            return Err(SqliteUrlError { url: url.to_owned() });
        }
        Ok(PathBuf::from(path))
    }

    /// The database file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Writes in the database's directory, then commits a change to one row.
    async fn probe_writes(&self) -> Result<(), StoreError> {
        let path = self.path.clone();
        tokio::task::spawn_blocking(move || health::check_directory(&path))
            .await
            .map_err(|e| StoreError::new(StoreErrorKind::Data, format!("the write probe failed: {e}")))??;
        self.writer.run(health::write_probe).await.map_err(|e| {
            let message = format!("cannot write the database {}: {}", self.path.display(), e.message);
            StoreError::new(e.kind, message)
        })
    }
}

impl Store for SqliteStore {
    fn info(&self) -> StoreFuture<'_, StoreInfo> {
        let location = self.path.display().to_string();
        Box::pin(async move {
            let schema_version = self.readers.run(ops::schema_version).await?;
            let known_schema_version = self.known_schema_version;
            Ok(StoreInfo { backend: "sqlite", location, schema_version, known_schema_version })
        })
    }

    fn secret(&self, generate: Vec<u8>) -> StoreFuture<'_, Vec<u8>> {
        Box::pin(self.writer.run(move |c| ops::secret(c, generate)))
    }

    fn insert(&self, new: NewInvocation) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.run(move |c| ops::insert(c, &new)))
    }

    fn get(&self, trace_id: &str) -> StoreFuture<'_, Option<StoredInvocation>> {
        let trace_id = trace_id.to_owned();
        Box::pin(self.readers.run(move |c| ops::get(c, &trace_id)))
    }

    fn logs(&self, trace_id: &str) -> StoreFuture<'_, Option<String>> {
        let trace_id = trace_id.to_owned();
        Box::pin(self.readers.run(move |c| ops::logs(c, &trace_id)))
    }

    fn reports(&self, trace_id: &str) -> StoreFuture<'_, Option<Vec<serde_json::Value>>> {
        let trace_id = trace_id.to_owned();
        Box::pin(self.readers.run(move |c| ops::reports(c, &trace_id)))
    }

    fn report_file(&self, trace_id: &str, path: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let (trace_id, path) = (trace_id.to_owned(), path.to_owned());
        Box::pin(self.readers.run(move |c| ops::report_file(c, &trace_id, &path)))
    }

    fn claim(
        &self,
        now: Millis,
        limit: usize,
        owner: &str,
        lease: Duration,
        served: &Served,
    ) -> StoreFuture<'_, Vec<Claim>> {
        let (owner, served) = (owner.to_owned(), nodes::served_keys(served));
        Box::pin(self.writer.run(move |c| ops::claim(c, now, limit, &owner, lease, &served)))
    }

    fn renew(&self, trace_id: &str, attempt: i64, now: Millis, lease: Duration) -> StoreFuture<'_, bool> {
        let trace_id = trace_id.to_owned();
        Box::pin(self.writer.run(move |c| ops::renew(c, &trace_id, attempt, now, lease)))
    }

    fn complete(&self, completion: Completion) -> StoreFuture<'_, bool> {
        Box::pin(self.writer.run(move |c| ops::complete(c, &completion)))
    }

    fn release(&self, trace_id: &str, attempt: i64, now: Millis) -> StoreFuture<'_, ()> {
        let trace_id = trace_id.to_owned();
        Box::pin(self.writer.run(move |c| ops::release(c, &trace_id, attempt, now)))
    }

    fn next_due(&self, now: Millis, served: &Served) -> StoreFuture<'_, Option<Duration>> {
        let served = nodes::served_keys(served);
        Box::pin(self.readers.run(move |c| ops::next_due(c, now, &served)))
    }

    fn heartbeat(&self, node: &NodeInfo, now: Millis) -> StoreFuture<'_, ()> {
        let node = node.clone();
        Box::pin(self.writer.run(move |c| nodes::heartbeat(c, &node, now)))
    }

    fn leave(&self, node_id: &str, now: Millis) -> StoreFuture<'_, ()> {
        let node_id = node_id.to_owned();
        Box::pin(self.writer.run(move |c| nodes::leave(c, &node_id, now)))
    }

    fn cluster(&self, now: Millis) -> StoreFuture<'_, ClusterView> {
        Box::pin(self.readers.run(move |c| nodes::cluster(c, now)))
    }

    fn add_callback(&self, trace_id: &str, callback: Callback, now: Millis) -> StoreFuture<'_, CallbackReceipt> {
        let trace_id = trace_id.to_owned();
        Box::pin(self.writer.run(move |c| ops::add_callback(c, &trace_id, &callback, now)))
    }

    fn cancel(
        &self,
        trace_id: &str,
        err: &str,
        now: Millis,
        finish_callback: Option<FinishCallback>,
    ) -> StoreFuture<'_, CancelOutcome> {
        let (trace_id, err) = (trace_id.to_owned(), err.to_owned());
        Box::pin(self.writer.run(move |c| ops::cancel(c, &trace_id, &err, now, finish_callback.as_ref())))
    }

    fn claim_outbox(&self, now: Millis, limit: usize, lease: Duration) -> StoreFuture<'_, Vec<OutboxItem>> {
        Box::pin(self.writer.run(move |c| ops::claim_outbox(c, now, limit, lease)))
    }

    fn finish_delivery(&self, id: i64, delivery: Delivery, now: Millis) -> StoreFuture<'_, ()> {
        Box::pin(self.writer.run(move |c| ops::finish_delivery(c, id, &delivery, now)))
    }

    fn next_outbox_due(&self, now: Millis) -> StoreFuture<'_, Option<Duration>> {
        Box::pin(self.readers.run(move |c| ops::next_outbox_due(c, now)))
    }

    fn purge_finished(&self, now: Millis, keep: Duration, limit: usize) -> StoreFuture<'_, Vec<String>> {
        Box::pin(self.writer.run(move |c| ops::purge_finished(c, now, keep, limit)))
    }

    fn stats(&self, now: Millis) -> StoreFuture<'_, StoreStats> {
        Box::pin(self.readers.run(move |c| ops::stats(c, now)))
    }

    fn history(&self, query: HistoryQuery) -> StoreFuture<'_, HistoryPage> {
        Box::pin(self.readers.run(move |c| ops::history(c, &query)))
    }

    fn executes(&self, trace_id: &str) -> StoreFuture<'_, Option<Vec<ExecuteRecord>>> {
        let trace_id = trace_id.to_owned();
        Box::pin(self.readers.run(move |c| ops::executes(c, &trace_id)))
    }

    /// Probes at most once a second; callers in between share the last result.
    fn check_writable(&self) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            let mut last = self.last_probe.lock().await;
            if let Some((at, result)) = last.as_ref() {
                if at.elapsed() < PROBE_REUSE {
                    return result.clone();
                }
            }
            let result = self.probe_writes().await;
            *last = Some((Instant::now(), result.clone()));
            result
        })
    }
}
