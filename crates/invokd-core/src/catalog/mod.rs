//! The model catalog: one JSON file per model, embedded at build time, plus an operator's directory.

mod model;
mod validate;

use std::{collections::BTreeMap, path::Path, sync::Arc};

pub use model::{
    AudioSpec, CountSpec, FormatSpec, ImagesSpec, Kind, MAX_IMAGE_PIXELS, Model, OutputSpec,
    SizeSpec, SpeechSpec, image_size_preset,
};
pub use validate::{PathItem, Violation, ViolationKind};

mod embedded {
    include!(concat!(env!("OUT_DIR"), "/embedded_catalog.rs"));
}

/// A catalog file that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum CatalogError {
    #[error("catalog file {file}: {reason}")]
    Invalid { file: String, reason: String },
    #[error("cannot read catalog directory {dir}: {source}")]
    Io {
        dir: String,
        #[source]
        source: std::io::Error,
    },
}

/// All models invokd knows, by id.
#[derive(Debug, Clone, Default)]
pub struct Catalog {
    models: BTreeMap<String, Arc<Model>>,
}

impl Catalog {
    /// The models shipped with invokd.
    pub fn embedded() -> Result<Self, CatalogError> {
        let mut catalog = Self::default();
        for (file, text) in embedded::EMBEDDED {
            catalog.add(Model::from_json(file, text)?);
        }
        Ok(catalog)
    }

    /// Adds every `*.json` file in `dir`; a model with an id already present replaces it.
    pub fn extend_from_dir(&mut self, dir: &Path) -> Result<(), CatalogError> {
        let io = |source| CatalogError::Io {
            dir: dir.display().to_string(),
            source,
        };
        let mut paths = Vec::new();
        for entry in std::fs::read_dir(dir).map_err(io)? {
            let path = entry.map_err(io)?.path();
            if path.extension().is_some_and(|e| e == "json") {
                paths.push(path);
            }
        }
        paths.sort();
        for path in paths {
            let text = std::fs::read_to_string(&path).map_err(io)?;
            self.add(Model::from_json(&path.display().to_string(), &text)?);
        }
        Ok(())
    }

    fn add(&mut self, model: Model) {
        self.models.insert(model.id.clone(), Arc::new(model));
    }

    pub fn get(&self, id: &str) -> Option<&Arc<Model>> {
        self.models.get(id)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Model>> {
        self.models.values()
    }

    pub fn len(&self) -> usize {
        self.models.len()
    }

    pub fn is_empty(&self) -> bool {
        self.models.is_empty()
    }
}

/// How well a model pattern (an exact id, or a prefix ending in `*`) matches `model`: `None` if
/// not at all; an exact id beats any prefix, a longer prefix a shorter one. One rule for the
/// gateway's routes, worker tokens and a worker's own tables.
pub fn pattern_specificity(pattern: &str, model: &str) -> Option<usize> {
    match pattern.strip_suffix('*') {
        Some(prefix) => model.starts_with(prefix).then_some(prefix.len()),
        None => (pattern == model).then_some(usize::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn embedded_catalog_has_the_fourteen_models_of_the_seeds() {
        let c = Catalog::embedded().unwrap();
        for id in [
            "fal-ai/flux/schnell",
            "fal-ai/fast-sdxl",
            "fal-ai/stable-audio-25/text-to-audio",
            "fal-ai/elevenlabs/tts/multilingual-v2",
            "fal-ai/hidream-i1-full",
            "fal-ai/ideogram/v2",
            "fal-ai/stable-diffusion-v35-large",
            "fal-ai/omnigen-v2",
            "fal-ai/imagen4/preview",
            "fal-ai/hidream-i1-fast",
            "fal-ai/flux-1/schnell",
            "fal-ai/imagen4/preview/fast",
            "fal-ai/recraft/v2/text-to-image",
            "fal-ai/f-lite/standard",
        ] {
            assert!(c.get(id).is_some(), "{id} missing");
        }
        assert_eq!(c.len(), 14);
    }

    #[test]
    fn the_hidream_models_stream_as_their_pages_show_and_the_others_do_not() {
        let c = Catalog::embedded().unwrap();
        let streaming: Vec<&str> = c
            .iter()
            .filter(|m| m.streaming)
            .map(|m| m.id.as_str())
            .collect();
        assert_eq!(
            streaming.len(),
            2,
            "only the seed's streaming pages: {streaming:?}"
        );
        for id in ["fal-ai/hidream-i1-full", "fal-ai/hidream-i1-fast"] {
            assert!(streaming.contains(&id), "{id} streams");
        }
    }

    #[test]
    fn every_model_accepts_its_minimal_input_and_its_defaults_validate() {
        let c = Catalog::embedded().unwrap();
        for m in c.iter() {
            let mut input = serde_json::Map::new();
            for field in m.required_fields() {
                input.insert(field.to_owned(), serde_json::json!("a futuristic city"));
            }
            let out = m
                .prepare_input(input)
                .unwrap_or_else(|v| panic!("{}: {v:?}", m.id));
            assert!(out.len() >= m.required_fields().count(), "{}", m.id);
        }
    }
}
