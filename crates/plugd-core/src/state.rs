//! The invocation state machine: which state may follow which.

use plugd_sdk::State;

/// A transition the state machine forbids.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[error("invalid state transition {from} -> {to}")]
pub struct TransitionError {
    /// The current state.
    pub from: State,
    /// The state that was asked for.
    pub to: State,
}

/// Checks that an invocation in state `from` may move to `to`, and returns `to`.
///
/// EMPTY, POLL and CALLBACK may move to POLL, CALLBACK, SUCCESS or FAIL; SUCCESS and FAIL are final,
/// and nothing moves back to EMPTY. Every state change of every runtime goes through here, so
/// state never goes backwards.
pub fn transition(from: State, to: State) -> Result<State, TransitionError> {
    if from.is_final() || to == State::Empty {
        Err(TransitionError { from, to })
    } else {
        Ok(to)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn transition_table() {
        let mut table = String::new();
        for from in State::ALL {
            let allowed: Vec<&str> =
                State::ALL.into_iter().filter(|to| transition(from, *to).is_ok()).map(State::name).collect();
            table.push_str(&format!("{from}: {}\n", allowed.join(" ")));
        }
        assert_eq!(
            table,
            "EMPTY: POLL CALLBACK SUCCESS FAIL\n\
             POLL: POLL CALLBACK SUCCESS FAIL\n\
             CALLBACK: POLL CALLBACK SUCCESS FAIL\n\
             SUCCESS: \n\
             FAIL: \n"
        );
        assert_eq!(
            transition(State::Success, State::Poll).unwrap_err().to_string(),
            "invalid state transition SUCCESS -> POLL"
        );
    }
}
