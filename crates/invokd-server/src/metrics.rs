//! Prometheus metrics: counters and histograms recorded where things happen, queue gauges read
//! from the store when `/metrics` is scraped. Names follow Prometheus conventions (`_total`,
//! `_seconds`, base units).

use std::{
    collections::HashMap,
    sync::{LazyLock, OnceLock, RwLock},
};

use axum::{extract::State, http::header, response::IntoResponse};
use chrono::Utc;
use metrics_exporter_prometheus::{Matcher, PrometheusBuilder, PrometheusHandle};

use crate::{error::ApiError, state::AppState};

/// Bucket bounds for durations in seconds: 1 ms to 10 min.
const DURATION_BUCKETS: [f64; 16] = [
    0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 120.0,
    600.0,
];

static HANDLE: OnceLock<Option<PrometheusHandle>> = OnceLock::new();

/// Installs the process's recorder once; later calls reuse it.
pub fn install() -> Option<&'static PrometheusHandle> {
    HANDLE
        .get_or_init(|| {
            let builder = PrometheusBuilder::new()
                .set_buckets_for_metric(Matcher::Suffix("_seconds".into()), &DURATION_BUCKETS)
                .ok()?;
            match builder.install_recorder() {
                Ok(h) => Some(h),
                Err(e) => {
                    tracing::warn!(error = %e, "metrics are off: cannot install the recorder");
                    None
                }
            }
        })
        .as_ref()
}

/// A request served: counted and timed by route (the route's template, not the raw path).
pub fn http_request(route: &str, method: &str, status: u16, seconds: f64) {
    let method = method_label(method);
    let handles = RequestHandles::of(route, method, status);
    handles.requests.increment(1);
    handles.duration.record(seconds);
}

/// A client may send any method name: one label for the others keeps the series bounded.
fn method_label(method: &str) -> &'static str {
    match method {
        "GET" => "GET",
        "POST" => "POST",
        "PUT" => "PUT",
        "DELETE" => "DELETE",
        "PATCH" => "PATCH",
        "HEAD" => "HEAD",
        "OPTIONS" => "OPTIONS",
        _ => "OTHER",
    }
}

/// The handles of one route, method and status, registered once: looking them up by label
/// values on every request cost a few allocations and a hash of the labels each time.
#[derive(Clone)]
struct RequestHandles {
    method: &'static str,
    status: u16,
    requests: metrics::Counter,
    duration: metrics::Histogram,
}

/// Handles by route, then a short list by method and status.
static REQUEST_HANDLES: LazyLock<RwLock<HashMap<String, Vec<RequestHandles>>>> =
    LazyLock::new(Default::default);

impl RequestHandles {
    fn of(route: &str, method: &'static str, status: u16) -> Self {
        let found = |list: &Vec<Self>| {
            list.iter()
                .find(|h| h.status == status && h.method == method)
                .cloned()
        };
        if let Ok(known) = REQUEST_HANDLES.read()
            && let Some(h) = known.get(route).and_then(found)
        {
            return h;
        }
        let h = Self::register(route, method, status);
        // Before the recorder is installed the handles do nothing: not worth keeping.
        let installed = HANDLE.get().is_some_and(Option::is_some);
        if installed && let Ok(mut known) = REQUEST_HANDLES.write() {
            let list = known.entry(route.to_owned()).or_default();
            if found(list).is_none() {
                list.push(h.clone());
            }
        }
        h
    }

    fn register(route: &str, method: &'static str, status: u16) -> Self {
        let labels = [
            ("route", route.to_owned()),
            ("method", method.to_owned()),
            ("status", status.to_string()),
        ];
        let requests = metrics::counter!("invokd_http_requests_total", &labels);
        let labels = [("route", route.to_owned()), ("method", method.to_owned())];
        let duration = metrics::histogram!("invokd_http_request_duration_seconds", &labels);
        Self {
            method,
            status,
            requests,
            duration,
        }
    }
}

pub fn job_submitted(model: &str) {
    metrics::counter!("invokd_jobs_submitted_total", "model" => model.to_owned()).increment(1);
}

pub fn job_started(model: &str, provider: &str, queue_wait_seconds: f64) {
    metrics::histogram!("invokd_job_queue_wait_seconds", "model" => model.to_owned(), "provider" => provider.to_owned())
        .record(queue_wait_seconds);
}

pub fn job_finished(model: &str, provider: &str, status: &str, run_seconds: f64) {
    metrics::counter!("invokd_jobs_finished_total", "model" => model.to_owned(), "status" => status.to_owned())
        .increment(1);
    metrics::histogram!("invokd_job_run_seconds", "model" => model.to_owned(), "provider" => provider.to_owned())
        .record(run_seconds);
}

pub fn provider_error(provider: &str, error_type: &str) {
    metrics::counter!("invokd_provider_errors_total", "provider" => provider.to_owned(), "error_type" => error_type.to_owned())
        .increment(1);
}

pub fn webhook_attempt(outcome: &str) {
    metrics::counter!("invokd_webhook_deliveries_total", "outcome" => outcome.to_owned())
        .increment(1);
}

/// A connection opened (`1`) or closed (`-1`) under the cap on connections.
pub fn connection_open(change: f64) {
    metrics::gauge!("invokd_http_connections_open").increment(change);
}

/// A connection refused because every place under the cap was taken.
pub fn connection_refused() {
    metrics::counter!("invokd_http_connections_refused_total").increment(1);
}

pub fn store_operation(op: &'static str, seconds: f64) {
    metrics::histogram!("invokd_store_operation_duration_seconds", "operation" => op)
        .record(seconds);
}

/// The lifecycle's reports as job metrics, labelled with the provider each model runs on.
pub struct JobMetrics {
    pub providers: std::sync::Arc<crate::provider_routes::Providers>,
}

impl invokd_core::lifecycle::LifecycleObserver for JobMetrics {
    fn claimed(&self, job: &invokd_core::Job, waited: std::time::Duration) {
        let provider = self.providers.name_for(&job.model_id);
        job_started(&job.model_id, provider, waited.as_secs_f64());
    }

    fn run_failed(&self, job: &invokd_core::Job, error_type: &str) {
        provider_error(self.providers.name_for(&job.model_id), error_type);
    }

    fn finished(&self, job: &invokd_core::Job, status: &'static str, ran: std::time::Duration) {
        let provider = self.providers.name_for(&job.model_id);
        job_finished(&job.model_id, provider, status, ran.as_secs_f64());
    }

    fn store_time(&self, op: &'static str, took: std::time::Duration) {
        store_operation(op, took.as_secs_f64());
    }
}

/// Times a store call.
pub async fn timed<T>(op: &'static str, f: impl std::future::Future<Output = T>) -> T {
    let start = std::time::Instant::now();
    let out = f.await;
    store_operation(op, start.elapsed().as_secs_f64());
    out
}

/// `GET /metrics`: the Prometheus text format.
pub async fn render(State(state): State<AppState>) -> Result<impl IntoResponse, ApiError> {
    let stats = timed("queue_stats", state.service.queue_stats()).await?;
    let now = Utc::now();
    // Every catalog model gets its gauges, so a queue that emptied reads 0, not its last value.
    for model in state.service.catalog().iter() {
        let s = stats.iter().find(|s| s.model_id == model.id);
        let label = || [("model", model.id.clone())];
        metrics::gauge!("invokd_queue_depth", &label()).set(s.map_or(0.0, |s| s.queued as f64));
        metrics::gauge!("invokd_jobs_running", &label()).set(s.map_or(0.0, |s| s.running as f64));
        let age = s
            .and_then(|s| s.oldest_queued)
            .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
        metrics::gauge!("invokd_queue_oldest_age_seconds", &label()).set(age);
    }
    // What an autoscaler of workers needs beside the queue: per model they serve, the workers
    // heard from lately and their free slots.
    let capacity = timed("workers", state.workers.capacity_by_model()).await?;
    for (model, connected, free) in capacity {
        let label = [("model", model)];
        metrics::gauge!("invokd_workers_connected", &label).set(connected as f64);
        metrics::gauge!("invokd_worker_free_slots", &label).set(free as f64);
    }
    let body = install().map(PrometheusHandle::render).unwrap_or_default();
    Ok((
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        body,
    ))
}
