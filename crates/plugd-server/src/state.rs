//! What every handler and background task shares (the path of an execute lives in `advance`).

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::atomic::AtomicI64;
use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use plugd_core::cluster::{NodeInfo, Served};
use plugd_core::store::{Millis, Store};
use plugd_core::{Executor, Registry, SignedCallbacks};
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
}
