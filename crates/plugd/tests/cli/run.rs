use crate::util::Plugd;
use serde_json::json;

#[test]
fn hello_runs_the_newest_version_by_default() {
    let out = Plugd::new(&["run", "hello", "--name", "world"]).run().assert_code(0);
    assert!(
        out.stdout.starts_with("state:        SUCCESS\nplugin:       hello@2.0.0\ntrace_id:     "),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("invoke_count: 1\n"), "{}", out.stdout);
    assert!(out.stdout.ends_with("outputs:\n{\n  \"messages\": [\n    \"hello, world\"\n  ]\n}\n"), "{}", out.stdout);
}

#[test]
fn a_version_is_picked_with_at() {
    let out = Plugd::new(&["run", "hello@1.0.0", "--name", "world", "--json"]).run().assert_code(0);
    let result = out.json();
    assert_eq!(result["state"], "SUCCESS");
    assert_eq!(result["state_code"], 4);
    assert_eq!(result["version"], "1.0.0");
    assert_eq!(result["outputs"], json!({"message": "hello, world"}));
    assert_eq!(result["err"], json!(null));
    assert_eq!(result["invoke_count"], 1);
    assert_eq!(result["timed_out"], false);
    let trace_id = result["trace_id"].as_str().unwrap();
    assert!(trace_id.len() == 32 && trace_id.chars().all(|c| matches!(c, '0'..='9' | 'a'..='f')));
}

#[test]
fn flags_options_and_underscored_names() {
    let out = Plugd::new(&["run", "--json", "hello", "--name=world", "--greeting", "hi", "--times", "3"])
        .run()
        .assert_code(0);
    assert_eq!(out.json()["outputs"]["messages"], json!(["hi, world", "hi, world", "hi, world"]));
    let out = Plugd::new(&["run", "countdown", "--from", "0", "--interval_ms", "5", "--json"]).run().assert_code(0);
    assert_eq!(out.json()["outputs"], json!({"polls": 0}));
}

#[test]
fn inputs_come_from_a_json_file_or_stdin_and_flags_override_them() {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("inputs.json");
    std::fs::write(&file, r#"{"name": "file", "times": 2, "plugin_code": "ignored"}"#).unwrap();
    let out = Plugd::new(&["run", "hello", "--inputs-json", file.to_str().unwrap(), "--name", "flag", "--json"])
        .run()
        .assert_code(0);
    assert_eq!(out.json()["outputs"]["messages"], json!(["hello, flag", "hello, flag"]));
    let out = Plugd::new(&["run", "hello@1.0.0", "--inputs-json", "-", "--json"])
        .stdin(r#"{"name": "stdin", "greeting": "hey"}"#)
        .run()
        .assert_code(0);
    assert_eq!(out.json()["outputs"]["message"], "hey, stdin");
}

#[test]
fn countdown_polls_in_process_until_zero() {
    let out = Plugd::new(&["run", "countdown", "--from", "3", "--interval-ms", "20", "--json"]).run().assert_code(0);
    let result = out.json();
    assert_eq!(result["state"], "SUCCESS");
    assert_eq!(result["outputs"], json!({"polls": 3}));
    assert_eq!(result["invoke_count"], 4);
    assert!(result["duration_ms"].as_f64().unwrap() >= 60.0, "{result}");
    let polls: Vec<&str> = out.stderr.lines().filter(|l| l.contains("POLL · invoke_count")).collect();
    assert_eq!(polls.len(), 3, "plain progress lines on a non-terminal: {}", out.stderr);
    assert!(polls[0].ends_with("POLL · invoke_count 1 · next execute in 20ms"), "{}", polls[0]);
}

#[test]
fn a_timeout_exits_124_with_the_last_state() {
    let out = Plugd::new(&["run", "countdown", "--from", "100", "--timeout", "300ms", "--json"]).run().assert_code(124);
    let result = out.json();
    assert_eq!(result["state"], "POLL");
    assert_eq!(result["timed_out"], true);
    assert_eq!(result["err"], "timed out after 300ms in state POLL");
    let out = Plugd::new(&["run", "countdown", "--from", "100", "--timeout", "200ms"]).run().assert_code(124);
    assert!(out.stdout.starts_with("state:        POLL\nerror:        timed out after 200ms in state POLL\n"));
}

#[test]
fn context_inputs_are_accepted_and_undeclared_keys_ignored() {
    let out = Plugd::new(&["run", "hello", "--name", "x", "--context", "executor=alice", "--context-json", "-"])
        .stdin(r#"{"_loop": 1}"#)
        .run()
        .assert_code(0);
    assert!(out.stdout.starts_with("state:        SUCCESS"));
}

#[test]
fn a_failed_command_ends_its_message_with_its_output_or_the_exit_code() {
    let out = Plugd::new(&["run", "command", "--command", "false", "--json"]).run().assert_code(1);
    assert_eq!(out.json()["err"], "plugin execute failed: command failed (exit code 1)");
    let out =
        Plugd::new(&["run", "command", "--command", "sh", "--args", r#"["-c", "echo oops; echo; exit 2"]"#, "--json"])
            .run()
            .assert_code(1);
    assert_eq!(out.json()["err"], "plugin execute failed: command failed (exit code 2):\noops");
    let out = Plugd::new(&["run", "command", "--command", "false"]).run().assert_code(1);
    assert!(
        out.stdout.contains("error:        plugin execute failed: command failed (exit code 1)\nplugin:"),
        "{}",
        out.stdout
    );
}
