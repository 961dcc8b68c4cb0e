//! The agent against a fake gateway that speaks the protocol's shapes and records each call:
//! what is taken, stored, heartbeated and ended, and how a cancel, a 422 and a shutdown go.

use std::{
    collections::VecDeque,
    sync::{Arc, Mutex},
    time::Duration,
};

use axum::{
    Json, Router,
    extract::{Path, State},
    http::StatusCode,
    routing::{post, put},
};
use invokd_api::worker::{
    FileUpload, HeartbeatRequest, HeartbeatResponse, StoredFile, TakeRequest, TakeResponse,
    TakenJob,
};
use invokd_core::{JobId, catalog::Catalog, run::RunLimits};
use invokd_providers::{Emulator, EmulatorConfig};
use serde_json::{Value, json};
use tokio_util::sync::CancellationToken;

use super::{agent::Agent, client};

#[derive(Default)]
struct Fake {
    base: String,
    queue: VecDeque<TakenJob>,
    takes: Vec<u32>,
    heartbeats: Vec<HeartbeatRequest>,
    files: Vec<String>,
    /// (action, job, body)
    ends: Vec<(String, String, Value)>,
    cancel: Vec<String>,
    reject_complete: bool,
    /// Calls to end a job answered 503 before one goes through.
    unavailable: u32,
}

type Shared = Arc<Mutex<Fake>>;

async fn take(State(s): State<Shared>, Json(req): Json<TakeRequest>) -> Json<TakeResponse> {
    let jobs: Vec<TakenJob> = {
        let mut f = s.lock().unwrap();
        f.takes.push(req.free);
        let n = f.queue.len().min(req.free as usize);
        f.queue.drain(..n).collect()
    };
    if jobs.is_empty() {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Json(TakeResponse { jobs })
}

async fn heartbeat(
    State(s): State<Shared>,
    Json(req): Json<HeartbeatRequest>,
) -> Json<HeartbeatResponse> {
    let mut f = s.lock().unwrap();
    f.heartbeats.push(req);
    Json(HeartbeatResponse {
        lease_expires_at: chrono::Utc::now(),
        cancel: std::mem::take(&mut f.cancel),
        lost: Vec::new(),
    })
}

async fn file(
    State(s): State<Shared>,
    Path((id, name)): Path<(String, String)>,
    body: axum::body::Bytes,
) -> (StatusCode, Json<StoredFile>) {
    s.lock().unwrap().files.push(name.clone());
    (
        StatusCode::CREATED,
        Json(StoredFile {
            // Not the key the run was given: the output must carry this one.
            url: format!("blob:{id}/gw/{name}"),
            file_name: name,
            content_type: "audio/wav".into(),
            file_size: body.len() as u64,
        }),
    )
}

async fn end(
    State(s): State<Shared>,
    Path((id, action)): Path<(String, String)>,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let mut f = s.lock().unwrap();
    if f.unavailable > 0 {
        f.unavailable -= 1;
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({"id": "unavailable", "message": "try again"})),
        );
    }
    f.ends.push((action.clone(), id, body));
    if action == "complete" && f.reject_complete {
        return (
            StatusCode::UNPROCESSABLE_ENTITY,
            Json(
                json!({"id": "unprocessable_entity", "message": "output.audio: not a stored file"}),
            ),
        );
    }
    (StatusCode::OK, Json(json!({"status": "DONE"})))
}

async fn gateway() -> Shared {
    let shared: Shared = Arc::default();
    let app = Router::new()
        .route("/v1/worker/take", post(take))
        .route("/v1/worker/heartbeat", post(heartbeat))
        .route("/v1/worker/jobs/{id}/files/{name}", put(file))
        .route("/v1/worker/jobs/{id}/{action}", post(end))
        .with_state(shared.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    shared.lock().unwrap().base = format!("http://{}/", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    shared
}

fn speech_job(base: &str) -> TakenJob {
    let id = JobId::generate().to_string();
    TakenJob {
        id: id.clone(),
        model: "fal-ai/elevenlabs/tts/multilingual-v2".into(),
        input: json!({"text": "Hello there.", "speed": 1.0})
            .as_object()
            .unwrap()
            .clone(),
        attempt: 1,
        lease: format!("1.w.{id}"),
        lease_expires_at: chrono::Utc::now(),
        heartbeat_every_ms: 200,
        kind: "speech".into(),
        output: json!({"fields": ["audio", "timestamps"], "speech": {"text_field": "text", "speed_field": "speed", "format": "wav"}}),
        files: FileUpload {
            upload_url: format!("{base}v1/worker/jobs/{id}/files"),
            presign: false,
            max_bytes: 1 << 20,
        },
    }
}

fn agent(base: &str, latency_ms: u64, slots: u32, grace: Duration) -> Arc<Agent> {
    let api = client::Api::new(
        base.parse().unwrap(),
        "invw_test".into(),
        client::Backoff::default(),
    )
    .unwrap();
    let inputs =
        invokd_server::InputFetcher::remote(base.parse().unwrap(), Default::default()).unwrap();
    Arc::new(Agent::new(
        api,
        invokd_api::worker::WorkerInfo {
            id: "w1".into(),
            name: "test".into(),
            version: None,
            models: Vec::new(),
            slots,
            labels: Default::default(),
        },
        Arc::new(Emulator::new(EmulatorConfig {
            latency: Duration::from_millis(latency_ms),
            ..EmulatorConfig::default()
        })),
        Arc::new(inputs),
        Catalog::embedded().unwrap(),
        RunLimits {
            run_timeout: Duration::from_secs(60),
            cancel_grace: Duration::from_secs(1),
        },
        grace,
        Duration::from_millis(200),
    ))
}

/// Waits until `done` holds (at most 20 s).
async fn until(s: &Shared, done: impl Fn(&Fake) -> bool) {
    for _ in 0..400 {
        if done(&s.lock().unwrap()) {
            return;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("not within 20 s");
}

#[tokio::test]
async fn a_job_is_run_stored_and_completed_with_the_gateways_references() {
    let s = gateway().await;
    let base = s.lock().unwrap().base.clone();
    let jobs: Vec<_> = (0..3).map(|_| speech_job(&base)).collect();
    s.lock().unwrap().queue.extend(jobs.clone());
    let stop = CancellationToken::new();
    let run = tokio::spawn(agent(&base, 300, 2, Duration::from_secs(5)).run(stop.clone()));
    until(&s, |f| f.ends.len() == 3).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let f = s.lock().unwrap();
    // Never more than the free slots.
    assert!(
        f.takes.iter().all(|&free| (1..=2).contains(&free)),
        "{:?}",
        f.takes
    );
    for (action, id, body) in &f.ends {
        assert_eq!(action, "complete");
        let job = jobs.iter().find(|j| &j.id == id).unwrap();
        assert_eq!(body["lease"], job.lease.as_str());
        assert_eq!(
            body["output"]["audio"]["url"],
            format!("blob:{id}/gw/output.wav")
        );
        // The emulator's lines: in heartbeats while it ran, the rest with complete.
        let sent: usize = f
            .heartbeats
            .iter()
            .flat_map(|h| &h.jobs)
            .filter(|h| &h.id == id)
            .map(|h| h.logs.len())
            .sum::<usize>()
            + body["logs"].as_array().unwrap().len();
        assert!(sent >= 3, "{sent} lines");
    }
    assert_eq!(f.files.len(), 3);
}

#[tokio::test]
async fn an_output_refused_with_422_fails_the_job_with_the_gateways_message() {
    let s = gateway().await;
    let base = s.lock().unwrap().base.clone();
    let job = speech_job(&base);
    {
        let mut f = s.lock().unwrap();
        f.reject_complete = true;
        f.queue.push_back(job.clone());
    }
    let stop = CancellationToken::new();
    let run = tokio::spawn(agent(&base, 0, 1, Duration::from_secs(5)).run(stop.clone()));
    until(&s, |f| f.ends.iter().any(|e| e.0 == "fail")).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let f = s.lock().unwrap();
    let fail = &f.ends.iter().find(|e| e.0 == "fail").unwrap().2;
    assert_eq!(fail["error"]["message"], "output.audio: not a stored file");
    assert_eq!(fail["error"]["retry"], false);
}

#[tokio::test]
async fn a_cancel_in_a_heartbeat_stops_the_run_and_fails_it() {
    let s = gateway().await;
    let base = s.lock().unwrap().base.clone();
    let job = speech_job(&base);
    s.lock().unwrap().queue.push_back(job.clone());
    let stop = CancellationToken::new();
    let run = tokio::spawn(agent(&base, 60_000, 1, Duration::from_secs(5)).run(stop.clone()));
    until(&s, |f| {
        f.heartbeats
            .iter()
            .any(|h| h.jobs.iter().any(|j| j.id == job.id))
    })
    .await;
    s.lock().unwrap().cancel.push(job.id.clone());
    until(&s, |f| !f.ends.is_empty()).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let f = s.lock().unwrap();
    assert_eq!(f.ends[0].0, "fail");
    assert_eq!(f.ends[0].2["error"]["type"], "client_cancelled");
}

#[tokio::test]
async fn a_shutdown_hands_back_what_outlasts_the_grace_period() {
    let s = gateway().await;
    let base = s.lock().unwrap().base.clone();
    let job = speech_job(&base);
    s.lock().unwrap().queue.push_back(job.clone());
    let stop = CancellationToken::new();
    let run = tokio::spawn(agent(&base, 60_000, 1, Duration::from_millis(300)).run(stop.clone()));
    until(&s, |f| !f.takes.is_empty() && f.queue.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    stop.cancel();
    tokio::time::timeout(Duration::from_secs(10), run)
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    let f = s.lock().unwrap();
    assert_eq!(f.ends.len(), 1);
    assert_eq!(f.ends[0].0, "release");
    assert_eq!(f.ends[0].2["lease"], job.lease.as_str());
}

#[tokio::test]
async fn calls_are_tried_again_on_5xx() {
    let s = gateway().await;
    let base = s.lock().unwrap().base.clone();
    let job = speech_job(&base);
    {
        let mut f = s.lock().unwrap();
        f.unavailable = 2;
        f.queue.push_back(job.clone());
    }
    let stop = CancellationToken::new();
    let run = tokio::spawn(agent(&base, 0, 1, Duration::from_secs(5)).run(stop.clone()));
    until(&s, |f| !f.ends.is_empty()).await;
    stop.cancel();
    run.await.unwrap().unwrap();
    let f = s.lock().unwrap();
    assert_eq!(f.unavailable, 0);
    assert_eq!(f.ends.len(), 1);
    assert_eq!(f.ends[0].0, "complete");
}
