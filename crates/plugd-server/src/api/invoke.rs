//! `meta`, `detail/{version}`, `invoke/{version}` and `schedule/{trace_id}`.

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Extension;
use plugd_core::store::StoreErrorKind;
use plugd_core::{new_trace_id, Invocation, Trigger};
use serde_json::{json, Value};

use super::{body_error, Addressed};
use crate::advance::{AdvanceError, Advanced, Record};
use crate::auth::{check_scope, Caller};
use crate::state::AppState;
use crate::wire::{self, fail, invalid_input, wire_outputs, Answer, TracedAnswer};

pub(super) async fn meta(State(state): State<AppState>, addressed: Addressed) -> Response {
    let plugin = addressed.plugin.clone();
    let newest = state.registry.get(&plugin, None).ok();
    // A bk-plugin project describes itself as a whole (meta.py); other plugins by their newest version.
    let description = newest
        .as_ref()
        .map(|p| p.plugin.plugin_description().unwrap_or_else(|| p.info.description.clone()))
        .unwrap_or_default();
    let language = newest.as_ref().map_or("rust", |p| p.plugin.language());
    let allow_scope = state.config.allow_scope.get(&plugin).cloned().unwrap_or_else(|| json!({}));
    let meta = wire::Meta {
        versions: state.registry.versions(&plugin),
        code: plugin,
        language: language.to_owned(),
        description,
        framework_version: concat!("plugd ", env!("CARGO_PKG_VERSION")),
        runtime_version: env!("CARGO_PKG_VERSION"),
        allow_scope,
    };
    Answer::new(meta, "").into_response()
}

pub(super) async fn detail(State(state): State<AppState>, addressed: Addressed) -> Response {
    let plugin = addressed.plugin.clone();
    let plugin = match state.registry.get(&plugin, Some(addressed.param("version"))) {
        Ok(plugin) => plugin,
        Err(e) => return fail(StatusCode::NOT_FOUND, &e.to_string(), None),
    };
    let detail = wire::Detail {
        desc: plugin.info.description.clone(),
        version: plugin.info.version.clone(),
        enable_plugin_callback: plugin.info.enable_plugin_callback,
        inputs: plugin.schemas.inputs.clone(),
        outputs: plugin.schemas.outputs.clone(),
        context_inputs: plugin.schemas.context_inputs.clone(),
        forms: wire::Forms { renderform: plugin.info.form.clone() },
    };
    Answer::new(detail, "").into_response()
}

/// The `inputs` and `context` objects of an invoke body.
fn parse_invoke_body(body: &[u8]) -> Result<(Value, Value), Response> {
    let mut request: Value = serde_json::from_slice(body)
        .map_err(|e| invalid_input(&format!("the request body is not valid JSON: {e}"), None))?;
    let mut take = |key: &str| match request.get_mut(key).map(Value::take) {
        Some(value @ Value::Object(_)) => Ok(value),
        Some(other) => {
            let kind = if other.is_null() { "null" } else { "not an object" };
            Err(invalid_input(&format!("{key}: expected a JSON object, got {kind}"), None))
        }
        // No caller depends on the framework's 400 for a missing context: it is empty.
        None if key == "context" => Ok(Value::Object(Default::default())),
        None => Err(invalid_input(&format!("{key}: This field is required."), None)),
    };
    let inputs = take("inputs")?;
    Ok((inputs, take("context")?))
}

pub(super) async fn invoke(
    State(state): State<AppState>,
    addressed: Addressed,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let name = addressed.plugin.clone();
    // As in the Python framework, the scope permission is checked before anything else.
    if let Err(response) = check_scope(&state, &name, &caller, &headers) {
        return response;
    }
    let plugin = match state.registry.get(&name, Some(addressed.param("version"))) {
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
    // Accepted only once recorded: a crash before the insert commits loses nothing the caller was told.
    let record = Record::Insert { created_by: caller.app_code };
    let invocation = match state.advance(invocation, Trigger::Start, None, record).await {
        Ok(Advanced::Recorded(invocation)) => invocation,
        Ok(Advanced::Lost) => return executor_error(&"the invocation was not recorded"),
        Err(AdvanceError::Store(e)) if e.kind == StoreErrorKind::Unavailable => {
            tracing::error!(%trace_id, "invoke not recorded: {e}");
            let message = format!("the store is unavailable, nothing was recorded; retry later: {}", e.message);
            return fail(StatusCode::SERVICE_UNAVAILABLE, &message, Some(&trace_id));
        }
        // A retry could run the invocation twice: the caller looks the trace id up instead.
        Err(AdvanceError::Store(e)) if e.kind == StoreErrorKind::OutcomeUnknown => {
            tracing::error!(%trace_id, "invoke outcome unknown: {e}");
            let message = format!(
                "the store did not confirm whether invocation {trace_id} was recorded; get schedule/{trace_id} \
                 before retrying: {}",
                e.message
            );
            return fail(StatusCode::SERVICE_UNAVAILABLE, &message, Some(&trace_id));
        }
        Err(e) => return executor_error(&e),
    };
    let invoked = wire::Invoked {
        outputs: wire_outputs(&invocation),
        state: invocation.state.into(),
        err: invocation.err.clone(),
    };
    TracedAnswer::new(invoked, "success", trace_id).into_response()
}

pub(super) async fn schedule(State(state): State<AppState>, addressed: Addressed) -> Response {
    let request_id = new_trace_id();
    let trace_id = addressed.param("trace_id").to_owned();
    let stored = match addressed.invocation(&state, &trace_id).await {
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
    let schedule = wire::Schedule {
        outputs: wire_outputs(&invocation),
        state: invocation.state.into(),
        trace_id: wire::TraceId(invocation.trace_id),
        plugin_version: invocation.version,
        err: invocation.err.unwrap_or_default(),
        created_at: wire::Time::of(stored.created_at),
        finish_at: stored.finish_at.map(wire::format_time).unwrap_or_default(),
    };
    TracedAnswer::new(schedule, "", request_id).into_response()
}
