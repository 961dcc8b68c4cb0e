//! fal's queue surface over HTTP, as fal's clients use it: submit, status with logs, the SSE
//! stream, the result, cancel, queue headers, and fal's error shapes.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Options, TestServer};

async fn submit(
    server: &TestServer,
    path: &str,
    body: Value,
    headers: &[(&str, &str)],
) -> (u16, Value) {
    let mut req = server
        .http
        .post(server.at(path))
        .header("authorization", format!("Key {}", server.key))
        .json(&body);
    for (k, v) in headers {
        req = req.header(*k, *v);
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let fal_id = resp
        .headers()
        .get("x-fal-request-id")
        .map(|v| v.to_str().unwrap().to_owned());
    let body: Value = resp.json().await.unwrap();
    if status == 200 {
        assert_eq!(
            fal_id.as_deref(),
            body["request_id"].as_str(),
            "x-fal-request-id on submit"
        );
    }
    (status, body)
}

async fn get(server: &TestServer, url: &str) -> (u16, Value) {
    let resp = server
        .http
        .get(url)
        .header("authorization", format!("Key {}", server.key))
        .send()
        .await
        .unwrap();
    let status = resp.status().as_u16();
    assert!(resp.headers().contains_key("x-fal-request-id"), "{url}");
    (status, resp.json().await.unwrap())
}

async fn put(server: &TestServer, url: &str) -> reqwest::Response {
    server
        .http
        .put(url)
        .header("authorization", format!("Key {}", server.key))
        .send()
        .await
        .unwrap()
}

/// Until the job is running (at most 30 s).
async fn wait_running(server: &TestServer, status_url: &str) {
    let deadline = Instant::now() + Duration::from_secs(30);
    while get(server, status_url).await.1["status"] != "IN_PROGRESS" {
        assert!(Instant::now() < deadline, "the job never started");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_done(server: &TestServer, status_url: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let (code, body) = get(server, &format!("{status_url}?logs=1")).await;
        if body["status"] == "COMPLETED" {
            assert_eq!(code, 200);
            return body;
        }
        assert_eq!(code, 202, "{body}");
        assert!(Instant::now() < deadline, "not done: {body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn submit_poll_and_fetch_the_result_through_both_path_forms() {
    let server = TestServer::start().await;
    let (code, sub) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"prompt": "a cat", "image_size": "square"}),
        &[],
    )
    .await;
    assert_eq!(code, 200, "{sub}");
    assert_eq!(sub["status"], "IN_QUEUE");
    assert!(sub["queue_position"].is_u64());
    let id = sub["request_id"].as_str().unwrap();
    assert_eq!(sub["gateway_request_id"], id);
    let app_url = server.at(&format!("/fal-ai/flux/requests/{id}"));
    assert_eq!(sub["response_url"], app_url);
    assert_eq!(sub["status_url"], format!("{app_url}/status"));
    assert_eq!(sub["cancel_url"], format!("{app_url}/cancel"));

    let done = wait_done(&server, sub["status_url"].as_str().unwrap()).await;
    assert!(done.as_object().unwrap().contains_key("logs"));
    let logs = done["logs"].as_array().unwrap();
    assert!(
        logs.iter()
            .any(|l| l["message"].as_str().unwrap().contains("emulator")),
        "{done}"
    );
    assert!(
        logs.iter()
            .all(|l| l["source"] == "USER" && l["level"].is_string() && l["timestamp"].is_string())
    );
    assert!(done["metrics"]["inference_time"].is_f64(), "{done}");
    assert!(done.get("error").is_none());

    // Without logs=1 the key is there, null.
    let (_, plain) = get(&server, sub["status_url"].as_str().unwrap()).await;
    assert!(plain.as_object().unwrap().contains_key("logs") && plain["logs"].is_null());

    // The result: the bare model output, through the app-only and the full path.
    for url in [
        app_url.clone(),
        server.at(&format!("/fal-ai/flux/schnell/requests/{id}")),
    ] {
        let (code, out) = get(&server, &url).await;
        assert_eq!(code, 200);
        assert_eq!(out["images"][0]["width"], 512, "{out}");
        let (ct, bytes) = server
            .download(out["images"][0]["url"].as_str().unwrap())
            .await;
        assert_eq!(ct, "image/jpeg");
        assert!(!bytes.is_empty());
    }
    // The full path's status works too, and the DO surface sees the same job.
    let (code, _) = get(
        &server,
        &server.at(&format!("/fal-ai/flux/schnell/requests/{id}/status")),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(server.get(id).await["status"], "COMPLETED");
}

#[tokio::test]
async fn a_do_job_is_readable_on_the_fal_surface() {
    let server = TestServer::start().await;
    let job = server
        .create(&json!({"model_id": "fal-ai/fast-sdxl", "input": {"prompt": "x", "image_size": "square"}}))
        .await;
    let id = job["request_id"].as_str().unwrap();
    server.wait(id).await;
    let (code, out) = get(
        &server,
        &server.at(&format!("/fal-ai/fast-sdxl/requests/{id}")),
    )
    .await;
    assert_eq!(code, 200);
    assert_eq!(out["images"][0]["height"], 512);
}

#[tokio::test]
async fn while_running_the_status_is_202_with_logs_and_the_result_is_not_ready() {
    let server =
        TestServer::start_with(Options::default().set("--emulator-latency-ms", "3000")).await;
    let (_, sub) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"prompt": "slow"}),
        &[],
    )
    .await;
    let status_url = sub["status_url"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (code, body) = get(&server, &format!("{status_url}?logs=true")).await;
        assert_eq!(code, 202);
        if body["status"] == "IN_PROGRESS" && body["logs"].as_array().is_some_and(|l| !l.is_empty())
        {
            assert!(body.get("queue_position").is_none());
            break;
        }
        assert!(Instant::now() < deadline, "{body}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let (code, body) = get(&server, sub["response_url"].as_str().unwrap()).await;
    assert_eq!(code, 400);
    assert_eq!(body, json!({"detail": "Request is still in progress"}));
}

#[tokio::test]
async fn the_status_stream_sends_each_change_and_closes_after_completed() {
    let server =
        TestServer::start_with(Options::default().set("--emulator-latency-ms", "400")).await;
    let (_, sub) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"prompt": "stream"}),
        &[],
    )
    .await;
    let url = format!("{}/stream?logs=1", sub["status_url"].as_str().unwrap());
    let resp = server
        .http
        .get(&url)
        .header("authorization", format!("Key {}", server.key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    assert!(
        resp.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("text/event-stream")
    );
    // The body ends by itself once the job is COMPLETED.
    let text = tokio::time::timeout(Duration::from_secs(30), resp.text())
        .await
        .unwrap()
        .unwrap();
    let events: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    assert!(events.len() >= 2, "{text}");
    assert_eq!(events.last().unwrap()["status"], "COMPLETED");
    assert!(
        events[..events.len() - 1]
            .iter()
            .all(|e| e["status"] != "COMPLETED")
    );
    assert!(
        events.iter().any(|e| e["status"] == "IN_PROGRESS"),
        "{text}"
    );
}

#[tokio::test]
async fn cancel_a_queued_job_and_a_running_one() {
    let server = TestServer::start_with(
        Options::default()
            .set("--emulator-latency-ms", "30000")
            .set("--per-model-concurrency", "1"),
    )
    .await;
    let (_, running) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"prompt": "first"}),
        &[],
    )
    .await;
    wait_running(&server, running["status_url"].as_str().unwrap()).await;
    let (_, queued) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"prompt": "second"}),
        &[],
    )
    .await;
    // The first one is already running; this one is next.
    assert_eq!(queued["queue_position"], 0, "{queued}");
    for job in [&queued, &running] {
        let resp = put(&server, job["cancel_url"].as_str().unwrap()).await;
        assert_eq!(resp.status(), 202);
        assert_eq!(
            resp.json::<Value>().await.unwrap(),
            json!({"status": "CANCELLATION_REQUESTED"})
        );
    }
    for job in [&queued, &running] {
        let done = wait_done(&server, job["status_url"].as_str().unwrap()).await;
        assert_eq!(done["error_type"], "client_cancelled", "{done}");
        assert!(done["error"].is_string());
        let (code, body) = get(&server, job["response_url"].as_str().unwrap()).await;
        assert_eq!(code, 499, "{body}");
        assert_eq!(body["error_type"], "client_cancelled");
        assert_eq!(
            server.get(job["request_id"].as_str().unwrap()).await["status"],
            "CANCELED"
        );
    }
    // The queued one never ran.
    assert!(server.get(queued["request_id"].as_str().unwrap()).await["started_at"].is_null());
    // Cancelling again, or an unknown id.
    let resp = put(&server, queued["cancel_url"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 400);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"status": "ALREADY_COMPLETED"})
    );
    let resp = put(
        &server,
        &server.at("/fal-ai/flux/requests/0196b7a4-0000-7000-8000-000000000000/cancel"),
    )
    .await;
    assert_eq!(resp.status(), 404);
    assert_eq!(
        resp.json::<Value>().await.unwrap(),
        json!({"status": "NOT_FOUND"})
    );
}

#[tokio::test]
async fn priority_orders_the_queue_and_a_start_timeout_expires_queued_jobs() {
    let server = TestServer::start_with(
        Options::default()
            .set("--emulator-latency-ms", "1500")
            .set("--per-model-concurrency", "1"),
    )
    .await;
    let (_, blocker) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"prompt": "blocker"}),
        &[],
    )
    .await;
    let (_, low) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"prompt": "low"}),
        &[("x-fal-queue-priority", "low")],
    )
    .await;
    let (_, normal) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"prompt": "normal"}),
        &[("x-fal-queue-priority", "normal")],
    )
    .await;
    let (_, timed) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"prompt": "hurry"}),
        &[("x-fal-request-timeout", "1.0")],
    )
    .await;
    let (_, pos) = get(&server, normal["status_url"].as_str().unwrap()).await;
    let (_, low_pos) = get(&server, low["status_url"].as_str().unwrap()).await;
    assert!(
        pos["queue_position"].as_u64() < low_pos["queue_position"].as_u64(),
        "{pos} {low_pos}"
    );

    let timed_out = wait_done(&server, timed["status_url"].as_str().unwrap()).await;
    assert_eq!(timed_out["error_type"], "request_timeout", "{timed_out}");
    let (code, _) = get(&server, timed["response_url"].as_str().unwrap()).await;
    assert_eq!(code, 504);
    assert!(
        server.get(timed["request_id"].as_str().unwrap()).await["started_at"].is_null(),
        "it never ran"
    );

    for j in [&blocker, &normal, &low] {
        wait_done(&server, j["status_url"].as_str().unwrap()).await;
    }
    let started = |j: &Value| {
        let id = j["request_id"].as_str().unwrap().to_owned();
        let server = &server;
        async move {
            server.get(&id).await["started_at"]
                .as_str()
                .unwrap()
                .to_owned()
        }
    };
    assert!(
        started(&normal).await < started(&low).await,
        "normal priority starts before low"
    );
}

#[tokio::test]
async fn fal_errors_have_fals_shapes() {
    let server = TestServer::start().await;
    // Validation: 422 with pydantic-style details.
    let (code, body) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"num_images": 99}),
        &[],
    )
    .await;
    assert_eq!(code, 422);
    let detail = body["detail"].as_array().unwrap();
    assert!(
        detail
            .iter()
            .any(|d| d["loc"] == json!(["body", "prompt"]) && d["type"] == "missing"),
        "{body}"
    );
    assert!(
        detail
            .iter()
            .any(|d| d["loc"] == json!(["body", "num_images"])),
        "{body}"
    );
    // Bad queue headers.
    for (h, v) in [
        ("x-fal-queue-priority", "urgent"),
        ("x-fal-request-timeout", "soon"),
    ] {
        let (code, body) = submit(
            &server,
            "/fal-ai/flux/schnell",
            json!({"prompt": "x"}),
            &[(h, v)],
        )
        .await;
        assert_eq!(code, 422, "{h}");
        assert!(body["detail"].as_str().unwrap().contains(v), "{body}");
    }
    // Unknown model and unknown request.
    let (code, body) = submit(&server, "/fal-ai/nope", json!({"prompt": "x"}), &[]).await;
    assert_eq!(code, 404);
    assert!(body["detail"].as_str().unwrap().contains("fal-ai/nope"));
    let (code, body) = get(
        &server,
        &server.at("/fal-ai/flux/requests/0196b7a4-0000-7000-8000-000000000000/status"),
    )
    .await;
    assert_eq!(code, 404);
    assert!(body["detail"].is_string());
    // A wrong key.
    let resp = server
        .http
        .post(server.at("/fal-ai/flux/schnell"))
        .header("authorization", "Key invk_not_a_real_key_000000")
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    let body: Value = resp.json().await.unwrap();
    assert!(body["detail"].is_string());
    assert_eq!(server.stored_jobs().await, 0);
}

#[tokio::test]
async fn input_files_are_checked_at_submit_and_fetched_before_the_run() {
    let server = TestServer::start().await;
    let png = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAIAAACQd1PeAAAADElEQVQI12P4z8AAAAMBAQAY3Y2wAAAAAElFTkSuQmCC";
    // A data URI works; a broken one, or a value that is no URL, is refused at submit.
    let (code, ok) = submit(
        &server,
        "/fal-ai/omnigen-v2",
        json!({"prompt": "x", "input_image_urls": [png]}),
        &[],
    )
    .await;
    assert_eq!(code, 200, "{ok}");
    let done = wait_done(&server, ok["status_url"].as_str().unwrap()).await;
    assert!(done.get("error").is_none(), "{done}");
    let logs = done["logs"].as_array().unwrap();
    assert!(
        logs.iter().any(|l| l["message"]
            .as_str()
            .unwrap()
            .contains("read 1 input file(s)")),
        "{done}"
    );
    for bad in ["data:image/png;base64,@@@", "file:///etc/passwd"] {
        let (code, body) = submit(
            &server,
            "/fal-ai/omnigen-v2",
            json!({"prompt": "x", "input_image_urls": [bad]}),
            &[],
        )
        .await;
        assert_eq!(code, 422, "{bad}: {body}");
        assert_eq!(
            body["detail"][0]["loc"],
            json!(["body", "input_image_urls", 0]),
            "{body}"
        );
    }
    // A URL on this machine is refused by default: the job fails, naming the field.
    let local = server.at("/healthz");
    let (_, sub) = submit(
        &server,
        "/fal-ai/omnigen-v2",
        json!({"prompt": "x", "input_image_urls": [local]}),
        &[],
    )
    .await;
    let done = wait_done(&server, sub["status_url"].as_str().unwrap()).await;
    let error = done["error"].as_str().unwrap();
    assert!(
        error.contains("input_image_urls[0]") && error.contains("internal address"),
        "{error}"
    );
}

#[tokio::test]
async fn private_urls_are_fetched_when_allowed() {
    let server = TestServer::start_with(Options::default().arg("--allow-private-urls")).await;
    let (_, sub) = submit(
        &server,
        "/fal-ai/omnigen-v2",
        json!({"prompt": "x", "input_image_urls": [server.at("/healthz")]}),
        &[],
    )
    .await;
    let done = wait_done(&server, sub["status_url"].as_str().unwrap()).await;
    assert!(done.get("error").is_none(), "{done}");
    // A missing file is a clear failure.
    let (_, sub) = submit(
        &server,
        "/fal-ai/omnigen-v2",
        json!({"prompt": "x", "input_image_urls": [server.at("/nope.png")]}),
        &[],
    )
    .await;
    let done = wait_done(&server, sub["status_url"].as_str().unwrap()).await;
    assert!(
        done["error"].as_str().unwrap().contains("HTTP 404"),
        "{done}"
    );
}

#[tokio::test]
async fn a_retried_fal_submit_with_an_idempotency_key_gives_the_first_request() {
    let server = TestServer::start().await;
    let body = json!({"prompt": "once"});
    let key = [("idempotency-key", "fal-retry-1")];
    let (code, first) = submit(&server, "/fal-ai/flux/schnell", body.clone(), &key).await;
    assert_eq!(code, 200);
    let (code, again) = submit(&server, "/fal-ai/flux/schnell", body, &key).await;
    assert_eq!(code, 200);
    assert_eq!(first["request_id"], again["request_id"]);
    let (code, other) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"prompt": "twice"}),
        &key,
    )
    .await;
    assert_eq!(code, 422, "{other}");
    assert!(
        other["detail"]
            .as_str()
            .unwrap()
            .contains("Idempotency-Key")
    );
    assert_eq!(server.stored_jobs().await, 1);
}

#[tokio::test]
async fn positions_in_a_deep_queue_rank_every_job_in_the_order_it_runs() {
    // Deep enough that positions come from a copy of the queue, not a count (`queue_positions`:
    // from 1,000 queued jobs, a copy read when a look-up finds the last one a second old).
    const CHUNKS: usize = 22;
    const PER_CHUNK: usize = 50;
    const QUEUED: u64 = (CHUNKS * PER_CHUNK) as u64;
    let copy_is_due = Duration::from_millis(1_200);
    let copy_is_read = Duration::from_millis(300);
    let server = TestServer::start_with(
        Options::default()
            .set("--emulator-latency-ms", "3600000")
            .set("--per-model-concurrency", "1"),
    )
    .await;
    let (_, running) = submit(&server, "/fal-ai/flux/schnell", json!({"prompt": "r"}), &[]).await;
    wait_running(&server, running["status_url"].as_str().unwrap()).await;
    // Chunk by chunk: the order within a chunk is the server's, across chunks it is known.
    let mut chunks = Vec::new();
    for c in 0..CHUNKS {
        let submits = (0..PER_CHUNK).map(|i| {
            let prompt = format!("{c}-{i}");
            let server = &server;
            async move {
                submit(
                    server,
                    "/fal-ai/flux/schnell",
                    json!({"prompt": prompt}),
                    &[],
                )
                .await
                .1
            }
        });
        chunks.push(futures::future::join_all(submits).await);
    }
    let position = |job: &Value| {
        let url = job["status_url"].as_str().unwrap().to_owned();
        let server = &server;
        async move {
            let (_, status) = get(server, &url).await;
            assert_eq!(status["status"], "IN_QUEUE", "{status}");
            status["queue_position"].as_u64().unwrap()
        }
    };
    // A look-up once the last copy is due begins a reading; then give it time to come back.
    let first = &chunks[0][0];
    let read_again = || async {
        tokio::time::sleep(copy_is_due).await;
        position(first).await;
        tokio::time::sleep(copy_is_read).await;
    };
    // Readings begin while the jobs are submitted; the one read now sees them all. The queue
    // stands still, so later readings see the same.
    read_again().await;

    let mut seen = Vec::new();
    let (mut front, mut back) = (None, None);
    let mut last_of_previous: Option<u64> = None;
    for chunk in &chunks {
        let mut positions = Vec::new();
        for job in chunk {
            let p = position(job).await;
            if p == 0 {
                front = Some(job.clone());
            }
            if p == QUEUED - 1 {
                back = Some(job.clone());
            }
            positions.push(p);
        }
        let (lo, hi) = (
            positions.iter().min().unwrap(),
            positions.iter().max().unwrap(),
        );
        if let Some(last) = last_of_previous {
            assert!(*lo > last, "a later chunk runs later: {lo} after {last}");
        }
        last_of_previous = Some(*hi);
        seen.extend(positions);
    }
    seen.sort_unstable();
    assert_eq!(
        seen,
        (0..QUEUED).collect::<Vec<_>>(),
        "each queued job has a place of its own, none skipped"
    );

    // The positions are the copy's: the job at the front cancelled, the last job keeps its
    // place until a reading made after the cancel.
    let (front, last) = (front.unwrap(), back.unwrap());
    let last_pos = QUEUED - 1;
    read_again().await;
    let resp = put(&server, front["cancel_url"].as_str().unwrap()).await;
    assert_eq!(resp.status(), 202);
    assert_eq!(position(&last).await, last_pos, "as of the copy");
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        tokio::time::sleep(copy_is_due).await;
        if position(&last).await == last_pos - 1 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "a new reading never counted the cancel"
        );
    }

    // A new job is last, whether or not the copy has seen it.
    let (_, late) = submit(
        &server,
        "/fal-ai/flux/schnell",
        json!({"prompt": "late"}),
        &[],
    )
    .await;
    assert_eq!(late["queue_position"], QUEUED - 1, "{late}");
}

/// A request's actions are found after the app and after a model path of any depth, with or
/// without a trailing slash; unknown actions and wrong methods are refused as before.
#[tokio::test]
async fn request_actions_route_after_any_model_path() {
    let server = TestServer::start().await;
    let (code, sub) = submit(&server, "/fal-ai/flux/schnell", json!({"prompt": "x"}), &[]).await;
    assert_eq!(code, 200, "{sub}");
    let id = sub["request_id"].as_str().unwrap();
    wait_done(&server, sub["status_url"].as_str().unwrap()).await;
    for prefix in [
        "/fal-ai/flux",
        "/fal-ai/flux/schnell",
        "/fal-ai/flux/dev/image-to-image",
        "/workflows/someone/app/a/b/c/d",
    ] {
        let base = server.at(&format!("{prefix}/requests/{id}"));
        for url in [
            format!("{base}/status"),
            format!("{base}/status/"),
            format!("{base}/status?logs=1"),
        ] {
            let (code, body) = get(&server, &url).await;
            assert_eq!(
                (code, body["status"].as_str()),
                (200, Some("COMPLETED")),
                "{url}"
            );
        }
        for url in [base.clone(), format!("{base}/"), format!("{base}/response")] {
            let (code, body) = get(&server, &url).await;
            assert_eq!(code, 200, "{url}: {body}");
            assert!(body["images"].is_array(), "{url}: {body}");
        }
        for action in ["unknown-action", "cancel", "status/other"] {
            let (code, body) = get(&server, &format!("{base}/{action}")).await;
            assert_eq!(code, 404, "{action}");
            assert!(body["detail"].is_string(), "{body}");
        }
        let resp = put(&server, &format!("{base}/cancel")).await;
        assert_eq!(resp.status(), 400, "{prefix}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["status"], "ALREADY_COMPLETED");
        for (method, url) in [
            (reqwest::Method::POST, format!("{base}/status")),
            (reqwest::Method::PUT, format!("{base}/status")),
            (reqwest::Method::DELETE, base.clone()),
        ] {
            let resp = server
                .http
                .request(method.clone(), &url)
                .header("authorization", format!("Key {}", server.key))
                .json(&json!({"prompt": "x"}))
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 405, "{method} {url}");
            let body: Value = resp.json().await.unwrap();
            assert!(body["detail"].is_string(), "{body}");
        }
    }
    assert_eq!(server.stored_jobs().await, 1);
}

/// `/console` is invokd's own, never a fal app: 404 in DigitalOcean's shape, nothing stored.
#[tokio::test]
async fn console_is_reserved() {
    let server = TestServer::start().await;
    for (method, path) in [
        (reqwest::Method::GET, "/console"),
        (reqwest::Method::GET, "/console/jobs"),
        (reqwest::Method::POST, "/console/flux"),
        (reqwest::Method::POST, "/console/flux/schnell"),
        (
            reqwest::Method::GET,
            "/console/flux/requests/0196b7a4-0000-7000-8000-000000000000/status",
        ),
        (
            reqwest::Method::PUT,
            "/console/flux/requests/0196b7a4-0000-7000-8000-000000000000/cancel",
        ),
        (reqwest::Method::DELETE, "/console/flux/schnell"),
    ] {
        let resp = server
            .http
            .request(method.clone(), server.at(path))
            .header("authorization", format!("Key {}", server.key))
            .json(&json!({"prompt": "x"}))
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{method} {path}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["id"], "not_found", "{method} {path}: {body}");
    }
    assert_eq!(server.stored_jobs().await, 0);
}
