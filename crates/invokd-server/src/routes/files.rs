//! Output files, served without the bearer token to whoever holds a valid signed URL.

use axum::{
    extract::{Path, Query, State},
    http::header,
    response::IntoResponse,
};
use chrono::Utc;
use invokd_api::ErrorCode;
use invokd_core::blob::{content_type_for, validate_key};
use serde::Deserialize;

use crate::{error::ApiError, state::AppState};

#[derive(Deserialize)]
pub struct Signature {
    expires: Option<i64>,
    sig: Option<String>,
}

/// `GET /files/{key}?expires=&sig=`.
pub async fn get(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<Signature>,
) -> Result<impl IntoResponse, ApiError> {
    let (Some(expires), Some(sig)) = (q.expires, q.sig) else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this file URL is not signed",
        ));
    };
    if !state
        .signer
        .verify(&key, expires, &sig, Utc::now().timestamp())
    {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this file URL is expired or its signature is invalid; fetch the request again for a fresh URL",
        ));
    }
    let not_found = || ApiError::new(ErrorCode::NotFound, "file not found");
    validate_key(&key).map_err(|_| not_found())?;
    let bytes = state.blobs.get(&key).await?.ok_or_else(not_found)?;
    let cache = format!(
        "private, max-age={}",
        (expires - Utc::now().timestamp()).max(0)
    );
    Ok((
        [
            (header::CONTENT_TYPE, content_type_for(&key).to_owned()),
            (header::CACHE_CONTROL, cache),
        ],
        bytes,
    ))
}
