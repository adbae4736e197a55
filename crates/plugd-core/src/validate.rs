//! JSON Schema validation with messages that name the path and what was expected.

use std::fmt;

use jsonschema::error::{TypeKind, ValidationErrorKind};
use jsonschema::ValidationError;
use serde_json::Value;

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

impl SchemaValidator {
    /// Compiles `schema`; the error says what is wrong with it.
    pub fn new(schema: &Value) -> Result<SchemaValidator, String> {
        jsonschema::draft7::new(schema).map(|validator| SchemaValidator { validator }).map_err(|e| e.to_string())
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

fn pointer(path: &str) -> String {
    if path.is_empty() {
        "/".to_owned()
    } else {
        path.to_owned()
    }
}

fn field_error(error: &ValidationError<'_>) -> FieldError {
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
        ValidationErrorKind::AnyOf { context } | ValidationErrorKind::OneOfNotValid { context } => {
            // `Option<T>` becomes `anyOf: [T, null]`: report why the value is not a T.
            let first = context
                .iter()
                .flatten()
                .find(|e| !matches!(e.kind(), ValidationErrorKind::Type { kind } if type_names(kind) == "null"))?;
            return Some(field_error(first).message);
        }
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
    fn a_bad_schema_does_not_compile() {
        assert!(SchemaValidator::new(&json!({"type": "nonsense"})).is_err());
    }
}
