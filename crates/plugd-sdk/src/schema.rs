//! JSON Schema generation in the shape the bk-plugin `detail` endpoint serves.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The schema of `T`, as the Python kit's trimmed pydantic-v1 `.schema()`: a draft-07 object with
/// exactly `type`, `properties`, `required` and `definitions` (nested types are referenced as
/// `#/definitions/<Name>`). Field descriptions, defaults, enums and formats are kept.
///
/// ```
/// #[derive(schemars::JsonSchema)]
/// struct Inputs {
///     /// How many.
///     count: u32,
/// }
/// let schema = plugd_sdk::schema_for::<Inputs>();
/// assert_eq!(schema["required"], serde_json::json!(["count"]));
/// assert_eq!(schema["properties"]["count"]["description"], "How many.");
/// ```
pub fn schema_for<T: JsonSchema>() -> Value {
    let root = SchemaSettings::draft07().into_generator().into_root_schema_for::<T>();
    trim(root.to_value())
}

/// Keeps the four top-level keys callers rely on, filling in the missing ones.
fn trim(schema: Value) -> Value {
    let mut fields = match schema {
        Value::Object(fields) => fields,
        _ => Map::new(),
    };
    let mut trimmed = Map::new();
    trimmed.insert("type".into(), fields.remove("type").unwrap_or_else(|| "object".into()));
    for (key, empty) in [
        ("properties", Value::Object(Map::new())),
        ("required", Value::Array(Vec::new())),
        ("definitions", Value::Object(Map::new())),
    ] {
        trimmed.insert(key.into(), fields.remove(key).unwrap_or(empty));
    }
    Value::Object(trimmed)
}

/// The `plugin_callback_info` context input of the bk-plugin contract: where to tell the calling
/// system that an asynchronous invocation ended. Declare it (usually as an `Option`) in the
/// `ContextInputs` of a plugin whose [`crate::Meta`] enables the finish callback.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, JsonSchema)]
pub struct PluginCallbackInfo {
    /// The URL to POST to when the invocation ends.
    pub url: String,
    /// The JSON body to POST.
    #[serde(default)]
    pub data: serde_json::Map<String, serde_json::Value>,
}

/// The type of absent inputs, context inputs or outputs: an object with no declared fields.
/// Any object is accepted (extra keys are ignored), and it serializes as `{}`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize, JsonSchema)]
pub struct Empty {}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    /// A nested model.
    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Target {
        /// Host name.
        host: String,
        port: Option<u16>,
    }

    #[derive(Deserialize, JsonSchema)]
    #[serde(rename_all = "lowercase")]
    #[allow(dead_code)]
    enum Mode {
        Fast,
        Safe,
    }

    fn default_retries() -> u32 {
        3
    }

    #[derive(Deserialize, JsonSchema)]
    #[allow(dead_code)]
    struct Inputs {
        /// The template to run.
        template_id: i64,
        #[serde(default = "default_retries")]
        retries: u32,
        mode: Mode,
        target: Target,
        note: Option<String>,
    }

    #[test]
    fn schema_keeps_descriptions_defaults_enums_and_nesting() {
        let schema = schema_for::<Inputs>();
        let keys: Vec<&String> = schema.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["type", "properties", "required", "definitions"]);
        assert_eq!(schema["type"], "object");
        assert_eq!(schema["required"], json!(["template_id", "mode", "target"]));
        let props = &schema["properties"];
        assert_eq!(props["template_id"]["type"], "integer");
        assert_eq!(props["template_id"]["description"], "The template to run.");
        assert_eq!(props["retries"]["default"], 3);
        assert_eq!(props["mode"]["$ref"], "#/definitions/Mode");
        assert_eq!(props["target"]["$ref"], "#/definitions/Target");
        assert_eq!(props["note"]["type"], json!(["string", "null"]));
        let defs = &schema["definitions"];
        assert_eq!(defs["Mode"]["enum"], json!(["fast", "safe"]));
        assert_eq!(defs["Target"]["description"], "A nested model.");
        assert_eq!(defs["Target"]["properties"]["host"]["description"], "Host name.");
        assert_eq!(defs["Target"]["required"], json!(["host"]));
    }

    #[test]
    fn empty_is_an_empty_object_schema() {
        assert_eq!(
            schema_for::<Empty>(),
            json!({"type": "object", "properties": {}, "required": [], "definitions": {}})
        );
        let parsed: Empty = serde_json::from_value(json!({"plugin_code": "x", "_loop": 1})).unwrap();
        assert_eq!(serde_json::to_value(parsed).unwrap(), json!({}));
    }
}
