//! The OpenAPI document against the real server: every answer below, successes and failures of every
//! route, has a status the document lists for its operation and a body its schema accepts.
//! (`.ci/schemathesis` does the same with generated requests.)

use plugd_server::AuthConfig;
use serde_json::{json, Map, Value};

use crate::support::TestServer;

/// The schema with every `$ref` to `#/components/schemas/...` replaced by what it names.
fn inline(schema: &Value, components: &Map<String, Value>) -> Value {
    match schema {
        Value::Object(object) => {
            if let Some(reference) = object.get("$ref").and_then(Value::as_str) {
                let name = reference.strip_prefix("#/components/schemas/").expect("a component reference");
                return inline(&components[name], components);
            }
            Value::Object(object.iter().map(|(k, v)| (k.clone(), inline(v, components))).collect())
        }
        Value::Array(items) => Value::Array(items.iter().map(|v| inline(v, components)).collect()),
        other => other.clone(),
    }
}

/// Whether `concrete` (a request path) is an instance of `template` (a document path).
fn matches(template: &str, concrete: &str) -> bool {
    let concrete = concrete.split('?').next().unwrap_or_default();
    let concrete = concrete.strip_suffix('/').filter(|c| !c.is_empty()).unwrap_or(concrete);
    let (mut t, mut c) = (template.split('/'), concrete.split('/'));
    loop {
        match (t.next(), c.next()) {
            (None, None) => return true,
            (Some("{path}"), Some(segment)) => return !segment.is_empty(),
            (Some(pattern), Some(segment)) if pattern.starts_with('{') => {
                if segment.is_empty() {
                    return false;
                }
            }
            (Some(pattern), Some(segment)) if pattern == segment => {}
            _ => return false,
        }
    }
}

/// Checks an answer against the document: the status is listed (or `default` is), and a JSON body
/// matches the listed schema.
pub(crate) fn check(document: &Value, method: &str, path: &str, status: u16, body: &Value) {
    let components = document["components"]["schemas"].as_object().unwrap();
    let operation = document["paths"]
        .as_object()
        .unwrap()
        .iter()
        .filter(|(template, _)| matches(template, path))
        .find_map(|(_, item)| item.get(method))
        .unwrap_or_else(|| panic!("{method} {path} is not in the document"));
    let responses = &operation["responses"];
    let response = responses
        .get(status.to_string())
        .or_else(|| responses.get("default"))
        .unwrap_or_else(|| panic!("{method} {path} answered {status}, which the document does not list: {body}"));
    if let Some(schema) = response["content"].get("application/json").map(|c| &c["schema"]) {
        let schema = inline(schema, components);
        let validator = jsonschema::draft202012::new(&schema).unwrap();
        let errors: Vec<String> = validator.iter_errors(body).map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{method} {path} {status}: {body} does not match {schema}: {errors:?}");
    }
}

/// Method, path (below the server), body, headers.
type Request<'a> = (&'a str, String, String, &'a [(&'a str, &'a str)]);

#[tokio::test]
async fn every_answer_matches_the_document() {
    let server = TestServer::start(|_| {}).await;
    let (status, document) = server.get("/openapi.json").await;
    assert_eq!((status, document["openapi"].clone()), (200, json!("3.1.0")));
    // An open server asks for no credentials.
    let invoke = &document["paths"]["/bk_plugin/invoke/{version}"]["post"];
    assert!(invoke.get("security").is_none() && invoke["responses"].get("401").is_none(), "{invoke}");

    let done = server.invoke("hello", "2.0.0", json!({"name": "x"}), json!({})).await;
    let done = done["trace_id"].as_str().unwrap().to_owned();
    let waiting = server.invoke("approval", "1.0.0", json!({}), json!({})).await;
    let callback = waiting["data"]["outputs"]["callback_url"].as_str().unwrap().to_owned();
    let callback = callback.strip_prefix(&server.base).unwrap().to_owned();
    let waiting = waiting["trace_id"].as_str().unwrap().to_owned();
    let pending = server.invoke("approval", "1.0.0", json!({}), json!({})).await;
    let pending = pending["trace_id"].as_str().unwrap().to_owned();
    let unknown = "0123456789abcdef0123456789abcdef";

    let json = [("content-type", "application/json")];
    let text = [("content-type", "text/plain")];
    let foreign = [("host", "evil.example")];
    let requests: Vec<Request> = vec![
        ("GET", "/bk_plugin/meta".into(), String::new(), &[]),
        ("GET", "/plugins/countdown/bk_plugin/meta/".into(), String::new(), &[]),
        ("GET", "/plugins/nope/bk_plugin/meta".into(), String::new(), &[]),
        ("GET", "/bk_plugin/meta".into(), String::new(), &foreign),
        ("DELETE", "/bk_plugin/meta".into(), String::new(), &[]),
        ("GET", "/bk_plugin/detail/1.0.0".into(), String::new(), &[]),
        ("GET", "/bk_plugin/detail/9.9.9".into(), String::new(), &[]),
        ("POST", "/bk_plugin/invoke/2.0.0".into(), r#"{"inputs": {"name": "y"}, "context": {}}"#.into(), &json),
        ("POST", "/bk_plugin/invoke/2.0.0".into(), r#"{"inputs": {}, "context": {}}"#.into(), &json),
        ("POST", "/bk_plugin/invoke/2.0.0".into(), r#"{"inputs": {}}"#.into(), &json),
        ("POST", "/bk_plugin/invoke/2.0.0".into(), "not json".into(), &json),
        ("POST", "/bk_plugin/invoke/2.0.0".into(), r#"{"inputs": {}, "context": {}}"#.into(), &text),
        ("POST", "/bk_plugin/invoke/9.9.9".into(), r#"{"inputs": {}, "context": {}}"#.into(), &json),
        ("GET", "/bk_plugin/invoke/2.0.0".into(), String::new(), &[]),
        ("GET", format!("/bk_plugin/schedule/{done}"), String::new(), &[]),
        ("GET", format!("/plugins/approval/bk_plugin/schedule/{waiting}/"), String::new(), &[]),
        ("GET", format!("/bk_plugin/schedule/{unknown}"), String::new(), &[]),
        ("GET", format!("/bk_plugin/logs/{done}"), String::new(), &[]),
        ("GET", format!("/bk_plugin/logs/{unknown}"), String::new(), &[]),
        ("GET", format!("/bk_plugin/reports/{done}"), String::new(), &[]),
        ("GET", format!("/bk_plugin/reports/{unknown}"), String::new(), &[]),
        ("GET", format!("/bk_plugin/reports/{done}/nope.html"), String::new(), &[]),
        ("POST", callback.clone(), "not json".into(), &json),
        ("POST", callback.clone(), r#"{"approved": true}"#.into(), &text),
        ("POST", callback.clone(), r#"{"approved": true}"#.into(), &json),
        ("POST", callback, r#"{"approved": true}"#.into(), &json),
        ("POST", "/bk_plugin/callback/abc".into(), "{}".into(), &json),
        ("POST", format!("/plugins/approval/bk_plugin/cancel/{pending}"), "{}".into(), &json),
        ("POST", format!("/plugins/approval/bk_plugin/cancel/{pending}"), "{}".into(), &json),
        ("POST", format!("/bk_plugin/cancel/{unknown}"), "{}".into(), &json),
        (
            "POST",
            "/bk_plugin/plugin_api_dispatch".into(),
            r#"{"url": "/bk_plugin/plugin_api/greetings", "method": "GET", "data": {"prefix": "h"}}"#.into(),
            &json,
        ),
        ("POST", "/bk_plugin/plugin_api_dispatch".into(), r#"{"url": "/elsewhere", "method": "get"}"#.into(), &json),
        (
            "POST",
            "/bk_plugin/plugin_api_dispatch".into(),
            r#"{"url": "/bk_plugin/plugin_api/nope", "method": "get"}"#.into(),
            &json,
        ),
        ("GET", "/bk_plugin/plugin_api/greetings?prefix=b".into(), String::new(), &[]),
        ("GET", "/bk_plugin/plugin_api/nope".into(), String::new(), &[]),
        ("POST", "/bk_plugin/plugin_api/nope".into(), "{}".into(), &json),
        ("GET", "/healthz".into(), String::new(), &[]),
        ("GET", "/metrics".into(), String::new(), &[]),
        ("GET", "/openapi.json".into(), String::new(), &[]),
        ("PUT", "/healthz".into(), String::new(), &[]),
    ];
    let mut statuses = std::collections::BTreeSet::new();
    for (method, path, body, headers) in requests {
        let (status, answer) = server.request_url(method, &format!("{}{path}", server.base), &body, headers).await;
        statuses.insert(status);
        // An undocumented method is answered 405 on the path's documented operations.
        let documented =
            if method == "DELETE" || method == "PUT" || path == "/bk_plugin/invoke/2.0.0" && method == "GET" {
                "get_or_post"
            } else {
                method
            };
        match documented {
            "get_or_post" => {
                assert_eq!(status, 405, "{method} {path}: {answer}");
                let listed = if path.contains("invoke") { "post" } else { "get" };
                check(&document, listed, &path, status, &answer);
            }
            _ => check(&document, &method.to_ascii_lowercase(), &path, status, &answer),
        }
    }
    // The answers above cover these statuses.
    for status in [200, 400, 403, 404, 405, 409, 415] {
        assert!(statuses.contains(&status), "no request above answered {status}: {statuses:?}");
    }
    server.stop().await;
}

#[tokio::test]
async fn a_server_with_credentials_documents_them() {
    let tokens = AuthConfig { tokens: vec![("ci".into(), "s3cret-token".into())], ..Default::default() };
    let server = TestServer::start(|c| c.auth = tokens).await;
    let (_, document) = server.get("/openapi.json").await;
    let invoke = &document["paths"]["/bk_plugin/invoke/{version}"]["post"];
    assert_eq!(invoke["security"], json!([{"bearer": []}, {"apigw": []}]));
    let meta = &document["paths"]["/bk_plugin/meta"]["get"];
    assert!(meta.get("security").is_none() && meta["responses"].get("401").is_none(), "{meta}");
    // Only an open server refuses foreign hosts.
    assert!(meta["responses"].get("403").is_none(), "{meta}");
    let body = r#"{"inputs": {"name": "x"}, "context": {}}"#;
    for headers in [&[][..], &[("authorization", "Bearer wrong")][..]] {
        let (status, answer) = server.post_with("/bk_plugin/invoke/2.0.0", body, headers).await;
        assert_eq!(status, 401);
        check(&document, "post", "/bk_plugin/invoke/2.0.0", status, &answer);
    }
    let (status, answer) =
        server.post_with("/bk_plugin/invoke/2.0.0", body, &[("authorization", "Bearer s3cret-token")]).await;
    assert_eq!(status, 200);
    check(&document, "post", "/bk_plugin/invoke/2.0.0", status, &answer);
    server.stop().await;
}
