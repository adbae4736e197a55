//! `countdown`: polls until a counter kept in storage reaches zero.

use std::time::Duration;

use plugd_sdk::{Context, Meta, Outcome, Plugin, PluginCallbackInfo, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

fn default_interval_ms() -> u64 {
    1000
}

/// Inputs of `countdown`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct Inputs {
    /// Where to count down from: the number of polls before SUCCESS.
    #[schemars(range(min = 0, max = 1_000_000))]
    pub from: u32,
    /// Milliseconds between polls.
    #[serde(default = "default_interval_ms")]
    #[schemars(range(max = 86_400_000))]
    pub interval_ms: u64,
}

/// Context inputs of `countdown`.
#[derive(Debug, Deserialize, JsonSchema)]
pub struct ContextInputs {
    /// Where to report the end of the countdown, when served (`plugd serve`).
    #[serde(default)]
    pub plugin_callback_info: Option<PluginCallbackInfo>,
}

/// Outputs of `countdown`.
#[derive(Debug, Serialize, JsonSchema)]
pub struct Outputs {
    /// How many polls it took.
    pub polls: u32,
}

/// `countdown` 1.0.0.
#[derive(Debug, Clone, Copy)]
pub struct Countdown;

impl Plugin for Countdown {
    type Inputs = Inputs;
    type ContextInputs = ContextInputs;
    type Outputs = Outputs;
    const META: Meta = Meta::new("countdown", "1.0.0")
        .description("Counts down from `from`, polling every `interval_ms` milliseconds, then succeeds.")
        .enable_plugin_callback(true);

    async fn execute(&self, inputs: Inputs, ctx: &mut Context<ContextInputs>) -> Result<Outcome, PluginError> {
        let remaining: u32 = ctx.storage_get("remaining")?.unwrap_or(inputs.from);
        if remaining == 0 {
            ctx.set_outputs(&Outputs { polls: ctx.invoke_count - 1 })?;
            return Ok(Outcome::Success);
        }
        ctx.storage_set("remaining", &(remaining - 1))?;
        Ok(Outcome::Poll(Duration::from_millis(inputs.interval_ms)))
    }
}
