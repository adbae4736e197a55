//! The local runner: drives an invocation to its end in this process, as `plugd run` does.
//!
//! POLL waits in-process for the interval the plugin asked for. CALLBACK waits for a POST to a
//! temporary HTTP listener on 127.0.0.1 (random port) that serves the signed callback URLs the
//! plugin prepared. Nothing is persisted: a local run lives as long as the process.

mod listener;

use std::sync::Arc;
use std::time::Duration;

use plugd_core::{schedule, Executor, Invocation, Registry, Step, StepError, Trigger};
use plugd_sdk::{Callback, CallbackPreparation, State};
use tokio::sync::mpsc;

use listener::LocalCallbacks;

/// What a [`LocalRunner`] tells its caller while it runs, to show progress.
pub trait RunObserver: Send {
    /// An execute is about to start.
    fn executing(&mut self, _invocation: &Invocation) {}
    /// The plugin asked to be polled again after `after`.
    fn polling(&mut self, _invocation: &Invocation, _after: Duration) {}
    /// The plugin waits for one of these callbacks.
    fn waiting_callback(&mut self, _invocation: &Invocation, _callbacks: &[CallbackPreparation]) {}
    /// A callback arrived and the plugin runs again.
    fn callback_received(&mut self, _invocation: &Invocation, _callback: &Callback) {}
}

/// Observes nothing.
impl RunObserver for () {}

/// Runs invocations to their end in this process.
pub struct LocalRunner {
    executor: Executor,
    callbacks: Arc<LocalCallbacks>,
}

impl LocalRunner {
    /// Starts the callback listener on 127.0.0.1 with a random port and a random signing secret.
    pub async fn start(registry: Arc<Registry>) -> std::io::Result<LocalRunner> {
        let callbacks = LocalCallbacks::start().await?;
        let executor = Executor::new(registry, callbacks.clone());
        Ok(LocalRunner { executor, callbacks })
    }

    /// The base URL of the callback listener, e.g. `http://127.0.0.1:41234`.
    pub fn base_url(&self) -> &str {
        self.callbacks.base_url()
    }

    /// The executor it runs steps with.
    pub fn executor(&self) -> &Executor {
        &self.executor
    }

    /// Executes `invocation` until SUCCESS or FAIL, waiting for polls and callbacks in between.
    ///
    /// `invocation` is updated after every execute, so if this future is dropped (on a timeout,
    /// say) it holds the last state reached.
    pub async fn run(&self, invocation: &mut Invocation, observer: &mut dyn RunObserver) -> Result<(), StepError> {
        let (sender, mut inbox) = mpsc::unbounded_channel();
        // Callbacks that arrive while an execute runs wait in the inbox: none is dropped.
        let _session = self.callbacks.open_session(&invocation.trace_id, sender);
        let mut trigger = match invocation.state {
            State::Poll => Trigger::Poll,
            _ => Trigger::Start,
        };
        loop {
            observer.executing(invocation);
            let step = self.executor.step(invocation, trigger).await?;
            let (poll_after, callback_timeout) = (step.poll_after, step.callback_timeout);
            invocation.apply(step);
            trigger = match invocation.state {
                State::Poll => {
                    let after = poll_after.unwrap_or_default();
                    observer.polling(invocation, after);
                    tokio::time::sleep(after).await;
                    Trigger::Poll
                }
                State::Callback => {
                    observer.waiting_callback(invocation, &self.callbacks.outstanding(&invocation.trace_id));
                    let received = inbox.recv();
                    let callback = match callback_timeout {
                        None => received.await,
                        Some(timeout) => match tokio::time::timeout(timeout, received).await {
                            Ok(callback) => callback,
                            Err(_) => {
                                let (storage, outputs) = (invocation.storage.clone(), invocation.outputs.clone());
                                let err = schedule::callback_timeout_error(timeout);
                                invocation.apply(Step::fail(invocation.invoke_count, storage, outputs, err));
                                return Ok(());
                            }
                        },
                    };
                    let callback = callback.expect("the session keeps the sender alive");
                    observer.callback_received(invocation, &callback);
                    Trigger::Callback(callback)
                }
                State::Empty | State::Success | State::Fail => return Ok(()),
            };
        }
    }
}

#[cfg(test)]
mod tests;
