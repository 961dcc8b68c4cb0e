//! Bad input gets the right status, the DO error body naming the problem, and stores nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::TestServer;

struct Case {
    name: &'static str,
    content_type: Option<&'static str>,
    auth: Option<String>,
    body: String,
    status: u16,
    /// A phrase the message must contain.
    says: &'static str,
}

fn case(name: &'static str, body: impl Into<String>, status: u16, says: &'static str) -> Case {
    Case {
        name,
        content_type: Some("application/json"),
        auth: None,
        body: body.into(),
        status,
        says,
    }
}

fn flux(input: Value) -> String {
    json!({"model_id": "fal-ai/flux/schnell", "input": input}).to_string()
}

#[tokio::test]
async fn every_bad_create_gets_its_status_and_stores_nothing() {
    let server = TestServer::start().await;
    let cases = vec![
        case("malformed JSON", r#"{"model_id": "fal-ai/flux/schnell", "input": {"#, 400, "malformed JSON"),
        case("empty body", "", 400, "empty"),
        case("not an object", "[1, 2]", 422, "JSON object"),
        case("missing model_id", r#"{"input": {"prompt": "x"}}"#, 422, "model_id"),
        case("missing input", r#"{"model_id": "fal-ai/flux/schnell"}"#, 422, "input"),
        case("input not an object", r#"{"model_id": "fal-ai/flux/schnell", "input": "a cat"}"#, 422, "input"),
        case("model_id not a string", r#"{"model_id": 7, "input": {}}"#, 422, "model_id"),
        case("empty model_id", r#"{"model_id": "", "input": {"prompt": "x"}}"#, 422, "model_id"),
        case("tags not a list", r#"{"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "tags": {"a": "b"}}"#, 422, "tags"),
        case("tag without value", r#"{"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "tags": [{"key": "a"}]}"#, 422, "tags[0]"),
        case("unknown model", r#"{"model_id": "fal-ai/no-such-model", "input": {"prompt": "x"}}"#, 404, "fal-ai/no-such-model"),
        case("missing prompt", flux(json!({})), 422, "prompt"),
        case("prompt of the wrong type", flux(json!({"prompt": 42})), 422, "input.prompt"),
        case("num_images of the wrong type", flux(json!({"prompt": "x", "num_images": "two"})), 422, "input.num_images"),
        case("num_images over the bound", flux(json!({"prompt": "x", "num_images": 1000})), 422, "input.num_images"),
        case("num_images under the bound", flux(json!({"prompt": "x", "num_images": 0})), 422, "input.num_images"),
        case("fractional num_images", flux(json!({"prompt": "x", "num_images": 1.5})), 422, "input.num_images"),
        case("unknown image_size preset", flux(json!({"prompt": "x", "image_size": "huge"})), 422, "input.image_size"),
        case("custom size over the bound", flux(json!({"prompt": "x", "image_size": {"width": 100000, "height": 512}})), 422, "input.image_size"),
        case("output_format outside the enum", flux(json!({"prompt": "x", "output_format": "gif"})), 422, "input.output_format"),
        case(
            "seconds_total over the bound",
            json!({"model_id": "fal-ai/stable-audio-25/text-to-audio", "input": {"prompt": "x", "seconds_total": 100000}}).to_string(),
            422,
            "input.seconds_total",
        ),
        case(
            "aspect ratio outside the enum",
            json!({"model_id": "fal-ai/ideogram/v2", "input": {"prompt": "x", "aspect_ratio": "7:5"}}).to_string(),
            422,
            "input.aspect_ratio",
        ),
        case(
            "speech without text",
            json!({"model_id": "fal-ai/elevenlabs/tts/multilingual-v2", "input": {"prompt": "x"}}).to_string(),
            422,
            "text",
        ),
        Case {
            content_type: Some("text/plain"),
            ..case("wrong content type", flux(json!({"prompt": "x"})), 415, "application/json")
        },
        Case {
            content_type: Some("application/x-www-form-urlencoded"),
            ..case("form content type", "model_id=fal-ai/flux/schnell", 415, "application/json")
        },
        Case {
            auth: Some(String::new()),
            ..case("no key", flux(json!({"prompt": "x"})), 401, "key")
        },
        Case {
            auth: Some("Bearer invk_wrong_key_000000000000000".into()),
            ..case("wrong key", flux(json!({"prompt": "x"})), 401, "key")
        },
        Case {
            auth: Some("Basic dXNlcjpwYXNz".into()),
            ..case("wrong scheme", flux(json!({"prompt": "x"})), 401, "key")
        },
        case(
            "body over the size limit",
            flux(json!({"prompt": "x".repeat(5 * 1024 * 1024)})),
            413,
            "larger",
        ),
    ];

    let mut failures = Vec::new();
    for c in &cases {
        let mut req = server
            .http
            .post(server.at("/v1/async-invoke"))
            .body(c.body.clone());
        if let Some(ct) = c.content_type {
            req = req.header("content-type", ct);
        }
        match &c.auth {
            None => req = req.bearer_auth(&server.key),
            Some(a) if a.is_empty() => {}
            Some(a) => req = req.header("authorization", a),
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let request_id = resp
            .headers()
            .get("x-request-id")
            .map(|v| v.to_str().unwrap().to_owned());
        let text = resp.text().await.unwrap();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        let message = body["message"].as_str().unwrap_or_default();
        let ok = status == c.status
            && message.contains(c.says)
            && body["id"].is_string()
            && request_id.is_some()
            && body["request_id"].as_str() == request_id.as_deref();
        if !ok {
            failures.push(format!(
                "{}: expected {} saying {:?}, got {status} {text}",
                c.name, c.status, c.says
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "{} of {} cases failed:\n{}",
        failures.len(),
        cases.len(),
        failures.join("\n")
    );
    assert_eq!(server.stored_jobs().await, 0, "a bad request stored a job");
    assert_eq!(server.stored_files(), 0, "a bad request stored a file");
}

#[tokio::test]
async fn reads_of_unknown_ids_and_routes_get_404_and_wrong_methods_405() {
    let server = TestServer::start().await;
    for path in [
        "/v1/async-invoke/6590784a-ce47-4556-9ff4-53baff2693fb",
        "/v1/async-invoke/6590784a-ce47-4556-9ff4-53baff2693fb/status",
        "/v1/async-invoke/not-a-uuid",
        "/v1/async-invoke/..%2F..%2Fetc%2Fpasswd/status",
        "/v1/no-such-route",
    ] {
        let resp = server
            .http
            .get(server.at(path))
            .bearer_auth(&server.key)
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 404, "{path}");
        assert!(resp.headers().contains_key("x-request-id"));
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["id"], "not_found", "{path}: {body}");
    }
    let resp = server
        .http
        .delete(server.at("/v1/async-invoke"))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 405);
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["id"], "method_not_allowed");

    // Reads need a key too.
    let resp = server
        .http
        .get(server.at("/v1/async-invoke/6590784a-ce47-4556-9ff4-53baff2693fb"))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(server.stored_jobs().await, 0);
}

#[tokio::test]
async fn listing_pages_are_bounded_in_bytes_as_well_as_in_rows() {
    // Jobs stay queued, so their size is their input alone.
    let server =
        TestServer::start_with(support::Options::default().set("--emulator-latency-ms", "60000"))
            .await;
    let prompt = "p".repeat(1536 * 1024);
    for _ in 0..3 {
        server
            .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": prompt}}))
            .await;
    }
    let page = |cursor: Option<String>| {
        let mut url = server.at("/v1/async-invoke?limit=10");
        if let Some(c) = cursor {
            url.push_str(&format!("&cursor={c}"));
        }
        let http = server.http.clone();
        let key = server.key.clone();
        async move {
            let res = http.get(url).bearer_auth(key).send().await.unwrap();
            assert_eq!(res.status(), 200);
            res.json::<Value>().await.unwrap()
        }
    };
    // Three jobs of 1.5 MiB: two fit in the 4 MiB of a page, the third is on the next.
    let first = page(None).await;
    assert_eq!(first["invocations"].as_array().unwrap().len(), 2);
    let cursor = first["next_cursor"]
        .as_str()
        .expect("a next page")
        .to_owned();
    let second = page(Some(cursor)).await;
    assert_eq!(second["invocations"].as_array().unwrap().len(), 1);
    assert!(second["next_cursor"].is_null(), "{}", second["next_cursor"]);
}

#[tokio::test]
async fn a_signed_upload_url_is_used_once() {
    let server = TestServer::start().await;
    let started = server.initiate_upload().await;
    let put = |bytes: &'static str| {
        server
            .http
            .put(started["upload_url"].as_str().unwrap())
            .body(bytes)
            .send()
    };
    assert_eq!(put("first").await.unwrap().status(), 200);
    let again = put("second").await.unwrap();
    assert_eq!(again.status(), 409);
    let body: Value = again.json().await.unwrap();
    assert_eq!(body["id"], "conflict", "{body}");
    let file = server
        .http
        .get(started["file_url"].as_str().unwrap())
        .send()
        .await
        .unwrap();
    assert_eq!(file.text().await.unwrap(), "first", "the file was replaced");
}
