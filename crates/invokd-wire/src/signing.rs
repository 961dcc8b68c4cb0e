//! Webhook signatures: fal's scheme, Ed25519 over the request id, user id, timestamp and the
//! body's SHA-256, with the public key published as a JWKS.

use base64::Engine as _;
use ed25519_dalek::{Signer, SigningKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};

/// The Ed25519 key that signs webhooks; its public half is served as a JWKS.
#[derive(Clone)]
pub struct WebhookSigner {
    key: SigningKey,
}

impl std::fmt::Debug for WebhookSigner {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "WebhookSigner({})", self.kid())
    }
}

impl WebhookSigner {
    fn public_b64(&self) -> String {
        base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(self.key.verifying_key().as_bytes())
    }

    /// A signer with a given key (tests and fuzzing).
    pub fn from_seed(seed: [u8; 32]) -> Self {
        Self {
            key: SigningKey::from_bytes(&seed),
        }
    }

    /// A stable key id: the first bytes of the public key's hash.
    pub fn kid(&self) -> String {
        hex::encode(&Sha256::digest(self.key.verifying_key().as_bytes())[..8])
    }

    /// `/.well-known/jwks.json`.
    pub fn jwks(&self) -> Value {
        json!({"keys": [{
            "kty": "OKP", "crv": "Ed25519", "x": self.public_b64(),
            "kid": self.kid(), "use": "sig", "alg": "EdDSA",
        }]})
    }

    /// Hex signature of `request_id \n user_id \n timestamp \n hex(sha256(body))`.
    pub fn sign(&self, request_id: &str, user_id: &str, timestamp: i64, body: &[u8]) -> String {
        let message = format!(
            "{request_id}\n{user_id}\n{timestamp}\n{}",
            hex::encode(Sha256::digest(body))
        );
        hex::encode(self.key.sign(message.as_bytes()).to_bytes())
    }
}
