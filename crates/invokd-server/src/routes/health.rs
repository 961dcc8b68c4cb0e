//! Health: `/healthz` says the process answers; `/readyz` says the store and blob storage do.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::state::AppState;

pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.service.store().check().await;
    let blobs = state.blobs.check().await;
    let ok = store.is_ok() && blobs.is_ok();
    let show = |r: Result<(), String>| match r {
        Ok(()) => json!("ok"),
        Err(e) => json!(e),
    };
    let body = json!({
        "status": if ok { "ok" } else { "unavailable" },
        "store": show(store.map_err(|e| e.to_string())),
        "blobs": show(blobs.map_err(|e| e.to_string())),
    });
    let code = if ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (code, Json(body))
}

/// `GET /.well-known/jwks.json`: the public keys that verify invokd's webhook signatures.
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=3600")],
        Json(state.webhook_signer.jwks()),
    )
}
