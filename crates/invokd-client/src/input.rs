//! `key=value` assignments of input fields, typed by the model's JSON Schema: `num_images=2` is
//! the number 2, `sync_mode=true` the boolean, `image_size.width=64` sets a nested field, and a
//! field whose schema is an object or array takes JSON (`loras=[{"path":"..."}]`).

use serde_json::{Map, Value};

/// Why an assignment cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InputError {
    #[error("{0:?} is not key=value (e.g. num_images=2)")]
    NotAssignment(String),
    #[error("{field}: expected {expected}, got {value:?}")]
    Type {
        field: String,
        expected: String,
        value: String,
    },
    #[error("{field}: cannot set a field inside {parent}, which is not an object")]
    NotObject { field: String, parent: String },
}

/// The JSON types a schema accepts, in its own order (`anyOf`/`oneOf` alternatives included).
pub fn schema_types(schema: &Value) -> Vec<String> {
    fn push(out: &mut Vec<String>, t: &str) {
        if !out.iter().any(|o| o == t) {
            out.push(t.to_owned());
        }
    }
    let mut out: Vec<String> = Vec::new();
    match schema.get("type") {
        Some(Value::String(t)) => push(&mut out, t),
        Some(Value::Array(ts)) => ts
            .iter()
            .filter_map(Value::as_str)
            .for_each(|t| push(&mut out, t)),
        _ => {}
    }
    for key in ["anyOf", "oneOf", "allOf"] {
        for alt in schema
            .get(key)
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
        {
            for t in schema_types(alt) {
                push(&mut out, &t);
            }
        }
    }
    if out.is_empty() {
        let values = schema
            .get("enum")
            .and_then(Value::as_array)
            .cloned()
            .or_else(|| schema.get("const").map(|c| vec![c.clone()]))
            .unwrap_or_default();
        for v in values {
            push(&mut out, json_type(&v));
        }
    }
    out
}

fn json_type(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(n) if n.is_i64() || n.is_u64() => "integer",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

/// The schema of `name` inside an object schema (looking into `anyOf`/`oneOf` alternatives).
fn property<'a>(schema: &'a Value, name: &str) -> Option<&'a Value> {
    if let Some(p) = schema.get("properties").and_then(|p| p.get(name)) {
        return Some(p);
    }
    ["anyOf", "oneOf", "allOf"].iter().find_map(|key| {
        schema
            .get(*key)?
            .as_array()?
            .iter()
            .find_map(|alt| property(alt, name))
    })
}

/// `raw` as a value of the types `schema` accepts; without a schema (or types), a JSON value if
/// it is one (`7`, `true`, `"7"` for the string 7, `{...}`), else the text as a string.
pub fn typed_value(field: &str, schema: Option<&Value>, raw: &str) -> Result<Value, InputError> {
    let types = schema.map(schema_types).unwrap_or_default();
    if types.is_empty() {
        return Ok(
            serde_json::from_str::<Value>(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
        );
    }
    let has = |t: &str| types.iter().any(|x| x == t);
    if raw == "null" && has("null") {
        return Ok(Value::Null);
    }
    // Every type but string first, since any text is a string.
    for t in types.iter().filter(|t| *t != "string" && *t != "null") {
        let v = match t.as_str() {
            "integer" => raw
                .trim()
                .parse::<i64>()
                .map(Value::from)
                .or_else(|_| raw.trim().parse::<u64>().map(Value::from))
                .ok(),
            "number" => raw.trim().parse::<i64>().map(Value::from).ok().or_else(|| {
                raw.trim()
                    .parse::<f64>()
                    .ok()
                    .and_then(serde_json::Number::from_f64)
                    .map(Value::Number)
            }),
            "boolean" => match raw.trim().to_ascii_lowercase().as_str() {
                "true" | "yes" | "on" => Some(Value::Bool(true)),
                "false" | "no" | "off" => Some(Value::Bool(false)),
                _ => None,
            },
            "object" => serde_json::from_str::<Value>(raw)
                .ok()
                .filter(Value::is_object),
            "array" => serde_json::from_str::<Value>(raw)
                .ok()
                .filter(Value::is_array)
                .or_else(|| {
                    // A comma-separated list of plain items, e.g. `tags=a,b`.
                    let items = schema.and_then(|s| s.get("items"));
                    let item_types = items.map(schema_types).unwrap_or_default();
                    (!raw.trim_start().starts_with('[')
                        && !item_types.iter().any(|t| t == "object" || t == "array"))
                    .then(|| {
                        raw.split(',')
                            .map(|part| typed_value(field, items, part.trim()))
                            .collect::<Result<Vec<_>, _>>()
                            .ok()
                            .map(Value::Array)
                    })
                    .flatten()
                }),
            _ => None,
        };
        if let Some(v) = v {
            return Ok(v);
        }
    }
    if has("string") {
        return Ok(Value::String(raw.to_owned()));
    }
    Err(InputError::Type {
        field: field.to_owned(),
        expected: describe(&types, schema),
        value: raw.to_owned(),
    })
}

fn describe(types: &[String], schema: Option<&Value>) -> String {
    let mut words: Vec<String> = types
        .iter()
        .filter(|t| *t != "null")
        .map(|t| match t.as_str() {
            "integer" => "an integer".to_owned(),
            "number" => "a number".to_owned(),
            "boolean" => "true or false".to_owned(),
            "object" => "a JSON object".to_owned(),
            "array" => "a JSON array".to_owned(),
            other => format!("a {other}"),
        })
        .collect();
    if types.iter().any(|t| t == "null") {
        words.push("null".into());
    }
    let mut text = words.join(" or ");
    if let Some(s) = schema {
        let bound = |k: &str| s.get(k).map(ToString::to_string);
        match (bound("minimum"), bound("maximum")) {
            (Some(lo), Some(hi)) => text.push_str(&format!(" from {lo} to {hi}")),
            (Some(lo), None) => text.push_str(&format!(" of at least {lo}")),
            (None, Some(hi)) => text.push_str(&format!(" of at most {hi}")),
            (None, None) => {}
        }
    }
    text
}

/// Applies `key=value` (the key may be a dotted path) to `input`, typed by the model's input
/// schema (`None`: no schema known, values are read as JSON literals or strings).
pub fn apply_assignment(
    input: &mut Map<String, Value>,
    schema: Option<&Value>,
    assignment: &str,
) -> Result<(), InputError> {
    let (key, raw) = assignment
        .split_once('=')
        .filter(|(k, _)| !k.trim().is_empty())
        .ok_or_else(|| InputError::NotAssignment(assignment.to_owned()))?;
    let path: Vec<&str> = key.trim().split('.').collect();
    if path.iter().any(|p| p.is_empty()) {
        return Err(InputError::NotAssignment(assignment.to_owned()));
    }
    let mut field_schema = schema;
    for part in &path {
        field_schema = field_schema.and_then(|s| property(s, part));
    }
    let value = typed_value(key.trim(), field_schema, raw)?;
    let (last, parents) = path.split_last().unwrap_or((&"", &[]));
    let mut obj = input;
    for (i, part) in parents.iter().enumerate() {
        let slot = obj
            .entry((*part).to_owned())
            .or_insert_with(|| Value::Object(Map::new()));
        if slot.is_null() || slot.is_string() {
            // e.g. image_size was a preset; setting image_size.width makes it an object.
            *slot = Value::Object(Map::new());
        }
        obj = slot.as_object_mut().ok_or_else(|| InputError::NotObject {
            field: key.to_owned(),
            parent: path[..=i].join("."),
        })?;
    }
    obj.insert((*last).to_owned(), value);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn schema() -> Value {
        json!({"type": "object", "properties": {
            "prompt": {"type": "string"},
            "num_images": {"type": "integer", "minimum": 1, "maximum": 4},
            "guidance_scale": {"type": "number"},
            "sync_mode": {"type": "boolean"},
            "seed": {"type": ["integer", "null"]},
            "image_size": {"anyOf": [
                {"type": "string", "enum": ["square", "landscape_4_3"]},
                {"type": "object", "properties": {"width": {"type": "integer"}, "height": {"type": "integer"}}}
            ]},
            "loras": {"type": "array", "items": {"type": "object"}},
            "words": {"type": "array", "items": {"type": "string"}},
            "output_format": {"enum": ["jpeg", "png"]}
        }})
    }

    fn apply(pairs: &[&str]) -> Result<Value, InputError> {
        let s = schema();
        let mut input = Map::new();
        for p in pairs {
            apply_assignment(&mut input, Some(&s), p)?;
        }
        Ok(Value::Object(input))
    }

    #[test]
    fn values_take_the_schema_types() {
        let v = apply(&[
            "prompt=42",
            "num_images=2",
            "guidance_scale=3.5",
            "sync_mode=true",
            "seed=null",
            "output_format=png",
            "words=a, b",
            r#"loras=[{"path":"x","scale":1}]"#,
            "extra=7",
            "note=hello world",
        ])
        .unwrap();
        assert_eq!(
            v,
            json!({"prompt": "42", "num_images": 2, "guidance_scale": 3.5, "sync_mode": true,
                   "seed": null, "output_format": "png", "words": ["a", "b"],
                   "loras": [{"path": "x", "scale": 1}], "extra": 7, "note": "hello world"})
        );
        assert_eq!(apply(&["prompt=a=b"]).unwrap(), json!({"prompt": "a=b"}));
    }

    #[test]
    fn any_of_and_dotted_paths() {
        assert_eq!(
            apply(&["image_size=square"]).unwrap(),
            json!({"image_size": "square"})
        );
        assert_eq!(
            apply(&[r#"image_size={"width":64,"height":32}"#]).unwrap(),
            json!({"image_size": {"width": 64, "height": 32}})
        );
        assert_eq!(
            apply(&[
                "image_size=square",
                "image_size.width=64",
                "image_size.height=48"
            ])
            .unwrap(),
            json!({"image_size": {"width": 64, "height": 48}})
        );
        assert_eq!(
            apply(&["seed=7", "seed.x=1"]).unwrap_err(),
            InputError::NotObject {
                field: "seed.x".into(),
                parent: "seed".into()
            }
        );
    }

    #[test]
    fn wrong_values_say_what_was_expected() {
        let e = apply(&["num_images=two"]).unwrap_err();
        assert_eq!(
            e.to_string(),
            r#"num_images: expected an integer from 1 to 4, got "two""#
        );
        let e = apply(&["sync_mode=maybe"]).unwrap_err();
        assert!(e.to_string().contains("true or false"), "{e}");
        let e = apply(&["seed=x"]).unwrap_err();
        assert!(e.to_string().contains("an integer or null"), "{e}");
        assert!(matches!(
            apply(&["nokey"]).unwrap_err(),
            InputError::NotAssignment(_)
        ));
        assert!(matches!(
            apply(&["=1"]).unwrap_err(),
            InputError::NotAssignment(_)
        ));
    }

    #[test]
    fn without_a_schema_json_literals_or_strings() {
        let mut input = Map::new();
        for p in ["a=1", "b=true", "c=text", r#"d={"x":1}"#, "e=\"quoted\""] {
            apply_assignment(&mut input, None, p).unwrap();
        }
        assert_eq!(
            Value::Object(input),
            json!({"a": 1, "b": true, "c": "text", "d": {"x": 1}, "e": "quoted"})
        );
    }
}
