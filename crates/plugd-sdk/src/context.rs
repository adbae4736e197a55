//! What a plugin sees of its invocation: [`Context`], [`State`] and callbacks.

use std::fmt;
use std::sync::Arc;

use serde::de::DeserializeOwned;
use serde::Serialize;
use serde_json::{Map, Value};

use crate::{PluginError, Report};

/// The state of an invocation, with the numeric codes of the bk-plugin contract.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum State {
    /// Not executed yet (code 1).
    Empty,
    /// Waiting to execute again after an interval (code 2).
    Poll,
    /// Waiting for a callback (code 3).
    Callback,
    /// Finished successfully (code 4).
    Success,
    /// Finished with an error (code 5).
    Fail,
}

impl State {
    /// Every state, in code order.
    pub const ALL: [State; 5] = [State::Empty, State::Poll, State::Callback, State::Success, State::Fail];

    /// The wire code: EMPTY=1, POLL=2, CALLBACK=3, SUCCESS=4, FAIL=5.
    pub const fn code(self) -> u8 {
        match self {
            State::Empty => 1,
            State::Poll => 2,
            State::Callback => 3,
            State::Success => 4,
            State::Fail => 5,
        }
    }

    /// The state of a wire code, if it is one.
    pub fn from_code(code: u8) -> Option<State> {
        State::ALL.into_iter().find(|s| s.code() == code)
    }

    /// The upper-case name: `EMPTY`, `POLL`, `CALLBACK`, `SUCCESS` or `FAIL`.
    pub const fn name(self) -> &'static str {
        match self {
            State::Empty => "EMPTY",
            State::Poll => "POLL",
            State::Callback => "CALLBACK",
            State::Success => "SUCCESS",
            State::Fail => "FAIL",
        }
    }

    /// Whether nothing more will happen to the invocation.
    pub const fn is_final(self) -> bool {
        matches!(self, State::Success | State::Fail)
    }
}

impl fmt::Display for State {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// A callback that re-ran the plugin: the id from [`Context::prepare_callback`] and the posted JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Callback {
    /// The id of the prepared callback that arrived.
    pub id: String,
    /// The JSON body the third party posted.
    pub data: Value,
}

/// A prepared callback: give `url` to the third party and remember `id` in storage.
#[derive(Debug, Clone, PartialEq)]
pub struct CallbackPreparation {
    /// 32 lowercase hex characters, unique per preparation.
    pub id: String,
    /// The URL the third party POSTs its JSON to.
    pub url: String,
    /// A body the plugin expects, shown to whoever must post it (`plugd run` prints a curl with it).
    pub example: Option<Value>,
}

/// Issues callback URLs for an invocation. The runtime provides it: signed URLs on a temporary
/// listener under `plugd run`, signed public URLs under `plugd serve`.
pub trait CallbackPreparer: Send + Sync {
    /// Prepares a new callback for the invocation `trace_id`.
    fn prepare_callback(&self, trace_id: &str) -> Result<CallbackPreparation, String>;

    /// Records an example body for a callback prepared earlier, for runtimes that show it.
    fn note_example(&self, _trace_id: &str, _callback_id: &str, _example: &Value) {}
}

/// The context of one execute: the `Context` of the Python kit.
///
/// `storage` and `outputs` are JSON objects that the runtime keeps between executes.
pub struct Context<C> {
    /// The invocation's id: 32 lowercase hex characters.
    pub trace_id: String,
    /// The validated context inputs.
    pub data: C,
    /// EMPTY on the first execute, then POLL or CALLBACK.
    pub state: State,
    /// How many times execute has been called, this time included (1-based).
    pub invoke_count: u32,
    /// Plugin-private JSON kept between executes.
    pub storage: Map<String, Value>,
    /// The outputs so far; validated against the plugin's `Outputs` on SUCCESS.
    pub outputs: Map<String, Value>,
    /// The callback that triggered this execute, in state CALLBACK.
    pub callback: Option<Callback>,
    /// Reports attached during this execute (see [`Context::report`]).
    pub reports: Vec<Report>,
    callbacks: Arc<dyn CallbackPreparer>,
}

impl<C> Context<C> {
    /// Builds a context. Runtimes call this; plugins receive a built one.
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        trace_id: String,
        data: C,
        state: State,
        invoke_count: u32,
        storage: Map<String, Value>,
        outputs: Map<String, Value>,
        callback: Option<Callback>,
        callbacks: Arc<dyn CallbackPreparer>,
    ) -> Context<C> {
        Context { trace_id, data, state, invoke_count, storage, outputs, callback, reports: Vec::new(), callbacks }
    }

    /// Prepares a callback for this invocation: returns its `id` and the `url` to give out.
    pub fn prepare_callback(&self) -> Result<CallbackPreparation, PluginError> {
        self.callbacks.prepare_callback(&self.trace_id).map_err(PluginError::Unexpected)
    }

    /// [`Context::prepare_callback`], with a body the third party may post: `plugd run` shows it in
    /// the curl command it prints (approval's is `{"approved": true}`).
    pub fn prepare_callback_with_example<E: Serialize>(&self, example: &E) -> Result<CallbackPreparation, PluginError> {
        let example = serde_json::to_value(example)?;
        let mut prepared = self.prepare_callback()?;
        self.callbacks.note_example(&self.trace_id, &prepared.id, &example);
        prepared.example = Some(example);
        Ok(prepared)
    }

    /// Merges the fields of `outputs` (which must serialize to a JSON object) into
    /// [`Context::outputs`].
    pub fn set_outputs<O: Serialize>(&mut self, outputs: &O) -> Result<(), PluginError> {
        match serde_json::to_value(outputs)? {
            Value::Object(fields) => {
                self.outputs.extend(fields);
                Ok(())
            }
            other => Err(PluginError::unexpected(format!("outputs must be a JSON object, got {other}"))),
        }
    }

    /// Attaches a report to the invocation, after checking the `report_output` rules.
    pub fn report(&mut self, report: Report) -> Result<(), PluginError> {
        report.validate().map_err(|e| PluginError::unexpected(format!("invalid report: {e}")))?;
        self.reports.push(report);
        Ok(())
    }

    /// Reads `key` from storage; `None` when it is absent or null.
    pub fn storage_get<T: DeserializeOwned>(&self, key: &str) -> Result<Option<T>, PluginError> {
        match self.storage.get(key) {
            None | Some(Value::Null) => Ok(None),
            Some(value) => serde_json::from_value(value.clone())
                .map(Some)
                .map_err(|e| PluginError::unexpected(format!("storage key {key:?}: {e}"))),
        }
    }

    /// Writes `value` under `key` in storage.
    pub fn storage_set<T: Serialize>(&mut self, key: &str, value: &T) -> Result<(), PluginError> {
        self.storage.insert(key.to_owned(), serde_json::to_value(value)?);
        Ok(())
    }
}

impl<C: fmt::Debug> fmt::Debug for Context<C> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Context")
            .field("trace_id", &self.trace_id)
            .field("data", &self.data)
            .field("state", &self.state)
            .field("invoke_count", &self.invoke_count)
            .field("storage", &self.storage)
            .field("outputs", &self.outputs)
            .field("callback", &self.callback)
            .field("reports", &self.reports)
            .finish_non_exhaustive()
    }
}
