//! A corpus of bad requests across both surfaces and the admin API: malformed JSON, wrong
//! types, huge numbers, deep nesting, huge strings, invalid UTF-8, wrong content types, path
//! tricks, header abuse, enum and bound violations, unknown models, oversized data URIs; bytes
//! after the JSON value, missing content types and other charsets, encoded slashes in fal paths,
//! `*_url` inputs that are not URLs, numbers beyond 64 bits, images over the pixel bound, tags
//! over their limits, duplicated query parameters, webhooks to every kind of reserved address.
//! Each must get a 4xx in its surface's error shape, never a 5xx, and store nothing.
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
        // URLs that are not URLs, values that are not strings, malformed data URI headers.
        json!({"prompt": "x", "image_url": "http://"}),
        json!({"prompt": "x", "image_url": "https://"}),
        json!({"prompt": "x", "image_url": "http:///a.png"}),
        json!({"prompt": "x", "image_url": "http://[::1"}),
        json!({"prompt": "x", "image_url": "http://a b.example/a.png"}),
        json!({"prompt": "x", "image_url": "http://example.com:99999/a.png"}),
        json!({"prompt": "x", "image_url": "http://exa mple.com/a.png"}),
        json!({"prompt": "x", "image_url": 5}),
        json!({"prompt": "x", "image_url": true}),
        json!({"prompt": "x", "image_url": {"url": "https://example.com/a.png"}}),
        json!({"prompt": "x", "image_urls": [5]}),
        json!({"prompt": "x", "image_urls": [{"url": "https://example.com/a.png"}]}),
        json!({"prompt": "x", "image_urls": ["https://example.com/a.png", "http://"]}),
        json!({"prompt": "x", "controlnet": {"control_image_url": 7}}),
        json!({"prompt": "x", "image_url": "data:;;;;base64,AAAA"}),
        json!({"prompt": "x", "image_url": "data:image;base64,AAAA"}),
        json!({"prompt": "x", "image_url": "data:image/png;x;base64,AAAA"}),
        // Numbers beyond 64 bits, which a provider could only replace.
        json!({"prompt": "x", "seed": 18446744073709551616_f64}),
        json!({"prompt": "x", "seed": 1e30}),
        json!({"prompt": "x", "seed": -1e30}),
        json!({"prompt": "x", "num_inference_steps": 1e30}),
        // An image the schema allows but no provider makes.
        json!({"prompt": "x", "image_size": {"width": 14142, "height": 14142}}),
        json!({"prompt": "x", "image_size": {"width": 14142, "height": 3000}}),
    ]
}

/// Bodies that are right but for what follows them: exactly one JSON value is a body.
fn with_trailing_bytes(valid: &str) -> Vec<Vec<u8>> {
    ["xyz", valid, "\0", " 5", "\n{}", "]"]
        .iter()
        .map(|tail| format!("{valid}{tail}").into_bytes())
        .collect()
}

/// An address of every reserved kind, as a webhook URL.
fn reserved_webhooks() -> Vec<String> {
    [
        "[64:ff9b::7f00:1]",
        "[2002:7f00:1::]",
        "[2002:a9fe:a9fe::]",
        "[::127.0.0.1]",
        "[::ffff:0:7f00:1]",
        "[::ffff:127.0.0.1]",
        "[2001:0:4136:e378:8000:63bf:80ff:fffe]",
        "[fec0::1]",
        "[fe80::1]",
        "[fd00::1]",
        "[::1]",
        "[::]",
        "[ff02::1]",
        "[2001:db8::1]",
        "[64:ff9b:1::1]",
        "0.1.2.3",
        "0.0.0.0",
        "192.0.0.1",
        "198.18.0.1",
        "240.0.0.1",
        "255.255.255.255",
        "224.0.0.1",
        "100.64.0.1",
        "169.254.169.254",
        "10.0.0.1",
        "172.16.0.1",
        "192.168.1.1",
        "127.0.0.1",
        "localhost",
    ]
    .iter()
    .map(|host| format!("http://{host}/hook"))
    .collect()
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
    // Exactly one JSON value, on every JSON route.
    let valid_bodies = [
        (Method::POST, "/v1/async-invoke", ok.clone(), Auth::Key),
        (
            Method::POST,
            "/fal-ai/flux/schnell",
            "{\"prompt\": \"x\"}".to_owned(),
            Auth::Key,
        ),
        (
            Method::POST,
            "/v1/admin/keys",
            "{\"name\": \"k\"}".to_owned(),
            Auth::Admin,
        ),
        (
            Method::POST,
            "/storage/upload/initiate",
            "{\"content_type\": \"image/png\"}".to_owned(),
            Auth::Key,
        ),
    ];
    for (m, p, valid, auth) in &valid_bodies {
        for body in with_trailing_bytes(valid) {
            c.push(Bad {
                auth: *auth,
                ..bad(m.clone(), p, body)
            });
        }
        // A JSON body needs its content type, in UTF-8.
        for ct in [
            None,
            Some("application/json; charset=utf-7"),
            Some("application/json; charset=iso-8859-1"),
            Some("application/json; charset=\"utf-16\""),
        ] {
            c.push(Bad {
                auth: *auth,
                content_type: ct,
                ..bad(m.clone(), p, valid.clone())
            });
        }
    }
    // A client's own encoded slash names no model.
    for (m, p) in [
        (Method::POST, "/fal-ai/flux%2Fschnell"),
        (Method::POST, "/fal-ai/flux%2fschnell"),
        (Method::POST, "/fal-ai%2Fflux/schnell"),
        (Method::POST, "/fal-ai/flux%2Fschnell/stream"),
    ] {
        c.push(bad(m, p, "{\"prompt\": \"x\"}"));
    }
    for p in [
        "/fal-ai/flux%2Fschnell/requests/0196b7a4-0000-7000-8000-000000000000/status",
        "/fal-ai/flux%2Fschnell/requests/0196b7a4-0000-7000-8000-000000000000",
    ] {
        c.push(bad(Method::GET, p, ""));
    }
    // Tags over their limits.
    let with_tags = |tags: Value| {
        json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "tags": tags})
            .to_string()
    };
    let many: Vec<Value> = (0..100_000)
        .map(|i| json!({"key": "k", "value": i.to_string()}))
        .collect();
    for tags in [
        Value::Array(many),
        Value::Array((0..51).map(|_| json!({"key": "k", "value": "v"})).collect()),
        json!([{"key": "k".repeat(129), "value": "v"}]),
        json!([{"key": "k".repeat(1024 * 1024), "value": "v"}]),
        json!([{"key": "k", "value": "v".repeat(513)}]),
        json!([{"key": "k", "value": "v".repeat(3 * 1024 * 1024)}]),
    ] {
        c.push(bad(Method::POST, "/v1/async-invoke", with_tags(tags)));
    }
    // Duplicated query parameters: the framework's refusal, in the surface's shape.
    c.push(bad(
        Method::POST,
        "/fal-ai/flux/schnell?fal_webhook=https://a.example/x&fal_webhook=https://b.example/y",
        "{\"prompt\": \"x\"}",
    ));
    for p in [
        "/files/a/b.png?sig=00&sig=11&expires=9999999999",
        "/files/a/b.png?expires=1&expires=2&sig=00",
        "/fal-ai/flux/requests/0196b7a4-0000-7000-8000-000000000000/status?logs=1&logs=0",
        "/v1/async-invoke?limit=1&limit=2",
    ] {
        c.push(bad(Method::GET, p, ""));
    }
    c.push(Bad {
        content_type: None,
        ..bad(
            Method::PUT,
            "/files/upload/uploads/x/y/z.png?expires=1&expires=2&sig=00",
            "bytes",
        )
    });
    // Webhooks to reserved addresses, on both surfaces.
    for hook in reserved_webhooks() {
        c.push(bad(
            Method::POST,
            "/v1/async-invoke",
            json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "x"}, "webhook_url": hook})
                .to_string(),
        ));
        c.push(bad(
            Method::POST,
            &format!("/fal-ai/flux/schnell?fal_webhook={hook}"),
            "{\"prompt\": \"x\"}",
        ));
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
