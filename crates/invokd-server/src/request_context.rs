//! Per-request context: the request id (from `x-request-id` or new), echoed on every response,
//! and the rendering of `ApiError`s into DigitalOcean's `{id, message, request_id}` body.

use axum::{
    extract::Request,
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use invokd_api::error_code::ErrorBody;

use crate::error::ApiError;

pub const REQUEST_ID: &str = "x-request-id";

fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

pub async fn request_context(req: Request, next: Next) -> Response {
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();

    let mut res = next.run(req).await;
    if let Some(err) = res.extensions_mut().remove::<ApiError>() {
        if err.status().is_server_error() {
            tracing::error!(request_id = %id, %method, %path, code = err.code.id(), message = %err.message, "request failed");
        }
        let body = ErrorBody {
            id: err.code.id().to_owned(),
            message: err.message,
            request_id: Some(id.clone()),
        };
        let status = res.status();
        let mut rendered = (status, axum::Json(body)).into_response();
        for (k, v) in res.headers() {
            if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
                rendered.headers_mut().insert(k.clone(), v.clone());
            }
        }
        res = rendered;
    }
    if let Ok(v) = HeaderValue::from_str(&id) {
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}
