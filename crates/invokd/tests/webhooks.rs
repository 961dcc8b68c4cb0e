//! Webhooks with a real HTTP receiver: signed like fal's, retried with backoff, durable across
//! restarts, a redirect is a failure, and a receiver that hangs holds up nothing else.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Router,
    body::Bytes,
    extract::State,
    http::{HeaderMap, StatusCode},
    response::IntoResponse,
    routing::post,
};
use base64::Engine as _;
use ed25519_dalek::{Signature, Verifier, VerifyingKey};
use serde_json::{Value, json};
use sha2::{Digest, Sha256};
use support::{Options, TestServer};

/// What the receiver does with each request, in order; the last behaviour repeats.
#[derive(Clone, Copy, Debug)]
enum Answer {
    Ok,
    Fail,
    Redirect,
    Hang,
}

#[derive(Default)]
struct Received {
    requests: Vec<(HeaderMap, Bytes)>,
}

/// The receiver's shared state: what arrived, and the script of answers.
type ReceiverState = (Arc<Mutex<Received>>, Arc<Vec<Answer>>);

struct Receiver {
    url: String,
    received: Arc<Mutex<Received>>,
}

async fn receiver(script: Vec<Answer>) -> Receiver {
    let received = Arc::new(Mutex::new(Received::default()));
    let state = (received.clone(), Arc::new(script));
    async fn handle(
        State((received, script)): State<ReceiverState>,
        headers: HeaderMap,
        body: Bytes,
    ) -> axum::response::Response {
        let n = {
            let mut r = received.lock().unwrap();
            r.requests.push((headers, body));
            r.requests.len()
        };
        match script
            .get(n - 1)
            .or(script.last())
            .copied()
            .unwrap_or(Answer::Ok)
        {
            Answer::Ok => StatusCode::OK.into_response(),
            Answer::Fail => StatusCode::INTERNAL_SERVER_ERROR.into_response(),
            Answer::Redirect => (
                StatusCode::FOUND,
                [("location", "http://127.0.0.1:1/elsewhere")],
            )
                .into_response(),
            Answer::Hang => {
                tokio::time::sleep(Duration::from_secs(3600)).await;
                StatusCode::OK.into_response()
            }
        }
    }
    let app = Router::new().route("/hook", post(handle)).with_state(state);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    Receiver { url, received }
}

fn fast_retries() -> Options {
    Options::default()
        .arg("--allow-private-urls")
        .set("--webhook-backoff-base-ms", "10")
        .set("--webhook-backoff-max-ms", "50")
        .set("--webhook-timeout-seconds", "2")
}

fn job(webhook: &str) -> Value {
    json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "hook", "image_size": "square"}, "webhook_url": webhook})
}

async fn webhook_state(server: &TestServer, id: &str, want: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let inv = server.get(id).await;
        if inv["webhook"]["state"] == want {
            return inv;
        }
        assert!(Instant::now() < deadline, "webhook never {want}: {inv}");
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
}

async fn verify(server: &TestServer, headers: &HeaderMap, body: &[u8]) {
    let jwks: Value = reqwest::get(server.at("/.well-known/jwks.json"))
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let h = |n: &str| headers[n].to_str().unwrap().to_owned();
    let message = format!(
        "{}\n{}\n{}\n{}",
        h("x-fal-webhook-request-id"),
        h("x-fal-webhook-user-id"),
        h("x-fal-webhook-timestamp"),
        hex::encode(Sha256::digest(body))
    );
    let sig = Signature::from_slice(&hex::decode(h("x-fal-webhook-signature")).unwrap()).unwrap();
    let verified = jwks["keys"].as_array().unwrap().iter().any(|k| {
        let x = base64::engine::general_purpose::URL_SAFE_NO_PAD
            .decode(k["x"].as_str().unwrap())
            .unwrap();
        VerifyingKey::from_bytes(&x.try_into().unwrap())
            .unwrap()
            .verify(message.as_bytes(), &sig)
            .is_ok()
    });
    assert!(verified, "the signature verifies against the JWKS");
    let ts: i64 = h("x-fal-webhook-timestamp").parse().unwrap();
    assert!((chrono::Utc::now().timestamp() - ts).abs() < 300);
}

#[tokio::test]
async fn a_webhook_arrives_once_signed_like_fals() {
    // One job of the model at a time, each a while: a job queued behind another is sure to
    // miss a 1 ms start deadline.
    let server = TestServer::start_with(
        fast_retries()
            .set("--per-model-concurrency", "1")
            .set("--emulator-latency-ms", "300"),
    )
    .await;
    let hook = receiver(vec![Answer::Ok]).await;
    let created = server.create(&job(&hook.url)).await;
    assert_eq!(created["webhook"]["state"], "pending");
    let id = created["request_id"].as_str().unwrap();
    let inv = webhook_state(&server, id, "delivered").await;
    assert_eq!(inv["webhook"]["attempts"].as_array().unwrap().len(), 1);
    assert_eq!(inv["webhook"]["attempts"][0]["status_code"], 200);
    // Nothing more arrives.
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (headers, body) = {
        let r = hook.received.lock().unwrap();
        assert_eq!(r.requests.len(), 1, "exactly once");
        r.requests[0].clone()
    };
    let payload: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["request_id"], id);
    assert_eq!(payload["gateway_request_id"], id);
    assert_eq!(payload["status"], "OK");
    assert_eq!(payload["payload"]["images"][0]["width"], 512);
    assert_eq!(headers["x-fal-webhook-request-id"], id);
    verify(&server, &headers, &body).await;

    // The fal surface takes the webhook as ?fal_webhook=, and a failed job reports ERROR: this
    // one waits behind `ahead` past its start deadline.
    let ahead = server
        .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "ahead"}}))
        .await;
    assert_eq!(ahead["status"], "QUEUED");
    let fal_hook = receiver(vec![Answer::Ok]).await;
    let resp = server
        .http
        .post(server.at(&format!(
            "/fal-ai/flux/schnell?fal_webhook={}",
            fal_hook.url
        )))
        .header("authorization", format!("Key {}", server.key))
        .header("x-fal-request-timeout", "0.001")
        .json(&json!({"prompt": "too late"}))
        .send()
        .await
        .unwrap();
    let sub: Value = resp.json().await.unwrap();
    let inv = webhook_state(&server, sub["request_id"].as_str().unwrap(), "delivered").await;
    assert_eq!(inv["status"], "FAILED");
    let body = fal_hook.received.lock().unwrap().requests[0].1.clone();
    let payload: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(payload["status"], "ERROR");
    assert_eq!(payload["payload"]["error_type"], "request_timeout");
}

#[tokio::test]
async fn failures_are_retried_until_the_receiver_takes_it_and_a_redirect_is_a_failure() {
    let server = TestServer::start_with(fast_retries()).await;
    let mut script = vec![Answer::Fail; 10];
    script.push(Answer::Ok);
    let flaky = receiver(script).await;
    let redirecting = receiver(vec![Answer::Redirect, Answer::Ok]).await;
    let a = server.create(&job(&flaky.url)).await;
    let b = server.create(&job(&redirecting.url)).await;
    let inv = webhook_state(&server, a["request_id"].as_str().unwrap(), "delivered").await;
    let attempts = inv["webhook"]["attempts"].as_array().unwrap();
    assert_eq!(attempts.len(), 11, "{inv}");
    assert!(
        attempts[..10]
            .iter()
            .all(|a| a["status_code"] == 500 && a["error"].is_string())
    );
    assert_eq!(flaky.received.lock().unwrap().requests.len(), 11);

    let inv = webhook_state(&server, b["request_id"].as_str().unwrap(), "delivered").await;
    let attempts = inv["webhook"]["attempts"].as_array().unwrap();
    assert_eq!(attempts[0]["status_code"], 302);
    assert!(attempts[0]["error"].as_str().unwrap().contains("redirect"));
    assert_eq!(attempts.len(), 2);
}

#[tokio::test]
async fn a_receiver_that_hangs_holds_up_no_other_job() {
    let server =
        TestServer::start_with(fast_retries().set("--webhook-timeout-seconds", "30")).await;
    let hang = receiver(vec![Answer::Hang]).await;
    let stuck = server.create(&job(&hang.url)).await;
    // Wait until the hanging delivery is in flight.
    let deadline = Instant::now() + Duration::from_secs(30);
    while hang.received.lock().unwrap().requests.is_empty() {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let ok = receiver(vec![Answer::Ok]).await;
    let mut ids = Vec::new();
    for _ in 0..10 {
        ids.push(
            server.create(&job(&ok.url)).await["request_id"]
                .as_str()
                .unwrap()
                .to_owned(),
        );
    }
    for id in &ids {
        webhook_state(&server, id, "delivered").await;
    }
    // All ten were delivered while the first delivery still hangs.
    let inv = server.get(stuck["request_id"].as_str().unwrap()).await;
    assert_eq!(inv["webhook"]["state"], "pending");
    assert!(
        inv["webhook"]["attempts"].as_array().unwrap().is_empty(),
        "{inv}"
    );
    // Cancels and shutdown are not held up either.
    let status = server.terminate().await;
    assert!(status.success());
}

#[tokio::test]
async fn deliveries_survive_a_restart_in_the_middle_of_retries() {
    let dir = tempfile::tempdir().unwrap();
    let slow_retries = fast_retries()
        .set("--webhook-backoff-base-ms", "1500")
        .set("--webhook-backoff-max-ms", "1500");
    let server = TestServer::start_in(dir.path(), slow_retries).await;
    let flaky = receiver(vec![Answer::Fail, Answer::Ok]).await;
    let id = server.create(&job(&flaky.url)).await["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    // Kill it once the failed first attempt is on record and the retry is waiting.
    let deadline = Instant::now() + Duration::from_secs(30);
    while server.get(&id).await["webhook"]["attempts"]
        .as_array()
        .map_or(0, Vec::len)
        == 0
    {
        assert!(Instant::now() < deadline);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    server.kill().await;
    let server = TestServer::start_in(dir.path(), fast_retries()).await;
    let inv = webhook_state(&server, &id, "delivered").await;
    assert_eq!(
        inv["webhook"]["attempts"].as_array().unwrap().len(),
        2,
        "{inv}"
    );
    assert_eq!(flaky.received.lock().unwrap().requests.len(), 2);
}

#[tokio::test]
async fn internal_webhook_targets_are_refused_by_default() {
    let server = TestServer::start().await;
    let resp = server
        .create_raw(&job("http://127.0.0.1:9/hook").to_string())
        .await;
    assert_eq!(resp.status(), 422);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("webhook_url"),
        "{body}"
    );
    assert!(
        body["message"]
            .as_str()
            .unwrap()
            .contains("internal address"),
        "{body}"
    );
    let resp = server
        .create_raw(&job("ftp://example.com/x").to_string())
        .await;
    assert_eq!(resp.status(), 422);
    assert_eq!(server.stored_jobs().await, 0);
}
