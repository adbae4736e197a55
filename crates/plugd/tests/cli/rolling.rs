//! A rolling deploy on PostgreSQL (`PLUGD_TEST_POSTGRES_URL`; skipped, saying so, when unset): three
//! nodes that serve different versions of a process plugin, one stopped and one killed midway, each
//! brought back. Every invocation ends SUCCESS on the version it asked for, none fails, and every
//! node answers the same for every invocation.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use plugd_store_tests::TestDatabase;
use serde_json::{json, Value};

use crate::util::{serve_in_workspace, try_request, Plugd, Running};

/// Invocations of each version.
const EACH: usize = 20;

/// A `waiter` version: polls three times (`interval` seconds apart), then succeeds with the version
/// that ran it; with `approve`, waits for a callback instead (its URL in the outputs), then succeeds.
fn waiter(root: &Path, version: &str) -> PathBuf {
    let dir = root.join(format!("waiter-{version}"));
    std::fs::create_dir_all(&dir).unwrap();
    let manifest = format!(
        "id: waiter\nversion: {version}\ndescription: Polls three times.\n\
         inputs:\n  properties:\n    interval: {{type: number}}\n    approve: {{type: boolean}}\n  required: [interval]\n\
         outputs:\n  properties:\n    callback_url: {{type: string}}\n    version: {{type: string}}\n    polls: {{type: integer}}\n\
         entry:\n  start: [/bin/sh, \"${{PLUGD_PLUGIN_DIR}}/run.sh\"]\n  env: {{WAITER_VERSION: {version}}}\n"
    );
    std::fs::write(dir.join("plugin.yaml"), manifest).unwrap();
    let script = r#"if [ "${PLUGD_INPUT_APPROVE-false}" = true ] && [ "$PLUGD_INVOKE_COUNT" -eq 1 ]; then
  echo "{\"status\": \"callback\", \"outputs\": {\"callback_url\": \"$PLUGD_CALLBACK_URL\"}}" > "$PLUGD_RESULT_FILE"
elif [ "${PLUGD_INPUT_APPROVE-false}" != true ] && [ "$PLUGD_INVOKE_COUNT" -lt 4 ]; then
  echo "{\"status\": \"poll\", \"poll_interval\": $PLUGD_INPUT_INTERVAL}" > "$PLUGD_RESULT_FILE"
else
  echo "{\"status\": \"success\", \"outputs\": {\"version\": \"$WAITER_VERSION\", \"polls\": 3}}" > "$PLUGD_RESULT_FILE"
fi
"#;
    std::fs::write(dir.join("run.sh"), script).unwrap();
    dir
}

struct Node {
    child: Option<Running>,
    base: String,
}

impl Node {
    fn start(db: &str, workspace: &Path, plugins: &[&Path]) -> Node {
        let mut extra = vec!["--lease", "2s", "--workers", "16"];
        let folders: Vec<String> = plugins.iter().map(|p| p.display().to_string()).collect();
        for folder in &folders {
            extra.extend(["--plugins", folder]);
        }
        let (child, base) = serve_in_workspace(db, workspace, &extra, "plugd serve starts on PostgreSQL");
        Node { child: Some(child), base }
    }

    fn get(&self, path: &str) -> (u16, Value) {
        let (status, body) = try_request("GET", &format!("{}{path}", self.base), "").expect("the node answers");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn invoke(&self, version: &str) -> (u16, Value) {
        // Long enough that A stops before the invocations end.
        self.invoke_with(version, json!({"interval": 2}))
    }

    fn invoke_with(&self, version: &str, inputs: Value) -> (u16, Value) {
        let url = format!("{}/plugins/waiter/bk_plugin/invoke/{version}", self.base);
        let body = json!({"inputs": inputs}).to_string();
        let (status, body) = try_request("POST", &url, &body).expect("invoke answers");
        (status, serde_json::from_str(&body).unwrap())
    }

    fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let url = format!("{}{path}", self.base);
        let (status, body) = try_request("POST", &url, &body.to_string()).expect("the node answers");
        (status, serde_json::from_str(&body).unwrap_or(Value::Null))
    }

    fn schedule(&self, trace_id: &str) -> Value {
        let (status, reply) = self.get(&format!("/plugins/waiter/bk_plugin/schedule/{trace_id}"));
        assert_eq!((status, &reply["result"]), (200, &json!(true)), "{reply}");
        reply["data"].clone()
    }

    /// Stops the node as a deploy does (SIGTERM), and waits for it.
    fn stop(&mut self) {
        assert_eq!(self.child.take().expect("the node runs").terminate(), 0);
    }

    /// Kills the node (SIGKILL).
    fn kill(&mut self) {
        let mut child = self.child.take().expect("the node runs").release();
        child.kill().unwrap();
        child.wait().unwrap();
    }
}

/// The invocation once it ended (within a minute).
fn wait_final(node: &Node, trace_id: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let data = node.schedule(trace_id);
        if data["state"] == 4 || data["state"] == 5 {
            return data;
        }
        assert!(Instant::now() < deadline, "{trace_id} did not finish: {data}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

fn db_status(url: &str) -> Value {
    Plugd::new(&["db", "status", "--db", url, "--json"]).run().assert_code(0).json()
}

fn unserved(status: &Value) -> Vec<(String, u64)> {
    status["unserved_due"]
        .as_array()
        .unwrap()
        .iter()
        .map(|g| {
            (
                format!("{}@{}", g["plugin"].as_str().unwrap(), g["version"].as_str().unwrap()),
                g["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[test]
fn a_rolling_deploy_of_three_nodes_that_serve_different_versions_fails_nothing() {
    let rt = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let Some(database) = rt.block_on(TestDatabase::create("a_rolling_deploy_fails_nothing")) else {
        return;
    };
    let url = database.url().to_owned();
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (waiter(dir.path(), "1.0.0"), waiter(dir.path(), "1.1.0"));
    let ws = |name: &str| dir.path().join(name);
    // A serves both versions, B only the old one, C no waiter at all.
    let mut a = Node::start(&url, &ws("a"), &[&old, &new]);
    let mut b = Node::start(&url, &ws("b"), &[&old]);
    let c = Node::start(&url, &ws("c"), &[]);

    // invoke and detail of a version a node does not serve stay 404 there.
    assert_eq!(b.invoke("1.1.0").0, 404);
    assert_eq!(c.invoke("1.0.0").0, 404);
    assert_eq!(c.get("/plugins/waiter/bk_plugin/detail/1.0.0").0, 404);

    let mut accepted: Vec<(String, &str)> = Vec::new();
    for i in 0..EACH {
        for (node, version) in [(&a, "1.1.0"), (if i % 2 == 0 { &a } else { &b }, "1.0.0")] {
            let (status, reply) = node.invoke(version);
            assert_eq!(status, 200, "{reply}");
            accepted.push((reply["trace_id"].as_str().unwrap().to_owned(), version));
        }
    }

    // Two 1.1.0 invocations wait for a callback: one will be approved, one cancelled, both through C.
    let waiting_for = |node: &Node| {
        let (status, reply) = node.invoke_with("1.1.0", json!({"interval": 2, "approve": true}));
        assert_eq!(status, 200, "{reply}");
        let trace_id = reply["trace_id"].as_str().unwrap().to_owned();
        let url = node.schedule(&trace_id)["outputs"]["callback_url"].as_str().unwrap().to_owned();
        (trace_id, url)
    };
    let ((approved, callback_url), (cancelled, _)) = (waiting_for(&a), waiting_for(&a));

    // A stops for its upgrade: 1.1.0 is served by no live node, and waits (nothing fails).
    a.stop();
    let status = db_status(&url);
    let live: Vec<&Value> = status["nodes"].as_array().unwrap().iter().filter(|n| n["live"] == true).collect();
    assert_eq!(live.len(), 2, "{status:#}");
    assert!(live
        .iter()
        .all(|n| n["schema_version"].as_i64() > Some(0) && n["plugd_version"] == env!("CARGO_PKG_VERSION")));
    let deadline = Instant::now() + Duration::from_secs(20);
    let waiting = loop {
        let status = db_status(&url);
        let waiting = unserved(&status);
        if waiting.iter().any(|(key, n)| key == "waiter@1.1.0" && *n > 0) {
            break waiting;
        }
        assert!(Instant::now() < deadline, "no unserved 1.1.0 invocations shown: {status:#}");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert!(waiting.iter().all(|(key, _)| key == "waiter@1.1.0"), "{waiting:?}");
    let (_, metrics) = try_request("GET", &format!("{}/metrics", c.base), "").unwrap();
    let gauge = metrics.lines().find(|l| l.starts_with("plugd_unserved_due_invocations ")).expect("the gauge");
    assert_ne!(gauge, "plugd_unserved_due_invocations 0", "{metrics}");
    let text = Plugd::new(&["db", "status", "--db", &url]).run().assert_code(0).stdout;
    assert!(text.contains("nodes:           2 live, 1 dead"), "{text}");
    assert!(text.contains("waiter@1.1.0  "), "{text}");
    // C, which serves no waiter, answers for them from the store; and they wait, not fail.
    for (trace_id, version) in &accepted {
        let data = c.schedule(trace_id);
        assert_eq!(data["plugin_version"], *version, "{data}");
        assert_ne!(data["state"], 5, "{trace_id} failed while its version was away: {data}");
    }

    // C takes the callback and the cancel of invocations of a plugin it does not serve, and shows logs.
    let path = callback_url.split_once("/bk_plugin/").unwrap().1;
    let (status, reply) = c.post(&format!("/bk_plugin/{path}"), &json!({"approved": true}));
    assert_eq!((status, &reply["message"]), (200, &json!("callback success")), "{reply}");
    let (status, reply) = c.post(&format!("/plugins/waiter/bk_plugin/cancel/{cancelled}"), &json!({}));
    assert_eq!((status, &reply["data"]["state"]), (200, &json!(5)), "{reply}");
    let (status, reply) = c.get(&format!("/plugins/waiter/bk_plugin/logs/{approved}"));
    assert_eq!((status, &reply["result"]), (200, &json!(true)), "{reply}");
    assert_eq!(c.schedule(&approved)["state"], 3, "it waits for a node that serves 1.1.0 to run the callback");
    // A plugin served nowhere, and a trace id of another plugin, stay unknown.
    assert_eq!(c.get(&format!("/plugins/nope/bk_plugin/schedule/{approved}")).0, 404);

    // A comes back with both versions; B is killed mid-run and comes back too.
    let a2 = Node::start(&url, &ws("a"), &[&old, &new]);
    b.kill();
    let b2 = Node::start(&url, &ws("b"), &[&old]);
    for (trace_id, version) in &accepted {
        let data = wait_final(&a2, trace_id);
        assert_eq!((&data["state"], &data["outputs"]["version"]), (&json!(4), &json!(version)), "{data}");
        // Every node answers the same, whatever it serves.
        assert_eq!(b2.schedule(trace_id), data);
        assert_eq!(c.schedule(trace_id), data);
    }
    let approved = wait_final(&b2, &approved);
    assert_eq!((&approved["state"], &approved["outputs"]["version"]), (&json!(4), &json!("1.1.0")), "{approved}");
    let cancelled = wait_final(&b2, &cancelled);
    assert_eq!((&cancelled["state"], &cancelled["err"]), (&json!(5), &json!("cancelled by request")), "{cancelled}");
    assert!(unserved(&db_status(&url)).is_empty());

    // None was recorded twice.
    let duplicates = rt.block_on(database.invocations_with_executes_recorded_wrongly());
    assert_eq!(duplicates, 0, "an execute was recorded twice");
    drop((a2, b2, c));
    rt.block_on(database.drop_database());
}
