//! The web console: server-rendered pages over the same job service as the API, under one
//! path (`/console` unless configured), with sign-in, CSRF-checked actions and a strict
//! Content-Security-Policy. Its assets are compiled into the binary.
//!
//! Pages are askama templates (checked when the crate compiles, no Node.js in the build) with
//! htmx for the live parts: a fragment of the page is fetched again every few seconds.

mod assets;
mod form;
mod pages;
mod session;
mod snippets;
mod view;

use axum::{
    Router,
    body::Bytes,
    extract::{FromRequest, Request},
    http::{HeaderValue, StatusCode, header},
    middleware::{self, Next},
    response::{Html, IntoResponse, Response},
    routing::{get, post},
};
use invokd_core::{service::ServiceError, workers::WorkerError};

use crate::{error::ApiError, state::AppState};
pub use session::{Viewer, Who};

/// `router` with the console at `path`, and at `path/` too (a nested router's root is `path`).
pub fn mount(router: Router<AppState>, path: &str, state: &AppState) -> Router<AppState> {
    router
        .nest(path, routes(state))
        .route(&format!("{path}/"), get(pages::overview::root))
}

/// Every console route, relative to its path, with the headers of `state`'s settings.
fn routes(state: &AppState) -> Router<AppState> {
    let policy = HeaderValue::from_str(&csp(&file_origins(state)))
        .unwrap_or_else(|_| HeaderValue::from_static(CSP));
    use pages::{admin, gallery, job, jobs, overview, playground, sign_in, workers};
    Router::new()
        .route("/", get(overview::root))
        .route("/sign-in", get(sign_in::form).post(sign_in::submit))
        .route("/sign-out", post(sign_in::sign_out))
        .route("/overview", get(overview::page))
        .route("/overview/live", get(overview::live))
        .route("/jobs", get(jobs::page))
        .route("/jobs/live", get(jobs::live))
        .route("/jobs/cancel", post(jobs::cancel_selected))
        .route("/jobs/{id}", get(job::page))
        .route("/jobs/{id}/live", get(job::live))
        .route("/jobs/{id}/cancel", post(job::cancel))
        .route("/jobs/{id}/rerun", post(job::rerun))
        .route(
            "/playground",
            get(playground::page).post(playground::submit),
        )
        .route("/gallery", get(gallery::page))
        .route("/admin/keys", get(admin::page).post(admin::create))
        .route("/admin/keys/{id}/revoke", post(admin::revoke))
        .route("/admin/workers", get(workers::page))
        .route("/admin/workers/live", get(workers::live))
        .route("/admin/workers/tokens", post(workers::create))
        .route("/admin/workers/tokens/{id}/revoke", post(workers::revoke))
        .route("/assets/{name}", get(assets::serve))
        .fallback(not_found)
        .layer(middleware::from_fn(move |req, next| {
            headers(policy.clone(), req, next)
        }))
}

/// The policy of every console response: scripts and styles from this origin only (no inline
/// ones), images and audio from this origin (where signed file URLs point), no framing.
pub const CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; \
     media-src 'self'; connect-src 'self'; form-action 'self'; frame-ancestors 'none'; \
     base-uri 'none'";

/// The policy, with images and audio also allowed from `file_origins`.
fn csp(file_origins: &[String]) -> String {
    if file_origins.is_empty() {
        return CSP.to_owned();
    }
    let extra = file_origins.join(" ");
    CSP.replace("img-src 'self'", &format!("img-src 'self' {extra}"))
        .replace("media-src 'self'", &format!("media-src 'self' {extra}"))
}

/// Where output files are served from besides the console's own origin: the public URL file
/// links are made with, and the bucket when outputs carry presigned URLs.
fn file_origins(state: &AppState) -> Vec<String> {
    let mut origins = Vec::new();
    if let Some(u) = state
        .config
        .public_url
        .as_deref()
        .and_then(|u| url::Url::parse(u).ok())
    {
        origins.push(u.origin().ascii_serialization());
    }
    if let (crate::config::FileUrls::Presigned, crate::config::BlobLocation::S3(s3)) =
        (state.config.file_urls, &state.config.blobs)
    {
        let endpoint = &s3.endpoint;
        origins.push(if s3.path_style {
            endpoint.origin().ascii_serialization()
        } else {
            // Virtual-host style: the bucket is a subdomain of the endpoint's host.
            let port = endpoint.port().map(|p| format!(":{p}")).unwrap_or_default();
            format!(
                "{}://{}.{}{port}",
                endpoint.scheme(),
                s3.bucket,
                endpoint.host_str().unwrap_or_default()
            )
        });
    }
    origins.retain(|o| o != "null");
    origins
}

async fn headers(policy: HeaderValue, req: Request, next: Next) -> Response {
    let is_asset = req.uri().path().contains("/assets/");
    let mut res = next.run(req).await;
    let h = res.headers_mut();
    h.insert(header::CONTENT_SECURITY_POLICY, policy);
    h.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("same-origin"),
    );
    if !is_asset {
        // Pages show a project's jobs: never kept by a shared cache or the back button's.
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    res
}

/// Why a console request failed, shown as a page with its status.
#[derive(Debug)]
pub struct ConsoleError {
    pub status: StatusCode,
    pub message: String,
}

impl ConsoleError {
    pub fn new(status: StatusCode, message: impl Into<String>) -> Self {
        Self {
            status,
            message: message.into(),
        }
    }
}

impl From<ApiError> for ConsoleError {
    fn from(e: ApiError) -> Self {
        Self::new(e.status(), e.message)
    }
}

impl From<ServiceError> for ConsoleError {
    fn from(e: ServiceError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<WorkerError> for ConsoleError {
    fn from(e: WorkerError) -> Self {
        ApiError::from(e).into()
    }
}

impl From<askama::Error> for ConsoleError {
    fn from(e: askama::Error) -> Self {
        tracing::error!(error = %e, "console page failed to render");
        Self::new(StatusCode::INTERNAL_SERVER_ERROR, "internal error")
    }
}

#[derive(askama::Template)]
#[template(path = "console/error.html")]
struct ErrorPage<'a> {
    status: u16,
    reason: &'a str,
    message: &'a str,
}

impl IntoResponse for ConsoleError {
    fn into_response(self) -> Response {
        use askama::Template as _;
        let page = ErrorPage {
            status: self.status.as_u16(),
            reason: self.status.canonical_reason().unwrap_or("Error"),
            message: &self.message,
        };
        let body = page.render().unwrap_or_else(|_| self.message.clone());
        (self.status, Html(body)).into_response()
    }
}

async fn not_found() -> ConsoleError {
    ConsoleError::new(StatusCode::NOT_FOUND, "There is no such page.")
}

/// A rendered page.
pub fn render(t: &impl askama::Template) -> Result<Response, ConsoleError> {
    Ok(Html(t.render()?).into_response())
}

/// Requests a browser made on behalf of another site are refused, whatever they carry.
fn cross_site(headers: &axum::http::HeaderMap) -> bool {
    headers
        .get("sec-fetch-site")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v == "cross-site")
}

/// A posted form of a signed-in session, its CSRF token checked: every console action takes
/// one. Fields may repeat (a selection of jobs).
pub struct Posted {
    pub viewer: Viewer,
    pub fields: Vec<(String, String)>,
}

impl Posted {
    /// The first value of `name`.
    pub fn get(&self, name: &str) -> Option<&str> {
        self.fields
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Every value of `name`, in order.
    pub fn all<'a>(&'a self, name: &'a str) -> impl Iterator<Item = &'a str> + 'a {
        self.fields
            .iter()
            .filter(move |(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// The pairs of a urlencoded body.
pub fn form_pairs(body: &[u8]) -> Vec<(String, String)> {
    url::form_urlencoded::parse(body).into_owned().collect()
}

/// The action refused: no token, another session's, or sent from another site.
fn forbidden() -> Response {
    ConsoleError::new(
        StatusCode::FORBIDDEN,
        "This form has expired or came from another site. Reload the page and try again.",
    )
    .into_response()
}

impl FromRequest<AppState> for Posted {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        use axum::extract::FromRequestParts as _;
        let viewer = Viewer::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        if cross_site(&parts.headers) {
            return Err(forbidden());
        }
        let cookie = session::cookie_of(&parts.headers)
            .unwrap_or_default()
            .to_owned();
        let header_token = parts
            .headers
            .get(session::CSRF_HEADER)
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned);
        let bytes = Bytes::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(|_| {
                ConsoleError::new(StatusCode::PAYLOAD_TOO_LARGE, "The form is too large.")
                    .into_response()
            })?;
        let fields = form_pairs(&bytes);
        let token = header_token.or_else(|| {
            fields
                .iter()
                .find(|(k, _)| k == session::CSRF_FIELD)
                .map(|(_, v)| v.clone())
        });
        match token {
            Some(t) if session::csrf_ok(&state.signer, &cookie, &t) => Ok(Self { viewer, fields }),
            _ => Err(forbidden()),
        }
    }
}
