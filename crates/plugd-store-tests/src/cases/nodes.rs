//! Nodes that differ: claims of served versions only, heartbeats and the cluster view, and any byte
//! a caller or plugin can send.

use std::sync::Arc;
use std::time::Duration;

use plugd_core::cluster::{NodeInfo, Served};
use plugd_core::store::{CallbackReceipt, Store};
use plugd_core::Trigger;
use plugd_sdk::{Callback, State};
use serde_json::json;

use super::{claim_one, completion, new, now, LEASE, PATIENCE};
use crate::records::{invocation, served};

fn node(id: &str, served: &[(&str, &str)]) -> NodeInfo {
    NodeInfo {
        node_id: id.into(),
        plugd_version: "9.9.9".into(),
        schema_version: 42,
        served: Served::new(served.iter().copied()),
    }
}

/// A claim takes only invocations of the pairs it serves; the others stay due, untouched, for a node
/// that serves them, and the next due time a node sleeps to is that of its own pairs.
pub async fn claims_take_only_served_versions(store: Arc<dyn Store>) {
    let ours = invocation(State::Poll);
    let mut newer = invocation(State::Poll);
    newer.version = "1.1.0".into();
    let mut other = invocation(State::Poll);
    other.plugin = "waiter".into();
    for inv in [&newer, &other] {
        store.insert(new(inv, Some(Duration::ZERO))).await.unwrap();
    }
    let nothing = Served::default();
    assert!(store.claim(now(), 10, "a", LEASE, &nothing).await.unwrap().is_empty());
    assert_eq!(store.next_due(now(), &nothing).await.unwrap(), None);
    assert!(store.claim(now(), 10, "a", LEASE, &served()).await.unwrap().is_empty(), "only 1.0.0 is served");
    assert_eq!(store.next_due(now(), &served()).await.unwrap(), None, "nothing of 1.0.0 is pending");

    store.insert(new(&ours, Some(Duration::ZERO))).await.unwrap();
    let claim = claim_one(&*store, "a", LEASE).await;
    assert_eq!(claim.stored.invocation.trace_id, ours.trace_id);
    for inv in [&newer, &other] {
        let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
        assert_eq!((stored.attempt, stored.invocation.state), (0, State::Poll), "left for a node that serves it");
    }

    // A node that serves the newer version (appearing later) finds it due at once.
    let newer_node = Served::new([("countdown", "1.1.0"), ("waiter", "1.0.0")]);
    assert_eq!(store.next_due(now(), &newer_node).await.unwrap(), Some(Duration::ZERO));
    let taken = store.claim(now(), 10, "b", LEASE, &newer_node).await.unwrap();
    let mut ids: Vec<&str> = taken.iter().map(|c| c.stored.invocation.trace_id.as_str()).collect();
    ids.sort_unstable();
    let mut expected = [newer.trace_id.as_str(), other.trace_id.as_str()];
    expected.sort_unstable();
    assert_eq!(ids, expected);
}

/// Heartbeats make nodes visible with what they serve; a clean stop makes a node dead at once; due
/// invocations that no live node serves are counted by (plugin, version), oldest first.
pub async fn nodes_heartbeat_and_unserved_work_shows(store: Arc<dyn Store>) {
    let a = node("node-a", &[("countdown", "1.0.0")]);
    let b = node("node-b", &[("countdown", "1.0.0"), ("countdown", "1.1.0")]);
    store.heartbeat(&a, now()).await.unwrap();
    store.heartbeat(&b, now()).await.unwrap();
    store.heartbeat(&b, now()).await.unwrap();
    let mut newer = invocation(State::Poll);
    newer.version = "1.1.0".into();
    store.insert(new(&newer, Some(Duration::ZERO))).await.unwrap();
    store.insert(new(&invocation(State::Poll), Some(Duration::ZERO))).await.unwrap();

    let give_up = std::time::Instant::now() + PATIENCE;
    let view = loop {
        let view = store.cluster(now()).await.unwrap();
        if view.due.iter().map(|g| g.count).sum::<u64>() == 2 {
            break view;
        }
        assert!(std::time::Instant::now() < give_up, "both invocations come due: {view:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let live: Vec<&str> = view.live().map(|n| n.info.node_id.as_str()).collect();
    assert_eq!(live.len(), 2, "{view:?}");
    let seen_b = view.nodes.iter().find(|n| n.info.node_id == "node-b").expect("node b has a row");
    assert_eq!(seen_b.info, b, "what the node said of itself, as it said it");
    assert!(seen_b.started_at <= seen_b.last_seen && seen_b.stopped_at.is_none());
    assert_eq!(view.unserved_count(), 0, "{view:?}");

    store.leave("node-b", now()).await.unwrap();
    let view = store.cluster(now()).await.unwrap();
    assert_eq!(view.live().map(|n| n.info.node_id.as_str()).collect::<Vec<_>>(), ["node-a"]);
    let unserved = view.unserved();
    assert_eq!(unserved.len(), 1, "{view:?}");
    assert_eq!((unserved[0].plugin.as_str(), unserved[0].version.as_str()), ("countdown", "1.1.0"));
    assert_eq!(unserved[0].count, 1);
    assert!(unserved[0].oldest_due_at <= view.now);
    // Beating again (a node that came back) makes it live again.
    store.heartbeat(&b, now()).await.unwrap();
    assert_eq!(store.cluster(now()).await.unwrap().unserved_count(), 0);
}

/// A NUL (`\u0000`) anywhere a caller or a plugin can put text is stored and read back as sent:
/// inputs, context, storage, outputs, errors, logs, callback bodies and the app that invoked.
pub async fn nul_bytes_are_stored_as_sent(store: Arc<dyn Store>) {
    let nul = "a\u{0}b";
    let mut inv = invocation(State::Callback);
    inv.inputs = json!({"name": nul});
    inv.context = json!({"note": nul});
    inv.storage.insert("s".into(), json!(nul));
    let mut first = new(&inv, None);
    first.logs = format!("{nul}\n");
    first.created_by = Some(nul.into());
    store.insert(first).await.unwrap();
    let stored = store.get(&inv.trace_id).await.unwrap().expect("the invocation is kept");
    assert_eq!(stored.invocation, inv);
    assert_eq!(stored.created_by.as_deref(), Some(nul));

    let callback = Callback { id: "n".repeat(32), data: json!({"approve": nul}) };
    assert_eq!(store.add_callback(&inv.trace_id, callback.clone(), now()).await.unwrap(), CallbackReceipt::Accepted);
    assert_eq!(
        store.add_callback(&inv.trace_id, callback.clone(), now()).await.unwrap(),
        CallbackReceipt::AlreadyReceived,
        "the same body with a NUL is the same post"
    );
    let claim = claim_one(&*store, "a", LEASE).await;
    assert_eq!(claim.trigger, Trigger::Callback(callback.clone()));
    let mut step = crate::records::step(State::Fail, 2, None);
    step.err = Some(format!("rejected: {nul}"));
    step.outputs.insert("o".into(), json!(nul));
    let mut done = completion(&inv.trace_id, claim.stored.attempt, step);
    done.consumed_callback = Some(callback.id.clone());
    done.logs = format!("later {nul}\n");
    assert!(store.complete(done).await.unwrap(), "a NUL in an error is written, not refused");
    let stored = store.get(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!(stored.invocation.state, State::Fail);
    assert_eq!(stored.invocation.err.as_deref(), Some("rejected: a\u{0}b"));
    assert_eq!(stored.invocation.outputs.get("o"), Some(&json!(nul)));
    assert_eq!(store.logs(&inv.trace_id).await.unwrap().as_deref(), Some("a\u{0}b\nlater a\u{0}b\n"));
    let executes = store.executes(&inv.trace_id).await.unwrap().unwrap();
    assert_eq!(executes.last().and_then(|e| e.err.as_deref()), Some("rejected: a\u{0}b"));
    let history = store
        .history(plugd_core::store::HistoryQuery {
            viewer: plugd_core::store::Viewer::App(Some(nul.into())),
            limit: 10,
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(history.items.first().and_then(|i| i.err.as_deref()), Some("rejected: a\u{0}b"));
}
