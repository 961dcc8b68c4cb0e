//! Overload: per-key rate limits with DigitalOcean's headers, and caps on queued jobs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{Options, TestServer};

fn flux() -> Value {
    json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x", "image_size": "square"}})
}

#[tokio::test]
async fn a_key_over_its_rate_gets_429_with_retry_after_and_integer_headers() {
    let server = TestServer::start_with(
        Options::default()
            .set("--rate-limit-per-second", "0.5")
            .set("--rate-limit-burst", "3"),
    )
    .await;
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = server
            .http
            .get(server.at("/v1/async-invoke"))
            .bearer_auth(&server.key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["ratelimit-limit"], "3");
        let reset: i64 = resp.headers()["ratelimit-reset"]
            .to_str()
            .unwrap()
            .parse()
            .unwrap();
        assert!(reset >= chrono::Utc::now().timestamp());
        remaining.push(
            resp.headers()["ratelimit-remaining"]
                .to_str()
                .unwrap()
                .parse::<u32>()
                .unwrap(),
        );
    }
    assert_eq!(remaining, [2, 1, 0]);
    let resp = server.create_raw(&flux().to_string()).await;
    assert_eq!(resp.status(), 429);
    let wait: u64 = resp.headers()["retry-after"]
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!((1..=2).contains(&wait), "{wait}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], "too_many_requests");
    assert!(body["message"].as_str().unwrap().contains("rate limit"));
    assert_eq!(
        server.stored_jobs().await,
        0,
        "a refused create stores nothing"
    );
    // Unauthenticated reads of health are not limited, and carry no key headers.
    let resp = server.http.get(server.at("/healthz")).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(!resp.headers().contains_key("ratelimit-limit"));
}

#[tokio::test]
async fn queued_jobs_are_capped_per_key_and_in_all() {
    let server = TestServer::start_with(
        Options::default()
            .set("--emulator-latency-ms", "60000")
            .set("--max-concurrency", "1")
            .set("--max-queued-per-key", "2")
            .set("--max-queue-length", "3"),
    )
    .await;
    let first = server.create(&flux()).await;
    while server.get(first["request_id"].as_str().unwrap()).await["status"] != "IN_PROGRESS" {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.create(&flux()).await;
    server.create(&flux()).await;
    let resp = server.create_raw(&flux().to_string()).await;
    assert_eq!(resp.status(), 429);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("queued jobs"),
        "{body}"
    );
    assert_eq!(server.stored_jobs().await, 3);
    // Reads keep working while the queue is full.
    let resp = server
        .http
        .get(server.at("/v1/async-invoke"))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
}
