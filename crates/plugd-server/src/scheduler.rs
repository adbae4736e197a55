//! The in-process scheduler: claims due invocations in batches, executes them on a bounded pool,
//! and completes them only while it still holds their claim.
//!
//! It sleeps until the earliest due time or until woken (a new POLL, a callback, a completion), never
//! on a fixed tick. Claims are leases: renewed while an execute runs, so two executes of one
//! invocation never overlap; after a crash they expire and the invocation runs again (execute is
//! at-least-once).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use plugd_core::store::{millis_after, Claim, Completion, Millis};
use plugd_core::{Step, Trigger};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::state::{now_ms, AppState};

/// Most invocations claimed in one store operation.
const BATCH: usize = 256;
/// The longest sleep when nothing is due: a safety net, not a tick.
const MAX_IDLE: Millis = 60_000;

type Running = Arc<Mutex<HashMap<String, i64>>>;

pub(crate) async fn run(state: AppState, shutdown: CancellationToken) {
    let owner = format!("plugd-{}-{:08x}", std::process::id(), rand::random::<u32>());
    let workers = Arc::new(Semaphore::new(state.config.workers.max(1)));
    let running: Running = Arc::default();
    let mut tasks = JoinSet::new();
    loop {
        while tasks.try_join_next().is_some() {}
        let permit = tokio::select! {
            permit = workers.clone().acquire_owned() => permit.expect("the semaphore is never closed"),
            () = shutdown.cancelled() => break,
        };
        let limit = (workers.available_permits() + 1).min(BATCH);
        let claims = match state.store.claim(now_ms(), limit, &owner, state.config.lease).await {
            Ok(claims) => claims,
            Err(e) => {
                tracing::error!("cannot claim due invocations: {e}");
                drop(permit);
                tokio::select! {
                    () = tokio::time::sleep(Duration::from_secs(1)) => continue,
                    () = shutdown.cancelled() => break,
                }
            }
        };
        let full = claims.len() == limit;
        let mut permit = Some(permit);
        for claim in claims {
            let permit = match permit.take() {
                Some(permit) => permit,
                None => workers.clone().acquire_owned().await.expect("the semaphore is never closed"),
            };
            let key = claim.stored.invocation.trace_id.clone();
            running.lock().unwrap_or_else(|p| p.into_inner()).insert(key, claim.stored.attempt);
            tasks.spawn(execute_claim(state.clone(), claim, permit, running.clone()));
        }
        drop(permit);
        if full {
            continue;
        }
        let sleep_for = match state.store.next_due().await {
            Ok(Some(at)) => (at - now_ms()).clamp(0, MAX_IDLE),
            Ok(None) => MAX_IDLE,
            Err(e) => {
                tracing::error!("cannot read the next due time: {e}");
                1_000
            }
        };
        tokio::select! {
            () = tokio::time::sleep(Duration::from_millis(sleep_for as u64)) => {}
            () = state.wake_scheduler.notified() => {}
            () = shutdown.cancelled() => break,
        }
    }
    shut_down(&state, tasks, running).await;
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

async fn execute_claim(state: AppState, claim: Claim, _permit: OwnedSemaphorePermit, running: Running) {
    let now = now_ms();
    let trace_id = claim.stored.invocation.trace_id.clone();
    let attempt = claim.stored.attempt;
    if claim.trigger == Trigger::Poll {
        state.metrics.poll_lateness.observe(Duration::from_millis((now - claim.due_at).max(0) as u64));
    }
    let consumed_callback = match &claim.trigger {
        Trigger::Callback(callback) => Some(callback.id.clone()),
        Trigger::Start | Trigger::Poll => None,
    };
    // The claim stays renewed until its result is written (copying reports can take a while).
    let renewal = tokio::spawn(renew(state.clone(), trace_id.clone(), attempt));
    let result = match state.config.limits().exceeded(&claim.stored, &claim.trigger, now) {
        Some(err) => {
            let invocation = &claim.stored.invocation;
            let step = Step::fail(invocation.invoke_count, invocation.storage.clone(), invocation.outputs.clone(), err);
            Ok((step, String::new()))
        }
        None => state.run_step(&claim.stored.invocation, claim.trigger.clone()).await,
    };
    match result {
        Ok((mut step, logs)) => {
            let finish_callback =
                if step.state.is_final() { state.finish_callback_for(&claim.stored.invocation) } else { None };
            let wake_outbox = finish_callback.is_some();
            let reports = state.keep_reports(&trace_id, step.invoke_count, std::mem::take(&mut step.reports)).await;
            let completion = Completion {
                trace_id: trace_id.clone(),
                attempt,
                step,
                now: now_ms(),
                consumed_callback,
                logs,
                finish_callback,
                reports,
            };
            match state.store.complete(completion).await {
                Ok(true) => {
                    if wake_outbox {
                        state.wake_outbox.notify_one();
                    }
                    state.wake_scheduler.notify_one();
                }
                Ok(false) => {
                    state.metrics.lost_claims.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                    tracing::warn!(%trace_id, attempt, "the claim was lost (cancelled or leased to another run); result dropped");
                }
                Err(e) => {
                    tracing::error!(%trace_id, "cannot record the execute: {e}; it runs again when its lease expires")
                }
            }
        }
        Err(e) => {
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
        let until = millis_after(now_ms(), state.config.lease);
        match state.store.renew(&trace_id, attempt, until).await {
            Ok(true) => {}
            Ok(false) => return,
            Err(e) => tracing::warn!(%trace_id, "cannot renew the claim: {e}"),
        }
    }
}
