//! `callback/{token}`, `logs/{trace_id}` and `cancel/{trace_id}`.

use std::collections::HashMap;
use std::time::SystemTime;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use plugd_core::store::{CallbackReceipt, CancelOutcome};
use plugd_sdk::Callback;
use serde_json::{json, Value};

use super::{unreadable_body, Addressed};
use crate::state::{now_ms, AppState};
use crate::wire::{self, fail, Answer};

/// The callback endpoint's envelope: the Python framework's `{"result", "message"}` (no `trace_id`),
/// with the `data: null` of every other reply.
fn reply(status: StatusCode, result: bool, message: &str) -> Response {
    (status, Json(json!({"result": result, "data": null, "message": message}))).into_response()
}

/// A third party calls back. The signed token says which invocation and which prepared callback;
/// nothing changes unless the token verifies, the body is JSON, and the callback id is new.
pub(super) async fn callback(
    State(state): State<AppState>,
    Path(params): Path<HashMap<String, String>>,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let token = params.get("token").map(String::as_str).unwrap_or_default();
    let claims = match state.signer.verify(token, SystemTime::now()) {
        Ok(claims) => claims,
        // The framework's wording (`invalid token <token>`), with the reason.
        Err(e) => return reply(StatusCode::BAD_REQUEST, false, &format!("invalid token {token}: {e}")),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => {
            let (status, message) = unreadable_body(rejection);
            return reply(status, false, &message);
        }
    };
    let Ok(data) = serde_json::from_slice::<Value>(&body) else {
        return reply(StatusCode::BAD_REQUEST, false, "invalid request body");
    };
    // Under /plugins/{plugin}/, only that plugin's invocations take callbacks. (A callback that
    // arrives before its invocation is stored cannot be checked yet, and is kept as today.)
    if let Some(plugin) = params.get("plugin") {
        match state.store.get(&claims.trace_id).await {
            Ok(Some(stored)) if &stored.invocation.plugin != plugin => {
                let message = format!("invalid token {token}: not a callback of plugin {plugin}");
                return reply(StatusCode::BAD_REQUEST, false, &message);
            }
            Ok(_) => {}
            Err(e) => {
                return reply(StatusCode::SERVICE_UNAVAILABLE, false, &format!("callback could not be read: {e}"))
            }
        }
    }
    let callback = Callback { id: claims.callback_id.clone(), data };
    match state.store.add_callback(&claims.trace_id, callback, now_ms()).await {
        Ok(CallbackReceipt::Accepted) => {
            state.event_streams.touch(&claims.trace_id);
            state.metrics.callbacks.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            state.wake_scheduler.notify_one();
            reply(StatusCode::OK, true, "callback success")
        }
        Ok(CallbackReceipt::AlreadyReceived) => reply(StatusCode::OK, true, "callback already received"),
        Ok(CallbackReceipt::Finished(finished)) => reply(
            StatusCode::BAD_REQUEST,
            false,
            &format!("callback fail,schedule plugin state[{}]: is not callback", finished.code()),
        ),
        Err(e) => {
            tracing::error!(trace_id = %claims.trace_id, "cannot store a callback: {e}");
            reply(StatusCode::SERVICE_UNAVAILABLE, false, &format!("callback could not be stored: {e}"))
        }
    }
}

pub(super) async fn logs(State(state): State<AppState>, addressed: Addressed) -> Response {
    let trace_id = addressed.param("trace_id").to_owned();
    let not_found = || fail(StatusCode::OK, &format!("can not find schedule for trace_id {trace_id}"), None);
    match addressed.invocation(&state, &trace_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(),
        Err(e) => return fail(StatusCode::SERVICE_UNAVAILABLE, &format!("logs read error: {e}"), None),
    }
    match state.store.logs(&trace_id).await {
        Ok(Some(log)) => Answer::new(wire::Logs { log }, "").into_response(),
        Ok(None) => not_found(),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, &format!("logs read error: {e}"), None),
    }
}

/// Fails a pending invocation; a running execute of it loses its claim and its result is dropped.
pub(super) async fn cancel(State(state): State<AppState>, addressed: Addressed) -> Response {
    let trace_id = addressed.param("trace_id").to_owned();
    let stored = match addressed.invocation(&state, &trace_id).await {
        Ok(stored) => stored,
        Err(e) => return fail(StatusCode::SERVICE_UNAVAILABLE, &format!("cancel failed: {e}"), None),
    };
    let Some(stored) = stored else {
        return fail(StatusCode::NOT_FOUND, &format!("can not find schedule for trace_id {trace_id}"), None);
    };
    let finish_callback = state.finish_callback_for(&stored.invocation);
    let wake_outbox = finish_callback.is_some();
    match state.store.cancel(&trace_id, "cancelled by request", now_ms(), finish_callback).await {
        Ok(CancelOutcome::Cancelled) => {
            state.event_streams.touch(&trace_id);
            if wake_outbox {
                state.wake_outbox.notify_one();
            }
            let cancelled = wire::Cancelled { trace_id, state: plugd_sdk::State::Fail.into() };
            Answer::new(cancelled, "cancelled").into_response()
        }
        Ok(CancelOutcome::AlreadyFinished(finished)) => {
            fail(StatusCode::CONFLICT, &format!("invocation {trace_id} already finished in state {finished}"), None)
        }
        Ok(CancelOutcome::NotFound) => {
            fail(StatusCode::NOT_FOUND, &format!("can not find schedule for trace_id {trace_id}"), None)
        }
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, &format!("cancel failed: {e}"), None),
    }
}
