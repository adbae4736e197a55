use crate::util::Plugd;

const HELLO_INPUTS: &str = "accepted inputs:
  --name <STRING>      string   required         Who to greet.
  --greeting <STRING>  string   default \"hello\"  The word to greet with.
  --times <INTEGER>    integer  optional         How many times to greet (default 1).
";

#[track_caller]
fn usage_error(args: &[&str], stderr: &str) {
    let out = Plugd::new(args).run().assert_code(2);
    assert_eq!(out.stderr, stderr, "for {args:?}");
    assert_eq!(out.stdout, "", "nothing ran for {args:?}");
}

#[test]
fn an_unknown_flag_lists_the_accepted_inputs() {
    usage_error(
        &["run", "hello", "--nmae", "x"],
        &format!(
            "error: unexpected argument '--nmae' found\n\n  tip: a similar argument exists: '--name'\n\n{HELLO_INPUTS}"
        ),
    );
}

#[test]
fn a_missing_required_input() {
    usage_error(
        &["run", "hello"],
        &format!("error: inputs validation error: /name: required field is missing\n\n{HELLO_INPUTS}"),
    );
}

#[test]
fn a_wrong_type() {
    usage_error(
        &["run", "hello", "--name", "x", "--times", "abc"],
        &format!("error: invalid value 'abc' for '--times <INTEGER>': expected an integer\n\n{HELLO_INPUTS}"),
    );
}

#[test]
fn a_value_out_of_range() {
    usage_error(
        &["run", "hello", "--name", "x", "--times", "0"],
        &format!("error: inputs validation error: /times: expected a value >= 1, got 0\n\n{HELLO_INPUTS}"),
    );
}

#[test]
fn negative_numbers_are_values_that_validation_judges() {
    usage_error(
        &["run", "hello", "--name", "x", "--times", "-1"],
        &format!("error: inputs validation error: /times: expected a value >= 1, got -1\n\n{HELLO_INPUTS}"),
    );
    // `from` is a u32: the schema or the plugin's own reading refuses -1, not the command line.
    let out = Plugd::new(&["run", "countdown", "--from", "-1"]).run();
    assert_ne!(out.code, 0);
    assert!(!out.stderr.contains("unexpected argument"), "{}", out.stderr);
    assert!(format!("{}{}", out.stdout, out.stderr).contains("inputs validation error: /from: "), "{out:?}");
    // A string may look like a negative number too; a flag after an input flag is still a flag.
    let out = Plugd::new(&["run", "hello@1.0.0", "--name", "-2", "--json"]).run().assert_code(0);
    assert_eq!(out.json()["outputs"]["message"], "hello, -2");
}

#[test]
fn a_wrong_type_in_the_inputs_file() {
    let out = Plugd::new(&["run", "hello", "--inputs-json", "-"]).stdin(r#"{"name": 7}"#).run().assert_code(2);
    assert_eq!(out.stderr, format!("error: inputs validation error: /name: expected string, got 7\n\n{HELLO_INPUTS}"));
}

#[test]
fn unknown_plugins_and_versions_list_what_exists() {
    usage_error(&["run", "nope"], "error: unknown plugin \"nope\"; available plugins: amqp, approval, command, countdown, email, gitlab-pipeline, hello, webhook\n");
    usage_error(
        &["run", "hello@3.0.0", "--name", "x"],
        "error: plugin \"hello\" has no version \"3.0.0\"; available versions: 2.0.0, 1.0.0\n",
    );
    usage_error(
        &["describe", "hello@x"],
        "error: plugin \"hello\" has no version \"x\"; available versions: 2.0.0, 1.0.0\n",
    );
}

#[test]
fn bad_input_and_context_sources() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.json");
    let missing = missing.to_str().unwrap();
    let out = Plugd::new(&["run", "hello", "--inputs-json", missing]).run().assert_code(2);
    assert!(out.stderr.starts_with(&format!("error: --inputs-json: cannot read {missing}: ")), "{}", out.stderr);
    let out = Plugd::new(&["run", "hello", "--inputs-json", "-"]).stdin("{oops").run().assert_code(2);
    assert!(out.stderr.starts_with("error: --inputs-json: standard input is not valid JSON: key must be a string"));
    let out = Plugd::new(&["run", "hello", "--inputs-json", "-"]).stdin("[1]").run().assert_code(2);
    assert_eq!(out.stderr, "error: --inputs-json: standard input must hold a JSON object, not an array\n");
    usage_error(
        &["run", "hello", "--name", "x", "--context", "oops"],
        "error: invalid --context \"oops\": expected KEY=VALUE\n",
    );
    usage_error(
        &["run", "hello", "--inputs-json", "-", "--context-json", "-"],
        "error: --inputs-json and --context-json cannot both read standard input\n",
    );
}

#[test]
fn a_bad_timeout_and_a_missing_plugin() {
    let out = Plugd::new(&["run", "hello", "--name", "x", "--timeout", "soon"]).run().assert_code(2);
    assert!(out.stderr.starts_with("error: invalid value 'soon' for '--timeout <DURATION>'"), "{}", out.stderr);
    let out = Plugd::new(&["run"]).run().assert_code(2);
    assert!(out.stderr.ends_with("error: missing <PLUGIN>\n"), "{}", out.stderr);
    let out = Plugd::new(&["frobnicate"]).run().assert_code(2);
    assert!(out.stderr.starts_with("error: unrecognized subcommand 'frobnicate'"), "{}", out.stderr);
}
