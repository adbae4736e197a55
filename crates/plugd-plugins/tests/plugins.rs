//! The built-in plugins: registry invariants, and each plugin driven through the executor.

use std::sync::Arc;

use plugd_core::{Executor, Invocation, Registry, SignedCallbacks, Trigger};
use plugd_sdk::{Callback, State};
use serde_json::{json, Value};

fn registry() -> Arc<Registry> {
    let builder = plugd_plugins::all().into_iter().fold(Registry::builder(), |b, p| b.dyn_plugin(p));
    Arc::new(builder.build().expect("the built-in plugins form a valid registry"))
}

fn executor() -> Executor {
    Executor::new(registry(), Arc::new(SignedCallbacks::new(b"secret", "http://127.0.0.1:1")))
}

/// As ripgrep checks every flag, check every plugin: described, and every field described.
#[test]
fn every_plugin_and_every_field_is_described() {
    for plugin in registry().iter() {
        assert!(!plugin.info.description.is_empty(), "{} has no description", plugin.id());
        for (which, schema) in [("inputs", &plugin.schemas.inputs), ("outputs", &plugin.schemas.outputs)] {
            for (name, field) in schema["properties"].as_object().unwrap() {
                assert!(field.get("description").is_some(), "{} {which}.{name} has no description", plugin.id());
            }
        }
    }
}

async fn run(plugin: &str, version: &str, inputs: Value) -> Invocation {
    let executor = executor();
    let mut invocation = Invocation::new(plugin, version, inputs, json!({}));
    let mut trigger = Trigger::Start;
    while invocation.state != State::Callback && !invocation.state.is_final() {
        let step = executor.step(&invocation, trigger).await.unwrap();
        invocation.apply(step);
        trigger = Trigger::Poll;
    }
    invocation
}

#[tokio::test]
async fn hello_versions() {
    let v1 = run("hello", "1.0.0", json!({"name": "world"})).await;
    assert_eq!(Value::Object(v1.outputs), json!({"message": "hello, world"}));
    let v2 = run("hello", "2.0.0", json!({"name": "you", "greeting": "hi", "times": 2})).await;
    assert_eq!(Value::Object(v2.outputs), json!({"messages": ["hi, you", "hi, you"]}));
}

#[tokio::test]
async fn countdown_counts_polls() {
    let done = run("countdown", "1.0.0", json!({"from": 2, "interval_ms": 0})).await;
    assert_eq!((done.state, done.invoke_count), (State::Success, 3));
    assert_eq!(Value::Object(done.outputs), json!({"polls": 2}));
    let negative = run("countdown", "1.0.0", json!({"from": -1})).await;
    // The schema says `integer`, as pydantic's would (no `minimum: 0` for a u32): the type refuses it.
    assert_eq!(
        negative.err.as_deref(),
        Some("inputs validation error: /from: invalid value: integer `-1`, expected u32")
    );
}

async fn approval_callback(data: Value, known_id: bool) -> Invocation {
    let executor = executor();
    let mut invocation = run("approval", "1.0.0", json!({"subject": "release"})).await;
    assert_eq!(invocation.state, State::Callback);
    assert!(invocation.outputs["callback_url"].as_str().unwrap().starts_with("http://127.0.0.1:1/bk_plugin/callback/"));
    let id = if known_id { invocation.storage["callback_id"].as_str().unwrap().to_owned() } else { "f".repeat(32) };
    let step = executor.step(&invocation, Trigger::Callback(Callback { id, data })).await.unwrap();
    invocation.apply(step);
    invocation
}

#[tokio::test]
async fn approval_decides_on_the_callback_it_handed_out() {
    let approved = approval_callback(json!({"approved": true, "by": "bob"}), true).await;
    assert_eq!(approved.state, State::Success);
    assert_eq!(
        (approved.outputs["approved"].clone(), approved.outputs["approved_by"].clone()),
        (json!(true), json!("bob"))
    );

    let rejected = approval_callback(json!({"approved": false, "reason": "no"}), true).await;
    assert_eq!(rejected.err.as_deref(), Some("plugin schedule failed: not approved: no"));
    let silent = approval_callback(json!({}), true).await;
    assert_eq!(silent.err.as_deref(), Some("plugin schedule failed: not approved: no reason given"));
    let garbled = approval_callback(json!({"approved": "yes"}), true).await;
    assert_eq!(garbled.state, State::Fail);
    assert!(garbled.err.unwrap().starts_with("plugin schedule failed: invalid decision: invalid type: string \"yes\""));

    let stranger = approval_callback(json!({"approved": true}), false).await;
    assert_eq!((stranger.state, stranger.invoke_count), (State::Callback, 2), "re-waits on an unknown id");
}
