//! pydantic v1's conversions of inputs, for callers written against the Python framework.
//!
//! BK-SOPS sends what its form holds: a field hooked to a text variable arrives as a string
//! (`{"times": "3"}` for an integer), a number arrives for a string field. The Python framework's
//! pydantic v1 models convert these before validating; [`coerce`] does the same by walking the
//! JSON Schema, so that the validator and the plugin see what a Python plugin would.

use serde_json::{Map, Number, Value};

use crate::validate::{is_optional, required_names};

/// `$ref` hops and nested schemas followed at most (a schema referring to itself without
/// descending into the value would otherwise never end).
const MAX_DEPTH: usize = 64;

/// Python's limit on the digits `int()` parses from a string, which pydantic v1 applies too.
const MAX_INT_DIGITS: usize = 4_300;

/// Converts `value` the way pydantic v1 converts a model's input for the types `schema` declares,
/// and returns what a Python plugin would be handed:
///
/// - `integer`: a numeric string (`"3"`, `" -3 "`, `"1_000"`, not `"3.0"`), a float (truncated, as
///   Python's `int()`), `true`/`false` (1/0);
/// - `number`: a numeric string (`"3.5"`, `"1e3"`), `true`/`false` (1.0/0.0);
/// - `string`: a number (`123` → `"123"`, `1.0` → `"1.0"`, as Python's `str()`), `true`/`false`
///   (`"True"`/`"False"`);
/// - `boolean`: `0`/`1`, and `"0"`, `"1"`, `"true"`, `"false"`, `"yes"`, `"no"`, `"on"`, `"off"`,
///   `"t"`, `"f"`, `"y"`, `"n"` in any case;
/// - a property that is not required and has no default (pydantic's optional field) given `null`
///   is dropped, as if absent;
/// - objects (`properties`, `additionalProperties`), arrays (`items`), `$ref` to `#/definitions/`,
///   `allOf`, and `anyOf`/`oneOf` (`null` for a member that allows it, else the first member whose
///   type the value converts to) are followed.
///
/// Anything pydantic refuses is left as it is, for the validator to report; enums and constants
/// are never converted. The function is pure: the same schema and value give the same result.
///
/// ```
/// let schema = serde_json::json!({
///     "type": "object",
///     "properties": {"times": {"type": "integer"}, "name": {"type": "string"}, "note": {"type": "string"}},
///     "required": ["times", "name"],
/// });
/// let inputs = serde_json::json!({"times": "3", "name": 123, "note": null});
/// assert_eq!(plugd_core::coerce(&schema, inputs), serde_json::json!({"times": 3, "name": "123"}));
/// ```
pub fn coerce(schema: &Value, value: Value) -> Value {
    Coercer { root: schema }.value(schema, value, 0)
}

struct Coercer<'a> {
    root: &'a Value,
}

impl<'a> Coercer<'a> {
    fn value(&self, schema: &'a Value, value: Value, depth: usize) -> Value {
        let Value::Object(fields) = schema else { return value };
        if depth > MAX_DEPTH {
            return value;
        }
        // In draft 7, a `$ref` ignores its siblings.
        if let Some(reference) = fields.get("$ref") {
            return match self.resolve(reference) {
                Some(target) => self.value(target, value, depth + 1),
                None => value,
            };
        }
        if fields.contains_key("enum") || fields.contains_key("const") {
            return value;
        }
        let mut value = value;
        if let Some(Value::Array(all)) = fields.get("allOf") {
            for member in all {
                value = self.value(member, value, depth + 1);
            }
        }
        for key in ["anyOf", "oneOf"] {
            if let Some(Value::Array(members)) = fields.get(key) {
                value = self.union(members, value, depth);
            }
        }
        if let Some(types) = fields.get("type") {
            value = scalar(types, value);
        }
        match value {
            Value::Object(object) => Value::Object(self.object(fields, object, depth)),
            Value::Array(items) => Value::Array(self.array(fields, items, depth)),
            other => other,
        }
    }

    /// `#/definitions/Name` (or any pointer into the root schema).
    fn resolve(&self, reference: &Value) -> Option<&'a Value> {
        let pointer = reference.as_str()?.strip_prefix('#')?;
        self.root.pointer(pointer)
    }

    /// pydantic v1 tries a union's members in order and keeps the first that takes the value.
    fn union(&self, members: &'a [Value], value: Value, depth: usize) -> Value {
        let is_null = |m: &Value| m.get("type").and_then(Value::as_str) == Some("null");
        if value.is_null() && members.iter().any(is_null) {
            return value;
        }
        let candidates: Vec<&'a Value> = members.iter().filter(|m| !is_null(m)).collect();
        if let [only] = candidates.as_slice() {
            return self.value(only, value, depth + 1);
        }
        for member in &candidates {
            let converted = self.value(member, value.clone(), depth + 1);
            if self.has_type(member, &converted, depth) {
                return converted;
            }
        }
        value
    }

    /// Whether `value` is of a type `schema` declares (any value, for a schema declaring none).
    fn has_type(&self, schema: &'a Value, value: &Value, depth: usize) -> bool {
        if depth > MAX_DEPTH {
            return false;
        }
        if let Some(target) = schema.get("$ref").and_then(|r| self.resolve(r)) {
            return self.has_type(target, value, depth + 1);
        }
        match schema.get("type") {
            Some(Value::String(t)) => is_of_type(t, value),
            Some(Value::Array(types)) => types.iter().filter_map(Value::as_str).any(|t| is_of_type(t, value)),
            _ => true,
        }
    }

    fn object(&self, schema: &'a Map<String, Value>, object: Map<String, Value>, depth: usize) -> Map<String, Value> {
        let properties = schema.get("properties").and_then(Value::as_object);
        let additional = schema.get("additionalProperties").filter(|a| a.is_object());
        let required = required_names(schema);
        let mut converted = Map::new();
        for (key, value) in object {
            match (properties.and_then(|p| p.get(&key)), additional) {
                (Some(property), _) => {
                    if value.is_null() && is_optional(&required, &key, property) {
                        continue;
                    }
                    converted.insert(key, self.value(property, value, depth + 1));
                }
                (None, Some(additional)) => {
                    converted.insert(key, self.value(additional, value, depth + 1));
                }
                (None, None) => {
                    converted.insert(key, value);
                }
            }
        }
        converted
    }

    fn array(&self, schema: &'a Map<String, Value>, items: Vec<Value>, depth: usize) -> Vec<Value> {
        match schema.get("items") {
            Some(item @ Value::Object(_)) => items.into_iter().map(|v| self.value(item, v, depth + 1)).collect(),
            Some(Value::Array(positions)) => items
                .into_iter()
                .enumerate()
                .map(|(i, v)| match positions.get(i) {
                    Some(item) => self.value(item, v, depth + 1),
                    None => v,
                })
                .collect(),
            _ => items,
        }
    }
}

fn is_of_type(name: &str, value: &Value) -> bool {
    match name {
        "string" => value.is_string(),
        "integer" => value.is_i64() || value.is_u64(),
        "number" => value.is_number(),
        "boolean" => value.is_boolean(),
        "object" => value.is_object(),
        "array" => value.is_array(),
        "null" => value.is_null(),
        _ => false,
    }
}

/// A scalar converted to the first of `types` pydantic would convert it to; unchanged when it is
/// already of one of them, or when none takes it.
fn scalar(types: &Value, value: Value) -> Value {
    let types: Vec<&str> = match types {
        Value::String(t) => vec![t.as_str()],
        Value::Array(types) => types.iter().filter_map(Value::as_str).collect(),
        _ => return value,
    };
    if value.is_null() || types.iter().any(|t| is_of_type(t, &value)) {
        return value;
    }
    types.iter().find_map(|t| convert(t, &value)).unwrap_or(value)
}

/// pydantic v1's `str_validator`, `int_validator`, `float_validator` and `bool_validator` on JSON.
fn convert(to: &str, value: &Value) -> Option<Value> {
    match (to, value) {
        ("string", Value::Number(n)) => Some(Value::String(python_str(n))),
        ("string", Value::Bool(b)) => Some(Value::String(if *b { "True" } else { "False" }.into())),
        ("integer", Value::Bool(b)) => Some(Value::from(u8::from(*b))),
        ("integer", Value::Number(n)) => n.as_f64().and_then(|f| float_to_integer(f.trunc())),
        ("integer", Value::String(s)) => python_int(s),
        ("number", Value::Bool(b)) => Some(Value::from(if *b { 1.0 } else { 0.0 })),
        ("number", Value::String(s)) => python_float(s).and_then(Number::from_f64).map(Value::Number),
        ("boolean", Value::Number(n)) => match n.as_f64() {
            Some(1.0) => Some(Value::Bool(true)),
            Some(0.0) => Some(Value::Bool(false)),
            _ => None,
        },
        ("boolean", Value::String(s)) => match s.to_lowercase().as_str() {
            "1" | "on" | "t" | "true" | "y" | "yes" => Some(Value::Bool(true)),
            "0" | "off" | "f" | "false" | "n" | "no" => Some(Value::Bool(false)),
            _ => None,
        },
        _ => None,
    }
}

/// An integral float as a JSON integer, if it fits one.
fn float_to_integer(f: f64) -> Option<Value> {
    if !f.is_finite() {
        return None;
    }
    if f >= i64::MIN as f64 && f < i64::MAX as f64 {
        Some(Value::from(f as i64))
    } else if f >= 0.0 && f < u64::MAX as f64 {
        Some(Value::from(f as u64))
    } else {
        None
    }
}

/// Digits with single underscores between them, as Python's numeric literals allow.
fn without_underscores(digits: &str) -> Option<String> {
    let bytes = digits.as_bytes();
    for (i, b) in bytes.iter().enumerate() {
        if *b == b'_' {
            let around = i > 0 && bytes[i - 1].is_ascii_digit() && bytes.get(i + 1).is_some_and(u8::is_ascii_digit);
            if !around {
                return None;
            }
        }
    }
    Some(digits.replace('_', ""))
}

/// Python's `int(s)` for a string: surrounding whitespace, a sign, decimal digits (and
/// underscores between them); `None` for anything else or a value JSON integers cannot hold.
fn python_int(s: &str) -> Option<Value> {
    if s.chars().count() > MAX_INT_DIGITS {
        return None;
    }
    let trimmed = s.trim();
    let (negative, digits) = match trimmed.as_bytes().first() {
        Some(b'-') => (true, &trimmed[1..]),
        Some(b'+') => (false, &trimmed[1..]),
        _ => (false, trimmed),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit() || b == b'_') {
        return None;
    }
    let digits = without_underscores(digits)?;
    let significant = digits.trim_start_matches('0');
    if significant.len() > 20 {
        return None;
    }
    let magnitude: u128 = if significant.is_empty() { 0 } else { significant.parse().ok()? };
    if negative {
        i64::try_from(magnitude).ok().map(|m| Value::from(-m)).or_else(|| {
            // i64::MIN has no positive twin.
            (magnitude == i64::MIN.unsigned_abs() as u128).then(|| Value::from(i64::MIN))
        })
    } else {
        u64::try_from(magnitude).ok().map(Value::from)
    }
}

/// Python's `float(s)` for a string, finite values only (JSON has no NaN or infinity).
fn python_float(s: &str) -> Option<f64> {
    let trimmed = s.trim();
    let allowed = |c: char| c.is_ascii_digit() || matches!(c, '_' | '.' | 'e' | 'E' | '+' | '-');
    if trimmed.is_empty() || !trimmed.chars().all(allowed) {
        return None;
    }
    let parsed: f64 = without_underscores(trimmed)?.parse().ok()?;
    parsed.is_finite().then_some(parsed)
}

/// Python's `str()` of a JSON number: integers as they are, floats as `repr` writes them (`1.0`,
/// `0.0001`, `1e-05`, `1e+16`).
fn python_str(n: &Number) -> String {
    if n.is_i64() || n.is_u64() {
        return n.to_string();
    }
    let f = n.as_f64().unwrap_or_default();
    if f == 0.0 {
        return if f.is_sign_negative() { "-0.0" } else { "0.0" }.to_owned();
    }
    // `{:e}` gives the shortest digits that read back as `f`, as Python's repr does.
    let scientific = format!("{f:e}");
    let (mantissa, exponent) = scientific.split_once('e').unwrap_or((&scientific, "0"));
    let exponent: i32 = exponent.parse().unwrap_or(0);
    let (sign, mantissa) = match mantissa.strip_prefix('-') {
        Some(positive) => ("-", positive),
        None => ("", mantissa),
    };
    let digits: String = mantissa.chars().filter(|c| *c != '.').collect();
    if (-4..16).contains(&exponent) {
        if exponent < 0 {
            let zeros = "0".repeat((-exponent - 1) as usize);
            format!("{sign}0.{zeros}{digits}")
        } else {
            let point = exponent as usize + 1;
            if digits.len() <= point {
                format!("{sign}{digits}{}.0", "0".repeat(point - digits.len()))
            } else {
                format!("{sign}{}.{}", &digits[..point], &digits[point..])
            }
        }
    } else {
        let mantissa = if digits.len() == 1 { digits } else { format!("{}.{}", &digits[..1], &digits[1..]) };
        let exponent_sign = if exponent < 0 { '-' } else { '+' };
        format!("{sign}{mantissa}e{exponent_sign}{:02}", exponent.abs())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn one(schema: Value, value: Value) -> Value {
        let schema = json!({"type": "object", "properties": {"x": schema}, "required": ["x"]});
        coerce(&schema, json!({ "x": value }))["x"].clone()
    }

    /// Each case was checked against `pydantic.v1` (`class M(BaseModel): x: <type>`).
    #[test]
    fn scalars_convert_as_pydantic_v1() {
        let int = || json!({"type": "integer"});
        for (given, expected) in [
            (json!("3"), json!(3)),
            (json!(" 3 "), json!(3)),
            (json!("-3"), json!(-3)),
            (json!("+3"), json!(3)),
            (json!("1_000"), json!(1000)),
            (json!("007"), json!(7)),
            (json!("18446744073709551615"), json!(u64::MAX)),
            (json!("-9223372036854775808"), json!(i64::MIN)),
            (json!(3.7), json!(3)),
            (json!(-3.7), json!(-3)),
            (json!(3.0), json!(3)),
            (json!(true), json!(1)),
            (json!(false), json!(0)),
            // Refused by pydantic: left for the validator.
            (json!("3.0"), json!("3.0")),
            (json!("1__0"), json!("1__0")),
            (json!("_1"), json!("_1")),
            (json!("abc"), json!("abc")),
            (json!(""), json!("")),
            (json!("0x10"), json!("0x10")),
            (json!({"a": 1}), json!({"a": 1})),
            (json!([1]), json!([1])),
            (json!("99999999999999999999999"), json!("99999999999999999999999")),
        ] {
            assert_eq!(one(int(), given.clone()), expected, "integer from {given}");
        }
        let number = || json!({"type": "number"});
        for (given, expected) in [
            (json!("3.5"), json!(3.5)),
            (json!(" 1e3 "), json!(1000.0)),
            (json!("3"), json!(3.0)),
            (json!("1_0.5"), json!(10.5)),
            (json!(".5"), json!(0.5)),
            (json!(true), json!(1.0)),
            (json!(3), json!(3)),
            (json!("nan"), json!("nan")),
            (json!("inf"), json!("inf")),
            (json!("1e999"), json!("1e999")),
            (json!("x"), json!("x")),
        ] {
            assert_eq!(one(number(), given.clone()), expected, "number from {given}");
        }
        let string = || json!({"type": "string"});
        for (given, expected) in [
            (json!(123), json!("123")),
            (json!(-5), json!("-5")),
            (json!(1.0), json!("1.0")),
            (json!(3.5), json!("3.5")),
            (json!(0.0001), json!("0.0001")),
            (json!(0.00001), json!("1e-05")),
            (json!(1e15), json!("1000000000000000.0")),
            (json!(1e16), json!("1e+16")),
            (json!(1.5e300), json!("1.5e+300")),
            (json!(123456.789), json!("123456.789")),
            (json!(true), json!("True")),
            (json!(false), json!("False")),
            (json!({"a": 1}), json!({"a": 1})),
            (json!([1]), json!([1])),
        ] {
            assert_eq!(one(string(), given.clone()), expected, "string from {given}");
        }
        let boolean = || json!({"type": "boolean"});
        for (given, expected) in [
            (json!("YES"), json!(true)),
            (json!("On"), json!(true)),
            (json!("t"), json!(true)),
            (json!("y"), json!(true)),
            (json!("1"), json!(true)),
            (json!("true"), json!(true)),
            (json!("No"), json!(false)),
            (json!("off"), json!(false)),
            (json!("F"), json!(false)),
            (json!("n"), json!(false)),
            (json!("0"), json!(false)),
            (json!("False"), json!(false)),
            (json!(1), json!(true)),
            (json!(0), json!(false)),
            (json!(1.0), json!(true)),
            // Refused by pydantic.
            (json!(" yes"), json!(" yes")),
            (json!(2), json!(2)),
            (json!("maybe"), json!("maybe")),
        ] {
            assert_eq!(one(boolean(), given.clone()), expected, "boolean from {given}");
        }
        // Enums and constants are compared, never converted.
        assert_eq!(one(json!({"type": "string", "enum": ["1", "2"]}), json!(1)), json!(1));
        assert_eq!(one(json!({"const": "1"}), json!(1)), json!(1));
        // Null stays null for a required field: pydantic refuses it, and so does the validator.
        assert_eq!(one(int(), Value::Null), Value::Null);
    }

    #[test]
    fn schemas_are_walked_through_refs_arrays_objects_and_unions() {
        let schema = json!({
            "type": "object",
            "properties": {
                "times": {"title": "Times", "type": "integer"},
                "retries": {"title": "Retries", "default": 3, "type": "integer"},
                "note": {"title": "Note", "type": "string"},
                "target": {"$ref": "#/definitions/Target"},
                "backup": {"title": "Backup", "allOf": [{"$ref": "#/definitions/Target"}]},
                "ports": {"type": "array", "items": {"type": "integer"}},
                "labels": {"type": "object", "additionalProperties": {"type": "string"}},
                "either": {"anyOf": [{"type": "integer"}, {"type": "string"}]},
                "maybe": {"anyOf": [{"$ref": "#/definitions/Target"}, {"type": "null"}]},
                "nullable": {"type": ["integer", "null"]},
            },
            "required": ["target", "either", "maybe", "nullable"],
            "definitions": {
                "Target": {
                    "type": "object",
                    "properties": {"port": {"type": "integer"}, "secure": {"type": "boolean"}},
                    "required": ["port"],
                },
            },
        });
        let inputs = json!({
            "times": "3",
            "retries": null,
            "note": null,
            "target": {"port": "8080", "secure": "yes", "extra": "1"},
            "backup": {"port": 1.0},
            "ports": ["1", 2, "x"],
            "labels": {"a": 1, "b": true},
            "either": "7",
            "maybe": {"port": "9"},
            "nullable": null,
            "_loop": "1",
        });
        assert_eq!(
            coerce(&schema, inputs),
            json!({
                "times": 3,
                // A field with a default is not optional: pydantic refuses null, the validator will.
                "retries": null,
                "target": {"port": 8080, "secure": true, "extra": "1"},
                "backup": {"port": 1},
                "ports": [1, 2, "x"],
                "labels": {"a": "1", "b": "True"},
                // pydantic v1 takes the first member of a union that accepts the value.
                "either": 7,
                "maybe": {"port": 9},
                "nullable": null,
                "_loop": "1",
            })
        );
        // Not an object at all: left for the validator.
        assert_eq!(coerce(&schema, json!("x")), json!("x"));
        // A schema that refers to itself ends.
        let endless = json!({"$ref": "#/definitions/A", "definitions": {"A": {"$ref": "#/definitions/A"}}});
        assert_eq!(coerce(&endless, json!("3")), json!("3"));
    }
}
