//! The HTTP core of [`Client`]: its builder, and one place where requests are sent, retried,
//! traced and their answers turned into types or [`ClientError`]s.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use invokd_api::error_code::ErrorBody;
use reqwest::{
    Method, StatusCode,
    header::{self, HeaderMap, HeaderName, HeaderValue},
};
use serde::de::DeserializeOwned;

use crate::{
    ClientError,
    retry::{Retry, RetryPolicy, retry_after},
    trace::{self, TraceEvent, TraceSink},
};

/// Builds a [`Client`]: retries, timeouts and tracing.
#[derive(Clone)]
pub struct ClientBuilder {
    base_url: String,
    token: String,
    retry: RetryPolicy,
    timeout: Duration,
    connect_timeout: Duration,
    trace: Option<TraceSink>,
    user_agent: String,
}

impl ClientBuilder {
    /// Retries of 429, 5xx and network failures (default: 5 retries, 1 s doubling to 30 s).
    pub fn retry(mut self, policy: RetryPolicy) -> Self {
        self.retry = policy;
        self
    }

    /// Time limit of one request and its answer (default 90 s). Event streams have none; they
    /// are watched for silence instead.
    pub fn timeout(mut self, t: Duration) -> Self {
        self.timeout = t;
        self
    }

    /// Time limit of connecting (default 10 s).
    pub fn connect_timeout(mut self, t: Duration) -> Self {
        self.connect_timeout = t;
        self
    }

    /// Calls `sink` with each request, answer, retry and note, secrets redacted.
    pub fn trace(mut self, sink: impl Fn(&TraceEvent) + Send + Sync + 'static) -> Self {
        self.trace = Some(Arc::new(sink));
        self
    }

    /// The `User-Agent` header (default `invokd-client/<version>`).
    pub fn user_agent(mut self, ua: impl Into<String>) -> Self {
        self.user_agent = ua.into();
        self
    }

    pub fn build(self) -> Result<Client, ClientError> {
        let base = self.base_url.trim().trim_end_matches('/').to_owned();
        let parsed = reqwest::Url::parse(&base).map_err(|e| ClientError::InvalidUrl {
            url: self.base_url.clone(),
            reason: e.to_string(),
        })?;
        if !matches!(parsed.scheme(), "http" | "https") {
            return Err(ClientError::InvalidUrl {
                url: self.base_url,
                reason: "the API URL must start with http:// or https://".into(),
            });
        }
        let http = reqwest::Client::builder()
            .user_agent(self.user_agent)
            .connect_timeout(self.connect_timeout)
            .build()
            .map_err(|e| ClientError::network(&base, e))?;
        Ok(Client {
            inner: Arc::new(Inner {
                http,
                base,
                token: self.token,
                retry: self.retry,
                timeout: self.timeout,
                trace: self.trace,
            }),
        })
    }
}

/// A client for one invokd server (or DigitalOcean's async-invoke API) and one key.
///
/// Cheap to clone. Every call retries 429s, 5xx answers and network failures as its
/// [`RetryPolicy`] says; creates carry an `Idempotency-Key`, so a retried create never makes
/// two jobs.
#[derive(Clone)]
pub struct Client {
    inner: Arc<Inner>,
}

struct Inner {
    http: reqwest::Client,
    base: String,
    token: String,
    retry: RetryPolicy,
    timeout: Duration,
    trace: Option<TraceSink>,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("base_url", &self.inner.base)
            .field("token", &trace::REDACTED)
            .field("retry", &self.inner.retry)
            .finish_non_exhaustive()
    }
}

/// One request as the client sends it, possibly several times.
pub(crate) struct Call {
    pub method: Method,
    pub url: String,
    pub body: Option<Vec<u8>>,
    pub headers: Vec<(HeaderName, String)>,
    /// Whether to send the client's key (not to signed file URLs).
    pub auth: bool,
    pub retry: Retry,
    /// Whether the request has a time limit (streams have none).
    pub limited: bool,
    /// Retries of this call, when not the client's policy.
    pub max_retries: Option<u32>,
}

impl Call {
    pub fn new(method: Method, url: String) -> Self {
        Self {
            method,
            url,
            body: None,
            headers: Vec::new(),
            auth: true,
            retry: Retry::Safe,
            limited: true,
            max_retries: None,
        }
    }

    pub fn json(mut self, body: &impl serde::Serialize) -> Self {
        self.body = serde_json::to_vec(body).ok();
        self
    }

    pub fn header(mut self, name: HeaderName, value: impl Into<String>) -> Self {
        self.headers.push((name, value.into()));
        self
    }
}

/// A whole answer.
pub(crate) struct Answer {
    pub status: StatusCode,
    pub bytes: Bytes,
    /// What the server asked for in `Retry-After`.
    pub retry_after: Option<Duration>,
}

/// What [`Client::send`] got: a whole answer, or a 2xx one with its body still to read.
enum Sent {
    Whole(Answer),
    Open(reqwest::Response),
}

impl Client {
    /// A client with the default retries and timeouts.
    pub fn new(base_url: &str, token: &str) -> Result<Self, ClientError> {
        Self::builder(base_url, token).build()
    }

    pub fn builder(base_url: &str, token: &str) -> ClientBuilder {
        ClientBuilder {
            base_url: base_url.to_owned(),
            token: token.to_owned(),
            retry: RetryPolicy::default(),
            timeout: Duration::from_secs(90),
            connect_timeout: Duration::from_secs(10),
            trace: None,
            user_agent: concat!("invokd-client/", env!("CARGO_PKG_VERSION")).to_owned(),
        }
    }

    /// The same server and settings with another key (e.g. the admin token).
    pub fn with_token(&self, token: &str) -> Self {
        Self {
            inner: Arc::new(Inner {
                http: self.inner.http.clone(),
                base: self.inner.base.clone(),
                token: token.to_owned(),
                retry: self.inner.retry,
                timeout: self.inner.timeout,
                trace: self.inner.trace.clone(),
            }),
        }
    }

    pub fn base_url(&self) -> &str {
        &self.inner.base
    }

    pub fn retry_policy(&self) -> RetryPolicy {
        self.inner.retry
    }

    pub(crate) fn url(&self, path: &str) -> String {
        format!("{}{path}", self.inner.base)
    }

    pub(crate) fn note(&self, text: impl Into<String>) {
        self.emit(&TraceEvent::Note(text.into()));
    }

    fn emit(&self, ev: &TraceEvent) {
        if let Some(t) = &self.inner.trace {
            t(ev);
        }
    }

    fn request(&self, call: &Call) -> reqwest::RequestBuilder {
        let mut req = self.inner.http.request(call.method.clone(), &call.url);
        if call.limited {
            req = req.timeout(self.inner.timeout);
        }
        if call.auth {
            req = req.header(
                header::AUTHORIZATION,
                format!("Bearer {}", self.inner.token),
            );
        }
        for (k, v) in &call.headers {
            req = req.header(k, v);
        }
        if let Some(b) = &call.body {
            req = req
                .header(header::CONTENT_TYPE, "application/json")
                .body(b.clone());
        }
        req
    }

    fn trace_request(&self, call: &Call, attempt: u32) {
        if self.inner.trace.is_none() {
            return;
        }
        let mut h = HeaderMap::new();
        if call.auth {
            h.insert(
                header::AUTHORIZATION,
                HeaderValue::from_static("Bearer <redacted>"),
            );
        }
        if call.body.is_some() {
            h.insert(
                header::CONTENT_TYPE,
                HeaderValue::from_static("application/json"),
            );
        }
        for (k, v) in &call.headers {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.append(k.clone(), v);
            }
        }
        self.emit(&TraceEvent::Request {
            method: call.method.clone(),
            url: call.url.clone(),
            attempt,
            headers: trace::headers(&h),
            body: call
                .body
                .as_deref()
                .map(|b| trace::body(b, &self.inner.token)),
        });
    }

    fn trace_response(
        &self,
        call: &Call,
        status: StatusCode,
        headers: &HeaderMap,
        started: std::time::Instant,
        body: Option<&[u8]>,
    ) {
        if self.inner.trace.is_none() {
            return;
        }
        self.emit(&TraceEvent::Response {
            method: call.method.clone(),
            url: call.url.clone(),
            status,
            elapsed: started.elapsed(),
            headers: trace::headers(headers),
            body: body.map(|b| trace::body(b, &self.inner.token)),
        });
    }

    /// Waits before retry `retry` (0-based), saying why.
    async fn backoff(&self, call: &Call, retry: u32, reason: String, after: Option<Duration>) {
        let policy = self.inner.retry;
        let wait = policy.wait(retry, after);
        self.emit(&TraceEvent::Retry {
            method: call.method.clone(),
            url: call.url.clone(),
            reason,
            wait,
            attempt: retry + 1,
            max_retries: policy.max_retries,
        });
        tokio::time::sleep(wait).await;
    }

    /// Sends `call` and reads the whole answer, retrying as the policy allows. The last
    /// answer is returned whatever its status.
    pub(crate) async fn fetch(&self, call: &Call) -> Result<Answer, ClientError> {
        match self.send(call, false).await? {
            Sent::Whole(a) => Ok(a),
            Sent::Open(res) => Err(ClientError::Unexpected {
                status: res.status(),
                text: "an unread answer".into(),
            }),
        }
    }

    /// Sends `call` and returns the answer with its body unread (streams, downloads). Retries
    /// as [`Client::fetch`] does until a 2xx or a final failure; an error answer is read and
    /// returned as an error.
    pub(crate) async fn open(&self, call: &Call) -> Result<reqwest::Response, ClientError> {
        match self.send(call, true).await? {
            Sent::Open(res) => Ok(res),
            Sent::Whole(a) => Err(error_of(a.status, &a.bytes)),
        }
    }

    /// The one loop of sending, retrying and tracing. With `stream`, a 2xx answer is returned
    /// unread; every other answer is read whole (to trace it and decide on a retry).
    async fn send(&self, call: &Call, stream: bool) -> Result<Sent, ClientError> {
        let max = call.max_retries.unwrap_or(self.inner.retry.max_retries);
        let mut retry = 0;
        loop {
            self.trace_request(call, retry + 1);
            let (sent, retry_after) = match self.attempt(call, stream).await {
                Ok(Sent::Whole(a)) if retry < max && call.retry.status(a.status) => {
                    (a.status.to_string(), a.retry_after)
                }
                Ok(sent) => return Ok(sent),
                Err(e) if retry < max && call.retry.network(&e) => {
                    (ClientError::network(&call.url, e).to_string(), None)
                }
                Err(e) => return Err(ClientError::network(&call.url, e)),
            };
            self.backoff(call, retry, sent, retry_after).await;
            retry += 1;
        }
    }

    /// One try of `call`, traced.
    async fn attempt(&self, call: &Call, stream: bool) -> Result<Sent, reqwest::Error> {
        let started = std::time::Instant::now();
        let res = self.request(call).send().await?;
        let status = res.status();
        if stream && status.is_success() {
            self.trace_response(call, status, res.headers(), started, None);
            return Ok(Sent::Open(res));
        }
        let headers = res.headers().clone();
        let bytes = res.bytes().await?;
        self.trace_response(call, status, &headers, started, Some(&bytes));
        Ok(Sent::Whole(Answer {
            status,
            bytes,
            retry_after: retry_after(&headers),
        }))
    }

    /// Sends `call` and decodes a 2xx answer as `T`.
    pub(crate) async fn json<T: DeserializeOwned>(&self, call: &Call) -> Result<T, ClientError> {
        let a = self.fetch(call).await?;
        if !a.status.is_success() {
            return Err(error_of(a.status, &a.bytes));
        }
        serde_json::from_slice(&a.bytes).map_err(|e| ClientError::Unexpected {
            status: a.status,
            text: format!(
                "{e}: {}",
                String::from_utf8_lossy(&a.bytes[..a.bytes.len().min(2000)])
            ),
        })
    }

    /// Sends `call` and expects a 2xx answer with nothing to read in it.
    pub(crate) async fn empty(&self, call: &Call) -> Result<(), ClientError> {
        let a = self.fetch(call).await?;
        if a.status.is_success() {
            Ok(())
        } else {
            Err(error_of(a.status, &a.bytes))
        }
    }
}

/// The error of a non-2xx answer: DigitalOcean's body, fal's `{"detail"}`, or the raw text.
pub(crate) fn error_of(status: StatusCode, bytes: &[u8]) -> ClientError {
    if let Ok(body) = serde_json::from_slice::<ErrorBody>(bytes) {
        return ClientError::Api { status, body };
    }
    if let Ok(v) = serde_json::from_slice::<serde_json::Value>(bytes)
        && let Some(detail) = v.get("detail")
    {
        let message = detail
            .as_str()
            .map(str::to_owned)
            .unwrap_or_else(|| detail.to_string());
        return ClientError::Api {
            status,
            body: ErrorBody {
                id: status
                    .canonical_reason()
                    .unwrap_or("error")
                    .to_ascii_lowercase()
                    .replace(' ', "_"),
                message,
                request_id: None,
            },
        };
    }
    let text = String::from_utf8_lossy(&bytes[..bytes.len().min(2000)]).into_owned();
    ClientError::Unexpected {
        status,
        text: if text.trim().is_empty() {
            status.canonical_reason().unwrap_or("no body").to_owned()
        } else {
            text
        },
    }
}
