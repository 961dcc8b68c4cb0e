//! DigitalOcean's async-invoke surface: create, get, status; and invokd's extensions on it:
//! list, cancel, live events, and `Prefer: wait`.

use std::time::Duration;

use axum::{
    Json,
    extract::{Path, Query, State, rejection::QueryRejection},
    http::{HeaderMap, HeaderValue, StatusCode},
    response::{
        IntoResponse, Response,
        sse::{KeepAlive, Sse},
    },
};
use futures::StreamExt;
use invokd_api::{
    ErrorCode,
    async_invoke::{CreateInvocation, Invocation},
    error_code::ErrorBody,
};
use invokd_core::{
    CancelOutcome, Job, JobStatus,
    service::{Caller, PRIORITY_NORMAL, Submission},
    store::ListQuery,
};
use serde::Deserialize;
use serde_json::json;

use crate::{
    error::ApiError,
    extract::{Auth, BaseUrl, JsonBody, idempotency_key, prefer_wait, webhook_url},
    live,
    openapi::{InvocationPage, SseEvent},
    present::{
        UrlRenderer,
        async_invoke::{invocation, with_delivery},
        fal_queue::log_entry,
    },
    run_stream,
    state::AppState,
};

/// The invocation, after waiting for it as long as `Prefer: wait=N` asks.
async fn waited(
    state: &AppState,
    caller: Caller,
    job: Job,
    headers: &HeaderMap,
) -> Result<(Job, Option<u64>), ApiError> {
    let Some(secs) = prefer_wait(headers) else {
        return Ok((job, None));
    };
    let id = job.id.to_string();
    let job = state
        .service
        .wait(&caller, &id, Duration::from_secs(secs))
        .await?;
    Ok((job, Some(secs)))
}

fn respond(code: StatusCode, inv: Invocation, applied: Option<u64>) -> Response {
    let mut res = (code, Json(inv)).into_response();
    if let Some(n) = applied
        && let Ok(v) = HeaderValue::from_str(&format!("wait={n}"))
    {
        res.headers_mut().insert("preference-applied", v);
    }
    res
}

// `POST /v1/async-invoke`: validate, store (committed), answer 202 with the QUEUED invocation.
// With `Idempotency-Key`, a retry gives back the first job; with `Prefer: wait=N`, the answer
// waits up to N seconds for the job to finish.
#[utoipa::path(post, path = "/v1/async-invoke", tag = "async-invoke",
    request_body = CreateInvocation,
    params(("Idempotency-Key" = Option<String>, Header, description = "a retry with the same key and body returns the first job"),
           ("Prefer" = Option<String>, Header, description = "wait=N: answer when the job ends or after N seconds (at most 60)")),
    responses(
        (status = 202, description = "queued (committed)", body = Invocation),
        (status = 400, description = "malformed JSON or header", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 404, description = "unknown model", body = ErrorBody),
        (status = 413, description = "body too large", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 422, description = "invalid input", body = ErrorBody),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn create(
    State(state): State<AppState>,
    Auth(caller): Auth,
    base: BaseUrl,
    headers: HeaderMap,
    JsonBody(body): JsonBody<CreateInvocation>,
) -> Result<Response, ApiError> {
    if body.model_id.trim().is_empty() {
        return Err(ApiError::new(
            ErrorCode::UnprocessableEntity,
            "model_id: must not be empty",
        ));
    }
    let tags = body
        .tags
        .unwrap_or_default()
        .into_iter()
        .map(|t| (t.key, t.value))
        .collect();
    let webhook_url = webhook_url(&state, "webhook_url", body.webhook_url).await?;
    let run_timeout = body
        .run_timeout_seconds
        .map(|s| {
            (s > 0.0 && s <= 86_400.0)
                .then(|| Duration::from_secs_f64(s))
                .ok_or_else(|| {
                    invalid(
                        "run_timeout_seconds",
                        format!("must be more than 0 and at most 86400, got {s}"),
                    )
                })
        })
        .transpose()?;
    let submitted = state
        .service
        .submit(
            &caller,
            Submission {
                webhook_url,
                run_timeout,
                model_id: body.model_id,
                input: body.input,
                tags,
                priority: PRIORITY_NORMAL,
                start_within: None,
                idempotency_key: idempotency_key(&headers)?,
            },
        )
        .await?;
    if !submitted.replayed {
        crate::metrics::job_submitted(&submitted.job.model_id);
    }
    let (job, applied) = waited(&state, caller, submitted.job, &headers).await?;
    let inv = invocation(&job, &UrlRenderer::new(&state, &base.0));
    Ok(respond(StatusCode::ACCEPTED, inv, applied))
}

// `GET /v1/async-invoke/{request_id}`: the invocation object, with its
// webhook delivery when it has one.
#[utoipa::path(get, path = "/v1/async-invoke/{request_id}", tag = "async-invoke",
    params(("request_id" = String, Path), ("Prefer" = Option<String>, Header)),
    responses(
        (status = 200, description = "the invocation", body = Invocation),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 404, description = "no such request for this key", body = ErrorBody),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn get(
    State(state): State<AppState>,
    Auth(caller): Auth,
    base: BaseUrl,
    headers: HeaderMap,
    Path(request_id): Path<String>,
) -> Result<Response, ApiError> {
    let job = state.service.get(&caller, &request_id).await?;
    let (job, applied) = waited(&state, caller, job, &headers).await?;
    let delivery = if job.webhook_url.is_some() {
        state.service.delivery_of(&job).await?
    } else {
        None
    };
    let inv = with_delivery(
        invocation(&job, &UrlRenderer::new(&state, &base.0)),
        delivery,
    );
    Ok(respond(StatusCode::OK, inv, applied))
}

// `GET /v1/async-invoke/{request_id}/status`: the same as `get`.
#[utoipa::path(get, path = "/v1/async-invoke/{request_id}/status", tag = "async-invoke",
    params(("request_id" = String, Path), ("Prefer" = Option<String>, Header)),
    responses(
        (status = 200, description = "the invocation", body = Invocation),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 404, description = "no such request for this key", body = ErrorBody),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn status(
    state: State<AppState>,
    auth: Auth,
    base: BaseUrl,
    headers: HeaderMap,
    request_id: Path<String>,
) -> Result<Response, ApiError> {
    get(state, auth, base, headers, request_id).await
}

// `POST /v1/async-invoke/{request_id}/cancel`: a queued job never runs; a running one is told
// to stop. 202 with the invocation; 409 if it had already finished.
#[utoipa::path(post, path = "/v1/async-invoke/{request_id}/cancel", tag = "async-invoke",
    params(("request_id" = String, Path)),
    responses(
        (status = 202, description = "cancelled, or asked to stop", body = Invocation),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 404, description = "no such request for this key", body = ErrorBody),
        (status = 409, description = "already finished", body = ErrorBody),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn cancel(
    State(state): State<AppState>,
    Auth(caller): Auth,
    base: BaseUrl,
    Path(request_id): Path<String>,
) -> Result<Response, ApiError> {
    match state.service.cancel(&caller, &request_id).await? {
        CancelOutcome::Canceled | CancelOutcome::Requested => {}
        CancelOutcome::AlreadyDone => {
            let job = state.service.get(&caller, &request_id).await?;
            return Err(ApiError::new(
                ErrorCode::Conflict,
                format!("request {request_id} has already finished ({})", job.status),
            ));
        }
        _ => {
            return Err(ApiError::new(
                ErrorCode::NotFound,
                format!("request {request_id:?} not found"),
            ));
        }
    }
    let job = state.service.get(&caller, &request_id).await?;
    let inv = invocation(&job, &UrlRenderer::new(&state, &base.0));
    Ok(respond(StatusCode::ACCEPTED, inv, None))
}

/// Query of `GET /v1/async-invoke`; every value is checked by hand for a clear message.
#[derive(Debug, Default, Deserialize)]
pub struct ListParams {
    status: Option<String>,
    model_id: Option<String>,
    tag: Option<String>,
    created_after: Option<String>,
    created_before: Option<String>,
    limit: Option<String>,
    cursor: Option<String>,
}

fn invalid(field: &str, why: impl std::fmt::Display) -> ApiError {
    ApiError::new(ErrorCode::UnprocessableEntity, format!("{field}: {why}"))
}

fn time_param(
    field: &str,
    v: Option<&str>,
) -> Result<Option<chrono::DateTime<chrono::Utc>>, ApiError> {
    v.map(|t| {
        chrono::DateTime::parse_from_rfc3339(t)
            .map(|t| t.to_utc())
            .map_err(|_| invalid(field, format!("must be an RFC 3339 time, got {t:?}")))
    })
    .transpose()
}

impl ListParams {
    fn query(&self) -> Result<ListQuery, ApiError> {
        let status = self
            .status
            .as_deref()
            .map(|s| {
                s.to_ascii_uppercase()
                    .parse::<JobStatus>()
                    .map_err(|_| invalid("status", format!("must be one of QUEUED, IN_PROGRESS, COMPLETED, FAILED, CANCELED, got {s:?}")))
            })
            .transpose()?;
        let tag = self
            .tag
            .as_deref()
            .map(|t| {
                t.split_once(':')
                    .map(|(k, v)| (k.to_owned(), v.to_owned()))
                    .ok_or_else(|| invalid("tag", format!("must be key:value, got {t:?}")))
            })
            .transpose()?;
        let limit = match self.limit.as_deref() {
            None => 20,
            Some(l) => l
                .parse::<u32>()
                .ok()
                .filter(|n| (1..=invokd_core::service::MAX_PAGE).contains(n))
                .ok_or_else(|| {
                    invalid(
                        "limit",
                        format!("must be an integer from 1 to 1000, got {l:?}"),
                    )
                })?,
        };
        Ok(ListQuery {
            status,
            model_id: self.model_id.clone(),
            tag,
            created_after: time_param("created_after", self.created_after.as_deref())?,
            created_before: time_param("created_before", self.created_before.as_deref())?,
            limit,
            ..ListQuery::default()
        })
    }
}

// `GET /v1/async-invoke?status=&model_id=&tag=key:value&created_after=&created_before=&limit=&cursor=`:
// the caller's jobs, newest first, with cursor paging.
#[utoipa::path(get, path = "/v1/async-invoke", tag = "async-invoke",
    params(("status" = Option<String>, Query), ("model_id" = Option<String>, Query),
           ("tag" = Option<String>, Query, description = "key:value"),
           ("created_after" = Option<String>, Query), ("created_before" = Option<String>, Query),
           ("limit" = Option<String>, Query, description = "1 to 1000, default 20"),
           ("cursor" = Option<String>, Query)),
    responses(
        (status = 200, description = "the caller's jobs, newest first", body = InvocationPage),
        (status = 400, description = "invalid cursor or query", body = ErrorBody),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 422, description = "invalid filter", body = ErrorBody),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn list(
    State(state): State<AppState>,
    Auth(caller): Auth,
    base: BaseUrl,
    params: Result<Query<ListParams>, QueryRejection>,
) -> Result<Response, ApiError> {
    let Query(params) =
        params.map_err(|e| ApiError::new(ErrorCode::BadRequest, format!("invalid query: {e}")))?;
    let page = state
        .service
        .list(&caller, params.query()?, params.cursor.as_deref())
        .await?;
    let urls = UrlRenderer::new(&state, &base.0);
    let items: Vec<Invocation> = page.jobs.iter().map(|j| invocation(j, &urls)).collect();
    Ok(Json(json!({"invocations": items, "next_cursor": page.next_cursor})).into_response())
}

// `GET /v1/async-invoke/{request_id}/events`: SSE. `event: status` with the invocation at each
// change, `event: log` with each new log line, `event: partial` with each partial output of a
// run in this process; the stream ends after the terminal status.
#[utoipa::path(get, path = "/v1/async-invoke/{request_id}/events", tag = "async-invoke",
    params(("request_id" = String, Path)),
    responses(
        (status = 200, description = "SSE: `status`, `log` and `partial` events, ends after the terminal status", content_type = "text/event-stream", body = SseEvent),
        (status = 401, description = "missing or invalid key", body = ErrorBody),
        (status = 404, description = "no such request for this key", body = ErrorBody),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn events(
    State(state): State<AppState>,
    Auth(caller): Auth,
    base: BaseUrl,
    Path(request_id): Path<String>,
) -> Result<Response, ApiError> {
    let job = state.service.get(&caller, &request_id).await?;
    let (id, partials_state, partials_base) = (job.id, state.clone(), base.0.clone());
    let partials = run_stream::partials(state.clone(), &job).filter_map(move |p| {
        let urls = UrlRenderer::new(&partials_state, &partials_base);
        std::future::ready(crate::present::sse::partial(&urls.output(id, &p)).map(Ok))
    });
    let render_state = state.clone();
    let mut last_status = None;
    let mut logs_sent = 0;
    let stream = live::events(state, job, true, move |snap| {
        let mut out = Vec::new();
        for line in snap.logs.iter().flatten().skip(logs_sent) {
            out.extend(crate::present::sse::log(&log_entry(line)));
            logs_sent += 1;
        }
        if last_status != Some(snap.job.status) {
            let inv = invocation(&snap.job, &UrlRenderer::new(&render_state, &base.0));
            out.extend(crate::present::sse::status(&inv));
            last_status = Some(snap.job.status);
        }
        out
    });
    // The partials come beside the job's news; the stream ends with the terminal status.
    let stream = futures::stream::select(
        stream
            .map(Some)
            .chain(futures::stream::once(std::future::ready(None))),
        partials.map(Some),
    )
    .take_while(|event| std::future::ready(event.is_some()))
    .filter_map(std::future::ready);
    Ok(Sse::new(stream)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response())
}
