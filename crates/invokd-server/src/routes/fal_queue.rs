//! fal's queue surface: submit to `/{owner}/{app}[/{sub}]`, then status, the status stream,
//! the result and cancel under `.../requests/{id}`, with the app-only or the full model path
//! (each action has its route in `router.rs`, once `fal_path` has folded a model's sub-path).

use std::{collections::HashMap, time::Duration};

use axum::{
    Json,
    extract::{FromRequest, FromRequestParts, Path, Query, Request, State},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{
        IntoResponse, Response,
        sse::{KeepAlive, Sse},
    },
};
use invokd_api::{
    ErrorCode,
    fal_queue::{CancelStatus, QueueStatus, StatusOnly, SubmitResponse},
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
    openapi::{CancelAnswer, FalError, SseEvent},
    present::{UrlRenderer, fal_queue as present},
    request_context::FAL_REQUEST_ID,
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

/// Path of a request's routes: `/{owner}/{app}/requests/{request_id}/...`; the model's path
/// plays no part, as requests are found by id.
#[derive(Debug, Deserialize)]
pub struct RequestPath {
    request_id: String,
}

// `POST /{owner}/{app}` (and, undocumented, `POST /{owner}/{app}/{*path}` for a model with a
// sub-path): a submit.
#[utoipa::path(post, path = "/{owner}/{app}", operation_id = "fal_submit", tag = "fal-queue",
    params(("owner" = String, Path), ("app" = String, Path),
           ("fal_webhook" = Option<String>, Query),
           ("X-Fal-Queue-Priority" = Option<String>, Header, description = "normal or low"),
           ("X-Fal-Request-Timeout" = Option<String>, Header, description = "seconds to start before the job fails"),
           ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = Object, description = "the model's input"),
    responses(
        (status = 200, description = "queued", body = SubmitResponse),
        (status = 400, description = "malformed JSON or header", body = FalError),
        (status = 401, description = "missing or invalid key", body = FalError),
        (status = 404, description = "unknown model", body = FalError),
        (status = 405, description = "not a submit route", body = FalError),
        (status = 413, description = "body too large", body = FalError),
        (status = 415, description = "not JSON", body = FalError),
        (status = 422, description = "invalid input or header", body = FalError),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = FalError),
    ),
    security(("fal_key" = [])))]
pub async fn submit(
    State(state): State<AppState>,
    mut call: ModelCall,
) -> Result<Response, ApiError> {
    let job = submit_job(&state, &mut call).await?;
    let position = state.service.queue_position(&job).await?.unwrap_or(0);
    let body = present::submit_response(&job, &call.base, position);
    Ok(with_request_id(Json(body).into_response(), &job))
}

/// A call to a model on fal's surface, whichever endpoint it came to (a submit, a run, a
/// stream): the model its path names (`{owner}/{app}[/{*path}]`), the caller, the base URL,
/// fal's headers and query, and the input. The key is checked before the body is read.
pub struct ModelCall {
    pub model_id: String,
    pub caller: Caller,
    pub base: String,
    headers: HeaderMap,
    query: SubmitQuery,
    input: Map<String, Value>,
}

impl FromRequest<AppState> for ModelCall {
    type Rejection = Response;

    async fn from_request(req: Request, state: &AppState) -> Result<Self, Self::Rejection> {
        let (mut parts, body) = req.into_parts();
        let Path(mut path) = Path::<HashMap<String, String>>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Auth(caller) = Auth::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let BaseUrl(base) = BaseUrl::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let Query(query) = Query::<SubmitQuery>::from_request_parts(&mut parts, state)
            .await
            .map_err(IntoResponse::into_response)?;
        let headers = parts.headers.clone();
        let JsonBody(input) = JsonBody::from_request(Request::from_parts(parts, body), state)
            .await
            .map_err(IntoResponse::into_response)?;
        let model_id = ["owner", "app", "path"]
            .iter()
            .filter_map(|k| path.remove(*k))
            .collect::<Vec<_>>()
            .join("/");
        Ok(Self {
            model_id,
            caller,
            base,
            headers,
            query,
            input,
        })
    }
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

/// Submits the job of a call, whichever endpoint it came to (the queue, a run, a stream): the
/// model's input with fal's headers (`X-Fal-Queue-Priority`, `X-Fal-Request-Timeout`,
/// `Idempotency-Key`) and `?fal_webhook=`. The job is committed when this returns.
pub(crate) async fn submit_job(state: &AppState, call: &mut ModelCall) -> Result<Job, ApiError> {
    let headers = &call.headers;
    let webhook = call.query.fal_webhook.clone();
    let sub = Submission {
        model_id: call.model_id.clone(),
        input: std::mem::take(&mut call.input),
        tags: Vec::new(),
        priority: priority(headers)?,
        start_within: start_timeout(headers)?,
        idempotency_key: crate::extract::idempotency_key(headers)?,
        webhook_url: crate::extract::webhook_url(state, "fal_webhook", webhook).await?,
        run_timeout: None,
    };
    let submitted = state.service.submit(&call.caller, sub).await?;
    if !submitted.replayed {
        crate::metrics::job_submitted(&submitted.job.model_id);
    }
    Ok(submitted.job)
}

pub(crate) fn with_request_id(mut res: Response, job: &Job) -> Response {
    if let Ok(v) = HeaderValue::from_str(&job.id.to_string()) {
        res.headers_mut().insert(FAL_REQUEST_ID, v);
    }
    res
}

async fn status_of(
    state: &AppState,
    job: Job,
    base: &str,
    logs: bool,
) -> Result<QueueStatus, ApiError> {
    let snap = live::snapshot(state, job, logs).await?;
    Ok(present::queue_status(
        &snap.job,
        base,
        snap.queue_position,
        snap.logs.as_deref(),
    ))
}

// `GET .../requests/{request_id}/status`: 202 while queued or running, 200 once done.
#[utoipa::path(get, path = "/{owner}/{app}/requests/{request_id}/status", operation_id = "fal_status", tag = "fal-queue",
    params(("owner" = String, Path), ("app" = String, Path), ("request_id" = String, Path),
           ("logs" = Option<String>, Query, description = "1, 0, true or false")),
    responses(
        (status = 200, description = "done", body = QueueStatus),
        (status = 202, description = "queued or running", body = QueueStatus),
        (status = 401, description = "missing or invalid key", body = FalError),
        (status = 404, description = "no such request", body = FalError),
        (status = 422, description = "invalid logs value", body = FalError),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = FalError),
    ),
    security(("fal_key" = [])))]
pub async fn status(
    State(state): State<AppState>,
    Path(path): Path<RequestPath>,
    Auth(caller): Auth,
    base: BaseUrl,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let logs = q.wanted()?;
    let job = state.service.get(&caller, &path.request_id).await?;
    let terminal = job.status.is_terminal();
    let with_id = job.clone();
    let body = status_of(&state, job, &base.0, logs).await?;
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

// `GET .../requests/{request_id}` (and `.../response`): the model's output once it is done.
#[utoipa::path(get, path = "/{owner}/{app}/requests/{request_id}", operation_id = "fal_result", tag = "fal-queue",
    params(("owner" = String, Path), ("app" = String, Path), ("request_id" = String, Path)),
    responses(
        (status = 200, description = "the model's output", body = Object),
        (status = 400, description = "still in progress, or the job failed with bad input", body = FalError),
        (status = 401, description = "missing or invalid key", body = FalError),
        (status = 404, description = "no such request, or its output expired", body = FalError),
        (status = 499, description = "cancelled", body = FalError),
        (status = 500, description = "the job failed", body = FalError),
        (status = 503, description = "the job's runner failed", body = FalError),
        (status = 504, description = "the job timed out", body = FalError),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = FalError),
    ),
    security(("fal_key" = [])))]
pub async fn result(
    State(state): State<AppState>,
    Path(path): Path<RequestPath>,
    Auth(caller): Auth,
    base: BaseUrl,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    // A result has no logs, but a bad `logs` is refused on every read alike.
    q.wanted()?;
    let job = state.service.get(&caller, &path.request_id).await?;
    let res = if job.status.is_terminal() {
        ended(&state, &base.0, &job)
    } else {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"detail": "Request is still in progress"})),
        )
            .into_response()
    };
    Ok(with_request_id(res, &job))
}

/// What fal answers for a request that has ended, on its result and on a synchronous run: the
/// bare output, or the failure with its status code, body and `X-Fal-Error-Type` (a start
/// timeout also says `X-Fal-Request-Timeout-Type: user`, so clients do not retry it).
pub(crate) fn ended(state: &AppState, base: &str, job: &Job) -> Response {
    match (job.status, &job.output) {
        (JobStatus::Completed, Some(output)) => {
            Json(UrlRenderer::new(state, base).output(job.id, output)).into_response()
        }
        _ if job.expired_at.is_some() => (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": crate::routes::files::expired_message(job)})),
        )
            .into_response(),
        _ => {
            let error_type = job
                .error
                .as_ref()
                .map(|e| e.error_type.as_str())
                .unwrap_or("");
            let code = StatusCode::from_u16(present::failure_status(error_type))
                .unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
            let mut res = (code, Json(present::failure_body(job))).into_response();
            if let Ok(v) = HeaderValue::from_str(error_type)
                && !error_type.is_empty()
            {
                res.headers_mut().insert("x-fal-error-type", v);
            }
            if error_type == "request_timeout" {
                res.headers_mut().insert(
                    "x-fal-request-timeout-type",
                    HeaderValue::from_static("user"),
                );
            }
            res
        }
    }
}

// `GET .../requests/{request_id}/status/stream`, SSE: one `data:` event per change of status,
// queue position or logs; keep-alive comments; the stream ends after the COMPLETED event.
#[utoipa::path(get, path = "/{owner}/{app}/requests/{request_id}/status/stream", operation_id = "fal_stream", tag = "fal-queue",
    params(("owner" = String, Path), ("app" = String, Path), ("request_id" = String, Path),
           ("logs" = Option<String>, Query)),
    responses(
        (status = 200, description = "SSE: a status object per change, ends after COMPLETED", content_type = "text/event-stream", body = SseEvent),
        (status = 401, description = "missing or invalid key", body = FalError),
        (status = 404, description = "no such request", body = FalError),
        (status = 422, description = "invalid logs value", body = FalError),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = FalError),
    ),
    security(("fal_key" = [])))]
pub async fn status_stream(
    State(state): State<AppState>,
    Path(path): Path<RequestPath>,
    Auth(caller): Auth,
    BaseUrl(base): BaseUrl,
    Query(q): Query<LogsQuery>,
) -> Result<Response, ApiError> {
    let logs = q.wanted()?;
    let job = state.service.get(&caller, &path.request_id).await?;
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

// `PUT .../requests/{request_id}/cancel`.
#[utoipa::path(put, path = "/{owner}/{app}/requests/{request_id}/cancel", operation_id = "fal_cancel", tag = "fal-queue",
    params(("owner" = String, Path), ("app" = String, Path), ("request_id" = String, Path)),
    responses(
        (status = 202, description = "CANCELLATION_REQUESTED", body = CancelAnswer),
        (status = 400, description = "ALREADY_COMPLETED", body = CancelAnswer),
        (status = 401, description = "missing or invalid key", body = FalError),
        (status = 404, description = "NOT_FOUND", body = CancelAnswer),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = FalError),
    ),
    security(("fal_key" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Path(path): Path<RequestPath>,
    Auth(caller): Auth,
) -> Result<Response, ApiError> {
    let (code, status) = match state.service.cancel(&caller, &path.request_id).await? {
        CancelOutcome::Canceled | CancelOutcome::Requested => {
            (StatusCode::ACCEPTED, CancelStatus::CancellationRequested)
        }
        CancelOutcome::AlreadyDone => (StatusCode::BAD_REQUEST, CancelStatus::AlreadyCompleted),
        _ => (StatusCode::NOT_FOUND, CancelStatus::NotFound),
    };
    Ok((code, Json(StatusOnly { status })).into_response())
}
