//! The debug panel's pages and its own API (`/ui/api/...`): history from the store, filtered and
//! paged, the timeline of executes, callback URLs, and the same credentials as `invoke`.

use std::time::{Duration, Instant};

use plugd_server::AuthConfig;
use serde_json::json;

use crate::openapi::check;
use crate::support::TestServer;

#[tokio::test]
async fn pages_are_served_under_a_policy_without_inline_script() {
    let server = TestServer::start(|_| {}).await;
    for (path, media) in
        [("/", "text/html"), ("/ui/", "text/html"), ("/ui/app.js", "text/javascript"), ("/ui/style.css", "text/css")]
    {
        let response = reqwest::get(format!("{}{path}", server.base)).await.unwrap();
        assert_eq!(response.status(), 200, "{path}");
        let headers = response.headers();
        assert!(headers["content-type"].to_str().unwrap().starts_with(media), "{path}");
        let csp = headers["content-security-policy"].to_str().unwrap();
        assert!(csp.contains("script-src 'self'") && !csp.contains("unsafe"), "{csp}");
        assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
        assert_eq!(headers["x-frame-options"], "DENY", "{path}: for browsers without frame-ancestors");
    }
    let (status, body) = server.get("/ui/nope.js").await;
    assert_eq!((status, body["result"].clone()), (404, json!(false)));
    // A form.js is a script of the server's own, never evaluated from text.
    let form = reqwest::get(format!("{}/ui/api/forms/hello/2.0.0", server.base)).await.unwrap();
    assert_eq!(form.status(), 200);
    assert!(form.text().await.unwrap().contains("$.atoms[\"hello\"]"));
    assert_eq!(server.get("/ui/api/forms/hello/1.0.0").await.0, 404, "1.0.0 has no form.js");
    server.stop().await;
}

#[tokio::test]
async fn history_and_timeline_come_from_the_store() {
    let server = TestServer::start(|_| {}).await;
    let (_, document) = server.get("/openapi.json").await;
    let mut ids = Vec::new();
    // History is newest first by acceptance time in milliseconds: keep the five apart.
    let tick = || tokio::time::sleep(std::time::Duration::from_millis(3));
    for name in ["a", "b", "c"] {
        ids.push(server.invoke("hello", "1.0.0", json!({"name": name}), json!({})).await["trace_id"].clone());
        tick().await;
    }
    let bad = server.invoke("countdown", "1.0.0", json!({"from": -1, "interval_ms": 1}), json!({})).await;
    tick().await;
    let polled = server.invoke("countdown", "1.0.0", json!({"from": 2, "interval_ms": 10}), json!({})).await;
    let polled = polled["trace_id"].as_str().unwrap().to_owned();
    server.wait_final("countdown", &polled).await;

    let (status, body) = server.get("/ui/api/invocations?per_page=2").await;
    check(&document, "get", "/ui/api/invocations", status, &body);
    assert_eq!(body["data"]["total"], 5);
    assert_eq!(body["data"]["items"][0]["trace_id"], json!(polled), "newest first");
    assert_eq!(body["data"]["items"][1]["trace_id"], bad["trace_id"]);
    let (_, page3) = server.get("/ui/api/invocations?per_page=2&page=3").await;
    assert_eq!(page3["data"]["items"][0]["trace_id"], ids[0]);
    let (_, failed) = server.get("/ui/api/invocations?state=5").await;
    assert_eq!(failed["data"]["total"], 1);
    let (_, hello) = server.get("/ui/api/invocations?plugin=hello&version=1.0.0&state=4").await;
    assert_eq!(hello["data"]["total"], 3);
    for query in ["state=9", "page=0", "per_page=1000", "state=x", "state="] {
        let (status, body) = server.get(&format!("/ui/api/invocations?{query}")).await;
        assert_eq!(status, 400, "{query}");
        check(&document, "get", "/ui/api/invocations", status, &body);
    }

    let (status, body) = server.get(&format!("/ui/api/invocations/{polled}")).await;
    check(&document, "get", "/ui/api/invocations/{trace_id}", status, &body);
    let triggers: Vec<&str> =
        body["data"]["executes"].as_array().unwrap().iter().map(|e| e["trigger"].as_str().unwrap()).collect();
    assert_eq!(triggers, ["start", "poll", "poll"]);
    assert_eq!(body["data"]["executes"][2]["state_name"], "SUCCESS");
    assert!(body["data"]["executes"][1]["started_at"].as_i64() >= body["data"]["executes"][0]["started_at"].as_i64());
    let (status, body) = server.get("/ui/api/invocations/0123456789abcdef0123456789abcdef").await;
    assert_eq!(status, 404);
    check(&document, "get", "/ui/api/invocations/{trace_id}", status, &body);

    // A waiting approval shows its signed callback URL and the path that reaches this server.
    let waiting = server.invoke("approval", "1.0.0", json!({}), json!({})).await;
    let trace_id = waiting["trace_id"].as_str().unwrap();
    let (_, body) = server.get(&format!("/ui/api/invocations/{trace_id}")).await;
    let callback = &body["data"]["callbacks"][0];
    assert_eq!(callback["url"], waiting["data"]["outputs"]["callback_url"]);
    let path = callback["path"].as_str().unwrap();
    assert!(path.starts_with("/plugins/approval/bk_plugin/callback/"), "{path}");
    assert_eq!(server.post(path, r#"{"approved": true}"#).await.0, 200);
    let done = server.wait_final("approval", trace_id).await;
    assert_eq!(done["state"], 4);

    let (status, body) = server.get("/ui/api/plugins").await;
    check(&document, "get", "/ui/api/plugins", status, &body);
    assert_eq!(body["data"]["credentials_required"], false);
    server.stop().await;
}

#[tokio::test]
async fn with_credentials_each_app_sees_its_own_history() {
    let tokens = AuthConfig {
        tokens: vec![("ci".into(), "ci-token-123".into()), ("ops".into(), "ops-token-456".into())],
        ..AuthConfig::default()
    };
    let server = TestServer::start(|c| c.auth = tokens).await;
    let (_, document) = server.get("/openapi.json").await;
    assert_eq!(document["paths"]["/ui/api/invocations"]["get"]["security"], json!([{"bearer": []}, {"apigw": []}]));
    let ci = [("authorization", "Bearer ci-token-123")];
    let body = r#"{"inputs": {"name": "x"}, "context": {}}"#;
    let (_, started) = server.post_with("/plugins/hello/bk_plugin/invoke/1.0.0", body, &ci).await;
    let trace_id = started["trace_id"].as_str().unwrap();
    let get = |path: String, token: &'static str| {
        let base = server.base.clone();
        async move {
            let response = reqwest::Client::new()
                .get(format!("{base}{path}"))
                .header("authorization", format!("Bearer {token}"))
                .send()
                .await
                .unwrap();
            crate::support::decode(response).await
        }
    };
    let (status, body) = server.get("/ui/api/invocations").await;
    assert_eq!(status, 401);
    check(&document, "get", "/ui/api/invocations", status, &body);
    let (_, mine) = get("/ui/api/invocations".into(), "ci-token-123").await;
    assert_eq!(mine["data"]["total"], 1);
    let (_, theirs) = get("/ui/api/invocations".into(), "ops-token-456").await;
    assert_eq!(theirs["data"]["total"], 0, "another app's invocations are not listed");
    assert_eq!(get(format!("/ui/api/invocations/{trace_id}"), "ops-token-456").await.0, 404);
    assert_eq!(get(format!("/ui/api/invocations/{trace_id}"), "ci-token-123").await.0, 200);
    let (_, plugins) = server.get("/ui/api/plugins").await;
    assert_eq!(plugins["data"]["credentials_required"], true);
    server.stop().await;
}

#[tokio::test]
async fn a_thousand_invocations_page_quickly() {
    let server = TestServer::start(|_| {}).await;
    let body = json!({"inputs": {"name": "x"}, "context": {}}).to_string();
    let client = reqwest::Client::new();
    let url = format!("{}/plugins/hello/bk_plugin/invoke/1.0.0", server.base);
    for _ in 0..20 {
        let batch: Vec<_> = (0..50)
            .map(|_| {
                let request = client.post(&url).header("content-type", "application/json").body(body.clone());
                tokio::spawn(async move { request.send().await.unwrap().status() })
            })
            .collect();
        for task in batch {
            assert_eq!(task.await.unwrap(), 200);
        }
    }
    let started = Instant::now();
    let (_, last) = server.get("/ui/api/invocations?page=20&per_page=50&plugin=hello&state=4").await;
    let first = server.get("/ui/api/invocations?per_page=50").await.1;
    let took = started.elapsed();
    assert_eq!(last["data"]["total"], 1000);
    assert_eq!(last["data"]["items"].as_array().unwrap().len(), 50);
    assert_eq!(first["data"]["items"].as_array().unwrap().len(), 50);
    eprintln!("two history pages of 1,000 invocations: {took:?}");
    assert!(took < Duration::from_secs(1), "{took:?}");
    server.stop().await;
}

/// Opens `/ui/api/invocations/{trace_id}/events` on a plain socket: the response head, and the
/// socket to read events from.
async fn open_events(
    base: &str,
    trace_id: &str,
    auth: Option<&str>,
) -> (String, tokio::io::BufReader<tokio::net::TcpStream>) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let address = base.trim_start_matches("http://");
    let mut socket = tokio::net::TcpStream::connect(address).await.unwrap();
    let auth = auth.map(|token| format!("Authorization: Bearer {token}\r\n")).unwrap_or_default();
    let request = format!(
        "GET /ui/api/invocations/{trace_id}/events HTTP/1.1\r\nHost: {address}\r\nAccept: text/event-stream\r\n{auth}Connection: close\r\n\r\n"
    );
    socket.write_all(request.as_bytes()).await.unwrap();
    let mut reader = tokio::io::BufReader::new(socket);
    let mut head = String::new();
    loop {
        let mut line = String::new();
        reader.read_line(&mut line).await.unwrap();
        if line == "\r\n" || line.is_empty() {
            break;
        }
        head.push_str(&line);
    }
    (head, reader)
}

/// The events (name, JSON data) until the stream ends; chunked framing lines are skipped.
async fn read_events(reader: &mut tokio::io::BufReader<tokio::net::TcpStream>) -> Vec<(String, serde_json::Value)> {
    use tokio::io::AsyncBufReadExt;
    let mut events = Vec::new();
    let mut name = String::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).await.unwrap() == 0 {
            return events;
        }
        let line = line.trim_end_matches(['\r', '\n']);
        if let Some(value) = line.strip_prefix("event:") {
            name = value.trim().to_owned();
        } else if let Some(value) = line.strip_prefix("data:") {
            events.push((std::mem::take(&mut name), serde_json::from_str(value.trim()).unwrap()));
        }
    }
}

#[tokio::test]
async fn an_invocation_streams_its_changes_until_final() {
    let server = TestServer::start(|_| {}).await;
    let (_, document) = server.get("/openapi.json").await;
    let path = "/ui/api/invocations/{trace_id}/events";
    assert!(document["paths"][path]["get"]["responses"]["200"]["content"]["text/event-stream"].is_object());
    let started = server.invoke("countdown", "1.0.0", json!({"from": 3, "interval_ms": 1000}), json!({})).await;
    let trace_id = started["trace_id"].as_str().unwrap();
    let (head, mut reader) = open_events(&server.base, trace_id, None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert!(head.to_ascii_lowercase().contains("content-type: text/event-stream"), "{head}");
    let events =
        tokio::time::timeout(Duration::from_secs(20), read_events(&mut reader)).await.expect("the stream ends");
    let names: Vec<&str> = events.iter().map(|(name, _)| name.as_str()).collect();
    assert_eq!(names.last(), Some(&"final"), "{names:?}");
    assert!(names[..names.len() - 1].iter().all(|n| *n == "invocation"), "{names:?}");
    let counts: Vec<i64> = events.iter().map(|(_, data)| data["invoke_count"].as_i64().unwrap()).collect();
    assert!(counts.windows(2).all(|w| w[0] <= w[1]), "{counts:?}");
    let mut distinct = counts.clone();
    distinct.dedup();
    assert!(distinct.len() >= 3, "the polls are seen as they happen: {counts:?}");
    let last = &events.last().unwrap().1;
    assert_eq!((last["state_name"].clone(), last["invoke_count"].clone()), (json!("SUCCESS"), json!(4)));
    assert_eq!(last["executes"].as_array().unwrap().len(), 4);
    // Each event is the `data` of `GET /ui/api/invocations/{trace_id}`.
    let envelope = json!({"result": true, "data": last, "message": ""});
    check(&document, "get", "/ui/api/invocations/{trace_id}", 200, &envelope);

    // A final invocation: its one `final` event at once.
    let (_, mut reader) = open_events(&server.base, trace_id, None).await;
    let events = tokio::time::timeout(Duration::from_secs(5), read_events(&mut reader)).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!(events[0].0, "final");

    // An unknown one: a plain 404 at once.
    let started = Instant::now();
    let (status, body) = server.get("/ui/api/invocations/0123456789abcdef0123456789abcdef/events").await;
    assert_eq!(status, 404);
    assert!(started.elapsed() < Duration::from_secs(2));
    check(&document, "get", path, status, &body);

    // A waiting approval streams until the server stops, which does not wait for the stream.
    let waiting = server.invoke("approval", "1.0.0", json!({}), json!({})).await;
    let (head, mut reader) = open_events(&server.base, waiting["trace_id"].as_str().unwrap(), None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let stopped = Instant::now();
    server.stop().await;
    assert!(stopped.elapsed() < Duration::from_secs(5), "stopped in {:?}", stopped.elapsed());
    let events = tokio::time::timeout(Duration::from_secs(5), read_events(&mut reader)).await.unwrap();
    assert_eq!(events[0].0, "invocation");
    assert_eq!(events[0].1["state_name"], "CALLBACK");
}

#[tokio::test]
async fn event_streams_take_the_same_credentials() {
    let tokens = AuthConfig {
        tokens: vec![("ci".into(), "ci-token-123".into()), ("ops".into(), "ops-token-456".into())],
        ..AuthConfig::default()
    };
    let server = TestServer::start(|c| c.auth = tokens).await;
    let ci = [("authorization", "Bearer ci-token-123")];
    let body = r#"{"inputs": {"name": "x"}, "context": {}}"#;
    let (_, started) = server.post_with("/plugins/hello/bk_plugin/invoke/1.0.0", body, &ci).await;
    let trace_id = started["trace_id"].as_str().unwrap();
    let (head, _) = open_events(&server.base, trace_id, None).await;
    assert!(head.starts_with("HTTP/1.1 401"), "{head}");
    let (head, _) = open_events(&server.base, trace_id, Some("ops-token-456")).await;
    assert!(head.starts_with("HTTP/1.1 404"), "another app's: {head}");
    let (head, mut reader) = open_events(&server.base, trace_id, Some("ci-token-123")).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    let events = tokio::time::timeout(Duration::from_secs(5), read_events(&mut reader)).await.unwrap();
    assert_eq!(events.len(), 1);
    assert_eq!((events[0].0.as_str(), events[0].1["state_name"].as_str()), ("final", Some("SUCCESS")));
    server.stop().await;
}

#[tokio::test]
async fn event_streams_are_capped_and_woken_by_changes() {
    let server = TestServer::start(|c| c.max_event_streams = 2).await;
    let waiting = server.invoke("approval", "1.0.0", json!({}), json!({})).await;
    let trace_id = waiting["trace_id"].as_str().unwrap();
    let callback = waiting["data"]["outputs"]["callback_url"].as_str().unwrap().to_owned();
    let (first, mut a) = open_events(&server.base, trace_id, None).await;
    let (second, mut b) = open_events(&server.base, trace_id, None).await;
    assert!(first.starts_with("HTTP/1.1 200") && second.starts_with("HTTP/1.1 200"), "{first}{second}");
    // Beyond the cap: refused at once, with the way out.
    let (status, body) = server.get(&format!("/ui/api/invocations/{trace_id}/events")).await;
    assert_eq!(status, 429, "{body}");
    assert!(body["message"].as_str().unwrap().starts_with("2 event streams are open"), "{body}");

    // Both streams see the callback's result as soon as it is recorded (the watch they share is
    // woken by the change; it only polls every two seconds otherwise).
    tokio::time::sleep(Duration::from_millis(300)).await;
    let posted = Instant::now();
    assert_eq!(server.post_url(&callback, r#"{"approved": true}"#).await.0, 200);
    for reader in [&mut a, &mut b] {
        let events = tokio::time::timeout(Duration::from_secs(5), read_events(reader)).await.unwrap();
        assert_eq!(
            events.last().map(|(name, data)| (name.as_str(), data["state_name"].clone())),
            Some(("final", json!("SUCCESS")))
        );
    }
    assert!(posted.elapsed() < Duration::from_millis(1500), "{:?}", posted.elapsed());
    // Ended streams give their places back.
    let (head, mut c) = open_events(&server.base, trace_id, None).await;
    assert!(head.starts_with("HTTP/1.1 200"), "{head}");
    assert_eq!(read_events(&mut c).await.len(), 1);
    server.stop().await;
}
