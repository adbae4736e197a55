//! State machine tests: each drives a test plugin through `Executor::step`.

use super::*;
use crate::SignedCallbacks;
use plugd_sdk::{Context, Empty, Meta, Plugin};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Deserialize, JsonSchema)]
struct Inputs {
    mode: String,
    #[serde(default)]
    #[allow(dead_code)]
    template_id: i64,
}

#[derive(Deserialize, JsonSchema)]
struct ContextInputs {
    executor: String,
}

#[derive(Serialize, JsonSchema)]
struct Outputs {
    count: u32,
}

/// Behaves as `inputs.mode` says.
struct Probe;

impl Plugin for Probe {
    type Inputs = Inputs;
    type ContextInputs = ContextInputs;
    type Outputs = Outputs;
    const META: Meta = Meta::new("probe", "1.0.0");

    async fn execute(&self, inputs: Inputs, ctx: &mut Context<ContextInputs>) -> Result<Outcome, PluginError> {
        let count: u32 = ctx.storage_get("count")?.unwrap_or(0) + 1;
        ctx.storage_set("count", &count)?;
        ctx.outputs.insert("executor".into(), json!(ctx.data.executor));
        match inputs.mode.as_str() {
            "success" => {
                ctx.set_outputs(&Outputs { count })?;
                Ok(Outcome::Success)
            }
            "poll-twice" if count < 3 => Ok(Outcome::Poll(Duration::from_millis(5))),
            "poll-twice" => {
                ctx.set_outputs(&Outputs { count })?;
                Ok(Outcome::Success)
            }
            "callback" => match ctx.callback.clone() {
                None => {
                    let prepared = ctx.prepare_callback()?;
                    ctx.storage_set("callback_id", &prepared.id)?;
                    Ok(Outcome::Callback)
                }
                Some(cb) => {
                    let expected: Option<String> = ctx.storage_get("callback_id")?;
                    if expected.as_deref() != Some(cb.id.as_str()) {
                        return Ok(Outcome::Callback);
                    }
                    ctx.set_outputs(&Outputs { count })?;
                    ctx.outputs.insert("data".into(), cb.data.clone());
                    Ok(Outcome::Success)
                }
            },
            "fail" => Err(PluginError::failed("boom")),
            "fail-later" if count == 1 => Ok(Outcome::Poll(Duration::ZERO)),
            "fail-later" => Err(PluginError::failed("boom")),
            "unexpected" => {
                let n: i64 = "x".parse()?;
                Ok(Outcome::Poll(Duration::from_secs(n as u64)))
            }
            "panic" => panic!("crash"),
            "bad-outputs" => {
                ctx.outputs.insert("count".into(), json!("many"));
                Ok(Outcome::Success)
            }
            _ => Err(PluginError::failed(format!("unknown mode {}", inputs.mode))),
        }
    }
}

fn executor() -> Executor {
    let registry = Arc::new(crate::Registry::builder().plugin(Probe).plugin(NoSchema).build().unwrap());
    Executor::new(registry, Arc::new(SignedCallbacks::new(b"k", "http://cb")))
}

fn invocation(inputs: Value) -> Invocation {
    Invocation::new("probe", "1.0.0", inputs, json!({"executor": "alice", "extra": 1}))
}

async fn step(executor: &Executor, inv: &mut Invocation, trigger: Trigger) -> Option<Duration> {
    let step = executor.step(inv, trigger).await.unwrap();
    let poll_after = step.poll_after;
    inv.apply(step);
    poll_after
}

#[tokio::test]
async fn success_in_one_execute() {
    let executor = executor();
    let mut inv = invocation(json!({"mode": "success", "plugin_code": "ignored"}));
    step(&executor, &mut inv, Trigger::Start).await;
    assert_eq!((inv.state, inv.invoke_count, inv.err.as_deref()), (State::Success, 1, None));
    assert_eq!(Value::Object(inv.outputs), json!({"executor": "alice", "count": 1}));
}

#[tokio::test]
async fn polls_carry_storage_and_count_invokes() {
    let executor = executor();
    let mut inv = invocation(json!({"mode": "poll-twice"}));
    assert_eq!(step(&executor, &mut inv, Trigger::Start).await, Some(Duration::from_millis(5)));
    assert_eq!((inv.state, inv.invoke_count), (State::Poll, 1));
    assert!(executor.step(&inv, Trigger::Start).await.is_err(), "start twice");
    step(&executor, &mut inv, Trigger::Poll).await;
    assert_eq!((inv.state, inv.invoke_count, inv.storage["count"].clone()), (State::Poll, 2, json!(2)));
    step(&executor, &mut inv, Trigger::Poll).await;
    assert_eq!((inv.state, inv.invoke_count), (State::Success, 3));
    assert_eq!(inv.outputs["count"], 3);
    let late = executor.step(&inv, Trigger::Poll).await.unwrap_err();
    assert!(late.to_string().ends_with("in state SUCCESS"), "{late}");
}

#[tokio::test]
async fn callbacks_resume_with_their_data_and_unknown_ids_re_wait() {
    let executor = executor();
    let mut inv = invocation(json!({"mode": "callback"}));
    step(&executor, &mut inv, Trigger::Start).await;
    assert_eq!(inv.state, State::Callback);
    assert!(executor.step(&inv, Trigger::Poll).await.is_err(), "a poll cannot run a CALLBACK invocation");
    let id = inv.storage["callback_id"].as_str().unwrap().to_owned();
    let stranger = Callback { id: "0".repeat(32), data: json!({}) };
    step(&executor, &mut inv, Trigger::Callback(stranger)).await;
    assert_eq!((inv.state, inv.invoke_count), (State::Callback, 2));
    step(&executor, &mut inv, Trigger::Callback(Callback { id, data: json!({"ok": true}) })).await;
    assert_eq!((inv.state, inv.invoke_count), (State::Success, 3));
    assert_eq!(inv.outputs["data"], json!({"ok": true}));
}

async fn run_to_end(inputs: Value, context: Value) -> Invocation {
    let executor = executor();
    let mut inv = Invocation::new("probe", "1.0.0", inputs, context);
    let mut trigger = Trigger::Start;
    while !inv.state.is_final() {
        step(&executor, &mut inv, trigger).await;
        trigger = Trigger::Poll;
    }
    inv
}

#[tokio::test]
async fn failures_carry_the_contract_prefixes() {
    let ctx = json!({"executor": "a"});
    let cases = [
        (json!({"mode": "fail"}), ctx.clone(), "plugin execute failed: boom"),
        (json!({"mode": "fail-later"}), ctx.clone(), "plugin schedule failed: boom"),
        (
            json!({"mode": "unexpected"}),
            ctx.clone(),
            "plugin execute raise unexpected error: invalid digit found in string",
        ),
        (json!({"mode": "panic"}), ctx.clone(), "plugin execute raise unexpected error: panic: crash"),
        (
            json!({"mode": "bad-outputs"}),
            ctx.clone(),
            r#"outputs validation error: /count: expected integer, got "many""#,
        ),
        (json!({"mode": 1}), ctx.clone(), "inputs validation error: /mode: expected string, got 1"),
        (
            json!({"mode": "success", "template_id": "abc"}),
            ctx.clone(),
            r#"inputs validation error: /template_id: expected integer, got "abc""#,
        ),
        (json!({"mode": "success"}), json!({}), "context validation error: /executor: required field is missing"),
    ];
    for (inputs, context, err) in cases {
        let inv = run_to_end(inputs.clone(), context).await;
        assert_eq!((inv.state, inv.err.as_deref()), (State::Fail, Some(err)), "{inputs}");
    }
}

#[tokio::test]
async fn an_unexpected_error_keeps_the_previous_storage() {
    let inv = run_to_end(json!({"mode": "unexpected"}), json!({"executor": "a"})).await;
    assert!(inv.storage.is_empty(), "{:?}", inv.storage);
    let inv = run_to_end(json!({"mode": "fail"}), json!({"executor": "a"})).await;
    assert_eq!(inv.storage["count"], 1, "an expected failure keeps what execute stored");
}

/// A plugin whose schema accepts what its type does not: the type's error still has a path.
struct NoSchema;

#[derive(Deserialize, JsonSchema)]
struct Loose {
    #[allow(dead_code)]
    #[schemars(with = "Value")]
    port: u16,
}

impl Plugin for NoSchema {
    type Inputs = Loose;
    type ContextInputs = Empty;
    type Outputs = Empty;
    const META: Meta = Meta::new("loose", "1.0.0");

    async fn execute(&self, _: Loose, _: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        Ok(Outcome::Success)
    }
}

#[tokio::test]
async fn deserialization_errors_after_schema_validation_name_the_path() {
    let executor = executor();
    let mut inv = Invocation::new("loose", "1.0.0", json!({"port": 70000}), json!({}));
    step(&executor, &mut inv, Trigger::Start).await;
    assert_eq!(
        inv.err.as_deref(),
        Some("inputs validation error: /port: invalid value: integer `70000`, expected u16")
    );
}

#[tokio::test]
async fn an_unregistered_version_fails_the_invocation() {
    let executor = executor();
    let mut inv = Invocation::new("probe", "9.9.9", json!({}), json!({}));
    step(&executor, &mut inv, Trigger::Start).await;
    assert_eq!(inv.state, State::Fail);
    assert!(inv.err.unwrap().contains(r#"plugin "probe" has no version "9.9.9""#));
}

#[tokio::test]
async fn a_converting_executor_runs_what_pydantic_v1_would_accept() {
    let (inputs, context) = (json!({"mode": "success", "template_id": "7"}), json!({"executor": 42}));
    let mut strict = Invocation::new("probe", "1.0.0", inputs.clone(), context.clone());
    step(&executor(), &mut strict, Trigger::Start).await;
    assert_eq!(strict.err.as_deref(), Some(r#"inputs validation error: /template_id: expected integer, got "7""#));

    let converting = executor().coerce_inputs(true);
    // Each execute converts, whether or not the record was converted first...
    let mut inv = Invocation::new("probe", "1.0.0", inputs.clone(), context.clone());
    step(&converting, &mut inv, Trigger::Start).await;
    assert_eq!((inv.state, inv.err.as_deref()), (State::Success, None));
    assert_eq!(
        Value::Object(inv.outputs),
        json!({"executor": "42", "count": 1}),
        "the plugin saw the converted context"
    );
    // ...and a keeper of records converts it before storing it.
    let mut inv = Invocation::new("probe", "1.0.0", inputs.clone(), context.clone());
    converting.coerce_invocation(&mut inv);
    assert_eq!((inv.inputs, inv.context), (json!({"mode": "success", "template_id": 7}), json!({"executor": "42"})));
    let mut untouched = Invocation::new("probe", "1.0.0", inputs.clone(), context.clone());
    executor().coerce_invocation(&mut untouched);
    assert_eq!((untouched.inputs, untouched.context), (inputs, context));

    // What pydantic refuses stays refused, with the same message.
    let mut refused = Invocation::new("probe", "1.0.0", json!({"mode": "success", "template_id": "abc"}), json!({}));
    step(&converting, &mut refused, Trigger::Start).await;
    assert_eq!(refused.err.as_deref(), Some(r#"inputs validation error: /template_id: expected integer, got "abc""#));
}

#[tokio::test]
async fn what_an_execute_hands_back_is_capped() {
    // The probe's executor output alone is 20 bytes of JSON, its storage 11.
    let executor = |limit| executor().max_outputs(Some(limit));
    let mut inv = invocation(json!({"mode": "success"}));
    inv.context = json!({"executor": "x".repeat(500)});
    let step = executor(400).step(&inv, Trigger::Start).await.unwrap();
    assert_eq!(step.state, State::Fail);
    assert_eq!(step.err.as_deref(), Some("plugin execute failed: outputs exceed 400 bytes (--max-outputs)"));
    assert!(step.outputs.is_empty() && step.storage.is_empty(), "the previous outputs and storage are kept");
    let step = executor(1000).step(&inv, Trigger::Start).await.unwrap();
    assert_eq!(step.state, State::Success, "{:?}", step.err);
    // An error message counts too.
    let mut inv = invocation(json!({"mode": "fail"}));
    inv.context = json!({"executor": "x".repeat(500)});
    let step = executor(520).step(&inv, Trigger::Start).await.unwrap();
    assert_eq!(step.err.as_deref(), Some("plugin execute failed: outputs exceed 520 bytes (--max-outputs)"));
}
