//! JSON Schema generation in the shape the bk-plugin `detail` endpoint serves.

use schemars::generate::SchemaSettings;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The schema of `T`, as the Python kit's trimmed pydantic-v1 `.schema()`: a draft-07 object with
/// exactly `type`, `properties`, `required` and `definitions` (nested types are referenced as
/// `#/definitions/<Name>`).
///
/// Properties look like pydantic's: each has a `title` (`#[schemars(title = "...")]`, else the
/// field name in pydantic's Title Case, see [`field_title`]) and the doc comment as `description`;
/// an `Option` field is typed as its inner type and simply left out of `required` (validation still
/// accepts `null` for it: plugd-core lets a property that is not required and has no default be
/// `null`, as pydantic does); defaults, enums, formats and the validations the author wrote are
/// kept, but not the integer widths (`format: uint32`, `minimum: 0`) schemars derives from Rust
/// number types.
///
/// ```
/// #[derive(schemars::JsonSchema)]
/// struct Inputs {
///     /// How many.
///     count: u32,
///     note: Option<String>,
/// }
/// let schema = plugd_sdk::schema_for::<Inputs>();
/// assert_eq!(schema["required"], serde_json::json!(["count"]));
/// assert_eq!(
///     schema["properties"],
///     serde_json::json!({
///         "count": {"title": "Count", "description": "How many.", "type": "integer"},
///         "note": {"title": "Note", "type": "string"},
///     })
/// );
/// ```
pub fn schema_for<T: JsonSchema>() -> Value {
    let root = SchemaSettings::draft07().into_generator().into_root_schema_for::<T>();
    trim(pydantic_shape(root.to_value()))
}

/// The title pydantic v1 gives a field that declares none: `name.title().replace('_', ' ')`, so
/// `callback_url` is `Callback Url` and `userID` is `Userid`.
///
/// ```
/// assert_eq!(plugd_sdk::field_title("template_id"), "Template Id");
/// assert_eq!(plugd_sdk::field_title("ip4addr"), "Ip4Addr");
/// ```
pub fn field_title(name: &str) -> String {
    // Python's str.title(): a cased character is upper case after an uncased one, lower case after
    // a cased one.
    let mut title = String::with_capacity(name.len());
    let mut after_cased = false;
    for c in name.chars() {
        let cased = c.is_lowercase() || c.is_uppercase();
        if cased && after_cased {
            title.extend(c.to_lowercase());
        } else if cased {
            title.extend(c.to_uppercase());
        } else if c == '_' {
            title.push(' ');
        } else {
            title.push(c);
        }
        after_cased = cased;
    }
    title
}

/// Rewrites a schemars draft-07 root schema into the shape pydantic v1 gives the same model.
fn pydantic_shape(mut root: Value) -> Value {
    let mut enums = Vec::new();
    if let Some(Value::Object(definitions)) = root.get_mut("definitions") {
        for (name, definition) in definitions.iter_mut() {
            if is_enum(definition) {
                enums.push(format!("#/definitions/{name}"));
            }
            if let Value::Object(fields) = definition {
                if !fields.contains_key("title") {
                    fields.insert("title".into(), name.as_str().into());
                }
                reorder(fields, &["title", "description"]);
            }
        }
    }
    shape(&mut root, &enums);
    root
}

/// Whether a definition is an enum (pydantic gives no default title to a field of an enum type).
fn is_enum(schema: &Value) -> bool {
    schema.get("enum").is_some()
        || ["oneOf", "anyOf"].iter().any(|key| {
            schema
                .get(*key)
                .and_then(Value::as_array)
                .is_some_and(|branches| branches.iter().all(|b| b.get("const").is_some() || b.get("enum").is_some()))
        })
}

/// Shapes a schema and every schema inside it.
fn shape(schema: &mut Value, enums: &[String]) {
    let Value::Object(fields) = schema else { return };
    drop_integer_width(fields);
    if fields.get("additionalProperties") == Some(&Value::Bool(true)) {
        fields.remove("additionalProperties");
    }
    let required: Vec<String> = fields
        .get("required")
        .and_then(Value::as_array)
        .map(|names| names.iter().filter_map(Value::as_str).map(str::to_owned).collect())
        .unwrap_or_default();
    if let Some(Value::Object(properties)) = fields.get_mut("properties") {
        for (name, property) in properties.iter_mut() {
            let optional = !required.contains(name);
            *property = shape_property(name, std::mem::take(property), optional, enums);
        }
    }
    for_each_subschema(fields, |s| shape(s, enums));
}

/// Calls `visit` on each schema that a draft-07 schema object holds directly (`items`, `allOf`,
/// `anyOf`, `oneOf`, `additionalItems`, `additionalProperties`, `contains`, `propertyNames`, `not`,
/// `if`, `then`, `else`, and each of `definitions` and `patternProperties`), but not on its
/// `properties`, which a walker usually treats apart. Not recursive: `visit` goes deeper itself.
///
/// The one list of where subschemas stand, for every walk over a schema (plugd-core's validation
/// walks the same places as [`schema_for`] does).
pub fn for_each_subschema(schema: &mut Map<String, Value>, mut visit: impl FnMut(&mut Value)) {
    for (key, value) in schema.iter_mut() {
        match (key.as_str(), value) {
            ("items" | "allOf" | "anyOf" | "oneOf", Value::Array(schemas)) => {
                schemas.iter_mut().for_each(&mut visit);
            }
            (
                "items"
                | "additionalItems"
                | "additionalProperties"
                | "contains"
                | "propertyNames"
                | "not"
                | "if"
                | "then"
                | "else",
                schema,
            ) => visit(schema),
            ("definitions" | "patternProperties", Value::Object(schemas)) => {
                schemas.values_mut().for_each(&mut visit);
            }
            _ => {}
        }
    }
}

/// One property as pydantic shows it: titled, its `Option` unwrapped, a reference with siblings
/// under `allOf`.
fn shape_property(name: &str, property: Value, optional: bool, enums: &[String]) -> Value {
    let mut property = match property {
        // `serde_json::Value`: pydantic's `Any` is a title and nothing else.
        Value::Bool(true) => Value::Object(Map::new()),
        other => other,
    };
    let Value::Object(fields) = &mut property else { return property };
    if optional && fields.get("default").is_none_or(Value::is_null) {
        unwrap_null(fields);
    }
    // As pydantic, which never shows a `None` default.
    if fields.get("default") == Some(&Value::Null) {
        fields.remove("default");
    }
    shape(&mut property, enums);
    let Value::Object(fields) = &mut property else { return property };
    if let Some(reference) = fields.get("$ref").cloned() {
        if fields.len() == 1 {
            // A bare reference: pydantic adds nothing, the definition has the title.
            return property;
        }
        fields.remove("$ref");
        fields.insert("allOf".into(), Value::Array(vec![serde_json::json!({"$ref": reference})]));
    }
    let target = match fields.get("allOf").and_then(Value::as_array).map(Vec::as_slice) {
        Some([only]) => only.get("$ref").and_then(Value::as_str),
        _ => None,
    };
    if !fields.contains_key("title") && !target.is_some_and(|t| enums.iter().any(|e| e == t)) {
        fields.insert("title".into(), field_title(name).into());
    }
    reorder(
        fields,
        &[
            "title",
            "description",
            "default",
            "maxLength",
            "minLength",
            "pattern",
            "exclusiveMinimum",
            "exclusiveMaximum",
            "minimum",
            "maximum",
            "multipleOf",
        ],
    );
    property
}

/// `Option<T>` as its `T`: `null` leaves `type`, `enum` and `anyOf`/`oneOf`.
fn unwrap_null(fields: &mut Map<String, Value>) {
    if let Some(Value::Array(types)) = fields.get_mut("type") {
        types.retain(|t| t != "null");
        if let [only] = types.as_slice() {
            let only = only.clone();
            fields.insert("type".into(), only);
        }
        if let Some(Value::Array(values)) = fields.get_mut("enum") {
            values.retain(|v| !v.is_null());
        }
    }
    for key in ["anyOf", "oneOf"] {
        let Some(Value::Array(branches)) = fields.get_mut(key) else { continue };
        let is_null =
            |b: &Value| b.get("type").and_then(Value::as_str) == Some("null") && b.as_object().map(Map::len) == Some(1);
        if branches.len() < 2 || branches.iter().filter(|b| is_null(b)).count() != 1 {
            continue;
        }
        branches.retain(|b| !is_null(b));
        if let [Value::Object(only)] = branches.as_slice() {
            let only = only.clone();
            fields.remove(key);
            if only.keys().any(|k| fields.contains_key(k)) {
                fields.insert("allOf".into(), Value::Array(vec![Value::Object(only)]));
            } else {
                fields.extend(only);
            }
        }
    }
}

/// Drops the `format` schemars derives from a Rust number type, and the bounds that only restate
/// that type's range (`minimum: 0` of an unsigned integer, the limits of `u8`, `i16`, ...).
fn drop_integer_width(fields: &mut Map<String, Value>) {
    const WIDTHS: [(&str, Option<i64>, Option<i64>); 14] = [
        ("int8", Some(i8::MIN as i64), Some(i8::MAX as i64)),
        ("int16", Some(i16::MIN as i64), Some(i16::MAX as i64)),
        ("int32", None, None),
        ("int64", None, None),
        ("int128", None, None),
        ("int", None, None),
        ("uint8", Some(0), Some(u8::MAX as i64)),
        ("uint16", Some(0), Some(u16::MAX as i64)),
        ("uint32", Some(0), None),
        ("uint64", Some(0), None),
        ("uint128", Some(0), None),
        ("uint", Some(0), None),
        ("float", None, None),
        ("double", None, None),
    ];
    let numeric = match fields.get("type") {
        Some(Value::String(t)) => t == "integer" || t == "number",
        Some(Value::Array(types)) => types.iter().any(|t| t == "integer" || t == "number"),
        _ => false,
    };
    let format = fields.get("format").and_then(Value::as_str);
    let Some((_, minimum, maximum)) = WIDTHS.iter().find(|(name, _, _)| Some(*name) == format) else { return };
    if !numeric {
        return;
    }
    fields.remove("format");
    for (key, bound) in [("minimum", minimum), ("maximum", maximum)] {
        if bound.is_some() && fields.get(key).and_then(Value::as_i64) == *bound {
            fields.remove(key);
        }
    }
}

/// Moves `first` keys, in that order, before the others.
fn reorder(fields: &mut Map<String, Value>, first: &[&str]) {
    let mut ordered = Map::new();
    for key in first {
        if let Some(value) = fields.remove(*key) {
            ordered.insert((*key).to_owned(), value);
        }
    }
    ordered.append(fields);
    *fields = ordered;
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
        /// How many times.
        #[schemars(range(min = 1, max = 1000))]
        times: Option<u32>,
        mode: Mode,
        /// Optional mode.
        level: Option<Mode>,
        target: Target,
        /// A backup.
        backup: Option<Target>,
        note: Option<String>,
        /// Tags.
        tags: Vec<String>,
        #[serde(default)]
        extra: Map<String, Value>,
        #[serde(default)]
        anything: Value,
        ratio: f64,
        #[serde(default)]
        flag: bool,
        callback_url: String,
        #[schemars(title = "small")]
        small: u8,
    }

    /// What pydantic v1 (`pydantic.v1`, as bk-plugin-framework 2.3 uses it) gives for the same
    /// model, trimmed as the framework's `detail` does:
    ///
    /// ```python
    /// class Mode(str, Enum): fast = "fast"; safe = "safe"
    /// class Target(BaseModel):
    ///     """A nested model."""
    ///     host: str = Field(description="Host name.")
    ///     port: Optional[int]
    /// class Inputs(BaseModel):
    ///     template_id: int = Field(description="The template to run.")
    ///     retries: int = 3
    ///     times: Optional[int] = Field(None, description="How many times.", ge=1, le=1000)
    ///     mode: Mode
    ///     level: Optional[Mode] = Field(None, description="Optional mode.")
    ///     target: Target
    ///     backup: Optional[Target] = Field(None, description="A backup.")
    ///     note: Optional[str]
    ///     tags: List[str] = Field(description="Tags.")
    ///     extra: Dict[str, Any] = {}
    ///     anything: Any
    ///     ratio: float
    ///     flag: bool = False
    ///     callback_url: str
    ///     small: int = Field(title="small")
    /// ```
    ///
    /// (pydantic's enum definition also says `"description": "An enumeration."`.)
    const PYDANTIC: &str = r##"{"type": "object", "properties": {"template_id": {"title": "Template Id", "description": "The template to run.", "type": "integer"}, "retries": {"title": "Retries", "default": 3, "type": "integer"}, "times": {"title": "Times", "description": "How many times.", "minimum": 1, "maximum": 1000, "type": "integer"}, "mode": {"$ref": "#/definitions/Mode"}, "level": {"description": "Optional mode.", "allOf": [{"$ref": "#/definitions/Mode"}]}, "target": {"$ref": "#/definitions/Target"}, "backup": {"title": "Backup", "description": "A backup.", "allOf": [{"$ref": "#/definitions/Target"}]}, "note": {"title": "Note", "type": "string"}, "tags": {"title": "Tags", "description": "Tags.", "type": "array", "items": {"type": "string"}}, "extra": {"title": "Extra", "default": {}, "type": "object"}, "anything": {"title": "Anything"}, "ratio": {"title": "Ratio", "type": "number"}, "flag": {"title": "Flag", "default": false, "type": "boolean"}, "callback_url": {"title": "Callback Url", "type": "string"}, "small": {"title": "small", "type": "integer"}}, "required": ["template_id", "mode", "target", "tags", "ratio", "callback_url", "small"], "definitions": {"Mode": {"title": "Mode", "type": "string", "enum": ["fast", "safe"]}, "Target": {"title": "Target", "description": "A nested model.", "type": "object", "properties": {"host": {"title": "Host", "description": "Host name.", "type": "string"}, "port": {"title": "Port", "type": "integer"}}, "required": ["host"]}}}"##;

    #[test]
    fn schema_is_what_pydantic_v1_gives_for_the_same_model() {
        let schema = schema_for::<Inputs>();
        let pydantic: Value = serde_json::from_str(PYDANTIC).unwrap();
        assert_eq!(schema, pydantic, "{schema:#}");
        // Key order too, as a caller printing the schema sees it (properties and the nested model).
        assert_eq!(schema["properties"].to_string(), pydantic["properties"].to_string());
        assert_eq!(schema["definitions"]["Target"].to_string(), pydantic["definitions"]["Target"].to_string());
        let keys: Vec<&String> = schema.as_object().unwrap().keys().collect();
        assert_eq!(keys, ["type", "properties", "required", "definitions"]);
    }

    #[test]
    fn field_titles_are_python_title_case() {
        for (name, title) in [
            ("name", "Name"),
            ("template_id", "Template Id"),
            ("callback_url", "Callback Url"),
            ("userID", "Userid"),
            ("ip4addr", "Ip4Addr"),
            ("_private", " Private"),
            ("x2_y", "X2 Y"),
            ("", ""),
        ] {
            assert_eq!(field_title(name), title, "{name}");
        }
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
