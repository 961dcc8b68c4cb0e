//! Property test of the job state machine on the real store: any interleaving of submit,
//! claim, heartbeat, lease expiry, complete, fail, release and cancel keeps the invariants:
//! a terminal state is final, only the current lease holder finishes a job, and no job is lost.
//! On both stores (PostgreSQL: see `common` for the database it needs).
#![allow(clippy::unwrap_used, clippy::expect_used)]

mod common;

use std::collections::{BTreeMap, HashMap};

use chrono::{DateTime, Duration, Utc};
use invokd_core::{
    JobError, JobId, JobStatus, KeyId, Lease, NewJob, Outcome,
    store::{ClaimRequest, Stale, Store},
};
use proptest::prelude::*;
use serde_json::json;

#[derive(Debug, Clone)]
enum Op {
    Submit,
    Claim {
        worker: usize,
    },
    Heartbeat {
        worker: usize,
        job: usize,
    },
    Complete {
        worker: usize,
        job: usize,
    },
    Fail {
        worker: usize,
        job: usize,
    },
    Release {
        worker: usize,
        job: usize,
    },
    Cancel {
        job: usize,
    },
    /// Time passes beyond every lease, and the sweeper takes expired leases back.
    Expire,
}

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        2 => Just(Op::Submit),
        3 => (0..3usize).prop_map(|worker| Op::Claim { worker }),
        1 => (0..3usize, 0..6usize).prop_map(|(worker, job)| Op::Heartbeat { worker, job }),
        2 => (0..3usize, 0..6usize).prop_map(|(worker, job)| Op::Complete { worker, job }),
        1 => (0..3usize, 0..6usize).prop_map(|(worker, job)| Op::Fail { worker, job }),
        1 => (0..3usize, 0..6usize).prop_map(|(worker, job)| Op::Release { worker, job }),
        1 => (0..6usize).prop_map(|job| Op::Cancel { job }),
        1 => Just(Op::Expire),
    ]
}

async fn run(store: &dyn Store, ops: Vec<Op>) {
    let key = KeyId::generate();
    let mut clock: DateTime<Utc> = Utc::now();
    let mut jobs: Vec<JobId> = Vec::new();
    // What each worker believes it holds: its lease per job.
    let mut held: Vec<HashMap<JobId, Lease>> = vec![HashMap::new(); 3];
    let mut terminal: HashMap<JobId, JobStatus> = HashMap::new();
    let caps = BTreeMap::new();

    for op in ops {
        clock += Duration::milliseconds(10);
        match op {
            Op::Submit => {
                let job = store
                    .insert_job(NewJob {
                        id: JobId::generate(),
                        key_id: key,
                        project: "p".into(),
                        model_id: "m".into(),
                        input: json!({}).as_object().unwrap().clone().into(),
                        tags: vec![],
                        priority: 0,
                        created_at: clock,
                        max_attempts: 3,
                        start_deadline: None,
                        webhook_url: None,
                        run_timeout: None,
                    })
                    .await
                    .unwrap();
                jobs.push(job.id);
            }
            Op::Claim { worker } => {
                let owner = format!("w{worker}");
                let req = ClaimRequest {
                    owner: &owner,
                    limit: 2,
                    capacity: &caps,
                    default_capacity: 10,
                    now: clock,
                    lease_until: clock + Duration::seconds(30),
                };
                for j in store.claim_jobs(req).await.unwrap() {
                    assert!(!terminal.contains_key(&j.id), "a terminal job was claimed");
                    held[worker].insert(j.id, j.lease.unwrap());
                }
            }
            Op::Heartbeat { worker, job }
            | Op::Complete { worker, job }
            | Op::Fail { worker, job }
            | Op::Release { worker, job } => {
                let Some(&id) = jobs.get(job) else { continue };
                let Some(lease) = held[worker].get(&id).cloned() else {
                    continue;
                };
                let before = store.get_job(id, None).await.unwrap().unwrap();
                // Fencing is by owner and attempt; heartbeats move the expiry.
                let current = before.status == JobStatus::InProgress
                    && before
                        .lease
                        .as_ref()
                        .is_some_and(|l| l.owner == lease.owner && l.attempt == lease.attempt);
                let done = match op {
                    Op::Heartbeat { .. } => {
                        store
                            .heartbeat(id, &lease, clock + Duration::seconds(30))
                            .await
                            .unwrap()
                            != invokd_core::store::Beat::Lost
                    }
                    Op::Complete { .. } => store
                        .finish(id, &lease, Outcome::Completed(Default::default()), clock)
                        .await
                        .unwrap(),
                    Op::Fail { .. } => store
                        .finish(id, &lease, Outcome::Failed(JobError::new("x", "x")), clock)
                        .await
                        .unwrap(),
                    _ => store
                        .release(id, &lease, JobError::new("x", "x"), clock)
                        .await
                        .unwrap(),
                };
                assert_eq!(
                    done, current,
                    "{op:?}: only the current lease holder may act ({before:?})"
                );
                if !matches!(op, Op::Heartbeat { .. }) {
                    held[worker].remove(&id);
                }
            }
            Op::Cancel { job } => {
                let Some(&id) = jobs.get(job) else { continue };
                store.cancel(id, None, clock).await.unwrap();
            }
            Op::Expire => {
                clock += Duration::seconds(31);
                store.requeue_stale(Stale::Expired, clock).await.unwrap();
            }
        }
        // Invariants after every step.
        for &id in &jobs {
            let j = store
                .get_job(id, None)
                .await
                .unwrap()
                .expect("a job was lost");
            if let Some(&t) = terminal.get(&id) {
                assert_eq!(j.status, t, "a terminal state changed");
            } else if j.status.is_terminal() {
                terminal.insert(id, j.status);
                assert!(j.completed_at.is_some() && j.lease.is_none());
            }
            assert_eq!(
                j.status == JobStatus::InProgress,
                j.lease.is_some(),
                "only running jobs hold a lease: {j:?}"
            );
        }
    }
}

fn block_on<F: std::future::Future>(f: F) -> F::Output {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap()
        .block_on(f)
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 48, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_keeps_the_invariants_sqlite(ops in proptest::collection::vec(op(), 1..60)) {
        block_on(async {
            let t = common::TestStore::sqlite().await;
            run(&*t.store, ops).await;
            t.close().await;
        });
    }
}

proptest! {
    // Fewer cases: each makes a schema and runs the migrations.
    #![proptest_config(ProptestConfig { cases: 16, ..ProptestConfig::default() })]

    #[test]
    fn any_interleaving_keeps_the_invariants_postgres(ops in proptest::collection::vec(op(), 1..60)) {
        block_on(async {
            let t = common::TestStore::postgres().await;
            run(&*t.store, ops).await;
            t.close().await;
        });
    }
}
