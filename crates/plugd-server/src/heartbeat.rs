//! This node's heartbeat: its row in the store says it is alive and what it serves, so that operators
//! see the cluster (`plugd db status`, the panel, `/metrics`) and which due work no live node serves.

use tokio_util::sync::CancellationToken;

use plugd_core::cluster::HEARTBEAT_EVERY;

use crate::state::{now_ms, AppState};

/// Beats at once (so a node shows as soon as it serves), then every [`HEARTBEAT_EVERY`]; at shutdown
/// says it left, so it shows as dead at once rather than after its beats lapse.
pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        if let Err(e) = state.store.heartbeat(&state.node, now_ms()).await {
            tracing::warn!("cannot write this node's heartbeat: {e}");
        }
        tokio::select! {
            () = tokio::time::sleep(HEARTBEAT_EVERY) => {}
            () = shutdown.cancelled() => break,
        }
    }
    if let Err(e) = state.store.leave(&state.node.node_id, now_ms()).await {
        tracing::warn!("cannot record that this node stopped: {e}");
    }
}
