//! The in-process scheduler: claims due invocations in batches, executes them on a bounded pool,
//! and completes them only while it still holds their claim.
//!
//! It sleeps until the earliest due time or until woken (a new POLL, a callback, a completion), never
//! on a fixed tick. Claims are leases: renewed while an execute runs, so two executes of one
//! invocation never overlap; after a crash they expire and the invocation runs again (execute is
//! at-least-once).

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugd_core::store::{Claim, Wake};
use plugd_core::Trigger;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::advance::{AdvanceError, Advanced, Record};
use crate::claim_loop;
use crate::state::{now_ms, AppState};

/// Most invocations claimed in one store operation.
const BATCH: usize = 256;

type Running = Arc<Mutex<HashMap<String, i64>>>;

pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let owner = state.node.node_id.clone();
    let workers = Arc::new(Semaphore::new(state.config.workers.max(1)));
    let running: Running = Arc::default();
    let tasks = Mutex::new(JoinSet::new());
    let claim = |limit| state.store.claim(now_ms(), limit, &owner, state.config.lease, &state.node.served);
    let start = |claim: Claim, worker| {
        let key = claim.stored.invocation.trace_id.clone();
        running.lock().unwrap_or_else(|p| p.into_inner()).insert(key, claim.stored.attempt);
        let mut tasks = tasks.lock().unwrap_or_else(|p| p.into_inner());
        while tasks.try_join_next().is_some() {}
        tasks.spawn(execute_claim(state.clone(), claim, worker, running.clone()));
    };
    claim_loop::run("due invocations", workers, BATCH, &shutdown, claim, start, || sleep(&state)).await;
    let tasks = tasks.into_inner().unwrap_or_else(|p| p.into_inner());
    shut_down(&state, tasks, running).await;
}

/// Sleeps until the next due time (at most the store's `max_idle`: a safety net, not a tick, short
/// on a shared database where another node's wake-up may be lost) or until woken.
async fn sleep(state: &AppState) {
    let max_idle = state.store.max_idle();
    let sleep_for = match state.store.next_due(now_ms(), &state.node.served).await {
        Ok(Some(due_in)) => due_in.min(max_idle),
        Ok(None) => max_idle,
        Err(e) => {
            tracing::error!("cannot read the next due time: {e}");
            Duration::from_secs(1)
        }
    };
    // Set after reading the next due time: what comes due later than this sleep is found when it ends.
    let until = plugd_core::store::millis_after(now_ms(), sleep_for).max(1);
    state.scheduler_sleeps_until.store(until, Ordering::Release);
    tokio::select! {
        () = tokio::time::sleep(sleep_for) => {}
        () = state.wake_scheduler.notified() => {}
        _ = state.store.woken(Wake::Invocations) => {}
    }
    state.scheduler_sleeps_until.store(0, Ordering::Release);
}

/// Lets running executes finish within the grace period, then gives back the claims of the rest.
async fn shut_down(state: &AppState, mut tasks: JoinSet<()>, running: Running) {
    let finished =
        tokio::time::timeout(state.config.grace_period, async { while tasks.join_next().await.is_some() {} }).await;
    if finished.is_err() {
        tasks.abort_all();
        let unfinished: Vec<(String, i64)> = running.lock().unwrap_or_else(|p| p.into_inner()).drain().collect();
        tracing::warn!("{} executes did not finish within the grace period; releasing them", unfinished.len());
        for (trace_id, attempt) in unfinished {
            if let Err(e) = state.store.release(&trace_id, attempt, now_ms()).await {
                tracing::error!(%trace_id, "cannot release: {e}; it runs again when its lease expires");
            }
        }
    }
}

async fn execute_claim(state: AppState, claim: Claim, permit: OwnedSemaphorePermit, running: Running) {
    // The store's clock decides (on a shared database, every node's clock is the database's).
    let now = claim.claimed_at;
    let trace_id = claim.stored.invocation.trace_id.clone();
    let attempt = claim.stored.attempt;
    if claim.trigger == Trigger::Poll {
        state.metrics.poll_lateness.observe(Duration::from_millis((now - claim.due_at).max(0) as u64));
    }
    // The claim stays renewed until its result is written (reading reports can take a while).
    let renewal = tokio::spawn(renew(state.clone(), trace_id.clone(), attempt));
    let limit = state.config.limits().exceeded(&claim.stored, &claim.trigger, now);
    match state
        .advance(claim.stored.invocation, claim.trigger, limit, Record::Complete { attempt, worker: Some(permit) })
        .await
    {
        Ok(Advanced::Recorded(_)) => {}
        Ok(Advanced::Lost) => {
            tracing::warn!(%trace_id, attempt, "the claim was lost (cancelled or leased to another run); result dropped");
        }
        Err(AdvanceError::Store(e)) => {
            tracing::error!(%trace_id, "cannot record the execute: {e}; it runs again when its lease expires")
        }
        Err(AdvanceError::Step(e)) => {
            tracing::error!(%trace_id, "{e}");
            let _ = state.store.release(&trace_id, attempt, now_ms()).await;
        }
    }
    renewal.abort();
    running.lock().unwrap_or_else(|p| p.into_inner()).remove(&trace_id);
}

/// Keeps the claim alive while the execute runs.
async fn renew(state: AppState, trace_id: String, attempt: i64) {
    let every = state.config.lease / 3;
    loop {
        tokio::time::sleep(every).await;
        match state.store.renew(&trace_id, attempt, now_ms(), state.config.lease).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(%trace_id, "cannot renew the claim: {e}"),
        }
    }
}
