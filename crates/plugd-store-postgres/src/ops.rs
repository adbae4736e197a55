//! The SQL of every store operation. Times come from the database (`plugd_now_ms()`); the rules
//! (when next, what a claim carries) from `plugd_core::schedule`.

use std::collections::HashMap;
use std::time::Duration;

use deadpool_postgres::{GenericClient, Object};
use plugd_core::schedule::{self, ClaimDecision, Deadlines, Plan};
use plugd_core::store::{
    CallbackReceipt, CancelOutcome, Claim, Completion, Delivery, ExecuteRecord, FinishCallback, HistoryPage,
    HistoryQuery, InvocationSummary, Millis, NewInvocation, OutboxItem, ReportFile, StoreError, StoreStats,
    StoredInvocation,
};
use plugd_core::{Invocation, Trigger};
use plugd_sdk::{Callback, State};
use serde_json::{Map, Value};
use tokio_postgres::Row;

use crate::{data_error, pg_error};

type Res<T> = Result<T, StoreError>;

/// Logs of one invocation are cut at this size.
const MAX_LOG_CHARS: i32 = 64 * 1024;

pub(crate) const COLUMNS: &str = "trace_id, plugin, version, state, invoke_count, inputs, context, storage, outputs, err, \
                       created_at, updated_at, finish_at, next_run_at, lease_owner, lease_expires_at, attempt, deadline_at, created_by, \
                       callback_deadline_at, callback_timeout_ms";

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
    c.execute("INSERT INTO settings (key, value) VALUES ('callback_secret', $1) ON CONFLICT DO NOTHING", &[&generate])
        .await
        .map_err(pg_error)?;
    let row = c.query_one("SELECT value FROM settings WHERE key = 'callback_secret'", &[]).await.map_err(pg_error)?;
    Ok(row.get(0))
}

async fn append_logs(c: &impl GenericClient, trace_id: &str, text: &str) -> Res<()> {
    if text.is_empty() {
        return Ok(());
    }
    c.execute(
        "INSERT INTO logs (trace_id, text) VALUES ($1, right($2, $3))
         ON CONFLICT (trace_id) DO UPDATE SET text = right(logs.text || excluded.text, $3)",
        &[&trace_id, &text, &MAX_LOG_CHARS],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

async fn append_reports(c: &impl GenericClient, trace_id: &str, reports: &[Value], files: &[ReportFile]) -> Res<()> {
    for report in reports {
        c.execute(
            "INSERT INTO reports (trace_id, seq, report)
             VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM reports WHERE trace_id = $1), $2)",
            &[&trace_id, &report.to_string()],
        )
        .await
        .map_err(pg_error)?;
    }
    for file in files {
        c.execute(
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
    c.execute(
        "INSERT INTO outbox (trace_id, url, body, next_attempt_at, created_at)
         VALUES ($1, $2, $3, plugd_now_ms(), plugd_now_ms())",
        &[&trace_id, &callback.url, &callback.body],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}

/// One execute, for the timeline.
struct Execute<'a> {
    trigger: &'static str,
    invoke_count: u32,
    state: State,
    err: Option<&'a str>,
}

/// Records an execute that ended at `now` after running `duration`.
async fn append_execute(
    c: &impl GenericClient,
    trace_id: &str,
    e: &Execute<'_>,
    now: Millis,
    duration: Duration,
) -> Res<()> {
    let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
    let started_at = now.saturating_sub(micros / 1000);
    c.execute(
        "INSERT INTO executes (trace_id, seq, trigger, invoke_count, started_at, duration_us, state, err)
         VALUES ($1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM executes WHERE trace_id = $1), $2, $3, $4, $5, $6, $7)",
        &[&trace_id, &e.trigger, &i64::from(e.invoke_count), &started_at, &micros, &i16::from(e.state.code()), &e.err],
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
        .query(
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
        .query_one(
            &format!("SELECT COUNT(*) FROM invocations WHERE {filter}"),
            &[&q.plugin, &q.version, &state, &q.created_by],
        )
        .await
        .map_err(pg_error)?
        .get(0);
    let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
    let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
    let rows = c
        .query(
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
        .query_one(
            "SELECT plugd_now_ms() FROM (SELECT pg_advisory_xact_lock(hashtextextended($1, 0))) AS locked",
            &[&trace_id],
        )
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

async fn has_pending_callbacks(c: &impl GenericClient, trace_id: &str) -> Res<bool> {
    let row = c
        .query_one("SELECT EXISTS (SELECT 1 FROM callbacks WHERE trace_id = $1 AND consumed_at IS NULL)", &[&trace_id])
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

/// Inserts new invocations, one transaction for the batch: `Err` for the batch as a whole,
/// otherwise one result per invocation (a trace id that exists is a conflict of its own).
pub(crate) async fn insert(c: &mut Object, new: &NewInvocation) -> Res<()> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let inv = &new.invocation;
    let now = lock_trace(&tx, &inv.trace_id).await?;
    let waiting = inv.state == State::Callback && has_pending_callbacks(&tx, &inv.trace_id).await?;
    let deadline_at = schedule::deadline_at(now, new.deadline);
    let plan = schedule::plan(inv.state, new.poll_after, new.callback_timeout, deadline_at, waiting, now);
    let (storage, outputs) = (object_text(&inv.storage)?, object_text(&inv.outputs)?);
    tx.execute(
        &format!(
            "INSERT INTO invocations ({COLUMNS}) VALUES
             ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $11, $12, $13, NULL, NULL, 0, $14, $15, $16, $17)"
        ),
        &[
            &inv.trace_id,
            &inv.plugin,
            &inv.version,
            &i16::from(inv.state.code()),
            &i64::from(inv.invoke_count),
            &inv.inputs.to_string(),
            &inv.context.to_string(),
            &storage,
            &outputs,
            &inv.err,
            &now,
            &plan.finish_at,
            &plan.next_run_at,
            &deadline_at,
            &new.created_by,
            &plan.callback_deadline_at,
            &timeout_ms(&plan),
        ],
    )
    .await
    .map_err(pg_error)?;
    append_reports(&tx, &inv.trace_id, &new.reports, &new.report_files).await?;
    append_logs(&tx, &inv.trace_id, &new.logs).await?;
    let execute =
        Execute { trigger: "start", invoke_count: inv.invoke_count, state: inv.state, err: inv.err.as_deref() };
    append_execute(&tx, &inv.trace_id, &execute, now, new.duration).await?;
    tx.commit().await.map_err(pg_error)
}

pub(crate) async fn get(c: &Object, trace_id: &str) -> Res<Option<StoredInvocation>> {
    let row = c
        .query_opt(&format!("SELECT {COLUMNS} FROM invocations WHERE trace_id = $1"), &[&trace_id])
        .await
        .map_err(pg_error)?;
    row.as_ref().map(read_row).transpose()
}

async fn exists(c: &Object, trace_id: &str) -> Res<bool> {
    let row = c
        .query_one("SELECT EXISTS (SELECT 1 FROM invocations WHERE trace_id = $1)", &[&trace_id])
        .await
        .map_err(pg_error)?;
    Ok(row.get(0))
}

pub(crate) async fn logs(c: &Object, trace_id: &str) -> Res<Option<String>> {
    if !exists(c, trace_id).await? {
        return Ok(None);
    }
    let row = c.query_opt("SELECT text FROM logs WHERE trace_id = $1", &[&trace_id]).await.map_err(pg_error)?;
    Ok(Some(row.map(|r| r.get(0)).unwrap_or_default()))
}

pub(crate) async fn reports(c: &Object, trace_id: &str) -> Res<Option<Vec<Value>>> {
    if !exists(c, trace_id).await? {
        return Ok(None);
    }
    let rows =
        c.query("SELECT report FROM reports WHERE trace_id = $1 ORDER BY seq", &[&trace_id]).await.map_err(pg_error)?;
    rows.iter().map(|r| serde_json::from_str(r.get(0)).map_err(data_error)).collect::<Res<Vec<Value>>>().map(Some)
}

pub(crate) async fn report_file(c: &Object, trace_id: &str, path: &str) -> Res<Option<Vec<u8>>> {
    let row = c
        .query_opt("SELECT content FROM report_files WHERE trace_id = $1 AND path = $2", &[&trace_id, &path])
        .await
        .map_err(pg_error)?;
    Ok(row.map(|r| r.get(0)))
}

/// Claims due invocations: rows locked by another claimer are skipped, never waited for.
pub(crate) async fn claim(c: &mut Object, limit: usize, owner: &str, lease: Duration) -> Res<Vec<Claim>> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let due = tx
        .query(
            "SELECT i.trace_id, i.next_run_at, i.state, i.deadline_at, i.callback_deadline_at, plugd_now_ms(),
                    cb.callback_id, cb.data
             FROM invocations i
             LEFT JOIN LATERAL (
                 SELECT callback_id, data FROM callbacks c
                 WHERE c.trace_id = i.trace_id AND c.consumed_at IS NULL ORDER BY seq LIMIT 1
             ) cb ON i.state = 3
             WHERE i.next_run_at IS NOT NULL AND i.next_run_at <= plugd_now_ms()
             ORDER BY i.next_run_at LIMIT $1
             FOR UPDATE OF i SKIP LOCKED",
            &[&(limit as i64)],
        )
        .await
        .map_err(pg_error)?;
    let Some(now) = due.first().map(|r| r.get::<_, i64>(5)) else {
        tx.commit().await.map_err(pg_error)?;
        return Ok(Vec::new());
    };
    let mut execute: HashMap<String, (Millis, Trigger)> = HashMap::new();
    let (mut wait_ids, mut wait_at) = (Vec::new(), Vec::new());
    for row in &due {
        let trace_id: String = row.get(0);
        let state = state_of(row.get(2))?;
        let pending = match row.get::<_, Option<String>>(6) {
            Some(id) => {
                let data: String = row.get(7);
                Some(Callback { id, data: serde_json::from_str(&data).map_err(data_error)? })
            }
            None => None,
        };
        let deadlines = Deadlines { invocation: row.get(3), callback: row.get(4) };
        match schedule::claim_decision(state, pending, deadlines, now) {
            ClaimDecision::Execute(trigger) => {
                execute.insert(trace_id, (row.get(1), trigger));
            }
            ClaimDecision::WaitUntil(at) => {
                wait_ids.push(trace_id);
                wait_at.push(at);
            }
        }
    }
    if !wait_ids.is_empty() {
        tx.execute(
            "UPDATE invocations i SET next_run_at = w.at, lease_owner = NULL, lease_expires_at = NULL
             FROM unnest($1::TEXT[], $2::BIGINT[]) AS w(id, at) WHERE i.trace_id = w.id",
            &[&wait_ids, &wait_at],
        )
        .await
        .map_err(pg_error)?;
    }
    let mut claims = Vec::with_capacity(execute.len());
    if !execute.is_empty() {
        let ids: Vec<&str> = execute.keys().map(String::as_str).collect();
        let until = now.saturating_add(millis(lease));
        let rows = tx
            .query(
                &format!(
                    "UPDATE invocations SET attempt = attempt + 1, lease_owner = $1, lease_expires_at = $2, next_run_at = $2
                     WHERE trace_id = ANY($3) RETURNING {COLUMNS}"
                ),
                &[&owner, &until, &ids],
            )
            .await
            .map_err(pg_error)?;
        for row in &rows {
            let stored = read_row(row)?;
            let Some((due_at, trigger)) = execute.remove(&stored.invocation.trace_id) else { continue };
            claims.push(Claim { stored, due_at, claimed_at: now, trigger });
        }
    }
    tx.commit().await.map_err(pg_error)?;
    claims.sort_by_key(|c| c.due_at);
    Ok(claims)
}

pub(crate) async fn renew(c: &Object, trace_id: &str, attempt: i64, lease: Duration) -> Res<bool> {
    let changed = c
        .execute(
            "UPDATE invocations SET lease_expires_at = plugd_now_ms() + $3, next_run_at = plugd_now_ms() + $3
             WHERE trace_id = $1 AND attempt = $2 AND lease_owner IS NOT NULL",
            &[&trace_id, &attempt, &millis(lease)],
        )
        .await
        .map_err(pg_error)?;
    Ok(changed == 1)
}

pub(crate) async fn complete(c: &mut Object, done: &Completion) -> Res<bool> {
    let tx = c.transaction().await.map_err(pg_error)?;
    // Locks the row while checking that the claim still holds.
    let held = tx
        .query_opt(
            "SELECT deadline_at, plugd_now_ms() FROM invocations
             WHERE trace_id = $1 AND attempt = $2 AND lease_owner IS NOT NULL FOR UPDATE",
            &[&done.trace_id, &done.attempt],
        )
        .await
        .map_err(pg_error)?;
    let Some(held) = held else {
        tx.rollback().await.map_err(pg_error)?;
        return Ok(false);
    };
    let (deadline, now): (Option<Millis>, Millis) = (held.get(0), held.get(1));
    let step = &done.step;
    // The post delivered is the oldest one of that id not yet consumed; whether another one waits is
    // read in the same statement (a CTE's own change is not visible to its query, hence the `seq <>`).
    let waiting = tx
        .query_one(
            "WITH consumed AS (
                 UPDATE callbacks SET consumed_at = $3 WHERE seq = (
                     SELECT seq FROM callbacks WHERE trace_id = $1 AND callback_id = $2 AND consumed_at IS NULL
                     ORDER BY seq LIMIT 1)
                 RETURNING seq)
             SELECT EXISTS (SELECT 1 FROM callbacks WHERE trace_id = $1 AND consumed_at IS NULL
                            AND seq NOT IN (SELECT seq FROM consumed))",
            &[&done.trace_id, &done.consumed_callback, &now],
        )
        .await
        .map_err(pg_error)?
        .get::<_, bool>(0);
    let plan = schedule::plan(step.state, step.poll_after, step.callback_timeout, deadline, waiting, now);
    let (storage, outputs) = (object_text(&step.storage)?, object_text(&step.outputs)?);
    tx.execute(
        "UPDATE invocations SET state = $3, invoke_count = $4, storage = $5, outputs = $6, err = $7, updated_at = $8,
             finish_at = $9, next_run_at = $10, lease_owner = NULL, lease_expires_at = NULL,
             callback_deadline_at = $11, callback_timeout_ms = $12
         WHERE trace_id = $1 AND attempt = $2",
        &[
            &done.trace_id,
            &done.attempt,
            &i16::from(step.state.code()),
            &i64::from(step.invoke_count),
            &storage,
            &outputs,
            &step.err,
            &now,
            &plan.finish_at,
            &plan.next_run_at,
            &plan.callback_deadline_at,
            &timeout_ms(&plan),
        ],
    )
    .await
    .map_err(pg_error)?;
    append_logs(&tx, &done.trace_id, &done.logs).await?;
    append_reports(&tx, &done.trace_id, &done.reports, &done.report_files).await?;
    let trigger = if done.consumed_callback.is_some() { "callback" } else { "poll" };
    let execute = Execute { trigger, invoke_count: step.invoke_count, state: step.state, err: step.err.as_deref() };
    append_execute(&tx, &done.trace_id, &execute, now, done.duration).await?;
    if let Some(callback) = &done.finish_callback {
        enqueue(&tx, &done.trace_id, callback).await?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok(true)
}

pub(crate) async fn release(c: &Object, trace_id: &str, attempt: i64) -> Res<()> {
    c.execute(
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
        .query_one("SELECT MIN(next_run_at) - plugd_now_ms() FROM invocations WHERE next_run_at IS NOT NULL", &[])
        .await
        .map_err(pg_error)?;
    Ok(wait_of(&row))
}

/// Keeps a callback; `true` in the second place when it made the invocation due now.
pub(crate) async fn add_callback(c: &mut Object, trace_id: &str, callback: &Callback) -> Res<(CallbackReceipt, bool)> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let now = lock_trace(&tx, trace_id).await?;
    let row = tx
        .query_opt("SELECT state, lease_owner FROM invocations WHERE trace_id = $1 FOR UPDATE", &[&trace_id])
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
        .query_opt(
            "SELECT data FROM callbacks WHERE callback_id = $1 AND trace_id = $2 ORDER BY seq DESC LIMIT 1",
            &[&callback.id, &trace_id],
        )
        .await
        .map_err(pg_error)?;
    if last.is_some_and(|r| serde_json::from_str::<Value>(r.get(0)).is_ok_and(|data| data == callback.data)) {
        return Ok((CallbackReceipt::AlreadyReceived, false));
    }
    tx.execute(
        "INSERT INTO callbacks (callback_id, trace_id, data, received_at) VALUES ($1, $2, $3, $4)",
        &[&callback.id, &trace_id, &callback.data.to_string(), &now],
    )
    .await
    .map_err(pg_error)?;
    // Due now if it waits for a callback and no execute holds it; otherwise the running execute's
    // completion (or the commit of its first step) sees the pending callback.
    let mut due = false;
    if let Some((State::Callback, None)) = row {
        tx.execute(
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
        .query_opt("SELECT state FROM invocations WHERE trace_id = $1 FOR UPDATE", &[&trace_id])
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
    tx.execute(
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
        .query(
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
    c.execute(sql, &[&id, &error, &after]).await.map_err(pg_error)?;
    Ok(())
}

pub(crate) async fn next_outbox_due(c: &Object) -> Res<Option<Duration>> {
    let row = c
        .query_one(
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
        .query(
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
    c.execute(
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
    let rows = c.query("SELECT state, COUNT(*) FROM invocations GROUP BY state", &[]).await.map_err(pg_error)?;
    for row in rows {
        let (state, count): (i16, i64) = (row.get(0), row.get(1));
        if let Some(slot) = usize::try_from(state).ok().and_then(|s| stats.by_state.get_mut(s)) {
            *slot = count as u64;
        }
    }
    let row = c
        .query_one(
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
    c.execute(
        "INSERT INTO settings (key, value) VALUES ('write_probe', '\\x01')
         ON CONFLICT (key) DO UPDATE SET value = excluded.value",
        &[],
    )
    .await
    .map_err(pg_error)?;
    Ok(())
}
