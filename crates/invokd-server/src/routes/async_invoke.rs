//! DigitalOcean's async-invoke surface: create, get, status.

use axum::{
    Json,
    extract::{Path, State},
    http::StatusCode,
    response::IntoResponse,
};
use invokd_api::{ErrorCode, async_invoke::CreateInvocation};
use invokd_core::service::{PRIORITY_NORMAL, Submission};

use crate::{
    error::ApiError,
    extract::{Auth, BaseUrl, JsonBody},
    present::{UrlRenderer, async_invoke::invocation},
    state::AppState,
};

/// `POST /v1/async-invoke`: validate, store (committed), answer 202 with the QUEUED invocation.
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    base: BaseUrl,
    JsonBody(body): JsonBody<CreateInvocation>,
) -> Result<impl IntoResponse, ApiError> {
    if body.model_id.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::UnprocessableEntity,
            "model_id: must not be empty",
        ));
    }
    let tags = body
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.value))
        .collect();
    let job = state
        .service
        .submit(
            caller,
            Submission {
                model_id: body.model_id,
                input: body.input,
                tags,
                priority: PRIORITY_NORMAL,
                start_within: None,
            },
        )
        .await?;
    Ok((
        StatusCode::ACCEPTED,
        Json(invocation(&job, &UrlRenderer::new(&state, &base.0))),
    ))
}

/// `GET /v1/async-invoke/{request_id}` and `.../status`: the invocation object.
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    base: BaseUrl,
    Path(request_id): Path<String>,
) -> Result<impl IntoResponse, ApiError> {
    let job = state.service.get(caller, &request_id).await?;
    Ok(Json(invocation(&job, &UrlRenderer::new(&state, &base.0))))
}
