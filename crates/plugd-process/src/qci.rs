//! `qciplugin.yml`, unchanged: CODING CI plugins run as `plugd run ./folder --arg1 "hello world"`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use plugd_sdk::{Outcome, PluginError};
use serde::Deserialize;
use serde_json::{json, Map, Value};
use serde_yaml_ng::Value as Yaml;

use crate::manifest::{check_category, check_env_key, line_of};
use crate::LoadError;

#[derive(Debug, Deserialize)]
struct RawQci {
    version: Yaml,
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    variables: Vec<Yaml>,
    entry: RawEntry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    install: Vec<String>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    start: String,
    #[serde(default)]
    status: Option<String>,
}

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Text,
    Choice(Vec<String>),
    Bool,
}

#[derive(Debug, Clone)]
struct Variable {
    name: String,
    kind: Kind,
    /// Used when the caller gives no value.
    default: Option<Value>,
    /// The flag passed before the value: `--name` by default, `-x`, or none (`resolve: ~`).
    flag: Option<String>,
}

/// What a qci plugin runs, once its `$var` placeholders are expanded.
#[derive(Debug, Clone)]
pub(crate) struct QciEntry {
    variables: Vec<Variable>,
    start: Vec<String>,
    env: BTreeMap<String, String>,
    status: Option<String>,
    runtime: PathBuf,
    executable: String,
}

pub(crate) struct Built {
    pub(crate) argv: Vec<String>,
    pub(crate) env: Vec<(String, String)>,
    pub(crate) status: Option<PathBuf>,
}

/// plugd's `qciplugin` Python package (`report_output` and friends), by path below its folder.
const SDK: [(&str, &str); 2] = [
    ("qciplugin/__init__.py", include_str!("qciplugin/__init__.py")),
    ("qciplugin/_vendor/__init__.py", include_str!("qciplugin/_vendor/__init__.py")),
];

/// Writes the `qciplugin` package into `temp/python` and returns that folder, for `PYTHONPATH`:
/// plugins written for CODING import `from qciplugin import report_output`.
pub(crate) fn write_sdk(temp: &Path) -> Result<PathBuf, String> {
    let root = temp.join("python");
    for (path, text) in SDK {
        let file = root.join(path);
        let parent = file.parent().unwrap_or(&root);
        std::fs::create_dir_all(parent)
            .and_then(|()| std::fs::write(&file, text))
            .map_err(|e| format!("cannot write {}: {e}", file.display()))?;
    }
    Ok(root)
}

/// The machine's python3, as `$QCI_PLUGIN_EXECUTABLE`.
fn python3() -> String {
    crate::command::resolve("python3").map_or_else(|| "python3".to_owned(), |p| p.display().to_string())
}

pub(crate) struct Loaded {
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) description: String,
    pub(crate) inputs: Value,
    pub(crate) entry: QciEntry,
    pub(crate) install: Vec<Vec<String>>,
}

pub(crate) fn load(dir: &Path) -> Result<Loaded, LoadError> {
    let file = dir.join("qciplugin.yml");
    let text = std::fs::read_to_string(&file).map_err(|e| LoadError::io(&file, e))?;
    let raw: RawQci = serde_yaml_ng::from_str(&text).map_err(|e| LoadError::yaml(&file, &e))?;
    let at = |path: &[&str], message: String| LoadError::field(&file, line_of(&text, path), &path.join("."), message);
    let version = match &raw.version {
        Yaml::String(v) if plugd_sdk::parse_version(v).is_ok() => v.clone(),
        Yaml::String(v) => return Err(at(&["version"], format!("{v:?} is not a version (expected e.g. '1.0')"))),
        other => {
            return Err(at(
                &["version"],
                format!("must be a string, e.g. '1.0' (got {})", serde_json::to_string(other).unwrap_or_default()),
            ))
        }
    };
    if !plugd_sdk::is_valid_name(&raw.id) {
        return Err(at(&["id"], format!("{:?} is not a valid id: use letters, digits, '-', '_' and '.'", raw.id)));
    }
    if let Some(category) = &raw.category {
        check_category(category).map_err(|e| at(&["category"], e))?;
    }
    let mut variables = Vec::new();
    let mut properties = Map::new();
    let mut required = Vec::new();
    for (index, raw_variable) in raw.variables.iter().enumerate() {
        let (variable, schema, is_required) =
            variable(raw_variable).map_err(|e| at(&["variables"], format!("variable {}: {e}", index + 1)))?;
        if variables.iter().any(|v: &Variable| v.name == variable.name) {
            return Err(at(&["variables"], format!("variable {:?} is declared twice", variable.name)));
        }
        if is_required {
            required.push(Value::String(variable.name.clone()));
        }
        properties.insert(variable.name.clone(), schema);
        variables.push(variable);
    }
    let start =
        shell_words::split(&raw.entry.start).map_err(|e| at(&["entry", "start"], format!("cannot split: {e}")))?;
    if start.is_empty() {
        return Err(at(&["entry", "start"], "the command is empty".into()));
    }
    let install = raw
        .entry
        .install
        .iter()
        .map(|line| match shell_words::split(line) {
            Ok(argv) if !argv.is_empty() => Ok(argv),
            Ok(_) => Err(at(&["entry", "install"], format!("the command {line:?} is empty"))),
            Err(e) => Err(at(&["entry", "install"], format!("cannot split {line:?}: {e}"))),
        })
        .collect::<Result<Vec<_>, _>>()?;
    for key in raw.entry.env.keys() {
        check_env_key(key, &["CI_ENV_FILE", "QCI_PLUGIN_RUNTIME"]).map_err(|e| at(&["entry", "env"], e))?;
    }
    let inputs = json!({"type": "object", "properties": properties, "required": required, "definitions": {}});
    let entry = QciEntry {
        variables,
        start,
        env: raw.entry.env,
        status: raw.entry.status,
        runtime: dir.to_owned(),
        executable: python3(),
    };
    Ok(Loaded { id: raw.id, name: raw.name, version, description: raw.description, inputs, entry, install })
}

/// One `variables` entry: its runtime form, its JSON Schema, and whether it is required.
fn variable(raw: &Yaml) -> Result<(Variable, Value, bool), String> {
    let map = raw.as_mapping().ok_or("expected a mapping")?;
    let get = |key: &str| map.get(Yaml::String(key.to_owned()));
    let text = |key: &str| get(key).and_then(Yaml::as_str).map(str::to_owned);
    let name = text("name").ok_or("name is required")?;
    if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
        return Err(format!("name {name:?}: use letters, digits and '_'"));
    }
    let kind = match text("type").as_deref().unwrap_or("text") {
        "text" => Kind::Text,
        "bool" => Kind::Bool,
        "choice" => {
            let options = get("options")
                .and_then(Yaml::as_sequence)
                .filter(|o| !o.is_empty())
                .ok_or(format!("{name}: a choice needs options"))?;
            let values = options
                .iter()
                .map(|o| match o {
                    Yaml::String(value) => Some(value.clone()),
                    Yaml::Mapping(m) => m.get(Yaml::String("value".into())).and_then(|v| match v {
                        Yaml::String(s) => Some(s.clone()),
                        Yaml::Number(n) => Some(n.to_string()),
                        Yaml::Bool(b) => Some(b.to_string()),
                        _ => None,
                    }),
                    _ => None,
                })
                .collect::<Option<Vec<String>>>()
                .ok_or(format!("{name}: each option needs a value"))?;
            Kind::Choice(values)
        }
        other => return Err(format!("{name}: unknown type {other:?}; expected text, choice or bool")),
    };
    let flag = match get("resolve") {
        None => Some(format!("--{name}")),
        Some(Yaml::Null) => None,
        Some(Yaml::String(s)) if s == "~" => None,
        Some(Yaml::String(s)) if s.starts_with('-') => Some(s.clone()),
        Some(other) => {
            return Err(format!(
                "{name}: resolve must be --flag, -f or ~, got {}",
                serde_json::to_string(other).unwrap_or_default()
            ))
        }
    };
    let mut schema = Map::new();
    match &kind {
        Kind::Text => {
            schema.insert("type".into(), "string".into());
        }
        Kind::Bool => {
            schema.insert("type".into(), "boolean".into());
        }
        Kind::Choice(values) => {
            schema.insert("type".into(), "string".into());
            schema.insert("enum".into(), json!(values));
        }
    }
    // BK-SOPS shows `title || key`: the label, else pydantic's default title (`build_type` → `Build Type`).
    schema.insert("title".into(), text("label").unwrap_or_else(|| plugd_sdk::field_title(&name)).into());
    if let Some(help) = text("help").or_else(|| text("label")) {
        schema.insert("description".into(), help.into());
    }
    if let Some(default) = get("default") {
        let value = match (&kind, default) {
            (Kind::Bool, Yaml::Bool(b)) => Value::Bool(*b),
            (Kind::Bool, _) => return Err(format!("{name}: the default of a bool must be true or false")),
            (_, Yaml::String(s)) => Value::String(s.clone()),
            (_, Yaml::Number(n)) => Value::String(n.to_string()),
            (_, _) => return Err(format!("{name}: the default must be a string")),
        };
        if let (Kind::Choice(values), Value::String(s)) = (&kind, &value) {
            if !values.contains(s) {
                return Err(format!("{name}: the default {s:?} is not one of the options"));
            }
        }
        schema.insert("default".into(), value);
    }
    let required = get("required").and_then(Yaml::as_bool).unwrap_or(false) && get("default").is_none();
    let default = schema.get("default").cloned();
    Ok((Variable { name, kind, flag, default }, Value::Object(schema), required))
}

impl QciEntry {
    fn specials(&self, token: &str) -> String {
        let runtime = self.runtime.display().to_string();
        token
            .replace("${QCI_PLUGIN_RUNTIME}", &runtime)
            .replace("$QCI_PLUGIN_RUNTIME", &runtime)
            .replace("${QCI_PLUGIN_EXECUTABLE}", &self.executable)
            .replace("$QCI_PLUGIN_EXECUTABLE", &self.executable)
    }

    /// The value of a variable as text (`None` when not given and without default).
    fn value(variable: &Variable, inputs: &Value) -> Option<String> {
        let value = inputs.get(&variable.name).or(variable.default.as_ref())?;
        match value {
            Value::String(s) => Some(s.clone()),
            Value::Bool(b) => Some(b.to_string()),
            Value::Null => None,
            other => Some(other.to_string()),
        }
    }

    /// Expands one argv token: `$var` alone becomes `--var "value"` (per `resolve`); anything
    /// else gets its special variables replaced. Values are argv entries, never shell text.
    fn expand(&self, token: &str, inputs: &Value, out: &mut Vec<String>) {
        if let Some(variable) = self.variable_named_by(token) {
            let Some(value) = QciEntry::value(variable, inputs) else { return };
            match (&variable.kind, &variable.flag) {
                // `resolve: ~` on a bool: a presence-only switch.
                (Kind::Bool, None) => {
                    if value == "true" {
                        out.push(format!("--{}", variable.name));
                    }
                }
                (_, Some(flag)) => out.extend([flag.clone(), value]),
                (_, None) => out.push(value),
            }
            return;
        }
        // Only the special variables are replaced inside a token: an input value never becomes part of
        // a larger argument, where `sh -c "... $x"` would hand it to a shell.
        out.push(self.specials(token));
    }

    /// The declared variable a whole token names, as `$name` or `${name}`.
    fn variable_named_by(&self, token: &str) -> Option<&Variable> {
        let name = token.strip_prefix("${").and_then(|t| t.strip_suffix('}')).or_else(|| token.strip_prefix('$'))?;
        self.variables.iter().find(|v| v.name == name)
    }

    pub(crate) fn expand_install(&self, argv: &[String]) -> Vec<String> {
        argv.iter().map(|t| self.specials(t)).collect()
    }

    /// `QCI_PLUGIN_RUNTIME`, `QCI_PLUGIN_EXECUTABLE` and `QCI_PLUGIN_DEBUG`: what install commands
    /// and executes both see.
    fn runtime_env(&self) -> Vec<(String, String)> {
        let mut env = vec![
            ("QCI_PLUGIN_RUNTIME".to_owned(), self.runtime.display().to_string()),
            ("QCI_PLUGIN_EXECUTABLE".to_owned(), self.executable.clone()),
        ];
        if let Ok(debug) = std::env::var("QCI_PLUGIN_DEBUG") {
            env.push(("QCI_PLUGIN_DEBUG".to_owned(), debug));
        }
        env
    }

    /// The environment of install commands: the runtime variables and the `entry.env` values that
    /// do not name a variable (inputs are not known when a plugin installs).
    pub(crate) fn install_env(&self) -> Vec<(String, String)> {
        let mut env = self.runtime_env();
        for (key, template) in &self.env {
            if self.variable_named_by(template).is_none() {
                env.push((key.clone(), self.specials(template)));
            }
        }
        env
    }

    /// The argv and environment of one execute. The status file the manifest names is moved into
    /// the execute's own `temp` folder (wherever its path appears in argv or `entry.env`), so that
    /// concurrent runs never share one and plugd reads it from nowhere else.
    pub(crate) fn build(&self, inputs: &Value, workspace: &Path, outputs_file: &Path, temp: &Path) -> Built {
        let mut argv = Vec::new();
        for token in &self.start {
            self.expand(token, inputs, &mut argv);
        }
        let declared_status = self.status.as_ref().map(|s| {
            let path = PathBuf::from(self.specials(s));
            if path.is_relative() {
                workspace.join(path)
            } else {
                path
            }
        });
        let status = declared_status.as_ref().map(|_| temp.join("status.json"));
        // Where the declared status path is an argument (`path` or `--flag=path`) or a whole
        // `entry.env` value, the private one takes its place.
        let private_status = |value: &str| -> Option<String> {
            let (declared, private) = (declared_status.as_ref()?, status.as_ref()?);
            let relative = self.specials(self.status.as_deref()?);
            (value == relative || Path::new(value) == declared).then(|| private.display().to_string())
        };
        for arg in &mut argv {
            if let Some(private) = private_status(arg) {
                *arg = private;
            } else if let Some((flag, value)) = arg.split_once('=') {
                if let Some(private) = private_status(value) {
                    *arg = format!("{flag}={private}");
                }
            }
        }
        let mut env = self.runtime_env();
        env.push(("CI_ENV_FILE".to_owned(), outputs_file.display().to_string()));
        for (key, template) in &self.env {
            let value = match self.variable_named_by(template) {
                Some(variable) => QciEntry::value(variable, inputs).unwrap_or_default(),
                None => self.specials(template),
            };
            let value = private_status(&value).unwrap_or(value);
            env.push((key.clone(), value));
        }
        Built { argv, env, status }
    }
}

/// Reads a qci status file: JSON `{"status": "success"|"failure", "message": ...}` (or a boolean
/// status), or plain text starting with success/failure. `None` when it is missing (the exit code
/// decides).
pub(crate) fn read_status(
    folder: &plugd_sdk::beneath::Beneath,
    path: &Path,
) -> Result<Option<Result<Outcome, PluginError>>, String> {
    let Some(text) = crate::protocol::read_capped(folder, path)? else {
        return Ok(None);
    };
    let (status, message) = match serde_json::from_str::<Value>(&text) {
        Ok(Value::Object(map)) => {
            let status = match map.get("status") {
                Some(Value::String(s)) => s.to_ascii_lowercase(),
                Some(Value::Bool(b)) => if *b { "success" } else { "failure" }.to_owned(),
                _ => String::new(),
            };
            let message =
                ["message", "msg", "error"].iter().find_map(|k| map.get(*k).and_then(Value::as_str)).map(str::to_owned);
            (status, message)
        }
        _ => (text.split_whitespace().next().unwrap_or_default().to_ascii_lowercase(), None),
    };
    match status.as_str() {
        "success" | "succeed" | "succeeded" | "ok" | "pass" | "passed" => Ok(Some(Ok(Outcome::Success))),
        "fail" | "failed" | "failure" | "error" => Ok(Some(Err(PluginError::failed(
            message.unwrap_or_else(|| format!("the status file {} says failure", path.display())),
        )))),
        _ => {
            Err(format!("status file {}: unrecognized status {status:?} (expected success or failure)", path.display()))
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn variables_are_titled_by_their_label_or_as_pydantic_would() {
        let schema_of = |yaml: &str| variable(&serde_yaml_ng::from_str::<Yaml>(yaml).unwrap()).unwrap().1;
        assert_eq!(schema_of("{name: build_type}")["title"], "Build Type");
        assert_eq!(schema_of("{name: build_type, label: Build, help: What to build}")["title"], "Build");
    }
}
