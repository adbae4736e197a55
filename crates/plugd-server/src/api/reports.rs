//! `reports/{trace_id}` (the list) and `reports/{trace_id}/{path}` (the files, under a strict CSP).

use axum::extract::State;
use axum::http::{header, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde_json::{json, Value};

use super::Addressed;
use crate::reports::{content_type, stored_path, CONTENT_SECURITY_POLICY};
use crate::state::AppState;
use crate::wire::fail;

pub(super) async fn list(State(state): State<AppState>, addressed: Addressed) -> Response {
    let trace_id = addressed.param("trace_id");
    let not_found = || fail(StatusCode::OK, &format!("can not find schedule for trace_id {trace_id}"), None);
    match addressed.invocation(&state, trace_id).await {
        Ok(Some(_)) => {}
        Ok(None) => return not_found(),
        Err(e) => return fail(StatusCode::SERVICE_UNAVAILABLE, &format!("reports read error: {e}"), None),
    }
    let reports = match state.store.reports(trace_id).await {
        Ok(Some(reports)) => reports,
        Ok(None) => return not_found(),
        Err(e) => return fail(StatusCode::SERVICE_UNAVAILABLE, &format!("reports read error: {e}"), None),
    };
    let base = format!("{}/plugins/{}/bk_plugin/reports/{trace_id}", state.config.public_url, addressed.plugin);
    let listed: Vec<Value> = reports
        .into_iter()
        .map(|mut report| {
            if let Some(html) = report.get("html").and_then(Value::as_str).map(str::to_owned) {
                report["html_url"] = json!(format!("{base}/{html}"));
            }
            report
        })
        .collect();
    Json(json!({"result": true, "data": listed, "message": ""})).into_response()
}

pub(super) async fn file(State(state): State<AppState>, addressed: Addressed) -> Response {
    let trace_id = addressed.param("trace_id");
    let missing = || fail(StatusCode::NOT_FOUND, "no such report file", None);
    if !matches!(addressed.invocation(&state, trace_id).await, Ok(Some(_))) {
        return missing();
    }
    let Some(path) = stored_path(addressed.param("path")) else {
        return missing();
    };
    match state.store.report_file(trace_id, &path).await {
        Ok(Some(bytes)) => (
            [
                (header::CONTENT_TYPE, content_type(std::path::Path::new(&path))),
                (header::CONTENT_SECURITY_POLICY, CONTENT_SECURITY_POLICY),
                (header::X_CONTENT_TYPE_OPTIONS, "nosniff"),
            ],
            bytes,
        )
            .into_response(),
        Ok(None) => missing(),
        Err(e) => fail(StatusCode::SERVICE_UNAVAILABLE, &format!("report read error: {e}"), None),
    }
}
