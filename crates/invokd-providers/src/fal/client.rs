//! fal's queue over HTTP: every call goes through one retry loop (exponential backoff with
//! jitter, `Retry-After` honoured) and the circuit breaker.

use std::{sync::Arc, time::Duration};

use bytes::Bytes;
use rand::Rng;
use reqwest::{Method, RequestBuilder, StatusCode, header::HeaderMap};
use tokio_util::sync::CancellationToken;

use super::{FalConfig, breaker::Breaker};

/// A whole answer from fal.
#[derive(Debug)]
pub struct Answer {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
}

impl Answer {
    /// The body as JSON, or `null` when it is not JSON.
    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).unwrap_or(serde_json::Value::Null)
    }
}

/// A call that got no usable answer.
#[derive(Debug, thiserror::Error)]
pub enum CallError {
    /// fal answered with an error status: a 4xx at once, a 429 or 5xx after the retries.
    #[error("fal answered {}", .0.status)]
    Status(Answer),
    /// No answer after the retries (timeouts, refused or dropped connections). `maybe_sent`:
    /// the request may have reached fal.
    #[error("fal did not answer: {message}")]
    Transport { message: String, maybe_sent: bool },
    /// The circuit breaker is open: nothing was sent.
    #[error("fal is failing; calls are paused (circuit breaker open)")]
    BreakerOpen,
    /// The run was told to stop.
    #[error("stopped")]
    Stopped,
}

/// Whether a call may be sent again after an answer that never came.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Resend {
    /// Reading (status, result, files) and cancelling: always safe.
    Always,
    /// A submission: only when fal surely did not take it (refused connection, 429, 5xx), so a
    /// lost answer never makes a second upstream request.
    IfNotTaken,
}

/// A resolver given as a trait object, as reqwest takes a sized one.
struct SharedResolver(Arc<dyn reqwest::dns::Resolve>);

impl reqwest::dns::Resolve for SharedResolver {
    fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
        self.0.resolve(name)
    }
}

/// The HTTP side of the fal provider.
pub struct FalClient {
    http: reqwest::Client,
    /// Downloads of output files, through `FalConfig::file_resolver`.
    files: reqwest::Client,
    config: Arc<FalConfig>,
    pub breaker: Breaker,
}

impl FalClient {
    pub fn new(config: Arc<FalConfig>) -> Result<Self, reqwest::Error> {
        let builder = || {
            reqwest::Client::builder()
                .timeout(config.request_timeout)
                .connect_timeout(config.request_timeout)
                .user_agent(concat!("invokd/", env!("CARGO_PKG_VERSION")))
        };
        let http = builder().build()?;
        let files = match &config.file_resolver {
            Some(resolver) => builder()
                .dns_resolver(Arc::new(SharedResolver(resolver.clone())))
                .build()?,
            None => http.clone(),
        };
        let breaker = Breaker::new(config.breaker_threshold, config.breaker_open_for);
        Ok(Self {
            http,
            files,
            config,
            breaker,
        })
    }

    /// A request to fal's queue, with the key.
    pub fn queue(&self, method: Method, url: &str) -> RequestBuilder {
        self.http
            .request(method, url)
            .header("authorization", format!("Key {}", self.config.key))
            .header("accept", "application/json")
    }

    /// A plain GET, without the key (output files on fal's CDN).
    pub fn download(&self, url: &str) -> RequestBuilder {
        self.files.get(url)
    }

    /// Sends a request, retrying 408, 429, 5xx and transport failures with backoff, and
    /// returns the first answer that is not one of those (or the last one).
    pub async fn send(
        &self,
        what: &str,
        build: impl Fn() -> RequestBuilder,
        resend: Resend,
        stop: &CancellationToken,
    ) -> Result<Answer, CallError> {
        let mut tries = 0u32;
        loop {
            if !self.breaker.allows() {
                return Err(CallError::BreakerOpen);
            }
            tries += 1;
            let last = tries >= self.config.retries.max(1);
            let sent = tokio::select! {
                () = stop.cancelled() => return Err(CallError::Stopped),
                r = send_whole(build()) => r,
            };
            let retry_after = match sent {
                Ok(answer) => {
                    let s = answer.status;
                    if s.is_server_error() {
                        self.breaker.record_failure();
                    } else {
                        self.breaker.record_success();
                    }
                    if !retryable_status(s) || last {
                        return if s.is_success() {
                            Ok(answer)
                        } else {
                            Err(CallError::Status(answer))
                        };
                    }
                    tracing::debug!(what, status = %s, tries, "fal call failed; retrying");
                    retry_after(&answer.headers)
                }
                Err(e) => {
                    self.breaker.record_failure();
                    // A refused connection never reached fal; anything later may have.
                    let maybe_sent = !e.is_connect();
                    let message = format!("{what}: {}", error_chain(&e));
                    if last || (resend == Resend::IfNotTaken && maybe_sent) {
                        return Err(CallError::Transport {
                            message,
                            maybe_sent,
                        });
                    }
                    tracing::debug!(what, error = %message, tries, "fal call failed; retrying");
                    None
                }
            };
            let delay = retry_after.unwrap_or_else(|| self.backoff(tries));
            tokio::select! {
                () = stop.cancelled() => return Err(CallError::Stopped),
                () = tokio::time::sleep(delay) => {}
            }
        }
    }

    /// The delay before try `n + 1`: doubling from the base up to the cap, with jitter (a
    /// random half to all of it) so many jobs do not retry in step.
    pub fn backoff(&self, n: u32) -> Duration {
        backoff(self.config.backoff_base, self.config.backoff_max, n)
    }
}

/// Exponential backoff with jitter: a random point between half and all of `base * 2^(n-1)`,
/// capped at `max`.
pub fn backoff(base: Duration, max: Duration, n: u32) -> Duration {
    let full = base
        .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(20)))
        .min(max);
    let half = full / 2;
    half + full
        .saturating_sub(half)
        .mul_f64(rand::rng().random::<f64>())
}

fn retryable_status(s: StatusCode) -> bool {
    s == StatusCode::REQUEST_TIMEOUT || s == StatusCode::TOO_MANY_REQUESTS || s.is_server_error()
}

/// `Retry-After` in seconds (fal sends seconds), capped so a bad value cannot stall a run.
fn retry_after(h: &HeaderMap) -> Option<Duration> {
    let secs: f64 = h.get("retry-after")?.to_str().ok()?.trim().parse().ok()?;
    (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs.min(300.0)))
}

async fn send_whole(req: RequestBuilder) -> Result<Answer, reqwest::Error> {
    let resp = req.send().await?;
    let status = resp.status();
    let headers = resp.headers().clone();
    let body = resp.bytes().await?;
    Ok(Answer {
        status,
        headers,
        body,
    })
}

/// The error with its causes, which is where reqwest says what went wrong.
fn error_chain(e: &(dyn std::error::Error + 'static)) -> String {
    let mut s = e.to_string();
    let mut cause = e.source();
    while let Some(c) = cause {
        s.push_str(": ");
        s.push_str(&c.to_string());
        cause = c.source();
    }
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Resolves nothing, saying so.
    struct Refuse;

    impl reqwest::dns::Resolve for Refuse {
        fn resolve(&self, name: reqwest::dns::Name) -> reqwest::dns::Resolving {
            let why = format!("{} refused by the rule", name.as_str());
            Box::pin(async move { Err(why.into()) })
        }
    }

    #[tokio::test]
    async fn output_files_are_downloaded_through_the_file_resolver_only() {
        let config = FalConfig {
            file_resolver: Some(Arc::new(Refuse)),
            request_timeout: Duration::from_secs(5),
            ..FalConfig::new("k:s")
        };
        let client = FalClient::new(Arc::new(config)).unwrap();
        let err = client
            .download("http://files.invalid/out.png")
            .send()
            .await
            .unwrap_err();
        assert!(
            format!("{err:?}").contains("refused by the rule"),
            "{err:?}"
        );
        // The configured endpoints resolve as the system does.
        let err = client
            .queue(Method::GET, "http://queue.invalid/x")
            .send()
            .await
            .unwrap_err();
        assert!(
            !format!("{err:?}").contains("refused by the rule"),
            "{err:?}"
        );
    }

    #[test]
    fn backoff_doubles_is_capped_and_jittered() {
        let (base, max) = (Duration::from_millis(100), Duration::from_secs(1));
        for n in 1..10 {
            let d = backoff(base, max, n);
            let full = (base * 2u32.pow(n - 1)).min(max);
            assert!(d >= full / 2 && d <= full, "try {n}: {d:?}");
        }
    }

    #[test]
    fn retry_after_is_read_in_seconds() {
        let mut h = HeaderMap::new();
        h.insert("retry-after", "2".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(2)));
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }
}
