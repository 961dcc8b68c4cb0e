//! fal's queue surface: submit to `/{owner}/{app}[/{sub}]`, then status, the status stream,
//! the result and cancel under `.../requests/{id}`, with the app-only or the full model path.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, Query, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{
        IntoResponse, Response,
        sse::{KeepAlive, Sse},
    },
};
use invokd_api::{
    ErrorCode,
    fal_queue::{CancelStatus, StatusOnly},
};
use invokd_core::{
    CancelOutcome, Job, JobStatus,
    service::{Caller, PRIORITY_LOW, PRIORITY_NORMAL, Submission},
};
use serde::Deserialize;
use serde_json::{Map, Value, json};

use crate::{
    error::ApiError,
    extract::{Auth, BaseUrl, JsonBody},
    live,
    present::{UrlRenderer, fal_queue as present},
    request_context::FAL_REQUEST_ID,
    router::RESERVED_OWNERS,
    state::AppState,
};

/// Query of a submit: `fal_webhook`; others are ignored.
#[derive(Debug, Deserialize)]
pub struct SubmitQuery {
    #[serde(default)]
    fal_webhook: Option<String>,
}

/// `?logs=1|0|true|false` (JS sends 1/0, Python true/false).
#[derive(Debug, Deserialize)]
pub struct LogsQuery {
    #[serde(default)]
    logs: Option<String>,
}

impl LogsQuery {
    fn wanted(&self) -> Result<bool, ApiError> {
        match self.logs.as_deref().map(str::to_ascii_lowercase).as_deref() {
            None | Some("0" | "false" | "") => Ok(false),
            Some("1" | "true") => Ok(true),
            Some(other) => Err(ApiError::new(
                ErrorCode::UnprocessableEntity,
                format!("logs must be 1, 0, true or false, not {other:?}"),
            )),
        }
    }
}

fn not_served(owner: &str) -> Option<ApiError> {
    RESERVED_OWNERS
        .contains(&owner)
        .then(|| ApiError::new(ErrorCode::NotFound, "no such route"))
}

/// `POST /{owner}/{app}`.
pub async fn submit_app(
    state: State<AppState>,
    Path((owner, app)): Path<(String, String)>,
    auth: Auth,
    base: BaseUrl,
    headers: HeaderMap,
    query: Query<SubmitQuery>,
    body: JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    submit(
        state,
        format!("{owner}/{app}"),
        auth,
        base,
        headers,
        query,
        body,
    )
    .await
}

/// What a request below an app asks for.
enum Target<'a> {
    /// A submit to a model with a sub-path.
    Model,
    Request {
        id: &'a str,
        action: &'a str,
    },
}

/// Splits `[sub/path/]requests/{id}[/action...]`; anything else names a model.
fn target(rest: &str) -> Target<'_> {
    let rest = rest.trim_end_matches('/');
    let at = if rest.starts_with("requests/") {
        Some(0)
    } else {
        rest.find("/requests/").map(|i| i + 1)
    };
    let Some(at) = at else { return Target::Model };
    let after = &rest[at + "requests/".len()..];
    let (id, action) = after.split_once('/').unwrap_or((after, ""));
    Target::Request { id, action }
}

/// `POST /{owner}/{app}/{*rest}`: a submit to a model with a sub-path.
pub async fn submit_sub(
    state: State<AppState>,
    Path((owner, app, rest)): Path<(String, String, String)>,
    auth: Auth,
    base: BaseUrl,
    headers: HeaderMap,
    query: Query<SubmitQuery>,
    body: JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    if let Target::Request { .. } = target(&rest) {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "use GET for status and results, PUT for cancel",
        ));
    }
    submit(
        state,
        format!("{owner}/{app}/{rest}"),
        auth,
        base,
        headers,
        query,
        body,
    )
    .await
}

fn header<'h>(headers: &'h HeaderMap, name: &str) -> Result<Option<&'h str>, ApiError> {
    headers
        .get(name)
        .map(|v| {
            v.to_str().map(str::trim).map_err(|_| {
                ApiError::new(ErrorCode::BadRequest, format!("{name} is not valid text"))
            })
        })
        .transpose()
}

fn priority(headers: &HeaderMap) -> Result<i32, ApiError> {
    match header(headers, "x-fal-queue-priority")?
        .map(str::to_ascii_lowercase)
        .as_deref()
    {
        None | Some("normal") => Ok(PRIORITY_NORMAL),
        Some("low") => Ok(PRIORITY_LOW),
        Some(other) => Err(ApiError::new(
            ErrorCode::UnprocessableEntity,
            format!("X-Fal-Queue-Priority must be normal or low, not {other:?}"),
        )),
    }
}

fn start_timeout(headers: &HeaderMap) -> Result<Option<Duration>, ApiError> {
    let Some(v) = header(headers, "x-fal-request-timeout")? else {
        return Ok(None);
    };
    v.parse::<f64>()
        .ok()
        .filter(|s| s.is_finite() && *s > 0.0 && *s <= 86_400.0 * 365.0)
        .map(|s| Some(Duration::from_secs_f64(s)))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::UnprocessableEntity,
                format!("X-Fal-Request-Timeout must be a positive number of seconds, not {v:?}"),
            )
        })
}

async fn submit(
    State(state): State<AppState>,
    model_id: String,
    Auth(caller): Auth,
    base: BaseUrl,
    headers: HeaderMap,
    Query(query): Query<SubmitQuery>,
    JsonBody(input): JsonBody<Map<String, Value>>,
) -> Result<Response, ApiError> {
    if let Some(e) = not_served(model_id.split('/').next().unwrap_or_default()) {
        return Err(e);
    }
    let sub = Submission {
        model_id,
        input,
        tags: Vec::new(),
        priority: priority(&headers)?,
        start_within: start_timeout(&headers)?,
        idempotency_key: crate::extract::idempotency_key(&headers)?,
        webhook_url: crate::extract::webhook_url(&state, "fal_webhook", query.fal_webhook).await?,
        run_timeout: None,
    };
    let submitted = state.service.submit(&caller, sub).await?;
    if !submitted.replayed {
        crate::metrics::job_submitted(&submitted.job.model_id);
    }
    let job = submitted.job;
    let position = state.service.queue_position(&job).await?.unwrap_or(0);
    let body = present::submit_response(&job, &base.0, position);
    Ok(with_request_id(Json(body).into_response(), &job))
}

fn with_request_id(mut res: Response, job: &Job) -> Response {
    if let Ok(v) = HeaderValue::from_str(&job.id.to_string()) {
        res.headers_mut().insert(FAL_REQUEST_ID, v);
    }
    res
}

/// `GET /{owner}/{app}/{*rest}`: status, status stream or result of a request.
pub async fn read(
    State(state): State<AppState>,
    Path((owner, _app, rest)): Path<(String, String, String)>,
    Auth(caller): Auth,
    base: BaseUrl,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    if let Some(e) = not_served(&owner) {
        return Err(e);
    }
    let Target::Request { id, action } = target(&rest) else {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "submit with POST; read requests at .../requests/{request_id}",
        ));
    };
    let logs = q.wanted()?;
    match action {
        "" | "response" => result(&state, caller, &base.0, id).await,
        "status" => status(&state, caller, &base.0, id, logs).await,
        "status/stream" => stream(state, caller, base.0, id.to_owned(), logs).await,
        _ => Err(ApiError::new(ErrorCode::NotFound, "no such route")),
    }
}

async fn status_of(
    state: &AppState,
    job: Job,
    base: &str,
    logs: bool,
) -> Result<invokd_api::fal_queue::QueueStatus, ApiError> {
    let snap = live::snapshot(state, job, logs).await?;
    Ok(present::queue_status(
        &snap.job,
        base,
        snap.queue_position,
        snap.logs.as_deref(),
    ))
}

async fn status(
    state: &AppState,
    caller: Caller,
    base: &str,
    id: &str,
    logs: bool,
) -> Result<Response, ApiError> {
    let job = state.service.get(&caller, id).await?;
    let terminal = job.status.is_terminal();
    let with_id = job.clone();
    let body = status_of(state, job, base, logs).await?;
    let code = if terminal {
        StatusCode::OK
    } else {
        StatusCode::ACCEPTED
    };
    Ok(with_request_id(
        (code, Json(body)).into_response(),
        &with_id,
    ))
}

async fn result(
    state: &AppState,
    caller: Caller,
    base: &str,
    id: &str,
) -> Result<Response, ApiError> {
    let job = state.service.get(&caller, id).await?;
    let res = match (job.status, &job.output) {
        (JobStatus::Completed, Some(output)) => {
            Json(UrlRenderer::new(state, base).output(job.id, output)).into_response()
        }
        (_, _) if job.expired_at.is_some() => (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": crate::routes::files::expired_message(&job)})),
        )
            .into_response(),
        (s, _) if s.is_terminal() => {
            let code = StatusCode::from_u16(present::failure_status(
                job.error
                    .as_ref()
                    .map(|e| e.error_type.as_str())
                    .unwrap_or(""),
            ))
            .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut res = (code, Json(present::failure_body(&job))).into_response();
            if let Some(Ok(v)) = job
                .error
                .as_ref()
                .map(|e| HeaderValue::from_str(&e.error_type))
            {
                res.headers_mut().insert("x-fal-error-type", v);
            }
            res
        }
        _ => (
            StatusCode::BAD_REQUEST,
            Json(json!({"detail": "Request is still in progress"})),
        )
            .into_response(),
    };
    Ok(with_request_id(res, &job))
}

/// SSE: one `data:` event per change of status, queue position or logs; keep-alive comments;
/// the stream ends after the COMPLETED event.
async fn stream(
    state: AppState,
    caller: Caller,
    base: String,
    id: String,
    logs: bool,
) -> Result<Response, ApiError> {
    let job = state.service.get(&caller, &id).await?;
    let mut last: Option<Value> = None;
    let events = live::events(state, job, logs, move |snap| {
        let body =
            present::queue_status(&snap.job, &base, snap.queue_position, snap.logs.as_deref());
        let value = serde_json::to_value(&body).unwrap_or(Value::Null);
        if last.as_ref() == Some(&value) {
            return Vec::new();
        }
        let event = crate::present::sse::fal_status(&value);
        last = Some(value);
        vec![event]
    });
    Ok(Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}

/// `PUT /{owner}/{app}/{*rest}`: cancel a request.
pub async fn cancel(
    State(state): State<AppState>,
    Path((owner, _app, rest)): Path<(String, String, String)>,
    Auth(caller): Auth,
) -> Result<Response, ApiError> {
    if let Some(e) = not_served(&owner) {
        return Err(e);
    }
    let Target::Request {
        id,
        action: "cancel",
    } = target(&rest)
    else {
        return Err(ApiError::new(
            ErrorCode::MethodNotAllowed,
            "cancel with PUT .../requests/{request_id}/cancel",
        ));
    };
    let (code, status) = match state.service.cancel(&caller, id).await? {
        CancelOutcome::Canceled | CancelOutcome::Requested => {
            (StatusCode::ACCEPTED, CancelStatus::CancellationRequested)
        }
        CancelOutcome::AlreadyDone => (StatusCode::BAD_REQUEST, CancelStatus::AlreadyCompleted),
        _ => (StatusCode::NOT_FOUND, CancelStatus::NotFound),
    };
    Ok((code, Json(StatusOnly { status })).into_response())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_paths_are_found_with_or_without_the_sub_path() {
        for rest in [
            "requests/abc/status",
            "schnell/requests/abc/status",
            "a/b/requests/abc/status/",
        ] {
            let Target::Request { id, action } = target(rest) else {
                panic!("{rest}")
            };
            assert_eq!((id, action), ("abc", "status"), "{rest}");
        }
        let Target::Request { id, action } = target("requests/abc") else {
            panic!()
        };
        assert_eq!((id, action), ("abc", ""));
        assert!(matches!(target("schnell"), Target::Model));
        assert!(matches!(target("v2/text-to-image"), Target::Model));
    }
}
