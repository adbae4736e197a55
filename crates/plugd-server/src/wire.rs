//! What the wire looks like: the bk-plugin envelope `{result, data, message[, trace_id]}`, the error
//! envelope every part of the server answers with, the Python framework's time format, and the bodies
//! of the bk-plugin answers as types. Handlers serialize these types and the OpenAPI document derives
//! their schemas from them (`schemars`), so the two cannot disagree.

use std::borrow::Cow;

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::Json;
use plugd_core::store::Millis;
use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde::Serialize;
use serde_json::{json, Map, Value};

/// A JSON object (a plugin's outputs, a schema, an allow_scope).
pub(crate) type Object = Map<String, Value>;

/// The error envelope: `{"result": false, "data": null, "message": ...[, "trace_id": ...]}`.
pub(crate) fn fail(status: StatusCode, message: &str, trace_id: Option<&str>) -> Response {
    let mut body = json!({"result": false, "data": null, "message": message});
    if let Some(trace_id) = trace_id {
        body["trace_id"] = Value::String(trace_id.to_owned());
    }
    (status, Json(body)).into_response()
}

/// A malformed request, with the Python framework's prefix `输入不合法` ("invalid input").
pub(crate) fn invalid_input(message: &str, trace_id: Option<&str>) -> Response {
    fail(StatusCode::BAD_REQUEST, &format!("输入不合法: {message}"), trace_id)
}

/// `%Y-%m-%d %H:%M:%S` in UTC, as the Python framework prints times.
pub(crate) fn format_time(millis: Millis) -> String {
    chrono::DateTime::from_timestamp_millis(millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_default()
}

/// A success: `{"result": true, "data": ..., "message": ...}`.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(inline)]
pub(crate) struct Answer<T> {
    result: True,
    data: T,
    message: Cow<'static, str>,
}

impl<T: Serialize> Answer<T> {
    /// `data` with `message`.
    pub(crate) fn new(data: T, message: &'static str) -> Answer<T> {
        Answer { result: True, data, message: Cow::Borrowed(message) }
    }
}

impl<T: Serialize> IntoResponse for Answer<T> {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

/// A success that names a trace id: an invocation's (invoke) or the request's own (schedule,
/// plugin_api_dispatch), as the Python framework answers.
#[derive(Debug, Serialize, JsonSchema)]
#[schemars(inline)]
pub(crate) struct TracedAnswer<T> {
    result: True,
    data: T,
    message: Cow<'static, str>,
    trace_id: TraceId,
}

impl<T: Serialize> TracedAnswer<T> {
    /// `data` with `message`, naming `trace_id`.
    pub(crate) fn new(data: T, message: &'static str, trace_id: String) -> TracedAnswer<T> {
        TracedAnswer { result: True, data, message: Cow::Borrowed(message), trace_id: TraceId(trace_id) }
    }
}

impl<T: Serialize> IntoResponse for TracedAnswer<T> {
    fn into_response(self) -> Response {
        Json(self).into_response()
    }
}

/// `true`, always: the `result` of a success.
#[derive(Debug, Clone, Copy)]
struct True;

impl Serialize for True {
    fn serialize<S: serde::Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_bool(true)
    }
}

impl JsonSchema for True {
    fn inline_schema() -> bool {
        true
    }

    fn schema_name() -> Cow<'static, str> {
        "True".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"const": true})
    }
}

/// 32 lowercase hex characters.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub(crate) struct TraceId(pub(crate) String);

impl JsonSchema for TraceId {
    fn schema_name() -> Cow<'static, str> {
        "TraceId".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^[0-9a-f]{32}$"})
    }
}

/// An invocation state as its code (EMPTY=1 POLL=2 CALLBACK=3 SUCCESS=4 FAIL=5).
#[derive(Debug, Clone, Copy, Serialize)]
#[serde(transparent)]
pub(crate) struct StateCode(pub(crate) u8);

impl From<plugd_sdk::State> for StateCode {
    fn from(state: plugd_sdk::State) -> StateCode {
        StateCode(state.code())
    }
}

impl JsonSchema for StateCode {
    fn schema_name() -> Cow<'static, str> {
        "State".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "integer", "enum": [1, 2, 3, 4, 5], "description": "EMPTY=1 POLL=2 CALLBACK=3 SUCCESS=4 FAIL=5"})
    }
}

/// A time as the Python framework prints it (see [`format_time`]), in UTC.
#[derive(Debug, Clone, Serialize)]
#[serde(transparent)]
pub(crate) struct Time(pub(crate) String);

impl Time {
    /// `millis`, formatted.
    pub(crate) fn of(millis: Millis) -> Time {
        Time(format_time(millis))
    }
}

impl JsonSchema for Time {
    fn schema_name() -> Cow<'static, str> {
        "Time".into()
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({"type": "string", "pattern": "^[0-9]{4}-[0-9]{2}-[0-9]{2} [0-9]{2}:[0-9]{2}:[0-9]{2}$", "description": "UTC"})
    }
}

/// `meta`: the plugin.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Meta {
    pub(crate) code: String,
    /// Newest first.
    pub(crate) versions: Vec<String>,
    pub(crate) language: String,
    pub(crate) description: String,
    pub(crate) framework_version: &'static str,
    pub(crate) runtime_version: &'static str,
    #[schemars(with = "Object")]
    pub(crate) allow_scope: Value,
}

/// `detail/{version}`: a version's description, schemas and form.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Detail {
    pub(crate) desc: String,
    pub(crate) version: String,
    pub(crate) enable_plugin_callback: bool,
    #[schemars(with = "Object")]
    pub(crate) inputs: Value,
    #[schemars(with = "Object")]
    pub(crate) outputs: Value,
    #[schemars(schema_with = "object_with_properties")]
    pub(crate) context_inputs: Value,
    pub(crate) forms: Forms,
}

/// The forms of a version.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Forms {
    /// The BlueKing form.js, if the version has one.
    pub(crate) renderform: Option<String>,
}

fn object_with_properties(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "object", "required": ["properties"]})
}

/// `invoke/{version}`: the invocation after its first execute.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Invoked {
    /// Always an object (see [`wire_outputs`]).
    pub(crate) outputs: Object,
    pub(crate) state: StateCode,
    pub(crate) err: Option<String>,
}

/// `schedule/{trace_id}`: an invocation's state and outputs.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Schedule {
    pub(crate) trace_id: TraceId,
    pub(crate) plugin_version: String,
    #[schemars(schema_with = "stored_state")]
    pub(crate) state: StateCode,
    pub(crate) outputs: Object,
    /// Empty unless FAIL.
    pub(crate) err: String,
    pub(crate) created_at: Time,
    /// Empty until it finishes.
    #[schemars(schema_with = "time_or_empty")]
    pub(crate) finish_at: String,
}

/// A stored invocation is never EMPTY: its first execute moved it on.
fn stored_state(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"type": "integer", "enum": [2, 3, 4, 5]})
}

fn time_or_empty(generator: &mut SchemaGenerator) -> Schema {
    let time = generator.subschema_for::<Time>();
    json_schema!({"anyOf": [time, {"const": ""}]})
}

/// `logs/{trace_id}`: the logs of every execute.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Logs {
    pub(crate) log: String,
}

/// `cancel/{trace_id}`: the invocation, now FAIL.
#[derive(Debug, Serialize, JsonSchema)]
pub(crate) struct Cancelled {
    pub(crate) trace_id: String,
    #[schemars(schema_with = "fail_state")]
    pub(crate) state: StateCode,
}

fn fail_state(_: &mut SchemaGenerator) -> Schema {
    json_schema!({"const": 5})
}

/// The `outputs` callers read: always an object (BKFlow reads `outputs.get("err")` on FAIL and
/// crashes on `null`; Tencent's Go runtime also answers an object), on FAIL with `err` beside what
/// the plugin set, unless the plugin set an `err` output itself.
pub(crate) fn wire_outputs(invocation: &plugd_core::Invocation) -> Object {
    let mut outputs = invocation.outputs.clone();
    if invocation.state == plugd_sdk::State::Fail && !outputs.contains_key("err") {
        outputs.insert("err".into(), json!(invocation.err.as_deref().unwrap_or_default()));
    }
    outputs
}
