//! What every handler and background task shares.

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{Instant, SystemTime, UNIX_EPOCH};

use plugd_core::cluster::{NodeInfo, Served};
use plugd_core::store::{finish_callback_of, FinishCallback, Millis, ReportFile, Store};
use plugd_core::{Executor, Invocation, Registry, SignedCallbacks, Step, StepError, Trigger};
use plugd_sdk::ApiRoute;
use tokio::sync::Notify;

use crate::config::ServerConfig;
use crate::events::EventStreams;
use crate::logs::LogCapture;
use crate::metrics::Metrics;
use crate::reports::ReportFiles;

/// Unix milliseconds now.
pub(crate) fn now_ms() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

/// A node id unique per process: the host (for operators), the pid and a random part (pids repeat
/// across hosts and restarts).
fn node_id() -> String {
    let host = hostname::get().map(|h| h.to_string_lossy().into_owned()).unwrap_or_else(|_| "plugd".into());
    format!("{host}-{}-{:08x}", std::process::id(), rand::random::<u32>())
}

/// The server's shared state; cheap to clone.
#[derive(Clone)]
pub(crate) struct AppState(Arc<Inner>);

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

pub(crate) struct Inner {
    pub(crate) registry: Arc<Registry>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) executor: Executor,
    pub(crate) signer: SignedCallbacks,
    pub(crate) config: ServerConfig,
    pub(crate) metrics: Metrics,
    pub(crate) logs: LogCapture,
    /// Something may have become due earlier than the scheduler planned.
    pub(crate) wake_scheduler: Notify,
    /// Until when (`now_ms`) the scheduler sleeps; 0 while it is awake (claiming, or about to).
    pub(crate) scheduler_sleeps_until: AtomicI64,
    /// A finish callback was enqueued.
    pub(crate) wake_outbox: Notify,
    /// Plugin APIs by plugin name, newest version's routes first.
    pub(crate) api_routes: HashMap<String, Vec<ApiRoute>>,
    /// How report files are read.
    pub(crate) report_files: ReportFiles,
    /// The `Host` values of the URLs callers use (see [`ServerConfig::declared_hosts`]).
    pub(crate) declared_hosts: Vec<String>,
    /// The origins of the URLs callers use (see [`ServerConfig::declared_origins`]).
    pub(crate) declared_origins: Vec<String>,
    /// The open event streams and the watches behind them.
    pub(crate) event_streams: Arc<EventStreams>,
    /// This node as its heartbeat describes it: its id (the owner of its claims) and what it serves,
    /// the only invocations it claims.
    pub(crate) node: NodeInfo,
}

impl Deref for AppState {
    type Target = Inner;

    fn deref(&self) -> &Inner {
        &self.0
    }
}

impl AppState {
    pub(crate) fn new(
        registry: Arc<Registry>,
        store: Arc<dyn Store>,
        signer: SignedCallbacks,
        config: ServerConfig,
        logs: LogCapture,
        schema_version: i64,
    ) -> AppState {
        let node = NodeInfo {
            node_id: node_id(),
            plugd_version: env!("CARGO_PKG_VERSION").to_owned(),
            schema_version,
            served: Served::new(registry.iter().map(|p| (p.info.name.clone(), p.info.version.clone()))),
        };
        let executor = Executor::new(registry.clone(), Arc::new(signer.clone()))
            .coerce_inputs(!config.strict_inputs)
            .max_outputs(Some(config.max_outputs));
        let mut api_routes: HashMap<String, Vec<ApiRoute>> = HashMap::new();
        for plugin in registry.iter() {
            api_routes.entry(plugin.info.name.clone()).or_default().extend(plugin.plugin.api_routes());
        }
        AppState(Arc::new(Inner {
            registry,
            store,
            executor,
            signer,
            config: config.clone(),
            metrics: Metrics::new(),
            logs,
            wake_scheduler: Notify::new(),
            scheduler_sleeps_until: AtomicI64::new(0),
            wake_outbox: Notify::new(),
            api_routes,
            report_files: ReportFiles { workspace: config.workspace.clone(), cap: config.max_report_bytes },
            declared_hosts: config.declared_hosts().collect(),
            declared_origins: config.declared_origins().collect(),
            event_streams: Arc::new(EventStreams::new(config.max_event_streams)),
            node,
        }))
    }

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
