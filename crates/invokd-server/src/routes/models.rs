//! `GET /v1/models`: the catalog, in the OpenAI-style list DigitalOcean's inference API uses,
//! with each model's kind, title, input schema, provider and whether it streams added.

use axum::{Json, extract::State};
use invokd_api::error_code::ErrorBody;
use serde_json::{Value, json};

use crate::{error::ApiError, extract::Auth, openapi::ModelList, state::AppState};

#[utoipa::path(get, path = "/v1/models", operation_id = "models", tag = "models",
    responses(
        (status = 200, description = "the catalog", body = ModelList),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
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
                "streaming": m.streaming,
            })
        })
        .collect();
    Ok(Json(json!({"object": "list", "data": data})))
}
