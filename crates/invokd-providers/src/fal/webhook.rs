//! fal's webhooks to invokd: Ed25519 signatures over `request_id\nuser_id\ntimestamp\n
//! hex(sha256(body))`, checked against fal's JWKS (fetched, cached, fetched again when no key
//! verifies), timestamps within 300 s.

use std::time::{Duration, Instant};

use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use sha2::{Digest, Sha256};
use tokio::sync::Mutex;

/// Largest accepted clock difference between fal's timestamp and ours.
pub const MAX_SKEW_SECONDS: i64 = 300;
/// How long fetched keys are trusted.
const JWKS_TTL: Duration = Duration::from_secs(24 * 3600);
/// The shortest time between two fetches forced by a signature no key verifies, so forged
/// webhooks cannot make invokd hammer the JWKS host.
const REFETCH_EVERY: Duration = Duration::from_secs(10);

/// The signature headers of a webhook.
#[derive(Debug, Clone, Default)]
pub struct WebhookHeaders {
    pub request_id: Option<String>,
    pub user_id: Option<String>,
    pub timestamp: Option<String>,
    pub signature: Option<String>,
}

/// Why a webhook was not accepted.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
#[non_exhaustive]
pub enum WebhookError {
    #[error("missing header {0}")]
    MissingHeader(&'static str),
    #[error("X-Fal-Webhook-Timestamp is not a unix time in seconds")]
    BadTimestamp,
    #[error("the webhook's timestamp is more than {MAX_SKEW_SECONDS} s away from now")]
    Skew,
    #[error("the signature does not verify against fal's keys")]
    BadSignature,
    #[error("fal's keys could not be fetched: {0}")]
    Jwks(String),
    #[error("fal webhooks are not enabled on this server")]
    Disabled,
}

/// The message fal signs.
pub fn signed_message(request_id: &str, user_id: &str, timestamp: &str, body: &[u8]) -> String {
    format!(
        "{request_id}\n{user_id}\n{timestamp}\n{}",
        hex::encode(Sha256::digest(body))
    )
}

/// The Ed25519 keys of a JWKS document (`kty: OKP`, `crv: Ed25519`, `x` base64url).
pub fn keys_of(jwks: &serde_json::Value) -> Vec<VerifyingKey> {
    jwks["keys"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|k| k["crv"].as_str() == Some("Ed25519"))
        .filter_map(|k| {
            let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
                .decode(k["x"].as_str()?.trim_end_matches('='))
                .ok()?;
            VerifyingKey::from_bytes(&x.try_into().ok()?).ok()
        })
        .collect()
}

#[derive(Default)]
struct Cached {
    keys: Vec<VerifyingKey>,
    fetched: Option<Instant>,
}

/// fal's public keys, fetched from `url` and cached.
pub struct Jwks {
    http: reqwest::Client,
    url: String,
    cached: Mutex<Cached>,
}

impl Jwks {
    pub fn new(http: reqwest::Client, url: String) -> Self {
        Self {
            http,
            url,
            cached: Mutex::new(Cached::default()),
        }
    }

    async fn fetch(&self) -> Result<Vec<VerifyingKey>, WebhookError> {
        let doc: serde_json::Value = self
            .http
            .get(&self.url)
            .send()
            .await
            .and_then(reqwest::Response::error_for_status)
            .map_err(|e| WebhookError::Jwks(e.to_string()))?
            .json()
            .await
            .map_err(|e| WebhookError::Jwks(e.to_string()))?;
        let keys = keys_of(&doc);
        if keys.is_empty() {
            return Err(WebhookError::Jwks(format!(
                "{} holds no Ed25519 key",
                self.url
            )));
        }
        Ok(keys)
    }

    /// Checks a webhook's signature and timestamp; `now` is unix seconds.
    pub async fn verify(
        &self,
        h: &WebhookHeaders,
        body: &[u8],
        now: i64,
    ) -> Result<(), WebhookError> {
        let request_id = h
            .request_id
            .as_deref()
            .ok_or(WebhookError::MissingHeader("X-Fal-Webhook-Request-Id"))?;
        let user_id = h
            .user_id
            .as_deref()
            .ok_or(WebhookError::MissingHeader("X-Fal-Webhook-User-Id"))?;
        let ts = h
            .timestamp
            .as_deref()
            .ok_or(WebhookError::MissingHeader("X-Fal-Webhook-Timestamp"))?;
        let sig = h
            .signature
            .as_deref()
            .ok_or(WebhookError::MissingHeader("X-Fal-Webhook-Signature"))?;
        let t: i64 = ts.trim().parse().map_err(|_| WebhookError::BadTimestamp)?;
        if (now - t).abs() > MAX_SKEW_SECONDS {
            return Err(WebhookError::Skew);
        }
        let sig = hex::decode(sig.trim())
            .ok()
            .and_then(|b| Signature::from_slice(&b).ok())
            .ok_or(WebhookError::BadSignature)?;
        let message = signed_message(request_id, user_id, ts, body);
        let verifies = |keys: &[VerifyingKey]| {
            keys.iter()
                .any(|k| k.verify(message.as_bytes(), &sig).is_ok())
        };

        let mut cached = self.cached.lock().await;
        let fresh = cached.fetched.is_some_and(|t| t.elapsed() < JWKS_TTL);
        if fresh && verifies(&cached.keys) {
            return Ok(());
        }
        // Unknown key (fal rotated) or nothing cached yet: fetch, but not too often.
        if !fresh || cached.fetched.is_some_and(|t| t.elapsed() >= REFETCH_EVERY) {
            cached.keys = self.fetch().await?;
            cached.fetched = Some(Instant::now());
            if verifies(&cached.keys) {
                return Ok(());
            }
        }
        Err(WebhookError::BadSignature)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use ed25519_dalek::{Signer, SigningKey};

    #[test]
    fn keys_are_read_from_a_jwks() {
        let k = SigningKey::from_bytes(&[7; 32]);
        let x =
            base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(k.verifying_key().as_bytes());
        let doc = serde_json::json!({"keys":[{"kty":"OKP","crv":"Ed25519","x":x},{"kty":"RSA"}]});
        let keys = keys_of(&doc);
        assert_eq!(keys, vec![k.verifying_key()]);
        let msg = signed_message("r", "u", "1", b"{}");
        let sig = k.sign(msg.as_bytes());
        assert!(keys[0].verify(msg.as_bytes(), &sig).is_ok());
    }

    #[tokio::test]
    async fn old_timestamps_and_missing_headers_are_refused_before_any_fetch() {
        let j = Jwks::new(reqwest::Client::new(), "http://127.0.0.1:9/none".into());
        let mut h = WebhookHeaders {
            request_id: Some("r".into()),
            user_id: Some("u".into()),
            timestamp: Some("1000".into()),
            signature: Some("00".into()),
        };
        assert_eq!(
            j.verify(&h, b"{}", 1000 + 301).await,
            Err(WebhookError::Skew)
        );
        h.signature = None;
        assert!(matches!(
            j.verify(&h, b"{}", 1000).await,
            Err(WebhookError::MissingHeader(_))
        ));
        h.signature = Some("zz".into());
        assert_eq!(
            j.verify(&h, b"{}", 1000).await,
            Err(WebhookError::BadSignature)
        );
    }
}
