//! Callbacks as they arrive.

use plugd_core::schedule::{self};
use plugd_core::store::{CallbackReceipt, Millis};
use plugd_sdk::Callback;
use rusqlite::{params, Connection, OptionalExtension};
use serde_json::Value;

use crate::sql_error;

use super::{state_of, Res};

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
