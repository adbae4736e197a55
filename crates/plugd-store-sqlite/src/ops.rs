//! The SQL of every store operation. Writes run on the writer thread inside a batch transaction.

use std::time::Duration;

use plugd_core::schedule::{self, ClaimDecision, Deadlines, Plan};
use plugd_core::store::{
    millis_after, until, CallbackReceipt, CancelOutcome, Claim, Completion, Delivery, ExecuteRecord, FinishCallback,
    HistoryPage, HistoryQuery, InvocationSummary, Millis, NewInvocation, OutboxItem, ReportFile, StoreError,
    StoreStats, StoredInvocation, Visibility,
};
use plugd_core::Invocation;
use plugd_sdk::{Callback, State};
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{Map, Value};

use crate::{data_error, sql_error};

/// Logs of one invocation are cut at this many characters.
const MAX_LOG_CHARS: usize = 64 * 1024;

pub(crate) const COLUMNS: &str = "trace_id, plugin, version, state, invoke_count, inputs, context, storage, outputs, err, \
                       created_at, updated_at, finish_at, next_run_at, lease_owner, lease_expires_at, attempt, deadline_at, created_by, \
                       callback_deadline_at, callback_timeout_ms";

pub(crate) type Res<T> = Result<T, StoreError>;

fn json_object(text: &str, column: &str) -> Res<Map<String, Value>> {
    match serde_json::from_str(text) {
        Ok(Value::Object(map)) => Ok(map),
        _ => Err(data_error(format!("column {column} does not hold a JSON object"))),
    }
}

pub(crate) fn state_of(code: u8) -> Res<State> {
    State::from_code(code).ok_or_else(|| data_error(format!("unknown state code {code}")))
}

pub(crate) fn read_row(row: &Row<'_>) -> rusqlite::Result<Res<StoredInvocation>> {
    let state_code: u8 = row.get(3)?;
    let inputs: String = row.get(5)?;
    let context: String = row.get(6)?;
    let storage: String = row.get(7)?;
    let outputs: String = row.get(8)?;
    let parsed = (|| {
        let state = state_of(state_code)?;
        Ok(StoredInvocation {
            invocation: Invocation {
                trace_id: row.get(0).map_err(sql_error)?,
                plugin: row.get(1).map_err(sql_error)?,
                version: row.get(2).map_err(sql_error)?,
                state,
                invoke_count: row.get(4).map_err(sql_error)?,
                inputs: serde_json::from_str(&inputs).map_err(data_error)?,
                context: serde_json::from_str(&context).map_err(data_error)?,
                storage: json_object(&storage, "storage")?,
                outputs: json_object(&outputs, "outputs")?,
                err: row.get(9).map_err(sql_error)?,
                reports: Vec::new(),
            },
            created_at: row.get(10).map_err(sql_error)?,
            updated_at: row.get(11).map_err(sql_error)?,
            finish_at: row.get(12).map_err(sql_error)?,
            next_run_at: row.get(13).map_err(sql_error)?,
            lease_owner: row.get(14).map_err(sql_error)?,
            lease_expires_at: row.get(15).map_err(sql_error)?,
            attempt: row.get(16).map_err(sql_error)?,
            deadline_at: row.get(17).map_err(sql_error)?,
            created_by: row.get(18).map_err(sql_error)?,
            callback_deadline_at: row.get(19).map_err(sql_error)?,
            callback_timeout: row
                .get::<_, Option<i64>>(20)
                .map_err(sql_error)?
                .map(|ms| Duration::from_millis(ms.max(0) as u64)),
        })
    })();
    Ok(parsed)
}

pub(crate) fn get(conn: &Connection, trace_id: &str) -> Res<Option<StoredInvocation>> {
    let mut stmt =
        conn.prepare_cached(&format!("SELECT {COLUMNS} FROM invocations WHERE trace_id = ?1")).map_err(sql_error)?;
    stmt.query_row([trace_id], read_row).optional().map_err(sql_error)?.transpose()
}

fn exists(conn: &Connection, trace_id: &str) -> Res<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM invocations WHERE trace_id = ?1)")
        .and_then(|mut s| s.query_row([trace_id], |r| r.get(0)))
        .map_err(sql_error)
}

pub(crate) fn logs(conn: &Connection, trace_id: &str) -> Res<Option<String>> {
    if !exists(conn, trace_id)? {
        return Ok(None);
    }
    let text: Option<String> = conn
        .prepare_cached("SELECT text FROM logs WHERE trace_id = ?1")
        .and_then(|mut s| s.query_row([trace_id], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    Ok(Some(text.unwrap_or_default()))
}

pub(crate) fn secret(conn: &Connection, generate: Vec<u8>) -> Res<Vec<u8>> {
    conn.execute(
        "INSERT INTO settings (key, value) VALUES ('callback_secret', ?1) ON CONFLICT DO NOTHING",
        [&generate],
    )
    .map_err(sql_error)?;
    conn.query_row("SELECT value FROM settings WHERE key = 'callback_secret'", [], |r| r.get(0)).map_err(sql_error)
}

/// Appends to an invocation's logs, keeping the last `MAX_LOG_CHARS` characters: the end of a long
/// run is what explains how it ended. Joined here, not with SQL's `||` and `substr`, which stop at a
/// NUL (a log line may hold one); the writer thread is the only writer, so nothing comes between.
fn append_logs(conn: &Connection, trace_id: &str, text: &str) -> Res<()> {
    if text.is_empty() {
        return Ok(());
    }
    let mut logs: String = conn
        .prepare_cached("SELECT text FROM logs WHERE trace_id = ?1")
        .and_then(|mut s| s.query_row([trace_id], |r| r.get(0)).optional())
        .map_err(sql_error)?
        .unwrap_or_default();
    logs.push_str(text);
    let excess = logs.chars().count().saturating_sub(MAX_LOG_CHARS);
    let kept = logs.char_indices().nth(excess).map_or("", |(at, _)| &logs[at..]);
    conn.prepare_cached("INSERT OR REPLACE INTO logs (trace_id, text) VALUES (?1, ?2)")
        .and_then(|mut s| s.execute(params![trace_id, kept]))
        .map_err(sql_error)?;
    Ok(())
}

fn append_reports(conn: &Connection, trace_id: &str, reports: &[Value]) -> Res<()> {
    for report in reports {
        conn.prepare_cached(
            "INSERT INTO reports (trace_id, seq, report)
             VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM reports WHERE trace_id = ?1), ?2)",
        )
        .and_then(|mut s| s.execute(params![trace_id, report.to_string()]))
        .map_err(sql_error)?;
    }
    Ok(())
}

pub(crate) fn reports(conn: &Connection, trace_id: &str) -> Res<Option<Vec<Value>>> {
    if !exists(conn, trace_id)? {
        return Ok(None);
    }
    let texts: Vec<String> = conn
        .prepare_cached("SELECT report FROM reports WHERE trace_id = ?1 ORDER BY seq")
        .and_then(|mut s| s.query_map([trace_id], |r| r.get(0))?.collect())
        .map_err(sql_error)?;
    texts.iter().map(|t| serde_json::from_str(t).map_err(data_error)).collect::<Res<Vec<Value>>>().map(Some)
}

fn oldest_pending_callback(conn: &Connection, trace_id: &str) -> Res<Option<Callback>> {
    let pending: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT callback_id, data FROM callbacks WHERE trace_id = ?1 AND consumed_at IS NULL ORDER BY seq LIMIT 1",
        )
        .and_then(|mut s| s.query_row([trace_id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(sql_error)?;
    pending.map(|(id, data)| Ok(Callback { id, data: serde_json::from_str(&data).map_err(data_error)? })).transpose()
}

fn has_pending_callbacks(conn: &Connection, trace_id: &str) -> Res<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM callbacks WHERE trace_id = ?1 AND consumed_at IS NULL)")
        .and_then(|mut s| s.query_row([trace_id], |r| r.get(0)))
        .map_err(sql_error)
}

/// The [`schedule::plan`] of an execute's result, with what the database knows (whether a
/// callback posted early waits for it).
fn plan(
    conn: &Connection,
    trace_id: &str,
    state: State,
    poll_after: Option<Duration>,
    callback_timeout: Option<Duration>,
    deadline_at: Option<Millis>,
    now: Millis,
) -> Res<Plan> {
    let waiting = state == State::Callback && has_pending_callbacks(conn, trace_id)?;
    Ok(schedule::plan(state, poll_after, callback_timeout, deadline_at, waiting, now))
}

fn millis_of(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

fn append_report_files(conn: &Connection, trace_id: &str, files: &[ReportFile]) -> Res<()> {
    for file in files {
        conn.prepare_cached(
            "INSERT INTO report_files (trace_id, path, content) VALUES (?1, ?2, ?3)
             ON CONFLICT (trace_id, path) DO UPDATE SET content = excluded.content",
        )
        .and_then(|mut s| s.execute(params![trace_id, file.path, file.content]))
        .map_err(sql_error)?;
    }
    Ok(())
}

pub(crate) fn report_file(conn: &Connection, trace_id: &str, path: &str) -> Res<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT content FROM report_files WHERE trace_id = ?1 AND path = ?2")
        .and_then(|mut s| s.query_row([trace_id, path], |r| r.get(0)).optional())
        .map_err(sql_error)
}

/// A JSON object as stored text, without copying it into a `Value` first.
pub(crate) fn object_text(map: &Map<String, Value>) -> Res<String> {
    serde_json::to_string(map).map_err(data_error)
}

fn enqueue(conn: &Connection, trace_id: &str, callback: &FinishCallback, now: Millis) -> Res<()> {
    conn.prepare_cached(
        "INSERT INTO outbox (trace_id, url, body, next_attempt_at, created_at) VALUES (?1, ?2, ?3, ?4, ?4)",
    )
    .and_then(|mut s| s.execute(params![trace_id, callback.url, callback.body, now]))
    .map_err(sql_error)?;
    Ok(())
}

/// The columns of an invocation's row beside the invocation itself.
pub(crate) struct RowFields<'a> {
    pub(crate) created_at: Millis,
    pub(crate) updated_at: Millis,
    pub(crate) finish_at: Option<Millis>,
    pub(crate) next_run_at: Option<Millis>,
    pub(crate) lease_owner: Option<&'a str>,
    pub(crate) lease_expires_at: Option<Millis>,
    pub(crate) attempt: i64,
    pub(crate) deadline_at: Option<Millis>,
    pub(crate) created_by: Option<&'a str>,
    pub(crate) callback_deadline_at: Option<Millis>,
    pub(crate) callback_timeout: Option<Duration>,
}

/// Writes one invocation's row (a new one, or one imported from another store).
pub(crate) fn insert_row(conn: &Connection, inv: &Invocation, row: &RowFields<'_>) -> Res<()> {
    let (storage, outputs) = (object_text(&inv.storage)?, object_text(&inv.outputs)?);
    conn.prepare_cached(&format!(
        "INSERT INTO invocations ({COLUMNS}) VALUES
         (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18, ?19, ?20, ?21)"
    ))
    .and_then(|mut s| {
        s.execute(params![
            inv.trace_id,
            inv.plugin,
            inv.version,
            inv.state.code(),
            inv.invoke_count,
            inv.inputs.to_string(),
            inv.context.to_string(),
            storage,
            outputs,
            inv.err,
            row.created_at,
            row.updated_at,
            row.finish_at,
            row.next_run_at,
            row.lease_owner,
            row.lease_expires_at,
            row.attempt,
            row.deadline_at,
            row.created_by,
            row.callback_deadline_at,
            millis_of(row.callback_timeout),
        ])
    })
    .map_err(sql_error)?;
    Ok(())
}

pub(crate) fn insert(conn: &Connection, new: &NewInvocation) -> Res<()> {
    let inv = &new.invocation;
    let state = inv.state;
    let deadline_at = schedule::deadline_at(new.now, new.deadline);
    let plan = plan(conn, &inv.trace_id, state, new.poll_after, new.callback_timeout, deadline_at, new.now)?;
    let row = RowFields {
        created_at: new.now,
        updated_at: new.now,
        finish_at: plan.finish_at,
        next_run_at: plan.next_run_at,
        lease_owner: None,
        lease_expires_at: None,
        attempt: 0,
        deadline_at,
        created_by: new.created_by.as_deref(),
        callback_deadline_at: plan.callback_deadline_at,
        callback_timeout: plan.callback_timeout,
    };
    insert_row(conn, inv, &row)?;
    append_reports(conn, &inv.trace_id, &new.reports)?;
    append_report_files(conn, &inv.trace_id, &new.report_files)?;
    let execute = Execute { trigger: "start", invoke_count: inv.invoke_count, state, err: inv.err.as_deref() };
    append_execute(conn, &inv.trace_id, &execute, new.now, new.duration)?;
    append_logs(conn, &inv.trace_id, &new.logs)
}

/// An execute as [`append_execute`] records it.
struct Execute<'a> {
    trigger: &'static str,
    invoke_count: u32,
    state: State,
    err: Option<&'a str>,
}

/// Records an execute that ended at `now` after running `duration`.
fn append_execute(conn: &Connection, trace_id: &str, e: &Execute<'_>, now: Millis, duration: Duration) -> Res<()> {
    let micros = i64::try_from(duration.as_micros()).unwrap_or(i64::MAX);
    let started_at = now.saturating_sub(micros / 1000);
    conn.prepare_cached(
        "INSERT INTO executes (trace_id, seq, trigger, invoke_count, started_at, duration_us, state, err)
         VALUES (?1, (SELECT COALESCE(MAX(seq), 0) + 1 FROM executes WHERE trace_id = ?1), ?2, ?3, ?4, ?5, ?6, ?7)",
    )
    .and_then(|mut s| {
        s.execute(params![trace_id, e.trigger, e.invoke_count, started_at, micros, e.state.code(), e.err])
    })
    .map_err(sql_error)?;
    Ok(())
}

pub(crate) fn executes(conn: &Connection, trace_id: &str) -> Res<Option<Vec<ExecuteRecord>>> {
    if !exists(conn, trace_id)? {
        return Ok(None);
    }
    type Row = (String, u32, Millis, i64, u8, Option<String>);
    let rows: Vec<Row> = conn
        .prepare_cached(
            "SELECT trigger, invoke_count, started_at, duration_us, state, err FROM executes
             WHERE trace_id = ?1 ORDER BY seq",
        )
        .and_then(|mut s| {
            s.query_map([trace_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?)))?
                .collect()
        })
        .map_err(sql_error)?;
    rows.into_iter()
        .map(|(trigger, invoke_count, started_at, micros, code, err)| {
            let state = state_of(code)?;
            let duration = Duration::from_micros(u64::try_from(micros).unwrap_or(0));
            Ok(ExecuteRecord { trigger, invoke_count, started_at, duration, state, err })
        })
        .collect::<Res<Vec<_>>>()
        .map(Some)
}

pub(crate) fn history(conn: &Connection, q: &HistoryQuery) -> Res<HistoryPage> {
    // Each filter is `?n IS NULL OR column = ?n`: one cached statement serves every combination.
    let filter = "(?1 IS NULL OR plugin = ?1) AND (?2 IS NULL OR version = ?2) AND (?3 IS NULL OR state = ?3)
                  AND (?4 IS NULL OR created_by = ?4)";
    let created_by = match q.viewer.visibility() {
        Visibility::Nothing => return Ok(HistoryPage::default()),
        Visibility::Everything => None,
        Visibility::CreatedBy(app) => Some(app),
    };
    let state = q.state.map(State::code);
    let total: i64 = conn
        .prepare_cached(&format!("SELECT COUNT(*) FROM invocations WHERE {filter}"))
        .and_then(|mut s| s.query_row(params![q.plugin, q.version, state, created_by], |r| r.get(0)))
        .map_err(sql_error)?;
    type Row = (String, String, String, u8, u32, Option<String>, Millis, Option<Millis>);
    let rows: Vec<Row> = conn
        .prepare_cached(&format!(
            "SELECT trace_id, plugin, version, state, invoke_count, err, created_at, finish_at FROM invocations
             WHERE {filter} ORDER BY created_at DESC, trace_id DESC LIMIT ?5 OFFSET ?6"
        ))
        .and_then(|mut s| {
            let limit = i64::try_from(q.limit).unwrap_or(i64::MAX);
            let offset = i64::try_from(q.offset).unwrap_or(i64::MAX);
            s.query_map(params![q.plugin, q.version, state, created_by, limit, offset], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?, r.get(5)?, r.get(6)?, r.get(7)?))
            })?
            .collect()
        })
        .map_err(sql_error)?;
    let items = rows
        .into_iter()
        .map(|(trace_id, plugin, version, code, invoke_count, err, created_at, finish_at)| {
            let state = state_of(code)?;
            Ok(InvocationSummary { trace_id, plugin, version, state, invoke_count, err, created_at, finish_at })
        })
        .collect::<Res<Vec<_>>>()?;
    Ok(HistoryPage { items, total: total.max(0) as u64 })
}

pub(crate) fn claim(
    conn: &Connection,
    now: Millis,
    limit: usize,
    owner: &str,
    lease: Duration,
    served: &str,
) -> Res<Vec<Claim>> {
    let until = millis_after(now, lease);
    type Due = (String, Millis, u8, Option<Millis>, Option<Millis>);
    let due: Vec<Due> = conn
        .prepare_cached(
            "SELECT trace_id, next_run_at, state, deadline_at, callback_deadline_at FROM invocations
             WHERE next_run_at IS NOT NULL AND next_run_at <= ?1
                 AND plugin || '@' || version IN (SELECT value FROM json_each(?3))
             ORDER BY next_run_at LIMIT ?2",
        )
        .and_then(|mut s| {
            s.query_map(params![now, limit as i64, served], |r| {
                Ok((r.get(0)?, r.get(1)?, r.get(2)?, r.get(3)?, r.get(4)?))
            })?
            .collect()
        })
        .map_err(sql_error)?;
    let mut claims = Vec::with_capacity(due.len());
    for (trace_id, due_at, code, deadline, callback_deadline) in due {
        let state = state_of(code)?;
        let pending = if state == State::Callback { oldest_pending_callback(conn, &trace_id)? } else { None };
        let deadlines = Deadlines { invocation: deadline, callback: callback_deadline };
        let trigger = match schedule::claim_decision(state, pending, deadlines, now) {
            ClaimDecision::Execute(trigger) => trigger,
            ClaimDecision::WaitUntil(at) => {
                conn.prepare_cached(
                    "UPDATE invocations SET next_run_at = ?2, lease_owner = NULL, lease_expires_at = NULL
                     WHERE trace_id = ?1",
                )
                .and_then(|mut s| s.execute(params![trace_id, at]))
                .map_err(sql_error)?;
                continue;
            }
        };
        let mut stmt = conn
            .prepare_cached(&format!(
                "UPDATE invocations SET attempt = attempt + 1, lease_owner = ?2, lease_expires_at = ?3, next_run_at = ?3
                 WHERE trace_id = ?1 RETURNING {COLUMNS}"
            ))
            .map_err(sql_error)?;
        let stored = stmt.query_row(params![trace_id, owner, until], read_row).map_err(sql_error)??;
        claims.push(Claim { stored, due_at, claimed_at: now, trigger });
    }
    Ok(claims)
}

pub(crate) fn renew(conn: &Connection, trace_id: &str, attempt: i64, now: Millis, lease: Duration) -> Res<bool> {
    let until = millis_after(now, lease);
    let changed = conn
        .prepare_cached(
            "UPDATE invocations SET lease_expires_at = ?3, next_run_at = ?3
             WHERE trace_id = ?1 AND attempt = ?2 AND lease_owner IS NOT NULL",
        )
        .and_then(|mut s| s.execute(params![trace_id, attempt, until]))
        .map_err(sql_error)?;
    Ok(changed == 1)
}

pub(crate) fn complete(conn: &Connection, c: &Completion) -> Res<bool> {
    // One read both checks the claim is still held and fetches the deadline.
    let held: Option<Option<Millis>> = conn
        .prepare_cached(
            "SELECT deadline_at FROM invocations WHERE trace_id = ?1 AND attempt = ?2 AND lease_owner IS NOT NULL",
        )
        .and_then(|mut s| s.query_row(params![c.trace_id, c.attempt], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    let Some(deadline) = held else {
        return Ok(false);
    };
    if let Some(id) = &c.consumed_callback {
        // The post delivered is the oldest one of that id not yet consumed (one execute at a time).
        conn.prepare_cached(
            "UPDATE callbacks SET consumed_at = ?3 WHERE seq = (
                 SELECT seq FROM callbacks WHERE trace_id = ?1 AND callback_id = ?2 AND consumed_at IS NULL
                 ORDER BY seq LIMIT 1)",
        )
        .and_then(|mut s| s.execute(params![c.trace_id, id, c.now]))
        .map_err(sql_error)?;
    }
    let step = &c.step;
    let plan = plan(conn, &c.trace_id, step.state, step.poll_after, step.callback_timeout, deadline, c.now)?;
    let (storage, outputs) = (object_text(&step.storage)?, object_text(&step.outputs)?);
    conn.prepare_cached(
        "UPDATE invocations SET state = ?3, invoke_count = ?4, storage = ?5, outputs = ?6, err = ?7, updated_at = ?8,
             finish_at = ?9, next_run_at = ?10, lease_owner = NULL, lease_expires_at = NULL,
             callback_deadline_at = ?11, callback_timeout_ms = ?12
         WHERE trace_id = ?1 AND attempt = ?2",
    )
    .and_then(|mut s| {
        s.execute(params![
            c.trace_id,
            c.attempt,
            step.state.code(),
            step.invoke_count,
            storage,
            outputs,
            step.err,
            c.now,
            plan.finish_at,
            plan.next_run_at,
            plan.callback_deadline_at,
            millis_of(plan.callback_timeout),
        ])
    })
    .map_err(sql_error)?;
    append_logs(conn, &c.trace_id, &c.logs)?;
    append_reports(conn, &c.trace_id, &c.reports)?;
    append_report_files(conn, &c.trace_id, &c.report_files)?;
    let trigger = if c.consumed_callback.is_some() { "callback" } else { "poll" };
    let execute = Execute { trigger, invoke_count: step.invoke_count, state: step.state, err: step.err.as_deref() };
    append_execute(conn, &c.trace_id, &execute, c.now, c.duration)?;
    if let Some(callback) = &c.finish_callback {
        enqueue(conn, &c.trace_id, callback, c.now)?;
    }
    Ok(true)
}

pub(crate) fn release(conn: &Connection, trace_id: &str, attempt: i64, now: Millis) -> Res<()> {
    conn.prepare_cached(
        "UPDATE invocations SET lease_owner = NULL, lease_expires_at = NULL, next_run_at = ?3
         WHERE trace_id = ?1 AND attempt = ?2 AND lease_owner IS NOT NULL",
    )
    .and_then(|mut s| s.execute(params![trace_id, attempt, now]))
    .map_err(sql_error)?;
    Ok(())
}

pub(crate) fn next_due(conn: &Connection, now: Millis, served: &str) -> Res<Option<Duration>> {
    let at: Option<Millis> = conn
        .prepare_cached(
            "SELECT MIN(next_run_at) FROM invocations WHERE next_run_at IS NOT NULL
                 AND plugin || '@' || version IN (SELECT value FROM json_each(?1))",
        )
        .and_then(|mut s| s.query_row([served], |r| r.get(0)))
        .map_err(sql_error)?;
    Ok(at.map(|at| until(now, at)))
}

pub(crate) fn add_callback(
    conn: &Connection,
    trace_id: &str,
    callback: &Callback,
    now: Millis,
) -> Res<CallbackReceipt> {
    let row: Option<(u8, Option<String>, Option<Millis>)> = conn
        .prepare_cached("SELECT state, lease_owner, next_run_at FROM invocations WHERE trace_id = ?1")
        .and_then(|mut s| s.query_row([trace_id], |r| Ok((r.get(0)?, r.get(1)?, r.get(2)?))).optional())
        .map_err(sql_error)?;
    let row = row.map(|(code, owner, due)| state_of(code).map(|state| (state, owner.is_some(), due))).transpose()?;
    if let Some((state, ..)) = row {
        if state.is_final() {
            return Ok(CallbackReceipt::Finished(state));
        }
    }
    // The same post again (a third party retrying after a lost reply) is not a new callback.
    let last: Option<String> = conn
        .prepare_cached("SELECT data FROM callbacks WHERE callback_id = ?1 AND trace_id = ?2 ORDER BY seq DESC LIMIT 1")
        .and_then(|mut s| s.query_row(params![callback.id, trace_id], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    if last.is_some_and(|text| serde_json::from_str::<Value>(&text).is_ok_and(|data| data == callback.data)) {
        return Ok(CallbackReceipt::AlreadyReceived);
    }
    conn.prepare_cached("INSERT INTO callbacks (callback_id, trace_id, data, received_at) VALUES (?1, ?2, ?3, ?4)")
        .and_then(|mut s| s.execute(params![callback.id, trace_id, callback.data.to_string(), now]))
        .map_err(sql_error)?;
    let due = row.and_then(|(state, leased, due)| schedule::due_on_callback(state, leased, due, now));
    if let Some(due) = due {
        conn.prepare_cached("UPDATE invocations SET next_run_at = ?2 WHERE trace_id = ?1")
            .and_then(|mut s| s.execute(params![trace_id, due]))
            .map_err(sql_error)?;
    }
    Ok(CallbackReceipt::Accepted)
}

pub(crate) fn cancel(
    conn: &Connection,
    trace_id: &str,
    err: &str,
    now: Millis,
    finish_callback: Option<&FinishCallback>,
) -> Res<CancelOutcome> {
    let code: Option<u8> = conn
        .prepare_cached("SELECT state FROM invocations WHERE trace_id = ?1")
        .and_then(|mut s| s.query_row([trace_id], |r| r.get(0)).optional())
        .map_err(sql_error)?;
    let Some(code) = code else {
        return Ok(CancelOutcome::NotFound);
    };
    let (state, plan) = match schedule::cancelled(state_of(code)?, now) {
        Ok(cancelled) => cancelled,
        Err(finished) => return Ok(CancelOutcome::AlreadyFinished(finished)),
    };
    // The attempt bump fences out an execute that may be running.
    conn.prepare_cached(
        "UPDATE invocations SET state = ?2, err = ?3, updated_at = ?4, finish_at = ?5, next_run_at = ?6,
             lease_owner = NULL, lease_expires_at = NULL, attempt = attempt + 1
         WHERE trace_id = ?1",
    )
    .and_then(|mut s| s.execute(params![trace_id, state.code(), err, now, plan.finish_at, plan.next_run_at]))
    .map_err(sql_error)?;
    if let Some(callback) = finish_callback {
        enqueue(conn, trace_id, callback, now)?;
    }
    Ok(CancelOutcome::Cancelled)
}

pub(crate) fn claim_outbox(conn: &Connection, now: Millis, limit: usize, lease: Duration) -> Res<Vec<OutboxItem>> {
    let until = millis_after(now, lease);
    conn.prepare_cached(
        "UPDATE outbox SET next_attempt_at = ?3 WHERE id IN (
             SELECT id FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL AND next_attempt_at <= ?1
             ORDER BY next_attempt_at LIMIT ?2)
         RETURNING id, trace_id, url, body, attempts",
    )
    .and_then(|mut s| {
        s.query_map(params![now, limit as i64, until], |r| {
            Ok(OutboxItem {
                id: r.get(0)?,
                trace_id: r.get(1)?,
                callback: FinishCallback { url: r.get(2)?, body: r.get(3)? },
                attempts: r.get(4)?,
            })
        })?
        .collect()
    })
    .map_err(sql_error)
}

pub(crate) fn finish_delivery(conn: &Connection, id: i64, delivery: &Delivery, now: Millis) -> Res<()> {
    let (sql, error, at): (&str, Option<&str>, Millis) = match delivery {
        Delivery::Delivered => {
            ("UPDATE outbox SET attempts = attempts + 1, delivered_at = ?3, last_error = ?2 WHERE id = ?1", None, now)
        }
        Delivery::Retry { after, error } => (
            "UPDATE outbox SET attempts = attempts + 1, next_attempt_at = ?3, last_error = ?2 WHERE id = ?1",
            Some(error),
            millis_after(now, *after),
        ),
        Delivery::GaveUp { error } => (
            "UPDATE outbox SET attempts = attempts + 1, gave_up_at = ?3, last_error = ?2 WHERE id = ?1",
            Some(error),
            now,
        ),
    };
    conn.prepare_cached(sql).and_then(|mut s| s.execute(params![id, error, at])).map_err(sql_error)?;
    Ok(())
}

pub(crate) fn next_outbox_due(conn: &Connection, now: Millis) -> Res<Option<Duration>> {
    let at: Option<Millis> = conn
        .prepare_cached("SELECT MIN(next_attempt_at) FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL")
        .and_then(|mut s| s.query_row([], |r| r.get(0)))
        .map_err(sql_error)?;
    Ok(at.map(|at| until(now, at)))
}

pub(crate) fn purge_finished(conn: &Connection, now: Millis, keep: Duration, limit: usize) -> Res<Vec<String>> {
    let before = schedule::retention_cutoff(now, keep);
    let gone: Vec<String> = conn
        .prepare_cached(
            "DELETE FROM invocations WHERE trace_id IN (
                 SELECT trace_id FROM invocations WHERE finish_at IS NOT NULL AND finish_at < ?1 LIMIT ?2)
             RETURNING trace_id",
        )
        .and_then(|mut s| s.query_map(params![before, limit as i64], |r| r.get(0))?.collect())
        .map_err(sql_error)?;
    for trace_id in &gone {
        for sql in [
            "DELETE FROM logs WHERE trace_id = ?1",
            "DELETE FROM reports WHERE trace_id = ?1",
            "DELETE FROM report_files WHERE trace_id = ?1",
            "DELETE FROM callbacks WHERE trace_id = ?1",
            "DELETE FROM executes WHERE trace_id = ?1",
            "DELETE FROM outbox WHERE trace_id = ?1 AND (delivered_at IS NOT NULL OR gave_up_at IS NOT NULL)",
        ] {
            conn.prepare_cached(sql).and_then(|mut s| s.execute([trace_id])).map_err(sql_error)?;
        }
    }
    // Callbacks for invocations that never committed (their invoke failed) expire too.
    conn.prepare_cached(
        "DELETE FROM callbacks WHERE rowid IN (
             SELECT c.rowid FROM callbacks c LEFT JOIN invocations i ON i.trace_id = c.trace_id
             WHERE i.trace_id IS NULL AND c.received_at < ?1 LIMIT ?2)",
    )
    .and_then(|mut s| s.execute(params![before, limit as i64]))
    .map_err(sql_error)?;
    conn.execute_batch("PRAGMA incremental_vacuum(256)").map_err(sql_error)?;
    Ok(gone)
}

pub(crate) fn schema_version(conn: &Connection) -> Res<i64> {
    conn.query_row("PRAGMA user_version", [], |r| r.get(0)).map_err(sql_error)
}

pub(crate) fn stats(conn: &Connection, now: Millis) -> Res<StoreStats> {
    let mut stats = StoreStats::default();
    let counts: Vec<(i64, i64)> = conn
        .prepare_cached("SELECT state, COUNT(*) FROM invocations GROUP BY state")
        .and_then(|mut s| s.query_map([], |r| Ok((r.get(0)?, r.get(1)?)))?.collect())
        .map_err(sql_error)?;
    for (state, count) in counts {
        if let Some(slot) = stats.by_state.get_mut(state as usize) {
            *slot = count as u64;
        }
    }
    stats.due = conn
        .prepare_cached("SELECT COUNT(*) FROM invocations WHERE next_run_at IS NOT NULL AND next_run_at <= ?1 AND lease_owner IS NULL")
        .and_then(|mut s| s.query_row([now], |r| r.get::<_, i64>(0)))
        .map_err(sql_error)? as u64;
    stats.outbox_pending = conn
        .prepare_cached("SELECT COUNT(*) FROM outbox WHERE delivered_at IS NULL AND gave_up_at IS NULL")
        .and_then(|mut s| s.query_row([], |r| r.get::<_, i64>(0)))
        .map_err(sql_error)? as u64;
    Ok(stats)
}
