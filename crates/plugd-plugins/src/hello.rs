//! `hello`: greets someone. Version 2.0.0 can repeat the greeting.

use plugd_sdk::{ApiError, ApiRoute, Context, Empty, Meta, Outcome, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_greeting() -> String {
    "hello".to_owned()
}

/// Inputs of `hello` 1.0.0.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct InputsV1 {
    /// Who to greet.
    pub name: String,
    /// The word to greet with.
    #[serde(default = "default_greeting")]
    pub greeting: String,
}

/// Outputs of `hello` 1.0.0.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OutputsV1 {
    /// The greeting, e.g. `hello, world`.
    pub message: String,
}

/// `hello` 1.0.0.
#[derive(Debug, Clone, Copy)]
pub struct HelloV1;

impl Plugin for HelloV1 {
    type Inputs = InputsV1;
    type ContextInputs = Empty;
    type Outputs = OutputsV1;
    const META: Meta = Meta::new("hello", "1.0.0").description("Greets someone.");

    async fn execute(&self, inputs: InputsV1, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        ctx.set_outputs(&OutputsV1 { message: format!("{}, {}", inputs.greeting, inputs.name) })?;
        Ok(Outcome::Success)
    }
}

/// Inputs of `hello` 2.0.0.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct InputsV2 {
    /// Who to greet.
    pub name: String,
    /// The word to greet with.
    #[serde(default = "default_greeting")]
    pub greeting: String,
    /// How many times to greet (default 1).
    #[schemars(range(min = 1, max = 1000))]
    pub times: Option<u32>,
}

/// Outputs of `hello` 2.0.0.
#[derive(Debug, Serialize, JsonSchema)]
pub struct OutputsV2 {
    /// One greeting per repetition.
    pub messages: Vec<String>,
}

/// The most `hello` 2.0.0's greetings may take together.
pub const MAX_GREETINGS_BYTES: usize = 256 * 1024;

/// `hello` 2.0.0: adds `times` and outputs a list of `messages`.
#[derive(Debug, Clone, Copy)]
pub struct HelloV2;

impl Plugin for HelloV2 {
    type Inputs = InputsV2;
    type ContextInputs = Empty;
    type Outputs = OutputsV2;
    const META: Meta = Meta::new("hello", "2.0.0")
        .description("Greets someone, possibly several times.")
        .form(include_str!("forms/hello/2.0.0/form.js"));

    async fn execute(&self, inputs: InputsV2, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        let message = format!("{}, {}", inputs.greeting, inputs.name);
        let times = inputs.times.unwrap_or(1) as usize;
        // Refused before it is built: a long name times many greetings is a lot of memory.
        let total = message.len().saturating_mul(times);
        if total > MAX_GREETINGS_BYTES {
            return Err(PluginError::failed(format!(
                "{times} greetings of {} bytes make {total} bytes; at most {MAX_GREETINGS_BYTES}",
                message.len()
            )));
        }
        ctx.set_outputs(&OutputsV2 { messages: vec![message; times] })?;
        Ok(Outcome::Success)
    }

    /// `GET plugin_api/greetings[?prefix=h]`: the greetings the form offers.
    fn api_routes(&self) -> Vec<ApiRoute> {
        vec![ApiRoute::get("greetings", |request| async move {
            let prefix = match request.query.get("prefix") {
                None => "",
                Some(serde_json::Value::String(prefix)) => prefix.as_str(),
                Some(_) => return Err(ApiError::bad_request("prefix must be a string")),
            };
            let greetings: Vec<&str> = GREETINGS.iter().copied().filter(|g| g.starts_with(prefix)).collect();
            Ok(serde_json::json!({ "greetings": greetings }))
        })]
    }
}

/// What the form's greeting select offers.
const GREETINGS: [&str; 4] = ["hello", "hi", "bonjour", "你好"];
