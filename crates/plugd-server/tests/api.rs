//! The bk-plugin API of a real server over real sockets: every endpoint and error path of the contract.

mod support;
// What keeps `plugd serve` from being turned against its host, its tokens or its memory.
#[path = "api/security.rs"]
mod security;
// BK-SOPS callers of plugins written for the Python framework: pydantic's schemas and conversions.
#[path = "api/pydantic.rs"]
mod pydantic;
// A callback URL that takes several posts, and waits for a callback that time out.
#[path = "api/callbacks.rs"]
mod callbacks;
// Every answer of every route against the OpenAPI document's statuses and schemas.
#[path = "api/openapi.rs"]
mod openapi;
// The debug panel: its pages under a strict policy, history and the execute timeline.
#[path = "api/panel.rs"]
mod panel;

use std::time::Duration;

use serde_json::{json, Value};
use support::TestServer;

fn is_trace_id(value: &Value) -> bool {
    value.as_str().is_some_and(|s| s.len() == 32 && s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f')))
}

#[tokio::test]
async fn meta_answers_under_both_prefixes_with_and_without_slash() {
    let server = TestServer::start(|_| {}).await;
    for path in
        ["/bk_plugin/meta", "/bk_plugin/meta/", "/plugins/hello/bk_plugin/meta", "/plugins/hello/bk_plugin/meta/"]
    {
        let (status, body) = server.get(path).await;
        assert_eq!(status, 200, "{path}");
        assert_eq!(body["result"], true);
        assert_eq!(body["data"]["code"], "hello");
        assert_eq!(body["data"]["versions"], json!(["2.0.0", "1.0.0"]), "newest first");
        assert_eq!(body["message"], "");
    }
    let (_, countdown) = server.get("/plugins/countdown/bk_plugin/meta").await;
    assert_eq!(countdown["data"]["code"], "countdown");
    let (status, body) = server.get("/plugins/nope/bk_plugin/meta").await;
    assert_eq!(status, 404);
    assert_eq!(body["result"], false);
    assert!(body["message"]
        .as_str()
        .unwrap()
        .starts_with("unknown plugin \"nope\"; available plugins: amqp, approval, collector"));
    server.stop().await;

    let no_default = TestServer::start(|c| c.default_plugin = None).await;
    let (status, body) = no_default.get("/bk_plugin/meta").await;
    assert_eq!(status, 404);
    assert!(body["message"].as_str().unwrap().starts_with("no default plugin is served here"));
    // Callback URLs work without a default plugin: the token names the invocation.
    let started = no_default.invoke("approval", "1.0.0", json!({}), json!({})).await;
    let url = started["data"]["outputs"]["callback_url"].as_str().unwrap();
    assert!(url.starts_with(&format!("{}/bk_plugin/callback/", no_default.base)));
    assert_eq!(no_default.post_url(url, r#"{"approved": true}"#).await.0, 200);
    no_default.stop().await;
}

#[tokio::test]
async fn detail_has_the_shape_callers_read() {
    let server = TestServer::start(|_| {}).await;
    let (status, body) = server.get("/bk_plugin/detail/2.0.0").await;
    assert_eq!(status, 200);
    let data = &body["data"];
    for key in ["desc", "version", "inputs", "outputs", "context_inputs", "enable_plugin_callback", "forms"] {
        assert!(data.get(key).is_some(), "missing {key}");
    }
    assert_eq!(data["context_inputs"]["properties"], json!({}));
    assert!(data["forms"]["renderform"].as_str().unwrap().contains("$.atoms[\"hello\"]"));
    let (_, v1) = server.get("/bk_plugin/detail/1.0.0/").await;
    assert_eq!(v1["data"]["forms"], json!({"renderform": null}));
    assert_eq!(v1["data"]["inputs"]["required"], json!(["name"]));
    let (_, countdown) = server.get("/plugins/countdown/bk_plugin/detail/1.0.0").await;
    assert_eq!(countdown["data"]["enable_plugin_callback"], true);
    assert!(countdown["data"]["context_inputs"]["properties"]["plugin_callback_info"].is_object());
    let (status, body) = server.get("/bk_plugin/detail/9.9.9").await;
    assert_eq!((status, body["result"].clone()), (404, json!(false)));
    assert_eq!(body["message"], "plugin \"hello\" has no version \"9.9.9\"; available versions: 2.0.0, 1.0.0");
    server.stop().await;
}

#[tokio::test]
async fn invoke_success_failure_and_bad_requests() {
    let server = TestServer::start(|c| c.max_body = 4096).await;
    let ok = server.invoke("hello", "2.0.0", json!({"name": "x", "plugin_code": "sops adds this"}), json!({})).await;
    assert_eq!(ok["result"], true);
    assert_eq!(ok["message"], "success");
    assert!(is_trace_id(&ok["trace_id"]));
    assert_eq!(ok["data"], json!({"outputs": {"messages": ["hello, x"]}, "state": 4, "err": null}));
    // Synchronous invocations are recorded too.
    let (_, schedule) = server.get(&format!("/bk_plugin/schedule/{}", ok["trace_id"].as_str().unwrap())).await;
    assert_eq!(schedule["data"]["state"], 4);

    let bad = server.invoke("hello", "2.0.0", json!({"times": "x"}), json!({})).await;
    assert_eq!(bad["result"], true);
    assert_eq!(bad["data"]["state"], 5);
    let err = bad["data"]["err"].as_str().unwrap();
    assert_eq!(err, "inputs validation error: /name: required field is missing; /times: expected integer, got \"x\"");
    // BKFlow reads `outputs.get("err")` on FAIL: an object, never null, in invoke and schedule alike.
    assert_eq!(bad["data"]["outputs"], json!({"err": err}));
    let (_, schedule) = server.get(&format!("/bk_plugin/schedule/{}", bad["trace_id"].as_str().unwrap())).await;
    assert_eq!(schedule["data"]["outputs"], json!({"err": err}));

    let (status, body) = server.post("/bk_plugin/invoke/2.0.0", r#"{"context": {}}"#).await;
    assert_eq!(
        (status, body),
        (400, json!({"result": false, "data": null, "message": "输入不合法: inputs: This field is required."}))
    );
    // A missing context is an empty one.
    let (status, body) = server.post("/bk_plugin/invoke/2.0.0", r#"{"inputs": {"name": "y"}}"#).await;
    assert_eq!((status, body["data"]["state"].clone()), (200, json!(4)));
    let (status, body) = server.post("/bk_plugin/invoke/2.0.0/", "{not json").await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().starts_with("输入不合法: the request body is not valid JSON"));
    let (status, body) = server.post("/bk_plugin/invoke/2.0.0", r#"{"inputs": [], "context": {}}"#).await;
    assert_eq!(
        (status, body["message"].clone()),
        (400, json!("输入不合法: inputs: expected a JSON object, got not an object"))
    );
    let (status, body) = server.post("/bk_plugin/invoke/7.0.0", r#"{"inputs": {}, "context": {}}"#).await;
    assert_eq!((status, body["result"].clone()), (404, json!(false)));
    let huge = json!({"inputs": {"name": "x".repeat(5000)}, "context": {}}).to_string();
    let (status, body) = server.post("/bk_plugin/invoke/2.0.0", &huge).await;
    assert_eq!(
        (status, body["message"].clone()),
        (413, json!("request body is too large: the limit is 4096 bytes (--max-body)"))
    );
    server.stop().await;
}

#[tokio::test]
async fn poll_invocations_run_on_the_scheduler() {
    let server = TestServer::start(|_| {}).await;
    let started = server.invoke("countdown", "1.0.0", json!({"from": 3, "interval_ms": 20}), json!({})).await;
    assert_eq!(started["data"], json!({"outputs": {}, "state": 2, "err": null}));
    let trace_id = started["trace_id"].as_str().unwrap();
    let done = server.wait_final("countdown", trace_id).await;
    assert_eq!(done["state"], 4);
    assert_eq!(done["outputs"], json!({"polls": 3}));
    assert_eq!(done["err"], "");
    assert_eq!(done["plugin_version"], "1.0.0");
    let time = regex_like_time(done["created_at"].as_str().unwrap());
    assert!(time && regex_like_time(done["finish_at"].as_str().unwrap()), "{done}");

    let (status, unknown) = server.get("/plugins/countdown/bk_plugin/schedule/deadbeef").await;
    assert_eq!(status, 200);
    assert_eq!(unknown["result"], false);
    assert_eq!(unknown["data"], Value::Null);
    assert_eq!(unknown["message"], "can not find schedule for trace_id deadbeef");
    assert!(is_trace_id(&unknown["trace_id"]));
    // Another plugin's invocation is not found under this one.
    let (_, other) = server.get(&format!("/plugins/hello/bk_plugin/schedule/{trace_id}")).await;
    assert_eq!(other["result"], false);
    server.stop().await;
}

fn regex_like_time(text: &str) -> bool {
    let bytes = text.as_bytes();
    bytes.len() == 19
        && bytes.iter().enumerate().all(|(i, b)| match i {
            4 | 7 => *b == b'-',
            10 => *b == b' ',
            13 | 16 => *b == b':',
            _ => b.is_ascii_digit(),
        })
}

#[tokio::test]
async fn callback_urls_can_point_at_the_api_gateway() {
    let gateway = "https://bkapi.example.com/api/my-plugin/prod";
    let server = TestServer::start(|c| c.callback_base = Some(gateway.into())).await;
    let started = server.invoke("collector", "1.0.0", json!({}), json!({})).await;
    let trace_id = started["trace_id"].as_str().unwrap();
    let url = started["data"]["outputs"]["urls"][0].as_str().unwrap().to_owned();
    let token = url.strip_prefix(&format!("{gateway}/callback/")).unwrap().trim_end_matches('/');
    assert!(token.starts_with(&format!("{trace_id}.")), "{url}");
    // The gateway's `callback/{token}/` resource reaches the server's own route.
    let (status, body) = server.post(&format!("/bk_plugin/callback/{token}/"), r#"{"n": 1}"#).await;
    assert_eq!((status, body), (200, json!({"result": true, "data": null, "message": "callback success"})));
    server.stop().await;
}

#[tokio::test]
async fn callbacks_are_signed_single_use_and_refused_after_the_end() {
    let server = TestServer::start(|_| {}).await;
    let started = server.invoke("collector", "1.0.0", json!({}), json!({})).await;
    assert_eq!(started["data"]["state"], 3);
    let trace_id = started["trace_id"].as_str().unwrap();
    let urls: Vec<String> = serde_json::from_value(started["data"]["outputs"]["urls"].clone()).unwrap();
    assert!(urls[0].starts_with(&format!("{}/bk_plugin/callback/{trace_id}.", server.base)), "{}", urls[0]);
    assert!(urls[0].ends_with('/'));

    let forged = format!("{}0/", urls[0].trim_end_matches('/').trim_end_matches(|c: char| c.is_ascii_hexdigit()));
    let (status, body) = server.post_url(&forged, "{}").await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().starts_with("invalid token "), "{body}");
    let (status, body) = server.post("/bk_plugin/callback/abc", "{}").await;
    assert_eq!(
        (status, body),
        (400, json!({"result": false, "data": null, "message": "invalid token abc: malformed callback token"}))
    );
    let (status, body) = server.post_url(&urls[0], "not json").await;
    assert_eq!((status, body), (400, json!({"result": false, "data": null, "message": "invalid request body"})));

    let (status, body) = server.post_url(&urls[0], r#"{"n": 1}"#).await;
    assert_eq!((status, body), (200, json!({"result": true, "data": null, "message": "callback success"})));
    // The same post again (a retry after a lost reply) executes nothing.
    let (status, body) = server.post_url(urls[0].trim_end_matches('/'), r#"{"n": 1}"#).await;
    assert_eq!(
        (status, body["result"].clone(), body["message"].clone()),
        (200, json!(true), json!("callback already received"))
    );
    let (status, _) = server.post_url(&urls[1], r#"{"n": 2}"#).await;
    assert_eq!(status, 200);
    let done = server.wait_final("collector", trace_id).await;
    assert_eq!(done["outputs"]["got"], json!([{"n": 1}, {"n": 2}]));
    assert_eq!(server.get(&format!("/plugins/collector/bk_plugin/schedule/{trace_id}")).await.1["data"]["state"], 4);

    // A valid, unused callback of an invocation that ended: the Python framework's message.
    let other = server.invoke("collector", "1.0.0", json!({}), json!({})).await;
    let other_id = other["trace_id"].as_str().unwrap();
    let other_urls: Vec<String> = serde_json::from_value(other["data"]["outputs"]["urls"].clone()).unwrap();
    server.post(&format!("/plugins/collector/bk_plugin/cancel/{other_id}"), "").await;
    let (status, body) = server.post_url(&other_urls[0], "{}").await;
    assert_eq!(
        (status, body),
        (
            400,
            json!({"result": false, "data": null, "message": "callback fail,schedule plugin state[5]: is not callback"})
        )
    );
    server.stop().await;
}

#[tokio::test]
async fn expired_callback_tokens_are_refused() {
    let server = TestServer::start(|c| c.callback_ttl = Duration::from_secs(1)).await;
    let started = server.invoke("approval", "1.0.0", json!({}), json!({})).await;
    let url = started["data"]["outputs"]["callback_url"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = server.post_url(&url, r#"{"approved": true}"#).await;
    assert_eq!(status, 400);
    assert!(body["message"].as_str().unwrap().ends_with(": callback token has expired"), "{body}");
    let (_, schedule) =
        server.get(&format!("/plugins/approval/bk_plugin/schedule/{}", started["trace_id"].as_str().unwrap())).await;
    assert_eq!(schedule["data"]["state"], 3, "nothing changed");
    server.stop().await;
}

#[tokio::test]
async fn a_callback_racing_its_execute_is_kept_and_delivered() {
    let server = TestServer::start(|_| {}).await;
    for _ in 0..5 {
        let started = server.invoke("racer", "1.0.0", json!({}), json!({})).await;
        assert_eq!(started["data"]["state"], 3, "{started}");
        let done = server.wait_final("racer", started["trace_id"].as_str().unwrap()).await;
        assert_eq!((done["state"].clone(), done["outputs"]["data"].clone()), (json!(4), json!({"raced": true})));
    }
    server.stop().await;
}

#[tokio::test]
async fn cancel_and_logs() {
    let server = TestServer::start(|_| {}).await;
    let started = server.invoke("countdown", "1.0.0", json!({"from": 100, "interval_ms": 60000}), json!({})).await;
    let trace_id = started["trace_id"].as_str().unwrap();
    let (status, body) = server.post(&format!("/plugins/countdown/bk_plugin/cancel/{trace_id}"), "").await;
    assert_eq!((status, body["message"].clone()), (200, json!("cancelled")));
    let (_, schedule) = server.get(&format!("/plugins/countdown/bk_plugin/schedule/{trace_id}/")).await;
    assert_eq!(
        (schedule["data"]["state"].clone(), schedule["data"]["err"].clone()),
        (json!(5), json!("cancelled by request"))
    );
    let (status, body) = server.post(&format!("/plugins/countdown/bk_plugin/cancel/{trace_id}"), "").await;
    assert_eq!(
        (status, body["message"].clone()),
        (409, json!(format!("invocation {trace_id} already finished in state FAIL")))
    );
    let (status, _) = server.post("/plugins/countdown/bk_plugin/cancel/deadbeef", "").await;
    assert_eq!(status, 404);

    let logged = server.invoke("logger", "1.0.0", json!({}), json!({})).await;
    let trace_id = logged["trace_id"].as_str().unwrap();
    server.wait_final("logger", trace_id).await;
    let (_, logs) = server.get(&format!("/plugins/logger/bk_plugin/logs/{trace_id}")).await;
    let log = logs["data"]["log"].as_str().unwrap();
    assert!(log.contains("logger executes count=1") && log.contains("logger executes count=2"), "{log}");
    let (_, missing) = server.get("/plugins/logger/bk_plugin/logs/deadbeef").await;
    assert_eq!(missing["result"], false);
    server.stop().await;
}

#[tokio::test]
async fn plugin_apis_directly_and_through_dispatch() {
    let server = TestServer::start(|_| {}).await;
    let (status, body) = server.get("/bk_plugin/plugin_api/greetings/?prefix=h").await;
    assert_eq!((status, body), (200, json!({"greetings": ["hello", "hi"]})));
    let server = &server;
    let dispatch = |body: Value| async move { server.post("/bk_plugin/plugin_api_dispatch/", &body.to_string()).await };
    let (status, body) = dispatch(json!({"url": "/bk_plugin/plugin_api/greetings/?ignored=1", "method": "GET", "username": "alice", "data": {"prefix": "b"}})).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["result"].clone(), body["data"].clone(), body["message"].clone()),
        (json!(true), json!({"greetings": ["bonjour"]}), json!("success"))
    );
    assert!(is_trace_id(&body["trace_id"]));
    let (_, body) = dispatch(
        json!({"url": "/bk_plugin/plugin_api/greetings", "method": "get", "dumped_data": "{\"prefix\": \"你\"}"}),
    )
    .await;
    assert_eq!(body["data"], json!({"greetings": ["你好"]}));
    let (status, body) = dispatch(json!({"url": "/api/greetings", "method": "GET"})).await;
    assert_eq!(
        (status, body["message"].clone()),
        (400, json!("输入不合法: url must start with '/bk_plugin/plugin_api/'"))
    );
    let (status, body) = dispatch(json!({"url": "/bk_plugin/plugin_api/nope", "method": "GET"})).await;
    assert_eq!((status, body["message"].clone()), (404, json!("404 error: /bk_plugin/plugin_api/nope")));
    let (status, _) = dispatch(json!({"url": "/bk_plugin/plugin_api/greetings", "method": "DELETE"})).await;
    assert_eq!(status, 400);
    // GET data becomes query parameters, which are text (a list gives its last item), as in Python.
    let (status, body) =
        dispatch(json!({"url": "/bk_plugin/plugin_api/greetings", "method": "GET", "data": {"prefix": ["x", "bon"]}}))
            .await;
    assert_eq!((status, body["data"].clone()), (200, json!({"greetings": ["bonjour"]})));
    let (status, body) =
        dispatch(json!({"url": "/bk_plugin/plugin_api/greetings", "method": "GET", "data": {"prefix": 1}})).await;
    assert_eq!((status, body["data"].clone()), (200, json!({"greetings": []})));
    // BK-SOPS's form data API puts the form's query in `url` and sends `data: {}`: the query counts.
    let (status, body) = dispatch(
        json!({"method": "GET", "url": "/bk_plugin/plugin_api/greetings/?prefix=h", "username": "admin", "data": {}}),
    )
    .await;
    assert_eq!((status, body["data"].clone()), (200, json!({"greetings": ["hello", "hi"]})));
    // A POST keeps the url's query and sends `data` as its body.
    let echo = |body: Value, headers: &'static [(&'static str, &'static str)]| async move {
        server.post_with("/plugins/logger/bk_plugin/plugin_api_dispatch", &body.to_string(), headers).await
    };
    let (_, body) =
        echo(json!({"method": "POST", "url": "/bk_plugin/plugin_api/echo?a=1&a=2&b=x%20y", "data": {"k": 1}}), &[])
            .await;
    assert_eq!(body["data"]["query"], json!({"a": "2", "b": "x y"}));
    assert_eq!(body["data"]["body"], json!({"k": 1}));
    // The caller: the dispatching user, and the headers BK-SOPS forwards; never credentials.
    let headers: &[(&str, &str)] = &[
        ("bk-plugin-project-id", "42"),
        ("accept-language", "zh-cn"),
        ("x-bkapi-request-id", "r-1"),
        ("x-bkapi-authorization", "{\"bk_app_secret\": \"s\"}"),
        ("authorization", "Bearer x"),
        ("cookie", "bk_token=t"),
    ];
    let (_, body) =
        echo(json!({"method": "GET", "url": "/bk_plugin/plugin_api/echo", "username": "admin"}), headers).await;
    assert_eq!(body["data"]["username"], "admin");
    assert_eq!(
        body["data"]["headers"],
        json!({"accept-language": "zh-cn", "bk-plugin-project-id": "42", "x-bkapi-request-id": "r-1"})
    );
    let (_, direct) = server.get("/plugins/logger/bk_plugin/plugin_api/echo?x=1").await;
    assert_eq!((direct["query"].clone(), direct["username"].clone()), (json!({"x": "1"}), Value::Null));
}

fn jwt(app_code: &str) -> String {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(include_bytes!("fixtures/apigw-test-private.pem")).unwrap();
    let exp = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() + 300;
    let claims = json!({"iss": "APIGW", "app": {"app_code": app_code, "verified": true}, "user": {"username": "alice", "verified": true}, "exp": exp});
    jsonwebtoken::encode(&jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS512), &claims, &key).unwrap()
}

#[tokio::test]
async fn auth_with_bearer_tokens_and_gateway_jwts_and_allow_scope() {
    let server = TestServer::start(|c| {
        c.auth =
            plugd_server::AuthConfig { tokens: vec![("bk_sops".into(), "s3cret-token".into())], ..Default::default() }
                .with_gateway_public_key(include_bytes!("fixtures/apigw-test-public.pem"))
                .unwrap();
        c.allow_scope.insert("hello".into(), json!({"bk_sops": {"type": "project", "value": ["1", "2"]}}));
    })
    .await;
    let body = r#"{"inputs": {"name": "x"}, "context": {}}"#;
    let (status, meta) = server.get("/bk_plugin/meta").await;
    assert_eq!(
        (status, meta["data"]["allow_scope"].clone()),
        (200, json!({"bk_sops": {"type": "project", "value": ["1", "2"]}}))
    );
    let (status, response) = server.post("/bk_plugin/invoke/2.0.0", body).await;
    assert_eq!(status, 401);
    assert!(response["message"].as_str().unwrap().starts_with("authentication required"));
    let (status, response) =
        server.post_with("/bk_plugin/invoke/2.0.0", body, &[("authorization", "Bearer wrong")]).await;
    assert_eq!((status, response["message"].clone()), (401, json!("invalid bearer token")));
    assert!(!response.to_string().contains("s3cret"));

    let sops =
        [("authorization", "Bearer s3cret-token"), ("bkplugin-scope-type", "project"), ("bkplugin-scope-value", "2")];
    let (status, response) = server.post_with("/bk_plugin/invoke/2.0.0", body, &sops).await;
    assert_eq!((status, response["data"]["state"].clone()), (200, json!(4)));
    let denied =
        [("authorization", "Bearer s3cret-token"), ("bkplugin-scope-type", "project"), ("bkplugin-scope-value", "3")];
    let (status, response) = server.post_with("/bk_plugin/invoke/2.0.0", body, &denied).await;
    assert_eq!((status, response), (403, json!({"detail": "You do not have permission to perform this action."})));

    // Another app, not named in allow_scope, is allowed; a forged JWT is not.
    let other = jwt("bkflow");
    let (status, _) = server.post_with("/bk_plugin/invoke/2.0.0", body, &[("x-bkapi-jwt", other.as_str())]).await;
    assert_eq!(status, 200);
    let sops_jwt = jwt("bk_sops");
    let (status, _) = server.post_with("/bk_plugin/invoke/2.0.0", body, &[("x-bkapi-jwt", sops_jwt.as_str())]).await;
    assert_eq!(status, 403, "bk_sops without scope headers");
    let mut forged = other.clone();
    forged.replace_range(forged.len() - 4.., "AAAA");
    let (status, response) =
        server.post_with("/bk_plugin/invoke/2.0.0", body, &[("x-bkapi-jwt", forged.as_str())]).await;
    assert_eq!(status, 401);
    assert!(response["message"].as_str().unwrap().starts_with("X-Bkapi-JWT is invalid"));
    server.stop().await;

    // Open (loopback, no credentials) with allow_scope: the unknown caller gets a clear 403, not a 500.
    let open = TestServer::start(|c| {
        c.allow_scope.insert("hello".into(), json!({"bk_sops": {"type": "project", "value": ["1"]}}));
    })
    .await;
    let (status, response) = open.post("/bk_plugin/invoke/2.0.0", body).await;
    assert_eq!(status, 403);
    assert!(response["detail"].as_str().unwrap().contains("the calling app is unknown"));
    open.stop().await;
}

#[tokio::test]
async fn openapi_metrics_and_health_match_the_server() {
    let server = TestServer::start(|_| {}).await;
    server.invoke("hello", "1.0.0", json!({"name": "x"}), json!({})).await;
    let (status, document) = server.get("/openapi.json").await;
    assert_eq!(status, 200);
    let paths = document["paths"].as_object().unwrap();
    assert!(paths.len() >= 20);
    for (path, operations) in paths {
        let concrete = path
            .replace("{plugin}", "hello")
            .replace("{version}", "2.0.0")
            .replace("{trace_id}", "deadbeef")
            .replace("{token}", "abc")
            .replace("{path}", "greetings");
        for method in operations.as_object().unwrap().keys() {
            let response = match method.as_str() {
                "get" => server.client.get(format!("{}{concrete}", server.base)).send().await.unwrap(),
                _ => server
                    .client
                    .post(format!("{}{concrete}", server.base))
                    .header("content-type", "application/json")
                    .body("{}")
                    .send()
                    .await
                    .unwrap(),
            };
            let (status, body) = support::decode(response).await;
            let fallback = body["message"].as_str().is_some_and(|m| m.starts_with("not found: "));
            assert!(!fallback && status != 405, "{method} {path} is documented but not served: {status} {body}");
        }
    }
    let metrics = server.client.get(format!("{}/metrics", server.base)).send().await.unwrap().text().await.unwrap();
    for name in [
        "plugd_invocations{state=\"SUCCESS\"} ",
        "plugd_execute_duration_seconds_bucket",
        "plugd_due_backlog",
        "plugd_poll_lateness_seconds_count",
        "plugd_outbox_backlog",
    ] {
        assert!(metrics.contains(name), "{name} missing from\n{metrics}");
    }
    assert_eq!(server.get("/healthz").await, (200, json!({"status": "ok"})));
    let (status, body) = server.get("/bk_plugin/invoke/2.0.0").await;
    assert_eq!((status, body["message"].clone()), (405, json!("method GET is not allowed on /bk_plugin/invoke/2.0.0")));
    let (status, body) = server.get("/nope").await;
    assert_eq!((status, body["message"].clone()), (404, json!("not found: /nope")));
    server.stop().await;
}

#[tokio::test]
async fn limits_fail_invocations_with_a_clear_error() {
    let server = TestServer::start(|c| c.max_invoke_count = Some(2)).await;
    let started = server.invoke("countdown", "1.0.0", json!({"from": 5, "interval_ms": 10}), json!({})).await;
    let done = server.wait_final("countdown", started["trace_id"].as_str().unwrap()).await;
    assert_eq!(
        (done["state"].clone(), done["err"].clone()),
        (json!(5), json!("invocation reached the maximum invoke count of 2"))
    );
    server.stop().await;

    let server = TestServer::start(|c| c.deadline = Some(Duration::from_millis(300))).await;
    let started = server.invoke("countdown", "1.0.0", json!({"from": 1000, "interval_ms": 50}), json!({})).await;
    let done = server.wait_final("countdown", started["trace_id"].as_str().unwrap()).await;
    assert_eq!(done["state"], 5);
    assert_eq!(done["err"], "invocation passed its deadline of 300ms after it was accepted");
    // A callback that never comes: the deadline still fails the invocation, on time.
    let waiting = server.invoke("approval", "1.0.0", json!({}), json!({})).await;
    assert_eq!(waiting["data"]["state"], 3);
    let done = server.wait_final("approval", waiting["trace_id"].as_str().unwrap()).await;
    assert_eq!(done["err"], "invocation passed its deadline of 300ms after it was accepted");
    server.stop().await;
}

#[tokio::test]
async fn reports_are_kept_listed_and_served_under_a_strict_policy() {
    let workspace = tempfile::tempdir().unwrap();
    let server = TestServer::start(|c| c.workspace = workspace.path().to_owned()).await;
    let out = workspace.path().join("coverage");
    let done = server.invoke("reporter", "1.0.0", json!({"dir": out.display().to_string()}), json!({})).await;
    let trace_id = done["trace_id"].as_str().unwrap();
    // The plugin's own folder may go away: the server kept a copy.
    std::fs::remove_dir_all(&out).unwrap();
    let (status, listed) = server.get(&format!("/plugins/reporter/bk_plugin/reports/{trace_id}")).await;
    assert_eq!(status, 200);
    let reports = listed["data"].as_array().unwrap();
    assert_eq!(reports.len(), 2);
    assert_eq!(reports[0]["title"], "Coverage");
    assert_eq!(reports[0]["html"], "1-1/index.html");
    assert_eq!(reports[1], json!({"title": "Build", "url": "https://ci.example/build/1"}));
    let html_url = reports[0]["html_url"].as_str().unwrap();
    assert_eq!(html_url, format!("{}/plugins/reporter/bk_plugin/reports/{trace_id}/1-1/index.html", server.base));
    let page = server.client.get(html_url).send().await.unwrap();
    assert_eq!(page.status(), 200);
    assert_eq!(page.headers()["content-type"], "text/html; charset=utf-8");
    assert!(page.headers()["content-security-policy"].to_str().unwrap().contains("default-src 'none'"));
    assert_eq!(page.headers()["x-content-type-options"], "nosniff");
    assert!(page.text().await.unwrap().contains("coverage 93%"));
    let (status, css) = server.get(&format!("/plugins/reporter/bk_plugin/reports/{trace_id}/1-1/css/a.css")).await;
    assert_eq!((status, css), (200, json!("h1 { color: green }")));
    for bad in ["1-1/../../../../etc/passwd", "1-1/missing.html", "..%2f..%2fetc%2fpasswd"] {
        let (status, _) = server.get(&format!("/plugins/reporter/bk_plugin/reports/{trace_id}/{bad}")).await;
        assert_eq!(status, 404, "{bad}");
    }
    let (_, other) = server.get(&format!("/plugins/hello/bk_plugin/reports/{trace_id}")).await;
    assert_eq!(other["result"], false);
    server.stop().await;
}
