//! Waiting for a job: live events over SSE (`GET /v1/async-invoke/{id}/events`) where the
//! server offers them, polling otherwise, with the queue position while the job is queued.

use std::{pin::Pin, time::Duration};

use eventsource_stream::Eventsource as _;
use futures::{Stream, StreamExt as _};
use invokd_api::{
    async_invoke::{Invocation, Status},
    fal_queue::LogEntry,
};
use reqwest::{Method, StatusCode, header};
use serde::Deserialize;
use tokio::time::Instant;

use crate::{Client, ClientError, client::Call};

/// What happens to a job while it is waited for.
#[derive(Debug, Clone, PartialEq)]
#[non_exhaustive]
pub enum WaitEvent {
    /// The job, when first seen and at each change of status.
    Status(Invocation),
    /// A log line of the run.
    Log(LogEntry),
    /// How many queued jobs start before this one (only while it is queued, and only when
    /// asked for with [`WaitOptions::queue_position`]).
    QueuePosition(u64),
}

/// How [`Client::wait_with`] waits.
#[derive(Debug, Clone)]
pub struct WaitOptions {
    /// Give up after this long (the job goes on). None: wait as long as it takes.
    pub timeout: Option<Duration>,
    /// Between two polls, and between two queue-position reads.
    pub poll_interval: Duration,
    /// Use the live event stream when the server has one (else poll).
    pub use_events: bool,
    /// Report the queue position while queued (read from the server's fal surface).
    pub queue_position: bool,
    /// A stream silent for this long is reconnected (the server sends a keep-alive every 15 s).
    pub idle_timeout: Duration,
}

impl Default for WaitOptions {
    fn default() -> Self {
        Self {
            timeout: None,
            poll_interval: Duration::from_secs(1),
            use_events: true,
            queue_position: false,
            idle_timeout: Duration::from_secs(45),
        }
    }
}

/// The live events of one job; see [`Client::events`].
pub type EventStream = Pin<Box<dyn Stream<Item = Result<WaitEvent, ClientError>> + Send>>;

#[derive(Deserialize)]
struct QueueStatus {
    #[serde(default)]
    queue_position: Option<u64>,
}

/// Reads the queue position every `every` while the job is queued.
struct QueueTracker {
    enabled: bool,
    last: Option<u64>,
    due: Instant,
    every: Duration,
}

impl QueueTracker {
    fn wanted(&self, status: Status) -> bool {
        self.enabled && status == Status::Queued
    }

    async fn poll(
        &mut self,
        client: &Client,
        model_id: &str,
        request_id: &str,
        on_event: &mut impl FnMut(&WaitEvent),
    ) {
        self.due = Instant::now() + self.every;
        match client.queue_position(model_id, request_id).await {
            Ok(Some(p)) if self.last != Some(p) => {
                self.last = Some(p);
                on_event(&WaitEvent::QueuePosition(p));
            }
            Ok(_) => {}
            Err(e) => {
                client.note(format!(
                    "no queue position for {request_id} ({e}); not asking again"
                ));
                self.enabled = false;
            }
        }
    }
}

impl Client {
    /// `GET /v1/async-invoke/{id}/events`: the job's status at each change and its log lines,
    /// ending after the terminal status. Each connection starts with the current status and
    /// every log line so far.
    pub async fn events(&self, request_id: &str) -> Result<EventStream, ClientError> {
        let url = self.endpoint(&["v1", "async-invoke", request_id, "events"], &[]);
        let mut call = Call::new(Method::GET, url).header(header::ACCEPT, "text/event-stream");
        call.limited = false;
        let res = self.open(&call).await?;
        let content_type = res
            .headers()
            .get(header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        if !content_type.starts_with("text/event-stream") {
            return Err(ClientError::Unexpected {
                status: res.status(),
                text: format!("expected an event stream, got {content_type:?}"),
            });
        }
        let id = request_id.to_owned();
        let stream = res.bytes_stream().eventsource().filter_map(move |ev| {
            let out = match ev {
                Err(e) => Some(Err(ClientError::Stream {
                    request_id: id.clone(),
                    reason: e.to_string(),
                })),
                Ok(ev) => {
                    let bad = |e: serde_json::Error| ClientError::Stream {
                        request_id: id.clone(),
                        reason: format!("bad {} event: {e}", ev.event),
                    };
                    match ev.event.as_str() {
                        "status" => Some(
                            serde_json::from_str(&ev.data)
                                .map(WaitEvent::Status)
                                .map_err(bad),
                        ),
                        "log" => Some(
                            serde_json::from_str(&ev.data)
                                .map(WaitEvent::Log)
                                .map_err(bad),
                        ),
                        _ => None,
                    }
                }
            };
            std::future::ready(out)
        });
        Ok(Box::pin(stream))
    }

    /// How many queued jobs start before this one, read from the fal surface's status
    /// (`GET /{owner}/{app}/requests/{id}/status`); None once it is not queued. Not retried.
    pub async fn queue_position(
        &self,
        model_id: &str,
        request_id: &str,
    ) -> Result<Option<u64>, ClientError> {
        let mut parts = model_id.split('/').filter(|p| !p.is_empty());
        let owner = parts.next().unwrap_or("fal-ai");
        let app = parts.next().unwrap_or("app");
        let url = self.endpoint(&[owner, app, "requests", request_id, "status"], &[]);
        let mut call = Call::new(Method::GET, url);
        call.max_retries = Some(0);
        let q: QueueStatus = self.json(&call).await?;
        Ok(q.queue_position)
    }

    /// Waits until the job is finished and returns it with its output (a FAILED or CANCELED job
    /// is returned too: look at its `status`). `timeout` None: as long as it takes.
    pub async fn wait(
        &self,
        request_id: &str,
        timeout: Option<Duration>,
    ) -> Result<Invocation, ClientError> {
        let opts = WaitOptions {
            timeout,
            ..WaitOptions::default()
        };
        self.wait_with(request_id, &opts, |_| {}).await
    }

    /// Waits as [`Client::wait`] does, calling `on_event` with the job's first state, each
    /// change, each log line and (if asked) each new queue position.
    pub async fn wait_with(
        &self,
        request_id: &str,
        opts: &WaitOptions,
        mut on_event: impl FnMut(&WaitEvent),
    ) -> Result<Invocation, ClientError> {
        let waiting = self.wait_inner(request_id, opts, &mut on_event);
        match opts.timeout {
            None => waiting.await,
            Some(t) => {
                tokio::time::timeout(t, waiting)
                    .await
                    .map_err(|_| ClientError::Timeout {
                        request_id: request_id.to_owned(),
                        timeout: t,
                    })?
            }
        }
    }

    async fn wait_inner(
        &self,
        id: &str,
        opts: &WaitOptions,
        on_event: &mut impl FnMut(&WaitEvent),
    ) -> Result<Invocation, ClientError> {
        let first = self.get(id).await?;
        let model = first.model_id.clone();
        let mut last = first.status;
        on_event(&WaitEvent::Status(first.clone()));
        if last.is_terminal() {
            return Ok(first);
        }
        let mut queue = QueueTracker {
            enabled: opts.queue_position,
            last: None,
            due: Instant::now(),
            every: opts.poll_interval,
        };
        let mut use_events = opts.use_events;
        let mut logs_seen = 0usize;
        let mut failures = 0u32;
        loop {
            if !use_events {
                if queue.wanted(last) && Instant::now() >= queue.due {
                    queue.poll(self, &model, id, on_event).await;
                }
                let inv = self.status(id).await?;
                if inv.status != last {
                    last = inv.status;
                    on_event(&WaitEvent::Status(inv.clone()));
                }
                if last.is_terminal() {
                    return self.get(id).await;
                }
                tokio::time::sleep(opts.poll_interval).await;
                continue;
            }
            let mut stream = match self.events(id).await {
                Ok(s) => s,
                Err(e) if events_not_served(&e) => {
                    self.note(format!(
                        "{id}: the server has no event stream ({e}); polling"
                    ));
                    use_events = false;
                    continue;
                }
                Err(e) => return Err(e),
            };
            // The server sends every log line again on each connection.
            let mut skip_logs = logs_seen;
            loop {
                let next = tokio::select! {
                    n = tokio::time::timeout(opts.idle_timeout, stream.next()) => n,
                    () = tokio::time::sleep_until(queue.due), if queue.wanted(last) => {
                        queue.poll(self, &model, id, on_event).await;
                        continue;
                    }
                };
                match next {
                    Err(_) => {
                        self.note(format!(
                            "{id}: no event for {:?}; reconnecting",
                            opts.idle_timeout
                        ));
                        break;
                    }
                    Ok(None) => break,
                    Ok(Some(Err(e))) => {
                        self.note(format!("{e}; reconnecting"));
                        break;
                    }
                    Ok(Some(Ok(ev))) => {
                        failures = 0;
                        match &ev {
                            WaitEvent::Log(_) if skip_logs > 0 => {
                                skip_logs -= 1;
                                continue;
                            }
                            WaitEvent::Log(_) => logs_seen += 1,
                            WaitEvent::Status(inv) if inv.status == last => continue,
                            WaitEvent::Status(inv) => last = inv.status,
                            WaitEvent::QueuePosition(_) => {}
                        }
                        on_event(&ev);
                        if last.is_terminal() {
                            return self.get(id).await;
                        }
                    }
                }
            }
            failures += 1;
            let policy = self.retry_policy();
            if failures > policy.max_retries {
                self.note(format!(
                    "{id}: the event stream failed {failures} times; polling instead"
                ));
                use_events = false;
            } else {
                tokio::time::sleep(policy.wait(failures - 1, None)).await;
            }
        }
    }
}

/// Whether an error opening the stream means the server has no such route.
fn events_not_served(e: &ClientError) -> bool {
    match e {
        ClientError::Unexpected { .. } => true,
        ClientError::Api { status, .. } => matches!(
            *status,
            StatusCode::NOT_FOUND
                | StatusCode::METHOD_NOT_ALLOWED
                | StatusCode::NOT_ACCEPTABLE
                | StatusCode::NOT_IMPLEMENTED
        ),
        _ => false,
    }
}
