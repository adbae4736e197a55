//! When an invocation runs next, what a claim of it carries, and which limits fail it: the rules
//! every store and runtime applies, so that no store decides them in SQL of its own.

use std::time::Duration;

use plugd_sdk::{Callback, State};

use crate::store::{millis_after, Millis, StoredInvocation};
use crate::{transition, Trigger};

/// The times after which a pending invocation fails instead of waiting on.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Deadlines {
    /// The invocation's own deadline (a runtime limit on its whole life).
    pub invocation: Option<Millis>,
    /// The end of its current wait for a callback.
    pub callback: Option<Millis>,
}

impl Deadlines {
    /// The earlier of the two.
    pub fn earliest(&self) -> Option<Millis> {
        match (self.invocation, self.callback) {
            (Some(a), Some(b)) => Some(a.min(b)),
            (a, b) => a.or(b),
        }
    }

    fn passed(&self, now: Millis) -> bool {
        self.earliest().is_some_and(|at| at <= now)
    }
}

/// When a pending invocation is due next: a POLL at its poll time, a CALLBACK now if a callback is
/// waiting for it, else at its earliest deadline (to fail it then); never, once final.
pub fn next_run_at(
    state: State,
    poll_at: Option<Millis>,
    callback_waiting: bool,
    deadlines: Deadlines,
    now: Millis,
) -> Option<Millis> {
    match state {
        State::Poll => {
            let at = poll_at.unwrap_or(now);
            Some(deadlines.invocation.map_or(at, |d| d.min(at)))
        }
        State::Callback if callback_waiting => Some(now),
        State::Callback => deadlines.earliest(),
        State::Empty | State::Success | State::Fail => None,
    }
}

/// What a store writes after an execute (the first one included): when the invocation runs next,
/// the wait for a callback it starts, and when it finished. Computed here, persisted by stores.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Plan {
    /// When the scheduler claims it next (see [`next_run_at`]).
    pub next_run_at: Option<Millis>,
    /// In state CALLBACK with a bounded wait, when the wait runs out.
    pub callback_deadline_at: Option<Millis>,
    /// In state CALLBACK with a bounded wait, how long the wait is.
    pub callback_timeout: Option<Duration>,
    /// In state SUCCESS or FAIL, now.
    pub finish_at: Option<Millis>,
}

/// The [`Plan`] of an invocation that an execute left in `state` at `now`: polled after
/// `poll_after`, waiting at most `callback_timeout` for a callback, failing at `deadline_at`;
/// `callback_waiting` says whether a callback posted early already waits for it.
pub fn plan(
    state: State,
    poll_after: Option<Duration>,
    callback_timeout: Option<Duration>,
    deadline_at: Option<Millis>,
    callback_waiting: bool,
    now: Millis,
) -> Plan {
    let callback_timeout = callback_timeout.filter(|_| state == State::Callback);
    let callback_deadline_at = callback_timeout.map(|t| millis_after(now, t));
    let poll_at = poll_after.map(|d| millis_after(now, d));
    let deadlines = Deadlines { invocation: deadline_at, callback: callback_deadline_at };
    Plan {
        next_run_at: next_run_at(state, poll_at, callback_waiting && state == State::Callback, deadlines, now),
        callback_deadline_at,
        callback_timeout,
        finish_at: state.is_final().then_some(now),
    }
}

/// When a callback that arrived at `now` makes its invocation due: `Some(now)` when it waits in
/// CALLBACK, no execute holds it (`leased`) and it was due later or never; otherwise `None`, its due
/// time stays (a running execute's completion, or the commit of its first, sees the waiting callback).
pub fn due_on_callback(state: State, leased: bool, next_run_at: Option<Millis>, now: Millis) -> Option<Millis> {
    let later = next_run_at.is_none_or(|at| at > now);
    (state == State::Callback && !leased && later).then_some(now)
}

/// What a cancel at `now` writes over an invocation in `state`: FAIL (by [`transition`], so never out
/// of a final state) and its [`Plan`] (finished now, due never); `Err` with the final state it has.
pub fn cancelled(state: State, now: Millis) -> Result<(State, Plan), State> {
    let fail = transition(state, State::Fail).map_err(|e| e.from)?;
    Ok((fail, plan(fail, None, None, None, false, now)))
}

/// When a lease taken (or renewed) at `now` for `lease` ends: the claim's `lease_expires_at`, and
/// also its `next_run_at`, so that what a claimer that died was running comes due again then.
pub fn lease_ends(now: Millis, lease: Duration) -> Millis {
    millis_after(now, lease)
}

/// When an invocation whose claim was given back at `now` (at shutdown, or a trigger that could not
/// run) is due: at once.
pub fn due_after_release(now: Millis) -> Millis {
    now
}

/// The deadline of an invocation accepted at `now` under a runtime limit of `deadline`.
pub fn deadline_at(now: Millis, deadline: Option<Duration>) -> Option<Millis> {
    deadline.map(|d| millis_after(now, d))
}

/// The cut-off of retention at `now`: invocations finished before it go.
pub fn retention_cutoff(now: Millis, keep: Duration) -> Millis {
    now.saturating_sub(Millis::try_from(keep.as_millis()).unwrap_or(Millis::MAX))
}

/// What to do with an invocation that came due.
#[derive(Debug, Clone, PartialEq)]
pub enum ClaimDecision {
    /// Execute it with this trigger (a poll past a deadline is one that [`Limits::exceeded`] fails).
    Execute(Trigger),
    /// Nothing to deliver yet (its lease ran out after the callback was consumed): wait again, until
    /// a callback arrives or this time.
    WaitUntil(Option<Millis>),
}

/// The trigger of a claim of an invocation in `state`, given the oldest callback waiting for it.
pub fn claim_decision(state: State, pending: Option<Callback>, deadlines: Deadlines, now: Millis) -> ClaimDecision {
    if state != State::Callback {
        return ClaimDecision::Execute(Trigger::Poll);
    }
    match pending {
        Some(callback) => ClaimDecision::Execute(Trigger::Callback(callback)),
        None if deadlines.passed(now) => ClaimDecision::Execute(Trigger::Poll),
        None => ClaimDecision::WaitUntil(deadlines.earliest()),
    }
}

/// The FAIL message of a wait for a callback that ran out.
pub fn callback_timeout_error(timeout: Duration) -> String {
    format!("plugin schedule failed: callback timeout after {}", humantime::format_duration(timeout))
}

/// A runtime's limits on invocations, beyond the deadline each invocation carries (`deadline_at`,
/// set from the runtime's deadline when it was accepted).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Limits {
    /// Fail an invocation that would execute more often than this.
    pub max_invoke_count: Option<u32>,
}

impl Limits {
    /// Why a claimed invocation must fail instead of executing with `trigger`, if it must.
    pub fn exceeded(&self, stored: &StoredInvocation, trigger: &Trigger, now: Millis) -> Option<String> {
        let invocation = &stored.invocation;
        if let Some(max) = self.max_invoke_count {
            if invocation.invoke_count >= max {
                return Some(format!("invocation reached the maximum invoke count of {max}"));
            }
        }
        if let Some(at) = stored.deadline_at.filter(|at| now >= *at) {
            // The deadline in force when it was accepted (stored with it), not today's `--deadline`.
            let limit = Duration::from_millis(u64::try_from(at - stored.created_at).unwrap_or(0));
            let limit = humantime::format_duration(limit);
            return Some(format!("invocation passed its deadline of {limit} after it was accepted"));
        }
        let waited_out = stored.callback_deadline_at.is_some_and(|at| now >= at);
        if invocation.state == State::Callback && *trigger == Trigger::Poll && waited_out {
            return Some(callback_timeout_error(stored.callback_timeout.unwrap_or_default()));
        }
        None
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: Millis = 1_000;

    fn deadlines(invocation: Option<Millis>, callback: Option<Millis>) -> Deadlines {
        Deadlines { invocation, callback }
    }

    #[test]
    fn next_run_times() {
        let none = Deadlines::default();
        assert_eq!(next_run_at(State::Poll, Some(5_000), false, none, NOW), Some(5_000));
        assert_eq!(next_run_at(State::Poll, Some(5_000), false, deadlines(Some(2_000), None), NOW), Some(2_000));
        assert_eq!(next_run_at(State::Poll, None, false, none, NOW), Some(NOW));
        assert_eq!(next_run_at(State::Callback, None, true, deadlines(Some(2_000), None), NOW), Some(NOW));
        assert_eq!(next_run_at(State::Callback, None, false, none, NOW), None);
        assert_eq!(next_run_at(State::Callback, None, false, deadlines(Some(9_000), Some(3_000)), NOW), Some(3_000));
        assert_eq!(next_run_at(State::Success, None, true, deadlines(Some(2_000), None), NOW), None);
    }

    #[test]
    fn claims_deliver_the_oldest_callback_or_fail_past_a_deadline() {
        let callback = Callback { id: "a".into(), data: serde_json::json!({}) };
        assert_eq!(
            claim_decision(State::Callback, Some(callback.clone()), deadlines(Some(0), None), NOW),
            ClaimDecision::Execute(Trigger::Callback(callback))
        );
        assert_eq!(
            claim_decision(State::Callback, None, deadlines(None, Some(NOW)), NOW),
            ClaimDecision::Execute(Trigger::Poll)
        );
        assert_eq!(
            claim_decision(State::Callback, None, deadlines(Some(5_000), Some(3_000)), NOW),
            ClaimDecision::WaitUntil(Some(3_000))
        );
        assert_eq!(claim_decision(State::Poll, None, Deadlines::default(), NOW), ClaimDecision::Execute(Trigger::Poll));
    }

    #[test]
    fn plans_start_waits_and_finish() {
        let p = plan(State::Poll, Some(Duration::from_millis(500)), None, None, false, NOW);
        assert_eq!(p, Plan { next_run_at: Some(1_500), ..Plan::default() });
        let p = plan(State::Callback, None, Some(Duration::from_secs(2)), Some(9_000), false, NOW);
        assert_eq!(
            p,
            Plan {
                next_run_at: Some(3_000),
                callback_deadline_at: Some(3_000),
                callback_timeout: Some(Duration::from_secs(2)),
                finish_at: None
            }
        );
        assert_eq!(plan(State::Callback, None, None, None, true, NOW).next_run_at, Some(NOW));
        let p = plan(State::Success, None, Some(Duration::from_secs(2)), Some(9_000), true, NOW);
        assert_eq!(p, Plan { finish_at: Some(NOW), ..Plan::default() });
        assert_eq!(deadline_at(NOW, Some(Duration::from_secs(1))), Some(2_000));
        assert_eq!(retention_cutoff(NOW, Duration::from_millis(400)), 600);
        assert!(retention_cutoff(NOW, Duration::MAX) < 0);
    }

    #[test]
    fn a_callback_makes_a_waiting_unheld_invocation_due_now() {
        assert_eq!(due_on_callback(State::Callback, false, None, NOW), Some(NOW));
        assert_eq!(due_on_callback(State::Callback, false, Some(NOW + 5), NOW), Some(NOW));
        assert_eq!(due_on_callback(State::Callback, false, Some(NOW - 5), NOW), None, "already due earlier");
        assert_eq!(due_on_callback(State::Callback, true, None, NOW), None, "an execute holds it");
        assert_eq!(due_on_callback(State::Poll, false, Some(NOW + 5), NOW), None);
    }

    #[test]
    fn a_cancel_fails_what_is_pending_and_nothing_final() {
        let (state, plan) = cancelled(State::Callback, NOW).unwrap();
        assert_eq!((state, plan.finish_at, plan.next_run_at), (State::Fail, Some(NOW), None));
        assert_eq!(cancelled(State::Success, NOW), Err(State::Success));
        assert_eq!(cancelled(State::Fail, NOW), Err(State::Fail));
    }

    #[test]
    fn the_deadline_message_names_the_deadline_stored_with_the_invocation() {
        let mut invocation = crate::Invocation::new("p", "1.0.0", serde_json::json!({}), serde_json::json!({}));
        invocation.state = State::Poll;
        let stored = StoredInvocation {
            invocation,
            created_at: NOW,
            updated_at: NOW,
            finish_at: None,
            next_run_at: Some(NOW + 2_000),
            lease_owner: None,
            lease_expires_at: None,
            attempt: 1,
            deadline_at: Some(NOW + 2_000),
            callback_deadline_at: None,
            callback_timeout: None,
            created_by: None,
        };
        // Whatever today's --deadline is, the invocation was accepted under two seconds.
        let limits = Limits { max_invoke_count: None };
        assert_eq!(limits.exceeded(&stored, &Trigger::Poll, NOW + 1_999), None);
        assert_eq!(
            limits.exceeded(&stored, &Trigger::Poll, NOW + 2_000).as_deref(),
            Some("invocation passed its deadline of 2s after it was accepted")
        );
    }

    #[test]
    fn the_callback_timeout_message_names_the_duration() {
        assert_eq!(
            callback_timeout_error(Duration::from_secs(90)),
            "plugin schedule failed: callback timeout after 1m 30s"
        );
    }
}
