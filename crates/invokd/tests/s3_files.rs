//! Output files in an S3-compatible bucket (`INVOKD_TEST_S3_URL`, started by `scripts/services`):
//! served through the gateway's signed URLs or as presigned bucket URLs, and deleted from the
//! bucket when the job's retention ends.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::json;
use support::{Options, TestServer};

fn s3_url() -> String {
    std::env::var("INVOKD_TEST_S3_URL").unwrap_or_else(|_| {
        panic!("INVOKD_TEST_S3_URL is not set: run `source scripts/services` first")
    })
}

async fn bucket() -> String {
    let name = format!("invokd-files-{:016x}", rand::random::<u64>());
    let res = reqwest::Client::new()
        .put(format!("{}/{name}", s3_url()))
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success());
    name
}

fn s3_options(bucket: &str) -> Options {
    Options::default()
        .set("--s3-bucket", bucket)
        .set("--s3-endpoint", s3_url())
        .set("--s3-prefix", "deployment-1")
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
}

async fn objects(bucket: &str) -> String {
    reqwest::get(format!("{}/{bucket}?list-type=2", s3_url()))
        .await
        .unwrap()
        .text()
        .await
        .unwrap()
}

#[tokio::test]
async fn outputs_live_in_the_bucket_behind_gateway_urls() {
    let bucket = bucket().await;
    let server = TestServer::start_with(s3_options(&bucket)).await;
    let inv = server
        .create(&json!({"model_id": "fal-ai/stable-audio-25/text-to-audio", "input": {"prompt": "techno", "seconds_total": 2}}))
        .await;
    let id = inv["request_id"].as_str().unwrap();
    let done = server.wait(id).await;
    assert_eq!(done["status"], "COMPLETED");
    let url = done["output"]["audio"]["url"].as_str().unwrap();
    assert!(url.starts_with(&server.url), "{url}");
    let (ct, bytes) = server.download(url).await;
    assert_eq!(ct, "audio/wav");
    assert_eq!(&bytes[..4], b"RIFF");
    // In the bucket under the prefix, not in the data directory.
    assert!(
        objects(&bucket)
            .await
            .contains(&format!("deployment-1/{id}/"))
    );
    assert_eq!(server.stored_files(), 0);
}

#[tokio::test]
async fn presigned_urls_point_at_the_bucket_and_expired_jobs_leave_it() {
    let bucket = bucket().await;
    let server = TestServer::start_with(
        s3_options(&bucket)
            .set("--file-urls", "presigned")
            .set("--retention-seconds", "1")
            .set("--janitor-interval-ms", "100"),
    )
    .await;
    let inv = server
        .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "a city", "image_size": "square"}}))
        .await;
    let id = inv["request_id"].as_str().unwrap().to_owned();
    let done = server.wait(&id).await;
    let url = done["output"]["images"][0]["url"].as_str().unwrap();
    assert!(url.starts_with(&s3_url()), "{url}");
    assert!(url.contains("X-Amz-Signature="), "{url}");
    let (_, bytes) = server.download(url).await;
    assert!(bytes.starts_with(&[0xFF, 0xD8]), "a JPEG");

    // Retention over: the janitor deletes the job's objects.
    let deadline = Instant::now() + Duration::from_secs(30);
    while objects(&bucket).await.contains(&id) {
        assert!(
            Instant::now() < deadline,
            "the job's files stayed in the bucket"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test]
async fn bad_s3_settings_stop_the_start_with_a_clear_message() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_invokd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args([
            "--s3-bucket",
            "no-such-bucket-here",
            "--s3-endpoint",
            &s3_url(),
        ])
        .env("AWS_ACCESS_KEY_ID", "testing")
        .env("AWS_SECRET_ACCESS_KEY", "testing")
        .env("INVOKD_CONFIG", dir.path().join("client.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("no-such-bucket-here"), "{err}");

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_invokd"))
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.path().join("data"))
        .args(["--file-urls", "presigned"])
        .env("INVOKD_CONFIG", dir.path().join("client.toml"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("presigned file URLs need S3"), "{err}");
}
