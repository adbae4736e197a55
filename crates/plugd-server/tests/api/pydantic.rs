//! What BK-SOPS sees of a plugin written against the Python framework (pydantic v1), served by plugd:
//! the `detail` schemas it builds forms from, and inputs converted as pydantic converts them.

use std::time::Duration;

use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

use crate::support::{registry, TestServer};

/// `Inputs` of bk-plugin-demo 1.3.0: `name: str = Field(title="name", description="who to greet")`.
#[derive(Deserialize, JsonSchema)]
struct DemoInputs {
    /// who to greet
    #[schemars(title = "name")]
    name: String,
}

/// `Outputs` of bk-plugin-demo 1.3.0.
#[derive(Serialize, JsonSchema)]
struct DemoOutputs {
    /// hello + name
    #[schemars(title = "greeting")]
    greeting: String,
}

/// `ContextInputs` of bk-plugin-demo 1.3.0.
#[derive(Deserialize, JsonSchema)]
struct DemoContext {
    /// who runs the task
    #[schemars(title = "executor")]
    executor: String,
}

/// bk-plugin-demo 1.3.0 (the Python fixture), in Rust.
struct Demo;

impl Plugin for Demo {
    type Inputs = DemoInputs;
    type ContextInputs = DemoContext;
    type Outputs = DemoOutputs;
    const META: Meta = Meta::new("demo", "1.3.0").description("hello with failure modes and required context");

    async fn execute(&self, inputs: DemoInputs, ctx: &mut Context<DemoContext>) -> Result<Outcome, PluginError> {
        let greeting = format!("hello {} (by {})", inputs.name, ctx.data.executor);
        ctx.set_outputs(&DemoOutputs { greeting })?;
        Ok(Outcome::Success)
    }
}

/// `GET /bk_plugin/detail/1.3.0` of bk-plugin-demo on bk-plugin-framework 2.3.15 (pydantic v1),
/// from its TRANSCRIPT.md: the three schemas, byte for byte.
const FRAMEWORK_INPUTS: &str = r#"{"type":"object","properties":{"name":{"title":"name","description":"who to greet","type":"string"}},"required":["name"],"definitions":{}}"#;
const FRAMEWORK_OUTPUTS: &str = r#"{"type":"object","properties":{"greeting":{"title":"greeting","description":"hello + name","type":"string"}},"required":["greeting"],"definitions":{}}"#;
const FRAMEWORK_CONTEXT: &str = r#"{"type":"object","properties":{"executor":{"title":"executor","description":"who runs the task","type":"string"}},"required":["executor"],"definitions":{}}"#;

#[derive(Deserialize, JsonSchema)]
struct EchoInputs {
    count: u32,
    label: Option<String>,
    enabled: bool,
    ratio: f64,
}

#[derive(Deserialize, JsonSchema)]
struct EchoContext {
    executor: String,
}

/// Polls once, then outputs what its second execute was given.
struct Echo;

impl Plugin for Echo {
    type Inputs = EchoInputs;
    type ContextInputs = EchoContext;
    type Outputs = Empty;
    const META: Meta = Meta::new("echo", "1.0.0").description("Outputs its inputs after one poll.");

    async fn execute(&self, inputs: EchoInputs, ctx: &mut Context<EchoContext>) -> Result<Outcome, PluginError> {
        if ctx.invoke_count == 1 {
            return Ok(Outcome::Poll(Duration::from_millis(10)));
        }
        let EchoInputs { count, label, enabled, ratio } = inputs;
        let seen =
            json!({"count": count, "label": label, "enabled": enabled, "ratio": ratio, "executor": ctx.data.executor});
        ctx.outputs.insert("seen".into(), seen);
        Ok(Outcome::Success)
    }
}

async fn server(configure: impl FnOnce(&mut plugd_server::ServerConfig)) -> TestServer {
    TestServer::start_with(registry().plugin(Demo).plugin(Echo), configure).await
}

#[tokio::test]
async fn detail_schemas_are_the_python_frameworks_for_the_same_model() {
    let server = server(|_| {}).await;
    let (status, body) = server.get("/plugins/demo/bk_plugin/detail/1.3.0").await;
    assert_eq!(status, 200, "{body}");
    for (key, framework) in
        [("inputs", FRAMEWORK_INPUTS), ("outputs", FRAMEWORK_OUTPUTS), ("context_inputs", FRAMEWORK_CONTEXT)]
    {
        assert_eq!(body["data"][key].to_string(), framework, "{key}");
    }

    // Without a form.js, BK-SOPS builds the form from these: titles, optional fields typed as
    // their type, no integer widths.
    let (_, hello) = server.get("/bk_plugin/detail/2.0.0").await;
    assert_eq!(
        hello["data"]["inputs"]["properties"].to_string(),
        json!({
            "name": {"title": "Name", "description": "Who to greet.", "type": "string"},
            "greeting": {"title": "Greeting", "description": "The word to greet with.", "default": "hello", "type": "string"},
            "times": {"title": "Times", "description": "How many times to greet (default 1).", "minimum": 1, "maximum": 1000, "type": "integer"},
        })
        .to_string()
    );
    assert_eq!(hello["data"]["inputs"]["required"], json!(["name"]));
    server.stop().await;
}

#[tokio::test]
async fn inputs_are_converted_as_pydantic_v1_converts_them() {
    let server = server(|_| {}).await;
    // A field hooked to a text global variable arrives as a string; a number for a string field.
    let ok = server.invoke("hello", "2.0.0", json!({"name": 123, "times": "3"}), json!({})).await;
    assert_eq!(
        ok["data"],
        json!({"outputs": {"messages": ["hello, 123", "hello, 123", "hello, 123"]}, "state": 4, "err": null})
    );
    // `null` for an optional field is as if it were absent.
    let ok = server.invoke("hello", "2.0.0", json!({"name": true, "times": null}), json!({})).await;
    assert_eq!(ok["data"]["outputs"], json!({"messages": ["hello, True"]}));
    // What pydantic refuses stays refused, with the messages plugd always gave.
    let refused = server.invoke("hello", "2.0.0", json!({"name": {"a": 1}, "times": "3.0"}), json!({})).await;
    assert_eq!(
        refused["data"]["err"],
        r#"inputs validation error: /name: expected string, got {"a":1}; /times: expected integer, got "3.0""#
    );
    let refused = server.invoke("hello", "2.0.0", json!({"name": null}), json!({})).await;
    assert_eq!(refused["data"]["err"], "inputs validation error: /name: expected string, got null");

    // Later executes (here a poll) see the converted inputs and context, as stored.
    let inputs = json!({"count": "2", "label": 5, "enabled": "yes", "ratio": "0.5", "plugin_code": "sops adds this"});
    let started = server.invoke("echo", "1.0.0", inputs, json!({"executor": 42})).await;
    assert_eq!(started["data"]["state"], 2, "{started}");
    let done = server.wait_final("echo", started["trace_id"].as_str().unwrap()).await;
    assert_eq!(
        done["outputs"]["seen"],
        json!({"count": 2, "label": "5", "enabled": true, "ratio": 0.5, "executor": "42"}),
        "{done}"
    );
    server.stop().await;
}

#[tokio::test]
async fn strict_inputs_turn_the_conversion_off() {
    let server = server(|c| c.strict_inputs = true).await;
    let bad = server.invoke("hello", "2.0.0", json!({"name": "x", "times": "3"}), json!({})).await;
    assert_eq!(bad["data"]["err"], r#"inputs validation error: /times: expected integer, got "3""#);
    let bad = server.invoke("hello", "2.0.0", json!({"name": 123}), json!({})).await;
    assert_eq!(bad["data"]["err"], "inputs validation error: /name: expected string, got 123");
    // `null` for an optional field is still accepted: pydantic accepts it too.
    let ok = server.invoke("hello", "2.0.0", json!({"name": "x", "times": null}), json!({})).await;
    assert_eq!(ok["data"]["outputs"], json!({"messages": ["hello, x"]}));
    server.stop().await;
}
