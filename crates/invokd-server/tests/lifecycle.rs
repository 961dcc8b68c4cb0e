//! The job lifecycle end to end in one process: every way a run can end, driven by the scripted
//! provider through the in-process test app, and the lifecycle service's fenced writes racing
//! the janitor's sweeps and a client's cancel on a real store.
#![allow(clippy::unwrap_used)]

mod support;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use invokd_core::{
    CancelOutcome, JobId, JobStatus, KeyId, NewJob, Outcome,
    events::Signals,
    lifecycle::{ClaimRoom, Ended, Lifecycle},
    provider::ProviderError,
    store::{JobRepo, Stale, Store},
};
use serde_json::{Map, json};
use support::{KEY, TestApp};

fn images(url: &str) -> Map<String, serde_json::Value> {
    json!({"images": [{"url": url, "width": 4, "height": 4, "content_type": "image/png"}]})
        .as_object()
        .unwrap()
        .clone()
}

#[tokio::test]
async fn a_completed_run_ends_the_job_with_its_output_files_and_logs() {
    let app = TestApp::start(|_| {}).await;
    let id = app.submit_image().await;
    let run = app.next_run().await;
    assert_eq!((run.job_id.to_string(), run.attempt), (id.clone(), 1));
    assert_eq!(run.input["prompt"], "a city");
    app.wait_for(&id, "IN_PROGRESS").await;
    run.log("painting").await;
    let blob = run.put_file("0.png", b"not really a png").await.unwrap();
    run.complete(images(&blob));

    let job = app.wait_for(&id, "COMPLETED").await;
    let url = job["output"]["images"][0]["url"].as_str().unwrap();
    assert!(url.starts_with(&app.url) && url.contains("sig="), "{url}");
    let file = app.http.get(url).send().await.unwrap();
    assert_eq!(file.bytes().await.unwrap().as_ref(), b"not really a png");
    let status: serde_json::Value = app
        .http
        .get(format!(
            "{}/fal-ai/flux/schnell/requests/{id}/status?logs=1",
            app.url
        ))
        .header("Authorization", format!("Key {KEY}"))
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(status["logs"][0]["message"], "painting", "{status}");
    app.stop().await;
}

#[tokio::test]
async fn a_permanent_error_fails_the_job_with_its_message() {
    let app = TestApp::start(|_| {}).await;
    let id = app.submit_image().await;
    app.next_run().await.fail(ProviderError::permanent(
        "bad_request",
        "the prompt is too dark",
    ));
    let job = app.wait_for(&id, "FAILED").await;
    assert!(job["error"].as_str().unwrap().contains("too dark"), "{job}");
    app.stop().await;
}

#[tokio::test]
async fn a_retryable_error_runs_the_job_again_until_its_attempts_are_used() {
    let app = TestApp::start(|c| c.max_attempts = 2).await;
    let id = app.submit_image().await;
    let first = app.next_run().await;
    assert_eq!(first.attempt, 1);
    first.fail(ProviderError::transient(
        "runner_server_error",
        "gpu fell over",
    ));
    let second = app.next_run().await;
    assert_eq!((second.job_id.to_string(), second.attempt), (id.clone(), 2));
    second.fail(ProviderError::transient("runner_server_error", "again"));
    let job = app.wait_for(&id, "FAILED").await;
    assert!(job["error"].as_str().unwrap().contains("again"), "{job}");
    app.stop().await;
}

#[tokio::test]
async fn an_unavailable_upstream_gives_the_job_back_without_using_an_attempt() {
    let app = TestApp::start(|c| c.max_attempts = 1).await;
    let id = app.submit_image().await;
    app.next_run()
        .await
        .fail(ProviderError::later("upstream_unavailable", "circuit open"));
    // With one attempt allowed, a second run shows the first did not use it.
    let again = app.next_run().await;
    assert_eq!(again.job_id.to_string(), id);
    again.complete(images("https://example.com/a.png"));
    app.wait_for(&id, "COMPLETED").await;
    app.stop().await;
}

#[tokio::test]
async fn a_run_past_its_time_limit_is_stopped_and_fails() {
    let app = TestApp::start(|c| c.dispatch.run_timeout = Duration::from_secs(1)).await;
    let id = app.submit_image().await;
    let run = app.next_run().await;
    tokio::time::timeout(Duration::from_secs(10), run.stopped())
        .await
        .expect("the run is told to stop at its limit");
    let job = app.wait_for(&id, "FAILED").await;
    assert!(
        job["error"]
            .as_str()
            .unwrap()
            .contains("longer than its limit"),
        "{job}"
    );
    app.stop().await;
}

#[tokio::test]
async fn a_cancel_stops_the_run_and_ends_the_job_cancelled() {
    let app = TestApp::start(|_| {}).await;
    let id = app.submit_image().await;
    let run = app.next_run().await;
    app.wait_for(&id, "IN_PROGRESS").await;
    assert!(app.cancel(&id).await.is_success());
    tokio::time::timeout(Duration::from_secs(10), run.stopped())
        .await
        .expect("the cancel reaches the run");
    app.wait_for(&id, "CANCELED").await;
    app.stop().await;
}

#[tokio::test]
async fn a_run_interrupted_by_shutdown_goes_back_to_the_queue_and_runs_after_a_restart() {
    let app = TestApp::start(|c| c.dispatch.shutdown_grace = Duration::ZERO).await;
    let id = app.submit_image().await;
    let run = app.next_run().await;
    app.wait_for(&id, "IN_PROGRESS").await;
    let dir = app.stop().await;
    drop(run);

    let app = TestApp::start_in(dir, |_| {}).await;
    let again = app.next_run().await;
    assert_eq!((again.job_id.to_string(), again.attempt), (id.clone(), 2));
    again.complete(images("https://example.com/a.png"));
    app.wait_for(&id, "COMPLETED").await;
    app.stop().await;
}

// The lifecycle service on a real store, without HTTP.

async fn store() -> (Arc<dyn Store>, tempfile::TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let store = invokd_store::SqliteStore::open(&dir.path().join("jobs.sqlite"))
        .await
        .unwrap();
    (Arc::new(store), dir)
}

async fn queued_job(store: &dyn Store) -> JobId {
    let key = KeyId::generate();
    let job = store
        .insert_job(NewJob {
            id: JobId::generate(),
            key_id: key,
            project: "p".into(),
            model_id: "fal-ai/flux/schnell".into(),
            input: Arc::new(Map::new()),
            tags: Vec::new(),
            priority: 0,
            created_at: Utc::now(),
            max_attempts: 3,
            start_deadline: None,
            webhook_url: None,
            run_timeout: None,
        })
        .await
        .unwrap();
    job.id
}

fn room() -> ClaimRoom {
    ClaimRoom {
        limit: 10,
        per_model: Default::default(),
        default_per_model: 10,
    }
}

#[tokio::test]
async fn a_late_finish_after_the_sweep_took_the_lease_back_changes_nothing() {
    let (store, _dir) = store().await;
    let signals = Signals::default();
    let mut news = signals.events.subscribe();
    // Leases that lapse at once, as a dead holder's would.
    let short = Lifecycle::new(store.clone(), signals.clone(), Duration::from_millis(1));
    let id = queued_job(store.as_ref()).await;
    let claimed = short.claim("here/a", &room()).await.unwrap();
    let old = claimed[0].lease.clone().unwrap();
    assert_eq!(news.recv().await.unwrap(), id, "a claim sends news");
    tokio::time::sleep(Duration::from_millis(20)).await;

    let taken = short.take_back(Stale::Expired).await.unwrap();
    assert_eq!(taken.requeued, 1);
    let late = short
        .finish(id, &old, Outcome::Completed(Map::new()), &[])
        .await;
    assert_eq!(late, Ended::LeaseGone, "the late finish lost its lease");
    let job = store.get_job(id, None).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Queued);

    let lifecycle = Lifecycle::new(store.clone(), signals, Duration::from_secs(30));
    let again = lifecycle.claim("here/b", &room()).await.unwrap();
    assert_eq!((again[0].id, again[0].attempt), (id, 2));
    let lease = again[0].lease.clone().unwrap();
    let ended = lifecycle
        .finish(id, &lease, Outcome::Completed(Map::new()), &[])
        .await;
    assert_eq!(ended, Ended::Applied);
    // The old holder's heartbeat finds its lease gone.
    assert_eq!(
        lifecycle.heartbeat(id, &old).await.unwrap(),
        invokd_core::store::Beat::Lost
    );
    let job = store.get_job(id, None).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Completed);
}

#[tokio::test]
async fn a_cancel_asked_while_the_job_is_given_back_ends_it_cancelled() {
    let (store, _dir) = store().await;
    let lifecycle = Lifecycle::new(store.clone(), Signals::default(), Duration::from_secs(30));
    let id = queued_job(store.as_ref()).await;
    let claimed = lifecycle.claim("here/a", &room()).await.unwrap();
    let lease = claimed[0].lease.clone().unwrap();
    let asked = store.cancel(id, None, Utc::now()).await.unwrap();
    assert_eq!(asked, CancelOutcome::Requested);
    assert_eq!(lifecycle.give_back(id, &lease).await, Ended::Applied);
    let job = store.get_job(id, None).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::Canceled);
    assert!(lifecycle.claim("here/b", &room()).await.unwrap().is_empty());
}

#[tokio::test]
async fn of_a_sweep_and_a_finish_racing_for_a_lapsed_lease_exactly_one_wins() {
    let (store, _dir) = store().await;
    let lifecycle = Lifecycle::new(store.clone(), Signals::default(), Duration::from_millis(1));
    for _ in 0..20 {
        let id = queued_job(store.as_ref()).await;
        let claimed = lifecycle.claim("here/a", &room()).await.unwrap();
        let lease = claimed[0].lease.clone().unwrap();
        tokio::time::sleep(Duration::from_millis(5)).await;
        let (taken, finished) = tokio::join!(
            lifecycle.take_back(Stale::Expired),
            lifecycle.finish(id, &lease, Outcome::Completed(Map::new()), &[]),
        );
        let taken = taken.unwrap().requeued;
        let job = store.get_job(id, None).await.unwrap().unwrap();
        match finished {
            Ended::Applied => {
                assert_eq!((taken, job.status), (0, JobStatus::Completed));
            }
            Ended::LeaseGone => assert_eq!((taken, job.status), (1, JobStatus::Queued)),
            Ended::StoreFailed => panic!("the store failed"),
        }
        if job.status == JobStatus::Queued {
            // Out of the way of the next round's claim.
            store.cancel(id, None, Utc::now()).await.unwrap();
        }
    }
}

#[tokio::test]
async fn a_start_takes_back_its_earlier_lives_leases_and_no_one_elses() {
    let dir = tempfile::tempdir().unwrap();
    let data = dir.path().join("data");
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("instance-id"), "invokd-test-instance").unwrap();
    let (ours, theirs) = {
        let store: Arc<dyn Store> = Arc::new(
            invokd_store::SqliteStore::open(&data.join("invokd.sqlite"))
                .await
                .unwrap(),
        );
        let lifecycle =
            Lifecycle::new(store.clone(), Signals::default(), Duration::from_secs(3600));
        let ours = queued_job(store.as_ref()).await;
        let theirs = queued_job(store.as_ref()).await;
        let one = ClaimRoom { limit: 1, ..room() };
        let a = lifecycle
            .claim("invokd-test-instance/1-old", &one)
            .await
            .unwrap();
        let b = lifecycle.claim("worker-7/gpu-0", &one).await.unwrap();
        assert_eq!((a[0].id, b[0].id), (ours, theirs));
        (ours, theirs)
    };

    let app = TestApp::start_in(dir, |_| {}).await;
    let run = app.next_run().await;
    assert_eq!(
        (run.job_id, run.attempt),
        (ours, 2),
        "its own earlier life's job runs again"
    );
    run.complete(images("https://example.com/a.png"));
    // The remote holder's job is left running, its lease an hour away.
    let store = invokd_store::SqliteStore::open(&app.dir.path().join("data/invokd.sqlite"))
        .await
        .unwrap();
    let job = store.get_job(theirs, None).await.unwrap().unwrap();
    assert_eq!(job.status, JobStatus::InProgress);
    assert_eq!(job.lease.unwrap().owner, "worker-7/gpu-0");
    app.stop().await;
}
