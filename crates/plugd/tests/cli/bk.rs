//! A real bk-plugin project (tests/fixtures/bk-plugin-demo, written for BlueKing's Python
//! framework) served and run by plugd, against the framework's captured responses.
//!
//! These tests need a Python with pydantic: a virtualenv created once under `target/` with
//! pydantic from PyPI (`.ci/run` prepares it). Without Python or the network they say so and skip.

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use crate::serve::{database, Server};
use crate::util::{try_request, try_request_with, Plugd};

/// The virtualenv the tests share.
fn venv_dir() -> PathBuf {
    Path::new(env!("CARGO_TARGET_TMPDIR")).join("../bk-python-venv")
}

/// The virtualenv's python, created with pydantic on first use; `None` (and a visible SKIPPED
/// line) when it cannot be.
fn python() -> Option<PathBuf> {
    venv_python(&venv_dir(), &["pydantic"], "import pydantic")
}

/// A second virtualenv with Django REST framework too, for the data-source views (the first one
/// stays without Django, as most projects' environments are).
fn drf_python() -> Option<PathBuf> {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../bk-python-drf-venv");
    venv_python(&venv, &["pydantic", "django", "djangorestframework"], "import pydantic, rest_framework")
}

/// The python of `venv`, created with `packages` from PyPI unless `check` already imports there.
fn venv_python(venv: &Path, packages: &[&str], check: &str) -> Option<PathBuf> {
    static CREATING: Mutex<()> = Mutex::new(());
    let _guard = CREATING.lock().unwrap_or_else(|p| p.into_inner());
    let python = venv.join("bin/python");
    let ready = |python: &Path| {
        std::process::Command::new(python).args(["-c", check]).output().is_ok_and(|o| o.status.success())
    };
    if ready(&python) {
        return Some(python);
    }
    let created = std::process::Command::new("python3").arg("-m").arg("venv").arg(venv).status();
    let installed = created.is_ok_and(|s| s.success())
        && std::process::Command::new(venv.join("bin/pip"))
            .args(["install", "--quiet"])
            .args(packages)
            .status()
            .is_ok_and(|s| s.success());
    if installed && ready(&python) {
        return Some(python);
    }
    eprintln!(
        "SKIPPED: no virtualenv with {} at {} (python3 -m venv, pip install ...)",
        packages.join(", "),
        venv.display()
    );
    None
}

/// The fixture, copied to `<temp>/plugins/bk-demo` (plus `extra` version files).
fn project(extra: &[(&str, &str)]) -> tempfile::TempDir {
    let temp = tempfile::tempdir().unwrap();
    let target = temp.path().join("plugins/bk-demo");
    copy(&Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/bk-plugin-demo"), &target);
    for (name, text) in extra {
        std::fs::write(target.join("bk_plugin/versions").join(name), text).unwrap();
    }
    temp
}

fn copy(from: &Path, to: &Path) {
    std::fs::create_dir_all(to).unwrap();
    for entry in std::fs::read_dir(from).unwrap().flatten() {
        if entry.file_name() == "__pycache__" {
            continue;
        }
        let target = to.join(entry.file_name());
        if entry.file_type().unwrap().is_dir() {
            copy(&entry.path(), &target);
        } else {
            std::fs::copy(entry.path(), target).unwrap();
        }
    }
}

fn serve(temp: &Path, db: &Path, python: &Path, env: &[(&str, &str)]) -> Server {
    let plugins = temp.join("plugins");
    let mut env = env.to_vec();
    let python = python.display().to_string();
    env.push(("PLUGD_PYTHON", &python));
    Server::start_wrapped(
        Path::new(env!("CARGO_BIN_EXE_plugd")),
        &[],
        db,
        &["--default-plugin", "bk-demo", "--plugins", plugins.to_str().unwrap()],
        &env,
    )
}

fn raw(server: &Server, method: &str, path: &str, body: &str) -> (u16, String) {
    try_request(method, &format!("{}{path}", server.base), body).expect("the server answers")
}

fn invoke(server: &Server, version: &str, inputs: Value, context: Value) -> Value {
    server.invoke("bk-demo", version, inputs, context).expect("invoke answers 200")
}

/// `data` of an invoke, without the trace id.
fn data(answer: &Value) -> Value {
    assert_eq!(answer["result"], true, "{answer}");
    answer["data"].clone()
}

const DETAIL_1_0_0: &str = r#"{"result":true,"data":{"desc":"sync hello","version":"1.0.0","enable_plugin_callback":false,"inputs":{"type":"object","properties":{"name":{"title":"name","description":"who to greet","type":"string"}},"required":["name"],"definitions":{}},"outputs":{"type":"object","properties":{"greeting":{"title":"greeting","description":"hello + name","type":"string"}},"required":["greeting"],"definitions":{}},"context_inputs":{"type":"object","properties":{},"required":[],"definitions":{}},"forms":{"renderform":"(function () {\n    $.atoms[\"hello\"] = [\n        {\n            \"type\": \"input\",\n            \"attrs\": {\n                \"name\": \"Name\",\n                \"hookable\": true\n            },\n            \"tag_code\": \"name\"\n        }\n    ]\n})();\n"}},"message":""}"#;

const DETAIL_1_3_0: &str = r#"{"result":true,"data":{"desc":"hello with failure modes and required context","version":"1.3.0","enable_plugin_callback":false,"inputs":{"type":"object","properties":{"name":{"title":"name","description":"who to greet","type":"string"}},"required":["name"],"definitions":{}},"outputs":{"type":"object","properties":{"greeting":{"title":"greeting","description":"hello + name","type":"string"}},"required":["greeting"],"definitions":{}},"context_inputs":{"type":"object","properties":{"executor":{"title":"executor","description":"who runs the task","type":"string"}},"required":["executor"],"definitions":{}},"forms":{"renderform":"(function () {\n    $.atoms[\"hello\"] = [\n        {\n            \"type\": \"input\",\n            \"attrs\": {\n                \"name\": \"Name\",\n                \"hookable\": true\n            },\n            \"tag_code\": \"name\"\n        }\n    ]\n})();\n"}},"message":""}"#;

#[test]
fn the_fixture_serves_as_the_framework_does() {
    let Some(python) = python() else { return };
    let temp = project(&[]);
    let (_dir, db) = database();
    let server = serve(temp.path(), &db, &python, &[]);

    // meta: the project's code, its versions newest first, meta.py's description.
    let meta = server.get("/bk_plugin/meta");
    assert_eq!(meta["data"]["code"], "bk-demo");
    assert_eq!(meta["data"]["versions"], json!(["1.3.0", "1.2.0", "1.1.0", "1.0.0"]));
    assert_eq!(meta["data"]["description"], "hello plugin (bench peer for the Rust reimplementation)");
    assert_eq!(meta["data"]["language"], "python");

    // detail: byte for byte the framework's body (pydantic's own schemas, form.js verbatim).
    assert_eq!(raw(&server, "GET", "/bk_plugin/detail/1.0.0", ""), (200, DETAIL_1_0_0.to_owned()));
    assert_eq!(raw(&server, "GET", "/bk_plugin/detail/1.3.0", ""), (200, DETAIL_1_3_0.to_owned()));

    // invoke 1.0.0, with pydantic's conversions and messages.
    let ok = |outputs: Value| json!({"outputs": outputs, "state": 4, "err": null});
    // plugd's one deliberate difference: FAIL outputs are an object carrying err (BKFlow reads it).
    let failed = |err: &str| json!({"outputs": {"err": err}, "state": 5, "err": err});
    let name = |value: Value| json!({"name": value});
    assert_eq!(
        data(&invoke(&server, "1.0.0", name(json!("world")), json!({}))),
        ok(json!({"greeting": "hello world"}))
    );
    assert_eq!(
        data(&invoke(&server, "1.0.0", json!({"name": "world", "x": 1}), json!({"executor": "admin"}))),
        ok(json!({"greeting": "hello world"}))
    );
    assert_eq!(data(&invoke(&server, "1.0.0", name(json!(123)), json!({}))), ok(json!({"greeting": "hello 123"})));
    assert_eq!(data(&invoke(&server, "1.0.0", name(json!(true)), json!({}))), ok(json!({"greeting": "hello True"})));
    assert_eq!(
        data(&invoke(&server, "1.0.0", json!({}), json!({}))),
        failed(
            "inputs validation error: 1 validation error for Inputs\nname\n  field required (type=value_error.missing)"
        )
    );
    for wrong in [json!({"a": 1}), json!([1])] {
        assert_eq!(
            data(&invoke(&server, "1.0.0", name(wrong), json!({}))),
            failed("inputs validation error: 1 validation error for Inputs\nname\n  str type expected (type=type_error.str)")
        );
    }
    assert_eq!(
        data(&invoke(&server, "1.0.0", name(Value::Null), json!({}))),
        failed(
            "inputs validation error: 1 validation error for Inputs\nname\n  none is not an allowed value (type=type_error.none.not_allowed)"
        )
    );

    // 1.3.0: context validation and the failure shapes.
    let admin = json!({"executor": "admin"});
    assert_eq!(
        data(&invoke(&server, "1.3.0", name(json!("world")), admin.clone())),
        ok(json!({"greeting": "hello world (by admin)"}))
    );
    assert_eq!(
        data(&invoke(&server, "1.3.0", name(json!("world")), json!({}))),
        failed(
            "context validation error: 1 validation error for ContextInputs\nexecutor\n  field required (type=value_error.missing)"
        )
    );
    assert_eq!(
        data(&invoke(&server, "1.3.0", name(json!("error")), admin.clone())),
        failed("plugin execute failed: name must not be 'error'")
    );
    assert_eq!(
        data(&invoke(&server, "1.3.0", name(json!("crash")), admin.clone())),
        failed("plugin execute raise unexpected error: boom")
    );

    // The POLL round of 1.1.0, and 1.3.0's failing poll round.
    let started = Instant::now();
    let poll = invoke(&server, "1.1.0", name(json!("world")), json!({}));
    assert_eq!(data(&poll), json!({"outputs": {}, "state": 2, "err": null}));
    let trace_id = poll["trace_id"].as_str().unwrap();
    let polling = server.get(&format!("/bk_plugin/schedule/{trace_id}"));
    assert_eq!(
        (polling["data"]["state"].clone(), polling["data"]["plugin_version"].clone()),
        (json!(2), json!("1.1.0"))
    );
    let fail_later = invoke(&server, "1.3.0", name(json!("poll-then-fail")), admin);
    assert_eq!(data(&fail_later)["state"], 2);
    let done = server.wait_final("bk-demo", trace_id);
    assert!(started.elapsed() >= Duration::from_secs(1), "wait_poll(1) waits a second");
    assert_eq!((done["state"].clone(), done["outputs"].clone()), (json!(4), json!({"greeting": "hello world"})));
    let done = server.wait_final("bk-demo", fail_later["trace_id"].as_str().unwrap());
    assert_eq!(
        (done["state"].clone(), done["err"].clone()),
        (json!(5), json!("plugin schedule failed: failed on poll round 2"))
    );

    // The callback round of 1.2.0 through the signed URL; the callback id it kept in storage is
    // checked by the plugin on the second execute.
    let waiting = invoke(&server, "1.2.0", name(json!("world")), json!({}));
    let outputs = data(&waiting)["outputs"].clone();
    assert_eq!(data(&waiting)["state"], 3, "{waiting}");
    let url = outputs["callback_url"].as_str().unwrap();
    assert_eq!(outputs["callback_id"].as_str().unwrap().len(), 32);
    let (status, body) = try_request("POST", url, r#"{"status":"done"}"#).unwrap();
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(
        (status, body["result"].clone(), body["message"].clone()),
        (200, json!(true), json!("callback success"))
    );
    let done = server.wait_final("bk-demo", waiting["trace_id"].as_str().unwrap());
    assert_eq!(done["state"], 4, "{done}");
    assert_eq!(done["outputs"]["greeting"], "hello world {'status': 'done'}");

    // The plugin's logs are the invocation's.
    let logs = server.get(&format!("/bk_plugin/logs/{}", fail_later["trace_id"].as_str().unwrap()));
    assert!(logs.to_string().contains("failed on poll round 2"), "{logs}");
}

/// A version that crashes its host on demand, sleeps on demand, and keeps a count in storage.
const CRASHER: &str = r#"
import os
import time

from bk_plugin_framework.kit import Context, InputsModel, OutputsModel, Plugin, State


class Crasher(Plugin):
    class Meta:
        version = "9.0.0"
        desc = "crashes its host when asked"

    class Inputs(InputsModel):
        mode: str = "ok"
        sleep: float = 0.2

    class Outputs(OutputsModel):
        rounds: int

    def execute(self, inputs: Inputs, context: Context):
        if inputs.mode == "crash":
            time.sleep(0.1)
            os._exit(3)
        time.sleep(inputs.sleep)
        context.storage["rounds"] = context.storage.get("rounds", 0) + 1
        if context.state is State.EMPTY and inputs.mode == "poll":
            self.wait_poll(0)
            return
        context.outputs["rounds"] = context.storage["rounds"]
"#;

#[test]
fn a_host_crash_fails_its_execute_only_and_a_stuck_execute_times_out() {
    let Some(python) = python() else { return };
    let temp = project(&[("v9_0_0.py", CRASHER)]);
    let (_dir, db) = database();
    let server = serve(
        temp.path(),
        &db,
        &python,
        &[("PLUGD_PYTHON_HOSTS", "1"), ("PLUGD_PYTHON_THREADS", "8"), ("PLUGD_PROCESS_TIMEOUT", "3s")],
    );
    // Storage carries over between executes.
    let polled = invoke(&server, "9.0.0", json!({"mode": "poll", "sleep": 0}), json!({}));
    let done = server.wait_final("bk-demo", polled["trace_id"].as_str().unwrap());
    assert_eq!(done["outputs"], json!({"rounds": 2}), "{done}");

    // A burst on one host, one of which kills it: that one fails, the others succeed.
    let answers: Vec<Value> = std::thread::scope(|scope| {
        let calls: Vec<_> = (0..12)
            .map(|i| {
                let server = &server;
                scope.spawn(move || {
                    let mode = if i == 5 { "crash" } else { "ok" };
                    invoke(server, "9.0.0", json!({"mode": mode}), json!({}))
                })
            })
            .collect();
        calls.into_iter().map(|c| c.join().unwrap()).collect()
    });
    for (i, answer) in answers.iter().enumerate() {
        if i == 5 {
            assert_eq!(answer["data"]["state"], 5, "{answer}");
            let err = answer["data"]["err"].as_str().unwrap();
            assert!(
                err.starts_with("plugin execute raise unexpected error: the Python host exited (exit code 3)"),
                "{err}"
            );
        } else {
            assert_eq!(data(answer), json!({"outputs": {"rounds": 1}, "state": 4, "err": null}), "execute {i}");
        }
    }
    // The pool replaced the host.
    assert_eq!(data(&invoke(&server, "9.0.0", json!({}), json!({})))["state"], 4);

    // An execute past the timeout fails, its host is killed; the next one runs on a new host.
    let stuck = invoke(&server, "9.0.0", json!({"sleep": 30}), json!({}));
    assert_eq!(
        data(&stuck)["err"],
        "plugin execute raise unexpected error: the execute timed out after 3s; its Python host was killed"
    );
    assert_eq!(data(&invoke(&server, "9.0.0", json!({}), json!({})))["state"], 4);
}

/// A version that probes its own host: whether it is dumpable, a flood of log lines appended to the
/// host's own list (past its cap), and an allocation past the host's memory.
const PROBE: &str = r#"
import ctypes
import json
import os
import time

from bk_plugin_framework.kit import Context, InputsModel, Plugin


class Probe(Plugin):
    class Meta:
        version = "8.0.0"
        desc = "probes its host"

    class Inputs(InputsModel):
        mode: str = "dumpable"

    def execute(self, inputs, context: Context):
        if inputs.mode == "dumpable":
            PR_GET_DUMPABLE = 3
            context.outputs["dumpable"] = ctypes.CDLL(None).prctl(PR_GET_DUMPABLE, 0, 0, 0, 0)
        elif inputs.mode == "flood":
            from plugd_host import log_capture

            for i in range(50000):
                log_capture._local.logs.append(["INFO", "flood %d" % i])
        elif inputs.mode == "memory":
            context.outputs["bytes"] = len(bytearray(2 * 1024 * 1024 * 1024))
        elif inputs.mode == "victim":
            time.sleep(2)
            context.outputs["answered_by"] = "itself"
        elif inputs.mode == "forge":
            # Answers for every execute it can guess, on every pipe it can write to.
            for fd in map(int, os.listdir("/proc/self/fd")):
                try:
                    if fd in (1, 2) or not os.readlink("/proc/self/fd/%d" % fd).startswith("pipe:"):
                        continue
                    for id in range(1, 100):
                        forged = {"id": id, "result": "success", "storage": {}, "outputs": {"answered_by": "a forger"}, "logs": []}
                        os.write(fd, (json.dumps(forged) + "\n").encode())
                except OSError:
                    pass
"#;

#[test]
fn a_python_host_is_not_dumpable_and_holds_to_its_caps() {
    let Some(python) = python() else { return };
    let temp = project(&[("v8_0_0.py", PROBE)]);
    let (_dir, db) = database();
    let server = serve(temp.path(), &db, &python, &[("PLUGD_PYTHON_HOSTS", "1")]);
    // Another project's host (or any process of the user) cannot read this one's memory.
    let probed = invoke(&server, "8.0.0", json!({"mode": "dumpable"}), json!({}));
    assert_eq!(data(&probed)["outputs"], json!({"dumpable": 0}), "{probed}");
    // Log lines appended to the host's own list, past its cap, are cut on both sides.
    let flooded = invoke(&server, "8.0.0", json!({"mode": "flood"}), json!({}));
    assert_eq!(data(&flooded)["state"], 4, "{flooded}");
    let logs = server.get(&format!("/bk_plugin/logs/{}", flooded["trace_id"].as_str().unwrap()));
    let text = logs["data"]["log"].as_str().unwrap();
    assert!(text.contains("flood 0") && !text.contains("flood 1000\n"), "{}", &text[..text.len().min(300)]);
    // A host has 1 GiB of address space by default: a 2 GiB allocation fails the execute, not the machine.
    let grown = invoke(&server, "8.0.0", json!({"mode": "memory"}), json!({}));
    let err = data(&grown)["err"].as_str().unwrap().to_owned();
    assert!(err.contains("MemoryError"), "{err}");
    assert_eq!(data(&invoke(&server, "8.0.0", json!({}), json!({})))["state"], 4, "the host serves on");

    // An execute that writes answers for the others on its host's pipes answers for none of them.
    let victim = std::thread::scope(|scope| {
        let victim = scope.spawn(|| invoke(&server, "8.0.0", json!({"mode": "victim"}), json!({})));
        std::thread::sleep(std::time::Duration::from_millis(500));
        let forger = invoke(&server, "8.0.0", json!({"mode": "forge"}), json!({}));
        assert_eq!(data(&forger)["outputs"], json!({}), "{forger}");
        victim.join().unwrap()
    });
    assert_eq!(data(&victim)["outputs"], json!({"answered_by": "itself"}), "{victim}");
}

#[test]
fn polls_resume_after_kill_9_of_the_server() {
    let Some(python) = python() else { return };
    let temp = project(&[]);
    let (_dir, db) = database();
    let server = serve(temp.path(), &db, &python, &[]);
    let trace_ids: Vec<String> = (0..5)
        .map(|i| {
            let answer = invoke(&server, "1.1.0", json!({"name": format!("n{i}")}), json!({}));
            assert_eq!(answer["data"]["state"], 2);
            answer["trace_id"].as_str().unwrap().to_owned()
        })
        .collect();
    server.kill_9();
    let server = serve(temp.path(), &db, &python, &[]);
    for (i, trace_id) in trace_ids.iter().enumerate() {
        let done = server.wait_final("bk-demo", trace_id);
        assert_eq!(
            (done["state"].clone(), done["outputs"].clone()),
            (json!(4), json!({"greeting": format!("hello n{i}")}))
        );
    }
}

#[test]
fn plugd_run_runs_a_version_of_the_project() {
    let Some(python) = python() else { return };
    let temp = project(&[]);
    let dir = temp.path().join("plugins/bk-demo");
    let spec = format!("{}@1.1.0", dir.display());
    let started = Instant::now();
    let run = Plugd::new(&["run", &spec, "--name", "world", "--json"])
        .env("PLUGD_PYTHON", python.to_str().unwrap())
        .run()
        .assert_code(0);
    assert!(started.elapsed() >= Duration::from_secs(1), "one poll round of a second");
    let result = run.json();
    assert_eq!(
        (result["state"].clone(), result["outputs"].clone()),
        (json!("SUCCESS"), json!({"greeting": "hello world"}))
    );
    // A project that does not import says why, with the Python traceback.
    std::fs::write(dir.join("bk_plugin/versions/broken.py"), "import no_such_module\n").unwrap();
    let run = Plugd::new(&["run", &spec, "--name", "world"]).env("PLUGD_PYTHON", python.to_str().unwrap()).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("ModuleNotFoundError: No module named 'no_such_module'"), "{}", run.stderr);
}

/// Data-source views of the project (bk_plugin/apis/), as the probe plugin of the contract's
/// transcript had them, plus a few to check headers, statuses and errors.
const API_URLS: &str = r#"
from django.urls import path

from . import views

urlpatterns = [
    path("biz/<int:biz_id>/", views.Biz.as_view()),
    path("echo/", views.Echo.as_view()),
    path("denied/", views.Denied.as_view()),
    path("boom/", views.Boom.as_view()),
]
"#;

const API_VIEWS: &str = r#"
from rest_framework.response import Response

from bk_plugin_framework.kit.api import PluginAPIView

READABLE = ("bk-plugin", "x-bkapi", "accept-language")


class Biz(PluginAPIView):
    def get(self, request, biz_id):
        return Response({"biz_id": biz_id, "user": request.user.username, "q": dict(request.query_params.lists())})

    def post(self, request, biz_id):
        return Response({"biz_id": biz_id, "data": request.data})


class Echo(PluginAPIView):
    def get(self, request):
        headers = {k.lower(): v for k, v in request.headers.items() if k.lower().startswith(READABLE)}
        return Response({"headers": headers, "token": request.token, "user": request.user.username})


class Denied(PluginAPIView):
    def get(self, request):
        return Response({"detail": "not for you"}, status=403)


class Boom(PluginAPIView):
    def get(self, request):
        raise RuntimeError("kaboom")
"#;

/// The fixture with the views above.
fn project_with_views() -> tempfile::TempDir {
    let temp = project(&[]);
    let apis = temp.path().join("plugins/bk-demo/bk_plugin/apis");
    std::fs::create_dir_all(&apis).unwrap();
    std::fs::write(apis.join("__init__.py"), "").unwrap();
    std::fs::write(apis.join("urls.py"), API_URLS).unwrap();
    std::fs::write(apis.join("views.py"), API_VIEWS).unwrap();
    temp
}

/// `POST plugin_api_dispatch` with `body`: the status and the answer without its trace id.
fn dispatch(server: &Server, body: Value, headers: &str) -> (u16, Value) {
    let url = format!("{}/bk_plugin/plugin_api_dispatch", server.base);
    let (status, answer) = try_request_with("POST", &url, &body.to_string(), headers).expect("the server answers");
    let mut answer: Value = serde_json::from_str(&answer).unwrap();
    assert_eq!(answer["trace_id"].as_str().map(str::len), Some(32), "{answer}");
    answer.as_object_mut().unwrap().remove("trace_id");
    (status, answer)
}

#[test]
fn data_source_views_answer_as_the_framework_does() {
    let Some(python) = drf_python() else { return };
    let temp = project_with_views();
    let (_dir, db) = database();
    let server = serve(temp.path(), &db, &python, &[]);
    let get = |path: &str, headers: &str| {
        let (status, body) =
            try_request_with("GET", &format!("{}{path}", server.base), "", headers).expect("the server answers");
        (status, serde_json::from_str::<Value>(&body).unwrap())
    };

    // The contract's transcript: dispatch GET (data replaces the url's query), dispatch POST
    // (dumped_data merged), the direct GET, and a path no view has.
    let ok = |data: Value| (200, json!({"result": true, "data": data, "message": "success"}));
    assert_eq!(
        dispatch(
            &server,
            json!({"url": "/bk_plugin/plugin_api/biz/7/?z=1", "method": "GET", "username": "alice", "data": {"a": "b"}}),
            ""
        ),
        ok(json!({"biz_id": 7, "user": "alice", "q": {"a": ["b"]}}))
    );
    assert_eq!(
        dispatch(
            &server,
            json!({"url": "/bk_plugin/plugin_api/biz/7/", "method": "post", "username": "alice",
                   "data": {"a": "b"}, "dumped_data": "{\"c\": 1}"}),
            ""
        ),
        ok(json!({"biz_id": 7, "data": {"a": "b", "c": 1}}))
    );
    assert_eq!(get("/bk_plugin/plugin_api/biz/5/?y=2", ""), (200, json!({"biz_id": 5, "user": "", "q": {"y": ["2"]}})));
    assert_eq!(
        dispatch(&server, json!({"url": "/bk_plugin/plugin_api/nope", "method": "GET", "username": "alice"}), ""),
        (404, json!({"result": false, "data": null, "message": "404 error: /bk_plugin/plugin_api/nope"}))
    );

    // The headers a view reads: Bk-Plugin-*, X-Bkapi-* but credentials, Accept-Language.
    let headers = "Bk-Plugin-Biz: 3\r\nX-Bkapi-Jwt: secret\r\nX-Bkapi-Stage: prod\r\nAccept-Language: zh-cn\r\n";
    let readable = json!({"bk-plugin-biz": "3", "x-bkapi-stage": "prod", "accept-language": "zh-cn"});
    assert_eq!(
        get("/bk_plugin/plugin_api/echo/", headers),
        (200, json!({"headers": readable, "token": "", "user": ""}))
    );
    assert_eq!(
        dispatch(&server, json!({"url": "/bk_plugin/plugin_api/echo/", "method": "get", "username": "bob"}), headers),
        ok(json!({"headers": readable, "token": "", "user": "bob"}))
    );

    // A view's own status, directly; a view that raises.
    assert_eq!(get("/bk_plugin/plugin_api/denied/", ""), (403, json!({"detail": "not for you"})));
    assert_eq!(
        get("/bk_plugin/plugin_api/boom/", ""),
        (500, json!({"result": false, "data": null, "message": "kaboom"}))
    );
    assert_eq!(
        dispatch(&server, json!({"url": "/bk_plugin/plugin_api/boom/", "method": "GET", "username": "a"}), ""),
        (
            500,
            json!({"result": false, "data": null,
                   "message": "unknow error, please contact plugin developers: kaboom"})
        )
    );
    // Executes still run beside the views.
    assert_eq!(data(&invoke(&server, "1.0.0", json!({"name": "w"}), json!({})))["state"], 4);
}

#[test]
fn data_source_views_without_django_answer_501_naming_what_to_install() {
    let Some(python) = python() else { return };
    let temp = project_with_views();
    let (_dir, db) = database();
    let server = serve(temp.path(), &db, &python, &[]);
    let (status, body) = raw(&server, "GET", "/bk_plugin/plugin_api/biz/5/", "");
    let body: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(status, 501, "{body}");
    let message = body["message"].as_str().unwrap();
    assert!(message.contains("need Django and djangorestframework"), "{message}");
    assert!(message.contains("add Django and djangorestframework to requirements.txt"), "{message}");
    let (status, answer) =
        dispatch(&server, json!({"url": "/bk_plugin/plugin_api/biz/5/", "method": "GET", "username": "a"}), "");
    assert_eq!((status, answer["message"].as_str()), (501, Some(message)));
    // A project without views answers 404, without asking Python.
    let plain = project(&[]);
    let (_dir, db) = database();
    let server = serve(plain.path(), &db, &python, &[]);
    assert_eq!(raw(&server, "GET", "/bk_plugin/plugin_api/biz/5/", "").0, 404);
}

#[test]
fn code_equals_path_names_a_project_without_taking_an_input_flag() {
    let Some(python) = python() else { return };
    let temp = project(&[]);
    let dir = temp.path().join("plugins/bk-demo");
    // `--name` stays the fixture's `name` input; the code comes before the path.
    let spec = format!("demo-code={}@1.0.0", dir.display());
    let run = Plugd::new(&["run", &spec, "--name", "world", "--json"])
        .env("PLUGD_PYTHON", python.to_str().unwrap())
        .run()
        .assert_code(0);
    assert_eq!(
        (run.json()["plugin"].clone(), run.json()["outputs"].clone()),
        (json!("demo-code"), json!({"greeting": "hello world"}))
    );
    // `plugd serve --plugins CODE=PATH`.
    let (_dir, db) = database();
    let named = format!("demo-code={}", dir.display());
    let python_env = python.display().to_string();
    let server = Server::start_wrapped(
        Path::new(env!("CARGO_BIN_EXE_plugd")),
        &[],
        &db,
        &["--plugins", &named],
        &[("PLUGD_PYTHON", &python_env)],
    );
    let meta = server.get("/plugins/demo-code/bk_plugin/meta");
    assert_eq!(meta["data"]["code"], "demo-code", "{meta}");
    // A process plugin's id is its manifest's: neither form renames one.
    let example = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/qci-hello");
    let run = Plugd::new(&["install", "--name", "x", example.to_str().unwrap()]).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("--name gives a bk-plugin project its code"), "{}", run.stderr);
    let named = format!("x={}", example.display());
    let run = Plugd::new(&["describe", &named]).run();
    assert_eq!(run.code, 2, "{}", run.stderr);
    assert!(run.stderr.contains("CODE=PATH names a bk-plugin project's code"), "{}", run.stderr);
}

#[test]
fn plugd_new_bk_python_makes_a_project_that_runs_and_serves() {
    let Some(python) = python() else { return };
    let temp = tempfile::tempdir().unwrap();
    let dir = temp.path().join("plugins/greet-bk");
    let new =
        Plugd::new(&["new", "greet-bk", "--lang", "bk-python", "--dir", dir.to_str().unwrap()]).run().assert_code(0);
    assert!(new.stdout.contains("(bk-plugin project greet-bk)"), "{}", new.stdout);
    // The framework's layout.
    for file in [
        "bk_plugin/__init__.py",
        "bk_plugin/meta.py",
        "bk_plugin/versions/__init__.py",
        "bk_plugin/versions/v1_0_0.py",
        "bk_plugin/forms/1.0.0/form.js",
        "requirements.txt",
        "app_desc.yml",
        "Procfile",
        "bin/manage.py",
        "bin/post_compile",
    ] {
        assert!(dir.join(file).is_file(), "{file}");
    }
    let requirements = std::fs::read_to_string(dir.join("requirements.txt")).unwrap();
    assert!(requirements.contains("bk-plugin-framework=="), "{requirements}");

    // run: one poll round, then the greeting.
    let run = Plugd::new(&[
        "--python",
        python.to_str().unwrap(),
        "run",
        dir.to_str().unwrap(),
        "--name",
        "bk",
        "--wait",
        "0",
        "--json",
    ])
    .run()
    .assert_code(0);
    let result = run.json();
    assert_eq!(
        (result["plugin"].clone(), result["state"].clone(), result["outputs"].clone()),
        (json!("greet-bk"), json!("SUCCESS"), json!({"greeting": "hello bk", "polls": 2}))
    );
    let run =
        Plugd::new(&["--python", python.to_str().unwrap(), "run", dir.to_str().unwrap(), "--name", "", "--json"]).run();
    assert_eq!(run.json()["err"], "plugin execute failed: name must not be empty");

    // serve: meta, detail (pydantic's schema, the form), an invoke through its poll round.
    let (_dir, db) = database();
    let plugins = temp.path().join("plugins");
    let python_env = python.display().to_string();
    let server = Server::start_wrapped(
        Path::new(env!("CARGO_BIN_EXE_plugd")),
        &[],
        &db,
        &["--default-plugin", "greet-bk", "--plugins", plugins.to_str().unwrap()],
        &[("PLUGD_PYTHON", &python_env)],
    );
    let meta = server.get("/plugins/greet-bk/bk_plugin/meta");
    assert_eq!(meta["data"]["versions"], json!(["1.0.0"]), "{meta}");
    assert!(meta["data"]["description"].as_str().unwrap().starts_with("greet-bk: greets someone"), "{meta}");
    let detail = server.get("/plugins/greet-bk/bk_plugin/detail/1.0.0");
    assert_eq!(
        detail["data"]["inputs"]["properties"]["wait"],
        json!({"title": "wait", "description": "seconds to wait before greeting", "default": 1, "type": "integer"})
    );
    assert!(detail["data"]["forms"]["renderform"].as_str().unwrap().contains(r#"$.atoms["greet-bk"]"#));
    let invoked = server.invoke("greet-bk", "1.0.0", json!({"name": "served", "wait": 0}), json!({})).unwrap();
    assert_eq!(invoked["data"]["state"], 2, "{invoked}");
    let done = server.wait_final("greet-bk", invoked["trace_id"].as_str().unwrap());
    assert_eq!(done["outputs"], json!({"greeting": "hello served", "polls": 2}), "{done}");
}
