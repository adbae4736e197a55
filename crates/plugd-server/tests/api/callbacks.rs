//! One callback URL, several posts (a job posting progress, then its result); waits that time out.

use std::time::Duration;

use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::support::TestServer;

#[tokio::test]
async fn a_callback_url_takes_a_post_each_time_its_invocation_waits() {
    let server = TestServer::start(|_| {}).await;
    let started = server.invoke("collector", "1.0.0", json!({}), json!({})).await;
    let trace_id = started["trace_id"].as_str().unwrap();
    let url = started["data"]["outputs"]["urls"][0].as_str().unwrap().to_owned();
    let reply = |(status, body): (u16, Value)| (status, body["result"].clone(), body["message"].clone());
    let progress = reply(server.post_url(&url, r#"{"progress": 50}"#).await);
    assert_eq!(progress, (200, json!(true), json!("callback success")));
    // A retry of that post, whether it is waiting, running or done, executes nothing.
    let retry = reply(server.post_url(&url, r#"{"progress": 50}"#).await);
    assert_eq!(retry, (200, json!(true), json!("callback already received")));
    // The plugin waited again without preparing a new callback: the same URL takes the result.
    let result = server.post_url(&url, r#"{"done": true}"#).await;
    assert_eq!(result.0, 200, "{result:?}");
    let done = server.wait_final("collector", trace_id).await;
    assert_eq!(done["outputs"]["got"], json!([{"progress": 50}, {"done": true}]));
    // Once it ended, posts are refused as before.
    let (status, body) = server.post_url(&url, r#"{"late": true}"#).await;
    assert_eq!(
        (status, body["message"].clone()),
        (400, json!("callback fail,schedule plugin state[4]: is not callback"))
    );
    server.stop().await;
}

/// Accepts one finish callback and returns its body.
async fn receive_one(listener: tokio::net::TcpListener) -> Value {
    let (mut stream, _) = listener.accept().await.unwrap();
    let mut request = Vec::new();
    let mut buffer = [0u8; 4096];
    loop {
        let n = stream.read(&mut buffer).await.unwrap();
        request.extend_from_slice(&buffer[..n]);
        let text = String::from_utf8_lossy(&request);
        if let Some((head, body)) = text.split_once("\r\n\r\n") {
            let length = head
                .lines()
                .find_map(|l| l.to_ascii_lowercase().strip_prefix("content-length:").map(|v| v.trim().to_owned()))
                .and_then(|v| v.parse::<usize>().ok())
                .unwrap_or(0);
            if body.len() >= length {
                let reply =
                    "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 16\r\n\r\n{\"result\": true}";
                stream.write_all(reply.as_bytes()).await.unwrap();
                return serde_json::from_str(body).unwrap();
            }
        }
        assert!(n > 0, "the finish callback ended early");
    }
}

#[tokio::test]
async fn a_wait_for_a_callback_times_out_and_calls_the_caller_back() {
    let server = TestServer::start(|_| {}).await;
    let receiver = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let finish_url = format!("http://{}/done", receiver.local_addr().unwrap());
    let received = tokio::spawn(receive_one(receiver));
    let context = json!({"plugin_callback_info": {"url": finish_url, "data": {"task": 7}}});
    let started = server.invoke("waiter", "1.0.0", json!({}), context).await;
    assert_eq!(started["data"]["state"], 3);
    let done = server.wait_final("waiter", started["trace_id"].as_str().unwrap()).await;
    assert_eq!(done["state"], 5);
    assert_eq!(done["err"], "plugin schedule failed: callback timeout after 300ms");
    let body = tokio::time::timeout(Duration::from_secs(10), received).await.unwrap().unwrap();
    assert_eq!(body, json!({"task": 7}));
    // A callback after the timeout finds the invocation ended.
    let url = started["data"]["outputs"]["callback_url"].as_str().unwrap();
    assert_eq!(server.post_url(url, "{}").await.0, 400);
    server.stop().await;

    // The server-wide default applies to plugins that set no wait of their own.
    let server = TestServer::start(|c| c.callback_timeout = Some(Duration::from_millis(200))).await;
    let started = server.invoke("approval", "1.0.0", json!({}), json!({})).await;
    let done = server.wait_final("approval", started["trace_id"].as_str().unwrap()).await;
    assert_eq!(done["err"], "plugin schedule failed: callback timeout after 200ms");
    server.stop().await;
}
