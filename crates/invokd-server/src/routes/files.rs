//! Output files, served without the bearer token to whoever holds a valid signed URL.

use axum::{
    extract::{Path, Query, State},
    http::header,
    response::IntoResponse,
};
use chrono::Utc;
use invokd_api::ErrorCode;
use invokd_core::{
    Job, JobId,
    blob::{content_type_for, validate_key},
};
use serde::Deserialize;

use crate::{error::ApiError, state::AppState};

/// `?expires=&sig=`, read as text so that any malformed value is a clear 401, not a parse error.
#[derive(Deserialize)]
pub struct Signature {
    expires: Option<String>,
    sig: Option<String>,
}

impl Signature {
    /// The expiry and signature, if both are present and the expiry is a number.
    pub fn parts(&self) -> Option<(i64, &str)> {
        Some((self.expires.as_deref()?.parse().ok()?, self.sig.as_deref()?))
    }
}

/// What a client reads when retention removed a job's output.
pub fn expired_message(job: &Job) -> String {
    let when = job
        .expired_at
        .map(|t| t.to_rfc3339_opts(chrono::SecondsFormat::Secs, true))
        .unwrap_or_default();
    format!(
        "the output of request {} expired on {when}: outputs are kept for a limited time after the job ends",
        job.id
    )
}

/// The clear "expired" answer for a missing file of a job that retention expired.
async fn gone(state: &AppState, key: &str) -> Option<ApiError> {
    let id: JobId = key.split('/').next()?.parse().ok()?;
    let job = state.service.job_of_file(id).await.ok()??;
    job.expired_at?;
    Some(ApiError::new(ErrorCode::NotFound, expired_message(&job)))
}

/// `GET /files/{key}?expires=&sig=`.
pub async fn get(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<Signature>,
) -> Result<impl IntoResponse, ApiError> {
    let Some((expires, sig)) = q.parts() else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this file URL is not signed",
        ));
    };
    if !state
        .signer
        .verify(&key, expires, sig, Utc::now().timestamp())
    {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this file URL is expired or its signature is invalid; fetch the request again for a fresh URL",
        ));
    }
    let not_found = || ApiError::new(ErrorCode::NotFound, "file not found");
    validate_key(&key).map_err(|_| not_found())?;
    let Some(bytes) = state.blobs.get(&key).await? else {
        return Err(gone(&state, &key).await.unwrap_or_else(not_found));
    };
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
