//! `GET /v1/models`: the catalog, in the OpenAI-style list DigitalOcean's inference API uses,
//! with each model's kind, title and input schema added.

use axum::{Json, extract::State};
use serde_json::{Value, json};

use crate::{error::ApiError, extract::Auth, state::AppState};

pub async fn list(State(state): State<AppState>, Auth(_): Auth) -> Result<Json<Value>, ApiError> {
    let data: Vec<Value> = state
        .service
        .catalog()
        .iter()
        .map(|m| {
            json!({
                "id": m.id,
                "object": "model",
                "created": 0,
                "owned_by": m.id.split('/').next().unwrap_or_default(),
                "kind": m.kind.as_str(),
                "title": m.title,
                "description": m.description,
                "input_schema": m.input_schema,
                "provider": state.providers.name_for(&m.id),
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}
