//! Progress of a local run on standard error: a spinner on a terminal, plain lines otherwise.

use std::io::IsTerminal;
use std::time::{Duration, Instant};

use indicatif::{ProgressBar, ProgressStyle};
use plugd_core::Invocation;
use plugd_sdk::{Callback, CallbackPreparation};

use crate::local::RunObserver;

pub(crate) struct Progress {
    started: Instant,
    spinner: Option<ProgressBar>,
}

impl Progress {
    /// A spinner when standard error is a terminal, plain lines otherwise.
    pub(crate) fn new(started: Instant) -> Progress {
        let spinner = std::io::stderr().is_terminal().then(|| {
            let spinner = ProgressBar::new_spinner();
            let style = ProgressStyle::with_template("{spinner} {msg} [{elapsed}]")
                .unwrap_or_else(|_| ProgressStyle::default_spinner());
            spinner.set_style(style);
            spinner.enable_steady_tick(Duration::from_millis(100));
            spinner
        });
        Progress { started, spinner }
    }

    pub(crate) fn finish(&self) {
        if let Some(spinner) = &self.spinner {
            spinner.finish_and_clear();
        }
    }

    /// Shows a line: above the spinner, or plain with the time since the start.
    fn line(&self, text: &str) {
        match &self.spinner {
            Some(spinner) => spinner.println(text),
            None => eprintln!("[{:>7.2}s] {text}", self.started.elapsed().as_secs_f64()),
        }
    }

    fn status(&self, text: String) {
        if let Some(spinner) = &self.spinner {
            spinner.set_message(text);
        }
    }
}

impl RunObserver for Progress {
    fn executing(&mut self, invocation: &Invocation) {
        self.status(format!("{} · executing (invoke_count {})", invocation.state, invocation.invoke_count + 1));
    }

    fn polling(&mut self, invocation: &Invocation, after: Duration) {
        let next = humantime::format_duration(after);
        match &self.spinner {
            Some(_) => self.status(format!("POLL · invoke_count {} · next execute in {next}", invocation.invoke_count)),
            None => self.line(&format!("POLL · invoke_count {} · next execute in {next}", invocation.invoke_count)),
        }
    }

    fn waiting_callback(&mut self, invocation: &Invocation, callbacks: &[CallbackPreparation]) {
        self.line(&format!("CALLBACK · invoke_count {} · waiting for a callback", invocation.invoke_count));
        for callback in callbacks {
            self.line(&format!("  callback url: {}", callback.url));
            let body = callback.example.as_ref().map_or_else(|| "{}".to_owned(), |example| example.to_string());
            // Single quotes cannot appear inside a single-quoted shell word: close, escape, reopen.
            let body = body.replace('\'', "'\\''");
            self.line(&format!("  curl -X POST -H 'Content-Type: application/json' -d '{body}' '{}'", callback.url));
        }
        self.status(format!("CALLBACK · invoke_count {} · waiting for a callback", invocation.invoke_count));
    }

    fn callback_received(&mut self, _invocation: &Invocation, callback: &Callback) {
        self.line(&format!("callback {} received: {}", callback.id, callback.data));
    }
}
