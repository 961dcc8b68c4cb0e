//! The client against small local servers that misbehave on purpose: retries with
//! `Retry-After`, one idempotency key per create, live events and the polling fallback,
//! downloads that never overwrite, and traces that never show a key.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::{HeaderMap, StatusCode},
    response::{
        IntoResponse, Response,
        sse::{Event, Sse},
    },
    routing::{get, post},
};
use invokd_client::{
    Client, ClientError, RetryPolicy, TraceEvent, WaitEvent, WaitOptions,
    api::{admin::CreateKey, async_invoke::CreateInvocation},
};
use serde_json::{Value, json};

const KEY: &str = "invk_unit_test_secret_key";

fn invocation(id: &str, status: &str) -> Value {
    let done = matches!(status, "COMPLETED" | "FAILED" | "CANCELED");
    json!({
        "request_id": id, "model_id": "fal-ai/flux/schnell", "status": status,
        "created_at": "2026-01-01T00:00:00Z", "started_at": null,
        "completed_at": if done { json!("2026-01-01T00:00:01Z") } else { Value::Null },
        "output": if status == "COMPLETED" { json!({"images": [{"url": "http://x/files/a/1/0.png", "content_type": "image/png"}]}) } else { Value::Null },
        "error": null, "tags": []
    })
}

fn body() -> CreateInvocation {
    let mut input = serde_json::Map::new();
    input.insert("prompt".into(), "a cat".into());
    CreateInvocation {
        model_id: "fal-ai/flux/schnell".into(),
        input,
        tags: None,
        webhook_url: None,
        run_timeout_seconds: None,
    }
}

/// What a stub server saw: each request's path and headers.
#[derive(Default)]
struct Seen {
    requests: Vec<(String, HeaderMap)>,
}

type Shared = Arc<Mutex<Seen>>;

async fn serve(router: Router) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move {
        axum::serve(listener, router).await.unwrap();
    });
    format!("http://{addr}")
}

fn fast(max_retries: u32) -> RetryPolicy {
    RetryPolicy {
        max_retries,
        wait_min: Duration::from_millis(20),
        wait_max: Duration::from_secs(5),
    }
}

fn client(url: &str, retries: u32) -> Client {
    Client::builder(url, KEY)
        .retry(fast(retries))
        .build()
        .unwrap()
}

/// A create endpoint that answers 503 (the first time with `Retry-After: 1`) `fails` times,
/// then 202.
async fn flaky_create(fails: usize) -> (String, Shared) {
    let seen: Shared = Arc::default();
    let router = Router::new()
        .route(
            "/v1/async-invoke",
            post(
                move |State(seen): State<Shared>, headers: HeaderMap| async move {
                    let n = {
                        let mut s = seen.lock().unwrap();
                        s.requests.push(("/v1/async-invoke".into(), headers));
                        s.requests.len()
                    };
                    if n <= fails {
                        let mut res = (
                            StatusCode::SERVICE_UNAVAILABLE,
                            Json(json!({"id": "service_unavailable", "message": "busy"})),
                        )
                            .into_response();
                        if n == 1 {
                            res.headers_mut()
                                .insert("retry-after", "1".parse().unwrap());
                        }
                        return res;
                    }
                    (StatusCode::ACCEPTED, Json(invocation("job-1", "QUEUED"))).into_response()
                },
            ),
        )
        .with_state(seen.clone());
    (serve(router).await, seen)
}

fn idempotency_keys(seen: &Shared) -> Vec<String> {
    seen.lock()
        .unwrap()
        .requests
        .iter()
        .map(|(_, h)| {
            h.get("idempotency-key")
                .expect("every create has an Idempotency-Key")
                .to_str()
                .unwrap()
                .to_owned()
        })
        .collect()
}

#[tokio::test]
async fn a_create_is_retried_after_503s_honouring_retry_after_with_one_idempotency_key() {
    let (url, seen) = flaky_create(2).await;
    let c = client(&url, 5);
    let started = Instant::now();
    let job = c.create(&body()).await.unwrap();
    assert_eq!(job.request_id, "job-1");
    assert!(
        started.elapsed() >= Duration::from_secs(1),
        "Retry-After: 1 was honoured ({:?})",
        started.elapsed()
    );
    let keys = idempotency_keys(&seen);
    assert_eq!(keys.len(), 3, "two 503s, then the 202");
    assert!(keys.iter().all(|k| k == &keys[0]), "{keys:?}");

    // The next create is another job: another key.
    c.create(&body()).await.unwrap();
    let keys = idempotency_keys(&seen);
    assert_eq!(keys.len(), 4);
    assert_ne!(keys[3], keys[0]);

    // A key given by the caller is sent as is.
    let opts = invokd_client::CreateOptions {
        idempotency_key: Some("mine-1".into()),
        prefer_wait: Some(5),
    };
    c.create_with(&body(), &opts).await.unwrap();
    let s = seen.lock().unwrap();
    let (_, h) = s.requests.last().unwrap();
    assert_eq!(h["idempotency-key"], "mine-1");
    assert_eq!(h["prefer"], "wait=5");
    assert_eq!(h["authorization"], format!("Bearer {KEY}").as_str());
}

#[tokio::test]
async fn retries_stop_at_the_maximum_and_the_last_error_is_returned() {
    let (url, seen) = flaky_create(100).await;
    let err = client(&url, 2).create(&body()).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::SERVICE_UNAVAILABLE), "{err}");
    assert_eq!(err.api_id(), Some("service_unavailable"));
    assert_eq!(seen.lock().unwrap().requests.len(), 3, "1 try + 2 retries");

    let (url, seen) = flaky_create(100).await;
    client(&url, 0).create(&body()).await.unwrap_err();
    assert_eq!(seen.lock().unwrap().requests.len(), 1, "no retries");
}

#[tokio::test]
async fn client_errors_are_not_retried_and_keep_the_servers_message() {
    let hits = Arc::new(Mutex::new(0));
    let h = hits.clone();
    let router = Router::new().route(
        "/v1/async-invoke/{id}",
        get(move |Path(id): Path<String>| {
            *h.lock().unwrap() += 1;
            async move {
                (
                    StatusCode::NOT_FOUND,
                    Json(json!({"id": "not_found", "message": format!("request {id:?} not found"), "request_id": "r1"})),
                )
            }
        }),
    );
    let url = serve(router).await;
    let err = client(&url, 5).get("nope").await.unwrap_err();
    assert_eq!(*hits.lock().unwrap(), 1);
    match &err {
        ClientError::Api { status, body } => {
            assert_eq!(*status, StatusCode::NOT_FOUND);
            assert_eq!(body.message, "request \"nope\" not found");
        }
        other => panic!("{other:?}"),
    }
}

#[tokio::test]
async fn making_a_key_is_retried_on_429_but_never_on_a_500() {
    let calls = Arc::new(Mutex::new(Vec::<u16>::new()));
    let answers = Arc::new(Mutex::new(vec![429u16, 201, 500, 201]));
    let (c2, a2) = (calls.clone(), answers.clone());
    let router = Router::new().route(
        "/v1/admin/keys",
        post(move || {
            let code = a2.lock().unwrap().remove(0);
            c2.lock().unwrap().push(code);
            async move {
                let status = StatusCode::from_u16(code).unwrap();
                if code == 201 {
                    (status, Json(json!({"id": "k1", "name": "n", "prefix": "invk_abcd", "project": "p",
                        "created_at": "2026-01-01T00:00:00Z", "revoked_at": null, "key": "invk_new"})))
                } else {
                    (status, Json(json!({"id": "x", "message": "no"})))
                }
            }
        }),
    );
    let url = serve(router).await;
    let admin = client(&url, 5).admin("invka_admin");
    let req = CreateKey {
        name: "n".into(),
        project: None,
    };
    let made = admin.create_key(&req).await.unwrap();
    assert_eq!(made.key, "invk_new");
    assert_eq!(*calls.lock().unwrap(), [429, 201]);
    let err = admin.create_key(&req).await.unwrap_err();
    assert_eq!(err.status(), Some(StatusCode::INTERNAL_SERVER_ERROR));
    assert_eq!(
        *calls.lock().unwrap(),
        [429, 201, 500],
        "a 500 may have made the key: not retried"
    );
}

#[tokio::test]
async fn an_unreachable_server_is_a_network_error_after_the_retries() {
    // A port that was free a moment ago and has no listener now.
    let port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let notes = Arc::new(Mutex::new(Vec::new()));
    let n = notes.clone();
    let c = Client::builder(&format!("http://127.0.0.1:{port}"), KEY)
        .retry(fast(2))
        .trace(move |ev| n.lock().unwrap().push(ev.clone()))
        .build()
        .unwrap();
    let err = c.status("x").await.unwrap_err();
    assert!(err.is_network(), "{err:?}");
    assert!(err.to_string().contains("cannot reach"), "{err}");
    let retries = notes
        .lock()
        .unwrap()
        .iter()
        .filter(|e| matches!(e, TraceEvent::Retry { .. }))
        .count();
    assert_eq!(retries, 2);
}

#[tokio::test]
async fn the_trace_shows_requests_and_answers_without_the_key() {
    let (url, _) = flaky_create(1).await;
    let lines = Arc::new(Mutex::new(Vec::new()));
    let l = lines.clone();
    let c = Client::builder(&url, KEY)
        .retry(RetryPolicy {
            max_retries: 1,
            wait_min: Duration::from_millis(10),
            wait_max: Duration::from_millis(10),
        })
        .trace(move |ev| l.lock().unwrap().push(ev.to_string()))
        .build()
        .unwrap();
    c.create(&body()).await.unwrap();
    let text = lines.lock().unwrap().join("\n");
    assert!(!text.contains(KEY), "{text}");
    assert!(text.contains("authorization: Bearer <redacted>"), "{text}");
    assert!(text.contains("> POST http://"), "{text}");
    assert!(text.contains("< 503 Service Unavailable"), "{text}");
    assert!(text.contains("retrying POST"), "{text}");
    assert!(text.contains("< 202 Accepted"), "{text}");
    assert!(text.contains("\"prompt\":\"a cat\""), "{text}");
}

/// A job that goes QUEUED -> IN_PROGRESS -> COMPLETED, over SSE or (without `sse`) by polls.
async fn job_server(sse: bool) -> (String, Shared) {
    let seen: Shared = Arc::default();
    let polls = Arc::new(Mutex::new(0usize));
    let s1 = seen.clone();
    let p1 = polls.clone();
    let mut router = Router::new()
        .route(
            "/v1/async-invoke/{id}",
            get(move |Path(id): Path<String>| {
                let streamed = {
                    let mut s = s1.lock().unwrap();
                    s.requests.push((format!("get {id}"), HeaderMap::new()));
                    s.requests.iter().any(|(p, _)| p.starts_with("events"))
                };
                let done = streamed || *p1.lock().unwrap() >= 2;
                async move { Json(invocation(&id, if done { "COMPLETED" } else { "QUEUED" })) }
            }),
        )
        .route(
            "/v1/async-invoke/{id}/status",
            get(move |Path(id): Path<String>| {
                let n = {
                    let mut p = polls.lock().unwrap();
                    *p += 1;
                    *p
                };
                let status = match n {
                    1 => "QUEUED",
                    2 => "IN_PROGRESS",
                    _ => "COMPLETED",
                };
                async move { Json(invocation(&id, status)) }
            }),
        )
        .route(
            "/fal-ai/flux/requests/{id}/status",
            get(|| async {
                (
                    StatusCode::ACCEPTED,
                    Json(json!({"status": "IN_QUEUE", "queue_position": 3})),
                )
            }),
        );
    if sse {
        let p2 = seen.clone();
        router = router.route(
            "/v1/async-invoke/{id}/events",
            get(move |Path(id): Path<String>| {
                p2.lock().unwrap().requests.push((format!("events {id}"), HeaderMap::new()));
                async move {
                    let events = vec![
                        Event::default().event("status").json_data(invocation(&id, "QUEUED")),
                        Event::default().event("status").json_data(invocation(&id, "IN_PROGRESS")),
                        Event::default().event("log").json_data(json!({"message": "drawing", "level": "INFO", "source": "USER", "timestamp": "2026-01-01T00:00:00.500Z"})),
                        Event::default().event("status").json_data(invocation(&id, "COMPLETED")),
                    ];
                    let stream = futures::stream::iter(events);
                    Sse::new(stream).into_response()
                }
            }),
        );
    } else {
        router = router.route(
            "/v1/async-invoke/{id}/events",
            get(|| async {
                (
                    StatusCode::NOT_FOUND,
                    Json(json!({"id": "not_found", "message": "no such route"})),
                )
                    .into_response()
            }),
        );
    }
    (serve(router).await, seen)
}

fn describe(ev: &WaitEvent) -> String {
    match ev {
        WaitEvent::Status(i) => i.status.to_string(),
        WaitEvent::Log(l) => format!("log {}", l.message),
        WaitEvent::QueuePosition(p) => format!("position {p}"),
        _ => "other".into(),
    }
}

#[tokio::test]
async fn waiting_follows_the_event_stream() {
    let (url, seen) = job_server(true).await;
    let mut events = Vec::new();
    let done = client(&url, 1)
        .wait_with("j1", &WaitOptions::default(), |ev| {
            events.push(describe(ev))
        })
        .await
        .unwrap();
    assert_eq!(done.status.as_str(), "COMPLETED");
    assert!(done.output.is_some());
    assert_eq!(
        events,
        ["QUEUED", "IN_PROGRESS", "log drawing", "COMPLETED"]
    );
    let paths: Vec<String> = seen
        .lock()
        .unwrap()
        .requests
        .iter()
        .map(|(p, _)| p.clone())
        .collect();
    assert_eq!(paths, ["get j1", "events j1", "get j1"]);
}

#[tokio::test]
async fn without_an_event_stream_waiting_polls_and_reports_the_queue_position() {
    let (url, _) = job_server(false).await;
    let mut events = Vec::new();
    let opts = WaitOptions {
        poll_interval: Duration::from_millis(20),
        queue_position: true,
        ..WaitOptions::default()
    };
    let done = client(&url, 1)
        .wait_with("j2", &opts, |ev| events.push(describe(ev)))
        .await
        .unwrap();
    assert_eq!(done.status.as_str(), "COMPLETED");
    assert_eq!(events, ["QUEUED", "position 3", "IN_PROGRESS", "COMPLETED"]);
}

#[tokio::test]
async fn a_wait_that_runs_out_of_time_says_so() {
    let router = Router::new()
        .route(
            "/v1/async-invoke/{id}",
            get(|Path(id): Path<String>| async move { Json(invocation(&id, "QUEUED")) }),
        )
        .route(
            "/v1/async-invoke/{id}/status",
            get(|Path(id): Path<String>| async move { Json(invocation(&id, "QUEUED")) }),
        );
    let url = serve(router).await;
    let opts = WaitOptions {
        timeout: Some(Duration::from_millis(300)),
        poll_interval: Duration::from_millis(20),
        ..WaitOptions::default()
    };
    let err = client(&url, 0)
        .wait_with("j3", &opts, |_| {})
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Timeout { .. }), "{err:?}");
}

#[tokio::test]
async fn downloads_are_named_by_request_and_never_overwrite_without_force() {
    let router = Router::new().route(
        "/files/{*key}",
        get(|headers: HeaderMap| async move {
            assert!(
                headers.get("authorization").is_none(),
                "file URLs get no key"
            );
            Response::builder()
                .header("content-type", "image/png")
                .body(axum::body::Body::from(&b"\x89PNG-bytes"[..]))
                .unwrap()
        }),
    );
    let url = serve(router).await;
    let mut inv: invokd_client::api::async_invoke::Invocation =
        serde_json::from_value(invocation("req-9", "COMPLETED")).unwrap();
    inv.output = Some(
        json!({"images": [
            {"url": format!("{url}/files/a/1/0.png?sig=x"), "content_type": "image/png"},
            {"url": format!("{url}/files/a/1/1?sig=y"), "content_type": "image/jpeg"}
        ]})
        .as_object()
        .unwrap()
        .clone(),
    );
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("new/sub");
    let c = client(&url, 0);
    let paths = c.download_outputs(&inv, &out, false).await.unwrap();
    assert_eq!(paths, [out.join("req-9-0.png"), out.join("req-9-1.jpg")]);
    assert_eq!(std::fs::read(&paths[0]).unwrap(), b"\x89PNG-bytes");

    std::fs::write(&paths[1], b"mine").unwrap();
    let err = c.download_outputs(&inv, &out, false).await.unwrap_err();
    assert!(
        matches!(&err, ClientError::FileExists { path } if path == &paths[0]),
        "{err:?}"
    );
    assert_eq!(
        std::fs::read(&paths[1]).unwrap(),
        b"mine",
        "nothing was touched"
    );
    c.download_outputs(&inv, &out, true).await.unwrap();
    assert_eq!(std::fs::read(&paths[1]).unwrap(), b"\x89PNG-bytes");
    let leftovers: Vec<_> = std::fs::read_dir(&out)
        .unwrap()
        .map(|e| e.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.ends_with(".part"))
        .collect();
    assert!(leftovers.is_empty(), "{leftovers:?}");
}
