//! Overload: per-key rate limits (creates apart from reads) with DigitalOcean's headers, and
//! caps on queued jobs.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{Options, TestServer};

fn flux() -> Value {
    json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x", "image_size": "square"}})
}

fn header<T: std::str::FromStr>(resp: &reqwest::Response, name: &str) -> T
where
    T::Err: std::fmt::Debug,
{
    resp.headers()[name].to_str().unwrap().parse().unwrap()
}

#[tokio::test]
async fn creates_and_reads_have_their_own_limits_named_in_the_headers() {
    let server = TestServer::start_with(
        Options::default()
            .set("--create-rate-limit-per-second", "0.5")
            .set("--create-rate-limit-burst", "3")
            .set("--read-rate-limit-per-second", "0.5")
            .set("--read-rate-limit-burst", "4"),
    )
    .await;
    let read = || {
        server
            .http
            .get(server.at("/v1/async-invoke"))
            .bearer_auth(&server.key)
            .send()
    };
    // Polling spends the read limit only.
    let mut remaining = Vec::new();
    for _ in 0..4 {
        let resp = read().await.unwrap();
        assert_eq!(resp.status(), 200);
        assert_eq!(header::<u32>(&resp, "ratelimit-limit"), 4);
        assert_eq!(
            header::<String>(&resp, "ratelimit-policy"),
            "4;w=8;name=\"read\""
        );
        assert!(header::<i64>(&resp, "ratelimit-reset") >= chrono::Utc::now().timestamp());
        remaining.push(header::<u32>(&resp, "ratelimit-remaining"));
    }
    assert_eq!(remaining, [3, 2, 1, 0]);
    let refused = read().await.unwrap();
    assert_eq!(refused.status(), 429);
    let body: Value = refused.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("read limit"),
        "{body}"
    );
    // Creating still has its whole budget.
    let mut remaining = Vec::new();
    for _ in 0..3 {
        let resp = server.create_raw(&flux().to_string()).await;
        assert_eq!(resp.status(), 202);
        assert_eq!(header::<u32>(&resp, "ratelimit-limit"), 3);
        assert!(header::<String>(&resp, "ratelimit-policy").ends_with("name=\"create\""));
        remaining.push(header::<u32>(&resp, "ratelimit-remaining"));
    }
    assert_eq!(remaining, [2, 1, 0]);
    let resp = server.create_raw(&flux().to_string()).await;
    assert_eq!(resp.status(), 429);
    let wait: u64 = header(&resp, "retry-after");
    assert!((1..=2).contains(&wait), "{wait}");
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], "too_many_requests");
    assert!(
        body["message"].as_str().unwrap().contains("create limit"),
        "{body}"
    );
    assert_eq!(
        server.stored_jobs().await,
        3,
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
