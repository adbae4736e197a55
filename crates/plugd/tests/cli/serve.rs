use std::io::BufReader;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::util::{listening_on, read_request, respond_json, try_request, Plugd, Running};

/// A `plugd serve` process on a random port.
pub(crate) struct Server {
    /// None for a copy that only sends requests.
    child: Option<Running>,
    pub(crate) base: String,
}

impl Server {
    pub(crate) fn start(db: &Path, extra: &[&str]) -> Server {
        Server::start_env(db, extra, &[])
    }

    /// The same, with extra environment variables.
    pub(crate) fn start_env(db: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        let mut args = vec!["--default-plugin", "hello"];
        args.extend_from_slice(extra);
        Server::start_binary_env(Path::new(env!("CARGO_BIN_EXE_plugd")), db, &args, env)
    }

    /// `<binary> serve` on a random port: `plugd`, or a plugin project's own binary.
    pub(crate) fn start_binary(binary: &Path, db: &Path, extra: &[&str]) -> Server {
        Server::start_binary_env(binary, db, extra, &[])
    }

    fn start_binary_env(binary: &Path, db: &Path, extra: &[&str], env: &[(&str, &str)]) -> Server {
        Server::start_wrapped(binary, &[], db, extra, env)
    }

    /// `<program> <leading>... serve ...`: `plugd` itself, or a wrapper (`setpriv ... plugd`)
    /// whose last leading argument is the binary.
    pub(crate) fn start_wrapped(
        program: &Path,
        leading: &[&str],
        db: &Path,
        extra: &[&str],
        env: &[(&str, &str)],
    ) -> Server {
        let db = format!("sqlite://{}", db.display());
        let mut args = leading.to_vec();
        args.extend(["serve", "--listen", "127.0.0.1:0", "--db", db.as_str()]);
        args.extend_from_slice(extra);
        let mut plugd = Plugd::with_binary(program, &args);
        for (key, value) in env {
            plugd = plugd.env(key, value);
        }
        let mut child = Running::new(plugd.spawn());
        let base = listening_on(&mut child, "plugd serve starts");
        Server { child: Some(child), base }
    }

    pub(crate) fn get(&self, path: &str) -> Value {
        let (_, body) = try_request("GET", &format!("{}{path}", self.base), "").expect("the server answers");
        serde_json::from_str(&body).unwrap_or(Value::String(body))
    }

    pub(crate) fn invoke(&self, plugin: &str, version: &str, inputs: Value, context: Value) -> Option<Value> {
        let body = json!({"inputs": inputs, "context": context}).to_string();
        let url = format!("{}/plugins/{plugin}/bk_plugin/invoke/{version}", self.base);
        let (status, body) = try_request("POST", &url, &body)?;
        (status == 200).then(|| serde_json::from_str(&body).unwrap())
    }

    pub(crate) fn wait_final(&self, plugin: &str, trace_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        while Instant::now() < deadline {
            let schedule = self.get(&format!("/plugins/{plugin}/bk_plugin/schedule/{trace_id}"));
            if matches!(schedule["data"]["state"].as_u64(), Some(4 | 5)) {
                return schedule["data"].clone();
            }
            std::thread::sleep(Duration::from_millis(25));
        }
        panic!("{plugin} {trace_id} did not finish");
    }

    /// The server's process id.
    pub(crate) fn pid(&self) -> u32 {
        self.child.as_ref().expect("a server this test started").id()
    }

    pub(crate) fn kill_9(mut self) {
        let mut child = self.child.take().unwrap().release();
        child.kill().unwrap();
        child.wait().unwrap();
    }

    fn terminate(mut self) -> i32 {
        let mut child = self.child.take().unwrap().release();
        let status = std::process::Command::new("kill").args(["-TERM", &child.id().to_string()]).status().unwrap();
        assert!(status.success());
        child.wait().unwrap().code().unwrap_or(-1)
    }
}

pub(crate) fn database() -> (tempfile::TempDir, PathBuf) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("plugd.db");
    (dir, path)
}

#[test]
fn a_poll_completes_across_a_graceful_restart() {
    let (_dir, db) = database();
    let server = Server::start(&db, &[]);
    let started = server.invoke("countdown", "1.0.0", json!({"from": 2, "interval_ms": 1500}), json!({})).unwrap();
    assert_eq!(started["data"]["state"], 2);
    let trace_id = started["trace_id"].as_str().unwrap().to_owned();
    assert_eq!(server.terminate(), 0, "SIGTERM is a clean stop");
    let server = Server::start(&db, &[]);
    let done = server.wait_final("countdown", &trace_id);
    assert_eq!((done["state"].clone(), done["outputs"].clone()), (json!(4), json!({"polls": 2})));
}

#[test]
fn kill_9_during_a_burst_loses_no_accepted_invocation() {
    let (_dir, db) = database();
    let server = Server::start(&db, &[]);
    let base = server.base.clone();
    let accepted: Arc<Mutex<Vec<(String, String, Value)>>> = Arc::default();
    let sent = Arc::new(AtomicUsize::new(0));
    let senders: Vec<_> = (0..8)
        .map(|worker| {
            let (accepted, sent, base) = (accepted.clone(), sent.clone(), base.clone());
            std::thread::spawn(move || {
                let server = Server { child: None, base };
                for i in 0.. {
                    let (plugin, version, inputs) = match (worker + i) % 3 {
                        0 => ("countdown", "1.0.0", json!({"from": i % 4, "interval_ms": 100})),
                        1 => ("hello", "2.0.0", json!({"name": format!("n{i}"), "times": 2})),
                        _ => ("approval", "1.0.0", json!({})),
                    };
                    sent.fetch_add(1, Ordering::Relaxed);
                    let Some(response) = server.invoke(plugin, version, inputs.clone(), json!({})) else {
                        return; // The server is gone.
                    };
                    let trace_id = response["trace_id"].as_str().unwrap().to_owned();
                    let mut accepted = accepted.lock().unwrap();
                    accepted.push((plugin.to_owned(), trace_id, json!({"inputs": inputs, "response": response})));
                }
            })
        })
        .collect();
    while sent.load(Ordering::Relaxed) < 300 {
        std::thread::sleep(Duration::from_millis(5));
    }
    server.kill_9();
    for sender in senders {
        sender.join().unwrap();
    }
    let accepted = std::mem::take(&mut *accepted.lock().unwrap());
    assert!(accepted.len() >= 250, "only {} accepted", accepted.len());

    let server = Server::start(&db, &[]);
    for (plugin, _, sent) in &accepted {
        if plugin == "approval" {
            // The signing secret survived the crash: URLs handed out before it still work.
            let url = sent["response"]["data"]["outputs"]["callback_url"].as_str().unwrap();
            let path = url.split_once("/bk_plugin/").unwrap().1;
            let (status, body) =
                try_request("POST", &format!("{}/bk_plugin/{path}", server.base), r#"{"approved": true}"#).unwrap();
            assert_eq!(status, 200, "{body}");
        }
    }
    for (plugin, trace_id, sent) in &accepted {
        let done = server.wait_final(plugin, trace_id);
        assert_eq!(done["state"], 4, "{plugin} {trace_id}: {done}");
        match plugin.as_str() {
            "countdown" => assert_eq!(done["outputs"]["polls"], sent["inputs"]["from"], "{done}"),
            "hello" => assert_eq!(done["outputs"]["messages"].as_array().unwrap().len(), 2),
            _ => assert_eq!(done["outputs"]["approved"], true),
        }
    }
}

/// An HTTP receiver on 127.0.0.1 that answers 500 to the first `failures` requests, then succeeds.
/// While `stalled`, it keeps each request unanswered for 3 s after recording it.
struct Receiver {
    url: String,
    bodies: Arc<Mutex<Vec<(String, String)>>>,
    failures: Arc<AtomicUsize>,
    stalled: Arc<AtomicBool>,
}

impl Receiver {
    fn start(failures: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/node/callback?token=abc", listener.local_addr().unwrap());
        let bodies: Arc<Mutex<Vec<(String, String)>>> = Arc::default();
        let failures = Arc::new(AtomicUsize::new(failures));
        let stalled = Arc::new(AtomicBool::new(false));
        let (seen, left, stall) = (bodies.clone(), failures.clone(), stalled.clone());
        std::thread::spawn(move || {
            for stream in listener.incoming() {
                let Ok(mut stream) = stream else { continue };
                let mut reader = BufReader::new(stream.try_clone().unwrap());
                let (head, body) = read_request(&mut reader).unwrap();
                seen.lock().unwrap().push((head, String::from_utf8(body).unwrap()));
                if stall.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_secs(3));
                }
                let fail = left.load(Ordering::SeqCst) > 0;
                if fail {
                    left.fetch_sub(1, Ordering::SeqCst);
                }
                // Rotate the three ways to fail: an HTTP error, a 200 that says `"result": false`, and a
                // 200 that is not JSON (the Python framework fails those too).
                let reply = match (fail, left.load(Ordering::SeqCst) % 3) {
                    (false, _) => (200, r#"{"result": true}"#),
                    (true, 0) => (200, r#"{"result": false, "message": "not yet"}"#),
                    (true, 1) => (200, "OK"),
                    (true, _) => (500, r#"{"result": false}"#),
                };
                respond_json(&mut stream, reply.0, reply.1);
            }
        });
        Receiver { url, bodies, failures, stalled }
    }

    fn wait_for(&self, requests: usize) -> Vec<(String, String)> {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            let bodies = self.bodies.lock().unwrap().clone();
            if bodies.len() >= requests {
                return bodies;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        panic!("the receiver got {:?}", self.bodies.lock().unwrap());
    }
}

fn context(receiver: &Receiver) -> Value {
    json!({"plugin_callback_info": {"url": receiver.url, "data": {"node": "n1", "k": 1}}})
}

#[test]
fn finish_callbacks_retry_until_delivered() {
    let receiver = Receiver::start(3);
    let (_dir, db) = database();
    let server = Server::start(&db, &["--finish-callback-backoff", "100ms"]);
    let started =
        server.invoke("countdown", "1.0.0", json!({"from": 1, "interval_ms": 10}), context(&receiver)).unwrap();
    server.wait_final("countdown", started["trace_id"].as_str().unwrap());
    let requests = receiver.wait_for(4);
    for (head, body) in &requests {
        assert!(head.starts_with("POST /node/callback?token=abc HTTP/1.1"), "{head}");
        assert!(head.to_ascii_lowercase().contains("content-type: application/json"), "{head}");
        assert_eq!(serde_json::from_str::<Value>(body).unwrap(), json!({"node": "n1", "k": 1}));
    }
    std::thread::sleep(Duration::from_millis(500));
    assert_eq!(receiver.bodies.lock().unwrap().len(), 4, "delivered once it succeeded");

    // A synchronous end sends none, as in the Python framework.
    let sync = server.invoke("countdown", "1.0.0", json!({"from": 0}), context(&receiver)).unwrap();
    assert_eq!(sync["data"]["state"], 4);
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(receiver.bodies.lock().unwrap().len(), 4);
}

#[test]
fn finish_callbacks_resume_after_a_crash() {
    let receiver = Receiver::start(usize::MAX);
    // The kill lands while an attempt is in flight (the receiver has the request, the server has not
    // recorded its outcome): that delivery is retried once its lease (timeout + 5 s) runs out.
    receiver.stalled.store(true, Ordering::SeqCst);
    let (_dir, db) = database();
    let server = Server::start(
        &db,
        &["--finish-callback-backoff", "200ms", "--finish-callback-attempts", "50", "--finish-callback-timeout", "2s"],
    );
    let started =
        server.invoke("countdown", "1.0.0", json!({"from": 1, "interval_ms": 10}), context(&receiver)).unwrap();
    let trace_id = started["trace_id"].as_str().unwrap().to_owned();
    receiver.wait_for(1);
    server.kill_9();
    receiver.stalled.store(false, Ordering::SeqCst);
    receiver.failures.store(0, Ordering::SeqCst);
    let seen = receiver.bodies.lock().unwrap().len();
    let server = Server::start(&db, &["--finish-callback-backoff", "200ms"]);
    receiver.wait_for(seen + 1);
    let metrics = server.get("/metrics");
    let deadline = Instant::now() + Duration::from_secs(10);
    let mut metrics = metrics.as_str().unwrap().to_owned();
    while !metrics.contains("plugd_outbox_backlog 0") && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
        metrics = server.get("/metrics").as_str().unwrap().to_owned();
    }
    assert!(metrics.contains("plugd_outbox_backlog 0"), "{metrics}");
    assert_eq!(server.get(&format!("/plugins/countdown/bk_plugin/schedule/{trace_id}"))["data"]["state"], 4);
}

#[test]
fn bad_serve_configuration_is_a_usage_error() {
    let (dir, db) = database();
    let db_url = format!("sqlite://{}", db.display());
    let out = Plugd::new(&["serve", "--db", &db_url, "--default-plugin", "nope"]).run().assert_code(2);
    assert!(
        out.stderr.ends_with(
            "error: --default-plugin \"nope\" is not served; available plugins: approval, countdown, hello\n"
        ),
        "{}",
        out.stderr
    );
    let out = Plugd::new(&["serve", "--db", &db_url, "--callback-base", "bkapi.example.com/prod"]).run().assert_code(2);
    assert!(
        out.stderr
            .ends_with("error: --callback-base \"bkapi.example.com/prod\": expected an http:// or https:// URL\n"),
        "{}",
        out.stderr
    );
    let out = Plugd::new(&["serve", "--db", &db_url, "--listen", "0.0.0.0:0"]).run().assert_code(2);
    assert!(out.stderr.contains("requires authentication"), "{}", out.stderr);
    let scope = dir.path().join("scope.json");
    std::fs::write(&scope, "{\"hello\": {\"bk_sops\": {\"type\": \"project\", \"value\": [1]}}}").unwrap();
    let out = Plugd::new(&["serve", "--db", &db_url, "--allow-scope", scope.to_str().unwrap()]).run().assert_code(2);
    assert!(out.stderr.ends_with("/hello/bk_sops/value: expected an array of strings\n"), "{}", out.stderr);
    std::fs::write(&scope, "{\"hello\": \n oops}").unwrap();
    let out = Plugd::new(&["serve", "--db", &db_url, "--allow-scope", scope.to_str().unwrap()]).run().assert_code(2);
    assert!(out.stderr.contains(": line 2 column 2: "), "{}", out.stderr);
    let out = Plugd::new(&["serve", "--db", &db_url])
        .env("PLUGD_AUTH_TOKENS", "ci:tok,secret-without-app")
        .run()
        .assert_code(2);
    assert_eq!(out.stderr, "error: PLUGD_AUTH_TOKENS: entry 2 is not APP:TOKEN\n");
    // One token for two apps: a caller of one would be taken for the other. The token is never echoed.
    let tokens = dir.path().join("tokens");
    std::fs::write(&tokens, "bk_sops: s3cret-shared\n").unwrap();
    let out = Plugd::new(&["serve", "--db", &db_url, "--auth-tokens-file", tokens.to_str().unwrap()])
        .env("PLUGD_AUTH_TOKENS", "ci:s3cret-shared ")
        .run()
        .assert_code(2);
    assert_eq!(
        out.stderr,
        "error: the same token is configured for apps \"ci\" and \"bk_sops\": give each app a token of its own\n"
    );
    let out = Plugd::new(&["serve", "--db", "/nonexistent/dir/plugd.db"]).run().assert_code(1);
    assert!(out.stderr.contains("cannot open the database /nonexistent/dir/plugd.db"), "{}", out.stderr);
}

#[test]
fn apigw_resources_forward_to_routes_the_server_answers() {
    let out = Plugd::new(&["apigw", "resources", "--plugin", "countdown"]).run().assert_code(0);
    let document: Value = serde_yaml_ng::from_str(&out.stdout).unwrap();
    let paths = document["paths"].as_object().unwrap();
    let mut names: Vec<&str> = paths
        .values()
        .flat_map(|methods| methods.as_object().unwrap().values())
        .map(|operation| operation["operationId"].as_str().unwrap())
        .collect();
    // In the route table's order; the gateway imports them in any.
    names.sort_unstable();
    assert_eq!(names, ["callback", "detail", "invoke", "meta", "plugin_api", "plugin_api_dispatch", "schedule"]);
    let (_dir, db) = database();
    let server = Server::start(&db, &[]);
    for methods in paths.values() {
        for (method, operation) in methods.as_object().unwrap() {
            let resource = &operation["x-bk-apigateway-resource"];
            let backend = resource["backend"]["path"].as_str().unwrap();
            assert!(backend.starts_with("/plugins/countdown/bk_plugin/"), "{backend}");
            let mut path = backend.replace("{version}", "1.0.0").replace("{trace_id}", "0").replace("{token}", "x");
            if resource["matchSubpath"] == true {
                path.push_str("greetings");
            }
            let method = if method == "x-bk-apigateway-method-any" { "GET" } else { &method.to_uppercase() };
            let (status, body) = crate::util::try_request(method, &format!("{}{path}", server.base), "{}").unwrap();
            assert!(!body.contains("not found: /") && status != 405, "{method} {path}: {status} {body}");
        }
    }
    let out = Plugd::new(&["apigw", "resources", "--plugin", "nope"]).run().assert_code(2);
    assert!(out.stderr.contains("error: --plugin \"nope\" is not a plugin"), "{}", out.stderr);
}
