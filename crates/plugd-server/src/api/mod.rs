//! The HTTP API: the bk-plugin endpoints under `/bk_plugin/` (default plugin) and
//! `/plugins/{plugin}/bk_plugin/` (every plugin), plus `/metrics`, `/healthz` and `/openapi.json`.
//!
//! Only this module knows the wire shapes: the flat envelope `{result, data, message[, trace_id]}`,
//! the state codes, and the timestamp format of the Python framework.

mod callback;
mod invoke;
mod ops;
mod panel;
mod plugin_api;
mod reports;

pub(crate) use panel::{panel_snapshot, Stopping};

use std::collections::HashMap;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::middleware::{from_fn, from_fn_with_state};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post, MethodRouter};
use axum::{Json, Router};
use plugd_core::store::{Millis, StoreError, StoredInvocation};
use serde_json::{json, Value};

use crate::auth::{authenticate, Caller};
use crate::config::ServerConfig;
use crate::guard;
use crate::state::AppState;

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Access {
    /// Anyone: the route reveals nothing private, or its signed token protects it.
    Open,
    /// Callers with credentials, when the server has any; reads answer only the creating app.
    Authenticated,
    /// `schedule`: open, because BK-SOPS reads it on the plugin host without credentials, unless
    /// `--private-schedule` makes it [`Access::Authenticated`].
    Schedule,
}

impl Access {
    /// Whether callers must present credentials (on a server that has any).
    pub(crate) fn is_protected(self, config: &ServerConfig) -> bool {
        match self {
            Access::Open => false,
            Access::Authenticated => true,
            Access::Schedule => config.private_schedule,
        }
    }
}

/// Every route, for the router and the OpenAPI document: method, path below the prefix, access.
pub(crate) const BK_ROUTES: &[(&str, &str, Access)] = &[
    ("get", "/meta", Access::Open),
    ("get", "/detail/{version}", Access::Open),
    ("post", "/invoke/{version}", Access::Authenticated),
    ("get", "/schedule/{trace_id}", Access::Schedule),
    ("post", "/callback/{token}", Access::Open),
    ("get", "/logs/{trace_id}", Access::Authenticated),
    ("get", "/reports/{trace_id}", Access::Authenticated),
    ("get", "/reports/{trace_id}/{*path}", Access::Authenticated),
    ("post", "/cancel/{trace_id}", Access::Authenticated),
    ("post", "/plugin_api_dispatch", Access::Authenticated),
    ("get", "/plugin_api/{*path}", Access::Authenticated),
    ("post", "/plugin_api/{*path}", Access::Authenticated),
];

/// The debug panel's own API (see `panel`), for the router and the OpenAPI document: method, path,
/// access. Its pages and files (`/`, `/ui/`, `/ui/{file}`) are open and not listed.
pub(crate) const PANEL_ROUTES: &[(&str, &str, Access)] = &[
    ("get", "/ui/api/plugins", Access::Open),
    ("get", "/ui/api/forms/{plugin}/{version}", Access::Open),
    ("get", "/ui/api/invocations", Access::Authenticated),
    ("get", "/ui/api/invocations/{trace_id}", Access::Authenticated),
    ("get", "/ui/api/invocations/{trace_id}/events", Access::Authenticated),
    ("get", "/ui/api/nodes", Access::Authenticated),
];

/// The debug panel: its pages and files, and its API.
fn panel_routes(state: &AppState) -> Router<AppState> {
    let mut open = Router::new()
        .route("/", get(panel::index))
        .route("/ui", get(panel::index))
        .route("/ui/", get(panel::index))
        .route("/ui/{file}", get(panel::asset));
    let mut protected = Router::new();
    for (method, path, access) in PANEL_ROUTES {
        let route = match (*method, *path) {
            ("get", "/ui/api/plugins") => get(panel::plugins),
            ("get", "/ui/api/forms/{plugin}/{version}") => get(panel::form),
            ("get", "/ui/api/invocations") => get(panel::history),
            ("get", "/ui/api/invocations/{trace_id}") => get(panel::invocation),
            ("get", "/ui/api/invocations/{trace_id}/events") => get(panel::invocation_events),
            ("get", "/ui/api/nodes") => get(panel::nodes),
            _ => unreachable!("every route in PANEL_ROUTES has a handler"),
        };
        if access.is_protected(&state.config) {
            protected = protected.route(path, route);
        } else {
            open = open.route(path, route);
        }
    }
    open.merge(protected.route_layer(from_fn_with_state(state.clone(), authenticate)))
}

/// The whole application.
pub(crate) fn router(state: AppState) -> Router {
    let bk = bk_routes(&state);
    Router::new()
        .nest("/bk_plugin", bk.clone())
        .nest("/plugins/{plugin}/bk_plugin", bk)
        .merge(panel_routes(&state))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/openapi.json", get(ops::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body))
        .layer(from_fn_with_state(state.clone(), crate::listener::body_deadline))
        .layer(from_fn_with_state(state.clone(), guard::same_origin_only))
        .with_state(state)
}

/// The handler of a route; every `post` requires a JSON body (see [`guard::require_json`]).
fn handler(method: &str, path: &str) -> MethodRouter<AppState> {
    let route = match (method, path) {
        ("get", "/meta") => get(invoke::meta),
        ("get", "/detail/{version}") => get(invoke::detail),
        ("post", "/invoke/{version}") => post(invoke::invoke),
        ("get", "/schedule/{trace_id}") => get(invoke::schedule),
        ("post", "/callback/{token}") => post(callback::callback),
        ("get", "/logs/{trace_id}") => get(callback::logs),
        ("get", "/reports/{trace_id}") => get(reports::list),
        ("get", "/reports/{trace_id}/{*path}") => get(reports::file),
        ("post", "/cancel/{trace_id}") => post(callback::cancel),
        ("post", "/plugin_api_dispatch") => post(plugin_api::dispatch),
        ("get", "/plugin_api/{*path}") => get(plugin_api::direct),
        ("post", "/plugin_api/{*path}") => post(plugin_api::direct),
        _ => unreachable!("every route in BK_ROUTES has a handler"),
    };
    if method == "post" {
        route.layer(from_fn(guard::require_json))
    } else {
        route
    }
}

/// Each path answers with and without its trailing slash, directly (a redirect loses a POST body).
fn bk_routes(state: &AppState) -> Router<AppState> {
    let mut open = Router::new();
    let mut protected = Router::new();
    for (method, path, access) in BK_ROUTES {
        let router = if access.is_protected(&state.config) { &mut protected } else { &mut open };
        let mut r = std::mem::take(router).route(path, handler(method, path));
        if !path.contains("{*") {
            r = r.route(&format!("{path}/"), handler(method, path));
        }
        *router = r;
    }
    open.merge(protected.route_layer(from_fn_with_state(state.clone(), authenticate)))
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> Response {
    fail(StatusCode::METHOD_NOT_ALLOWED, &format!("method {method} is not allowed on {}", uri.path()), None)
}

async fn not_found(uri: Uri) -> Response {
    fail(StatusCode::NOT_FOUND, &format!("not found: {}", uri.path()), None)
}

/// The error envelope: `{"result": false, "data": null, "message": ...[, "trace_id": ...]}`.
pub(crate) fn fail(status: StatusCode, message: &str, trace_id: Option<&str>) -> Response {
    let mut body = json!({"result": false, "data": null, "message": message});
    if let Some(trace_id) = trace_id {
        body["trace_id"] = Value::String(trace_id.to_owned());
    }
    (status, Json(body)).into_response()
}

/// The plugin a request addresses (`{plugin}` in the path, or the default plugin) and the other
/// path parameters. Rejects unknown plugins with a 404 envelope.
pub(crate) struct Scoped {
    pub(crate) plugin: String,
    pub(crate) params: HashMap<String, String>,
    /// Who is calling, on routes that authenticate.
    caller: Option<Caller>,
}

impl Scoped {
    /// A path parameter, empty when absent.
    pub(crate) fn param(&self, name: &str) -> &str {
        self.params.get(name).map(String::as_str).unwrap_or_default()
    }

    /// The invocation `trace_id` when it is one of this plugin's and, on a route that
    /// authenticates a server with credentials, one the caller's app created: another plugin's or
    /// another app's is as unknown as a missing one.
    pub(crate) async fn invocation(
        &self,
        state: &AppState,
        trace_id: &str,
    ) -> Result<Option<StoredInvocation>, StoreError> {
        let stored = state.store.get(trace_id).await?;
        Ok(stored.filter(|s| s.invocation.plugin == self.plugin && self.may_see(state, s)))
    }

    fn may_see(&self, state: &AppState, stored: &StoredInvocation) -> bool {
        crate::auth::viewer(&state.config, self.caller.as_ref()).may_see(stored.created_by.as_deref())
    }
}

impl FromRequestParts<AppState> for Scoped {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Scoped, Response> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| fail(StatusCode::BAD_REQUEST, &format!("invalid path: {e}"), None))?;
        let plugin = scope(state, &params).await?;
        Ok(Scoped { plugin, params, caller: parts.extensions.get::<Caller>().cloned() })
    }
}

/// The plugin a route is scoped to: the one its path names, or the default. A plugin this node does
/// not serve is unknown, except on a route of one of its invocations that the store holds: during a
/// rolling deploy any node answers `schedule`, `logs`, `reports` and `cancel` of any invocation.
async fn scope(state: &AppState, params: &HashMap<String, String>) -> Result<String, Response> {
    let available = || state.registry.names().collect::<Vec<_>>().join(", ");
    if let Some(plugin) = params.get("plugin") {
        if !state.registry.contains(plugin) && !stored_elsewhere(state, plugin, params.get("trace_id")).await? {
            let message = format!("unknown plugin {plugin:?}; available plugins: {}", available());
            return Err(fail(StatusCode::NOT_FOUND, &message, None));
        }
        return Ok(plugin.clone());
    }
    if let Some(default) = &state.config.default_plugin {
        return Ok(default.clone());
    }
    let names: Vec<&str> = state.registry.names().collect();
    match names.as_slice() {
        [only] => Ok((*only).to_owned()),
        _ => Err(fail(
            StatusCode::NOT_FOUND,
            &format!(
                "no default plugin is served here: use /plugins/<plugin>/bk_plugin/... (available plugins: {})",
                available()
            ),
            None,
        )),
    }
}

/// Whether `trace_id` is an invocation of `plugin` that the store holds (a plugin other nodes serve).
async fn stored_elsewhere(state: &AppState, plugin: &str, trace_id: Option<&String>) -> Result<bool, Response> {
    let Some(trace_id) = trace_id else { return Ok(false) };
    match state.store.get(trace_id).await {
        Ok(stored) => Ok(stored.is_some_and(|s| s.invocation.plugin == plugin)),
        Err(e) => Err(fail(StatusCode::SERVICE_UNAVAILABLE, &format!("invocation read error: {e}"), None)),
    }
}

/// `%Y-%m-%d %H:%M:%S` in UTC, as the Python framework prints times.
pub(crate) fn format_time(millis: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A body that exceeded the limit, or could not be read: the status and message to answer with.
pub(crate) fn unreadable_body(rejection: axum::extract::rejection::BytesRejection) -> (StatusCode, String) {
    let status = rejection.status();
    let message = if status == StatusCode::PAYLOAD_TOO_LARGE {
        "request body is too large".to_owned()
    } else {
        format!("cannot read the request body: {rejection}")
    };
    (status, message)
}

/// [`unreadable_body`] as the error envelope.
pub(crate) fn body_error(rejection: axum::extract::rejection::BytesRejection) -> Response {
    let (status, message) = unreadable_body(rejection);
    fail(status, &message, None)
}

/// A malformed request, with the Python framework's prefix `输入不合法` ("invalid input").
pub(crate) fn invalid_input(message: &str, trace_id: Option<&str>) -> Response {
    fail(StatusCode::BAD_REQUEST, &format!("输入不合法: {message}"), trace_id)
}
