//! Plugins that exist for these tests only.

use plugd_core::RegistryBuilder;
use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
use serde_json::json;

/// Calls back its own callback URL before its first execute even returns.
pub(crate) struct Racer;

impl Plugin for Racer {
    type Inputs = Empty;
    type ContextInputs = Empty;
    type Outputs = Empty;
    const META: Meta = Meta::new("racer", "1.0.0").description("Calls itself back during its first execute.");

    async fn execute(&self, _: Empty, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        match ctx.callback.clone() {
            None => {
                let prepared = ctx.prepare_callback()?;
                let response = reqwest::Client::new()
                    .post(&prepared.url)
                    .header("content-type", "application/json")
                    .body(r#"{"raced": true}"#)
                    .send()
                    .await?;
                if !response.status().is_success() {
                    return Err(PluginError::failed(format!("own callback refused: {}", response.status())));
                }
                Ok(Outcome::Callback)
            }
            Some(callback) => {
                ctx.outputs.insert("data".into(), callback.data);
                Ok(Outcome::Success)
            }
        }
    }
}

/// Waits for two callbacks, then outputs both.
pub(crate) struct Collector;

impl Plugin for Collector {
    type Inputs = Empty;
    type ContextInputs = Empty;
    type Outputs = Empty;
    const META: Meta = Meta::new("collector", "1.0.0").description("Collects two callbacks.");

    async fn execute(&self, _: Empty, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        match ctx.callback.clone() {
            None => {
                let first = ctx.prepare_callback()?;
                let second = ctx.prepare_callback()?;
                ctx.outputs.insert("urls".into(), json!([first.url, second.url]));
                Ok(Outcome::Callback)
            }
            Some(callback) => {
                let mut got: Vec<serde_json::Value> = ctx.storage_get("got")?.unwrap_or_default();
                got.push(callback.data);
                ctx.storage_set("got", &got)?;
                if got.len() < 2 {
                    return Ok(Outcome::Callback);
                }
                ctx.outputs.insert("got".into(), json!(got));
                Ok(Outcome::Success)
            }
        }
    }
}

/// Logs through `tracing` inside its execute.
pub(crate) struct Logger;

impl Plugin for Logger {
    type Inputs = Empty;
    type ContextInputs = Empty;
    type Outputs = Empty;
    const META: Meta = Meta::new("logger", "1.0.0").description("Logs a line per execute.");

    async fn execute(&self, _: Empty, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        tracing::info!(count = ctx.invoke_count, "logger executes");
        if ctx.invoke_count < 2 {
            return Ok(Outcome::Poll(std::time::Duration::ZERO));
        }
        Ok(Outcome::Success)
    }

    /// `echo`: what the plugin API sees of its request.
    fn api_routes(&self) -> Vec<plugd_sdk::ApiRoute> {
        let echo = |request: plugd_sdk::ApiRequest| async move {
            Ok(
                json!({"query": request.query, "body": request.body, "username": request.username, "headers": request.headers}),
            )
        };
        vec![plugd_sdk::ApiRoute::get("echo", echo), plugd_sdk::ApiRoute::post("echo", echo)]
    }
}

/// Inputs of `reporter`.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct ReporterInputs {
    /// A folder to write the HTML report into.
    dir: String,
}

/// Writes an HTML report folder and reports it, with a link report beside it.
pub(crate) struct Reporter;

impl Plugin for Reporter {
    type Inputs = ReporterInputs;
    type ContextInputs = Empty;
    type Outputs = Empty;
    const META: Meta = Meta::new("reporter", "1.0.0").description("Reports an HTML page and a link.");

    async fn execute(&self, inputs: ReporterInputs, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        let dir = std::path::Path::new(&inputs.dir);
        std::fs::create_dir_all(dir.join("css"))?;
        std::fs::write(dir.join("index.html"), "<link rel=stylesheet href=css/a.css><h1>coverage 93%</h1>")?;
        std::fs::write(dir.join("css/a.css"), "h1 { color: green }")?;
        ctx.report(plugd_sdk::Report {
            title: Some("Coverage".into()),
            report_html: Some(dir.join("index.html").display().to_string()),
            report_dir: Some(inputs.dir.clone()),
            ..Default::default()
        })?;
        ctx.report(plugd_sdk::Report {
            title: Some("Build".into()),
            url: Some("https://ci.example/build/1".into()),
            ..Default::default()
        })?;
        Ok(Outcome::Success)
    }
}

/// Context inputs of `waiter`: the finish callback.
#[derive(serde::Deserialize, schemars::JsonSchema)]
pub(crate) struct WaiterContext {
    // Read by the server, which calls the caller back; the plugin itself needs nothing of it.
    #[allow(dead_code)]
    plugin_callback_info: Option<plugd_sdk::PluginCallbackInfo>,
}

/// Waits 300 ms for a callback, then times out; calls its caller back when it ends.
pub(crate) struct Waiter;

impl Plugin for Waiter {
    type Inputs = Empty;
    type ContextInputs = WaiterContext;
    type Outputs = Empty;
    const META: Meta =
        Meta::new("waiter", "1.0.0").description("Waits briefly for a callback.").enable_plugin_callback(true);

    async fn execute(&self, _: Empty, ctx: &mut Context<WaiterContext>) -> Result<Outcome, PluginError> {
        let prepared = ctx.prepare_callback()?;
        ctx.outputs.insert("callback_url".into(), json!(prepared.url));
        Ok(Outcome::CallbackWithin(std::time::Duration::from_millis(300)))
    }
}

pub(crate) fn add(builder: RegistryBuilder) -> RegistryBuilder {
    builder.plugin(Racer).plugin(Collector).plugin(Logger).plugin(Reporter).plugin(Waiter)
}
