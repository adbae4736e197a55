//! The `{{name}}` plugin.

use plugd::{Context, Empty, Meta, Outcome, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Inputs of `{{name}}`.
#[derive(Deserialize, JsonSchema)]
pub struct Inputs {
    /// Who to greet.
    pub name: String,
}

/// Outputs of `{{name}}`.
#[derive(Serialize, JsonSchema)]
pub struct Outputs {
    /// The greeting.
    pub message: String,
}

/// Greets someone.
pub struct Greet;

impl Plugin for Greet {
    type Inputs = Inputs;
    type ContextInputs = Empty;
    type Outputs = Outputs;
    const META: Meta = Meta::new("{{name}}", "0.1.0").description("Greets someone (a Rust plugin made by plugd new).");

    async fn execute(&self, inputs: Inputs, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        ctx.set_outputs(&Outputs { message: format!("hello, {}", inputs.name) })?;
        Ok(Outcome::Success)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn greets() {
        let registry = std::sync::Arc::new(plugd::Registry::builder().plugin(Greet).build().unwrap());
        let runner = plugd::local::LocalRunner::start(registry).await.unwrap();
        let inputs = plugd::serde_json::json!({"name": "world"});
        let mut invocation = plugd::Invocation::new("{{name}}", "0.1.0", inputs, plugd::serde_json::json!({}));
        runner.run(&mut invocation, &mut ()).await.unwrap();
        assert_eq!(invocation.state, plugd::State::Success);
        assert_eq!(invocation.outputs["message"], "hello, world");
    }
}
