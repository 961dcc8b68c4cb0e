//! The playground's form, made from a model's input JSON Schema (as Cog's and fal's
//! playgrounds do): enums as selects, numbers with their bounds, booleans as switches,
//! `image_size` as presets or width and height, long text as a text area, anything else as
//! JSON. The posted form goes back into an input object; the service validates it as it
//! validates the API's.

use serde_json::{Map, Number, Value};

/// Form fields are named `input.<property>`; `image_size`'s custom size adds `.width`/`.height`.
pub const PREFIX: &str = "input.";
/// A boolean field's marker: a switch left off sends nothing, so the marker says it was shown.
pub const BOOL_MARK: &str = "bool.";
/// The select value of a size given as width and height.
pub const CUSTOM: &str = "custom";

/// How a property is edited.
#[derive(Debug, Clone, PartialEq)]
pub enum Control {
    /// A single-line text field (`multiline` for prompts and other long text).
    Text {
        multiline: bool,
    },
    /// A select of these values.
    Select {
        options: Vec<String>,
    },
    /// A number field; `integer` steps by one.
    Number {
        integer: bool,
        min: Option<String>,
        max: Option<String>,
    },
    Switch,
    /// A size preset, or a custom width and height.
    Size {
        presets: Vec<String>,
        width: String,
        height: String,
        max: Option<String>,
    },
    /// Anything else, as JSON text.
    Json,
}

/// One property of the input as a form field.
#[derive(Debug, Clone)]
pub struct Field {
    pub name: String,
    pub label: String,
    pub description: String,
    pub required: bool,
    pub control: Control,
    /// The value shown: the last posted one, else the schema's default, as text.
    pub value: String,
}

impl Field {
    pub fn id(&self) -> String {
        format!("f-{}", self.name)
    }
    pub fn input_name(&self) -> String {
        format!("{PREFIX}{}", self.name)
    }
    pub fn bool_mark(&self) -> String {
        format!("{BOOL_MARK}{}", self.name)
    }
    pub fn checked(&self) -> bool {
        self.value == "true"
    }
    pub fn is_selected(&self, option: &str) -> bool {
        self.value == option
    }
}

fn types(schema: &Value) -> Vec<&str> {
    match schema.get("type") {
        Some(Value::String(t)) => vec![t.as_str()],
        Some(Value::Array(ts)) => ts.iter().filter_map(Value::as_str).collect(),
        _ => Vec::new(),
    }
}

fn bound(schema: &Value, keys: [&str; 2]) -> Option<String> {
    keys.iter()
        .find_map(|k| schema.get(*k))
        .map(|v| v.to_string())
}

fn text_of(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => String::new(),
        other => other.to_string(),
    }
}

/// The control of one property's schema.
fn control(name: &str, schema: &Value) -> Control {
    if let Some(any) = schema.get("anyOf").and_then(Value::as_array) {
        let presets = any
            .iter()
            .find_map(|s| s.get("enum").and_then(Value::as_array));
        let dims = any.iter().find_map(|s| s.get("properties"));
        if let (Some(presets), Some(dims)) = (presets, dims) {
            let default = |d: &str| {
                dims.get(d)
                    .and_then(|s| s.get("default"))
                    .map(text_of)
                    .unwrap_or_else(|| "512".into())
            };
            return Control::Size {
                presets: presets.iter().map(text_of).collect(),
                width: default("width"),
                height: default("height"),
                max: dims
                    .get("width")
                    .and_then(|s| bound(s, ["maximum", "maximum"])),
            };
        }
        return Control::Json;
    }
    if let Some(options) = schema.get("enum").and_then(Value::as_array) {
        return Control::Select {
            options: options.iter().map(text_of).collect(),
        };
    }
    let ts = types(schema);
    let has = |t: &str| ts.contains(&t);
    if has("boolean") {
        Control::Switch
    } else if has("integer") || has("number") {
        Control::Number {
            integer: has("integer"),
            min: bound(schema, ["minimum", "exclusiveMinimum"]),
            max: bound(schema, ["maximum", "exclusiveMaximum"]),
        }
    } else if has("string") {
        let long = ["prompt", "text", "negative_prompt", "input"].contains(&name)
            || schema.get("maxLength").and_then(Value::as_u64).unwrap_or(0) > 200;
        Control::Text { multiline: long }
    } else {
        Control::Json
    }
}

/// The fields of an input schema: required ones first, in the schema's order, then the rest.
/// `given` is a posted input, whose values are shown instead of the defaults.
pub fn fields(schema: &Value, given: Option<&Map<String, Value>>) -> Vec<Field> {
    let required: Vec<&str> = schema
        .get("required")
        .and_then(Value::as_array)
        .map(|r| r.iter().filter_map(Value::as_str).collect())
        .unwrap_or_default();
    let Some(props) = schema.get("properties").and_then(Value::as_object) else {
        return Vec::new();
    };
    let mut out: Vec<Field> = props
        .iter()
        .map(|(name, s)| {
            let mut control = control(name, s);
            let shown = given.and_then(|g| g.get(name)).or_else(|| s.get("default"));
            let value = match (&mut control, shown) {
                (Control::Size { width, height, .. }, Some(Value::Object(o))) => {
                    *width = o.get("width").map(text_of).unwrap_or_default();
                    *height = o.get("height").map(text_of).unwrap_or_default();
                    CUSTOM.to_owned()
                }
                (Control::Json, Some(v)) => serde_json::to_string_pretty(v).unwrap_or_default(),
                (_, Some(v)) => text_of(v),
                (_, None) => String::new(),
            };
            Field {
                label: name.replace('_', " "),
                description: s
                    .get("description")
                    .and_then(Value::as_str)
                    .unwrap_or_default()
                    .to_owned(),
                required: required.contains(&name.as_str()),
                name: name.clone(),
                control,
                value,
            }
        })
        .collect();
    out.sort_by_key(|f| !f.required);
    out
}

/// What a posted form asks for, as the model's input: fields left empty are left out (the
/// model's defaults apply), numbers and JSON parsed. Errors name the field.
pub fn input_of(schema: &Value, posted: &[(String, String)]) -> Result<Map<String, Value>, String> {
    let get = |name: &str| {
        posted
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    };
    let mut input = Map::new();
    for field in fields(schema, None) {
        let name = &field.name;
        let raw = get(&field.input_name()).map(str::trim);
        let value = match &field.control {
            Control::Switch => {
                if get(&field.bool_mark()).is_none() {
                    continue;
                }
                Some(Value::Bool(raw == Some("true")))
            }
            Control::Size { .. } if raw == Some(CUSTOM) => {
                let dim = |d: &str| -> Result<Value, String> {
                    let text = get(&format!("{PREFIX}{name}.{d}"))
                        .unwrap_or_default()
                        .trim();
                    text.parse::<u64>()
                        .map(Value::from)
                        .map_err(|_| format!("{name} {d}: {text:?} is not a whole number"))
                };
                Some(serde_json::json!({"width": dim("width")?, "height": dim("height")?}))
            }
            _ => match raw {
                None | Some("") => None,
                Some(text) => Some(parse(name, &field.control, text)?),
            },
        };
        if let Some(v) = value {
            input.insert(name.clone(), v);
        }
    }
    Ok(input)
}

fn parse(name: &str, control: &Control, text: &str) -> Result<Value, String> {
    match control {
        Control::Number { integer: true, .. } => text
            .parse::<i64>()
            .map(Value::from)
            .map_err(|_| format!("{name}: {text:?} is not a whole number")),
        Control::Number { .. } => text
            .parse::<f64>()
            .ok()
            .and_then(Number::from_f64)
            .map(Value::Number)
            .ok_or_else(|| format!("{name}: {text:?} is not a number")),
        Control::Json => {
            serde_json::from_str(text).map_err(|e| format!("{name}: not valid JSON ({e})"))
        }
        _ => Ok(Value::String(text.to_owned())),
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn schema() -> Value {
        json!({
            "type": "object",
            "required": ["prompt"],
            "properties": {
                "seed": {"type": ["integer", "null"], "minimum": 0},
                "prompt": {"type": "string"},
                "image_size": {"default": "square", "anyOf": [
                    {"type": "string", "enum": ["square", "landscape_4_3"]},
                    {"type": "object", "properties": {
                        "width": {"type": "integer", "default": 512, "maximum": 14142},
                        "height": {"type": "integer", "default": 512}}}
                ]},
                "format": {"type": "string", "enum": ["png", "jpeg"], "default": "png"},
                "safe": {"type": "boolean", "default": true},
                "guidance": {"type": "number", "minimum": 1, "maximum": 20},
                "loras": {"type": "array"}
            }
        })
    }

    fn post(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn each_kind_of_property_gets_its_control() {
        let f = fields(&schema(), None);
        assert_eq!(f[0].name, "prompt", "required fields first");
        assert!(f[0].required);
        let by = |n: &str| f.iter().find(|x| x.name == n).unwrap().control.clone();
        assert_eq!(by("prompt"), Control::Text { multiline: true });
        assert_eq!(
            by("format"),
            Control::Select {
                options: vec!["png".into(), "jpeg".into()]
            }
        );
        assert_eq!(by("safe"), Control::Switch);
        assert_eq!(
            by("seed"),
            Control::Number {
                integer: true,
                min: Some("0".into()),
                max: None
            }
        );
        assert!(matches!(by("image_size"), Control::Size { .. }));
        assert_eq!(by("loras"), Control::Json);
    }

    #[test]
    fn a_posted_form_becomes_the_input() {
        let input = input_of(
            &schema(),
            &post(&[
                ("input.prompt", " a cat "),
                ("input.seed", ""),
                ("input.image_size", "custom"),
                ("input.image_size.width", "640"),
                ("input.image_size.height", "480"),
                ("bool.safe", "1"),
                ("input.guidance", "7.5"),
                ("input.loras", "[1]"),
            ]),
        )
        .unwrap();
        assert_eq!(
            Value::Object(input),
            json!({
                "prompt": "a cat",
                "image_size": {"width": 640, "height": 480},
                "safe": false,
                "guidance": 7.5,
                "loras": [1]
            })
        );
    }

    #[test]
    fn bad_numbers_name_their_field() {
        let e = input_of(&schema(), &post(&[("input.seed", "x")])).unwrap_err();
        assert!(e.starts_with("seed:"), "{e}");
        let e = input_of(
            &schema(),
            &post(&[
                ("input.image_size", "custom"),
                ("input.image_size.width", ""),
            ]),
        )
        .unwrap_err();
        assert!(e.contains("width"), "{e}");
    }
}
