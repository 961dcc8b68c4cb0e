//! One port, both protocols: HTTP/1.1 and HTTP/2 over cleartext and over TLS, whatever the
//! first bytes a client sends, and a stop that waits on open event streams only for the drain.
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
