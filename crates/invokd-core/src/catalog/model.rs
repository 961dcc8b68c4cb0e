//! One model of the catalog: its id, kind, input schema (JSON Schema) and output shape.

use std::collections::BTreeMap;

use serde::Deserialize;
use serde_json::{Map, Value};

use super::CatalogError;

/// What a model produces.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    Image,
    Audio,
    Speech,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Image => "image",
            Self::Audio => "audio",
            Self::Speech => "speech",
        }
    }
}

/// How many images: an input field, or a fixed number.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum CountSpec {
    Field(String),
    Fixed(u32),
}

/// Which input field picks the image format, and the format when it is absent.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct FormatSpec {
    #[serde(default)]
    pub field: Option<String>,
    pub default: String,
}

/// How the image size follows from the input.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(untagged)]
pub enum SizeSpec {
    /// An aspect-ratio enum field, with the pixel size of each ratio.
    Ratios {
        field: String,
        ratios: BTreeMap<String, [u32; 2]>,
    },
    /// A field holding an `image_size` preset or `{width, height}`.
    Field { field: String },
    /// Always this size.
    Fixed { fixed: [u32; 2] },
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct ImagesSpec {
    pub count: CountSpec,
    pub format: FormatSpec,
    pub size: SizeSpec,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct AudioSpec {
    pub duration_field: String,
    pub format: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct SpeechSpec {
    pub text_field: String,
    #[serde(default)]
    pub speed_field: Option<String>,
    pub format: String,
}

/// The output's top-level fields and the hints for producing its files.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(deny_unknown_fields)]
pub struct OutputSpec {
    pub fields: Vec<String>,
    #[serde(default)]
    pub images: Option<ImagesSpec>,
    #[serde(default)]
    pub audio: Option<AudioSpec>,
    #[serde(default)]
    pub speech: Option<SpeechSpec>,
    #[serde(default)]
    pub notes: Option<String>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct ModelFile {
    id: String,
    title: String,
    kind: Kind,
    description: String,
    input: Value,
    output: OutputSpec,
    /// How long one run may take, unless the job says otherwise.
    #[serde(default)]
    run_timeout_seconds: Option<u64>,
    /// Whether the model serves fal's streaming endpoint (`POST {model}/stream`).
    #[serde(default)]
    streaming: bool,
}

/// A model: what it accepts and what it returns.
pub struct Model {
    pub id: String,
    pub title: String,
    pub kind: Kind,
    pub description: String,
    /// The input's JSON Schema, as written in the catalog file.
    pub input_schema: Value,
    pub output: OutputSpec,
    /// The model's own run limit, if its file sets one.
    pub run_timeout: Option<std::time::Duration>,
    /// Whether it streams: `POST {model}/stream` answers its partial outputs as they come,
    /// then the final output (fal's streaming endpoint); other models refuse it.
    pub streaming: bool,
    pub(super) validator: jsonschema::Validator,
}

impl std::fmt::Debug for Model {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Model")
            .field("id", &self.id)
            .field("kind", &self.kind)
            .finish_non_exhaustive()
    }
}

impl Model {
    /// Parses and checks one catalog file.
    pub fn from_json(file: &str, text: &str) -> Result<Self, CatalogError> {
        let invalid = |reason: String| CatalogError::Invalid {
            file: file.to_owned(),
            reason,
        };
        let f: ModelFile = serde_json::from_str(text).map_err(|e| invalid(e.to_string()))?;
        if f.input.get("type").and_then(Value::as_str) != Some("object") {
            return Err(invalid(
                "input schema must have \"type\": \"object\"".into(),
            ));
        }
        let kind_ok = match f.kind {
            Kind::Image => f.output.images.is_some(),
            Kind::Audio => f.output.audio.is_some(),
            Kind::Speech => f.output.speech.is_some(),
        };
        if !kind_ok {
            return Err(invalid(format!(
                "kind {} needs an output.{} section",
                f.kind.as_str(),
                match f.kind {
                    Kind::Image => "images",
                    Kind::Audio => "audio",
                    Kind::Speech => "speech",
                }
            )));
        }
        let validator = jsonschema::validator_for(&f.input)
            .map_err(|e| invalid(format!("input schema: {e}")))?;
        Ok(Self {
            id: f.id,
            title: f.title,
            kind: f.kind,
            description: f.description,
            input_schema: f.input,
            output: f.output,
            run_timeout: f.run_timeout_seconds.map(std::time::Duration::from_secs),
            streaming: f.streaming,
            validator,
        })
    }

    /// The schema of one top-level input field.
    pub fn field_schema(&self, name: &str) -> Option<&Value> {
        self.input_schema.get("properties")?.get(name)
    }

    /// The names of the required input fields.
    pub fn required_fields(&self) -> impl Iterator<Item = &str> {
        self.input_schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }
}

/// The most pixels one image may have, whoever makes it: larger sizes are refused at submit
/// (a 14142×14142 image, which some schemas allow, would need 600 MB to draw).
pub const MAX_IMAGE_PIXELS: u64 = 40_000_000;

impl SizeSpec {
    /// The input field that sets the size, if one does.
    pub fn field(&self) -> Option<&str> {
        match self {
            Self::Ratios { field, .. } | Self::Field { field } => Some(field),
            Self::Fixed { .. } => None,
        }
    }

    /// The pixel size `input` asks for, or why it names none.
    pub fn pixels(&self, input: &Map<String, Value>) -> Result<(u32, u32), String> {
        let dim = |v: Option<&Value>| {
            v.and_then(Value::as_u64)
                .and_then(|n| u32::try_from(n).ok())
        };
        match self {
            Self::Fixed { fixed: [w, h] } => Ok((*w, *h)),
            Self::Ratios { field, ratios } => {
                let ratio = input.get(field).and_then(Value::as_str).unwrap_or_default();
                ratios
                    .get(ratio)
                    .map(|[w, h]| (*w, *h))
                    .ok_or_else(|| format!("{field}: no pixel size for {ratio:?}"))
            }
            Self::Field { field } => match input.get(field) {
                Some(Value::String(preset)) => image_size_preset(preset)
                    .ok_or_else(|| format!("{field}: unknown preset {preset:?}")),
                Some(Value::Object(o)) => match (dim(o.get("width")), dim(o.get("height"))) {
                    (Some(w), Some(h)) if w > 0 && h > 0 => Ok((w, h)),
                    _ => Err(format!(
                        "{field}: width and height must be positive integers"
                    )),
                },
                _ => Err(format!("{field} is missing")),
            },
        }
    }
}

/// The pixel size of fal's `image_size` presets.
pub fn image_size_preset(name: &str) -> Option<(u32, u32)> {
    Some(match name {
        "square_hd" => (1024, 1024),
        "square" => (512, 512),
        "portrait_4_3" => (768, 1024),
        "portrait_16_9" => (576, 1024),
        "landscape_4_3" => (1024, 768),
        "landscape_16_9" => (1024, 576),
        _ => return None,
    })
}
