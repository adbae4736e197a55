//! Deletes finished invocations (with their logs, reports and callbacks) older than the retention period,
//! in small batches so that the writer is never held for long.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::state::{now_ms, AppState};

const BATCH: usize = 500;

pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    loop {
        let mut purged = 0;
        loop {
            // Safe on several nodes at once: each batch is claimed by one of them.
            match state.store.purge_finished(now_ms(), state.config.retention, BATCH).await {
                Ok(gone) => {
                    purged += gone.len();
                    if gone.len() < BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!("retention failed: {e}");
                    break;
                }
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        if purged > 0 {
            tracing::info!(purged, "deleted finished invocations past retention");
        }
        tokio::select! {
            () = tokio::time::sleep(state.config.retention_interval) => {}
            () = shutdown.cancelled() => return,
        }
    }
}
