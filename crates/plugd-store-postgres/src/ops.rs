//! The SQL of every store operation. Times come from the database (`plugd_now_ms()`); the rules
//! (when next, what a claim carries) from `plugd_core::schedule`.

use std::collections::{HashMap, HashSet};
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Object};
use plugd_core::schedule::{self, ClaimDecision, Deadlines, Plan};
use plugd_core::store::{
    CallbackReceipt, CancelOutcome, Claim, Completion, Delivery, ExecuteRecord, FinishCallback, HistoryPage,
    HistoryQuery, InvocationSummary, Millis, NewInvocation, OutboxItem, ReportFile, StoreError, StoreStats,
    StoredInvocation,
};
use plugd_core::Invocation;
use plugd_sdk::{Callback, State};
use serde_json::{Map, Value};
use tokio_postgres::types::ToSql;
use tokio_postgres::Row;

use crate::{data_error, pg_error};

type Res<T> = Result<T, StoreError>;

/// Logs of one invocation are cut at this size.
const MAX_LOG_CHARS: i32 = 64 * 1024;

pub(crate) const COLUMNS: &str = "trace_id, plugin, version, state, invoke_count, inputs, context, storage, outputs, err, \
                       created_at, updated_at, finish_at, next_run_at, lease_owner, lease_expires_at, attempt, deadline_at, created_by, \
                       callback_deadline_at, callback_timeout_ms";

type PgFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T, tokio_postgres::Error>> + Send + 'a>>;

/// Statements prepared once per connection (deadpool's cache): a query is one round trip, not two
/// (parse, then bind and execute).
pub(crate) trait Cached {
    fn cached_query<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Vec<Row>>;
    fn cached_query_one<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Row>;
    fn cached_query_opt<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Option<Row>>;
    fn cached_execute<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, u64>;
}

impl<C: GenericClient> Cached for C {
    fn cached_query<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Vec<Row>> {
        Box::pin(async move { self.query(&self.prepare_cached(sql).await?, params).await })
    }
    fn cached_query_one<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Row> {
        Box::pin(async move { self.query_one(&self.prepare_cached(sql).await?, params).await })
    }
    fn cached_query_opt<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, Option<Row>> {
        Box::pin(async move { self.query_opt(&self.prepare_cached(sql).await?, params).await })
    }
    fn cached_execute<'a>(&'a self, sql: &'a str, params: &'a [&'a (dyn ToSql + Sync)]) -> PgFuture<'a, u64> {
        Box::pin(async move { self.execute(&self.prepare_cached(sql).await?, params).await })
    }
}

pub(crate) fn millis(d: Duration) -> i64 {
    // Far beyond any real wait, and far from overflowing when added to a time.
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX).min(i64::MAX / 4)
}

fn json_object(text: &str, column: &str) -> Res<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(data_error(format!("column {column} does not hold a JSON object"))),
    }
}

fn state_of(code: i16) -> Res<State> {
    u8::try_from(code).ok().and_then(State::from_code).ok_or_else(|| data_error(format!("unknown state code {code}")))
}

pub(crate) fn read_row(row: &Row) -> Res<StoredInvocation> {
    let get_text = |i: usize| -> Res<String> { row.try_get(i).map_err(pg_error) };
    Ok(StoredInvocation {
        invocation: Invocation {
            trace_id: get_text(0)?,
            plugin: get_text(1)?,
            version: get_text(2)?,
            state: state_of(row.try_get(3).map_err(pg_error)?)?,
            invoke_count: u32::try_from(row.try_get::<_, i64>(4).map_err(pg_error)?).map_err(data_error)?,
            inputs: serde_json::from_str(&get_text(5)?).map_err(data_error)?,
            context: serde_json::from_str(&get_text(6)?).map_err(data_error)?,
            storage: json_object(&get_text(7)?, "storage")?,
            outputs: json_object(&get_text(8)?, "outputs")?,
            err: row.try_get(9).map_err(pg_error)?,
            reports: Vec::new(),
        },
        created_at: row.try_get(10).map_err(pg_error)?,
        updated_at: row.try_get(11).map_err(pg_error)?,
        finish_at: row.try_get(12).map_err(pg_error)?,
        next_run_at: row.try_get(13).map_err(pg_error)?,
        lease_owner: row.try_get(14).map_err(pg_error)?,
        lease_expires_at: row.try_get(15).map_err(pg_error)?,
        attempt: row.try_get(16).map_err(pg_error)?,
        deadline_at: row.try_get(17).map_err(pg_error)?,
        created_by: row.try_get(18).map_err(pg_error)?,
        callback_deadline_at: row.try_get(19).map_err(pg_error)?,
        callback_timeout: row
            .try_get::<_, Option<i64>>(20)
            .map_err(pg_error)?
            .map(|ms| Duration::from_millis(ms.max(0) as u64)),
    })
}

pub(crate) fn object_text(map: &Map<String, Value>) -> Res<String> {
    serde_json::to_string(map).map_err(data_error)
}

fn timeout_ms(plan: &Plan) -> Option<i64> {
    plan.callback_timeout.map(millis)
}

pub(crate) async fn secret(c: &Object, generate: Vec<u8>) -> Res<Vec<u8>> {
    // Nodes starting together: the first insert wins, the others wait for it and read its secret.
    c.cached_execute(
        "INSERT INTO settings (key, value) VALUES ('callback_secret', $1) ON CONFLICT DO NOTHING",
        &[&generate],
    )
    .await
    .map_err(pg_error)?;
    let row =
        c.cached_query_one("SELECT value FROM settings WHERE key = 'callback_secret'", &[]).await.map_err(pg_error)?;
    Ok(row.get(0))
}

async fn append_reports(c: &impl GenericClient, trace_id: &str, reports: &[Value], files: &[ReportFile]) -> Res<()> {
    for report in reports {
        c.cached_execute(
            "INSERT INTO reports (trace_id, seq, report)
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM reports WHERE trace_id = $1), $2)",
            &[&trace_id, &report.to_string()],
        )
        .await
        .map_err(pg_error)?;
    }
    for file in files {
        c.cached_execute(
            "INSERT INTO report_files (trace_id, path, content) VALUES ($1, $2, $3)
             ON CONFLICT (trace_id, path) DO UPDATE SET content = excluded.content",
            &[&trace_id, &file.path, &file.content],
        )
        .await
        .map_err(pg_error)?;
    }
    Ok(())
}

async fn enqueue(c: &impl GenericClient, trace_id: &str, callback: &FinishCallback) -> Res<()> {
    c.cached_execute(
        "INSERT INTO outbox (trace_id, url, body, next_attempt_at, created_at)
         VALUES ($1, $2, $3, plugd_now_ms(), plugd_now_ms())",
        &[&trace_id, &callback.url, &callback.body],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn executes(c: &Object, trace_id: &str) -> Res<Option<Vec<ExecuteRecord>>> {
    if !exists(c, trace_id).await? {
        return Ok(None);
    }
    let rows = c
        .cached_query(
            "SELECT trigger, invoke_count, started_at, duration_us, state, err FROM executes
             WHERE trace_id = $1 ORDER BY seq",
            &[&trace_id],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            Ok(ExecuteRecord {
                trigger: r.get(0),
                invoke_count: u32::try_from(r.get::<_, i64>(1)).map_err(data_error)?,
                started_at: r.get(2),
                duration: Duration::from_micros(u64::try_from(r.get::<_, i64>(3)).unwrap_or(0)),
                state: state_of(r.get(4))?,
                err: r.get(5),
            })
        })
        .collect::<Res<Vec<_>>>()
        .map(Some)
}

pub(crate) async fn history(c: &Object, q: &HistoryQuery) -> Res<HistoryPage> {
    // Each filter is `$n IS NULL OR column = $n`: one prepared statement serves every combination.
    let filter = "($1::TEXT IS NULL OR plugin = $1) AND ($2::TEXT IS NULL OR version = $2)
                  AND ($3::SMALLINT IS NULL OR state = $3)
                  AND ($4::TEXT IS NULL OR created_by IS NULL OR created_by = $4)";
    let state = q.state.map(|s| i16::from(s.code()));
    let total: i64 = c
        .cached_query_one(
            &format!("SELECT COUNT(*) FROM invocations WHERE {filter}"),
            &[&q.plugin, &q.version, &state, &q.created_by],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let rows = c
        .cached_query(
            &format!(
                "SELECT trace_id, plugin, version, state, invoke_count, err, created_at, finish_at FROM invocations
                 WHERE {filter} ORDER BY created_at DESC, trace_id DESC LIMIT $5 OFFSET $6"
            ),
            &[&q.plugin, &q.version, &state, &q.created_by, &limit, &offset],
        )
        .await
        .map_err(pg_error)?;
    let items = rows
        .iter()
        .map(|r| {
            Ok(InvocationSummary {
                trace_id: r.get(0),
                plugin: r.get(1),
                version: r.get(2),
                state: state_of(r.get(3))?,
                invoke_count: u32::try_from(r.get::<_, i64>(4)).map_err(data_error)?,
                err: r.get(5),
                created_at: r.get(6),
                finish_at: r.get(7),
            })
        })
        .collect::<Res<Vec<_>>>()?;
    Ok(HistoryPage { items, total: total.max(0) as u64 })
}

/// Serialises the writes of one trace id that may find no invocation row to lock (an insert, a
/// callback that arrives before it), and returns the database's now.
async fn lock_trace(c: &impl GenericClient, trace_id: &str) -> Res<Millis> {
    let row = c
        .cached_query_one(
            "SELECT plugd_now_ms() FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))) AS locked",
            &[&trace_id],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

/// Inserts a batch of new invocations (trace ids distinct) in one transaction: `Err` for the batch as
/// a whole, otherwise whether each was inserted (`false`: its trace id exists).
///
/// Inserts in state CALLBACK take the advisory lock of their trace id (in one order, so batches never
/// deadlock) before looking for callbacks that came first, as [`add_callback`] takes it before
/// looking for the invocation: an early callback is never missed.
pub(crate) async fn insert_batch(c: &Object, batch: &[NewInvocation]) -> Res<Vec<bool>> {
    let tx = c;
    let locked: Vec<&str> = batch
        .iter()
        .filter(|n| n.invocation.state == State::Callback)
        .map(|n| n.invocation.trace_id.as_str())
        .collect();
    let first = tx
        .prepare_cached(
            "SELECT plugd_now_ms(), (SELECT COUNT(pg_advisory_xact_lock(k)) FROM (
                 SELECT DISTINCT hashtextextended(id, 0) AS k FROM unnest($1::TEXT[]) AS id ORDER BY k) AS keys)",
        )
        .await
        .map_err(pg_error)?;
    // BEGIN goes with the first statement: one round trip (sent in this order on the connection).
    let params: [&(dyn ToSql + Sync); 1] = [&locked];
    let (begun, row) = tokio::join!(tx.batch_execute("BEGIN"), tx.query_one(&first, &params));
    begun.map_err(pg_error)?;
    let now: Millis = row.map_err(pg_error)?.get(0);
    // A statement of its own: its snapshot is taken once the locks are held.
    let waiting: HashSet<String> = if locked.is_empty() {
        HashSet::new()
    } else {
        tx.cached_query(
            "SELECT DISTINCT trace_id FROM callbacks WHERE trace_id = ANY($1) AND consumed_at IS NULL",
            &[&locked],
        )
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let n = batch.len();
    let mut a = InsertArrays::with_capacity(n);
    for new in batch {
        let inv = &new.invocation;
        let deadline_at = schedule::deadline_at(now, new.deadline);
        let waits = waiting.contains(&inv.trace_id);
        let plan = schedule::plan(inv.state, new.poll_after, new.callback_timeout, deadline_at, waits, now);
        let micros = i64::try_from(new.duration.as_micros()).unwrap_or(i64::MAX);
        a.trace_id.push(inv.trace_id.as_str());
        a.plugin.push(inv.plugin.as_str());
        a.version.push(inv.version.as_str());
        a.state.push(i16::from(inv.state.code()));
        a.invoke_count.push(i64::from(inv.invoke_count));
        a.inputs.push(inv.inputs.to_string());
        a.context.push(inv.context.to_string());
        a.storage.push(object_text(&inv.storage)?);
        a.outputs.push(object_text(&inv.outputs)?);
        a.err.push(inv.err.as_deref());
        a.finish_at.push(plan.finish_at);
        a.next_run_at.push(plan.next_run_at);
        a.deadline_at.push(deadline_at);
        a.created_by.push(new.created_by.as_deref());
        a.callback_deadline_at.push(plan.callback_deadline_at);
        a.callback_timeout_ms.push(timeout_ms(&plan));
        a.logs.push(new.logs.as_str());
        a.started_at.push(now.saturating_sub(micros / 1000));
        a.duration_us.push(micros);
    }
    let insert = tx
        .prepare_cached(
            &format!(
                "WITH new AS (
                     SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::SMALLINT[], $5::BIGINT[], $6::TEXT[],
                                          $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::BIGINT[], $12::BIGINT[],
                                          $13::BIGINT[], $14::TEXT[], $15::BIGINT[], $16::BIGINT[], $17::TEXT[],
                                          $18::BIGINT[], $19::BIGINT[])
                         AS n(trace_id, plugin, version, state, invoke_count, inputs, context, storage, outputs, err,
                              finish_at, next_run_at, deadline_at, created_by, callback_deadline_at, callback_timeout_ms,
                              log_text, started_at, duration_us)
                 ), ins AS (
                     INSERT INTO invocations ({COLUMNS})
                     SELECT trace_id, plugin, version, state, invoke_count, inputs, context, storage, outputs, err,
                            $20::BIGINT, $20::BIGINT, finish_at, next_run_at, NULL::TEXT, NULL::BIGINT, 0::BIGINT,
                            deadline_at, created_by, callback_deadline_at, callback_timeout_ms
                     FROM new ORDER BY trace_id
                     ON CONFLICT (trace_id) DO NOTHING
                     RETURNING trace_id
                 ), lg AS (
                     INSERT INTO logs (trace_id, text)
                     SELECT n.trace_id, right(n.log_text, $21::INT) FROM new n JOIN ins ON ins.trace_id = n.trace_id
                     WHERE n.log_text <> ''
                     ON CONFLICT (trace_id) DO UPDATE SET text = right(logs.text || excluded.text, $21::INT)
                 ), ex AS (
                     INSERT INTO executes (trace_id, seq, trigger, invoke_count, started_at, duration_us, state, err)
                     SELECT n.trace_id, (SELECT COALESCE(MAX(e.seq), 0) + 1 FROM executes e WHERE e.trace_id = n.trace_id),
                            'start', n.invoke_count, n.started_at, n.duration_us, n.state, n.err
                     FROM new n JOIN ins ON ins.trace_id = n.trace_id
                 )
                 SELECT trace_id FROM ins"
            ),
        )
        .await
        .map_err(pg_error)?;
    let params: [&(dyn ToSql + Sync); 21] = [
        &a.trace_id,
        &a.plugin,
        &a.version,
        &a.state,
        &a.invoke_count,
        &a.inputs,
        &a.context,
        &a.storage,
        &a.outputs,
        &a.err,
        &a.finish_at,
        &a.next_run_at,
        &a.deadline_at,
        &a.created_by,
        &a.callback_deadline_at,
        &a.callback_timeout_ms,
        &a.logs,
        &a.started_at,
        &a.duration_us,
        &now,
        &MAX_LOG_CHARS,
    ];
    let reports = batch.iter().any(|n| !n.reports.is_empty() || !n.report_files.is_empty());
    let rows = if reports {
        tx.query(&insert, &params).await.map_err(pg_error)?
    } else {
        // Nothing follows: COMMIT goes with the statement (after a failed statement it rolls back).
        let (rows, committed) = tokio::join!(tx.query(&insert, &params), tx.batch_execute("COMMIT"));
        let rows = rows.map_err(pg_error)?;
        committed.map_err(pg_error)?;
        rows
    };
    let inserted: HashSet<String> = rows.iter().map(|r| r.get(0)).collect();
    if reports {
        for new in batch.iter().filter(|n| inserted.contains(&n.invocation.trace_id)) {
            append_reports(tx, &new.invocation.trace_id, &new.reports, &new.report_files).await?;
        }
        tx.batch_execute("COMMIT").await.map_err(pg_error)?;
    }
    Ok(batch.iter().map(|n| inserted.contains(&n.invocation.trace_id)).collect())
}

/// The columns of a batch of inserts, one array each.
#[derive(Default)]
struct InsertArrays<'a> {
    trace_id: Vec<&'a str>,
    plugin: Vec<&'a str>,
    version: Vec<&'a str>,
    state: Vec<i16>,
    invoke_count: Vec<i64>,
    inputs: Vec<String>,
    context: Vec<String>,
    storage: Vec<String>,
    outputs: Vec<String>,
    err: Vec<Option<&'a str>>,
    finish_at: Vec<Option<Millis>>,
    next_run_at: Vec<Option<Millis>>,
    deadline_at: Vec<Option<Millis>>,
    created_by: Vec<Option<&'a str>>,
    callback_deadline_at: Vec<Option<Millis>>,
    callback_timeout_ms: Vec<Option<i64>>,
    logs: Vec<&'a str>,
    started_at: Vec<Millis>,
    duration_us: Vec<i64>,
}

impl InsertArrays<'_> {
    fn with_capacity(n: usize) -> Self {
        let mut a = Self::default();
        a.trace_id.reserve(n);
        a
    }
}

pub(crate) async fn get(c: &Object, trace_id: &str) -> Res<Option<StoredInvocation>> {
    let row = c
        .cached_query_opt(&format!("SELECT {COLUMNS} FROM invocations WHERE trace_id = $1"), &[&trace_id])
        .await
        .map_err(pg_error)?;
    row.as_ref().map(read_row).transpose()
}

async fn exists(c: &Object, trace_id: &str) -> Res<bool> {
    let row = c
        .cached_query_one("SELECT EXISTS (SELECT 1 FROM invocations WHERE trace_id = $1)", &[&trace_id])
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

pub(crate) async fn logs(c: &Object, trace_id: &str) -> Res<Option<String>> {
    if !exists(c, trace_id).await? {
        return Ok(None);
    }
    let row = c.cached_query_opt("SELECT text FROM logs WHERE trace_id = $1", &[&trace_id]).await.map_err(pg_error)?;
    Ok(Some(row.map(|r| r.get(0)).unwrap_or_default()))
}

pub(crate) async fn reports(c: &Object, trace_id: &str) -> Res<Option<Vec<Value>>> {
    if !exists(c, trace_id).await? {
        return Ok(None);
    }
    let rows = c
        .cached_query("SELECT report FROM reports WHERE trace_id = $1 ORDER BY seq", &[&trace_id])
        .await
        .map_err(pg_error)?;
    rows.iter().map(|r| serde_json::from_str(r.get(0)).map_err(data_error)).collect::<Res<Vec<Value>>>().map(Some)
}

pub(crate) async fn report_file(c: &Object, trace_id: &str, path: &str) -> Res<Option<Vec<u8>>> {
    let row = c
        .cached_query_opt("SELECT content FROM report_files WHERE trace_id = $1 AND path = $2", &[&trace_id, &path])
        .await
        .map_err(pg_error)?;
    Ok(row.map(|r| r.get(0)))
}

/// Claims due invocations in one statement (rows locked by another claimer are skipped, never waited
/// for): each is leased, its attempt bumped, and returned with its due time and the oldest callback
/// waiting for it. Those that `schedule::claim_decision` says must wait (a lease that ran out after
/// the callback was consumed) are given back, fenced by the attempt just taken.
pub(crate) async fn claim(c: &Object, limit: usize, owner: &str, lease: Duration) -> Res<Vec<Claim>> {
    static SQL: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    let sql = SQL.get_or_init(|| {
        let returning: Vec<String> = COLUMNS.split(',').map(|c| format!("i.{}", c.trim())).collect();
        format!(
            "WITH due AS (
                 SELECT i.trace_id, i.next_run_at AS due_at, cb.callback_id, cb.data
                 FROM invocations i
                 LEFT JOIN LATERAL (
                     SELECT callback_id, data FROM callbacks c
                     WHERE c.trace_id = i.trace_id AND c.consumed_at IS NULL ORDER BY seq LIMIT 1
                 ) cb ON i.state = 3
                 WHERE i.next_run_at IS NOT NULL AND i.next_run_at <= plugd_now_ms()
                 ORDER BY i.next_run_at LIMIT $1
                 FOR UPDATE OF i SKIP LOCKED
             )
             UPDATE invocations i SET attempt = i.attempt + 1, lease_owner = $2,
                 lease_expires_at = plugd_now_ms() + $3, next_run_at = plugd_now_ms() + $3
             FROM due WHERE i.trace_id = due.trace_id
             RETURNING {}, due.due_at, plugd_now_ms(), due.callback_id, due.data",
            returning.join(", ")
        )
    });
    let rows = c.cached_query(sql, &[&(limit as i64), &owner, &millis(lease)]).await.map_err(pg_error)?;
    let (mut wait_ids, mut wait_attempts, mut wait_at) = (Vec::new(), Vec::new(), Vec::new());
    let mut claims = Vec::with_capacity(rows.len());
    let n = COLUMNS.split(',').count();
    for row in &rows {
        let stored = read_row(row)?;
        let (due_at, now): (Millis, Millis) = (row.get(n), row.get(n + 1));
        let pending = match row.get::<_, Option<String>>(n + 2) {
            Some(id) => {
                let data: String = row.get(n + 3);
                Some(Callback { id, data: serde_json::from_str(&data).map_err(data_error)? })
            }
            None => None,
        };
        let deadlines = Deadlines { invocation: stored.deadline_at, callback: stored.callback_deadline_at };
        match schedule::claim_decision(stored.invocation.state, pending, deadlines, now) {
            ClaimDecision::Execute(trigger) => claims.push(Claim { stored, due_at, claimed_at: now, trigger }),
            ClaimDecision::WaitUntil(at) => {
                wait_ids.push(stored.invocation.trace_id);
                wait_attempts.push(stored.attempt);
                wait_at.push(at);
            }
        }
    }
    if !wait_ids.is_empty() {
        c.cached_execute(
            "UPDATE invocations i SET next_run_at = w.at, lease_owner = NULL, lease_expires_at = NULL
             FROM unnest($1::TEXT[], $2::BIGINT[], $3::BIGINT[]) AS w(id, attempt, at)
             WHERE i.trace_id = w.id AND i.attempt = w.attempt AND i.lease_owner IS NOT NULL",
            &[&wait_ids, &wait_attempts, &wait_at],
        )
        .await
        .map_err(pg_error)?;
    }
    claims.sort_by_key(|c| c.due_at);
    Ok(claims)
}

pub(crate) async fn renew(c: &Object, trace_id: &str, attempt: i64, lease: Duration) -> Res<bool> {
    let changed = c
        .cached_execute(
            "UPDATE invocations SET lease_expires_at = plugd_now_ms() + $3, next_run_at = plugd_now_ms() + $3
             WHERE trace_id = $1 AND attempt = $2 AND lease_owner IS NOT NULL",
            &[&trace_id, &attempt, &millis(lease)],
        )
        .await
        .map_err(pg_error)?;
    Ok(changed == 1)
}

/// Writes a batch of completions (trace ids distinct) in one transaction: `Err` for the batch as a
/// whole, otherwise whether each was written (`false`: its claim no longer holds).
pub(crate) async fn complete_batch(c: &Object, batch: &[Completion]) -> Res<Vec<bool>> {
    let tx = c;
    let ids: Vec<&str> = batch.iter().map(|d| d.trace_id.as_str()).collect();
    let attempts: Vec<i64> = batch.iter().map(|d| d.attempt).collect();
    // Locks the rows whose claim still holds, in one order (batches never deadlock).
    let lock = tx
        .prepare_cached(
            "SELECT i.trace_id, i.deadline_at, plugd_now_ms() FROM invocations i
             JOIN unnest($1::TEXT[], $2::BIGINT[]) AS w(trace_id, attempt)
                 ON i.trace_id = w.trace_id AND i.attempt = w.attempt
             WHERE i.lease_owner IS NOT NULL ORDER BY i.trace_id FOR UPDATE OF i",
        )
        .await
        .map_err(pg_error)?;
    // BEGIN goes with the first statement: one round trip (sent in this order on the connection).
    let params: [&(dyn ToSql + Sync); 2] = [&ids, &attempts];
    let (begun, held) = tokio::join!(tx.batch_execute("BEGIN"), tx.query(&lock, &params));
    begun.map_err(pg_error)?;
    let held = held.map_err(pg_error)?;
    let Some(now) = held.first().map(|r| r.get::<_, Millis>(2)) else {
        tx.batch_execute("ROLLBACK").await.map_err(pg_error)?;
        return Ok(vec![false; batch.len()]);
    };
    let deadlines: HashMap<String, Option<Millis>> = held.iter().map(|r| (r.get(0), r.get(1))).collect();
    let done: Vec<&Completion> = batch.iter().filter(|d| deadlines.contains_key(&d.trace_id)).collect();
    // The post delivered is the oldest one of that id not yet consumed; whether another one waits is
    // read in the same statement (a CTE's own change is not visible to its query, hence the `NOT IN`).
    let asks: Vec<&&Completion> =
        done.iter().filter(|d| d.consumed_callback.is_some() || d.step.state == State::Callback).collect();
    let waiting: HashSet<String> = if asks.is_empty() {
        HashSet::new()
    } else {
        let ask_ids: Vec<&str> = asks.iter().map(|d| d.trace_id.as_str()).collect();
        let consumed: Vec<Option<&str>> = asks.iter().map(|d| d.consumed_callback.as_deref()).collect();
        tx.cached_query(
            "WITH want AS (SELECT * FROM unnest($1::TEXT[], $2::TEXT[]) AS w(trace_id, callback_id)),
             consumed AS (
                 UPDATE callbacks SET consumed_at = $3::BIGINT WHERE seq IN (
                     SELECT (SELECT c.seq FROM callbacks c
                             WHERE c.trace_id = w.trace_id AND c.callback_id = w.callback_id AND c.consumed_at IS NULL
                             ORDER BY c.seq LIMIT 1)
                     FROM want w WHERE w.callback_id IS NOT NULL)
                 RETURNING seq)
             SELECT w.trace_id FROM want w WHERE EXISTS (
                 SELECT 1 FROM callbacks c WHERE c.trace_id = w.trace_id AND c.consumed_at IS NULL
                 AND c.seq NOT IN (SELECT seq FROM consumed))",
            &[&ask_ids, &consumed, &now],
        )
        .await
        .map_err(pg_error)?
        .iter()
        .map(|r| r.get(0))
        .collect()
    };
    let mut a = CompleteArrays::default();
    for d in &done {
        let step = &d.step;
        let deadline = deadlines.get(&d.trace_id).copied().flatten();
        let waits = waiting.contains(&d.trace_id);
        let plan = schedule::plan(step.state, step.poll_after, step.callback_timeout, deadline, waits, now);
        let micros = i64::try_from(d.duration.as_micros()).unwrap_or(i64::MAX);
        a.trace_id.push(d.trace_id.as_str());
        a.attempt.push(d.attempt);
        a.state.push(i16::from(step.state.code()));
        a.invoke_count.push(i64::from(step.invoke_count));
        a.storage.push(object_text(&step.storage)?);
        a.outputs.push(object_text(&step.outputs)?);
        a.err.push(step.err.as_deref());
        a.finish_at.push(plan.finish_at);
        a.next_run_at.push(plan.next_run_at);
        a.callback_deadline_at.push(plan.callback_deadline_at);
        a.callback_timeout_ms.push(timeout_ms(&plan));
        a.logs.push(d.logs.as_str());
        a.trigger.push(if d.consumed_callback.is_some() { "callback" } else { "poll" });
        a.started_at.push(now.saturating_sub(micros / 1000));
        a.duration_us.push(micros);
        if let Some(callback) = &d.finish_callback {
            a.outbox_trace_id.push(d.trace_id.as_str());
            a.outbox_url.push(callback.url.as_str());
            a.outbox_body.push(callback.body.as_str());
        }
    }
    let update = tx
        .prepare_cached(
            "WITH u AS (
             SELECT * FROM unnest($1::TEXT[], $2::BIGINT[], $3::SMALLINT[], $4::BIGINT[], $5::TEXT[], $6::TEXT[],
                                  $7::TEXT[], $8::BIGINT[], $9::BIGINT[], $10::BIGINT[], $11::BIGINT[], $12::TEXT[],
                                  $13::TEXT[], $14::BIGINT[], $15::BIGINT[])
                 AS u(trace_id, attempt, state, invoke_count, storage, outputs, err, finish_at, next_run_at,
                      callback_deadline_at, callback_timeout_ms, log_text, trigger, started_at, duration_us)
         ), upd AS (
             UPDATE invocations i SET state = u.state, invoke_count = u.invoke_count, storage = u.storage,
                 outputs = u.outputs, err = u.err, updated_at = $16::BIGINT, finish_at = u.finish_at,
                 next_run_at = u.next_run_at, lease_owner = NULL, lease_expires_at = NULL,
                 callback_deadline_at = u.callback_deadline_at, callback_timeout_ms = u.callback_timeout_ms
             FROM u WHERE i.trace_id = u.trace_id AND i.attempt = u.attempt
         ), lg AS (
             INSERT INTO logs (trace_id, text)
             SELECT trace_id, right(log_text, $17::INT) FROM u WHERE log_text <> ''
             ON CONFLICT (trace_id) DO UPDATE SET text = right(logs.text || excluded.text, $17::INT)
         ), ex AS (
             INSERT INTO executes (trace_id, seq, trigger, invoke_count, started_at, duration_us, state, err)
             SELECT u.trace_id, (SELECT COALESCE(MAX(e.seq), 0) + 1 FROM executes e WHERE e.trace_id = u.trace_id),
                    u.trigger, u.invoke_count, u.started_at, u.duration_us, u.state, u.err
             FROM u
         )
         INSERT INTO outbox (trace_id, url, body, next_attempt_at, created_at)
         SELECT o.trace_id, o.url, o.body, $16::BIGINT, $16::BIGINT
         FROM unnest($18::TEXT[], $19::TEXT[], $20::TEXT[]) AS o(trace_id, url, body)",
        )
        .await
        .map_err(pg_error)?;
    let params: [&(dyn ToSql + Sync); 20] = [
        &a.trace_id,
        &a.attempt,
        &a.state,
        &a.invoke_count,
        &a.storage,
        &a.outputs,
        &a.err,
        &a.finish_at,
        &a.next_run_at,
        &a.callback_deadline_at,
        &a.callback_timeout_ms,
        &a.logs,
        &a.trigger,
        &a.started_at,
        &a.duration_us,
        &now,
        &MAX_LOG_CHARS,
        &a.outbox_trace_id,
        &a.outbox_url,
        &a.outbox_body,
    ];
    if done.iter().any(|d| !d.reports.is_empty() || !d.report_files.is_empty()) {
        tx.execute(&update, &params).await.map_err(pg_error)?;
        for d in &done {
            append_reports(tx, &d.trace_id, &d.reports, &d.report_files).await?;
        }
        tx.batch_execute("COMMIT").await.map_err(pg_error)?;
    } else {
        // Nothing follows: COMMIT goes with the statement (after a failed statement it rolls back).
        let (updated, committed) = tokio::join!(tx.execute(&update, &params), tx.batch_execute("COMMIT"));
        updated.map_err(pg_error)?;
        committed.map_err(pg_error)?;
    }
    Ok(batch.iter().map(|d| deadlines.contains_key(&d.trace_id)).collect())
}

/// The columns of a batch of completions, one array each.
#[derive(Default)]
struct CompleteArrays<'a> {
    trace_id: Vec<&'a str>,
    attempt: Vec<i64>,
    state: Vec<i16>,
    invoke_count: Vec<i64>,
    storage: Vec<String>,
    outputs: Vec<String>,
    err: Vec<Option<&'a str>>,
    finish_at: Vec<Option<Millis>>,
    next_run_at: Vec<Option<Millis>>,
    callback_deadline_at: Vec<Option<Millis>>,
    callback_timeout_ms: Vec<Option<i64>>,
    logs: Vec<&'a str>,
    trigger: Vec<&'static str>,
    started_at: Vec<Millis>,
    duration_us: Vec<i64>,
    outbox_trace_id: Vec<&'a str>,
    outbox_url: Vec<&'a str>,
    outbox_body: Vec<&'a str>,
}

pub(crate) async fn release(c: &Object, trace_id: &str, attempt: i64) -> Res<()> {
    c.cached_execute(
        "UPDATE invocations SET lease_owner = NULL, lease_expires_at = NULL, next_run_at = plugd_now_ms()
         WHERE trace_id = $1 AND attempt = $2 AND lease_owner IS NOT NULL",
        &[&trace_id, &attempt],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

fn wait_of(row: &Row) -> Option<Duration> {
    row.get::<_, Option<i64>>(0).map(|ms| Duration::from_millis(ms.max(0) as u64))
}

pub(crate) async fn next_due(c: &Object) -> Res<Option<Duration>> {
    let row = c
        .cached_query_one(
            "SELECT MIN(next_run_at) - plugd_now_ms() FROM invocations WHERE next_run_at IS NOT NULL",
            &[],
        )
        .await
        .map_err(pg_error)?;
    Ok(wait_of(&row))
}

/// Keeps a callback; `true` in the second place when it made the invocation due now.
pub(crate) async fn add_callback(c: &mut Object, trace_id: &str, callback: &Callback) -> Res<(CallbackReceipt, bool)> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let now = lock_trace(&tx, trace_id).await?;
    let row = tx
        .cached_query_opt("SELECT state, lease_owner FROM invocations WHERE trace_id = $1 FOR UPDATE", &[&trace_id])
        .await
        .map_err(pg_error)?;
    let row: Option<(State, Option<String>)> = match row {
        Some(r) => Some((state_of(r.get(0))?, r.get(1))),
        None => None,
    };
    if let Some((state, _)) = &row {
        if state.is_final() {
            return Ok((CallbackReceipt::Finished(*state), false));
        }
    }
    // The same post again (a third party retrying after a lost reply) is not a new callback.
    let last = tx
        .cached_query_opt(
            "SELECT data FROM callbacks WHERE callback_id = $1 AND trace_id = $2 ORDER BY seq DESC LIMIT 1",
            &[&callback.id, &trace_id],
        )
        .await
        .map_err(pg_error)?;
    if last.is_some_and(|r| serde_json::from_str::<Value>(r.get(0)).is_ok_and(|data| data == callback.data)) {
        return Ok((CallbackReceipt::AlreadyReceived, false));
    }
    tx.cached_execute(
        "INSERT INTO callbacks (callback_id, trace_id, data, received_at) VALUES ($1, $2, $3, $4)",
        &[&callback.id, &trace_id, &callback.data.to_string(), &now],
    )
    .await
    .map_err(pg_error)?;
    // Due now if it waits for a callback and no execute holds it; otherwise the running execute's
    // completion (or the commit of its first step) sees the pending callback.
    let mut due = false;
    if let Some((State::Callback, None)) = row {
        tx.cached_execute(
            "UPDATE invocations SET next_run_at = $2 WHERE trace_id = $1 AND (next_run_at IS NULL OR next_run_at > $2)",
            &[&trace_id, &now],
        )
        .await
        .map_err(pg_error)?;
        due = true;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok((CallbackReceipt::Accepted, due))
}

pub(crate) async fn cancel(
    c: &mut Object,
    trace_id: &str,
    err: &str,
    finish_callback: Option<&FinishCallback>,
) -> Res<CancelOutcome> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let row = tx
        .cached_query_opt("SELECT state FROM invocations WHERE trace_id = $1 FOR UPDATE", &[&trace_id])
        .await
        .map_err(pg_error)?;
    let Some(row) = row else {
        return Ok(CancelOutcome::NotFound);
    };
    let state = state_of(row.get(0))?;
    if state.is_final() {
        return Ok(CancelOutcome::AlreadyFinished(state));
    }
    // The attempt bump fences out an execute that may be running.
    tx.cached_execute(
        "UPDATE invocations SET state = $2, err = $3, updated_at = plugd_now_ms(), finish_at = plugd_now_ms(),
             next_run_at = NULL, lease_owner = NULL, lease_expires_at = NULL, attempt = attempt + 1
         WHERE trace_id = $1",
        &[&trace_id, &i16::from(State::Fail.code()), &err],
    )
    .await
    .map_err(pg_error)?;
    if let Some(callback) = finish_callback {
        enqueue(&tx, trace_id, callback).await?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(CancelOutcome::Cancelled)
}

pub(crate) async fn claim_outbox(c: &Object, limit: usize, lease: Duration) -> Res<Vec<OutboxItem>> {
    let rows = c
        .cached_query(
            "UPDATE outbox SET next_attempt_at = plugd_now_ms() + $2 WHERE id IN (
                 SELECT id FROM outbox
                 WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= plugd_now_ms()
                 ORDER BY next_attempt_at LIMIT $1 FOR UPDATE SKIP LOCKED)
             RETURNING id, trace_id, url, body, attempts",
            &[&(limit as i64), &millis(lease)],
        )
        .await
        .map_err(pg_error)?;
    rows.iter()
        .map(|r| {
            Ok(OutboxItem {
                id: r.get(0),
                trace_id: r.get(1),
                callback: FinishCallback { url: r.get(2), body: r.get(3) },
                attempts: u32::try_from(r.get::<_, i64>(4)).map_err(data_error)?,
            })
        })
        .collect()
}

pub(crate) async fn finish_delivery(c: &Object, id: i64, delivery: &Delivery) -> Res<()> {
    let (sql, error, after): (&str, Option<&str>, i64) = match delivery {
        Delivery::Delivered => (
            "UPDATE outbox SET attempts = attempts + 1, delivered_at = plugd_now_ms() + $3, last_error = $2 WHERE id = $1",
            None,
            0,
        ),
        Delivery::Retry { after, error } => (
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = plugd_now_ms() + $3, last_error = $2 WHERE id = $1",
            Some(error),
            millis(*after),
        ),
        Delivery::GaveUp { error } => (
            "UPDATE outbox SET attempts = attempts + 1, gave_up_at = plugd_now_ms() + $3, last_error = $2 WHERE id = $1",
            Some(error),
            0,
        ),
    };
    c.cached_execute(sql, &[&id, &error, &after]).await.map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn next_outbox_due(c: &Object) -> Res<Option<Duration>> {
    let row = c
        .cached_query_one(
            "SELECT MIN(next_attempt_at) - plugd_now_ms() FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL",
            &[],
        )
        .await
        .map_err(pg_error)?;
    Ok(wait_of(&row))
}

/// Deletes a batch of finished invocations and what belongs to them, in one statement; rows another
/// node is deleting are skipped.
pub(crate) async fn purge_finished(c: &Object, keep: Duration, limit: usize) -> Res<Vec<String>> {
    let (keep, limit) = (millis(keep), limit as i64);
    let rows = c
        .cached_query(
            "WITH gone AS (
                 DELETE FROM invocations WHERE trace_id IN (
                     SELECT trace_id FROM invocations WHERE finish_at IS NOT NULL AND finish_at < plugd_now_ms() - $1
                     LIMIT $2 FOR UPDATE SKIP LOCKED)
                 RETURNING trace_id),
             l AS (DELETE FROM logs WHERE trace_id IN (SELECT trace_id FROM gone)),
             r AS (DELETE FROM reports WHERE trace_id IN (SELECT trace_id FROM gone)),
             f AS (DELETE FROM report_files WHERE trace_id IN (SELECT trace_id FROM gone)),
             e AS (DELETE FROM executes WHERE trace_id IN (SELECT trace_id FROM gone)),
             c AS (DELETE FROM callbacks WHERE trace_id IN (SELECT trace_id FROM gone)),
             o AS (DELETE FROM outbox WHERE trace_id IN (SELECT trace_id FROM gone)
                   AND (delivered_at IS NOT NULL OR gave_up_at IS NOT NULL))
             SELECT trace_id FROM gone",
            &[&keep, &limit],
        )
        .await
        .map_err(pg_error)?;
    // Callbacks for invocations that never committed (their invoke failed) expire too.
    c.cached_execute(
        "DELETE FROM callbacks WHERE seq IN (
             SELECT c.seq FROM callbacks c LEFT JOIN invocations i ON i.trace_id = c.trace_id
             WHERE i.trace_id IS NULL AND c.received_at < plugd_now_ms() - $1 LIMIT $2)",
        &[&keep, &limit],
    )
    .await
    .map_err(pg_error)?;
    Ok(rows.iter().map(|r| r.get(0)).collect())
}

pub(crate) async fn stats(c: &Object) -> Res<StoreStats> {
    let mut stats = StoreStats::default();
    let rows = c.cached_query("SELECT state, COUNT(*) FROM invocations GROUP BY state", &[]).await.map_err(pg_error)?;
    for row in rows {
        let (state, count): (i16, i64) = (row.get(0), row.get(1));
        if let Some(slot) = usize::try_from(state).ok().and_then(|s| stats.by_state.get_mut(s)) {
            *slot = count as u64;
        }
    }
    let row = c
        .cached_query_one(
            "SELECT
                 (SELECT COUNT(*) FROM invocations
                  WHERE next_run_at IS NOT NULL AND next_run_at <= plugd_now_ms() AND lease_owner IS NULL),
                 (SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL)",
            &[],
        )
        .await
        .map_err(pg_error)?;
    stats.due = row.get::<_, i64>(0) as u64;
    stats.outbox_pending = row.get::<_, i64>(1) as u64;
    Ok(stats)
}

pub(crate) async fn write_probe(c: &Object) -> Res<()> {
    c.cached_execute(
        "INSERT INTO settings (key, value) VALUES ('write_probe', '\\x01')
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}
