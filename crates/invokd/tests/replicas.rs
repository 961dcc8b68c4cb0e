//! Several replicas on one PostgreSQL database and one S3 bucket, as a scale-out deployment runs
//! them: jobs submitted round-robin, one replica killed with SIGKILL under load, and every job
//! readable, streamable, waitable and cancellable through any replica.
//!
//! Needs `INVOKD_TEST_DATABASE_URL` (a PostgreSQL server; each test makes a database of its own)
//! and `INVOKD_TEST_S3_URL` (an S3-compatible server); `scripts/services` provides both.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    collections::HashMap,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use sqlx::Connection;
use support::{Options, TestServer, hook_receiver};

fn env_or_panic(name: &str) -> String {
    std::env::var(name).unwrap_or_else(|_| {
        panic!("{name} is not set: run `source scripts/services` first (PostgreSQL and an S3-compatible server)")
    })
}

/// A database and a bucket of the test's own, dropped at the end.
struct Shared {
    admin_url: String,
    database: String,
    database_url: String,
    s3_url: String,
    bucket: String,
}

impl Shared {
    async fn new() -> Self {
        let admin_url = env_or_panic("INVOKD_TEST_DATABASE_URL");
        let s3_url = env_or_panic("INVOKD_TEST_S3_URL");
        let suffix = format!("{:012x}", rand::random::<u64>() >> 16);
        let database = format!("invokd_replicas_{suffix}");
        let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        let mut database_url = url::Url::parse(&admin_url).unwrap();
        database_url.set_path(&database);
        let bucket = format!("invokd-replicas-{suffix}");
        let res = reqwest::Client::new()
            .put(format!("{s3_url}/{bucket}"))
            .send()
            .await
            .unwrap();
        assert!(res.status().is_success(), "cannot create the bucket");
        Self {
            admin_url,
            database,
            database_url: database_url.to_string(),
            s3_url,
            bucket,
        }
    }

    /// A replica's options: the shared database and bucket, short leases so a dead replica's
    /// jobs come back quickly.
    fn options(&self, extra: &[&str]) -> Options {
        let mut o = Options::default()
            .set("--database-url", &self.database_url)
            .set("--s3-bucket", &self.bucket)
            .set("--s3-endpoint", &self.s3_url)
            .set("--lease-seconds", "2")
            .set("--emulator-latency-ms", "150")
            .set("--webhook-backoff-base-ms", "100")
            .arg("--allow-private-urls")
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing");
        for pair in extra.chunks(2) {
            o = o.set(pair[0], pair[1]);
        }
        o
    }

    async fn replicas(&self, n: usize, extra: &[&str]) -> Vec<TestServer> {
        let starts = (0..n).map(|_| TestServer::start_with(self.options(extra)));
        // Started together: migrations, secrets and the first key must cope with the race.
        futures::future::join_all(starts).await
    }

    async fn drop_database(&self) {
        let mut conn = sqlx::PgConnection::connect(&self.admin_url).await.unwrap();
        sqlx::raw_sql(&format!(
            "DROP DATABASE IF EXISTS {} WITH (FORCE)",
            self.database
        ))
        .execute(&mut conn)
        .await
        .unwrap();
    }
}

fn job(n: usize, webhook: &str) -> Value {
    json!({
        "model_id": "fal-ai/flux/schnell",
        "input": {"prompt": format!("replica job {n}"), "image_size": "square", "seed": n},
        "webhook_url": webhook,
    })
}

/// The path of a file URL: the same file whichever replica signed the URL.
fn path_of(url: &str) -> String {
    url::Url::parse(url).unwrap().path().to_owned()
}

/// The output's file paths.
fn files(inv: &Value) -> Vec<String> {
    inv["output"]["images"]
        .as_array()
        .unwrap()
        .iter()
        .map(|i| path_of(i["url"].as_str().unwrap()))
        .collect()
}

/// The same file URL, asked of another replica.
fn on(server: &TestServer, url: &str) -> String {
    let u = url::Url::parse(url).unwrap();
    format!("{}{}?{}", server.url, u.path(), u.query().unwrap_or(""))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_replica_killed_under_load_loses_nothing_and_finishes_nothing_twice() {
    let shared = Shared::new().await;
    let (hook_url, hooks) = hook_receiver().await;
    let mut replicas = shared.replicas(3, &[]).await;

    // Round-robin submissions; the victim dies a third of the way through.
    const JOBS: usize = 90;
    let mut acked: Vec<String> = Vec::new();
    let mut refused = 0;
    let victim = replicas.remove(1);
    let mut victim = Some(victim);
    for n in 0..JOBS {
        if n == JOBS / 3 {
            victim.take().unwrap().kill().await;
        }
        let target = match n % 3 {
            0 => &replicas[0],
            2 => &replicas[1],
            _ => match &victim {
                Some(v) => v,
                None => {
                    refused += 1;
                    continue;
                }
            },
        };
        let inv = target.create(&job(n, &hook_url)).await;
        acked.push(inv["request_id"].as_str().unwrap().to_owned());
    }
    assert_eq!(acked.len() + refused, JOBS);

    // Every acknowledged job completes, read through either survivor.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut done = HashMap::new();
    for (i, id) in acked.iter().enumerate() {
        let reader = &replicas[i % 2];
        loop {
            let inv = reader.get(id).await;
            match inv["status"].as_str().unwrap() {
                "COMPLETED" => {
                    done.insert(id.clone(), inv);
                    break;
                }
                "QUEUED" | "IN_PROGRESS" => {}
                other => panic!("{id} ended {other}: {inv}"),
            }
            assert!(Instant::now() < deadline, "{id} not done: {inv}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    // The same output through every replica, and its files readable from every replica.
    for (id, inv) in &done {
        let other = replicas[1].get(id).await;
        assert_eq!(files(inv), files(&other), "{id}: replicas disagree");
        let url = inv["output"]["images"][0]["url"].as_str().unwrap();
        for r in &replicas {
            let (ct, bytes) = r.download(&on(r, url)).await;
            assert_eq!(ct, "image/jpeg");
            assert!(bytes.starts_with(&[0xFF, 0xD8]), "{id}: not a JPEG");
        }
    }

    // One webhook per job; a second one (a delivery cut off by the kill between the receiver's
    // answer and its record) carries the same output: no job was finished twice.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let missing = acked
            .iter()
            .filter(|id| !hooks.lock().unwrap().contains_key(*id))
            .count();
        if missing == 0 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "{missing} webhooks never arrived"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    tokio::time::sleep(Duration::from_secs(1)).await;
    let hooks = hooks.lock().unwrap().clone();
    let mut repeated = 0;
    for id in &acked {
        let got = &hooks[id];
        assert!(got.iter().all(|h| h["status"] == "OK"), "{id}: {got:?}");
        let first: Vec<String> = got[0]["payload"]["images"]
            .as_array()
            .unwrap()
            .iter()
            .map(|i| path_of(i["url"].as_str().unwrap()))
            .collect();
        assert_eq!(first, files(&done[id]), "{id}: webhook output differs");
        for h in &got[1..] {
            repeated += 1;
            assert_eq!(h["payload"]["images"], got[0]["payload"]["images"]);
        }
    }
    assert_eq!(hooks.len(), acked.len(), "webhooks for unknown jobs");
    eprintln!(
        "replicas: {} jobs acknowledged, {refused} refused by the killed replica, all completed; {repeated} repeated webhook deliveries",
        acked.len()
    );
    assert!(repeated <= 4, "{repeated} repeated deliveries");
    drop(replicas);
    shared.drop_database().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn any_replica_reads_streams_waits_and_cancels_any_job() {
    let shared = Shared::new().await;
    let slow = "fal-ai/hidream-i1-fast";
    let replicas = shared
        .replicas(3, &["--emulator-model-latency", &format!("{slow}=60000")])
        .await;
    let [a, b, c] = &replicas[..] else {
        unreachable!()
    };

    // Submitted to A, its live events read from B end with the completion.
    let inv = a
        .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "stream me"}}))
        .await;
    let id = inv["request_id"].as_str().unwrap();
    let events = b
        .http
        .get(b.at(&format!("/v1/async-invoke/{id}/events")))
        .bearer_auth(&b.key)
        .send()
        .await
        .unwrap();
    assert_eq!(events.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(30), events.text())
        .await
        .expect("the stream on B did not end")
        .unwrap();
    assert!(text.contains("COMPLETED"), "{text}");
    // And waited on through C.
    let waited = c.wait(id).await;
    assert_eq!(waited["status"], "COMPLETED");

    // A stream through B ends with the output wherever the job ran; the previews come with it
    // only from the replica that runs it (all three, kept for a late reader), so 1 or 4 events.
    let streamed = b
        .http
        .post(b.at("/fal-ai/hidream-i1-full/stream"))
        .header("authorization", format!("Key {}", b.key))
        .json(&json!({"prompt": "streamed", "image_size": "square"}))
        .send()
        .await
        .unwrap();
    assert_eq!(streamed.status(), 200);
    let text = tokio::time::timeout(Duration::from_secs(30), streamed.text())
        .await
        .expect("the stream on B did not end")
        .unwrap();
    let outputs: Vec<Value> = text
        .lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .map(|d| serde_json::from_str(d.trim()).unwrap())
        .collect();
    assert!(matches!(outputs.len(), 1 | 4), "{text}");
    let last = outputs.last().unwrap();
    assert_eq!(last["prompt"], "streamed");
    assert_eq!(last["images"][0]["width"], 512, "{last}");

    // A running job on whichever replica took it, cancelled through another.
    let slow_job = a
        .create(&json!({"model_id": slow, "input": {"prompt": "cancel me"}}))
        .await;
    let id = slow_job["request_id"].as_str().unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    while b.get(id).await["status"] != "IN_PROGRESS" {
        assert!(Instant::now() < deadline, "the slow job never started");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let res = c
        .http
        .post(c.at(&format!("/v1/async-invoke/{id}/cancel")))
        .bearer_auth(&c.key)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.text().await.unwrap());
    let started = Instant::now();
    let ended = b.wait(id).await;
    assert_eq!(ended["status"], "CANCELED", "{ended}");
    assert!(
        started.elapsed() < Duration::from_secs(15),
        "the cancel took {:?} to reach the running replica",
        started.elapsed()
    );
    drop(replicas);
    shared.drop_database().await;
}

#[tokio::test]
async fn migrate_prepares_a_database_before_any_replica_starts() {
    let shared = Shared::new().await;
    for _ in 0..2 {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_invokd"))
            .args(["migrate", "--database-url", &shared.database_url])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    let mut conn = sqlx::PgConnection::connect(&shared.database_url)
        .await
        .unwrap();
    let tables: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM information_schema.tables WHERE table_name IN ('jobs', 'keys', 'settings')",
    )
    .fetch_one(&mut conn)
    .await
    .unwrap();
    assert_eq!(tables, 3);
    conn.close().await.unwrap();

    let out = std::process::Command::new(env!("CARGO_BIN_EXE_invokd"))
        .args(["migrate", "--database-url", "mysql://nope"])
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("postgres://"));
    shared.drop_database().await;
}
