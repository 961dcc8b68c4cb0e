//! fal's server-proxy protocol: `@fal-ai/client` with `proxyUrl` sends every request to the
//! proxy with the real fal URL in `x-fal-target-url`. invokd is the proxy and the target: it
//! routes such a request as if it had come to the target's path, and keeps the target's host
//! beside it as a `FalTarget`, as the host tells fal's APIs apart: `queue.fal.run` queues, and
//! `fal.run` runs at once, so a request for it is routed under `fal_path::RUN_PREFIX`.

use axum::http::{Uri, uri::PathAndQuery};
use invokd_api::ErrorCode;

use crate::{error::ApiError, fal_path::RUN_PREFIX};

pub const TARGET_HEADER: &str = "x-fal-target-url";
/// Where the proxy is mounted: fal's docs use `/api/fal/proxy` (Next.js) and `/fal/proxy`.
pub const PROXY_PATHS: [&str; 2] = ["/fal/proxy", "/api/fal/proxy"];
/// fal's host of synchronous runs and streams (its queue is `queue.fal.run`).
pub const RUN_HOST: &str = "fal.run";

/// The fal URL a proxied request was meant for, in the request's extensions once it is routed
/// by that URL's path. Requests that came straight to invokd have none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FalTarget {
    /// The target's host, as the client named it (`queue.fal.run`, `fal.run`, `rest.alpha.fal.ai`).
    pub host: String,
}

/// The target and the path and query it names, if it is an https URL on one of fal's hosts.
fn target_of(target: &str) -> Option<(FalTarget, PathAndQuery)> {
    let uri: Uri = target.parse().ok()?;
    let host = uri.host()?;
    let fal_host = ["fal.run", "fal.ai", "fal.media"]
        .iter()
        .any(|h| host == *h || host.ends_with(&format!(".{h}")));
    if uri.scheme_str() != Some("https") || !fal_host {
        return None;
    }
    let host = host.to_ascii_lowercase();
    let path = uri.path_and_query()?;
    let path = if host == RUN_HOST {
        PathAndQuery::try_from(format!("{RUN_PREFIX}{path}")).ok()?
    } else {
        path.clone()
    };
    Some((FalTarget { host }, path))
}

/// Rewrites a proxied request to its target's path and records its `FalTarget`. Requests that
/// are not proxied, or whose target is unusable, pass unchanged; the latter then reach `refuse`.
pub fn rewrite<B>(mut req: axum::http::Request<B>) -> axum::http::Request<B> {
    if !PROXY_PATHS.contains(&req.uri().path()) {
        return req;
    }
    let Some((target, path)) = req
        .headers()
        .get(TARGET_HEADER)
        .and_then(|v| v.to_str().ok())
        .and_then(target_of)
    else {
        return req;
    };
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(path);
    if let Ok(uri) = Uri::from_parts(parts) {
        *req.uri_mut() = uri;
        req.extensions_mut().insert(target);
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

    fn target(url: &str) -> Option<FalTarget> {
        let req = Request::builder()
            .uri("/fal/proxy")
            .header(TARGET_HEADER, url)
            .body(Body::empty())
            .unwrap();
        rewrite(req).extensions().get::<FalTarget>().cloned()
    }

    #[test]
    fn the_target_host_is_kept_and_a_run_is_told_from_a_queue_submit() {
        let host = |url| target(url).map(|t| t.host);
        // A run and a stream go to the run prefix, a submit to the queue's path.
        assert_eq!(
            proxied("https://fal.run/fal-ai/flux/schnell"),
            "/run/fal-ai/flux/schnell"
        );
        assert_eq!(
            proxied("https://fal.run/fal-ai/hidream-i1-fast/stream?x=1"),
            "/run/fal-ai/hidream-i1-fast/stream?x=1"
        );
        assert_eq!(
            proxied("https://queue.fal.run/fal-ai/flux/schnell"),
            "/fal-ai/flux/schnell"
        );
        assert_eq!(
            host("https://fal.run/fal-ai/flux/schnell").as_deref(),
            Some("fal.run")
        );
        assert_eq!(
            host("https://queue.fal.run/fal-ai/flux/schnell").as_deref(),
            Some("queue.fal.run")
        );
        assert_eq!(
            host("https://REST.alpha.fal.ai/storage/upload/initiate").as_deref(),
            Some("rest.alpha.fal.ai")
        );
        assert_eq!(target("https://evil.example/fal-ai/flux"), None);
    }
}
