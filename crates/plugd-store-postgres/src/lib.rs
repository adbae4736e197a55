/*!
The PostgreSQL store of plugd: several identical `plugd serve` nodes on one database, behind
`plugd serve --db postgres://...`.

- A pool of connections (deadpool, size configurable), TLS through rustls as libpq's `sslmode`
  says (`disable`, `prefer`, `require`, `verify-ca`/`verify-full` with `sslrootcert`).
- Versioned migrations at open, in one transaction under an advisory lock, so nodes starting
  together migrate once; a schema newer than this build is refused, never altered.
- Due times, leases and every other time come from the database's clock (`now()`), never a node's:
  the `now` callers pass is ignored. The rules (when next, what a claim carries) are
  `plugd_core::schedule`'s, as in the SQLite store.
- Claims take a batch with `FOR UPDATE SKIP LOCKED`, so claimers never wait for or share a row;
  every completion is fenced by the claim's attempt. Finish callbacks and retention are claimed the
  same way: safe on N nodes, no leader.
- Writes that make work due are announced to the other nodes with `NOTIFY`, after commit and
  coalesced; nodes `LISTEN` (reconnecting by themselves) and poll at least every second.
- Every operation is bounded by a timeout: a database that is down or restarting makes operations
  fail fast with [`StoreErrorKind::Unavailable`] (the API answers 503), and the pool reconnects.
*/
#![deny(missing_docs)]

mod batch;
mod config;
mod migrations;
mod ops;
mod text;
mod tls;
mod transfer;
mod wake;

use std::collections::HashSet;
use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Object, Pool, RecyclingMethod, Runtime};
use plugd_core::cluster::{ClusterView, NodeInfo, Served};
use plugd_core::store::{
    CallbackReceipt, CancelOutcome, Claim, Completion, Delivery, ExecuteRecord, FinishCallback, HistoryPage,
    HistoryQuery, Millis, NewInvocation, OutboxItem, Store, StoreError, StoreErrorKind, StoreFuture, StoreInfo,
    StoreStats, StoredInvocation, Wake,
};
use plugd_sdk::Callback;

pub use config::{PgUrl, PgUrlError, SslMode};

/// Options of [`PgStore::open`].
#[derive(Debug, Clone)]
pub struct PgOptions {
    /// Connections in the pool.
    pub pool_size: usize,
    /// The longest any operation may take, waiting for a connection included, before it fails as
    /// unavailable.
    pub timeout: Duration,
    /// Whether open migrates an older schema (`true`), or refuses it (`plugd serve --no-migrate`).
    pub migrate: bool,
    /// Migrations after this build's own: how tests make a schema "one release newer".
    #[doc(hidden)]
    pub extra_migrations: &'static [plugd_core::schema::Migration],
}

impl Default for PgOptions {
    fn default() -> PgOptions {
        PgOptions { pool_size: 16, timeout: Duration::from_secs(5), migrate: true, extra_migrations: &[] }
    }
}

/// The PostgreSQL [`Store`].
#[derive(Clone)]
pub struct PgStore {
    pool: Pool,
    url: PgUrl,
    timeout: Duration,
    wakes: Arc<wake::Wakes>,
    /// Inserts, group-committed.
    inserts: batch::Batcher<NewInvocation, ()>,
    /// Completions, group-committed.
    completions: batch::Batcher<Completion, bool>,
    /// The newest schema version this build (with its test migrations) knows.
    known_schema_version: i64,
}

impl std::fmt::Debug for PgStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgStore").field("location", &self.url.location()).finish_non_exhaustive()
    }
}

pub(crate) fn data_error(e: impl std::fmt::Display) -> StoreError {
    StoreError::new(StoreErrorKind::Data, e.to_string())
}

/// Maps a driver error: connection trouble is [`StoreErrorKind::Unavailable`], a duplicate key
/// [`StoreErrorKind::Conflict`].
pub(crate) fn pg_error(e: tokio_postgres::Error) -> StoreError {
    use tokio_postgres::error::SqlState;
    let message = match (e.as_db_error(), std::error::Error::source(&e)) {
        (Some(db), _) => db.message().to_owned(),
        (None, Some(cause)) if !e.to_string().contains(&cause.to_string()) => format!("{e}: {cause}"),
        (None, _) => e.to_string(),
    };
    let kind = match e.code() {
        Some(code) if *code == SqlState::UNIQUE_VIOLATION => StoreErrorKind::Conflict,
        Some(code)
            if code.code().starts_with("08")
                || code.code().starts_with("57P")
                || *code == SqlState::TOO_MANY_CONNECTIONS
                || *code == SqlState::T_R_SERIALIZATION_FAILURE
                || *code == SqlState::T_R_DEADLOCK_DETECTED =>
        {
            StoreErrorKind::Unavailable
        }
        Some(_) => StoreErrorKind::Data,
        // No server error: the connection itself failed or closed.
        None => StoreErrorKind::Unavailable,
    };
    StoreError::new(kind, format!("PostgreSQL: {message}"))
}

/// The pool's connections as `config` says, their statements planned once (generic plans): every
/// statement is prepared once per connection and run with parameters of the same shape, and the
/// claim (a branch per served version) costs far more to plan than to run. Options the URL sets stay.
fn session_config(config: &tokio_postgres::Config) -> tokio_postgres::Config {
    let mut config = config.clone();
    let options = match config.get_options() {
        Some(given) => format!("{given} -c plan_cache_mode=force_generic_plan"),
        None => "-c plan_cache_mode=force_generic_plan".to_owned(),
    };
    config.options(options);
    config
}

/// No connection, whatever the reason: the server is down, restarting, refusing connections to this
/// database for now (`ALLOW_CONNECTIONS false`, too many clients), or the pool waited too long. Any of
/// it may pass, so it is [`StoreErrorKind::Unavailable`] (a 503), never a data error.
fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    let message = match e {
        deadpool_postgres::PoolError::Backend(e) => pg_error(e).message,
        other => format!("PostgreSQL: no connection: {other}"),
    };
    StoreError::new(StoreErrorKind::Unavailable, message)
}

impl PgStore {
    /// Connects to `url`, migrates the schema, and starts the wake-up listener; the error names
    /// what failed (unreachable, authentication, missing database, newer schema), never the password.
    pub async fn open(url: &str, options: PgOptions) -> Result<PgStore, StoreError> {
        let url = PgUrl::parse(url).map_err(|e| StoreError::new(StoreErrorKind::Data, e.to_string()))?;
        Self::open_url(url, options).await
    }

    /// [`PgStore::open`] with a parsed URL.
    pub async fn open_url(url: PgUrl, options: PgOptions) -> Result<PgStore, StoreError> {
        let unavailable = |e: String| StoreError::new(StoreErrorKind::Unavailable, e);
        let tls = tls::connector(&url.ssl).map_err(|e| StoreError::new(StoreErrorKind::Data, e))?;
        let manager_config = ManagerConfig { recycling_method: RecyclingMethod::Fast };
        let config = session_config(&url.config);
        let manager = match tls.clone() {
            Some(tls) => Manager::from_config(config, tls, manager_config),
            None => Manager::from_config(config, tokio_postgres::NoTls, manager_config),
        };
        let pool = Pool::builder(manager)
            .max_size(options.pool_size.max(1))
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(options.timeout))
            .create_timeout(Some(options.timeout))
            .recycle_timeout(Some(options.timeout))
            .build()
            .map_err(|e| unavailable(format!("cannot build the connection pool: {e}")))?;
        // Batches in flight at once per operation (one with the default pool of 16); the rest of the
        // pool serves everything else. New rows go to the same last pages of each index (time-ordered
        // trace ids), so batches written at once mostly wait on each other's page locks, while one
        // batch at a time takes in everything that queued meanwhile: fewer, larger batches cost the
        // database far less per row. Measured here (hello at concurrency 16): 10.2k-10.6k invokes/s
        // at one, 9.3k-10.1k at two, 8.8k-9.5k at three, with a third more database CPU per row at
        // two. A larger `--db-pool-size` writes more batches at once.
        let parallel = (options.pool_size / 16).max(1);
        let bound = Bound { timeout: options.timeout, tls: tls.clone() };
        let (writer, insert_bound) = (pool.clone(), bound.clone());
        let inserts = batch::Batcher::start(BATCH, parallel, move |batch: Vec<NewInvocation>| {
            let (pool, bound) = (writer.clone(), insert_bound.clone());
            async move {
                let exists = || StoreError::new(StoreErrorKind::Conflict, "PostgreSQL: the trace id exists");
                let written = write_batch(&pool, batch, &bound).await;
                written
                    .into_iter()
                    .map(|r| r.and_then(|inserted| if inserted { Ok(()) } else { Err(exists()) }))
                    .collect()
            }
        });
        let writer = pool.clone();
        let completions = batch::Batcher::start(BATCH, parallel, move |batch: Vec<Completion>| {
            let (pool, bound) = (writer.clone(), bound.clone());
            async move { write_batch(&pool, batch, &bound).await }
        });
        let known_schema_version = migrations::LATEST + options.extra_migrations.len() as i64;
        let store = PgStore {
            pool,
            url,
            timeout: options.timeout,
            wakes: wake::Wakes::new(),
            inserts,
            completions,
            known_schema_version,
        };
        let mut conn = store.conn().await.map_err(|e| StoreError::new(e.kind, store.explain(&e.message)))?;
        match migrations::migrate(&mut conn, options.migrate, options.extra_migrations).await.map_err(pg_error)? {
            Ok(()) => {}
            Err(newer) => return Err(StoreError::new(StoreErrorKind::Data, newer)),
        }
        drop(conn);
        // Both references before either task starts: each runs while the store holds the third, and
        // one that started before the other's reference existed would count two and stop at once.
        let (sender, listener) = (store.wakes.clone(), store.wakes.clone());
        tokio::spawn(wake::send(sender, store.pool.clone()));
        tokio::spawn(wake::listen(listener, store.url.clone()));
        Ok(store)
    }

    /// `cannot connect to postgres://host:port/db: why`.
    fn explain(&self, why: &str) -> String {
        format!("cannot connect to {}: {}", self.url.location(), why.trim_start_matches("PostgreSQL: "))
    }

    /// Where the database is, without credentials.
    pub fn location(&self) -> &str {
        self.url.location()
    }

    async fn conn(&self) -> Result<Object, StoreError> {
        self.pool.get().await.map_err(pool_error)
    }

    /// Runs `op` on a pooled connection within the timeout.
    fn run<'a, T, F, Fut>(&'a self, op: F) -> StoreFuture<'a, T>
    where
        T: Send + 'a,
        F: FnOnce(Object) -> Fut + Send + 'a,
        Fut: Future<Output = Result<T, StoreError>> + Send + 'a,
    {
        Box::pin(async move {
            let work = async {
                let conn = self.conn().await?;
                op(conn).await
            };
            match tokio::time::timeout(self.timeout, work).await {
                Ok(result) => result,
                Err(_) => Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("PostgreSQL did not answer within {}", humantime_secs(self.timeout)),
                )),
            }
        })
    }
}

/// Most requests written in one batch.
const BATCH: usize = 512;

/// An operation written in batches (see [`batch`]).
trait Batched: Send + Sync + Sized + 'static {
    /// What two requests of one batch must not share.
    fn key(&self) -> &str;
    /// Writes `batch` (keys distinct) in one transaction: whether each took effect.
    /// On `Err` (or when dropped unfinished) the transaction may be open: the connection is discarded.
    fn write<'a>(c: &'a Object, batch: &'a [Self]) -> StoreFuture<'a, Vec<bool>>;
}

impl Batched for NewInvocation {
    fn key(&self) -> &str {
        &self.invocation.trace_id
    }
    fn write<'a>(c: &'a Object, batch: &'a [Self]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(ops::insert_batch(c, batch))
    }
}

impl Batched for Completion {
    fn key(&self) -> &str {
        &self.trace_id
    }
    fn write<'a>(c: &'a Object, batch: &'a [Self]) -> StoreFuture<'a, Vec<bool>> {
        Box::pin(ops::complete_batch(c, batch))
    }
}

/// Writes `items`, in rounds of distinct keys (a second request of one key goes in the next round,
/// after the first committed); when a round fails for a reason other than the database being away
/// (one request's bad data), each of its requests is written alone, so it fails alone.
async fn write_batch<T: Batched>(pool: &Pool, items: Vec<T>, bound: &Bound) -> Vec<Result<bool, StoreError>> {
    let mut results: Vec<Option<Result<bool, StoreError>>> = (0..items.len()).map(|_| None).collect();
    let mut pending: Vec<(usize, T)> = items.into_iter().enumerate().collect();
    while !pending.is_empty() {
        let mut seen = HashSet::new();
        let (round, later): (Vec<_>, Vec<_>) = pending.into_iter().partition(|(_, t)| seen.insert(t.key().to_owned()));
        pending = later;
        let (index, round): (Vec<usize>, Vec<T>) = round.into_iter().unzip();
        match write_once(pool, &round, bound).await {
            Ok(flags) => index.iter().zip(flags).for_each(|(&i, f)| results[i] = Some(Ok(f))),
            Err(e) if round.len() > 1 && e.kind != StoreErrorKind::Unavailable => {
                for (&i, item) in index.iter().zip(&round) {
                    let alone = write_once(pool, std::slice::from_ref(item), bound).await;
                    results[i] = Some(alone.map(|flags| flags.first().copied().unwrap_or(false)));
                }
            }
            Err(e) => index.iter().for_each(|&i| results[i] = Some(Err(e.clone()))),
        }
    }
    let lost = || StoreError::new(StoreErrorKind::Data, "a batch lost a result");
    results.into_iter().map(|r| r.unwrap_or_else(|| Err(lost()))).collect()
}

/// How long a batch may take, and how one that took longer is stopped.
#[derive(Clone)]
struct Bound {
    timeout: Duration,
    /// How the pool connects: a cancel request connects the same way.
    tls: Option<tokio_postgres_rustls::MakeRustlsConnect>,
}

impl Bound {
    /// Asks the server to cancel what the connection of `token` runs; a failed request is only logged
    /// (the batch's outcome then stays unknown, which the caller is told).
    async fn cancel(&self, token: &tokio_postgres::CancelToken) {
        let sent = match &self.tls {
            Some(tls) => token.cancel_query(tls.clone()).await,
            None => token.cancel_query(tokio_postgres::NoTls).await,
        };
        if let Err(e) = sent {
            tracing::warn!("cannot cancel a batch that outlived its timeout: {e}");
        }
    }
}

/// Writes one batch within the bound. The batch goes out whole, its COMMIT included, so a timeout
/// alone cannot say whether it committed (and dropping the connection would not stop a COMMIT
/// already on its way): the batch is cancelled, and its own answer heard. Committed: as usual.
/// Refused by the server (the cancel): rolled back, nothing recorded ([`StoreErrorKind::Unavailable`]).
/// No answer even then: [`StoreErrorKind::OutcomeUnknown`].
async fn write_once<T: Batched>(pool: &Pool, batch: &[T], bound: &Bound) -> Result<Vec<bool>, StoreError> {
    let mut conn = Unfinished(Some(pool.get().await.map_err(pool_error)?));
    let client = conn.0.as_ref().expect("the connection is held");
    let cancel = client.cancel_token();
    let mut write = T::write(client, batch);
    let late = || format!("PostgreSQL did not answer within {}", humantime_secs(bound.timeout));
    let written = match tokio::time::timeout(bound.timeout, &mut write).await {
        Ok(written) => written,
        Err(_) => {
            bound.cancel(&cancel).await;
            match tokio::time::timeout(bound.timeout, &mut write).await {
                Ok(Ok(flags)) => Ok(flags),
                Ok(Err(e)) if e.kind != StoreErrorKind::Unavailable => Err(StoreError::new(
                    StoreErrorKind::Unavailable,
                    format!("{}; the write was cancelled and rolled back", late()),
                )),
                Ok(Err(_)) | Err(_) => Err(StoreError::new(
                    StoreErrorKind::OutcomeUnknown,
                    format!("{}, nor after a cancel: whether the write committed is unknown", late()),
                )),
            }
        }
    };
    drop(write);
    if written.is_ok() {
        // Committed (or rolled back): the connection goes back to the pool.
        conn.0.take();
    }
    written
}

/// A connection whose transaction (begun pipelined with its first statement, not by a
/// `tokio_postgres::Transaction` that rolls back when dropped) may still be open: unless taken back,
/// it is closed, never returned to the pool, so the server rolls the transaction back.
struct Unfinished(Option<Object>);

impl Drop for Unfinished {
    fn drop(&mut self) {
        if let Some(conn) = self.0.take() {
            drop(Object::take(conn));
        }
    }
}

fn humantime_secs(d: Duration) -> String {
    format!("{:.1}s", d.as_secs_f64())
}

impl PgStore {
    /// After an insert whose outcome is unknown: `Ok` if the invocation is there after all, else the
    /// error, naming the trace id to look up (the write may still land while the database recovers).
    async fn recorded_after_all(&self, trace_id: &str, e: StoreError) -> Result<(), StoreError> {
        match self.get(trace_id).await {
            Ok(Some(_)) => Ok(()),
            Ok(None) | Err(_) => Err(StoreError::new(
                StoreErrorKind::OutcomeUnknown,
                format!("{}; look up trace id {trace_id} before retrying", e.message),
            )),
        }
    }
}

impl Store for PgStore {
    fn info(&self) -> StoreFuture<'_, StoreInfo> {
        self.run(move |c| async move {
            let schema_version = migrations::version(&c).await.map_err(pg_error)?;
            let (location, known_schema_version) = (self.url.location().to_owned(), self.known_schema_version);
            Ok(StoreInfo { backend: "postgres", location, schema_version, known_schema_version })
        })
    }

    fn secret(&self, generate: Vec<u8>) -> StoreFuture<'_, Vec<u8>> {
        self.run(move |c| async move { ops::secret(&c, generate).await })
    }

    fn insert(&self, new: NewInvocation) -> StoreFuture<'_, ()> {
        let waits = !new.invocation.state.is_final();
        Box::pin(async move {
            let trace_id = new.invocation.trace_id.clone();
            match self.inserts.call(new).await {
                Err(e) if e.kind == StoreErrorKind::OutcomeUnknown => self.recorded_after_all(&trace_id, e).await?,
                written => written?,
            }
            if waits {
                self.wakes.tell_others(Wake::Invocations);
            }
            Ok(())
        })
    }

    fn get(&self, trace_id: &str) -> StoreFuture<'_, Option<StoredInvocation>> {
        let trace_id = trace_id.to_owned();
        self.run(move |c| async move { ops::get(&c, &trace_id).await })
    }

    fn logs(&self, trace_id: &str) -> StoreFuture<'_, Option<String>> {
        let trace_id = trace_id.to_owned();
        self.run(move |c| async move { ops::logs(&c, &trace_id).await })
    }

    fn reports(&self, trace_id: &str) -> StoreFuture<'_, Option<Vec<serde_json::Value>>> {
        let trace_id = trace_id.to_owned();
        self.run(move |c| async move { ops::reports(&c, &trace_id).await })
    }

    fn report_file(&self, trace_id: &str, path: &str) -> StoreFuture<'_, Option<Vec<u8>>> {
        let (trace_id, path) = (trace_id.to_owned(), path.to_owned());
        self.run(move |c| async move { ops::report_file(&c, &trace_id, &path).await })
    }

    fn claim(
        &self,
        _now: Millis,
        limit: usize,
        owner: &str,
        lease: Duration,
        served: &Served,
    ) -> StoreFuture<'_, Vec<Claim>> {
        let (owner, served) = (owner.to_owned(), served.clone());
        self.run(move |c| async move { ops::claim(&c, limit, &owner, lease, &served).await })
    }

    fn renew(&self, trace_id: &str, attempt: i64, _now: Millis, lease: Duration) -> StoreFuture<'_, bool> {
        let trace_id = trace_id.to_owned();
        self.run(move |c| async move { ops::renew(&c, &trace_id, attempt, lease).await })
    }

    fn complete(&self, completion: Completion) -> StoreFuture<'_, bool> {
        let outbox = completion.finish_callback.is_some();
        Box::pin(async move {
            let done = self.completions.call(completion).await?;
            if done && outbox {
                self.wakes.tell_others(Wake::Outbox);
            }
            Ok(done)
        })
    }

    fn release(&self, trace_id: &str, attempt: i64, _now: Millis) -> StoreFuture<'_, ()> {
        let trace_id = trace_id.to_owned();
        self.run(move |c| async move {
            ops::release(&c, &trace_id, attempt).await?;
            self.wakes.tell_others(Wake::Invocations);
            Ok(())
        })
    }

    fn next_due(&self, _now: Millis, served: &Served) -> StoreFuture<'_, Option<Duration>> {
        let served = served.clone();
        self.run(move |c| async move { ops::next_due(&c, &served).await })
    }

    fn heartbeat(&self, node: &NodeInfo, _now: Millis) -> StoreFuture<'_, ()> {
        let node = node.clone();
        self.run(move |mut c| async move { ops::heartbeat(&mut c, &node).await })
    }

    fn leave(&self, node_id: &str, _now: Millis) -> StoreFuture<'_, ()> {
        let node_id = node_id.to_owned();
        self.run(move |c| async move { ops::leave(&c, &node_id).await })
    }

    fn cluster(&self, _now: Millis) -> StoreFuture<'_, ClusterView> {
        self.run(move |c| async move { ops::cluster(&c).await })
    }

    fn add_callback(&self, trace_id: &str, callback: Callback, _now: Millis) -> StoreFuture<'_, CallbackReceipt> {
        let trace_id = trace_id.to_owned();
        self.run(move |mut c| async move {
            let (receipt, due) = ops::add_callback(&mut c, &trace_id, &callback).await?;
            if due {
                self.wakes.tell_others(Wake::Invocations);
            }
            Ok(receipt)
        })
    }

    fn cancel(
        &self,
        trace_id: &str,
        err: &str,
        _now: Millis,
        finish_callback: Option<FinishCallback>,
    ) -> StoreFuture<'_, CancelOutcome> {
        let (trace_id, err) = (trace_id.to_owned(), err.to_owned());
        self.run(move |mut c| async move {
            let outcome = ops::cancel(&mut c, &trace_id, &err, finish_callback.as_ref()).await?;
            if outcome == CancelOutcome::Cancelled && finish_callback.is_some() {
                self.wakes.tell_others(Wake::Outbox);
            }
            Ok(outcome)
        })
    }

    fn claim_outbox(&self, _now: Millis, limit: usize, lease: Duration) -> StoreFuture<'_, Vec<OutboxItem>> {
        self.run(move |c| async move { ops::claim_outbox(&c, limit, lease).await })
    }

    fn finish_delivery(&self, id: i64, delivery: Delivery, _now: Millis) -> StoreFuture<'_, ()> {
        self.run(move |c| async move { ops::finish_delivery(&c, id, &delivery).await })
    }

    fn next_outbox_due(&self, _now: Millis) -> StoreFuture<'_, Option<Duration>> {
        self.run(move |c| async move { ops::next_outbox_due(&c).await })
    }

    fn purge_finished(&self, _now: Millis, keep: Duration, limit: usize) -> StoreFuture<'_, Vec<String>> {
        self.run(move |c| async move { ops::purge_finished(&c, keep, limit).await })
    }

    fn stats(&self, _now: Millis) -> StoreFuture<'_, StoreStats> {
        self.run(move |c| async move { ops::stats(&c).await })
    }

    fn history(&self, query: HistoryQuery) -> StoreFuture<'_, HistoryPage> {
        self.run(move |c| async move { ops::history(&c, &query).await })
    }

    fn executes(&self, trace_id: &str) -> StoreFuture<'_, Option<Vec<ExecuteRecord>>> {
        let trace_id = trace_id.to_owned();
        self.run(move |c| async move { ops::executes(&c, &trace_id).await })
    }

    fn check_writable(&self) -> StoreFuture<'_, ()> {
        self.run(move |c| async move { ops::write_probe(&c).await })
    }

    fn woken(&self, what: Wake) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            self.wakes.woken(what).await;
            Ok(())
        })
    }

    /// A notification from another node may be lost (a reconnect): look at least every second.
    fn max_idle(&self) -> Duration {
        Duration::from_secs(1)
    }
}
