//! What a process plugin's environment holds, with a real process: inputs reach it as
//! `PLUGD_INPUT_<NAME>` only where an environment can hold them, and whole on stdin always.

use std::sync::Arc;

use plugd_process::ProcessOptions;
use plugd_sdk::{CallbackPreparation, CallbackPreparer, DynPlugin, ExecuteRequest, Outcome, State};
use serde_json::{json, Map, Value};

struct NoCallbacks;

impl CallbackPreparer for NoCallbacks {
    fn prepare_callback(&self, _trace_id: &str) -> Result<CallbackPreparation, String> {
        Err("no callbacks here".into())
    }
}

/// Echoes what it got as outputs: its stdin, and the two inputs' variables (`absent` when unset).
/// `printf`, not `echo`: dash's `echo` would read the JSON's backslashes as escapes.
const ECHO: &str = r#"stdin=$(cat)
{
  printf 'stdin=%s\n' "$stdin"
  printf 'text_env=%s\n' "${PLUGD_INPUT_TEXT-absent}"
  printf 'other_env=%s\n' "${PLUGD_INPUT_OTHER-absent}"
} >> "$PLUGD_OUTPUT_FILE"
"#;

#[tokio::test]
async fn an_input_holding_a_nul_byte_reaches_stdin_but_not_the_environment() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("plugin");
    std::fs::create_dir_all(&plugin).unwrap();
    std::fs::write(
        plugin.join("plugin.yaml"),
        "id: p\nversion: 1.0.0\nentry:\n  start: [sh, \"${PLUGD_PLUGIN_DIR}/run.sh\"]\n  timeout: 1m\n",
    )
    .unwrap();
    std::fs::write(plugin.join("run.sh"), ECHO).unwrap();
    let options = ProcessOptions { workspace: dir.path().to_owned(), ..ProcessOptions::default() };
    let plugin = plugd_process::load(&plugin, options).unwrap();

    let response = plugin
        .execute(ExecuteRequest {
            trace_id: "0123456789abcdef0123456789abcdef".into(),
            state: State::Empty,
            invoke_count: 1,
            inputs: json!({"text": "a\u{0}b", "other": "plain"}),
            context: json!({}),
            storage: Map::new(),
            outputs: Map::new(),
            callback: None,
            callbacks: Arc::new(NoCallbacks),
        })
        .await;

    assert_eq!(response.result, Ok(Outcome::Success));
    let output = |key: &str| response.outputs.get(key).and_then(Value::as_str).unwrap_or_default().to_owned();
    let stdin: Value = serde_json::from_str(&output("stdin")).unwrap();
    assert_eq!(stdin["inputs"]["text"], "a\u{0}b", "stdin holds the input whole");
    assert_eq!(output("text_env"), "absent");
    assert_eq!(output("other_env"), "plain");
}
