//! Delivers finish callbacks from the durable outbox: POST `plugin_callback_info.data` to
//! `plugin_callback_info.url` with timeouts, verified TLS, and retries with exponential backoff and
//! jitter. Pending deliveries survive restarts because they live in the store.

use std::sync::Arc;
use std::time::Duration;

use plugd_core::store::{Delivery, OutboxItem, Wake};
use serde_json::Value;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;

use crate::claim_loop;
use crate::state::{now_ms, AppState};

const BATCH: usize = 32;
const CONCURRENT_DELIVERIES: usize = 16;
const MAX_BACKOFF: Duration = Duration::from_secs(300);
const LEASE_MARGIN: Duration = Duration::from_secs(5);

pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let timeout = state.config.finish_callback_timeout;
    let client = match reqwest::Client::builder()
        .connect_timeout(timeout.min(Duration::from_secs(5)))
        .timeout(timeout)
        .user_agent(concat!("plugd/", env!("CARGO_PKG_VERSION")))
        .build()
    {
        Ok(client) => client,
        Err(e) => {
            tracing::error!("cannot build the finish-callback client: {e}; finish callbacks are not delivered");
            return;
        }
    };
    let slots = Arc::new(Semaphore::new(CONCURRENT_DELIVERIES));
    // A claimed delivery stays hidden this long: longer than one attempt can take (the request is
    // bounded by `timeout`; recording its outcome is one write). After a crash mid-attempt the
    // delivery is retried once this runs out, so the margin is kept short.
    let lease = timeout + LEASE_MARGIN;
    let claim = |limit| state.store.claim_outbox(now_ms(), limit, lease);
    let start = |item, slot| {
        let (state, client) = (state.clone(), client.clone());
        tokio::spawn(async move {
            deliver(&state, &client, item).await;
            drop(slot);
        });
    };
    claim_loop::run("finish callbacks", slots, BATCH, &shutdown, claim, start, || sleep(&state)).await;
}

/// Sleeps until the next delivery is due (at most the store's `max_idle`) or until woken.
async fn sleep(state: &AppState) {
    let max_idle = state.store.max_idle();
    let sleep_for = match state.store.next_outbox_due(now_ms()).await {
        Ok(Some(due_in)) => due_in.min(max_idle),
        _ => max_idle,
    };
    tokio::select! {
        () = tokio::time::sleep(sleep_for) => {}
        () = state.wake_outbox.notified() => {}
        _ = state.store.woken(Wake::Outbox) => {}
    }
}

async fn deliver(state: &AppState, client: &reqwest::Client, item: OutboxItem) {
    let outcome = post(client, &item).await;
    let attempts = item.attempts + 1;
    let delivery = match outcome {
        Ok(()) => {
            state.metrics.finish_callbacks_delivered.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::debug!(trace_id = %item.trace_id, attempts, "finish callback delivered");
            Delivery::Delivered
        }
        Err(error) => {
            state.metrics.finish_callbacks_failed.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            if attempts >= state.config.finish_callback_attempts {
                tracing::warn!(trace_id = %item.trace_id, attempts, "finish callback failed for good: {error}");
                Delivery::GaveUp { error }
            } else {
                let delay = backoff(state.config.finish_callback_backoff, item.attempts);
                tracing::info!(trace_id = %item.trace_id, attempts, "finish callback failed, retrying in {delay:?}: {error}");
                Delivery::Retry { after: delay, error }
            }
        }
    };
    let retry = matches!(delivery, Delivery::Retry { .. });
    if let Err(e) = state.store.finish_delivery(item.id, delivery, now_ms()).await {
        tracing::error!(trace_id = %item.trace_id, "cannot record a finish-callback delivery: {e}");
    }
    if retry {
        // The loop may be asleep until this item's lease ran out: tell it about the earlier retry.
        state.wake_outbox.notify_one();
    }
}

/// One attempt: a 2xx reply that is JSON and does not say `"result": false` (as in the Python
/// framework, a reply that is not JSON fails the attempt).
async fn post(client: &reqwest::Client, item: &OutboxItem) -> Result<(), String> {
    let response = client
        .post(&item.callback.url)
        .header(reqwest::header::CONTENT_TYPE, "application/json")
        .body(item.callback.body.clone())
        .send()
        .await
        // The URL may carry the caller's tokens: keep it out of the error.
        .map_err(|e| e.without_url().to_string())?;
    let status = response.status();
    let body = response.bytes().await.map_err(|e| e.without_url().to_string())?;
    if !status.is_success() {
        return Err(format!("HTTP {status}"));
    }
    match serde_json::from_slice::<Value>(&body) {
        Err(_) => Err(format!("HTTP {status} with a reply that is not JSON")),
        Ok(Value::Object(reply)) if reply.get("result") == Some(&Value::Bool(false)) => {
            let message = reply.get("message").and_then(Value::as_str).unwrap_or("");
            Err(format!("the caller replied result false: {message}"))
        }
        Ok(_) => Ok(()),
    }
}

/// `base * 2^attempts`, at most five minutes, with jitter between half and all of it.
fn backoff(base: Duration, attempts: u32) -> Duration {
    let exponential = base.saturating_mul(2u32.saturating_pow(attempts.min(16))).min(MAX_BACKOFF);
    exponential.mul_f64(rand::random_range(0.5..=1.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_and_a_cap() {
        for attempts in 0..20 {
            let delay = backoff(Duration::from_secs(1), attempts);
            let ceiling = Duration::from_secs(1 << attempts.min(16)).min(MAX_BACKOFF);
            assert!(delay <= ceiling && delay >= ceiling / 2, "{attempts}: {delay:?}");
        }
    }
}
