//! The one router: every route of every surface, and the layers around them.
//!
//! DigitalOcean's surface lives under `/v1/`, files under `/files/`, health at the root; fal's
//! queue surface takes every other path (`/{owner}/{app}/...`). Static routes win over fal's
//! captures, and owners named like the other surfaces' prefixes are not served as fal apps.
//!
//! A route in the OpenAPI document is added with `routes!`: its method and path are those of
//! its handler's `#[utoipa::path]`, which documents it. The others are added with `route`.

use axum::{
    Router,
    extract::{DefaultBodyLimit, MatchedPath, Request},
    http::Uri,
    middleware::{self, Next},
    response::{IntoResponse, Response},
    routing::{any, get, post, put},
};
use invokd_api::ErrorCode;
use utoipa_axum::{router::OpenApiRouter, routes};

use crate::{
    error::ApiError, fal_path, fal_proxy, rate_limit::Limit, request_context::request_context,
    routes, state::AppState,
};

/// Which surface a request is on, which decides the shape of its errors.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Surface {
    AsyncInvoke,
    FalQueue,
}

/// First path segments that belong to invokd's own routes, never to a fal app. `console` is
/// kept for the web console.
pub const RESERVED_OWNERS: [&str; 6] =
    ["v1", "files", "healthz", "readyz", ".well-known", "console"];

/// First segments of invokd's other own routes: a console path may not start with one of these
/// or a reserved one (a console path of its own shadows a fal app of the same path).
const OWN_FIRST_SEGMENTS: [&str; 6] = ["metrics", "openapi.json", "docs", "storage", "fal", "api"];

/// Whether `first` is the first segment of one of invokd's own routes.
pub fn is_taken(first: &str) -> bool {
    RESERVED_OWNERS.contains(&first) || OWN_FIRST_SEGMENTS.contains(&first)
}

pub fn surface_of(path: &str) -> Surface {
    let first = path
        .trim_start_matches('/')
        .split('/')
        .next()
        .unwrap_or_default();
    if RESERVED_OWNERS.contains(&first) {
        Surface::AsyncInvoke
    } else {
        Surface::FalQueue
    }
}

/// Where fal's webhooks for invokd's upstream requests arrive (signed by fal, no access key).
pub const FAL_WEBHOOK_PATH: &str = "/v1/upstream/fal/webhook";

/// The routes that take uploads, up to `max_upload_bytes`; every other body is held to
/// `max_body_bytes`.
pub const UPLOAD_ROUTES: [&str; 5] = [
    "/files/upload",
    "/files/upload/{*key}",
    "/v1/worker/jobs/{id}/files/{name}",
    RUNPOD_DONE,
    RUNPOD_STREAM,
];

/// RunPod's job-done and stream URLs: their bodies carry files as data URIs.
const RUNPOD_DONE: &str = "/v1/worker/runpod/job-done/{pod}/{id}";
const RUNPOD_STREAM: &str = "/v1/worker/runpod/job-stream/{pod}/{id}";

/// The routes (matched patterns) whose POST creates a job or a file: they draw on a key's
/// create limit, every other request with a key on its read limit.
pub const CREATE_ROUTES: [&str; 6] = [
    "/v1/async-invoke",
    "/{owner}/{app}",
    "/{owner}/{app}/{*path}",
    "/{owner}/{app}/stream",
    "/files/upload",
    "/storage/upload/initiate",
];

/// The rate limit a request draws on.
pub fn rate_limit_of(method: &axum::http::Method, route: Option<&MatchedPath>) -> Limit {
    if method == axum::http::Method::POST
        && route.is_some_and(|r| CREATE_ROUTES.contains(&r.as_str()))
    {
        Limit::Create
    } else {
        Limit::Read
    }
}

async fn not_found() -> ApiError {
    ApiError::new(ErrorCode::NotFound, "no such route")
}

/// A route matched but not the method. Under a reserved first segment, a fal route matched
/// only by its captures: no route at all.
async fn method_not_allowed(uri: Uri, matched: Option<MatchedPath>) -> ApiError {
    let fal_route = matched.is_some_and(|m| m.as_str().starts_with("/{owner}/"));
    let message = match surface_of(uri.path()) {
        Surface::AsyncInvoke if fal_route => return not_found().await,
        Surface::FalQueue => {
            "this method is not allowed on this route: submit with POST to the model's path, \
             read a request with GET .../requests/{request_id}[/status], cancel it with PUT \
             .../requests/{request_id}/cancel"
        }
        Surface::AsyncInvoke => "this method is not allowed on this route",
    };
    ApiError::new(ErrorCode::MethodNotAllowed, message)
}

/// A path under a reserved first segment is none of fal's routes, whatever its method.
async fn not_a_fal_app(req: Request, next: Next) -> Response {
    match surface_of(req.uri().path()) {
        Surface::FalQueue => next.run(req).await,
        Surface::AsyncInvoke => not_found().await.into_response(),
    }
}

/// Every route, with the OpenAPI document of those it documents. Uploads may be up to
/// `max_upload_bytes`.
fn routes(max_upload_bytes: usize) -> OpenApiRouter<AppState> {
    let upload_limit = DefaultBodyLimit::max(max_upload_bytes);
    // The documented routes come first, in the order of the document.
    let documented = OpenApiRouter::with_openapi(crate::openapi::document())
        .routes(routes!(
            routes::async_invoke::create,
            routes::async_invoke::list
        ))
        .routes(routes!(routes::async_invoke::get))
        .routes(routes!(routes::async_invoke::status))
        .routes(routes!(routes::async_invoke::cancel))
        .routes(routes!(routes::async_invoke::events))
        .routes(routes!(routes::models::list))
        .routes(routes!(routes::admin::create, routes::admin::list))
        .routes(routes!(routes::admin::revoke))
        .routes(routes!(
            routes::admin_workers::create_token,
            routes::admin_workers::list_tokens
        ))
        .routes(routes!(routes::admin_workers::revoke_token))
        .routes(routes!(routes::admin_workers::list_workers))
        .routes(routes!(routes::worker::take))
        .routes(routes!(routes::worker::heartbeat))
        .routes(routes!(routes::worker::put_file))
        .routes(routes!(routes::worker::presign))
        .routes(routes!(routes::worker::partial))
        .routes(routes!(routes::worker::complete))
        .routes(routes!(routes::worker::fail))
        .routes(routes!(routes::worker::release))
        .merge(fal_routes())
        .routes(routes!(routes::health::healthz))
        .routes(routes!(routes::health::readyz))
        .routes(routes!(routes::health::jwks));
    documented
        .route("/metrics", get(crate::metrics::render))
        .route("/openapi.json", get(crate::openapi::serve_spec))
        .route("/docs", get(crate::openapi::docs))
        .route(FAL_WEBHOOK_PATH, post(routes::fal_webhook::receive))
        .route(fal_proxy::PROXY_PATHS[0], any(fal_proxy::refuse))
        .route(fal_proxy::PROXY_PATHS[1], any(fal_proxy::refuse))
        .route(
            "/v1/worker/jobs/{id}/files",
            put(routes::worker::unnamed_file),
        )
        .route(
            "/v1/worker/runpod/job-take/{pod}",
            get(routes::runpod::take),
        )
        .route(
            "/v1/worker/runpod/job-take-batch/{pod}",
            get(routes::runpod::take_batch),
        )
        .route(
            "/v1/worker/runpod/job-stop/{pod}",
            get(routes::runpod::stop),
        )
        .route("/v1/worker/runpod/ping/{pod}", get(routes::runpod::ping))
        .route(RUNPOD_DONE, post(routes::runpod::done).layer(upload_limit))
        .route(
            RUNPOD_STREAM,
            post(routes::runpod::stream).layer(upload_limit),
        )
        .route("/files/{*key}", get(routes::files::get))
        .route("/storage/auth/token", post(routes::storage::token))
        .route("/storage/upload/initiate", post(routes::storage::initiate))
        .route(
            UPLOAD_ROUTES[0],
            post(routes::storage::upload_direct).layer(upload_limit),
        )
        .route(
            UPLOAD_ROUTES[1],
            put(routes::storage::put_signed).layer(upload_limit),
        )
}

/// fal's queue and its run host. A model's path after its owner is one `{app}` segment wherever an action
/// follows it (`fal_path::fold`), so each action has one route; the sub-path of a plain submit
/// is the only capture of many segments.
fn fal_routes() -> OpenApiRouter<AppState> {
    use routes::{fal_queue as fal, fal_run};
    OpenApiRouter::new()
        // Nothing but submits lives at an app's root; a read there is a wrong address.
        .routes(routes!(fal::submit))
        .route("/{owner}/{app}", get(not_found))
        .route("/{owner}/{app}/{*path}", post(fal::submit))
        // fal's streaming endpoint, never a submit to a model named `.../stream`.
        .routes(routes!(fal_run::stream))
        // fal's run host (`fal.run`), under its prefix: a run answers with the output.
        .routes(routes!(fal_run::run))
        .route("/run/{owner}/{app}/{*path}", post(fal_run::run))
        .route("/run/{owner}/{app}/stream", post(fal_run::stream))
        .routes(routes!(fal::status))
        .routes(routes!(fal::status_stream))
        .routes(routes!(fal::result))
        .route(
            "/{owner}/{app}/requests/{request_id}/response",
            get(fal::result),
        )
        // A read of `cancel` is a read of no action fal has, like any other unknown one.
        .routes(routes!(fal::cancel))
        .route(
            "/{owner}/{app}/requests/{request_id}/cancel",
            get(not_found),
        )
        .route(
            "/{owner}/{app}/requests/{request_id}/{*action}",
            get(not_found),
        )
        .route_layer(middleware::from_fn(not_a_fal_app))
}

/// The OpenAPI document of the routes (the upload limit plays no part in it).
pub fn openapi() -> utoipa::openapi::OpenApi {
    routes(0).into_openapi()
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_bytes;
    let (mut router, _) = routes(state.config.max_upload_bytes).split_for_parts();
    if let Some(path) = &state.config.console_path {
        router = crate::console::mount(router, path, &state);
    }
    router
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(middleware::from_fn_with_state(
            state.clone(),
            crate::request_body::guard,
        ))
        .layer(middleware::from_fn(request_context))
        .with_state(state)
}

/// What happens to a request's path before it is routed: fal's proxy protocol names the path
/// in a header, and a fal model's sub-path is folded into its app segment.
pub fn before_routing<B>(req: axum::http::Request<B>) -> axum::http::Request<B> {
    fal_path::fold(fal_proxy::rewrite(req))
}
