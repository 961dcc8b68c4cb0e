//! API errors: one code from the error-code table, a message, and the one status mapping.
//!
//! Handlers return `ApiError`; its response carries the error in an extension, and the request
//! context middleware renders the body, because only it knows the request id.

use axum::{
    http::StatusCode,
    response::{IntoResponse, Response},
};
use invokd_api::ErrorCode;
use invokd_core::{
    blob::BlobError, catalog::Violation, service::ServiceError, store::StoreError,
    workers::WorkerError,
};

/// An error as the API shows it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ApiError {
    pub code: ErrorCode,
    pub message: String,
    /// The broken rules of an invalid input, for surfaces that list them (fal's 422).
    pub violations: Vec<Violation>,
}

impl ApiError {
    pub fn new(code: ErrorCode, message: impl Into<String>) -> Self {
        Self {
            code,
            message: message.into(),
            violations: Vec::new(),
        }
    }

    pub fn status(&self) -> StatusCode {
        status_of(self.code)
    }
}

/// The one mapping from error code to HTTP status.
pub fn status_of(code: ErrorCode) -> StatusCode {
    match code {
        ErrorCode::BadRequest => StatusCode::BAD_REQUEST,
        ErrorCode::Unauthorized => StatusCode::UNAUTHORIZED,
        ErrorCode::Forbidden => StatusCode::FORBIDDEN,
        ErrorCode::NotFound => StatusCode::NOT_FOUND,
        ErrorCode::MethodNotAllowed => StatusCode::METHOD_NOT_ALLOWED,
        ErrorCode::RequestTimeout => StatusCode::REQUEST_TIMEOUT,
        ErrorCode::Conflict | ErrorCode::LeaseLost => StatusCode::CONFLICT,
        ErrorCode::PayloadTooLarge => StatusCode::PAYLOAD_TOO_LARGE,
        ErrorCode::UnsupportedMediaType => StatusCode::UNSUPPORTED_MEDIA_TYPE,
        ErrorCode::UnprocessableEntity => StatusCode::UNPROCESSABLE_ENTITY,
        ErrorCode::TooManyRequests => StatusCode::TOO_MANY_REQUESTS,
        ErrorCode::ServiceUnavailable => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::INTERNAL_SERVER_ERROR,
    }
}

/// The code of an error answered with `status` by something other than our handlers (the
/// framework's own rejections), read back from the one mapping: a status no code has falls to
/// its class's code.
pub fn code_for_status(status: StatusCode) -> ErrorCode {
    ErrorCode::ALL
        .into_iter()
        .find(|c| status_of(*c) == status)
        .unwrap_or(if status.is_server_error() {
            ErrorCode::ServerError
        } else {
            ErrorCode::BadRequest
        })
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        let mut res = self.status().into_response();
        res.extensions_mut().insert(self);
        res
    }
}

/// `input.a.b: message` for each violation, joined.
pub fn describe_violations(prefix: &str, violations: &[Violation]) -> String {
    violations
        .iter()
        .map(|v| {
            let path = v.dotted_path();
            let sep = if path.is_empty() || path.starts_with('[') {
                ""
            } else {
                "."
            };
            format!("{prefix}{sep}{path}: {}", v.message)
        })
        .collect::<Vec<_>>()
        .join("; ")
}

impl From<ServiceError> for ApiError {
    fn from(e: ServiceError) -> Self {
        match e {
            ServiceError::Unauthorized => Self::new(
                ErrorCode::Unauthorized,
                "missing or invalid access key: send Authorization: Bearer <key>",
            ),
            ServiceError::UnknownModel(m) => Self::new(
                ErrorCode::NotFound,
                format!("model {m:?} is not in the catalog (GET /v1/models lists the models)"),
            ),
            ServiceError::InvalidInput(v) => Self {
                code: ErrorCode::UnprocessableEntity,
                message: describe_violations("input", &v),
                violations: v,
            },
            ServiceError::NotFound(id) => {
                Self::new(ErrorCode::NotFound, format!("request {id:?} not found"))
            }
            ServiceError::IdempotencyKeyReused(k) => Self::new(
                ErrorCode::UnprocessableEntity,
                format!(
                    "Idempotency-Key {k:?} was already used with a different request body; use a new key for a new request"
                ),
            ),
            ServiceError::InvalidCursor => Self::new(
                ErrorCode::BadRequest,
                "cursor is invalid: pass the next_cursor of the previous page unchanged",
            ),
            ServiceError::QueueFull(why) => Self::new(ErrorCode::TooManyRequests, why),
            ServiceError::InvalidTags(why) => Self::new(ErrorCode::UnprocessableEntity, why),
            ServiceError::Store(e) => e.into(),
            _ => Self::new(ErrorCode::ServerError, "internal error"),
        }
    }
}

impl From<WorkerError> for ApiError {
    fn from(e: WorkerError) -> Self {
        let code = match &e {
            WorkerError::Unauthorized => ErrorCode::Unauthorized,
            WorkerError::Forbidden(_) => ErrorCode::Forbidden,
            WorkerError::NotFound(_) => ErrorCode::NotFound,
            WorkerError::LeaseLost(_) => ErrorCode::LeaseLost,
            WorkerError::BadRequest(_) => ErrorCode::BadRequest,
            WorkerError::Invalid(_) | WorkerError::Output(_) => ErrorCode::UnprocessableEntity,
            WorkerError::Store(_) | WorkerError::Blob(_) => {
                return match e {
                    WorkerError::Store(e) => e.into(),
                    WorkerError::Blob(e) => e.into(),
                    _ => Self::new(ErrorCode::ServerError, "internal error"),
                };
            }
        };
        let message = match &e {
            WorkerError::Unauthorized => {
                "missing, unknown or revoked worker token: send Authorization: Bearer <worker token>"
                    .to_owned()
            }
            other => other.to_string(),
        };
        Self::new(code, message)
    }
}

impl From<StoreError> for ApiError {
    fn from(e: StoreError) -> Self {
        tracing::error!(error = %e, "store error");
        match e {
            StoreError::Unavailable(_) => Self::new(
                ErrorCode::ServiceUnavailable,
                "the store is unavailable, try again",
            ),
            _ => Self::new(ErrorCode::ServerError, "internal error"),
        }
    }
}

impl From<BlobError> for ApiError {
    fn from(e: BlobError) -> Self {
        tracing::error!(error = %e, "blob storage error");
        Self::new(
            ErrorCode::ServiceUnavailable,
            "file storage is unavailable, try again",
        )
    }
}
