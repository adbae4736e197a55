//! Claims: taking due invocations under a lease, renewing and releasing it, and the next due time.

use std::time::Duration;

use plugd_core::schedule::{self, ClaimDecision, Deadlines};
use plugd_core::store::{until, Claim, Millis};
use plugd_sdk::{Callback, State};
use rusqlite::{params, Connection, OptionalExtension};

use crate::{data_error, sql_error};

use super::{read_row, state_of, Res, COLUMNS};

pub(super) fn oldest_pending_callback(conn: &Connection, trace_id: &str) -> Res<Option<Callback>> {
    let pending: Option<(String, String)> = conn
        .prepare_cached(
            "SELECT callback_id, data FROM callbacks WHERE trace_id = ?1 AND consumed_at IS NULL ORDER BY seq LIMIT 1",
        )
        .and_then(|mut s| s.query_row([trace_id], |r| Ok((r.get(0)?, r.get(1)?))).optional())
        .map_err(sql_error)?;
    pending.map(|(id, data)| Ok(Callback { id, data: serde_json::from_str(&data).map_err(data_error)? })).transpose()
}

pub(crate) fn claim(
    conn: &Connection,
    now: Millis,
    limit: usize,
    owner: &str,
    lease: Duration,
    served: &str,
) -> Res<Vec<Claim>> {
    let until = schedule::lease_ends(now, lease);
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
    let until = schedule::lease_ends(now, lease);
    let changed = conn
        .prepare_cached(
            "UPDATE invocations SET lease_expires_at = ?3, next_run_at = ?3
             WHERE trace_id = ?1 AND attempt = ?2 AND lease_owner IS NOT NULL",
        )
        .and_then(|mut s| s.execute(params![trace_id, attempt, until]))
        .map_err(sql_error)?;
    Ok(changed == 1)
}

pub(crate) fn release(conn: &Connection, trace_id: &str, attempt: i64, now: Millis) -> Res<()> {
    conn.prepare_cached(
        "UPDATE invocations SET lease_owner = NULL, lease_expires_at = NULL, next_run_at = ?3
         WHERE trace_id = ?1 AND attempt = ?2 AND lease_owner IS NOT NULL",
    )
    .and_then(|mut s| s.execute(params![trace_id, attempt, schedule::due_after_release(now)]))
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
