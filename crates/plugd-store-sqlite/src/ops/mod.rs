//! The SQL of every store operation, grouped by role as in the PostgreSQL store. Writes run on the
//! writer thread inside a batch transaction.

mod callbacks;
mod claims;
mod completions;
mod invocations;
mod outbox;
mod retention;
mod settings;
mod stats;

pub(crate) use callbacks::add_callback;
pub(crate) use claims::{claim, next_due, release, renew};
pub(crate) use completions::{cancel, complete};
pub(crate) use invocations::{executes, history, insert, insert_row, logs, report_file, reports};
use outbox::enqueue;
pub(crate) use outbox::{claim_outbox, finish_delivery, next_outbox_due};
pub(crate) use retention::purge_finished;
pub(crate) use settings::secret;
pub(crate) use stats::{schema_version, stats};

use std::time::Duration;

use plugd_core::schedule::{self, Plan};
use plugd_core::store::{Millis, ReportFile, StoreError, StoredInvocation};
use plugd_core::Invocation;
use plugd_sdk::State;
use rusqlite::{params, Connection, OptionalExtension, Row};
use serde_json::{Map, Value};

use crate::{data_error, sql_error};

/// Logs of one invocation are cut at this many characters.
pub(super) const MAX_LOG_CHARS: usize = 64 * 1024;

pub(crate) const COLUMNS: &str = "trace_id, plugin, version, state, invoke_count, inputs, context, storage, outputs, err, \
                       created_at, updated_at, finish_at, next_run_at, lease_owner, lease_expires_at, attempt, deadline_at, created_by, \
                       callback_deadline_at, callback_timeout_ms";

pub(crate) type Res<T> = Result<T, StoreError>;

pub(super) fn json_object(text: &str, column: &str) -> Res<Map<String, Value>> {
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

pub(super) fn exists(conn: &Connection, trace_id: &str) -> Res<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM invocations WHERE trace_id = ?1)")
        .and_then(|mut s| s.query_row([trace_id], |r| r.get(0)))
        .map_err(sql_error)
}

/// Appends to an invocation's logs, keeping the last `MAX_LOG_CHARS` characters: the end of a long
/// run is what explains how it ended. Joined here, not with SQL's `||` and `substr`, which stop at a
/// NUL (a log line may hold one); the writer thread is the only writer, so nothing comes between.
pub(super) fn append_logs(conn: &Connection, trace_id: &str, text: &str) -> Res<()> {
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

pub(super) fn append_reports(conn: &Connection, trace_id: &str, reports: &[Value]) -> Res<()> {
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

pub(super) fn has_pending_callbacks(conn: &Connection, trace_id: &str) -> Res<bool> {
    conn.prepare_cached("SELECT EXISTS (SELECT 1 FROM callbacks WHERE trace_id = ?1 AND consumed_at IS NULL)")
        .and_then(|mut s| s.query_row([trace_id], |r| r.get(0)))
        .map_err(sql_error)
}

/// The [`schedule::plan`] of an execute's result, with what the database knows (whether a
/// callback posted early waits for it).
pub(super) fn plan(
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

pub(super) fn millis_of(d: Option<Duration>) -> Option<i64> {
    d.map(|d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
}

pub(super) fn append_report_files(conn: &Connection, trace_id: &str, files: &[ReportFile]) -> Res<()> {
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

/// A JSON object as stored text, without copying it into a `Value` first.
pub(crate) fn object_text(map: &Map<String, Value>) -> Res<String> {
    serde_json::to_string(map).map_err(data_error)
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

/// An execute as [`append_execute`] records it.
pub(super) struct Execute<'a> {
    trigger: &'static str,
    invoke_count: u32,
    state: State,
    err: Option<&'a str>,
}

/// Records an execute that ended at `now` after running `duration`.
pub(super) fn append_execute(
    conn: &Connection,
    trace_id: &str,
    e: &Execute<'_>,
    now: Millis,
    duration: Duration,
) -> Res<()> {
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
