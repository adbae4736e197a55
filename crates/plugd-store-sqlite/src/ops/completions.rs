//! What ends or moves an invocation: a claimed execute's completion, and cancel.

use plugd_core::schedule::{self};
use plugd_core::store::{CancelOutcome, Completion, FinishCallback, Millis};
use rusqlite::{params, Connection, OptionalExtension};

use crate::sql_error;

use super::{
    append_execute, append_logs, append_report_files, append_reports, enqueue, millis_of, object_text, plan, state_of,
    Execute, Res,
};

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
