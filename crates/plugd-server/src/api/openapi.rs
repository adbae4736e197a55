//! The OpenAPI 3.1 document served at `/openapi.json`, built from the route tables the router is built
//! from ([`super::routes`]), with the bodies of the bk-plugin answers derived from the types their
//! handlers send ([`crate::wire`]): the document and the server cannot disagree.
//!
//! Every operation lists every status it can answer with and the shape of each body; `.ci/schemathesis`
//! holds a real server to it. The document describes this server: its plugins and versions, and
//! credentials only where it requires them.

use plugd_sdk::ApiMethod;
use schemars::generate::SchemaSettings;
use schemars::{JsonSchema, SchemaGenerator};
use serde_json::{json, Map, Value};

use super::routes::{Method, Route, BK_ROUTES, PANEL_ROUTES};
use crate::state::AppState;
use crate::wire::{self, Answer, TracedAnswer};

/// The two prefixes of the bk-plugin routes: the default plugin's, and every plugin's.
const PREFIXES: [(&str, &str); 2] = [("/bk_plugin", "default"), ("/plugins/{plugin}/bk_plugin", "plugins")];

fn schema(name: &str) -> Value {
    json!({"$ref": format!("#/components/schemas/{name}")})
}

/// The schema of `T`, its named parts (`TraceId`, `State`, `Time`) among the components.
fn schema_of<T: JsonSchema>(generator: &mut SchemaGenerator) -> Value {
    generator.subschema_for::<T>().to_value()
}

/// A 200 that is a success or the error envelope (`result: false`, `data: null`).
fn or_failure(success: Value) -> Value {
    json!({"anyOf": [success, schema("Failure")]})
}

/// `{"result": true, "data": ..., "message": ...}` for a `data` given as a schema (the panel's).
fn success(data: Value) -> Value {
    json!({
        "type": "object",
        "required": ["result", "data", "message"],
        "properties": {"result": {"const": true}, "data": data, "message": {"type": "string"}},
    })
}

fn json_response(description: &str, body: Value) -> Value {
    json!({"description": description, "content": {"application/json": {"schema": body}}})
}

/// What a route takes and answers, before the statuses every route shares are added.
pub(crate) struct Operation {
    summary: &'static str,
    request: Option<Value>,
    ok: Value,
    /// Query parameters.
    query: Vec<Value>,
    /// Statuses particular to the route: status, why.
    errors: Vec<(&'static str, &'static str)>,
}

impl Operation {
    fn new(summary: &'static str, ok: Value) -> Operation {
        Operation { summary, request: None, ok, query: Vec::new(), errors: Vec::new() }
    }

    fn request(mut self, body: Value) -> Operation {
        self.request = Some(body);
        self
    }

    fn query(mut self, name: &str, schema: Value, description: &str) -> Operation {
        self.query.push(
            json!({"name": name, "in": "query", "required": false, "schema": schema, "description": description}),
        );
        self
    }

    fn error(mut self, status: &'static str, why: &'static str) -> Operation {
        self.errors.push((status, why));
        self
    }
}

const UNAVAILABLE: &str = "The store cannot be read or written.";
const UNKNOWN_VERSION: &str = "No such version of the plugin.";
const SCOPE: &str =
    "The plugin's allow_scope refuses the caller (`{\"detail\": ...}`, as the Python framework answers).";
const INVALID_INPUT: &str = "The body is not what the operation takes (`输入不合法: ...`).";
const NO_API: &str = "The plugin has no such API.";
const NEEDS_DJANGO: &str = "A Python project's views need Django and Django REST framework in its environment.";
const API_FAILED: &str = "The plugin API failed with a status of its choosing.";

pub(super) fn meta(g: &mut SchemaGenerator) -> Operation {
    let ok = json_response("The plugin.", schema_of::<Answer<wire::Meta>>(g));
    Operation::new("The plugin's code, versions (newest first) and description.", ok)
}

pub(super) fn detail(g: &mut SchemaGenerator) -> Operation {
    let ok = json_response("The version.", schema_of::<Answer<wire::Detail>>(g));
    Operation::new("A version's description, JSON Schemas of inputs, outputs and context inputs, and form.", ok)
        .error("404", UNKNOWN_VERSION)
}

pub(super) fn invoke(g: &mut SchemaGenerator) -> Operation {
    let ok = json_response(
        "The invocation after its first execute (or why it could not be recorded).",
        or_failure(schema_of::<TracedAnswer<wire::Invoked>>(g)),
    );
    Operation::new(
        "Runs the first execute. A plugin failure is result true with state 5 and err; a store failure is \
         result false with data null (503 when the store is unreachable: nothing was recorded).",
        ok,
    )
    .request(json!({"type": "object", "required": ["inputs"], "properties": {
        "inputs": {"type": "object"}, "context": {"type": "object"}}}))
    .error("400", INVALID_INPUT)
    .error("403", SCOPE)
    .error("404", UNKNOWN_VERSION)
    .error("503", UNAVAILABLE)
}

pub(super) fn schedule(g: &mut SchemaGenerator) -> Operation {
    let ok = json_response(
        "The invocation, or result false with data null when there is no such invocation.",
        or_failure(schema_of::<TracedAnswer<wire::Schedule>>(g)),
    );
    Operation::new("State and outputs of an invocation.", ok).error("503", UNAVAILABLE)
}

pub(super) fn callback(_: &mut SchemaGenerator) -> Operation {
    let accepted = json!({"type": "object", "required": ["result", "data", "message"], "properties": {
        "result": {"const": true}, "data": {"type": "null"}, "message": {"type": "string"}}});
    Operation::new(
        "A third party posts JSON to a signed callback URL; the invocation runs again with it.",
        json_response("Accepted.", accepted),
    )
    .request(json!({"description": "Any JSON: the callback's data, which the plugin receives."}))
    .error(
        "400",
        "The token is invalid or expired, the body is not JSON, the callback was already received, or the \
         invocation has finished.",
    )
    .error("503", UNAVAILABLE)
}

pub(super) fn logs(g: &mut SchemaGenerator) -> Operation {
    let ok = json_response(
        "The logs, or result false with data null when there is no such invocation.",
        or_failure(schema_of::<Answer<wire::Logs>>(g)),
    );
    Operation::new("Logs captured during the invocation's executes.", ok).error("503", UNAVAILABLE)
}

pub(super) fn reports(_: &mut SchemaGenerator) -> Operation {
    let ok = json_response(
        "The reports, or result false with data null when there is no such invocation.",
        or_failure(success(json!({"type": "array", "items": {"type": "object"}}))),
    );
    Operation::new("The reports of the invocation's executes, with links to their files.", ok).error("503", UNAVAILABLE)
}

pub(super) fn report_file(_: &mut SchemaGenerator) -> Operation {
    Operation::new(
        "A report file, under a content-security policy that allows no scripts.",
        json!({"description": "The file, with the media type of its extension.", "content": {"*/*": {"schema": {}}}}),
    )
    .error("404", "No such invocation or report file.")
    .error("503", UNAVAILABLE)
}

pub(super) fn cancel(g: &mut SchemaGenerator) -> Operation {
    Operation::new("Fails a pending invocation.", json_response("Cancelled.", schema_of::<Answer<wire::Cancelled>>(g)))
        .request(json!({"description": "Any JSON; ignored."}))
        .error("404", "No such invocation.")
        .error("409", "The invocation has already finished.")
        .error("503", UNAVAILABLE)
}

pub(super) fn plugin_api_dispatch(_: &mut SchemaGenerator) -> Operation {
    let ok = json!({"type": "object", "required": ["result", "data", "message", "trace_id"], "properties": {
        "result": {"const": true}, "data": {}, "message": {"type": "string"}, "trace_id": schema("TraceId")}});
    Operation::new(
        "Calls a plugin API and wraps its reply in the envelope.",
        json_response("The plugin API's reply, as data.", ok),
    )
    .request(json!({"type": "object", "required": ["url", "method"], "properties": {
            "url": {"type": "string", "pattern": "^/bk_plugin/plugin_api/"},
            "method": {"type": "string", "pattern": "^([gG][eE][tT]|[pP][oO][sS][tT])$"},
            "username": {"type": "string"}, "data": {"type": ["object", "null"]},
            "dumped_data": {"type": ["string", "null"], "pattern": "^\\s*\\{", "contentMediaType": "application/json",
                "description": "A JSON object, encoded as a string, merged into data."}}}))
    .error("400", INVALID_INPUT)
    .error("403", SCOPE)
    .error("404", NO_API)
    .error("501", NEEDS_DJANGO)
    .error("default", API_FAILED)
}

fn plugin_api(summary: &'static str) -> Operation {
    Operation::new(summary, json_response("The plugin API's reply, as it is.", json!({})))
        .error("404", NO_API)
        .error("501", NEEDS_DJANGO)
        .error("default", API_FAILED)
}

pub(super) fn plugin_api_get(_: &mut SchemaGenerator) -> Operation {
    plugin_api("A plugin's data-source API.")
}

pub(super) fn plugin_api_post(_: &mut SchemaGenerator) -> Operation {
    plugin_api("A plugin's data-source API.")
        .request(json!({"description": "Any JSON: the API's input."}))
        .error("400", "The body is not JSON.")
}

fn millis(nullable: bool) -> Value {
    let kind = if nullable { json!(["integer", "null"]) } else { json!("integer") };
    json!({"type": kind, "description": "Unix time in milliseconds"})
}

fn state_name() -> Value {
    json!({"type": "string", "enum": ["EMPTY", "POLL", "CALLBACK", "SUCCESS", "FAIL"]})
}

pub(super) fn panel_plugins(_: &mut SchemaGenerator) -> Operation {
    let version = json!({"type": "object",
    "required": ["version", "description", "has_form", "enable_plugin_callback", "source"],
    "properties": {
        "version": {"type": "string"}, "description": {"type": "string"},
        "has_form": {"type": "boolean"}, "enable_plugin_callback": {"type": "boolean"},
        "source": {"type": "string", "description": "`built-in`, or the folder it was loaded from"},
    }});
    let data = json!({"type": "object", "required": ["plugins", "credentials_required"], "properties": {
        "credentials_required": {"type": "boolean"},
        "plugins": {"type": "array", "items": {"type": "object", "required": ["name", "versions"], "properties": {
            "name": {"type": "string"}, "versions": {"type": "array", "items": version},
        }}},
    }});
    Operation::new(
        "The panel: every plugin with its versions, and whether the server wants credentials.",
        json_response("The plugins.", success(data)),
    )
}

pub(super) fn panel_form(_: &mut SchemaGenerator) -> Operation {
    Operation::new(
        "The panel: a version's BlueKing form.js, as a script.",
        json!({"description": "The form.js.", "content": {"text/javascript": {"schema": {"type": "string"}}}}),
    )
    .error("404", "No such plugin or version, or the version has no form.js.")
}

pub(super) fn panel_history(_: &mut SchemaGenerator) -> Operation {
    let item = json!({"type": "object",
    "required": ["trace_id", "plugin", "version", "state", "state_name", "invoke_count", "err", "created_at", "finish_at"],
    "properties": {
        "trace_id": schema("TraceId"), "plugin": {"type": "string"}, "version": {"type": "string"},
        "state": schema("State"), "state_name": state_name(), "invoke_count": {"type": "integer"},
        "err": {"type": ["string", "null"]}, "created_at": millis(false), "finish_at": millis(true),
    }});
    let page = json!({"type": "object", "required": ["items", "total", "page", "per_page"], "properties": {
        "items": {"type": "array", "items": item},
        "total": {"type": "integer"}, "page": {"type": "integer"}, "per_page": {"type": "integer"},
    }});
    Operation::new(
        "The panel: invocations, newest first, filtered and paged (only the caller's app's, with credentials).",
        json_response("A page of history.", success(page)),
    )
    .query("plugin", json!({"type": "string"}), "Only this plugin's invocations.")
    .query("version", json!({"type": "string"}), "Only this version's.")
    .query("state", json!({"type": "integer", "minimum": 1, "maximum": 5}), "Only those in this state.")
    .query("page", json!({"type": "integer", "minimum": 1, "maximum": 1_000_000, "default": 1}), "The page, from 1.")
    .query("per_page", json!({"type": "integer", "minimum": 1, "maximum": 100, "default": 20}), "Invocations per page.")
    .error("400", "A query parameter is out of range.")
    .error("503", "The store cannot be read.")
}

pub(super) fn panel_invocation(_: &mut SchemaGenerator) -> Operation {
    let execute = json!({"type": "object",
    "required": ["trigger", "invoke_count", "started_at", "duration_ms", "state", "state_name", "err"],
    "properties": {
        "trigger": {"type": "string", "enum": ["start", "poll", "callback"]},
        "invoke_count": {"type": "integer"}, "started_at": millis(false), "duration_ms": {"type": "number"},
        "state": schema("State"), "state_name": state_name(), "err": {"type": ["string", "null"]},
    }});
    let invocation = json!({"type": "object",
    "required": ["trace_id", "plugin", "version", "state", "state_name", "invoke_count", "inputs",
        "context", "outputs", "err", "created_at", "updated_at", "finish_at", "next_run_at", "running",
        "callback_deadline_at", "now", "executes", "logs", "reports", "callbacks"],
    "properties": {
        "trace_id": schema("TraceId"), "plugin": {"type": "string"}, "version": {"type": "string"},
        "state": schema("State"), "state_name": state_name(), "invoke_count": {"type": "integer"},
        "inputs": {}, "context": {}, "outputs": {"type": "object"}, "err": {"type": ["string", "null"]},
        "created_at": millis(false), "updated_at": millis(false), "finish_at": millis(true),
        "next_run_at": millis(true), "running": {"type": "boolean"},
        "callback_deadline_at": millis(true), "now": millis(false),
        "executes": {"type": "array", "items": execute},
        "logs": {"type": "string"},
        "reports": {"type": "array", "items": {"type": "object"}},
        "callbacks": {"type": "array", "items": {"type": "object", "required": ["url", "path"], "properties": {
            "url": {"type": "string"}, "path": {"type": "string"}}}},
    }});
    Operation::new(
        "The panel: one invocation with its timeline of executes, logs, reports and callback URLs.",
        json_response("The invocation.", success(invocation)),
    )
    .error("404", "No such invocation (or another app's).")
    .error("503", "The store cannot be read.")
}

pub(super) fn panel_events(_: &mut SchemaGenerator) -> Operation {
    let stream = json!({
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
    });
    Operation::new("The panel: one invocation, live, as server-sent events.", stream)
        .error("404", "No such invocation (or another app's).")
        .error("429", "--max-event-streams streams are open, or the caller's app holds its share: poll instead.")
        .error("503", "The store cannot be read.")
}

pub(super) fn panel_nodes(_: &mut SchemaGenerator) -> Operation {
    let node = json!({"type": "object",
    "required": ["node_id", "live", "plugd_version", "schema_version", "serves", "started_at", "last_seen", "stopped_at"],
    "properties": {
        "node_id": {"type": "string"}, "live": {"type": "boolean"}, "plugd_version": {"type": "string"},
        "schema_version": {"type": "integer"},
        "serves": {"type": "array", "items": {"type": "string", "description": "`plugin@version`"}},
        "started_at": millis(false), "last_seen": millis(false), "stopped_at": millis(true),
    }});
    let group = json!({"type": "object", "required": ["plugin", "version", "count", "oldest_due_at"],
    "properties": {
        "plugin": {"type": "string"}, "version": {"type": "string"}, "count": {"type": "integer"},
        "oldest_due_at": millis(false),
    }});
    let data = json!({"type": "object", "required": ["this_node", "now", "nodes", "unserved_due"], "properties": {
        "this_node": {"type": "string"}, "now": millis(false),
        "nodes": {"type": "array", "items": node},
        "unserved_due": {"type": "array", "items": group},
    }});
    Operation::new(
        "The panel: the nodes sharing the store, and the due invocations no live node serves.",
        json_response("The nodes.", success(data)),
    )
    .error("503", "The store cannot be read.")
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

/// The paths of the plugin APIs taking `method`: of `plugin`, or of every plugin.
fn plugin_apis(state: &AppState, method: Method, plugin: Option<String>) -> Vec<String> {
    let method = if method == Method::Post { ApiMethod::Post } else { ApiMethod::Get };
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

/// The document: every route of [`BK_ROUTES`] under both prefixes, and of [`PANEL_ROUTES`].
pub(crate) fn document(state: &AppState) -> Value {
    let mut settings = SchemaSettings::draft2020_12();
    settings.definitions_path = "/components/schemas".into();
    let mut generator = settings.into_generator();
    let mut paths = Map::new();
    for (prefix, scope) in PREFIXES {
        for route in BK_ROUTES {
            let path = format!("{prefix}{}", route.path.replace("{*path}", "{path}"));
            let mut entry = operation(state, &mut generator, route, scope, &path);
            if route.path == "/invoke/{version}" {
                entry["responses"]["200"]["links"] = invoke_links(scope, prefix);
            }
            paths.entry(path).or_insert_with(|| json!({}))[route.method.as_str()] = entry;
        }
    }
    for route in PANEL_ROUTES {
        let entry = operation(state, &mut generator, route, "panel", route.path);
        paths.entry(route.path).or_insert_with(|| json!({}))[route.method.as_str()] = entry;
    }
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
    // The named parts of the answers, whether or not an answer above used them.
    let _ = (
        generator.subschema_for::<wire::TraceId>(),
        generator.subschema_for::<wire::StateCode>(),
        generator.subschema_for::<wire::Time>(),
    );
    let mut schemas = generator.take_definitions(true);
    schemas.insert(
        "Failure".into(),
        json!({
            "type": "object",
            "required": ["result", "data", "message"],
            "properties": {"result": {"const": false}, "data": {"type": "null"}, "message": {"type": "string"}, "trace_id": schema("TraceId")},
        }),
    );
    let plugins: Vec<&str> = state.registry.names().collect();
    json!({
        "openapi": "3.1.0",
        "info": {
            "title": "plugd bk-plugin API",
            "version": env!("CARGO_PKG_VERSION"),
            "description": format!("Plugins served: {}", plugins.join(", ")),
        },
        "paths": paths,
        "components": {
            "schemas": schemas,
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer"},
                "apigw": {"type": "apiKey", "in": "header", "name": "X-Bkapi-JWT"},
            },
        },
    })
}

/// The path parameters of `path` (a bk-plugin route under `scope`'s prefix, or a panel route).
fn path_parameters(state: &AppState, route: &Route, scope: &str, path: &str) -> Vec<Value> {
    let mut parameters = Vec::new();
    if path.contains("{plugin}") {
        let plugins: Vec<&str> = state.registry.names().collect();
        parameters.push(path_parameter("plugin", json!({"type": "string", "enum": plugins}), "A served plugin."));
    }
    if path.contains("{version}") {
        let versions = match scope {
            "default" => super::default_plugin(state).map(|p| state.registry.versions(&p)).unwrap_or_default(),
            _ => {
                let mut all: Vec<String> = state.registry.names().flat_map(|p| state.registry.versions(p)).collect();
                all.sort();
                all.dedup();
                all
            }
        };
        let spellings: Vec<String> = versions.iter().flat_map(|v| plugd_sdk::version_spellings(v)).collect();
        let schema = match versions.is_empty() {
            true => json!({"type": "string"}),
            false => json!({"type": "string", "enum": spellings}),
        };
        let about = "A version of the plugin (see meta); `2` and `2.0` also name `2.0.0`.";
        parameters.push(path_parameter("version", schema, about));
    }
    if route.path.starts_with("/plugin_api/") {
        let plugin = if scope == "default" { super::default_plugin(state) } else { None };
        let apis = plugin_apis(state, route.method, plugin);
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
        if name == "path" && route.path.starts_with("/plugin_api/") {
            continue;
        }
        if path.contains(&format!("{{{name}}}")) {
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
    parameters
}

/// The OpenAPI operation of `route` at `path`.
fn operation(state: &AppState, generator: &mut SchemaGenerator, route: &Route, scope: &str, path: &str) -> Value {
    let operation = (route.operation)(generator);
    let mut responses = Map::new();
    responses.insert("200".into(), operation.ok);
    for (status, why) in &operation.errors {
        add_status(&mut responses, status, why);
    }
    if scope != "panel" {
        // Every bk-plugin route reads its parameters and, but for callbacks (whose token names the
        // plugin), the plugin it addresses.
        add_status(&mut responses, "400", common_error("400"));
        if route.path != "/callback/{token}" {
            add_status(&mut responses, "404", common_error("404"));
        }
    }
    if route.method == Method::Post {
        add_status(&mut responses, "415", common_error("415"));
    }
    let protected = route.access.is_protected(&state.config) && state.config.auth.is_configured();
    if protected {
        add_status(&mut responses, "401", common_error("401"));
    }
    shared_statuses(state, &mut responses);
    let mut parameters = path_parameters(state, route, scope, path);
    parameters.extend(operation.query);
    let id_path = if scope == "panel" { path.trim_start_matches("/ui/api") } else { route.path };
    let mut entry = json!({
        "operationId": operation_id(route.method.as_str(), scope, id_path),
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
    entry
}
