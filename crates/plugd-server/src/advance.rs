//! The one path of an execute under `plugd serve`, for the first one (`invoke`) and every later one
//! (the scheduler): execute it (or fail it on a runtime limit), keep its reports, record it in the
//! store, and wake whoever waits for what it made due.

use std::sync::atomic::Ordering;
use std::time::Instant;

use plugd_core::store::{finish_callback_of, Completion, FinishCallback, NewInvocation, ReportFile, StoreError};
use plugd_core::{Invocation, Step, StepError, Trigger};

use crate::logs::LogCapture;
use crate::state::{now_ms, AppState, Inner};

/// How the result of an execute is recorded.
pub(crate) enum Record {
    /// The first execute of a new invocation: inserted, and accepted only once committed.
    Insert {
        /// The calling app, when known.
        created_by: Option<String>,
    },
    /// An execute of a claimed invocation: written only if the claim still holds.
    Complete {
        /// The claim's fencing token.
        attempt: i64,
        /// The scheduler's worker slot: given back once the execute ran, before its result is
        /// written (the claim, renewed until then, still fences it), so the next claims need not
        /// wait for a commit.
        worker: Option<tokio::sync::OwnedSemaphorePermit>,
    },
}

/// What came of an execute.
pub(crate) enum Advanced {
    /// Recorded: the invocation as it now stands.
    Recorded(Box<Invocation>),
    /// Not recorded: the claim was lost (cancelled, or leased to another run).
    Lost,
}

/// Why an execute was not recorded.
#[derive(Debug, thiserror::Error)]
pub(crate) enum AdvanceError {
    /// The execute must not run at all.
    #[error("{0}")]
    Step(#[from] StepError),
    /// The store did not take the result.
    #[error("{0}")]
    Store(#[from] StoreError),
}

impl AppState {
    /// Executes `invocation` with `trigger` (or fails it with `limit`, a runtime limit it passed),
    /// keeps the reports, records the result as `record` says and wakes the scheduler (when the
    /// invocation waits on) and the outbox (when a finish callback was enqueued).
    pub(crate) async fn advance(
        &self,
        mut invocation: Invocation,
        trigger: Trigger,
        limit: Option<String>,
        record: Record,
    ) -> Result<Advanced, AdvanceError> {
        let consumed_callback = match &trigger {
            Trigger::Callback(callback) => Some(callback.id.clone()),
            Trigger::Start | Trigger::Poll => None,
        };
        let started = std::time::Instant::now();
        let (mut step, logs) = match limit {
            Some(err) => {
                let fail =
                    Step::fail(invocation.invoke_count, invocation.storage.clone(), invocation.outputs.clone(), err);
                (fail, String::new())
            }
            None => self.run_step(&invocation, trigger).await?,
        };
        let duration = started.elapsed();
        let trace_id = invocation.trace_id.clone();
        let (reports, report_files) =
            self.keep_reports(&trace_id, step.invoke_count, std::mem::take(&mut step.reports)).await;
        let waits = !step.state.is_final();
        let recorded = match record {
            Record::Insert { created_by } => {
                let (poll_after, callback_timeout) = (step.poll_after, step.callback_timeout);
                invocation.apply(step);
                let new = NewInvocation {
                    invocation: invocation.clone(),
                    now: now_ms(),
                    poll_after,
                    deadline: self.config.deadline,
                    logs,
                    reports,
                    report_files,
                    created_by,
                    callback_timeout,
                    duration,
                };
                self.store.insert(new).await?;
                self.event_streams.touch(&trace_id);
                self.metrics.invokes.fetch_add(1, Ordering::Relaxed);
                if waits {
                    self.wake_scheduler_for(invocation.state, poll_after);
                }
                return Ok(Advanced::Recorded(Box::new(invocation)));
            }
            Record::Complete { attempt, worker } => {
                drop(worker);
                let finish_callback = if step.state.is_final() { self.finish_callback_for(&invocation) } else { None };
                let wake_outbox = finish_callback.is_some();
                let completion = Completion {
                    trace_id: trace_id.clone(),
                    attempt,
                    step: step.clone(),
                    now: now_ms(),
                    consumed_callback,
                    logs,
                    finish_callback,
                    reports,
                    report_files,
                    duration,
                };
                let recorded = self.store.complete(completion).await?;
                if recorded && wake_outbox {
                    self.wake_outbox.notify_one();
                }
                recorded
            }
        };
        if !recorded {
            self.metrics.lost_claims.fetch_add(1, Ordering::Relaxed);
            return Ok(Advanced::Lost);
        }
        self.event_streams.touch(&trace_id);
        self.wake_scheduler_for(step.state, step.poll_after);
        invocation.apply(step);
        Ok(Advanced::Recorded(Box::new(invocation)))
    }
}

/// The parts of an execute's path that others share: the cancel handler asks whether a finish
/// callback is due, the callback handler wakes the scheduler.
impl AppState {
    /// Runs one execute, timing it and collecting the logs it emitted.
    pub(crate) async fn run_step(
        &self,
        invocation: &Invocation,
        trigger: Trigger,
    ) -> Result<(Step, String), StepError> {
        /// Drops the captured logs if the execute is abandoned (a client that went away).
        struct Forget<'a>(&'a LogCapture, &'a str);
        impl Drop for Forget<'_> {
            fn drop(&mut self) {
                self.0.take(self.1);
            }
        }
        let forget = Forget(&self.logs, &invocation.trace_id);
        let started = Instant::now();
        let mut step = self.executor.step(invocation, trigger).await;
        self.metrics.execute_duration.observe(started.elapsed());
        if let Ok(step) = &mut step {
            step.callback_timeout = step.callback_timeout.or(self.config.callback_timeout);
        }
        let logs = self.logs.take(&invocation.trace_id);
        drop(forget);
        step.map(|step| (step, logs))
    }

    /// Reads the files of an execute's reports; returns what the store keeps of them.
    pub(crate) async fn keep_reports(
        &self,
        trace_id: &str,
        invoke_count: u32,
        reports: Vec<plugd_sdk::Report>,
    ) -> (Vec<serde_json::Value>, Vec<ReportFile>) {
        if reports.is_empty() {
            return Default::default();
        }
        let (files, trace_id) = (self.report_files.clone(), trace_id.to_owned());
        tokio::task::spawn_blocking(move || files.persist(&trace_id, invoke_count, &reports)).await.unwrap_or_default()
    }

    /// The finish callback of an invocation that just ended, if its plugin enables one. A version
    /// that only other nodes serve (a cancel during a rolling deploy) cannot say: the caller's own
    /// `plugin_callback_info` decides, so a caller that asked to be told is told.
    pub(crate) fn finish_callback_for(&self, invocation: &Invocation) -> Option<FinishCallback> {
        match self.registry.get(&invocation.plugin, Some(&invocation.version)) {
            Ok(plugin) if !plugin.info.enable_plugin_callback => return None,
            Ok(_) | Err(_) => {}
        }
        finish_callback_of(&invocation.context)
    }
}

impl Inner {
    /// Wakes the scheduler for an invocation an execute left in `state`, due after `poll_after` in
    /// state POLL: unless it is final, or due no earlier than the scheduler looks anyway (it reads
    /// the next due time from the store after each claim, so a sleep it planned covers the rest).
    pub(crate) fn wake_scheduler_for(&self, state: plugd_sdk::State, poll_after: Option<std::time::Duration>) {
        use plugd_sdk::State;
        let due = match state {
            State::Success | State::Fail => return,
            State::Poll => plugd_core::store::millis_after(now_ms(), poll_after.unwrap_or_default()),
            // Due now if a callback waits for it.
            State::Empty | State::Callback => 0,
        };
        let sleeps_until = self.scheduler_sleeps_until.load(std::sync::atomic::Ordering::Acquire);
        if sleeps_until == 0 || due < sleeps_until {
            self.wake_scheduler.notify_one();
        }
    }
}
