//! One port, both protocols: HTTP/1.1 and HTTP/2 over cleartext and over TLS, whatever the
//! first bytes a client sends, and a stop that waits on open event streams only for the drain.
//! Slow, stalled, oversized and surplus connections, opened with raw sockets, are closed or
//! refused in bounded time, and the server's descriptor count (`/proc/PID/fd`) comes back.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use reqwest::Version;
use support::{KEY, Options, TestServer};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

async fn healthz_version(client: &reqwest::Client, url: &str) -> Version {
    let res = client.get(format!("{url}/healthz")).send().await.unwrap();
    assert_eq!(res.status(), 200);
    res.version()
}

#[tokio::test]
async fn cleartext_serves_http1_and_http2_with_prior_knowledge() {
    let server = TestServer::start().await;
    let h1 = reqwest::Client::builder().http1_only().build().unwrap();
    assert_eq!(healthz_version(&h1, &server.url).await, Version::HTTP_11);
    let h2 = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    assert_eq!(healthz_version(&h2, &server.url).await, Version::HTTP_2);
    // An HTTP/2 create is a create like any other.
    let res = h2
        .post(server.at("/v1/async-invoke"))
        .bearer_auth(KEY)
        .json(&serde_json::json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "h2"}}))
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 202);
}

/// A request whose first segment is one byte: `P` may begin `POST` or HTTP/2's preface, so
/// the server must read on before it knows (the other splits fall inside the request line and
/// its head). On a loaded machine the two writes may still arrive as one segment; the test then
/// passes without the split, never fails for it.
#[tokio::test]
async fn a_request_that_arrives_a_byte_first_is_still_understood() {
    let server = TestServer::start().await;
    let addr = server.url.trim_start_matches("http://").to_owned();
    let body = r#"{"model_id":"fal-ai/flux/schnell","input":{"prompt":"slow start"}}"#;
    let request = format!(
        "POST /v1/async-invoke HTTP/1.1\r\nHost: {addr}\r\nAuthorization: Bearer {KEY}\r\n\
         Content-Type: application/json\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    for split in [1, 3, 12] {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.set_nodelay(true).unwrap();
        tcp.write_all(&request.as_bytes()[..split]).await.unwrap();
        tokio::time::sleep(Duration::from_millis(100)).await;
        tcp.write_all(&request.as_bytes()[split..]).await.unwrap();
        let mut answer = String::new();
        tokio::time::timeout(Duration::from_secs(10), tcp.read_to_string(&mut answer))
            .await
            .expect("no answer: the server still waits for the request")
            .unwrap();
        assert!(
            answer.starts_with("HTTP/1.1 202"),
            "split after {split} bytes: {answer}"
        );
    }
}

#[tokio::test]
async fn tls_settles_the_protocol_by_alpn() {
    let dir = tempfile::tempdir().unwrap();
    let tls = dir.path().join("tls");
    let made = std::process::Command::new(env!("CARGO_BIN_EXE_invokd"))
        .args(["tls", "init", "--dir"])
        .arg(&tls)
        .output()
        .unwrap();
    assert!(made.status.success(), "{made:?}");
    let opts = Options::default()
        .arg("--tls-cert")
        .arg(tls.join("cert.pem").to_str().unwrap())
        .arg("--tls-key")
        .arg(tls.join("key.pem").to_str().unwrap());
    let server = TestServer::start_in(dir.path(), opts).await;
    assert!(server.url.starts_with("https://"), "{}", server.url);
    let ca = reqwest::Certificate::from_pem(&std::fs::read(tls.join("ca.pem")).unwrap()).unwrap();
    let both = reqwest::Client::builder()
        .add_root_certificate(ca.clone())
        .build()
        .unwrap();
    assert_eq!(healthz_version(&both, &server.url).await, Version::HTTP_2);
    let h1 = reqwest::Client::builder()
        .add_root_certificate(ca)
        .http1_only()
        .build()
        .unwrap();
    assert_eq!(healthz_version(&h1, &server.url).await, Version::HTTP_11);
}

#[tokio::test]
async fn open_event_streams_do_not_hold_the_server_up_when_it_stops() {
    let opts = Options::default()
        .set("--emulator-latency-ms", "60000")
        .set("--shutdown-grace-seconds", "1");
    let server = TestServer::start_with(opts).await;
    let job = server
        .create(
            &serde_json::json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "held"}}),
        )
        .await;
    let id = job["request_id"].as_str().unwrap();
    let mut streams = Vec::new();
    for _ in 0..3 {
        let mut res = server
            .http
            .get(server.at(&format!("/v1/async-invoke/{id}/events")))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(res.status(), 200);
        let first = res.chunk().await.unwrap().expect("the job's first event");
        assert!(
            String::from_utf8_lossy(&first).contains("data:"),
            "{first:?}"
        );
        streams.push(res);
    }
    let asked = Instant::now();
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status}");
    // The streams end with the HTTP drain (5 s) and the run's grace (1 s), not when the job
    // does (a minute away); the bound leaves room for a loaded machine.
    let took = asked.elapsed();
    assert!(took < Duration::from_secs(20), "stopped after {took:?}");
    drop(streams);
}

/// What a raw connection got before the server closed it, or all it got within `within`.
async fn answer_of(tcp: &mut tokio::net::TcpStream, within: Duration) -> (String, bool) {
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    let deadline = Instant::now() + within;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match tokio::time::timeout(left, tcp.read(&mut buf)).await {
            Ok(Ok(0)) | Ok(Err(_)) => return (String::from_utf8_lossy(&got).into(), true),
            Ok(Ok(n)) => got.extend_from_slice(&buf[..n]),
            Err(_) => return (String::from_utf8_lossy(&got).into(), false),
        }
    }
}

/// Waits until the server's descriptor count is back near `baseline`, and says if it is not.
async fn nothing_left(server: &TestServer, baseline: usize) {
    const SLACK: usize = 5;
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut now = server.open_fds();
    while now > baseline + SLACK && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        now = server.open_fds();
    }
    assert!(
        now <= baseline + SLACK,
        "{now} descriptors, {baseline} before"
    );
}

fn addr_of(server: &TestServer) -> String {
    server.url.trim_start_matches("http://").to_owned()
}

#[tokio::test]
async fn heads_that_never_complete_and_idle_keep_alives_are_closed_in_bounded_time() {
    let server =
        TestServer::start_with(Options::default().set("--header-timeout-seconds", "1")).await;
    let addr = addr_of(&server);
    let baseline = server.open_fds();
    let mut held = Vec::new();
    for _ in 0..100 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"POST /v1/async-invoke HTTP/1.1\r\nHost: x\r\nContent-")
            .await
            .unwrap();
        held.push(tcp);
    }
    // A connection that finished a request and then sits idle is closed the same way.
    let mut idle = tokio::net::TcpStream::connect(&addr).await.unwrap();
    idle.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_millis(300)).await;
    let open = server.open_fds();
    assert!(
        open >= baseline + 90,
        "the connections are not open: {open} descriptors, {baseline} before"
    );
    let started = Instant::now();
    for tcp in &mut held {
        let (_, closed) = answer_of(tcp, Duration::from_secs(15)).await;
        assert!(
            closed,
            "a stalled head was still open after {:?}",
            started.elapsed()
        );
    }
    let (answer, closed) = answer_of(&mut idle, Duration::from_secs(15)).await;
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    assert!(closed, "an idle keep-alive connection was kept");
    // The timeout is 1 s; the bound leaves room for a loaded machine.
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    drop(held);
    nothing_left(&server, baseline).await;
}

/// The four routes that take a body, with the `Content-Length` line left for the test.
fn body_routes(server: &TestServer, upload_url: &str) -> Vec<String> {
    let key = &server.key;
    vec![
        format!(
            "POST /v1/async-invoke HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {key}\r\nContent-Type: application/json\r\n"
        ),
        format!(
            "POST /fal-ai/flux/schnell HTTP/1.1\r\nHost: x\r\nAuthorization: Key {key}\r\nContent-Type: application/json\r\n"
        ),
        format!(
            "POST /files/upload HTTP/1.1\r\nHost: x\r\nAuthorization: Key {key}\r\nContent-Type: image/png\r\n"
        ),
        format!("PUT {upload_url} HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\n"),
    ]
}

async fn upload_path(server: &TestServer) -> String {
    let started = server.initiate_upload().await;
    let url = started["upload_url"].as_str().unwrap();
    url[url.find("/files/").unwrap()..].to_owned()
}

#[tokio::test]
async fn declared_lengths_over_the_limit_are_refused_at_once_even_when_a_continue_is_expected() {
    let server = TestServer::start().await;
    let addr = addr_of(&server);
    let upload = upload_path(&server).await;
    let baseline = server.open_fds();
    for head in body_routes(&server, &upload) {
        for extra in [
            "Content-Length: 1000000000000\r\n\r\n".to_owned() + &"x".repeat(100),
            "Content-Length: 5000000000\r\nExpect: 100-continue\r\n\r\n".to_owned(),
        ] {
            let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
            tcp.write_all(format!("{head}{extra}").as_bytes())
                .await
                .unwrap();
            let (answer, closed) = answer_of(&mut tcp, Duration::from_secs(10)).await;
            let line = head.lines().next().unwrap();
            assert!(
                answer.starts_with("HTTP/1.1 413"),
                "{line} {extra:.40}: {answer}"
            );
            assert!(!answer.contains("100 Continue"), "{answer}");
            assert!(closed, "{line}: the connection stayed open");
            let body = &answer[answer.find("\r\n\r\n").unwrap() + 4..];
            let json: serde_json::Value = serde_json::from_str(body).unwrap();
            assert!(
                json["id"] == "payload_too_large" || json["detail"].is_string(),
                "{body}"
            );
        }
    }
    nothing_left(&server, baseline).await;
    assert_eq!(server.stored_jobs().await, 0);
    assert_eq!(server.stored_files(), 0);
}

#[tokio::test]
async fn bodies_that_stall_or_drag_on_are_refused_with_408() {
    let opts = Options::default()
        .set("--body-idle-timeout-seconds", "1")
        .set("--body-timeout-seconds", "3");
    let server = TestServer::start_with(opts).await;
    let addr = addr_of(&server);
    let upload = upload_path(&server).await;
    let baseline = server.open_fds();
    for head in body_routes(&server, &upload) {
        // Stalled: a tenth of the body, then nothing.
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(format!("{head}Content-Length: 1000\r\n\r\n{{\"model_id\":").as_bytes())
            .await
            .unwrap();
        let started = Instant::now();
        let (answer, closed) = answer_of(&mut tcp, Duration::from_secs(15)).await;
        let line = head.lines().next().unwrap();
        assert!(answer.starts_with("HTTP/1.1 408"), "{line}: {answer}");
        assert!(
            answer.contains("request_timeout") || answer.contains("detail"),
            "{answer}"
        );
        assert!(closed, "{line}: the connection stayed open");
        assert!(
            started.elapsed() < Duration::from_secs(12),
            "{:?}",
            started.elapsed()
        );
    }
    // Dragging on: a byte every 300 ms is never idle for a second, but is not whole in 3 s.
    let head = &body_routes(&server, &upload)[0];
    let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
    tcp.write_all(format!("{head}Content-Length: 1000\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let started = Instant::now();
    let mut answer = String::new();
    while started.elapsed() < Duration::from_secs(20) {
        if tcp.write_all(b" ").await.is_err() {
            break;
        }
        let (got, closed) = answer_of(&mut tcp, Duration::from_millis(300)).await;
        answer.push_str(&got);
        if closed || !got.is_empty() {
            break;
        }
    }
    assert!(answer.starts_with("HTTP/1.1 408"), "{answer}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "{:?}",
        started.elapsed()
    );
    drop(tcp);
    nothing_left(&server, baseline).await;
    assert_eq!(server.stored_jobs().await, 0);
    assert_eq!(server.stored_files(), 0);
}

#[tokio::test]
async fn connections_over_the_cap_are_told_503_and_the_count_returns() {
    let opts = Options::default()
        .set("--max-connections", "20")
        .set("--header-timeout-seconds", "60");
    let server = TestServer::start_with(opts).await;
    let addr = addr_of(&server);
    let baseline = server.open_fds();
    let mut held = Vec::new();
    for _ in 0..20 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            .await
            .unwrap();
        held.push(tcp);
    }
    tokio::time::sleep(Duration::from_millis(300)).await;
    for _ in 0..30 {
        let mut tcp = tokio::net::TcpStream::connect(&addr).await.unwrap();
        tcp.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n")
            .await
            .unwrap();
        let (answer, closed) = answer_of(&mut tcp, Duration::from_secs(10)).await;
        assert!(answer.starts_with("HTTP/1.1 503"), "{answer}");
        assert!(answer.contains("service_unavailable"), "{answer}");
        assert!(closed);
    }
    let full = server.open_fds();
    assert!(
        full < baseline + 30,
        "refused connections are held: {full}, {baseline} before"
    );
    drop(held);
    // Their places are free again.
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let res = server.http.get(server.at("/healthz")).send().await;
        if res.is_ok_and(|r| r.status() == 200) {
            break;
        }
        assert!(Instant::now() < deadline, "the cap was not released");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    nothing_left(&server, baseline).await;
}
