//! The store's contract, written once against `dyn Store` and run on both stores, SQLite and
//! PostgreSQL (see `common` for the database the PostgreSQL half needs): claims, leases,
//! fencing, requeue, terminal states, idempotency, listing, cancel, deadlines, the queue's
//! figures, webhook deliveries, retention, keys and logs. What only one store has (reopening
//! a file, NOTIFY wake-ups, several replicas) is at the end.
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::{collections::BTreeMap, sync::Arc};

use chrono::Duration;
use common::{NO_CAPS, PgSchema, TestStore, claim, claim_at, claim_one, new_job};
use invokd_core::{
    CancelOutcome, JobError, JobId, JobStatus, KeyId, Outcome, UpstreamRef,
    ids::WorkerTokenId,
    keys::{KeyHash, KeyRecord},
    provider::LogLine,
    store::{
        AfterAttempt, Beat, DeliveryAttempt, DeliveryState, IdempotencyKey, Inserted, JobRepo,
        ListQuery, QueueSlot, Stale, Store, StoreError,
    },
    workers::{self, ModelPatterns, WorkerPresence, WorkerToken},
};
use serde_json::json;

type S = Arc<dyn Store>;

/// Runs each named test, an `async fn(Arc<dyn Store>)`, once per store, on a fresh store.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = crate::common::TestStore::sqlite().await;
                    super::$name(t.store.clone()).await;
                    t.close().await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let t = crate::common::TestStore::postgres().await;
                    super::$name(t.store.clone()).await;
                    t.close().await;
                }
            )*
        }
    };
}

async fn insert_get_and_scope_by_key(s: S) {
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

async fn claims_follow_priority_then_age_and_skip_saturated_models(s: S) {
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

async fn many_claimers_each_job_claimed_once(s: S) {
    let k = KeyId::generate();
    // Several models, so that claims lock rows of more than one.
    for i in 0..200 {
        s.insert_job(new_job(["m", "n", "o"][i % 3], 0, k))
            .await
            .unwrap();
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
    assert_eq!(n, 200);
    assert_eq!(all.len(), 200);
    assert_eq!(s.queued_count(None).await.unwrap(), 0);
}

async fn only_the_current_lease_can_finish_and_terminal_is_final(s: S) {
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let claimed = claim_one(&*s, "w1").await;
    let lease = claimed.lease.clone().unwrap();
    let mut stale = lease.clone();
    stale.owner = "w2".into();
    let out = json!({"images": []}).as_object().unwrap().clone();
    assert!(
        !s.finish(
            job.id,
            &stale,
            Outcome::Completed(out.clone()),
            common::now()
        )
        .await
        .unwrap()
    );
    assert_eq!(
        s.heartbeat(job.id, &lease, common::now() + Duration::seconds(60))
            .await
            .unwrap(),
        Beat::Held
    );
    assert_eq!(
        s.heartbeat(job.id, &stale, common::now() + Duration::seconds(60))
            .await
            .unwrap(),
        Beat::Lost
    );
    assert!(
        s.finish(
            job.id,
            &lease,
            Outcome::Completed(out.clone()),
            common::now()
        )
        .await
        .unwrap()
    );
    let done = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!(done.status, JobStatus::Completed);
    assert_eq!(done.output.as_deref(), Some(&out));
    assert!(done.completed_at.is_some() && done.lease.is_none());
    // A second finish, even by the same holder, changes nothing.
    let failed = Outcome::Failed(JobError::new("internal_error", "x"));
    assert!(
        !s.finish(job.id, &lease, failed, common::now())
            .await
            .unwrap()
    );
    assert_eq!(
        s.heartbeat(job.id, &lease, common::now()).await.unwrap(),
        Beat::Lost
    );
    assert_eq!(
        s.requeue_stale(Stale::AllRunning, common::now())
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

async fn expired_leases_requeue_until_attempts_run_out(s: S) {
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let first = claim_one(&*s, "w1").await;
    // Not expired yet: nothing moves.
    assert_eq!(
        s.requeue_stale(Stale::Expired, common::now())
            .await
            .unwrap()
            .requeued,
        0
    );
    let later = common::now() + Duration::seconds(31);
    let r = s.requeue_stale(Stale::Expired, later).await.unwrap();
    assert_eq!((r.requeued, r.failed), (1, 0));
    // The old holder is fenced off.
    let out = json!({}).as_object().unwrap().clone();
    assert!(
        !s.finish(
            job.id,
            first.lease.as_ref().unwrap(),
            Outcome::Completed(out),
            common::now()
        )
        .await
        .unwrap()
    );
    let second = claim_one(&*s, "w2").await;
    assert_eq!(second.attempt, 2);
    let r = s
        .requeue_stale(Stale::AllRunning, common::now())
        .await
        .unwrap();
    assert_eq!((r.requeued, r.failed), (0, 1));
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.error.unwrap().error_type, "runner_disconnected");
}

async fn release_requeues_then_fails_on_the_last_attempt(s: S) {
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let err = JobError::new("runner_server_error", "boom");
    let c = claim_one(&*s, "w").await;
    assert!(
        s.release(
            job.id,
            c.lease.as_ref().unwrap(),
            err.clone(),
            common::now()
        )
        .await
        .unwrap()
    );
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!((j.status, j.error), (JobStatus::Queued, None));
    let c = claim_one(&*s, "w").await;
    assert!(
        s.release(
            job.id,
            c.lease.as_ref().unwrap(),
            err.clone(),
            common::now()
        )
        .await
        .unwrap()
    );
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Failed);
    assert_eq!(j.error, Some(err));
}

async fn keys_are_found_by_hash_only(s: S) {
    assert_eq!(s.count_keys().await.unwrap(), 0);
    let rec = KeyRecord::for_secret("invk_secret", "first", None, common::now());
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

async fn cancel_stops_a_queued_job_at_once_and_a_running_one_by_request(s: S) {
    let (key, other) = (KeyId::generate(), KeyId::generate());
    let queued = s.insert_job(new_job("m", 0, key)).await.unwrap();
    assert_eq!(
        s.cancel(queued.id, Some(&other.to_string()), common::now())
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        s.cancel(queued.id, Some(&key.to_string()), common::now())
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
        s.cancel(queued.id, Some(&key.to_string()), common::now())
            .await
            .unwrap(),
        CancelOutcome::AlreadyDone
    );

    let running = s.insert_job(new_job("m", 0, key)).await.unwrap();
    let claimed = claim_one(&*s, "w").await;
    let lease = claimed.lease.unwrap();
    assert_eq!(
        s.cancel(running.id, Some(&key.to_string()), common::now())
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
        s.heartbeat(running.id, &lease, common::now() + Duration::seconds(30))
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
            common::now()
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
    s.cancel(crashed.id, None, common::now()).await.unwrap();
    s.requeue_stale(Stale::AllRunning, common::now())
        .await
        .unwrap();
    assert_eq!(
        s.get_job(crashed.id, None).await.unwrap().unwrap().status,
        JobStatus::Canceled
    );
}

async fn a_job_past_its_start_deadline_never_runs(s: S) {
    let key = KeyId::generate();
    let mut late = new_job("m", 0, key);
    late.start_deadline = Some(common::now() - Duration::seconds(1));
    let late = s.insert_job(late).await.unwrap();
    let mut timely = new_job("m", 0, key);
    timely.start_deadline = Some(common::now() + Duration::seconds(60));
    let timely = s.insert_job(timely).await.unwrap();

    let claimed = s.claim_jobs(claim("w", 10, &NO_CAPS)).await.unwrap();
    assert_eq!(
        claimed.iter().map(|j| j.id).collect::<Vec<_>>(),
        vec![timely.id]
    );
    assert_eq!(s.expire_deadlines(common::now()).await.unwrap(), 1);
    let got = s.get_job(late.id, None).await.unwrap().unwrap();
    assert_eq!(got.status, JobStatus::Failed);
    assert_eq!(got.error.unwrap().error_type, "request_timeout");
}

async fn queue_position_counts_the_jobs_of_the_model_that_run_first(s: S) {
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

async fn queue_order_lists_a_models_queued_jobs_in_the_order_they_run(s: S) {
    let key = KeyId::generate();
    let a = s.insert_job(new_job("m", 0, key)).await.unwrap();
    let low = s.insert_job(new_job("m", 10, key)).await.unwrap();
    let b = s.insert_job(new_job("m", 0, key)).await.unwrap();
    let high = s.insert_job(new_job("m", -5, key)).await.unwrap();
    s.insert_job(new_job("n", 0, key)).await.unwrap();
    let order = s.queue_order("m").await.unwrap();
    let ids: Vec<_> = order.iter().map(|slot| slot.id).collect();
    assert_eq!(ids, vec![high.id, a.id, b.id, low.id]);
    // A job's slot, made from the job as the store returns it, is the one listed, and its
    // rank is its queue position.
    for job in [&a, &low, &b, &high] {
        let slot = QueueSlot::of(job);
        let rank = order.partition_point(|s| *s < slot) as u64;
        assert_eq!(order[rank as usize], slot);
        assert_eq!(rank, s.queue_position(job).await.unwrap());
    }
    s.claim_jobs(claim("w", 1, &NO_CAPS)).await.unwrap();
    let ids: Vec<_> = s
        .queue_order("m")
        .await
        .unwrap()
        .iter()
        .map(|slot| slot.id)
        .collect();
    assert_eq!(ids, vec![a.id, b.id, low.id], "a started job has no place");
    assert!(s.queue_order("absent").await.unwrap().is_empty());

    // Jobs created at the same moment run in the order of their ids: the store's order of
    // ids (text on SQLite, uuid on PostgreSQL) is the slots' (the uuid's bytes).
    let at = common::now();
    let mut tied = Vec::new();
    for i in 1..=12u128 {
        let mut job = new_job("tied", 0, key);
        job.created_at = at;
        job.id = JobId::from(uuid::Uuid::from_u128(
            i.wrapping_mul(0x9E37_79B9_7F4A_7C15_F39C_C060_5CED_C835),
        ));
        tied.push(s.insert_job(job).await.unwrap());
    }
    let order = s.queue_order("tied").await.unwrap();
    let mut expected: Vec<_> = tied.iter().map(QueueSlot::of).collect();
    expected.sort_unstable();
    assert_eq!(order, expected);
    for job in &tied {
        let rank = order.partition_point(|s| *s < QueueSlot::of(job)) as u64;
        assert_eq!(rank, s.queue_position(job).await.unwrap());
    }
}

async fn every_way_a_job_with_a_webhook_ends_puts_one_delivery_in_the_outbox(s: S) {
    let key = KeyId::generate();
    let mut with_hook = new_job("m", 0, key);
    with_hook.webhook_url = Some("https://example.com/hook".into());
    let cancelled = s.insert_job(with_hook.clone()).await.unwrap();
    s.cancel(cancelled.id, None, common::now()).await.unwrap();
    let mut finished = with_hook.clone();
    finished.id = JobId::generate();
    let finished = s.insert_job(finished).await.unwrap();
    let plain = s.insert_job(new_job("m", 0, key)).await.unwrap();
    for j in s.claim_jobs(claim("w", 10, &NO_CAPS)).await.unwrap() {
        s.finish(
            j.id,
            j.lease.as_ref().unwrap(),
            Outcome::Completed(Default::default()),
            common::now(),
        )
        .await
        .unwrap();
    }
    assert!(s.delivery_of(plain.id).await.unwrap().is_none());
    let now = common::now();
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
        at: common::now(),
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
        .claim_deliveries(
            "d2",
            10,
            common::now(),
            common::now() + Duration::seconds(30),
        )
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

async fn ended_jobs_past_retention_are_listed_once_and_lose_their_output(s: S) {
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let queued = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let j = claim_one(&*s, "w").await;
    let out = json!({"images": []}).as_object().unwrap().clone();
    s.finish(
        j.id,
        j.lease.as_ref().unwrap(),
        Outcome::Completed(out),
        common::now(),
    )
    .await
    .unwrap();
    let later = common::now() + Duration::seconds(1);
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

/// 200 concurrent inserts, one of them with an id already taken: it alone fails, with
/// `Conflict`, and every other is stored.
async fn insert_200_with_one_duplicate(s: &S) -> (KeyId, Vec<JobId>) {
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
            Err(StoreError::Conflict) => conflicts += 1,
            Err(e) => panic!("{e}"),
        }
    }
    assert_eq!((ok.len(), conflicts), (199, 1));
    (key, ok)
}

async fn concurrent_inserts_and_one_bad_row_fails_alone(s: S) {
    let (key, ok) = insert_200_with_one_duplicate(&s).await;
    assert_eq!(s.queued_count(Some(key)).await.unwrap(), 200);
    for id in ok {
        assert!(s.get_job(id, None).await.unwrap().is_some());
    }
}

async fn every_field_comes_back_as_it_was_stored(s: S) {
    let key = KeyId::generate();
    let mut job = new_job("fal-ai/flux/schnell", -3, key);
    job.project = "proj".into();
    job.input =
        json!({"prompt": "a city", "n": 2, "nested": {"x": [1, 2.5, null, true]}, "é": "ü"})
            .as_object()
            .unwrap()
            .clone()
            .into();
    job.tags = vec![("b".into(), "2".into()), ("a".into(), "1".into())];
    job.max_attempts = 5;
    job.start_deadline = Some(job.created_at + Duration::microseconds(1_234_567));
    job.webhook_url = Some("https://example.com/hook?x=1".into());
    job.run_timeout = Some(std::time::Duration::from_millis(90_500));
    let stored = s.insert_job(job.clone()).await.unwrap();
    let got = s.get_job(job.id, Some("proj")).await.unwrap().unwrap();
    assert_eq!(got, stored);
    assert_eq!(
        (got.id, got.key_id, &got.project, &got.model_id),
        (job.id, key, &job.project, &job.model_id)
    );
    assert_eq!((&got.input, &got.tags), (&job.input, &job.tags));
    assert_eq!(
        (got.priority, got.created_at, got.max_attempts, got.attempt),
        (-3, job.created_at, 5, 0)
    );
    assert_eq!(
        (got.start_deadline, &got.webhook_url, got.run_timeout),
        (job.start_deadline, &job.webhook_url, job.run_timeout)
    );
    assert!(got.started_at.is_none() && got.completed_at.is_none() && got.lease.is_none());
    assert!(got.output.is_none() && got.error.is_none() && got.expired_at.is_none());
    assert!(!got.cancel_requested);
    s.check().await.unwrap();
}

async fn a_claim_never_takes_more_of_a_model_than_its_capacity(s: S) {
    let k = KeyId::generate();
    for _ in 0..5 {
        s.insert_job(new_job("a", 0, k)).await.unwrap();
        s.insert_job(new_job("b", 0, k)).await.unwrap();
        s.insert_job(new_job("c", 0, k)).await.unwrap();
    }
    // "a" may start 2, "b" 1, and models not named take the default: none here.
    let caps = BTreeMap::from([("a".to_string(), 2), ("b".to_string(), 1)]);
    let mut req = claim("w", 10, &caps);
    req.default_capacity = 0;
    let got = s.claim_jobs(req).await.unwrap();
    let count = |m: &str| got.iter().filter(|j| j.model_id == m).count();
    assert_eq!((count("a"), count("b"), count("c")), (2, 1, 0));
    // The limit caps the whole claim, taking the best jobs across models.
    let caps = BTreeMap::new();
    let got = s.claim_jobs(claim("w", 4, &caps)).await.unwrap();
    assert_eq!(got.len(), 4);
    assert!(
        got.windows(2)
            .all(|w| (w[0].priority, w[0].created_at) <= (w[1].priority, w[1].created_at))
    );
    for j in &got {
        let lease = j.lease.as_ref().unwrap();
        assert_eq!((lease.owner.as_str(), lease.attempt), ("w", 1));
    }
    assert!(s.claim_jobs(claim("w", 0, &caps)).await.unwrap().is_empty());
}

/// An operator's catalog may hold hundreds of models: a claim takes jobs of every one of them,
/// within its limit and each model's capacity.
async fn a_claim_reaches_the_jobs_of_hundreds_of_models(s: S) {
    let k = KeyId::generate();
    for m in 0..600 {
        for _ in 0..2 {
            s.insert_job(new_job(&format!("m{m:03}"), 0, k))
                .await
                .unwrap();
        }
    }
    // The most urgent job, of the last model by name, goes first whatever the model.
    let urgent = s.insert_job(new_job("m599", -1, k)).await.unwrap();
    let got = s.claim_jobs(claim("w", 1, &NO_CAPS)).await.unwrap();
    assert_eq!(got[0].id, urgent.id);
    let mut req = claim("w", 1000, &NO_CAPS);
    req.default_capacity = 1;
    let got = s.claim_jobs(req).await.unwrap();
    let models: std::collections::BTreeSet<_> = got.iter().map(|j| j.model_id.clone()).collect();
    assert_eq!((got.len(), models.len()), (600, 600));
    let got = s.claim_jobs(claim("w", 450, &NO_CAPS)).await.unwrap();
    assert_eq!(got.len(), 450);
    let got = s.claim_jobs(claim("w", 1000, &NO_CAPS)).await.unwrap();
    assert_eq!(got.len(), 150);
}

async fn a_claim_starts_no_earlier_than_the_job_was_created(s: S) {
    let k = KeyId::generate();
    let mut job = new_job("m", 0, k);
    let now = common::now();
    job.created_at = now + Duration::seconds(5); // a clock ahead of the claimer's
    s.insert_job(job).await.unwrap();
    let got = s
        .claim_jobs(claim_at("w", 1, &NO_CAPS, now))
        .await
        .unwrap()
        .remove(0);
    assert_eq!(got.started_at, Some(got.created_at));
    assert_eq!(got.lease.unwrap().expires_at, now + Duration::seconds(30));
}

async fn failed_and_canceled_runs_keep_their_error_and_no_output(s: S) {
    let k = KeyId::generate();
    let a = s.insert_job(new_job("m", 0, k)).await.unwrap();
    let b = s.insert_job(new_job("m", 0, k)).await.unwrap();
    let claimed = s.claim_jobs(claim("w", 2, &NO_CAPS)).await.unwrap();
    let lease = |id| {
        claimed
            .iter()
            .find(|j| j.id == id)
            .unwrap()
            .lease
            .clone()
            .unwrap()
    };
    let err = JobError::new("internal_error", "the model broke");
    assert!(
        s.finish(
            a.id,
            &lease(a.id),
            Outcome::Failed(err.clone()),
            common::now()
        )
        .await
        .unwrap()
    );
    let cancelled = invokd_core::job::cancelled_error();
    assert!(
        s.finish(
            b.id,
            &lease(b.id),
            Outcome::Canceled(cancelled.clone()),
            common::now()
        )
        .await
        .unwrap()
    );
    let a = s.get_job(a.id, None).await.unwrap().unwrap();
    assert_eq!(
        (a.status, a.error, a.output),
        (JobStatus::Failed, Some(err), None)
    );
    let b = s.get_job(b.id, None).await.unwrap().unwrap();
    assert_eq!(
        (b.status, b.error, b.output),
        (JobStatus::Canceled, Some(cancelled), None)
    );
    // Released after the end: fenced, nothing changes.
    assert!(
        !s.release(b.id, &lease(b.id), JobError::new("x", "x"), common::now())
            .await
            .unwrap()
    );
}

async fn a_release_by_anyone_but_the_holder_changes_nothing(s: S) {
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let c = claim_one(&*s, "w").await;
    let mut other = c.lease.clone().unwrap();
    other.attempt += 1;
    assert!(
        !s.release(job.id, &other, JobError::new("x", "x"), common::now())
            .await
            .unwrap()
    );
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!((j.status, j.lease), (JobStatus::InProgress, c.lease));
}

async fn a_sweep_takes_back_only_expired_leases_unless_told_all(s: S) {
    let k = KeyId::generate();
    let now = common::now();
    for _ in 0..3 {
        s.insert_job(new_job("m", 0, k)).await.unwrap();
    }
    let mut short = claim_at("short", 1, &NO_CAPS, now);
    short.lease_until = now + Duration::seconds(5);
    let short = s.claim_jobs(short).await.unwrap().remove(0);
    let long = s
        .claim_jobs(claim_at("long", 2, &NO_CAPS, now))
        .await
        .unwrap();
    assert_eq!(long.len(), 2);
    // A heartbeat moves the expiry: the first long one now outlives the short one's sweep too.
    let beat_until = now + Duration::seconds(60);
    assert_eq!(
        s.heartbeat(long[0].id, long[0].lease.as_ref().unwrap(), beat_until)
            .await
            .unwrap(),
        Beat::Held
    );
    let r = s
        .requeue_stale(Stale::Expired, now + Duration::seconds(10))
        .await
        .unwrap();
    assert_eq!((r.requeued, r.failed), (1, 0));
    let back = s.get_job(short.id, None).await.unwrap().unwrap();
    assert_eq!((back.status, back.lease), (JobStatus::Queued, None));
    assert_eq!(back.attempt, 1, "the attempt counts the claims made");
    assert_eq!(
        s.heartbeat(short.id, short.lease.as_ref().unwrap(), beat_until)
            .await
            .unwrap(),
        Beat::Lost
    );
    let r = s
        .requeue_stale(Stale::Expired, now + Duration::seconds(40))
        .await
        .unwrap();
    assert_eq!(
        (r.requeued, r.failed),
        (1, 0),
        "the one without a heartbeat"
    );
    let r = s.requeue_stale(Stale::AllRunning, now).await.unwrap();
    assert_eq!((r.requeued, r.failed), (1, 0), "all, expired or not");
    assert_eq!(s.queued_count(Some(k)).await.unwrap(), 3);
}

async fn a_start_up_takes_back_only_the_leases_held_under_its_prefix(s: S) {
    let k = KeyId::generate();
    let now = common::now();
    let mut last_try = new_job("m", 0, k);
    last_try.max_attempts = 1;
    let last_try = s.insert_job(last_try).await.unwrap();
    for _ in 0..3 {
        s.insert_job(new_job("m", 0, k)).await.unwrap();
    }
    // Two lives of this process, and a remote holder whose lease has long expired.
    let before = s
        .claim_jobs(claim_at("proc-a:1", 1, &NO_CAPS, now))
        .await
        .unwrap();
    assert_eq!(before[0].id, last_try.id);
    let ours = s
        .claim_jobs(claim_at("proc-a:2", 1, &NO_CAPS, now))
        .await
        .unwrap()
        .remove(0);
    let mut remote = claim_at("worker-b", 2, &NO_CAPS, now);
    remote.lease_until = now + Duration::seconds(1);
    let theirs = s.claim_jobs(remote).await.unwrap();
    assert_eq!(theirs.len(), 2);

    let r = s
        .requeue_stale(
            Stale::HeldBy {
                owner_prefix: "proc-a:",
            },
            now + Duration::seconds(10),
        )
        .await
        .unwrap();
    assert_eq!((r.requeued, r.failed), (1, 1), "ours, expired or not");
    let j = s.get_job(ours.id, None).await.unwrap().unwrap();
    assert_eq!((j.status, j.lease), (JobStatus::Queued, None));
    let j = s.get_job(last_try.id, None).await.unwrap().unwrap();
    assert_eq!(j.status, JobStatus::Failed, "no attempt left");
    assert_eq!(j.error.unwrap().error_type, "runner_disconnected");
    for job in &theirs {
        let j = s.get_job(job.id, None).await.unwrap().unwrap();
        assert_eq!(
            (j.status, j.lease.as_ref()),
            (JobStatus::InProgress, job.lease.as_ref()),
            "another holder's lease stays, even expired"
        );
    }
    // A prefix that names no holder takes nothing, and the remote holder still holds its jobs.
    let r = s
        .requeue_stale(
            Stale::HeldBy {
                owner_prefix: "proc-a:",
            },
            now,
        )
        .await
        .unwrap();
    assert_eq!((r.requeued, r.failed), (0, 0));
    let lease = theirs[0].lease.as_ref().unwrap();
    let beat = s
        .heartbeat(theirs[0].id, lease, now + Duration::seconds(60))
        .await
        .unwrap();
    assert_eq!(beat, Beat::Held);
}

fn idem(key: &str, body: &str) -> IdempotencyKey {
    IdempotencyKey {
        key: key.into(),
        body_hash: body.into(),
        not_before: common::now() - Duration::hours(24),
    }
}

async fn an_idempotency_key_replays_its_job_and_refuses_another_body(s: S) {
    let (key, other_key) = (KeyId::generate(), KeyId::generate());
    let first = new_job("m", 0, key);
    let Inserted::New(made) = s
        .insert_job_idempotent(first.clone(), idem("k1", "h1"))
        .await
        .unwrap()
    else {
        panic!("the first use makes the job");
    };
    assert_eq!(made.id, first.id);
    // Same key, same body: the first job, and no new one.
    let again = s
        .insert_job_idempotent(new_job("m", 0, key), idem("k1", "h1"))
        .await
        .unwrap();
    assert_eq!(again, Inserted::Replayed(made.clone()));
    // Same key, another body: refused.
    assert_eq!(
        s.insert_job_idempotent(new_job("m", 0, key), idem("k1", "h2"))
            .await
            .unwrap(),
        Inserted::KeyReused
    );
    // Keys are per access key: another key's "k1" is its own.
    assert!(matches!(
        s.insert_job_idempotent(new_job("m", 0, other_key), idem("k1", "h2"))
            .await
            .unwrap(),
        Inserted::New(_)
    ));
    assert_eq!(s.queued_count(Some(key)).await.unwrap(), 1);
    // Past its window the record is forgotten, and the key makes a new job.
    let mut later = idem("k1", "h2");
    later.not_before = made.created_at + Duration::microseconds(1);
    let fresh = new_job("m", 0, key);
    assert_eq!(
        s.insert_job_idempotent(fresh.clone(), later.clone())
            .await
            .unwrap(),
        Inserted::New(s.get_job(fresh.id, None).await.unwrap().unwrap())
    );
    assert!(matches!(
        s.insert_job_idempotent(new_job("m", 0, key), later)
            .await
            .unwrap(),
        Inserted::Replayed(j) if j.id == fresh.id
    ));
    // A taken id is still a conflict, and takes no key.
    let mut dup = new_job("m", 0, key);
    dup.id = made.id;
    assert!(matches!(
        s.insert_job_idempotent(dup, idem("k2", "h")).await,
        Err(StoreError::Conflict)
    ));
    assert!(matches!(
        s.insert_job_idempotent(new_job("m", 0, key), idem("k2", "h"))
            .await
            .unwrap(),
        Inserted::New(_)
    ));
}

async fn concurrent_creates_with_one_idempotency_key_make_one_job(s: S) {
    let key = KeyId::generate();
    let mut tasks = Vec::new();
    for _ in 0..16 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            s.insert_job_idempotent(new_job("m", 0, key), idem("same", "h"))
                .await
                .unwrap()
        }));
    }
    let mut made = Vec::new();
    let mut replayed = Vec::new();
    for t in tasks {
        match t.await.unwrap() {
            Inserted::New(j) => made.push(j.id),
            Inserted::Replayed(j) => replayed.push(j.id),
            Inserted::KeyReused => panic!("same body"),
        }
    }
    assert_eq!(made.len(), 1);
    assert!(replayed.iter().all(|id| *id == made[0]));
    assert_eq!(s.queued_count(Some(key)).await.unwrap(), 1);
}

async fn listing_filters_and_pages_newest_first(s: S) {
    let key = KeyId::generate();
    let t0 = common::now() - Duration::hours(1);
    let mut ids = Vec::new();
    for i in 0..7 {
        let mut j = new_job(if i % 2 == 0 { "even" } else { "odd" }, 0, key);
        j.project = if i < 5 { "p1" } else { "p2" }.into();
        j.created_at = t0 + Duration::seconds(i);
        j.tags = vec![("n".into(), i.to_string()), ("kind".into(), "test".into())];
        ids.push(s.insert_job(j).await.unwrap().id);
    }
    // Two at the same instant: the id breaks the tie.
    let mut twin = new_job("even", 0, key);
    twin.project = "p1".into();
    twin.created_at = t0 + Duration::seconds(4);
    let twin = s.insert_job(twin).await.unwrap().id;
    let list = |q: ListQuery| {
        let s = s.clone();
        async move {
            s.list_jobs(&q)
                .await
                .unwrap()
                .into_iter()
                .map(|j| j.id)
                .collect::<Vec<_>>()
        }
    };
    let q = |f: fn(&mut ListQuery)| {
        let mut q = ListQuery {
            limit: 100,
            ..ListQuery::default()
        };
        f(&mut q);
        q
    };
    let all = list(q(|_| {})).await;
    let (lo, hi) = if twin > ids[4] {
        (ids[4], twin)
    } else {
        (twin, ids[4])
    };
    assert_eq!(
        all,
        vec![ids[6], ids[5], hi, lo, ids[3], ids[2], ids[1], ids[0]]
    );
    assert_eq!(
        list(q(|q| q.project = Some("p2".into()))).await,
        vec![ids[6], ids[5]]
    );
    assert_eq!(
        list(q(|q| {
            q.project = Some("p1".into());
            q.model_id = Some("odd".into());
        }))
        .await,
        vec![ids[3], ids[1]]
    );
    assert_eq!(
        list(q(|q| q.tag = Some(("n".into(), "3".into())))).await,
        vec![ids[3]]
    );
    assert!(
        list(q(|q| q.tag = Some(("3".into(), "n".into()))))
            .await
            .is_empty(),
        "a tag is a name and a value, in that order"
    );
    assert_eq!(
        list(q(|q| q.tag = Some(("kind".into(), "test".into()))))
            .await
            .len(),
        7
    );
    let mut window = q(|_| {});
    window.created_after = Some(t0 + Duration::seconds(1));
    window.created_before = Some(t0 + Duration::seconds(4));
    assert_eq!(
        list(window).await,
        vec![ids[3], ids[2]],
        "both ends exclusive"
    );
    // Paging: each page starts after the last of the one before, and together they are all.
    let mut paged = Vec::new();
    let mut after = None;
    loop {
        let page = s
            .list_jobs(&ListQuery {
                after,
                limit: 3,
                ..ListQuery::default()
            })
            .await
            .unwrap();
        let Some(last) = page.last() else { break };
        after = Some((last.created_at, last.id));
        assert!(page.len() <= 3);
        paged.extend(page.iter().map(|j| j.id));
    }
    assert_eq!(paged, all);
    // Status: claim the oldest.
    let claimed = s.claim_jobs(claim("w", 1, &NO_CAPS)).await.unwrap();
    assert_eq!(
        list(q(|q| q.status = Some(JobStatus::InProgress))).await,
        vec![claimed[0].id]
    );
    assert_eq!(
        list(q(|q| q.status = Some(JobStatus::Queued))).await.len(),
        7
    );
}

async fn a_store_counts_its_queue_per_model_and_per_key(s: S) {
    let (k1, k2) = (KeyId::generate(), KeyId::generate());
    assert!(s.queue_stats().await.unwrap().is_empty());
    assert_eq!(s.queued_count(None).await.unwrap(), 0);
    let t0 = common::now() - Duration::minutes(5);
    let mut made = Vec::new();
    for (i, (model, key)) in [("a", k1), ("a", k1), ("b", k2), ("a", k2)]
        .into_iter()
        .enumerate()
    {
        let mut j = new_job(model, 0, key);
        j.created_at = t0 + Duration::seconds(i as i64);
        made.push(s.insert_job(j).await.unwrap());
    }
    let caps = BTreeMap::from([("a".to_string(), 1), ("b".to_string(), 0)]);
    let claimed = s.claim_jobs(claim("w", 10, &caps)).await.unwrap();
    assert_eq!(claimed[0].id, made[0].id);
    let stats = s.queue_stats().await.unwrap();
    assert_eq!(stats.len(), 2);
    assert_eq!(
        (
            stats[0].model_id.as_str(),
            stats[0].queued,
            stats[0].running
        ),
        ("a", 2, 1)
    );
    assert_eq!(stats[0].oldest_queued, Some(made[1].created_at));
    assert_eq!(
        (
            stats[1].model_id.as_str(),
            stats[1].queued,
            stats[1].running
        ),
        ("b", 1, 0)
    );
    assert_eq!(stats[1].oldest_queued, Some(made[2].created_at));
    assert_eq!(s.queued_count(None).await.unwrap(), 3);
    assert_eq!(s.queued_count(Some(k1)).await.unwrap(), 1);
    assert_eq!(s.queued_count(Some(k2)).await.unwrap(), 2);
    // A model with only ended jobs is left out.
    let lease = claimed[0].lease.as_ref().unwrap();
    s.finish(
        claimed[0].id,
        lease,
        Outcome::Completed(Default::default()),
        common::now(),
    )
    .await
    .unwrap();
    for j in &made[1..] {
        s.cancel(j.id, None, common::now()).await.unwrap();
    }
    assert!(s.queue_stats().await.unwrap().is_empty());
}

async fn deadlines_fail_only_queued_jobs_whose_time_has_passed(s: S) {
    let key = KeyId::generate();
    let now = common::now();
    let with_deadline = |secs: i64| {
        let mut j = new_job("m", 0, key);
        j.start_deadline = Some(now + Duration::seconds(secs));
        j.webhook_url = Some("https://example.com/h".into());
        j
    };
    let running = s.insert_job(with_deadline(5)).await.unwrap();
    s.claim_jobs(claim_at("w", 1, &NO_CAPS, now)).await.unwrap();
    let soon = s.insert_job(with_deadline(10)).await.unwrap();
    let later = s.insert_job(with_deadline(60)).await.unwrap();
    let none = s.insert_job(new_job("m", 0, key)).await.unwrap();
    // A deadline exactly now still starts.
    let at_deadline = now + Duration::seconds(10);
    assert_eq!(s.expire_deadlines(at_deadline).await.unwrap(), 0);
    let past = now + Duration::seconds(11);
    assert_eq!(s.expire_deadlines(past).await.unwrap(), 1);
    assert_eq!(s.expire_deadlines(past).await.unwrap(), 0);
    let status = |id| {
        let s = s.clone();
        async move { s.get_job(id, None).await.unwrap().unwrap().status }
    };
    assert_eq!(status(running.id).await, JobStatus::InProgress);
    assert_eq!(status(soon.id).await, JobStatus::Failed);
    assert_eq!(status(later.id).await, JobStatus::Queued);
    assert_eq!(status(none.id).await, JobStatus::Queued);
    let failed = s.get_job(soon.id, None).await.unwrap().unwrap();
    assert_eq!(failed.completed_at, Some(past));
    // Failing by deadline is an end like any other: its webhook is due.
    assert!(s.delivery_of(soon.id).await.unwrap().is_some());
}

async fn deliveries_are_leased_retried_and_given_up(s: S) {
    let key = KeyId::generate();
    let mut ids = Vec::new();
    for _ in 0..2 {
        let mut j = new_job("m", 0, key);
        j.webhook_url = Some("https://example.com/hook".into());
        let j = s.insert_job(j).await.unwrap();
        s.cancel(j.id, None, common::now()).await.unwrap();
        ids.push(j.id);
    }
    let now = common::now() + Duration::seconds(1);
    let lease = now + Duration::seconds(30);
    let first = s.claim_deliveries("d1", 1, now, lease).await.unwrap();
    assert_eq!(first.len(), 1, "the limit holds");
    let d = &first[0];
    assert_eq!(
        (d.state, d.url.as_str()),
        (DeliveryState::Pending, "https://example.com/hook")
    );
    assert!(d.attempts.is_empty());
    let second = s.claim_deliveries("d2", 10, now, lease).await.unwrap();
    assert_eq!(second.len(), 1);
    assert_ne!(second[0].id, d.id);
    // A lease that ran out lets another deliverer take it; the first is then fenced off.
    let after_lease = lease + Duration::seconds(1);
    let taken = s
        .claim_deliveries("d3", 10, after_lease, after_lease + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(taken.len(), 2);
    let failed_attempt = DeliveryAttempt {
        at: after_lease,
        status_code: None,
        error: Some("connection refused".into()),
    };
    assert!(
        !s.record_attempt(d.id, "d1", failed_attempt.clone(), AfterAttempt::GiveUp)
            .await
            .unwrap()
    );
    // A retry is not due before its time.
    let retry_at = after_lease + Duration::seconds(60);
    assert!(
        s.record_attempt(
            d.id,
            "d3",
            failed_attempt.clone(),
            AfterAttempt::RetryAt(retry_at)
        )
        .await
        .unwrap()
    );
    let meanwhile = after_lease + Duration::seconds(10);
    assert!(
        s.claim_deliveries("d4", 10, meanwhile, retry_at)
            .await
            .unwrap()
            .is_empty(),
        "not yet due, and the other is still leased"
    );
    let due = s
        .claim_deliveries("d4", 10, retry_at, retry_at + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(
        due.len(),
        2,
        "the retry is due and the other's lease ran out"
    );
    let again = due.iter().find(|x| x.id == d.id).unwrap();
    assert_eq!(again.attempts, vec![failed_attempt.clone()]);
    assert!(
        s.record_attempt(d.id, "d4", failed_attempt.clone(), AfterAttempt::GiveUp)
            .await
            .unwrap()
    );
    let shown = s.delivery_of(again.job_id).await.unwrap().unwrap();
    assert_eq!(
        (shown.state, shown.attempts.len()),
        (DeliveryState::Failed, 2)
    );
    // Ended deliveries are never claimed again, nor recorded on.
    assert!(
        !s.record_attempt(d.id, "d4", failed_attempt, AfterAttempt::Delivered)
            .await
            .unwrap()
    );
    let far = retry_at + Duration::hours(1);
    let rest = s
        .claim_deliveries("d5", 10, far, far + Duration::seconds(30))
        .await
        .unwrap();
    assert_eq!(rest.len(), 1);
    assert_ne!(rest[0].id, d.id);
    assert!(s.delivery_of(JobId::generate()).await.unwrap().is_none());
}

async fn concurrent_deliverers_each_take_a_delivery_once(s: S) {
    let key = KeyId::generate();
    for _ in 0..60 {
        let mut j = new_job("m", 0, key);
        j.webhook_url = Some("https://example.com/hook".into());
        let j = s.insert_job(j).await.unwrap();
        s.cancel(j.id, None, common::now()).await.unwrap();
    }
    let now = common::now() + Duration::seconds(1);
    let mut tasks = Vec::new();
    for w in 0..6 {
        let s = s.clone();
        tasks.push(tokio::spawn(async move {
            let owner = format!("d{w}");
            let mut mine = Vec::new();
            loop {
                let got = s
                    .claim_deliveries(&owner, 4, now, now + Duration::seconds(30))
                    .await
                    .unwrap();
                if got.is_empty() {
                    break mine;
                }
                for d in got {
                    let attempt = DeliveryAttempt {
                        at: now,
                        status_code: Some(204),
                        error: None,
                    };
                    assert!(
                        s.record_attempt(d.id, &owner, attempt, AfterAttempt::Delivered)
                            .await
                            .unwrap()
                    );
                    mine.push(d.id);
                }
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
    assert_eq!((n, all.len()), (60, 60));
}

async fn retention_marks_each_job_once_and_in_order(s: S) {
    let key = KeyId::generate();
    let t0 = common::now();
    let mut ended = Vec::new();
    for i in 0..3 {
        let j = s.insert_job(new_job("m", 0, key)).await.unwrap();
        s.cancel(j.id, None, t0 + Duration::seconds(3 - i))
            .await
            .unwrap();
        ended.push(j.id);
    }
    let before = t0 + Duration::seconds(10);
    assert_eq!(
        s.jobs_to_expire(before, 10).await.unwrap(),
        vec![ended[2], ended[1], ended[0]],
        "the longest ended first"
    );
    assert_eq!(s.jobs_to_expire(before, 1).await.unwrap(), vec![ended[2]]);
    assert_eq!(
        s.jobs_to_expire(t0 + Duration::seconds(2), 10)
            .await
            .unwrap(),
        vec![ended[2]],
        "only those ended before the cutoff"
    );
    s.mark_expired(ended[2], before).await.unwrap();
    s.mark_expired(ended[2], before + Duration::seconds(5))
        .await
        .unwrap();
    assert_eq!(
        s.get_job(ended[2], None).await.unwrap().unwrap().expired_at,
        Some(before),
        "the first time stays"
    );
}

async fn keys_list_newest_first_and_revoke_once(s: S) {
    let t0 = common::now();
    let a = KeyRecord::for_secret("invk_a", "a", Some("proj"), t0);
    let b = KeyRecord::for_secret("invk_b", "b", None, t0 + Duration::seconds(1));
    s.insert_key(a.clone()).await.unwrap();
    s.insert_key(b.clone()).await.unwrap();
    assert_eq!(s.list_keys().await.unwrap(), vec![b.clone(), a.clone()]);
    assert_eq!(
        s.find_key(&KeyHash::of("invk_a")).await.unwrap(),
        Some(a.clone())
    );
    // The same secret again is a conflict.
    let again = KeyRecord::for_secret("invk_a", "again", None, t0);
    assert!(matches!(
        s.insert_key(again).await,
        Err(StoreError::Conflict)
    ));
    let r1 = t0 + Duration::seconds(5);
    assert!(s.revoke_key(a.id, r1).await.unwrap());
    assert!(s.revoke_key(a.id, r1 + Duration::seconds(5)).await.unwrap());
    let found = s.find_key(&KeyHash::of("invk_a")).await.unwrap().unwrap();
    assert_eq!(
        found.revoked_at,
        Some(r1),
        "revoking twice keeps the first time"
    );
    assert!(!s.revoke_key(KeyId::generate(), r1).await.unwrap());
    assert_eq!(s.count_keys().await.unwrap(), 2);
}

async fn logs_come_back_in_the_order_they_were_written(s: S) {
    let k = KeyId::generate();
    let (a, b) = (
        s.insert_job(new_job("m", 0, k)).await.unwrap(),
        s.insert_job(new_job("m", 0, k)).await.unwrap(),
    );
    let t0 = common::now();
    let line = |i: i64, level: &str| LogLine {
        message: format!("line {i}"),
        level: level.into(),
        // Out of time order on purpose: the order written is the order read.
        timestamp: t0 - Duration::seconds(i),
    };
    assert!(s.logs(a.id).await.unwrap().is_empty());
    s.append_logs(a.id, &[]).await.unwrap();
    s.append_logs(a.id, &[line(0, "INFO"), line(1, "STDERR")])
        .await
        .unwrap();
    s.append_logs(b.id, &[line(9, "INFO")]).await.unwrap();
    s.append_logs(a.id, &[line(2, "ERROR")]).await.unwrap();
    assert_eq!(
        s.logs(a.id).await.unwrap(),
        vec![line(0, "INFO"), line(1, "STDERR"), line(2, "ERROR")]
    );
    assert_eq!(s.logs(b.id).await.unwrap(), vec![line(9, "INFO")]);
}

async fn a_runs_log_lines_are_all_stored_in_order_with_its_finish(s: S) {
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let lease = claim_one(&*s, "w").await.lease.unwrap();
    let events = invokd_core::events::JobEvents::default();
    let mut news = events.subscribe();
    let sink = invokd_core::run::log_sink::LogSink::to_store(s.clone(), events, job.id);
    let t0 = common::now();
    // More lines than the sink holds at once, so some are stored in batches by the sink and
    // the rest are handed over to go in with the finish.
    let lines: Vec<LogLine> = (0..600)
        .map(|i| LogLine {
            message: format!("line {i}"),
            level: "INFO".into(),
            timestamp: t0,
        })
        .collect();
    for l in &lines {
        sink.push(l.clone()).await;
    }
    let rest = sink.take().await;
    assert!(rest.len() < lines.len(), "the sink stored none itself");
    assert_eq!(news.recv().await.unwrap(), job.id, "readers are woken");
    let out = json!({"images": []}).as_object().unwrap().clone();
    assert!(
        s.finish_with_logs(
            job.id,
            &lease,
            Outcome::Completed(out),
            common::now(),
            &rest
        )
        .await
        .unwrap()
    );
    assert_eq!(s.logs(job.id).await.unwrap(), lines);
    assert_eq!(
        s.get_job(job.id, None).await.unwrap().unwrap().status,
        JobStatus::Completed
    );
    // What was handed over is no longer the sink's.
    let late = LogLine {
        message: "late".into(),
        level: "WARN".into(),
        timestamp: t0,
    };
    sink.push(late.clone()).await;
    assert_eq!(sink.take().await, std::slice::from_ref(&late));
    // A run that lost its lease changes nothing, but its lines are kept, as appended lines
    // would be.
    let late = [late];
    let failed = Outcome::Failed(JobError::new("internal_error", "x"));
    assert!(
        !s.finish_with_logs(job.id, &lease, failed, common::now(), &late)
            .await
            .unwrap()
    );
    let stored = s.logs(job.id).await.unwrap();
    assert_eq!(stored.len(), 601);
    assert_eq!(stored[600], late[0]);
    assert_eq!(
        s.get_job(job.id, None).await.unwrap().unwrap().status,
        JobStatus::Completed
    );
}

/// Finishes that arrive together (and share a commit on the embedded store) each answer for
/// their own lease: the holders' end their jobs with their lines in order, a stale lease changes
/// nothing but keeps its lines, and of two finishes of one run exactly one wins.
async fn finishes_arriving_together_each_answer_for_their_own_lease(s: S) {
    let key = KeyId::generate();
    for _ in 0..40 {
        s.insert_job(new_job("m", 0, key)).await.unwrap();
    }
    let jobs = s.claim_jobs(claim("w", 40, &NO_CAPS)).await.unwrap();
    assert_eq!(jobs.len(), 40);
    let lines: Vec<Vec<LogLine>> = (0..40)
        .map(|n| {
            (0..3)
                .map(|i| LogLine {
                    message: format!("job {n} line {i}"),
                    level: "INFO".into(),
                    timestamp: common::now(),
                })
                .collect()
        })
        .collect();
    // Jobs 0-9 finished by a stale owner, 10-19 twice by their holder, the rest once.
    let twice = |n: usize| (10..20).contains(&n);
    let mut finishes = Vec::new();
    for (n, job) in jobs.iter().enumerate() {
        let mut lease = job.lease.clone().unwrap();
        if n < 10 {
            lease.owner = "w2".into();
        }
        for _ in 0..if twice(n) { 2 } else { 1 } {
            let (s, lease, logs, id) = (s.clone(), lease.clone(), lines[n].clone(), job.id);
            let out = json!({"n": n}).as_object().unwrap().clone();
            finishes.push(tokio::spawn(async move {
                let outcome = Outcome::Completed(out);
                let done = s
                    .finish_with_logs(id, &lease, outcome, common::now(), &logs)
                    .await
                    .unwrap();
                (n, done)
            }));
        }
    }
    let mut won = [0; 40];
    for f in finishes {
        let (n, done) = f.await.unwrap();
        won[n] += usize::from(done);
    }
    for (n, job) in jobs.iter().enumerate() {
        let stored = s.get_job(job.id, None).await.unwrap().unwrap();
        let want_logs = if twice(n) {
            [lines[n].clone(), lines[n].clone()].concat()
        } else {
            lines[n].clone()
        };
        assert_eq!(s.logs(job.id).await.unwrap(), want_logs, "job {n}'s lines");
        if n < 10 {
            assert_eq!(won[n], 0, "job {n}: a stale lease finished it");
            assert_eq!(stored.status, JobStatus::InProgress);
            assert!(stored.output.is_none());
        } else {
            assert_eq!(won[n], 1, "job {n}: finished {} times", won[n]);
            assert_eq!(stored.status, JobStatus::Completed);
            assert_eq!(stored.output.unwrap()["n"], json!(n));
            assert!(stored.lease.is_none() && stored.completed_at.is_some());
        }
    }
}

async fn cancel_is_scoped_to_the_project_and_final(s: S) {
    let k = KeyId::generate();
    let mut j = new_job("m", 0, k);
    j.project = "p".into();
    let j = s.insert_job(j).await.unwrap();
    assert_eq!(
        s.cancel(j.id, Some("q"), common::now()).await.unwrap(),
        CancelOutcome::NotFound
    );
    assert_eq!(
        s.cancel(JobId::generate(), None, common::now())
            .await
            .unwrap(),
        CancelOutcome::NotFound
    );
    let c = claim_one(&*s, "w").await;
    let t1 = common::now();
    assert_eq!(
        s.cancel(j.id, Some("p"), t1).await.unwrap(),
        CancelOutcome::Requested
    );
    assert_eq!(
        s.cancel(j.id, None, t1).await.unwrap(),
        CancelOutcome::Requested,
        "asking twice is asking"
    );
    // The run may still finish first: it completes, and a later cancel finds it done.
    assert!(
        s.finish(
            j.id,
            c.lease.as_ref().unwrap(),
            Outcome::Completed(Default::default()),
            common::now()
        )
        .await
        .unwrap()
    );
    assert_eq!(
        s.cancel(j.id, Some("p"), common::now()).await.unwrap(),
        CancelOutcome::AlreadyDone
    );
    assert_eq!(
        s.get_job(j.id, None).await.unwrap().unwrap().status,
        JobStatus::Completed
    );
}

async fn a_setting_is_set_once_and_read_by_everyone(s: S) {
    let (v, made) = s.setting_or_insert("secret", "first").await.unwrap();
    assert_eq!((v.as_str(), made), ("first", true));
    let (v, made) = s.setting_or_insert("secret", "second").await.unwrap();
    assert_eq!((v.as_str(), made), ("first", false));
    // Starters racing: exactly one value wins, and everyone reads it.
    let racers = (0..8).map(|n| {
        let s = s.clone();
        tokio::spawn(async move { s.setting_or_insert("raced", &format!("v{n}")).await })
    });
    let results: Vec<(String, bool)> = futures::future::join_all(racers)
        .await
        .into_iter()
        .map(|r| r.unwrap().unwrap())
        .collect();
    assert_eq!(results.iter().filter(|(_, made)| *made).count(), 1);
    let winner = &results.iter().find(|(_, made)| *made).unwrap().0;
    assert!(results.iter().all(|(v, _)| v == winner));
}

async fn a_sweep_racing_the_holders_finish_lets_exactly_one_win(s: S) {
    let k = KeyId::generate();
    for _ in 0..60 {
        s.insert_job(new_job("m", 0, k)).await.unwrap();
    }
    let t0 = common::now();
    // Leases that run out at once, so the sweep may take any of them back.
    let mut req = claim_at("holder", 60, &NO_CAPS, t0);
    req.lease_until = t0;
    let claimed = s.claim_jobs(req).await.unwrap();
    assert_eq!(claimed.len(), 60);
    let holder = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut finished = Vec::new();
            for j in claimed {
                let out = Outcome::Completed(Default::default());
                if s.finish(j.id, j.lease.as_ref().unwrap(), out, t0)
                    .await
                    .unwrap()
                {
                    finished.push(j.id);
                }
            }
            finished
        })
    };
    let sweeper = {
        let s = s.clone();
        tokio::spawn(async move {
            let mut requeued = 0;
            for _ in 0..20 {
                requeued += s
                    .requeue_stale(Stale::Expired, t0 + Duration::seconds(1))
                    .await
                    .unwrap()
                    .requeued;
                tokio::task::yield_now().await;
            }
            requeued
        })
    };
    let finished = holder.await.unwrap();
    let requeued = sweeper.await.unwrap();
    assert_eq!(
        finished.len() as u64 + requeued,
        60,
        "each job once, by one side"
    );
    let all = s
        .list_jobs(&ListQuery {
            limit: 100,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    for j in all {
        let expected = if finished.contains(&j.id) {
            JobStatus::Completed
        } else {
            JobStatus::Queued
        };
        assert_eq!(j.status, expected);
    }
}

async fn json_comes_back_whatever_it_holds(s: S) {
    let key = KeyId::generate();
    let odd = "nul \u{0} quote \" backslash \\ emoji \u{1F600} rtl \u{202E}";
    let mut job = new_job("m", 0, key);
    job.input = json!({"prompt": odd, odd: [odd], "big": u64::MAX, "neg": i64::MIN, "f": 0.1})
        .as_object()
        .unwrap()
        .clone()
        .into();
    job.tags = vec![(odd.into(), odd.into())];
    let stored = s.insert_job(job.clone()).await.unwrap();
    assert_eq!((&stored.input, &stored.tags), (&job.input, &job.tags));
    let listed = s
        .list_jobs(&ListQuery {
            tag: Some((odd.into(), odd.into())),
            limit: 10,
            ..ListQuery::default()
        })
        .await
        .unwrap();
    assert_eq!(listed, vec![stored]);
    let c = claim_one(&*s, "w").await;
    let output = json!({"text": odd}).as_object().unwrap().clone();
    let out = Outcome::Completed(output.clone());
    assert!(
        s.finish(job.id, c.lease.as_ref().unwrap(), out, common::now())
            .await
            .unwrap()
    );
    let got = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!(got.output.as_deref(), Some(&output));
}

async fn upstream_references_are_fenced_and_keep_a_job_from_failing_when_its_holder_dies(s: S) {
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let c = claim_one(s.as_ref(), "w").await;
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
    assert!(s.give_back(job.id, &lease, common::now()).await.unwrap());
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!((j.status, j.max_attempts), (JobStatus::Queued, 3));
    assert_eq!(j.upstream.as_ref(), Some(&up), "kept for the next attempt");
    assert!(!s.give_back(job.id, &lease, common::now()).await.unwrap());

    // On its last attempt, a holder that dies leaves it queued (it runs upstream), not failed.
    for _ in 0..2 {
        let c = claim_one(s.as_ref(), "w").await;
        assert_eq!(c.upstream.as_ref(), Some(&up));
        s.requeue_stale(Stale::AllRunning, common::now())
            .await
            .unwrap();
    }
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!((j.status, j.attempt), (JobStatus::Queued, 3));

    // Cleared, the same dying holder fails it as before.
    let c = claim_one(s.as_ref(), "w").await;
    assert!(
        s.set_upstream(job.id, c.lease.as_ref().unwrap(), None)
            .await
            .unwrap()
    );
    s.requeue_stale(Stale::AllRunning, common::now())
        .await
        .unwrap();
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert_eq!((j.status, j.upstream), (JobStatus::Failed, None));
}

async fn text_with_a_nul_character_is_stored(s: S) {
    // SQLite keeps U+0000; PostgreSQL's text cannot, and stores U+FFFD in its place.
    let same = |got: &str, sent: &str| got.replace('\u{FFFD}', "\0") == sent;
    let job = s
        .insert_job(new_job("m", 0, KeyId::generate()))
        .await
        .unwrap();
    let line = LogLine {
        message: "before\0after".into(),
        level: "INFO".into(),
        timestamp: common::now(),
    };
    s.append_logs(job.id, std::slice::from_ref(&line))
        .await
        .unwrap();
    assert!(same(
        &s.logs(job.id).await.unwrap()[0].message,
        &line.message
    ));
    let c = claim_one(s.as_ref(), "w").await;
    let err = JobError {
        message: "model said \0".into(),
        error_type: "runner_server_error".into(),
    };
    assert!(
        s.finish(
            job.id,
            c.lease.as_ref().unwrap(),
            Outcome::Failed(err.clone()),
            common::now()
        )
        .await
        .unwrap()
    );
    let j = s.get_job(job.id, None).await.unwrap().unwrap();
    assert!(same(&j.error.unwrap().message, &err.message));
    let key = KeyRecord::for_secret(
        "invk_nul_key_0123456789abcdef",
        "a\0name",
        None,
        common::now(),
    );
    s.insert_key(key.clone()).await.unwrap();
    let found = s.find_key(&key.hash).await.unwrap().unwrap();
    assert!(same(&found.name, "a\0name"));
}

async fn worker_tokens_and_presence_are_kept_and_counted(s: S) {
    let t0 = common::now();
    let models = ModelPatterns::parse(&["acme/*".to_owned()]).unwrap();
    let a = WorkerToken::for_secret("invw_a", "gpu-a", models.clone(), t0);
    let b = WorkerToken::for_secret("invw_b", "gpu-b", models, t0 + Duration::seconds(1));
    s.insert_worker_token(a.clone()).await.unwrap();
    s.insert_worker_token(b.clone()).await.unwrap();
    assert_eq!(
        s.list_worker_tokens().await.unwrap(),
        vec![b.clone(), a.clone()]
    );
    assert_eq!(
        s.find_worker_token(&KeyHash::of("invw_a")).await.unwrap(),
        Some(a.clone())
    );
    assert!(
        s.find_worker_token(&KeyHash::of("invk_a"))
            .await
            .unwrap()
            .is_none()
    );
    // The same secret again is a conflict.
    let again = WorkerToken::for_secret("invw_a", "again", a.models.clone(), t0);
    assert!(matches!(
        s.insert_worker_token(again).await,
        Err(StoreError::Conflict)
    ));
    let r1 = t0 + Duration::seconds(5);
    assert!(s.revoke_worker_token(a.id, r1).await.unwrap());
    assert!(
        s.revoke_worker_token(a.id, r1 + Duration::seconds(5))
            .await
            .unwrap()
    );
    let found = s
        .find_worker_token(&KeyHash::of("invw_a"))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        found.revoked_at,
        Some(r1),
        "revoking twice keeps the first time"
    );
    assert!(
        !s.revoke_worker_token(WorkerTokenId::generate(), r1)
            .await
            .unwrap()
    );

    // Presence: recorded, updated in place, its counts and the jobs it holds.
    let owner = workers::owner_for(b.id, "w-1");
    let mut hello = WorkerPresence {
        id: "w-1".into(),
        token_id: b.id,
        owner: owner.clone(),
        name: "box".into(),
        version: Some("1.0".into()),
        models: vec!["acme/*".into()],
        slots: 2,
        labels: [("gpu".to_owned(), "A100".to_owned())].into(),
    };
    s.record_worker(&hello, t0).await.unwrap();
    hello.slots = 4;
    s.record_worker(&hello, t0 + Duration::seconds(10))
        .await
        .unwrap();
    // Another token's worker may not take over the row.
    let mut other = hello.clone();
    other.token_id = a.id;
    other.name = "impostor".into();
    s.record_worker(&other, t0 + Duration::seconds(11))
        .await
        .unwrap();
    let key = KeyId::generate();
    for _ in 0..2 {
        s.insert_job(new_job("acme/x", 0, key)).await.unwrap();
    }
    let claimed = s.claim_jobs(claim(&owner, 1, &NO_CAPS)).await.unwrap();
    assert_eq!(claimed.len(), 1);
    s.count_worker_job("w-1", true).await.unwrap();
    s.count_worker_job("w-1", true).await.unwrap();
    s.count_worker_job("w-1", false).await.unwrap();
    let listed = s.list_workers(t0).await.unwrap();
    assert_eq!(listed.len(), 1);
    let w = &listed[0];
    assert_eq!(w.presence, hello);
    assert_eq!(
        (w.first_seen, w.last_seen),
        (t0, t0 + Duration::seconds(10))
    );
    assert_eq!((w.running, w.completed, w.failed), (1, 2, 1));
    assert!(
        s.list_workers(t0 + Duration::seconds(60))
            .await
            .unwrap()
            .is_empty()
    );
}

conformance!(
    worker_tokens_and_presence_are_kept_and_counted,
    text_with_a_nul_character_is_stored,
    upstream_references_are_fenced_and_keep_a_job_from_failing_when_its_holder_dies,
    a_setting_is_set_once_and_read_by_everyone,
    insert_get_and_scope_by_key,
    a_runs_log_lines_are_all_stored_in_order_with_its_finish,
    claims_follow_priority_then_age_and_skip_saturated_models,
    many_claimers_each_job_claimed_once,
    only_the_current_lease_can_finish_and_terminal_is_final,
    expired_leases_requeue_until_attempts_run_out,
    release_requeues_then_fails_on_the_last_attempt,
    keys_are_found_by_hash_only,
    cancel_stops_a_queued_job_at_once_and_a_running_one_by_request,
    a_job_past_its_start_deadline_never_runs,
    queue_position_counts_the_jobs_of_the_model_that_run_first,
    queue_order_lists_a_models_queued_jobs_in_the_order_they_run,
    every_way_a_job_with_a_webhook_ends_puts_one_delivery_in_the_outbox,
    ended_jobs_past_retention_are_listed_once_and_lose_their_output,
    concurrent_inserts_and_one_bad_row_fails_alone,
    every_field_comes_back_as_it_was_stored,
    a_claim_never_takes_more_of_a_model_than_its_capacity,
    a_claim_reaches_the_jobs_of_hundreds_of_models,
    a_claim_starts_no_earlier_than_the_job_was_created,
    failed_and_canceled_runs_keep_their_error_and_no_output,
    a_release_by_anyone_but_the_holder_changes_nothing,
    a_sweep_takes_back_only_expired_leases_unless_told_all,
    a_start_up_takes_back_only_the_leases_held_under_its_prefix,
    an_idempotency_key_replays_its_job_and_refuses_another_body,
    concurrent_creates_with_one_idempotency_key_make_one_job,
    listing_filters_and_pages_newest_first,
    a_store_counts_its_queue_per_model_and_per_key,
    deadlines_fail_only_queued_jobs_whose_time_has_passed,
    deliveries_are_leased_retried_and_given_up,
    concurrent_deliverers_each_take_a_delivery_once,
    retention_marks_each_job_once_and_in_order,
    keys_list_newest_first_and_revoke_once,
    logs_come_back_in_the_order_they_were_written,
    cancel_is_scoped_to_the_project_and_final,
    finishes_arriving_together_each_answer_for_their_own_lease,
    a_sweep_racing_the_holders_finish_lets_exactly_one_win,
    json_comes_back_whatever_it_holds,
);

/// What only the embedded store has: a file that outlives the process, and group commit.
mod sqlite_only {
    use super::*;
    use invokd_store::SqliteStore;

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
    async fn group_commit_acknowledges_only_committed_rows() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let s: S = Arc::new(SqliteStore::open(&path).await.unwrap());
        let (key, ok) = insert_200_with_one_duplicate(&s).await;
        // Every acknowledged row is committed: a fresh store on the same file sees them all.
        drop(s);
        let reopened = SqliteStore::open(&path).await.unwrap();
        assert_eq!(reopened.queued_count(Some(key)).await.unwrap(), 200);
        for id in ok {
            assert!(reopened.get_job(id, None).await.unwrap().is_some());
        }
    }

    #[tokio::test]
    async fn one_process_needs_no_store_notices() {
        let t = TestStore::sqlite().await;
        assert!(t.store.notices().is_none());
        t.close().await;
    }

    #[tokio::test]
    async fn open_takes_a_path_with_or_without_the_sqlite_prefix() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("db.sqlite");
        let a = invokd_store::open(path.to_str().unwrap()).await.unwrap();
        let job = a
            .insert_job(new_job("m", 0, KeyId::generate()))
            .await
            .unwrap();
        drop(a);
        let b = invokd_store::open(&format!("sqlite:{}", path.display()))
            .await
            .unwrap();
        assert!(b.get_job(job.id, None).await.unwrap().is_some());
    }
}

/// What only PostgreSQL has: several replicas on one database, and NOTIFY wake-ups.
mod postgres_only {
    use super::*;
    use invokd_core::store::StoreNotice;
    use invokd_store::PostgresStore;
    use sqlx::Executor;
    use tokio::sync::broadcast;

    /// The test database's URL with this schema on its `search_path`.
    fn url_of(schema: &PgSchema) -> String {
        let base = std::env::var(common::PG_URL_VAR)
            .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
        let sep = if base.contains('?') { '&' } else { '?' };
        format!("{base}{sep}options=-c%20search_path%3D{}", schema.name)
    }

    /// Waits (5 s at most) for a notice that `want` accepts, passing over others.
    async fn expect_notice(
        rx: &mut broadcast::Receiver<StoreNotice>,
        want: impl Fn(&StoreNotice) -> bool,
    ) -> StoreNotice {
        tokio::time::timeout(std::time::Duration::from_secs(5), async {
            loop {
                match rx.recv().await {
                    Ok(n) if want(&n) => break n,
                    Ok(_) | Err(broadcast::error::RecvError::Lagged(_)) => {}
                    Err(e) => panic!("{e}"),
                }
            }
        })
        .await
        .expect("no such notice within 5 s")
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn replicas_starting_together_on_a_fresh_schema_all_start() {
        let schema = PgSchema::create().await;
        let url = url_of(&schema);
        let starts = (0..6).map(|_| {
            let url = url.clone();
            tokio::spawn(async move { PostgresStore::connect(&url).await })
        });
        let mut stores = Vec::new();
        for s in starts {
            stores.push(s.await.unwrap().unwrap());
        }
        // Migrating again changes nothing, and every replica sees one database.
        PostgresStore::migrate(&url).await.unwrap();
        let job = stores[0]
            .insert_job(new_job("m", 0, KeyId::generate()))
            .await
            .unwrap();
        for s in &stores {
            assert!(s.get_job(job.id, None).await.unwrap().is_some());
        }
        let opened = invokd_store::open(&url).await.unwrap();
        assert!(opened.get_job(job.id, None).await.unwrap().is_some());
        drop((stores, opened));
        schema.remove().await;
    }

    #[tokio::test]
    async fn a_bad_url_is_unavailable_and_not_repeated() {
        let Err(StoreError::Unavailable(e)) =
            PostgresStore::connect("postgres://u:secret@[::1").await
        else {
            panic!("a bad URL must not connect");
        };
        assert!(!e.contains("secret"), "{e}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_change_made_by_one_replica_wakes_the_others() {
        let schema = PgSchema::create().await;
        let (a, b) = (schema.connect().await, schema.connect().await);
        let mut rx = b.notices().unwrap();
        let job = a
            .insert_job(new_job("fal-ai/flux/dev", 0, KeyId::generate()))
            .await
            .unwrap();
        expect_notice(&mut rx, |n| {
            *n == StoreNotice::Queued {
                model_id: "fal-ai/flux/dev".into(),
            }
        })
        .await;
        let changed = |id: JobId| move |n: &StoreNotice| *n == StoreNotice::Changed(id);
        expect_notice(&mut rx, changed(job.id)).await;
        // Claimed, given log lines, asked to cancel, handed back: each is heard.
        let c = a
            .claim_jobs(claim("w", 1, &NO_CAPS))
            .await
            .unwrap()
            .remove(0);
        expect_notice(&mut rx, changed(job.id)).await;
        let line = LogLine {
            message: "hello".into(),
            level: "INFO".into(),
            timestamp: common::now(),
        };
        a.append_logs(job.id, &[line]).await.unwrap();
        expect_notice(&mut rx, |n| *n == StoreNotice::LogLines(job.id)).await;
        a.cancel(job.id, None, common::now()).await.unwrap();
        expect_notice(&mut rx, changed(job.id)).await;
        // Requeued work is queued again: dispatchers hear of it too.
        let other = a
            .insert_job(new_job("m2", 0, KeyId::generate()))
            .await
            .unwrap();
        let c2 = a
            .claim_jobs(claim("w", 1, &NO_CAPS))
            .await
            .unwrap()
            .remove(0);
        assert_eq!(c2.id, other.id);
        expect_notice(&mut rx, changed(other.id)).await;
        a.release(
            other.id,
            c2.lease.as_ref().unwrap(),
            JobError::new("x", "x"),
            common::now(),
        )
        .await
        .unwrap();
        expect_notice(&mut rx, |n| {
            *n == StoreNotice::Queued {
                model_id: "m2".into(),
            }
        })
        .await;
        drop(c);
        // A store in another schema hears nothing of this one.
        let elsewhere = PgSchema::create().await;
        let stranger = elsewhere.connect().await;
        let mut quiet = stranger.notices().unwrap();
        a.insert_job(new_job("m", 0, KeyId::generate()))
            .await
            .unwrap();
        expect_notice(&mut rx, |n| matches!(n, StoreNotice::Queued { .. })).await;
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        assert!(matches!(
            quiet.try_recv(),
            Err(broadcast::error::TryRecvError::Empty)
        ));
        drop((a, b, stranger));
        schema.remove().await;
        elsewhere.remove().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn wake_ups_resume_after_the_listening_connection_is_cut() {
        let schema = PgSchema::create().await;
        let s = schema.connect().await;
        let mut rx = s.notices().unwrap();
        let cut: Vec<bool> = sqlx::query_scalar(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity
             WHERE query LIKE 'LISTEN%' AND query LIKE '%' || $1 || '%'",
        )
        .bind(&schema.name)
        .fetch_all(&mut schema.raw().await)
        .await
        .unwrap();
        assert_eq!(cut, vec![true], "one listening connection per store");
        // Until LISTEN is repeated on a new connection, notices are missed: keep making them.
        let heard = tokio::time::timeout(std::time::Duration::from_secs(15), async {
            loop {
                s.insert_job(new_job("m", 0, KeyId::generate()))
                    .await
                    .unwrap();
                if let Ok(Ok(n)) =
                    tokio::time::timeout(std::time::Duration::from_millis(300), rx.recv()).await
                {
                    break n;
                }
            }
        })
        .await
        .expect("no wake-up after the connection was cut");
        assert!(matches!(
            heard,
            StoreNotice::Queued { .. } | StoreNotice::Changed(_)
        ));
        drop(s);
        schema.remove().await;
    }

    #[tokio::test]
    async fn the_database_itself_keeps_terminal_states_final() {
        let t = PgSchema::create().await;
        let s = t.connect().await;
        let job = s
            .insert_job(new_job("m", 0, KeyId::generate()))
            .await
            .unwrap();
        s.cancel(job.id, None, common::now()).await.unwrap();
        let mut raw = t.raw().await;
        let err = raw
            .execute(
                sqlx::query("UPDATE jobs SET status = 'QUEUED' WHERE id = $1")
                    .bind(job.id.as_uuid()),
            )
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("terminal job status is final"),
            "{err}"
        );
        drop((s, raw));
        t.remove().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_claim_passes_over_a_locked_job_instead_of_waiting_for_it() {
        let t = PgSchema::create().await;
        let s = t.connect().await;
        let k = KeyId::generate();
        let first = s.insert_job(new_job("m", 0, k)).await.unwrap();
        let second = s.insert_job(new_job("m", 0, k)).await.unwrap();
        // Another transaction holds the first job's row, as a concurrent claim would.
        let mut raw = t.raw().await;
        raw.execute("BEGIN").await.unwrap();
        raw.execute(
            sqlx::query("SELECT 1 FROM jobs WHERE id = $1 FOR UPDATE").bind(first.id.as_uuid()),
        )
        .await
        .unwrap();
        let got = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            s.claim_jobs(claim("w", 2, &NO_CAPS)),
        )
        .await
        .expect("a claim must not wait on a locked row")
        .unwrap();
        assert_eq!(
            got.iter().map(|j| j.id).collect::<Vec<_>>(),
            vec![second.id]
        );
        raw.execute("ROLLBACK").await.unwrap();
        assert_eq!(claim_one(&s, "w").await.id, first.id);
        drop((s, raw));
        t.remove().await;
    }

    #[tokio::test]
    async fn a_store_connects_over_tls_when_the_url_asks_for_it() {
        let t = PgSchema::create().await;
        let ssl: String = sqlx::query_scalar("SHOW ssl")
            .fetch_one(&mut t.raw().await)
            .await
            .unwrap();
        if ssl != "on" {
            // A property of the test server, not of the store: nothing to check against.
            eprintln!("the test server has ssl = {ssl}: TLS not checked");
            t.remove().await;
            return;
        }
        let tls = t.options().ssl_mode(sqlx::postgres::PgSslMode::Require);
        let s = PostgresStore::connect_with(tls.clone()).await.unwrap();
        let job = s
            .insert_job(new_job("m", 0, KeyId::generate()))
            .await
            .unwrap();
        assert!(s.get_job(job.id, None).await.unwrap().is_some());
        let mut raw = <sqlx::PgConnection as sqlx::Connection>::connect_with(&tls)
            .await
            .unwrap();
        let encrypted: bool =
            sqlx::query_scalar("SELECT ssl FROM pg_stat_ssl WHERE pid = pg_backend_pid()")
                .fetch_one(&mut raw)
                .await
                .unwrap();
        assert!(encrypted);
        drop((s, raw));
        t.remove().await;
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 4)]
    async fn claimers_on_several_replicas_take_each_job_once() {
        let schema = PgSchema::create().await;
        let mut replicas = Vec::new();
        for _ in 0..3 {
            replicas.push(Arc::new(schema.connect().await));
        }
        let k = KeyId::generate();
        for i in 0..150 {
            replicas[i % 3]
                .insert_job(new_job(["a", "b"][i % 2], 0, k))
                .await
                .unwrap();
        }
        let caps = Arc::new(BTreeMap::from([("a".to_string(), 2)]));
        let mut tasks = Vec::new();
        for (r, s) in replicas.iter().enumerate() {
            for w in 0..3 {
                let (s, caps) = (s.clone(), caps.clone());
                tasks.push(tokio::spawn(async move {
                    let owner = format!("r{r}w{w}");
                    let mut mine = Vec::new();
                    loop {
                        let got = s.claim_jobs(claim(&owner, 4, &caps)).await.unwrap();
                        if got.is_empty() {
                            break mine;
                        }
                        assert!(got.iter().filter(|j| j.model_id == "a").count() <= 2);
                        mine.extend(got.into_iter().map(|j| j.id));
                    }
                }));
            }
        }
        let mut all = Vec::new();
        for t in tasks {
            all.extend(t.await.unwrap());
        }
        let n = all.len();
        all.sort();
        all.dedup();
        assert_eq!((n, all.len()), (150, 150));
        drop(replicas);
        schema.remove().await;
    }
}
