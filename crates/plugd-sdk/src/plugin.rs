//! The [`Plugin`] trait, its [`Outcome`] and its [`PluginError`].

use std::fmt;
use std::future::Future;
use std::time::Duration;

use schemars::JsonSchema;
use serde::de::DeserializeOwned;
use serde::Serialize;

use crate::{ApiRoute, Context, Meta};

/// One version of a plugin, with typed inputs, context inputs and outputs.
///
/// Any of the three types may be [`crate::Empty`] (an empty object schema). Their JSON Schemas
/// are derived with `schemars`: doc comments become descriptions, `#[serde(default)]` values
/// become `default`, `Option` fields are not required, and nested types land in `definitions`.
/// Unknown input keys are accepted and ignored (callers such as BK-SOPS add their own), so do not
/// use `#[serde(deny_unknown_fields)]`.
pub trait Plugin: Send + Sync + 'static {
    /// The inputs, validated against their schema before every execute.
    type Inputs: DeserializeOwned + JsonSchema + Send;
    /// The context inputs, validated like the inputs and offered as [`Context::data`].
    type ContextInputs: DeserializeOwned + JsonSchema + Send + Sync;
    /// The outputs: [`Context::outputs`] is validated against this schema on SUCCESS.
    type Outputs: Serialize + JsonSchema;

    /// Name, version and description of this plugin version.
    const META: Meta;

    /// Runs one step of the plugin.
    ///
    /// Called first in state EMPTY, then again in state POLL after each [`Outcome::Poll`], or in
    /// state CALLBACK with [`Context::callback`] set after each [`Outcome::Callback`]. Whatever
    /// the step puts into [`Context::storage`] and [`Context::outputs`] is there on the next step.
    /// Execution is at-least-once: after a crash, a step may run again, so make side effects
    /// idempotent (for example by remembering in storage what was already done).
    fn execute(
        &self,
        inputs: Self::Inputs,
        ctx: &mut Context<Self::ContextInputs>,
    ) -> impl Future<Output = Result<Outcome, PluginError>> + Send;

    /// Data-source APIs served under `bk_plugin/plugin_api/` (none by default). When several
    /// versions of a plugin declare the same method and path, the newest version's route answers.
    fn api_routes(&self) -> Vec<ApiRoute> {
        Vec::new()
    }
}

/// How a step of [`Plugin::execute`] ended, when it did not fail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// The invocation is done; [`Context::outputs`] are its outputs.
    Success,
    /// Run execute again after this interval (zero means as soon as possible).
    Poll(Duration),
    /// Run execute again when a callback prepared with [`Context::prepare_callback`] arrives.
    /// A callback URL stays valid while the invocation waits: a plugin may wait again for another
    /// post to the same URL (a job posting progress, then its result).
    Callback,
    /// [`Outcome::Callback`], failing the invocation with `plugin schedule failed: callback timeout
    /// after <duration>` when no callback arrives within the duration (`WaitCallback(timeout)` of
    /// Tencent's Go runtime).
    CallbackWithin(Duration),
}

impl Outcome {
    /// Poll again after `seconds` seconds, as `wait_poll(seconds)` in the Python kit.
    pub fn poll_secs(seconds: u64) -> Outcome {
        Outcome::Poll(Duration::from_secs(seconds))
    }
}

/// Why a step of [`Plugin::execute`] failed.
///
/// `?` turns any `std::error::Error` into [`PluginError::Unexpected`]; use
/// [`PluginError::failed`] for the failures a plugin expects (the `self.Error` of the Python kit).
/// Like `anyhow::Error`, this type deliberately does not implement `std::error::Error`, so
/// that the blanket conversion is possible.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PluginError {
    /// An expected failure with a message for the user: `plugin execute failed: <message>`.
    Failed(String),
    /// An unexpected error: `plugin execute raise unexpected error: <message>`.
    Unexpected(String),
}

impl PluginError {
    /// An expected failure: the invocation ends in FAIL with this message.
    pub fn failed(message: impl fmt::Display) -> PluginError {
        PluginError::Failed(message.to_string())
    }

    /// An unexpected error, for failures that are not an `std::error::Error`.
    pub fn unexpected(message: impl fmt::Display) -> PluginError {
        PluginError::Unexpected(message.to_string())
    }

    /// The message without its kind.
    pub fn message(&self) -> &str {
        match self {
            PluginError::Failed(m) | PluginError::Unexpected(m) => m,
        }
    }
}

impl fmt::Display for PluginError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.message())
    }
}

impl<E: std::error::Error> From<E> for PluginError {
    fn from(error: E) -> PluginError {
        PluginError::Unexpected(error.to_string())
    }
}
