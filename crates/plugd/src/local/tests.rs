//! The local runner against a plugin that posts its own callbacks, over real sockets.

use super::*;
use plugd_sdk::{Context, Empty, Meta, Outcome, Plugin, PluginError};
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// POSTs `body` to `url` over a fresh connection.
async fn post(url: &str, body: &str) -> (u16, String) {
    let rest = url.strip_prefix("http://").unwrap();
    let (host, path) = rest.split_once('/').unwrap();
    let mut stream = tokio::net::TcpStream::connect(host).await.unwrap();
    let request = format!(
        "POST /{path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\nContent-Length: {}\r\n\
         Connection: close\r\n\r\n{body}",
        body.len()
    );
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    stream.read_to_string(&mut response).await.unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    (status, response.split_once("\r\n\r\n").unwrap().1.to_owned())
}

/// Calls itself back before it even says it waits, then waits for a second callback.
struct SelfCaller;

impl Plugin for SelfCaller {
    type Inputs = Empty;
    type ContextInputs = Empty;
    type Outputs = Empty;
    const META: Meta = Meta::new("self-caller", "1.0.0");

    async fn execute(&self, _: Empty, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        match ctx.invoke_count {
            1 => {
                let first = ctx.prepare_callback()?;
                // The callback lands while this execute still runs: it must wait in the inbox.
                let (status, body) = post(&first.url, r#"{"n": 1}"#).await;
                assert_eq!(status, 200, "{body}");
                ctx.storage_set("first", &first.url)?;
                Ok(Outcome::Callback)
            }
            2 => {
                ctx.outputs.insert("first".into(), ctx.callback.as_ref().unwrap().data.clone());
                ctx.prepare_callback()?;
                Ok(Outcome::Callback)
            }
            _ => {
                ctx.outputs.insert("second".into(), ctx.callback.as_ref().unwrap().data.clone());
                Ok(Outcome::Success)
            }
        }
    }
}

struct Waits(mpsc::UnboundedSender<Vec<CallbackPreparation>>);

impl RunObserver for Waits {
    fn waiting_callback(&mut self, _: &Invocation, callbacks: &[CallbackPreparation]) {
        let _ = self.0.send(callbacks.to_vec());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn early_callbacks_are_kept_and_a_retried_post_runs_nothing() {
    let registry = Arc::new(Registry::builder().plugin(SelfCaller).build().unwrap());
    let runner = Arc::new(LocalRunner::start(registry).await.unwrap());
    let (waits_tx, mut waits) = mpsc::unbounded_channel();
    let task = {
        let runner = runner.clone();
        tokio::spawn(async move {
            let mut invocation = Invocation::new("self-caller", "1.0.0", json!({}), json!({}));
            runner.run(&mut invocation, &mut Waits(waits_tx)).await.unwrap();
            invocation
        })
    };

    // The first wait is served at once from the inbox; the second shows both URLs, which stay valid.
    assert_eq!(waits.recv().await.unwrap().len(), 1);
    let second_wait = waits.recv().await.unwrap();
    assert_eq!(second_wait.len(), 2);
    let second = second_wait.last().unwrap();
    let (status, body) = post(&second.url, r#"{"n": 2}"#).await;
    assert_eq!(status, 200, "{body}");
    let invocation = task.await.unwrap();
    assert_eq!((invocation.state, invocation.invoke_count), (State::Success, 3));
    assert_eq!(Value::Object(invocation.outputs), json!({"first": {"n": 1}, "second": {"n": 2}}));
    let first_url = invocation.storage["first"].as_str().unwrap();
    let (status, _) = post(first_url, "{}").await;
    assert_eq!(status, 400, "a post after the end is refused");
}

/// Waits for a callback at most 100 ms; a second execute would re-wait on the same URL.
struct Impatient;

impl Plugin for Impatient {
    type Inputs = Empty;
    type ContextInputs = Empty;
    type Outputs = Empty;
    const META: Meta = Meta::new("impatient", "1.0.0");

    async fn execute(&self, _: Empty, ctx: &mut Context<Empty>) -> Result<Outcome, PluginError> {
        if ctx.callback.is_none() {
            ctx.prepare_callback()?;
        }
        Ok(Outcome::CallbackWithin(std::time::Duration::from_millis(100)))
    }
}

#[tokio::test]
async fn a_wait_for_a_callback_times_out_as_under_serve() {
    let registry = Arc::new(Registry::builder().plugin(Impatient).build().unwrap());
    let runner = LocalRunner::start(registry).await.unwrap();
    let mut invocation = Invocation::new("impatient", "1.0.0", json!({}), json!({}));
    runner.run(&mut invocation, &mut ()).await.unwrap();
    assert_eq!(invocation.state, State::Fail);
    assert_eq!(invocation.err.as_deref(), Some("plugin schedule failed: callback timeout after 100ms"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn one_url_takes_a_post_per_wait_and_a_retry_runs_nothing() {
    let registry = Arc::new(Registry::builder().plugin(Impatient).build().unwrap());
    let runner = Arc::new(LocalRunner::start(registry).await.unwrap());
    let (waits_tx, mut waits) = mpsc::unbounded_channel();
    let task = {
        let runner = runner.clone();
        tokio::spawn(async move {
            let mut invocation = Invocation::new("impatient", "1.0.0", json!({}), json!({}));
            runner.run(&mut invocation, &mut Waits(waits_tx)).await.unwrap();
            invocation
        })
    };
    let url = waits.recv().await.unwrap()[0].url.clone();
    let (status, body) = post(&url, r#"{"progress": 1}"#).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()["message"].clone()),
        (200, json!("callback success"))
    );
    waits.recv().await.unwrap();
    let (status, body) = post(&url, r#"{"progress": 1}"#).await;
    assert_eq!(
        (status, serde_json::from_str::<Value>(&body).unwrap()["message"].clone()),
        (200, json!("callback already received"))
    );
    let (status, _) = post(&url, r#"{"progress": 2}"#).await;
    assert_eq!(status, 200);
    waits.recv().await.unwrap();
    let invocation = task.await.unwrap();
    assert_eq!((invocation.state, invocation.invoke_count), (State::Fail, 3), "two posts, two more executes");
}
