//! The fal provider against a fake fal: the normal path, each fault, a restart mid-job (one
//! upstream submission per job, by the fake's own count), a cancel passed upstream, outputs
//! served by invokd after fal deleted them, and the circuit breaker keeping jobs queued.
#![allow(clippy::unwrap_used, clippy::expect_used)]

#[path = "support/fake_fal.rs"]
mod fake_fal;
mod support;

use std::{
    sync::atomic::Ordering::SeqCst,
    time::{Duration, Instant},
};

use fake_fal::FakeFal;
use serde_json::{Value, json};
use support::{Options, TestServer};

const MODEL: &str = "fal-ai/flux/schnell";

async fn start(fake: &FakeFal, extra: &[&str]) -> TestServer {
    TestServer::start_with(with_fal(fake, extra)).await
}

/// The fake's flags, then `extra` flag/value pairs (which replace the fake's).
fn with_fal(fake: &FakeFal, extra: &[&str]) -> Options {
    let mut o = Options::default();
    for a in fake.args() {
        o = o.arg(a);
    }
    for pair in extra.chunks(2) {
        o = o.set(pair[0], pair[1]);
    }
    o
}

async fn create(server: &TestServer, prompt: &str) -> String {
    let v = server
        .create(&json!({"model_id": MODEL, "input": {"prompt": prompt}}))
        .await;
    v["request_id"].as_str().unwrap().to_owned()
}

/// The job as fal's status route shows it, with logs.
async fn fal_status(server: &TestServer, id: &str) -> Value {
    server
        .http
        .get(server.at(&format!("/fal-ai/flux/requests/{id}/status?logs=1")))
        .header("authorization", format!("Key {}", server.key))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap()
}

/// The job's log lines, through fal's status route.
async fn logs(server: &TestServer, id: &str) -> Vec<String> {
    fal_status(server, id).await["logs"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l["message"].as_str().unwrap().to_owned())
        .collect()
}

async fn wait_status(server: &TestServer, id: &str, status: &str) -> Value {
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let v = server.get(id).await;
        if v["status"] == status {
            return v;
        }
        assert!(Instant::now() < deadline, "{id} never became {status}: {v}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_job_runs_on_fal_and_its_files_outlive_fal() {
    let fake = FakeFal::start().await;
    let server = start(&fake, &[]).await;
    let id = create(&server, "a lighthouse").await;
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");

    // What fal was sent: the key, the validated input with defaults, the priority.
    assert_eq!(fake.submissions("a lighthouse"), 1);
    let sent = fake.request("a lighthouse").unwrap();
    assert_eq!(sent.model, MODEL);
    assert_eq!(
        sent.headers["authorization"],
        format!("Key {}", fake_fal::KEY)
    );
    assert_eq!(sent.headers["x-fal-queue-priority"], "normal");
    assert!(
        sent.input["num_inference_steps"].is_number(),
        "defaults applied: {}",
        sent.input
    );
    assert!(sent.webhook.is_none(), "no public URL, no webhook");

    // The output is fal's, its file re-hosted: served by invokd after fal deleted it.
    let out = &job["output"];
    assert_eq!(out["seed"].as_u64(), Some(15860307465884635512));
    let url = out["images"][0]["url"].as_str().unwrap();
    assert!(url.starts_with(&server.url), "re-hosted: {url}");
    fake.delete_files();
    let (_, bytes) = server.download(url).await;
    assert_eq!(bytes, fake_fal::FILE);

    // fal's queue position and logs were relayed into the job.
    let lines = logs(&server, &id).await;
    for want in [
        "submitted to fal",
        "queue at position 3",
        "loading the model",
        "copied 1 output file",
    ] {
        assert!(
            lines.iter().any(|l| l.contains(want)),
            "no {want:?} in {lines:?}"
        );
    }
}

#[tokio::test]
async fn routing_shows_in_models_and_rehosting_can_be_off() {
    let fake = FakeFal::start().await;
    let server = start(
        &fake,
        &[
            "--routes",
            "fal-ai/*=fal,fal-ai/fast-sdxl=emulator",
            "--fal-rehost",
            "false",
        ],
    )
    .await;
    let models: Value = server
        .http
        .get(server.at("/v1/models"))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let provider = |id: &str| {
        models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id)
            .map(|m| m["provider"].clone())
            .unwrap()
    };
    assert_eq!(provider(MODEL), "fal");
    assert_eq!(provider("fal-ai/fast-sdxl"), "emulator");

    let list = server.cli(&["models", "list"]).await;
    let text = list.ok().stdout.clone();
    assert!(text.lines().next().unwrap().contains("Provider"), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with(MODEL) && l.contains("fal")),
        "{text}"
    );

    let id = create(&server, "not re-hosted").await;
    let job = server.wait(&id).await;
    let url = job["output"]["images"][0]["url"].as_str().unwrap();
    assert!(
        url.starts_with(&fake.url),
        "fal's own URL passes through: {url}"
    );

    // A model routed to the emulator never reaches fal.
    let v = server
        .create(&json!({"model_id": "fal-ai/fast-sdxl", "input": {"prompt": "emulated"}}))
        .await;
    let job = server.wait(v["request_id"].as_str().unwrap()).await;
    assert_eq!(job["status"], "COMPLETED");
    assert_eq!(fake.submissions("emulated"), 0);
}

#[tokio::test]
async fn a_restart_mid_job_resumes_without_a_second_submission() {
    let fake = FakeFal::start().await;
    fake.faults().hold.store(true, SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let opts = with_fal(&fake, &[]);
    let server = TestServer::start_in(dir.path(), opts.clone()).await;
    let id = create(&server, "survives a crash").await;
    fake.wait_for("the job running upstream", |f| {
        f.request("survives a crash").is_some_and(|r| r.polls >= 2)
    })
    .await;
    server.kill().await;

    let polls_before = fake.calls("status");
    let server = TestServer::start_in(dir.path(), opts).await;
    fake.wait_for("the restarted server polling", |f| {
        f.calls("status") > polls_before
    })
    .await;
    fake.release().await;
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(
        fake.submissions("survives a crash"),
        1,
        "exactly one upstream submission"
    );
    let lines = logs(&server, &id).await;
    assert!(
        lines.iter().any(|l| l.contains("resuming fal request")),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_shutdown_on_the_last_attempt_hands_the_job_back_to_be_resumed() {
    let fake = FakeFal::start().await;
    fake.faults().hold.store(true, SeqCst);
    let dir = tempfile::tempdir().unwrap();
    let opts = with_fal(
        &fake,
        &["--max-attempts", "1", "--shutdown-grace-seconds", "0"],
    );
    let server = TestServer::start_in(dir.path(), opts.clone()).await;
    let id = create(&server, "outlives a shutdown").await;
    fake.wait_for("the job running upstream", |f| {
        f.request("outlives a shutdown")
            .is_some_and(|r| r.polls >= 2)
    })
    .await;
    assert!(server.terminate().await.success());

    let server = TestServer::start_in(dir.path(), opts).await;
    fake.release().await;
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(fake.submissions("outlives a shutdown"), 1);
}

#[tokio::test]
async fn fal_requests_in_flight_are_capped() {
    let fake = FakeFal::start().await;
    fake.faults().hold.store(true, SeqCst);
    let server = start(&fake, &["--fal-max-concurrency", "1"]).await;
    let a = create(&server, "first in").await;
    let b = create(&server, "second in").await;
    fake.wait_for("one request upstream", |f| f.requests().len() == 1)
        .await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(fake.requests().len(), 1, "the second waits for a slot");
    fake.release().await;
    for id in [a, b] {
        assert_eq!(server.wait(&id).await["status"], "COMPLETED");
    }
    assert_eq!(fake.requests().len(), 2);
}

#[tokio::test]
async fn a_cancel_is_passed_upstream() {
    let fake = FakeFal::start().await;
    fake.faults().hold.store(true, SeqCst);
    let server = start(&fake, &[]).await;
    let id = create(&server, "cancel me").await;
    fake.wait_for("the job running upstream", |f| {
        f.request("cancel me").is_some_and(|r| r.polls >= 2)
    })
    .await;
    let resp = server
        .http
        .post(server.at(&format!("/v1/async-invoke/{id}/cancel")))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "CANCELED", "{job}");
    assert_eq!(fake.calls("cancel"), 1);
    assert!(fake.request("cancel me").unwrap().cancelled);
}

#[tokio::test]
async fn a_run_past_its_time_limit_is_cancelled_upstream() {
    let fake = FakeFal::start().await;
    fake.faults().hold.store(true, SeqCst);
    let server = start(&fake, &["--run-timeout-seconds", "1"]).await;
    let id = create(&server, "too slow").await;
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert_eq!(fal_status(&server, &id).await["error_type"], "run_timeout");
    assert!(
        fake.request("too slow").unwrap().cancelled,
        "cancelled upstream"
    );
}

#[tokio::test]
async fn rate_limits_errors_slow_answers_and_dropped_connections_are_retried() {
    let fake = FakeFal::start().await;
    let f = fake.faults();
    f.submit_429.store(2, SeqCst);
    f.retry_after_secs.store(1, SeqCst);
    f.status_500.store(2, SeqCst);
    f.status_drop.store(2, SeqCst);
    f.result_drop.store(1, SeqCst);
    f.result_in_progress.store(2, SeqCst);
    f.status_slow.store(1, SeqCst);
    f.slow_ms.store(1500, SeqCst);
    // Five failures in a row would open the breaker (its own test): not here.
    let server = start(
        &fake,
        &[
            "--fal-request-timeout-ms",
            "500",
            "--fal-breaker-threshold",
            "20",
            "--fal-retries",
            "8",
        ],
    )
    .await;
    let id = create(&server, "through the storm").await;
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(fake.submissions("through the storm"), 1);
    // Two 429s then the submission: each retry waited the Retry-After second.
    let times = fake.submit_times();
    assert_eq!(times.len(), 3);
    for w in times.windows(2) {
        assert!(
            w[1] - w[0] >= Duration::from_millis(950),
            "Retry-After honoured: {:?}",
            w[1] - w[0]
        );
    }
    for (name, left) in [
        ("status_500", &f.status_500),
        ("status_drop", &f.status_drop),
        ("result_drop", &f.result_drop),
        ("status_slow", &f.status_slow),
        ("result_in_progress", &f.result_in_progress),
    ] {
        assert_eq!(left.load(SeqCst), 0, "{name} fault never fired");
    }
}

#[tokio::test]
async fn fal_failures_end_the_job_with_their_type() {
    let fake = FakeFal::start().await;
    let server = start(&fake, &[]).await;

    // A COMPLETED status with an error: FAILED with fal's type, no retry.
    *fake.faults().fail_with.lock().unwrap() = Some((
        "NSFW content detected".into(),
        "content_policy_violation".into(),
    ));
    let id = create(&server, "refused upstream").await;
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    assert!(job["error"].as_str().unwrap().contains("NSFW"), "{job}");
    let st = fal_status(&server, &id).await;
    assert_eq!(st["error_type"], "content_policy_violation", "{st}");
    assert_eq!(fake.submissions("refused upstream"), 1);
    *fake.faults().fail_with.lock().unwrap() = None;

    // A 422 on submission: FAILED with the field's message.
    fake.faults().submit_422.store(1, SeqCst);
    let id = create(&server, "invalid upstream").await;
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    let msg = job["error"].as_str().unwrap();
    assert!(msg.contains("prompt: prompt is not allowed"), "{job}");
}

#[tokio::test]
async fn a_retried_attempt_keeps_the_lines_it_logged_as_it_ended() {
    let fake = FakeFal::start().await;
    // Retryable upstream: the attempt is released, not finished, and this is the last one.
    *fake.faults().fail_with.lock().unwrap() = Some((
        "no runner was free".into(),
        "runner_scheduling_failure".into(),
    ));
    let server = start(&fake, &["--max-attempts", "1"]).await;
    let id = create(&server, "ends in a retry").await;
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    // The run's last line, relayed just before it ended, was stored with the release.
    let lines = logs(&server, &id).await;
    assert!(
        lines.iter().any(|l| l == "releasing the runner"),
        "{lines:?}"
    );
}

#[tokio::test]
async fn a_submission_whose_answer_is_lost_is_never_sent_again() {
    let fake = FakeFal::start().await;
    fake.faults().submit_drop.store(1, SeqCst);
    let server = start(&fake, &[]).await;
    let id = create(&server, "taken but unanswered").await;
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "FAILED", "{job}");
    let st = fal_status(&server, &id).await;
    assert_eq!(st["error_type"], "upstream_submission_unknown", "{st}");
    assert_eq!(fake.submissions("taken but unanswered"), 1);
}

#[tokio::test]
async fn an_open_breaker_keeps_jobs_queued_until_fal_is_back() {
    let fake = FakeFal::start().await;
    fake.faults().down.store(true, SeqCst);
    let server = start(
        &fake,
        &[
            "--fal-retries",
            "2",
            "--fal-breaker-threshold",
            "2",
            "--fal-breaker-open-ms",
            "1500",
            "--max-attempts",
            "1",
        ],
    )
    .await;
    let id = create(&server, "waits out the outage").await;
    fake.wait_for("two failed submissions", |f| f.calls("submit") >= 2)
        .await;
    // The breaker is open: the job waits in the queue and fal is left alone.
    let job = wait_status(&server, &id, "QUEUED").await;
    assert!(job["error"].is_null(), "{job}");
    let calls = fake.calls("submit");
    tokio::time::sleep(Duration::from_millis(700)).await;
    assert_eq!(
        fake.calls("submit"),
        calls,
        "no calls while the breaker is open"
    );
    assert_eq!(server.get(&id).await["status"], "QUEUED");

    fake.faults().down.store(false, SeqCst);
    let job = server.wait(&id).await;
    assert_eq!(
        job["status"], "COMPLETED",
        "one attempt allowed, yet not failed: {job}"
    );
    assert_eq!(fake.submissions("waits out the outage"), 1);
}

#[tokio::test]
async fn webhooks_wake_the_job_and_forged_ones_are_refused() {
    let fake = FakeFal::start().await;
    fake.faults().hold.store(true, SeqCst);
    // A free port, so the public URL is known before the server starts.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    // The first poll delay is long: only the webhook can finish the job quickly.
    let server = TestServer::start_with(
        with_fal(
            &fake,
            &[
                "--fal-poll-ms",
                "20000",
                "--fal-webhook-poll-max-ms",
                "20000",
            ],
        )
        .set("--listen", format!("127.0.0.1:{port}"))
        .set("--public-url", format!("http://127.0.0.1:{port}")),
    )
    .await;
    let id = create(&server, "woken by a webhook").await;
    fake.wait_for("the job running upstream", |f| {
        f.request("woken by a webhook")
            .is_some_and(|r| r.polls >= 1)
    })
    .await;
    let sent = fake.request("woken by a webhook").unwrap();
    assert_eq!(
        sent.webhook.as_deref(),
        Some(format!("http://127.0.0.1:{port}/v1/upstream/fal/webhook").as_str())
    );

    // A webhook signed with another key is refused, and a real signature from too long ago.
    let body = br#"{"status":"OK"}"#;
    let post = |ts: String, sig: String| {
        server
            .http
            .post(server.at("/v1/upstream/fal/webhook"))
            .header("x-fal-webhook-request-id", &sent.id)
            .header("x-fal-webhook-user-id", "u")
            .header("x-fal-webhook-timestamp", ts)
            .header("x-fal-webhook-signature", sig)
            .body(body.to_vec())
            .send()
    };
    let now = chrono::Utc::now().timestamp();
    let forged = post(now.to_string(), "ab".repeat(64)).await.unwrap();
    assert_eq!(forged.status(), 401);
    let old = (now - 600).to_string();
    let stale = post(old.clone(), fake.sign(&sent.id, "u", &old, body))
        .await
        .unwrap();
    assert_eq!(stale.status(), 401);

    let started = Instant::now();
    fake.release().await;
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "woken, not polled: {:?}",
        started.elapsed()
    );
    assert_eq!(fake.inner.webhooks_sent.load(SeqCst), 1);
}

#[tokio::test]
async fn routes_that_cannot_work_stop_the_start() {
    for (routes, want) in [
        (
            "fal-ai/*=fal",
            r#"names provider "fal", which is not configured"#,
        ),
        ("nonsense", r#"route "nonsense" is not PATTERN=PROVIDER"#),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_invokd"))
            .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--routes", routes])
            .env_remove("FAL_KEY")
            .env("INVOKD_CONFIG", dir.path().join("client.toml"))
            .output()
            .await
            .unwrap();
        assert!(!out.status.success());
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(want), "{routes}: {err}");
    }
}

/// The events of a stream from invokd's streaming endpoint, once it has ended.
async fn streamed(server: &TestServer, model: &str, prompt: &str) -> (String, Vec<Value>) {
    let resp = server
        .http
        .post(server.at(&format!("/{model}/stream")))
        .header("authorization", format!("Key {}", server.key))
        .json(&json!({"prompt": prompt}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.headers()["x-fal-request-id"]
        .to_str()
        .unwrap()
        .to_owned();
    let text = resp.text().await.unwrap();
    let events = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    (id, events)
}

/// A model that streams runs on fal's streaming endpoint: its events are relayed as they come,
/// their files copied into invokd, the last one the job's output (sent once).
#[tokio::test]
async fn a_streaming_model_relays_fal_s_stream() {
    let fake = FakeFal::start().await;
    let server = start(&fake, &[]).await;
    let (id, events) = streamed(&server, "fal-ai/hidream-i1-fast", "relayed").await;
    assert_eq!(fake.calls("stream"), 1);
    assert_eq!(fake.calls("submit"), 0, "streamed, not queued");
    assert_eq!(
        events.len(),
        fake_fal::STREAM_PREVIEWS + 1,
        "fal's events, the output not twice: {events:?}"
    );
    for e in &events {
        assert_eq!(e["prompt"], "relayed");
        let url = e["images"][0]["url"].as_str().unwrap();
        assert!(url.starts_with(&server.url), "re-hosted: {url}");
    }
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["output"]["seed"].as_u64(), Some(15860307465884635512));
    let last = events.last().unwrap();
    assert_eq!(last["seed"], job["output"]["seed"]);
    fake.delete_files();
    for e in &events {
        let (_, bytes) = server
            .download(e["images"][0]["url"].as_str().unwrap())
            .await;
        assert_eq!(
            bytes,
            fake_fal::FILE,
            "served by invokd after fal deleted it"
        );
    }
    let sent = fake.request("relayed").unwrap();
    assert_eq!(sent.model, "fal-ai/hidream-i1-fast");
}

/// A stream cut off mid-way is not sent again: the request fal named is followed on its queue.
#[tokio::test]
async fn a_cut_stream_is_followed_on_the_queue_without_a_second_request() {
    let fake = FakeFal::start().await;
    let server = start(&fake, &[]).await;
    fake.faults().stream_cut.store(1, SeqCst);
    let (id, events) = streamed(&server, "fal-ai/hidream-i1-full", "cut").await;
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(fake.calls("stream"), 1, "sent once");
    assert_eq!(fake.submissions("cut"), 1);
    assert!(fake.calls("result") >= 1, "the output came from the queue");
    assert_eq!(events.len(), 2, "the preview, then the output: {events:?}");
    assert_eq!(events[1]["seed"], job["output"]["seed"]);
    let lines = logs(&server, &id).await;
    assert!(
        lines
            .iter()
            .any(|l| l.contains("following the request on fal's queue")),
        "{lines:?}"
    );
}
