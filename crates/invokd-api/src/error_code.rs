//! The one table of error codes: every error invokd returns has one of these codes.
//!
//! The code's `id` is the stable snake_case string DigitalOcean's error body carries in `id`.
//! The HTTP status of each code is decided in one place, by the server.

use serde::{Deserialize, Serialize};

/// What went wrong, as a client can branch on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum ErrorCode {
    /// The body is not JSON, or the request is malformed in a way no field names.
    BadRequest,
    /// No key, or a key that is unknown or revoked.
    Unauthorized,
    /// The key is valid but may not do this (a worker token and another model's job).
    Forbidden,
    /// The route, model, request id or file does not exist (or is not the caller's).
    NotFound,
    /// The method is not served on this route.
    MethodNotAllowed,
    /// The client took too long to send its request's body.
    RequestTimeout,
    /// The request conflicts with the resource's state (e.g. cancelling a finished job).
    Conflict,
    /// A worker's lease is no longer the job's: it was taken back, cancelled or ended.
    LeaseLost,
    /// The body is larger than the configured limit.
    PayloadTooLarge,
    /// The body is not `application/json`.
    UnsupportedMediaType,
    /// The body is JSON but a field has the wrong type, value or bound.
    UnprocessableEntity,
    /// A rate limit or queue cap was hit.
    TooManyRequests,
    /// A bug or an unexpected failure inside invokd.
    ServerError,
    /// invokd is starting, stopping, or a dependency is unreachable.
    ServiceUnavailable,
}

impl ErrorCode {
    /// Every code, in the table's order.
    pub const ALL: [Self; 12] = [
        Self::BadRequest,
        Self::Unauthorized,
        Self::NotFound,
        Self::MethodNotAllowed,
        Self::RequestTimeout,
        Self::Conflict,
        Self::PayloadTooLarge,
        Self::UnsupportedMediaType,
        Self::UnprocessableEntity,
        Self::TooManyRequests,
        Self::ServerError,
        Self::ServiceUnavailable,
    ];

    /// The stable string sent in the error body's `id`.
    pub fn id(self) -> &'static str {
        match self {
            Self::BadRequest => "bad_request",
            Self::Unauthorized => "unauthorized",
            Self::Forbidden => "forbidden",
            Self::NotFound => "not_found",
            Self::MethodNotAllowed => "method_not_allowed",
            Self::RequestTimeout => "request_timeout",
            Self::Conflict => "conflict",
            Self::LeaseLost => "lease_lost",
            Self::PayloadTooLarge => "payload_too_large",
            Self::UnsupportedMediaType => "unsupported_media_type",
            Self::UnprocessableEntity => "unprocessable_entity",
            Self::TooManyRequests => "too_many_requests",
            Self::ServerError => "server_error",
            Self::ServiceUnavailable => "service_unavailable",
        }
    }
}

/// DigitalOcean's error body: `{"id", "message", "request_id"}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorBody {
    pub id: String,
    pub message: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_matches_serde_name() {
        for code in ErrorCode::ALL {
            let json = serde_json::to_value(code).unwrap();
            assert_eq!(json, serde_json::Value::String(code.id().to_owned()));
        }
    }
}
