//! `POST /v1/upstream/fal/webhook`: fal says a request ended. The signature is checked against
//! fal's keys and the run waiting on it is woken; the run then reads the result itself, so the
//! body is never trusted beyond the signature.

use axum::{Json, body::Bytes, extract::State, http::HeaderMap};
use invokd_api::ErrorCode;
use invokd_providers::fal::{WebhookError, WebhookHeaders};
use serde_json::{Value, json};

use crate::{error::ApiError, state::AppState};

fn header(h: &HeaderMap, name: &str) -> Option<String> {
    h.get(name)?.to_str().ok().map(str::to_owned)
}

pub async fn receive(
    State(state): State<AppState>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let Some(fal) = &state.fal else {
        return Err(ApiError::new(ErrorCode::NotFound, "fal is not configured"));
    };
    let h = WebhookHeaders {
        request_id: header(&headers, "x-fal-webhook-request-id"),
        user_id: header(&headers, "x-fal-webhook-user-id"),
        timestamp: header(&headers, "x-fal-webhook-timestamp"),
        signature: header(&headers, "x-fal-webhook-signature"),
    };
    match fal.webhook(&h, &body).await {
        Ok(woken) => Ok(Json(json!({"ok": true, "woken": woken}))),
        Err(WebhookError::Disabled) => Err(ApiError::new(
            ErrorCode::NotFound,
            WebhookError::Disabled.to_string(),
        )),
        Err(e @ WebhookError::Jwks(_)) => {
            tracing::warn!(error = %e, "fal webhook not checked");
            Err(ApiError::new(
                ErrorCode::ServiceUnavailable,
                "fal's keys cannot be fetched now; try again later",
            ))
        }
        Err(e) => {
            tracing::warn!(error = %e, "fal webhook refused");
            Err(ApiError::new(ErrorCode::Unauthorized, e.to_string()))
        }
    }
}
