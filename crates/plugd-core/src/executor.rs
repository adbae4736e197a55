//! One execute of an invocation: validation, the plugin call, and the state it leads to.

use std::any::Any;
use std::borrow::Cow;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use futures_util::FutureExt;
use plugd_sdk::{Callback, CallbackPreparer, ExecuteError, ExecuteRequest, Outcome, PluginError, Report, State};
use serde_json::{Map, Value};
use tracing::Instrument;

use crate::{coerce, transition, Invocation, Registry, Trigger};

/// Runs executes against a registry; knows nothing about where invocations are kept.
#[derive(Clone)]
pub struct Executor {
    registry: Arc<Registry>,
    callbacks: Arc<dyn CallbackPreparer>,
    coerce_inputs: bool,
    max_outputs: Option<usize>,
}

/// The result of one execute, to be applied to the invocation (and persisted by a store).
#[derive(Debug, Clone, PartialEq)]
pub struct Step {
    /// The new state: POLL, CALLBACK, SUCCESS or FAIL.
    pub state: State,
    /// The invoke count, this execute included.
    pub invoke_count: u32,
    /// Storage after the execute.
    pub storage: Map<String, Value>,
    /// Outputs after the execute.
    pub outputs: Map<String, Value>,
    /// In state FAIL, why, with one of the contract's prefixes.
    pub err: Option<String>,
    /// In state POLL, when to execute again.
    pub poll_after: Option<Duration>,
    /// In state CALLBACK, how long to wait for a callback before failing; `None` waits as long as the
    /// runtime's default allows.
    pub callback_timeout: Option<Duration>,
    /// Reports attached by this execute (kept even when it failed).
    pub reports: Vec<Report>,
}

impl Step {
    /// A FAIL step that keeps `storage` and `outputs` as they are.
    pub fn fail(invoke_count: u32, storage: Map<String, Value>, outputs: Map<String, Value>, err: String) -> Step {
        Step {
            state: State::Fail,
            invoke_count,
            storage,
            outputs,
            err: Some(err),
            poll_after: None,
            callback_timeout: None,
            reports: Vec::new(),
        }
    }
}

/// A step that must not run at all.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum StepError {
    /// The trigger does not fit the state: a late poll, a duplicate callback, a finished invocation.
    #[error("cannot run {trigger} on invocation {trace_id} in state {state}")]
    WrongState {
        /// The invocation.
        trace_id: String,
        /// Its state.
        state: State,
        /// What was asked.
        trigger: Trigger,
    },
}

impl Executor {
    /// An executor over `registry` whose plugins get callback URLs from `callbacks`.
    pub fn new(registry: Arc<Registry>, callbacks: Arc<dyn CallbackPreparer>) -> Executor {
        Executor { registry, callbacks, coerce_inputs: false, max_outputs: None }
    }

    /// The most an execute may hand back, in bytes of JSON: its outputs and storage, and its error
    /// message. More fails the execute (`outputs exceed N bytes (--max-outputs)`), keeping the
    /// previous outputs and storage, so that no plugin makes the runtime hold or store more. The
    /// size is counted as the JSON is written, and the count stops at the limit. `None` (the
    /// default): no limit.
    pub fn max_outputs(mut self, bytes: Option<usize>) -> Executor {
        self.max_outputs = bytes;
        self
    }

    /// Whether each execute converts inputs and context inputs the way pydantic v1 does (`"3"`
    /// for an integer, `123` for a string, `"yes"` for a boolean, `null` for an optional field: see
    /// [`crate::coerce`]) before validating them, as the Python framework does for BK-SOPS and
    /// BKFlow; the plugin is handed the converted values. Off by default: `plugd serve` turns it
    /// on, `plugd run` and hooks keep their typed flags.
    pub fn coerce_inputs(mut self, on: bool) -> Executor {
        self.coerce_inputs = on;
        self
    }

    /// Converts a new invocation's inputs and context inputs in place, as every execute of this
    /// executor will (nothing happens when it does not convert, or the plugin is unknown): what a
    /// keeper of records calls before storing it, so the record holds what the plugin sees.
    pub fn coerce_invocation(&self, invocation: &mut Invocation) {
        if !self.coerce_inputs {
            return;
        }
        let Ok(plugin) = self.registry.get(&invocation.plugin, Some(&invocation.version)) else { return };
        if plugin.plugin.validates_inputs() {
            return;
        }
        invocation.inputs = coerce(&plugin.schemas.inputs, std::mem::take(&mut invocation.inputs));
        invocation.context = coerce(&plugin.schemas.context_inputs, std::mem::take(&mut invocation.context));
    }

    /// The registry it runs plugins from.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Runs one execute of `invocation` for `trigger`, and returns what to apply.
    ///
    /// Validation failures, plugin errors, panics and invalid outputs all become a FAIL step with the
    /// bk-plugin error prefixes; only a trigger that does not fit the state is an `Err`.
    pub async fn step(&self, invocation: &Invocation, trigger: Trigger) -> Result<Step, StepError> {
        if invocation.state != trigger.expected_state() {
            return Err(StepError::WrongState {
                trace_id: invocation.trace_id.clone(),
                state: invocation.state,
                trigger,
            });
        }
        let span = tracing::info_span!(
            "execute",
            trace_id = %invocation.trace_id,
            plugin = %invocation.plugin,
            version = %invocation.version,
            invoke_count = invocation.invoke_count + 1,
        );
        let callback = match trigger {
            Trigger::Callback(callback) => Some(callback),
            Trigger::Start | Trigger::Poll => None,
        };
        Ok(self.run(invocation, callback).instrument(span).await)
    }

    async fn run(&self, invocation: &Invocation, callback: Option<Callback>) -> Step {
        let invoke_count = invocation.invoke_count + 1;
        let fail = |err: String, storage: Map<String, Value>, outputs: Map<String, Value>| {
            tracing::debug!(err = %err, "execute failed");
            Step::fail(invoke_count, storage, outputs, err)
        };
        let unchanged = || (invocation.storage.clone(), invocation.outputs.clone());

        let plugin = match self.registry.get(&invocation.plugin, Some(&invocation.version)) {
            Ok(plugin) => plugin,
            Err(e) => {
                let (storage, outputs) = unchanged();
                return fail(format!("plugin execute raise unexpected error: {e}"), storage, outputs);
            }
        };
        // A plugin that validates its own inputs (pydantic) gets them raw, and answers with its messages.
        let validates_itself = plugin.plugin.validates_inputs();
        let (inputs, context) = if self.coerce_inputs && !validates_itself {
            let inputs = coerce(&plugin.schemas.inputs, invocation.inputs.clone());
            (Cow::Owned(inputs), Cow::Owned(coerce(&plugin.schemas.context_inputs, invocation.context.clone())))
        } else {
            (Cow::Borrowed(&invocation.inputs), Cow::Borrowed(&invocation.context))
        };
        if let Err(e) = plugin.inputs.validate(&inputs).map_err(|e| e.to_string()).filter_err(!validates_itself) {
            let (storage, outputs) = unchanged();
            return fail(format!("inputs validation error: {e}"), storage, outputs);
        }
        if let Err(e) =
            plugin.context_inputs.validate(&context).map_err(|e| e.to_string()).filter_err(!validates_itself)
        {
            let (storage, outputs) = unchanged();
            return fail(format!("context validation error: {e}"), storage, outputs);
        }

        tracing::debug!(state = %invocation.state, "plugin start execute");
        let request = ExecuteRequest {
            trace_id: invocation.trace_id.clone(),
            state: invocation.state,
            invoke_count,
            inputs: inputs.into_owned(),
            context: context.into_owned(),
            storage: invocation.storage.clone(),
            outputs: invocation.outputs.clone(),
            callback,
            callbacks: self.callbacks.clone(),
        };
        let response = match AssertUnwindSafe(plugin.plugin.execute(request)).catch_unwind().await {
            Ok(response) => response,
            Err(panic) => {
                let (storage, outputs) = unchanged();
                let err = format!("plugin execute raise unexpected error: panic: {}", panic_message(&*panic));
                return fail(err, storage, outputs);
            }
        };

        // The Python kit reports errors of later executes as "plugin schedule failed".
        let failed_prefix =
            if invocation.state == State::Empty { "plugin execute failed" } else { "plugin schedule failed" };
        let (storage, outputs, reports) = (response.storage, response.outputs, response.reports);
        // Reports of a failed execute still tell what happened.
        let fail = |err: String, storage, outputs| Step { reports: reports.clone(), ..fail(err, storage, outputs) };
        if let Some(limit) = self.max_outputs {
            let err_len = match &response.result {
                Err(ExecuteError::Plugin(PluginError::Failed(m) | PluginError::Unexpected(m))) => m.len(),
                _ => 0,
            };
            if exceeds(limit.saturating_sub(err_len), &[&outputs, &storage]) {
                let (storage, outputs) = unchanged();
                return fail(
                    format!("{failed_prefix}: outputs exceed {limit} bytes (--max-outputs)"),
                    storage,
                    outputs,
                );
            }
        }
        let (state, poll_after, callback_timeout) = match response.result {
            Ok(Outcome::Success) => {
                if let Err(e) = plugin.outputs.validate(&Value::Object(outputs.clone())) {
                    return fail(format!("outputs validation error: {e}"), storage, outputs);
                }
                (State::Success, None, None)
            }
            Ok(Outcome::Poll(after)) => (State::Poll, Some(after), None),
            Ok(Outcome::Callback) => (State::Callback, None, None),
            Ok(Outcome::CallbackWithin(timeout)) => (State::Callback, None, Some(timeout)),
            Err(ExecuteError::Inputs(e)) => {
                let (storage, outputs) = unchanged();
                return fail(format!("inputs validation error: {e}"), storage, outputs);
            }
            Err(ExecuteError::Context(e)) => {
                let (storage, outputs) = unchanged();
                return fail(format!("context validation error: {e}"), storage, outputs);
            }
            Err(ExecuteError::Plugin(PluginError::Failed(message))) => {
                return fail(format!("{failed_prefix}: {message}"), storage, outputs);
            }
            // As in the Python kit, storage and outputs of an unexpected error are not kept.
            Err(ExecuteError::Plugin(PluginError::Unexpected(message))) => {
                let (storage, outputs) = unchanged();
                return fail(format!("plugin execute raise unexpected error: {message}"), storage, outputs);
            }
        };
        let state = transition(invocation.state, state).expect("execute runs only in EMPTY, POLL or CALLBACK");
        tracing::debug!(%state, ?poll_after, "plugin execute done");
        Step { state, invoke_count, storage, outputs, err: None, poll_after, callback_timeout, reports }
    }
}

/// Whether `maps` take more than `limit` bytes as JSON; counts as it writes, and stops at the limit.
fn exceeds(limit: usize, maps: &[&Map<String, Value>]) -> bool {
    /// Counts what is written, failing once past the limit (which stops the serializer).
    struct Counter {
        left: usize,
    }
    impl std::io::Write for Counter {
        fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
            self.left = self.left.checked_sub(buf.len()).ok_or(std::io::ErrorKind::FileTooLarge)?;
            Ok(buf.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }
    let mut counter = Counter { left: limit };
    maps.iter().any(|map| serde_json::to_writer(&mut counter, map).is_err())
}

/// Keeps a schema error only when `keep` (the plugin does not validate its inputs itself).
trait FilterErr {
    fn filter_err(self, keep: bool) -> Self;
}

impl FilterErr for Result<(), String> {
    fn filter_err(self, keep: bool) -> Self {
        if keep {
            self
        } else {
            Ok(())
        }
    }
}

fn panic_message(panic: &(dyn Any + Send)) -> String {
    if let Some(s) = panic.downcast_ref::<&str>() {
        (*s).to_owned()
    } else if let Some(s) = panic.downcast_ref::<String>() {
        s.clone()
    } else {
        "unknown panic payload".to_owned()
    }
}

#[cfg(test)]
mod tests;
