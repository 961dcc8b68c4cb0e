//! The fal provider: runs jobs on fal's real models through fal's queue protocol
//! (protocol.md section 2): submit once, follow by webhook or polling, fetch the result,
//! re-host its files.
//!
//! A job is submitted at most once, whatever crashes: a marker is stored before the POST and
//! fal's request id right after it; a later attempt that finds the id resumes the request, and
//! one that finds only the marker fails with `upstream_submission_unknown` instead of risking a
//! second submission (fal documents no idempotency key). A model that streams runs on fal's
//! streaming endpoint instead, its events relayed (`stream.rs`), under the same rule.

mod breaker;
mod client;
mod errors;
mod rehost;
mod stream;
pub mod webhook;

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::Duration,
};

use async_trait::async_trait;
use chrono::Utc;
use invokd_core::{
    UpstreamRef,
    provider::{Provider, ProviderError, Retry, RunContext, RunOutput, RunRequest},
    service::PRIORITY_NORMAL,
};
use reqwest::{Method, StatusCode};
use serde_json::Value;
use tokio::sync::{Notify, Semaphore};
use tokio_util::sync::CancellationToken;

pub use breaker::BreakerState;
use client::{Answer, CallError, FalClient, Resend};
pub use webhook::{WebhookError, WebhookHeaders};

/// The provider's name in routes, logs and `models list`.
pub const NAME: &str = "fal";

/// How invokd talks to fal.
#[derive(Clone)]
pub struct FalConfig {
    /// `FAL_KEY`: `key_id:key_secret`, sent as `Authorization: Key …`.
    pub key: String,
    /// fal's queue, `https://queue.fal.run`.
    pub queue_url: String,
    /// fal's run host, `https://fal.run`: the streaming endpoint of models that stream.
    pub run_url: String,
    /// fal's webhook keys.
    pub jwks_url: String,
    /// Where fal should POST when a request ends (`?fal_webhook=`); polling only without it.
    pub webhook_url: Option<String>,
    /// Download output files into invokd's blob store and rewrite their URLs.
    pub rehost: bool,
    /// fal requests in flight at once; further runs wait for a slot.
    pub max_concurrency: usize,
    /// Tries per HTTP call (429, 5xx, timeouts, dropped connections are tried again).
    pub retries: u32,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// Time limit of one HTTP call.
    pub request_timeout: Duration,
    /// First status poll delay; it doubles up to `poll_max`.
    pub poll_interval: Duration,
    pub poll_max: Duration,
    /// The longest poll delay when webhooks are on (polling is then only the fallback).
    pub webhook_poll_max: Duration,
    /// Consecutive failures that open the circuit breaker.
    pub breaker_threshold: u32,
    /// How long the breaker stays open before a call may probe fal again.
    pub breaker_open_for: Duration,
}

impl std::fmt::Debug for FalConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // The key never reaches a log.
        f.debug_struct("FalConfig")
            .field("key", &"<redacted>")
            .field("queue_url", &self.queue_url)
            .field("run_url", &self.run_url)
            .field("jwks_url", &self.jwks_url)
            .field("webhook_url", &self.webhook_url)
            .field("rehost", &self.rehost)
            .field("max_concurrency", &self.max_concurrency)
            .finish_non_exhaustive()
    }
}

impl FalConfig {
    /// fal's real endpoints and the defaults for them.
    pub fn new(key: impl Into<String>) -> Self {
        Self {
            key: key.into(),
            queue_url: "https://queue.fal.run".into(),
            run_url: "https://fal.run".into(),
            jwks_url: "https://rest.alpha.fal.ai/.well-known/jwks.json".into(),
            webhook_url: None,
            rehost: true,
            max_concurrency: 16,
            retries: 6,
            backoff_base: Duration::from_millis(500),
            backoff_max: Duration::from_secs(30),
            request_timeout: Duration::from_secs(30),
            poll_interval: Duration::from_millis(500),
            poll_max: Duration::from_secs(5),
            webhook_poll_max: Duration::from_secs(30),
            breaker_threshold: 5,
            breaker_open_for: Duration::from_secs(30),
        }
    }
}

/// A setting that cannot work.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FalSetupError {
    #[error("FAL_KEY is empty")]
    EmptyKey,
    #[error("the fal {what} URL {url:?} is not an http(s) URL")]
    BadUrl { what: &'static str, url: String },
    #[error("cannot build the HTTP client: {0}")]
    Http(#[from] reqwest::Error),
}

/// The fal upstream provider.
pub struct FalProvider {
    config: Arc<FalConfig>,
    client: FalClient,
    slots: Semaphore,
    jwks: webhook::Jwks,
    /// Runs waiting on fal, by fal's request id: a verified webhook wakes them.
    waiting: Mutex<HashMap<String, Arc<Notify>>>,
}

/// fal's status answer (protocol.md 2.4).
#[derive(Debug, Default, serde::Deserialize)]
struct Status {
    status: String,
    #[serde(default)]
    queue_position: Option<u64>,
    #[serde(default)]
    logs: Option<Vec<FalLog>>,
    #[serde(default)]
    error: Option<String>,
    #[serde(default)]
    error_type: Option<String>,
}

#[derive(Debug, serde::Deserialize)]
struct FalLog {
    message: String,
    #[serde(default)]
    level: Option<String>,
}

/// Removes a run from `waiting` when it stops waiting, however it ends.
struct Waiting<'a> {
    map: &'a Mutex<HashMap<String, Arc<Notify>>>,
    request_id: String,
}

impl Drop for Waiting<'_> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.map.lock() {
            m.remove(&self.request_id);
        }
    }
}

fn check_url(what: &'static str, url: &str) -> Result<(), FalSetupError> {
    if url.starts_with("http://") || url.starts_with("https://") {
        Ok(())
    } else {
        Err(FalSetupError::BadUrl {
            what,
            url: url.to_owned(),
        })
    }
}

impl FalProvider {
    pub fn new(mut config: FalConfig) -> Result<Self, FalSetupError> {
        if config.key.trim().is_empty() {
            return Err(FalSetupError::EmptyKey);
        }
        config.queue_url = config.queue_url.trim_end_matches('/').to_owned();
        check_url("queue", &config.queue_url)?;
        config.run_url = config.run_url.trim_end_matches('/').to_owned();
        check_url("run", &config.run_url)?;
        check_url("JWKS", &config.jwks_url)?;
        if let Some(w) = &config.webhook_url {
            check_url("webhook", w)?;
        }
        let config = Arc::new(config);
        let client = FalClient::new(config.clone())?;
        let jwks_http = reqwest::Client::builder()
            .timeout(config.request_timeout)
            .build()?;
        Ok(Self {
            slots: Semaphore::new(config.max_concurrency.max(1)),
            jwks: webhook::Jwks::new(jwks_http, config.jwks_url.clone()),
            client,
            config,
            waiting: Mutex::new(HashMap::new()),
        })
    }

    /// The circuit breaker's state, for health and tests.
    pub fn breaker_state(&self) -> BreakerState {
        self.client.breaker.state()
    }

    /// A webhook from fal: verified against fal's keys, then it wakes the run waiting on that
    /// request (if it runs in this process; others find out by polling). `Ok(true)` if a run
    /// was woken.
    pub async fn webhook(&self, h: &WebhookHeaders, body: &[u8]) -> Result<bool, WebhookError> {
        if self.config.webhook_url.is_none() {
            return Err(WebhookError::Disabled);
        }
        self.jwks.verify(h, body, Utc::now().timestamp()).await?;
        let waiter = h
            .request_id
            .as_ref()
            .and_then(|id| self.waiting.lock().ok()?.get(id).cloned());
        match waiter {
            Some(w) => {
                w.notify_one();
                Ok(true)
            }
            None => Ok(false),
        }
    }

    /// What every first sending of a job does: checks that fal may be called and that the
    /// start deadline leaves time (its seconds left, for `X-Fal-Request-Timeout`), then stores
    /// the marker that makes any later attempt refuse to send it again.
    async fn before_sending(
        &self,
        what: &str,
        req: &RunRequest,
        ctx: &RunContext,
    ) -> Result<Option<String>, ProviderError> {
        if !self.client.breaker.allows() {
            return Err(errors::from_call(what, CallError::BreakerOpen));
        }
        let timeout = match req.start_deadline {
            None => None,
            Some(deadline) => {
                let left = (deadline - Utc::now()).num_milliseconds() as f64 / 1000.0;
                // fal wants more than a second; less than that cannot start in time anyway.
                if left <= 1.0 {
                    return Err(ProviderError::permanent(
                        "request_timeout",
                        "the request's start deadline passed before it could be sent to fal",
                    ));
                }
                Some(format!("{left:.1}"))
            }
        };
        let marker = UpstreamRef {
            provider: NAME.into(),
            request_id: None,
            status_url: None,
            response_url: None,
            cancel_url: None,
        };
        ctx.set_upstream(Some(&marker)).await?;
        Ok(timeout)
    }

    /// The reference of fal's request `request_id` of a model: the queue's URLs for it, those
    /// of fal's answer where it gives them.
    fn upstream_ref(&self, model_id: &str, request_id: String, answer: &Value) -> UpstreamRef {
        let app = app_path(model_id);
        let base = format!("{}/{app}/requests/{request_id}", self.config.queue_url);
        let url_or = |k: &str, default: String| answer[k].as_str().map_or(default, str::to_owned);
        UpstreamRef {
            provider: NAME.into(),
            status_url: Some(url_or("status_url", format!("{base}/status"))),
            response_url: Some(url_or("response_url", base.clone())),
            cancel_url: Some(url_or("cancel_url", format!("{base}/cancel"))),
            request_id: Some(request_id),
        }
    }

    /// Submits the job, storing a marker before and fal's reference after.
    async fn submit(
        &self,
        req: &RunRequest,
        ctx: &RunContext,
    ) -> Result<UpstreamRef, ProviderError> {
        let timeout = self.before_sending("submission", req, ctx).await?;

        let url = format!("{}/{}", self.config.queue_url, req.model.id);
        let priority = if req.priority > PRIORITY_NORMAL {
            "low"
        } else {
            "normal"
        };
        let build = || {
            let mut b = self
                .client
                .queue(Method::POST, &url)
                .header("x-fal-queue-priority", priority)
                .json(&req.input);
            if let Some(t) = &timeout {
                b = b.header("x-fal-request-timeout", t);
            }
            if let Some(w) = &self.config.webhook_url {
                b = b.query(&[("fal_webhook", w)]);
            }
            b
        };
        // Never stopped half-way: a submission cut off is one whose fate is unknown. A cancel
        // is passed upstream once the request id is stored.
        let answer = self
            .client
            .send(
                "submission",
                build,
                Resend::IfNotTaken,
                &CancellationToken::new(),
            )
            .await;
        let answer = match answer {
            Ok(a) => a,
            Err(CallError::Transport {
                message,
                maybe_sent: true,
            }) => {
                // The marker stays: any later attempt fails the same way, never resubmits.
                return Err(unknown_submission(&message));
            }
            Err(e) => {
                // fal did not take it: clear the marker so a later attempt may submit.
                ctx.set_upstream(None).await?;
                let mut err = errors::from_call("submission", e);
                // Failing fal opened the breaker: the job waits without using an attempt.
                if err.retry == Retry::Yes && !self.client.breaker.allows() {
                    err.retry = Retry::Later;
                }
                return Err(err);
            }
        };
        let body = answer.json();
        let Some(request_id) = body["request_id"]
            .as_str()
            .map(str::to_owned)
            .or_else(|| header(&answer, "x-fal-request-id"))
        else {
            return Err(unknown_submission("fal's answer has no request_id"));
        };
        // Python's client follows the returned URLs; they are rebuilt when missing.
        let upstream = self.upstream_ref(&req.model.id, request_id, &body);
        ctx.set_upstream(Some(&upstream)).await?;
        tracing::info!(request_id = ?upstream.request_id, model = %req.model.id, "submitted to fal");
        ctx.log(
            "INFO",
            format!(
                "submitted to fal as request {}",
                upstream.request_id.as_deref().unwrap_or_default()
            ),
        )
        .await;
        Ok(upstream)
    }

    /// Follows the request until it ends: woken by webhooks, polling with backoff.
    async fn follow(&self, up: &UpstreamRef, ctx: &RunContext) -> Result<RunOutput, ProviderError> {
        let request_id = up.request_id.clone().unwrap_or_default();
        let wake = Arc::new(Notify::new());
        if let Ok(mut m) = self.waiting.lock() {
            m.insert(request_id.clone(), wake.clone());
        }
        let _waiting = Waiting {
            map: &self.waiting,
            request_id: request_id.clone(),
        };
        let max = if self.config.webhook_url.is_some() {
            self.config.webhook_poll_max
        } else {
            self.config.poll_max
        };
        let (mut delay, mut failures) = (self.config.poll_interval, 0u32);
        let (mut logs_seen, mut last_position, mut running) = (0usize, None, false);
        loop {
            if ctx.cancel.is_cancelled() {
                return Err(self.cancel_upstream(up, ctx).await);
            }
            let mut wait = delay;
            match self.status(up, ctx).await {
                Ok(st) => {
                    failures = 0;
                    let logs = st.logs.unwrap_or_default();
                    for l in logs.iter().skip(logs_seen) {
                        ctx.log(l.level.as_deref().unwrap_or("INFO"), l.message.clone())
                            .await;
                    }
                    logs_seen = logs_seen.max(logs.len());
                    match st.status.as_str() {
                        "IN_QUEUE" if st.queue_position != last_position => {
                            last_position = st.queue_position;
                            let p = st.queue_position.unwrap_or(0);
                            ctx.log("INFO", format!("waiting in fal's queue at position {p}"))
                                .await;
                        }
                        "IN_PROGRESS" if !running => {
                            running = true;
                            ctx.log("INFO", "running on fal").await;
                        }
                        "COMPLETED" => {
                            if st.error.is_some() || st.error_type.is_some() {
                                let e = errors::from_completed(
                                    st.error.as_deref(),
                                    st.error_type.as_deref(),
                                );
                                if e.retry == Retry::Yes {
                                    // The request is over upstream: another attempt submits anew.
                                    ctx.set_upstream(None).await?;
                                }
                                return Err(e);
                            }
                            if let Some(out) = self.result(up, ctx).await? {
                                return Ok(out);
                            }
                        }
                        _ => {}
                    }
                }
                Err(CallError::Stopped) => continue,
                Err(CallError::Status(a))
                    if a.status.is_client_error() && a.status != StatusCode::TOO_MANY_REQUESTS =>
                {
                    return Err(errors::from_answer("status request", &a));
                }
                Err(e) => {
                    // fal is failing or the breaker is open: the request may well be fine, so
                    // keep waiting (the run's time limit bounds it).
                    failures += 1;
                    tracing::warn!(request_id, error = %e, "fal status unavailable; waiting");
                    wait = self.client.backoff(failures).max(delay);
                }
            }
            tokio::select! {
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                () = ctx.cancel.cancelled() => {}
            }
            delay = (delay * 2).min(max);
        }
    }

    async fn status(&self, up: &UpstreamRef, ctx: &RunContext) -> Result<Status, CallError> {
        let url = up.status_url.clone().unwrap_or_default();
        let a = self
            .client
            .send(
                "status request",
                || self.client.queue(Method::GET, &url).query(&[("logs", "1")]),
                Resend::Always,
                &ctx.cancel,
            )
            .await?;
        Ok(serde_json::from_slice(&a.body).unwrap_or_else(|_| Status::default()))
    }

    /// The output, or `None` when fal says it is not ready yet.
    async fn result(
        &self,
        up: &UpstreamRef,
        ctx: &RunContext,
    ) -> Result<Option<RunOutput>, ProviderError> {
        let url = up.response_url.clone().unwrap_or_default();
        let answer = self
            .client
            .send(
                "result request",
                || self.client.queue(Method::GET, &url),
                Resend::Always,
                &ctx.cancel,
            )
            .await;
        let a = match answer {
            Ok(a) => a,
            Err(CallError::Status(a))
                if a.status == StatusCode::BAD_REQUEST
                    && String::from_utf8_lossy(&a.body).contains("in progress") =>
            {
                return Ok(None);
            }
            Err(CallError::Stopped) => return Ok(None),
            Err(e) => return Err(errors::from_call("result request", e)),
        };
        let Value::Object(mut output) = a.json() else {
            return Err(ProviderError::transient(
                "upstream_bad_answer",
                "fal's result is not a JSON object",
            ));
        };
        if self.config.rehost {
            let n = rehost::rehost(&self.client, &mut output, ctx, "").await?;
            if n > 0 {
                ctx.log("INFO", format!("copied {n} output file(s) from fal"))
                    .await;
            }
        }
        Ok(Some(RunOutput { output }))
    }

    /// Passes a client's cancel to fal (best effort) and returns the run's error.
    async fn cancel_upstream(&self, up: &UpstreamRef, ctx: &RunContext) -> ProviderError {
        let url = up.cancel_url.clone().unwrap_or_default();
        // `ctx.cancel` has fired: the call gets its own token; the dispatcher's grace bounds it.
        let sent = self
            .client
            .send(
                "cancel request",
                || self.client.queue(Method::PUT, &url),
                Resend::Always,
                &CancellationToken::new(),
            )
            .await;
        match sent {
            Ok(a) => {
                tracing::info!(request_id = ?up.request_id, status = %a.status, "cancel passed to fal")
            }
            Err(e) => {
                tracing::warn!(request_id = ?up.request_id, error = %e, "passing the cancel to fal failed")
            }
        }
        ctx.log("INFO", "cancel passed to fal").await;
        cancelled()
    }
}

/// The error of a run the client cancelled.
fn cancelled() -> ProviderError {
    let e = invokd_core::job::cancelled_error();
    ProviderError::permanent(e.error_type, e.message)
}

fn header(a: &Answer, name: &str) -> Option<String> {
    a.headers.get(name)?.to_str().ok().map(str::to_owned)
}

fn unknown_submission(why: &str) -> ProviderError {
    ProviderError::permanent(
        "upstream_submission_unknown",
        format!(
            "the submission to fal may or may not have been taken ({why}); the job is failed \
             rather than risk running it twice upstream"
        ),
    )
}

/// `owner/app` of a model id: fal's status, result and cancel URLs use only these
/// (`workflows/` and `comfy/` ids add one segment).
fn app_path(model_id: &str) -> String {
    let parts: Vec<&str> = model_id.split('/').collect();
    let n = if matches!(parts.first(), Some(&"workflows" | &"comfy")) {
        3
    } else {
        2
    };
    parts.iter().take(n).copied().collect::<Vec<_>>().join("/")
}

#[async_trait]
impl Provider for FalProvider {
    fn name(&self) -> &'static str {
        NAME
    }

    async fn run(&self, req: RunRequest, ctx: RunContext) -> Result<RunOutput, ProviderError> {
        let _slot = tokio::select! {
            s = self.slots.acquire() => s.map_err(|_| ProviderError::transient("internal_error", "the fal provider is closed"))?,
            () = ctx.cancel.cancelled() => return Err(cancelled()),
        };
        let upstream = match req.upstream.clone().filter(|u| u.provider == NAME) {
            Some(u) if u.request_id.is_some() => {
                tracing::info!(job_id = %req.job_id, request_id = ?u.request_id, "resuming the fal request");
                ctx.log(
                    "INFO",
                    format!(
                        "resuming fal request {}",
                        u.request_id.as_deref().unwrap_or_default()
                    ),
                )
                .await;
                u
            }
            Some(_) => {
                return Err(unknown_submission(
                    "an earlier attempt stopped between sending it and storing fal's answer",
                ));
            }
            None if req.model.streaming => return self.stream(&req, &ctx).await,
            None => self.submit(&req, &ctx).await?,
        };
        self.follow(&upstream, &ctx).await
    }

    fn available(&self) -> bool {
        self.client.breaker.allows()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn app_paths_drop_sub_paths() {
        assert_eq!(app_path("fal-ai/flux/schnell"), "fal-ai/flux");
        assert_eq!(app_path("fal-ai/fast-sdxl"), "fal-ai/fast-sdxl");
        assert_eq!(app_path("workflows/me/flow/x"), "workflows/me/flow");
    }
}
