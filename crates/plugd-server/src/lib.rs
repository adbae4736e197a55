/*!
`plugd serve`: the bk-plugin HTTP API over a durable store.

[`serve`] runs, until a shutdown signal:
- the HTTP API (`api`): every bk-plugin endpoint under `/bk_plugin/` for the default plugin and under
  `/plugins/<plugin>/bk_plugin/` for each plugin, plus `/metrics`, `/healthz` and `/openapi.json`;
- the scheduler (`scheduler`): claims due polls and callbacks in batches with a fenced lease and
  executes them on a bounded pool;
- the outbox (`outbox`): delivers finish callbacks with retries;
- retention (`retention`): deletes finished invocations past their retention period.

Everything durable goes through a [`plugd_core::store::Store`]; everything about plugins through the
[`plugd_core::Executor`].
*/
#![deny(missing_docs)]
// Handlers return ready-made error responses early; boxing them would buy nothing.
#![allow(clippy::result_large_err)]

mod advance;
mod api;
pub mod apigw;
mod auth;
mod claim_loop;
pub mod config;
mod connections;
mod events;
pub mod guard;
mod heartbeat;
mod listener;
mod logs;
mod metrics;
mod outbox;
mod reports;
mod retention;
mod scheduler;
mod state;
mod wire;
mod write_deadline;

use std::future::Future;
use std::sync::Arc;

use plugd_core::store::Store;
use plugd_core::{Registry, SignedCallbacks};
use tokio_util::sync::CancellationToken;

use state::AppState;

pub use config::{AuthConfig, ServerConfig};
pub use logs::LogCapture;

/// Why the server could not start or stopped with an error.
#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    /// The configuration is not usable.
    #[error("{0}")]
    Config(String),
    /// The store failed at startup.
    #[error("store: {0}")]
    Store(#[from] plugd_core::store::StoreError),
    /// The listener failed.
    #[error("listener: {0}")]
    Io(#[from] std::io::Error),
}

/// Checks the configuration against the registry: the default plugin exists, auth is configured
/// when listening beyond loopback, allow_scope names served plugins.
pub fn check_config(config: &ServerConfig, registry: &Registry) -> Result<(), ServeError> {
    if let Some(default) = &config.default_plugin {
        if !registry.contains(default) {
            let available = registry.names().collect::<Vec<_>>().join(", ");
            return Err(ServeError::Config(format!(
                "--default-plugin {default:?} is not served; available plugins: {available}"
            )));
        }
    }
    if !config.listen.ip().is_loopback() && !config.auth.is_configured() {
        return Err(ServeError::Config(format!(
            "listening on {} (beyond loopback) requires authentication: set PLUGD_AUTH_TOKENS \
             (app:token,...) or --apigw-public-key",
            config.listen
        )));
    }
    for plugin in config.allow_scope.keys() {
        if !registry.contains(plugin) {
            return Err(ServeError::Config(format!("allow_scope names plugin {plugin:?}, which is not served")));
        }
    }
    Ok(())
}

/// Serves on `listener` until `shutdown` completes, then stops claiming, lets running executes
/// finish within the grace period, and releases what remains.
pub async fn serve(
    listener: tokio::net::TcpListener,
    config: ServerConfig,
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    logs: LogCapture,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> Result<(), ServeError> {
    let state = app_state(config, registry, store, logs).await?;

    let stop = CancellationToken::new();
    let background = [
        tokio::spawn(scheduler::run(state.clone(), stop.clone())),
        tokio::spawn(outbox::run(state.clone(), stop.clone())),
        tokio::spawn(retention::run(state.clone(), stop.clone())),
        tokio::spawn(heartbeat::run(state.clone(), stop.clone())),
    ];
    // Open event streams end at shutdown rather than hold the graceful stop for its whole grace.
    let app = api::router(state.clone()).layer(axum::Extension(api::Stopping(stop.clone())));
    let http_stop = stop.clone();
    tokio::spawn(async move {
        shutdown.await;
        tracing::info!("shutting down: no new requests or claims");
        http_stop.cancel();
    });
    let config = &state.config;
    listener::serve_http(listener, app, config, stop.clone()).await;
    stop.cancel();
    for task in background {
        let _ = task.await;
    }
    Ok(())
}

/// The router alone, over a state built from the same parts, for tests that call it in-process.
pub async fn router(
    config: ServerConfig,
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
) -> Result<axum::Router, ServeError> {
    Ok(api::router(app_state(config, registry, store, LogCapture::new()).await?))
}

/// Checks the configuration and builds the shared state, with the callback secret from the
/// configuration or, by default, the one the store keeps.
async fn app_state(
    config: ServerConfig,
    registry: Arc<Registry>,
    store: Arc<dyn Store>,
    logs: LogCapture,
) -> Result<AppState, ServeError> {
    check_config(&config, &registry)?;
    let secret = match &config.secret {
        Some(secret) => secret.clone(),
        None => store.secret(SignedCallbacks::random_secret()).await?,
    };
    let mut signer = SignedCallbacks::new(&secret, &config.public_url).with_ttl(config.callback_ttl);
    if let Some(base) = &config.callback_base {
        signer = signer.with_callback_base(base);
    }
    let schema_version = store.info().await?.known_schema_version;
    Ok(AppState::new(registry, store, signer, config, logs, schema_version))
}
