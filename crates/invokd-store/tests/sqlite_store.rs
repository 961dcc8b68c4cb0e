//! The store's contract, checked against SQLite: claims, leases, fencing, requeue, terminal states.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::{collections::BTreeMap, sync::Arc};

use chrono::{Duration, Utc};
use invokd_core::{
    CancelOutcome, JobError, JobId, JobStatus, KeyId, NewJob, Outcome, UpstreamRef,
    keys::{KeyHash, KeyRecord},
    store::{
        AfterAttempt, Beat, ClaimRequest, DeliveryAttempt, DeliveryRepo, DeliveryState, JobRepo,
        KeyRepo, Stale,
    },
};
use invokd_store::SqliteStore;
use serde_json::json;

async fn store() -> (tempfile::TempDir, SqliteStore) {
    let dir = tempfile::tempdir().unwrap();
    let s = SqliteStore::open(&dir.path().join("db.sqlite"))
        .await
        .unwrap();
    (dir, s)
}

fn new_job(model: &str, priority: i32, key: KeyId) -> NewJob {
    NewJob {
        id: JobId::generate(),
        key_id: key,
        project: key.to_string(),
        model_id: model.into(),
        input: json!({"prompt": "p"}).as_object().unwrap().clone(),
        tags: vec![("type".into(), "test".into())],
        priority,
        created_at: Utc::now(),
        max_attempts: 2,
        start_deadline: None,
        webhook_url: None,
        run_timeout: None,
    }
}

static NO_CAPS: BTreeMap<String, u32> = BTreeMap::new();

fn claim<'a>(owner: &'a str, limit: u32, capacity: &'a BTreeMap<String, u32>) -> ClaimRequest<'a> {
    let now = Utc::now();
    ClaimRequest {
        owner,
        limit,
        capacity,
        default_capacity: 100,
        now,
        lease_until: now + Duration::seconds(30),
    }
}

#[tokio::test]
async fn insert_get_and_scope_by_key() {
    let (_d, s) = store().await;
    let (k1, k2) = (KeyId::generate(), KeyId::generate());
    let job = s.insert_job(new_job("m", 0, k1)).await.unwrap();
    assert_eq!(job.status, JobStatus::Queued);
    assert_eq!(job.tags, vec![("type".to_string(), "test".to_string())]);
    let got = s
        .get_job(job.id, Some(&k1.to_string()))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(got, job);
    assert!(
        s.get_job(job.id, Some(&k2.to_string()))
            .await
            .unwrap()
            .is_none()
    );
    assert!(s.get_job(JobId::generate(), None).await.unwrap().is_none());
    let mut dup = new_job("m", 0, k1);
    dup.id = job.id;
    assert!(matches!(
        s.insert_job(dup).await,
        Err(invokd_core::store::StoreError::Conflict)
    ));
}

#[tokio::test]
async fn claims_follow_priority_then_age_and_skip_saturated_models() {
    let (_d, s) = store().await;
    let k = KeyId::generate();
    let a = s.insert_job(new_job("a", 0, k)).await.unwrap();
    let b = s.insert_job(new_job("b", 0, k)).await.unwrap();
    let urgent = s.insert_job(new_job("a", -1, k)).await.unwrap();
    let a2 = s.insert_job(new_job("a", 0, k)).await.unwrap();
    // "b" is saturated and "a" may start two more.
    let caps = BTreeMap::from([("b".to_string(), 0), ("a".to_string(), 2)]);
    let got = s.claim_jobs(claim("w", 10, &caps)).await.unwrap();
    assert_eq!(
        got.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![urgent.id, a.id]
    );
    let caps = BTreeMap::from([("a".to_string(), 0)]);
    let got = s.claim_jobs(claim("w", 10, &caps)).await.unwrap();
    assert!(
        got.iter()
            .all(|j| j.status == JobStatus::InProgress && j.attempt == 1 && j.started_at.is_some())
    );
    assert_eq!(got.len(), 1);
    assert_eq!(got[0].id, b.id);
    let got = s.claim_jobs(claim("w", 10, &NO_CAPS)).await.unwrap();
    assert_eq!(got[0].id, a2.id);
    assert!(
        s.claim_jobs(claim("w", 10, &NO_CAPS))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn many_claimers_each_job_claimed_once() {
    let (_d, s) = store().await;
    let s = Arc::new(s);
    let k = KeyId::generate();
    for _ in 0..50 {
        s.insert_job(new_job("m", 0, k)).await.unwrap();
    }
    let mut tasks = Vec::new();
    for w in 0..8 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("w{w}");
            let mut mine = Vec::new();
            loop {
                let got = s.claim_jobs(claim(&owner, 3, &NO_CAPS)).await.unwrap();
                if got.is_empty() {
                    break mine;
                }
                mine.extend(got.into_iter().map(|j| j.id));
            }
        }));
    }
    let mut all = Vec::new();
    for t in tasks {
        all.extend(t.await.unwrap());
    }
    let n = all.len();
    all.sort();
    all.dedup();
    assert_eq!(n, 50);
    assert_eq!(all.len(), 50);
}

#[tokio::test]
async fn only_the_current_lease_can_finish_and_terminal_is_final() {
    let (_d, s) = store().await;
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let claimed = s
        .claim_jobs(claim("w1", 1, &NO_CAPS))
        .await
        .unwrap()
        .remove(0);
    let lease = claimed.lease.clone().unwrap();
    let mut stale = lease.clone();
    stale.owner = "w2".into();
    let out = json!({"images": []}).as_object().unwrap().clone();
    assert!(
        !s.finish(job.id, &stale, Outcome::Completed(out.clone()), Utc::now())
            .await
            .unwrap()
    );
    assert_eq!(
        s.heartbeat(job.id, &lease, Utc::now() + Duration::seconds(60))
            .await
            .unwrap(),
        Beat::Held
    );
    assert_eq!(
        s.heartbeat(job.id, &stale, Utc::now() + Duration::seconds(60))
            .await
            .unwrap(),
        Beat::Lost
    );
    assert!(
        s.finish(job.id, &lease, Outcome::Completed(out.clone()), Utc::now())
            .await
            .unwrap()
    );
    let done = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.output, Some(out.clone()));
    assert!(done.completed_at.is_some() && done.lease.is_none());
    // A second finish, even by the same holder, changes nothing.
    let failed = Outcome::Failed(JobError::new("internal_error", "x"));
    assert!(!s.finish(job.id, &lease, failed, Utc::now()).await.unwrap());
    assert_eq!(
        s.heartbeat(job.id, &lease, Utc::now()).await.unwrap(),
        Beat::Lost
    );
    assert_eq!(
        s.requeue_stale(Stale::AllRunning, Utc::now())
            .await
            .unwrap()
            .requeued,
        0
    );
    assert_eq!(
        s.get_job(job.id, None).await.unwrap().unwrap().status,
        JobStatus::Completed
    );
}

#[tokio::test]
async fn expired_leases_requeue_until_attempts_run_out() {
    let (_d, s) = store().await;
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let first = s
        .claim_jobs(claim("w1", 1, &NO_CAPS))
        .await
        .unwrap()
        .remove(0);
    // Not expired yet: nothing moves.
    assert_eq!(
        s.requeue_stale(Stale::Expired, Utc::now())
            .await
            .unwrap()
            .requeued,
        0
    );
    let later = Utc::now() + Duration::seconds(31);
    let r = s.requeue_stale(Stale::Expired, later).await.unwrap();
    assert_eq!((r.requeued, r.failed), (1, 0));
    // The old holder is fenced off.
    let out = json!({}).as_object().unwrap().clone();
    assert!(
        !s.finish(
            job.id,
            first.lease.as_ref().unwrap(),
            Outcome::Completed(out),
            Utc::now()
        )
        .await
        .unwrap()
    );
    let second = s
        .claim_jobs(claim("w2", 1, &NO_CAPS))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(second.attempt, 2);
    let r = s
        .requeue_stale(Stale::AllRunning, Utc::now())
        .await
        .unwrap();
    assert_eq!((r.requeued, r.failed), (0, 1));
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.error.unwrap().error_type, "runner_disconnected");
}

#[tokio::test]
async fn release_requeues_then_fails_on_the_last_attempt() {
    let (_d, s) = store().await;
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let err = JobError::new("runner_server_error", "boom");
    let c = s
        .claim_jobs(claim("w", 1, &NO_CAPS))
        .await
        .unwrap()
        .remove(0);
    assert!(
        s.release(job.id, c.lease.as_ref().unwrap(), err.clone(), Utc::now())
            .await
            .unwrap()
    );
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!((j.status, j.error), (JobStatus::Queued, None));
    let c = s
        .claim_jobs(claim("w", 1, &NO_CAPS))
        .await
        .unwrap()
        .remove(0);
    assert!(
        s.release(job.id, c.lease.as_ref().unwrap(), err.clone(), Utc::now())
            .await
            .unwrap()
    );
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.error, Some(err));
}

/// Claims the one queued job.
async fn claim_one(s: &SqliteStore) -> invokd_core::Job {
    s.claim_jobs(claim("w", 1, &NO_CAPS))
        .await
        .unwrap()
        .remove(0)
}

#[tokio::test]
async fn upstream_references_are_fenced_and_keep_a_job_from_failing_when_its_holder_dies() {
    let (_d, s) = store().await;
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let c = claim_one(&s).await;
    let lease = c.lease.clone().unwrap();
    let up = UpstreamRef {
        provider: "fal".into(),
        request_id: Some("req-1".into()),
        status_url: Some("https://queue/x/requests/req-1/status".into()),
        response_url: None,
        cancel_url: None,
    };
    let mut stale = lease.clone();
    stale.owner = "someone else".into();
    assert!(!s.set_upstream(job.id, &stale, Some(&up)).await.unwrap());
    assert_eq!(
        s.get_job(job.id, None).await.unwrap().unwrap().upstream,
        None
    );
    assert!(s.set_upstream(job.id, &lease, Some(&up)).await.unwrap());

    // Given back: queued again, the attempt not counted against it.
    assert!(s.give_back(job.id, &lease, Utc::now()).await.unwrap());
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!((j.status, j.max_attempts), (JobStatus::Queued, 3));
    assert_eq!(j.upstream.as_ref(), Some(&up), "kept for the next attempt");
    assert!(!s.give_back(job.id, &lease, Utc::now()).await.unwrap());

    // On its last attempt, a holder that dies leaves it queued (it runs upstream), not failed.
    for _ in 0..2 {
        let c = s
            .claim_jobs(claim("w", 1, &NO_CAPS))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(c.upstream.as_ref(), Some(&up));
        s.requeue_stale(Stale::AllRunning, Utc::now())
            .await
            .unwrap();
    }
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!((j.status, j.attempt), (JobStatus::Queued, 3));

    // Cleared, the same dying holder fails it as before.
    let c = claim_one(&s).await;
    assert!(
        s.set_upstream(job.id, c.lease.as_ref().unwrap(), None)
            .await
            .unwrap()
    );
    s.requeue_stale(Stale::AllRunning, Utc::now())
        .await
        .unwrap();
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!((j.status, j.upstream), (JobStatus::Failed, None));
}

#[tokio::test]
async fn keys_are_found_by_hash_only() {
    let (_d, s) = store().await;
    assert_eq!(s.count_keys().await.unwrap(), 0);
    let rec = KeyRecord::for_secret("invk_secret", "first", None, Utc::now());
    s.insert_key(rec.clone()).await.unwrap();
    assert_eq!(s.count_keys().await.unwrap(), 1);
    let found = s
        .find_key(&KeyHash::of("invk_secret"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(found.id, rec.id);
    assert!(
        s.find_key(&KeyHash::of("invk_other"))
            .await
            .unwrap()
            .is_none()
    );
}

#[tokio::test]
async fn reopening_keeps_committed_jobs() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let id = {
        let s = SqliteStore::open(&path).await.unwrap();
        s.insert_job(new_job("m", 0, KeyId::generate()))
            .await
            .unwrap()
            .id
    };
    let s = SqliteStore::open(&path).await.unwrap();
    assert_eq!(
        s.get_job(id, None).await.unwrap().unwrap().status,
        JobStatus::Queued
    );
}

#[tokio::test]
async fn cancel_stops_a_queued_job_at_once_and_a_running_one_by_request() {
    let (_d, s) = store().await;
    let (key, other) = (KeyId::generate(), KeyId::generate());
    let queued = s.insert_job(new_job("m", 0, key)).await.unwrap();
    assert_eq!(
        s.cancel(queued.id, Some(&other.to_string()), Utc::now())
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        s.cancel(queued.id, Some(&key.to_string()), Utc::now())
            .await
            .unwrap(),
        CancelOutcome::Canceled
    );
    let got = s.get_job(queued.id, None).await.unwrap().unwrap();
    assert_eq!(got.status, JobStatus::Canceled);
    assert_eq!(got.error.unwrap().error_type, "client_cancelled");
    assert!(
        s.claim_jobs(claim("w", 10, &NO_CAPS))
            .await
            .unwrap()
            .is_empty(),
        "a cancelled job never runs"
    );
    assert_eq!(
        s.cancel(queued.id, Some(&key.to_string()), Utc::now())
            .await
            .unwrap(),
        CancelOutcome::AlreadyDone
    );

    let running = s.insert_job(new_job("m", 0, key)).await.unwrap();
    let claimed = s
        .claim_jobs(claim("w", 1, &NO_CAPS))
        .await
        .unwrap()
        .remove(0);
    let lease = claimed.lease.unwrap();
    assert_eq!(
        s.cancel(running.id, Some(&key.to_string()), Utc::now())
            .await
            .unwrap(),
        CancelOutcome::Requested
    );
    assert!(
        s.get_job(running.id, None)
            .await
            .unwrap()
            .unwrap()
            .cancel_requested
    );
    assert_eq!(
        s.heartbeat(running.id, &lease, Utc::now() + Duration::seconds(30))
            .await
            .unwrap(),
        Beat::CancelRequested
    );
    // A run handed back after a cancel request ends CANCELED instead of going back to the queue.
    assert!(
        s.release(
            running.id,
            &lease,
            JobError::new("shutdown", "x"),
            Utc::now()
        )
        .await
        .unwrap()
    );
    assert_eq!(
        s.get_job(running.id, None).await.unwrap().unwrap().status,
        JobStatus::Canceled
    );

    // So does one whose holder died.
    let crashed = s.insert_job(new_job("m", 0, key)).await.unwrap();
    s.claim_jobs(claim("w", 1, &NO_CAPS)).await.unwrap();
    s.cancel(crashed.id, None, Utc::now()).await.unwrap();
    s.requeue_stale(Stale::AllRunning, Utc::now())
        .await
        .unwrap();
    assert_eq!(
        s.get_job(crashed.id, None).await.unwrap().unwrap().status,
        JobStatus::Canceled
    );
}

#[tokio::test]
async fn a_job_past_its_start_deadline_never_runs() {
    let (_d, s) = store().await;
    let key = KeyId::generate();
    let mut late = new_job("m", 0, key);
    late.start_deadline = Some(Utc::now() - Duration::seconds(1));
    let late = s.insert_job(late).await.unwrap();
    let mut timely = new_job("m", 0, key);
    timely.start_deadline = Some(Utc::now() + Duration::seconds(60));
    let timely = s.insert_job(timely).await.unwrap();

    let claimed = s.claim_jobs(claim("w", 10, &NO_CAPS)).await.unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![timely.id]
    );
    assert_eq!(s.expire_deadlines(Utc::now()).await.unwrap(), 1);
    let got = s.get_job(late.id, None).await.unwrap().unwrap();
    assert_eq!(got.status, JobStatus::Failed);
    assert_eq!(got.error.unwrap().error_type, "request_timeout");
}

#[tokio::test]
async fn queue_position_counts_the_jobs_of_the_model_that_run_first() {
    let (_d, s) = store().await;
    let key = KeyId::generate();
    let a = s.insert_job(new_job("m", 0, key)).await.unwrap();
    let low = s.insert_job(new_job("m", 10, key)).await.unwrap();
    let b = s.insert_job(new_job("m", 0, key)).await.unwrap();
    let other_model = s.insert_job(new_job("n", 0, key)).await.unwrap();
    assert_eq!(s.queue_position(&a).await.unwrap(), 0);
    assert_eq!(
        s.queue_position(&b).await.unwrap(),
        1,
        "normal priority passes the low one"
    );
    assert_eq!(s.queue_position(&low).await.unwrap(), 2);
    assert_eq!(s.queue_position(&other_model).await.unwrap(), 0);
    let first = s.claim_jobs(claim("w", 1, &NO_CAPS)).await.unwrap();
    assert_eq!(first[0].id, a.id);
    assert_eq!(s.queue_position(&low).await.unwrap(), 1);
}

#[tokio::test]
async fn every_way_a_job_with_a_webhook_ends_puts_one_delivery_in_the_outbox() {
    let (_d, s) = store().await;
    let key = KeyId::generate();
    let mut with_hook = new_job("m", 0, key);
    with_hook.webhook_url = Some("https://example.com/hook".into());
    let cancelled = s.insert_job(with_hook.clone()).await.unwrap();
    s.cancel(cancelled.id, None, Utc::now()).await.unwrap();
    let mut finished = with_hook.clone();
    finished.id = JobId::generate();
    let finished = s.insert_job(finished).await.unwrap();
    let plain = s.insert_job(new_job("m", 0, key)).await.unwrap();
    for j in s.claim_jobs(claim("w", 10, &NO_CAPS)).await.unwrap() {
        s.finish(
            j.id,
            j.lease.as_ref().unwrap(),
            Outcome::Completed(Default::default()),
            Utc::now(),
        )
        .await
        .unwrap();
    }
    assert!(s.delivery_of(plain.id).await.unwrap().is_none());
    let now = Utc::now();
    let claimed = s
        .claim_deliveries("d1", 10, now, now + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(claimed.len(), 2);
    assert!(
        s.claim_deliveries("d2", 10, now, now + Duration::seconds(30))
            .await
            .unwrap()
            .is_empty(),
        "leased"
    );
    let d = claimed.iter().find(|d| d.job_id == finished.id).unwrap();
    let attempt = |code| DeliveryAttempt {
        at: Utc::now(),
        status_code: Some(code),
        error: None,
    };
    assert!(
        !s.record_attempt(d.id, "d2", attempt(200), AfterAttempt::Delivered)
            .await
            .unwrap(),
        "fenced"
    );
    assert!(
        s.record_attempt(d.id, "d1", attempt(500), AfterAttempt::RetryAt(now))
            .await
            .unwrap()
    );
    let again = s
        .claim_deliveries("d2", 10, Utc::now(), Utc::now() + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(again.len(), 1);
    assert_eq!(again[0].attempts.len(), 1);
    assert!(
        s.record_attempt(d.id, "d2", attempt(200), AfterAttempt::Delivered)
            .await
            .unwrap()
    );
    let shown = s.delivery_of(finished.id).await.unwrap().unwrap();
    assert_eq!(shown.state, DeliveryState::Delivered);
    assert_eq!(
        shown
            .attempts
            .iter()
            .map(|a| a.status_code)
            .collect::<Vec<_>>(),
        vec![Some(500), Some(200)]
    );
}

#[tokio::test]
async fn ended_jobs_past_retention_are_listed_once_and_lose_their_output() {
    let (_d, s) = store().await;
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let queued = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let j = s
        .claim_jobs(claim("w", 1, &NO_CAPS))
        .await
        .unwrap()
        .remove(0);
    let out = json!({"images": []}).as_object().unwrap().clone();
    s.finish(
        j.id,
        j.lease.as_ref().unwrap(),
        Outcome::Completed(out),
        Utc::now(),
    )
    .await
    .unwrap();
    let later = Utc::now() + Duration::seconds(1);
    assert_eq!(
        s.jobs_to_expire(later, 10).await.unwrap(),
        vec![job.id],
        "only ended jobs"
    );
    s.mark_expired(job.id, later).await.unwrap();
    assert!(s.jobs_to_expire(later, 10).await.unwrap().is_empty());
    let got = s.get_job(job.id, None).await.unwrap().unwrap();
    assert!(got.output.is_none() && got.expired_at.is_some());
    assert_eq!(got.status, JobStatus::Completed);
    assert!(
        s.get_job(queued.id, None)
            .await
            .unwrap()
            .unwrap()
            .expired_at
            .is_none()
    );
}

#[tokio::test]
async fn concurrent_inserts_share_commits_and_one_bad_row_fails_alone() {
    let (dir, s) = store().await;
    let key = KeyId::generate();
    let first = s.insert_job(new_job("m", 0, key)).await.unwrap();
    let mut tasks = Vec::new();
    for i in 0..200 {
        let s = s.clone();
        let mut job = new_job("m", 0, key);
        if i == 100 {
            job.id = first.id; // a duplicate id, in the middle of a batch
        }
        tasks.push(tokio::spawn(async move { s.insert_job(job).await }));
    }
    let mut ok = Vec::new();
    let mut conflicts = 0;
    for t in tasks {
        match t.await.unwrap() {
            Ok(job) => ok.push(job.id),
            Err(invokd_core::store::StoreError::Conflict) => conflicts += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok.len(), conflicts), (199, 1));
    // Every acknowledged row is committed: a fresh store on the same file sees them all.
    drop(s);
    let reopened = SqliteStore::open(&dir.path().join("db.sqlite"))
        .await
        .unwrap();
    assert_eq!(reopened.queued_count(Some(key)).await.unwrap(), 200);
    for id in ok {
        assert!(reopened.get_job(id, None).await.unwrap().is_some());
    }
}
