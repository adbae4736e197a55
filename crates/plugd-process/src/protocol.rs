//! The process protocol, version 1 (docs/process-protocol.md): what plugd hands a plugin process
//! and how it reads the answer.

use std::path::Path;
use std::time::Duration;

use plugd_sdk::beneath::{Beneath, BeneathError};
use plugd_sdk::{Outcome, PluginError, Report};
use serde::Deserialize;
use serde_json::{Map, Value};

/// The protocol version, in `PLUGD_PROTOCOL` and the invocation's `protocol`.
pub const PROTOCOL_VERSION: u32 = 1;

/// Files larger than this (result, outputs, reports) are refused.
pub(crate) const MAX_FILE: u64 = 1024 * 1024;

/// The answer a plugin writes to `$PLUGD_RESULT_FILE`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub(crate) struct ResultFile {
    status: Status,
    #[serde(default)]
    outputs: Option<Map<String, Value>>,
    #[serde(default)]
    storage: Option<Map<String, Value>>,
    #[serde(default)]
    poll_interval: Option<f64>,
    #[serde(default)]
    callback_timeout: Option<f64>,
    #[serde(default)]
    callback_example: Option<Value>,
    #[serde(default)]
    error: Option<String>,
}

/// The longest wait a result file may ask for, in seconds (30 days).
const MAX_WAIT_SECONDS: f64 = 86_400.0 * 30.0;

/// `seconds` of the result file's `field`, checked to be a wait plugd can keep.
fn wait(field: &str, seconds: f64) -> Result<Duration, String> {
    if !(0.0..=MAX_WAIT_SECONDS).contains(&seconds) {
        return Err(format!("invalid result file: {field} must be between 0 and 2592000 seconds, got {seconds}"));
    }
    Ok(Duration::from_secs_f64(seconds))
}

#[derive(Debug, Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
enum Status {
    Success,
    Fail,
    Poll,
    Callback,
}

/// Reads a file the plugin wrote in its temp folder, `folder` (held open since before the plugin
/// started): resolved beneath it without following a link, opened without blocking on a FIFO,
/// checked to be a regular file on the open handle, and read to at most the cap.
pub(crate) fn read_capped(folder: &Beneath, path: &Path) -> Result<Option<String>, String> {
    use std::io::Read;
    let file = match folder.file(path) {
        Ok(file) => file,
        Err(BeneathError::NotFound) => return Ok(None),
        Err(BeneathError::Link | BeneathError::NotRegular) => {
            return Err(format!("{} is not a regular file", path.display()))
        }
        Err(e) => return Err(format!("{} {e}", path.display())),
    };
    let mut text = String::new();
    file.take(MAX_FILE + 1).read_to_string(&mut text).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    if text.len() as u64 > MAX_FILE {
        return Err(format!("{} is larger than {MAX_FILE} bytes", path.display()));
    }
    Ok(Some(text))
}

/// What a result file decides: the outcome, and the storage and outputs to merge.
#[derive(Debug)]
pub(crate) struct Decision {
    pub(crate) outcome: Result<Outcome, PluginError>,
    pub(crate) storage: Option<Map<String, Value>>,
    pub(crate) outputs: Map<String, Value>,
    /// A body the third party may post to the prepared callback (`callback_example`).
    pub(crate) callback_example: Option<Value>,
}

pub(crate) fn parse_result(text: &str) -> Result<Decision, String> {
    let result: ResultFile = serde_json::from_str(text).map_err(|e| {
        // serde_json ends its message with the position, which goes first here.
        let message = e.to_string();
        let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
        format!("invalid result file: line {} column {}: {message}", e.line(), e.column())
    })?;
    let outcome = match result.status {
        Status::Success => Ok(Outcome::Success),
        Status::Fail => Err(PluginError::failed(result.error.as_deref().unwrap_or("the plugin reported failure"))),
        Status::Poll => Ok(Outcome::Poll(wait("poll_interval", result.poll_interval.unwrap_or(0.0))?)),
        Status::Callback => match result.callback_timeout {
            None => Ok(Outcome::Callback),
            Some(seconds) => Ok(Outcome::CallbackWithin(wait("callback_timeout", seconds)?)),
        },
    };
    Ok(Decision {
        outcome,
        storage: result.storage,
        outputs: result.outputs.unwrap_or_default(),
        callback_example: result.callback_example,
    })
}

/// `KEY=VALUE` lines, and `KEY<<DELIMITER` ... `DELIMITER` blocks (the GitHub Actions form).
pub(crate) fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut pairs = Vec::new();
    let mut lines = text.lines().enumerate();
    while let Some((number, line)) = lines.next() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        if let Some((key, delimiter)) = line.split_once("<<").filter(|(k, _)| !k.contains('=')) {
            let mut value = Vec::new();
            loop {
                match lines.next() {
                    Some((_, l)) if l == delimiter => break,
                    Some((_, l)) => value.push(l),
                    None => {
                        return Err(format!("outputs file line {}: {key}<<{delimiter} is never closed", number + 1))
                    }
                }
            }
            pairs.push((key.trim().to_owned(), value.join("\n")));
        } else if let Some((key, value)) = line.split_once('=') {
            if key.trim().is_empty() {
                return Err(format!("outputs file line {}: empty name", number + 1));
            }
            pairs.push((key.trim().to_owned(), value.to_owned()));
        } else {
            return Err(format!("outputs file line {}: expected KEY=VALUE", number + 1));
        }
    }
    Ok(pairs)
}

/// A `KEY=VALUE` output typed by the outputs schema: integers, numbers and booleans are parsed.
pub(crate) fn typed_output(outputs_schema: &Value, key: &str, value: String) -> Value {
    let declared = &outputs_schema["properties"][key]["type"];
    let kind = declared
        .as_str()
        .or_else(|| declared.as_array().and_then(|t| t.iter().filter_map(Value::as_str).find(|t| *t != "null")));
    match kind {
        Some("integer") => value.trim().parse::<i64>().map(Value::from).unwrap_or(Value::String(value)),
        Some("number") => value
            .trim()
            .parse::<f64>()
            .ok()
            .and_then(serde_json::Number::from_f64)
            .map(Value::Number)
            .unwrap_or(Value::String(value)),
        Some("boolean") => match value.trim() {
            "true" => Value::Bool(true),
            "false" => Value::Bool(false),
            _ => Value::String(value),
        },
        Some("object" | "array") => serde_json::from_str(&value).unwrap_or(Value::String(value)),
        _ => Value::String(value),
    }
}

/// One report per line of the reports file, each validated.
pub(crate) fn parse_reports(text: &str) -> Result<Vec<Report>, String> {
    let mut reports = Vec::new();
    for (number, line) in text.lines().enumerate() {
        if line.trim().is_empty() {
            continue;
        }
        let report: Report =
            serde_json::from_str(line).map_err(|e| format!("reports file line {}: {e}", number + 1))?;
        report.validate().map_err(|e| format!("reports file line {}: {e}", number + 1))?;
        reports.push(report);
    }
    Ok(reports)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn result_files() {
        let poll = parse_result(r#"{"status": "poll", "poll_interval": 0.5, "storage": {"n": 1}}"#).unwrap();
        assert_eq!(poll.outcome, Ok(Outcome::Poll(Duration::from_millis(500))));
        assert_eq!(poll.storage, Some(json!({"n": 1}).as_object().unwrap().clone()));
        let fail = parse_result(r#"{"status": "fail", "error": "boom"}"#).unwrap();
        assert_eq!(fail.outcome, Err(PluginError::failed("boom")));
        assert_eq!(
            parse_result(r#"{"status": "done"}"#).unwrap_err(),
            "invalid result file: line 1 column 17: unknown variant `done`, expected one of `success`, `fail`, `poll`, `callback`"
        );
        assert!(parse_result(r#"{"status": "poll", "poll_interval": -1}"#).unwrap_err().contains("poll_interval"));
        let waits = parse_result(r#"{"status": "callback", "callback_timeout": 1.5}"#).unwrap();
        assert_eq!(waits.outcome, Ok(Outcome::CallbackWithin(Duration::from_millis(1500))));
        assert_eq!(parse_result(r#"{"status": "callback"}"#).unwrap().outcome, Ok(Outcome::Callback));
        assert!(parse_result(r#"{"status": "callback", "callback_timeout": 1e9}"#)
            .unwrap_err()
            .contains("callback_timeout must be between 0 and 2592000 seconds"));
        assert!(parse_result("{").is_err());
    }

    #[test]
    fn env_files() {
        let text = "a=1\nb=x=y\n\nmulti<<EOF\nline 1\nline 2\nEOF\n";
        assert_eq!(
            parse_env_file(text).unwrap(),
            [("a".into(), "1".into()), ("b".into(), "x=y".into()), ("multi".into(), "line 1\nline 2".into())]
        );
        assert_eq!(parse_env_file("oops\n").unwrap_err(), "outputs file line 1: expected KEY=VALUE");
        assert_eq!(parse_env_file("k<<END\nv\n").unwrap_err(), "outputs file line 1: k<<END is never closed");
        let schema =
            json!({"properties": {"n": {"type": "integer"}, "ok": {"type": "boolean"}, "s": {"type": "string"}}});
        assert_eq!(typed_output(&schema, "n", "42".into()), json!(42));
        assert_eq!(typed_output(&schema, "ok", "true".into()), json!(true));
        assert_eq!(typed_output(&schema, "s", "42".into()), json!("42"));
        assert_eq!(typed_output(&schema, "n", "many".into()), json!("many"));
    }

    #[test]
    fn report_lines() {
        let reports = parse_reports("{\"title\": \"t\", \"description\": \"d\"}\n\n").unwrap();
        assert_eq!(reports.len(), 1);
        assert_eq!(
            parse_reports("{\"title\": \"t\"}").unwrap_err(),
            "reports file line 1: a report needs one of description, url or report_html"
        );
    }
}
