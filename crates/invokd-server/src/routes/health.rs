//! Health: `/healthz` says the process answers; `/readyz` says the store and blob storage do.

use axum::{Json, extract::State, http::StatusCode, response::IntoResponse};
use serde_json::json;

use crate::state::AppState;

#[utoipa::path(get, path = "/healthz", tag = "operations",
    responses((status = 200, description = "the process answers", body = Object)))]
pub async fn healthz() -> impl IntoResponse {
    Json(json!({"status": "ok"}))
}

#[utoipa::path(get, path = "/readyz", tag = "operations",
    responses((status = 200, description = "store and files reachable", body = Object),
              (status = 503, description = "a dependency is down", body = Object)))]
pub async fn readyz(State(state): State<AppState>) -> impl IntoResponse {
    let store = state.service.check_store().await;
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

// `GET /.well-known/jwks.json`: the public keys that verify invokd's webhook signatures.
#[utoipa::path(get, path = "/.well-known/jwks.json", tag = "operations",
    responses((status = 200, description = "the webhook signing keys (OKP/Ed25519)", body = Object)))]
pub async fn jwks(State(state): State<AppState>) -> impl IntoResponse {
    (
        [(axum::http::header::CACHE_CONTROL, "public, max-age=3600")],
        Json(state.webhook_signer.jwks()),
    )
}
