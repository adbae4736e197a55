//! The Python host pool of a real bk-plugin project (the fixture of crates/plugd/tests), driven
//! through `DynPlugin` directly: pydantic's messages, POLL and CALLBACK outcomes, storage, threads.
//!
//! Needs the virtualenv with pydantic that the command-line tests create under `target/`
//! (`.ci/run` prepares it); says SKIPPED without it.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use plugd_process::{load_bk, ProcessOptions, PythonOptions};
use plugd_sdk::{ApiMethod, ApiReply, ApiRequest, ExecuteError, ExecuteRequest, Outcome, PluginError, State};
use serde_json::{json, Map, Value};

fn python() -> Option<PathBuf> {
    let python = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../bk-python-venv/bin/python");
    let ok =
        std::process::Command::new(&python).args(["-c", "import pydantic"]).output().is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: no virtualenv with pydantic at {} (run .ci/run or the plugd cli tests)", python.display());
    }
    ok.then_some(python)
}

fn fixture() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../plugd/tests/fixtures/bk-plugin-demo")
}

fn request(inputs: Value, context: Value, state: State, storage: Map<String, Value>) -> ExecuteRequest {
    ExecuteRequest {
        trace_id: "0d4e45b7602f435e909c7e36bc971927".into(),
        state,
        invoke_count: if state == State::Empty { 1 } else { 2 },
        inputs,
        context,
        storage,
        outputs: Map::new(),
        callback: None,
        callbacks: Arc::new(plugd_core::SignedCallbacks::new(b"secret", "http://127.0.0.1:1/bk_plugin/callback/")),
    }
}

#[tokio::test]
async fn versions_run_in_the_pool_with_pydantic_messages() {
    let Some(python) = python() else { return };
    let options = ProcessOptions { default_timeout: Duration::from_secs(30), ..ProcessOptions::default() };
    let python = PythonOptions { python: Some(python), hosts: Some(1), threads: Some(4), ..PythonOptions::default() };
    let project = load_bk(&fixture(), &options, &python).unwrap();
    assert_eq!(project.code(), "bk-plugin-demo");
    assert_eq!(project.description(), "hello plugin (bench peer for the Rust reimplementation)");
    let plugins = project.plugins();
    let version = |v: &str| plugins.iter().find(|p| p.info().version == v).unwrap().clone();
    assert!(version("1.0.0").validates_inputs());
    assert_eq!(version("1.0.0").info().description, "sync hello");

    let ok = version("1.0.0").execute(request(json!({"name": 1}), json!({}), State::Empty, Map::new())).await;
    assert_eq!((ok.result.unwrap(), Value::Object(ok.outputs)), (Outcome::Success, json!({"greeting": "hello 1"})));
    let missing = version("1.0.0").execute(request(json!({}), json!({}), State::Empty, Map::new())).await;
    assert_eq!(
        missing.result.unwrap_err(),
        ExecuteError::Inputs("1 validation error for Inputs\nname\n  field required (type=value_error.missing)".into())
    );
    let context = version("1.3.0").execute(request(json!({"name": "x"}), json!({}), State::Empty, Map::new())).await;
    assert!(matches!(context.result, Err(ExecuteError::Context(ref m)) if m.contains("executor\n  field required")));
    let failed = version("1.3.0")
        .execute(request(json!({"name": "error"}), json!({"executor": "a"}), State::Empty, Map::new()))
        .await;
    assert_eq!(
        failed.result.unwrap_err(),
        ExecuteError::Plugin(PluginError::Failed("name must not be 'error'".into()))
    );

    // POLL, storage written by the first execute, then SUCCESS.
    let first = version("1.1.0").execute(request(json!({"name": "w"}), json!({}), State::Empty, Map::new())).await;
    assert_eq!(first.result.unwrap(), Outcome::Poll(Duration::from_secs(1)));
    assert_eq!(Value::Object(first.storage.clone()), json!({"first_invoke_count": 1}));
    let second = version("1.1.0").execute(request(json!({"name": "w"}), json!({}), State::Poll, first.storage)).await;
    assert_eq!(second.result.unwrap(), Outcome::Success);

    // CALLBACK: the prepared URL is plugd's signed one.
    let waiting = version("1.2.0").execute(request(json!({"name": "w"}), json!({}), State::Empty, Map::new())).await;
    assert_eq!(waiting.result.unwrap(), Outcome::Callback);
    assert!(waiting.outputs["callback_url"].as_str().unwrap().starts_with("http://127.0.0.1:1/bk_plugin/callback/"));
    assert_eq!(waiting.storage["callback_id"], waiting.outputs["callback_id"]);

    // Many at once on one host's threads.
    let runs = (0..20).map(|i| {
        let plugin = version("1.0.0");
        async move { plugin.execute(request(json!({"name": i}), json!({}), State::Empty, Map::new())).await }
    });
    for (i, done) in futures_join(runs).await.into_iter().enumerate() {
        assert_eq!(done.outputs["greeting"], format!("hello {i}"));
    }
}

async fn futures_join<F>(futures: impl Iterator<Item = F>) -> Vec<F::Output>
where
    F: std::future::Future + Send + 'static,
    F::Output: Send + 'static,
{
    let handles: Vec<_> = futures.map(tokio::spawn).collect();
    let mut out = Vec::new();
    for handle in handles {
        out.push(handle.await.unwrap());
    }
    out
}

const CRASHER: &str = r#"
import os
import time

from bk_plugin_framework.kit import InputsModel, Plugin


class Crasher(Plugin):
    class Meta:
        version = "9.0.0"

    class Inputs(InputsModel):
        mode: str = "ok"

    def execute(self, inputs, context):
        if inputs.mode == "crash":
            time.sleep(0.1)
            os._exit(3)
        time.sleep(30 if inputs.mode == "stuck" else 0.3)
"#;

#[tokio::test]
async fn a_crash_fails_its_execute_only_and_a_timeout_kills_the_host() {
    let Some(python) = python() else { return };
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("crasher");
    std::fs::create_dir_all(dir.join("bk_plugin/versions")).unwrap();
    std::fs::write(dir.join("bk_plugin/__init__.py"), "").unwrap();
    std::fs::write(dir.join("bk_plugin/meta.py"), "description = 'x'\n").unwrap();
    std::fs::write(dir.join("bk_plugin/versions/__init__.py"), "").unwrap();
    std::fs::write(dir.join("bk_plugin/versions/v9.py"), CRASHER).unwrap();
    let options = ProcessOptions { default_timeout: Duration::from_secs(2), ..ProcessOptions::default() };
    let python = PythonOptions { python: Some(python), hosts: Some(1), threads: Some(8), ..PythonOptions::default() };
    let project = load_bk(&dir, &options, &python).unwrap();
    let plugin = project.plugins()[0].clone();
    let runs = (0..8).map(|i| {
        let plugin = plugin.clone();
        let mode = if i == 3 { "crash" } else { "ok" };
        async move { plugin.execute(request(json!({"mode": mode}), json!({}), State::Empty, Map::new())).await }
    });
    for (i, done) in futures_join(runs).await.into_iter().enumerate() {
        if i == 3 {
            let Err(ExecuteError::Plugin(PluginError::Unexpected(message))) = done.result else { panic!("{done:?}") };
            assert!(message.starts_with("the Python host exited (exit code 3)"), "{message}");
        } else {
            assert_eq!(done.result.unwrap(), Outcome::Success, "execute {i}");
        }
    }
    let stuck = plugin.execute(request(json!({"mode": "stuck"}), json!({}), State::Empty, Map::new())).await;
    assert_eq!(
        stuck.result.unwrap_err(),
        ExecuteError::Plugin(PluginError::Unexpected(
            "the execute timed out after 2s; its Python host was killed".into()
        ))
    );
    let after = plugin.execute(request(json!({}), json!({}), State::Empty, Map::new())).await;
    assert_eq!(after.result.unwrap(), Outcome::Success);
}

/// A project with one data-source view: `GET|POST items/<int:n>/`.
fn project_with_view(temp: &Path) -> PathBuf {
    let dir = temp.join("with-view");
    std::fs::create_dir_all(dir.join("bk_plugin/versions")).unwrap();
    std::fs::create_dir_all(dir.join("bk_plugin/apis")).unwrap();
    std::fs::write(dir.join("bk_plugin/__init__.py"), "").unwrap();
    std::fs::write(dir.join("bk_plugin/meta.py"), "description = 'x'\n").unwrap();
    std::fs::write(dir.join("bk_plugin/versions/__init__.py"), "").unwrap();
    std::fs::write(dir.join("bk_plugin/versions/v1.py"), CRASHER).unwrap();
    std::fs::write(dir.join("bk_plugin/apis/__init__.py"), "").unwrap();
    std::fs::write(
        dir.join("bk_plugin/apis/urls.py"),
        "from django.urls import path\nfrom . import views\nurlpatterns = [path('items/<int:n>/', views.Items.as_view())]\n",
    )
    .unwrap();
    std::fs::write(
        dir.join("bk_plugin/apis/views.py"),
        r#"
from rest_framework.response import Response

from bk_plugin_framework.kit.api import PluginAPIView


class Items(PluginAPIView):
    def get(self, request, n):
        return Response({"n": n, "q": request.query_params.get("q"), "user": request.user.username,
                         "lang": request.META.get("HTTP_ACCEPT_LANGUAGE")})

    def post(self, request, n):
        return Response({"n": n, "body": request.data}, status=201)
"#,
    )
    .unwrap();
    dir
}

fn api_request(method: ApiMethod, path: &str, query: Value, body: Value) -> ApiRequest {
    ApiRequest {
        method,
        path: path.into(),
        query: query.as_object().cloned().unwrap_or_default(),
        body,
        username: Some("alice".into()),
        headers: [("accept-language".to_owned(), "en".to_owned())].into(),
    }
}

#[tokio::test]
async fn data_source_views_answer_by_path_or_say_what_is_missing() {
    let Some(python) = python() else { return };
    let temp = tempfile::tempdir().unwrap();
    let dir = project_with_view(temp.path());
    let options = ProcessOptions { default_timeout: Duration::from_secs(30), ..ProcessOptions::default() };
    let get = || api_request(ApiMethod::Get, "items/3", json!({"q": "x"}), Value::Null);

    // A project without views answers none by path; one whose environment lacks Django says so.
    let plain = PythonOptions { python: Some(python.clone()), hosts: Some(1), ..PythonOptions::default() };
    let fixture = load_bk(&fixture(), &options, &plain).unwrap();
    assert!(fixture.plugins()[0].call_api(get()).is_none());
    let project = load_bk(&dir, &options, &plain).unwrap();
    let error = project.plugins()[0].call_api(get()).unwrap().await.unwrap_err();
    assert_eq!(error.status, 501);
    assert!(error.message.contains("need Django and djangorestframework"), "{}", error.message);

    // With Django REST framework: the view's data and status, 404 for a path no pattern takes.
    let drf = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../bk-python-drf-venv/bin/python");
    if !drf.exists() {
        eprintln!("SKIPPED: no virtualenv with Django REST framework at {}", drf.display());
        return;
    }
    let served = PythonOptions { python: Some(drf), hosts: Some(1), ..PythonOptions::default() };
    let project = load_bk(&dir, &options, &served).unwrap();
    let plugin = project.plugins()[0].clone();
    assert_eq!(
        plugin.call_api(get()).unwrap().await.unwrap(),
        ApiReply { status: 200, body: json!({"n": 3, "q": "x", "user": "alice", "lang": "en"}) }
    );
    let post = api_request(ApiMethod::Post, "items/4/", json!({}), json!({"a": [1]}));
    assert_eq!(
        plugin.call_api(post).unwrap().await.unwrap(),
        ApiReply { status: 201, body: json!({"n": 4, "body": {"a": [1]}}) }
    );
    let missing = plugin.call_api(api_request(ApiMethod::Get, "nope", json!({}), Value::Null)).unwrap().await;
    assert_eq!(missing.unwrap_err().status, 404);
}
