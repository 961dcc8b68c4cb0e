//! The one router: every route of every surface, and the layers around them.
//!
//! DigitalOcean's surface lives under `/v1/`, files under `/files/`, health at the root. fal's
//! queue paths (`/{owner}/{app}/...`) will join here; owners named `v1` or `files` are not served.

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{get, post},
};
use invokd_api::ErrorCode;

use crate::{error::ApiError, request_context::request_context, routes, state::AppState};

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

async fn method_not_allowed() -> ApiError {
    ApiError::new(
        ErrorCode::MethodNotAllowed,
        "this method is not allowed on this route",
    )
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/v1/async-invoke", post(routes::async_invoke::create))
        .route(
            "/v1/async-invoke/{request_id}",
            get(routes::async_invoke::get),
        )
        .route(
            "/v1/async-invoke/{request_id}/status",
            get(routes::async_invoke::get),
        )
        .route("/files/{*key}", get(routes::files::get))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}
