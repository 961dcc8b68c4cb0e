//! Our own extractors, so every rejection uses the API's error body: JSON bodies, paths, callers.

use axum::{
    body::Bytes,
    extract::{FromRequest, FromRequestParts, Request, rejection::BytesRejection},
    http::{header, request::Parts},
};
use invokd_api::ErrorCode;
use invokd_core::service::Caller;
pub use invokd_wire::json::{check_content_type, parse_json};
use serde::de::DeserializeOwned;

use crate::{error::ApiError, state::AppState};

/// A JSON body: 415 for another or no content type (or a charset other than UTF-8), 413 over the size limit, 400 when it is not JSON,
/// 422 when it is JSON of the wrong shape (naming the field).
pub struct JsonBody<T>(pub T);

impl<T: DeserializeOwned> FromRequest<AppState> for JsonBody<T> {
    type Rejection = ApiError;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        check_content_type(
            req.headers()
                .get(header::CONTENT_TYPE)
                .map(|v| v.as_bytes()),
        )?;
        let bytes = Bytes::from_request(req, state)
            .await
            .map_err(body_rejection)?;
        parse_json(&bytes).map(JsonBody)
    }
}

fn body_rejection(e: BytesRejection) -> ApiError {
    if e.status() == axum::http::StatusCode::PAYLOAD_TOO_LARGE {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            "the request body is larger than the server accepts",
        )
    } else {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("cannot read the request body: {e}"),
        )
    }
}

/// The authenticated caller: `Authorization: Bearer <key>` (or fal's `Key <key>`).
pub struct Auth(pub Caller);

impl FromRequestParts<AppState> for Auth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let secret = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| {
                let (scheme, rest) = v.trim().split_once(' ')?;
                (scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("key"))
                    .then(|| rest.trim())
            })
            .unwrap_or_default();
        let caller = state.service.authenticate(secret).await?;
        let limit = crate::router::rate_limit_of(&parts.method, parts.extensions.get());
        let rate = state.rate_limiter.check(caller.key_id, limit);
        if let Some(slot) = parts.extensions.get::<crate::request_context::KeySlot>() {
            let _ = slot.0.set((caller.key_id, rate));
        }
        if let Some(wait) = rate.and_then(|r| r.retry_after) {
            return Err(ApiError::new(
                ErrorCode::TooManyRequests,
                format!(
                    "rate limit exceeded for this key ({} limit); retry in {} s",
                    limit.name(),
                    wait.as_secs().max(1)
                ),
            ));
        }
        Ok(Self(caller))
    }
}

/// An admin request: `Authorization: Bearer <admin token>`.
pub struct AdminAuth;

impl FromRequestParts<AppState> for AdminAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let token = bearer(parts);
        // Compared as hashes: how long the comparison takes says nothing about the token.
        if !token.is_empty() && invokd_core::keys::KeyHash::of(token) == state.admin_token {
            Ok(Self)
        } else {
            Err(ApiError::new(
                ErrorCode::Unauthorized,
                "admin operations need the admin token: send Authorization: Bearer <admin token>",
            ))
        }
    }
}

/// The token of `Authorization: Bearer <token>`, or "".
fn bearer(parts: &Parts) -> &str {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .filter(|(scheme, _)| scheme.eq_ignore_ascii_case("bearer"))
        .map(|(_, t)| t.trim())
        .unwrap_or_default()
}

/// A worker's request: `Authorization: Bearer <worker token>`, not revoked.
pub struct WorkerAuth(pub invokd_core::workers::WorkerToken);

impl FromRequestParts<AppState> for WorkerAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        Ok(Self(state.workers.authenticate(bearer(parts)).await?))
    }
}

/// A RunPod worker's request: its worker token as the raw `Authorization` value (the `runpod`
/// SDK sends `RUNPOD_AI_API_KEY` so), or as a bearer token.
pub struct RunpodAuth(pub invokd_core::workers::WorkerToken);

impl FromRequestParts<AppState> for RunpodAuth {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        let raw = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .map(str::trim)
            .unwrap_or_default();
        let secret = match bearer(parts) {
            "" => raw,
            token => token,
        };
        Ok(Self(state.workers.authenticate(secret).await?))
    }
}

/// The base URL clients reach this server at: the configured public URL, else the `Host` header.
pub struct BaseUrl(pub String);

impl FromRequestParts<AppState> for BaseUrl {
    type Rejection = ApiError;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &AppState,
    ) -> Result<Self, Self::Rejection> {
        if let Some(url) = &state.config.public_url {
            return Ok(Self(url.trim_end_matches('/').to_owned()));
        }
        let host = parts
            .headers
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .filter(|h| !h.is_empty() && h.bytes().all(|b| b.is_ascii_graphic()))
            .map(str::to_owned)
            .unwrap_or_else(|| state.config.listen.to_string());
        let scheme = if state.config.tls.is_some() {
            "https"
        } else {
            "http"
        };
        Ok(Self(format!("{scheme}://{host}")))
    }
}

/// The `Idempotency-Key` header: up to 255 visible ASCII characters.
pub fn idempotency_key(headers: &axum::http::HeaderMap) -> Result<Option<String>, ApiError> {
    let Some(v) = headers.get("idempotency-key") else {
        return Ok(None);
    };
    let key = v.to_str().unwrap_or_default().trim();
    if key.is_empty() || key.len() > 255 || !key.bytes().all(|b| b.is_ascii_graphic()) {
        return Err(ApiError::new(
            ErrorCode::BadRequest,
            "Idempotency-Key must be 1 to 255 visible ASCII characters",
        ));
    }
    Ok(Some(key.to_owned()))
}

/// The longest `Prefer: wait=N` honoured, in seconds.
pub const MAX_WAIT_SECS: u64 = 60;

/// `Prefer: wait=N` (RFC 7240): how long the client is willing to wait for a terminal job.
/// Invalid preferences are ignored, as the RFC says; N is capped at 60.
pub fn prefer_wait(headers: &axum::http::HeaderMap) -> Option<u64> {
    headers
        .get_all("prefer")
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split([',', ';']))
        .filter_map(|p| p.trim().strip_prefix("wait="))
        .filter_map(|n| n.trim().parse::<u64>().ok())
        .next()
        .map(|n| n.min(MAX_WAIT_SECS))
}

/// A webhook URL a client gave in `field`: http(s), and not internal unless allowed.
pub async fn webhook_url(
    state: &AppState,
    field: &str,
    value: Option<String>,
) -> Result<Option<String>, ApiError> {
    let Some(v) = value else { return Ok(None) };
    crate::outbound::check_url(&v, state.config.fetch.allow_private)
        .await
        .map(|u| Some(u.to_string()))
        .map_err(|why| ApiError::new(ErrorCode::UnprocessableEntity, format!("{field}: {why}")))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(serde::Deserialize, Debug)]
    #[allow(dead_code)]
    struct Body {
        model_id: String,
        input: serde_json::Map<String, serde_json::Value>,
    }

    #[test]
    fn syntax_errors_are_400_and_shape_errors_422_naming_the_field() {
        let e = parse_json::<Body>(b"{\"model_id\": ").unwrap_err();
        assert_eq!(e.code, ErrorCode::BadRequest);
        let e = parse_json::<Body>(b"{\"input\": {}}").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnprocessableEntity);
        assert!(e.message.contains("model_id"), "{}", e.message);
        let e = parse_json::<Body>(b"{\"model_id\": 5, \"input\": {}}").unwrap_err();
        assert_eq!(e.code, ErrorCode::UnprocessableEntity);
        assert!(e.message.starts_with("model_id:"), "{}", e.message);
        let e = parse_json::<Body>(b"{\"model_id\": \"m\", \"input\": []}").unwrap_err();
        assert!(e.message.starts_with("input:"), "{}", e.message);
        assert_eq!(
            parse_json::<Body>(b"  ").unwrap_err().code,
            ErrorCode::BadRequest
        );
        assert_eq!(
            parse_json::<Body>(b"\xff\xfe").unwrap_err().code,
            ErrorCode::BadRequest
        );
    }

    #[test]
    fn prefer_wait_is_read_capped_and_ignored_when_invalid() {
        let mut h = axum::http::HeaderMap::new();
        assert_eq!(prefer_wait(&h), None);
        h.insert("prefer", "respond-async, wait=5".parse().unwrap());
        assert_eq!(prefer_wait(&h), Some(5));
        h.insert("prefer", "wait=999".parse().unwrap());
        assert_eq!(prefer_wait(&h), Some(60));
        h.insert("prefer", "wait=soon".parse().unwrap());
        assert_eq!(prefer_wait(&h), None);
    }
}
