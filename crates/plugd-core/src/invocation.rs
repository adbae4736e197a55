//! The invocation record and what triggers its next execute.

use std::fmt;

use plugd_sdk::{Callback, Report, State};
use serde_json::{Map, Value};

use crate::Step;

/// A new trace id: 32 lowercase hex characters (a UUID v7 without dashes).
///
/// Time-ordered, so that stores append to their trace-id indexes instead of dirtying a random page
/// of each per insert (the cost that dominated a busy SQLite writer); its 74 random bits keep it as
/// unguessable as callers need (a trace id reveals nothing `schedule` does not show: its creation
/// time).
pub fn new_trace_id() -> String {
    uuid::Uuid::now_v7().simple().to_string()
}

/// One invocation of one plugin version: the state a store keeps between executes.
#[derive(Debug, Clone, PartialEq)]
pub struct Invocation {
    /// The id callers use to follow it: 32 lowercase hex characters.
    pub trace_id: String,
    /// The plugin's name.
    pub plugin: String,
    /// The plugin version, as registered.
    pub version: String,
    /// Where it stands.
    pub state: State,
    /// How many executes have run.
    pub invoke_count: u32,
    /// The inputs as the caller sent them.
    pub inputs: Value,
    /// The context inputs as the caller sent them.
    pub context: Value,
    /// Plugin-private JSON kept between executes.
    pub storage: Map<String, Value>,
    /// The outputs so far.
    pub outputs: Map<String, Value>,
    /// Why it failed, in state FAIL.
    pub err: Option<String>,
    /// Reports attached so far, in memory (stores keep reports apart from the record).
    pub reports: Vec<Report>,
}

impl Invocation {
    /// A new invocation in state EMPTY, with a fresh trace id.
    pub fn new(plugin: &str, version: &str, inputs: Value, context: Value) -> Invocation {
        Invocation {
            trace_id: new_trace_id(),
            plugin: plugin.to_owned(),
            version: version.to_owned(),
            state: State::Empty,
            invoke_count: 0,
            inputs,
            context,
            storage: Map::new(),
            outputs: Map::new(),
            err: None,
            reports: Vec::new(),
        }
    }

    /// Records the result of an execute.
    pub fn apply(&mut self, step: Step) {
        self.state = step.state;
        self.invoke_count = step.invoke_count;
        self.storage = step.storage;
        self.outputs = step.outputs;
        self.err = step.err;
        self.reports.extend(step.reports);
    }
}

/// What starts an execute.
#[derive(Debug, Clone, PartialEq)]
pub enum Trigger {
    /// The first execute, in state EMPTY.
    Start,
    /// A poll whose time has come, in state POLL.
    Poll,
    /// A callback that arrived, in state CALLBACK.
    Callback(Callback),
}

impl Trigger {
    /// The state an invocation must be in for this trigger to run it.
    pub fn expected_state(&self) -> State {
        match self {
            Trigger::Start => State::Empty,
            Trigger::Poll => State::Poll,
            Trigger::Callback(_) => State::Callback,
        }
    }
}

impl fmt::Display for Trigger {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Trigger::Start => f.write_str("start"),
            Trigger::Poll => f.write_str("poll"),
            Trigger::Callback(cb) => write!(f, "callback {}", cb.id),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_are_32_lowercase_hex() {
        let id = new_trace_id();
        assert_eq!(id.len(), 32);
        assert!(id.chars().all(|c| c.is_ascii_hexdigit() && !c.is_ascii_uppercase()));
        assert_ne!(id, new_trace_id());
    }
}
