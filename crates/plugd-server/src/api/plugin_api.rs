//! Plugin data-source APIs: `plugin_api/{path}` directly, and `plugin_api_dispatch`, which wraps the
//! reply in the envelope (as BK-SOPS expects).

use std::collections::{BTreeMap, HashMap};

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use plugd_core::new_trace_id;
use plugd_sdk::{ApiError, ApiMethod, ApiReply, ApiRequest, ApiRoute};
use serde_json::{json, Map, Value};

use super::{body_error, Addressed};
use crate::auth::{check_scope, Caller};
use crate::state::AppState;
use crate::wire::{fail, invalid_input};

const PREFIX: &str = "/bk_plugin/plugin_api/";

fn find<'a>(state: &'a AppState, plugin: &str, method: ApiMethod, path: &str) -> Option<&'a ApiRoute> {
    state.api_routes.get(plugin)?.iter().find(|r| r.method == method && r.path == path)
}

/// `GET|POST plugin_api/{path}`: the plugin's reply as it is.
pub(super) async fn direct(
    State(state): State<AppState>,
    addressed: Addressed,
    Query(query): Query<HashMap<String, String>>,
    Extension(caller): Extension<Caller>,
    method: Method,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let plugin = addressed.plugin.clone();
    let path = addressed.param("path").trim_matches('/');
    let api_method = if method == Method::POST { ApiMethod::Post } else { ApiMethod::Get };
    let route = find(&state, &plugin, api_method, path);
    let body = match body {
        Ok(body) if body.is_empty() => Value::Null,
        Ok(body) => match serde_json::from_slice(&body) {
            Ok(value) => value,
            Err(e) => return fail(StatusCode::BAD_REQUEST, &format!("the body is not valid JSON: {e}"), None),
        },
        Err(rejection) => return body_error(rejection),
    };
    let query: Map<String, Value> = query.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    let request = ApiRequest {
        method: api_method,
        path: path.to_owned(),
        query,
        body,
        username: caller.username,
        headers: readable_headers(&headers),
    };
    let not_found = || fail(StatusCode::NOT_FOUND, &format!("404 error: {PREFIX}{path}"), None);
    let reply = match route {
        Some(route) => route.call(request).await.map(|body| ApiReply { status: 200, body }),
        None => match by_path(&state, &plugin, request).await {
            Some(reply) => reply,
            None => return not_found(),
        },
    };
    match reply {
        Ok(reply) => {
            let status = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            (status, Json(reply.body)).into_response()
        }
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            fail(status, &e.message, None)
        }
    }
}

/// A call no route takes, for the newest version of `plugin` to answer by its path (a bk-plugin
/// project's own URL patterns); `None` when it answers none that way, or has nothing at that path.
async fn by_path(state: &AppState, plugin: &str, request: ApiRequest) -> Option<Result<ApiReply, ApiError>> {
    let newest = state.registry.get(plugin, None).ok()?;
    let reply = newest.plugin.call_api(request)?.await;
    reply.as_ref().err().is_none_or(|e| e.status != 404).then_some(reply)
}

/// `POST plugin_api_dispatch` with `{url, method, username, data, dumped_data}`.
pub(super) async fn dispatch(
    State(state): State<AppState>,
    addressed: Addressed,
    Extension(caller): Extension<Caller>,
    headers: HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Response {
    let trace_id = new_trace_id();
    let plugin = addressed.plugin.clone();
    let invalid = |message: &str| invalid_input(message, Some(&trace_id));
    // As in the Python framework, the scope permission is checked before anything else.
    if let Err(response) = check_scope(&state, &plugin, &caller, &headers) {
        return response;
    }
    let body = match body {
        Ok(body) => body,
        Err(rejection) => return body_error(rejection),
    };
    let Ok(Value::Object(request)) = serde_json::from_slice::<Value>(&body) else {
        return invalid("the request body must be a JSON object");
    };
    let Some(url) = request.get("url").and_then(Value::as_str) else {
        return invalid("url: This field is required.");
    };
    let Some(rest) = url.strip_prefix(PREFIX) else {
        return invalid(&format!("url must start with '{PREFIX}'"));
    };
    let method = match request.get("method").and_then(Value::as_str).map(str::to_ascii_lowercase).as_deref() {
        Some("get") => ApiMethod::Get,
        Some("post") => ApiMethod::Post,
        _ => return invalid("method: expected \"get\" or \"post\""),
    };
    let mut data = match request.get("data") {
        None | Some(Value::Null) => Map::new(),
        Some(Value::Object(data)) => data.clone(),
        Some(_) => return invalid("data: expected a JSON object"),
    };
    match request.get("dumped_data") {
        None | Some(Value::Null) => {}
        Some(Value::String(text)) => match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(extra)) => data.extend(extra),
            _ => return invalid("dumped_data: expected a JSON object encoded as a string"),
        },
        Some(_) => return invalid("dumped_data: expected a string"),
    }
    let (path, url_query) = rest.split_once('?').unwrap_or((rest, ""));
    let path = path.trim_matches('/');
    let route = find(&state, &plugin, method, path);
    let not_found = || fail(StatusCode::NOT_FOUND, &format!("404 error: {url}"), Some(&trace_id));
    let username = request.get("username").and_then(Value::as_str).map(str::to_owned).or(caller.username);
    // As Django's RequestFactory builds the request: a GET's `data` replaces the url's query unless
    // it is empty; a POST keeps the url's query and sends `data` as its body.
    let (query, body) = match method {
        ApiMethod::Get if data.is_empty() => (parse_query(url_query), Value::Null),
        ApiMethod::Get => (data.into_iter().map(|(key, value)| (key, query_value(value))).collect(), Value::Null),
        ApiMethod::Post => (parse_query(url_query), Value::Object(data)),
    };
    let api_request =
        ApiRequest { method, path: path.to_owned(), query, body, username, headers: readable_headers(&headers) };
    let (reply, routed) = match route {
        Some(route) => (route.call(api_request).await.map(|body| ApiReply { status: 200, body }), true),
        None => match by_path(&state, &plugin, api_request).await {
            Some(reply) => (reply, false),
            None => return not_found(),
        },
    };
    // As the Python framework does, the view's data is wrapped whatever status it answered with.
    match reply {
        Ok(reply) => Json(json!({"result": true, "data": reply.body, "message": "success", "trace_id": trace_id}))
            .into_response(),
        Err(e) if e.status == 400 => invalid(&e.message),
        // Views that cannot be served here (Django missing) say so plainly.
        Err(e) if e.status == 501 && !routed => fail(StatusCode::NOT_IMPLEMENTED, &e.message, Some(&trace_id)),
        Err(e) => {
            let status = StatusCode::from_u16(e.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            fail(status, &format!("unknow error, please contact plugin developers: {}", e.message), Some(&trace_id))
        }
    }
}

/// A `data` value as the query parameter the Python framework makes of it (Django's request
/// factory): text, Python's spelling of booleans and null, and the last item of a list.
fn query_value(value: Value) -> Value {
    Value::String(match value {
        Value::String(text) => text,
        Value::Bool(true) => "True".into(),
        Value::Bool(false) => "False".into(),
        Value::Null => "None".into(),
        Value::Array(mut items) => match items.pop() {
            Some(last) => return query_value(last),
            None => String::new(),
        },
        other => other.to_string(),
    })
}

/// A query string's parameters, decoded; a repeated name keeps its last value, as Django's
/// `QueryDict.get` does.
fn parse_query(query: &str) -> Map<String, Value> {
    form_urlencoded::parse(query.as_bytes()).map(|(k, v)| (k.into_owned(), Value::String(v.into_owned()))).collect()
}

/// The headers a plugin API may read (see [`ApiRequest::headers`]): never credentials.
fn readable_headers(headers: &HeaderMap) -> BTreeMap<String, String> {
    headers
        .iter()
        .filter(|(name, _)| {
            let name = name.as_str();
            name.starts_with("bk-plugin-")
                || name == "accept-language"
                || (name.starts_with("x-bkapi-") && !matches!(name, "x-bkapi-jwt" | "x-bkapi-authorization"))
        })
        .filter_map(|(name, value)| Some((name.as_str().to_owned(), value.to_str().ok()?.to_owned())))
        .collect()
}
