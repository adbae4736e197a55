//! `plugin.yaml`: the manifest of a plugin in any language.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use std::time::Duration;

use serde::Deserialize;
use serde_json::Value;

use crate::LoadError;

/// A command: an argv list, or a command line split with shell-words rules (never run by a shell).
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
pub(crate) enum CommandSpec {
    Argv(Vec<String>),
    Line(String),
}

impl CommandSpec {
    pub(crate) fn argv(&self) -> Result<Vec<String>, String> {
        let argv = match self {
            CommandSpec::Argv(argv) => argv.clone(),
            CommandSpec::Line(line) => shell_words::split(line).map_err(|e| format!("cannot split {line:?}: {e}"))?,
        };
        if argv.first().is_none_or(|program| program.is_empty()) {
            return Err("the command is empty".into());
        }
        Ok(argv)
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawManifest {
    id: String,
    #[serde(default)]
    name: Option<String>,
    version: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    category: Option<String>,
    #[serde(default)]
    inputs: Option<Value>,
    #[serde(default)]
    outputs: Option<Value>,
    #[serde(default)]
    context_inputs: Option<Value>,
    #[serde(default)]
    enable_plugin_callback: bool,
    entry: RawEntry,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawEntry {
    #[serde(default)]
    install: Vec<CommandSpec>,
    #[serde(default)]
    env: BTreeMap<String, String>,
    #[serde(default)]
    env_passthrough: Vec<String>,
    start: CommandSpec,
    #[serde(default)]
    timeout: Option<String>,
}

/// A validated `plugin.yaml`.
#[derive(Debug, Clone)]
pub(crate) struct Manifest {
    pub(crate) file: PathBuf,
    pub(crate) id: String,
    pub(crate) name: String,
    pub(crate) version: String,
    pub(crate) description: String,
    pub(crate) inputs: Value,
    pub(crate) outputs: Value,
    pub(crate) context_inputs: Value,
    pub(crate) enable_plugin_callback: bool,
    pub(crate) install: Vec<Vec<String>>,
    pub(crate) env: BTreeMap<String, String>,
    /// Variables of plugd's environment passed to the plugin under `plugd serve` too.
    pub(crate) env_passthrough: Vec<String>,
    pub(crate) start: Vec<String>,
    /// `entry.timeout`; without it the runtime's default applies.
    pub(crate) timeout: Option<Duration>,
}

const CATEGORIES: [&str; 8] = ["build", "test", "security", "release", "message", "scm", "artifact", "other"];

/// Checks a variable name a manifest sets in `entry.env`: plugd's own variables (`PLUGD_*` and
/// `reserved`) cannot be overridden.
pub(crate) fn check_env_key(key: &str, reserved: &[&str]) -> Result<(), String> {
    if key.is_empty() || key.contains('=') || key.contains('\0') {
        return Err(format!("invalid variable name {key:?}"));
    }
    if key.starts_with("PLUGD_") || reserved.contains(&key) {
        return Err(format!("{key} is set by plugd and cannot be overridden"));
    }
    Ok(())
}

/// Checks the `category` of a manifest or a qci plugin (only validated: nothing lists by it yet).
pub(crate) fn check_category(category: &str) -> Result<(), String> {
    if CATEGORIES.contains(&category) {
        return Ok(());
    }
    Err(format!("unknown category {category:?}; expected one of {}", CATEGORIES.join(", ")))
}

/// The 1-based line where `path` (nested keys) is declared, found by indentation.
pub(crate) fn line_of(text: &str, path: &[&str]) -> Option<usize> {
    let mut indent: Option<usize> = None;
    let mut keys = path.iter().peekable();
    for (number, line) in text.lines().enumerate() {
        let Some(key) = keys.peek() else { break };
        let trimmed = line.trim_start();
        let depth = line.len() - trimmed.len();
        if indent.is_some_and(|parent| depth <= parent) && !trimmed.is_empty() && !trimmed.starts_with('#') {
            // Left the parent block without finding the key.
            return None;
        }
        let bare = trimmed.trim_start_matches("- ");
        if bare.starts_with(&format!("{key}:")) && indent.is_none_or(|parent| depth > parent) {
            keys.next();
            if keys.peek().is_none() {
                return Some(number + 1);
            }
            indent = Some(depth);
        }
    }
    None
}

/// A JSON Schema object for inputs, outputs or context inputs, with the four keys callers expect.
/// Undeclared top-level keys are always allowed, as for Rust plugins: BK-SOPS adds its own
/// (`plugin_code`, `_loop`, ...) to every call, so a schema forbidding them would fail them all.
pub(crate) fn normalize_schema(schema: Option<Value>) -> Result<Value, String> {
    let mut schema = match schema {
        None | Some(Value::Null) => serde_json::Map::new(),
        Some(Value::Object(map)) => map,
        Some(_) => return Err("expected a JSON Schema object".into()),
    };
    schema.remove("additionalProperties");
    schema.remove("unevaluatedProperties");
    match schema.get("type") {
        None => {
            schema.insert("type".into(), "object".into());
        }
        Some(Value::String(t)) if t == "object" => {}
        Some(other) => return Err(format!("the schema must be of type object, not {other}")),
    }
    for (key, empty) in [
        ("properties", Value::Object(Default::default())),
        ("required", Value::Array(Vec::new())),
        ("definitions", Value::Object(Default::default())),
    ] {
        schema.entry(key).or_insert(empty);
    }
    if !schema["properties"].is_object() {
        return Err("properties must be an object".into());
    }
    if !schema["required"].as_array().is_some_and(|r| r.iter().all(Value::is_string)) {
        return Err("required must be a list of property names".into());
    }
    let mut schema = Value::Object(schema);
    add_titles(&mut schema);
    Ok(schema)
}

/// Gives every property without a `title` pydantic's default one (`callback_url` → `Callback Url`),
/// at any depth, as a Python plugin's schema has: BK-SOPS shows `title || key`.
fn add_titles(schema: &mut Value) {
    let Value::Object(fields) = schema else { return };
    if let Some(Value::Object(properties)) = fields.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            add_titles(property);
            let Value::Object(map) = property else { continue };
            // A bare reference stays bare, as in pydantic: the definition has the title.
            let bare_ref = map.len() == 1 && map.contains_key("$ref");
            if !map.contains_key("title") && !bare_ref {
                let mut titled = serde_json::Map::new();
                titled.insert("title".into(), plugd_sdk::field_title(name).into());
                titled.append(map);
                *map = titled;
            }
        }
    }
    for (key, value) in fields.iter_mut() {
        match (key.as_str(), value) {
            ("items" | "allOf" | "anyOf" | "oneOf", Value::Array(schemas)) => schemas.iter_mut().for_each(add_titles),
            ("items" | "additionalProperties" | "not", schema) => add_titles(schema),
            ("definitions", Value::Object(schemas)) => schemas.values_mut().for_each(add_titles),
            _ => {}
        }
    }
}

/// Parses a duration such as `30s`, `10m` or `1h30m`.
pub(crate) fn parse_timeout(raw: &str) -> Result<Duration, String> {
    if let Ok(seconds) = raw.parse::<u64>() {
        return Ok(Duration::from_secs(seconds));
    }
    let mut total = Duration::ZERO;
    let mut number = String::new();
    for c in raw.chars() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let n: u64 = number.parse().map_err(|_| format!("invalid duration {raw:?} (expected e.g. 30s, 10m, 1h30m)"))?;
        number.clear();
        total += match c {
            's' => Duration::from_secs(n),
            'm' => Duration::from_secs(n * 60),
            'h' => Duration::from_secs(n * 3600),
            _ => return Err(format!("invalid duration {raw:?} (expected e.g. 30s, 10m, 1h30m)")),
        };
    }
    if !number.is_empty() || total.is_zero() {
        return Err(format!("invalid duration {raw:?} (expected e.g. 30s, 10m, 1h30m)"));
    }
    Ok(total)
}

/// Reads and validates `dir/plugin.yaml`.
pub(crate) fn load(dir: &Path) -> Result<Manifest, LoadError> {
    let file = dir.join("plugin.yaml");
    let text = std::fs::read_to_string(&file).map_err(|e| LoadError::io(&file, e))?;
    let raw: RawManifest = serde_yaml_ng::from_str(&text).map_err(|e| LoadError::yaml(&file, &e))?;
    let at = |path: &[&str], message: String| LoadError::field(&file, line_of(&text, path), &path.join("."), message);
    if !plugd_sdk::is_valid_name(&raw.id) {
        return Err(at(&["id"], format!("{:?} is not a valid id: use letters, digits, '-', '_' and '.'", raw.id)));
    }
    if plugd_sdk::parse_version(&raw.version).is_err() {
        return Err(at(&["version"], format!("{:?} is not a semantic version (expected e.g. 1.0.0)", raw.version)));
    }
    if let Some(category) = &raw.category {
        check_category(category).map_err(|e| at(&["category"], e))?;
    }
    let inputs = normalize_schema(raw.inputs).map_err(|e| at(&["inputs"], e))?;
    let outputs = normalize_schema(raw.outputs).map_err(|e| at(&["outputs"], e))?;
    let context_inputs = normalize_schema(raw.context_inputs).map_err(|e| at(&["context_inputs"], e))?;
    let start = raw.entry.start.argv().map_err(|e| at(&["entry", "start"], e))?;
    let install = raw
        .entry
        .install
        .iter()
        .map(CommandSpec::argv)
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| at(&["entry", "install"], e))?;
    let timeout =
        raw.entry.timeout.as_deref().map(parse_timeout).transpose().map_err(|e| at(&["entry", "timeout"], e))?;
    for key in raw.entry.env.keys() {
        check_env_key(key, &[]).map_err(|e| at(&["entry", "env"], e))?;
    }
    for key in &raw.entry.env_passthrough {
        if key.starts_with("PLUGD_") {
            return Err(at(&["entry", "env_passthrough"], format!("{key} is plugd's own: it never reaches a plugin")));
        }
        check_env_key(key, &[]).map_err(|e| at(&["entry", "env_passthrough"], e))?;
    }
    Ok(Manifest {
        file,
        name: raw.name.unwrap_or_else(|| raw.id.clone()),
        id: raw.id,
        version: raw.version,
        description: raw.description,
        inputs,
        outputs,
        context_inputs,
        enable_plugin_callback: raw.enable_plugin_callback,
        install,
        env: raw.entry.env,
        env_passthrough: raw.entry.env_passthrough,
        start,
        timeout,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schemas_always_allow_undeclared_top_level_keys() {
        let declared = serde_json::json!({"properties": {"a": {"type": "string", "additionalProperties": false}},
            "additionalProperties": false, "unevaluatedProperties": false});
        assert_eq!(
            normalize_schema(Some(declared)).unwrap(),
            serde_json::json!({"properties": {"a": {"title": "A", "type": "string", "additionalProperties": false}},
                "type": "object", "required": [], "definitions": {}})
        );
    }

    #[test]
    fn properties_get_pydantic_titles_at_any_depth() {
        let declared = serde_json::json!({
            "properties": {
                "callback_url": {"type": "string", "description": "Where to post."},
                "name": {"title": "Who", "type": "string"},
                "target": {"$ref": "#/definitions/Target"},
                "hosts": {"type": "array", "items": {"type": "object", "properties": {"host_name": {"type": "string"}}}},
            },
            "definitions": {"Target": {"type": "object", "properties": {"port": {"type": "integer"}}}},
        });
        let schema = normalize_schema(Some(declared)).unwrap();
        assert_eq!(
            schema["properties"].to_string(),
            serde_json::json!({
                "callback_url": {"title": "Callback Url", "type": "string", "description": "Where to post."},
                "name": {"title": "Who", "type": "string"},
                "target": {"$ref": "#/definitions/Target"},
                "hosts": {"title": "Hosts", "type": "array", "items": {"type": "object", "properties": {"host_name": {"title": "Host Name", "type": "string"}}}},
            })
            .to_string()
        );
        assert_eq!(
            schema["definitions"]["Target"]["properties"]["port"],
            serde_json::json!({"title": "Port", "type": "integer"})
        );
    }

    #[test]
    fn lines_of_nested_keys() {
        let text = "id: x\nversion: 1\nentry:\n  env:\n    A: b\n  start: run.sh\n  timeout: soon\n";
        assert_eq!(line_of(text, &["version"]), Some(2));
        assert_eq!(line_of(text, &["entry", "start"]), Some(6));
        assert_eq!(line_of(text, &["entry", "timeout"]), Some(7));
        assert_eq!(line_of(text, &["entry", "missing"]), None);
    }

    #[test]
    fn durations() {
        assert_eq!(parse_timeout("90"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_timeout("1h30m"), Ok(Duration::from_secs(5400)));
        assert!(parse_timeout("soon").is_err());
        assert!(parse_timeout("5").is_ok());
        assert!(parse_timeout("0s").is_err());
    }
}
