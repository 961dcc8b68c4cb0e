//! A corpus of bad requests across both surfaces and the admin API: malformed JSON, wrong
//! types, huge numbers, deep nesting, huge strings, invalid UTF-8, wrong content types, path
//! tricks, header abuse, enum and bound violations, unknown models, oversized data URIs. Each
//! must get a 4xx in its surface's error shape, never a 5xx, and store nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use reqwest::Method;
use serde_json::{Value, json};
use support::TestServer;

#[derive(Clone)]
struct Bad {
    method: Method,
    path: String,
    body: Vec<u8>,
    content_type: Option<&'static str>,
    headers: Vec<(&'static str, String)>,
    auth: Auth,
}

#[derive(Clone, Copy, PartialEq)]
enum Auth {
    Key,
    Admin,
    None,
    Garbage,
}

fn bad(method: Method, path: &str, body: impl Into<Vec<u8>>) -> Bad {
    Bad {
        method,
        path: path.to_owned(),
        body: body.into(),
        content_type: Some("application/json"),
        headers: Vec::new(),
        auth: Auth::Key,
    }
}

/// Bodies that are not valid JSON, or not an object, in many ways.
fn malformed_bodies() -> Vec<Vec<u8>> {
    let mut v: Vec<Vec<u8>> = [
        "",
        " ",
        "{",
        "}",
        "[",
        "{\"a\":",
        "{'a': 1}",
        "{a: 1}",
        "nul",
        "tru",
        "{\"model_id\": \"x\",}",
        "{\"model_id\": \"x\" \"input\": {}}",
        "\"just a string\"",
        "42",
        "null",
        "[]",
        "[{}]",
        "{\"model_id\": \"\\ud800\", \"input\": {}}",
        "{\"model_id\": \"x\", \"input\": {}} trailing",
        "\u{feff}{}",
        "{\"model_id\": 1e999, \"input\": {}}",
    ]
    .iter()
    .map(|s| s.as_bytes().to_vec())
    .collect();
    v.push(vec![0xff, 0xfe, 0x00, 0x7b]); // invalid UTF-8
    v.push(
        b"{\"model_id\": \"fal-ai/flux/schnell\", \"input\": {\"prompt\": \"\xc3\x28\"}}".to_vec(),
    );
    v.push(format!("{}{}", "[".repeat(10_000), "]".repeat(10_000)).into_bytes()); // deep nesting
    v.push(
        format!(
            "{{\"model_id\": \"fal-ai/flux/schnell\", \"input\": {}}}",
            "{\"a\":".repeat(5000) + "1" + &"}".repeat(5000)
        )
        .into_bytes(),
    );
    v
}

/// Valid JSON with invalid DO create bodies.
fn do_bodies() -> Vec<Value> {
    let mut v = vec![
        json!({}),
        json!({"input": {}}),
        json!({"model_id": "fal-ai/flux/schnell"}),
        json!({"model_id": null, "input": {}}),
        json!({"model_id": 5, "input": {}}),
        json!({"model_id": ["fal-ai/flux/schnell"], "input": {}}),
        json!({"model_id": "fal-ai/flux/schnell", "input": []}),
        json!({"model_id": "fal-ai/flux/schnell", "input": "prompt"}),
        json!({"model_id": "fal-ai/flux/schnell", "input": null}),
        json!({"model_id": "", "input": {"prompt": "x"}}),
        json!({"model_id": " ", "input": {"prompt": "x"}}),
        json!({"model_id": "../../etc/passwd", "input": {"prompt": "x"}}),
        json!({"model_id": "fal-ai/FLUX/schnell", "input": {"prompt": "x"}}),
        json!({"model_id": "x".repeat(100_000), "input": {"prompt": "x"}}),
        json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "tags": "a=b"}),
        json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "tags": [{"key": 1, "value": "v"}]}),
        json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "tags": [{"value": "v"}]}),
        json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "webhook_url": 7}),
        json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "webhook_url": "not a url"}),
        json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "webhook_url": "http://169.254.169.254/latest"}),
        json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "webhook_url": "javascript:alert(1)"}),
        json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "run_timeout_seconds": -5}),
        json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "run_timeout_seconds": 1e300}),
    ];
    for input in model_inputs() {
        v.push(json!({"model_id": "fal-ai/flux/schnell", "input": input}));
    }
    for m in [
        "fal-ai/nope",
        "fal-ai",
        "fal-ai/flux",
        "FAL-AI/FLUX/SCHNELL",
        "fal-ai/flux/schnell/",
        "/fal-ai/flux/schnell",
        "fal-ai//flux",
    ] {
        v.push(json!({"model_id": m, "input": {"prompt": "x"}}));
    }
    v.push(json!({"model_id": "fal-ai/stable-audio-25/text-to-audio", "input": {"prompt": "x", "seconds_total": 191}}));
    v.push(json!({"model_id": "fal-ai/stable-audio-25/text-to-audio", "input": {"prompt": "x", "seconds_total": 0}}));
    v.push(json!({"model_id": "fal-ai/stable-audio-25/text-to-audio", "input": {"prompt": "x", "seconds_total": "60"}}));
    v.push(json!({"model_id": "fal-ai/elevenlabs/tts/multilingual-v2", "input": {"text": ""}}));
    v.push(json!({"model_id": "fal-ai/elevenlabs/tts/multilingual-v2", "input": {"text": "hi", "speed": 5}}));
    v.push(json!({"model_id": "fal-ai/elevenlabs/tts/multilingual-v2", "input": {"text": "hi", "stability": -1}}));
    v.push(
        json!({"model_id": "fal-ai/ideogram/v2", "input": {"prompt": "x", "aspect_ratio": "16x9"}}),
    );
    v.push(json!({"model_id": "fal-ai/ideogram/v2", "input": {"prompt": "x", "style": "cubist"}}));
    v.push(
        json!({"model_id": "fal-ai/imagen4/preview", "input": {"prompt": "x", "num_images": 5}}),
    );
    v.push(json!({"model_id": "fal-ai/fast-sdxl", "input": {"prompt": "x", "format": "gif"}}));
    v.push(json!({"model_id": "fal-ai/fast-sdxl", "input": {"prompt": "x", "loras": [{"scale": 0.5}]}}));
    v.push(json!({"model_id": "fal-ai/fast-sdxl", "input": {"prompt": "x", "loras": [{"path": "p", "scale": 2}]}}));
    v
}

/// Invalid inputs for flux/schnell, usable on both surfaces.
fn model_inputs() -> Vec<Value> {
    vec![
        json!({}),
        json!({"prompt": null}),
        json!({"prompt": 1}),
        json!({"prompt": ["a"]}),
        json!({"prompt": {"text": "a"}}),
        json!({"prompt": "x", "num_images": 0}),
        json!({"prompt": "x", "num_images": 5}),
        json!({"prompt": "x", "num_images": -1}),
        json!({"prompt": "x", "num_images": 1.5}),
        json!({"prompt": "x", "num_images": "2"}),
        json!({"prompt": "x", "num_images": 1e20}),
        json!({"prompt": "x", "num_images": 18446744073709551616_f64}),
        json!({"prompt": "x", "num_images": true}),
        json!({"prompt": "x", "num_inference_steps": 0}),
        json!({"prompt": "x", "num_inference_steps": 13}),
        json!({"prompt": "x", "guidance_scale": 0.5}),
        json!({"prompt": "x", "guidance_scale": 21}),
        json!({"prompt": "x", "guidance_scale": "high"}),
        json!({"prompt": "x", "seed": -1}),
        json!({"prompt": "x", "seed": "abc"}),
        json!({"prompt": "x", "seed": 1.5}),
        json!({"prompt": "x", "output_format": "gif"}),
        json!({"prompt": "x", "output_format": "PNG"}),
        json!({"prompt": "x", "output_format": 1}),
        json!({"prompt": "x", "image_size": "huge"}),
        json!({"prompt": "x", "image_size": 512}),
        json!({"prompt": "x", "image_size": {"width": 0, "height": 512}}),
        json!({"prompt": "x", "image_size": {"width": 512, "height": -1}}),
        json!({"prompt": "x", "image_size": {"width": 14143, "height": 512}}),
        json!({"prompt": "x", "image_size": {"width": "512", "height": 512}}),
        json!({"prompt": "x", "image_size": {"width": 512, "height": 512, "depth": 3}}),
        json!({"prompt": "x", "image_size": [512, 512]}),
        json!({"prompt": "x", "acceleration": "ludicrous"}),
        json!({"prompt": "x", "enable_safety_checker": "yes"}),
        json!({"prompt": "x", "sync_mode": 1}),
        json!({"prompt": "x", "image_url": "data:image/png;base64,@@@@"}),
        json!({"prompt": "x", "image_url": "ftp://example.com/a.png"}),
        json!({"prompt": "x", "image_url": "/etc/passwd"}),
        json!({"prompt": "x", "image_urls": ["file:///etc/passwd"]}),
        json!({"prompt": "x", "mask_url": format!("data:image/png;base64,{}", "A".repeat(5 * 1024 * 1024))}),
    ]
}

fn corpus() -> Vec<Bad> {
    let mut c = Vec::new();
    // Malformed bodies on every JSON endpoint.
    for body in malformed_bodies() {
        for (m, p) in [
            (Method::POST, "/v1/async-invoke"),
            (Method::POST, "/fal-ai/flux/schnell"),
            (Method::POST, "/run/fal-ai/flux/schnell"),
            (Method::POST, "/fal-ai/hidream-i1-fast/stream"),
            (Method::POST, "/v1/admin/keys"),
        ] {
            let mut b = bad(m, p, body.clone());
            if p.starts_with("/v1/admin") {
                b.auth = Auth::Admin;
            }
            c.push(b);
        }
    }
    // Wrong shapes and values on the DO surface.
    for body in do_bodies() {
        c.push(bad(Method::POST, "/v1/async-invoke", body.to_string()));
    }
    // The same inputs on the fal surface, queued or run.
    for input in model_inputs() {
        for p in ["/fal-ai/flux/schnell", "/run/fal-ai/flux/schnell"] {
            c.push(bad(Method::POST, p, input.to_string()));
        }
    }
    // Content types, sizes, auth, headers.
    let ok = json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}}).to_string();
    for ct in [
        "text/plain",
        "application/xml",
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded",
        "application/jsonx",
        "image/png",
    ] {
        for p in [
            "/v1/async-invoke",
            "/fal-ai/flux/schnell",
            "/run/fal-ai/flux/schnell",
            "/fal-ai/hidream-i1-fast/stream",
        ] {
            c.push(Bad {
                content_type: Some(ct),
                ..bad(Method::POST, p, ok.clone())
            });
        }
    }
    let huge = json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x".repeat(5 * 1024 * 1024)}}).to_string();
    c.push(bad(Method::POST, "/v1/async-invoke", huge.clone()));
    c.push(bad(Method::POST, "/fal-ai/flux/schnell", huge));
    for auth in [Auth::None, Auth::Garbage] {
        for (m, p) in [
            (Method::POST, "/v1/async-invoke"),
            (Method::GET, "/v1/async-invoke"),
            (Method::POST, "/fal-ai/flux/schnell"),
            (Method::POST, "/run/fal-ai/flux/schnell"),
            (Method::POST, "/fal-ai/hidream-i1-fast/stream"),
            (Method::GET, "/v1/admin/keys"),
            (Method::POST, "/v1/admin/keys"),
            (Method::DELETE, "/v1/admin/keys/x"),
            (Method::GET, "/v1/models"),
            (Method::POST, "/storage/auth/token"),
            (Method::POST, "/files/upload"),
        ] {
            c.push(Bad {
                auth,
                ..bad(m, p, ok.clone())
            });
        }
    }
    c.push(Bad {
        auth: Auth::Key,
        ..bad(Method::GET, "/v1/admin/keys", "")
    }); // an access key is not the admin token
    for (name, value) in [
        ("idempotency-key", "x".repeat(300)),
        ("idempotency-key", "has space".into()),
        ("idempotency-key", String::new()),
        ("x-fal-queue-priority", "urgent".into()),
        ("x-fal-request-timeout", "-1".into()),
        ("x-fal-request-timeout", "NaN".into()),
        ("x-fal-request-timeout", "inf".into()),
        ("x-fal-request-timeout", "1e400".into()),
    ] {
        for p in ["/fal-ai/flux/schnell", "/run/fal-ai/flux/schnell"] {
            c.push(Bad {
                headers: vec![(name, value.clone())],
                ..bad(Method::POST, p, "{\"prompt\":\"x\"}")
            });
        }
    }
    // Path tricks and unknown ids on reads.
    for p in [
        "/v1/async-invoke/..%2F..%2Fetc%2Fpasswd",
        "/v1/async-invoke/%00",
        "/v1/async-invoke/' OR 1=1 --",
        "/v1/async-invoke/00000000-0000-0000-0000-000000000000",
        "/v1/async-invoke/not-a-uuid/status",
        "/v1/async-invoke/x/events",
        "/fal-ai/flux/requests/..%2F..%2Fetc/status",
        "/fal-ai/flux/requests/0196b7a4-0000-7000-8000-000000000000",
        "/fal-ai/flux/requests/0196b7a4-0000-7000-8000-000000000000/status/stream",
        "/fal-ai/flux/requests/x/unknown-action",
        "/files/../../etc/passwd",
        "/files/%2e%2e/%2e%2e/etc/passwd?expires=9999999999&sig=00",
        "/files/a/b.png?expires=abc&sig=zz",
        "/files/a/b.png",
        "/v1/async-invoke?limit=-1",
        "/v1/async-invoke?limit=99999999999999999999",
        "/v1/async-invoke?status=DONE",
        "/v1/async-invoke?cursor=%00%01",
        "/v1/async-invoke?created_after=tomorrow",
        "/v1/async-invoke?tag=",
        "/v1/async-invoke/0196b7a4-0000-7000-8000-000000000000/status?logs=maybe",
        "/fal-ai/flux/requests/0196b7a4-0000-7000-8000-000000000000/status?logs=maybe",
        "/v1/nope",
        "/nope",
        "/v1/admin/keys/../../v1/models",
    ] {
        c.push(bad(Method::GET, p, ""));
    }
    for p in [
        "/v1/async-invoke/0196b7a4-0000-7000-8000-000000000000/cancel",
        "/v1/async-invoke/bad/cancel",
    ] {
        c.push(bad(Method::POST, p, ""));
    }
    for p in [
        "/fal-ai/flux/requests/0196b7a4-0000-7000-8000-000000000000/cancel",
        "/fal-ai/flux/requests/x/cancel",
        "/fal-ai/flux/schnell",
        "/run/fal-ai/flux/schnell",
        "/fal-ai/hidream-i1-fast/stream",
    ] {
        c.push(bad(Method::PUT, p, ""));
    }
    for (m, p) in [
        (Method::DELETE, "/v1/async-invoke"),
        (Method::PATCH, "/v1/async-invoke"),
        (Method::PUT, "/v1/models"),
        (Method::DELETE, "/healthz"),
    ] {
        c.push(bad(m, p, ""));
    }
    c.push(Bad {
        auth: Auth::Admin,
        ..bad(Method::POST, "/v1/admin/keys", "{\"name\": 5}")
    });
    c.push(Bad {
        auth: Auth::Admin,
        ..bad(
            Method::POST,
            "/v1/admin/keys",
            format!("{{\"name\": \"{}\"}}", "n".repeat(300)),
        )
    });
    c.push(Bad {
        auth: Auth::Admin,
        ..bad(
            Method::DELETE,
            "/v1/admin/keys/0196b7a4-0000-7000-8000-000000000000",
            "",
        )
    });
    c.push(Bad {
        content_type: None,
        ..bad(
            Method::PUT,
            "/files/upload/uploads/x/y/z.png?expires=1&sig=00",
            "bytes",
        )
    });
    for body in [
        "{",
        "[]",
        "\"x\"",
        "{\"file_name\": 5}",
        "{\"content_type\": []}",
    ] {
        c.push(bad(Method::POST, "/storage/upload/initiate", body));
    }
    c.push(bad(Method::POST, "/api/fal/proxy", "{}"));
    c.push(Bad {
        headers: vec![(
            "x-fal-target-url",
            "https://evil.example/fal-ai/flux/schnell".into(),
        )],
        ..bad(Method::POST, "/api/fal/proxy", "{}")
    });
    c
}

#[tokio::test]
async fn every_bad_request_gets_a_clear_4xx_and_stores_nothing() {
    let server = TestServer::start().await;
    let admin = std::fs::read_to_string(server.data_dir.join("admin.token"))
        .unwrap()
        .trim()
        .to_owned();
    let keys_before: Value = server
        .http
        .get(server.at("/v1/admin/keys"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    let corpus = corpus();
    assert!(
        corpus.len() >= 200,
        "the corpus has {} requests",
        corpus.len()
    );
    // No connection reuse: after a 413 the server may close a connection the pool still holds.
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(0)
        .build()
        .unwrap();
    let mut failures = Vec::new();
    let mut by_status = std::collections::BTreeMap::<u16, usize>::new();
    for b in &corpus {
        let url = format!("{}{}", server.url, b.path);
        let build = || {
            let mut req = http.request(b.method.clone(), &url).body(b.body.clone());
            if let Some(ct) = b.content_type {
                req = req.header("content-type", ct);
            }
            for (k, v) in &b.headers {
                req = req.header(*k, v.as_str());
            }
            match b.auth {
                Auth::Key => req.bearer_auth(&server.key),
                Auth::Admin => req.bearer_auth(&admin),
                Auth::Garbage => req.header("authorization", "Digest username=\"x\", nonce=\"y\""),
                Auth::None => req,
            }
        };
        // A server that refuses a request before reading its body may close the connection
        // while the client still writes it (a broken pipe); a retry then reads the answer.
        let mut sent = build().send().await;
        for _ in 0..3 {
            if sent.is_ok() {
                break;
            }
            sent = build().send().await;
        }
        let resp = match sent {
            Ok(r) => r,
            // An oversized body may be cut off every time, which is a refusal too.
            Err(_) if b.body.len() > 4 * 1024 * 1024 => continue,
            Err(e) => {
                failures.push(format!("{} {}: transport error {e}", b.method, b.path));
                continue;
            }
        };
        let status = resp.status().as_u16();
        *by_status.entry(status).or_default() += 1;
        let text = resp.text().await.unwrap_or_default();
        let body: Value = serde_json::from_str(&text).unwrap_or(Value::Null);
        // The surface's error shape: DO's {id, message} or fal's {detail} (or fal's cancel {status}).
        let shaped = body["message"].is_string() && body["id"].is_string()
            || body.get("detail").is_some()
            || body["status"].is_string();
        if !(400..500).contains(&status) || !shaped {
            let shown: String = text.chars().take(200).collect();
            failures.push(format!(
                "{} {} -> {status} {shown}",
                b.method,
                b.path.chars().take(80).collect::<String>()
            ));
        }
    }
    println!("{} bad requests: {by_status:?}", corpus.len());
    assert!(
        failures.is_empty(),
        "{} of {} failed:\n{}",
        failures.len(),
        corpus.len(),
        failures.join("\n")
    );
    assert_eq!(server.stored_jobs().await, 0, "a bad request stored a job");
    assert_eq!(server.stored_files(), 0, "a bad request stored a file");
    let keys_after: Value = server
        .http
        .get(server.at("/v1/admin/keys"))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        keys_before, keys_after,
        "a bad request created or changed a key"
    );
}
