use crate::util::Plugd;
use serde_json::json;

#[test]
fn list_shows_every_plugin_with_versions_newest_first() {
    let out = Plugd::new(&["list"]).run().assert_code(0);
    let lines: Vec<&str> = out.stdout.lines().collect();
    let words = |line: &str| line.split_whitespace().collect::<Vec<_>>().join(" ");
    assert_eq!(words(lines[0]), "PLUGIN VERSIONS SOURCE DESCRIPTION", "{}", out.stdout);
    assert!(lines.iter().any(|l| words(l) == "hello 2.0.0, 1.0.0 built-in Greets someone, possibly several times."));
    let column = lines[0].find("VERSIONS").unwrap();
    assert!(
        lines.iter().all(|l| l.len() <= column || l[column..].starts_with(|c: char| !c.is_whitespace())),
        "aligned columns"
    );
    let list = Plugd::new(&["list", "--json"]).run().assert_code(0).json();
    let hello = list.as_array().unwrap().iter().find(|p| p["name"] == "hello").unwrap();
    assert_eq!(
        hello,
        &json!({"name": "hello", "versions": ["2.0.0", "1.0.0"], "source": "built-in", "description": "Greets someone, possibly several times."})
    );
}

#[test]
fn describe_json_has_the_detail_shape() {
    let detail = Plugd::new(&["describe", "hello@1.0.0", "--json"]).run().assert_code(0).json();
    assert_eq!(detail["version"], "1.0.0");
    assert_eq!(detail["enable_plugin_callback"], false);
    assert_eq!(detail["inputs"]["required"], json!(["name"]));
    assert_eq!(detail["inputs"]["properties"]["greeting"]["default"], "hello");
    assert_eq!(detail["inputs"]["properties"]["name"]["description"], "Who to greet.");
    assert_eq!(
        detail["context_inputs"],
        json!({"type": "object", "properties": {}, "required": [], "definitions": {}})
    );
    assert_eq!(detail["forms"], json!({"renderform": null}));
}

#[test]
fn run_help_describes_inputs_and_outputs() {
    let out = Plugd::new(&["run", "countdown", "--help"]).run().assert_code(0);
    assert!(out
        .stdout
        .starts_with("Usage: plugd run countdown[@<VERSION>] [INPUTS] [OPTIONS]\n\ncountdown 1.0.0: Counts down"));
    assert!(
        out.stdout.contains("  --from <INTEGER>         integer  required      Where to count down from"),
        "{}",
        out.stdout
    );
    assert!(out.stdout.contains("  --interval-ms <INTEGER>  integer  default 1000  Milliseconds between polls."));
    assert!(out.stdout.contains("Outputs:\n  polls  integer  required  How many polls it took.\n"));
}

#[test]
fn debug_logs_carry_the_trace_id() {
    let out = Plugd::new(&["run", "hello", "--name", "x", "--json", "-v"]).run().assert_code(0);
    let trace_id = out.json()["trace_id"].as_str().unwrap().to_owned();
    assert!(out.stderr.contains(&format!("trace_id={trace_id}")), "{}", out.stderr);
    assert!(out.stderr.contains("plugin start execute"), "{}", out.stderr);
    let out = Plugd::new(&["run", "hello", "--name", "x"]).env("PLUGD_DEBUG", "1").run().assert_code(0);
    assert!(out.stderr.contains("plugin execute done"), "{}", out.stderr);
    let out = Plugd::new(&["run", "hello", "--name", "x"]).run().assert_code(0);
    assert_eq!(out.stderr, "", "quiet by default");
}
