//! Start-up, restart and shutdown: the first key, the client config, crash recovery, SIGTERM.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use serde_json::{Value, json};
use support::{Options, TestServer, printed_key};

fn flux(prompt: &str) -> Value {
    json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": prompt, "image_size": {"width": 64, "height": 64}}})
}

#[tokio::test]
async fn first_start_prints_a_key_once_and_writes_a_client_config_the_cli_uses() {
    let dir = tempfile::tempdir().unwrap();
    let opts = Options {
        bootstrap_key: None,
        ..Options::default()
    };
    let server = TestServer::start_in(dir.path(), opts.clone()).await;
    let key = printed_key(&server.stdout.lock().unwrap()).expect("the first start prints a key");
    assert!(key.starts_with("invk_") && key.len() > 40, "{key}");

    let config = std::fs::read_to_string(&server.client_config).unwrap();
    assert!(config.contains(&key), "{config}");
    assert!(config.contains(&server.url), "{config}");

    // The CLI on the same machine works with no more set-up.
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_invokd"))
        .args([
            "async-invoke",
            "create",
            "-m",
            "fal-ai/flux/schnell",
            "--prompt",
            "a lighthouse",
            "--wait",
            "-o",
            "json",
        ])
        .env("INVOKD_CONFIG", &server.client_config)
        .env_remove("INVOKD_ACCESS_TOKEN")
        .env_remove("INVOKD_API_URL")
        .output()
        .await
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let inv: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(inv["status"], "COMPLETED", "{inv}");

    // A second start on the same data prints no key, and the first key still works.
    server.kill().await;
    let mut server = TestServer::start_in(dir.path(), opts).await;
    assert!(
        printed_key(&server.stdout.lock().unwrap()).is_none(),
        "{}",
        server.stdout_text()
    );
    server.key = key;
    let job = server.create(&flux("again")).await;
    assert_eq!(
        server.wait(job["request_id"].as_str().unwrap()).await["status"],
        "COMPLETED"
    );
}

#[tokio::test]
async fn a_bootstrap_key_from_the_environment_is_used_and_not_printed() {
    let server = TestServer::start().await;
    assert!(!server.stdout_text().contains(support::KEY));
    assert!(printed_key(&server.stdout.lock().unwrap()).is_none());
    let job = server.create(&flux("from the environment")).await;
    assert_eq!(job["status"], "QUEUED");
}

#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let _first = TestServer::start_in(dir.path(), Options::default()).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_invokd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .output()
        .await
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("another invokd process is using the data directory"),
        "{err}"
    );
}

#[tokio::test]
async fn killing_the_server_loses_no_queued_or_running_job() {
    let dir = tempfile::tempdir().unwrap();
    // Slow and one at a time, so that when the server dies one job runs and the rest are queued.
    let slow = Options::default()
        .set("--emulator-latency-ms", "60000")
        .set("--max-concurrency", "1");
    let server = TestServer::start_in(dir.path(), slow).await;
    let mut ids = Vec::new();
    for i in 0..12 {
        let job = server.create(&flux(&format!("job {i}"))).await;
        ids.push(job["request_id"].as_str().unwrap().to_owned());
    }
    // Wait until one is running, then crash.
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(30);
    while server.get(&ids[0]).await["status"] != "IN_PROGRESS" {
        assert!(
            std::time::Instant::now() < deadline,
            "the first job never started"
        );
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    server.kill().await;

    let server = TestServer::start_in(dir.path(), Options::default()).await;
    for id in &ids {
        let done = server.wait(id).await;
        assert_eq!(done["status"], "COMPLETED", "{done}");
        let url = done["output"]["images"][0]["url"].as_str().unwrap();
        let (_, bytes) = server.download(url).await;
        assert!(!bytes.is_empty());
    }
    assert_eq!(server.stored_jobs().await, 12);
}

#[tokio::test]
async fn sigterm_stops_the_server_cleanly_and_queued_jobs_survive() {
    let dir = tempfile::tempdir().unwrap();
    let slow = Options::default()
        .set("--emulator-latency-ms", "60000")
        .set("--shutdown-grace-seconds", "1");
    let server = TestServer::start_in(dir.path(), slow).await;
    let job = server.create(&flux("survives shutdown")).await;
    let id = job["request_id"].as_str().unwrap();
    while server.get(id).await["status"] != "IN_PROGRESS" {
        tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    }
    let status = server.terminate().await;
    assert!(status.success(), "exit status {status}");

    let server = TestServer::start_in(dir.path(), Options::default()).await;
    let done = server.wait(id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
}
