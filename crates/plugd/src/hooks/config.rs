//! `plugd-hooks.yaml`: parsing, and the checks that need no execution.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plugd_core::Registry;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::template;

/// The stages, in release order.
pub const STAGES: [&str; 3] = ["pre_build", "pre_release", "post_release"];

/// A problem with a hooks file: where and what.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{}{}: {message}", file.display(), line.map(|l| format!(":{l}")).unwrap_or_default())]
pub struct HooksError {
    /// The file.
    pub file: PathBuf,
    /// The 1-based line, when known.
    pub line: Option<usize>,
    /// What is wrong.
    pub message: String,
}

/// Whether `name` is one of [`STAGES`]; the error names them.
pub fn check_stage(name: &str) -> Result<(), String> {
    if STAGES.contains(&name) {
        return Ok(());
    }
    Err(format!("unknown stage {name:?}; expected one of {}", STAGES.join(", ")))
}

/// Stage-wide error handling.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Defaults {
    /// A failing pre_build/pre_release step cancels the release.
    #[serde(default = "yes")]
    pub cancel_on_error: bool,
    /// A failing step skips the remaining steps of its stage.
    #[serde(default = "yes")]
    pub stop_on_error: bool,
}

fn yes() -> bool {
    true
}

impl Default for Defaults {
    fn default() -> Defaults {
        Defaults { cancel_on_error: true, stop_on_error: true }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawFile {
    #[serde(default)]
    defaults: Defaults,
    stages: BTreeMap<String, Vec<RawStep>>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawStep {
    name: String,
    #[serde(default)]
    id: Option<String>,
    uses: String,
    #[serde(default)]
    with: Map<String, Value>,
    #[serde(default)]
    context: Map<String, Value>,
    #[serde(default)]
    cancel_on_error: Option<bool>,
    #[serde(default)]
    stop_on_error: Option<bool>,
}

/// One step: a plugin with templated inputs.
#[derive(Debug, Clone)]
pub struct Step {
    /// Its name, shown in the summary and in "release cancelled by hook `<name>`".
    pub name: String,
    /// How later steps refer to its outputs (`steps.<id>.outputs`); the name when absent.
    pub id: String,
    /// `plugin` or `plugin@version`.
    pub uses: String,
    /// The inputs; strings are minijinja templates.
    pub with: Map<String, Value>,
    /// The context inputs; strings are templates too.
    pub context: Map<String, Value>,
    /// Whether a failure cancels the release (always false in `post_release`).
    pub cancel_on_error: bool,
    /// Whether a failure skips the remaining steps.
    pub stop_on_error: bool,
}

/// The steps of one stage.
#[derive(Debug, Clone)]
pub struct Stage {
    /// `pre_build`, `pre_release` or `post_release`.
    pub name: String,
    /// The steps, in order.
    pub steps: Vec<Step>,
}

/// A checked hooks file.
#[derive(Debug, Clone)]
pub struct HooksFile {
    /// Where it was read from.
    pub file: PathBuf,
    /// Its stages, in release order.
    pub stages: Vec<Stage>,
}

/// The line of the `index`-th list item under `stages: <stage>:`, and of `key` inside it.
fn step_line(text: &str, stage: &str, index: usize, key: Option<&str>) -> Option<usize> {
    let lines: Vec<&str> = text.lines().collect();
    let start = lines.iter().position(|l| l.trim_start().starts_with(&format!("{stage}:")))?;
    let stage_indent = lines[start].len() - lines[start].trim_start().len();
    let mut item = None;
    let mut seen = 0;
    for (number, line) in lines.iter().enumerate().skip(start + 1) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let indent = line.len() - trimmed.len();
        if indent <= stage_indent && !trimmed.starts_with("- ") {
            break;
        }
        if trimmed.starts_with("- ") {
            if seen == index {
                item = Some(number);
            } else if item.is_some() {
                break;
            }
            seen += 1;
        }
        if let (Some(_), Some(key)) = (item, key) {
            let bare = trimmed.trim_start_matches("- ");
            if bare.starts_with(&format!("{key}:")) {
                return Some(number + 1);
            }
        }
    }
    // Asked for a key that is not on a line of its own (an inline map): unknown.
    if key.is_some() {
        return None;
    }
    item.map(|n| n + 1)
}

impl HooksFile {
    /// Reads `path` and checks every step against `registry`: known stages and plugins, required
    /// inputs present, no unknown inputs, templates that compile.
    pub fn load(path: &Path, registry: &Registry) -> Result<HooksFile, HooksError> {
        let error = |line: Option<usize>, message: String| HooksError { file: path.to_owned(), line, message };
        let text = std::fs::read_to_string(path).map_err(|e| error(None, format!("cannot read: {e}")))?;
        let raw: RawFile = serde_yaml_ng::from_str(&text).map_err(|e| {
            let message = e.to_string();
            let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
            error(e.location().map(|l| l.line()), message)
        })?;
        let defaults = raw.defaults;
        let mut stages = Vec::new();
        for (stage_name, raw_steps) in raw.stages {
            if let Err(message) = check_stage(&stage_name) {
                let line =
                    text.lines().position(|l| l.trim_start().starts_with(&format!("{stage_name}:"))).map(|n| n + 1);
                return Err(error(line, message));
            }
            let mut steps = Vec::new();
            for (index, raw) in raw_steps.into_iter().enumerate() {
                let at = |key: Option<&str>| step_line(&text, &stage_name, index, key);
                let plugin = registry
                    .get_spec(&raw.uses)
                    .map_err(|e| error(at(Some("uses")), format!("step {:?}: {e}", raw.name)))?;
                let fields = plugin.schemas.inputs["properties"].as_object().cloned().unwrap_or_default();
                // An unknown key first: it is usually a misspelt required one.
                for key in raw.with.keys() {
                    if !fields.contains_key(key) {
                        let accepted: Vec<&str> = fields.keys().map(String::as_str).collect();
                        let message = format!(
                            "step {:?}: unknown input {key:?} for plugin {}; accepted: {}",
                            raw.name,
                            plugin.id(),
                            accepted.join(", ")
                        );
                        return Err(error(at(Some(key)).or(at(Some("with"))), message));
                    }
                }
                for required in
                    plugin.schemas.inputs["required"].as_array().into_iter().flatten().filter_map(Value::as_str)
                {
                    if !raw.with.contains_key(required) {
                        let message = format!(
                            "step {:?}: missing required input {required:?} for plugin {}",
                            raw.name,
                            plugin.id()
                        );
                        return Err(error(at(Some("with")).or(at(None)), message));
                    }
                }
                for (key, value) in raw.with.iter().chain(raw.context.iter()) {
                    let line = at(Some(key)).or(at(Some("with"))).or(at(None));
                    template::check(value)
                        .map_err(|e| error(line, format!("step {:?}: input {key:?}: {e}", raw.name)))?;
                }
                let id = raw.id.clone().unwrap_or_else(|| raw.name.clone());
                if steps.iter().any(|s: &Step| s.id == id) {
                    return Err(error(
                        at(None),
                        format!("step {:?}: another step of {stage_name} has the same id", raw.name),
                    ));
                }
                steps.push(Step {
                    id,
                    name: raw.name,
                    uses: raw.uses,
                    with: raw.with,
                    context: raw.context,
                    // Only the stages before a release can cancel it (as in rez).
                    cancel_on_error: stage_name != "post_release"
                        && raw.cancel_on_error.unwrap_or(defaults.cancel_on_error),
                    stop_on_error: raw.stop_on_error.unwrap_or(defaults.stop_on_error),
                });
            }
            stages.push(Stage { name: stage_name, steps });
        }
        stages.sort_by_key(|s| STAGES.iter().position(|n| *n == s.name));
        Ok(HooksFile { file: path.to_owned(), stages })
    }

    /// The steps of `stage` (none when the file does not declare it).
    pub fn stage(&self, stage: &str) -> Option<&Stage> {
        self.stages.iter().find(|s| s.name == stage)
    }
}
