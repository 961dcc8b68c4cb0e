//! The admin API of workers, with the admin token: worker tokens (shown once, stored hashed,
//! revoked at once) and the workers seen, with what they run and how their jobs ended.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use invokd_api::{
    error_code::ErrorBody,
    worker::{CreateWorkerToken, WorkerList, WorkerTokenList, WorkerTokenView, WorkerView},
};
use invokd_core::workers::{WorkerRecord, WorkerToken};

use crate::{
    error::ApiError,
    extract::{AdminAuth, JsonBody},
    state::AppState,
};

/// Workers not seen for this long are no longer listed.
pub const LISTED_WITHIN: Duration = Duration::from_secs(24 * 3600);

fn token_view(t: &WorkerToken, secret: Option<String>) -> WorkerTokenView {
    WorkerTokenView {
        id: t.id.to_string(),
        name: t.name.clone(),
        models: t.models.as_slice().to_vec(),
        prefix: t.prefix.clone(),
        created_at: t.created_at,
        revoked_at: t.revoked_at,
        token: secret,
    }
}

fn worker_view(w: WorkerRecord) -> WorkerView {
    let p = w.presence;
    WorkerView {
        id: p.id,
        name: p.name,
        token_id: p.token_id.to_string(),
        version: p.version,
        models: p.models,
        slots: p.slots,
        labels: p.labels,
        first_seen: w.first_seen,
        last_seen: w.last_seen,
        running: w.running,
        completed: w.completed,
        failed: w.failed,
    }
}

// `POST /v1/admin/worker-tokens`: 201 with the new token, shown this once.
#[utoipa::path(post, path = "/v1/admin/worker-tokens", operation_id = "create_worker_token", tag = "admin", request_body = CreateWorkerToken,
    responses(
        (status = 201, description = "the token, shown once", body = WorkerTokenView),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "missing or invalid admin token", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 422, description = "an invalid name or model pattern", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create_token(
    State(state): State<AppState>,
    _: AdminAuth,
    JsonBody(body): JsonBody<CreateWorkerToken>,
) -> Result<impl IntoResponse, ApiError> {
    let (token, secret) = state.workers.create_token(&body.name, &body.models).await?;
    Ok((StatusCode::CREATED, Json(token_view(&token, Some(secret)))))
}

// `GET /v1/admin/worker-tokens`: every worker token, newest first, without secrets.
#[utoipa::path(get, path = "/v1/admin/worker-tokens", operation_id = "list_worker_tokens", tag = "admin",
    responses(
        (status = 200, description = "every worker token, without secrets", body = WorkerTokenList),
        (status = 401, description = "missing or invalid admin token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list_tokens(
    State(state): State<AppState>,
    _: AdminAuth,
) -> Result<Json<WorkerTokenList>, ApiError> {
    let tokens = state.workers.list_tokens().await?;
    Ok(Json(WorkerTokenList {
        tokens: tokens.iter().map(|t| token_view(t, None)).collect(),
    }))
}

// `DELETE /v1/admin/worker-tokens/{id}`: revokes the token (again is fine).
#[utoipa::path(delete, path = "/v1/admin/worker-tokens/{id}", operation_id = "revoke_worker_token", tag = "admin", params(("id" = String, Path)),
    responses(
        (status = 204, description = "revoked"),
        (status = 401, description = "missing or invalid admin token", body = ErrorBody),
        (status = 404, description = "no such token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn revoke_token(
    State(state): State<AppState>,
    _: AdminAuth,
    Path(id): Path<String>,
) -> Result<StatusCode, ApiError> {
    state.workers.revoke_token(&id).await?;
    Ok(StatusCode::NO_CONTENT)
}

// `GET /v1/admin/workers`: the workers seen in the last day.
#[utoipa::path(get, path = "/v1/admin/workers", operation_id = "list_workers", tag = "admin",
    responses(
        (status = 200, description = "the workers seen in the last day, by name", body = WorkerList),
        (status = 401, description = "missing or invalid admin token", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list_workers(
    State(state): State<AppState>,
    _: AdminAuth,
) -> Result<Json<WorkerList>, ApiError> {
    let workers = state.workers.list_workers(LISTED_WITHIN).await?;
    Ok(Json(WorkerList {
        workers: workers.into_iter().map(worker_view).collect(),
    }))
}
