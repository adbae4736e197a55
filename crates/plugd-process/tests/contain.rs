//! Containment of process plugins, with real processes and real files: nothing a plugin starts
//! outlives its execute, its temp folder cannot be swapped for a link, and it can run as another
//! user.
//!
//! This binary has no test harness: like `plugd::main`, it becomes the reaper when started with
//! the reaper's hidden argument, so the plugins below run under it exactly as under plugd.

use std::ffi::OsString;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use plugd_process::reaper::REAPER_ARG;
use plugd_process::{PluginUser, ProcessOptions};
use plugd_sdk::{
    CallbackPreparation, CallbackPreparer, DynPlugin, ExecuteError, ExecuteRequest, ExecuteResponse, Outcome, State,
};
use serde_json::{json, Map, Value};

struct NoCallbacks;

impl CallbackPreparer for NoCallbacks {
    fn prepare_callback(&self, _trace_id: &str) -> Result<CallbackPreparation, String> {
        Err("no callbacks here".into())
    }
}

/// A plugin folder running `script` with sh, and a workspace beside it, both open to any user.
struct Fixture {
    dir: tempfile::TempDir,
}

impl Fixture {
    fn new(script: &str, timeout: &str) -> Fixture {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().unwrap();
        let plugin = dir.path().join("plugin");
        std::fs::create_dir_all(&plugin).unwrap();
        std::fs::create_dir_all(dir.path().join("workspace")).unwrap();
        std::fs::write(
            plugin.join("plugin.yaml"),
            format!("id: p\nversion: 1.0.0\nentry:\n  start: [sh, \"${{PLUGD_PLUGIN_DIR}}/run.sh\"]\n  timeout: {timeout}\n"),
        )
        .unwrap();
        std::fs::write(plugin.join("run.sh"), script).unwrap();
        for path in [dir.path(), &plugin, &dir.path().join("workspace")] {
            std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o777)).unwrap();
        }
        Fixture { dir }
    }

    fn workspace(&self) -> PathBuf {
        self.dir.path().join("workspace")
    }

    fn options(&self) -> ProcessOptions {
        ProcessOptions {
            workspace: self.workspace(),
            reaper: Some(std::env::current_exe().unwrap()),
            ..ProcessOptions::default()
        }
    }

    async fn execute(&self, options: ProcessOptions) -> ExecuteResponse {
        let plugin = plugd_process::load(&self.dir.path().join("plugin"), options).unwrap();
        plugin.execute(request()).await
    }

    /// The pids the script wrote to `<workspace>/<name>`, one per line.
    fn pids(&self, name: &str) -> Vec<String> {
        let text = std::fs::read_to_string(self.workspace().join(name)).unwrap_or_default();
        text.lines().map(str::to_owned).collect()
    }
}

fn request() -> ExecuteRequest {
    ExecuteRequest {
        trace_id: "0123456789abcdef0123456789abcdef".into(),
        state: State::Empty,
        invoke_count: 1,
        inputs: json!({}),
        context: json!({}),
        storage: Map::new(),
        outputs: Map::new(),
        callback: None,
        callbacks: Arc::new(NoCallbacks),
    }
}

/// Whether `pid` is a live process (not gone, not a zombie).
fn alive(pid: &str) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/stat"))
        .ok()
        .and_then(|stat| stat.rsplit_once(')').map(|(_, rest)| rest.trim_start().to_owned()))
        .is_some_and(|rest| !rest.starts_with('Z'))
}

fn error(response: &ExecuteResponse) -> String {
    match &response.result {
        Err(ExecuteError::Plugin(e)) => e.to_string(),
        other => panic!("expected a plugin error, got {other:?}"),
    }
}

/// Background processes that left the plugin's process group (`setsid`, a double fork) and hold
/// its output open.
const ESCAPES: &str = r#"
setsid sleep 300 &
echo $! >> "$PLUGD_WORKSPACE/pids"
sh -c 'setsid sh -c "sleep 300; :" & echo $! >> "$PLUGD_WORKSPACE/pids"'
echo started
# Time for both to have left the group.
sleep 0.2
"#;

async fn setsid_descendants_die_with_the_execute() {
    let fixture = Fixture::new(ESCAPES, "1m");
    let started = Instant::now();
    let response = fixture.execute(fixture.options()).await;
    let took = started.elapsed();
    assert_eq!(response.result, Ok(Outcome::Success));
    let pids = fixture.pids("pids");
    assert_eq!(pids.len(), 2, "{pids:?}");
    for pid in &pids {
        assert!(!alive(pid), "process {pid} outlived the execute");
    }
    assert!(took < Duration::from_millis(1500), "the execute waited {took:?} for output held open");
}

async fn without_a_reaper_output_held_open_costs_two_seconds_at_most() {
    let fixture = Fixture::new(ESCAPES, "1m");
    let started = Instant::now();
    let response = fixture.execute(ProcessOptions { reaper: None, ..fixture.options() }).await;
    let took = started.elapsed();
    assert_eq!(response.result, Ok(Outcome::Success));
    assert!(took < Duration::from_millis(2500), "the execute waited {took:?} for output held open");
    let pids = fixture.pids("pids");
    assert!(pids.iter().all(|pid| alive(pid)), "without a reaper, what left the group survives (the control)");
    for pid in pids {
        // Each leads its own session (and group): the group goes, the `sleep` of `sh -c` too.
        let _ = nix::sys::signal::killpg(
            nix::unistd::Pid::from_raw(pid.parse().unwrap()),
            nix::sys::signal::Signal::SIGKILL,
        );
    }
}

async fn a_timeout_stops_the_reaper_which_kills_everything() {
    let script = format!("{ESCAPES}\nsleep 300\n");
    let fixture = Fixture::new(&script, "1s");
    let started = Instant::now();
    let response = fixture.execute(fixture.options()).await;
    assert!(started.elapsed() < Duration::from_secs(4), "{:?}", started.elapsed());
    assert_eq!(error(&response), "the plugin timed out after 1s; its process group was killed");
    for pid in fixture.pids("pids") {
        assert!(!alive(&pid), "process {pid} outlived the timeout");
    }
}

async fn an_abandoned_execute_stops_its_processes_too() {
    let script = format!("{ESCAPES}\nsleep 300\n");
    let fixture = Fixture::new(&script, "1m");
    let abandoned = tokio::time::timeout(Duration::from_millis(500), fixture.execute(fixture.options())).await;
    assert!(abandoned.is_err());
    let pids = fixture.pids("pids");
    assert_eq!(pids.len(), 2, "{pids:?}");
    let deadline = Instant::now() + Duration::from_secs(3);
    while pids.iter().any(|pid| alive(pid)) && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(50));
    }
    for pid in &pids {
        assert!(!alive(pid), "process {pid} outlived the abandoned execute");
    }
}

async fn exit_codes_and_signals_pass_through_the_reaper() {
    let fixture = Fixture::new("echo last words >&2\nexit 3\n", "1m");
    assert_eq!(error(&fixture.execute(fixture.options()).await), "exit code 3: last words");
    for (signal, number) in [("TERM", 15), ("KILL", 9), ("SEGV", 11)] {
        let fixture = Fixture::new(&format!("kill -{signal} $$\n"), "1m");
        assert_eq!(error(&fixture.execute(fixture.options()).await), format!("killed by signal {number}: "));
    }
}

/// The plugin moves its temp folder away and puts a link to a folder of its own in its place,
/// with a result file there: plugd reads the folder it created, not the link.
async fn a_temp_folder_swapped_for_a_link_is_not_read_through() {
    let outside = tempfile::tempdir().unwrap();
    std::fs::write(outside.path().join("result.json"), r#"{"status": "success", "outputs": {"leak": 1}}"#).unwrap();
    std::fs::write(outside.path().join("outputs.env"), "leak=2\n").unwrap();
    let script = format!(
        "mv \"$PLUGD_TEMP_DIR\" \"$PLUGD_TEMP_DIR.moved\"\nln -s {} \"$PLUGD_TEMP_DIR\"\nexit 3\n",
        outside.path().display()
    );
    let fixture = Fixture::new(&script, "1m");
    let response = fixture.execute(fixture.options()).await;
    assert_eq!(error(&response), "exit code 3: ");
    assert!(response.outputs.is_empty(), "{:?}", response.outputs);
    // The result file itself a link: refused.
    let script = format!("ln -s {}/result.json \"$PLUGD_RESULT_FILE\"\n", outside.path().display());
    let fixture = Fixture::new(&script, "1m");
    assert!(error(&fixture.execute(fixture.options()).await).ends_with("result.json is not a regular file"));
}

async fn plugins_run_as_the_plugin_user() {
    assert!(nix::unistd::geteuid().is_root(), "this test needs root: it runs plugins as nobody");
    let user = PluginUser::lookup("nobody").unwrap();
    let script = "echo \"uid=$(id -u)\" >> \"$PLUGD_OUTPUT_FILE\"\necho \"groups=$(id -G)\" >> \"$PLUGD_OUTPUT_FILE\"\n\
                  echo \"home=$HOME\" >> \"$PLUGD_OUTPUT_FILE\"\necho '{\"status\": \"success\"}' > \"$PLUGD_RESULT_FILE\"\n";
    let fixture = Fixture::new(script, "1m");
    for reaper in [true, false] {
        let mut options = ProcessOptions { plugin_user: Some(user.clone()), ..fixture.options() };
        if !reaper {
            options.reaper = None;
        }
        let response = fixture.execute(options).await;
        assert_eq!(response.result, Ok(Outcome::Success), "reaper: {reaper}");
        let expected = json!({"uid": user.uid.to_string(), "groups": user.gid.to_string(), "home": user.home.display().to_string()});
        assert_eq!(Value::Object(response.outputs), expected, "reaper: {reaper}");
    }
}

fn main() {
    let args: Vec<OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|arg| arg == REAPER_ARG) {
        plugd_process::reaper::main(args.into_iter().skip(2));
    }
    let filter = args.iter().skip(1).filter_map(|a| a.to_str()).find(|a| !a.starts_with('-')).map(str::to_owned);
    // As libtest: `--include-ignored` (`.ci/run` gives it) runs the tests that need root too.
    let include_ignored = args.iter().any(|a| a == "--include-ignored" || a == "--ignored");
    let runtime = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    type Test = fn() -> std::pin::Pin<Box<dyn std::future::Future<Output = ()>>>;
    // A test with a reason to ignore it runs only with `--include-ignored`.
    let tests: [(&str, Test, Option<&str>); 7] = [
        ("setsid_descendants_die_with_the_execute", || Box::pin(setsid_descendants_die_with_the_execute()), None),
        (
            "without_a_reaper_output_held_open_costs_two_seconds_at_most",
            || Box::pin(without_a_reaper_output_held_open_costs_two_seconds_at_most()),
            None,
        ),
        (
            "a_timeout_stops_the_reaper_which_kills_everything",
            || Box::pin(a_timeout_stops_the_reaper_which_kills_everything()),
            None,
        ),
        (
            "an_abandoned_execute_stops_its_processes_too",
            || Box::pin(an_abandoned_execute_stops_its_processes_too()),
            None,
        ),
        (
            "exit_codes_and_signals_pass_through_the_reaper",
            || Box::pin(exit_codes_and_signals_pass_through_the_reaper()),
            None,
        ),
        (
            "a_temp_folder_swapped_for_a_link_is_not_read_through",
            || Box::pin(a_temp_folder_swapped_for_a_link_is_not_read_through()),
            None,
        ),
        (
            "plugins_run_as_the_plugin_user",
            || Box::pin(plugins_run_as_the_plugin_user()),
            Some("needs root: runs plugins as nobody"),
        ),
    ];
    let (mut ran, mut ignored) = (0, 0);
    for (name, test, ignore) in tests {
        if filter.as_deref().is_some_and(|f| !name.contains(f)) {
            continue;
        }
        if let (Some(reason), false) = (ignore, include_ignored) {
            eprintln!("test {name} ... ignored, {reason}");
            ignored += 1;
            continue;
        }
        eprintln!("test {name} ...");
        runtime.block_on(test());
        eprintln!("test {name} ... ok");
        ran += 1;
    }
    eprintln!("test result: ok. {ran} passed; {ignored} ignored");
}
