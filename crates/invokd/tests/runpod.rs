//! RunPod's worker protocol against the real gateway: the unmodified example handler
//! (examples/runpod-worker) run by the real `runpod` SDK 1.12.0 from the pinned virtual
//! environment (scripts/fetch-tools runpod), pointed at the gateway only by the environment
//! `invokd workers runpod-env` prints; and the protocol spoken by hand where a test needs its
//! exact timing (a late job-done of a superseded attempt).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::{
    path::PathBuf,
    process::Stdio,
    time::{Duration, Instant},
};

use serde_json::{Value, json};
use support::{Options, TestServer, hook_receiver};

const MODEL: &str = "fal-ai/flux/schnell";

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../..")
}

fn python() -> PathBuf {
    let p = repo().join("target/runpod-venv/bin/python");
    assert!(
        p.exists(),
        "{} is missing: run scripts/fetch-tools runpod",
        p.display()
    );
    p
}

/// A gateway that routes the model to workers, with a 3 s lease.
async fn server() -> TestServer {
    TestServer::start_with(
        Options::default()
            .arg("--routes")
            .arg(format!("{MODEL}=workers"))
            .set("--lease-seconds", "3")
            .set("--webhook-backoff-base-ms", "100")
            .arg("--allow-private-urls"),
    )
    .await
}

/// A worker token for the model, made with the CLI.
async fn token(s: &TestServer) -> String {
    let out = s
        .cli(&[
            "workers", "token", "create", "--name", "rp", "--models", MODEL, "-o", "json",
        ])
        .await;
    out.ok();
    out.json()["token"].as_str().unwrap().to_owned()
}

/// The example handler run by the runpod SDK, in a process group of its own (the SDK pings
/// from a child process, which a kill must take down too).
struct Worker {
    child: tokio::process::Child,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Worker {
    async fn start(s: &TestServer, token: &str, pod: &str, env: &[(&str, &str)]) -> Self {
        let out = s
            .cli(&[
                "workers",
                "runpod-env",
                "--token",
                token,
                "--models",
                MODEL,
                "--pod-id",
                pod,
                "--ping-interval-ms",
                "1000",
                "-o",
                "json",
            ])
            .await;
        out.ok();
        let vars = out.json();
        let dir = tempfile::tempdir().unwrap();
        let log = dir.path().join("worker.log");
        let mut cmd = tokio::process::Command::new(python());
        cmd.arg(repo().join("examples/runpod-worker/handler.py"))
            .env("RUNPOD_LOG_LEVEL", "DEBUG")
            .env("PYTHONUNBUFFERED", "1")
            .stdin(Stdio::null())
            .stdout(std::fs::File::create(&log).unwrap())
            .stderr(std::fs::File::create(dir.path().join("worker.err")).unwrap())
            .process_group(0)
            .kill_on_drop(true);
        for (k, v) in vars.as_object().unwrap() {
            cmd.env(k, v.as_str().unwrap());
        }
        for (k, v) in env {
            cmd.env(k, v);
        }
        let child = cmd.spawn().unwrap();
        Self {
            child,
            log,
            _dir: dir,
        }
    }

    fn log(&self) -> String {
        let err = self.log.with_file_name("worker.err");
        format!(
            "{}{}",
            std::fs::read_to_string(&self.log).unwrap_or_default(),
            std::fs::read_to_string(err).unwrap_or_default()
        )
    }

    /// SIGKILL to the whole group: the handler's process and its ping process.
    async fn kill(mut self) {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .args(["-s", "KILL", "--", &format!("-{pid}")])
            .status()
            .unwrap();
        assert!(status.success());
        self.child.wait().await.unwrap();
    }
}

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(pid) = self.child.id() {
            let _ = std::process::Command::new("kill")
                .args(["-s", "KILL", "--", &format!("-{pid}")])
                .status();
        }
    }
}

async fn until_status(s: &TestServer, id: &str, want: &str, secs: u64) -> Value {
    let deadline = Instant::now() + Duration::from_secs(secs);
    loop {
        let job = s.get(id).await;
        if job["status"] == want {
            return job;
        }
        assert!(
            Instant::now() < deadline,
            "{id} not {want} within {secs} s: {job}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

async fn fal(s: &TestServer, method: reqwest::Method, path: &str, body: Option<Value>) -> Value {
    let mut req = s
        .http
        .request(method, s.at(path))
        .header("authorization", format!("Key {}", s.key));
    if let Some(b) = body {
        req = req.json(&b);
    }
    let resp = req.send().await.unwrap();
    assert!(resp.status().is_success(), "{path}: {}", resp.status());
    resp.json().await.unwrap()
}

/// Downloads an image the output names and decodes it: (width, height, format).
async fn decoded(s: &TestServer, image: &Value) -> (u32, u32, image::ImageFormat) {
    let (ct, bytes) = s.download(image["url"].as_str().unwrap()).await;
    assert_eq!(ct, image["content_type"].as_str().unwrap());
    assert_eq!(image["file_size"], bytes.len());
    let format = image::guess_format(&bytes).unwrap();
    let img = image::load_from_memory(&bytes).unwrap();
    (img.width(), img.height(), format)
}

#[tokio::test]
async fn the_example_handler_makes_real_images_on_both_surfaces_with_progress_and_logs() {
    let s = server().await;
    let token = token(&s).await;
    let worker = Worker::start(&s, &token, "rp-a", &[("STEP_SECONDS", "0.25")]).await;
    let job = s
        .create(&json!({"model_id": MODEL, "input": {
            "prompt": "A lighthouse at dawn", "image_size": "square", "num_images": 2,
            "output_format": "png", "seed": 7, "num_inference_steps": 12}}))
        .await;
    let id = job["request_id"].as_str().unwrap().to_owned();
    // While it runs (3 s of steps): progress lines in its logs, through fal's status.
    let deadline = Instant::now() + Duration::from_secs(60);
    let seen_running = loop {
        let st = fal(
            &s,
            reqwest::Method::GET,
            &format!("/fal-ai/flux/requests/{id}/status?logs=1"),
            None,
        )
        .await;
        if st["status"] == "IN_PROGRESS" && st.to_string().contains("step 2 of 12") {
            break st;
        }
        assert!(
            st["status"] != "COMPLETED" && Instant::now() < deadline,
            "no progress seen while running: {st}\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    assert!(seen_running.to_string().contains("image 1 of 2"));
    let done = until_status(&s, &id, "COMPLETED", 60).await;
    let out = &done["output"];
    assert_eq!(out["seed"], 7);
    assert_eq!(out["prompt"], "A lighthouse at dawn");
    assert_eq!(out["has_nsfw_concepts"], json!([false, false]));
    let images = out["images"].as_array().unwrap();
    assert_eq!(images.len(), 2, "{done}");
    for image in images {
        assert_eq!(image["content_type"], "image/png");
        assert_eq!(
            (image["width"].as_u64(), image["height"].as_u64()),
            (Some(512), Some(512))
        );
        assert!(
            image["url"].as_str().unwrap().contains("/files/"),
            "{image}"
        );
        assert_eq!(
            decoded(&s, image).await,
            (512, 512, image::ImageFormat::Png)
        );
    }
    // The same seed draws the same picture: the second image's seed is 8, so it differs.
    let (_, a) = s.download(images[0]["url"].as_str().unwrap()).await;
    let (_, b) = s.download(images[1]["url"].as_str().unwrap()).await;
    assert_ne!(a, b);

    // Through fal's surface: a JPEG of a custom size.
    let sub = fal(
        &s,
        reqwest::Method::POST,
        &format!("/{MODEL}"),
        Some(
            json!({"prompt": "fal's queue", "image_size": {"width": 300, "height": 200},
                    "output_format": "jpeg", "num_inference_steps": 2}),
        ),
    )
    .await;
    let fid = sub["request_id"].as_str().unwrap().to_owned();
    until_status(&s, &fid, "COMPLETED", 60).await;
    let result = fal(
        &s,
        reqwest::Method::GET,
        &format!("/fal-ai/flux/requests/{fid}"),
        None,
    )
    .await;
    assert_eq!(result["prompt"], "fal's queue");
    assert_eq!(
        decoded(&s, &result["images"][0]).await,
        (300, 200, image::ImageFormat::Jpeg)
    );

    // A handler's exception fails the job with its type and message.
    let bad = s
        .create(&json!({"model_id": MODEL, "input": {"prompt": "x",
            "image_size": {"width": 5000, "height": 10}}}))
        .await;
    let failed = until_status(&s, bad["request_id"].as_str().unwrap(), "FAILED", 60).await;
    assert!(
        failed["error"]
            .to_string()
            .contains("ValueError: image_size: width and height must be 1 to 4096"),
        "{failed}"
    );
}

#[tokio::test]
async fn concurrency_modifier_runs_jobs_side_by_side() {
    let s = server().await;
    let token = token(&s).await;
    let worker = Worker::start(
        &s,
        &token,
        "rp-c",
        &[("STEP_SECONDS", "0.5"), ("CONCURRENCY", "3")],
    )
    .await;
    let mut ids = Vec::new();
    for i in 0..3 {
        let job = s
            .create(
                &json!({"model_id": MODEL, "input": {"prompt": format!("job {i}"),
                "image_size": {"width": 64, "height": 64}, "num_inference_steps": 6}}),
            )
            .await;
        ids.push(job["request_id"].as_str().unwrap().to_owned());
    }
    // Each job takes 3 s of steps: three at once are all running together at some moment.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut running = 0;
        for id in &ids {
            if s.get(id).await["status"] == "IN_PROGRESS" {
                running += 1;
            }
        }
        if running == 3 {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "never 3 at once\n{}",
            worker.log()
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    for id in &ids {
        until_status(&s, id, "COMPLETED", 60).await;
    }
}

#[tokio::test]
async fn a_cancel_stops_the_running_handler_through_job_stop() {
    let s = server().await;
    let token = token(&s).await;
    let worker = Worker::start(&s, &token, "rp-s", &[("STEP_SECONDS", "5")]).await;
    let job = s
        .create(&json!({"model_id": MODEL, "input": {"prompt": "long", "num_inference_steps": 12}}))
        .await;
    let id = job["request_id"].as_str().unwrap().to_owned();
    until_status(&s, &id, "IN_PROGRESS", 60).await;
    let resp = s
        .http
        .post(s.at(&format!("/v1/async-invoke/{id}/cancel")))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert!(resp.status().is_success(), "{}", resp.status());
    let asked = Instant::now();
    until_status(&s, &id, "CANCELED", 30).await;
    // Well within the 3 s lease: the stop channel, not a lapse.
    assert!(
        asked.elapsed() < Duration::from_secs(3),
        "{:?}",
        asked.elapsed()
    );
    // The SDK stopped the handler's task, and the worker takes the next job at once.
    let deadline = Instant::now() + Duration::from_secs(20);
    while !worker.log().contains("Job stopped") {
        assert!(Instant::now() < deadline, "{}", worker.log());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let next = s
        .create(
            &json!({"model_id": MODEL, "input": {"prompt": "next", "num_inference_steps": 1,
            "image_size": {"width": 64, "height": 64}}}),
        )
        .await;
    until_status(&s, next["request_id"].as_str().unwrap(), "COMPLETED", 30).await;
    assert_eq!(s.get(&id).await["status"], "CANCELED");
}

#[tokio::test]
async fn a_killed_worker_s_job_is_requeued_and_completed_once() {
    let s = server().await;
    let token = token(&s).await;
    let (hook, hooks) = hook_receiver().await;
    let slow = Worker::start(&s, &token, "rp-k1", &[("STEP_SECONDS", "5")]).await;
    let job = s
        .create(
            &json!({"model_id": MODEL, "input": {"prompt": "survivor", "num_inference_steps": 12,
            "image_size": {"width": 96, "height": 64}}, "webhook_url": hook}),
        )
        .await;
    let id = job["request_id"].as_str().unwrap().to_owned();
    until_status(&s, &id, "IN_PROGRESS", 60).await;
    // Its pings keep the lease while it lives: still running after two leases.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(s.get(&id).await["status"], "IN_PROGRESS", "{}", slow.log());
    slow.kill().await;
    let _fast = Worker::start(&s, &token, "rp-k2", &[("STEP_SECONDS", "0")]).await;
    let done = until_status(&s, &id, "COMPLETED", 60).await;
    assert_eq!(
        decoded(&s, &done["output"]["images"][0]).await,
        (96, 64, image::ImageFormat::Jpeg)
    );
    let deadline = Instant::now() + Duration::from_secs(20);
    let received = || hooks.lock().unwrap().get(&id).map_or(0, Vec::len);
    while received() == 0 {
        assert!(Instant::now() < deadline, "no webhook");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(received(), 1);
}

// ---------------------------------------------------------------------------------------------
// The protocol by hand.

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

fn data_uri(bytes: &[u8]) -> String {
    use base64::Engine;
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

/// A call as the SDK makes it: the token as the raw Authorization value, JSON sent as a form.
async fn rp(
    s: &TestServer,
    auth: &str,
    method: reqwest::Method,
    path: &str,
    body: Option<&Value>,
) -> (u16, Value) {
    let mut req = s
        .http
        .request(method, s.at(&format!("/v1/worker/runpod/{path}")))
        .header("authorization", auth);
    if let Some(b) = body {
        req = req
            .header("content-type", "application/x-www-form-urlencoded")
            .body(b.to_string());
    }
    let resp = req.send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap_or(Value::Null))
}

/// A job-done or stream post as the SDK sends it.
async fn post_rp(s: &TestServer, auth: &str, path: &str, body: &Value) -> (u16, Value) {
    rp(s, auth, reqwest::Method::POST, path, Some(body)).await
}

/// The job's log lines, as fal's status shows them.
async fn logs_of(s: &TestServer, id: &str) -> String {
    let path = format!("/fal-ai/flux/requests/{id}/status?logs=1");
    fal(s, reqwest::Method::GET, &path, None).await.to_string()
}

#[tokio::test]
async fn a_late_job_done_of_a_superseded_attempt_changes_nothing() {
    let s = server().await;
    let token = token(&s).await;
    let get = reqwest::Method::GET;
    // Refusals first: no token, a wrong one.
    assert_eq!(
        rp(&s, "", get.clone(), "job-take/a?models=", None).await.0,
        401
    );
    assert_eq!(
        rp(&s, "invw_nope", get.clone(), "job-take/a?models=", None)
            .await
            .0,
        401
    );
    let job = s
        .create(&json!({"model_id": MODEL, "input": {"prompt": "twice"}}))
        .await;
    let id = job["request_id"].as_str().unwrap().to_owned();
    let (status, first) = rp(
        &s,
        &token,
        get.clone(),
        "job-take/pod-a?models=&job_in_progress=0",
        None,
    )
    .await;
    assert_eq!(status, 200, "{first}");
    let first_id = first["id"].as_str().unwrap().to_owned();
    assert_eq!(first_id, format!("{id}.1"));
    assert_eq!(first["input"]["prompt"], "twice");
    // A progress update shows in the job's logs.
    let (status, _) = post_rp(
        &s,
        &token,
        &format!("job-done/pod-a/{first_id}?models=&isStream=false"),
        &json!({"status": "IN_PROGRESS", "output": "warming up"}),
    )
    .await;
    assert_eq!(status, 200);
    let logs = logs_of(&s, &id).await;
    assert!(logs.contains("warming up"), "{logs}");
    // Bad bodies change nothing.
    let (status, _) = post_rp(
        &s,
        &token,
        &format!("job-done/pod-a/{first_id}?isStream=false"),
        &json!("not an object"),
    )
    .await;
    assert_eq!(status, 400);
    // Another pod cannot finish pod-a's attempt.
    let (status, _) = post_rp(
        &s,
        &token,
        &format!("job-done/pod-b/{first_id}?isStream=false"),
        &json!({"output": {"images": [{"url": data_uri(&png(8, 8))}]}}),
    )
    .await;
    assert_eq!(status, 409);
    // pod-a goes silent: no ping, its lease lapses and pod-b takes attempt 2.
    let (status, second) = rp(
        &s,
        &token,
        get.clone(),
        "job-take/pod-b?models=&job_in_progress=0",
        None,
    )
    .await;
    assert_eq!(status, 200, "{second}");
    assert_eq!(second["id"], format!("{id}.2"));
    // pod-a's stop channel says to stop its attempt.
    let (status, stops) = rp(&s, &token, get.clone(), "job-stop/pod-a?models=", None).await;
    assert_eq!(
        (status, &stops),
        (200, &json!({"jobsToStop": [first_id.clone()]}))
    );
    // pod-a's late result: refused, nothing stored in the job.
    let late = json!({"output": {"images": [{"url": data_uri(&png(16, 16))}], "prompt": "late"}});
    let (status, v) = post_rp(
        &s,
        &token,
        &format!("job-done/pod-a/{first_id}?isStream=false"),
        &late,
    )
    .await;
    assert_eq!(status, 409, "{v}");
    assert_eq!(s.get(&id).await["status"], "IN_PROGRESS");
    // pod-b's result ends the job, its image filled in with its size and type.
    let (status, v) = post_rp(
        &s,
        &token,
        &format!("job-done/pod-b/{id}.2?isStream=false"),
        &json!({"output": {"images": [{"url": data_uri(&png(40, 30))}], "prompt": "second"}}),
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"status": "COMPLETED"})));
    let done = s.get(&id).await;
    assert_eq!(done["output"]["prompt"], "second");
    assert_eq!(
        decoded(&s, &done["output"]["images"][0]).await,
        (40, 30, image::ImageFormat::Png)
    );
    // And after the end, a late one again changes nothing.
    let (status, _) = post_rp(
        &s,
        &token,
        &format!("job-done/pod-a/{first_id}?isStream=false"),
        &late,
    )
    .await;
    assert_eq!(status, 409);
    assert_eq!(s.get(&id).await["output"]["prompt"], "second");
}

#[tokio::test]
async fn a_generator_s_last_yield_is_the_output_and_pings_name_lost_jobs() {
    let s = server().await;
    let token = token(&s).await;
    let get = reqwest::Method::GET;
    let job = s
        .create(&json!({"model_id": MODEL, "input": {"prompt": "streamed"}}))
        .await;
    let id = job["request_id"].as_str().unwrap().to_owned();
    let (status, taken) = rp(
        &s,
        &token,
        get.clone(),
        "job-take-batch/pod-g?models=&batch_size=2&job_in_progress=0",
        None,
    )
    .await;
    assert_eq!(status, 200, "{taken}");
    let rid = taken[0]["id"].as_str().unwrap().to_owned();
    // A ping keeps it; the answer names nothing lost.
    let (status, beat) = rp(
        &s,
        &token,
        get.clone(),
        &format!("ping/pod-g?models=&job_id={rid}&runpod_version=1.12.0"),
        None,
    )
    .await;
    assert_eq!((status, &beat), (200, &json!({"lost": [], "cancel": []})));
    // A number as progress; two yields, each a file alone (an image model's `images`).
    let (status, _) = post_rp(
        &s,
        &token,
        &format!("job-done/pod-g/{rid}?isStream=false"),
        &json!({"status": "IN_PROGRESS", "output": 0.5}),
    )
    .await;
    assert_eq!(status, 200);
    for (w, h) in [(8, 8), (24, 12)] {
        let (status, v) = post_rp(
            &s,
            &token,
            &format!("job-stream/pod-g/{rid}?isStream=true"),
            &json!({"output": data_uri(&png(w, h))}),
        )
        .await;
        assert_eq!(status, 200, "{v}");
    }
    let logs = logs_of(&s, &id).await;
    assert!(logs.contains("progress 50 of 100"), "{logs}");
    // The SDK's job-done of a generator holds no output: the last yield is the job's.
    let (status, v) = post_rp(
        &s,
        &token,
        &format!("job-done/pod-g/{rid}?isStream=true"),
        &json!({"output": []}),
    )
    .await;
    assert_eq!((status, &v), (200, &json!({"status": "COMPLETED"})));
    let done = s.get(&id).await;
    assert_eq!(
        decoded(&s, &done["output"]["images"][0]).await,
        (24, 12, image::ImageFormat::Png)
    );
    // A ping that still lists the ended job learns it is lost.
    let (status, beat) = rp(
        &s,
        &token,
        get,
        &format!("ping/pod-g?models=&job_id={rid}"),
        None,
    )
    .await;
    assert_eq!((status, &beat), (200, &json!({"lost": [id], "cancel": []})));
    // A malformed id in a ping is refused.
    let (status, _) = rp(
        &s,
        &token,
        reqwest::Method::GET,
        "ping/pod-g?job_id=nope",
        None,
    )
    .await;
    assert_eq!(status, 404);
}
