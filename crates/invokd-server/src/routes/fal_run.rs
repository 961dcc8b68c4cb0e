//! fal's run host on invokd's port (`fal_path::RUN_PREFIX`): a synchronous run, answered with
//! the model's output when the job ends, and the streaming endpoint, answered with the job's
//! partial outputs as server-sent events, then its output. Each is a job like any other: stored
//! first, listed, read on both surfaces; a client that goes away leaves it to finish.

use std::{convert::Infallible, time::Duration};

use axum::{
    extract::State,
    response::{
        IntoResponse, Response,
        sse::{Event, KeepAlive, Sse},
    },
};
use futures::StreamExt;
use invokd_api::ErrorCode;
use invokd_core::{Job, JobStatus};

use super::fal_queue::{ModelCall, ended, submit_job, with_request_id};
use crate::{
    error::ApiError,
    openapi::{FalError, SseEvent},
    present::{UrlRenderer, fal_queue::failure_body, sse},
    run_stream::{self, Step},
    state::AppState,
};

/// How long one wait for the job lasts before it is read again.
const WAIT: Duration = Duration::from_secs(60);

// `POST /run/{owner}/{app}` (and, undocumented, `POST /run/{owner}/{app}/{*path}` for a model
// with a sub-path): runs the model and answers as fal's result does once the job has ended.
#[utoipa::path(post, path = "/run/{owner}/{app}", operation_id = "fal_run", tag = "fal-queue",
    params(("owner" = String, Path), ("app" = String, Path),
           ("fal_webhook" = Option<String>, Query),
           ("X-Fal-Queue-Priority" = Option<String>, Header, description = "normal or low"),
           ("X-Fal-Request-Timeout" = Option<String>, Header, description = "seconds to start before the job fails"),
           ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = Object, description = "the model's input"),
    responses(
        (status = 200, description = "the model's output, once the job has ended", body = Object),
        (status = 400, description = "malformed JSON or header, or the job failed with bad input", body = FalError),
        (status = 401, description = "missing or invalid key", body = FalError),
        (status = 404, description = "unknown model", body = FalError),
        (status = 413, description = "body too large", body = FalError),
        (status = 415, description = "not JSON", body = FalError),
        (status = 422, description = "invalid input or header", body = FalError),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = FalError),
        (status = 499, description = "cancelled", body = FalError),
        (status = 500, description = "the job failed", body = FalError),
        (status = 503, description = "the job's runner failed", body = FalError),
        (status = 504, description = "the job did not start in time", body = FalError),
    ),
    security(("fal_key" = [])))]
pub async fn run(State(state): State<AppState>, mut call: ModelCall) -> Result<Response, ApiError> {
    let mut job = submit_job(&state, &mut call).await?;
    while !job.status.is_terminal() {
        job = state
            .service
            .wait(&call.caller, &job.id.to_string(), WAIT)
            .await?;
    }
    Ok(with_request_id(ended(&state, &call.base, &job), &job))
}

// `POST /{owner}/{app}/stream` (also under `/run`): fal's streaming endpoint, for models whose
// catalog file says they stream. Each event's data is an output in the model's shape: the run's
// partial outputs as they come, then the final output, after which the stream ends. A run that
// fails ends the stream with `event: error` and fal's error body.
#[utoipa::path(post, path = "/{owner}/{app}/stream", operation_id = "fal_stream_run", tag = "fal-queue",
    params(("owner" = String, Path), ("app" = String, Path),
           ("fal_webhook" = Option<String>, Query),
           ("X-Fal-Queue-Priority" = Option<String>, Header, description = "normal or low"),
           ("X-Fal-Request-Timeout" = Option<String>, Header, description = "seconds to start before the job fails"),
           ("Idempotency-Key" = Option<String>, Header)),
    request_body(content = Object, description = "the model's input"),
    responses(
        (status = 200, description = "SSE: each partial output, then the output; `event: error` if the run fails", content_type = "text/event-stream", body = SseEvent),
        (status = 400, description = "malformed JSON or header", body = FalError),
        (status = 401, description = "missing or invalid key", body = FalError),
        (status = 404, description = "unknown model, or one that does not stream", body = FalError),
        (status = 413, description = "body too large", body = FalError),
        (status = 415, description = "not JSON", body = FalError),
        (status = 422, description = "invalid input or header", body = FalError),
        (status = 429, description = "rate limit or queue cap reached; see Retry-After", body = FalError),
    ),
    security(("fal_key" = [])))]
pub async fn stream(
    State(state): State<AppState>,
    mut call: ModelCall,
) -> Result<Response, ApiError> {
    let model_id = &call.model_id;
    // An unknown model is left to the submission, which names it.
    if let Some(model) = state.service.catalog().get(model_id)
        && !model.streaming
    {
        return Err(ApiError::new(
            ErrorCode::NotFound,
            format!(
                "{model_id} does not stream: run it with POST /run/{model_id} or queue it with \
                 POST /{model_id}"
            ),
        ));
    }
    let job = submit_job(&state, &mut call).await?;
    let base = call.base;
    let events = run_stream::follow(state.clone(), &job).map(move |step| {
        Ok::<_, Infallible>(match step {
            Step::Partial(partial) => {
                sse::fal_output(&UrlRenderer::new(&state, &base).output(job.id, &partial))
            }
            Step::Ended(ended) => last_event(&state, &base, &ended),
        })
    });
    let res = Sse::new(events)
        .keep_alive(KeepAlive::new().interval(Duration::from_secs(15)))
        .into_response();
    Ok(with_request_id(res, &job))
}

/// The event of an ended job: its output, or its failure.
fn last_event(state: &AppState, base: &str, job: &Job) -> Event {
    match (job.status, &job.output) {
        (JobStatus::Completed, Some(output)) => {
            sse::fal_output(&UrlRenderer::new(state, base).output(job.id, output))
        }
        _ => sse::fal_stream_error(&failure_body(job)),
    }
}
