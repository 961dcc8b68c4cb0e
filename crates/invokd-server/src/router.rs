//! The one router: every route of every surface, and the layers around them.
//!
//! DigitalOcean's surface lives under `/v1/`, files under `/files/`, health at the root; fal's
//! queue surface takes every other path (`/{owner}/{app}/...`). Static routes win over fal's
//! captures, and owners named like the other surfaces' prefixes are not served as fal apps.

use axum::{
    Router,
    extract::DefaultBodyLimit,
    middleware,
    routing::{any, delete, get, post, put},
};
use invokd_api::ErrorCode;

use crate::{
    error::ApiError, fal_proxy, request_context::request_context, routes, state::AppState,
};

/// Which surface a request is on, which decides the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    AsyncInvoke,
    FalQueue,
}

/// First path segments that belong to invokd's own routes, never to a fal app.
pub const RESERVED_OWNERS: [&str; 5] = ["v1", "files", "healthz", "readyz", ".well-known"];

pub fn surface_of(path: &str) -> Surface {
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    if RESERVED_OWNERS.contains(&first) {
        Surface::AsyncInvoke
    } else {
        Surface::FalQueue
    }
}

/// Where fal's webhooks for invokd's upstream requests arrive (signed by fal, no access key).
pub const FAL_WEBHOOK_PATH: &str = "/v1/upstream/fal/webhook";

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
    let upload_limit = DefaultBodyLimit::max(state.config.max_upload_bytes);
    Router::new()
        .route("/healthz", get(routes::health::healthz))
        .route("/readyz", get(routes::health::readyz))
        .route("/metrics", get(crate::metrics::render))
        .route("/openapi.json", get(crate::openapi::serve_spec))
        .route("/docs", get(crate::openapi::docs))
        .route("/.well-known/jwks.json", get(routes::health::jwks))
        .route(
            "/v1/async-invoke",
            post(routes::async_invoke::create).get(routes::async_invoke::list),
        )
        .route(
            "/v1/async-invoke/{request_id}/cancel",
            post(routes::async_invoke::cancel),
        )
        .route(
            "/v1/async-invoke/{request_id}/events",
            get(routes::async_invoke::events),
        )
        .route(
            "/v1/async-invoke/{request_id}",
            get(routes::async_invoke::get),
        )
        .route(
            "/v1/async-invoke/{request_id}/status",
            get(routes::async_invoke::get),
        )
        .route("/v1/models", get(routes::models::list))
        .route(FAL_WEBHOOK_PATH, post(routes::fal_webhook::receive))
        .route(
            "/v1/admin/keys",
            post(routes::admin::create).get(routes::admin::list),
        )
        .route("/v1/admin/keys/{id}", delete(routes::admin::revoke))
        .route(fal_proxy::PROXY_PATHS[0], any(fal_proxy::refuse))
        .route(fal_proxy::PROXY_PATHS[1], any(fal_proxy::refuse))
        .route("/files/{*key}", get(routes::files::get))
        .route("/storage/auth/token", post(routes::storage::token))
        .route("/storage/upload/initiate", post(routes::storage::initiate))
        .route(
            "/files/upload",
            post(routes::storage::upload_direct).layer(upload_limit),
        )
        .route(
            "/files/upload/{*key}",
            put(routes::storage::put_signed).layer(upload_limit),
        )
        // Nothing but submits lives at an app's root; a read there is a wrong address.
        .route(
            "/{owner}/{app}",
            post(routes::fal_queue::submit_app).get(not_found),
        )
        .route(
            "/{owner}/{app}/{*rest}",
            post(routes::fal_queue::submit_sub)
                .get(routes::fal_queue::read)
                .put(routes::fal_queue::cancel),
        )
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}
