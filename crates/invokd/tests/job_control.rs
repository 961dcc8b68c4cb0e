//! Job control on the DO surface: cancel, live events, `Prefer: wait`, listing with paging, and
//! idempotent creates.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::HashSet;

use serde_json::{Value, json};
use support::{Options, TestServer};

fn flux(prompt: &str) -> Value {
    json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": prompt, "image_size": {"width": 64, "height": 64}}})
}

async fn post(
    server: &TestServer,
    path: &str,
    body: Option<&Value>,
    headers: &[(&str, &str)],
) -> (u16, reqwest::header::HeaderMap, Value) {
    let mut req = server.http.post(server.at(path)).bearer_auth(&server.key);
    if let Some(b) = body {
        req = req.json(b);
    }
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let (code, headers) = (resp.status().as_u16(), resp.headers().clone());
    (code, headers, resp.json().await.unwrap())
}

async fn get(server: &TestServer, path: &str) -> (u16, Value) {
    let resp = server
        .http
        .get(server.at(path))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    (resp.status().as_u16(), resp.json().await.unwrap())
}

#[tokio::test]
async fn cancel_on_the_do_surface() {
    let server = TestServer::start_with(
        Options::default()
            .set("--emulator-latency-ms", "30000")
            .set("--per-model-concurrency", "1"),
    )
    .await;
    let running = server.create(&flux("runs")).await;
    let queued = server.create(&flux("waits")).await;
    let (rid, qid) = (
        running["request_id"].as_str().unwrap(),
        queued["request_id"].as_str().unwrap(),
    );
    while server.get(rid).await["status"] != "IN_PROGRESS" {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let (code, _, body) = post(
        &server,
        &format!("/v1/async-invoke/{qid}/cancel"),
        None,
        &[],
    )
    .await;
    assert_eq!(code, 202, "{body}");
    assert_eq!(body["status"], "CANCELED");
    let (code, _, _) = post(
        &server,
        &format!("/v1/async-invoke/{rid}/cancel"),
        None,
        &[],
    )
    .await;
    assert_eq!(code, 202);
    let done = server.wait(rid).await;
    assert_eq!(done["status"], "CANCELED");
    assert!(done["error"].as_str().unwrap().contains("cancelled"));
    let (code, _, body) = post(
        &server,
        &format!("/v1/async-invoke/{rid}/cancel"),
        None,
        &[],
    )
    .await;
    assert_eq!(code, 409, "{body}");
    assert_eq!(body["id"], "conflict");
    let (code, _, _) = post(
        &server,
        "/v1/async-invoke/0196b7a4-0000-7000-8000-000000000000/cancel",
        None,
        &[],
    )
    .await;
    assert_eq!(code, 404);
}

#[tokio::test]
async fn events_stream_statuses_and_logs_and_end_after_the_terminal_one() {
    let server =
        TestServer::start_with(Options::default().set("--emulator-latency-ms", "400")).await;
    let job = server.create(&flux("watched")).await;
    let id = job["request_id"].as_str().unwrap();
    let resp = server
        .http
        .get(server.at(&format!("/v1/async-invoke/{id}/events")))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    let text = tokio::time::timeout(std::time::Duration::from_secs(30), resp.text())
        .await
        .unwrap()
        .unwrap();
    let mut statuses = Vec::new();
    let mut logs = 0;
    let mut kind = "";
    for line in text.lines() {
        if let Some(k) = line.strip_prefix("event:") {
            kind = if k.trim() == "status" {
                "status"
            } else {
                "log"
            };
        } else if let Some(d) = line.strip_prefix("data:") {
            let v: Value = serde_json::from_str(d.trim()).unwrap();
            if kind == "status" {
                statuses.push(v["status"].as_str().unwrap().to_owned());
            } else {
                assert!(v["message"].is_string());
                logs += 1;
            }
        }
    }
    assert_eq!(
        statuses.last().map(String::as_str),
        Some("COMPLETED"),
        "{text}"
    );
    assert!(statuses.contains(&"IN_PROGRESS".to_owned()), "{text}");
    assert!(logs >= 2, "{text}");
    // The terminal status comes after every log line.
    assert!(
        text.rfind("event: log").unwrap() < text.rfind("event: status").unwrap(),
        "{text}"
    );
}

#[tokio::test]
async fn prefer_wait_returns_the_finished_job() {
    let server =
        TestServer::start_with(Options::default().set("--emulator-latency-ms", "300")).await;
    let (code, headers, body) = post(
        &server,
        "/v1/async-invoke",
        Some(&flux("waited")),
        &[("prefer", "wait=30")],
    )
    .await;
    assert_eq!(code, 202);
    assert_eq!(body["status"], "COMPLETED", "{body}");
    assert_eq!(headers["preference-applied"], "wait=30");
    assert!(body["output"]["images"][0]["url"].is_string());
    // On get too, and an absurd wait is capped rather than refused.
    let job = server.create(&flux("later")).await;
    let resp = server
        .http
        .get(server.at(&format!(
            "/v1/async-invoke/{}",
            job["request_id"].as_str().unwrap()
        )))
        .bearer_auth(&server.key)
        .header("prefer", "respond-async, wait=100000")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.headers()["preference-applied"], "wait=60");
    assert_eq!(resp.json::<Value>().await.unwrap()["status"], "COMPLETED");
}

#[tokio::test]
async fn listing_filters_and_pages_through_a_thousand_jobs_once_each() {
    // The dispatcher is slowed down so that statuses stay put while we look.
    let server = TestServer::start_with(
        Options::default()
            .set("--emulator-latency-ms", "600000")
            .set("--max-concurrency", "1"),
    )
    .await;
    let mut created = HashSet::new();
    let mut tasks = tokio::task::JoinSet::new();
    for worker in 0..8 {
        let (url, key, http) = (
            server.at("/v1/async-invoke"),
            server.key.clone(),
            server.http.clone(),
        );
        tasks.spawn(async move {
            let mut ids = Vec::new();
            for i in 0..125 {
                let model = if i % 5 == 0 { "fal-ai/fast-sdxl" } else { "fal-ai/flux/schnell" };
                let body = json!({"model_id": model, "input": {"prompt": "x"}, "tags": [{"key": "batch", "value": format!("w{worker}")}]});
                let resp = http.post(&url).bearer_auth(&key).json(&body).send().await.unwrap();
                assert_eq!(resp.status(), 202);
                ids.push(resp.json::<Value>().await.unwrap()["request_id"].as_str().unwrap().to_owned());
            }
            ids
        });
    }
    while let Some(ids) = tasks.join_next().await {
        created.extend(ids.unwrap());
    }
    assert_eq!(created.len(), 1000);

    let mut seen = HashSet::new();
    let mut cursor: Option<String> = None;
    let mut last_created: Option<chrono::DateTime<chrono::FixedOffset>> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/async-invoke?limit=73&cursor={c}"),
            None => "/v1/async-invoke?limit=73".to_owned(),
        };
        let (code, page) = get(&server, &path).await;
        assert_eq!(code, 200, "{page}");
        for inv in page["invocations"].as_array().unwrap() {
            assert!(
                seen.insert(inv["request_id"].as_str().unwrap().to_owned()),
                "a job came twice"
            );
            let at =
                chrono::DateTime::parse_from_rfc3339(inv["created_at"].as_str().unwrap()).unwrap();
            if let Some(prev) = &last_created {
                assert!(&at <= prev, "newest first");
            }
            last_created = Some(at);
        }
        match page["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_owned()),
            None => break,
        }
    }
    assert_eq!(seen, created, "every job exactly once");

    let (_, by_model) = get(
        &server,
        "/v1/async-invoke?model_id=fal-ai/fast-sdxl&limit=1000",
    )
    .await;
    assert_eq!(by_model["invocations"].as_array().unwrap().len(), 200);
    let (_, by_tag) = get(&server, "/v1/async-invoke?tag=batch:w3&limit=1000").await;
    assert_eq!(by_tag["invocations"].as_array().unwrap().len(), 125);
    let (_, running) = get(&server, "/v1/async-invoke?status=in_progress").await;
    assert_eq!(running["invocations"].as_array().unwrap().len(), 1);
    let (_, queued) = get(&server, "/v1/async-invoke?status=QUEUED&limit=1000").await;
    assert_eq!(queued["invocations"].as_array().unwrap().len(), 999);
    let (_, future) = get(
        &server,
        "/v1/async-invoke?created_after=2999-01-01T00:00:00Z",
    )
    .await;
    assert!(future["invocations"].as_array().unwrap().is_empty());
    let (_, past) = get(
        &server,
        "/v1/async-invoke?created_before=2000-01-01T00:00:00Z",
    )
    .await;
    assert!(past["invocations"].as_array().unwrap().is_empty());

    for (query, code) in [
        ("status=DONE", 422),
        ("tag=nocolon", 422),
        ("limit=0", 422),
        ("limit=abc", 422),
        ("created_after=yesterday", 422),
        ("cursor=!!", 400),
    ] {
        let (got, body) = get(&server, &format!("/v1/async-invoke?{query}")).await;
        assert_eq!(got, code, "{query}: {body}");
        assert!(body["message"].is_string());
    }
}

#[tokio::test]
async fn idempotent_creates_make_one_job_even_concurrently_and_across_a_restart() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start_in(dir.path(), Options::default()).await;
    let body = flux("once");
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..8 {
        let (url, key, http, body) = (
            server.at("/v1/async-invoke"),
            server.key.clone(),
            server.http.clone(),
            body.clone(),
        );
        tasks.spawn(async move {
            let resp = http
                .post(&url)
                .bearer_auth(&key)
                .header("idempotency-key", "order-42")
                .json(&body)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 202);
            resp.json::<Value>().await.unwrap()["request_id"]
                .as_str()
                .unwrap()
                .to_owned()
        });
    }
    let mut ids = HashSet::new();
    while let Some(id) = tasks.join_next().await {
        ids.insert(id.unwrap());
    }
    assert_eq!(ids.len(), 1, "one job for one key");
    assert_eq!(server.stored_jobs().await, 1);
    let id = ids.into_iter().next().unwrap();

    // Another body with the same key is refused; nothing is stored.
    let (code, _, err) = post(
        &server,
        "/v1/async-invoke",
        Some(&flux("other")),
        &[("idempotency-key", "order-42")],
    )
    .await;
    assert_eq!(code, 422, "{err}");
    assert!(err["message"].as_str().unwrap().contains("Idempotency-Key"));
    let (code, _, _) = post(
        &server,
        "/v1/async-invoke",
        Some(&flux("x")),
        &[("idempotency-key", "")],
    )
    .await;
    assert_eq!(code, 400);
    assert_eq!(server.stored_jobs().await, 1);

    // After a restart, the retry still finds the first job.
    server.kill().await;
    let server = TestServer::start_in(dir.path(), Options::default()).await;
    let (code, _, again) = post(
        &server,
        "/v1/async-invoke",
        Some(&body),
        &[("idempotency-key", "order-42")],
    )
    .await;
    assert_eq!(code, 202);
    assert_eq!(again["request_id"], id.as_str());
    assert_eq!(server.stored_jobs().await, 1);
}

#[tokio::test]
async fn a_run_past_its_limit_fails_and_the_limit_is_checked() {
    let server =
        TestServer::start_with(Options::default().set("--emulator-latency-ms", "30000")).await;
    let mut body = flux("slow");
    body["run_timeout_seconds"] = json!(0.5);
    let job = server.create(&body).await;
    let done = server.wait(job["request_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "FAILED", "{done}");
    assert!(done["error"].as_str().unwrap().contains("limit"), "{done}");
    for bad in [json!(0), json!(-1), json!(100000), json!("soon")] {
        let mut body = flux("x");
        body["run_timeout_seconds"] = bad.clone();
        let resp = server.create_raw(&body.to_string()).await;
        assert_eq!(resp.status(), 422, "{bad}");
        let err: Value = resp.json().await.unwrap();
        assert!(
            err["message"]
                .as_str()
                .unwrap()
                .contains("run_timeout_seconds"),
            "{err}"
        );
    }
}

#[tokio::test]
async fn outputs_expire_after_the_retention_and_say_so() {
    let server = TestServer::start_with(
        Options::default()
            .set("--retention-seconds", "1")
            .set("--janitor-interval-ms", "100"),
    )
    .await;
    let job = server.create(&flux("short-lived")).await;
    let id = job["request_id"].as_str().unwrap().to_owned();
    let done = server.wait(&id).await;
    let url = done["output"]["images"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_eq!(reqwest::get(&url).await.unwrap().status(), 200);
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    let expired = loop {
        let inv = server.get(&id).await;
        if inv["expired_at"].is_string() {
            break inv;
        }
        assert!(std::time::Instant::now() < deadline, "never expired: {inv}");
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    };
    assert!(expired["output"].is_null(), "{expired}");
    assert_eq!(expired["status"], "COMPLETED");
    let resp = reqwest::get(&url).await.unwrap();
    assert_eq!(resp.status(), 404);
    let body: Value = resp.json().await.unwrap();
    assert!(
        body["message"].as_str().unwrap().contains("expired"),
        "{body}"
    );
    assert_eq!(server.stored_files(), 0, "the files are deleted");
    let resp = server
        .http
        .get(server.at(&format!("/fal-ai/flux/requests/{id}")))
        .header("authorization", format!("Key {}", server.key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
    assert!(
        resp.json::<Value>().await.unwrap()["detail"]
            .as_str()
            .unwrap()
            .contains("expired")
    );
}
