//! `meta`, `detail/{version}`, `invoke/{version}` and `schedule/{trace_id}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use plugd_core::store::{millis_after, NewInvocation};
use plugd_core::{new_trace_id, Invocation, Trigger};
use plugd_sdk::State as InvocationState;
use serde_json::{json, Value};

use super::{body_error, fail, format_time, invalid_input, Scoped};
use crate::auth::{check_scope, Caller};
use crate::state::{now_ms, AppState};

pub(super) async fn meta(State(state): State<AppState>, scoped: Scoped) -> Response {
    let plugin = scoped.plugin.clone();
    let description = state.registry.get(&plugin, None).map(|p| p.info.description.clone()).unwrap_or_default();
    let allow_scope = state.config.allow_scope.get(&plugin).cloned().unwrap_or_else(|| json!({}));
    Json(json!({
        "result": true,
        "data": {
            "code": plugin,
            "versions": state.registry.versions(&plugin),
            "language": "rust",
            "description": description,
            "framework_version": concat!("plugd ", env!("CARGO_PKG_VERSION")),
            "runtime_version": env!("CARGO_PKG_VERSION"),
            "allow_scope": allow_scope,
        },
        "message": "",
    }))
    .into_response()
}

pub(super) async fn detail(State(state): State<AppState>, scoped: Scoped) -> Response {
    let plugin = scoped.plugin.clone();
    let plugin = match state.registry.get(&plugin, Some(scoped.param("version"))) {
        Ok(plugin) => plugin,
        Err(e) => return fail(StatusCode::NOT_FOUND, &e.to_string(), None),
    };
    Json(json!({
        "result": true,
        "data": {
            "desc": plugin.info.description,
            "version": plugin.info.version,
            "enable_plugin_callback": plugin.info.enable_plugin_callback,
            "inputs": plugin.schemas.inputs,
            "outputs": plugin.schemas.outputs,
            "context_inputs": plugin.schemas.context_inputs,
            "forms": {"renderform": plugin.info.form},
        },
        "message": "",
    }))
    .into_response()
}

/// The `inputs` and `context` objects of an invoke body.
fn parse_invoke_body(body: &[u8]) -> Result<(Value, Value), Response> {
    let request: Value = serde_json::from_slice(body)
        .map_err(|e| invalid_input(&format!("the request body is not valid JSON: {e}"), None))?;
    let mut fields = Vec::new();
    for key in ["inputs", "context"] {
        match request.get(key) {
            Some(value @ Value::Object(_)) => fields.push(value.clone()),
            Some(other) => {
                let kind = if other.is_null() { "null" } else { "not an object" };
                return Err(invalid_input(&format!("{key}: expected a JSON object, got {kind}"), None));
            }
            None => return Err(invalid_input(&format!("{key}: This field is required."), None)),
        }
    }
    let context = fields.pop().unwrap_or_default();
    let inputs = fields.pop().unwrap_or_default();
    Ok((inputs, context))
}

pub(super) async fn invoke(
    State(state): State<AppState>,
    scoped: Scoped,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let name = scoped.plugin.clone();
    // As in the Python framework, the scope permission is checked before anything else.
    if let Err(response) = check_scope(&state, &name, &caller, &headers) {
        return response;
    }
    let plugin = match state.registry.get(&name, Some(scoped.param("version"))) {
        Ok(plugin) => plugin,
        Err(e) => return fail(StatusCode::NOT_FOUND, &e.to_string(), None),
    };
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(rejection),
    };
    let (inputs, context) = match parse_invoke_body(&body) {
        Ok(parsed) => parsed,
        Err(response) => return response,
    };

    let mut invocation = Invocation::new(&name, &plugin.info.version, inputs, context);
    // Stored as converted (pydantic v1's conversions, unless --strict-inputs): later executes see the same.
    state.executor.coerce_invocation(&mut invocation);
    let trace_id = invocation.trace_id.clone();
    let executor_error = |e: &dyn std::fmt::Display| {
        tracing::error!(%trace_id, "invoke failed: {e}");
        fail(StatusCode::OK, &format!("executor execute raise error: {e}"), Some(&trace_id))
    };
    let (step, logs) = match state.run_step(&invocation, Trigger::Start).await {
        Ok(done) => done,
        Err(e) => return executor_error(&e),
    };
    let now = now_ms();
    let next_run_at = step.poll_after.map(|after| millis_after(now, after));
    let callback_timeout = step.callback_timeout;
    invocation.apply(step);
    let deadline_at = state.config.deadline.map(|d| millis_after(now, d));
    let reports = state.keep_reports(&trace_id, invocation.invoke_count, invocation.reports.clone()).await;
    let reply = json!({
        "result": true,
        "data": {"outputs": wire_outputs(&invocation), "state": invocation.state.code(), "err": invocation.err},
        "message": "success",
        "trace_id": trace_id,
    });
    let waits = !invocation.state.is_final();
    let new = NewInvocation {
        invocation,
        now,
        next_run_at,
        deadline_at,
        logs,
        reports,
        created_by: caller.app_code,
        callback_timeout,
    };
    // Accepted only once recorded: a crash before this line loses nothing the caller was told.
    if let Err(e) = state.store.insert(new).await {
        return executor_error(&e);
    }
    state.metrics.invokes.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    if waits {
        state.wake_scheduler.notify_one();
    }
    Json(reply).into_response()
}

pub(super) async fn schedule(State(state): State<AppState>, scoped: Scoped) -> Response {
    let request_id = new_trace_id();
    let trace_id = scoped.param("trace_id").to_owned();
    let stored = match scoped.invocation(&state, &trace_id).await {
        Ok(stored) => stored,
        Err(e) => {
            tracing::error!(%trace_id, "cannot read the invocation: {e}");
            return fail(StatusCode::SERVICE_UNAVAILABLE, &format!("schedule read error: {e}"), Some(&request_id));
        }
    };
    let Some(stored) = stored else {
        return fail(StatusCode::OK, &format!("can not find schedule for trace_id {trace_id}"), Some(&request_id));
    };
    let invocation = stored.invocation;
    Json(json!({
        "result": true,
        "data": {
            "trace_id": invocation.trace_id,
            "plugin_version": invocation.version,
            "state": invocation.state.code(),
            "outputs": wire_outputs(&invocation),
            "err": invocation.err.unwrap_or_default(),
            "created_at": format_time(stored.created_at),
            "finish_at": stored.finish_at.map(format_time).unwrap_or_default(),
        },
        "trace_id": request_id,
        "message": "",
    }))
    .into_response()
}

/// The `outputs` callers read: always an object (BKFlow reads `outputs.get("err")` on FAIL and
/// crashes on `null`; Tencent's Go runtime also answers an object), on FAIL with `err` beside what
/// the plugin set, unless the plugin set an `err` output itself.
fn wire_outputs(invocation: &Invocation) -> Value {
    let mut outputs = invocation.outputs.clone();
    if invocation.state == InvocationState::Fail && !outputs.contains_key("err") {
        outputs.insert("err".into(), json!(invocation.err.as_deref().unwrap_or_default()));
    }
    Value::Object(outputs)
}
