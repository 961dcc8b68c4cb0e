//! The worker protocol over HTTP against the real binary, spoken by hand: tokens made with the
//! CLI, take, heartbeat with logs and progress, files, complete, and every refusal (a stale or
//! foreign lease, a wrong output, a revoked token, bad bodies) changing nothing.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::time::{Duration, Instant};

use serde_json::{Value, json};
use support::{Options, TestServer};

const MODEL: &str = "fal-ai/flux/schnell";

async fn server(extra: &[&str]) -> TestServer {
    let mut opts = Options::default()
        .arg("--routes")
        .arg(format!("{MODEL}=workers"));
    for a in extra {
        opts = opts.arg(*a);
    }
    TestServer::start_with(opts).await
}

/// A worker token for `models`, made with `invokd workers token create`.
async fn token(s: &TestServer, models: &[&str]) -> String {
    let mut args = vec!["workers", "token", "create", "--name", "box", "-o", "json"];
    for m in models {
        args.extend(["--models", m]);
    }
    let out = s.cli(&args).await;
    out.ok();
    out.json()["token"].as_str().unwrap().to_owned()
}

fn hello(id: &str) -> Value {
    json!({"id": id, "name": "box-1", "version": "test 1", "slots": 2, "labels": {"gpu": "none"}})
}

async fn call(s: &TestServer, token: &str, path: &str, body: &Value) -> (u16, Value) {
    let res = s
        .http
        .post(s.at(path))
        .bearer_auth(token)
        .json(body)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

async fn take(s: &TestServer, token: &str, wait_ms: u64) -> Vec<Value> {
    let body = json!({"worker": hello("w-1"), "free": 1, "wait_ms": wait_ms});
    let (status, v) = call(s, token, "/v1/worker/take", &body).await;
    assert_eq!(status, 200, "{v}");
    v["jobs"].as_array().unwrap().clone()
}

fn png(width: u32, height: u32) -> Vec<u8> {
    let img = image::RgbImage::from_fn(width, height, |x, y| image::Rgb([x as u8, y as u8, 7]));
    let mut out = std::io::Cursor::new(Vec::new());
    img.write_to(&mut out, image::ImageFormat::Png).unwrap();
    out.into_inner()
}

async fn put_file(
    s: &TestServer,
    token: &str,
    job: &Value,
    name: &str,
    bytes: Vec<u8>,
) -> (u16, Value) {
    let url = format!("{}/{name}", job["files"]["upload_url"].as_str().unwrap());
    let res = s
        .http
        .put(url)
        .bearer_auth(token)
        .header("x-invokd-lease", job["lease"].as_str().unwrap())
        .header("content-type", "image/png")
        .body(bytes)
        .send()
        .await
        .unwrap();
    let status = res.status().as_u16();
    (status, res.json().await.unwrap_or(Value::Null))
}

/// A GET with the access key, as fal's client reads.
async fn fal_get(s: &TestServer, path: &str) -> Value {
    let res = s
        .http
        .get(s.at(path))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    res.json().await.unwrap()
}

fn job_path(job: &Value, action: &str) -> String {
    format!("/v1/worker/jobs/{}/{action}", job["id"].as_str().unwrap())
}

/// The output of an image model for `file`, as the upload answered it.
fn image_output(file: &Value, width: u32, height: u32) -> Value {
    json!({"images": [{"url": file["url"], "width": width, "height": height,
                       "content_type": "image/png"}],
           "seed": 1, "prompt": "a city", "timings": {"inference": 0.1}, "has_nsfw_concepts": [false]})
}

#[tokio::test]
async fn a_worker_takes_a_job_and_completes_it_with_a_real_file() {
    let s = server(&[]).await;
    let token = token(&s, &[MODEL]).await;
    let created = s
        .create(&json!({"model_id": MODEL, "input": {"prompt": "a city", "image_size": {"width": 64, "height": 48}}}))
        .await;
    let id = created["request_id"].as_str().unwrap().to_owned();
    // The gateway's own dispatcher never runs a workers' model.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(s.get(&id).await["status"], "QUEUED");

    let jobs = take(&s, &token, 5_000).await;
    assert_eq!(jobs.len(), 1);
    let job = &jobs[0];
    assert_eq!(job["id"], id.as_str());
    assert_eq!(job["model"], MODEL);
    assert_eq!(job["attempt"], 1);
    assert_eq!(job["kind"], "image");
    // Prepared: the model's defaults are filled in.
    assert_eq!(job["input"]["num_images"], 1);
    assert!(job["heartbeat_every_ms"].as_u64().unwrap() > 0);
    assert_eq!(s.get(&id).await["status"], "IN_PROGRESS");

    let beat = json!({"worker": hello("w-1"), "jobs": [{"id": id, "lease": job["lease"],
        "logs": [{"message": "denoising"}], "progress": {"step": 2, "total": 4}}]});
    let (status, v) = call(&s, &token, "/v1/worker/heartbeat", &beat).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["cancel"], json!([]));
    assert_eq!(v["lost"], json!([]));
    let logs = fal_get(&s, &format!("/fal-ai/flux/requests/{id}/status?logs=1")).await;
    assert!(logs.to_string().contains("denoising"), "{logs}");

    let bytes = png(64, 48);
    let (status, file) = put_file(&s, &token, job, "0.png", bytes.clone()).await;
    assert_eq!(status, 201, "{file}");
    assert_eq!(file["file_size"], bytes.len());
    assert!(file["url"].as_str().unwrap().starts_with("blob:"));

    let done = json!({"lease": job["lease"], "output": image_output(&file, 64, 48),
                      "logs": [{"message": "done", "level": "info"}]});
    let (status, v) = call(&s, &token, &job_path(job, "complete"), &done).await;
    assert_eq!(status, 200, "{v}");
    assert_eq!(v["status"], "COMPLETED");

    let finished = s.wait(&id).await;
    assert_eq!(finished["status"], "COMPLETED");
    let url = finished["output"]["images"][0]["url"]
        .as_str()
        .unwrap()
        .to_owned();
    let (_, got) = s.download(&url).await;
    assert_eq!(
        got, bytes,
        "readers get the worker's file through a signed URL"
    );
    let fal = fal_get(&s, &format!("/fal-ai/flux/requests/{id}")).await;
    assert_eq!(fal["images"][0]["width"], 64);

    // A worker's counts are written beside the answer to its complete.
    let deadline = Instant::now() + Duration::from_secs(10);
    let w = loop {
        let listed = s.cli(&["workers", "list", "-o", "json"]).await;
        listed.ok();
        let w = listed.json()["workers"][0].clone();
        if w["completed"] == 1 || Instant::now() > deadline {
            break w;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    };
    assert_eq!(w["id"], "w-1");
    assert_eq!(w["labels"]["gpu"], "none");
    assert_eq!(
        (w["completed"].as_u64(), w["running"].as_u64()),
        (Some(1), Some(0))
    );
    let metrics = s
        .http
        .get(s.at("/metrics"))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains(&format!("invokd_workers_connected{{model=\"{MODEL}\"}} 1")),
        "{metrics}"
    );
}

#[tokio::test]
async fn refused_calls_change_nothing() {
    let s = server(&["--max-upload-bytes", "1000"]).await;
    let token = token(&s, &[MODEL]).await;
    let other = token_for_other_model(&s).await;
    let id = s
        .create(&json!({"model_id": MODEL, "input": {"prompt": "a city", "image_size": {"width": 16, "height": 16}}}))
        .await["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = take(&s, &token, 5_000).await.remove(0);

    // No token, an access key, a made-up token.
    for t in ["", s.key.as_str(), "invw_nope"] {
        let (status, _) = call(
            &s,
            t,
            "/v1/worker/take",
            &json!({"worker": hello("w"), "free": 1}),
        )
        .await;
        assert_eq!(status, 401, "token {t:?}");
    }
    // Bodies of the wrong shape, out of bounds, malformed.
    for (body, want) in [
        (json!({"worker": hello("w"), "free": 0}), 422),
        (
            json!({"worker": hello("w"), "free": 1, "wait_ms": 600_000}),
            422,
        ),
        (json!({"worker": hello("bad id!"), "free": 1}), 422),
        (
            json!({"worker": {"id": "w", "name": "x", "slots": 1, "models": ["*"]}, "free": 1}),
            403,
        ),
        (json!({"free": 1}), 422),
    ] {
        let (status, v) = call(&s, &token, "/v1/worker/take", &body).await;
        assert_eq!(status, want, "{body} -> {v}");
    }
    let res = s
        .http
        .post(s.at("/v1/worker/take"))
        .bearer_auth(&token)
        .header("content-type", "application/json")
        .body("{not json")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status().as_u16(), 400);

    // Another token's worker may not touch the job, nor renew it.
    let beat = json!({"worker": hello("w-2"), "jobs": [{"id": id, "lease": job["lease"]}]});
    assert_eq!(call(&s, &other, "/v1/worker/heartbeat", &beat).await.0, 403);
    let done = json!({"lease": job["lease"], "output": {}});
    assert_eq!(
        call(&s, &other, &job_path(&job, "complete"), &done).await.0,
        403
    );
    // A job that does not exist; a lease that is not a lease.
    let ghost = json!({"worker": hello("w-1"), "jobs": [{"id": "0193f1e2-0000-7000-8000-000000000000", "lease": job["lease"]}]});
    assert_eq!(
        call(&s, &token, "/v1/worker/heartbeat", &ghost).await.0,
        404
    );
    let garbled = json!({"lease": "nonsense", "output": {}});
    assert_eq!(
        call(&s, &token, &job_path(&job, "complete"), &garbled)
            .await
            .0,
        400
    );

    // Files: too big, no name, a name that is a path.
    assert_eq!(
        put_file(&s, &token, &job, "big.png", vec![0; 2000]).await.0,
        413
    );
    let (status, v) = put_file(&s, &token, &job, "", png(16, 16)).await;
    assert!(status == 422 || status == 404, "{status} {v}");
    assert_eq!(
        put_file(&s, &token, &job, "..png", png(16, 16)).await.0,
        422
    );

    // Outputs of the wrong shape: nothing stored, the job still runs.
    let (_, file) = put_file(&s, &token, &job, "0.png", png(16, 16)).await;
    let other_job_file = json!({"url": format!("blob:{}/1/0.png", uuid_like()), "width": 16, "height": 16, "content_type": "image/png"});
    for output in [
        json!({}),
        json!({"images": []}),
        json!({"images": "x"}),
        image_output(&file, 17, 16),
        json!({"images": [other_job_file]}),
        json!({"images": [{"url": file["url"], "width": 16, "height": 16, "content_type": "image/png"}], "extra": 1}),
    ] {
        let (status, v) = call(
            &s,
            &token,
            &job_path(&job, "complete"),
            &json!({"lease": job["lease"], "output": output}),
        )
        .await;
        assert_eq!(status, 422, "{output} -> {v}");
        assert!(v["message"].as_str().unwrap().starts_with("output"), "{v}");
    }
    assert_eq!(s.get(&id).await["status"], "IN_PROGRESS");

    // A lease of another attempt is stale: 409, nothing changes.
    let lease = job["lease"].as_str().unwrap();
    let (attempt, owner) = lease.split_once(':').unwrap();
    let stale = format!("{}:{owner}", attempt.parse::<u32>().unwrap() + 1);
    let done = json!({"lease": stale, "output": image_output(&file, 16, 16)});
    assert_eq!(
        call(&s, &token, &job_path(&job, "complete"), &done).await.0,
        409
    );
    assert_eq!(s.get(&id).await["status"], "IN_PROGRESS");

    // A revoked token's next call is refused.
    let tokens = s
        .cli(&["workers", "token", "list", "-o", "json"])
        .await
        .json();
    let tid = tokens["tokens"]
        .as_array()
        .unwrap()
        .iter()
        .find(|t| token.starts_with(t["prefix"].as_str().unwrap()) && t["models"] == json!([MODEL]))
        .unwrap()["id"]
        .as_str()
        .unwrap()
        .to_owned();
    s.cli(&["workers", "token", "revoke", &tid]).await.ok();
    let done = json!({"lease": lease, "output": image_output(&file, 16, 16)});
    assert_eq!(
        call(&s, &token, &job_path(&job, "complete"), &done).await.0,
        401
    );
    assert_eq!(s.get(&id).await["status"], "IN_PROGRESS");
}

fn uuid_like() -> String {
    "0193f1e2-1111-7000-8000-000000000000".to_owned()
}

async fn token_for_other_model(s: &TestServer) -> String {
    token(s, &["acme/*"]).await
}

#[tokio::test]
async fn a_cancel_reaches_the_worker_at_its_heartbeat_and_ends_the_job_canceled() {
    let s = server(&[]).await;
    let token = token(&s, &[MODEL]).await;
    let id = s
        .create(&json!({"model_id": MODEL, "input": {"prompt": "x"}}))
        .await["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let job = take(&s, &token, 5_000).await.remove(0);
    let res = s
        .http
        .post(s.at(&format!("/v1/async-invoke/{id}/cancel")))
        .bearer_auth(&s.key)
        .send()
        .await
        .unwrap();
    assert!(res.status().is_success(), "{}", res.status());
    let beat = json!({"worker": hello("w-1"), "jobs": [{"id": id, "lease": job["lease"]}]});
    let (status, v) = call(&s, &token, "/v1/worker/heartbeat", &beat).await;
    assert_eq!(status, 200);
    assert_eq!(v["cancel"], json!([id]));
    let fail = json!({"lease": job["lease"], "error": {"message": "stopped", "retry": true}});
    let (status, v) = call(&s, &token, &job_path(&job, "fail"), &fail).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("CANCELED")));
    assert_eq!(s.wait(&id).await["status"], "CANCELED");
}

#[tokio::test]
async fn a_lapsed_lease_requeues_the_job_and_the_late_worker_gets_409() {
    let s = server(&["--lease-seconds", "1"]).await;
    let token = token(&s, &[MODEL]).await;
    let id = s
        .create(&json!({"model_id": MODEL, "input": {"prompt": "x"}}))
        .await["request_id"]
        .as_str()
        .unwrap()
        .to_owned();
    let first = take(&s, &token, 5_000).await.remove(0);
    // No heartbeat: the janitor takes the job back, and a take gets its second attempt.
    let deadline = Instant::now() + Duration::from_secs(30);
    let second = loop {
        assert!(Instant::now() < deadline, "the job was never taken back");
        if let Some(j) = take(&s, &token, 1_000).await.pop() {
            break j;
        }
    };
    assert_eq!(second["id"], id.as_str());
    assert_eq!(second["attempt"], 2);
    let beat = json!({"worker": hello("w-1"), "jobs": [{"id": id, "lease": first["lease"]}]});
    let (_, v) = call(&s, &token, "/v1/worker/heartbeat", &beat).await;
    assert_eq!(v["lost"], json!([id]));
    let fail = json!({"lease": first["lease"], "error": {"message": "late"}});
    assert_eq!(
        call(&s, &token, &job_path(&first, "fail"), &fail).await.0,
        409
    );
    // The holder hands it back on shutdown: queued again, its attempt not used.
    let release = json!({"lease": second["lease"]});
    let (status, v) = call(&s, &token, &job_path(&second, "release"), &release).await;
    assert_eq!((status, v["status"].as_str()), (200, Some("QUEUED")));
    let third = take(&s, &token, 5_000).await.remove(0);
    assert_eq!(
        third["attempt"], 3,
        "a hand-back does not use up an attempt: the job may still run its full count"
    );
}
