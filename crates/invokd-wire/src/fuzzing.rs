//! Entry points of the fuzz targets in `fuzz/` and of the property tests that run them on the
//! stable toolchain: each takes arbitrary bytes and panics when an invariant breaks. Not API.
//!
//! The invariants: a request body either parses and validates, or gets a 4xx (never a 5xx,
//! never a panic); a validated input validates again to itself; every SSE event decodes, by
//! the spec's own rules, to exactly the JSON it was made from; a webhook signature verifies
//! with the published key and fails for any other body.
#![allow(clippy::expect_used, clippy::panic)] // panics are how a fuzzer hears of a broken invariant

use std::sync::LazyLock;

use axum::response::{IntoResponse as _, sse::Sse};
use base64::Engine as _;
use chrono::{TimeZone as _, Utc};
use ed25519_dalek::{Signature, Verifier as _, VerifyingKey};
use invokd_api::{
    async_invoke::{CreateInvocation, Invocation, Status},
    fal_queue::LogEntry,
};
use invokd_core::{catalog::Catalog, service};
use serde_json::{Map, Value};

use crate::{error::ApiError, json::parse_json, signing::WebhookSigner, sse};

static CATALOG: LazyLock<Catalog> =
    LazyLock::new(|| Catalog::embedded().expect("the embedded catalog loads"));

static RUNTIME: LazyLock<tokio::runtime::Runtime> = LazyLock::new(|| {
    tokio::runtime::Builder::new_current_thread()
        .build()
        .expect("a runtime")
});

fn assert_client_error(e: &ApiError, what: &str) {
    assert!(
        e.status().is_client_error(),
        "{what} got {} ({:?}: {})",
        e.status(),
        e.code,
        e.message
    );
}

/// Validation against the catalog: a 4xx, or an input that validates again to itself.
fn check_prepare(model_id: &str, input: Map<String, Value>) {
    match service::prepare(&CATALOG, model_id, input) {
        Err(e) => assert_client_error(&ApiError::from(e), "an invalid input"),
        Ok((_, prepared)) => {
            let (_, again) = service::prepare(&CATALOG, model_id, prepared.clone())
                .unwrap_or_else(|e| panic!("a prepared input no longer validates: {e}"));
            assert_eq!(again, prepared, "preparing twice changed the input");
        }
    }
}

/// `POST /v1/async-invoke`'s body, parsed and validated as the route does.
pub fn async_invoke_create(bytes: &[u8]) {
    match parse_json::<CreateInvocation>(bytes) {
        Err(e) => assert_client_error(&e, "a malformed create body"),
        Ok(body) => check_prepare(&body.model_id, body.input),
    }
}

/// fal's submit body for the model picked by the first byte, parsed and validated.
pub fn fal_submit(bytes: &[u8]) {
    let Some((&pick, body)) = bytes.split_first() else {
        return;
    };
    let n = CATALOG.len().max(1);
    let Some(model) = CATALOG.iter().nth(usize::from(pick) % n) else {
        return;
    };
    match parse_json::<Map<String, Value>>(body) {
        Err(e) => assert_client_error(&e, "a malformed submit body"),
        Ok(input) => check_prepare(&model.id, input),
    }
}

/// One event as a client reads it: its name and its data.
#[derive(Debug, PartialEq)]
struct Decoded {
    event: String,
    data: String,
}

/// The SSE spec's parsing (WHATWG HTML, "event stream interpretation"), written from the spec
/// so that it checks the encoder rather than mirrors it.
fn decode(stream: &str) -> Vec<Decoded> {
    let mut out = Vec::new();
    let (mut event, mut data, mut has_data) = (String::new(), String::new(), false);
    let normalized = stream.replace("\r\n", "\n").replace('\r', "\n");
    for line in normalized.split('\n') {
        if line.is_empty() {
            if has_data {
                out.push(Decoded {
                    event: std::mem::take(&mut event),
                    data: std::mem::take(&mut data),
                });
            }
            event.clear();
            data.clear();
            has_data = false;
            continue;
        }
        if line.starts_with(':') {
            continue;
        }
        let (field, value) = match line.split_once(':') {
            Some((f, v)) => (f, v.strip_prefix(' ').unwrap_or(v)),
            None => (line, ""),
        };
        match field {
            "event" => event = value.to_owned(),
            "data" => {
                if has_data {
                    data.push('\n');
                }
                data.push_str(value);
                has_data = true;
            }
            _ => {}
        }
    }
    out
}

/// The events as the server sends them, read back.
fn encode(events: Vec<axum::response::sse::Event>) -> String {
    let stream = futures::stream::iter(events.into_iter().map(Ok::<_, std::convert::Infallible>));
    let res = Sse::new(stream).into_response();
    let bytes = RUNTIME
        .block_on(axum::body::to_bytes(res.into_body(), usize::MAX))
        .expect("an SSE body reads");
    String::from_utf8(bytes.to_vec()).expect("SSE is UTF-8")
}

/// Log lines, statuses and fal status bodies made of arbitrary text and JSON survive the SSE
/// encoding unchanged.
pub fn sse_events(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes).into_owned();
    let value: Value =
        serde_json::from_slice(bytes).unwrap_or_else(|_| Value::String(text.clone()));
    let entry = LogEntry {
        message: text.clone(),
        level: "INFO".into(),
        source: "USER".into(),
        timestamp: "2026-01-01T00:00:00Z".into(),
    };
    let mut output = Map::new();
    output.insert("value".into(), value.clone());
    let inv = Invocation {
        request_id: text.clone(),
        model_id: text.clone(),
        status: Status::Failed,
        created_at: Utc.timestamp_opt(0, 0).single().unwrap_or_default(),
        started_at: None,
        completed_at: None,
        output: Some(output),
        error: Some(text),
        tags: Vec::new(),
        expired_at: None,
        webhook: None,
    };
    let events = vec![
        sse::log(&entry).expect("a log line encodes"),
        sse::status(&inv).expect("an invocation encodes"),
        sse::fal_status(&value),
    ];
    let decoded = decode(&encode(events));
    assert_eq!(decoded.len(), 3, "three events in, three out: {decoded:?}");
    let json = |d: &Decoded| -> Value {
        serde_json::from_str(&d.data).unwrap_or_else(|e| panic!("{e}: {:?}", d.data))
    };
    assert_eq!(decoded[0].event, "log");
    assert_eq!(
        json(&decoded[0]),
        serde_json::to_value(&entry).expect("json")
    );
    assert_eq!(decoded[1].event, "status");
    assert_eq!(json(&decoded[1]), serde_json::to_value(&inv).expect("json"));
    assert_eq!(decoded[2].event, "");
    assert_eq!(json(&decoded[2]), value);
}

static SIGNER: LazyLock<WebhookSigner> = LazyLock::new(|| WebhookSigner::from_seed([7; 32]));

/// A webhook signature over any body and ids verifies with the JWKS key, and not for another
/// body.
pub fn webhook_signature(bytes: &[u8]) {
    let text = String::from_utf8_lossy(bytes);
    let cut = text
        .char_indices()
        .map(|(i, _)| i)
        .nth(text.chars().count() / 3)
        .unwrap_or(text.len());
    let (request_id, rest) = text.split_at(cut);
    let timestamp = i64::try_from(bytes.len()).unwrap_or(0) * 1_000_003;
    let signature = SIGNER.sign(request_id, rest, timestamp, bytes);

    let jwks = SIGNER.jwks();
    let x = jwks["keys"][0]["x"].as_str().expect("the JWKS has x");
    let public: [u8; 32] = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(x)
        .expect("x is base64url")
        .try_into()
        .expect("x is 32 bytes");
    let key = VerifyingKey::from_bytes(&public).expect("a valid key");
    let sig: [u8; 64] = hex::decode(&signature)
        .expect("hex")
        .try_into()
        .expect("64 bytes");
    let message = |body: &[u8]| {
        use sha2::Digest as _;
        format!(
            "{request_id}\n{rest}\n{timestamp}\n{}",
            hex::encode(sha2::Sha256::digest(body))
        )
    };
    let sig = Signature::from_bytes(&sig);
    assert!(key.verify(message(bytes).as_bytes(), &sig).is_ok());
    let mut other = bytes.to_vec();
    other.push(0);
    assert!(key.verify(message(&other).as_bytes(), &sig).is_err());
}
