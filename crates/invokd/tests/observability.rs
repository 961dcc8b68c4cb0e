//! Metrics, request logs and health, as an operator sees them.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::TestServer;

#[tokio::test]
async fn metrics_count_requests_jobs_and_queues() {
    let server = TestServer::start().await;
    let job = server.create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "m", "image_size": "square"}})).await;
    server.wait(job["request_id"].as_str().unwrap()).await;
    let resp = reqwest::get(server.at("/metrics")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/plain")
    );
    let text = resp.text().await.unwrap();
    for needle in [
        r#"invokd_http_requests_total{route="/v1/async-invoke",method="POST",status="202"} 1"#,
        r#"invokd_jobs_submitted_total{model="fal-ai/flux/schnell"} 1"#,
        r#"invokd_jobs_finished_total{model="fal-ai/flux/schnell",status="COMPLETED"} 1"#,
        r#"invokd_queue_depth{model="fal-ai/fast-sdxl"} 0"#,
        r#"invokd_queue_oldest_age_seconds{model="fal-ai/flux/schnell"} 0"#,
        "invokd_job_run_seconds_bucket{",
        "invokd_job_queue_wait_seconds_bucket{",
        "invokd_http_request_duration_seconds_bucket{",
        "invokd_store_operation_duration_seconds_bucket{",
    ] {
        assert!(text.contains(needle), "missing {needle} in:\n{text}");
    }
}

#[tokio::test]
async fn each_request_logs_one_json_line_with_its_ids_but_never_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), support::Options::default()).await;
    let resp = server
        .http
        .get(server.at("/v1/async-invoke/0196b7a4-0000-7000-8000-000000000000"))
        .bearer_auth(&server.key)
        .header("x-request-id", "trace-me-123")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert_eq!(resp.headers()["x-request-id"], "trace-me-123");
    let healthy = reqwest::get(server.at("/readyz")).await.unwrap();
    assert_eq!(healthy.status(), 200);
    assert_eq!(healthy.json::<Value>().await.unwrap()["store"], "ok");

    // The log line is written after the response; give it a moment.
    let log_path = dir.path().join("server.log");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let line = loop {
        let log = std::fs::read_to_string(&log_path).unwrap();
        if let Some(l) = log.lines().find(|l| l.contains("trace-me-123")) {
            break l.to_owned();
        }
        assert!(std::time::Instant::now() < deadline, "no log line:\n{log}");
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    };
    let v: Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["request_id"], "trace-me-123");
    assert_eq!(v["route"], "/v1/async-invoke/{request_id}");
    assert_eq!(v["status"], 404);
    assert!(v["key_id"].as_str().unwrap().len() == 36, "{v}");
    assert!(v["latency_ms"].is_number());
    let log = std::fs::read_to_string(&log_path).unwrap();
    assert!(
        !log.contains(&server.key),
        "the key never appears in the logs"
    );
}
