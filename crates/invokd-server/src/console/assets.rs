//! The console's static files, compiled into the binary: htmx (vendored, pinned; its license
//! beside it), the console's own script and stylesheet. Served with long caching, as each
//! name carries its version (htmx) or changes only with the binary. The icon spares browsers
//! a request for `/favicon.ico`.

use axum::{
    extract::Path,
    http::{StatusCode, header},
    response::{IntoResponse, Response},
};

use super::ConsoleError;

/// htmx's file name: its version, so a new one is a new URL.
pub const HTMX: &str = "htmx-2.0.11.min.js";

/// `(name, content type, bytes)` of every asset.
const ASSETS: [(&str, &str, &str); 4] = [
    (
        HTMX,
        "text/javascript; charset=utf-8",
        include_str!("assets/htmx-2.0.11.min.js"),
    ),
    (
        "console.js",
        "text/javascript; charset=utf-8",
        include_str!("assets/console.js"),
    ),
    (
        "console.css",
        "text/css; charset=utf-8",
        include_str!("assets/console.css"),
    ),
    (
        "favicon.svg",
        "image/svg+xml",
        include_str!("assets/favicon.svg"),
    ),
];

pub async fn serve(Path(name): Path<String>) -> Result<Response, ConsoleError> {
    let (_, content_type, body) = ASSETS
        .iter()
        .find(|(n, _, _)| *n == name)
        .ok_or_else(|| ConsoleError::new(StatusCode::NOT_FOUND, "There is no such file."))?;
    Ok((
        [
            (header::CONTENT_TYPE, *content_type),
            (header::CACHE_CONTROL, "public, max-age=3600"),
        ],
        *body,
    )
        .into_response())
}
