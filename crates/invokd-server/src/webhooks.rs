//! Webhooks: when a job with a webhook ends, the store's outbox gets a delivery; this worker
//! POSTs fal's payload, signed the way fal signs (Ed25519 over request id, user id, timestamp and
//! the body's SHA-256), retrying with exponential backoff and jitter until the retry window
//! closes. It runs beside the dispatcher, so a slow or dead receiver never holds up a job.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use invokd_core::{
    Job, JobStatus,
    signing::UrlSigner,
    store::{AfterAttempt, Delivery, DeliveryAttempt, Store},
};
use serde_json::{Value, json};
use tokio::{sync::Semaphore, task::JoinSet};
use tokio_util::sync::CancellationToken;

pub use invokd_wire::signing::WebhookSigner;

use crate::present::UrlRenderer;

const KEY_FILE: &str = "webhook-signing.key";

/// The webhook signing key kept in the data directory (or the shared store), created on first
/// start, so receivers' cached JWKS stay valid across restarts and are the same on every replica.
pub async fn load_signer(home: &crate::bootstrap::SecretHome<'_>) -> anyhow::Result<WebhookSigner> {
    Ok(WebhookSigner::from_seed(home.random_key(KEY_FILE).await?))
}

/// How deliveries are retried.
#[derive(Debug, Clone)]
pub struct WebhookConfig {
    /// Retries stop this long after the job ended.
    pub retry_for: Duration,
    pub backoff_base: Duration,
    pub backoff_max: Duration,
    /// One attempt's time limit.
    pub timeout: Duration,
    /// Deliveries in flight at once.
    pub concurrency: usize,
}

impl Default for WebhookConfig {
    fn default() -> Self {
        Self {
            retry_for: Duration::from_secs(24 * 3600),
            backoff_base: Duration::from_secs(5),
            backoff_max: Duration::from_secs(600),
            timeout: Duration::from_secs(15),
            concurrency: 16,
        }
    }
}

/// The delay before retry number `n` (1-based): exponential, capped, with jitter in [50%, 100%].
pub fn backoff(config: &WebhookConfig, n: u32) -> Duration {
    let exp = config
        .backoff_base
        .saturating_mul(2u32.saturating_pow(n.saturating_sub(1).min(30)));
    let capped = exp.min(config.backoff_max);
    capped.mul_f64(0.5 + rand::random::<f64>() * 0.5)
}

/// fal's webhook body for a finished job.
pub fn payload(job: &Job, urls: &UrlRenderer<'_>) -> Value {
    let id = job.id.to_string();
    match (job.status, &job.output) {
        (JobStatus::Completed, Some(output)) => json!({
            "request_id": id, "gateway_request_id": id, "status": "OK",
            "payload": urls.output(job.id, output), "error": null, "payload_error": null,
        }),
        _ => {
            let (message, kind) = job
                .error
                .as_ref()
                .map(|e| (e.message.clone(), e.error_type.clone()))
                .unwrap_or_else(|| ("the request failed".into(), "internal_error".into()));
            json!({
                "request_id": id, "gateway_request_id": id, "status": "ERROR",
                "error": message, "payload": {"detail": message, "error_type": kind},
                "payload_error": null,
            })
        }
    }
}

/// Works through the outbox until stopped.
pub struct Deliverer {
    pub store: Arc<dyn Store>,
    pub signer: WebhookSigner,
    pub url_signer: UrlSigner,
    pub file_url_ttl: Duration,
    /// Where files are, and whether payloads carry its presigned URLs.
    pub blobs: Arc<dyn invokd_core::blob::BlobStore>,
    pub file_urls: crate::config::FileUrls,
    /// Base of the file URLs in payloads.
    pub base_url: String,
    pub config: WebhookConfig,
    pub allow_private: bool,
    pub owner: String,
    /// Woken when a job ends.
    pub events: invokd_core::events::JobEvents,
}

impl Deliverer {
    pub async fn run(self, stop: CancellationToken) {
        let this = Arc::new(self);
        let http = match crate::outbound::client(this.allow_private)
            .timeout(this.config.timeout)
            .connect_timeout(this.config.timeout)
            .redirect(reqwest::redirect::Policy::none())
            .pool_max_idle_per_host(4)
            .build()
        {
            Ok(c) => c,
            Err(e) => {
                tracing::error!(error = %e, "webhooks are off: cannot build the HTTP client");
                return;
            }
        };
        let slots = Arc::new(Semaphore::new(this.config.concurrency));
        let mut news = this.events.subscribe();
        let mut tasks = JoinSet::new();
        loop {
            let free = u32::try_from(slots.available_permits()).unwrap_or(0);
            if free > 0 {
                let now = Utc::now();
                // A lease covers one attempt and its bookkeeping.
                let lease_until = now
                    + chrono::Duration::from_std(this.config.timeout * 2)
                        .unwrap_or(chrono::Duration::seconds(60));
                match this
                    .store
                    .claim_deliveries(&this.owner, free, now, lease_until)
                    .await
                {
                    Ok(batch) => {
                        for d in batch {
                            let Ok(permit) = slots.clone().acquire_owned().await else {
                                break;
                            };
                            let (this, http) = (this.clone(), http.clone());
                            tasks.spawn(async move {
                                this.deliver(&http, d).await;
                                drop(permit);
                            });
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "claiming webhook deliveries failed"),
                }
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                () = stop.cancelled() => break,
                _ = news.recv() => {}
                () = tokio::time::sleep(Duration::from_millis(500)) => {}
            }
        }
        // In-flight attempts are dropped; their leases expire and they are retried later.
        tasks.abort_all();
    }

    async fn deliver(&self, http: &reqwest::Client, d: Delivery) {
        let job = match self.store.get_job(d.job_id, None).await {
            Ok(Some(job)) => job,
            Ok(None) => return,
            Err(e) => {
                tracing::warn!(error = %e, "reading a webhook's job failed");
                return;
            }
        };
        let attempt_no = u32::try_from(d.attempts.len())
            .unwrap_or(u32::MAX)
            .saturating_add(1);
        let urls = UrlRenderer {
            base_url: &self.base_url,
            signer: &self.url_signer,
            expires: crate::present::expiry(self.file_url_ttl),
            direct: crate::present::direct_urls(
                self.file_urls,
                self.blobs.as_ref(),
                self.file_url_ttl,
            ),
        };
        let body = payload(&job, &urls).to_string();
        let at = Utc::now();
        let result = self.post(http, &d, &job, body).await;
        let attempt = match &result {
            Ok(code) => DeliveryAttempt {
                at,
                status_code: Some(*code),
                error: None,
            },
            Err((code, why)) => DeliveryAttempt {
                at,
                status_code: *code,
                error: Some(why.clone()),
            },
        };
        let then = if result.is_ok() {
            AfterAttempt::Delivered
        } else {
            let next = Utc::now()
                + chrono::Duration::from_std(backoff(&self.config, attempt_no))
                    .unwrap_or(chrono::Duration::seconds(60));
            let window_end = d.created_at
                + chrono::Duration::from_std(self.config.retry_for)
                    .unwrap_or(chrono::Duration::days(1));
            if next > window_end {
                AfterAttempt::GiveUp
            } else {
                AfterAttempt::RetryAt(next)
            }
        };
        crate::metrics::webhook_attempt(match then {
            AfterAttempt::Delivered => "delivered",
            AfterAttempt::RetryAt(_) => "retry",
            AfterAttempt::GiveUp => "failed",
        });
        match &result {
            Ok(code) => tracing::info!(job_id = %job.id, status = code, "webhook delivered"),
            Err((_, why)) => {
                tracing::warn!(job_id = %job.id, attempt = attempt_no, error = %why, ?then, "webhook attempt failed")
            }
        }
        if let Err(e) = self
            .store
            .record_attempt(d.id, &self.owner, attempt, then)
            .await
        {
            tracing::warn!(error = %e, "recording a webhook attempt failed; it will be retried");
        }
    }

    /// One POST. `Ok(status)` for a 2xx; anything else (3xx included) is a failed attempt.
    async fn post(
        &self,
        http: &reqwest::Client,
        d: &Delivery,
        job: &Job,
        body: String,
    ) -> Result<u16, (Option<u16>, String)> {
        let url = crate::outbound::check_url(&d.url, self.allow_private)
            .await
            .map_err(|e| (None, e))?;
        let ts = Utc::now().timestamp();
        let (request_id, user_id) = (job.id.to_string(), job.key_id.to_string());
        let signature = self.signer.sign(&request_id, &user_id, ts, body.as_bytes());
        let resp = http
            .post(url)
            .header("content-type", "application/json")
            .header("x-fal-webhook-request-id", &request_id)
            .header("x-fal-webhook-user-id", &user_id)
            .header("x-fal-webhook-timestamp", ts.to_string())
            .header("x-fal-webhook-signature", signature)
            .body(body)
            .send()
            .await
            .map_err(|e| (None, format!("{e}")))?;
        let code = resp.status().as_u16();
        if resp.status().is_success() {
            Ok(code)
        } else if resp.status().is_redirection() {
            Err((
                Some(code),
                format!("the receiver answered a redirect ({code}); redirects are not followed"),
            ))
        } else {
            Err((Some(code), format!("the receiver answered {code}")))
        }
    }
}

#[cfg(test)]
mod tests {
    use base64::Engine as _;
    use ed25519_dalek::{Signature, Verifier, VerifyingKey};
    use sha2::{Digest, Sha256};

    use super::*;

    #[tokio::test]
    async fn signatures_verify_against_the_published_key() {
        let dir = tempfile::tempdir().unwrap();
        let home = crate::bootstrap::SecretHome::DataDir(dir.path());
        let signer = load_signer(&home).await.unwrap();
        let again = load_signer(&home).await.unwrap();
        assert_eq!(signer.kid(), again.kid(), "the key survives restarts");
        let jwks = signer.jwks();
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(jwks["keys"][0]["x"].as_str().unwrap())
            .unwrap();
        let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
        let body = br#"{"status":"OK"}"#;
        let sig = hex::decode(signer.sign("req", "user", 1700000000, body)).unwrap();
        let msg = format!(
            "req\nuser\n1700000000\n{}",
            hex::encode(Sha256::digest(body))
        );
        key.verify(msg.as_bytes(), &Signature::from_slice(&sig).unwrap())
            .unwrap();
    }

    #[test]
    fn backoff_grows_is_capped_and_jittered() {
        let c = WebhookConfig {
            backoff_base: Duration::from_secs(1),
            backoff_max: Duration::from_secs(10),
            ..WebhookConfig::default()
        };
        assert!(
            backoff(&c, 1) <= Duration::from_secs(1)
                && backoff(&c, 1) >= Duration::from_millis(500)
        );
        assert!(backoff(&c, 3) >= Duration::from_secs(2));
        assert!(backoff(&c, 40) <= Duration::from_secs(10));
    }
}
