//! Invocations: inserting a batch, reading one back with its logs, reports and executes, and history.

use std::borrow::Cow;
use std::collections::HashSet;
use std::time::Duration;

use deadpool_postgres::Object;
use plugd_core::schedule;
use plugd_core::store::{
    ExecuteRecord, HistoryPage, HistoryQuery, InvocationSummary, Millis, NewInvocation, StoredInvocation, Visibility,
};
use plugd_sdk::State;
use serde_json::Value;
use tokio_postgres::types::ToSql;

use super::{append_reports, object_text, read_row, state_of, timeout_ms, Cached, Res, COLUMNS, MAX_LOG_CHARS};
use crate::text::{decode, decode_opt, encode};
use crate::{data_error, pg_error};

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
                err: decode_opt(r.get(5)),
            })
        })
        .collect::<Res<Vec<_>>>()
        .map(Some)
}

pub(crate) async fn history(c: &Object, q: &HistoryQuery) -> Res<HistoryPage> {
    // Each filter is `$n IS NULL OR column = $n`: one prepared statement serves every combination.
    let filter = "($1::TEXT IS NULL OR plugin = $1) AND ($2::TEXT IS NULL OR version = $2)
                  AND ($3::SMALLINT IS NULL OR state = $3)
                  AND ($4::TEXT IS NULL OR created_by = $4)";
    let created_by = match q.viewer.visibility() {
        Visibility::Nothing => return Ok(HistoryPage::default()),
        Visibility::Everything => None,
        Visibility::CreatedBy(app) => Some(encode(app)),
    };
    let state = q.state.map(|s| i16::from(s.code()));
    let total: i64 = c
        .cached_query_one(
            &format!("SELECT COUNT(*) FROM invocations WHERE {filter}"),
            &[&q.plugin, &q.version, &state, &created_by],
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
            &[&q.plugin, &q.version, &state, &created_by, &limit, &offset],
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
                err: decode_opt(r.get(5)),
                created_at: r.get(6),
                finish_at: r.get(7),
            })
        })
        .collect::<Res<Vec<_>>>()?;
    Ok(HistoryPage { items, total: total.max(0) as u64 })
}

/// Inserts a batch of new invocations (trace ids distinct) in one transaction: `Err` for the batch as
/// a whole, otherwise whether each was inserted (`false`: its trace id exists).
///
/// Inserts in state CALLBACK take the advisory lock of their trace id (in one order, so batches never
/// deadlock) before looking for callbacks that came first, as [`add_callback`](super::add_callback) takes it before
/// looking for the invocation: an early callback is never missed.
pub(crate) async fn insert_batch(c: &Object, batch: &[NewInvocation]) -> Res<Vec<bool>> {
    let tx = c;
    let locked: Vec<&str> = batch
        .iter()
        .filter(|n| n.invocation.state == State::Callback)
        .map(|n| n.invocation.trace_id.as_str())
        .collect();
    let reports = batch.iter().any(|n| !n.reports.is_empty() || !n.report_files.is_empty());
    // The common batch (no CALLBACK to lock, no reports to add) is one statement, atomic on its own:
    // one round trip, and the database's clock read inside it. Times are planned relative to that
    // clock's now (see `relative`), so the statement only adds its now to them.
    let single = locked.is_empty() && !reports;
    let (now, waiting): (Option<Millis>, HashSet<String>) = if single {
        (None, HashSet::new())
    } else {
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
        let waiting = if locked.is_empty() {
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
        (Some(now), waiting)
    };
    let n = batch.len();
    let mut a = InsertArrays::with_capacity(n);
    for new in batch {
        let inv = &new.invocation;
        // Planned at 0: every time is an offset from the now the statement adds.
        let deadline_at = schedule::deadline_at(0, new.deadline);
        let waits = waiting.contains(&inv.trace_id);
        let plan = schedule::plan(inv.state, new.poll_after, new.callback_timeout, deadline_at, waits, 0);
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
        a.err.push(inv.err.as_deref().map(encode));
        a.finish_at.push(plan.finish_at);
        a.next_run_at.push(plan.next_run_at);
        a.deadline_at.push(deadline_at);
        a.created_by.push(new.created_by.as_deref().map(encode));
        a.callback_deadline_at.push(plan.callback_deadline_at);
        a.callback_timeout_ms.push(timeout_ms(&plan));
        a.logs.push(encode(&new.logs));
        a.started_at.push(-(micros / 1000));
        a.duration_us.push(micros);
    }
    let insert = tx
        .prepare_cached(&format!(
            "WITH clock AS (SELECT COALESCE($20::BIGINT, plugd_now_ms()) AS now), new AS (
                     SELECT * FROM unnest($1::TEXT[], $2::TEXT[], $3::TEXT[], $4::SMALLINT[], $5::BIGINT[], $6::TEXT[],
                                          $7::TEXT[], $8::TEXT[], $9::TEXT[], $10::TEXT[], $11::BIGINT[], $12::BIGINT[],
                                          $13::BIGINT[], $14::TEXT[], $15::BIGINT[], $16::BIGINT[], $17::TEXT[],
                                          $18::BIGINT[], $19::BIGINT[])
                         AS n(trace_id, plugin, version, state, invoke_count, inputs, context, storage, outputs, err,
                              finish_in, next_run_in, deadline_in, created_by, callback_deadline_in,
                              callback_timeout_ms, log_text, started_in, duration_us)
                 ), ins AS (
                     INSERT INTO invocations ({COLUMNS})
                     SELECT trace_id, plugin, version, state, invoke_count, inputs, context, storage, outputs, err,
                            c.now, c.now, c.now + finish_in, c.now + next_run_in, NULL::TEXT, NULL::BIGINT, 0::BIGINT,
                            c.now + deadline_in, created_by, c.now + callback_deadline_in, callback_timeout_ms
                     FROM new, clock c ORDER BY trace_id
                     ON CONFLICT (trace_id) DO NOTHING
                     RETURNING trace_id
                 ), lg AS (
                     INSERT INTO logs (trace_id, text)
                     SELECT n.trace_id, right(n.log_text, $21::INT) FROM new n JOIN ins ON ins.trace_id = n.trace_id
                     WHERE n.log_text <> ''
                     ON CONFLICT (trace_id) DO UPDATE SET text = right(logs.text || excluded.text, $21::INT)
                 ), ex AS (
                     INSERT INTO executes (trace_id, seq, trigger, invoke_count, started_at, duration_us, state, err)
                     SELECT n.trace_id, 1, 'start', n.invoke_count, c.now + n.started_in, n.duration_us, n.state, n.err
                     FROM new n JOIN ins ON ins.trace_id = n.trace_id, clock c
                     ON CONFLICT (trace_id, seq) DO NOTHING
                 )
                 SELECT trace_id FROM ins"
        ))
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
    let rows = if single || reports {
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
    err: Vec<Option<Cow<'a, str>>>,
    finish_at: Vec<Option<Millis>>,
    next_run_at: Vec<Option<Millis>>,
    deadline_at: Vec<Option<Millis>>,
    created_by: Vec<Option<Cow<'a, str>>>,
    callback_deadline_at: Vec<Option<Millis>>,
    callback_timeout_ms: Vec<Option<i64>>,
    logs: Vec<Cow<'a, str>>,
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
    Ok(Some(row.map(|r| decode(r.get(0))).unwrap_or_default()))
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
