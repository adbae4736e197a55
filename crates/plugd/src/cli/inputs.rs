//! Command-line flags derived from a plugin's input schema, and their values as JSON.

use serde_json::{Map, Value};

/// The JSON type of a field, as far as the command line cares.
#[derive(Debug, Clone, PartialEq)]
pub(crate) enum Kind {
    String,
    Integer,
    Number,
    Boolean,
    Array(Box<Kind>),
    Object,
    /// No declared type: JSON if it parses, a string otherwise.
    Any,
}

impl Kind {
    /// The value name shown in usage: `STRING`, `INTEGER`, ...
    pub(crate) fn value_name(&self) -> String {
        match self {
            Kind::String => "STRING".into(),
            Kind::Integer => "INTEGER".into(),
            Kind::Number => "NUMBER".into(),
            Kind::Boolean => "BOOL".into(),
            Kind::Array(item) => item.value_name(),
            Kind::Object => "JSON".into(),
            Kind::Any => "VALUE".into(),
        }
    }

    /// A type name for help and describe: `string`, `array of integer`, ...
    pub(crate) fn describe(&self) -> String {
        match self {
            Kind::String => "string".into(),
            Kind::Integer => "integer".into(),
            Kind::Number => "number".into(),
            Kind::Boolean => "boolean".into(),
            Kind::Array(item) => format!("array of {}", item.describe()),
            Kind::Object => "object".into(),
            Kind::Any => "any".into(),
        }
    }
}

/// One top-level property of a schema.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Field {
    pub(crate) name: String,
    pub(crate) kind: Kind,
    pub(crate) required: bool,
    pub(crate) default: Option<Value>,
    pub(crate) description: Option<String>,
    /// Allowed values, for enums.
    pub(crate) choices: Option<Vec<Value>>,
}

impl Field {
    /// `string`, or `one of "a", "b"` for enums.
    pub(crate) fn type_label(&self) -> String {
        match &self.choices {
            Some(choices) => {
                let choices: Vec<String> = choices.iter().map(Value::to_string).collect();
                format!("one of {}", choices.join(", "))
            }
            None => self.kind.describe(),
        }
    }

    /// `required`, `default "hello"` or `optional`.
    pub(crate) fn requirement(&self) -> String {
        match (&self.default, self.required) {
            (Some(default), _) => format!("default {default}"),
            (None, true) => "required".into(),
            (None, false) => "optional".into(),
        }
    }
}

/// The top-level properties of an object schema, in declaration order.
pub(crate) fn fields(schema: &Value) -> Vec<Field> {
    let required: Vec<&str> =
        schema["required"].as_array().map(|r| r.iter().filter_map(Value::as_str).collect()).unwrap_or_default();
    let Some(properties) = schema["properties"].as_object() else {
        return Vec::new();
    };
    properties
        .iter()
        .map(|(name, property)| {
            let resolved = resolve(schema, property);
            Field {
                name: name.clone(),
                kind: kind_of(schema, resolved),
                required: required.contains(&name.as_str()),
                default: property.get("default").or_else(|| resolved.get("default")).cloned(),
                description: property
                    .get("description")
                    .or_else(|| resolved.get("description"))
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                choices: resolved.get("enum").and_then(Value::as_array).cloned(),
            }
        })
        .collect()
}

/// Follows `$ref` into `definitions`, picks the non-null branch of `anyOf`/`oneOf` (the shape of
/// `Option<T>`), and the one member of `allOf` (pydantic's reference with a title or description).
fn resolve<'a>(root: &'a Value, schema: &'a Value) -> &'a Value {
    let mut current = schema;
    for _ in 0..16 {
        if let Some(reference) = current.get("$ref").and_then(Value::as_str) {
            let pointer = reference.trim_start_matches('#');
            match root.pointer(pointer) {
                Some(target) => current = target,
                None => return current,
            }
        } else if let Some(branches) = ["anyOf", "oneOf", "allOf"].iter().find_map(|k| current.get(*k)?.as_array()) {
            match branches.iter().find(|b| b.get("type").and_then(Value::as_str) != Some("null")) {
                Some(branch) => current = branch,
                None => return current,
            }
        } else {
            return current;
        }
    }
    current
}

fn kind_of(root: &Value, schema: &Value) -> Kind {
    let type_name = match &schema["type"] {
        Value::String(t) => Some(t.as_str()),
        Value::Array(types) => types.iter().filter_map(Value::as_str).find(|t| *t != "null"),
        _ => None,
    };
    match type_name {
        Some("string") => Kind::String,
        Some("integer") => Kind::Integer,
        Some("number") => Kind::Number,
        Some("boolean") => Kind::Boolean,
        Some("object") => Kind::Object,
        Some("array") => {
            Kind::Array(Box::new(schema.get("items").map_or(Kind::Any, |i| kind_of(root, resolve(root, i)))))
        }
        _ => match schema.get("enum").and_then(Value::as_array).and_then(|v| v.first()) {
            Some(Value::String(_)) => Kind::String,
            Some(Value::Number(n)) if n.is_i64() || n.is_u64() => Kind::Integer,
            Some(Value::Number(_)) => Kind::Number,
            _ => Kind::Any,
        },
    }
}

/// Parses one command-line value as `kind`; the error says what was expected.
pub(crate) fn parse_value(kind: &Kind, raw: &str) -> Result<Value, String> {
    match kind {
        Kind::String => Ok(Value::String(raw.to_owned())),
        Kind::Integer => raw
            .parse::<i64>()
            .map(Value::from)
            .or_else(|_| raw.parse::<u64>().map(Value::from))
            .map_err(|_| "expected an integer".to_owned()),
        Kind::Number => match raw.parse::<f64>().ok().and_then(serde_json::Number::from_f64) {
            Some(n) => Ok(Value::Number(n)),
            None => Err("expected a number".to_owned()),
        },
        Kind::Boolean => match raw {
            "true" | "1" | "yes" | "on" => Ok(Value::Bool(true)),
            "false" | "0" | "no" | "off" => Ok(Value::Bool(false)),
            _ => Err("expected true or false".to_owned()),
        },
        Kind::Object => match serde_json::from_str::<Value>(raw) {
            Ok(object @ Value::Object(_)) => Ok(object),
            _ => Err("expected a JSON object".to_owned()),
        },
        Kind::Array(_) => match serde_json::from_str::<Value>(raw) {
            Ok(array @ Value::Array(_)) => Ok(array),
            _ => Err("expected a JSON array".to_owned()),
        },
        Kind::Any => Ok(serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))),
    }
}

/// The values of a repeated array flag: each one a JSON array to splice, or a single item.
pub(crate) fn parse_array(item: &Kind, raws: &[&str]) -> Result<Value, (String, String)> {
    let mut items = Vec::new();
    for raw in raws {
        let spliced = raw.trim_start().starts_with('[').then(|| serde_json::from_str::<Vec<Value>>(raw).ok()).flatten();
        match spliced {
            Some(values) => items.extend(values),
            None => items.push(parse_value(item, raw).map_err(|e| (raw.to_string(), e))?),
        }
    }
    Ok(Value::Array(items))
}

/// Parses `key=value` pairs for `--context`, typing each value by the context schema.
pub(crate) fn parse_pairs(fields: &[Field], pairs: &[String]) -> Result<Map<String, Value>, String> {
    let mut map = Map::new();
    for pair in pairs {
        let (key, raw) =
            pair.split_once('=').ok_or_else(|| format!("invalid --context {pair:?}: expected KEY=VALUE"))?;
        let kind = fields.iter().find(|f| f.name == key).map_or(Kind::Any, |f| f.kind.clone());
        let value = match &kind {
            Kind::Array(item) => parse_array(item, &[raw]).map_err(|(_, e)| e),
            kind => parse_value(kind, raw),
        }
        .map_err(|e| format!("invalid value {raw:?} for --context {key}: {e}"))?;
        map.insert(key.to_owned(), value);
    }
    Ok(map)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "name": {"type": "string", "description": "Who."},
                "times": {"type": ["integer", "null"], "minimum": 1},
                "ratio": {"type": "number", "default": 0.5},
                "dry_run": {"type": "boolean", "default": false},
                "mode": {"$ref": "#/definitions/Mode"},
                "level": {"anyOf": [{"$ref": "#/definitions/Mode"}, {"type": "null"}], "description": "Optional mode."},
                "speed": {"title": "Speed", "description": "As pydantic.", "allOf": [{"$ref": "#/definitions/Mode"}]},
                "tags": {"type": "array", "items": {"type": "string"}},
                "ports": {"type": "array", "items": {"type": "integer"}},
                "env": {"type": "object"},
                "anything": {}
            },
            "required": ["name", "mode"],
            "definitions": {"Mode": {"type": "string", "enum": ["fast", "safe"], "description": "How."}}
        })
    }

    #[test]
    fn fields_resolve_refs_options_and_enums() {
        let fields = fields(&schema());
        let summary: Vec<String> = fields
            .iter()
            .map(|f| format!("{} {} {} {:?}", f.name, f.type_label(), f.requirement(), f.description))
            .collect();
        assert_eq!(
            summary,
            [
                r#"name string required Some("Who.")"#,
                "times integer optional None",
                "ratio number default 0.5 None",
                "dry_run boolean default false None",
                r#"mode one of "fast", "safe" required Some("How.")"#,
                r#"level one of "fast", "safe" optional Some("Optional mode.")"#,
                r#"speed one of "fast", "safe" optional Some("As pydantic.")"#,
                "tags array of string optional None",
                "ports array of integer optional None",
                "env object optional None",
                "anything any optional None",
            ]
        );
    }

    #[test]
    fn values_parse_by_kind() {
        assert_eq!(parse_value(&Kind::Integer, "42"), Ok(json!(42)));
        assert_eq!(parse_value(&Kind::Integer, "abc"), Err("expected an integer".into()));
        assert_eq!(parse_value(&Kind::Number, "1.5"), Ok(json!(1.5)));
        assert_eq!(parse_value(&Kind::Number, "NaN"), Err("expected a number".into()));
        assert_eq!(parse_value(&Kind::Boolean, "false"), Ok(json!(false)));
        assert_eq!(parse_value(&Kind::Boolean, "maybe"), Err("expected true or false".into()));
        assert_eq!(parse_value(&Kind::Object, r#"{"a":1}"#), Ok(json!({"a": 1})));
        assert_eq!(parse_value(&Kind::Object, "[1]"), Err("expected a JSON object".into()));
        assert_eq!(parse_value(&Kind::Any, "3"), Ok(json!(3)));
        assert_eq!(parse_value(&Kind::Any, "x y"), Ok(json!("x y")));
        assert_eq!(parse_array(&Kind::Integer, &["1", "[2, 3]", "4"]), Ok(json!([1, 2, 3, 4])));
        assert_eq!(parse_array(&Kind::Integer, &["x"]), Err(("x".into(), "expected an integer".into())));
        assert_eq!(parse_array(&Kind::String, &["[not json", "b"]), Ok(json!(["[not json", "b"])));
    }

    #[test]
    fn context_pairs_are_typed_by_the_schema() {
        let fields = fields(&schema());
        let parsed = parse_pairs(&fields, &["name=42".into(), "times=3".into(), "other=x".into()]).unwrap();
        assert_eq!(Value::Object(parsed), json!({"name": "42", "times": 3, "other": "x"}));
        assert_eq!(
            parse_pairs(&fields, &["times=x".into()]),
            Err(r#"invalid value "x" for --context times: expected an integer"#.into())
        );
        assert_eq!(
            parse_pairs(&fields, &["oops".into()]),
            Err(r#"invalid --context "oops": expected KEY=VALUE"#.into())
        );
    }
}
