//! The queue core without HTTP: the store's insert, claim and finish as the dispatcher uses
//! them, beside a raw SQLite insert loop with the same durability settings.

use std::{
    collections::BTreeMap,
    path::Path,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use anyhow::Context as _;
use chrono::Utc;
use hdrhistogram::Histogram;
use invokd_core::{
    JobId, KeyId, NewJob, Outcome,
    store::{ClaimRequest, Store},
};
use serde_json::{Map, Value, json};

use crate::load::{self, Stats};

/// Jobs one claim takes at most, as a busy dispatcher's free slots would.
const CLAIM_BATCH: u32 = 64;
/// Claiming consumers: the server runs one dispatcher; two keep a claim in flight while the
/// other finishes its batch.
const CONSUMERS: usize = 2;

/// Inserts one row per operation, one transaction each, on `workers` workers, into a fresh
/// SQLite file with the store's durability settings (WAL, synchronous=FULL) on 8 connections, as
/// a plain application would write it.
pub async fn raw_sqlite(dir: &Path, workers: usize, duration: Duration) -> anyhow::Result<Stats> {
    let path = dir.join("raw.sqlite");
    let pool = invokd_store::sqlite::pool_options()
        .connect_with(invokd_store::sqlite::connect_options(&path))
        .await
        .with_context(|| format!("cannot open {}", path.display()))?;
    // The job's columns that a create writes, with the same kinds of values.
    sqlx::query(
        "CREATE TABLE jobs (id TEXT PRIMARY KEY, key_id TEXT NOT NULL, project TEXT NOT NULL,
                            model_id TEXT NOT NULL, input TEXT NOT NULL, tags TEXT NOT NULL,
                            status TEXT NOT NULL, priority INTEGER NOT NULL,
                            created_at INTEGER NOT NULL, attempt INTEGER NOT NULL,
                            max_attempts INTEGER NOT NULL)",
    )
    .execute(&pool)
    .await?;
    let key = KeyId::generate().as_uuid().to_string();
    let stats = load::run(workers, duration, move |_, i| {
        let (pool, key) = (pool.clone(), key.clone());
        async move {
            let input = input(i).to_string();
            let insert = async {
                let mut tx = pool.begin().await?;
                sqlx::query(
                    "INSERT INTO jobs VALUES (?1, ?2, 'bench', 'fal-ai/flux/schnell', ?3, '[]',
                                              'QUEUED', 0, ?4, 0, 3)",
                )
                .bind(JobId::generate().as_uuid().to_string())
                .bind(&key)
                .bind(input)
                .bind(Utc::now().timestamp_micros())
                .execute(&mut *tx)
                .await?;
                tx.commit().await
            };
            insert.await.is_ok()
        }
    })
    .await?;
    Ok(stats)
}

fn input(i: u64) -> Value {
    json!({"prompt": format!("bench {i}"), "image_size": {"width": 64, "height": 64}})
}

fn new_job(key: KeyId, i: u64) -> NewJob {
    let input = match input(i) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    NewJob {
        id: JobId::generate(),
        key_id: key,
        project: "bench".into(),
        model_id: "fal-ai/flux/schnell".into(),
        input: input.into(),
        tags: Vec::new(),
        priority: 0,
        created_at: Utc::now(),
        max_attempts: 3,
        start_deadline: None,
        webhook_url: None,
        run_timeout: None,
    }
}

/// The model of a backlog that stays queued: the consumers may start none of its jobs.
const SATURATED: &str = "bench/saturated";

/// `producers` workers insert jobs while consumers claim them in batches under a lease and
/// finish each as COMPLETED, for `duration`. The rate is jobs completed per second; the
/// latencies are from a job's creation to its finish.
pub async fn queue_core(
    store: Arc<dyn Store>,
    producers: usize,
    duration: Duration,
) -> anyhow::Result<Stats> {
    let started = Instant::now();
    let deadline = started + duration;
    let key = KeyId::generate();
    let insert_errors = Arc::new(AtomicU64::new(0));
    let mut inserting = Vec::with_capacity(producers);
    for w in 0..producers {
        let (store, errors) = (store.clone(), insert_errors.clone());
        inserting.push(tokio::spawn(async move {
            let mut i = 0u64;
            while Instant::now() < deadline {
                if store
                    .insert_job(new_job(key, (w as u64) << 32 | i))
                    .await
                    .is_err()
                {
                    errors.fetch_add(1, Ordering::Relaxed);
                }
                i += 1;
            }
        }));
    }
    let mut consuming = Vec::with_capacity(CONSUMERS);
    for c in 0..CONSUMERS {
        let store = store.clone();
        consuming.push(tokio::spawn(async move {
            consume(store, format!("bench-{c}"), deadline).await
        }));
    }
    for t in inserting {
        t.await?;
    }
    load::collect(consuming, insert_errors.load(Ordering::Relaxed), started).await
}

/// Queues `n` jobs of a model the consumers of [`queue_core`] may start none of, as a backlog
/// of a saturated model sits in a busy server's queue (64 writers, as fast as the store takes
/// them).
pub async fn fill_backlog(store: &Arc<dyn Store>, n: u64) -> anyhow::Result<()> {
    let key = KeyId::generate();
    let writers: u64 = 64;
    let mut filling = Vec::new();
    for w in 0..writers {
        let store = store.clone();
        filling.push(tokio::spawn(async move {
            for i in (w..n).step_by(writers as usize) {
                let mut job = new_job(key, i);
                job.model_id = SATURATED.into();
                store.insert_job(job).await?;
            }
            anyhow::Ok(())
        }));
    }
    for f in filling {
        f.await??;
    }
    Ok(())
}

/// One dispatcher's loop: claim a batch, finish every job of it concurrently, until
/// `deadline`. Returns the creation-to-finish latencies of the jobs it completed and how many
/// claims or finishes failed.
async fn consume(
    store: Arc<dyn Store>,
    owner: String,
    deadline: Instant,
) -> anyhow::Result<(Histogram<u64>, u64)> {
    let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    let mut errors = 0u64;
    let capacity = BTreeMap::from([(SATURATED.to_owned(), 0)]);
    let output: Map<String, Value> = match json!({"images": []}) {
        Value::Object(m) => m,
        _ => Map::new(),
    };
    while Instant::now() < deadline {
        let now = Utc::now();
        let claimed = store
            .claim_jobs(ClaimRequest {
                owner: &owner,
                limit: CLAIM_BATCH,
                capacity: &capacity,
                default_capacity: CLAIM_BATCH,
                now,
                lease_until: now + chrono::Duration::seconds(60),
            })
            .await;
        let jobs = match claimed {
            Ok(jobs) => jobs,
            Err(_) => {
                errors += 1;
                continue;
            }
        };
        if jobs.is_empty() {
            // The producers are behind; the dispatcher would wait for a wake-up here.
            tokio::time::sleep(Duration::from_millis(1)).await;
            continue;
        }
        let finishes = jobs.iter().map(|job| {
            let (store, output) = (store.clone(), output.clone());
            async move {
                let lease = job.lease.as_ref()?;
                let done = store
                    .finish(job.id, lease, Outcome::Completed(output), Utc::now())
                    .await;
                matches!(done, Ok(true)).then_some(job.created_at)
            }
        });
        for created in futures::future::join_all(finishes).await {
            match created {
                // Only what finished before the deadline counts towards the rate.
                Some(created) if Instant::now() <= deadline => {
                    let micros = (Utc::now() - created)
                        .num_microseconds()
                        .unwrap_or(i64::MAX);
                    hist.saturating_record(u64::try_from(micros).unwrap_or(1).max(1));
                }
                Some(_) => {}
                None => errors += 1,
            }
        }
    }
    Ok((hist, errors))
}
