//! Per-request context: the request id (from `x-request-id` or new), echoed on every response,
//! and the rendering of `ApiError`s in the shape of the surface the request came in on:
//! DigitalOcean's `{id, message, request_id}`, or fal's `{"detail": ...}`.

use axum::{
    extract::Request,
    http::{HeaderValue, header},
    middleware::Next,
    response::{IntoResponse, Response},
};
use invokd_api::{
    error_code::ErrorBody,
    fal_queue::{Detail, ErrorDetail, ValidationDetail},
};
use invokd_core::catalog::{PathItem, Violation, ViolationKind};
use serde_json::Value;

use crate::{
    error::ApiError,
    router::{Surface, surface_of},
};

pub const REQUEST_ID: &str = "x-request-id";
/// fal's clients read the request id from this header, on results and on errors.
pub const FAL_REQUEST_ID: &str = "x-fal-request-id";

fn acceptable(id: &str) -> bool {
    !id.is_empty() && id.len() <= 128 && id.bytes().all(|b| b.is_ascii_graphic())
}

/// Filled by the `Auth` extractor: the key's id, so the request's log line can name the key
/// (never the key itself), and where the key stands with its rate limit.
#[derive(Debug, Clone, Default)]
pub struct KeySlot(
    pub  std::sync::Arc<
        std::sync::OnceLock<(invokd_core::KeyId, Option<crate::rate_limit::RateInfo>)>,
    >,
);

pub async fn request_context(mut req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let route = req
        .extensions()
        .get::<axum::extract::MatchedPath>()
        .map_or_else(|| "unmatched".to_owned(), |p| p.as_str().to_owned());
    let key_slot = KeySlot::default();
    req.extensions_mut().insert(key_slot.clone());
    let id = req
        .headers()
        .get(REQUEST_ID)
        .and_then(|v| v.to_str().ok())
        .filter(|v| acceptable(v))
        .map(str::to_owned)
        .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
    let method = req.method().clone();
    let path = req.uri().path().to_owned();
    let surface = surface_of(&path);

    let mut res = framework_rejection(next.run(req).await).await;
    if let Some(err) = res.extensions_mut().remove::<ApiError>() {
        if err.status().is_server_error() {
            tracing::error!(request_id = %id, %method, %path, code = err.code.id(), message = %err.message, "request failed");
        }
        let status = res.status();
        let mut rendered = match surface {
            Surface::AsyncInvoke => (status, axum::Json(do_body(err, &id))).into_response(),
            Surface::FalQueue => (status, axum::Json(fal_body(err))).into_response(),
        };
        for (k, v) in res.headers() {
            if k != header::CONTENT_TYPE && k != header::CONTENT_LENGTH {
                rendered.headers_mut().insert(k.clone(), v.clone());
            }
        }
        res = rendered;
    }
    let status = res.status().as_u16();
    let seconds = started.elapsed().as_secs_f64();
    crate::metrics::http_request(&route, method.as_str(), status, seconds);
    let key_id = key_slot.0.get().map(|(k, _)| k.to_string());
    if let Some((_, Some(rate))) = key_slot.0.get() {
        let h = res.headers_mut();
        for (name, value) in [
            ("ratelimit-limit", i64::from(rate.limit)),
            ("ratelimit-remaining", i64::from(rate.remaining)),
            ("ratelimit-reset", rate.reset),
        ] {
            h.insert(name, HeaderValue::from(value));
        }
        let policy = format!(
            "{};w={};name=\"{}\"",
            rate.limit,
            rate.window,
            rate.policy.name()
        );
        if let Ok(v) = HeaderValue::from_str(&policy) {
            h.insert("ratelimit-policy", v);
        }
        if let Some(wait) = rate.retry_after {
            h.insert(
                header::RETRY_AFTER,
                HeaderValue::from(wait.as_secs().max(1)),
            );
        }
    }
    tracing::info!(
        target: "invokd::http",
        request_id = %id,
        key_id = key_id.as_deref().unwrap_or("-"),
        %method,
        route = %route,
        status,
        latency_ms = (seconds * 1000.0 * 1000.0).round() / 1000.0,
        "request"
    );
    if let Ok(v) = HeaderValue::from_str(&id) {
        if surface == Surface::FalQueue && !res.headers().contains_key(FAL_REQUEST_ID) {
            res.headers_mut().insert(FAL_REQUEST_ID, v.clone());
        }
        res.headers_mut().insert(REQUEST_ID, v);
    }
    res
}

/// An error answered by the framework itself (a query string that does not deserialize, a body
/// over the limit), as plain text: made an `ApiError` of the one mapping, so that it is
/// rendered in the surface's shape like every other error. Its text becomes the message.
async fn framework_rejection(res: Response) -> Response {
    let is_json = res
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.contains("json"));
    if res.extensions().get::<ApiError>().is_some()
        || !(res.status().is_client_error() || res.status().is_server_error())
        || is_json
    {
        return res;
    }
    let (mut parts, body) = res.into_parts();
    let code = crate::error::code_for_status(parts.status);
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let message = match code {
        invokd_api::ErrorCode::PayloadTooLarge => {
            "the request body is larger than the server accepts".to_owned()
        }
        _ if text.is_empty() => parts
            .status
            .canonical_reason()
            .unwrap_or("error")
            .to_owned(),
        _ => text,
    };
    parts.extensions.insert(ApiError::new(code, message));
    Response::from_parts(parts, axum::body::Body::empty())
}

fn do_body(err: ApiError, request_id: &str) -> ErrorBody {
    ErrorBody {
        id: err.code.id().to_owned(),
        message: err.message,
        request_id: Some(request_id.to_owned()),
    }
}

/// fal's error body: a validation list when the input broke the schema, else the message.
fn fal_body(err: ApiError) -> ErrorDetail {
    let detail = if err.violations.is_empty() {
        Detail::Message(err.message)
    } else {
        Detail::Validation(err.violations.iter().map(validation_detail).collect())
    };
    ErrorDetail {
        detail,
        error_type: None,
    }
}

/// A violation as a pydantic-style entry; the body of a fal submit is the input itself.
fn validation_detail(v: &Violation) -> ValidationDetail {
    let mut loc = vec![Value::from("body")];
    loc.extend(v.path.iter().map(|p| match p {
        PathItem::Key(k) => Value::from(k.clone()),
        PathItem::Index(i) => Value::from(*i),
    }));
    let kind = match v.kind {
        ViolationKind::Missing => "missing",
        ViolationKind::Type => "type_error",
        ViolationKind::Enum => "enum",
        ViolationKind::Bound => "value_error.number",
        _ => "value_error",
    };
    ValidationDetail {
        loc,
        msg: v.message.clone(),
        kind: kind.into(),
    }
}
