//! The OpenAPI 3.1 document served at `/openapi.json`, built from the same route table as the router,
//! so that the two cannot disagree.
//!
//! Every operation lists every status it can answer with and the shape of each body; `.ci/schemathesis`
//! holds a real server to it. The document describes this server: its plugins and versions, and
//! credentials only where it requires them.

use plugd_sdk::ApiMethod;
use serde_json::{json, Map, Value};

use crate::api::{BK_ROUTES, PANEL_ROUTES};
use crate::state::AppState;

/// The two prefixes of the bk-plugin routes: the default plugin's, and every plugin's.
const PREFIXES: [(&str, &str); 2] = [("/bk_plugin", "default"), ("/plugins/{plugin}/bk_plugin", "plugins")];

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// `{"result": true, "data": ..., "message": ...}`, with a required `trace_id` when `trace_id`.
fn success(data: Value, trace_id: bool) -> Value {
    let mut required = vec!["result", "data", "message"];
    if trace_id {
        required.push("trace_id");
    }
    json!({
        "type": "object",
        "required": required,
        "properties": {"result": {"const": true}, "data": data, "message": {"type": "string"}, "trace_id": schema("TraceId")},
    })
}

/// A 200 that is a success or the error envelope (`result: false`, `data: null`).
fn success_or_failure(data: Value, trace_id: bool) -> Value {
    json!({"anyOf": [success(data, trace_id), schema("Failure")]})
}

fn json_response(description: &str, body: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": body}}})
}

/// An operation before the statuses every route shares are added.
struct Operation {
    summary: &'static str,
    request: Option<Value>,
    ok: Value,
    /// Statuses particular to the route: status, why.
    errors: Vec<(&'static str, &'static str)>,
}

impl Operation {
    fn new(summary: &'static str, ok: Value) -> Operation {
        Operation { summary, request: None, ok, errors: Vec::new() }
    }

    fn request(mut self, body: Value) -> Operation {
        self.request = Some(body);
        self
    }

    fn error(mut self, status: &'static str, why: &'static str) -> Operation {
        self.errors.push((status, why));
        self
    }
}

/// What a bk-plugin route takes and answers.
fn describe(method: &str, path: &str) -> Operation {
    let state = schema("State");
    let unavailable = "The store cannot be read or written.";
    let unknown_version = "No such version of the plugin.";
    let scope = "The plugin's allow_scope refuses the caller (`{\"detail\": ...}`, as the Python framework answers).";
    let invalid_input = "The body is not what the operation takes (`输入不合法: ...`).";
    let any_json = json!({"description": "Any JSON; ignored."});
    match (method, path) {
        ("get", "/meta") => Operation::new(
            "The plugin's code, versions (newest first) and description.",
            json_response(
                "The plugin.",
                success(
                    json!({"type": "object",
                    "required": ["code", "versions", "language", "description", "framework_version", "runtime_version", "allow_scope"],
                    "properties": {
                        "code": {"type": "string"}, "versions": {"type": "array", "items": {"type": "string"}},
                        "language": {"type": "string"}, "description": {"type": "string"},
                        "framework_version": {"type": "string"}, "runtime_version": {"type": ["string", "null"]},
                        "allow_scope": {"type": "object"}}}),
                    false,
                ),
            ),
        ),
        ("get", "/detail/{version}") => Operation::new(
            "A version's description, JSON Schemas of inputs, outputs and context inputs, and form.",
            json_response(
                "The version.",
                success(
                    json!({"type": "object",
                    "required": ["desc", "version", "enable_plugin_callback", "inputs", "outputs", "context_inputs", "forms"],
                    "properties": {
                        "desc": {"type": "string"}, "version": {"type": "string"}, "enable_plugin_callback": {"type": "boolean"},
                        "inputs": {"type": "object"}, "outputs": {"type": "object"},
                        "context_inputs": {"type": "object", "required": ["properties"]},
                        "forms": {"type": "object", "required": ["renderform"], "properties": {"renderform": {"type": ["string", "null"]}}}}}),
                    false,
                ),
            ),
        )
        .error("404", unknown_version),
        ("post", "/invoke/{version}") => Operation::new(
            "Runs the first execute. A plugin failure is result true with state 5 and err; a store failure is \
             result false with data null (503 when the store is unreachable: nothing was recorded).",
            json_response(
                "The invocation after its first execute (or why it could not be recorded).",
                success_or_failure(
                    json!({"type": "object", "required": ["outputs", "state", "err"], "properties": {
                        "outputs": {"type": ["object", "null"]}, "state": state, "err": {"type": ["string", "null"]}}}),
                    true,
                ),
            ),
        )
        .request(json!({"type": "object", "required": ["inputs"], "properties": {
            "inputs": {"type": "object"}, "context": {"type": "object"}}}))
        .error("400", invalid_input)
        .error("403", scope)
        .error("404", unknown_version)
        .error("503", unavailable),
        ("get", "/schedule/{trace_id}") => Operation::new(
            "State and outputs of an invocation.",
            json_response(
                "The invocation, or result false with data null when there is no such invocation.",
                success_or_failure(
                    json!({"type": "object",
                    "required": ["trace_id", "plugin_version", "state", "outputs", "err", "created_at", "finish_at"],
                    "properties": {
                        "trace_id": schema("TraceId"), "plugin_version": {"type": "string"},
                        "state": {"type": "integer", "enum": [2, 3, 4, 5]}, "outputs": {"type": "object"},
                        "err": {"type": "string"}, "created_at": schema("Time"),
                        "finish_at": {"anyOf": [schema("Time"), {"const": ""}]}}}),
                    true,
                ),
            ),
        )
        .error("503", unavailable),
        ("post", "/callback/{token}") => Operation::new(
            "A third party posts JSON to a signed callback URL; the invocation runs again with it.",
            json_response("Accepted.", success(json!({"type": "null"}), false)),
        )
        .request(json!({"description": "Any JSON: the callback's data, which the plugin receives."}))
        .error(
            "400",
            "The token is invalid or expired, the body is not JSON, the callback was already received, or the \
             invocation has finished.",
        )
        .error("503", unavailable),
        ("get", "/logs/{trace_id}") => Operation::new(
            "Logs captured during the invocation's executes.",
            json_response(
                "The logs, or result false with data null when there is no such invocation.",
                success_or_failure(
                    json!({"type": "object", "required": ["log"], "properties": {"log": {"type": "string"}}}),
                    false,
                ),
            ),
        )
        .error("503", unavailable),
        ("get", "/reports/{trace_id}") => Operation::new(
            "The reports of the invocation's executes, with links to their files.",
            json_response(
                "The reports, or result false with data null when there is no such invocation.",
                success_or_failure(json!({"type": "array", "items": {"type": "object"}}), false),
            ),
        )
        .error("503", unavailable),
        ("get", "/reports/{trace_id}/{*path}") => Operation::new(
            "A report file, under a content-security policy that allows no scripts.",
            json!({"description": "The file, with the media type of its extension.", "content": {"*/*": {"schema": {}}}}),
        )
        .error("404", "No such invocation or report file.")
        .error("503", unavailable),
        ("post", "/cancel/{trace_id}") => Operation::new(
            "Fails a pending invocation.",
            json_response(
                "Cancelled.",
                success(
                    json!({"type": "object", "required": ["trace_id", "state"], "properties": {
                        "trace_id": {"type": "string"}, "state": {"const": 5}}}),
                    false,
                ),
            ),
        )
        .request(any_json)
        .error("404", "No such invocation.")
        .error("409", "The invocation has already finished.")
        .error("503", unavailable),
        ("post", "/plugin_api_dispatch") => Operation::new(
            "Calls a plugin API and wraps its reply in the envelope.",
            json_response("The plugin API's reply, as data.", success(json!({}), true)),
        )
        .request(json!({"type": "object", "required": ["url", "method"], "properties": {
            "url": {"type": "string", "pattern": "^/bk_plugin/plugin_api/"},
            "method": {"type": "string", "pattern": "^([gG][eE][tT]|[pP][oO][sS][tT])$"},
            "username": {"type": "string"}, "data": {"type": ["object", "null"]},
            "dumped_data": {"type": ["string", "null"], "pattern": "^\\s*\\{", "contentMediaType": "application/json",
                "description": "A JSON object, encoded as a string, merged into data."}}}))
        .error("400", invalid_input)
        .error("403", scope)
        .error("404", "The plugin has no such API.")
        .error("501", "A Python project's views need Django and Django REST framework in its environment.")
        .error("default", "The plugin API failed with a status of its choosing."),
        (_, "/plugin_api/{*path}") => {
            let mut operation = Operation::new(
                "A plugin's data-source API.",
                json_response("The plugin API's reply, as it is.", json!({})),
            )
            .error("404", "The plugin has no such API.")
            .error("501", "A Python project's views need Django and Django REST framework in its environment.")
            .error("default", "The plugin API failed with a status of its choosing.");
            if method == "post" {
                operation = operation
                    .request(json!({"description": "Any JSON: the API's input."}))
                    .error("400", "The body is not JSON.");
            }
            operation
        }
        _ => Operation::new("", json_response("OK", json!({}))),
    }
}

/// Why each status happens, for the statuses that many routes share.
fn common_error(status: &str) -> &'static str {
    match status {
        "400" => "A path parameter is not valid text, or the body could not be read.",
        "401" => "Credentials are missing or invalid: send `Authorization: Bearer <token>` or an `X-Bkapi-JWT`.",
        "403" => {
            "An open server (no credentials configured) answers only requests whose `Host` is a loopback name \
             or its public URL's host, and whose `Origin`, when sent, is its own."
        }
        "404" => "No such plugin, or no default plugin is served (use `/plugins/{plugin}/bk_plugin/...`).",
        "405" => "The path does not take this method; the `Allow` header says which it takes.",
        "408" => "The request body did not arrive in time.",
        "413" => "The request body is larger than the server accepts.",
        "415" => "The body is not declared as `Content-Type: application/json`.",
        _ => "",
    }
}

/// The 403 body: the error envelope, or (allow_scope) the Python framework's `{"detail": ...}`.
fn forbidden() -> Value {
    json!({"anyOf": [schema("Failure"), {"type": "object", "required": ["detail"], "properties": {"detail": {"type": "string"}}}]})
}

/// Adds a status to `responses`, joining the reasons when it is already there.
fn add_status(responses: &mut Map<String, Value>, status: &str, why: &str) {
    if let Some(existing) = responses.get_mut(status) {
        let description = format!("{} {why}", existing["description"].as_str().unwrap_or_default());
        existing["description"] = Value::String(description);
        return;
    }
    let body = if status == "403" { forbidden() } else { schema("Failure") };
    responses.insert(status.into(), json_response(why, body));
}

/// The statuses every route of this server may answer with, beyond its own.
fn shared_statuses(state: &AppState, responses: &mut Map<String, Value>) {
    let mut shared = vec!["405", "408", "413"];
    if state.config.is_open() {
        shared.push("403");
    }
    for status in shared {
        add_status(responses, status, common_error(status));
    }
}

/// `operationId`s: `<method>_<prefix>_<path words>`.
fn operation_id(method: &str, scope: &str, path: &str) -> String {
    let words: Vec<&str> =
        path.split(|c: char| !c.is_ascii_alphanumeric() && c != '_').filter(|w| !w.is_empty()).collect();
    format!("{method}_{scope}_{}", words.join("_"))
}

/// The plugin that answers under `/bk_plugin/`, as the router picks it.
fn default_plugin(state: &AppState) -> Option<String> {
    if let Some(default) = &state.config.default_plugin {
        return Some(default.clone());
    }
    let names: Vec<&str> = state.registry.names().collect();
    match names.as_slice() {
        [only] => Some((*only).to_owned()),
        _ => None,
    }
}

/// The paths of the plugin APIs taking `method`: of `plugin`, or of every plugin.
fn plugin_apis(state: &AppState, method: &str, plugin: Option<String>) -> Vec<String> {
    let method = if method == "post" { ApiMethod::Post } else { ApiMethod::Get };
    let mut paths: Vec<String> = state
        .api_routes
        .iter()
        .filter(|(name, _)| plugin.as_ref().is_none_or(|p| p == *name))
        .flat_map(|(_, routes)| routes.iter().filter(|r| r.method == method).map(|r| r.path.clone()))
        .collect();
    paths.sort();
    paths.dedup();
    paths
}

fn path_parameter(name: &str, schema: Value, description: &str) -> Value {
    json!({"name": name, "in": "path", "required": true, "schema": schema, "description": description})
}

/// The operations that follow an invoke, fed its `trace_id`.
fn invoke_links(scope: &str, prefix: &str) -> Value {
    let mut links = Map::new();
    for (method, path) in [
        ("get", "/schedule/{trace_id}"),
        ("get", "/logs/{trace_id}"),
        ("get", "/reports/{trace_id}"),
        ("post", "/cancel/{trace_id}"),
    ] {
        let mut parameters = json!({"trace_id": "$response.body#/trace_id"});
        if prefix.contains("{plugin}") {
            parameters["plugin"] = json!("$request.path.plugin");
        }
        let name = path.trim_start_matches('/').split('/').next().unwrap_or_default();
        links.insert(name.into(), json!({"operationId": operation_id(method, scope, path), "parameters": parameters}));
    }
    Value::Object(links)
}

/// The document, listing every route under both prefixes.
pub(crate) fn document(state: &AppState) -> Value {
    let mut paths = Map::new();
    let plugins: Vec<&str> = state.registry.names().collect();
    let mut all_versions: Vec<String> = plugins.iter().flat_map(|p| state.registry.versions(p)).collect();
    all_versions.sort();
    all_versions.dedup();
    let default_versions = default_plugin(state).map(|p| state.registry.versions(&p)).unwrap_or_default();
    let credentials = state.config.auth.is_configured();
    for (prefix, scope) in PREFIXES {
        for (method, path, access) in BK_ROUTES {
            let operation = describe(method, path);
            let openapi_path = format!("{prefix}{}", path.replace("{*path}", "{path}"));
            let versions = if scope == "default" { &default_versions } else { &all_versions };
            let mut parameters: Vec<Value> = Vec::new();
            if openapi_path.contains("{plugin}") {
                parameters.push(path_parameter(
                    "plugin",
                    json!({"type": "string", "enum": plugins}),
                    "A served plugin.",
                ));
            }
            if openapi_path.contains("{version}") {
                let spellings: Vec<String> = versions.iter().flat_map(|v| plugd_sdk::version_spellings(v)).collect();
                let schema = match versions.is_empty() {
                    true => json!({"type": "string"}),
                    false => json!({"type": "string", "enum": spellings}),
                };
                let about = "A version of the plugin (see meta); `2` and `2.0` also name `2.0.0`.";
                parameters.push(path_parameter("version", schema, about));
            }
            if path.starts_with("/plugin_api/") {
                let apis = plugin_apis(state, method, (scope == "default").then(|| default_plugin(state)).flatten());
                let schema = match apis.is_empty() {
                    true => json!({"type": "string"}),
                    false => json!({"type": "string", "enum": apis}),
                };
                parameters.push(path_parameter("path", schema, "One of the plugin's APIs."));
            }
            for (name, description) in [
                ("trace_id", "An invocation's trace_id, as invoke returned it."),
                ("token", "The signed token of a callback URL."),
                ("path", "The file's path among the reports' files."),
            ] {
                if name == "path" && path.starts_with("/plugin_api/") {
                    continue;
                }
                if openapi_path.contains(&format!("{{{name}}}")) {
                    // A token is `{trace_id}.{callback_id}.{expires}.{signature}`, spelt only as issued
                    // (`SignedCallbacks`): any other string is refused before its signature is checked.
                    let schema = match name {
                        "token" => json!({"type": "string",
                            "pattern": "^[0-9a-f]{32}\\.[0-9a-f]{32}\\.(0|[1-9][0-9]*)\\.[0-9a-f]{64}$"}),
                        _ => json!({"type": "string"}),
                    };
                    parameters.push(path_parameter(name, schema, description));
                }
            }

            let mut ok = operation.ok;
            if *path == "/invoke/{version}" {
                ok["links"] = invoke_links(scope, prefix);
            }
            let mut responses = Map::new();
            responses.insert("200".into(), ok);
            for (status, why) in &operation.errors {
                add_status(&mut responses, status, why);
            }
            // Every route reads its parameters and, but for callbacks (whose token names the
            // plugin), the plugin they address.
            add_status(&mut responses, "400", common_error("400"));
            if *path != "/callback/{token}" {
                add_status(&mut responses, "404", common_error("404"));
            }
            if *method == "post" {
                add_status(&mut responses, "415", common_error("415"));
            }
            let protected = access.is_protected(&state.config) && credentials;
            if protected {
                add_status(&mut responses, "401", common_error("401"));
            }
            shared_statuses(state, &mut responses);

            let mut entry = json!({
                "operationId": operation_id(method, scope, path),
                "summary": operation.summary,
                "parameters": parameters,
                "responses": responses,
            });
            if let Some(body) = operation.request {
                entry["requestBody"] = json!({"required": true, "content": {"application/json": {"schema": body}}});
            }
            if protected {
                entry["security"] = json!([{"bearer": []}, {"apigw": []}]);
            }
            let item = paths.entry(openapi_path).or_insert_with(|| json!({}));
            item[*method] = entry;
        }
    }
    panel_paths(state, &mut paths);
    for (path, summary, ok, unavailable) in [
        (
            "/metrics",
            "Prometheus metrics.",
            json!({"description": "The metrics.", "content": {"text/plain": {"schema": {"type": "string"}}}}),
            json!({"description": "The store cannot be read.", "content": {"text/plain": {"schema": {"type": "string"}}}}),
        ),
        (
            "/healthz",
            "Readiness: the store answers reads and takes writes.",
            json_response(
                "Ready.",
                json!({"type": "object", "required": ["status"], "properties": {"status": {"const": "ok"}}}),
            ),
            json_response(
                "Not ready: the store cannot be read or written (for example a full disk or a read-only database).",
                json!({"type": "object", "required": ["status", "error"], "properties": {
                    "status": {"const": "unavailable"}, "error": {"type": "string"}}}),
            ),
        ),
        ("/openapi.json", "This document.", json_response("The document.", json!({"type": "object"})), Value::Null),
    ] {
        let mut responses = Map::new();
        responses.insert("200".into(), ok);
        if !unavailable.is_null() {
            responses.insert("503".into(), unavailable);
        }
        shared_statuses(state, &mut responses);
        let id = format!("get_{}", path.trim_start_matches('/').replace('.', "_"));
        paths.insert(path.into(), json!({"get": {"operationId": id, "summary": summary, "responses": responses}}));
    }
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "plugd bk-plugin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Plugins served: {}", plugins.join(", ")),
        },
        "paths": paths,
        "components": {
            "schemas": {
                "TraceId": {"type": "string", "pattern": "^[0-9a-f]{32}$"},
                "State": {"type": "integer", "enum": [1, 2, 3, 4, 5], "description": "EMPTY=1 POLL=2 CALLBACK=3 SUCCESS=4 FAIL=5"},
                "Time": {"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$", "description": "UTC"},
                "Failure": {
                    "type": "object",
                    "required": ["result", "data", "message"],
                    "properties": {"result": {"const": false}, "data": {"type": "null"}, "message": {"type": "string"}, "trace_id": schema("TraceId")},
                },
            },
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apigw": {"type": "apiKey", "in": "header", "name": "X-Bkapi-JWT"},
            },
        },
    })
}

/// The debug panel's own API (`/ui/api/...`), under the same access rules as the bk-plugin routes.
fn panel_paths(state: &AppState, paths: &mut Map<String, Value>) {
    let plugins: Vec<&str> = state.registry.names().collect();
    let credentials = state.config.auth.is_configured();
    let millis = json!({"type": "integer", "description": "Unix time in milliseconds"});
    let optional_millis = json!({"type": ["integer", "null"], "description": "Unix time in milliseconds"});
    let state_schema = schema("State");
    let state_name = json!({"type": "string", "enum": ["EMPTY", "POLL", "CALLBACK", "SUCCESS", "FAIL"]});
    let nullable_string = json!({"type": ["string", "null"]});
    for (method, path, access) in PANEL_ROUTES {
        let mut parameters: Vec<Value> = Vec::new();
        let mut responses = Map::new();
        let (summary, ok) = match *path {
            "/ui/api/plugins" => (
                "The panel: every plugin with its versions, and whether the server wants credentials.",
                json_response(
                    "The plugins.",
                    success(
                        json!({"type": "object", "required": ["plugins", "credentials_required"], "properties": {
                            "credentials_required": {"type": "boolean"},
                            "plugins": {"type": "array", "items": {"type": "object", "required": ["name", "versions"], "properties": {
                                "name": {"type": "string"},
                                "versions": {"type": "array", "items": {"type": "object",
                                    "required": ["version", "description", "has_form", "enable_plugin_callback", "source"],
                                    "properties": {
                                        "version": {"type": "string"}, "description": {"type": "string"},
                                        "has_form": {"type": "boolean"}, "enable_plugin_callback": {"type": "boolean"},
                                        "source": {"type": "string", "description": "`built-in`, or the folder it was loaded from"},
                                    }}},
                            }}},
                        }}),
                        false,
                    ),
                ),
            ),
            "/ui/api/forms/{plugin}/{version}" => {
                parameters.push(path_parameter("plugin", json!({"type": "string", "enum": plugins}), "A plugin."));
                parameters.push(path_parameter("version", json!({"type": "string"}), "A version of the plugin."));
                add_status(&mut responses, "404", "No such plugin or version, or the version has no form.js.");
                (
                    "The panel: a version's BlueKing form.js, as a script.",
                    json!({"description": "The form.js.", "content": {"text/javascript": {"schema": {"type": "string"}}}}),
                )
            }
            "/ui/api/invocations" => {
                for (name, schema, description) in [
                    ("plugin", json!({"type": "string"}), "Only this plugin's invocations."),
                    ("version", json!({"type": "string"}), "Only this version's."),
                    ("state", json!({"type": "integer", "minimum": 1, "maximum": 5}), "Only those in this state."),
                    (
                        "page",
                        json!({"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}),
                        "The page, from 1.",
                    ),
                    (
                        "per_page",
                        json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20}),
                        "Invocations per page.",
                    ),
                ] {
                    parameters.push(json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description}));
                }
                add_status(&mut responses, "400", "A query parameter is out of range.");
                add_status(&mut responses, "503", "The store cannot be read.");
                let item = json!({"type": "object",
                "required": ["trace_id", "plugin", "version", "state", "state_name", "invoke_count", "err", "created_at", "finish_at"],
                "properties": {
                    "trace_id": schema("TraceId"), "plugin": {"type": "string"}, "version": {"type": "string"},
                    "state": state_schema, "state_name": state_name, "invoke_count": {"type": "integer"},
                    "err": nullable_string, "created_at": millis, "finish_at": optional_millis,
                }});
                (
                    "The panel: invocations, newest first, filtered and paged (only the caller's app's, with credentials).",
                    json_response(
                        "A page of history.",
                        success(
                            json!({"type": "object", "required": ["items", "total", "page", "per_page"], "properties": {
                                "items": {"type": "array", "items": item},
                                "total": {"type": "integer"}, "page": {"type": "integer"}, "per_page": {"type": "integer"},
                            }}),
                            false,
                        ),
                    ),
                )
            }
            "/ui/api/nodes" => {
                add_status(&mut responses, "503", "The store cannot be read.");
                let node = json!({"type": "object",
                "required": ["node_id", "live", "plugd_version", "schema_version", "serves", "started_at", "last_seen", "stopped_at"],
                "properties": {
                    "node_id": {"type": "string"}, "live": {"type": "boolean"}, "plugd_version": {"type": "string"},
                    "schema_version": {"type": "integer"},
                    "serves": {"type": "array", "items": {"type": "string", "description": "`plugin@version`"}},
                    "started_at": millis, "last_seen": millis, "stopped_at": optional_millis,
                }});
                let group = json!({"type": "object", "required": ["plugin", "version", "count", "oldest_due_at"],
                "properties": {
                    "plugin": {"type": "string"}, "version": {"type": "string"}, "count": {"type": "integer"},
                    "oldest_due_at": millis,
                }});
                (
                    "The panel: the nodes sharing the store, and the due invocations no live node serves.",
                    json_response(
                        "The nodes.",
                        success(
                            json!({"type": "object", "required": ["this_node", "now", "nodes", "unserved_due"], "properties": {
                                "this_node": {"type": "string"}, "now": millis,
                                "nodes": {"type": "array", "items": node},
                                "unserved_due": {"type": "array", "items": group},
                            }}),
                            false,
                        ),
                    ),
                )
            }
            "/ui/api/invocations/{trace_id}/events" => {
                parameters.push(path_parameter("trace_id", json!({"type": "string"}), "An invocation's trace_id."));
                add_status(&mut responses, "404", "No such invocation (or another app's).");
                add_status(
                    &mut responses,
                    "429",
                    "--max-event-streams streams are open, or the caller's app holds its share: poll instead.",
                );
                add_status(&mut responses, "503", "The store cannot be read.");
                (
                    "The panel: one invocation, live, as server-sent events.",
                    json!({
                        "description": "An event stream: `invocation` at once and whenever the invocation changes, \
                            each the `data` of `GET /ui/api/invocations/{trace_id}` as JSON; `final`, the last snapshot, \
                            when it is final, and the stream ends. It also ends after five minutes (an `EventSource` \
                            reconnects), at shutdown, and when the client goes away; comments keep it alive.",
                        // Each event of the stream, as schemathesis and OpenAPI 3.2 read an event stream.
                        "content": {"text/event-stream": {"schema": {
                            "type": "object",
                            "required": ["event", "data"],
                            "properties": {
                                "event": {"type": "string", "enum": ["invocation", "final"]},
                                "data": {"type": "string", "description": "The invocation, as JSON."},
                            },
                        }}},
                    }),
                )
            }
            _ => {
                parameters.push(path_parameter("trace_id", json!({"type": "string"}), "An invocation's trace_id."));
                add_status(&mut responses, "404", "No such invocation (or another app's).");
                add_status(&mut responses, "503", "The store cannot be read.");
                let execute = json!({"type": "object",
                "required": ["trigger", "invoke_count", "started_at", "duration_ms", "state", "state_name", "err"],
                "properties": {
                    "trigger": {"type": "string", "enum": ["start", "poll", "callback"]},
                    "invoke_count": {"type": "integer"}, "started_at": millis, "duration_ms": {"type": "number"},
                    "state": state_schema, "state_name": state_name, "err": nullable_string,
                }});
                (
                    "The panel: one invocation with its timeline of executes, logs, reports and callback URLs.",
                    json_response(
                        "The invocation.",
                        success(
                            json!({"type": "object",
                            "required": ["trace_id", "plugin", "version", "state", "state_name", "invoke_count", "inputs",
                                "context", "outputs", "err", "created_at", "updated_at", "finish_at", "next_run_at", "running",
                                "callback_deadline_at", "now", "executes", "logs", "reports", "callbacks"],
                            "properties": {
                                "trace_id": schema("TraceId"), "plugin": {"type": "string"}, "version": {"type": "string"},
                                "state": state_schema, "state_name": state_name, "invoke_count": {"type": "integer"},
                                "inputs": {}, "context": {}, "outputs": {"type": "object"}, "err": nullable_string,
                                "created_at": millis, "updated_at": millis, "finish_at": optional_millis,
                                "next_run_at": optional_millis, "running": {"type": "boolean"},
                                "callback_deadline_at": optional_millis, "now": millis,
                                "executes": {"type": "array", "items": execute},
                                "logs": {"type": "string"},
                                "reports": {"type": "array", "items": {"type": "object"}},
                                "callbacks": {"type": "array", "items": {"type": "object", "required": ["url", "path"], "properties": {
                                    "url": {"type": "string"}, "path": {"type": "string"}}}},
                            }}),
                            false,
                        ),
                    ),
                )
            }
        };
        responses.insert("200".into(), ok);
        let protected = access.is_protected(&state.config) && credentials;
        if protected {
            add_status(&mut responses, "401", common_error("401"));
        }
        shared_statuses(state, &mut responses);
        let id = operation_id(method, "panel", path.trim_start_matches("/ui/api"));
        let mut entry =
            json!({"operationId": id, "summary": summary, "parameters": parameters, "responses": responses});
        if protected {
            entry["security"] = json!([{"bearer": []}, {"apigw": []}]);
        }
        paths.insert((*path).to_owned(), json!({ *method: entry }));
    }
}
