//! fal's run host on invokd's port, as fal's clients use it: the synchronous run
//! (`POST /run/{model}`) answered with the output, the streaming endpoint (`POST {model}/stream`)
//! answered with previews then the output, both through fal's proxy protocol too; every one a
//! durable job of invokd.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::Duration;

use image::RgbImage;
use serde_json::{Value, json};
use support::{Options, TestServer};

fn post(server: &TestServer, path: &str, body: &Value) -> reqwest::RequestBuilder {
    server
        .http
        .post(server.at(path))
        .header("authorization", format!("Key {}", server.key))
        .json(body)
}

/// The answer's status, `x-fal-request-id`, headers and JSON body.
async fn answer(req: reqwest::RequestBuilder) -> (u16, reqwest::header::HeaderMap, Value) {
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    (status, headers, resp.json().await.unwrap())
}

fn request_id(headers: &reqwest::header::HeaderMap) -> String {
    headers["x-fal-request-id"].to_str().unwrap().to_owned()
}

async fn decoded(server: &TestServer, url: &str) -> RgbImage {
    let (_, bytes) = server.download(url).await;
    image::load_from_memory(&bytes).unwrap().to_rgb8()
}

/// One event of a stream: its name (if any) and its data as JSON.
struct Event {
    name: Option<String>,
    data: Value,
}

/// The events of a finished stream's body.
fn events(text: &str) -> Vec<Event> {
    text.split("\n\n")
        .filter_map(|block| {
            let mut name = None;
            let mut data = None;
            for line in block.lines() {
                if let Some(n) = line.strip_prefix("event:") {
                    name = Some(n.trim().to_owned());
                } else if let Some(d) = line.strip_prefix("data:") {
                    data = Some(serde_json::from_str(d.trim()).unwrap());
                }
            }
            data.map(|data| Event { name, data })
        })
        .collect()
}

/// Streams `body` to `path`; asserts an event stream with `x-fal-request-id` and returns the
/// request id and the events, once the stream has ended by itself.
async fn stream(server: &TestServer, path: &str, body: &Value) -> (String, Vec<Event>) {
    let resp = post(server, path, body)
        .header("accept", "text/event-stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200, "{path}");
    let content_type = resp.headers()["content-type"].to_str().unwrap().to_owned();
    assert!(
        content_type.starts_with("text/event-stream"),
        "{content_type}"
    );
    let id = request_id(resp.headers());
    let text = tokio::time::timeout(Duration::from_secs(60), resp.text())
        .await
        .expect("the stream ends after the final output")
        .unwrap();
    (id, events(&text))
}

/// The caller's jobs, newest first, as the DigitalOcean surface lists them.
async fn listed(server: &TestServer) -> Value {
    let list = server
        .http
        .get(server.at("/v1/async-invoke"))
        .bearer_auth(&server.key);
    answer(list).await.2
}

/// An input that breaks the model's schema is refused with fal's 422.
async fn assert_input_refused(server: &TestServer, path: &str) {
    let input = json!({"prompt": "x", "num_images": 99});
    let (code, headers, body) = answer(post(server, path, &input)).await;
    assert_eq!(code, 422, "{path}: {body}");
    let loc = &body["detail"][0]["loc"];
    assert_eq!(loc, &json!(["body", "num_images"]), "{body}");
    assert!(headers.contains_key("x-fal-request-id"));
}

/// The status of a POST without a key.
async fn without_key(server: &TestServer, path: &str) -> u16 {
    let resp = server
        .http
        .post(server.at(path))
        .json(&json!({"prompt": "x"}))
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

#[tokio::test]
async fn a_run_answers_with_the_output_of_a_durable_job() {
    let server =
        TestServer::start_with(Options::default().set("--emulator-latency-ms", "300")).await;
    let input = json!({"prompt": "a run", "image_size": {"width": 64, "height": 48}});
    for (path, model) in [
        ("/run/fal-ai/flux/schnell", "fal-ai/flux/schnell"),
        ("/run/fal-ai/fast-sdxl", "fal-ai/fast-sdxl"),
    ] {
        let (code, headers, output) = answer(post(&server, path, &input)).await;
        assert_eq!(code, 200, "{path}: {output}");
        assert_eq!(output["prompt"], "a run", "the bare output: {output}");
        assert!(output.get("status").is_none(), "not a queue receipt");
        let image = &output["images"][0];
        assert_eq!(
            (image["width"].as_u64(), image["height"].as_u64()),
            (Some(64), Some(48))
        );
        let img = decoded(&server, image["url"].as_str().unwrap()).await;
        assert_eq!(img.dimensions(), (64, 48));

        // The job is invokd's like any other: on both surfaces, listed.
        let id = request_id(&headers);
        let job = server.get(&id).await;
        assert_eq!(job["status"], "COMPLETED");
        assert_eq!(job["model_id"], model);
        assert_eq!(job["output"]["seed"], output["seed"]);
        let app = model.splitn(3, '/').take(2).collect::<Vec<_>>().join("/");
        let (code, _, result) = answer(
            server
                .http
                .get(server.at(&format!("/{app}/requests/{id}")))
                .header("authorization", format!("Key {}", server.key)),
        )
        .await;
        assert_eq!((code, &result["seed"]), (200, &output["seed"]));
    }
    let list = listed(&server).await;
    assert_eq!(list["invocations"].as_array().unwrap().len(), 2, "{list}");
}

#[tokio::test]
async fn a_run_s_errors_are_fal_s_and_bad_input_stores_nothing() {
    let server = TestServer::start().await;
    assert_input_refused(&server, "/run/fal-ai/flux/schnell").await;
    let (code, _, body) = answer(post(
        &server,
        "/run/fal-ai/no-such-model",
        &json!({"prompt": "x"}),
    ))
    .await;
    assert_eq!(code, 404, "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("fal-ai/no-such-model")
    );
    assert_eq!(without_key(&server, "/run/fal-ai/flux/schnell").await, 401);
    assert_eq!(server.stored_jobs().await, 0);

    // A run that fails answers as fal's result does: its status, body and error type.
    let (code, headers, body) = answer(post(
        &server,
        "/run/fal-ai/flux/schnell",
        &json!({"prompt": "x", "image_url": "http://localhost:1/x.png"}),
    ))
    .await;
    assert_eq!(code, 400, "{body}");
    assert_eq!(body["error_type"], "bad_request", "{body}");
    assert!(
        body["detail"]
            .as_str()
            .unwrap()
            .contains("internal address"),
        "{body}"
    );
    assert_eq!(headers["x-fal-error-type"], "bad_request");
    let failed = server.get(&request_id(&headers)).await;
    assert_eq!(failed["status"], "FAILED");
}

#[tokio::test]
async fn a_run_that_cannot_start_in_time_is_a_user_timeout() {
    let server = TestServer::start_with(
        Options::default()
            .set("--emulator-latency-ms", "3000")
            .set("--per-model-concurrency", "1"),
    )
    .await;
    // The model's one slot is taken, so the run waits in the queue past its start timeout.
    let blocker = server
        .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "blocker"}}))
        .await;
    let (code, headers, body) = answer(
        post(
            &server,
            "/run/fal-ai/flux/schnell",
            &json!({"prompt": "hurry"}),
        )
        .header("x-fal-request-timeout", "1"),
    )
    .await;
    assert_eq!(code, 504, "{body}");
    assert_eq!(body["error_type"], "request_timeout", "{body}");
    assert_eq!(headers["x-fal-error-type"], "request_timeout");
    assert_eq!(
        headers["x-fal-request-timeout-type"], "user",
        "not to be retried"
    );
    assert!(server.get(&request_id(&headers)).await["started_at"].is_null());
    server.wait(blocker["request_id"].as_str().unwrap()).await;
}

#[tokio::test]
async fn a_client_that_goes_away_leaves_the_run_to_finish() {
    let server =
        TestServer::start_with(Options::default().set("--emulator-latency-ms", "1500")).await;
    let gone = post(
        &server,
        "/run/fal-ai/flux/schnell",
        &json!({"prompt": "left"}),
    )
    .timeout(Duration::from_millis(300))
    .send()
    .await;
    assert!(gone.is_err(), "the client gave up before the end");
    let list = listed(&server).await;
    let id = list["invocations"][0]["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = server.wait(&id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    assert_eq!(job["output"]["prompt"], "left");
}

#[tokio::test]
async fn a_stream_sends_previews_that_refine_then_the_final_output() {
    let server =
        TestServer::start_with(Options::default().set("--emulator-latency-ms", "800")).await;
    let input = json!({"prompt": "a cat", "image_size": {"width": 96, "height": 64}});
    for path in [
        "/fal-ai/hidream-i1-fast/stream",
        "/run/fal-ai/hidream-i1-full/stream",
    ] {
        let (id, events) = stream(&server, path, &input).await;
        assert!(
            events.iter().all(|e| e.name.is_none()),
            "{path}: data events only"
        );
        let (last, previews) = events.split_last().unwrap();
        assert_eq!(
            previews.len(),
            3,
            "{path}: three previews before the output"
        );

        // The last event is the job's output, as its result gives it.
        let job = server.get(&id).await;
        assert_eq!(job["status"], "COMPLETED");
        assert_eq!(last.data["seed"], job["output"]["seed"]);
        assert_eq!(
            last.data["images"][0]["file_name"],
            job["output"]["images"][0]["file_name"]
        );
        let url = last.data["images"][0]["url"].as_str().unwrap();
        let final_image = decoded(&server, url).await;
        assert_eq!(final_image.dimensions(), (96, 64), "{path}");

        // Each preview is an output of the model's shape, with an image of the final size that
        // is not yet the final image (how they refine is the emulator's unit test).
        let final_bytes = server.download(url).await.1;
        for p in previews {
            assert_eq!(p.data["prompt"], "a cat");
            let image = &p.data["images"][0];
            assert_eq!(image["content_type"], "image/jpeg");
            let (_, bytes) = server.download(image["url"].as_str().unwrap()).await;
            let img = image::load_from_memory(&bytes).unwrap();
            assert_eq!((img.width(), img.height()), (96, 64));
            assert_ne!(bytes, final_bytes);
        }
    }
}

#[tokio::test]
async fn a_failed_stream_ends_with_fal_s_error() {
    let server = TestServer::start().await;
    let (id, events) = stream(
        &server,
        "/fal-ai/hidream-i1-fast/stream",
        &json!({"prompt": "x", "image_url": "http://localhost:1/x.png"}),
    )
    .await;
    let last = events.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("error"));
    assert_eq!(last.data["error_type"], "bad_request", "{}", last.data);
    assert!(
        last.data["detail"]
            .as_str()
            .unwrap()
            .contains("internal address")
    );
    assert_eq!(server.get(&id).await["status"], "FAILED");
}

/// A stream of a model that does not stream is refused in fal's shape, and is never a submit
/// to a model named `.../stream`.
#[tokio::test]
async fn a_stream_of_a_model_that_does_not_stream_is_refused_and_stores_nothing() {
    let server = TestServer::start().await;
    for path in [
        "/fal-ai/flux/schnell/stream",
        "/fal-ai/fast-sdxl/stream",
        "/run/fal-ai/fast-sdxl/stream",
        "/fal-ai/imagen4/preview/fast/stream",
    ] {
        let (code, _, body) = answer(post(&server, path, &json!({"prompt": "x"}))).await;
        assert_eq!(code, 404, "{path}: {body}");
        let detail = body["detail"].as_str().unwrap();
        let model = path
            .trim_start_matches("/run")
            .trim_start_matches('/')
            .trim_end_matches("/stream");
        assert!(
            detail.contains(&format!("{model} does not stream")),
            "{body}"
        );
    }
    assert_input_refused(&server, "/fal-ai/hidream-i1-fast/stream").await;
    // The catalog says which models stream.
    let models = answer(
        server
            .http
            .get(server.at("/v1/models"))
            .bearer_auth(&server.key),
    )
    .await
    .2;
    let streams = |id: &str| {
        let m = models["data"]
            .as_array()
            .unwrap()
            .iter()
            .find(|m| m["id"] == id);
        m.unwrap()["streaming"].as_bool()
    };
    assert_eq!(streams("fal-ai/hidream-i1-fast"), Some(true));
    assert_eq!(streams("fal-ai/hidream-i1-full"), Some(true));
    assert_eq!(streams("fal-ai/flux/schnell"), Some(false));
    assert_eq!(
        without_key(&server, "/fal-ai/hidream-i1-fast/stream").await,
        401
    );
    assert_eq!(server.stored_jobs().await, 0);
}

/// Through fal's proxy protocol, the target's host decides: `fal.run` runs (and streams),
/// `queue.fal.run` queues.
#[tokio::test]
async fn through_the_proxy_fal_run_runs_and_queue_fal_run_queues() {
    let server = TestServer::start().await;
    let proxied = |target: &str| {
        post(&server, "/api/fal/proxy", &json!({"prompt": "x"})).header("x-fal-target-url", target)
    };
    let (code, _, body) = answer(proxied("https://queue.fal.run/fal-ai/flux/schnell")).await;
    assert_eq!((code, &body["status"]), (200, &json!("IN_QUEUE")), "{body}");
    let (code, _, body) = answer(proxied("https://fal.run/fal-ai/flux/schnell")).await;
    assert_eq!(code, 200, "{body}");
    assert_eq!(body["prompt"], "x", "the output: {body}");
    let resp = proxied("https://fal.run/fal-ai/hidream-i1-fast/stream")
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let events = events(&resp.text().await.unwrap());
    assert_eq!(events.last().unwrap().data["prompt"], "x");
    assert_eq!(server.stored_jobs().await, 3);
}

/// The same partial outputs reach DigitalOcean's event stream of the job, as `event: partial`,
/// beside its status and log events.
#[tokio::test]
async fn the_status_stream_shows_the_runs_previews() {
    let server =
        TestServer::start_with(Options::default().set("--emulator-latency-ms", "800")).await;
    let job = server
        .create(&json!({"model_id": "fal-ai/hidream-i1-fast",
                        "input": {"prompt": "watched", "image_size": {"width": 80, "height": 60}}}))
        .await;
    let id = job["request_id"].as_str().unwrap();
    let resp = server
        .http
        .get(server.at(&format!("/v1/async-invoke/{id}/events")))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    let text = tokio::time::timeout(Duration::from_secs(60), resp.text())
        .await
        .expect("the stream ends after the terminal status")
        .unwrap();
    let events = events(&text);
    let partials: Vec<&Event> = events
        .iter()
        .filter(|e| e.name.as_deref() == Some("partial"))
        .collect();
    assert_eq!(partials.len(), 3, "every preview: {text}");
    for p in partials {
        assert_eq!(p.data["prompt"], "watched");
        let img = decoded(&server, p.data["images"][0]["url"].as_str().unwrap()).await;
        assert_eq!(img.dimensions(), (80, 60));
    }
    let last = events.last().unwrap();
    assert_eq!(last.name.as_deref(), Some("status"));
    assert_eq!(last.data["status"], "COMPLETED");
}
