//! `plugd-hooks.yaml`: parsing, and the checks that need no execution.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plugd_core::Registry;
use serde::Deserialize;
use serde_json::{Map, Value};

use super::template::{self, Scope, TemplateValues};

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

/// A stage name that is not one of [`STAGES`]; the message names them.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown stage {name:?}; expected one of {}", STAGES.join(", "))]
pub struct UnknownStageError {
    /// The name given.
    pub name: String,
}

/// Whether `name` is one of [`STAGES`]; the error names them.
pub fn check_stage(name: &str) -> Result<(), UnknownStageError> {
    if STAGES.contains(&name) {
        return Ok(());
    }
    Err(UnknownStageError { name: name.to_owned() })
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

/// rez's emailer defaults (`rezplugins/release_hook/rezconfig.py`, rez 3.4) as templates, for the
/// `email` inputs a step leaves out. rez's body also has `REZ VERSION: {system.rez_version}`
/// (plugd is not rez), and its variants are those released: plugd releases the package's one
/// variant, as rez does for a package without variants (its root is `<path>/<name>/<version>`).
const EMAIL_DEFAULTS: [(&str, &str); 3] = [
    ("sender", "{{ system.user }}@rez-release.com"),
    ("subject", "[rez] [release] {{ system.user }} released {{ package.qualified_name }}"),
    (
        "body",
        "Package '{{ package.qualified_name }}' was released by {{ system.user }}@{{ system.fqdn }}.

USER: {{ system.user }}
PACKAGE: {{ package.qualified_name }}
RELEASED TO: {{ release.path }}
PREVIOUS VERSION: {{ release.previous_version or \"None.\" }}

1 VARIANTS:
{{ release.path }}/{{ package.name }}/{{ package.version }}

MESSAGE:
{{ release.message or \"No release message.\" }}

CHANGELOG:
{{ release.changelog or \"No changelog.\" }}",
    ),
];

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
    /// The line of its `- name:` item in the file.
    pub line: Option<usize>,
    /// The line of each input (`with.<key>`, `context.<key>`): its own, or its map's when inline.
    pub input_lines: BTreeMap<String, Option<usize>>,
}

impl Step {
    /// The line of input `key` of `section` (`with` or `context`), else of the step.
    fn line_of(&self, section: &str, key: &str) -> Option<usize> {
        self.input_lines.get(&format!("{section}.{key}")).copied().flatten().or(self.line)
    }
}

/// A step's inputs (or context inputs), by name.
pub type Inputs = Map<String, Value>;

/// A step as it would run: its inputs rendered (by [`HooksFile::plan`]).
#[derive(Debug, Clone)]
pub struct PlannedStep<'a> {
    /// Its stage.
    pub stage: &'a str,
    /// The step.
    pub step: &'a Step,
    /// Its inputs, rendered.
    pub with: Map<String, Value>,
    /// Its context inputs, rendered.
    pub context: Map<String, Value>,
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

/// The line of input `key` under `section` (`with:` or `context:`) of a step; the section's line
/// when the key is not on a line of its own.
fn input_line(text: &str, stage: &str, index: usize, section: &str, key: &str) -> Option<usize> {
    let start = step_line(text, stage, index, Some(section))?;
    let lines: Vec<&str> = text.lines().collect();
    let indent = |line: &str| line.len() - line.trim_start().len();
    // The column of `section:` itself, after any `- `.
    let section_indent = lines[start - 1].len() - lines[start - 1].trim_start_matches([' ', '-']).len();
    for (number, line) in lines.iter().enumerate().skip(start) {
        let trimmed = line.trim_start();
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        if indent(line) <= section_indent {
            break;
        }
        if trimmed.trim_start_matches('{').trim_start().starts_with(&format!("{key}:")) {
            return Some(number + 1);
        }
    }
    Some(start)
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
            // An error at the end of the input (an unclosed bracket) is placed on the line after
            // the last: show the last line with text instead.
            let last = text.lines().enumerate().filter(|(_, l)| !l.trim().is_empty()).last().map_or(1, |(i, _)| i + 1);
            error(e.location().map(|l| l.line().min(last)), message)
        })?;
        let defaults = raw.defaults;
        let mut stages = Vec::new();
        for (stage_name, raw_steps) in raw.stages {
            if let Err(e) = check_stage(&stage_name) {
                let line =
                    text.lines().position(|l| l.trim_start().starts_with(&format!("{stage_name}:"))).map(|n| n + 1);
                return Err(error(line, e.to_string()));
            }
            let mut steps = Vec::new();
            for (index, mut raw) in raw_steps.into_iter().enumerate() {
                let at = |key: Option<&str>| step_line(&text, &stage_name, index, key);
                let plugin = registry
                    .get_spec(&raw.uses)
                    .map_err(|e| error(at(Some("uses")), format!("step {:?}: {e}", raw.name)))?;
                let fields = plugin.schemas.inputs["properties"].as_object().cloned().unwrap_or_default();
                if plugin.info.name == "email" {
                    for (key, template) in EMAIL_DEFAULTS {
                        if fields.contains_key(key) {
                            raw.with.entry(key).or_insert_with(|| Value::String(template.to_owned()));
                        }
                    }
                }
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
                        return Err(error(input_line(&text, &stage_name, index, "with", key), message));
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
                let mut input_lines = BTreeMap::new();
                for (section, inputs) in [("with", &raw.with), ("context", &raw.context)] {
                    for (key, value) in inputs {
                        let line = input_line(&text, &stage_name, index, section, key).or(at(None));
                        input_lines.insert(format!("{section}.{key}"), line);
                        template::check(value).map_err(|e| {
                            error(line, format!("step {:?}: {}: {e}", raw.name, input_name(section, key)))
                        })?;
                    }
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
                    line: at(None),
                    input_lines,
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

    /// Renders the inputs of step `index` of `stage` as `scope` allows (see [`Scope`]); an error
    /// names the file and line, the step, the input and the variable.
    pub fn render_step(
        &self,
        stage: &Stage,
        index: usize,
        values: &TemplateValues,
        scope: Scope,
    ) -> Result<(Inputs, Inputs), HooksError> {
        let step = &stage.steps[index];
        let earlier: Vec<String> = stage.steps[..index].iter().map(|s| s.id.clone()).collect();
        let renderer = values.renderer(scope, &stage.name, &earlier);
        let render = |section: &str, inputs: &Map<String, Value>| {
            let mut rendered = Map::new();
            for (key, value) in inputs {
                let value = renderer.render(value).map_err(|message| HooksError {
                    file: self.file.clone(),
                    line: step.line_of(section, key),
                    message: format!("step {:?}: {}: {message}", step.name, input_name(section, key)),
                })?;
                rendered.insert(key.clone(), value);
            }
            Ok(rendered)
        };
        Ok((render("with", &step.with)?, render("context", &step.context)?))
    }

    /// Every step of `stage` (of every stage when `None`) with its inputs rendered as `scope`
    /// allows: what `hooks check` and `hooks run` check before anything runs, and what a dry run
    /// shows.
    pub fn plan(
        &self,
        stage: Option<&str>,
        values: &TemplateValues,
        scope: Scope,
    ) -> Result<Vec<PlannedStep<'_>>, HooksError> {
        let mut planned = Vec::new();
        for current in self.stages.iter().filter(|s| stage.is_none_or(|name| name == s.name)) {
            for (index, step) in current.steps.iter().enumerate() {
                let (with, context) = self.render_step(current, index, values, scope)?;
                planned.push(PlannedStep { stage: &current.name, step, with, context });
            }
        }
        Ok(planned)
    }
}

/// `input "key"`, or `context input "key"`.
fn input_name(section: &str, key: &str) -> String {
    match section {
        "context" => format!("context input {key:?}"),
        _ => format!("input {key:?}"),
    }
}
