//! The records the cases write, at times the caller picks: for the cases (on real time) and for a
//! store's own tests (on a clock of their own), so that both write the same invocations.

use std::time::Duration;

use plugd_core::cluster::Served;
use plugd_core::store::{Completion, Millis, NewInvocation, ReportFile};
use plugd_core::{Invocation, Step};
use plugd_sdk::State;
use serde_json::{json, Map};

/// What a node that runs the records' invocations serves: `countdown` 1.0.0.
pub fn served() -> Served {
    Served::new([("countdown", "1.0.0")])
}

/// A `countdown` invocation in `state`, after its first execute.
pub fn invocation(state: State) -> Invocation {
    let mut inv = Invocation::new("countdown", "1.0.0", json!({"from": 1}), json!({}));
    inv.state = state;
    inv.invoke_count = 1;
    inv
}

/// `inv` as a store takes it at `now`, polled again after `poll_after`: logs `first\n`, one report
/// `{"description": "first", "html": "1-1/index.html"}` and that file, created by `bk_sops`, its
/// execute 3 ms long.
pub fn new_at(inv: &Invocation, now: Millis, poll_after: Option<Duration>) -> NewInvocation {
    NewInvocation {
        invocation: inv.clone(),
        now,
        poll_after,
        deadline: None,
        logs: "first\n".into(),
        reports: vec![json!({"description": "first", "html": "1-1/index.html"})],
        report_files: vec![ReportFile { path: "1-1/index.html".into(), content: b"<h1>first</h1>".to_vec() }],
        created_by: Some("bk_sops".into()),
        callback_timeout: None,
        duration: Duration::from_millis(3),
    }
}

/// An execute's result: `state`, `invoke_count`, polled again after `poll_after`, nothing else.
pub fn step(state: State, invoke_count: u32, poll_after: Option<Duration>) -> Step {
    Step {
        state,
        invoke_count,
        storage: Map::new(),
        outputs: Map::new(),
        err: None,
        poll_after,
        callback_timeout: None,
        reports: Vec::new(),
    }
}

/// The completion of claim `attempt` of `trace_id` with `step` at `now`: logs `later\n`, one report
/// `{"description": "later"}`, the execute 2 ms long.
pub fn completion_at(trace_id: &str, attempt: i64, step: Step, now: Millis) -> Completion {
    Completion {
        trace_id: trace_id.into(),
        attempt,
        step,
        now,
        consumed_callback: None,
        logs: "later\n".into(),
        finish_callback: None,
        reports: vec![json!({"description": "later"})],
        report_files: Vec::new(),
        duration: Duration::from_millis(2),
    }
}
