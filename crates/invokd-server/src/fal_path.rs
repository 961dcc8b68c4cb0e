//! Where a fal model's path ends. fal's model ids have two or more segments
//! (`fal-ai/flux/schnell`) and a request's actions follow them (`.../requests/{id}/status`,
//! `.../stream`), which no route pattern can split. So before routing, the sub-path of a model
//! (after `{owner}/{app}`) that an action follows is folded into the app segment, its slashes
//! written `%2F` (`/fal-ai/flux%2Fschnell/requests/{id}/status`): each action then has one route
//! in `router.rs`, and the `{app}` capture, decoded, is the rest of the model id.
//!
//! The split is the one fal's clients rely on: the first `requests` segment after the app starts
//! a request's path (trailing slashes there are dropped); a POST whose last segment is `stream`
//! is fal's streaming endpoint. Paths of invokd's own surfaces (`RESERVED_OWNERS`) are left.
//!
//! A `%2F` a client sent itself is kept as text (`%252F`), never read as a slash: a model id
//! has no encoded slashes, so `/fal-ai/flux%2Fschnell` is no route to `fal-ai/flux/schnell`.
//!
//! Under `RUN_PREFIX` (fal's *run* host, `fal.run`, on invokd's port) the same split applies to
//! the rest of the path.

use axum::http::{Method, Request, Uri, uri::PathAndQuery};

use crate::router::RESERVED_OWNERS;

/// How a slash inside one path segment is written.
const SLASH: &str = "%2F";

/// Where fal's *run* host is served on invokd's one port: `POST /run/{model}` runs the model and
/// answers with its output, `POST /run/{model}/stream` streams it, where `POST /{model}` queues.
/// fal's Python client names it in `FAL_RUN_HOST` (`127.0.0.1:8080/run`); requests through fal's
/// proxy to `fal.run` are routed here (`fal_proxy`).
pub const RUN_PREFIX: &str = "/run";

/// The path with a client's own encoded slashes kept as text and a model's sub-path folded into
/// its app segment, if either changes it.
fn folded(method: &Method, path: &str) -> Option<String> {
    if let Some(rest) = path.strip_prefix(RUN_PREFIX).filter(|r| r.starts_with('/')) {
        return folded(method, rest).map(|p| format!("{RUN_PREFIX}{p}"));
    }
    let kept = own_slashes_kept(path);
    fold_sub_path(method, kept.as_deref().unwrap_or(path)).or(kept)
}

/// A fal path with each `%2F` (in either case) written `%252F`, if it has any.
fn own_slashes_kept(path: &str) -> Option<String> {
    let owner = path.trim_start_matches('/').split('/').next()?;
    let lower = path.to_ascii_lowercase();
    if RESERVED_OWNERS.contains(&owner) || !lower.contains("%2f") {
        return None;
    }
    let mut out = String::with_capacity(path.len() + 8);
    let mut rest = path;
    while let Some(at) = rest.to_ascii_lowercase().find("%2f") {
        out.push_str(&rest[..at]);
        out.push_str("%25");
        out.push_str(&rest[at + 1..at + 3]);
        rest = &rest[at + 3..];
    }
    out.push_str(rest);
    Some(out)
}

/// The path with a model's sub-path folded into its app segment, if it needs folding.
fn fold_sub_path(method: &Method, path: &str) -> Option<String> {
    let mut parts = path.strip_prefix('/')?.splitn(3, '/');
    let (owner, app, rest) = (parts.next()?, parts.next()?, parts.next()?);
    if owner.is_empty() || app.is_empty() || RESERVED_OWNERS.contains(&owner) {
        return None;
    }
    let trimmed = rest.trim_end_matches('/');
    let (sub, action) = if trimmed.starts_with("requests/") {
        (None, trimmed)
    } else if let Some(at) = trimmed.find("/requests/") {
        (Some(&trimmed[..at]), &trimmed[at + 1..])
    } else if method == Method::POST {
        (Some(rest.strip_suffix("/stream")?), "stream")
    } else {
        return None;
    };
    match sub {
        // The app-only form, as fal's clients build it, is left as it came (the common case).
        None if action.len() == rest.len() => None,
        None => Some(format!("/{owner}/{app}/{action}")),
        Some(sub) => Some(format!(
            "/{owner}/{app}{SLASH}{}/{action}",
            sub.replace('/', SLASH)
        )),
    }
}

/// Folds the model's sub-path of a fal request, leaving the query as it was.
pub fn fold<B>(mut req: Request<B>) -> Request<B> {
    let Some(path) = folded(req.method(), req.uri().path()) else {
        return req;
    };
    let with_query = match req.uri().query() {
        Some(q) => format!("{path}?{q}"),
        None => path,
    };
    let mut parts = req.uri().clone().into_parts();
    if let Ok(pq) = PathAndQuery::try_from(with_query) {
        parts.path_and_query = Some(pq);
        if let Ok(uri) = Uri::from_parts(parts) {
            *req.uri_mut() = uri;
        }
    }
    req
}

#[cfg(test)]
mod tests {
    use super::*;

    fn get(path: &str) -> Option<String> {
        folded(&Method::GET, path)
    }

    #[test]
    fn a_request_path_is_found_after_the_app_or_after_the_model_path() {
        for (path, to) in [
            (
                "/fal-ai/flux/schnell/requests/abc/status",
                "/fal-ai/flux%2Fschnell/requests/abc/status",
            ),
            (
                "/fal-ai/flux/dev/image-to-image/requests/abc/status/stream",
                "/fal-ai/flux%2Fdev%2Fimage-to-image/requests/abc/status/stream",
            ),
            (
                "/a/b/c/d/e/f/g/requests/abc",
                "/a/b%2Fc%2Fd%2Fe%2Ff%2Fg/requests/abc",
            ),
            (
                "/fal-ai/flux/requests/abc/status/",
                "/fal-ai/flux/requests/abc/status",
            ),
            (
                "/a/b/x/requests/abc/cancel//",
                "/a/b%2Fx/requests/abc/cancel",
            ),
            // The first `requests` starts the request, as fal's clients build the URLs.
            ("/a/b/x/requests/requests/y", "/a/b%2Fx/requests/requests/y"),
        ] {
            assert_eq!(get(path).as_deref(), Some(to), "{path}");
        }
    }

    #[test]
    fn paths_that_need_no_folding_are_left() {
        for path in [
            "/fal-ai/flux/requests/abc/status",
            "/fal-ai/flux/requests/abc",
            "/fal-ai/flux/schnell",
            "/fal-ai/flux/dev/image-to-image",
            // An app named `requests`: the request's path starts after the app.
            "/someone/requests/abc/status",
            "/fal-ai/flux/schnell/requests",
            "/fal-ai/flux",
            "/fal-ai",
            "/",
            "//flux/x/requests/abc",
            "/v1/async-invoke/x/requests/abc/status",
            "/files/a/b/requests/c",
            "/storage/upload/initiate",
            "/api/fal/proxy",
        ] {
            assert_eq!(get(path), None, "{path}");
        }
    }

    #[test]
    fn only_a_post_ending_in_stream_is_the_streaming_endpoint() {
        let post = |p| folded(&Method::POST, p);
        assert_eq!(
            post("/fal-ai/flux/schnell/stream").as_deref(),
            Some("/fal-ai/flux%2Fschnell/stream")
        );
        assert_eq!(post("/fal-ai/fast-sdxl/stream"), None);
        assert_eq!(post("/fal-ai/flux/schnell/stream/"), None);
        assert_eq!(post("/fal-ai/flux/schnell"), None);
        assert_eq!(get("/fal-ai/flux/schnell/stream"), None);
        assert_eq!(post("/files/a/b/stream"), None);
        // A POST to a request's path still folds, to be refused by its route's methods.
        assert_eq!(
            post("/fal-ai/flux/schnell/requests/abc/status").as_deref(),
            Some("/fal-ai/flux%2Fschnell/requests/abc/status")
        );
    }

    #[test]
    fn a_clients_own_encoded_slash_stays_text() {
        let post = |p| folded(&Method::POST, p);
        assert_eq!(
            post("/fal-ai/flux%2Fschnell").as_deref(),
            Some("/fal-ai/flux%252Fschnell")
        );
        assert_eq!(
            get("/fal-ai/flux%2fdev/x/requests/abc").as_deref(),
            Some("/fal-ai/flux%252fdev%2Fx/requests/abc")
        );
        assert_eq!(post("/files/a%2Fb"), None);
    }

    #[test]
    fn the_query_is_kept() {
        let req = Request::builder()
            .uri("/fal-ai/flux/schnell/requests/abc/status?logs=1")
            .body(())
            .unwrap();
        assert_eq!(
            fold(req).uri().to_string(),
            "/fal-ai/flux%2Fschnell/requests/abc/status?logs=1"
        );
    }

    #[test]
    fn paths_under_the_run_prefix_fold_as_the_queue_s_do() {
        let post = |p| folded(&Method::POST, p);
        assert_eq!(
            post("/run/fal-ai/flux/schnell/stream").as_deref(),
            Some("/run/fal-ai/flux%2Fschnell/stream")
        );
        assert_eq!(post("/run/fal-ai/hidream-i1-fast/stream"), None);
        assert_eq!(post("/run/fal-ai/flux/schnell"), None);
        assert_eq!(post("/run/fal-ai/flux/dev/image-to-image"), None);
        assert_eq!(
            post("/running/x/y/stream").as_deref(),
            Some("/running/x%2Fy/stream")
        );
    }
}
