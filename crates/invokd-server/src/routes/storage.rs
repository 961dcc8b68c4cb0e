//! fal's storage upload protocol, backed by invokd's blob store, so that `fal_client.upload*`
//! and `fal.storage.upload` (and the clients' automatic upload of files in inputs) work.
//!
//! - Python: `POST /storage/auth/token` gives an upload token, then `POST /files/upload` with the
//!   raw bytes answers `{access_url}`.
//! - JS: `POST /storage/upload/initiate` gives `{upload_url, file_url}`, then a plain `PUT` of
//!   the bytes to `upload_url`, which carries its own signature (no key, no proxy).

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use chrono::{Duration, Utc};
use invokd_api::ErrorCode;
use invokd_core::{blob::validate_key, service::Caller};
use serde::Deserialize;
use serde_json::json;

use crate::{
    error::ApiError,
    extract::{Auth, BaseUrl},
    present::{UrlRenderer, expiry},
    state::AppState,
};

/// Upload URLs are signed for this purpose only, so a download signature cannot upload.
fn upload_claim(key: &str) -> String {
    format!("upload\n{key}")
}

/// A file name safe to be the last part of a blob key.
fn safe_name(name: Option<&str>, content_type: &str) -> String {
    let cleaned: String = name
        .unwrap_or_default()
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '-' | '_') {
                c
            } else {
                '_'
            }
        })
        .collect();
    let cleaned = cleaned
        .trim_matches('.')
        .chars()
        .take(100)
        .collect::<String>();
    if !cleaned.is_empty() && cleaned.contains('.') {
        return cleaned;
    }
    let ext = match content_type.split(';').next().unwrap_or_default().trim() {
        "image/png" => "png",
        "image/jpeg" => "jpg",
        "image/webp" => "webp",
        "audio/wav" | "audio/x-wav" => "wav",
        "audio/mpeg" => "mp3",
        "application/json" => "json",
        "text/plain" => "txt",
        _ => "bin",
    };
    let stem = if cleaned.is_empty() {
        "upload"
    } else {
        &cleaned
    };
    format!("{stem}.{ext}")
}

fn new_key(caller: Caller, name: &str) -> Result<String, ApiError> {
    let key = format!("uploads/{}/{}/{name}", caller.key_id, uuid::Uuid::now_v7());
    validate_key(&key).map_err(|_| ApiError::new(ErrorCode::BadRequest, "invalid file name"))?;
    Ok(key)
}

/// `POST /storage/auth/token?storage_type=fal-cdn-v3`: Python's upload token. The token is the
/// caller's own key, which the upload then checks like any other request.
pub async fn token(
    Auth(_caller): Auth,
    base: BaseUrl,
    headers: HeaderMap,
) -> Result<impl IntoResponse, ApiError> {
    let (token_type, token) = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.trim().split_once(' '))
        .map(|(t, k)| (t.to_owned(), k.trim().to_owned()))
        .unwrap_or_default();
    let expires_at = Utc::now() + Duration::hours(1);
    Ok(Json(json!({
        "token": token,
        "token_type": token_type,
        "base_url": base.0,
        "expires_at": expires_at.to_rfc3339(),
    })))
}

/// `POST /files/upload`: the raw bytes, named by `X-Fal-File-Name`; answers `{access_url}`.
pub async fn upload_direct(
    State(state): State<AppState>,
    Auth(caller): Auth,
    base: BaseUrl,
    headers: HeaderMap,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("application/octet-stream");
    let name = headers.get("x-fal-file-name").and_then(|v| v.to_str().ok());
    let key = new_key(caller, &safe_name(name, content_type))?;
    state.blobs.put(&key, body).await?;
    let url = UrlRenderer::new(&state, &base.0).file_url(&key);
    Ok(Json(json!({"access_url": url})))
}

#[derive(Debug, Deserialize)]
pub struct InitiateBody {
    #[serde(default)]
    content_type: Option<String>,
    #[serde(default)]
    file_name: Option<String>,
}

/// `POST /storage/upload/initiate`: a signed URL to `PUT` the bytes to, and the file's URL.
pub async fn initiate(
    State(state): State<AppState>,
    Auth(caller): Auth,
    base: BaseUrl,
    crate::extract::JsonBody(body): crate::extract::JsonBody<InitiateBody>,
) -> Result<impl IntoResponse, ApiError> {
    let content_type = body
        .content_type
        .as_deref()
        .unwrap_or("application/octet-stream");
    let key = new_key(caller, &safe_name(body.file_name.as_deref(), content_type))?;
    let expires = expiry(state.config.file_url_ttl);
    let sig = state.signer.sign(&upload_claim(&key), expires);
    let upload_url = format!("{}/files/upload/{key}?expires={expires}&sig={sig}", base.0);
    let file_url = UrlRenderer::new(&state, &base.0).file_url(&key);
    Ok(Json(
        json!({"upload_url": upload_url, "file_url": file_url}),
    ))
}

/// `PUT /files/upload/{key}?expires=&sig=`: the bytes of an initiated upload, once.
pub async fn put_signed(
    State(state): State<AppState>,
    Path(key): Path<String>,
    Query(q): Query<crate::routes::files::Signature>,
    body: Bytes,
) -> Result<impl IntoResponse, ApiError> {
    let Some((expires, sig)) = q.parts() else {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this upload URL is not signed",
        ));
    };
    if !state
        .signer
        .verify(&upload_claim(&key), expires, sig, Utc::now().timestamp())
    {
        return Err(ApiError::new(
            ErrorCode::Unauthorized,
            "this upload URL is expired or its signature is invalid",
        ));
    }
    validate_key(&key).map_err(|_| ApiError::new(ErrorCode::NotFound, "no such upload"))?;
    // Once: the file URL handed out with this upload URL must keep naming the same bytes.
    if state.blobs.get(&key).await?.is_some() {
        return Err(ApiError::new(
            ErrorCode::Conflict,
            "this upload URL was already used; initiate a new upload",
        ));
    }
    state.blobs.put(&key, body).await?;
    Ok(StatusCode::OK)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn file_names_are_made_safe_and_get_an_extension() {
        assert_eq!(
            safe_name(Some("cat photo.png"), "image/png"),
            "cat_photo.png"
        );
        assert_eq!(
            safe_name(Some("../../etc/passwd"), "text/plain"),
            "_.._etc_passwd"
        );
        assert_eq!(safe_name(None, "image/jpeg"), "upload.jpg");
        assert_eq!(safe_name(Some("blob"), "audio/wav"), "blob.wav");
    }
}
