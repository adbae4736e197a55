//! The SQLite store against a real database file, on the caller's clock (times chosen by each
//! test); `conformance.rs` runs the cases every store shares, on real time.

use std::sync::Arc;
use std::time::Duration;

use plugd_core::store::{
    CallbackReceipt, CancelOutcome, Delivery, FinishCallback, HistoryQuery, NewInvocation, Store, StoreErrorKind,
};
use plugd_core::{Invocation, Trigger};
use plugd_sdk::{Callback, State};
use plugd_store_sqlite::{SqliteOptions, SqliteStore};
use plugd_store_tests::records::{completion_at as completion, invocation, new_at, served, step};
use serde_json::json;

const LEASE: Duration = Duration::from_secs(30);

fn open(dir: &tempfile::TempDir) -> SqliteStore {
    SqliteStore::open(&dir.path().join("plugd.db"), SqliteOptions::default()).unwrap()
}

/// The suite's new invocation at `now`, due again at `next_run_at`.
fn new(inv: &Invocation, now: i64, next_run_at: Option<i64>) -> NewInvocation {
    new_at(inv, now, next_run_at.map(|at| Duration::from_millis((at - now) as u64)))
}

#[tokio::test]
async fn insert_get_and_conflict() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let inv = invocation(State::Success);
    store.insert(new(&inv, 1_000, None)).await.unwrap();
    let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!(stored.invocation, inv);
    assert_eq!((stored.created_at, stored.finish_at, stored.next_run_at), (1_000, Some(1_000), None));
    assert_eq!(stored.created_by.as_deref(), Some("bk_sops"));
    assert_eq!(store.logs(&inv.trace_id).await.unwrap().as_deref(), Some("first\n"));
    assert_eq!(
        store.reports(&inv.trace_id).await.unwrap(),
        Some(vec![json!({"description": "first", "html": "1-1/index.html"})])
    );
    assert_eq!(store.insert(new(&inv, 1_000, None)).await.unwrap_err().kind, StoreErrorKind::Conflict);
    assert_eq!(store.get("0".repeat(32).as_str()).await.unwrap(), None);
    assert_eq!(store.logs("nope").await.unwrap(), None);
}

#[tokio::test]
async fn polls_are_claimed_when_due_leased_and_fenced() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let inv = invocation(State::Poll);
    store.insert(new(&inv, 1_000, Some(2_000))).await.unwrap();
    assert_eq!(store.next_due(1_000, &served()).await.unwrap(), Some(Duration::from_millis(1_000)));
    assert!(store.claim(1_999, 10, "a", LEASE, &served()).await.unwrap().is_empty(), "not due yet");
    let claims = store.claim(2_000, 10, "a", LEASE, &served()).await.unwrap();
    assert_eq!(claims.len(), 1);
    let claim = &claims[0];
    assert_eq!((claim.due_at, claim.stored.attempt, &claim.trigger), (2_000, 1, &Trigger::Poll));
    assert!(store.claim(3_000, 10, "b", LEASE, &served()).await.unwrap().is_empty(), "leased");
    assert!(store.renew(&inv.trace_id, 1, 10_000, LEASE).await.unwrap());

    // The lease expires: another claimer takes over, and the first one's completion is refused.
    let taken = store.claim(40_000, 10, "b", LEASE, &served()).await.unwrap();
    assert_eq!(taken[0].stored.attempt, 2);
    assert!(!store.complete(completion(&inv.trace_id, 1, step(State::Success, 2, None), 40_001)).await.unwrap());
    assert!(!store.renew(&inv.trace_id, 1, 60_000, LEASE).await.unwrap());
    let poll_again = step(State::Poll, 2, Some(Duration::from_millis(500)));
    assert!(store.complete(completion(&inv.trace_id, 2, poll_again, 40_002)).await.unwrap());
    let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!((stored.invocation.state, stored.invocation.invoke_count), (State::Poll, 2));
    assert_eq!((stored.next_run_at, stored.lease_owner), (Some(40_502), None));
    let claim = store.claim(41_000, 10, "b", LEASE, &served()).await.unwrap().remove(0);
    assert!(store
        .complete(completion(&inv.trace_id, claim.stored.attempt, step(State::Success, 3, None), 41_001))
        .await
        .unwrap());
    let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!((stored.invocation.state, stored.finish_at, stored.next_run_at), (State::Success, Some(41_001), None));
    let reports = store.reports(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!(reports.len(), 3, "the first, then one per completed execute: {reports:?}");
}

#[tokio::test]
async fn callbacks_are_kept_even_before_the_invocation_commits_and_delivered_once_each() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let inv = invocation(State::Callback);
    let early = Callback { id: "a".repeat(32), data: json!({"early": true}) };
    assert_eq!(store.add_callback(&inv.trace_id, early.clone(), 500).await.unwrap(), CallbackReceipt::Accepted);
    assert_eq!(store.add_callback(&inv.trace_id, early.clone(), 501).await.unwrap(), CallbackReceipt::AlreadyReceived);
    store.insert(new(&inv, 1_000, None)).await.unwrap();
    assert_eq!(
        store.next_due(1_000, &served()).await.unwrap(),
        Some(Duration::ZERO),
        "due as soon as its CALLBACK state commits"
    );
    let claim = store.claim(1_000, 10, "a", LEASE, &served()).await.unwrap().remove(0);
    assert_eq!(claim.trigger, Trigger::Callback(early.clone()));

    // A callback that arrives during the execute waits for its completion.
    let late = Callback { id: "b".repeat(32), data: json!({"late": true}) };
    assert_eq!(store.add_callback(&inv.trace_id, late.clone(), 1_100).await.unwrap(), CallbackReceipt::Accepted);
    assert!(store.claim(1_200, 10, "b", LEASE, &served()).await.unwrap().is_empty());
    let mut done = completion(&inv.trace_id, claim.stored.attempt, step(State::Callback, 2, None), 1_300);
    done.consumed_callback = Some(early.id.clone());
    assert!(store.complete(done).await.unwrap());
    let claim = store.claim(1_300, 10, "a", LEASE, &served()).await.unwrap().remove(0);
    assert_eq!(claim.trigger, Trigger::Callback(late.clone()));
    // The invocation waits again: the same URL takes another post, delivered after the first.
    let again = Callback { id: late.id.clone(), data: json!({"again": true}) };
    assert_eq!(store.add_callback(&inv.trace_id, again.clone(), 1_350).await.unwrap(), CallbackReceipt::Accepted);
    let mut done = completion(&inv.trace_id, claim.stored.attempt, step(State::Callback, 3, None), 1_400);
    done.consumed_callback = Some(late.id.clone());
    assert!(store.complete(done).await.unwrap());
    let claim = store.claim(1_400, 10, "a", LEASE, &served()).await.unwrap().remove(0);
    assert_eq!(claim.trigger, Trigger::Callback(again.clone()));
    let mut done = completion(&inv.trace_id, claim.stored.attempt, step(State::Success, 4, None), 1_450);
    done.consumed_callback = Some(again.id.clone());
    assert!(store.complete(done).await.unwrap());
    let after = Callback { id: "c".repeat(32), data: json!({}) };
    assert_eq!(
        store.add_callback(&inv.trace_id, after, 1_500).await.unwrap(),
        CallbackReceipt::Finished(State::Success)
    );
    assert_eq!(store.next_due(1_500, &served()).await.unwrap(), None);
}

#[tokio::test]
async fn cancel_fails_pending_invocations_and_fences_running_executes() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let inv = invocation(State::Poll);
    store.insert(new(&inv, 1_000, Some(1_000))).await.unwrap();
    let claim = store.claim(1_000, 10, "a", LEASE, &served()).await.unwrap().remove(0);
    let finish = FinishCallback { url: "http://127.0.0.1:9/cb".into(), body: "{}".into() };
    assert_eq!(store.cancel(&inv.trace_id, "cancelled", 1_100, Some(finish)).await.unwrap(), CancelOutcome::Cancelled);
    let late = completion(&inv.trace_id, claim.stored.attempt, step(State::Success, 2, None), 1_200);
    assert!(!store.complete(late).await.unwrap(), "the running execute lost its claim");
    let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!((stored.invocation.state, stored.invocation.err.as_deref()), (State::Fail, Some("cancelled")));
    assert_eq!(
        store.cancel(&inv.trace_id, "again", 1_300, None).await.unwrap(),
        CancelOutcome::AlreadyFinished(State::Fail)
    );
    assert_eq!(store.cancel("nope", "x", 1_300, None).await.unwrap(), CancelOutcome::NotFound);
    assert_eq!(store.next_outbox_due(1_000).await.unwrap(), Some(Duration::from_millis(100)));
}

#[tokio::test]
async fn the_outbox_retries_then_gives_up() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let inv = invocation(State::Poll);
    store.insert(new(&inv, 1_000, Some(1_000))).await.unwrap();
    let claim = store.claim(1_000, 10, "a", LEASE, &served()).await.unwrap().remove(0);
    let mut done = completion(&inv.trace_id, claim.stored.attempt, step(State::Success, 2, None), 2_000);
    done.finish_callback = Some(FinishCallback { url: "http://127.0.0.1:9/cb".into(), body: r#"{"k":1}"#.into() });
    assert!(store.complete(done).await.unwrap());
    let item = store.claim_outbox(2_000, 10, LEASE).await.unwrap().remove(0);
    assert_eq!((item.attempts, item.callback.body.as_str()), (0, r#"{"k":1}"#));
    assert!(store.claim_outbox(2_001, 10, LEASE).await.unwrap().is_empty(), "leased");
    store
        .finish_delivery(item.id, Delivery::Retry { after: Duration::from_millis(998), error: "refused".into() }, 2_002)
        .await
        .unwrap();
    let item = store.claim_outbox(3_000, 10, LEASE).await.unwrap().remove(0);
    assert_eq!(item.attempts, 1);
    store.finish_delivery(item.id, Delivery::GaveUp { error: "refused".into() }, 3_001).await.unwrap();
    assert_eq!(store.next_outbox_due(3_001).await.unwrap(), None);
    assert_eq!(store.stats(4_000).await.unwrap().outbox_pending, 0);
}

#[tokio::test]
async fn retention_purges_finished_invocations_only() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let done = invocation(State::Success);
    let pending = invocation(State::Poll);
    store.insert(new(&done, 1_000, None)).await.unwrap();
    store.insert(new(&pending, 1_000, Some(9_000))).await.unwrap();
    assert!(store.purge_finished(1_000, Duration::ZERO, 100).await.unwrap().is_empty());
    assert_eq!(store.purge_finished(1_001, Duration::ZERO, 100).await.unwrap(), std::slice::from_ref(&done.trace_id));
    assert_eq!(store.reports(&done.trace_id).await.unwrap(), None);
    assert_eq!(store.get(&done.trace_id).await.unwrap(), None);
    assert_eq!(store.logs(&done.trace_id).await.unwrap(), None);
    assert!(store.get(&pending.trace_id).await.unwrap().is_some());
    let stats = store.stats(10_000).await.unwrap();
    assert_eq!((stats.by_state[2], stats.by_state[4], stats.due), (1, 0, 1));
}

#[tokio::test]
async fn the_secret_survives_a_reopen() {
    let dir = tempfile::tempdir().unwrap();
    let first = open(&dir).secret(vec![1, 2, 3]).await.unwrap();
    assert_eq!(first, vec![1, 2, 3]);
    let again = open(&dir).secret(vec![9, 9, 9]).await.unwrap();
    assert_eq!(again, vec![1, 2, 3]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_writes_are_group_committed() {
    let dir = tempfile::tempdir().unwrap();
    let store = Arc::new(open(&dir));
    let tasks: Vec<_> = (0..2_000)
        .map(|_| {
            let store = store.clone();
            tokio::spawn(async move {
                let inv = invocation(State::Success);
                store.insert(new(&inv, 1_000, None)).await.map(|()| inv.trace_id)
            })
        })
        .collect();
    for task in tasks {
        let trace_id = task.await.unwrap().unwrap();
        assert!(store.get(&trace_id).await.unwrap().is_some());
    }
    assert_eq!(store.stats(0).await.unwrap().by_state[4], 2_000);
}

#[tokio::test]
async fn a_newer_schema_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    drop(open(&dir));
    let path = dir.path().join("plugd.db");
    rusqlite::Connection::open(&path).unwrap().pragma_update(None, "user_version", 99).unwrap();
    let err = SqliteStore::open(&path, SqliteOptions::default()).unwrap_err();
    assert!(err.message.contains("newer than this plugd"), "{err}");
}

#[tokio::test]
async fn a_wait_for_a_callback_comes_due_at_its_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let inv = invocation(State::Callback);
    let mut first = new(&inv, 1_000, None);
    first.callback_timeout = Some(Duration::from_millis(500));
    store.insert(first).await.unwrap();
    assert_eq!(store.next_due(1_000, &served()).await.unwrap(), Some(Duration::from_millis(500)));
    assert!(store.claim(1_499, 10, "a", LEASE, &served()).await.unwrap().is_empty());
    let claim = store.claim(1_500, 10, "a", LEASE, &served()).await.unwrap().remove(0);
    assert_eq!(claim.trigger, Trigger::Poll, "claimed to fail it");
    assert_eq!(
        (claim.stored.callback_deadline_at, claim.stored.callback_timeout),
        (Some(1_500), Some(Duration::from_millis(500)))
    );
    let limits = plugd_core::schedule::Limits::default();
    assert_eq!(
        limits.exceeded(&claim.stored, &claim.trigger, 1_500).as_deref(),
        Some("plugin schedule failed: callback timeout after 500ms")
    );
}

#[tokio::test]
async fn history_filters_and_pages_newest_first() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let mut ids = Vec::new();
    for i in 0..25 {
        let mut inv = invocation(if i % 5 == 0 { State::Fail } else { State::Success });
        if i % 2 == 0 {
            inv.version = "2.0.0".into();
        }
        store.insert(new(&inv, 1_000 + i, None)).await.unwrap();
        ids.push(inv.trace_id);
    }
    let all = store.history(HistoryQuery { limit: 10, ..HistoryQuery::default() }).await.unwrap();
    assert_eq!(all.total, 25);
    assert_eq!(all.items.len(), 10);
    assert_eq!(all.items[0].trace_id, ids[24], "newest first");
    let last = store.history(HistoryQuery { limit: 10, offset: 20, ..HistoryQuery::default() }).await.unwrap();
    assert_eq!(last.items.iter().map(|s| &s.trace_id).collect::<Vec<_>>(), ids[..5].iter().rev().collect::<Vec<_>>());
    let failed = store
        .history(HistoryQuery {
            state: Some(State::Fail),
            version: Some("2.0.0".into()),
            limit: 50,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(failed.total, 3, "0, 10 and 20");
    assert!(failed.items.iter().all(|s| s.state == State::Fail && s.version == "2.0.0"));
    let other_plugin =
        store.history(HistoryQuery { plugin: Some("hello".into()), limit: 50, ..Default::default() }).await.unwrap();
    assert_eq!(other_plugin.total, 0);
    let viewer = plugd_core::store::Viewer::App(Some("ci".into()));
    let other_app = store.history(HistoryQuery { viewer, limit: 50, ..Default::default() }).await.unwrap();
    assert_eq!(other_app.total, 0, "every invocation was created by bk_sops");
}

#[tokio::test]
async fn executes_make_a_timeline() {
    let dir = tempfile::tempdir().unwrap();
    let store = open(&dir);
    let inv = invocation(State::Poll);
    assert_eq!(store.executes(&inv.trace_id).await.unwrap(), None);
    store.insert(new(&inv, 1_000, Some(2_000))).await.unwrap();
    let claim = store.claim(2_000, 10, "a", LEASE, &served()).await.unwrap().remove(0);
    assert!(store
        .complete(completion(&inv.trace_id, claim.stored.attempt, step(State::Success, 2, None), 2_010))
        .await
        .unwrap());
    let timeline = store.executes(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!(timeline.len(), 2);
    assert_eq!((timeline[0].trigger.as_str(), timeline[0].invoke_count, timeline[0].state), ("start", 1, State::Poll));
    assert_eq!((timeline[0].started_at, timeline[0].duration), (997, Duration::from_millis(3)));
    assert_eq!(
        (timeline[1].trigger.as_str(), timeline[1].invoke_count, timeline[1].state),
        ("poll", 2, State::Success)
    );
    assert_eq!((timeline[1].started_at, timeline[1].duration), (2_008, Duration::from_millis(2)));
    // A lost claim records nothing.
    assert!(!store.complete(completion(&inv.trace_id, 99, step(State::Fail, 3, None), 3_000)).await.unwrap());
    assert_eq!(store.executes(&inv.trace_id).await.unwrap().unwrap().len(), 2);
}
