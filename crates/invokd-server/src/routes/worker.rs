//! The worker protocol (docs/workers.md): take, heartbeat, files, partial, complete, fail and
//! release, with a worker token. Thin: each handler turns the wire body into the worker
//! service's call and its answer back.

use std::time::Duration;

use axum::{
    Json,
    body::Body,
    extract::{Path, State},
    http::{HeaderMap, StatusCode, header},
    response::IntoResponse,
};
use chrono::Utc;
use invokd_api::{
    ErrorCode,
    error_code::ErrorBody,
    worker::{
        CompleteRequest, DEFAULT_TAKE_WAIT_MS, EndedResponse, FailRequest, FileUpload,
        HeartbeatRequest, HeartbeatResponse, LEASE_HEADER, MAX_TAKE_JOBS, MAX_TAKE_WAIT_MS,
        PartialRequest, PresignRequest, PresignedUpload, ReleaseRequest, StoredFile, TakeRequest,
        TakeResponse, TakenJob, WorkerInfo, WorkerLogLine, WorkerProgress,
    },
};
use invokd_core::{
    JobStatus,
    provider::LogLine,
    run_updates::Progress,
    workers::{HeldBeat, Hello, Taken},
};

use crate::{
    error::ApiError,
    extract::{BaseUrl, JsonBody, WorkerAuth},
    state::AppState,
};

fn hello(w: WorkerInfo) -> Hello {
    Hello {
        id: w.id,
        name: w.name,
        version: w.version,
        models: w.models,
        slots: w.slots,
        labels: w.labels,
    }
}

fn log_lines(lines: Vec<WorkerLogLine>) -> Vec<LogLine> {
    lines
        .into_iter()
        .map(|l| LogLine {
            message: l.message,
            level: l
                .level
                .map_or_else(|| "INFO".to_owned(), |s| s.to_ascii_uppercase()),
            timestamp: l.timestamp.unwrap_or_else(Utc::now),
        })
        .collect()
}

fn progress(p: WorkerProgress) -> Progress {
    Progress {
        step: p.step.unwrap_or(0),
        total: p.total,
        message: p.message,
    }
}

fn status_name(s: JobStatus) -> String {
    s.as_str().to_owned()
}

fn taken_job(state: &AppState, base: &str, t: Taken) -> TakenJob {
    let files = &state.workers.config();
    TakenJob {
        id: t.job.id.to_string(),
        model: t.job.model_id.clone(),
        input: (*t.job.input).clone(),
        attempt: t.job.attempt,
        lease: t.lease.to_string(),
        lease_expires_at: t.lease_expires_at,
        heartbeat_every_ms: u64::try_from(state.workers.heartbeat_every().as_millis())
            .unwrap_or(u64::MAX),
        kind: t.model.kind.as_str().to_owned(),
        output: serde_json::to_value(&t.model.output).unwrap_or_default(),
        files: FileUpload {
            upload_url: format!("{base}/v1/worker/jobs/{}/files", t.job.id),
            presign: state.workers.presigns(),
            max_bytes: files.max_file_bytes,
        },
    }
}

// `POST /v1/worker/take`: a long poll for up to `free` jobs of the worker's models.
#[utoipa::path(post, path = "/v1/worker/take", operation_id = "worker_take", tag = "workers", request_body = TakeRequest,
    responses(
        (status = 200, description = "the jobs taken (none when the wait ended without one)", body = TakeResponse),
        (status = 400, description = "malformed JSON", body = ErrorBody),
        (status = 401, description = "missing, unknown or revoked worker token", body = ErrorBody),
        (status = 403, description = "models outside the token's", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 422, description = "a field out of its bounds", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn take(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    BaseUrl(base): BaseUrl,
    JsonBody(body): JsonBody<TakeRequest>,
) -> Result<Json<TakeResponse>, ApiError> {
    if !(1..=MAX_TAKE_JOBS).contains(&body.free) {
        return Err(ApiError::new(
            ErrorCode::UnprocessableEntity,
            format!(
                "free: must be 1 to {MAX_TAKE_JOBS} (a worker with no free slot does not take)"
            ),
        ));
    }
    let wait_ms = body.wait_ms.unwrap_or(DEFAULT_TAKE_WAIT_MS);
    if wait_ms > MAX_TAKE_WAIT_MS {
        return Err(ApiError::new(
            ErrorCode::UnprocessableEntity,
            format!("wait_ms: at most {MAX_TAKE_WAIT_MS}"),
        ));
    }
    let taken = state
        .workers
        .take(
            &token,
            hello(body.worker),
            body.free,
            Duration::from_millis(wait_ms),
        )
        .await?;
    let jobs = taken
        .into_iter()
        .map(|t| taken_job(&state, &base, t))
        .collect();
    Ok(Json(TakeResponse { jobs }))
}

// `POST /v1/worker/heartbeat`: renews the leases of the jobs held, with their logs and progress.
#[utoipa::path(post, path = "/v1/worker/heartbeat", operation_id = "worker_heartbeat", tag = "workers", request_body = HeartbeatRequest,
    responses(
        (status = 200, description = "leases renewed; jobs to cancel and jobs lost", body = HeartbeatResponse),
        (status = 400, description = "malformed JSON or lease", body = ErrorBody),
        (status = 401, description = "missing, unknown or revoked worker token", body = ErrorBody),
        (status = 403, description = "a job or lease not this token's", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 422, description = "a field out of its bounds", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn heartbeat(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    JsonBody(body): JsonBody<HeartbeatRequest>,
) -> Result<Json<HeartbeatResponse>, ApiError> {
    let held = body
        .jobs
        .into_iter()
        .map(|j| HeldBeat {
            id: j.id,
            lease: j.lease,
            logs: log_lines(j.logs),
            progress: j.progress.map(progress),
        })
        .collect();
    let beats = state
        .workers
        .heartbeat(&token, hello(body.worker), held)
        .await?;
    Ok(Json(HeartbeatResponse {
        lease_expires_at: beats.until.unwrap_or_else(Utc::now),
        cancel: beats.cancel.iter().map(ToString::to_string).collect(),
        lost: beats.lost.iter().map(ToString::to_string).collect(),
    }))
}

// `PUT /v1/worker/jobs/{id}/files/{name}`: stores one output file of a held job.
#[utoipa::path(put, path = "/v1/worker/jobs/{id}/files/{name}", operation_id = "worker_put_file", tag = "workers",
    params(("id" = String, Path), ("name" = String, Path), ("x-invokd-lease" = String, Header)),
    request_body(content = Vec<u8>, content_type = "application/octet-stream"),
    responses(
        (status = 201, description = "stored", body = StoredFile),
        (status = 400, description = "no lease", body = ErrorBody),
        (status = 401, description = "missing, unknown or revoked worker token", body = ErrorBody),
        (status = 403, description = "a job or lease not this token's", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 409, description = "the lease is no longer held", body = ErrorBody),
        (status = 413, description = "the file is over the limit", body = ErrorBody),
        (status = 422, description = "a file name that cannot be used", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn put_file(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    Path((id, name)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Result<impl IntoResponse, ApiError> {
    let lease = headers
        .get(LEASE_HEADER)
        .and_then(|v| v.to_str().ok())
        .ok_or_else(|| {
            ApiError::new(
                ErrorCode::BadRequest,
                format!("send the job's lease in the {LEASE_HEADER} header"),
            )
        })?;
    let run = state.workers.held(&token, &id, lease).await?;
    let limit = state.workers.config().max_file_bytes;
    let over = || {
        ApiError::new(
            ErrorCode::PayloadTooLarge,
            format!("a file may be at most {limit} bytes"),
        )
    };
    let declared = headers
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit) {
        return Err(over());
    }
    let bytes = axum::body::to_bytes(body, usize::try_from(limit).unwrap_or(usize::MAX))
        .await
        .map_err(|_| over())?;
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .filter(|ct| !ct.is_empty() && *ct != "application/octet-stream");
    let stored = state
        .workers
        .store_file(&run, &name, content_type, bytes)
        .await?;
    Ok((
        StatusCode::CREATED,
        Json(StoredFile {
            url: stored.url,
            file_name: stored.file_name,
            content_type: stored.content_type,
            file_size: stored.file_size,
        }),
    ))
}

// `PUT /v1/worker/jobs/{id}/files`: a file without a name.
pub async fn unnamed_file(WorkerAuth(_): WorkerAuth) -> ApiError {
    ApiError::new(
        ErrorCode::UnprocessableEntity,
        "a file needs a name: PUT /v1/worker/jobs/{id}/files/{name}",
    )
}

// `POST /v1/worker/jobs/{id}/files/{name}/presign`: a presigned PUT straight to the bucket.
#[utoipa::path(post, path = "/v1/worker/jobs/{id}/files/{name}/presign", operation_id = "worker_presign_file", tag = "workers",
    params(("id" = String, Path), ("name" = String, Path)), request_body = PresignRequest,
    responses(
        (status = 400, description = "malformed JSON or lease", body = ErrorBody),
        (status = 401, description = "missing, unknown or revoked worker token", body = ErrorBody),
        (status = 403, description = "a job or lease not this token's", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 200, description = "where to PUT the file", body = PresignedUpload),
        (status = 409, description = "the lease is no longer held", body = ErrorBody),
        (status = 422, description = "a body of the wrong shape", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn presign(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    Path((id, name)): Path<(String, String)>,
    JsonBody(body): JsonBody<PresignRequest>,
) -> Result<Json<PresignedUpload>, ApiError> {
    let run = state.workers.held(&token, &id, &body.lease).await?;
    let (url, put_url) = state.workers.presign(&run, &name)?;
    let ttl = chrono::Duration::from_std(state.workers.config().presign_ttl).unwrap_or_default();
    Ok(Json(PresignedUpload {
        url,
        put_url,
        headers: [("content-type".to_owned(), body.content_type)].into(),
        expires_at: Utc::now() + ttl,
    }))
}

// `POST /v1/worker/jobs/{id}/partial`: an intermediate result for the job's readers.
#[utoipa::path(post, path = "/v1/worker/jobs/{id}/partial", operation_id = "worker_partial", tag = "workers",
    params(("id" = String, Path)), request_body = PartialRequest,
    responses(
        (status = 400, description = "malformed JSON or lease", body = ErrorBody),
        (status = 401, description = "missing, unknown or revoked worker token", body = ErrorBody),
        (status = 403, description = "a job or lease not this token's", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 202, description = "passed on to the job's readers"),
        (status = 409, description = "the lease is no longer held", body = ErrorBody),
        (status = 422, description = "names files not of this attempt", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn partial(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<PartialRequest>,
) -> Result<StatusCode, ApiError> {
    let run = state.workers.held(&token, &id, &body.lease).await?;
    state.workers.partial(&run, body.output)?;
    Ok(StatusCode::ACCEPTED)
}

// `POST /v1/worker/jobs/{id}/complete`: ends the job with its output, checked first.
#[utoipa::path(post, path = "/v1/worker/jobs/{id}/complete", operation_id = "worker_complete", tag = "workers",
    params(("id" = String, Path)), request_body = CompleteRequest,
    responses(
        (status = 400, description = "malformed JSON or lease", body = ErrorBody),
        (status = 401, description = "missing, unknown or revoked worker token", body = ErrorBody),
        (status = 403, description = "a job or lease not this token's", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 200, description = "the job's status now", body = EndedResponse),
        (status = 409, description = "the lease is no longer held: nothing changed", body = ErrorBody),
        (status = 422, description = "the output does not match the model's: nothing changed", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn complete(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<CompleteRequest>,
) -> Result<Json<EndedResponse>, ApiError> {
    let run = state.workers.held(&token, &id, &body.lease).await?;
    let status = state
        .workers
        .complete(run, body.output, log_lines(body.logs))
        .await?;
    Ok(Json(EndedResponse {
        status: status_name(status),
    }))
}

// `POST /v1/worker/jobs/{id}/fail`: ends the attempt with an error.
#[utoipa::path(post, path = "/v1/worker/jobs/{id}/fail", operation_id = "worker_fail", tag = "workers",
    params(("id" = String, Path)), request_body = FailRequest,
    responses(
        (status = 400, description = "malformed JSON or lease", body = ErrorBody),
        (status = 401, description = "missing, unknown or revoked worker token", body = ErrorBody),
        (status = 403, description = "a job or lease not this token's", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 200, description = "the job's status now", body = EndedResponse),
        (status = 409, description = "the lease is no longer held: nothing changed", body = ErrorBody),
        (status = 422, description = "a body of the wrong shape", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn fail(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<FailRequest>,
) -> Result<Json<EndedResponse>, ApiError> {
    let e = body.error;
    if e.message.trim().is_empty() || e.message.len() > 10_000 {
        return Err(ApiError::new(
            ErrorCode::UnprocessableEntity,
            "error.message: must be 1 to 10,000 characters",
        ));
    }
    let run = state.workers.held(&token, &id, &body.lease).await?;
    let status = state
        .workers
        .fail(run, e.error_type, e.message, e.retry, log_lines(body.logs))
        .await?;
    Ok(Json(EndedResponse {
        status: status_name(status),
    }))
}

// `POST /v1/worker/jobs/{id}/release`: hands the job back without using its attempt.
#[utoipa::path(post, path = "/v1/worker/jobs/{id}/release", operation_id = "worker_release", tag = "workers",
    params(("id" = String, Path)), request_body = ReleaseRequest,
    responses(
        (status = 400, description = "malformed JSON or lease", body = ErrorBody),
        (status = 401, description = "missing, unknown or revoked worker token", body = ErrorBody),
        (status = 403, description = "a job or lease not this token's", body = ErrorBody),
        (status = 404, description = "no such job", body = ErrorBody),
        (status = 415, description = "not JSON", body = ErrorBody),
        (status = 200, description = "the job's status now", body = EndedResponse),
        (status = 409, description = "the lease is no longer held", body = ErrorBody),
        (status = 422, description = "a body of the wrong shape", body = ErrorBody),
    ),
    security(("bearer" = [])))]
pub async fn release(
    State(state): State<AppState>,
    WorkerAuth(token): WorkerAuth,
    Path(id): Path<String>,
    JsonBody(body): JsonBody<ReleaseRequest>,
) -> Result<Json<EndedResponse>, ApiError> {
    let run = state.workers.held(&token, &id, &body.lease).await?;
    let status = state.workers.release(run).await?;
    Ok(Json(EndedResponse {
        status: status_name(status),
    }))
}
