//! Real speech and remote workers: the gateway's local-speech provider against the real
//! espeak-ng, and the real `invokd worker` processes against a real gateway.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{process::Stdio, time::Duration};

use serde_json::{Value, json};
use support::{Options, TestServer, hook_receiver};

const SPEECH: &str = "fal-ai/elevenlabs/tts/multilingual-v2";

fn samples(wav: &[u8]) -> Vec<i16> {
    invokd_providers::speech::wav_samples(wav).expect("a 16-bit WAV file")
}

/// What espeak-ng itself makes of `text` (the text on stdin, as the provider gives it): run here
/// by hand, apart from the provider, as the oracle its output is held to.
fn espeak(text: &str, voice: &str, wpm: u32) -> Vec<i16> {
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("direct.wav");
    let mut child = std::process::Command::new("espeak-ng")
        .args(["-v", voice, "-s", &wpm.to_string(), "-w"])
        .arg(&out)
        .stdin(Stdio::piped())
        .spawn()
        .expect("espeak-ng is installed by scripts/fetch-tools");
    std::io::Write::write_all(&mut child.stdin.take().unwrap(), text.as_bytes()).unwrap();
    assert!(child.wait().unwrap().success());
    samples(&std::fs::read(out).unwrap())
}

/// A finished speech job, read through both surfaces: its WAV is espeak-ng's speech of `text`.
async fn assert_spoken(server: &TestServer, id: &str, text: &str, voice: &str, wpm: u32) {
    let job = server.wait(id).await;
    assert_eq!(job["status"], "COMPLETED", "{job}");
    let audio = &job["output"]["audio"];
    assert_eq!(audio["content_type"], "audio/wav", "{job}");
    let (ct, wav) = server.download(audio["url"].as_str().unwrap()).await;
    assert_eq!(ct, "audio/wav");
    assert_eq!(audio["file_size"], wav.len());
    let got = samples(&wav);
    assert_eq!(
        got,
        espeak(text, voice, wpm),
        "not espeak-ng's speech of the text"
    );
    // Speech, not silence: about a second of 22,050 Hz audio or more, and loud enough.
    assert!(got.len() > 22_050, "{} samples", got.len());
    assert!(got.iter().filter(|s| s.unsigned_abs() > 1000).count() > got.len() / 20);
    // fal's surface shows the same file.
    let resp = server
        .http
        .get(server.at(&format!("/fal-ai/elevenlabs/requests/{id}")))
        .header("authorization", format!("Key {}", server.key))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let fal: Value = resp.json().await.unwrap();
    let (_, fal_wav) = server.download(fal["audio"]["url"].as_str().unwrap()).await;
    assert_eq!(fal_wav, wav);
}

#[tokio::test]
async fn speech_runs_in_the_gateway_with_espeak_ng_and_no_worker() {
    let server = TestServer::start_with(
        Options::default()
            .arg("--routes")
            .arg("fal-ai/elevenlabs/*=local-speech"),
    )
    .await;
    let text = "Workers run the models on your own machines.";
    let job = server
        .create(
            &json!({"model_id": SPEECH, "input": {"text": text, "voice": "George", "speed": 1.2}}),
        )
        .await;
    let id = job["request_id"].as_str().unwrap();
    assert_spoken(&server, id, text, "en-gb+m3", 210).await;
    // Through fal's surface too.
    let resp = server
        .http
        .post(server.at(&format!("/{SPEECH}")))
        .header("authorization", format!("Key {}", server.key))
        .json(&json!({"text": "Hello from the fal surface."}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 200);
    let id = resp.json::<Value>().await.unwrap()["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    assert_spoken(&server, &id, "Hello from the fal surface.", "en-us+f1", 175).await;
}

#[tokio::test]
async fn a_route_to_local_speech_without_espeak_ng_stops_the_start() {
    let dir = tempfile::tempdir().unwrap();
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_invokd"))
        .args([
            "serve",
            "--listen",
            "127.0.0.1:0",
            "--routes",
            "fal-ai/elevenlabs/*=local-speech",
        ])
        .arg("--data-dir")
        .arg(dir.path().join("data"))
        .env("PATH", dir.path())
        .env("INVOKD_CONFIG", dir.path().join("client.toml"))
        .env("INVOKD_BOOTSTRAP_KEY", support::KEY)
        .stdin(Stdio::null())
        .output();
    let out = tokio::time::timeout(Duration::from_secs(30), out)
        .await
        .unwrap()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(stderr.contains("apt-get install espeak-ng"), "{stderr}");
}

// ---------------------------------------------------------------------------------------------
// Real `invokd worker` processes against a real gateway.

/// A running `invokd worker`; killed when dropped.
struct Worker {
    child: tokio::process::Child,
    log: std::path::PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    /// Starts `invokd worker` for `server` with `token` and `args`, and waits until it runs.
    async fn start(server: &TestServer, token: &str, args: &[&str]) -> Self {
        use tokio::io::AsyncBufReadExt;
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_invokd"))
            .args(["worker", "--api-url", &server.url, "--token", token])
            .args(["--take-wait-ms", "1000", "--log-format", "json"])
            .args(args)
            .env("INVOKD_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(&log).unwrap())
            .kill_on_drop(true)
            .spawn()
            .unwrap();
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let first = tokio::time::timeout(Duration::from_secs(30), lines.next_line())
            .await
            .expect("the worker did not start within 30 s")
            .unwrap();
        assert!(
            first.as_deref().is_some_and(|l| l.contains("running")),
            "{first:?}: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The jobs it started, in order (its "running a job" lines).
    fn ran(&self) -> Vec<String> {
        self.log()
            .lines()
            .filter_map(|l| serde_json::from_str::<Value>(l).ok())
            .filter(|l| l["message"] == "running a job")
            .filter_map(|l| l["job_id"].as_str().map(str::to_owned))
            .collect()
    }

    fn signal(&self, sig: &str) {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args([sig, &pid.to_string()])
            .status()
            .unwrap();
        assert!(status.success());
    }

    async fn exit(self) -> std::process::ExitStatus {
        self.exit_with_log().await.0
    }

    /// Stops it with SIGTERM; its exit status and what it logged.
    async fn exit_after_stop(self) -> (std::process::ExitStatus, String) {
        self.signal("-TERM");
        self.exit_with_log().await
    }

    /// Its exit status and what it logged.
    async fn exit_with_log(mut self) -> (std::process::ExitStatus, String) {
        let status = tokio::time::timeout(Duration::from_secs(60), self.child.wait())
            .await
            .expect("the worker did not stop")
            .unwrap();
        (status, self.log())
    }
}

/// A worker token for `models`, made through the admin API.
async fn worker_token(server: &TestServer, models: &[&str]) -> String {
    worker_token_with(server, &server.admin_token(), models).await
}

async fn worker_token_with(server: &TestServer, admin: &str, models: &[&str]) -> String {
    let resp = server
        .http
        .post(server.at("/v1/admin/worker-tokens"))
        .bearer_auth(admin)
        .json(&json!({"name": "test", "models": models}))
        .send()
        .await
        .unwrap();
    let status = resp.status();
    let body: Value = resp.json().await.unwrap();
    assert!(status.is_success(), "{status}: {body}");
    body["token"].as_str().unwrap().to_owned()
}

/// Polls the job's status until `want` (at most `secs` seconds).
async fn until_status(server: &TestServer, id: &str, want: &str, secs: u64) -> Value {
    let deadline = std::time::Instant::now() + Duration::from_secs(secs);
    loop {
        let job = server.get(id).await;
        if job["status"] == want {
            return job;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "{id} not {want} within {secs} s: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A gateway whose speech models workers run, and a worker token for them.
async fn speech_for_workers() -> (TestServer, String) {
    let server = TestServer::start_with(
        Options::default()
            .arg("--routes")
            .arg("fal-ai/elevenlabs/*=workers"),
    )
    .await;
    let token = worker_token(&server, &["fal-ai/elevenlabs/*"]).await;
    (server, token)
}

#[tokio::test]
async fn speech_through_a_worker_is_espeak_ngs_on_both_surfaces() {
    let (server, token) = speech_for_workers().await;
    let _worker = Worker::start(&server, &token, &["--backend", "speech"]).await;
    let text = "A worker spoke this sentence.";
    let job = server
        .create(&json!({"model_id": SPEECH, "input": {"text": text, "voice": "Aria"}}))
        .await;
    let id = job["request_id"].as_str().unwrap();
    assert_spoken(&server, id, text, "en-us+f2", 175).await;
}

fn workers_server() -> Options {
    Options::default()
        .arg("--routes")
        .arg("fal-ai/flux/schnell=workers")
        .set("--lease-seconds", "3")
        .set("--webhook-backoff-base-ms", "100")
        .arg("--allow-private-urls")
}

#[tokio::test]
async fn a_job_of_a_killed_worker_is_finished_by_another_once() {
    let server = TestServer::start_with(workers_server()).await;
    let token = worker_token(&server, &["fal-ai/flux/schnell"]).await;
    let (hook, hooks) = hook_receiver().await;
    let slow = Worker::start(
        &server,
        &token,
        &["--backend", "emulator", "--emulator-latency-ms", "60000"],
    )
    .await;
    let job = server
        .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "a city"}, "webhook_url": hook}))
        .await;
    let id = job["request_id"].as_str().unwrap().to_owned();
    until_status(&server, &id, "IN_PROGRESS", 30).await;
    slow.signal("-KILL");
    slow.exit().await;
    let second = Worker::start(
        &server,
        &token,
        &["--backend", "emulator", "--emulator-latency-ms", "0"],
    )
    .await;
    let done = until_status(&server, &id, "COMPLETED", 60).await;
    assert!(
        done["output"]["images"][0]["url"]
            .as_str()
            .unwrap()
            .contains("/files/")
    );
    assert_eq!(second.ran(), vec![id.clone()]);
    // One webhook, for the one end; a late duplicate would come within a few seconds.
    let deadline = std::time::Instant::now() + Duration::from_secs(20);
    let received = || hooks.lock().unwrap().get(&id).map_or(0, Vec::len);
    while received() == 0 {
        assert!(std::time::Instant::now() < deadline, "no webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(received(), 1);
}

#[tokio::test]
async fn a_cancel_reaches_a_running_worker_within_a_heartbeat() {
    let server = TestServer::start_with(workers_server()).await;
    let token = worker_token(&server, &["fal-ai/flux/schnell"]).await;
    let worker = Worker::start(
        &server,
        &token,
        &["--backend", "emulator", "--emulator-latency-ms", "60000"],
    )
    .await;
    let job = server
        .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "a city"}}))
        .await;
    let id = job["request_id"].as_str().unwrap().to_owned();
    until_status(&server, &id, "IN_PROGRESS", 30).await;
    let resp = server
        .http
        .post(server.at(&format!("/v1/async-invoke/{id}/cancel")))
        .bearer_auth(&server.key)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let asked = std::time::Instant::now();
    // A heartbeat is a third of the 3 s lease; CANCELED well within the lease.
    until_status(&server, &id, "CANCELED", 30).await;
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    assert!(
        worker.log().contains("cancel was asked"),
        "{}",
        worker.log()
    );
}

#[tokio::test]
async fn sigterm_hands_running_jobs_back_without_using_an_attempt() {
    // One attempt per job: a hand-back that used it would fail the job.
    let server = TestServer::start_with(workers_server().set("--max-attempts", "1")).await;
    let token = worker_token(&server, &["fal-ai/flux/schnell"]).await;
    let worker = Worker::start(
        &server,
        &token,
        &[
            "--backend",
            "emulator",
            "--emulator-latency-ms",
            "60000",
            "--grace",
            "1",
        ],
    )
    .await;
    let job = server
        .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "a city"}}))
        .await;
    let id = job["request_id"].as_str().unwrap().to_owned();
    until_status(&server, &id, "IN_PROGRESS", 30).await;
    worker.signal("-TERM");
    let status = worker.exit().await;
    assert!(status.success(), "{status}");
    until_status(&server, &id, "QUEUED", 5).await;
    let _next = Worker::start(
        &server,
        &token,
        &["--backend", "emulator", "--emulator-latency-ms", "0"],
    )
    .await;
    until_status(&server, &id, "COMPLETED", 30).await;
}

#[tokio::test]
async fn a_command_worker_runs_a_program_per_job() {
    let (server, token) = speech_for_workers().await;
    let dir = tempfile::tempdir().unwrap();
    let config = dir.path().join("worker.toml");
    // The program reads the input on stdin, logs on stderr, writes its file to the output
    // directory and names it in the result by its name.
    let program = "import json, os, subprocess, sys\n\
                   job = json.load(sys.stdin)\n\
                   print('speaking', len(job['text']), 'characters', file=sys.stderr)\n\
                   out = os.path.join(os.environ['INVOKD_OUTPUT_DIR'], 'speech.wav')\n\
                   subprocess.run(['espeak-ng', '-v', 'en-us', '-s', '175', '-w', out], input=job['text'].encode(), check=True)\n\
                   print(json.dumps({'audio': {'url': 'speech.wav'}, 'timestamps': None}))\n";
    std::fs::write(
        &config,
        format!(
            "[[models]]\npattern = \"fal-ai/elevenlabs/*\"\ncommand = [\"python3\", \"-c\", {}]\n",
            serde_json::to_string(program).unwrap()
        ),
    )
    .unwrap();
    let _worker = Worker::start(
        &server,
        &token,
        &["--backend", "command", "--config", config.to_str().unwrap()],
    )
    .await;
    let text = "A program spoke this.";
    let job = server
        .create(&json!({"model_id": SPEECH, "input": {"text": text}}))
        .await;
    let id = job["request_id"].as_str().unwrap();
    assert_spoken(&server, id, text, "en-us", 175).await;
    let done = server.get(id).await;
    assert_eq!(done["output"]["audio"]["file_name"], "speech.wav");
}

#[tokio::test]
async fn two_workers_on_two_postgresql_replicas_share_one_queue() {
    use sqlx::Connection;
    let admin_url = std::env::var("INVOKD_TEST_DATABASE_URL")
        .expect("INVOKD_TEST_DATABASE_URL is not set: run `source scripts/services` first");
    let database = format!("invokd_workers_{:012x}", rand::random::<u64>() >> 16);
    let mut conn = sqlx::PgConnection::connect(&admin_url).await.unwrap();
    sqlx::raw_sql(&format!("CREATE DATABASE {database}"))
        .execute(&mut conn)
        .await
        .unwrap();
    let mut url = url::Url::parse(&admin_url).unwrap();
    url.set_path(&database);
    const ADMIN: &str = "invadm_workers_test_admin_token_0123456789";
    let options = workers_server()
        .set("--database-url", url.as_str())
        .env("INVOKD_ADMIN_TOKEN", ADMIN);
    let (a, b) = tokio::join!(
        TestServer::start_with(options.clone()),
        TestServer::start_with(options)
    );
    // The token is in the shared store: good on either replica.
    let token = worker_token_with(&a, ADMIN, &["fal-ai/flux/schnell"]).await;
    let fast = [
        "--backend",
        "emulator",
        "--emulator-latency-ms",
        "20",
        "--slots",
        "4",
    ];
    let (wa, wb) = tokio::join!(
        Worker::start(&a, &token, &fast),
        Worker::start(&b, &token, &fast)
    );
    let mut ids = Vec::new();
    for n in 0..60 {
        let server = if n % 2 == 0 { &a } else { &b };
        let job = server
            .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": format!("job {n}"), "image_size": "square"}}))
            .await;
        ids.push(job["request_id"].as_str().unwrap().to_owned());
    }
    for id in &ids {
        assert_eq!(a.wait(id).await["status"], "COMPLETED");
    }
    let mut ran = wa.ran();
    let (from_a, from_b) = (ran.len(), wb.ran().len());
    ran.extend(wb.ran());
    ran.sort();
    let taken = ran.len();
    ran.dedup();
    assert_eq!(taken, ran.len(), "a job was taken twice");
    assert_eq!(taken, ids.len());
    assert!(
        from_a > 0 && from_b > 0,
        "{from_a} and {from_b}: one queue, both workers"
    );
    drop((wa, wb, a, b));
    sqlx::raw_sql(&format!("DROP DATABASE IF EXISTS {database} WITH (FORCE)"))
        .execute(&mut conn)
        .await
        .unwrap();
}

#[tokio::test]
async fn with_a_bucket_a_worker_puts_its_files_straight_into_it() {
    let s3 = std::env::var("INVOKD_TEST_S3_URL")
        .expect("INVOKD_TEST_S3_URL is not set: run `source scripts/services` first");
    let bucket = format!("invokd-workers-{:016x}", rand::random::<u64>());
    let made = reqwest::Client::new()
        .put(format!("{s3}/{bucket}"))
        .send()
        .await
        .unwrap();
    assert!(made.status().is_success());
    let server = TestServer::start_with(
        Options::default()
            .arg("--routes")
            .arg("fal-ai/elevenlabs/*=workers")
            .set("--s3-bucket", &bucket)
            .set("--s3-endpoint", &s3)
            .env("AWS_ACCESS_KEY_ID", "testing")
            .env("AWS_SECRET_ACCESS_KEY", "testing"),
    )
    .await;
    let token = worker_token(&server, &["fal-ai/elevenlabs/*"]).await;
    let worker = Worker::start(&server, &token, &["--backend", "speech"]).await;
    let text = "Straight into the bucket.";
    let job = server
        .create(&json!({"model_id": SPEECH, "input": {"text": text}}))
        .await;
    let id = job["request_id"].as_str().unwrap();
    assert_spoken(&server, id, text, "en-us+f1", 175).await;
    // The object is in the bucket, put there by the worker's presigned PUT.
    let listed = reqwest::get(format!("{s3}/{bucket}?list-type=2"))
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(listed.contains(&format!("{id}/1")), "{listed}");
    let stored: Vec<Value> = worker
        .log()
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter(|l| l["message"] == "output file stored")
        .collect();
    assert_eq!(stored.len(), 1, "{}", worker.log());
    assert_eq!(stored[0]["presigned"], true);
}

#[tokio::test]
async fn a_worker_fetches_input_files_from_its_gateway() {
    // No --allow-private-urls: the gateway is on 127.0.0.1, which a worker trusts for its own
    // gateway's files alone.
    let server = TestServer::start_with(
        Options::default()
            .arg("--routes")
            .arg("fal-ai/omnigen-v2=workers"),
    )
    .await;
    let token = worker_token(&server, &["fal-ai/omnigen-v2"]).await;
    let _worker = Worker::start(
        &server,
        &token,
        &["--backend", "emulator", "--emulator-latency-ms", "0"],
    )
    .await;
    // An image made by the gateway itself, named by its signed URL.
    let first = server
        .create(&json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "a city", "image_size": "square"}}))
        .await;
    let first = server.wait(first["request_id"].as_str().unwrap()).await;
    let image = first["output"]["images"][0]["url"].as_str().unwrap();
    let (_, bytes) = server.download(image).await;
    let job = server
        .create(&json!({"model_id": "fal-ai/omnigen-v2", "input": {"prompt": "edit it", "input_image_urls": [image]}}))
        .await;
    let id = job["request_id"].as_str().unwrap();
    let done = server.wait(id).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let resp = server
        .http
        .get(server.at(&format!("/fal-ai/omnigen-v2/requests/{id}/status?logs=1")))
        .header("authorization", format!("Key {}", server.key))
        .send()
        .await
        .unwrap();
    let status: Value = resp.json().await.unwrap();
    let read = format!("read 1 input file(s), {} bytes", bytes.len());
    assert!(
        status["logs"]
            .as_array()
            .unwrap()
            .iter()
            .any(|l| l["message"].as_str().unwrap().contains(&read)),
        "{status}"
    );
}

#[tokio::test]
async fn a_worker_whose_token_is_revoked_or_whose_models_are_not_its_tokens_stops() {
    let server = TestServer::start_with(workers_server()).await;
    let admin = server.admin_token();
    let resp = server
        .http
        .post(server.at("/v1/admin/worker-tokens"))
        .bearer_auth(&admin)
        .json(&json!({"name": "revoked", "models": ["fal-ai/flux/schnell"]}))
        .send()
        .await
        .unwrap();
    let made: Value = resp.json().await.unwrap();
    let token = made["token"].as_str().unwrap();
    // Models outside the token's: refused at its first take.
    let outside = Worker::start(
        &server,
        token,
        &["--backend", "emulator", "--models", "fal-ai/fast-sdxl"],
    )
    .await;
    let (status, said) = outside.exit_with_log().await;
    assert_eq!(status.code(), Some(1), "{status}");
    assert!(said.contains("refused"), "{said}");
    // A revoked token: refused at its next take.
    let worker = Worker::start(&server, token, &["--backend", "emulator"]).await;
    let resp = server
        .http
        .delete(server.at(&format!(
            "/v1/admin/worker-tokens/{}",
            made["id"].as_str().unwrap()
        )))
        .bearer_auth(&admin)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let status = worker.exit().await;
    assert_eq!(status.code(), Some(1), "{status}");
}

#[tokio::test]
async fn a_streaming_models_previews_go_to_the_gateway_as_partial_outputs() {
    let model = "fal-ai/hidream-i1-fast";
    let server = TestServer::start_with(
        Options::default()
            .arg("--routes")
            .arg(format!("{model}=workers")),
    )
    .await;
    let token = worker_token(&server, &[model]).await;
    let worker = Worker::start(
        &server,
        &token,
        &["--backend", "emulator", "--emulator-latency-ms", "400"],
    )
    .await;
    let job = server
        .create(&json!({"model_id": model, "input": {"prompt": "a city", "image_size": "square"}}))
        .await;
    let done = server.wait(job["request_id"].as_str().unwrap()).await;
    assert_eq!(done["status"], "COMPLETED", "{done}");
    let (status, log) = worker.exit_after_stop().await;
    assert!(status.success());
    let lines: Vec<Value> = log
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .collect();
    // Each preview's file stored, then the final image; every partial taken by the gateway.
    let stored: Vec<&str> = lines
        .iter()
        .filter(|l| l["message"] == "output file stored")
        .filter_map(|l| l["file"].as_str())
        .collect();
    assert!(
        stored.iter().filter(|f| f.starts_with("preview-")).count() >= 3,
        "{stored:?}"
    );
    assert!(
        !lines
            .iter()
            .any(|l| l["message"] == "sending a partial output failed"),
        "{log}"
    );
}
