//! `/metrics`, `/healthz` and `/openapi.json`.

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::json;

use crate::state::{now_ms, AppState};

pub(super) async fn metrics(State(state): State<AppState>) -> Response {
    let read = async {
        Ok::<_, plugd_core::store::StoreError>((
            state.store.stats(now_ms()).await?,
            state.store.cluster(now_ms()).await?,
        ))
    };
    match read.await {
        Ok((stats, cluster)) => {
            let text = state.metrics.render(&stats, &cluster);
            ([(header::CONTENT_TYPE, "text/plain; version=0.0.4; charset=utf-8")], text).into_response()
        }
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, format!("store unavailable: {e}\n")).into_response(),
    }
}

/// Ready when the store answers reads and takes writes (a full disk or a read-only database is not
/// ready: every invoke would fail).
pub(super) async fn healthz(State(state): State<AppState>) -> Response {
    let checked = match state.store.next_due(now_ms(), &state.node.served).await {
        Ok(_) => state.store.check_writable().await,
        Err(e) => Err(e),
    };
    match checked {
        Ok(()) => Json(json!({"status": "ok"})).into_response(),
        Err(e) => (StatusCode::SERVICE_UNAVAILABLE, Json(json!({"status": "unavailable", "error": e.to_string()})))
            .into_response(),
    }
}

pub(super) async fn openapi(State(state): State<AppState>) -> Response {
    Json(super::openapi::document(&state)).into_response()
}
