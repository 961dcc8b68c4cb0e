//! fal's server-proxy protocol: `@fal-ai/client` with `proxyUrl` sends every request to the
//! proxy with the real fal URL in `x-fal-target-url`. invokd is the proxy and the target: it
//! routes such a request as if it had come to the target's path.

use axum::http::{Uri, uri::PathAndQuery};
use invokd_api::ErrorCode;

use crate::error::ApiError;

pub const TARGET_HEADER: &str = "x-fal-target-url";
/// Where the proxy is mounted: fal's docs use `/api/fal/proxy` (Next.js) and `/fal/proxy`.
pub const PROXY_PATHS: [&str; 2] = ["/fal/proxy", "/api/fal/proxy"];

/// The path and query a target URL names, if it is an https URL on one of fal's hosts.
fn target_path(target: &str) -> Option<PathAndQuery> {
    let uri: Uri = target.parse().ok()?;
    let host = uri.host()?;
    let fal_host = ["fal.run", "fal.ai", "fal.media"]
        .iter()
        .any(|h| host == *h || host.ends_with(&format!(".{h}")));
    (uri.scheme_str() == Some("https") && fal_host).then(|| uri.path_and_query().cloned())?
}

/// Rewrites a proxied request to its target's path. Requests that are not proxied, or whose
/// target is unusable, pass unchanged; the latter then reach `refuse`.
pub fn rewrite<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    if !PROXY_PATHS.contains(&req.uri().path()) {
        return req;
    }
    let Some(path) = req
        .headers()
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(target_path)
    else {
        return req;
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(path);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
    }
    req
}

/// A request to the proxy path that `rewrite` could not route.
pub async fn refuse() -> ApiError {
    ApiError::new(
        ErrorCode::BadRequest,
        format!("{TARGET_HEADER} must be an https URL on a fal host (queue.fal.run, rest.fal.ai)"),
    )
}

#[cfg(test)]
mod tests {
    use axum::{body::Body, extract::Request};

    use super::*;

    fn proxied(target: &str) -> String {
        let req = Request::builder()
            .uri("/api/fal/proxy")
            .header(TARGET_HEADER, target)
            .body(Body::empty())
            .unwrap();
        rewrite(req).uri().to_string()
    }

    #[test]
    fn fal_targets_are_routed_by_their_path_and_others_are_left() {
        assert_eq!(
            proxied("https://queue.fal.run/fal-ai/flux/requests/abc/status?logs=1"),
            "/fal-ai/flux/requests/abc/status?logs=1"
        );
        assert_eq!(
            proxied("https://rest.alpha.fal.ai/storage/upload/initiate"),
            "/storage/upload/initiate"
        );
        assert_eq!(
            proxied("https://evil.example/fal-ai/flux"),
            "/api/fal/proxy"
        );
        assert_eq!(
            proxied("http://queue.fal.run/fal-ai/flux"),
            "/api/fal/proxy"
        );
        assert_eq!(proxied("https://notfal.run/x"), "/api/fal/proxy");
    }
}
