//! Probes an attacker would send: cross-site and rebinding requests, reads of another app's
//! invocations, callback tokens in other spellings or under other plugins, slow clients.

use std::time::{Duration, Instant};

use plugd_server::AuthConfig;
use serde_json::{json, Value};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::support::TestServer;

const BODY: &str = r#"{"inputs": {"name": "x"}, "context": {}}"#;

/// Sends `head` (request line and headers, without the blank line) and `body` on a fresh
/// connection; returns the status and the JSON body.
async fn raw(server: &TestServer, head: &str, body: &str) -> (u16, Value) {
    let address = server.base.strip_prefix("http://").unwrap();
    let mut stream = TcpStream::connect(address).await.unwrap();
    let request = format!("{head}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}", body.len());
    stream.write_all(request.as_bytes()).await.unwrap();
    let mut response = String::new();
    tokio::time::timeout(Duration::from_secs(10), stream.read_to_string(&mut response)).await.unwrap().unwrap();
    let status = response.split(' ').nth(1).unwrap().parse().unwrap();
    let body = response.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or_default();
    (status, serde_json::from_str(body).unwrap_or(Value::String(body.to_owned())))
}

fn tokens(pairs: &[(&str, &str)]) -> AuthConfig {
    AuthConfig { tokens: pairs.iter().map(|(a, t)| (a.to_string(), t.to_string())).collect(), ..Default::default() }
}

#[tokio::test]
async fn state_changing_requests_must_declare_json() {
    let server = TestServer::start(|_| {}).await;
    let started = server.invoke("approval", "1.0.0", json!({}), json!({})).await;
    let trace_id = started["trace_id"].as_str().unwrap();
    let callback = started["data"]["outputs"]["callback_url"].as_str().unwrap();
    let posts = [
        format!("{}/plugins/command/bk_plugin/invoke/1.0.0", server.base),
        format!("{}/bk_plugin/invoke/2.0.0", server.base),
        callback.to_owned(),
        format!("{}/plugins/approval/bk_plugin/cancel/{trace_id}", server.base),
        format!("{}/bk_plugin/plugin_api_dispatch", server.base),
        format!("{}/bk_plugin/plugin_api/greetings", server.base),
    ];
    // What a page may send cross-site without a CORS preflight.
    for content_type in ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x"] {
        for url in &posts {
            let (status, body) = server.request_url("POST", url, BODY, &[("content-type", content_type)]).await;
            assert_eq!(status, 415, "{url} {content_type}");
            assert_eq!(body["message"], format!("Content-Type must be application/json (got {content_type:?})"));
        }
    }
    // A no-cors fetch without a body sends no Content-Type at all.
    let response = server.client.post(&posts[3]).send().await.unwrap();
    let (status, body) = crate::support::decode(response).await;
    assert_eq!((status, body["message"].clone()), (415, json!("Content-Type must be application/json (got none)")));
    // Nothing was cancelled or called back.
    let (_, schedule) = server.get(&format!("/plugins/approval/bk_plugin/schedule/{trace_id}")).await;
    assert_eq!(schedule["data"]["state"], 3);
    let (status, _) =
        server.request_url("POST", &posts[1], BODY, &[("content-type", "Application/JSON; charset=utf-8")]).await;
    assert_eq!(status, 200, "parameters and case do not matter");
    server.stop().await;
}

#[tokio::test]
async fn an_open_server_answers_only_its_own_hosts_and_origins() {
    let server = TestServer::start(|c| c.public_url = "http://plugd.internal:8000".into()).await;
    let port = server.base.rsplit(':').next().unwrap().to_owned();
    let invoke = "POST /bk_plugin/invoke/2.0.0 HTTP/1.1\r\nContent-Type: application/json";
    for host in [
        format!("localhost:{port}"),
        format!("127.0.0.1:{port}"),
        format!("[::1]:{port}"),
        "plugd.internal:8000".into(),
    ] {
        let (status, body) = raw(&server, &format!("{invoke}\r\nHost: {host}"), BODY).await;
        assert_eq!((status, body["data"]["state"].clone()), (200, json!(4)), "{host}");
    }
    // DNS rebinding: the page's own name, now pointing at 127.0.0.1.
    for request in
        [format!("{invoke}\r\nHost: evil.example:{port}"), "GET /bk_plugin/meta HTTP/1.1\r\nHost: evil.example".into()]
    {
        let (status, body) = raw(&server, &request, BODY).await;
        assert_eq!(status, 403, "{request}");
        assert!(body["message"].as_str().unwrap().starts_with("Host \"evil.example"), "{body}");
    }
    // Cross-site: a foreign page's origin, or a sandboxed one's `null`.
    for origin in ["http://evil.example", "null", &format!("http://localhost:{}", port.parse::<u16>().unwrap() + 1)] {
        let request = format!("{invoke}\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}");
        let (status, body) = raw(&server, &request, BODY).await;
        assert_eq!(status, 403, "{origin}");
        assert!(body["message"].as_str().unwrap().starts_with("Origin"), "{body}");
    }
    for origin in [format!("http://127.0.0.1:{port}"), "http://plugd.internal:8000".into()] {
        let request = format!("{invoke}\r\nHost: 127.0.0.1:{port}\r\nOrigin: {origin}");
        assert_eq!(raw(&server, &request, BODY).await.0, 200, "{origin}");
    }
    // A page of another site (or a sibling subdomain) that sends no Origin, as an <img> does: refused on
    // every route, GET included; the browser's own navigations and the server's own pages pass.
    let dispatch = "POST /bk_plugin/plugin_api_dispatch HTTP/1.1\r\nContent-Type: application/json";
    let dispatched = r#"{"url": "greetings", "method": "GET"}"#;
    for site in ["cross-site", "same-site", "Cross-Site"] {
        for (head, body) in [
            ("GET /bk_plugin/meta HTTP/1.1", ""),
            ("GET /plugins/hello/bk_plugin/plugin_api/greetings HTTP/1.1", ""),
            ("GET /ui/api/plugins HTTP/1.1", ""),
            (dispatch, dispatched),
        ] {
            let request = format!("{head}\r\nHost: 127.0.0.1:{port}\r\nSec-Fetch-Site: {site}");
            let (status, reply) = raw(&server, &request, body).await;
            assert_eq!(status, 403, "{site} {head}");
            assert!(reply["message"].as_str().unwrap().starts_with(&format!("Sec-Fetch-Site \"{site}\"")), "{reply}");
        }
    }
    for (site, origin) in
        [("same-origin", None), ("none", None), ("same-site", Some(format!("http://127.0.0.1:{port}")))]
    {
        let origin = origin.map(|o| format!("\r\nOrigin: {o}")).unwrap_or_default();
        let request =
            format!("GET /bk_plugin/meta HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nSec-Fetch-Site: {site}{origin}");
        assert_eq!(raw(&server, &request, "").await.0, 200, "{site} {origin}");
    }
    // Credentials a proxy or gateway forwards mean nothing to an open server: ignored, not refused.
    let (status, _) = server.post_with("/bk_plugin/invoke/2.0.0", BODY, &[("authorization", "Bearer gateway")]).await;
    assert_eq!(status, 200);
    server.stop().await;

    // With credentials, a proxy in front may use any name: tokens, not names, decide.
    let behind_proxy = TestServer::start(|c| c.auth = tokens(&[("ci", "tok-ci")])).await;
    let request =
        "POST /bk_plugin/invoke/2.0.0 HTTP/1.1\r\nContent-Type: application/json\r\nHost: plugd.example.com\r\n\
                   Authorization: Bearer tok-ci";
    assert_eq!(raw(&behind_proxy, request, BODY).await.0, 200);
    behind_proxy.stop().await;
}

#[tokio::test]
async fn logs_and_reports_answer_only_the_app_that_invoked() {
    for private_schedule in [false, true] {
        let owner = TestServer::start(|c| {
            c.auth = tokens(&[("sops", "tok-sops"), ("other", "tok-other")]);
            c.private_schedule = private_schedule;
        })
        .await;
        let server = &owner;
        const NONE: &[(&str, &str)] = &[];
        const SOPS: &[(&str, &str)] = &[("authorization", "Bearer tok-sops")];
        const OTHER: &[(&str, &str)] = &[("authorization", "Bearer tok-other")];
        let (status, started) = server.post_with("/bk_plugin/invoke/2.0.0", BODY, SOPS).await;
        assert_eq!(status, 200);
        let trace_id = started["trace_id"].as_str().unwrap();
        let get = |path: String, headers: &'static [(&'static str, &'static str)]| async move {
            server.request_url("GET", &format!("{}{path}", server.base), "", headers).await
        };
        let mut reads = vec![format!("/bk_plugin/logs/{trace_id}"), format!("/bk_plugin/reports/{trace_id}")];
        if private_schedule {
            reads.push(format!("/bk_plugin/schedule/{trace_id}"));
        } else {
            let (status, schedule) = get(format!("/bk_plugin/schedule/{trace_id}"), NONE).await;
            assert_eq!((status, schedule["result"].clone()), (200, json!(true)), "schedule stays open by default");
        }
        for path in &reads {
            let (status, body) = get(path.clone(), NONE).await;
            assert_eq!(status, 401, "{path} {body}");
            let (status, body) = get(path.clone(), OTHER).await;
            assert_eq!((status, body["result"].clone()), (200, json!(false)), "{path}: another app's invocation");
            assert_eq!(body["data"], Value::Null);
            let (status, body) = get(path.clone(), SOPS).await;
            assert_eq!((status, body["result"].clone()), (200, json!(true)), "{path}");
        }
        let (status, _) = get(format!("/bk_plugin/reports/{trace_id}/1-1/index.html"), NONE).await;
        assert_eq!(status, 401);
        // Nor may another app cancel it.
        let countdown = json!({"inputs": {"from": 50, "interval_ms": 1000}, "context": {}}).to_string();
        let (_, started) = server.post_with("/plugins/countdown/bk_plugin/invoke/1.0.0", &countdown, SOPS).await;
        let cancel = format!("/plugins/countdown/bk_plugin/cancel/{}", started["trace_id"].as_str().unwrap());
        assert_eq!(server.post_with(&cancel, "{}", OTHER).await.0, 404);
        assert_eq!(server.post_with(&cancel, "{}", SOPS).await.0, 200);
        owner.stop().await;
    }
}

#[tokio::test]
async fn a_callback_token_works_only_as_issued_and_under_its_own_plugin() {
    let server = TestServer::start(|_| {}).await;
    let started = server.invoke("approval", "1.0.0", json!({}), json!({})).await;
    let url = started["data"]["outputs"]["callback_url"].as_str().unwrap().to_owned();
    let token = url.trim_end_matches('/').rsplit('/').next().unwrap().to_owned();
    let (payload, signature) = token.rsplit_once('.').unwrap();
    let upper = format!("{}/bk_plugin/callback/{payload}.{}/", server.base, signature.to_ascii_uppercase());
    let (status, body) = server.post_url(&upper, r#"{"approved": true}"#).await;
    assert_eq!((status, body["result"].clone()), (400, json!(false)));
    assert!(body["message"].as_str().unwrap().ends_with("malformed callback token"), "{body}");
    let elsewhere = format!("{}/plugins/hello/bk_plugin/callback/{token}/", server.base);
    let (status, body) = server.post_url(&elsewhere, r#"{"approved": true}"#).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().ends_with("not a callback of plugin hello"), "{body}");
    let own = format!("{}/plugins/approval/bk_plugin/callback/{token}/", server.base);
    assert_eq!(server.post_url(&own, r#"{"approved": true}"#).await.0, 200);
    server.stop().await;
}

/// Whether the server closed `stream` (EOF or reset) within `within`.
async fn closed_within(stream: &mut TcpStream, within: Duration) -> bool {
    let mut buffer = [0u8; 1024];
    let deadline = Instant::now() + within;
    loop {
        match tokio::time::timeout_at(deadline.into(), stream.read(&mut buffer)).await {
            Err(_) => return false,
            Ok(Ok(0) | Err(_)) => return true,
            // A 408 or similar before closing is fine.
            Ok(Ok(_)) => continue,
        }
    }
}

#[tokio::test]
async fn slow_and_silent_clients_are_cut_off() {
    let server = TestServer::start(|c| {
        c.header_read_timeout = Duration::from_millis(300);
        c.body_read_timeout = Duration::from_millis(300);
        c.max_connections = 8;
    })
    .await;
    let address = server.base.strip_prefix("http://").unwrap().to_owned();
    let mut silent = TcpStream::connect(&address).await.unwrap();
    let mut half = TcpStream::connect(&address).await.unwrap();
    half.write_all(b"POST /bk_plugin/invoke/2.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\n").await.unwrap();
    assert!(closed_within(&mut silent, Duration::from_secs(3)).await, "a connection that sends nothing");
    assert!(closed_within(&mut half, Duration::from_secs(3)).await, "a request head that never ends");

    // A body announced far beyond the limit is refused at once, not waited for.
    let started = Instant::now();
    let head = "POST /bk_plugin/invoke/2.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                Content-Length: 1000000000000\r\n\r\n{}";
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let mut response = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(2), stream.read(&mut response)).await.unwrap().unwrap();
    assert!(String::from_utf8_lossy(&response[..n]).starts_with("HTTP/1.1 413"));
    assert!(started.elapsed() < Duration::from_secs(2));
    // A body that stops arriving is answered 408.
    let head = "POST /bk_plugin/invoke/2.0.0 HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\n\
                Content-Length: 100\r\n\r\n{\"inputs\"";
    let mut stream = TcpStream::connect(&address).await.unwrap();
    stream.write_all(head.as_bytes()).await.unwrap();
    let n = tokio::time::timeout(Duration::from_secs(3), stream.read(&mut response)).await.unwrap().unwrap();
    let text = String::from_utf8_lossy(&response[..n]);
    assert!(text.starts_with("HTTP/1.1 408"), "{text}");
    assert!(text.contains("the request body did not arrive within 300ms"), "{text}");

    // Far more half-sent requests than connections allowed: the server still answers.
    let mut attackers = Vec::new();
    for _ in 0..64 {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").await;
        attackers.push(stream);
    }
    let health = tokio::time::timeout(Duration::from_secs(15), server.get("/healthz")).await;
    assert_eq!(health.expect("/healthz answers while slow clients wait"), (200, json!({"status": "ok"})));
    drop(attackers);
    server.stop().await;
}

/// A gateway JWT that names a user but no app.
fn jwt_without_app() -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("../fixtures/apigw-test-private.pem")).unwrap();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = json!({"iss": "APIGW", "user": {"username": "alice", "verified": true}, "exp": exp});
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS512), &claims, &key).unwrap()
}

#[tokio::test]
async fn invocations_no_app_created_are_an_admins_alone() {
    let server = TestServer::start(|c| {
        c.auth =
            AuthConfig { admin_tokens: vec![("ops".into(), "tok-admin".into())], ..tokens(&[("sops", "tok-sops")]) }
                .with_gateway_public_key(include_bytes!("../fixtures/apigw-test-public.pem"))
                .unwrap();
    })
    .await;
    let nameless = jwt_without_app();
    let gateway = [("x-bkapi-jwt", nameless.as_str())];
    let (status, started) =
        server.post_with("/plugins/approval/bk_plugin/invoke/1.0.0", r#"{"inputs": {}}"#, &gateway).await;
    assert_eq!(status, 200, "{started}");
    let trace_id = started["trace_id"].as_str().unwrap().to_owned();
    let sops = [("authorization", "Bearer tok-sops")];
    let admin = [("authorization", "Bearer tok-admin")];
    let logs = format!("{}/plugins/approval/bk_plugin/logs/{trace_id}", server.base);
    let cancel = format!("{}/plugins/approval/bk_plugin/cancel/{trace_id}", server.base);
    let history = format!("{}/ui/api/invocations", server.base);
    let panel = format!("{}/ui/api/invocations/{trace_id}", server.base);

    // An app, and the nameless caller itself, see it as nothing: it is no app's.
    for headers in [&sops[..], &gateway[..]] {
        let (_, read) = server.request_url("GET", &logs, "", headers).await;
        assert_eq!(read["message"], format!("can not find schedule for trace_id {trace_id}"), "{read}");
        assert_eq!(server.request_url("GET", &panel, "", headers).await.0, 404);
        let (_, page) = server.request_url("GET", &history, "", headers).await;
        assert_eq!(page["data"]["total"], 0, "{page}");
        assert_eq!(server.request_url("POST", &cancel, "{}", headers).await.0, 404);
    }
    // An admin token sees and cancels it.
    let (_, read) = server.request_url("GET", &logs, "", &admin).await;
    assert_eq!(read["result"], true, "{read}");
    let (_, page) = server.request_url("GET", &history, "", &admin).await;
    assert_eq!(page["data"]["total"], 1, "{page}");
    let (status, cancelled) = server.request_url("POST", &cancel, "{}", &admin).await;
    assert_eq!((status, &cancelled["data"]["state"]), (200, &json!(5)), "{cancelled}");
    server.stop().await;
}

#[tokio::test]
async fn clients_that_never_read_their_answers_are_cut_off() {
    // A slot to spare: no connection is closed to make room, only for reading nothing.
    let server = TestServer::start(|c| {
        c.max_connections = 3;
        c.write_timeout = Duration::from_millis(500);
    })
    .await;
    let address = server.base.strip_prefix("http://").unwrap().to_owned();
    let (_, document) = server.get("/openapi.json").await;
    // Every connection allowed, each pipelining requests for the largest answer and reading none
    // (with a small receive buffer): the server's writes stall once the socket buffers are full.
    const ASKED: usize = 300;
    let request = "GET /openapi.json HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n".repeat(ASKED);
    let mut readers = Vec::new();
    for _ in 0..2 {
        let socket = tokio::net::TcpSocket::new_v4().unwrap();
        socket.set_recv_buffer_size(4096).unwrap();
        let mut stream = socket.connect(address.parse().unwrap()).await.unwrap();
        stream.write_all(request.as_bytes()).await.unwrap();
        readers.push(stream);
    }
    let started = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(10), server.get("/healthz")).await;
    assert_eq!(health.expect("/healthz answers beside the non-readers"), (200, json!({"status": "ok"})));
    assert!(started.elapsed() < Duration::from_secs(5), "{:?}", started.elapsed());
    // Both are cut off by now for reading nothing: what was written before the cut is there, then
    // the end, far short of the answers asked.
    tokio::time::sleep(Duration::from_millis(1500)).await;
    let asked = ASKED * document.to_string().len();
    for mut stream in readers {
        let (mut buffer, mut received) = (vec![0u8; 64 * 1024], 0);
        let ended = loop {
            match tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buffer)).await {
                Ok(Ok(0) | Err(_)) => break true,
                Ok(Ok(n)) => received += n,
                Err(_) => break false,
            }
        };
        assert!(ended && received < asked, "a non-reader's connection is closed ({received} of {asked} bytes)");
    }
    server.stop().await;
}

#[tokio::test]
async fn what_a_plugin_hands_back_is_capped() {
    let server = TestServer::start(|c| c.max_outputs = 100_000).await;
    let invoke = |name: String, times: u32| {
        let body = json!({"inputs": {"name": name, "times": times}, "context": {}}).to_string();
        let server = &server;
        async move { server.post("/bk_plugin/invoke/2.0.0", &body).await }
    };
    // hello refuses a product it would have to build (a megabyte name, a thousand times) up front.
    let (status, reply) = invoke("n".repeat(1_000_000), 1000).await;
    assert_eq!((status, &reply["data"]["state"]), (200, &json!(5)), "{reply}");
    assert_eq!(
        reply["data"]["err"],
        "plugin execute failed: 1000 greetings of 1000007 bytes make 1000007000 bytes; at most 262144"
    );
    // What an execute hands back beyond --max-outputs fails it, and none of it is kept.
    let (status, reply) = invoke("n".repeat(150_000), 1).await;
    assert_eq!((status, &reply["data"]["state"]), (200, &json!(5)), "{reply}");
    assert_eq!(reply["data"]["err"], "plugin execute failed: outputs exceed 100000 bytes (--max-outputs)");
    assert_eq!(
        reply["data"]["outputs"],
        json!({"err": "plugin execute failed: outputs exceed 100000 bytes (--max-outputs)"})
    );
    let (_, reply) = invoke("n".repeat(1_000), 3).await;
    assert_eq!(reply["data"]["state"], 4, "{reply}");
    server.stop().await;
}

/// Raises this test process's soft open-files limit to its hard one: how many connections of `want`
/// it can then open beside the server's own descriptors (saying so when fewer).
fn open_files_for_test(want: u64) -> u64 {
    use nix::sys::resource::{getrlimit, setrlimit, Resource};
    let (_, hard) = getrlimit(Resource::RLIMIT_NOFILE).unwrap();
    setrlimit(Resource::RLIMIT_NOFILE, hard, hard).unwrap();
    // The server keeps at most its cap (64) open, plus its database and listener.
    let room = hard.saturating_sub(256);
    if room < want {
        eprintln!("NOTICE: the open-files limit ({hard}) allows {room} connections, not {want}");
    }
    want.min(room)
}

#[tokio::test]
async fn at_the_cap_the_longest_idle_connection_makes_room() {
    // The header deadline is far away: only making room lets anyone else in.
    let server = TestServer::start(|c| {
        c.max_connections = 64;
        c.header_read_timeout = Duration::from_secs(60);
    })
    .await;
    let address = server.base.strip_prefix("http://").unwrap().to_owned();
    // 5,000 half-sent requests, as many as this process's open-files limit allows (raised to its hard
    // limit, as plugd serve raises its own).
    let half_sent = open_files_for_test(5_000);
    let mut attackers = Vec::new();
    for _ in 0..half_sent {
        let mut stream = TcpStream::connect(&address).await.unwrap();
        let _ = stream.write_all(b"GET /healthz HTTP/1.1\r\nHost: 127.0.0.1\r\n").await;
        attackers.push(stream);
    }
    let started = Instant::now();
    let health = tokio::time::timeout(Duration::from_secs(5), server.get("/healthz")).await;
    assert_eq!(health.expect("/healthz answers under half-sent requests"), (200, json!({"status": "ok"})));
    assert!(started.elapsed() < Duration::from_secs(1), "{:?}", started.elapsed());
    // The oldest of them were closed to make room.
    assert!(closed_within(&mut attackers[0], Duration::from_secs(2)).await, "the longest-idle connection is closed");

    // A request under way is never the one closed: a slow execute finishes while newcomers come.
    let slow = tokio::spawn({
        let base = server.base.clone();
        async move {
            let body = json!({"inputs": {"from": 1, "interval_ms": 1}, "context": {}}).to_string();
            reqwest::Client::new()
                .post(format!("{base}/plugins/countdown/bk_plugin/invoke/1.0.0"))
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .map(|r| r.status().as_u16())
        }
    });
    assert_eq!(slow.await.unwrap().unwrap(), 200);
    drop(attackers);
    server.stop().await;
}
