//! The SQLite store: one database file in WAL mode with full fsync, so a committed job survives
//! a crash of the process or the machine. Its frequent writes share commits (`group_commit.rs`,
//! applying `writes.rs` and `claim.rs`), the rest go through `writer.rs`, and every one of them
//! tells the job cache (`job_cache.rs`) what it changed.

mod claim;
mod group_commit;
mod job_cache;
mod writer;
mod writes;

use std::{path::Path, str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use invokd_core::{
    CancelOutcome, Job, JobError, JobId, KeyId, Lease, NewJob, Outcome, UpstreamRef,
    ids::WorkerTokenId,
    job::cancelled_error,
    keys::{KeyHash, KeyRecord},
    provider::LogLine,
    store::{
        AfterAttempt, Beat, ClaimRequest, Delivery, DeliveryAttempt, DeliveryRepo, IdempotencyKey,
        Inserted, JobRepo, KeyRepo, ListQuery, QueueSlot, QueueStats, Requeued, Stale, Store,
        StoreError, WorkerRepo,
    },
    workers::{WorkerPresence, WorkerRecord, WorkerToken},
};
use sqlx::{
    Sqlite,
    sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePoolOptions, SqliteSynchronous},
};

use crate::sql::{
    Arg, Reads, Statement, after_attempt, as_inserted, corrupt, jobs, keys, micros,
    outcome_columns,
    rows::{self, Columns},
    to_json, unavailable, workers,
};
use group_commit::GroupCommit;
use job_cache::{JobCache, Wrote};
use writer::Writer;
use writes::{Change, Fenced};

/// How the store opens its database file: WAL with full fsync. The benchmark's raw insert loop
/// opens its file the same way, so the two are compared at the same durability.
pub fn connect_options(path: &Path) -> SqliteConnectOptions {
    SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal)
        // FULL: a commit is on disk before the 202 goes out, even across power loss.
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(Duration::from_secs(10))
        .pragma("temp_store", "memory")
}

/// The store's read connections (its writes go through one connection of their own).
pub fn pool_options() -> SqlitePoolOptions {
    SqlitePoolOptions::new().max_connections(8)
}

/// Jobs and keys in one SQLite database.
///
/// Every write goes through one connection, the frequent ones batched by the group commit
/// (`writes`), the others by `writer`: SQLite has one writer anyway, and writers queued in the
/// process wait their turn without the busy handler's sleeps. Reads run beside them on
/// read-only connections (`reads`).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    reads: Reads<Sqlite>,
    writer: Writer,
    writes: GroupCommit,
    /// The process owns the file alone (the data directory's lock), so jobs it wrote or read
    /// can be answered from memory.
    cache: Arc<JobCache>,
}

impl SqliteStore {
    /// Opens (creating if needed) the database at `path` and runs pending migrations. The store
    /// must be the file's only writer while it is open (the server holds the data directory's
    /// lock): it keeps recent jobs in memory.
    pub async fn open(path: &Path) -> Result<Self, StoreError> {
        let write = SqlitePoolOptions::new()
            .max_connections(1)
            // A local file does not go stale like a socket: no ping each time it is taken.
            .test_before_acquire(false)
            // Room for the group commit's statements beside the rest: an insert per batch size
            // (two endings each), and the sizes of log lines, finishes and claims that stay
            // prepared (`kept_prepared`, claims of up to 16 models).
            .connect_with(connect_options(path).statement_cache_capacity(256))
            .await
            .map_err(unavailable)?;
        crate::migrations::run_sqlite(&write)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        // Read-only, so a write that missed the writer fails loudly instead of contending.
        let pool = pool_options()
            .connect_with(connect_options(path).read_only(true))
            .await
            .map_err(unavailable)?;
        let cache = Arc::new(JobCache::default());
        Ok(Self {
            reads: Reads::new(pool),
            writer: Writer::new(write.clone(), cache.clone()),
            writes: GroupCommit::start(write, cache.clone()),
            cache,
        })
    }
}

/// Inserts one job in a transaction of several writes.
async fn insert_row(conn: &mut sqlx::SqliteConnection, job: &NewJob) -> Result<Job, StoreError> {
    jobs::insert::<Sqlite>("", &[job], "")?
        .query()
        .execute(conn)
        .await
        .map_err(unavailable)?;
    as_inserted(job)
}

/// A listing's statement on SQLite (see [`crate::sql::list_query`]): a tag is matched by its parts.
fn list_query(
    prefix: &str,
    q: &ListQuery,
) -> Result<sqlx::QueryBuilder<'static, Sqlite>, StoreError> {
    crate::sql::list_query(prefix, q, |b, name, value| {
        b.push(
            " AND EXISTS (SELECT 1 FROM json_each(jobs.tags) t
               WHERE json_extract(t.value, '$[0]') = ",
        )
        .push_bind(name.to_owned())
        .push(" AND json_extract(t.value, '$[1]') = ")
        .push_bind(value.to_owned())
        .push(")");
        Ok(())
    })
}

impl SqliteStore {
    /// `queue_order`, `page` slots at a time.
    async fn queue_order_in_pages(
        &self,
        model_id: &str,
        page: i64,
    ) -> Result<Vec<QueueSlot>, StoreError> {
        // Pages joined into one row each: the driver hands rows over one at a time at some
        // microseconds each (650 ms for a queue of 130,000), while SQLite joins them in a tenth
        // of that. Paged by the queue's index, so a deep queue is never held whole as text.
        let mut slots = Vec::new();
        let mut after = (i64::MIN, i64::MIN, String::new());
        loop {
            let joined: Option<String> = sqlx::query_scalar(
                "SELECT group_concat(priority || ',' || created_at || ',' || id, ';')
                 FROM (SELECT priority, created_at, id FROM jobs
                       WHERE status = 'QUEUED' AND model_id = ?1
                         AND (priority, created_at, id) > (?2, ?3, ?4)
                       ORDER BY priority, created_at, id LIMIT ?5)",
            )
            .bind(model_id)
            .bind(after.0)
            .bind(after.1)
            .bind(&after.2)
            .bind(page)
            .fetch_one(self.reads.pool())
            .await
            .map_err(unavailable)?;
            let start = slots.len();
            for slot in joined.as_deref().unwrap_or_default().split_terminator(';') {
                slots.push(parse_slot(slot).ok_or_else(|| corrupt("queue slot")(slot.to_owned()))?);
            }
            // The join keeps the page's order in practice; sorting makes it certain (and
            // costs little on sorted slots), and the next page starts after the page's last.
            slots[start..].sort_unstable();
            match slots.last() {
                Some(last) if slots.len() - start == page as usize => {
                    after = (
                        i64::from(last.priority),
                        last.created_at,
                        last.id.to_string(),
                    );
                }
                _ => break,
            }
        }
        Ok(slots)
    }
}

/// Slots in one row of `queue_order`.
const QUEUE_ORDER_PAGE: i64 = 50_000;

/// One `priority,created_at,id` of `queue_order`'s joined row.
fn parse_slot(slot: &str) -> Option<QueueSlot> {
    let mut parts = slot.splitn(3, ',');
    Some(QueueSlot {
        priority: parts.next()?.parse().ok()?,
        created_at: parts.next()?.parse().ok()?,
        id: JobId::from_str(parts.next()?).ok()?,
    })
}

#[async_trait]
impl JobRepo for SqliteStore {
    async fn insert_job(&self, job: NewJob) -> Result<Job, StoreError> {
        self.writes.insert(job).await
    }

    async fn insert_job_idempotent(
        &self,
        job: NewJob,
        idem: IdempotencyKey,
    ) -> Result<Inserted, StoreError> {
        // A write first, so the transaction holds SQLite's write lock from here: concurrent
        // creates with one key run one after the other.
        let mut tx = self.writer.begin().await?;
        tx.execute(jobs::forget_old_key(&job, &idem)).await?;
        if tx.execute(jobs::claim_key(&job, &idem)).await? == 1 {
            let inserted = insert_row(tx.conn(), &job).await?;
            tx.commit(Wrote::Rows(std::slice::from_ref(&inserted)))
                .await?;
            return Ok(Inserted::New(inserted));
        }
        let row = jobs::keyed_job(&job, &idem)
            .query()
            .fetch_optional(tx.conn())
            .await
            .map_err(unavailable)?;
        tx.commit(Wrote::NoJob).await?;
        jobs::replayed(row.as_ref(), &idem)
    }

    async fn list_jobs(&self, q: &ListQuery) -> Result<Vec<Job>, StoreError> {
        let rows = list_query("", q)?
            .build()
            .fetch_all(self.reads.pool())
            .await
            .map_err(unavailable)?;
        rows::jobs(&rows)
    }

    async fn get_job(&self, id: JobId, project: Option<&str>) -> Result<Option<Job>, StoreError> {
        let visible = |job: &Job| project.is_none_or(|p| p == job.project);
        if let Some(job) = self.cache.get(id) {
            return Ok(Some(job).filter(visible));
        }
        let seen = self.cache.generation();
        let st = Statement::new("SELECT * FROM jobs WHERE id = $1").arg(Arg::Id(id.as_uuid()));
        let Some(job) = self
            .reads
            .optional(st)
            .await?
            .as_ref()
            .map(rows::job)
            .transpose()?
        else {
            return Ok(None);
        };
        self.cache.fill(&job, seen);
        Ok(Some(job).filter(visible))
    }

    async fn claim_jobs(&self, req: ClaimRequest<'_>) -> Result<Vec<Job>, StoreError> {
        self.writes.claim(claim::Claim::new(&req)).await
    }

    async fn heartbeat(
        &self,
        id: JobId,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<Beat, StoreError> {
        self.writes.heartbeat(id, lease.clone(), until).await
    }

    async fn finish_with_logs(
        &self,
        id: JobId,
        lease: &Lease,
        outcome: Outcome,
        now: DateTime<Utc>,
        logs: &[LogLine],
    ) -> Result<bool, StoreError> {
        let (status, output, error) = outcome_columns(outcome);
        let output = output.as_ref().map(to_json).transpose()?;
        let change = Change::Finish {
            status,
            output,
            error,
            now,
            logs: logs.to_vec(),
        };
        self.writes.fenced(Fenced::new(id, lease, change)).await
    }

    async fn release(
        &self,
        id: JobId,
        lease: &Lease,
        error: JobError,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let change = Change::Release { error, now };
        self.writes.fenced(Fenced::new(id, lease, change)).await
    }

    async fn give_back(
        &self,
        id: JobId,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        let change = Change::GiveBack { now };
        self.writes.fenced(Fenced::new(id, lease, change)).await
    }

    async fn set_upstream(
        &self,
        id: JobId,
        lease: &Lease,
        upstream: Option<&UpstreamRef>,
    ) -> Result<bool, StoreError> {
        let change = Change::SetUpstream(upstream.cloned());
        self.writes.fenced(Fenced::new(id, lease, change)).await
    }

    async fn requeue_stale(
        &self,
        which: Stale<'_>,
        now: DateTime<Utc>,
    ) -> Result<Requeued, StoreError> {
        let st = jobs::requeue_stale(which, now);
        jobs::requeued(&self.writer.fetch_all(st, Wrote::AnyJobs).await?)
    }

    async fn expire_deadlines(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let st = jobs::expire_deadlines(now);
        self.writer.execute(st, Wrote::AnyJobs).await
    }

    async fn cancel(
        &self,
        id: JobId,
        project: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<CancelOutcome, StoreError> {
        let e = cancelled_error();
        let scoped = |sql: &'static str| {
            Statement::new(sql)
                .arg(Arg::Id(id.as_uuid()))
                .arg(Arg::OptText(project.map(str::to_owned)))
        };
        // Each statement is atomic on its own; a job that moves between them (claimed, finished,
        // requeued) is caught by the next one, or by the next round.
        for _ in 0..5 {
            let queued = scoped(
                "UPDATE jobs SET status = 'CANCELED', error_message = $3, error_type = $4, completed_at = $5
                 WHERE id = $1 AND ($2 IS NULL OR project = $2) AND status = 'QUEUED'",
            )
            .arg(Arg::Text(e.message.clone()))
            .arg(Arg::Text(e.error_type.clone()))
            .arg(Arg::Int(micros(now)));
            if self.writer.execute(queued, Wrote::Job(id)).await? == 1 {
                return Ok(CancelOutcome::Canceled);
            }
            let running = scoped(
                "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, $3)
                 WHERE id = $1 AND ($2 IS NULL OR project = $2) AND status = 'IN_PROGRESS'",
            )
            .arg(Arg::Int(micros(now)));
            if self.writer.execute(running, Wrote::Job(id)).await? == 1 {
                return Ok(CancelOutcome::Requested);
            }
            let status =
                scoped("SELECT status FROM jobs WHERE id = $1 AND ($2 IS NULL OR project = $2)");
            match self.reads.optional(status).await? {
                None => return Ok(CancelOutcome::NotFound),
                Some(row) if matches!(row.text("status")?.as_str(), "QUEUED" | "IN_PROGRESS") => {
                    continue;
                }
                Some(_) => return Ok(CancelOutcome::AlreadyDone),
            }
        }
        Err(StoreError::Unavailable(
            "the job kept changing state during cancel".into(),
        ))
    }

    async fn queue_position(&self, job: &Job) -> Result<u64, StoreError> {
        rows::n(&self.reads.one(jobs::queue_position(job)).await?)
    }

    async fn queue_order(&self, model_id: &str) -> Result<Vec<QueueSlot>, StoreError> {
        self.queue_order_in_pages(model_id, QUEUE_ORDER_PAGE).await
    }

    async fn jobs_to_expire(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError> {
        let rows = self.reads.all(jobs::jobs_to_expire(before, limit)).await?;
        rows.iter().map(|r| r.id("id").map(JobId::from)).collect()
    }

    async fn mark_expired(&self, id: JobId, now: DateTime<Utc>) -> Result<(), StoreError> {
        let st = jobs::mark_expired(id, now);
        self.writer.execute(st, Wrote::Job(id)).await?;
        Ok(())
    }

    async fn queued_count(&self, key_id: Option<KeyId>) -> Result<u64, StoreError> {
        rows::n(&self.reads.one(jobs::queued_count(key_id)).await?)
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        let rows = self.reads.all(jobs::queue_stats()).await?;
        rows.iter().map(rows::queue_stats).collect()
    }

    async fn append_logs(&self, id: JobId, lines: &[LogLine]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.writes.append_logs(id, lines.to_vec()).await
    }

    async fn logs(&self, id: JobId) -> Result<Vec<LogLine>, StoreError> {
        let rows = self.reads.all(jobs::logs(id)).await?;
        rows.iter().map(rows::log_line).collect()
    }
}

#[async_trait]
impl KeyRepo for SqliteStore {
    async fn insert_key(&self, key: KeyRecord) -> Result<(), StoreError> {
        self.writer
            .execute(keys::insert_key(key), Wrote::NoJob)
            .await?;
        Ok(())
    }

    async fn find_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let row = self.reads.optional(keys::find_key(hash)).await?;
        row.as_ref().map(rows::key).transpose()
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = self.reads.all(keys::list_keys()).await?;
        rows.iter().map(rows::key).collect()
    }

    async fn revoke_key(&self, id: KeyId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let st = keys::revoke_key(id, now);
        Ok(self.writer.execute(st, Wrote::NoJob).await? == 1)
    }

    async fn count_keys(&self) -> Result<u64, StoreError> {
        rows::n(&self.reads.one(keys::count_keys()).await?)
    }
}

#[async_trait]
impl WorkerRepo for SqliteStore {
    async fn insert_worker_token(&self, token: WorkerToken) -> Result<(), StoreError> {
        self.writer
            .execute(workers::insert_token(token)?, Wrote::NoJob)
            .await?;
        Ok(())
    }

    async fn find_worker_token(&self, hash: &KeyHash) -> Result<Option<WorkerToken>, StoreError> {
        let row = self.reads.optional(workers::find_token(hash)).await?;
        row.as_ref().map(rows::worker_token).transpose()
    }

    async fn list_worker_tokens(&self) -> Result<Vec<WorkerToken>, StoreError> {
        let rows = self.reads.all(workers::list_tokens()).await?;
        rows.iter().map(rows::worker_token).collect()
    }

    async fn revoke_worker_token(
        &self,
        id: WorkerTokenId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .writer
            .execute(workers::revoke_token(id, now), Wrote::NoJob)
            .await?
            == 1)
    }

    async fn record_worker(
        &self,
        w: &WorkerPresence,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.writer
            .execute(workers::record(w, now)?, Wrote::NoJob)
            .await?;
        Ok(())
    }

    async fn count_worker_job(&self, worker_id: &str, completed: bool) -> Result<(), StoreError> {
        self.writer
            .execute(workers::count_job(worker_id, completed), Wrote::NoJob)
            .await?;
        Ok(())
    }

    async fn list_workers(&self, since: DateTime<Utc>) -> Result<Vec<WorkerRecord>, StoreError> {
        let rows = self.reads.all(workers::list(since)).await?;
        rows.iter().map(rows::worker).collect()
    }
}

impl SqliteStore {
    /// The delivery of this row, with its attempts.
    async fn delivery(&self, row: &impl Columns) -> Result<Delivery, StoreError> {
        let mut d = rows::delivery(row)?;
        let st = Statement::new(
            "SELECT at, status_code, error FROM webhook_attempts WHERE delivery_id = $1
             ORDER BY at, rowid",
        )
        .arg(Arg::Int(d.id));
        let attempts = self.reads.all(st).await?;
        d.attempts = attempts
            .iter()
            .map(rows::attempt)
            .collect::<Result<_, _>>()?;
        Ok(d)
    }
}

#[async_trait]
impl DeliveryRepo for SqliteStore {
    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let st = keys::claim_deliveries::<Sqlite>(owner, limit, now, lease_until);
        let rows = self.writer.fetch_all(st, Wrote::NoJob).await?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            out.push(self.delivery(r).await?);
        }
        Ok(out)
    }

    async fn record_attempt(
        &self,
        id: i64,
        owner: &str,
        attempt: DeliveryAttempt,
        then: AfterAttempt,
    ) -> Result<bool, StoreError> {
        let (state, next) = after_attempt(then, attempt.at);
        let mut tx = self.writer.begin().await?;
        let updated = tx
            .execute(
                Statement::new(
                    "UPDATE webhook_deliveries
                     SET state = $1, next_attempt_at = $2, attempts = attempts + 1,
                         lease_owner = NULL, lease_expires_at = NULL
                     WHERE id = $3 AND lease_owner = $4 AND state = 'pending'",
                )
                .arg(Arg::Text(state.to_owned()))
                .arg(Arg::Int(micros(next)))
                .arg(Arg::Int(id))
                .arg(Arg::Text(owner.to_owned())),
            )
            .await?;
        if updated == 1 {
            tx.execute(
                Statement::new(
                    "INSERT INTO webhook_attempts (delivery_id, at, status_code, error)
                     VALUES ($1, $2, $3, $4)",
                )
                .arg(Arg::Int(id))
                .arg(Arg::Int(micros(attempt.at)))
                .arg(Arg::OptInt(attempt.status_code.map(i64::from)))
                .arg(Arg::OptText(attempt.error)),
            )
            .await?;
        }
        tx.commit(Wrote::NoJob).await?;
        Ok(updated == 1)
    }

    async fn delivery_of(&self, job: JobId) -> Result<Option<Delivery>, StoreError> {
        match self.reads.optional(keys::delivery_of(job)).await? {
            Some(row) => Ok(Some(self.delivery(&row).await?)),
            None => Ok(None),
        }
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn check(&self) -> Result<(), StoreError> {
        self.reads.one(keys::check()).await?;
        Ok(())
    }

    async fn setting_or_insert(
        &self,
        name: &str,
        value: &str,
    ) -> Result<(String, bool), StoreError> {
        let st = keys::insert_setting(name, value);
        let inserted = self.writer.execute(st, Wrote::NoJob).await? == 1;
        let stored = self.reads.one(keys::setting(name)).await?.text("value")?;
        Ok((stored, inserted))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::Map;
    use sqlx::Row as _;

    use super::*;

    /// How SQLite would run a listing: the plan's steps, one line each.
    async fn plan(store: &SqliteStore, q: &ListQuery) -> String {
        let rows = list_query("EXPLAIN QUERY PLAN ", q)
            .unwrap()
            .build()
            .fetch_all(store.reads.pool())
            .await
            .unwrap();
        rows.iter()
            .map(|r| r.get::<String, _>("detail"))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// A store on a file of its own, kept while the directory is.
    async fn fresh_store() -> (tempfile::TempDir, SqliteStore) {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("invokd.db"))
            .await
            .unwrap();
        (dir, store)
    }

    #[tokio::test]
    async fn writes_outside_the_group_commit_reach_the_cache() {
        let (_dir, store) = fresh_store().await;
        let now = Utc::now();
        let queued = store.insert_job(job_cache::tests::new_job()).await.unwrap();
        assert!(
            store.cache.get(queued.id).is_some(),
            "an insert puts its row"
        );
        store.cancel(queued.id, None, now).await.unwrap();
        assert!(
            store.cache.get(queued.id).is_none(),
            "a cancel forgets its job"
        );
        let got = store.get_job(queued.id, None).await.unwrap().unwrap();
        assert_eq!(got.status, invokd_core::JobStatus::Canceled);

        store.insert_job(job_cache::tests::new_job()).await.unwrap();
        let caps = std::collections::BTreeMap::new();
        let claimed = store
            .claim_jobs(ClaimRequest {
                owner: "proc:1",
                limit: 1,
                capacity: &caps,
                default_capacity: 1,
                now,
                lease_until: now + chrono::Duration::seconds(60),
            })
            .await
            .unwrap()
            .remove(0);
        assert!(
            store.cache.get(claimed.id).is_some(),
            "a claim puts its rows"
        );
        let held_by = Stale::HeldBy {
            owner_prefix: "proc:",
        };
        store.requeue_stale(held_by, now).await.unwrap();
        assert!(
            store.cache.get(claimed.id).is_none(),
            "a sweep forgets every job"
        );
        // Its one attempt used, it failed.
        let got = store.get_job(claimed.id, None).await.unwrap().unwrap();
        assert_eq!(got.status, invokd_core::JobStatus::Failed);
    }

    #[tokio::test]
    async fn the_queue_order_read_in_pages_is_the_whole_order() {
        let (_dir, store) = fresh_store().await;
        let (key, at) = (KeyId::generate(), Utc::now());
        for i in 0..10i32 {
            store
                .insert_job(NewJob {
                    id: JobId::generate(),
                    key_id: key,
                    project: "p".into(),
                    model_id: "m".into(),
                    input: Map::new().into(),
                    tags: Vec::new(),
                    // Three priorities and, within them, ties of creation time.
                    priority: i % 3,
                    created_at: at + chrono::Duration::microseconds(i64::from(i / 4)),
                    max_attempts: 1,
                    start_deadline: None,
                    webhook_url: None,
                    run_timeout: None,
                })
                .await
                .unwrap();
        }
        let whole = store.queue_order("m").await.unwrap();
        assert_eq!(whole.len(), 10);
        assert!(whole.is_sorted());
        for page in [1, 3, 5, 10, 11] {
            assert_eq!(
                store.queue_order_in_pages("m", page).await.unwrap(),
                whole,
                "pages of {page}"
            );
        }
    }

    #[tokio::test]
    async fn listings_walk_an_index_in_their_order_and_sort_nothing() {
        let (_dir, store) = fresh_store().await;
        let project = ListQuery {
            project: Some("p".into()),
            limit: 20,
            ..ListQuery::default()
        };
        let filtered = ListQuery {
            status: Some(invokd_core::JobStatus::Completed),
            model_id: Some("m".into()),
            tag: Some(("k".into(), "v".into())),
            after: Some((Utc::now(), JobId::generate())),
            ..project.clone()
        };
        let everyone = ListQuery {
            limit: 20,
            ..ListQuery::default()
        };
        for (q, index) in [
            (&project, "jobs_by_project"),
            (&filtered, "jobs_by_project"),
            (&everyone, "jobs_by_created"),
        ] {
            let plan = plan(&store, q).await;
            assert!(plan.contains(index), "{q:?} should use {index}:\n{plan}");
            assert!(!plan.contains("TEMP B-TREE"), "{q:?} sorts:\n{plan}");
        }
    }
}
