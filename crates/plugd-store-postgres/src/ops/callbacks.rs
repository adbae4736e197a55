//! Callbacks as they arrive.

use deadpool_postgres::{GenericClient, Object};
use plugd_core::schedule;
use plugd_core::store::{CallbackReceipt, Millis};
use plugd_sdk::{Callback, State};
use serde_json::Value;

use super::{state_of, Cached, Res};
use crate::pg_error;

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

/// Keeps a callback; `true` in the second place when it made the invocation due now.
pub(crate) async fn add_callback(c: &mut Object, trace_id: &str, callback: &Callback) -> Res<(CallbackReceipt, bool)> {
    let tx = c.transaction().await.map_err(pg_error)?;
    let now = lock_trace(&tx, trace_id).await?;
    let row = tx
        .cached_query_opt(
            "SELECT state, lease_owner, next_run_at FROM invocations WHERE trace_id = $1 FOR UPDATE",
            &[&trace_id],
        )
        .await
        .map_err(pg_error)?;
    let row: Option<(State, bool, Option<Millis>)> = match row {
        Some(r) => Some((state_of(r.get(0))?, r.get::<_, Option<String>>(1).is_some(), r.get(2))),
        None => None,
    };
    if let Some((state, ..)) = &row {
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
    let due = row.and_then(|(state, leased, due)| schedule::due_on_callback(state, leased, due, now));
    if let Some(due) = due {
        tx.cached_execute("UPDATE invocations SET next_run_at = $2 WHERE trace_id = $1", &[&trace_id, &due])
            .await
            .map_err(pg_error)?;
    }
    tx.commit().await.map_err(pg_error)?;
    Ok((CallbackReceipt::Accepted, due.is_some()))
}
