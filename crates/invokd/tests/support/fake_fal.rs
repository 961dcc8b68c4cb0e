//! A fake of fal's queue (protocol.md section 2) for tests: submit, status, result and cancel,
//! the streaming endpoint of its run host (under `/run`: previews, then the output),
//! output files it can delete, signed webhooks with its own JWKS, a count of submissions per
//! prompt, and switches that inject faults (429 bursts, 500s, slow answers, dropped
//! connections, requests that stay in progress, failures with `error_type`).
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::SeqCst},
    },
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    body::Bytes,
    extract::{Path, Query, State},
    http::{HeaderMap, StatusCode},
    response::{IntoResponse, Response},
    routing::{get, post, put},
};
use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

pub const KEY: &str = "fake-key-id:fake-key-secret";
/// The bytes of every output file the fake makes.
pub const FILE: &[u8] = b"\x89PNG\r\n\x1a\nfake fal output";

/// Faults, each one used up as it fires (counts) or on until switched off (flags).
#[derive(Default)]
pub struct Faults {
    /// The next N submissions answer 429 with `Retry-After: retry_after_secs`.
    pub submit_429: AtomicU32,
    pub retry_after_secs: AtomicU32,
    /// The next N submissions answer 500.
    pub submit_500: AtomicU32,
    /// The next N submissions answer 422 (a validation error on `prompt`).
    pub submit_422: AtomicU32,
    /// The next N submissions are taken, then the connection is closed before the answer.
    pub submit_drop: AtomicU32,
    /// The next N status requests answer 500.
    pub status_500: AtomicU32,
    /// The next N status requests close the connection without an answer.
    pub status_drop: AtomicU32,
    /// The next N result requests answer 400 "still in progress", even when it is done.
    pub result_in_progress: AtomicU32,
    /// The next N result requests close the connection without an answer.
    pub result_drop: AtomicU32,
    /// The next N status requests answer after `slow_ms`.
    pub status_slow: AtomicU32,
    pub slow_ms: AtomicU64,
    /// Every queue route answers 503 (fal is down).
    pub down: AtomicBool,
    /// Requests stay IN_PROGRESS until `release`.
    pub hold: AtomicBool,
    /// Requests end `COMPLETED` with this `error` and `error_type`.
    pub fail_with: Mutex<Option<(String, String)>>,
    /// The next N streams close the connection after their first event (the request goes on
    /// upstream and is done on the queue).
    pub stream_cut: AtomicU32,
}

/// Previews a fake stream sends before its output.
pub const STREAM_PREVIEWS: usize = 2;

#[derive(Debug, Clone)]
pub struct Request {
    pub id: String,
    pub model: String,
    pub input: Value,
    pub headers: HashMap<String, String>,
    pub webhook: Option<String>,
    pub polls: u32,
    pub cancelled: bool,
    pub done: bool,
    pub webhook_sent: bool,
}

#[derive(Default)]
pub struct Inner {
    pub faults: Faults,
    pub requests: Mutex<Vec<Request>>,
    /// When each submission arrived (answered or not), for backoff checks.
    pub submit_times: Mutex<Vec<Instant>>,
    /// Every call to a queue route, by kind (`submit`, `status`, `result`, `cancel`).
    pub calls: Mutex<HashMap<&'static str, u32>>,
    pub files: Mutex<HashMap<String, Vec<u8>>>,
    pub base: Mutex<String>,
    pub webhooks_sent: AtomicU32,
}

/// A running fake, on 127.0.0.1.
#[derive(Clone)]
pub struct FakeFal {
    pub url: String,
    pub inner: Arc<Inner>,
    key: Arc<SigningKey>,
}

fn count(c: &AtomicU32) -> bool {
    c.fetch_update(SeqCst, SeqCst, |n| n.checked_sub(1)).is_ok()
}

/// Closes the connection without an answer: the connection's task ends with this "panic",
/// which `resume_unwind` raises without the panic hook's message.
fn drop_connection() -> ! {
    std::panic::resume_unwind(Box::new("fake fal drops the connection"))
}

impl FakeFal {
    pub async fn start() -> Self {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let inner = Arc::new(Inner::default());
        *inner.base.lock().unwrap() = url.clone();
        let fake = Self {
            url,
            inner,
            key: Arc::new(SigningKey::from_bytes(&[42; 32])),
        };
        let app = Router::new()
            .route("/.well-known/jwks.json", get(jwks))
            .route("/cdn/{name}", get(file))
            .route("/{owner}/{app}/requests/{id}/status", get(status))
            .route("/{owner}/{app}/requests/{id}/cancel", put(cancel))
            .route("/{owner}/{app}/requests/{id}", get(result))
            .route("/run/{owner}/{app}/stream", post(stream))
            .route("/{owner}/{app}", post(submit))
            .route("/{owner}/{app}/{*sub}", post(submit_sub))
            .with_state(fake.clone());
        tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
        fake
    }

    pub fn faults(&self) -> &Faults {
        &self.inner.faults
    }

    /// The JWKS URL to give invokd.
    pub fn jwks_url(&self) -> String {
        format!("{}/.well-known/jwks.json", self.url)
    }

    /// invokd's flags to use this fake, with fast retries and polls.
    pub fn args(&self) -> Vec<String> {
        [
            ("--fal-key", KEY.to_owned()),
            ("--fal-queue-url", self.url.clone()),
            ("--fal-run-url", format!("{}/run", self.url)),
            ("--fal-jwks-url", self.jwks_url()),
            ("--fal-backoff-base-ms", "20".into()),
            ("--fal-backoff-max-ms", "200".into()),
            ("--fal-poll-ms", "20".into()),
            ("--fal-poll-max-ms", "100".into()),
            ("--fal-request-timeout-ms", "2000".into()),
        ]
        .into_iter()
        .flat_map(|(k, v)| [k.to_owned(), v])
        .collect()
    }

    /// Submissions whose input has this prompt.
    pub fn submissions(&self, prompt: &str) -> usize {
        self.requests()
            .iter()
            .filter(|r| r.input["prompt"] == prompt)
            .count()
    }

    pub fn requests(&self) -> Vec<Request> {
        self.inner.requests.lock().unwrap().clone()
    }

    pub fn request(&self, prompt: &str) -> Option<Request> {
        self.requests()
            .into_iter()
            .find(|r| r.input["prompt"] == prompt)
    }

    pub fn calls(&self, kind: &str) -> u32 {
        self.inner
            .calls
            .lock()
            .unwrap()
            .get(kind)
            .copied()
            .unwrap_or(0)
    }

    pub fn submit_times(&self) -> Vec<Instant> {
        self.inner.submit_times.lock().unwrap().clone()
    }

    /// Deletes every output file, as fal's retention does.
    pub fn delete_files(&self) {
        self.inner.files.lock().unwrap().clear();
    }

    /// Lets held requests complete, sending their webhooks.
    pub async fn release(&self) {
        self.faults().hold.store(false, SeqCst);
        let ids: Vec<String> = self.requests().into_iter().map(|r| r.id).collect();
        for id in ids {
            self.complete(&id).await;
        }
    }

    /// Waits until `f` holds, for up to 30 s.
    pub async fn wait_for(&self, what: &str, f: impl Fn(&Self) -> bool) {
        let deadline = Instant::now() + Duration::from_secs(30);
        while !f(self) {
            assert!(Instant::now() < deadline, "fake fal: {what} did not happen");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Marks a request done and, if it asked for one, sends its webhook (signed as fal does).
    async fn complete(&self, id: &str) {
        let webhook = {
            let mut reqs = self.inner.requests.lock().unwrap();
            let Some(r) = reqs.iter_mut().find(|r| r.id == id) else {
                return;
            };
            if r.cancelled {
                return;
            }
            r.done = true;
            match (&r.webhook, r.webhook_sent) {
                (Some(w), false) => {
                    r.webhook_sent = true;
                    Some(w.clone())
                }
                _ => None,
            }
        };
        let Some(url) = webhook else { return };
        let body = json!({"request_id": id, "gateway_request_id": id, "status": "OK",
                          "payload": self.output(id)})
        .to_string();
        let ts = chrono::Utc::now().timestamp().to_string();
        let sig = self.sign(id, "fake-user", &ts, body.as_bytes());
        let resp = reqwest::Client::new()
            .post(url)
            .header("content-type", "application/json")
            .header("x-fal-webhook-request-id", id)
            .header("x-fal-webhook-user-id", "fake-user")
            .header("x-fal-webhook-timestamp", &ts)
            .header("x-fal-webhook-signature", sig)
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "invokd refused the fake's webhook");
        self.inner.webhooks_sent.fetch_add(1, SeqCst);
    }

    /// fal's signature: Ed25519 over `request_id\nuser_id\ntimestamp\nhex(sha256(body))`.
    pub fn sign(&self, request_id: &str, user_id: &str, ts: &str, body: &[u8]) -> String {
        let msg = format!(
            "{request_id}\n{user_id}\n{ts}\n{}",
            hex::encode(Sha256::digest(body))
        );
        hex::encode(self.key.sign(msg.as_bytes()).to_bytes())
    }

    fn output(&self, id: &str) -> Value {
        let prompt = self
            .requests()
            .into_iter()
            .find(|r| r.id == id)
            .map(|r| r.input["prompt"].clone())
            .unwrap_or_default();
        json!({
            "images": [{"url": format!("{}/cdn/{id}.png", self.url), "width": 64, "height": 64,
                        "content_type": "image/png"}],
            "timings": {"inference": 0.01},
            "seed": 15860307465884635512u64,
            "has_nsfw_concepts": [false],
            "prompt": prompt,
        })
    }

    /// Records a request fal took, with its output file; its id.
    fn record(
        &self,
        model: String,
        body: &[u8],
        headers: HashMap<String, String>,
        webhook: Option<String>,
        done: bool,
    ) -> String {
        let input: Value = serde_json::from_slice(body).unwrap_or_default();
        let mut requests = self.inner.requests.lock().unwrap();
        let id = uuid_like(requests.len());
        self.inner
            .files
            .lock()
            .unwrap()
            .insert(format!("{id}.png"), FILE.to_vec());
        requests.push(Request {
            id: id.clone(),
            model,
            input,
            headers,
            webhook,
            polls: 0,
            cancelled: false,
            done,
            webhook_sent: false,
        });
        id
    }

    fn request_by_id(&self, id: &str) -> Request {
        self.requests().into_iter().find(|r| r.id == id).unwrap()
    }

    fn call(&self, kind: &'static str) {
        *self.inner.calls.lock().unwrap().entry(kind).or_default() += 1;
    }

    fn urls(&self, app: &str, id: &str) -> Value {
        let base = format!("{}/{app}/requests/{id}", self.url);
        json!({"request_id": id, "response_url": base, "status_url": format!("{base}/status"),
               "cancel_url": format!("{base}/cancel")})
    }
}

async fn jwks(State(f): State<FakeFal>) -> Json<Value> {
    let x =
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(f.key.verifying_key().as_bytes());
    Json(json!({"keys": [{"kty": "OKP", "crv": "Ed25519", "x": x, "kid": "fake"}]}))
}

async fn file(State(f): State<FakeFal>, Path(name): Path<String>) -> Response {
    match f.inner.files.lock().unwrap().get(&name) {
        Some(b) => ([("content-type", "image/png")], b.clone()).into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// fal's 401 for a request without the fake's key.
fn unauthorized(headers: &HeaderMap) -> Option<Response> {
    let key = headers.get("authorization").and_then(|v| v.to_str().ok());
    (key != Some(&format!("Key {KEY}"))).then(|| {
        (
            StatusCode::UNAUTHORIZED,
            Json(json!({"detail": "invalid key credentials"})),
        )
            .into_response()
    })
}

fn down() -> Response {
    (
        StatusCode::SERVICE_UNAVAILABLE,
        [("x-fal-error-type", "runner_scheduling_failure")],
        Json(json!({"detail": "no runner available"})),
    )
        .into_response()
}

async fn submit_sub(
    State(f): State<FakeFal>,
    Path((owner, app, sub)): Path<(String, String, String)>,
    q: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    do_submit(
        f,
        format!("{owner}/{app}/{sub}"),
        format!("{owner}/{app}"),
        q,
        headers,
        body,
    )
    .await
}

async fn submit(
    State(f): State<FakeFal>,
    Path((owner, app)): Path<(String, String)>,
    q: Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    do_submit(
        f,
        format!("{owner}/{app}"),
        format!("{owner}/{app}"),
        q,
        headers,
        body,
    )
    .await
}

async fn do_submit(
    f: FakeFal,
    model: String,
    app: String,
    Query(q): Query<HashMap<String, String>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    f.call("submit");
    f.inner.submit_times.lock().unwrap().push(Instant::now());
    let faults = f.faults();
    if let Some(refused) = unauthorized(&headers) {
        return refused;
    }
    if faults.down.load(SeqCst) || count(&faults.submit_500) {
        return down();
    }
    if count(&faults.submit_429) {
        let secs = faults.retry_after_secs.load(SeqCst).to_string();
        return (
            StatusCode::TOO_MANY_REQUESTS,
            [
                ("retry-after", secs.as_str()),
                ("x-fal-error-type", "concurrent_requests_limit"),
            ],
            Json(json!({"detail": "too many concurrent requests"})),
        )
            .into_response();
    }
    if count(&faults.submit_422) {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"detail": [{"loc": ["body", "prompt"], "msg": "prompt is not allowed",
                                     "type": "value_error"}]}),
            ),
        )
            .into_response();
    }
    let headers = headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_owned(),
                v.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let id = f.record(model, &body, headers, q.get("fal_webhook").cloned(), false);
    if count(&faults.submit_drop) {
        drop_connection();
    }
    let mut v = f.urls(&app, &id);
    v["status"] = json!("IN_QUEUE");
    v["queue_position"] = json!(0);
    ([("x-fal-request-id", id.as_str())], Json(v)).into_response()
}

/// fal's streaming endpoint: `STREAM_PREVIEWS` outputs with a preview file each, then the
/// output (the request is recorded and done, so the queue answers for it too).
async fn stream(
    State(f): State<FakeFal>,
    Path((owner, app)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    f.call("stream");
    if let Some(refused) = unauthorized(&headers) {
        return refused;
    }
    let id = f.record(format!("{owner}/{app}"), &body, HashMap::new(), None, true);
    let prompt = f.request_by_id(&id).input["prompt"].clone();
    let mut events = Vec::new();
    for k in 0..STREAM_PREVIEWS {
        let name = format!("{id}-preview-{k}.png");
        f.inner
            .files
            .lock()
            .unwrap()
            .insert(name.clone(), FILE.to_vec());
        events.push(json!({"images": [{"url": format!("{}/cdn/{name}", f.url),
                                       "content_type": "image/png"}],
                           "prompt": prompt}));
    }
    events.push(f.output(&id));
    let mut chunks: Vec<Result<Bytes, std::io::Error>> = events
        .iter()
        .map(|e| Ok(Bytes::from(format!("data: {e}\n\n"))))
        .collect();
    if count(&f.faults().stream_cut) {
        chunks.truncate(1);
        chunks.push(Err(std::io::Error::other("fake fal cuts the stream")));
    }
    (
        [
            ("content-type", "text/event-stream"),
            ("x-fal-request-id", id.as_str()),
        ],
        // Each event a moment after the one before, as a model makes them (and so the answer's
        // head goes out before a cut).
        axum::body::Body::from_stream(futures::StreamExt::then(
            futures::stream::iter(chunks),
            |chunk| async move {
                tokio::time::sleep(Duration::from_millis(20)).await;
                chunk
            },
        )),
    )
        .into_response()
}

fn uuid_like(n: usize) -> String {
    format!("00000000-0000-4000-8000-{n:012}")
}

/// Looks up a request; on its second status poll it leaves the queue, on its third it is done
/// (unless requests are held).
async fn status(
    State(f): State<FakeFal>,
    Path((owner, app, id)): Path<(String, String, String)>,
) -> Response {
    f.call("status");
    let faults = f.faults();
    if faults.down.load(SeqCst) || count(&faults.status_500) {
        return down();
    }
    if count(&faults.status_drop) {
        drop_connection();
    }
    if count(&faults.status_slow) {
        tokio::time::sleep(Duration::from_millis(faults.slow_ms.load(SeqCst))).await;
    }
    let (polls, cancelled, done) = {
        let mut reqs = f.inner.requests.lock().unwrap();
        let Some(r) = reqs.iter_mut().find(|r| r.id == id) else {
            return (StatusCode::NOT_FOUND, Json(json!({"status": "NOT_FOUND"}))).into_response();
        };
        r.polls += 1;
        (r.polls, r.cancelled, r.done)
    };
    let app = format!("{owner}/{app}");
    let mut v = f.urls(&app, &id);
    let logs = json!([{"message": "loading the model", "level": "INFO", "source": "USER",
                       "timestamp": "2026-01-01T00:00:00Z"}]);
    if cancelled {
        v["status"] = json!("COMPLETED");
        v["logs"] = logs;
        v["error"] = json!("cancelled");
        v["error_type"] = json!("client_cancelled");
        return Json(v).into_response();
    }
    let held = faults.hold.load(SeqCst);
    let finished = done || (!held && polls >= 3);
    if !finished && polls == 1 {
        v["status"] = json!("IN_QUEUE");
        v["queue_position"] = json!(3);
        v["logs"] = Value::Null;
        return (StatusCode::ACCEPTED, Json(v)).into_response();
    }
    if !finished {
        v["status"] = json!("IN_PROGRESS");
        v["logs"] = logs;
        return (StatusCode::ACCEPTED, Json(v)).into_response();
    }
    if !done {
        f.complete(&id).await;
    }
    v["status"] = json!("COMPLETED");
    // A line first seen with the end: the run ends right after relaying it.
    v["logs"] = json!([logs[0], {"message": "releasing the runner", "level": "INFO",
                                 "source": "USER", "timestamp": "2026-01-01T00:00:01Z"}]);
    v["metrics"] = json!({"inference_time": 0.01});
    if let Some((error, error_type)) = faults.fail_with.lock().unwrap().clone() {
        v["error"] = json!(error);
        v["error_type"] = json!(error_type);
    }
    Json(v).into_response()
}

async fn result(
    State(f): State<FakeFal>,
    Path((_owner, _app, id)): Path<(String, String, String)>,
) -> Response {
    f.call("result");
    let faults = f.faults();
    if faults.down.load(SeqCst) {
        return down();
    }
    if count(&faults.result_drop) {
        drop_connection();
    }
    let done = f.requests().iter().find(|r| r.id == id).map(|r| r.done);
    let done = done.map(|d| d && !count(&faults.result_in_progress));
    match done {
        None => (
            StatusCode::NOT_FOUND,
            Json(json!({"detail": "Request not found"})),
        )
            .into_response(),
        Some(false) => (
            StatusCode::BAD_REQUEST,
            Json(json!({"detail": "Request is still in progress"})),
        )
            .into_response(),
        Some(true) => ([("x-fal-request-id", id.as_str())], Json(f.output(&id))).into_response(),
    }
}

async fn cancel(
    State(f): State<FakeFal>,
    Path((_owner, _app, id)): Path<(String, String, String)>,
) -> Response {
    f.call("cancel");
    let mut reqs = f.inner.requests.lock().unwrap();
    match reqs.iter_mut().find(|r| r.id == id) {
        None => (StatusCode::NOT_FOUND, Json(json!({"status": "NOT_FOUND"}))).into_response(),
        Some(r) if r.done => (
            StatusCode::BAD_REQUEST,
            Json(json!({"status": "ALREADY_COMPLETED"})),
        )
            .into_response(),
        Some(r) => {
            r.cancelled = true;
            (
                StatusCode::ACCEPTED,
                Json(json!({"status": "CANCELLATION_REQUESTED"})),
            )
                .into_response()
        }
    }
}
