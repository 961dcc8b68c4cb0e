//! Turning a client's input into the input a job runs with: the DigitalOcean `output_format`
//! mapping, nulls, defaults, then validation against the model's JSON Schema, whole numbers
//! held to 64 bits, and the image size held to what any provider makes.

use jsonschema::error::ValidationErrorKind;
use serde_json::{Map, Value};

use super::{MAX_IMAGE_PIXELS, Model, image_size_preset};

/// One step of the path to a field.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathItem {
    Key(String),
    Index(usize),
}

/// What kind of rule a value broke.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViolationKind {
    Missing,
    Type,
    Enum,
    Bound,
    Other,
}

/// One broken rule, with the path to the field inside the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    pub path: Vec<PathItem>,
    pub kind: ViolationKind,
    /// What was expected, in words, e.g. "must be at most 4, got 10".
    pub message: String,
}

impl Violation {
    /// The path as `a.b[2].c`.
    pub fn dotted_path(&self) -> String {
        let mut s = String::new();
        for item in &self.path {
            match item {
                PathItem::Key(k) => {
                    if !s.is_empty() {
                        s.push('.');
                    }
                    s.push_str(k);
                }
                PathItem::Index(i) => s.push_str(&format!("[{i}]")),
            }
        }
        s
    }
}

impl Model {
    /// Maps, fills in and validates `input`. On success the result is what the job runs with:
    /// every declared field with a default is present; unknown fields are kept as sent.
    pub fn prepare_input(
        &self,
        mut input: Map<String, Value>,
    ) -> Result<Map<String, Value>, Vec<Violation>> {
        self.map_output_format_to_image_size(&mut input);
        self.drop_nulls_of_non_nullable_fields(&mut input);
        let mut integers = self.whole_numbers_as_integers(&mut input);
        let mut value = Value::Object(input);
        apply_defaults(&self.input_schema, &mut value);
        let mut violations: Vec<Violation> =
            self.validator.iter_errors(&value).map(violation).collect();
        // The schema's own word on a field comes first.
        integers.retain(|i| violations.iter().all(|v| v.path != i.path));
        violations.append(&mut integers);
        let Value::Object(map) = value else {
            unreachable!("input stays an object")
        };
        if violations.is_empty() {
            violations.extend(self.image_size_violation(&map));
        }
        if violations.is_empty() {
            Ok(map)
        } else {
            Err(violations)
        }
    }

    /// Declared integer fields given as whole numbers written as floats (`5.0`, `1e3`) become
    /// those integers; one beyond 64 bits (`1e30`, `2^64`) is refused, where a provider would
    /// not read it and could only put another value in its place.
    fn whole_numbers_as_integers(&self, input: &mut Map<String, Value>) -> Vec<Violation> {
        let mut out = Vec::new();
        for (name, v) in input.iter_mut() {
            let declared_integer = self
                .field_schema(name)
                .and_then(|s| s.get("type"))
                .is_some_and(|t| match t {
                    Value::String(t) => t == "integer",
                    Value::Array(ts) => ts.iter().any(|t| t == "integer"),
                    _ => false,
                });
            let Some(f) = v.as_f64().filter(|_| declared_integer && v.is_f64()) else {
                continue;
            };
            if f.fract() != 0.0 {
                continue; // not whole: the schema's type check names it
            }
            // Within these bounds the conversion is exact (every such f64 is an integer).
            *v = if (0.0..18_446_744_073_709_551_616.0).contains(&f) {
                Value::from(f as u64)
            } else if (-9_223_372_036_854_775_808.0..0.0).contains(&f) {
                Value::from(f as i64)
            } else {
                out.push(Violation {
                    path: vec![PathItem::Key(name.clone())],
                    kind: ViolationKind::Bound,
                    message: format!("must be a whole number that fits in 64 bits, got {f:e}"),
                });
                continue;
            };
        }
        out
    }

    /// An image larger than any provider makes, refused with the field that asks for it.
    fn image_size_violation(&self, input: &Map<String, Value>) -> Option<Violation> {
        let spec = &self.output.images.as_ref()?.size;
        let (w, h) = spec.pixels(input).ok()?;
        (u64::from(w) * u64::from(h) > MAX_IMAGE_PIXELS).then(|| Violation {
            path: spec
                .field()
                .map(|f| vec![PathItem::Key(f.to_owned())])
                .unwrap_or_default(),
            kind: ViolationKind::Bound,
            message: format!(
                "an image may have at most {MAX_IMAGE_PIXELS} pixels, got {w}x{h} ({} pixels)",
                u64::from(w) * u64::from(h)
            ),
        })
    }

    /// DigitalOcean's docs send `"output_format": "landscape_4_3"` (an aspect ratio) to image
    /// models. Where the model has `image_size` and the value is an `image_size` preset that the
    /// model's own `output_format` does not accept, the value moves to `image_size` (unless the
    /// client also set `image_size`, which then wins and the stray value is dropped).
    fn map_output_format_to_image_size(&self, input: &mut Map<String, Value>) {
        let Some(Value::String(value)) = input.get("output_format") else {
            return;
        };
        if self.field_schema("image_size").is_none() || image_size_preset(value).is_none() {
            return;
        }
        let own_enum_accepts = self
            .field_schema("output_format")
            .and_then(|s| s.get("enum"))
            .and_then(Value::as_array)
            .is_some_and(|e| e.iter().any(|v| v.as_str() == Some(value)));
        if own_enum_accepts {
            return;
        }
        if let Some(v) = input.remove("output_format") {
            input.entry("image_size").or_insert(v);
        }
    }

    /// DigitalOcean documents every input field as nullable, so a `null` for a declared field
    /// that does not allow null means "not given": it is removed and the default applies.
    fn drop_nulls_of_non_nullable_fields(&self, input: &mut Map<String, Value>) {
        input.retain(|name, v| {
            !(v.is_null() && self.field_schema(name).is_some_and(|s| !allows_null(s)))
        });
    }
}

fn allows_null(schema: &Value) -> bool {
    match schema.get("type") {
        Some(Value::String(t)) => t == "null",
        Some(Value::Array(ts)) => ts.iter().any(|t| t == "null"),
        _ => ["anyOf", "oneOf"].iter().any(|k| {
            schema
                .get(*k)
                .and_then(Value::as_array)
                .is_some_and(|alts| alts.iter().any(allows_null))
        }),
    }
}

/// Fills in `default`s of absent properties, recursing into objects, array items and the object
/// branch of an `anyOf`, as pydantic does for fal's models.
fn apply_defaults(schema: &Value, value: &mut Value) {
    match value {
        Value::Object(map) => {
            if let Some(props) = schema.get("properties").and_then(Value::as_object) {
                for (name, prop) in props {
                    match map.get_mut(name) {
                        Some(v) => apply_defaults(prop, v),
                        None => {
                            if let Some(d) = prop.get("default") {
                                map.insert(name.clone(), d.clone());
                            }
                        }
                    }
                }
            }
            if let Some(alts) = schema.get("anyOf").and_then(Value::as_array)
                && let Some(obj) = alts.iter().find(|a| a.get("properties").is_some())
            {
                apply_defaults(obj, value);
            }
        }
        Value::Array(items) => {
            if let Some(item_schema) = schema.get("items") {
                for item in items {
                    apply_defaults(item_schema, item);
                }
            }
        }
        _ => {}
    }
}

fn violation(e: jsonschema::ValidationError<'_>) -> Violation {
    let mut path: Vec<PathItem> = e
        .instance_path()
        .to_string()
        .split('/')
        .skip(1)
        .map(|seg| {
            let seg = seg.replace("~1", "/").replace("~0", "~");
            match seg.parse::<usize>() {
                Ok(i) => PathItem::Index(i),
                Err(_) => PathItem::Key(seg),
            }
        })
        .collect();
    let got = e.instance().to_string();
    let (kind, message) = match e.kind() {
        ValidationErrorKind::Required { property } => {
            let name = property
                .as_str()
                .map(str::to_owned)
                .unwrap_or_else(|| property.to_string());
            path.push(PathItem::Key(name));
            (ViolationKind::Missing, "field required".to_owned())
        }
        ValidationErrorKind::Type { .. } => (ViolationKind::Type, format!("{e}")),
        ValidationErrorKind::Enum { options } => (
            ViolationKind::Enum,
            format!("must be one of {options}, got {got}"),
        ),
        ValidationErrorKind::Minimum { limit } => (
            ViolationKind::Bound,
            format!("must be at least {limit}, got {got}"),
        ),
        ValidationErrorKind::Maximum { limit } => (
            ViolationKind::Bound,
            format!("must be at most {limit}, got {got}"),
        ),
        ValidationErrorKind::ExclusiveMinimum { limit } => (
            ViolationKind::Bound,
            format!("must be greater than {limit}, got {got}"),
        ),
        ValidationErrorKind::ExclusiveMaximum { limit } => (
            ViolationKind::Bound,
            format!("must be less than {limit}, got {got}"),
        ),
        ValidationErrorKind::MinLength { limit } => (
            ViolationKind::Bound,
            format!("must be at least {limit} characters long"),
        ),
        ValidationErrorKind::MaxLength { limit } => (
            ViolationKind::Bound,
            format!("must be at most {limit} characters long"),
        ),
        ValidationErrorKind::MinItems { limit } => (
            ViolationKind::Bound,
            format!("must have at least {limit} items"),
        ),
        ValidationErrorKind::MaxItems { limit } => (
            ViolationKind::Bound,
            format!("must have at most {limit} items"),
        ),
        ValidationErrorKind::AnyOf { .. } => (
            ViolationKind::Type,
            format!("{got} matches none of the accepted forms"),
        ),
        _ => (ViolationKind::Other, e.to_string()),
    };
    Violation {
        path,
        kind,
        message,
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn model(input: Value) -> Model {
        let file = json!({
            "id": "t/m", "title": "T", "kind": "image", "description": "d",
            "input": input,
            "output": {"fields": ["images"], "images": {"count": 1, "format": {"default": "png"}, "size": {"fixed": [8, 8]}}}
        });
        Model::from_json("t.json", &file.to_string()).unwrap()
    }

    fn obj(v: Value) -> Map<String, Value> {
        v.as_object().unwrap().clone()
    }

    fn schnell_like() -> Model {
        model(json!({
            "type": "object", "required": ["prompt"],
            "properties": {
                "prompt": {"type": "string"},
                "num_images": {"type": "integer", "default": 1, "minimum": 1, "maximum": 4},
                "output_format": {"type": "string", "enum": ["jpeg", "png"], "default": "jpeg"},
                "image_size": {"default": "landscape_4_3", "anyOf": [
                    {"type": "string", "enum": ["square_hd", "landscape_4_3"]},
                    {"type": "object", "properties": {
                        "width": {"type": "integer", "default": 512, "exclusiveMinimum": 0, "maximum": 14142},
                        "height": {"type": "integer", "default": 512, "exclusiveMinimum": 0, "maximum": 14142}},
                     "additionalProperties": false}]},
                "loras": {"type": "array", "default": [], "items": {"type": "object", "required": ["path"],
                    "properties": {"path": {"type": "string"}, "scale": {"type": "number", "default": 1}}}}
            }
        }))
    }

    #[test]
    fn defaults_fill_absent_fields_and_unknown_fields_stay() {
        let out = schnell_like()
            .prepare_input(obj(json!({"prompt": "p", "extra": 5})))
            .unwrap();
        assert_eq!(out["num_images"], 1);
        assert_eq!(out["output_format"], "jpeg");
        assert_eq!(out["image_size"], "landscape_4_3");
        assert_eq!(out["extra"], 5);
    }

    #[test]
    fn defaults_recurse_into_objects_and_arrays() {
        let out = schnell_like()
            .prepare_input(obj(
                json!({"prompt": "p", "image_size": {"width": 640}, "loras": [{"path": "x"}]}),
            ))
            .unwrap();
        assert_eq!(out["image_size"], json!({"width": 640, "height": 512}));
        assert_eq!(out["loras"][0]["scale"], 1);
    }

    #[test]
    fn aspect_ratio_in_output_format_moves_to_image_size() {
        let out = schnell_like()
            .prepare_input(obj(json!({"prompt": "p", "output_format": "square_hd"})))
            .unwrap();
        assert_eq!(out["image_size"], "square_hd");
        assert_eq!(out["output_format"], "jpeg");
    }

    #[test]
    fn null_means_absent_for_non_nullable_fields() {
        let out = schnell_like()
            .prepare_input(obj(json!({"prompt": "p", "num_images": null})))
            .unwrap();
        assert_eq!(out["num_images"], 1);
    }

    #[test]
    fn violations_name_the_path_and_the_rule() {
        let m = schnell_like();
        let v = m.prepare_input(obj(json!({"num_images": 9}))).unwrap_err();
        let missing = v.iter().find(|v| v.kind == ViolationKind::Missing).unwrap();
        assert_eq!(missing.dotted_path(), "prompt");
        let bound = v.iter().find(|v| v.kind == ViolationKind::Bound).unwrap();
        assert_eq!(bound.dotted_path(), "num_images");
        assert!(bound.message.contains("at most 4"), "{}", bound.message);

        let v = m
            .prepare_input(obj(json!({"prompt": "p", "output_format": "gif"})))
            .unwrap_err();
        assert_eq!(v[0].kind, ViolationKind::Enum);
        assert_eq!(v[0].dotted_path(), "output_format");

        let v = m.prepare_input(obj(json!({"prompt": 3}))).unwrap_err();
        assert_eq!(v[0].kind, ViolationKind::Type);

        let v = m
            .prepare_input(obj(json!({"prompt": "p", "loras": [{"scale": 2}]})))
            .unwrap_err();
        assert_eq!(v[0].dotted_path(), "loras[0].path");
    }

    #[test]
    fn whole_numbers_keep_their_value_and_those_beyond_64_bits_are_refused() {
        let m = model(json!({
            "type": "object",
            "properties": {"seed": {"type": "integer", "minimum": 0}, "n": {"type": ["integer", "null"]}}
        }));
        let input: Map<String, Value> =
            serde_json::from_str(r#"{"seed": 1e3, "n": -2.0}"#).unwrap();
        let ok = m.prepare_input(input).unwrap();
        assert_eq!(ok["seed"], json!(1000));
        assert!(ok["seed"].is_u64());
        assert_eq!(ok["n"], json!(-2));
        for big in ["18446744073709551616", "1e30", "-1e300"] {
            let input: Map<String, Value> =
                serde_json::from_str(&format!(r#"{{"n": {big}}}"#)).unwrap();
            let v = m.prepare_input(input).unwrap_err();
            assert_eq!(v.len(), 1, "{big}: {v:?}");
            assert_eq!(v[0].dotted_path(), "n");
            assert!(v[0].message.contains("64 bits"), "{}", v[0].message);
        }
        // A seed beyond 64 bits that the schema refuses too is named once, by the schema.
        let input: Map<String, Value> = serde_json::from_str(r#"{"seed": -1e30}"#).unwrap();
        assert_eq!(m.prepare_input(input).unwrap_err().len(), 1);
    }

    #[test]
    fn images_over_the_pixel_bound_are_refused_at_submit() {
        let file = json!({
            "id": "t/m", "title": "T", "kind": "image", "description": "d",
            "input": {"type": "object", "properties": {"image_size": {"type": "object", "properties": {
                "width": {"type": "integer", "maximum": 14142},
                "height": {"type": "integer", "maximum": 14142}}}}},
            "output": {"fields": ["images"], "images": {"count": 1, "format": {"default": "png"},
                       "size": {"field": "image_size"}}}
        });
        let m = Model::from_json("t.json", &file.to_string()).unwrap();
        let v = m
            .prepare_input(obj(
                json!({"image_size": {"width": 14142, "height": 14142}}),
            ))
            .unwrap_err();
        assert_eq!(v[0].dotted_path(), "image_size");
        assert!(v[0].message.contains("40000000"), "{}", v[0].message);
        assert!(
            m.prepare_input(obj(json!({"image_size": {"width": 8000, "height": 5000}})))
                .is_ok()
        );
    }
}
