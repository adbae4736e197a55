use std::path::Path;
use std::time::Duration;

use serde_json::{json, Value};

use crate::serve::{database, Server};
use crate::util::{listening_on, post, stderr_lines, Plugd, Running};

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

fn new_plugin(parent: &Path, name: &str, lang: &str) -> String {
    let dir = parent.join(name);
    Plugd::new(&["new", name, "--lang", lang, "--dir", dir.to_str().unwrap()]).run().assert_code(0);
    dir.display().to_string()
}

#[test]
fn generated_shell_and_python_plugins_run_locally() {
    let dir = tempfile::tempdir().unwrap();
    let shell = new_plugin(dir.path(), "greet-sh", "shell");
    let out = Plugd::new(&["run", &shell, "--name", "world", "--json"]).run().assert_code(0);
    assert_eq!(out.json()["outputs"], json!({"message": "hello, world"}));
    assert!(out.stderr.contains("greeting world"), "the plugin's output is shown: {}", out.stderr);

    let python = new_plugin(dir.path(), "greet-py", "python");
    let out = Plugd::new(&["run", &python, "--name", "py", "--polls", "2", "--json"]).run().assert_code(0);
    let result = out.json();
    assert_eq!((result["state"].clone(), result["invoke_count"].clone()), (json!("SUCCESS"), json!(3)));
    assert_eq!(result["outputs"], json!({"message": "hello, py", "polls": 2}));
    assert_eq!(result["reports"], json!([{"title": "Greeting", "description": "greeted py after 2 polls"}]));
    // Python keeps its bytecode to itself: nothing is written into the plugin's folder.
    assert!(!Path::new(&python).join("__pycache__").exists());
    let out = Plugd::new(&["run", &python, "--polls", "x"]).run().assert_code(2);
    assert!(
        out.stderr.starts_with("error: invalid value 'x' for '--polls <INTEGER>': expected an integer"),
        "{}",
        out.stderr
    );
}

#[test]
fn generated_plugins_are_served() {
    let dir = tempfile::tempdir().unwrap();
    let plugins = dir.path().join("plugins");
    new_plugin(&plugins, "greet-sh", "shell");
    new_plugin(&plugins, "greet-py", "python");
    let (_db_dir, db) = database();
    let server = Server::start(&db, &["--plugins", plugins.to_str().unwrap()]);
    let meta = server.get("/plugins/greet-py/bk_plugin/meta");
    assert_eq!(meta["data"]["versions"], json!(["0.1.0"]));
    let detail = server.get("/plugins/greet-py/bk_plugin/detail/0.1.0");
    assert_eq!(detail["data"]["inputs"]["properties"]["polls"]["default"], 2);
    let sync = server.invoke("greet-sh", "0.1.0", json!({"name": "sh"}), json!({})).unwrap();
    assert_eq!(sync["data"], json!({"outputs": {"message": "hello, sh"}, "state": 4, "err": null}));
    let started = server.invoke("greet-py", "0.1.0", json!({"name": "srv", "polls": 1}), json!({})).unwrap();
    assert_eq!(started["data"]["state"], 2);
    let trace_id = started["trace_id"].as_str().unwrap();
    let done = server.wait_final("greet-py", trace_id);
    assert_eq!(done["outputs"], json!({"message": "hello, srv", "polls": 1}));
    let logs = server.get(&format!("/plugins/greet-py/bk_plugin/logs/{trace_id}"));
    assert!(logs["data"]["log"].as_str().unwrap().contains("poll 1 of 1"), "{logs}");
    let reports = server.get(&format!("/plugins/greet-py/bk_plugin/reports/{trace_id}"));
    assert_eq!(reports["data"], json!([{"title": "Greeting", "description": "greeted srv after 1 polls"}]));
}

const CALLBACK_PLUGIN: &str = r#"
id: waiter
version: 1.0.0
description: Waits for a callback, then outputs its data.
outputs:
  properties:
    url: {type: string}
    data: {type: object}
entry:
  start: [python3, "${PLUGD_PLUGIN_DIR}/main.py"]
"#;

const CALLBACK_MAIN: &str = r#"
import json, os, sys
inv = json.load(sys.stdin)
result = {"outputs": inv["outputs"], "storage": inv["storage"]}
if inv["callback"] is None:
    result["storage"]["expected"] = inv["prepared_callback"]["id"]
    result["outputs"]["url"] = inv["prepared_callback"]["url"]
    print("waiting at", inv["prepared_callback"]["url"], file=sys.stderr, flush=True)
    result["status"] = "callback"
elif inv["callback"]["id"] != inv["storage"]["expected"]:
    result["status"] = "callback"
else:
    result["outputs"]["data"] = inv["callback"]["data"]
    result["status"] = "success"
json.dump(result, open(os.environ["PLUGD_RESULT_FILE"], "w"))
"#;

#[test]
fn a_process_plugin_waits_for_callbacks_locally_and_served() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugins/waiter");
    write(&plugin, "plugin.yaml", CALLBACK_PLUGIN);
    write(&plugin, "main.py", CALLBACK_MAIN);

    let mut child = Running::new(Plugd::new(&["run", plugin.to_str().unwrap(), "--json"]).spawn());
    let url = stderr_lines(child.child())
        .iter()
        .find_map(|line| line.split("callback url: ").nth(1).map(|found| found.trim().to_owned()))
        .expect("plugd run prints the callback url");
    assert_eq!(post(&url, r#"{"ok": 1}"#).0, 200);
    let output = child.release().wait_with_output().unwrap();
    let result: Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!((result["state"].clone(), result["outputs"]["data"].clone()), (json!("SUCCESS"), json!({"ok": 1})));

    let (_db_dir, db) = database();
    let server = Server::start(&db, &["--plugins", dir.path().join("plugins").to_str().unwrap()]);
    let started = server.invoke("waiter", "1.0.0", json!({}), json!({})).unwrap();
    assert_eq!(started["data"]["state"], 3);
    let url = started["data"]["outputs"]["url"].as_str().unwrap();
    assert_eq!(post(url, r#"{"ok": 2}"#).0, 200);
    let done = server.wait_final("waiter", started["trace_id"].as_str().unwrap());
    assert_eq!(done["outputs"]["data"], json!({"ok": 2}));
}

const QCI: &str = r#"version: '1.0'
id: qci_demo
name: QCI demo
description: Echoes how it was called.
category: build
variables:
  - name: arg1
    type: text
    label: First argument
    required: true
  - name: mode
    type: choice
    options:
      - {label: Fast, value: fast}
      - {label: Safe, value: safe}
    default: fast
  - name: verbose
    type: bool
    default: false
  - name: level
    type: text
    resolve: -l
  - name: target
    type: text
    resolve: ~
  - name: token
    type: text
entry:
  install:
    - $QCI_PLUGIN_EXECUTABLE -c "print('installing qci_demo')"
  env:
    DEMO_TOKEN: $token
    DEMO_STATUS: $QCI_PLUGIN_RUNTIME/status.json
  start: $QCI_PLUGIN_EXECUTABLE $QCI_PLUGIN_RUNTIME/run.py $arg1 $mode $verbose $level $target --status $QCI_PLUGIN_RUNTIME/status.json
  status: $QCI_PLUGIN_RUNTIME/status.json
"#;

const QCI_RUN: &str = r#"
import json, os, sys
args = sys.argv[1:]
status = args[args.index("--status") + 1]
with open(os.environ["CI_ENV_FILE"], "a") as f:
    f.write("ARGV=" + json.dumps(args[:args.index("--status")]) + "\n")
    f.write("TOKEN=" + os.environ.get("DEMO_TOKEN", "") + "\n")
    f.write("CWD=" + os.getcwd() + "\n")
    f.write("SAME_STATUS=" + str(os.environ["DEMO_STATUS"] == status) + "\n")
    from qciplugin import report_output
    f.write("REPORTED=%s,%s\n" % (report_output({"title": "t", "description": "all good"}), report_output({"title": "no body"})))
ok = "boom" not in args
json.dump({"status": "success" if ok else "failure", "message": "arg1 was boom"}, open(status, "w"))
"#;

#[test]
fn qciplugin_yml_runs_unchanged() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("qci");
    write(&plugin, "qciplugin.yml", QCI);
    write(&plugin, "run.py", QCI_RUN);
    let folder = plugin.to_str().unwrap();
    let run = |args: &[&str]| {
        let mut all = vec!["run", folder, "--json"];
        all.extend_from_slice(args);
        Plugd::new(&all).run()
    };
    let out =
        run(&["--arg1", "hello world", "--verbose", "--level", "3", "--target", "prod", "--token", "s"]).assert_code(0);
    let outputs = out.json()["outputs"].clone();
    let argv: Value = serde_json::from_str(outputs["ARGV"].as_str().unwrap()).unwrap();
    assert_eq!(argv, json!(["--arg1", "hello world", "--mode", "fast", "--verbose", "true", "-l", "3", "prod"]));
    assert_eq!(outputs["TOKEN"], "s");
    assert_eq!(outputs["SAME_STATUS"], "True", "the status path is private in argv and entry.env alike");
    assert_eq!(outputs["REPORTED"], "True,False", "qciplugin's report_output is there and checks its rules");
    assert_eq!(out.json()["reports"], json!([{"title": "t", "description": "all good"}]));
    assert!(out.stderr.contains("qciplugin: report_output: one of description, url"), "{}", out.stderr);
    // In a CODING job, the outputs are appended to the job's CI_ENV_FILE too.
    let job_env = dir.path().join("job.env");
    std::fs::write(&job_env, "EARLIER=1\n").unwrap();
    Plugd::new(&["run", folder, "--arg1", "x", "--token", "s2"])
        .env("CI_ENV_FILE", job_env.to_str().unwrap())
        .run()
        .assert_code(0);
    let job_env = std::fs::read_to_string(&job_env).unwrap();
    assert!(job_env.starts_with("EARLIER=1\nARGV="), "{job_env}");
    assert!(job_env.contains("\nTOKEN=s2\n"), "{job_env}");
    assert!(!plugin.join("status.json").exists(), "the status file lives in the execute's temp folder");
    assert!(out.stderr.contains("installing qci_demo"), "install commands run first: {}", out.stderr);

    let out = run(&["--arg1", "x", "--mode", "safe", "--verbose", "false"]).assert_code(0);
    let argv: Value = serde_json::from_str(out.json()["outputs"]["ARGV"].as_str().unwrap()).unwrap();
    assert_eq!(argv, json!(["--arg1", "x", "--mode", "safe", "--verbose", "false"]));

    let out = run(&["--arg1", "boom"]).assert_code(1);
    assert_eq!(out.json()["err"], "plugin execute failed: arg1 was boom");
    let out = run(&["--arg1", "x", "--mode", "slow"]).assert_code(2);
    assert!(out.stderr.contains("invalid value 'slow' for '--mode <STRING>'"), "{}", out.stderr);
    let out = run(&[]).assert_code(2);
    assert!(out.stderr.contains("/arg1: required field is missing"), "{}", out.stderr);

    let out = Plugd::new(&["run", folder, "--arg1", "dbg"]).env("QCI_PLUGIN_DEBUG", "1").run().assert_code(0);
    assert!(
        out.stderr.contains("[qci-plugin debug] run: ") && out.stderr.contains("run.py --arg1 dbg --mode fast"),
        "{}",
        out.stderr
    );
    let help = Plugd::new(&["run", folder, "--help"]).run().assert_code(0).stdout;
    assert!(help.contains("--mode <STRING>    one of \"fast\", \"safe\"  default \"fast\""), "{help}");
}

#[test]
fn a_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("sleepy");
    let pid_file = dir.path().join("child.pid");
    write(
        &plugin,
        "plugin.yaml",
        "id: sleepy\nversion: 1.0.0\nentry:\n  start: [sh, \"${PLUGD_PLUGIN_DIR}/run.sh\"]\n  timeout: 1s\n",
    );
    write(&plugin, "run.sh", &format!("sleep 60 &\necho $! > {}\nsleep 60\n", pid_file.display()));
    let started = std::time::Instant::now();
    let out = Plugd::new(&["run", plugin.to_str().unwrap(), "--json"]).run().assert_code(1);
    assert!(started.elapsed() < Duration::from_secs(20));
    assert_eq!(
        out.json()["err"],
        "plugin execute raise unexpected error: the plugin timed out after 1s; its process group was killed"
    );
    let pid = std::fs::read_to_string(&pid_file).unwrap().trim().to_owned();
    std::thread::sleep(Duration::from_millis(200));
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    assert!(status.is_empty() || status.contains("State:\tZ"), "the background child {pid} survived: {status}");

    // qciplugin.yml declares no timeout: PLUGD_PROCESS_TIMEOUT sets it (10 minutes without it).
    let qci = dir.path().join("sleepy-qci");
    write(&qci, "qciplugin.yml", "version: '1.0'\nid: sleepy_qci\nname: sleepy\nentry:\n  start: sleep 60\n");
    let run = |timeout: &str| {
        Plugd::new(&["run", qci.to_str().unwrap(), "--json"]).env("PLUGD_PROCESS_TIMEOUT", timeout).run()
    };
    let out = run("1s").assert_code(1);
    assert_eq!(
        out.json()["err"],
        "plugin execute raise unexpected error: the plugin timed out after 1s; its process group was killed"
    );
    let out = run("0s").assert_code(2);
    assert_eq!(out.stderr, "error: PLUGD_PROCESS_TIMEOUT: must be more than zero\n");
}

#[test]
fn outputs_reports_and_results_are_checked_and_capped() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("p");
    write(
        &plugin,
        "plugin.yaml",
        "id: p\nversion: 1.0.0\noutputs:\n  properties:\n    n: {type: integer}\n    note: {type: string}\nentry:\n  start: [python3, \"${PLUGD_PLUGIN_DIR}/main.py\"]\n",
    );
    let case = |code: &str| {
        write(&plugin, "main.py", &format!("import json, os, sys\ninv = json.load(sys.stdin)\n{code}\n"));
        Plugd::new(&["run", plugin.to_str().unwrap(), "--json"]).run().json()
    };
    let typed = case("open(os.environ['PLUGD_OUTPUT_FILE'], 'a').write('n=42\\nnote<<END\\nline 1\\nline 2\\nEND\\n')");
    assert_eq!(typed["outputs"], json!({"n": 42, "note": "line 1\nline 2"}));
    let bad_report = case("open(os.environ['PLUGD_REPORTS_FILE'], 'a').write(json.dumps({'title': 'x', 'url': 'https://a', 'report_html': 'i.html'}) + '\\n')");
    assert_eq!(
        bad_report["err"],
        "plugin execute raise unexpected error: reports file line 1: url excludes report_html and report_dir"
    );
    let huge = case("open(os.environ['PLUGD_RESULT_FILE'], 'w').write(json.dumps({'status': 'success', 'outputs': {'note': 'x' * 2000000}}))");
    let err = huge["err"].as_str().unwrap();
    assert!(
        err.starts_with("plugin execute raise unexpected error: ")
            && err.ends_with("result.json is larger than 1048576 bytes"),
        "{err}"
    );
    let flood = case("sys.stdout.write('y' * 5000000)\nopen(os.environ['PLUGD_OUTPUT_FILE'], 'a').write('n=1\\n')");
    assert_eq!(flood["state"], "SUCCESS", "a flood of output is drained, not kept");
    let bad_result = case("open(os.environ['PLUGD_RESULT_FILE'], 'w').write('{\"status\": \"done\"}')");
    assert!(
        bad_result["err"].as_str().unwrap().contains("invalid result file: line 1 column 17: unknown variant `done`"),
        "{bad_result}"
    );
    let failed = case("print('last words', file=sys.stderr)\nsys.exit(3)");
    assert_eq!(failed["err"], "plugin execute failed: exit code 3: last words");
    let linked = case("os.symlink('/etc/hostname', os.environ['PLUGD_RESULT_FILE'])");
    assert!(linked["err"].as_str().unwrap().ends_with("result.json is not a regular file"), "{linked}");
}

#[test]
fn invalid_manifests_name_file_line_and_field() {
    let dir = tempfile::tempdir().unwrap();
    let cases = [
        (
            "plugin.yaml",
            "id: x\nversion: 1.0.0\nentry:\n  start: [run]\n  timout: 5s\n",
            "plugin.yaml:5: entry: unknown field `timout`, expected one of `install`, `env`, `env_passthrough`, `start`, `timeout`\n",
        ),
        (
            "plugin.yaml",
            "id: x\nversion: one\nentry:\n  start: run\n",
            "plugin.yaml:2: version: \"one\" is not a semantic version (expected e.g. 1.0.0)\n",
        ),
        (
            "plugin.yaml",
            "id: x\nversion: 1.0.0\ninputs:\n  type: array\nentry:\n  start: run\n",
            "plugin.yaml:3: inputs: the schema must be of type object, not \"array\"\n",
        ),
        (
            "plugin.yaml",
            "id: x\nversion: 1.0.0\nentry:\n  start: \"run 'unclosed\"\n",
            "plugin.yaml:4: entry.start: cannot split \"run 'unclosed\": missing closing quote\n",
        ),
        (
            "plugin.yaml",
            "id: x\nversion: 1.0.0\nentry:\n  start: run\n  timeout: soon\n",
            "plugin.yaml:5: entry.timeout: invalid duration \"soon\" (expected e.g. 30s, 10m, 1h30m)\n",
        ),
        (
            "plugin.yaml",
            "id: x y\nversion: 1.0.0\nentry: {start: run}\n",
            "plugin.yaml:1: id: \"x y\" is not a valid id: use letters, digits, '-', '_' and '.'\n",
        ),
        ("plugin.yaml", "id: x\nversion: 1.0.0\n", "plugin.yaml:1: missing field `entry`\n"),
        // An unclosed bracket: the last line, not the one after it.
        (
            "plugin.yaml",
            "id: x\nversion: 1.0.0\nentry: {start: [run]\n\n",
            "plugin.yaml:3: did not find expected ',' or '}'\n",
        ),
        (
            "plugin.yaml",
            "id: x\nversion: 1.0.0\nentry:\n  start: run\n  env: {PLUGD_RESULT_FILE: /tmp/x}\n",
            "plugin.yaml:5: entry.env: PLUGD_RESULT_FILE is set by plugd and cannot be overridden\n",
        ),
        (
            "qciplugin.yml",
            "version: '1.0'\nid: q\nname: q\nentry:\n  start: run\n  env:\n    CI_ENV_FILE: /tmp/x\n",
            "qciplugin.yml:6: entry.env: CI_ENV_FILE is set by plugd and cannot be overridden\n",
        ),
        (
            "qciplugin.yml",
            "version: 1.0\nid: q\nname: q\nentry: {start: run}\n",
            "qciplugin.yml:1: version: must be a string, e.g. '1.0' (got 1.0)\n",
        ),
        (
            "qciplugin.yml",
            "version: '1.0'\nid: q\nname: q\nvariables:\n  - {name: m, type: choice}\nentry: {start: run}\n",
            "qciplugin.yml:4: variables: variable 1: m: a choice needs options\n",
        ),
        (
            "qciplugin.yml",
            "version: '1.0'\nid: q\nname: q\nvariables:\n  - {name: m, type: choice, options: []}\nentry: {start: run}\n",
            "qciplugin.yml:4: variables: variable 1: m: a choice needs options\n",
        ),
        (
            "qciplugin.yml",
            "version: '1.0'\nid: q\nname: q\nvariables:\n  - {name: m, type: number}\nentry: {start: run}\n",
            "qciplugin.yml:4: variables: variable 1: m: unknown type \"number\"; expected text, choice or bool\n",
        ),
    ];
    for (i, (file, text, expected)) in cases.iter().enumerate() {
        let plugin = dir.path().join(format!("case{i}"));
        write(&plugin, file, text);
        let out = Plugd::new(&["run", plugin.to_str().unwrap()]).run().assert_code(2);
        let canonical = plugin.canonicalize().unwrap();
        assert_eq!(out.stderr, format!("error: {}/{expected}", canonical.display()), "case {i}");
    }
    let out = Plugd::new(&["run", dir.path().to_str().unwrap()]).run().assert_code(2);
    assert!(out.stderr.ends_with("no plugin here: expected plugin.yaml or qciplugin.yml\n"), "{}", out.stderr);
}

/// Whether `pid` is a live process (neither gone nor a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

/// Starts processes that leave the plugin's process group (`setsid`, a double fork), keep its
/// output open, and write their pids to `pids`; then exits.
fn escapes(pids: &Path) -> String {
    format!(
        "setsid sleep 300 &\necho $! >> {pids}\nsh -c 'setsid sh -c \"sleep 300; :\" & echo $! >> {pids}'\n\
         echo started\nsleep 0.2\n",
        pids = pids.display()
    )
}

/// Checks that the processes `escapes` started are gone, and kills them if not.
#[track_caller]
fn assert_gone(pids: &Path) {
    let pids: Vec<String> = std::fs::read_to_string(pids).unwrap().lines().map(str::to_owned).collect();
    assert_eq!(pids.len(), 2, "{pids:?}");
    let survivors: Vec<&String> = pids.iter().filter(|pid| alive(pid)).collect();
    for pid in &survivors {
        let _ = std::process::Command::new("kill").args(["-KILL", "--", &format!("-{pid}")]).status();
    }
    assert!(survivors.is_empty(), "processes {survivors:?} outlived the execute");
}

#[test]
fn nothing_a_plugin_starts_outlives_its_execute() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("escapes");
    let pids = dir.path().join("pids");
    write(
        &plugin,
        "plugin.yaml",
        "id: escapes\nversion: 1.0.0\nentry:\n  start: [sh, \"${PLUGD_PLUGIN_DIR}/run.sh\"]\n",
    );
    write(&plugin, "run.sh", &escapes(&pids));
    let started = std::time::Instant::now();
    let out = Plugd::new(&["run", plugin.to_str().unwrap(), "--json"]).run().assert_code(0);
    let took = started.elapsed();
    assert_eq!(out.json()["state"], "SUCCESS");
    assert_gone(&pids);
    // Output held open by what escaped delays the execute two seconds at most (here: not at all).
    assert!(took < Duration::from_millis(2500), "the execute took {took:?}");

    // The `command` plugin's programs too.
    let pids = dir.path().join("command-pids");
    let inputs = dir.path().join("inputs.json");
    let script = escapes(&pids);
    std::fs::write(&inputs, json!({"command": "sh", "args": ["-c", script], "print_output": false}).to_string())
        .unwrap();
    let started = std::time::Instant::now();
    let out = Plugd::new(&["run", "command", "--inputs-json", inputs.to_str().unwrap(), "--json"]).run().assert_code(0);
    let took = started.elapsed();
    assert_eq!(out.json()["outputs"]["output"], "started");
    assert_gone(&pids);
    assert!(took < Duration::from_millis(2500), "the command took {took:?}");

    // On a timeout, the same.
    let pids = dir.path().join("timeout-pids");
    write(
        &plugin,
        "plugin.yaml",
        "id: escapes\nversion: 1.0.0\nentry:\n  start: [sh, \"${PLUGD_PLUGIN_DIR}/run.sh\"]\n  timeout: 1s\n",
    );
    write(&plugin, "run.sh", &format!("{}\nsleep 300\n", escapes(&pids)));
    let out = Plugd::new(&["run", plugin.to_str().unwrap(), "--json"]).run().assert_code(1);
    assert_eq!(
        out.json()["err"],
        "plugin execute raise unexpected error: the plugin timed out after 1s; its process group was killed"
    );
    assert_gone(&pids);
}

#[test]
fn a_temp_folder_swapped_for_a_link_is_not_read_through() {
    let dir = tempfile::tempdir().unwrap();
    let outside = dir.path().join("outside");
    write(&outside, "result.json", r#"{"status": "success", "outputs": {"leak": "result"}}"#);
    write(&outside, "outputs.env", "leak=outputs\n");
    let plugin = dir.path().join("swapper");
    let moved = dir.path().join("moved");
    write(
        &plugin,
        "plugin.yaml",
        "id: swapper\nversion: 1.0.0\nentry:\n  start: [sh, \"${PLUGD_PLUGIN_DIR}/run.sh\"]\n",
    );
    write(
        &plugin,
        "run.sh",
        &format!(
            "echo \"$PLUGD_TEMP_DIR.moved\" > {moved}\nmv \"$PLUGD_TEMP_DIR\" \"$PLUGD_TEMP_DIR.moved\"\n\
             ln -s {outside} \"$PLUGD_TEMP_DIR\"\nexit 3\n",
            moved = moved.display(),
            outside = outside.display()
        ),
    );
    let out = Plugd::new(&["run", plugin.to_str().unwrap(), "--json"]).run();
    let _ = std::fs::remove_dir_all(std::fs::read_to_string(&moved).unwrap().trim());
    let result = out.assert_code(1).json();
    assert_eq!(result["err"], "plugin execute failed: exit code 3: ", "{result}");
    assert_eq!(result["outputs"], json!({}));
}

/// `plugd serve` in `dir` (its workspace) with `extra` arguments: the server process and its base URL.
fn serve_in(dir: &Path, db: &Path, extra: &[&str]) -> (Running, String) {
    let db = format!("sqlite://{}", db.display());
    let workspace = dir.display().to_string();
    let mut args = vec!["serve", "--listen", "127.0.0.1:0", "--db", db.as_str(), "--workspace", workspace.as_str()];
    args.extend_from_slice(extra);
    let mut child = Running::new(Plugd::new(&args).current_dir(dir).spawn());
    let base = listening_on(&mut child, "plugd serve starts");
    (child, base)
}

fn get(url: &str) -> (u16, String) {
    crate::util::try_request("GET", url, "").expect("the server answers")
}

#[test]
fn reports_name_regular_files_inside_the_workspace_only() {
    let dir = tempfile::tempdir().unwrap();
    let workspace = dir.path().join("workspace");
    let outside = dir.path().join("outside");
    write(&outside, "secret.html", "secret");
    write(
        &dir.path().join("plugins/reporter"),
        "plugin.yaml",
        "id: reporter\nversion: 1.0.0\nentry:\n  start: [sh, \"${PLUGD_PLUGIN_DIR}/run.sh\"]\n",
    );
    let reports = [
        json!({"title": "ok", "report_html": "ok.html"}),
        json!({"report_html": "/proc/self/environ"}),
        json!({"report_html": "../outside/secret.html"}),
        json!({"report_html": "link.html"}),
        json!({"report_html": "pipe.html"}),
        json!({"report_html": "index.html", "report_dir": "linked"}),
    ];
    let lines: Vec<String> = reports.iter().map(|r| format!("echo '{r}' >> \"$PLUGD_REPORTS_FILE\"")).collect();
    write(
        &dir.path().join("plugins/reporter"),
        "run.sh",
        &format!(
            "echo '<h1>ok</h1>' > ok.html\nln -s {outside}/secret.html link.html\nln -s {outside} linked\n\
             mkfifo pipe.html\n{}\n",
            lines.join("\n"),
            outside = outside.display()
        ),
    );
    std::fs::create_dir_all(&workspace).unwrap();
    let plugins = dir.path().join("plugins");
    let (_server, base) = serve_in(&workspace, &dir.path().join("plugd.db"), &["--plugins", plugins.to_str().unwrap()]);
    let body = json!({"inputs": {}, "context": {}}).to_string();
    let (status, done) = post(&format!("{base}/plugins/reporter/bk_plugin/invoke/1.0.0"), &body);
    assert_eq!(status, 200, "{done}");
    let done: Value = serde_json::from_str(&done).unwrap();
    assert_eq!(done["data"]["state"], 4, "{done}");
    let trace_id = done["trace_id"].as_str().unwrap();
    let (_, listed) = get(&format!("{base}/plugins/reporter/bk_plugin/reports/{trace_id}"));
    let listed: Value = serde_json::from_str(&listed).unwrap();
    let listed = listed["data"].as_array().unwrap();
    assert_eq!(listed[0]["html"], "1-1/ok.html");
    let (status, page) = get(&format!("{base}/plugins/reporter/bk_plugin/reports/{trace_id}/1-1/ok.html"));
    assert_eq!((status, page.as_str()), (200, "<h1>ok</h1>\n"));
    let errors: Vec<&str> = listed[1..].iter().map(|r| r["error"].as_str().unwrap_or("kept!")).collect();
    let not_kept = |why: &str| format!("report files not kept: {why}");
    assert_eq!(
        errors,
        [
            not_kept("report_html \"/proc/self/environ\" is outside the workspace"),
            not_kept("report_html \"../outside/secret.html\" is outside the workspace"),
            not_kept("report_html \"link.html\" is (or passes through) a symbolic link"),
            not_kept("report_html \"pipe.html\" is not a regular file"),
            not_kept("report_dir \"linked\" is (or passes through) a symbolic link"),
        ]
    );
    for n in 2..=6 {
        let (status, _) = get(&format!("{base}/plugins/reporter/bk_plugin/reports/{trace_id}/1-{n}/index.html"));
        assert_eq!(status, 404);
    }
}

#[test]
#[ignore = "needs root: runs plugins as nobody"]
fn plugins_run_as_the_plugin_user() {
    use std::os::unix::fs::PermissionsExt;
    assert!(nix_is_root(), "this test needs root: --plugin-user does");
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugins/whoami");
    write(
        &plugin,
        "plugin.yaml",
        "id: whoami\nversion: 1.0.0\noutputs:\n  properties:\n    uid: {type: integer}\nentry:\n  start: [sh, \"${PLUGD_PLUGIN_DIR}/run.sh\"]\n",
    );
    write(
        &plugin,
        "run.sh",
        "echo \"uid=$(id -u)\" >> \"$PLUGD_OUTPUT_FILE\"\necho \"groups=$(id -G)\" >> \"$PLUGD_OUTPUT_FILE\"\n",
    );
    for path in [dir.path(), &dir.path().join("plugins"), &plugin] {
        std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
    let folder = plugin.to_str().unwrap();
    let out = Plugd::new(&["run", folder, "--json"]).env("PLUGD_PLUGIN_USER", "nobody").run().assert_code(0);
    assert_eq!(out.json()["outputs"], json!({"uid": 65534, "groups": "65534"}));
    let out = Plugd::new(&["run", "command", "--command", "id", "--args=-u", "--json"])
        .env("PLUGD_PLUGIN_USER", "nobody")
        .run()
        .assert_code(0);
    assert_eq!(out.json()["outputs"]["output"], "65534");

    let plugins = dir.path().join("plugins");
    let workspace = dir.path().join("workspace");
    std::fs::create_dir(&workspace).unwrap();
    let (_server, base) = serve_in(
        &workspace,
        &dir.path().join("plugd.db"),
        &["--plugins", plugins.to_str().unwrap(), "--plugin-user", "nobody"],
    );
    let body = json!({"inputs": {}, "context": {}}).to_string();
    let (status, done) = post(&format!("{base}/plugins/whoami/bk_plugin/invoke/1.0.0"), &body);
    assert_eq!(status, 200, "{done}");
    let done: Value = serde_json::from_str(&done).unwrap();
    assert_eq!(done["data"]["outputs"], json!({"uid": 65534, "groups": "65534"}), "{done}");
    drop(_server);

    // A user of its own for one plugin (a project that must not reach the others' processes).
    let other = dir.path().join("plugins/whoami-too");
    write(
        &other,
        "plugin.yaml",
        &std::fs::read_to_string(plugin.join("plugin.yaml")).unwrap().replace("id: whoami\n", "id: whoami-too\n"),
    );
    write(&other, "run.sh", &std::fs::read_to_string(plugin.join("run.sh")).unwrap());
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    let (_server, base) = serve_in(
        &workspace,
        &dir.path().join("plugd-2.db"),
        &["--plugins", plugins.to_str().unwrap(), "--plugin-user", "whoami=daemon,nobody"],
    );
    for (plugin, uid) in [("whoami", 1), ("whoami-too", 65534)] {
        let (status, done) = post(&format!("{base}/plugins/{plugin}/bk_plugin/invoke/1.0.0"), &body);
        assert_eq!(status, 200, "{done}");
        let done: Value = serde_json::from_str(&done).unwrap();
        assert_eq!(done["data"]["outputs"]["uid"], uid, "{plugin}: {done}");
    }
    let out = Plugd::new(&["run", folder]).env("PLUGD_PLUGIN_USER", "whoami=daemon,whoami=nobody").run().assert_code(2);
    assert_eq!(out.stderr, "error: --plugin-user whoami=nobody: a user for \"whoami\" is given twice\n");

    // An unknown user, or a plugd that is not root: usage errors.
    let out = Plugd::new(&["run", folder]).env("PLUGD_PLUGIN_USER", "no-such-user").run().assert_code(2);
    assert_eq!(out.stderr, "error: --plugin-user no-such-user: no such user\n");
    let db = dir.path().join("unused.db");
    let db = format!("sqlite://{}", db.display());
    let out = Plugd::new(&["serve", "--db", &db, "--plugin-user", "no-such-user"]).run().assert_code(2);
    assert_eq!(out.stderr, "error: --plugin-user no-such-user: no such user\n");
    let out = Plugd::new(&["serve", "--db", &db, "--plugin-user", "nobody"])
        .current_dir(Path::new("/"))
        .user(65534, 65534)
        .run()
        .assert_code(2);
    assert_eq!(
        out.stderr,
        "error: --plugin-user nobody: plugd must run as root to run plugins as another user (it runs as uid 65534)\n"
    );
}

fn nix_is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| s.lines().find(|l| l.starts_with("Uid:")).map(|l| l.split_whitespace().nth(2) == Some("0")))
        .unwrap_or(false)
}

#[test]
fn the_sample_qci_plugin_runs() {
    let folder = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../examples/qci-hello");
    let folder = folder.to_str().unwrap();
    let out = Plugd::new(&["run", folder, "--name", "world", "--json"]).run().assert_code(0);
    let result = out.json();
    assert_eq!(
        (result["plugin"].clone(), result["outputs"].clone()),
        (json!("qci_hello"), json!({"MESSAGE": "hello, world"}))
    );
    assert_eq!(result["reports"], json!([{"title": "Greeting", "description": "hello, world"}]));
    assert!(out.stderr.contains("hello, world"), "its output is shown: {}", out.stderr);
    let out = Plugd::new(&["run", folder, "--name", "monde", "--greeting", "bonjour", "--shout", "--json"])
        .run()
        .assert_code(0);
    assert_eq!(out.json()["outputs"], json!({"MESSAGE": "BONJOUR, MONDE!"}));
    let help = Plugd::new(&["run", folder, "--help"]).run().assert_code(0).stdout;
    assert!(help.contains("--name <STRING>"), "{help}");
}
