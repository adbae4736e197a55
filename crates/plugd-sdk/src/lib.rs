/*!
The plugin kit of plugd: what a plugin author writes.

A plugin is a Rust type that implements [`Plugin`]. It declares its [`Meta`] (name, semantic version,
description), its `Inputs`, `ContextInputs` and `Outputs` as serde + [`schemars`] types, and an async
[`Plugin::execute`] that ends in one [`Outcome`]: success, wait for a poll, or wait for a callback.
An expected failure is an [`Err`] built with [`PluginError::failed`]; any other error, and any panic,
becomes a FAIL with the `plugin execute raise unexpected error:` prefix of the bk-plugin contract.

The kit knows nothing about HTTP, databases or async runtimes: `plugd-core` drives execute, and the
`plugd` crate serves and runs plugins.

# Example

```
use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// Inputs of `greet`.
#[derive(Deserialize, JsonSchema)]
pub struct Inputs {
    /// Who to greet.
    name: String,
}

/// Outputs of `greet`.
#[derive(Serialize, JsonSchema)]
pub struct Outputs {
    /// The greeting.
    message: String,
}

/// Greets someone.
pub struct Greet;

impl Plugin for Greet {
    type Inputs = Inputs;
    type ContextInputs = Empty;
    type Outputs = Outputs;
    const META: Meta = Meta::new("greet", "1.0.0").description("Greets someone");

    async fn execute(&self, inputs: Inputs, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        if inputs.name.is_empty() {
            return Err(PluginError::failed("name is empty"));
        }
        ctx.set_outputs(&Outputs { message: format!("hello, {}", inputs.name) })?;
        Ok(Outcome::Success)
    }
}
```
*/
#![deny(missing_docs)]

mod api;
#[cfg(unix)]
pub mod beneath;
mod context;
mod erased;
mod meta;
mod plugin;
mod report;
mod schema;

pub use api::{ApiError, ApiMethod, ApiReply, ApiRequest, ApiRoute};
pub use context::{Callback, CallbackPreparation, CallbackPreparer, Context, State};
pub use erased::{
    BoxFuture, DynPlugin, ExecuteError, ExecuteRequest, ExecuteResponse, PluginInfo, PluginSchemas, TypedPlugin,
};
pub use meta::{is_valid_name, parse_version, version_spellings, Meta};
pub use plugin::{Outcome, Plugin, PluginError};
pub use report::{Report, ReportError};
pub use schema::{field_title, for_each_subschema, schema_for, Empty, PluginCallbackInfo};

// Re-exported so plugin crates use the exact versions the kit was built with.
pub use schemars;
pub use serde;
pub use serde_json;
