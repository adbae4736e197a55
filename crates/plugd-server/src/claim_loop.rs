//! The loop both background workers run (the scheduler over due invocations, the outbox over due
//! finish callbacks): claim no more than there are free slots for, start each claimed item in its
//! own slot, claim again at once while batches come back full, and otherwise sleep until the next
//! due time or a wake-up. Claiming only what can start now matters: a claim's lease runs from the
//! moment it is taken.

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use plugd_core::store::StoreError;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio_util::sync::CancellationToken;

/// How long the loop waits before claiming again after a claim failed (the store is unreachable).
const RETRY_AFTER: Duration = Duration::from_secs(1);

/// Runs until `shutdown`: `claim(limit)` claims at most `limit` due items, `start(item, slot)`
/// starts one (its slot is given back when dropped), and `idle()` completes when it is time to
/// claim again (the next due time, or a wake-up). `what` names the work in error logs.
pub(crate) async fn run<I, Claimed, Idle>(
    what: &str,
    slots: Arc<Semaphore>,
    batch: usize,
    shutdown: &CancellationToken,
    mut claim: impl FnMut(usize) -> Claimed,
    mut start: impl FnMut(I, OwnedSemaphorePermit),
    mut idle: impl FnMut() -> Idle,
) where
    Claimed: Future<Output = Result<Vec<I>, StoreError>>,
    Idle: Future<Output = ()>,
{
    loop {
        let first = tokio::select! {
            slot = slots.clone().acquire_owned() => slot.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => return,
        };
        let limit = (slots.available_permits() + 1).min(batch);
        let items = match claim(limit).await {
            Ok(items) => items,
            Err(e) => {
                tracing::error!("cannot claim {what}: {e}");
                drop(first);
                tokio::select! {
                    () = tokio::time::sleep(RETRY_AFTER) => continue,
                    () = shutdown.cancelled() => return,
                }
            }
        };
        let full = items.len() == limit;
        let mut first = Some(first);
        for item in items {
            let slot = match first.take() {
                Some(slot) => slot,
                None => slots.clone().acquire_owned().await.expect("the semaphore is never closed"),
            };
            start(item, slot);
        }
        drop(first);
        if full {
            continue;
        }
        tokio::select! {
            () = idle() => {}
            () = shutdown.cancelled() => return,
        }
    }
}
