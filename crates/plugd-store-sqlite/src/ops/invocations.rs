//! New invocations, and what is read of one: its row, logs, reports, report files, executes, and history.

use std::time::Duration;

use plugd_core::schedule::{self};
use plugd_core::store::{
    ExecuteRecord, HistoryPage, HistoryQuery, InvocationSummary, Millis, NewInvocation, Visibility,
};
use plugd_core::Invocation;
use plugd_sdk::State;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::{data_error, sql_error};

use super::{
    append_execute, append_logs, append_report_files, append_reports, exists, millis_of, object_text, plan, state_of,
    Execute, Res, RowFields, COLUMNS,
};

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

pub(crate) fn report_file(conn: &Connection, trace_id: &str, path: &str) -> Res<Option<Vec<u8>>> {
    conn.prepare_cached("SELECT content FROM report_files WHERE trace_id = ?1 AND path = ?2")
        .and_then(|mut s| s.query_row([trace_id, path], |r| r.get(0)).optional())
        .map_err(sql_error)
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
