//! The cases. Each takes a fresh, empty store.

mod nodes;
mod wakes;

pub use nodes::*;
pub use wakes::*;

use std::collections::HashSet;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use plugd_core::schedule::Limits;
use plugd_core::store::{
    CallbackReceipt, CancelOutcome, Claim, Completion, Delivery, FinishCallback, HistoryPage, Millis, NewInvocation,
    Store, StoreErrorKind, Viewer,
};
use plugd_core::{Invocation, Step, Trigger};
use plugd_sdk::{Callback, State};
use serde_json::json;

use crate::records::{completion_at, invocation, new_at, served, step};

const LEASE: Duration = Duration::from_secs(30);
/// How long a case waits for something that should be due at once.
const PATIENCE: Duration = Duration::from_secs(5);

fn now() -> Millis {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as Millis).unwrap_or(0)
}

fn new(inv: &Invocation, poll_after: Option<Duration>) -> NewInvocation {
    new_at(inv, now(), poll_after)
}

fn completion(trace_id: &str, attempt: i64, step: Step) -> Completion {
    completion_at(trace_id, attempt, step, now())
}

/// Claims until something comes (within [`PATIENCE`]).
async fn claim_one(store: &dyn Store, owner: &str, lease: Duration) -> Claim {
    let give_up = std::time::Instant::now() + PATIENCE;
    loop {
        let mut claims = store.claim(now(), 10, owner, lease, &served()).await.unwrap();
        if let Some(claim) = claims.pop() {
            assert!(claims.is_empty(), "one invocation, one claim: {claims:?}");
            return claim;
        }
        assert!(std::time::Instant::now() < give_up, "nothing came due within {PATIENCE:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Inserts, reads back, refuses a second insert of the same trace id.
pub async fn insert_get_and_conflict(store: Arc<dyn Store>) {
    let inv = invocation(State::Success);
    let before = now();
    store.insert(new(&inv, None)).await.unwrap();
    let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!(stored.invocation, inv);
    assert!(stored.created_at >= before - 1_000 && stored.finish_at == Some(stored.created_at), "{stored:?}");
    assert_eq!((stored.next_run_at, stored.attempt), (None, 0));
    assert_eq!(stored.created_by.as_deref(), Some("bk_sops"));
    assert_eq!(store.logs(&inv.trace_id).await.unwrap().as_deref(), Some("first\n"));
    assert_eq!(
        store.reports(&inv.trace_id).await.unwrap(),
        Some(vec![json!({"description": "first", "html": "1-1/index.html"})])
    );
    assert_eq!(
        store.report_file(&inv.trace_id, "1-1/index.html").await.unwrap().as_deref(),
        Some(&b"<h1>first</h1>"[..])
    );
    assert_eq!(store.report_file(&inv.trace_id, "1-1/other.html").await.unwrap(), None);
    let executes = store.executes(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!((executes.len(), executes[0].trigger.as_str(), executes[0].state), (1, "start", State::Success));
    assert_eq!(store.insert(new(&inv, None)).await.unwrap_err().kind, StoreErrorKind::Conflict);
    assert_eq!(store.get(&"0".repeat(32)).await.unwrap(), None);
    assert_eq!(store.logs("nope").await.unwrap(), None);
    assert_eq!(store.reports("nope").await.unwrap(), None);
    let info = store.info().await.unwrap();
    assert!(info.schema_version >= 1, "{info:?}");
}

/// A poll is claimed when due, leased, taken over once its lease expires, and the first claimer's
/// late completion and renewals are refused.
pub async fn polls_are_claimed_when_due_leased_and_fenced(store: Arc<dyn Store>) {
    let inv = invocation(State::Poll);
    store.insert(new(&inv, Some(Duration::from_millis(300)))).await.unwrap();
    let due_in = store.next_due(now(), &served()).await.unwrap().expect("a pending poll is due some time");
    assert!(due_in <= Duration::from_millis(300), "{due_in:?}");
    assert!(store.claim(now(), 10, "a", LEASE, &served()).await.unwrap().is_empty(), "not due yet");
    let short = Duration::from_millis(400);
    let claim = claim_one(&*store, "a", short).await;
    assert_eq!((claim.stored.attempt, &claim.trigger), (1, &Trigger::Poll));
    assert!(claim.claimed_at >= claim.due_at, "{claim:?}");
    assert_eq!(claim.stored.lease_owner.as_deref(), Some("a"));
    assert!(store.claim(now(), 10, "b", LEASE, &served()).await.unwrap().is_empty(), "leased");
    assert!(store.renew(&inv.trace_id, 1, now(), short).await.unwrap());

    // The lease expires: another claimer takes over, and the first one's completion is refused.
    let taken = claim_one(&*store, "b", LEASE).await;
    assert_eq!((taken.stored.attempt, taken.stored.lease_owner.as_deref()), (2, Some("b")));
    assert!(!store.complete(completion(&inv.trace_id, 1, step(State::Success, 2, None))).await.unwrap());
    assert!(!store.renew(&inv.trace_id, 1, now(), LEASE).await.unwrap());
    let poll_again = step(State::Poll, 2, Some(Duration::ZERO));
    assert!(store.complete(completion(&inv.trace_id, 2, poll_again)).await.unwrap());
    let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!((stored.invocation.state, stored.invocation.invoke_count, stored.lease_owner), (State::Poll, 2, None));
    let claim = claim_one(&*store, "b", LEASE).await;
    assert_eq!(claim.stored.attempt, 3);
    assert!(store.complete(completion(&inv.trace_id, 3, step(State::Success, 3, None))).await.unwrap());
    assert!(!store.complete(completion(&inv.trace_id, 3, step(State::Fail, 4, None))).await.unwrap(), "applied once");
    let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!((stored.invocation.state, stored.next_run_at), (State::Success, None));
    assert!(stored.finish_at.is_some());
    let reports = store.reports(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!(reports.len(), 3, "the first, then one per completed execute: {reports:?}");
    assert_eq!(store.logs(&inv.trace_id).await.unwrap().unwrap(), "first\nlater\nlater\n");
    let triggers: Vec<String> =
        store.executes(&inv.trace_id).await.unwrap().unwrap().into_iter().map(|e| e.trigger).collect();
    assert_eq!(triggers, ["start", "poll", "poll"]);
    assert_eq!(store.next_due(now(), &served()).await.unwrap(), None);
}

/// A callback posted before its invocation commits is kept and delivered; a URL takes one post per
/// wait, in order; the same post again is answered "already received"; a finished invocation takes none.
pub async fn callbacks_early_once_per_wait_and_retries_answered(store: Arc<dyn Store>) {
    let inv = invocation(State::Callback);
    let early = Callback { id: "a".repeat(32), data: json!({"early": true}) };
    assert_eq!(store.add_callback(&inv.trace_id, early.clone(), now()).await.unwrap(), CallbackReceipt::Accepted);
    assert_eq!(
        store.add_callback(&inv.trace_id, early.clone(), now()).await.unwrap(),
        CallbackReceipt::AlreadyReceived
    );
    store.insert(new(&inv, None)).await.unwrap();
    assert_eq!(
        store.next_due(now(), &served()).await.unwrap(),
        Some(Duration::ZERO),
        "due as soon as its CALLBACK state commits"
    );
    let claim = claim_one(&*store, "a", LEASE).await;
    assert_eq!(claim.trigger, Trigger::Callback(early.clone()));

    // A callback that arrives during the execute waits for its completion.
    let late = Callback { id: "b".repeat(32), data: json!({"late": true}) };
    assert_eq!(store.add_callback(&inv.trace_id, late.clone(), now()).await.unwrap(), CallbackReceipt::Accepted);
    assert!(store.claim(now(), 10, "b", LEASE, &served()).await.unwrap().is_empty(), "held by the running execute");
    let mut done = completion(&inv.trace_id, claim.stored.attempt, step(State::Callback, 2, None));
    done.consumed_callback = Some(early.id.clone());
    assert!(store.complete(done).await.unwrap());
    let claim = claim_one(&*store, "a", LEASE).await;
    assert_eq!(claim.trigger, Trigger::Callback(late.clone()));
    // The invocation waits again: the same URL takes another post, delivered after the first.
    let again = Callback { id: late.id.clone(), data: json!({"again": true}) };
    assert_eq!(store.add_callback(&inv.trace_id, again.clone(), now()).await.unwrap(), CallbackReceipt::Accepted);
    assert_eq!(
        store.add_callback(&inv.trace_id, again.clone(), now()).await.unwrap(),
        CallbackReceipt::AlreadyReceived
    );
    let mut done = completion(&inv.trace_id, claim.stored.attempt, step(State::Callback, 3, None));
    done.consumed_callback = Some(late.id.clone());
    assert!(store.complete(done).await.unwrap());
    let claim = claim_one(&*store, "a", LEASE).await;
    assert_eq!(claim.trigger, Trigger::Callback(again.clone()));
    let mut done = completion(&inv.trace_id, claim.stored.attempt, step(State::Success, 4, None));
    done.consumed_callback = Some(again.id.clone());
    assert!(store.complete(done).await.unwrap());
    let after = Callback { id: "c".repeat(32), data: json!({}) };
    assert_eq!(
        store.add_callback(&inv.trace_id, after, now()).await.unwrap(),
        CallbackReceipt::Finished(State::Success)
    );
    assert_eq!(store.next_due(now(), &served()).await.unwrap(), None);
}

/// A bounded wait for a callback comes due when it runs out, and is claimed to fail it.
pub async fn a_wait_for_a_callback_comes_due_at_its_timeout(store: Arc<dyn Store>) {
    let inv = invocation(State::Callback);
    let mut first = new(&inv, None);
    first.callback_timeout = Some(Duration::from_millis(300));
    store.insert(first).await.unwrap();
    let due_in = store.next_due(now(), &served()).await.unwrap().expect("due at its timeout");
    assert!(due_in > Duration::ZERO && due_in <= Duration::from_millis(300), "{due_in:?}");
    assert!(store.claim(now(), 10, "a", LEASE, &served()).await.unwrap().is_empty());
    let claim = claim_one(&*store, "a", LEASE).await;
    assert_eq!(claim.trigger, Trigger::Poll, "claimed to fail it");
    assert_eq!(claim.stored.callback_timeout, Some(Duration::from_millis(300)));
    assert_eq!(
        Limits::default().exceeded(&claim.stored, &claim.trigger, claim.claimed_at).as_deref(),
        Some("plugin schedule failed: callback timeout after 300ms")
    );
}

/// Cancel fails a pending invocation, fences the execute that runs it, and enqueues the finish callback.
pub async fn cancel_fails_pending_invocations_and_fences_running_executes(store: Arc<dyn Store>) {
    let inv = invocation(State::Poll);
    store.insert(new(&inv, Some(Duration::ZERO))).await.unwrap();
    let claim = claim_one(&*store, "a", LEASE).await;
    let finish = FinishCallback { url: "http://127.0.0.1:9/cb".into(), body: "{}".into() };
    assert_eq!(store.cancel(&inv.trace_id, "cancelled", now(), Some(finish)).await.unwrap(), CancelOutcome::Cancelled);
    let late = completion(&inv.trace_id, claim.stored.attempt, step(State::Success, 2, None));
    assert!(!store.complete(late).await.unwrap(), "the running execute lost its claim");
    let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!((stored.invocation.state, stored.invocation.err.as_deref()), (State::Fail, Some("cancelled")));
    assert_eq!(
        store.cancel(&inv.trace_id, "again", now(), None).await.unwrap(),
        CancelOutcome::AlreadyFinished(State::Fail)
    );
    assert_eq!(store.cancel("nope", "x", now(), None).await.unwrap(), CancelOutcome::NotFound);
    assert_eq!(store.next_outbox_due(now()).await.unwrap(), Some(Duration::ZERO));
}

/// Finish callbacks are claimed (hidden while leased), retried, then given up.
pub async fn the_outbox_is_claimed_retried_then_given_up(store: Arc<dyn Store>) {
    let inv = invocation(State::Poll);
    store.insert(new(&inv, Some(Duration::ZERO))).await.unwrap();
    let claim = claim_one(&*store, "a", LEASE).await;
    let mut done = completion(&inv.trace_id, claim.stored.attempt, step(State::Success, 2, None));
    done.finish_callback = Some(FinishCallback { url: "http://127.0.0.1:9/cb".into(), body: r#"{"k":1}"#.into() });
    assert!(store.complete(done).await.unwrap());
    let mut items = store.claim_outbox(now(), 10, LEASE).await.unwrap();
    assert_eq!(items.len(), 1);
    let item = items.remove(0);
    assert_eq!((item.attempts, item.callback.body.as_str(), item.trace_id.as_str()), (0, r#"{"k":1}"#, &*inv.trace_id));
    assert!(store.claim_outbox(now(), 10, LEASE).await.unwrap().is_empty(), "leased");
    let retry = Delivery::Retry { after: Duration::from_millis(100), error: "refused".into() };
    store.finish_delivery(item.id, retry, now()).await.unwrap();
    let due_in = store.next_outbox_due(now()).await.unwrap().unwrap();
    assert!(due_in <= Duration::from_millis(100), "{due_in:?}");
    let give_up = std::time::Instant::now() + PATIENCE;
    let item = loop {
        if let Some(item) = store.claim_outbox(now(), 10, LEASE).await.unwrap().pop() {
            break item;
        }
        assert!(std::time::Instant::now() < give_up);
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    assert_eq!(item.attempts, 1);
    store.finish_delivery(item.id, Delivery::GaveUp { error: "refused".into() }, now()).await.unwrap();
    assert_eq!(store.next_outbox_due(now()).await.unwrap(), None);
    assert_eq!(store.stats(now()).await.unwrap().outbox_pending, 0);
}

/// Retention deletes finished invocations with everything they own, and nothing pending.
pub async fn retention_purges_finished_invocations_only(store: Arc<dyn Store>) {
    let done = invocation(State::Success);
    let pending = invocation(State::Poll);
    store.insert(new(&done, None)).await.unwrap();
    store.insert(new(&pending, Some(Duration::from_secs(3600)))).await.unwrap();
    assert!(store.purge_finished(now(), Duration::from_secs(3600), 100).await.unwrap().is_empty());
    tokio::time::sleep(Duration::from_millis(20)).await;
    assert_eq!(
        store.purge_finished(now(), Duration::from_millis(5), 100).await.unwrap(),
        std::slice::from_ref(&done.trace_id)
    );
    assert_eq!(store.get(&done.trace_id).await.unwrap(), None);
    assert_eq!(store.reports(&done.trace_id).await.unwrap(), None);
    assert_eq!(store.report_file(&done.trace_id, "1-1/index.html").await.unwrap(), None);
    assert_eq!(store.logs(&done.trace_id).await.unwrap(), None);
    assert_eq!(store.executes(&done.trace_id).await.unwrap(), None);
    assert!(store.get(&pending.trace_id).await.unwrap().is_some());
    assert!(store.report_file(&pending.trace_id, "1-1/index.html").await.unwrap().is_some());
    assert!(store.purge_finished(now(), Duration::ZERO, 100).await.unwrap().is_empty());
}

/// Counts by state, due and outbox; writes are probed.
pub async fn stats_and_writes(store: Arc<dyn Store>) {
    store.insert(new(&invocation(State::Success), None)).await.unwrap();
    store.insert(new(&invocation(State::Poll), Some(Duration::ZERO))).await.unwrap();
    store.insert(new(&invocation(State::Poll), Some(Duration::from_secs(3600)))).await.unwrap();
    let mut failed = invocation(State::Fail);
    failed.err = Some("no".into());
    store.insert(new(&failed, None)).await.unwrap();
    let stats = store.stats(now()).await.unwrap();
    assert_eq!((stats.by_state[2], stats.by_state[4], stats.by_state[5]), (2, 1, 1));
    assert_eq!((stats.due, stats.outbox_pending), (1, 0));
    store.check_writable().await.unwrap();
    let page = store.history(plugd_core::store::HistoryQuery { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!((page.total, page.items.len()), (4, 4));
}

/// The first secret stored stands, whoever asks later.
pub async fn the_secret_is_created_once(store: Arc<dyn Store>) {
    let asks: Vec<_> = (0..8u8)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move { store.secret(vec![n; 32]).await.unwrap() })
        })
        .collect();
    let mut secrets = HashSet::new();
    for ask in asks {
        secrets.insert(ask.await.unwrap());
    }
    assert_eq!(secrets.len(), 1, "everyone got the same secret");
    let first = secrets.into_iter().next().unwrap();
    assert_eq!(store.secret(vec![9; 32]).await.unwrap(), first);
}

/// Claimers running at once never receive the same invocation.
pub async fn concurrent_claimers_never_share_an_invocation(store: Arc<dyn Store>) {
    const N: usize = 200;
    let mut expected = HashSet::new();
    for _ in 0..N {
        let inv = invocation(State::Poll);
        expected.insert(inv.trace_id.clone());
        store.insert(new(&inv, Some(Duration::ZERO))).await.unwrap();
    }
    let claimers: Vec<_> = (0..4)
        .map(|n| {
            let store = store.clone();
            tokio::spawn(async move {
                let mut mine = Vec::new();
                let mut idle = 0;
                while idle < 3 {
                    let claims = store.claim(now(), 16, &format!("claimer-{n}"), LEASE, &served()).await.unwrap();
                    if claims.is_empty() {
                        idle += 1;
                        tokio::time::sleep(Duration::from_millis(10)).await;
                    }
                    mine.extend(claims.into_iter().map(|c| c.stored.invocation.trace_id));
                }
                mine
            })
        })
        .collect();
    let mut seen = HashSet::new();
    for claimer in claimers {
        for trace_id in claimer.await.unwrap() {
            assert!(seen.insert(trace_id.clone()), "{trace_id} was claimed twice");
        }
    }
    assert_eq!(seen, expected);
}

/// Many inserts at once all land.
pub async fn concurrent_inserts_all_land(store: Arc<dyn Store>) {
    let tasks: Vec<_> = (0..300)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let inv = invocation(State::Success);
                store.insert(new(&inv, None)).await.map(|()| inv.trace_id)
            })
        })
        .collect();
    for task in tasks {
        let trace_id = task.await.unwrap().unwrap();
        assert!(store.get(&trace_id).await.unwrap().is_some());
    }
    assert_eq!(store.stats(now()).await.unwrap().by_state[4], 300);
}

/// History (the debug panel's): filters by plugin, version, state and app, pages without overlap,
/// newest first.
pub async fn history_filters_and_pages(store: Arc<dyn Store>) {
    let mut all = HashSet::new();
    for i in 0..12 {
        let mut inv = invocation(if i % 4 == 0 { State::Fail } else { State::Success });
        if i % 3 == 0 {
            inv.version = "2.0.0".into();
        }
        store.insert(new(&inv, None)).await.unwrap();
        all.insert(inv.trace_id);
    }
    let mut other = Invocation::new("hello", "1.0.0", json!({}), json!({}));
    other.state = State::Success;
    other.invoke_count = 1;
    // Later than the others by the store's clock and by the `now` a store of one process is given.
    tokio::time::sleep(Duration::from_millis(5)).await;
    let mut other_new = new(&other, None);
    other_new.created_by = Some("ci".into());
    store.insert(other_new).await.unwrap();

    let query = |f: fn(&mut plugd_core::store::HistoryQuery)| {
        let mut q = plugd_core::store::HistoryQuery { limit: 100, ..Default::default() };
        f(&mut q);
        q
    };
    let everything = store.history(query(|_| {})).await.unwrap();
    assert_eq!((everything.total, everything.items.len()), (13, 13));
    assert_eq!(everything.items[0].trace_id, other.trace_id, "newest first");
    assert!(everything.items.windows(2).all(|w| w[0].created_at >= w[1].created_at));
    let mut seen = HashSet::new();
    for offset in [0, 5, 10] {
        let page = store
            .history(plugd_core::store::HistoryQuery {
                plugin: Some("countdown".into()),
                offset,
                limit: 5,
                ..Default::default()
            })
            .await
            .unwrap();
        assert_eq!(page.total, 12);
        for item in page.items {
            assert!(seen.insert(item.trace_id), "pages do not overlap");
        }
    }
    assert_eq!(seen, all);
    let failed = store.history(query(|q| q.state = Some(State::Fail))).await.unwrap();
    assert_eq!(failed.total, 3);
    assert!(failed.items.iter().all(|i| i.state == State::Fail && i.plugin == "countdown"));
    let v2 = store.history(query(|q| q.version = Some("2.0.0".into()))).await.unwrap();
    assert_eq!(v2.total, 4);
    let v2_failed = store
        .history(query(|q| {
            q.version = Some("2.0.0".into());
            q.state = Some(State::Fail);
        }))
        .await
        .unwrap();
    assert_eq!(v2_failed.total, 1, "only invocation 0 is both");
    let ci = store.history(query(|q| q.viewer = Viewer::App(Some("ci".into())))).await.unwrap();
    assert_eq!(ci.total, 1, "an app sees its own (and none of bk_sops's)");
    // An invocation that no app created is an admin's (Everyone) alone, and a caller naming no app sees none.
    let mut unowned = new(&invocation(State::Success), None);
    unowned.created_by = None;
    store.insert(unowned).await.unwrap();
    let ci = store.history(query(|q| q.viewer = Viewer::App(Some("ci".into())))).await.unwrap();
    assert_eq!(ci.total, 1, "not another app's, nor no app's");
    assert_eq!(store.history(query(|q| q.viewer = Viewer::App(None))).await.unwrap(), HistoryPage::default());
    assert_eq!(store.history(query(|_| {})).await.unwrap().total, 14, "an admin sees them all");
}
