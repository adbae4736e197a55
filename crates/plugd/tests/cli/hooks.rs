use std::io::{BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::{Arc, Mutex};

use serde_json::{json, Value};

use crate::util::{read_request, Plugd};

/// Recipients and raw data of each delivered message.
type Mailbox = Arc<Mutex<Vec<(Vec<String>, String)>>>;
/// Headers and body of each request.
type Requests = Arc<Mutex<Vec<(String, String)>>>;

/// A real SMTP server on 127.0.0.1 (mailin-embedded), keeping each delivered message.
struct SmtpServer {
    port: u16,
    messages: Mailbox,
}

/// Collects the recipients and data of each message.
#[derive(Clone)]
struct Collector {
    messages: Mailbox,
    to: Vec<String>,
    data: Vec<u8>,
}

impl mailin_embedded::Handler for Collector {
    fn data_start(&mut self, _domain: &str, _from: &str, _is8bit: bool, to: &[String]) -> mailin_embedded::Response {
        self.to = to.to_vec();
        self.data.clear();
        mailin_embedded::response::OK
    }

    fn data(&mut self, buf: &[u8]) -> std::io::Result<()> {
        self.data.extend_from_slice(buf);
        Ok(())
    }

    fn data_end(&mut self) -> mailin_embedded::Response {
        let message = (std::mem::take(&mut self.to), String::from_utf8_lossy(&self.data).into_owned());
        self.messages.lock().unwrap().push(message);
        mailin_embedded::response::OK
    }
}

impl SmtpServer {
    fn start() -> SmtpServer {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let messages: Mailbox = Arc::default();
        let mut server =
            mailin_embedded::Server::new(Collector { messages: messages.clone(), to: Vec::new(), data: Vec::new() });
        server.with_name("plugd-test").with_ssl(mailin_embedded::SslConfig::None).unwrap().with_tcp_listener(listener);
        std::thread::spawn(move || {
            let _ = server.serve();
        });
        SmtpServer { port, messages }
    }
}

/// An HTTP receiver that fails `failures` times with 503, then answers 200; it records headers and bodies.
struct Receiver {
    url: String,
    requests: Requests,
}

impl Receiver {
    fn start(failures: usize) -> Receiver {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let url = format!("http://{}/hook", listener.local_addr().unwrap());
        let requests: Requests = Arc::default();
        let seen = requests.clone();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                let mut writer = stream.try_clone().unwrap();
                let mut reader = BufReader::new(stream);
                let (head, body) = read_request(&mut reader).unwrap();
                let count = {
                    let mut seen = seen.lock().unwrap();
                    seen.push((head, String::from_utf8(body).unwrap()));
                    seen.len()
                };
                let status = if count <= failures { "503 Busy" } else { "200 OK" };
                let _ = writer.write_all(
                    format!("HTTP/1.1 {status}\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok").as_bytes(),
                );
            }
        });
        Receiver { url, requests }
    }
}

fn hooks(dir: &Path, args: &[&str]) -> crate::util::Finished {
    let config = dir.join("plugd-hooks.yaml");
    let mut all = vec!["hooks"];
    all.extend_from_slice(args);
    all.extend(["--config", config.to_str().unwrap()]);
    Plugd::new(&all).env("HOOK_SECRET", "s3cret").run()
}

/// The RabbitMQ of the tests marked `needs PLUGD_TEST_AMQP_URL` (`.ci/run` starts one and sets it).
fn amqp_url() -> String {
    std::env::var("PLUGD_TEST_AMQP_URL").ok().filter(|u| !u.is_empty()).expect(
        "this test needs a RabbitMQ: set PLUGD_TEST_AMQP_URL (e.g. amqp://guest:guest@127.0.0.1:5672/%2f); .ci/run does",
    )
}

/// Declares a server-named queue and returns a function that fetches one message from it.
fn amqp_queue(url: &str) -> (String, impl FnOnce() -> (Value, Option<String>)) {
    use lapin::options::{BasicGetOptions, QueueDeclareOptions};
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build().unwrap();
    let (channel, name) = runtime.block_on(async {
        let connection = lapin::Connection::connect(url, lapin::ConnectionProperties::default()).await.unwrap();
        let channel = connection.create_channel().await.unwrap();
        let options = QueueDeclareOptions { exclusive: true, auto_delete: true, ..Default::default() };
        let queue = channel.queue_declare("".into(), options, Default::default()).await.unwrap();
        std::mem::forget(connection);
        (channel, queue.name().to_string())
    });
    let queue = name.clone();
    let fetch = move || {
        runtime.block_on(async {
            let message = channel
                .basic_get(queue.as_str().into(), BasicGetOptions { no_ack: true })
                .await
                .unwrap()
                .expect("a message");
            let content_type = message.delivery.properties.content_type().as_ref().map(|c| c.to_string());
            (serde_json::from_slice(&message.delivery.data).unwrap(), content_type)
        })
    };
    (name, fetch)
}

#[test]
fn command_webhook_and_email_across_the_three_stages() {
    all_kinds_across_the_three_stages(None);
}

#[test]
#[ignore = "needs PLUGD_TEST_AMQP_URL (RabbitMQ)"]
fn all_four_kinds_across_the_three_stages() {
    all_kinds_across_the_three_stages(Some(amqp_url()));
}

/// The command, webhook and email plugins against real servers, and the amqp one with `amqp_url`.
fn all_kinds_across_the_three_stages(amqp_url: Option<String>) {
    let dir = tempfile::tempdir().unwrap();
    let receiver = Receiver::start(2);
    let smtp = SmtpServer::start();
    let rules = dir.path().join("recipients.yaml");
    std::fs::write(&rules, "rules:\n- filters: {name: [foo, bar]}\n  recipients: [foo-team@example.com]\n- recipients: [releases@example.com]\n").unwrap();
    let amqp = amqp_url.map(|url| (url.clone(), amqp_queue(&url)));
    let amqp_step = match &amqp {
        Some((url, (queue, _))) => format!(
            "    - name: announce\n      uses: amqp\n      with:\n        url: {url:?}\n        routing_key: {queue}\n        delivery_mode: 2\n        message_attributes: {{source: plugd}}\n        package: {{name: \"{{{{ package.name }}}}\", version: \"{{{{ package.version }}}}\", uri: \"{{{{ package.uri }}}}\", user: ci}}\n"
        ),
        None => String::new(),
    };
    let file = format!(
        r#"defaults: {{cancel_on_error: true, stop_on_error: true}}
stages:
  pre_build:
    - name: lint
      uses: command
      with: {{command: sh, args: ["-c", "echo linted {{{{ package.qualified_name }}}}"]}}
  pre_release:
    - name: tests pass
      id: tests
      uses: command
      with: {{command: "true"}}
    - name: ask the deploy service
      uses: webhook
      with:
        url: {url}
        secret_env: HOOK_SECRET
        body: {{package: "{{{{ package.qualified_name }}}}", tests: "{{{{ steps.tests.state }}}}"}}
        retries: 3
  post_release:
    - name: mail the team
      uses: email
      with:
        host: 127.0.0.1
        port: {port}
        tls: none
        sender: plugd@example.com
        recipients_file: {rules}
        package: {{name: "{{{{ package.name }}}}"}}
        subject: "{{{{ package.qualified_name }}}} released"
        body: "{{{{ release.message }}}}"
{amqp_step}"#,
        url = receiver.url,
        port = smtp.port,
        rules = rules.display(),
    );
    std::fs::write(dir.path().join("plugd-hooks.yaml"), file).unwrap();
    let set = ["--set", "package.name=foo", "--set", "package.version=1.2.0", "--set", "release.message=Faster builds"];
    let mut args = vec!["run", "pre_build"];
    args.extend(set);
    let out = hooks(dir.path(), &args).assert_code(0);
    assert!(out.stderr.contains("linted foo-1.2.0"), "{}", out.stderr);

    args[1] = "pre_release";
    let out = hooks(dir.path(), &args).assert_code(0);
    assert!(out.stdout.contains("ask the deploy service  webhook@1.0.0  SUCCESS"), "{}", out.stdout);
    let requests = receiver.requests.lock().unwrap().clone();
    assert_eq!(requests.len(), 3, "failed twice, then accepted");
    let expected_body = r#"{"package":"foo-1.2.0","tests":"SUCCESS"}"#;
    for (head, body) in &requests {
        assert_eq!(body, expected_body);
        let signature = format!("x-plugd-signature: {}", plugd::plugins::webhook::signature("s3cret", body.as_bytes()));
        assert!(head.to_ascii_lowercase().contains(&signature), "{head}");
    }
    assert!(!out.stdout.contains("s3cret") && !out.stderr.contains("s3cret"));

    args[1] = "post_release";
    let out = hooks(dir.path(), &args).assert_code(0);
    let messages = smtp.messages.lock().unwrap().clone();
    assert_eq!(messages.len(), 1);
    let (recipients, data) = &messages[0];
    assert_eq!(recipients, &["foo-team@example.com", "releases@example.com"]);
    assert!(data.contains("Subject: foo-1.2.0 released"), "{data}");
    assert!(data.contains("From: plugd@example.com"), "{data}");
    assert!(data.contains("Faster builds"), "{data}");
    if let Some((_, (_, fetch))) = amqp {
        let (message, content_type) = fetch();
        assert_eq!(content_type.as_deref(), Some("application/json"));
        assert_eq!(
            message,
            json!({
                "package": {"name": "foo", "version": "1.2.0", "qualified_name": "foo-1.2.0", "uri": "",
                    "handle": {"key": "filesystem.package", "variables":
                        {"location": "", "name": "foo", "repository_type": "filesystem", "version": "1.2.0"}},
                    "user": "ci"},
                // No variants given: rez's one variant of a package without variants.
                "variants": [{"handle": {"key": "filesystem.variant", "variables":
                    {"location": "", "name": "foo", "repository_type": "filesystem", "version": "1.2.0", "index": null}}}],
                "source": "plugd",
            })
        );
        assert!(out.stdout.contains("announce"), "{}", out.stdout);
    }
}

fn write_file(dir: &Path, text: &str) {
    std::fs::write(dir.join("plugd-hooks.yaml"), text).unwrap();
}

#[test]
fn cancel_stop_and_post_release_failures() {
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        r#"stages:
  pre_release:
    - name: tests
      uses: command
      with: {command: sh, args: ["-c", "echo 3 tests failed; exit 1"]}
    - name: never
      uses: command
      with: {command: "true"}
  pre_build:
    - name: optional check
      uses: command
      with: {command: "false"}
      cancel_on_error: false
    - name: after it
      uses: command
      with: {command: "true"}
  post_release:
    - name: flaky notify
      uses: command
      with: {command: "false"}
      stop_on_error: false
    - name: still runs
      uses: command
      with: {command: sh, args: ["-c", "echo still ran"]}
"#,
    );
    let out = hooks(dir.path(), &["run", "pre_release"]).assert_code(3);
    assert!(
        out.stderr.ends_with("error: release cancelled by hook tests: plugin execute failed: command failed (exit code 1):\n3 tests failed\n"),
        "{}",
        out.stderr
    );
    assert!(out.stdout.contains("never  command@1.0.0  SKIPPED  -"), "{}", out.stdout);

    let out = hooks(dir.path(), &["run", "pre_build"]).assert_code(1);
    assert!(
        out.stdout.contains("after it        command@1.0.0  SKIPPED"),
        "stop_on_error skips the rest: {}",
        out.stdout
    );
    assert!(!out.stderr.contains("cancelled"), "{}", out.stderr);

    let out = hooks(dir.path(), &["run", "post_release"]).assert_code(1);
    assert!(out.stderr.contains("still ran"), "{}", out.stderr);
    assert!(out.stdout.contains("still runs    command@1.0.0  SUCCESS"), "{}", out.stdout);

    let out = hooks(dir.path(), &["run", "pre_build", "--dry-run", "--set", "package.name=x"]).assert_code(0);
    assert!(
        out.stdout.contains("optional check (uses command; cancel_on_error=false stop_on_error=true)"),
        "{}",
        out.stdout
    );
    // A dry run prints rendered inputs, but never the environment's values.
    std::fs::write(
        dir.path().join("plugd-hooks.yaml"),
        "stages:\n  pre_build:\n    - name: call\n      uses: command\n      with: {command: echo, args: [\"Bearer {{ env.HOOK_SECRET }}\", \"{{ package.name }}\"]}\n",
    )
    .unwrap();
    let out = hooks(dir.path(), &["run", "pre_build", "--dry-run", "--set", "package.name=x"]).assert_code(0);
    assert!(
        out.stdout.contains(r#"with: {"command":"echo","args":["Bearer <env.HOOK_SECRET>","x"]}"#),
        "{}",
        out.stdout
    );
    assert!(!out.stdout.contains("s3cret"), "{}", out.stdout);
    let out = hooks(dir.path(), &["run", "deploy"]).assert_code(2);
    assert_eq!(out.stderr, "error: unknown stage \"deploy\"; expected one of pre_build, pre_release, post_release\n");
    let out = hooks(dir.path(), &["run", "pre_build", "--set", "name=x"]).assert_code(2);
    assert_eq!(out.stderr, "error: invalid --set \"name\": expected package.<key> or release.<key>\n");
}

#[test]
fn bad_configs_name_the_file_and_line() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugd-hooks.yaml");
    let cases = [
        ("stages:\n  pre_release:\n    - name: a\n      uses: nope\n", "4: step \"a\": unknown plugin \"nope\"; available plugins: amqp, approval, command, countdown, email, gitlab-pipeline, hello, webhook"),
        ("stages:\n  pre_release:\n    - name: a\n      uses: command\n      with: {command: \"{{ package.name \"}\n", "5: step \"a\": input \"command\": bad template: "),
        ("stages:\n  post_release:\n    - name: ok\n      uses: command\n      with: {command: \"true\"}\n    - name: b\n      uses: webhook\n      with: {method: POST}\n", "8: step \"b\": missing required input \"url\" for plugin webhook@1.0.0"),
        ("stages:\n  pre_release:\n    - name: a\n      uses: command\n      with: {comand: ls}\n", "5: step \"a\": unknown input \"comand\" for plugin command@1.0.0; accepted: command, args, env, cwd, timeout, print_output"),
        ("stages:\n  deploy: []\n", "2: unknown stage \"deploy\"; expected one of pre_build, pre_release, post_release"),
        ("stages:\n  pre_release:\n    - name: a\n      use: command\n", "4: stages.pre_release[0]: unknown field `use`"),
        // An unclosed bracket: the last line, not the one after it.
        ("stages:\n  pre_release:\n    - name: a\n      uses: command\n      with: {command: ls\n", "5: did not find expected ',' or '}'"),
    ];
    for (text, expected) in cases {
        write_file(dir.path(), text);
        let out = hooks(dir.path(), &["check"]).assert_code(2);
        let prefix = format!("error: {}:{expected}", file.display());
        assert!(out.stderr.starts_with(&prefix), "expected {prefix:?}\n     got {:?}", out.stderr);
    }
}

const AMQP_PACKAGE: &str = r#"{"name": "bar", "version": "2.0.0", "uri": "/packages/bar/2.0.0/package.py"}"#;

fn amqp_handle() -> Value {
    json!({"key": "filesystem.package", "variables":
        {"location": "/packages", "name": "bar", "repository_type": "filesystem", "version": "2.0.0"}})
}

#[test]
fn amqp_to_stdout_returns_the_release_message() {
    // rez's special host `stdout` publishes nothing and returns the message.
    let out = Plugd::new(&["run", "amqp", "--url", "stdout", "--package", AMQP_PACKAGE, "--json"]).run().assert_code(0);
    let message = out.json()["outputs"]["message"].clone();
    assert_eq!(message["package"]["handle"], amqp_handle());
    let mut variant = amqp_handle();
    variant["key"] = json!("filesystem.variant");
    variant["variables"]["index"] = Value::Null;
    assert_eq!(message["variants"], json!([{"handle": variant}]));
    // And printed, as rez prints it (on stderr: stdout is the JSON).
    assert!(out.stderr.contains(&format!("Published to REZ.PACKAGE.RELEASED: {message}")), "{}", out.stderr);
}

#[test]
#[ignore = "needs PLUGD_TEST_AMQP_URL (RabbitMQ)"]
fn amqp_publishes_the_release_message_with_confirms() {
    let (package, handle) = (AMQP_PACKAGE, amqp_handle());
    let url = amqp_url();
    let (queue, fetch) = amqp_queue(&url);
    let out = Plugd::new(&["run", "amqp", "--url", &url, "--routing-key", &queue, "--package", package, "--json"])
        .run()
        .assert_code(0);
    assert_eq!(out.json()["outputs"]["routing_key"], queue.as_str());
    let (message, _) = fetch();
    assert_eq!(message["package"]["qualified_name"], "bar-2.0.0");
    assert_eq!(message["package"]["uri"], "/packages/bar/2.0.0/package.py");
    assert_eq!(message["package"]["handle"], handle);
    let bad = Plugd::new(&[
        "run",
        "amqp",
        "--url",
        "amqp://guest:hunter2@127.0.0.1:1/%2f",
        "--package",
        package,
        "--timeout",
        "5",
        "--json",
    ])
    .run()
    .assert_code(1);
    let err = bad.json()["err"].as_str().unwrap().to_owned();
    assert!(
        err.starts_with("plugin execute failed: cannot publish to amqp://guest:<redacted>@127.0.0.1:1/%2f: "),
        "{err}"
    );
    assert!(!bad.stdout.contains("hunter2") && !bad.stderr.contains("hunter2"));
}

#[test]
fn templates_are_checked_as_strictly_as_the_run_renders_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugd-hooks.yaml");
    let marker = dir.path().join("built");
    let hooks_file = |announce: &str| {
        format!(
            "stages:\n  pre_release:\n    - name: build\n      uses: command\n      with: {{command: touch, args: [{marker}]}}\n    - name: announce\n      uses: command\n      with:\n        command: echo\n        args: [\"{announce}\"]\n",
            marker = marker.display()
        )
    };
    let set = ["--set", "package.name=foo"];

    // A misspelt variable: check, the dry run and the run all refuse the file, naming the
    // variable, the step and the line; nothing runs.
    write_file(dir.path(), &hooks_file("released {{ package.nmae }} v{{ package.version }}"));
    let expected = format!(
        "error: {}:10: step \"announce\": input \"args\": undefined variable package.nmae (did you mean package.name?)\n",
        file.display()
    );
    for args in [&["check"][..], &["run", "pre_release", "--dry-run"], &["run", "pre_release"]] {
        let out = hooks(dir.path(), &[args, &set[..]].concat()).assert_code(2);
        assert_eq!((out.stdout.as_str(), out.stderr.as_str()), ("", expected.as_str()), "{args:?}");
    }
    assert!(!marker.exists(), "nothing ran");

    // A value the run would not have (no --set package.version): check cannot know, the dry run
    // and the run do.
    write_file(dir.path(), &hooks_file("released {{ package.name }} v{{ package.version }}"));
    let out = hooks(dir.path(), &["check"]).assert_code(0);
    assert!(out.stdout.starts_with(&format!("{}: ok\n", file.display())), "{}", out.stdout);
    let expected = format!(
        "error: {}:10: step \"announce\": input \"args\": undefined variable package.version (package has: name, uri; give --set package.version=VALUE)\n",
        file.display()
    );
    for args in [&["run", "pre_release", "--dry-run"][..], &["run", "pre_release"]] {
        let out = hooks(dir.path(), &[args, &set[..]].concat()).assert_code(2);
        assert_eq!(out.stderr, expected, "{args:?}");
    }
    assert!(!marker.exists(), "nothing ran");
    let out = hooks(
        dir.path(),
        &["run", "pre_release", "--dry-run", "--set", "package.name=foo", "--set", "package.version=1.2.0"],
    )
    .assert_code(0);
    assert!(out.stdout.contains(r#"with: {"command":"echo","args":["released foo v1.2.0"]}"#), "{}", out.stdout);

    // A key only --set gives: check takes --set too.
    write_file(dir.path(), &hooks_file("notes at {{ package.changelog_url }}"));
    let out = hooks(dir.path(), &["check"]).assert_code(2);
    assert_eq!(
        out.stderr,
        format!(
            "error: {}:10: step \"announce\": input \"args\": undefined variable package.changelog_url (package has: name, qualified_name, uri, version; give --set package.changelog_url=VALUE)\n",
            file.display()
        )
    );
    hooks(dir.path(), &["check", "--set", "package.changelog_url=x"]).assert_code(0);

    // Earlier steps' outputs are known at run time only: the step must exist and come earlier;
    // the dry run shows a placeholder.
    write_file(dir.path(), &hooks_file("{{ steps.build.outputs.output }} {{ steps.deploy.outputs.url }}"));
    let out = hooks(dir.path(), &["check"]).assert_code(2);
    assert_eq!(
        out.stderr,
        format!(
            "error: {}:10: step \"announce\": input \"args\": undefined variable steps.deploy: no earlier step of pre_release has the id \"deploy\" (earlier steps: build)\n",
            file.display()
        )
    );
    write_file(dir.path(), &hooks_file("built: {{ steps.build.outputs.output }}"));
    let out = hooks(dir.path(), &["run", "pre_release", "--dry-run"]).assert_code(0);
    assert!(
        out.stdout.contains(r#"with: {"command":"echo","args":["built: <steps.build.outputs.output>"]}"#),
        "{}",
        out.stdout
    );
    assert!(!marker.exists(), "nothing ran");
    let out = hooks(dir.path(), &["run", "pre_release"]).assert_code(0);
    assert!(out.stderr.contains("built: "), "{}", out.stderr);
    assert!(marker.exists());

    // At run time, an output the earlier step did not give: the step fails, naming it all.
    write_file(dir.path(), &hooks_file("built: {{ steps.build.outputs.tag }}"));
    let out = hooks(dir.path(), &["run", "pre_release"]).assert_code(3);
    assert!(
        out.stderr.ends_with(&format!(
            "error: release cancelled by hook announce: template error: {}:10: step \"announce\": input \"args\": undefined variable steps.build.outputs.tag (steps.build.outputs has: exit_code, output)\n",
            file.display()
        )),
        "{}",
        out.stderr
    );
}

#[test]
fn a_stage_without_steps_says_so() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("plugd-hooks.yaml");
    write_file(dir.path(), "stages:\n  pre_build: []\n  pre_release:\n    - name: a\n      uses: command\n      with: {command: \"true\"}\n");
    for stage in ["pre_build", "post_release"] {
        for dry_run in [false, true] {
            let args = if dry_run { vec!["run", stage, "--dry-run"] } else { vec!["run", stage] };
            let out = hooks(dir.path(), &args).assert_code(0);
            assert_eq!(out.stdout, format!("{stage}: no steps in {}; nothing to run\n", file.display()), "{args:?}");
        }
    }
    let out = hooks(dir.path(), &["check"]).assert_code(0);
    assert!(out.stdout.contains("\npre_build: no steps\npre_release:\n"), "{}", out.stdout);
}

#[test]
fn system_user_is_the_account_name_without_user_variables() {
    let dir = tempfile::tempdir().unwrap();
    write_file(dir.path(), "stages:\n  pre_build:\n    - name: who\n      uses: command\n      with: {command: echo, args: [\"{{ system.user }}\"]}\n");
    let config = dir.path().join("plugd-hooks.yaml");
    let account = std::process::Command::new("id").arg("-un").output().unwrap();
    let account = String::from_utf8(account.stdout).unwrap().trim().to_owned();
    let unset = |plugd: Plugd| ["USER", "LOGNAME", "LNAME", "USERNAME"].into_iter().fold(plugd, Plugd::env_remove);
    let out = unset(Plugd::new(&["hooks", "run", "pre_build", "--dry-run", "--config", config.to_str().unwrap()]))
        .run()
        .assert_code(0);
    assert!(out.stdout.contains(&format!(r#"with: {{"command":"echo","args":["{account}"]}}"#)), "{}", out.stdout);
    // So does the amqp plugin, for the message's user.
    let out = unset(Plugd::new(&["run", "amqp", "--url", "stdout", "--package", AMQP_PACKAGE, "--json"]))
        .run()
        .assert_code(0);
    assert_eq!(out.json()["outputs"]["message"]["package"]["user"], account.as_str());
}

/// The rez virtualenv (`.ci/run` makes it: `python3 -m venv target/rez-venv` and
/// `pip install rez==3.4.0`); the test fails, and says how to make it, when it is missing.
fn rez_venv() -> std::path::PathBuf {
    let venv = Path::new(env!("CARGO_TARGET_TMPDIR")).join("../rez-venv");
    assert!(
        venv.join("bin/rez-release").is_file(),
        "this test needs rez in {}: run .ci/run, or python3 -m venv target/rez-venv && target/rez-venv/bin/pip install rez==3.4.0",
        venv.display()
    );
    venv
}

/// rez's emailer, printing what it would send (sender, subject, body as JSON) instead of sending
/// it: the real `post_release` and rez's own `emailer` settings (their defaults).
const REZ_EMAILER_CAPTURE: &str = r#"import json
from rezplugins.release_hook.emailer import EmailReleaseHook


class CapturedEmailReleaseHook(EmailReleaseHook):
    schema_dict = {}  # its settings are the emailer's

    @classmethod
    def name(cls):
        return "emailer_capture"

    def __init__(self, source_path):
        super(CapturedEmailReleaseHook, self).__init__(source_path)
        self.settings = self.type_settings.get("emailer")

    def send_email(self, subject, body):
        print("Email: " + json.dumps({"sender": self.settings.sender, "subject": subject, "body": body}))


def register_plugin():
    return CapturedEmailReleaseHook
"#;

/// The value printed after `prefix` on a line of `output`.
fn printed<'a>(output: &'a str, prefix: &str) -> &'a str {
    output.lines().find_map(|l| l.strip_prefix(prefix)).unwrap_or_else(|| panic!("no {prefix:?} in:\n{output}"))
}

#[test]
#[ignore = "needs the rez virtualenv (target/rez-venv), prepared by .ci/run"]
fn release_messages_match_a_real_rez_release() {
    let venv = rez_venv();
    let dir = tempfile::tempdir().unwrap();
    let (source, release, plugins) = (dir.path().join("foo"), dir.path().join("release"), dir.path().join("plugins"));
    let hook_dir = plugins.join("rezplugins/release_hook");
    for folder in [&source, &release, &hook_dir] {
        std::fs::create_dir_all(folder).unwrap();
    }
    std::fs::write(plugins.join("rezplugins/__init__.py"), "").unwrap();
    std::fs::write(hook_dir.join("__init__.py"), "").unwrap();
    std::fs::write(hook_dir.join("emailer_capture.py"), REZ_EMAILER_CAPTURE).unwrap();
    // foo-1.2.0, no variants, nothing to build; released from a git checkout with no upstream.
    std::fs::write(source.join("package.py"), "name = \"foo\"\nversion = \"1.2.0\"\nbuild_command = False\n").unwrap();
    let rezconfig = dir.path().join("rezconfig.py");
    std::fs::write(
        &rezconfig,
        format!(
            "release_packages_path = {release:?}\nlocal_packages_path = {local:?}\npackages_path = [{release:?}]\n\
             plugin_path = [{plugins:?}]\nrelease_hooks = [\"amqp\", \"emailer_capture\"]\n\
             plugins = {{\"release_hook\": {{\"amqp\": {{\"host\": \"stdout\"}}}},\n\
             \"release_vcs\": {{\"git\": {{\"allow_no_upstream\": True}}}}}}\n",
            release = release.to_str().unwrap(),
            local = dir.path().join("local").to_str().unwrap(),
            plugins = plugins.to_str().unwrap(),
        ),
    )
    .unwrap();
    let git = |args: &[&str]| {
        let out = std::process::Command::new("git")
            .args(["-c", "user.name=plugd", "-c", "user.email=plugd@example.com"])
            .args(args)
            .current_dir(&source)
            .output()
            .unwrap();
        assert!(out.status.success(), "git {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    git(&["init", "-q"]);
    git(&["add", "package.py"]);
    git(&["commit", "-qm", "foo 1.2.0"]);
    let rez = std::process::Command::new(venv.join("bin/rez-release"))
        .args(["-m", "Faster builds"])
        .current_dir(&source)
        .env("REZ_CONFIG_FILE", &rezconfig)
        .env("REZ_DISABLE_HOME_CONFIG", "1")
        .output()
        .unwrap();
    let rez_out = String::from_utf8_lossy(&rez.stdout).into_owned();
    assert!(
        rez.status.success() && rez_out.contains("1 of 1 releases were successful"),
        "rez-release failed:\n{rez_out}\n{}",
        String::from_utf8_lossy(&rez.stderr)
    );
    // rez prints the message as a Python dict: its python turns it into JSON.
    let repr = printed(&rez_out, "Published to REZ.PACKAGE.RELEASED: ");
    let to_json = "import ast, json, sys; print(json.dumps(ast.literal_eval(sys.stdin.read())))";
    let mut python = std::process::Command::new(venv.join("bin/python"))
        .args(["-c", to_json])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    python.stdin.take().unwrap().write_all(repr.as_bytes()).unwrap();
    let rez_message: Value = serde_json::from_slice(&python.wait_with_output().unwrap().stdout).unwrap();
    let rez_email: Value = serde_json::from_str(printed(&rez_out, "Email: ")).unwrap();
    let rez_body = rez_email["body"].as_str().unwrap();
    let changelog = rez_body.split_once("\nCHANGELOG:\n").unwrap().1;

    // plugd's hooks for the same release: the amqp message, and the email with rez's defaults.
    let smtp = SmtpServer::start();
    write_file(
        dir.path(),
        &"stages:\n  post_release:\n    - name: announce\n      uses: amqp\n      with:\n        url: stdout\n        \
         package: {name: \"{{ package.name }}\", version: \"{{ package.version }}\", uri: \"{{ package.uri }}\"}\n    \
         - name: mail\n      uses: email\n      with: {host: 127.0.0.1, port: PORT, tls: none, recipients: [team@example.com]}\n"
            .replace("PORT", &smtp.port.to_string()),
    );
    let uri = format!("package.uri={}", release.join("foo/1.2.0/package.py").display());
    let changelog = format!("release.changelog={changelog}");
    let set = ["--set", "package.name=foo", "--set", "package.version=1.2.0", "--set", &uri];
    let set = [&set[..], &["--set", "release.message=Faster builds", "--set", &changelog]].concat();
    let out = hooks(dir.path(), &[&["run", "post_release", "--dry-run"][..], &set].concat()).assert_code(0);
    let email_inputs = out.stdout.lines().filter_map(|l| l.trim_start().strip_prefix("with: ")).nth(1).unwrap();
    let plugd_email: Value = serde_json::from_str(email_inputs).unwrap();
    let out = hooks(dir.path(), &[&["run", "post_release"][..], &set].concat()).assert_code(0);
    let delivered = smtp.messages.lock().unwrap().clone();
    assert_eq!(delivered.len(), 1, "{}", out.stderr);
    assert!(delivered[0].1.contains(&format!("Subject: {}", rez_email["subject"].as_str().unwrap())), "{delivered:?}");
    let plugd_message: Value =
        serde_json::from_str(printed(&out.stderr, "Published to REZ.PACKAGE.RELEASED: ")).unwrap();

    // The whole message is the same: package (handle and user included) and variants.
    assert_eq!(plugd_message, rez_message);

    // The email: the same sender and subject; the same body but for rez's `REZ VERSION` line and
    // the host after the user (rez's `system.fqdn` is `socket.getfqdn()`, plugd's the host name).
    assert_eq!(plugd_email["sender"], rez_email["sender"]);
    assert_eq!(plugd_email["subject"], rez_email["subject"]);
    let without_host = |body: &str| -> Vec<String> {
        body.lines()
            .filter(|l| !l.starts_with("REZ VERSION: "))
            .map(|l| match l.split_once(" was released by ") {
                Some((package, by)) => format!("{package} was released by {}", by.split('@').next().unwrap()),
                None => l.to_owned(),
            })
            .collect()
    };
    assert_eq!(without_host(plugd_email["body"].as_str().unwrap()), without_host(rez_body));
}

#[test]
fn email_defaults_to_rez_emailer_texts_in_hooks() {
    let dir = tempfile::tempdir().unwrap();
    write_file(
        dir.path(),
        "stages:\n  post_release:\n    - name: mail\n      uses: email\n      with: {host: 127.0.0.1, recipients: [a@example.com]}\n",
    );
    hooks(dir.path(), &["check"]).assert_code(0);
    let set =
        ["--set", "package.name=foo", "--set", "package.version=1.2.0", "--set", "package.uri=/r/foo/1.2.0/package.py"];
    let out = hooks(dir.path(), &[&["run", "post_release", "--dry-run"][..], &set].concat()).assert_code(0);
    let inputs = out.stdout.lines().find_map(|l| l.trim_start().strip_prefix("with: ")).unwrap();
    let inputs: Value = serde_json::from_str(inputs).unwrap();
    let user = inputs["sender"].as_str().unwrap().strip_suffix("@rez-release.com").unwrap().to_owned();
    assert_eq!(inputs["subject"], format!("[rez] [release] {user} released foo-1.2.0"));
    let body = inputs["body"].as_str().unwrap();
    let (first, rest) = body.split_once('\n').unwrap();
    assert!(first.starts_with(&format!("Package 'foo-1.2.0' was released by {user}@")), "{body}");
    assert_eq!(
        rest,
        format!(
            "\nUSER: {user}\nPACKAGE: foo-1.2.0\nRELEASED TO: /r\nPREVIOUS VERSION: None.\n\n1 VARIANTS:\n/r/foo/1.2.0\n\n\
             MESSAGE:\nNo release message.\n\nCHANGELOG:\nNo changelog."
        )
    );
}
