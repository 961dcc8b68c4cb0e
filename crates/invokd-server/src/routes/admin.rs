//! The admin API: access keys, with the admin token. Keys are shown once, stored hashed, and a
//! revoked key fails at once.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use invokd_api::{
    ErrorCode,
    admin::{CreateKey, KeyCreated, KeyInfo, KeyList},
    error_code::ErrorBody,
};
use invokd_core::keys::KeyRecord;

use crate::{
    error::ApiError,
    extract::{AdminAuth, JsonBody},
    state::AppState,
};

fn info(k: &KeyRecord) -> KeyInfo {
    KeyInfo {
        id: k.id.to_string(),
        name: k.name.clone(),
        prefix: k.prefix.clone(),
        project: k.project.clone(),
        created_at: k.created_at,
        revoked_at: k.revoked_at,
    }
}

/// A new key's name and project, trimmed and checked: the one rule for the API and the console.
pub fn key_fields<'a>(
    name: &'a str,
    project: Option<&'a str>,
) -> Result<(&'a str, Option<&'a str>), ApiError> {
    let name = name.trim();
    if name.is_empty() || name.len() > 200 {
        return Err(ApiError::new(
            ErrorCode::UnprocessableEntity,
            "name: must be 1 to 200 characters",
        ));
    }
    let project = project.map(str::trim);
    if project.is_some_and(|p| p.is_empty() || p.len() > 200) {
        return Err(ApiError::new(
            ErrorCode::UnprocessableEntity,
            "project: must be 1 to 200 characters",
        ));
    }
    Ok((name, project))
}

// `POST /v1/admin/keys`: 201 with the new key, shown this once.
#[utoipa::path(post, path = "/v1/admin/keys", operation_id = "create_key", tag = "admin", request_body = CreateKey,
    responses(
        (status = 201, description = "the key, shown once", body = KeyCreated),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "missing or invalid admin token", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 422, description = "invalid name", body = ErrorBody),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(body): JsonBody<CreateKey>,
) -> Result<impl IntoResponse, ApiError> {
    let (name, project) = key_fields(&body.name, body.project.as_deref())?;
    let (record, key) = state.service.create_key(name, project).await?;
    Ok((
        StatusCode::CREATED,
        Json(KeyCreated {
            info: info(&record),
            key,
        }),
    ))
}

// `GET /v1/admin/keys`: every key, newest first, without secrets.
#[utoipa::path(get, path = "/v1/admin/keys", operation_id = "list_keys", tag = "admin",
    responses(
        (status = 200, description = "every key, without secrets", body = KeyList),
        (status = 401, description = "missing or invalid admin token", body = ErrorBody),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(State(state): State<AppState>, _: AdminAuth) -> Result<Json<KeyList>, ApiError> {
    let keys = state.service.list_keys().await?;
    Ok(Json(KeyList {
        keys: keys.iter().map(info).collect(),
    }))
}

// `DELETE /v1/admin/keys/{id}`: revokes the key (again is fine).
#[utoipa::path(delete, path = "/v1/admin/keys/{id}", operation_id = "revoke_key", tag = "admin", params(("id" = String, Path)),
    responses(
        (status = 200, description = "revoked", body = KeyInfo),
        (status = 401, description = "missing or invalid admin token", body = ErrorBody),
        (status = 404, description = "no such key", body = ErrorBody),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn revoke(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<Json<KeyInfo>, ApiError> {
    let record = state.service.revoke_key(&id).await?;
    Ok(Json(info(&record)))
}
