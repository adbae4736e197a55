//! The OpenAPI 3 document served at `/openapi.json`, built from the same route table as the router,
//! so that the two cannot disagree.

use serde_json::{json, Map, Value};

use crate::api::BK_ROUTES;
use crate::state::AppState;

fn envelope(data: Value) -> Value {
    json!({
        "type": "object",
        "required": ["result", "data", "message"],
        "properties": {
            "result": {"type": "boolean"},
            "data": data,
            "message": {"type": "string"},
            "trace_id": {"type": "string", "pattern": "^[0-9a-f]{32}$"}
        }
    })
}

/// Summary, request body schema and response `data` schema of a route.
fn describe(method: &str, path: &str) -> (&'static str, Option<Value>, Value) {
    let state = json!({"type": "integer", "enum": [1, 2, 3, 4, 5], "description": "EMPTY=1 POLL=2 CALLBACK=3 SUCCESS=4 FAIL=5"});
    match (method, path) {
        ("get", "/meta") => {
            ("The plugin's code, versions (newest first) and description.", None, json!({"type": "object"}))
        }
        ("get", "/detail/{version}") => (
            "Schemas of a version: desc, version, inputs, outputs, context_inputs, enable_plugin_callback, forms.",
            None,
            json!({"type": "object"}),
        ),
        ("post", "/invoke/{version}") => (
            "Runs the first execute; plugin failures are result true with state 5 and err.",
            Some(json!({"type": "object", "required": ["inputs", "context"],
                "properties": {"inputs": {"type": "object"}, "context": {"type": "object"}}})),
            json!({"type": "object", "properties": {"outputs": {"type": ["object", "null"]}, "state": state, "err": {"type": ["string", "null"]}}}),
        ),
        ("get", "/schedule/{trace_id}") => (
            "State and outputs of an invocation (result false when unknown).",
            None,
            json!({"type": "object", "properties": {"trace_id": {"type": "string"}, "plugin_version": {"type": "string"},
                "state": state, "outputs": {"type": "object"}, "err": {"type": "string"},
                "created_at": {"type": "string"}, "finish_at": {"type": "string"}}}),
        ),
        ("post", "/callback/{token}") => (
            "A third party posts JSON to a signed callback URL; the invocation runs again with it.",
            Some(json!({})),
            json!({"type": "null"}),
        ),
        ("get", "/logs/{trace_id}") => (
            "Logs captured during the invocation's executes.",
            None,
            json!({"type": "object", "properties": {"log": {"type": "string"}}}),
        ),
        ("post", "/cancel/{trace_id}") => ("Fails a pending invocation.", None, json!({"type": "object"})),
        ("post", "/plugin_api_dispatch") => (
            "Calls a plugin API and wraps its reply in the envelope.",
            Some(json!({"type": "object", "required": ["url", "method"], "properties": {
                "url": {"type": "string"}, "method": {"type": "string", "enum": ["get", "post", "GET", "POST"]},
                "username": {"type": "string"}, "data": {"type": "object"}, "dumped_data": {"type": "string"}}})),
            json!({}),
        ),
        (_, "/plugin_api/{*path}") => ("A plugin's data-source API; the reply is the plugin's JSON.", None, json!({})),
        _ => ("", None, json!({})),
    }
}

/// The document, listing every route under both prefixes.
pub(crate) fn document(state: &AppState) -> Value {
    let mut paths = Map::new();
    for prefix in ["/bk_plugin", "/plugins/{plugin}/bk_plugin"] {
        for (method, path, access) in BK_ROUTES {
            let (summary, request, data) = describe(method, path);
            let openapi_path = format!("{prefix}{}", path.replace("{*path}", "{path}"));
            let mut parameters: Vec<Value> = Vec::new();
            for name in ["plugin", "version", "trace_id", "token", "path"] {
                if openapi_path.contains(&format!("{{{name}}}")) {
                    parameters
                        .push(json!({"name": name, "in": "path", "required": true, "schema": {"type": "string"}}));
                }
            }
            let mut operation = json!({
                "summary": summary,
                "parameters": parameters,
                "responses": {"200": {"description": "OK", "content": {"application/json": {"schema": envelope(data)}}}},
            });
            if let Some(schema) = request {
                operation["requestBody"] =
                    json!({"required": true, "content": {"application/json": {"schema": schema}}});
            }
            if access.is_protected(&state.config) {
                operation["security"] = json!([{"bearer": []}, {"apigw": []}]);
            }
            let entry = paths.entry(openapi_path).or_insert_with(|| json!({}));
            entry[*method] = operation;
        }
    }
    for (path, summary) in [
        ("/metrics", "Prometheus metrics."),
        ("/healthz", "Liveness: the store answers."),
        ("/openapi.json", "This document."),
    ] {
        paths.insert(path.into(), json!({"get": {"summary": summary, "responses": {"200": {"description": "OK"}}}}));
    }
    json!({
        "openapi": "3.0.3",
        "info": {
            "title": "plugd bk-plugin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Plugins served: {}", state.registry.names().collect::<Vec<_>>().join(", ")),
        },
        "paths": paths,
        "components": {"securitySchemes": {
            "bearer": {"type": "http", "scheme": "bearer"},
            "apigw": {"type": "apiKey", "in": "header", "name": "X-Bkapi-JWT"},
        }},
    })
}
