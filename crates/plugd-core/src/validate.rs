//! JSON Schema validation with messages that name the path and what was expected.

use std::fmt;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use serde_json::{json, Map, Value};

/// A compiled JSON Schema (draft 7, as the kit generates) for inputs, context or outputs.
pub struct SchemaValidator {
    validator: jsonschema::Validator,
}

impl fmt::Debug for SchemaValidator {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SchemaValidator").finish_non_exhaustive()
    }
}

/// Every way an instance failed its schema, each with its JSON path.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ValidationErrors(pub Vec<FieldError>);

/// One validation failure: where (a JSON pointer, `/` for the whole value) and what.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FieldError {
    /// The JSON pointer of the offending value, e.g. `/target/port`.
    pub path: String,
    /// What was expected, e.g. `expected integer, got "abc"`.
    pub message: String,
}

impl fmt::Display for ValidationErrors {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, e) in self.0.iter().enumerate() {
            if i > 0 {
                f.write_str("; ")?;
            }
            write!(f, "{}: {}", e.path, e.message)?;
        }
        Ok(())
    }
}

impl std::error::Error for ValidationErrors {}

/// A JSON Schema that does not compile.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SchemaCompileError {
    /// What is wrong with the schema, as the JSON Schema compiler says.
    pub message: String,
}

impl SchemaValidator {
    /// Compiles `schema`; the error says what is wrong with it.
    ///
    /// As in pydantic v1, a property that is not required and has no default (or a `null` one), an
    /// optional field, also accepts `null`, whatever type it declares: the kit's schemas type an
    /// `Option<T>` field as its `T`, as pydantic does.
    pub fn new(schema: &Value) -> Result<SchemaValidator, SchemaCompileError> {
        let mut schema = schema.clone();
        optional_accepts_null(&mut schema);
        jsonschema::draft7::new(&schema)
            .map(|validator| SchemaValidator { validator })
            .map_err(|e| SchemaCompileError { message: e.to_string() })
    }

    /// Validates `instance`, reporting every failure.
    pub fn validate(&self, instance: &Value) -> Result<(), ValidationErrors> {
        let errors: Vec<FieldError> = self.validator.iter_errors(instance).map(|e| field_error(&e)).collect();
        if errors.is_empty() {
            Ok(())
        } else {
            Err(ValidationErrors(errors))
        }
    }
}

/// The names an object schema lists in `required`.
pub(crate) fn required_names(schema: &Map<String, Value>) -> Vec<&str> {
    schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default()
}

/// pydantic v1's optional field: not required, and without a default other than `null`.
pub(crate) fn is_optional(required: &[&str], name: &str, property: &Value) -> bool {
    !required.contains(&name) && property.get("default").is_none_or(Value::is_null)
}

/// Lets every optional property, at any depth, also be `null`.
fn optional_accepts_null(schema: &mut Value) {
    let Value::Object(fields) = schema else { return };
    let required: Vec<String> = required_names(fields).into_iter().map(str::to_owned).collect();
    let required: Vec<&str> = required.iter().map(String::as_str).collect();
    if let Some(Value::Object(properties)) = fields.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            optional_accepts_null(property);
            let declared_null = match property.get("type") {
                Some(Value::String(t)) => t == "null",
                Some(Value::Array(types)) => types.iter().any(|t| t == "null"),
                _ => false,
            };
            if property.is_object() && !declared_null && is_optional(&required, name, property) {
                *property = json!({"anyOf": [property.take(), {"type": "null"}]});
            }
        }
    }
    plugd_sdk::for_each_subschema(fields, optional_accepts_null);
}

fn pointer(path: &str) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    }
}

fn field_error(error: &ValidationError<'_>) -> FieldError {
    // `Option<T>`, and any optional field, is `anyOf: [T, null]`: report why the value is not a T,
    // where it is not.
    if let ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } = error.kind() {
        if let Some(first) = not_null(context) {
            return field_error(first);
        }
    }
    let path = error.instance_path().as_str();
    let got = error.instance();
    match error.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property.as_str().map(str::to_owned).unwrap_or_else(|| property.to_string());
            FieldError {
                path: format!("{}/{name}", path.trim_end_matches('/')),
                message: "required field is missing".into(),
            }
        }
        kind => FieldError { path: pointer(path), message: describe(kind, got).unwrap_or_else(|| error.to_string()) },
    }
}

/// The first failure of an `anyOf` that is not "expected null".
fn not_null<'a, 'e>(context: &'a [Vec<ValidationError<'e>>]) -> Option<&'a ValidationError<'e>> {
    context
        .iter()
        .flatten()
        .find(|e| !matches!(e.kind(), ValidationErrorKind::Type { kind } if type_names(kind) == "null"))
}

/// A readable message for the common kinds; `None` falls back to the validator's own text.
fn describe(kind: &ValidationErrorKind, got: &Value) -> Option<String> {
    let text = match kind {
        ValidationErrorKind::Type { kind } => format!("expected {}, got {got}", type_names(kind)),
        ValidationErrorKind::Enum { options } => {
            let options: Vec<String> = match options.as_ref() {
                Value::Array(values) => values.iter().map(Value::to_string).collect(),
                other => vec![other.to_string()],
            };
            format!("expected one of {}, got {got}", options.join(", "))
        }
        ValidationErrorKind::Constant { expected_value } => format!("expected {expected_value}, got {got}"),
        ValidationErrorKind::Minimum { limit } => format!("expected a value >= {limit}, got {got}"),
        ValidationErrorKind::Maximum { limit } => format!("expected a value <= {limit}, got {got}"),
        ValidationErrorKind::ExclusiveMinimum { limit } => format!("expected a value > {limit}, got {got}"),
        ValidationErrorKind::ExclusiveMaximum { limit } => format!("expected a value < {limit}, got {got}"),
        ValidationErrorKind::MinLength { limit } => format!("expected at least {limit} characters, got {got}"),
        ValidationErrorKind::MaxLength { limit } => format!("expected at most {limit} characters, got {got}"),
        ValidationErrorKind::MinItems { limit } => format!("expected at least {limit} items"),
        ValidationErrorKind::MaxItems { limit } => format!("expected at most {limit} items"),
        ValidationErrorKind::Pattern { pattern } => format!("expected a string matching {pattern:?}, got {got}"),
        _ => return None,
    };
    Some(text)
}

fn type_names(kind: &TypeKind) -> String {
    match kind {
        TypeKind::Single(t) => t.to_string(),
        TypeKind::Multiple(set) => {
            let names: Vec<String> = set.iter().map(|t| t.to_string()).filter(|t| t != "null").collect();
            names.join(" or ")
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn check(schema: Value, instance: Value) -> String {
        match SchemaValidator::new(&schema).unwrap().validate(&instance) {
            Ok(()) => "ok".into(),
            Err(e) => e.to_string(),
        }
    }

    fn inputs_schema() -> Value {
        json!({
            "type": "object",
            "properties": {
                "template_id": {"type": "integer"},
                "mode": {"$ref": "#/definitions/Mode"},
                "level": {"anyOf": [{"$ref": "#/definitions/Mode"}, {"type": "null"}]},
                "times": {"type": ["integer", "null"], "minimum": 1},
                "target": {"$ref": "#/definitions/Target"}
            },
            "required": ["template_id"],
            "definitions": {
                "Mode": {"type": "string", "enum": ["fast", "safe"]},
                "Target": {"type": "object", "properties": {"port": {"type": "integer", "maximum": 65535}}, "required": ["port"]}
            }
        })
    }

    #[test]
    fn messages_name_the_path_and_the_expectation() {
        let s = inputs_schema;
        assert_eq!(check(s(), json!({"template_id": 1})), "ok");
        assert_eq!(check(s(), json!({"template_id": 1, "unknown": true})), "ok");
        assert_eq!(check(s(), json!({"template_id": "abc"})), r#"/template_id: expected integer, got "abc""#);
        assert_eq!(check(s(), json!({})), "/template_id: required field is missing");
        assert_eq!(check(s(), json!("x")), r#"/: expected object, got "x""#);
        assert_eq!(
            check(s(), json!({"template_id": 1, "mode": "slow"})),
            r#"/mode: expected one of "fast", "safe", got "slow""#
        );
        assert_eq!(
            check(s(), json!({"template_id": 1, "level": "slow"})),
            r#"/level: expected one of "fast", "safe", got "slow""#
        );
        assert_eq!(check(s(), json!({"template_id": 1, "times": 0})), "/times: expected a value >= 1, got 0");
        assert_eq!(check(s(), json!({"template_id": 1, "times": "x"})), r#"/times: expected integer, got "x""#);
        assert_eq!(
            check(s(), json!({"template_id": 1, "target": {"port": 70000}})),
            "/target/port: expected a value <= 65535, got 70000"
        );
        assert_eq!(
            check(s(), json!({"target": {}})),
            "/template_id: required field is missing; /target/port: required field is missing"
        );
    }

    #[test]
    fn optional_fields_accept_null_as_in_pydantic() {
        // The kit's (pydantic's) shape: `Option<T>` is typed as `T` and left out of `required`.
        let schema = json!({
            "type": "object",
            "properties": {
                "name": {"title": "Name", "type": "string"},
                "note": {"title": "Note", "type": "string"},
                "times": {"title": "Times", "minimum": 1, "type": "integer"},
                "retries": {"title": "Retries", "default": 3, "type": "integer"},
                "backup": {"title": "Backup", "allOf": [{"$ref": "#/definitions/Target"}]},
            },
            "required": ["name"],
            "definitions": {
                "Target": {"title": "Target", "type": "object", "properties": {"port": {"title": "Port", "type": "integer"}}, "required": []}
            }
        });
        let s = || schema.clone();
        assert_eq!(check(s(), json!({"name": "x", "note": null, "times": null, "backup": null})), "ok");
        assert_eq!(check(s(), json!({"name": "x", "backup": {"port": null}})), "ok");
        assert_eq!(check(s(), json!({"name": null})), "/name: expected string, got null");
        // A field with a default is not optional: pydantic refuses None for it.
        assert_eq!(check(s(), json!({"name": "x", "retries": null})), "/retries: expected integer, got null");
        // Other values of an optional field get the messages they always had.
        assert_eq!(check(s(), json!({"name": "x", "note": 1})), "/note: expected string, got 1");
        assert_eq!(check(s(), json!({"name": "x", "times": 0})), "/times: expected a value >= 1, got 0");
        assert_eq!(check(s(), json!({"name": "x", "times": "3"})), r#"/times: expected integer, got "3""#);
        assert_eq!(
            check(s(), json!({"name": "x", "backup": {"port": "1"}})),
            r#"/backup/port: expected integer, got "1""#
        );
    }

    #[test]
    fn a_bad_schema_does_not_compile() {
        assert!(SchemaValidator::new(&json!({"type": "nonsense"})).is_err());
    }
}
