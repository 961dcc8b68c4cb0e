//! The worker protocol's calls (docs/workers.md) to the gateway, each retried with backoff
//! (and `Retry-After`) on network errors, 5xx and 429; what a refusal means is read in one
//! place ([`CallError`]).

use std::time::Duration;

use bytes::Bytes;
use invokd_api::worker::{
    CompleteRequest, EndedResponse, FailRequest, HeartbeatRequest, HeartbeatResponse, LEASE_HEADER,
    PartialRequest, PresignRequest, PresignedUpload, ReleaseRequest, StoredFile, TakeRequest,
    TakeResponse, TakenJob,
};
use reqwest::{Method, RequestBuilder, StatusCode, Url};
use serde::{Serialize, de::DeserializeOwned};

/// How a call failed.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// 409: the job was taken back, cancelled or ended; drop it.
    #[error("the lease is no longer held: {0}")]
    LeaseLost(String),
    /// Any other 4xx (422 for an output of the wrong shape, 401 for a revoked token).
    #[error("the gateway refused it ({status}): {message}")]
    Refused { status: u16, message: String },
    /// Still failing after the retries.
    #[error("the gateway could not be reached: {0}")]
    Unreachable(String),
}

/// Retries of one call.
#[derive(Debug, Clone, Copy)]
pub struct Backoff {
    pub tries: u32,
    pub base: Duration,
    pub max: Duration,
}

impl Default for Backoff {
    fn default() -> Self {
        Self {
            tries: 8,
            base: Duration::from_millis(200),
            max: Duration::from_secs(10),
        }
    }
}

impl Backoff {
    /// The wait before try `n + 1`: doubling from `base` up to `max`, with up to half of it
    /// again as jitter so that many workers do not retry in step.
    fn delay(&self, n: u32) -> Duration {
        let exp = self.base.saturating_mul(1 << n.min(16)).min(self.max);
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.subsec_nanos());
        exp + exp.mul_f64(f64::from(nanos % 1000) / 2000.0)
    }
}

/// The gateway, as a worker calls it.
#[derive(Clone)]
pub struct Api {
    http: reqwest::Client,
    base: Url,
    token: String,
    backoff: Backoff,
}

/// The time limit of a call other than take.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);
/// What a take may take beyond its wait.
const TAKE_SLACK: Duration = Duration::from_secs(15);

impl Api {
    pub fn new(base: Url, token: String, backoff: Backoff) -> anyhow::Result<Self> {
        let http = reqwest::Client::builder()
            .connect_timeout(Duration::from_secs(10))
            .user_agent(concat!("invokd-worker/", env!("CARGO_PKG_VERSION")))
            .build()?;
        Ok(Self {
            http,
            base,
            token,
            backoff,
        })
    }

    fn url(&self, path: &str) -> Result<Url, CallError> {
        self.base
            .join(path)
            .map_err(|e| CallError::Unreachable(format!("bad URL {path}: {e}")))
    }

    /// Sends what `build` makes until it succeeds, is refused, or the tries run out.
    async fn send<T: DeserializeOwned>(
        &self,
        build: impl Fn() -> RequestBuilder,
    ) -> Result<T, CallError> {
        let mut n = 0;
        loop {
            let (wait, why) = match build().send().await {
                Ok(resp) => {
                    let status = resp.status();
                    if status.is_success() {
                        let text = resp.text().await.unwrap_or_default();
                        // An answer with no body (202) reads as null.
                        let text = if text.trim().is_empty() {
                            "null"
                        } else {
                            &text
                        };
                        return serde_json::from_str(text).map_err(|e| {
                            CallError::Unreachable(format!("an answer of the wrong shape: {e}"))
                        });
                    }
                    let retry_after = resp
                        .headers()
                        .get(reqwest::header::RETRY_AFTER)
                        .and_then(|v| v.to_str().ok())
                        .and_then(|v| v.trim().parse::<u64>().ok())
                        .map(Duration::from_secs);
                    let body = resp.text().await.unwrap_or_default();
                    let message = serde_json::from_str::<serde_json::Value>(&body)
                        .ok()
                        .and_then(|v| v.get("message").and_then(|m| m.as_str()).map(str::to_owned))
                        .unwrap_or(body);
                    if status == StatusCode::CONFLICT {
                        return Err(CallError::LeaseLost(message));
                    }
                    if !(status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS) {
                        return Err(CallError::Refused {
                            status: status.as_u16(),
                            message,
                        });
                    }
                    (retry_after, format!("{status}: {message}"))
                }
                Err(e) => (None, e.to_string()),
            };
            n += 1;
            if n >= self.backoff.tries {
                return Err(CallError::Unreachable(why));
            }
            let wait = wait.unwrap_or_else(|| self.backoff.delay(n - 1));
            tracing::debug!(tries = n, error = %why, wait_ms = wait.as_millis() as u64, "worker call failed; trying again");
            tokio::time::sleep(wait.min(self.backoff.max * 3)).await;
        }
    }

    fn json<B: Serialize + ?Sized>(&self, method: Method, url: &Url, body: &B) -> RequestBuilder {
        self.http
            .request(method, url.clone())
            .bearer_auth(&self.token)
            .timeout(CALL_TIMEOUT)
            .json(body)
    }

    async fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, CallError> {
        let url = self.url(path)?;
        self.send(|| self.json(Method::POST, &url, body)).await
    }

    /// Long-polls for up to `req.free` jobs.
    pub async fn take(&self, req: &TakeRequest) -> Result<TakeResponse, CallError> {
        let url = self.url("v1/worker/take")?;
        let wait = Duration::from_millis(
            req.wait_ms
                .unwrap_or(invokd_api::worker::DEFAULT_TAKE_WAIT_MS),
        );
        self.send(|| {
            self.json(Method::POST, &url, req)
                .timeout(wait + TAKE_SLACK)
        })
        .await
    }

    pub async fn heartbeat(&self, req: &HeartbeatRequest) -> Result<HeartbeatResponse, CallError> {
        self.post("v1/worker/heartbeat", req).await
    }

    fn job_path(job: &str, action: &str) -> String {
        format!("v1/worker/jobs/{job}/{action}")
    }

    /// Stores one output file of `job`: through the gateway, or straight into its bucket with
    /// a presigned PUT where the gateway offers one.
    pub async fn put_file(
        &self,
        job: &TakenJob,
        name: &str,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<StoredFile, CallError> {
        if job.files.presign {
            let presigned: PresignedUpload = self
                .post(
                    &Self::job_path(&job.id, &format!("files/{name}/presign")),
                    &PresignRequest {
                        lease: job.lease.clone(),
                        content_type: content_type.to_owned(),
                    },
                )
                .await?;
            let put_url = Url::parse(&presigned.put_url)
                .map_err(|e| CallError::Unreachable(format!("a bad presigned URL: {e}")))?;
            let size = bytes.len() as u64;
            // The bucket's answer has no JSON body: only its status counts. No token goes there.
            self.send_bucket(&put_url, &presigned, content_type, bytes)
                .await?;
            return Ok(StoredFile {
                url: presigned.url,
                file_name: name.to_owned(),
                content_type: content_type.to_owned(),
                file_size: size,
            });
        }
        // upload_url names the job's files; a file's name goes below it.
        let url = Url::parse(&format!(
            "{}/{name}",
            job.files.upload_url.trim_end_matches('/')
        ))
        .map_err(|e| CallError::Unreachable(format!("a bad upload URL: {e}")))?;
        self.send(|| {
            self.http
                .put(url.clone())
                .bearer_auth(&self.token)
                .header(LEASE_HEADER, &job.lease)
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .timeout(CALL_TIMEOUT * 5)
                .body(bytes.clone())
        })
        .await
    }

    async fn send_bucket(
        &self,
        url: &Url,
        presigned: &PresignedUpload,
        content_type: &str,
        bytes: Bytes,
    ) -> Result<(), CallError> {
        let mut n = 0;
        loop {
            let mut req = self
                .http
                .put(url.clone())
                .header(reqwest::header::CONTENT_TYPE, content_type)
                .timeout(CALL_TIMEOUT * 5)
                .body(bytes.clone());
            for (k, v) in &presigned.headers {
                req = req.header(k, v);
            }
            let why = match req.send().await {
                Ok(r) if r.status().is_success() => return Ok(()),
                Ok(r) if r.status().is_client_error() => {
                    return Err(CallError::Refused {
                        status: r.status().as_u16(),
                        message: r.text().await.unwrap_or_default(),
                    });
                }
                Ok(r) => r.status().to_string(),
                Err(e) => e.to_string(),
            };
            n += 1;
            if n >= self.backoff.tries {
                return Err(CallError::Unreachable(why));
            }
            tokio::time::sleep(self.backoff.delay(n - 1)).await;
        }
    }

    pub async fn partial(&self, job: &str, req: &PartialRequest) -> Result<(), CallError> {
        let _: serde_json::Value = self.post(&Self::job_path(job, "partial"), req).await?;
        Ok(())
    }

    pub async fn complete(
        &self,
        job: &str,
        req: &CompleteRequest,
    ) -> Result<EndedResponse, CallError> {
        self.post(&Self::job_path(job, "complete"), req).await
    }

    pub async fn fail(&self, job: &str, req: &FailRequest) -> Result<EndedResponse, CallError> {
        self.post(&Self::job_path(job, "fail"), req).await
    }

    pub async fn release(
        &self,
        job: &str,
        req: &ReleaseRequest,
    ) -> Result<EndedResponse, CallError> {
        self.post(&Self::job_path(job, "release"), req).await
    }
}
