//! The model catalog (`GET /v1/models`): each model's id, kind, title and input schema.

use reqwest::Method;
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::{Client, ClientError, client::Call};

/// One model as `GET /v1/models` lists it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelInfo {
    pub id: String,
    /// `image`, `audio` or `speech`.
    #[serde(default)]
    pub kind: String,
    #[serde(default)]
    pub title: String,
    #[serde(default)]
    pub description: String,
    /// A JSON Schema of the model's `input` object.
    #[serde(default)]
    pub input_schema: Value,
    /// Whatever else the server says of the model (`object`, `owned_by`, ...).
    #[serde(flatten)]
    pub extra: Map<String, Value>,
}

impl ModelInfo {
    /// The input fields that must be given.
    pub fn required_fields(&self) -> impl Iterator<Item = &str> {
        self.input_schema
            .get("required")
            .and_then(Value::as_array)
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
    }
}

/// The answer of `GET /v1/models`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ModelList {
    #[serde(default = "list")]
    pub object: String,
    pub data: Vec<ModelInfo>,
}

fn list() -> String {
    "list".into()
}

impl Client {
    /// `GET /v1/models`: the server's catalog.
    pub async fn models(&self) -> Result<ModelList, ClientError> {
        let url = self.endpoint(&["v1", "models"], &[]);
        self.json(&Call::new(Method::GET, url)).await
    }

    /// One model of the server's catalog; None if it has no such model.
    pub async fn model(&self, id: &str) -> Result<Option<ModelInfo>, ClientError> {
        Ok(self.models().await?.data.into_iter().find(|m| m.id == id))
    }
}
