//! Jobs as fal's queue surface shows them: three statuses, the request URLs, logs and metrics.
//!
//! Failed and cancelled jobs are `COMPLETED` with `error` and `error_type`, because fal's JS
//! client polls until `COMPLETED` and Python's rejects any other status string.

use invokd_api::fal_queue::{LogEntry, QueueState, QueueStatus, SubmitResponse};
use invokd_core::{Job, JobStatus, provider::LogLine};
use serde_json::{Map, Value, json};

/// The URLs of one request. They use the app-only path (`/{owner}/{app}/requests/{id}`), which
/// both fal clients build themselves; the full model path is accepted too.
pub struct RequestUrls {
    pub response_url: String,
    pub status_url: String,
    pub cancel_url: String,
}

/// `owner/app` of a model id `owner/app[/sub/path]`.
pub fn app_of(model_id: &str) -> &str {
    match model_id.match_indices('/').nth(1) {
        Some((i, _)) => &model_id[..i],
        None => model_id,
    }
}

impl RequestUrls {
    pub fn new(base_url: &str, job: &Job) -> Self {
        let response_url = format!("{base_url}/{}/requests/{}", app_of(&job.model_id), job.id);
        Self {
            status_url: format!("{response_url}/status"),
            cancel_url: format!("{response_url}/cancel"),
            response_url,
        }
    }
}

pub fn state(s: JobStatus) -> QueueState {
    match s {
        JobStatus::Queued => QueueState::InQueue,
        JobStatus::InProgress => QueueState::InProgress,
        JobStatus::Completed | JobStatus::Failed | JobStatus::Canceled => QueueState::Completed,
    }
}

pub fn submit_response(job: &Job, base_url: &str, queue_position: u64) -> SubmitResponse {
    let urls = RequestUrls::new(base_url, job);
    SubmitResponse {
        status: state(job.status),
        request_id: job.id.to_string(),
        gateway_request_id: job.id.to_string(),
        response_url: urls.response_url,
        status_url: urls.status_url,
        cancel_url: urls.cancel_url,
        queue_position,
    }
}

pub fn log_entry(l: &LogLine) -> LogEntry {
    LogEntry {
        message: l.message.clone(),
        level: l.level.clone(),
        source: "USER".into(),
        timestamp: l
            .timestamp
            .to_rfc3339_opts(chrono::SecondsFormat::Millis, true),
    }
}

/// The status object. `logs` is `Some` when the client asked for logs.
pub fn queue_status(
    job: &Job,
    base_url: &str,
    queue_position: Option<u64>,
    logs: Option<&[LogLine]>,
) -> QueueStatus {
    let urls = RequestUrls::new(base_url, job);
    let done = job.status.is_terminal();
    let metrics = done.then(|| {
        let mut m = Map::new();
        if let (Some(start), Some(end)) = (job.started_at, job.completed_at) {
            let secs = (end - start).num_microseconds().unwrap_or(0) as f64 / 1e6;
            m.insert("inference_time".into(), json!(secs));
        }
        m
    });
    let error = job
        .error
        .as_ref()
        .filter(|_| job.status != JobStatus::Completed);
    QueueStatus {
        status: state(job.status),
        request_id: job.id.to_string(),
        response_url: urls.response_url,
        status_url: urls.status_url,
        cancel_url: urls.cancel_url,
        queue_position: if job.status == JobStatus::Queued {
            Some(queue_position.unwrap_or(0))
        } else {
            None
        },
        logs: logs.map(|l| l.iter().map(log_entry).collect()),
        metrics,
        error: error.map(|e| e.message.clone()),
        error_type: error.map(|e| e.error_type.clone()),
    }
}

/// The HTTP status fal gives a finished job's result when the job failed: the model's own
/// failure class (protocol.md 2.8).
pub fn failure_status(error_type: &str) -> u16 {
    match error_type {
        "request_timeout" | "startup_timeout" => 504,
        "runner_scheduling_failure"
        | "runner_connection_timeout"
        | "runner_disconnected"
        | "runner_connection_refused"
        | "runner_connection_error" => 503,
        "runner_incomplete_response" => 502,
        "client_disconnected" | "client_cancelled" => 499,
        "bad_request" => 400,
        "concurrent_requests_limit" => 429,
        _ => 500,
    }
}

/// The body of a failed job's result: `{"detail": message, "error_type": type}`.
pub fn failure_body(job: &Job) -> Value {
    let (message, error_type) = job
        .error
        .as_ref()
        .map(|e| (e.message.as_str(), e.error_type.as_str()))
        .unwrap_or(("the request failed", "internal_error"));
    json!({"detail": message, "error_type": error_type})
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_is_the_first_two_segments() {
        assert_eq!(app_of("fal-ai/flux/schnell"), "fal-ai/flux");
        assert_eq!(app_of("fal-ai/fast-sdxl"), "fal-ai/fast-sdxl");
        assert_eq!(app_of("fal-ai/recraft/v2/text-to-image"), "fal-ai/recraft");
    }
}
