//! RunPod's worker protocol (docs/workers.md, "RunPod workers"): the URLs the `runpod` SDK's
//! environment variables name, answered as the SDK expects, each a call of the worker service.
//! The worker token is the raw `Authorization` value; the worker is `RUNPOD_POD_ID`, in every
//! path; the job ids handed out name the attempt (`<job id>.<attempt>`).

use std::{collections::HashMap, time::Duration};

use axum::{
    Json,
    body::Bytes,
    extract::{Path, Query, State},
    http::StatusCode,
    response::{IntoResponse, Response},
};
use invokd_api::{ErrorCode, worker::MAX_TAKE_JOBS};
use invokd_core::{
    JobStatus,
    provider::LogLine,
    workers::{HeldRun, RunpodJobId, RunpodWorker, WorkerError, error_of},
};
use serde_json::{Map, Value, json};

use crate::{error::ApiError, extract::RunpodAuth, runpod_output, state::AppState};

/// How long job-take holds a request open for a job (the SDK gives up after 90 s).
const TAKE_WAIT: Duration = Duration::from_secs(20);
/// How long job-stop holds a request open for a job to stop.
const STOP_WAIT: Duration = Duration::from_secs(20);

type Params = Query<HashMap<String, String>>;

/// A comma-separated query parameter's items.
fn list(q: &HashMap<String, String>, key: &str) -> Vec<String> {
    q.get(key)
        .map(|v| {
            v.split(',')
                .map(str::trim)
                .filter(|i| !i.is_empty())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

/// The worker a call comes from: its pod id (from the path) and the models and SDK version of
/// its query.
fn worker(pod: String, q: &HashMap<String, String>) -> RunpodWorker {
    RunpodWorker {
        pod,
        models: list(q, "models"),
        version: q.get("runpod_version").cloned(),
    }
}

// `GET /v1/worker/runpod/job-take/{pod}`: one job (`{"id", "input"}`), or 204 after a while.
pub async fn take(
    State(state): State<AppState>,
    RunpodAuth(token): RunpodAuth,
    Path(pod): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let mut jobs = take_jobs(&state, &token, worker(pod, &q), 1).await?;
    Ok(match jobs.pop() {
        Some(job) => Json(job).into_response(),
        None => StatusCode::NO_CONTENT.into_response(),
    })
}

// `GET /v1/worker/runpod/job-take-batch/{pod}?batch_size=N`: up to N jobs, as a list.
pub async fn take_batch(
    State(state): State<AppState>,
    RunpodAuth(token): RunpodAuth,
    Path(pod): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let size = q
        .get("batch_size")
        .and_then(|n| n.parse::<u32>().ok())
        .filter(|n| (1..=MAX_TAKE_JOBS).contains(n))
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("batch_size: must be 1 to {MAX_TAKE_JOBS}"),
            )
        })?;
    let jobs = take_jobs(&state, &token, worker(pod, &q), size).await?;
    Ok(if jobs.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        Json(jobs).into_response()
    })
}

async fn take_jobs(
    state: &AppState,
    token: &invokd_core::workers::WorkerToken,
    worker: RunpodWorker,
    free: u32,
) -> Result<Vec<Value>, ApiError> {
    let taken = state
        .workers
        .runpod_take(token, &worker, free, TAKE_WAIT)
        .await?;
    Ok(taken
        .into_iter()
        .map(|(id, t)| json!({"id": id.to_string(), "input": *t.job.input}))
        .collect())
}

// `GET /v1/worker/runpod/job-stop/{pod}`: `{"jobsToStop": [...]}` once a job it holds is
// cancelled or no longer its own, or 204 after a while.
pub async fn stop(
    State(state): State<AppState>,
    RunpodAuth(token): RunpodAuth,
    Path(pod): Path<String>,
    Query(q): Params,
) -> Result<Response, ApiError> {
    let stops = state
        .workers
        .runpod_stops(&token, &worker(pod, &q), STOP_WAIT)
        .await?;
    Ok(if stops.is_empty() {
        StatusCode::NO_CONTENT.into_response()
    } else {
        let ids: Vec<String> = stops.iter().map(ToString::to_string).collect();
        Json(json!({"jobsToStop": ids})).into_response()
    })
}

// `GET /v1/worker/runpod/ping/{pod}?job_id=a,b`: renews the leases of the jobs listed.
pub async fn ping(
    State(state): State<AppState>,
    RunpodAuth(token): RunpodAuth,
    Path(pod): Path<String>,
    Query(q): Params,
) -> Result<Json<Value>, ApiError> {
    let ids = list(&q, "job_id");
    let beats = state
        .workers
        .runpod_ping(&token, &worker(pod, &q), &ids)
        .await?;
    let names = |ids: &[invokd_core::ids::JobId]| -> Vec<String> {
        ids.iter().map(ToString::to_string).collect()
    };
    Ok(Json(
        json!({"lost": names(&beats.lost), "cancel": names(&beats.cancel)}),
    ))
}

/// The body the SDK posts (JSON, whatever its content type says).
fn body_of(body: &[u8]) -> Result<Map<String, Value>, ApiError> {
    serde_json::from_slice(body).map_err(|e| {
        ApiError::new(
            ErrorCode::BadRequest,
            format!("the body must be a JSON object: {e}"),
        )
    })
}

// `POST /v1/worker/runpod/job-stream/{pod}/{id}`: a generator's yield, a partial output.
pub async fn stream(
    State(state): State<AppState>,
    RunpodAuth(token): RunpodAuth,
    Path((pod, id)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Result<StatusCode, ApiError> {
    let worker = worker(pod, &q);
    let (rid, run) = state.workers.runpod_held(&token, &worker, &id).await?;
    let mut body = body_of(&body)?;
    let output = body.remove("output").unwrap_or(Value::Null);
    state.workers.runpod_streamed(rid, output.clone());
    // A yield in the model's shape (or files) reaches the job's readers; others (text, numbers)
    // are the job's log.
    match runpod_output::shape(&state.workers, &state.fetcher, &run, output.clone()).await {
        Ok(partial) => state.workers.partial(&run, partial)?,
        Err(_) => {
            let line = match &output {
                Value::String(s) => s.clone(),
                other => other.to_string(),
            };
            state
                .workers
                .runpod_progress(&token, &worker, &run, &Value::String(line))
                .await?;
        }
    }
    Ok(StatusCode::OK)
}

// `POST /v1/worker/runpod/job-done/{pod}/{id}?isStream=...`: a progress update
// (`{"status": "IN_PROGRESS", "output": ...}`), or the job's end: `{"output": ...}` or
// `{"error": "..."}`.
pub async fn done(
    State(state): State<AppState>,
    RunpodAuth(token): RunpodAuth,
    Path((pod, id)): Path<(String, String)>,
    Query(q): Params,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let worker = worker(pod, &q);
    let (rid, run) = state.workers.runpod_held(&token, &worker, &id).await?;
    let mut body = body_of(&body)?;
    if body.get("status").and_then(Value::as_str) == Some("IN_PROGRESS") {
        let value = body.remove("output").unwrap_or(Value::Null);
        state
            .workers
            .runpod_progress(&token, &worker, &run, &value)
            .await?;
        return Ok(Json(json!({"status": "IN_PROGRESS"})));
    }
    let mut logs = Vec::new();
    if body.get("stopPod").and_then(Value::as_bool) == Some(true) {
        logs.push(log_line(
            "the worker asked to be refreshed after this job (refresh_worker)",
        ));
    }
    let streamed = q.get("isStream").map(String::as_str) == Some("true");
    let status = match body.remove("error").filter(|e| !e.is_null()) {
        Some(error) => {
            let (message, mut trace) = error_of(&error);
            logs.append(&mut trace);
            state.workers.fail(run, None, message, false, logs).await?
        }
        None => {
            let output = match body.remove("output") {
                // A generator's job-done holds its yields only with return_aggregate_stream.
                Some(Value::Array(mut yields)) if streamed => yields
                    .pop()
                    .or_else(|| state.workers.runpod_last_streamed(rid)),
                None | Some(Value::Null) if streamed => state.workers.runpod_last_streamed(rid),
                other => other,
            };
            finish(&state, &token, &worker, run, output, logs).await?
        }
    };
    state.workers.runpod_finished(&token, &worker, rid);
    Ok(Json(json!({"status": status.as_str()})))
}

fn log_line(message: &str) -> LogLine {
    LogLine {
        message: message.to_owned(),
        level: "INFO".to_owned(),
        timestamp: chrono::Utc::now(),
    }
}

/// Completes the job with the handler's output in the model's shape, or fails it with what is
/// wrong with that output (the SDK would only log a refusal, leaving the job to its lease).
async fn finish(
    state: &AppState,
    token: &invokd_core::workers::WorkerToken,
    worker: &RunpodWorker,
    run: HeldRun,
    output: Option<Value>,
    logs: Vec<LogLine>,
) -> Result<JobStatus, ApiError> {
    let id = RunpodJobId {
        job: run.job.id,
        attempt: run.lease.attempt,
    };
    let shaped = match output {
        None => Err("the handler returned no output".to_owned()),
        Some(v) => runpod_output::shape(&state.workers, &state.fetcher, &run, v).await,
    };
    let problem = match shaped {
        Ok(output) => match state.workers.complete(run, output, logs.clone()).await {
            Ok(status) => return Ok(status),
            Err(WorkerError::Output(p)) => p.to_string(),
            Err(e) => return Err(e.into()),
        },
        Err(problem) => problem,
    };
    let (_, run) = state
        .workers
        .runpod_held(token, worker, &id.to_string())
        .await?;
    Ok(state
        .workers
        .fail(run, Some("output_error".to_owned()), problem, false, logs)
        .await?)
}
