//! The debug panel: its static files (embedded in the binary, under a strict content-security
//! policy) at `/` and `/ui/...`, and its own API under `/ui/api/`: the plugins, the history of
//! invocations and one invocation with its timeline, logs, reports and callback URLs.
//!
//! Everything else the panel does goes through the bk-plugin routes (`detail`, `invoke`, `cancel`,
//! `callback`, `plugin_api`), with the same credentials and the same guard as any caller.

use std::collections::HashMap;
use std::convert::Infallible;
use std::path::Path as FsPath;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use axum::extract::rejection::{PathRejection, QueryRejection};
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use axum::Json;
use plugd_core::store::{ExecuteRecord, HistoryQuery, StoredInvocation};
use plugd_sdk::State as InvocationState;
use serde_json::{json, Value};
use tokio_util::sync::CancellationToken;

use crate::auth::Caller;
use crate::events::{Snapshot, StreamPermit};
use crate::state::{now_ms, AppState};
use crate::wire::fail;

/// The panel's policy: its own scripts, styles and frames only, nothing inline, no plugin-supplied
/// markup that runs (report iframes are sandboxed and served under their own policy).
pub(crate) const PANEL_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; \
     connect-src 'self'; frame-src 'self'; form-action 'none'; base-uri 'none'; frame-ancestors 'none'";

/// The panel's files: path below `/ui/`, media type, contents.
pub(crate) const ASSETS: &[(&str, &str, &str)] = &[
    ("index.html", "text/html; charset=utf-8", include_str!("../../ui/index.html")),
    ("app.js", "text/javascript; charset=utf-8", include_str!("../../ui/app.js")),
    ("api.js", "text/javascript; charset=utf-8", include_str!("../../ui/api.js")),
    ("dom.js", "text/javascript; charset=utf-8", include_str!("../../ui/dom.js")),
    ("schema-form.js", "text/javascript; charset=utf-8", include_str!("../../ui/schema-form.js")),
    ("bk-form.js", "text/javascript; charset=utf-8", include_str!("../../ui/bk-form.js")),
    ("pages.js", "text/javascript; charset=utf-8", include_str!("../../ui/pages.js")),
    ("invocation.js", "text/javascript; charset=utf-8", include_str!("../../ui/invocation.js")),
    ("style.css", "text/css; charset=utf-8", include_str!("../../ui/style.css")),
    ("favicon.svg", "image/svg+xml", include_str!("../../ui/favicon.svg")),
];

/// Most invocations on one page of history.
const MAX_PER_PAGE: u64 = 100;

fn asset_response(name: &str) -> Response {
    let Some((_, media, body)) = ASSETS.iter().find(|(path, _, _)| *path == name) else {
        return fail(StatusCode::NOT_FOUND, &format!("not found: /ui/{name}"), None);
    };
    let cache = if name == "index.html" { "no-cache" } else { "no-cache, max-age=0" };
    (
        [
            (header::CONTENT_TYPE, HeaderValue::from_static(media)),
            (header::CONTENT_SECURITY_POLICY, HeaderValue::from_static(PANEL_CSP)),
            // For browsers that do not read `frame-ancestors` (clickjacking).
            (header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY")),
            (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
            (header::REFERRER_POLICY, HeaderValue::from_static("no-referrer")),
            (header::CACHE_CONTROL, HeaderValue::from_static(cache)),
        ],
        *body,
    )
        .into_response()
}

/// `/` and `/ui/`: the panel's page (its routes live in the URL's fragment).
pub(crate) async fn index() -> Response {
    asset_response("index.html")
}

/// `/ui/{file}`: one of the panel's files.
pub(crate) async fn asset(file: Result<Path<String>, PathRejection>) -> Response {
    match file {
        Ok(Path(file)) => asset_response(&file),
        Err(_) => fail(StatusCode::NOT_FOUND, "no such file", None),
    }
}

/// Where a plugin comes from: built into the binary, or the folder it was loaded from.
/// Where a plugin comes from: `built-in`, or the file or folder it was loaded from; the absolute path
/// only to a caller the server knows (the host's layout is none of an anonymous caller's business),
/// else its last two parts (`greeter/plugin.yaml`).
fn source(origin: &str, known_caller: bool) -> String {
    let path = FsPath::new(origin);
    match (path.is_absolute(), known_caller) {
        (false, _) => "built-in".to_owned(),
        (true, true) => origin.to_owned(),
        (true, false) => {
            let mut tail: Vec<_> = path.iter().rev().take(2).map(|part| part.to_string_lossy()).collect();
            tail.reverse();
            tail.join("/")
        }
    }
}

/// `GET /ui/api/plugins`: every plugin with its versions, and whether the server wants credentials.
pub(crate) async fn plugins(State(state): State<AppState>, headers: HeaderMap) -> Response {
    let known_caller = crate::auth::is_known_caller(&state, &headers);
    let plugins: Vec<Value> = state
        .registry
        .names()
        .map(|name| {
            let versions: Vec<Value> = state
                .registry
                .versions(name)
                .iter()
                .filter_map(|version| state.registry.get(name, Some(version)).ok())
                .map(|plugin| {
                    json!({
                        "version": plugin.info.version,
                        "description": plugin.info.description,
                        "has_form": plugin.info.form.is_some(),
                        "enable_plugin_callback": plugin.info.enable_plugin_callback,
                        "source": source(&plugin.info.origin, known_caller),
                    })
                })
                .collect();
            json!({"name": name, "versions": versions})
        })
        .collect();
    Json(json!({
        "result": true,
        "data": {
            "plugins": plugins,
            "credentials_required": !state.config.is_open(),
        },
        "message": "",
    }))
    .into_response()
}

/// `GET /ui/api/nodes`: the nodes sharing the store (which one answers, which are live, what each
/// serves) and the due invocations that no live node serves, as `plugd db status` shows them.
pub(crate) async fn nodes(State(state): State<AppState>) -> Response {
    match state.store.cluster(now_ms()).await {
        Ok(cluster) => {
            let mut data = cluster.report();
            data["this_node"] = json!(state.node.node_id);
            Json(json!({"result": true, "data": data, "message": ""})).into_response()
        }
        Err(e) => unavailable(e),
    }
}

/// `GET /ui/api/forms/{plugin}/{version}`: the version's `form.js`, as a script the panel loads
/// (after defining `$`), so that no page needs `eval`.
pub(crate) async fn form(
    State(state): State<AppState>,
    path: Result<Path<(String, String)>, PathRejection>,
) -> Response {
    let Ok(Path((plugin, version))) = path else {
        return fail(StatusCode::NOT_FOUND, "no such form", None);
    };
    let found = state.registry.get(&plugin, Some(&version));
    match found.as_ref().map(|p| p.info.form.as_deref()) {
        Ok(Some(form)) => (
            [
                (header::CONTENT_TYPE, HeaderValue::from_static("text/javascript; charset=utf-8")),
                (header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff")),
                (header::CACHE_CONTROL, HeaderValue::from_static("no-cache")),
            ],
            form.to_owned(),
        )
            .into_response(),
        Ok(None) => fail(StatusCode::NOT_FOUND, &format!("{plugin} {version} has no form.js"), None),
        Err(e) => fail(StatusCode::NOT_FOUND, &e.to_string(), None),
    }
}

fn bad_query(message: &str) -> Response {
    fail(StatusCode::BAD_REQUEST, &format!("invalid query: {message}"), None)
}

/// A positive integer query parameter, or its default.
fn positive(query: &HashMap<String, String>, name: &str, default: u64, max: u64) -> Result<u64, Response> {
    match query.get(name) {
        None => Ok(default),
        Some(text) => match text.parse::<u64>() {
            Ok(n) if (1..=max).contains(&n) => Ok(n),
            _ => Err(bad_query(&format!("{name} must be an integer from 1 to {max}"))),
        },
    }
}

/// `GET /ui/api/invocations?plugin=&version=&state=&page=&per_page=`: one page of history,
/// newest first.
pub(crate) async fn history(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    query: Result<Query<HashMap<String, String>>, QueryRejection>,
) -> Response {
    let Ok(Query(query)) = query else {
        return bad_query("the query string cannot be read");
    };
    let caller = caller.map(|c| c.0);
    let page = match positive(&query, "page", 1, 1_000_000) {
        Ok(page) => page,
        Err(response) => return response,
    };
    let per_page = match positive(&query, "per_page", 20, MAX_PER_PAGE) {
        Ok(n) => n,
        Err(response) => return response,
    };
    let wanted_state = match query.get("state") {
        None => None,
        Some(text) => match text.parse::<u8>().ok().and_then(InvocationState::from_code) {
            Some(s) => Some(s),
            None => return bad_query("state must be a state code from 1 to 5"),
        },
    };
    let text = |name: &str| query.get(name).filter(|s| !s.is_empty()).cloned();
    let store_query = HistoryQuery {
        plugin: text("plugin"),
        version: text("version"),
        state: wanted_state,
        viewer: crate::auth::viewer(&state.config, caller.as_ref()),
        offset: (page - 1) * per_page,
        limit: per_page,
    };
    match state.store.history(store_query).await {
        Ok(found) => {
            let items: Vec<Value> = found
                .items
                .iter()
                .map(|s| {
                    json!({
                        "trace_id": s.trace_id,
                        "plugin": s.plugin,
                        "version": s.version,
                        "state": s.state.code(),
                        "state_name": s.state.name(),
                        "invoke_count": s.invoke_count,
                        "err": s.err,
                        "created_at": s.created_at,
                        "finish_at": s.finish_at,
                    })
                })
                .collect();
            Json(json!({
                "result": true,
                "data": {"items": items, "total": found.total, "page": page, "per_page": per_page},
                "message": "",
            }))
            .into_response()
        }
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, &format!("history read error: {e}"), None),
    }
}

/// Signed callback URLs found among the outputs (where plugins hand them out), each with the path
/// that reaches this server for it, whatever `--callback-base` says.
fn callback_urls(state: &AppState, stored: &StoredInvocation) -> Vec<Value> {
    let mut found = Vec::new();
    let mut strings = Vec::new();
    collect_strings(&Value::Object(stored.invocation.outputs.clone()), &mut strings);
    for url in strings {
        let Some((_, rest)) = url.rsplit_once("/callback/") else { continue };
        let token = rest.trim_end_matches('/');
        let Ok(claims) = state.signer.verify(token, SystemTime::now()) else { continue };
        if claims.trace_id != stored.invocation.trace_id {
            continue;
        }
        found.push(json!({
            "url": url,
            "path": format!("/plugins/{}/bk_plugin/callback/{token}/", stored.invocation.plugin),
        }));
    }
    found
}

fn collect_strings(value: &Value, into: &mut Vec<String>) {
    match value {
        Value::String(s) => into.push(s.clone()),
        Value::Array(items) => items.iter().for_each(|v| collect_strings(v, into)),
        Value::Object(map) => map.values().for_each(|v| collect_strings(v, into)),
        _ => {}
    }
}

fn execute_json(e: &ExecuteRecord) -> Value {
    json!({
        "trigger": e.trigger,
        "invoke_count": e.invoke_count,
        "started_at": e.started_at,
        "duration_ms": e.duration.as_secs_f64() * 1000.0,
        "state": e.state.code(),
        "state_name": e.state.name(),
        "err": e.err,
    })
}

/// The invocation `trace_id` as the caller may see it, or the response that says it cannot.
async fn visible(state: &AppState, caller: Option<&Caller>, trace_id: &str) -> Result<StoredInvocation, Response> {
    match state.store.get(trace_id).await {
        Ok(Some(stored)) if crate::auth::may_see(&state.config, caller, &stored) => Ok(stored),
        Ok(_) => Err(fail(StatusCode::NOT_FOUND, &format!("can not find schedule for trace_id {trace_id}"), None)),
        Err(e) => Err(unavailable(e)),
    }
}

fn unavailable(e: plugd_core::store::StoreError) -> Response {
    fail(StatusCode::SERVICE_UNAVAILABLE, &format!("invocation read error: {e}"), None)
}

/// Everything the invocation page shows about `stored`: its timeline, logs, reports, callback URLs.
async fn snapshot(state: &AppState, stored: &StoredInvocation) -> Result<Value, Response> {
    let trace_id = &stored.invocation.trace_id;
    let (executes, logs, reports) = match tokio::try_join!(
        state.store.executes(trace_id),
        state.store.logs(trace_id),
        state.store.reports(trace_id)
    ) {
        Ok(read) => read,
        Err(e) => return Err(unavailable(e)),
    };
    let base = format!("/plugins/{}/bk_plugin/reports/{trace_id}", stored.invocation.plugin);
    let reports: Vec<Value> = reports
        .unwrap_or_default()
        .into_iter()
        .map(|mut report| {
            if let Some(html) = report.get("html").and_then(Value::as_str).map(str::to_owned) {
                report["html_path"] = json!(format!("{base}/{html}"));
            }
            report
        })
        .collect();
    let inv = &stored.invocation;
    Ok(json!({
        "trace_id": inv.trace_id,
        "plugin": inv.plugin,
        "version": inv.version,
        "state": inv.state.code(),
        "state_name": inv.state.name(),
        "invoke_count": inv.invoke_count,
        "inputs": inv.inputs,
        "context": inv.context,
        "outputs": inv.outputs,
        "err": inv.err,
        "created_at": stored.created_at,
        "updated_at": stored.updated_at,
        "finish_at": stored.finish_at,
        "next_run_at": if inv.state == InvocationState::Poll { stored.next_run_at } else { None },
        "running": stored.lease_owner.is_some(),
        "callback_deadline_at": stored.callback_deadline_at,
        "now": now_ms(),
        "executes": executes.unwrap_or_default().iter().map(execute_json).collect::<Vec<_>>(),
        "logs": logs.unwrap_or_default(),
        "reports": reports,
        "callbacks": if inv.state == InvocationState::Callback { callback_urls(state, stored) } else { Vec::new() },
    }))
}

/// `GET /ui/api/invocations/{trace_id}`: everything the invocation page shows, in one read.
pub(crate) async fn invocation(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(trace_id)) = path else {
        return fail(StatusCode::NOT_FOUND, "no such invocation", None);
    };
    let caller = caller.map(|c| c.0);
    let stored = match visible(&state, caller.as_ref(), &trace_id).await {
        Ok(stored) => stored,
        Err(response) => return response,
    };
    match snapshot(&state, &stored).await {
        Ok(data) => Json(json!({"result": true, "data": data, "message": ""})).into_response(),
        Err(response) => response,
    }
}

/// The server is shutting down: open event streams end so that the graceful shutdown need not wait
/// for them. Added to the router by `serve` (an in-process router has none and never stops).
#[derive(Clone)]
pub(crate) struct Stopping(pub(crate) CancellationToken);

/// How long one event stream lasts at most: it holds one of `--max-connections`; the browser's
/// `EventSource` reconnects by itself.
const EVENTS_LIFETIME: Duration = Duration::from_secs(300);
/// A comment this often, so that a closed tab is noticed (the write fails) and proxies keep the
/// connection.
const EVENTS_KEEP_ALIVE: Duration = Duration::from_secs(10);

/// The invocation page's data for `stored`, as an event stream sends it (see [`crate::events`]).
pub(crate) async fn panel_snapshot(state: &AppState, stored: &StoredInvocation) -> Option<Snapshot> {
    let json = snapshot(state, stored).await.ok()?.to_string();
    // What changes when the page must be redrawn.
    let seen = (
        stored.updated_at,
        stored.invocation.state.code(),
        stored.invocation.invoke_count,
        stored.lease_owner.is_some(),
    );
    Some(Snapshot { seen, last: stored.invocation.state.is_final(), json: json.into() })
}

/// `GET /ui/api/invocations/{trace_id}/events`: the same snapshot as `/ui/api/invocations/{trace_id}`
/// as server-sent events: `invocation` at once and whenever it changes, `final` (the last snapshot)
/// when it is final, then the stream ends; it also ends after [`EVENTS_LIFETIME`], at shutdown, and
/// when the client goes away. An unknown (or another app's) invocation is a plain 404 at once.
pub(crate) async fn invocation_events(
    State(state): State<AppState>,
    caller: Option<axum::Extension<Caller>>,
    stopping: Option<axum::Extension<Stopping>>,
    path: Result<Path<String>, PathRejection>,
) -> Response {
    let Ok(Path(trace_id)) = path else {
        return fail(StatusCode::NOT_FOUND, "no such invocation", None);
    };
    let caller = caller.map(|c| c.0);
    let first = match visible(&state, caller.as_ref(), &trace_id).await {
        Ok(stored) => stored,
        Err(response) => return response,
    };
    // Counted from here, for as long as the stream is open.
    let app =
        state.config.auth.is_configured().then(|| caller.as_ref().and_then(|c| c.app_code.clone()).unwrap_or_default());
    let permit = match state.event_streams.open(app.as_deref()) {
        Ok(permit) => permit,
        Err(message) => return fail(StatusCode::TOO_MANY_REQUESTS, &message, None),
    };
    // The first event from the read just made (a stream shows what is there at once), then each
    // new snapshot of the watch that every stream of this invocation shares, which reads the store
    // once per change.
    let Some(initial) = panel_snapshot(&state, &first).await else {
        return fail(StatusCode::SERVICE_UNAVAILABLE, "the invocation cannot be read", None);
    };
    let stop = stopping.map(|s| s.0 .0).unwrap_or_default();
    let deadline = tokio::time::Instant::now() + EVENTS_LIFETIME;
    let snapshots = state.event_streams.subscribe(&state, &trace_id);
    struct Stream {
        snapshots: tokio::sync::watch::Receiver<Option<Arc<Snapshot>>>,
        _permit: StreamPermit,
        initial: Option<Snapshot>,
        seen: Option<(i64, u8, u32, bool)>,
        done: bool,
    }
    let stream = Stream { snapshots, _permit: permit, initial: Some(initial), seen: None, done: false };
    let events = futures_util::stream::unfold(stream, move |mut s| {
        let stop = stop.clone();
        async move {
            if s.done {
                return None;
            }
            let snapshot = match s.initial.take() {
                Some(initial) => Arc::new(initial),
                None => loop {
                    tokio::select! {
                        changed = s.snapshots.changed() => changed.ok()?,
                        () = tokio::time::sleep_until(deadline) => return None,
                        () = stop.cancelled() => return None,
                    }
                    // None: gone (retention), or the store failed; the client reconnects or polls.
                    let latest = s.snapshots.borrow_and_update().clone()?;
                    if Some(latest.seen) != s.seen {
                        break latest;
                    }
                },
            };
            s.seen = Some(snapshot.seen);
            s.done = snapshot.last;
            let name = if s.done { "final" } else { "invocation" };
            let event = Event::default().event(name).data(&*snapshot.json);
            Some((Ok::<_, Infallible>(event), s))
        }
    });
    let mut response = Sse::new(events).keep_alive(KeepAlive::new().interval(EVENTS_KEEP_ALIVE)).into_response();
    let headers = response.headers_mut();
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-cache"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    response
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn assets_stay_small_and_scripts_stay_out_of_the_page() {
        let total: usize = ASSETS.iter().map(|(_, _, body)| body.len()).sum();
        assert!(total < 250 * 1024, "panel assets are {total} bytes");
        let (_, _, index) = ASSETS[0];
        assert!(!index.contains("<script>"), "no inline script");
        assert!(!index.contains(" style=\""), "no inline style");
        for (name, _, body) in ASSETS {
            assert!(
                !body.contains("http://") && !body.contains("https://") || name.ends_with(".svg"),
                "{name} loads nothing from elsewhere"
            );
        }
    }
}
