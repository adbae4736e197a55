//! The HTTP API: the bk-plugin endpoints under `/bk_plugin/` (default plugin) and
//! `/plugins/{plugin}/bk_plugin/` (every plugin), plus `/metrics`, `/healthz` and `/openapi.json`.
//!
//! Its routes are written once, in [`routes`]; the shapes of its answers in [`crate::wire`].

mod callback;
mod invoke;
pub(crate) mod openapi;
mod ops;
mod panel;
mod plugin_api;
mod reports;
pub(crate) mod routes;

pub(crate) use panel::{panel_snapshot, Stopping};

use std::collections::HashMap;

use axum::extract::{DefaultBodyLimit, FromRequestParts, Path, Request, State};
use axum::http::request::Parts;
use axum::http::{StatusCode, Uri};
use axum::middleware::{from_fn_with_state, Next};
use axum::response::Response;
use axum::routing::get;
use axum::Router;
use plugd_core::store::{StoreError, StoredInvocation};

use crate::auth::{authenticate, may_see, Caller};
use crate::guard;
use crate::state::AppState;
use crate::wire::fail;
use routes::{Method, Route, BK_ROUTES, PANEL_ROUTES};

/// The whole application.
pub(crate) fn router(state: AppState) -> Router {
    let bk = routes_of(&state, BK_ROUTES, true);
    Router::new()
        .nest("/bk_plugin", bk.clone())
        .nest("/plugins/{plugin}/bk_plugin", bk)
        .merge(routes_of(&state, PANEL_ROUTES, false))
        // The panel's pages and files.
        .route("/", get(panel::index))
        .route("/ui", get(panel::index))
        .route("/ui/", get(panel::index))
        .route("/ui/{file}", get(panel::asset))
        .route("/metrics", get(ops::metrics))
        .route("/healthz", get(ops::healthz))
        .route("/openapi.json", get(ops::openapi))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(state.config.max_body))
        .layer(from_fn_with_state(state.clone(), guard::front_door))
        .with_state(state)
}

/// The routes of `table`, each behind its admission; with `trailing_slash`, each path also answers
/// with a trailing slash, directly (a redirect loses a POST body).
fn routes_of(state: &AppState, table: &[Route], trailing_slash: bool) -> Router<AppState> {
    let mut router = Router::new();
    for route in table {
        let admission =
            Admission { json: route.method == Method::Post, authenticate: route.access.is_protected(&state.config) };
        let handler = || (route.handler)().layer(from_fn_with_state((state.clone(), admission), admit));
        router = router.route(route.path, handler());
        if trailing_slash && !route.path.contains("{*") {
            router = router.route(&format!("{}/", route.path), handler());
        }
    }
    router
}

/// What a route asks of a request before its handler runs.
#[derive(Debug, Clone, Copy)]
struct Admission {
    /// A JSON body (every `POST`; see [`guard::not_json`]).
    json: bool,
    /// Credentials, on a server that has any; the [`Caller`] goes into the request's extensions.
    authenticate: bool,
}

/// One layer per route for both checks (each layer costs every request a boxed future and a clone
/// of what it wraps): credentials first (401), then the body's type (415).
async fn admit(State((state, admission)): State<(AppState, Admission)>, mut request: Request, next: Next) -> Response {
    if admission.authenticate {
        match authenticate(&state, request.headers()) {
            Ok(caller) => {
                request.extensions_mut().insert(caller);
            }
            Err(refused) => return refused,
        }
    }
    if admission.json {
        if let Some(message) = guard::not_json(&request) {
            return fail(StatusCode::UNSUPPORTED_MEDIA_TYPE, &message, None);
        }
    }
    next.run(request).await
}

async fn method_not_allowed(method: axum::http::Method, uri: Uri) -> Response {
    fail(StatusCode::METHOD_NOT_ALLOWED, &format!("method {method} is not allowed on {}", uri.path()), None)
}

async fn not_found(uri: Uri) -> Response {
    fail(StatusCode::NOT_FOUND, &format!("not found: {}", uri.path()), None)
}

/// The plugin a request addresses (`{plugin}` in the path, or the default plugin) and the other
/// path parameters. Rejects unknown plugins with a 404 envelope.
pub(crate) struct Addressed {
    pub(crate) plugin: String,
    pub(crate) params: HashMap<String, String>,
    /// Who is calling, on routes that authenticate.
    caller: Option<Caller>,
}

impl Addressed {
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
        let caller = self.caller.as_ref();
        Ok(stored.filter(|s| s.invocation.plugin == self.plugin && may_see(&state.config, caller, s)))
    }
}

impl FromRequestParts<AppState> for Addressed {
    type Rejection = Response;

    async fn from_request_parts(parts: &mut Parts, state: &AppState) -> Result<Addressed, Response> {
        let Path(params) = Path::<HashMap<String, String>>::from_request_parts(parts, state)
            .await
            .map_err(|e| fail(StatusCode::BAD_REQUEST, &format!("invalid path: {e}"), None))?;
        let plugin = scope(state, &params).await?;
        Ok(Addressed { plugin, params, caller: parts.extensions.get::<Caller>().cloned() })
    }
}

/// The plugin a route is addressed to: the one its path names, or the default. A plugin this node does
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
    match default_plugin(state) {
        Some(default) => Ok(default),
        None => Err(fail(
            StatusCode::NOT_FOUND,
            &format!(
                "no default plugin is served here: use /plugins/<plugin>/bk_plugin/... (available plugins: {})",
                available()
            ),
            None,
        )),
    }
}

/// The plugin that answers under `/bk_plugin/`: `--default-plugin`, or the only one served.
pub(crate) fn default_plugin(state: &AppState) -> Option<String> {
    if let Some(default) = &state.config.default_plugin {
        return Some(default.clone());
    }
    let mut names = state.registry.names();
    match (names.next(), names.next()) {
        (Some(only), None) => Some(only.to_owned()),
        _ => None,
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
