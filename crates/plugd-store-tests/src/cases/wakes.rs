//! Giving a claim back, and the wake-ups that tell other processes sharing the database of work
//! that came due.

use std::sync::Arc;
use std::time::Duration;

use plugd_core::store::{FinishCallback, Store, Wake};
use plugd_core::Trigger;
use plugd_sdk::{Callback, State};
use serde_json::json;

use super::{claim_one, completion, new, now, LEASE, PATIENCE};
use crate::records::{invocation, served, step};

/// A released claim is due again at once, under a new attempt that fences out the released one;
/// a release by a claimer that no longer holds the claim changes nothing.
pub async fn a_released_claim_is_due_again_at_once_and_fenced(store: Arc<dyn Store>) {
    let inv = invocation(State::Poll);
    store.insert(new(&inv, Some(Duration::ZERO))).await.unwrap();
    let claim = claim_one(&*store, "a", LEASE).await;
    assert_eq!(claim.stored.attempt, 1);
    store.release(&inv.trace_id, 1, now()).await.unwrap();
    let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!(stored.lease_owner, None, "released");
    assert!(stored.next_run_at.is_some_and(|at| at <= now() + 1_000), "due again at once: {stored:?}");
    assert!(store.next_due(now(), &served()).await.unwrap().is_some_and(|d| d <= Duration::from_secs(1)));

    let again = claim_one(&*store, "b", LEASE).await;
    assert_eq!((again.stored.attempt, &again.trigger), (2, &Trigger::Poll));
    // The first claimer's late release and completion are both refused: attempt 1 is gone.
    store.release(&inv.trace_id, 1, now()).await.unwrap();
    assert_eq!(store.get(&inv.trace_id).await.unwrap().unwrap().lease_owner.as_deref(), Some("b"));
    assert!(!store.complete(completion(&inv.trace_id, 1, step(State::Success, 2, None))).await.unwrap());
    assert!(store.complete(completion(&inv.trace_id, 2, step(State::Success, 2, None))).await.unwrap());
    store.release(&inv.trace_id, 2, now()).await.unwrap();
    let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!((stored.invocation.state, stored.next_run_at), (State::Success, None), "a finished one stays so");
}

/// Whether `what` wakes `neighbour` within [`PATIENCE`] after `act`.
async fn wakes<F: std::future::Future<Output = ()>>(neighbour: &dyn Store, what: Wake, act: F) -> bool {
    wakes_within(PATIENCE, neighbour, what, act).await
}

async fn wakes_within<F: std::future::Future<Output = ()>>(
    patience: Duration,
    neighbour: &dyn Store,
    what: Wake,
    act: F,
) -> bool {
    // A wake-up left over from before (they may come spuriously) must not count for this one.
    let _ = tokio::time::timeout(Duration::from_millis(20), neighbour.woken(what)).await;
    let woken = neighbour.woken(what);
    // Listening before acting: give the wait a moment to be registered.
    let (woke, ()) = tokio::join!(tokio::time::timeout(patience, woken), async {
        tokio::time::sleep(Duration::from_millis(100)).await;
        act.await;
    });
    woke.is_ok()
}

/// With a `neighbour` (a second store on the same database, as another node opens it), every write
/// that makes work due wakes the neighbour's background loops: a new poll, a callback for a waiting
/// invocation, a release, a completion or a cancel that enqueues a finish callback. Without one (a
/// store one process owns), nothing wakes anyone through the store, and `max_idle` is long.
pub async fn wake_ups_reach_the_other_processes(store: Arc<dyn Store>, neighbour: Option<Arc<dyn Store>>) {
    let Some(neighbour) = neighbour else {
        let inv = invocation(State::Poll);
        assert!(!wakes(&*store, Wake::Invocations, async { store.insert(new(&inv, None)).await.unwrap() }).await);
        assert!(store.max_idle() >= Duration::from_secs(10), "{:?}", store.max_idle());
        return;
    };
    assert!(neighbour.max_idle() <= Duration::from_secs(10), "a lost wake-up costs little: {:?}", neighbour.max_idle());

    // The neighbour listens from a connection of its own, opened in the background: until it
    // listens, a wake-up is lost (and found by its polling), so the first one may need repeating.
    let give_up = std::time::Instant::now() + 3 * PATIENCE;
    let warm_up = invocation(State::Success);
    let release = || async { store.release(&warm_up.trace_id, 0, now()).await.unwrap() };
    while !wakes_within(Duration::from_millis(500), &*neighbour, Wake::Invocations, release()).await {
        assert!(std::time::Instant::now() < give_up, "the neighbour never heard a wake-up");
    }

    let poll = invocation(State::Poll);
    assert!(
        wakes(&*neighbour, Wake::Invocations, async { store.insert(new(&poll, Some(Duration::ZERO))).await.unwrap() })
            .await,
        "a new poll"
    );
    let claim = claim_one(&*store, "a", LEASE).await;
    let release = store.release(&poll.trace_id, claim.stored.attempt, now());
    assert!(wakes(&*neighbour, Wake::Invocations, async { release.await.unwrap() }).await, "a release");
    let claim = claim_one(&*store, "a", LEASE).await;
    assert!(store
        .complete(completion(&poll.trace_id, claim.stored.attempt, step(State::Success, 2, None)))
        .await
        .unwrap());

    let waiting = invocation(State::Callback);
    store.insert(new(&waiting, None)).await.unwrap();
    let callback = Callback { id: "c1".into(), data: json!({"approved": true}) };
    let post = store.add_callback(&waiting.trace_id, callback, now());
    assert!(wakes(&*neighbour, Wake::Invocations, async { post.await.map(drop).unwrap() }).await, "a callback");

    let claim = claim_one(&*store, "a", LEASE).await;
    let mut done = completion(&claim.stored.invocation.trace_id, claim.stored.attempt, step(State::Success, 2, None));
    done.finish_callback = Some(FinishCallback { url: "http://127.0.0.1:9/done".into(), body: "{}".into() });
    let complete = store.complete(done);
    assert!(wakes(&*neighbour, Wake::Outbox, async { assert!(complete.await.unwrap()) }).await, "a completion");

    let pending = invocation(State::Poll);
    store.insert(new(&pending, Some(Duration::from_secs(3600)))).await.unwrap();
    let finish = FinishCallback { url: "http://127.0.0.1:9/cancelled".into(), body: "{}".into() };
    let cancel = store.cancel(&pending.trace_id, "cancelled", now(), Some(finish));
    assert!(wakes(&*neighbour, Wake::Outbox, async { cancel.await.map(drop).unwrap() }).await, "a cancel");
}
