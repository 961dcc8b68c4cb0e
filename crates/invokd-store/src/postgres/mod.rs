//! The PostgreSQL store: the same contract as the SQLite one, for several replicas sharing one
//! database. Claims lock with `FOR UPDATE SKIP LOCKED`, so concurrent dispatchers never wait on
//! each other nor take the same job; triggers send NOTIFY wake-ups that every replica hears
//! (`notices.rs`); creates that arrive together go in as one insert (`inserts.rs`).

mod inserts;
mod notices;

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use invokd_core::{
    CancelOutcome, Job, JobError, JobId, KeyId, Lease, NewJob, Outcome, UpstreamRef,
    ids::WorkerTokenId,
    job::cancelled_error,
    keys::{KeyHash, KeyRecord},
    provider::LogLine,
    store::{
        AfterAttempt, Beat, ClaimRequest, Delivery, DeliveryAttempt, DeliveryRepo, IdempotencyKey,
        Inserted, JobRepo, KeyRepo, ListQuery, QueueSlot, QueueStats, Requeued, Stale, Store,
        StoreError, StoreNotice, WorkerRepo,
    },
    workers::{WorkerPresence, WorkerRecord, WorkerToken},
};
use sqlx::{
    Postgres,
    postgres::{PgConnectOptions, PgPool, PgPoolOptions, PgRow},
    types::Json,
};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::sql::{
    Arg, Reads, Statement, after_attempt, beat, jobs,
    jobs::{fenced, int},
    keys, micros, outcome_columns, pg_text,
    rows::{self, Columns},
    to_json, unavailable, workers,
};
use inserts::Inserts;
use notices::{ListenerTask, listen};

/// Connections per store: claims, heartbeats and API reads of one replica share them.
const POOL_SIZE: u32 = 16;

/// Notices a slow receiver may fall behind by before it skips ahead (`Lagged`); it then re-reads
/// the store, so nothing that matters is lost.
const NOTICE_BUFFER: usize = 1024;

/// Jobs, keys and webhook deliveries in one PostgreSQL schema (the first on the connection's
/// `search_path`), shared by any number of replicas.
///
/// Replicas sweep with [`Stale::Expired`]; [`Stale::HeldBy`] takes back the runs of one
/// process's earlier lives, and [`Stale::AllRunning`] the runs of every replica, so it is only
/// for when none is left.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// The same pool, for the statements both stores share.
    reads: Reads<Postgres>,
    /// Creates share inserts and commits (`inserts.rs`).
    inserts: Inserts,
    notices: broadcast::Sender<StoreNotice>,
    _listener: Arc<ListenerTask>,
}

fn parse_url(url: &str) -> Result<PgConnectOptions, StoreError> {
    // The error never repeats the URL, which may hold a password.
    PgConnectOptions::from_str(url)
        .map_err(|e| StoreError::Unavailable(format!("bad PostgreSQL URL: {e}")))
}

async fn run_migrations(pool: &PgPool) -> Result<(), StoreError> {
    crate::migrations::run_postgres(pool)
        .await
        .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))
}

impl PostgresStore {
    /// Connects to the database at `url` (`postgres://user:pass@host/db`; a `search_path` may
    /// be given as `?options=-c%20search_path%3Dname`), runs pending migrations, and starts
    /// listening for wake-ups.
    pub async fn connect(url: &str) -> Result<Self, StoreError> {
        Self::connect_with(parse_url(url)?).await
    }

    /// [`PostgresStore::connect`] with options already parsed.
    pub async fn connect_with(options: PgConnectOptions) -> Result<Self, StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(POOL_SIZE)
            .acquire_timeout(Duration::from_secs(10))
            .connect_with(options.clone())
            .await
            .map_err(unavailable)?;
        run_migrations(&pool).await?;
        let (notices, _) = broadcast::channel(NOTICE_BUFFER);
        let listener = listen(&pool, options, notices.clone()).await?;
        Ok(Self {
            inserts: Inserts::start(pool.clone()),
            reads: Reads::new(pool.clone()),
            pool,
            notices,
            _listener: Arc::new(listener),
        })
    }

    /// Runs pending migrations on the database at `url`, and nothing else.
    pub async fn migrate(url: &str) -> Result<(), StoreError> {
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .connect_with(parse_url(url)?)
            .await
            .map_err(unavailable)?;
        let done = run_migrations(&pool).await;
        pool.close().await;
        done
    }

    /// Inserts one job and reads its row back.
    pub(crate) async fn insert_row<'e, E: sqlx::PgExecutor<'e>>(
        ex: E,
        job: &NewJob,
    ) -> Result<Job, StoreError> {
        let row = jobs::insert::<Postgres>("", &[job], " RETURNING *")?
            .query()
            .fetch_one(ex)
            .await
            .map_err(unavailable)?;
        rows::job(&row)
    }

    /// Runs `st`; how many rows it changed.
    async fn execute(&self, mut st: Statement) -> Result<u64, StoreError> {
        let done = st.query().execute(&self.pool).await.map_err(unavailable)?;
        Ok(done.rows_affected())
    }
}

/// A run's log lines in the order given, `$1` being the job and `$arrays` the placeholders of
/// [`log_columns`]' arrays: one statement for all of them.
macro_rules! insert_logs {
    ($arrays:literal) => {
        concat!(
            "INSERT INTO job_logs (job_id, ts, level, message)
             SELECT $1, l.ts, l.level, l.message
             FROM UNNEST(",
            $arrays,
            ") WITH ORDINALITY AS l (ts, level, message, n)
             ORDER BY l.n"
        )
    };
}

/// The columns of `lines` as the arrays `insert_logs!` takes.
fn log_columns(lines: &[LogLine]) -> (Vec<i64>, Vec<&str>, Vec<String>) {
    let ts = lines.iter().map(|l| micros(l.timestamp)).collect();
    let levels = lines.iter().map(|l| l.level.as_str()).collect();
    let messages = lines
        .iter()
        .map(|l| pg_text(&l.message).into_owned())
        .collect();
    (ts, levels, messages)
}

#[async_trait]
impl JobRepo for PostgresStore {
    async fn insert_job(&self, job: NewJob) -> Result<Job, StoreError> {
        self.inserts.insert(job).await
    }

    async fn insert_job_idempotent(
        &self,
        job: NewJob,
        idem: IdempotencyKey,
    ) -> Result<Inserted, StoreError> {
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        jobs::forget_old_key(&job, &idem)
            .query()
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        // A concurrent create with the same key waits here on the other's uncommitted row, then
        // does nothing and reads the job the other made.
        let claimed = jobs::claim_key(&job, &idem)
            .query()
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?
            .rows_affected();
        if claimed == 1 {
            let inserted = Self::insert_row(&mut *tx, &job).await?;
            tx.commit().await.map_err(unavailable)?;
            return Ok(Inserted::New(inserted));
        }
        let row = jobs::keyed_job(&job, &idem)
            .query()
            .fetch_optional(&mut *tx)
            .await
            .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        jobs::replayed(row.as_ref(), &idem)
    }

    async fn list_jobs(&self, q: &ListQuery) -> Result<Vec<Job>, StoreError> {
        let mut b = crate::sql::list_query("", q, |b, name, value| {
            // The pair compared as JSON text, both sides written by serde_json: taking a value
            // out (`->`, `->>`) unescapes it, which fails on a \u0000 (text cannot hold one).
            b.push(" AND EXISTS (SELECT 1 FROM json_array_elements(tags) t WHERE t::text = ")
                .push_bind(to_json(&(name, value))?)
                .push(")");
            Ok(())
        })?;
        let rows = b.build().fetch_all(&self.pool).await.map_err(unavailable)?;
        rows::jobs(&rows)
    }

    async fn get_job(&self, id: JobId, project: Option<&str>) -> Result<Option<Job>, StoreError> {
        let st = Statement::new(
            "SELECT * FROM jobs WHERE id = $1 AND ($2::text IS NULL OR project = $2)",
        )
        .arg(Arg::Id(id.as_uuid()))
        .arg(Arg::OptText(project.map(str::to_owned)));
        let row = self.reads.optional(st).await?;
        row.as_ref().map(rows::job).transpose()
    }

    async fn claim_jobs(&self, req: ClaimRequest<'_>) -> Result<Vec<Job>, StoreError> {
        // One statement: the models with queued jobs (a loose scan of the queue's index), for
        // each the first jobs it may still start, locked with SKIP LOCKED so that concurrent
        // claimers pass over each other's rows instead of waiting or taking them, then the
        // best `limit` of those across models.
        let rows = sqlx::query(
            "WITH RECURSIVE models (model_id) AS (
                 (SELECT model_id FROM jobs WHERE status = 'QUEUED' ORDER BY model_id LIMIT 1)
                 UNION ALL
                 SELECT (SELECT j.model_id FROM jobs j
                         WHERE j.status = 'QUEUED' AND j.model_id > m.model_id
                         ORDER BY j.model_id LIMIT 1)
                 FROM models m WHERE m.model_id IS NOT NULL
             ),
             caps AS (
                 SELECT model_id, COALESCE(($4::jsonb ->> model_id)::bigint, $5) AS cap
                 FROM models WHERE model_id IS NOT NULL
             ),
             picked AS (
                 SELECT p.id, p.priority, p.created_at
                 FROM caps c CROSS JOIN LATERAL (
                     SELECT j.id, j.priority, j.created_at FROM jobs j
                     WHERE j.status = 'QUEUED' AND j.model_id = c.model_id
                       AND (j.start_deadline IS NULL OR j.start_deadline >= $3)
                     ORDER BY j.priority, j.created_at, j.id
                     LIMIT LEAST(c.cap, $6)
                     FOR UPDATE SKIP LOCKED) p
                 WHERE c.cap > 0
                 ORDER BY p.priority, p.created_at, p.id
                 LIMIT $6
             )
             UPDATE jobs
             SET status = 'IN_PROGRESS', attempt = attempt + 1, lease_owner = $1,
                 lease_expires_at = $2, started_at = COALESCE(started_at, GREATEST($3, jobs.created_at))
             FROM picked WHERE jobs.id = picked.id
             RETURNING jobs.*",
        )
        .bind(req.owner)
        .bind(micros(req.lease_until))
        .bind(micros(req.now))
        .bind(Json(req.capacity))
        .bind(i64::from(req.default_capacity))
        .bind(i64::from(req.limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let mut jobs = rows::jobs(&rows)?;
        jobs.sort_by_key(|j| (j.priority, j.created_at, j.id));
        Ok(jobs)
    }

    async fn heartbeat(
        &self,
        id: JobId,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<Beat, StoreError> {
        let row = self
            .reads
            .optional(jobs::heartbeat(id, lease, until))
            .await?;
        beat(row.as_ref())
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
        let (ts, levels, messages) = log_columns(logs);
        // One statement, one commit: a data-modifying WITH runs whether or not the update
        // matches, so a run that lost its lease keeps its lines, as appended lines would.
        let done = sqlx::query(concat!(
            "WITH logged AS (",
            insert_logs!("$4::bigint[], $5::text[], $6::text[]"),
            ") ",
            fenced!(
                "status = $7, output = $8::json, error_message = $9, error_type = $10,
                 completed_at = $11, lease_owner = NULL, lease_expires_at = NULL"
            )
        ))
        .bind(id.as_uuid())
        .bind(&lease.owner)
        .bind(int(lease.attempt))
        .bind(&ts)
        .bind(&levels)
        .bind(&messages)
        .bind(status.as_str())
        .bind(output)
        .bind(error.as_ref().map(|e| pg_text(&e.message).into_owned()))
        .bind(error.as_ref().map(|e| pg_text(&e.error_type).into_owned()))
        .bind(micros(now))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn release(
        &self,
        id: JobId,
        lease: &Lease,
        error: JobError,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.execute(jobs::release(id, lease, error, now)).await? == 1)
    }

    async fn give_back(
        &self,
        id: JobId,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        Ok(self.execute(jobs::give_back(id, lease, now)).await? == 1)
    }

    async fn set_upstream(
        &self,
        id: JobId,
        lease: &Lease,
        upstream: Option<&UpstreamRef>,
    ) -> Result<bool, StoreError> {
        Ok(self
            .execute(jobs::set_upstream(id, lease, upstream))
            .await?
            == 1)
    }

    async fn requeue_stale(
        &self,
        which: Stale<'_>,
        now: DateTime<Utc>,
    ) -> Result<Requeued, StoreError> {
        jobs::requeued(&self.reads.all(jobs::requeue_stale(which, now)).await?)
    }

    async fn expire_deadlines(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        self.execute(jobs::expire_deadlines(now)).await
    }

    async fn cancel(
        &self,
        id: JobId,
        project: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<CancelOutcome, StoreError> {
        let e = cancelled_error();
        // One statement: cancel it if queued, else ask it to stop if running, and say which
        // (or what it already was). The row lock orders it against a concurrent claim or finish.
        let row: Option<(String, bool)> = sqlx::query_as(
            "WITH target AS (
                 SELECT id, status FROM jobs
                 WHERE id = $1 AND ($2::text IS NULL OR project = $2)
                 FOR UPDATE
             ),
             changed AS (
                 UPDATE jobs j
                 SET status = CASE WHEN t.status = 'QUEUED' THEN 'CANCELED' ELSE j.status END,
                     error_message = CASE WHEN t.status = 'QUEUED' THEN $3 ELSE j.error_message END,
                     error_type = CASE WHEN t.status = 'QUEUED' THEN $4 ELSE j.error_type END,
                     completed_at = CASE WHEN t.status = 'QUEUED' THEN $5 ELSE j.completed_at END,
                     cancel_requested_at = CASE WHEN t.status = 'IN_PROGRESS'
                                                THEN COALESCE(j.cancel_requested_at, $5)
                                                ELSE j.cancel_requested_at END
                 FROM target t
                 WHERE j.id = t.id AND t.status IN ('QUEUED', 'IN_PROGRESS')
                 RETURNING j.id
             )
             SELECT t.status, EXISTS (SELECT 1 FROM changed) FROM target t",
        )
        .bind(id.as_uuid())
        .bind(project)
        .bind(&e.message)
        .bind(&e.error_type)
        .bind(micros(now))
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(match row {
            None => CancelOutcome::NotFound,
            Some((status, true)) if status == "QUEUED" => CancelOutcome::Canceled,
            Some((status, true)) if status == "IN_PROGRESS" => CancelOutcome::Requested,
            Some(_) => CancelOutcome::AlreadyDone,
        })
    }

    async fn queue_position(&self, job: &Job) -> Result<u64, StoreError> {
        rows::n(&self.reads.one(jobs::queue_position(job)).await?)
    }

    async fn queue_order(&self, model_id: &str) -> Result<Vec<QueueSlot>, StoreError> {
        // Streamed into the slots: a deep queue's rows are never all held at once.
        let mut rows = sqlx::query_as::<_, (i32, i64, Uuid)>(
            "SELECT priority, created_at, id FROM jobs
             WHERE status = 'QUEUED' AND model_id = $1
             ORDER BY priority, created_at, id",
        )
        .bind(model_id)
        .fetch(&self.pool);
        let mut slots = Vec::new();
        while let Some((priority, created_at, id)) = rows.try_next().await.map_err(unavailable)? {
            slots.push(QueueSlot {
                priority,
                created_at,
                id: JobId::from(id),
            });
        }
        Ok(slots)
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
        self.execute(jobs::mark_expired(id, now)).await?;
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
        let (ts, levels, messages) = log_columns(lines);
        sqlx::query(insert_logs!("$2::bigint[], $3::text[], $4::text[]"))
            .bind(id.as_uuid())
            .bind(&ts)
            .bind(&levels)
            .bind(&messages)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn logs(&self, id: JobId) -> Result<Vec<LogLine>, StoreError> {
        let rows = self.reads.all(jobs::logs(id)).await?;
        rows.iter().map(rows::log_line).collect()
    }
}

#[async_trait]
impl KeyRepo for PostgresStore {
    async fn insert_key(&self, key: KeyRecord) -> Result<(), StoreError> {
        self.execute(keys::insert_key(key)).await?;
        Ok(())
    }

    async fn find_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let row = self.reads.optional(keys::find_key(hash)).await?;
        row.as_ref().map(rows::key).transpose()
    }

    async fn count_keys(&self) -> Result<u64, StoreError> {
        rows::n(&self.reads.one(keys::count_keys()).await?)
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = self.reads.all(keys::list_keys()).await?;
        rows.iter().map(rows::key).collect()
    }

    async fn revoke_key(&self, id: KeyId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        Ok(self.execute(keys::revoke_key(id, now)).await? == 1)
    }
}

#[async_trait]
impl WorkerRepo for PostgresStore {
    async fn insert_worker_token(&self, token: WorkerToken) -> Result<(), StoreError> {
        self.execute(workers::insert_token(token)?).await?;
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
        Ok(self.execute(workers::revoke_token(id, now)).await? == 1)
    }

    async fn record_worker(
        &self,
        w: &WorkerPresence,
        now: DateTime<Utc>,
    ) -> Result<(), StoreError> {
        self.execute(workers::record(w, now)?).await?;
        Ok(())
    }

    async fn count_worker_job(&self, worker_id: &str, completed: bool) -> Result<(), StoreError> {
        self.execute(workers::count_job(worker_id, completed))
            .await?;
        Ok(())
    }

    async fn list_workers(&self, since: DateTime<Utc>) -> Result<Vec<WorkerRecord>, StoreError> {
        let rows = self.reads.all(workers::list(since)).await?;
        rows.iter().map(rows::worker).collect()
    }
}

impl PostgresStore {
    /// The deliveries of these rows, each with its attempts (one query for all of them).
    async fn deliveries(&self, rows: &[PgRow]) -> Result<Vec<Delivery>, StoreError> {
        let mut out = rows
            .iter()
            .map(rows::delivery)
            .collect::<Result<Vec<_>, StoreError>>()?;
        if out.is_empty() {
            return Ok(out);
        }
        let ids: Vec<i64> = out.iter().map(|d| d.id).collect();
        let attempts = sqlx::query(
            "SELECT delivery_id, at, status_code, error FROM webhook_attempts
             WHERE delivery_id = ANY($1) ORDER BY at, seq",
        )
        .bind(&ids)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        for a in &attempts {
            let of = a.int("delivery_id")?;
            let attempt = rows::attempt(a)?;
            if let Some(d) = out.iter_mut().find(|d| d.id == of) {
                d.attempts.push(attempt);
            }
        }
        Ok(out)
    }
}

#[async_trait]
impl DeliveryRepo for PostgresStore {
    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Delivery>, StoreError> {
        let st = keys::claim_deliveries::<Postgres>(owner, limit, now, lease_until);
        let rows = self.reads.all(st).await?;
        self.deliveries(&rows).await
    }

    async fn record_attempt(
        &self,
        id: i64,
        owner: &str,
        attempt: DeliveryAttempt,
        then: AfterAttempt,
    ) -> Result<bool, StoreError> {
        let (state, next) = after_attempt(then, attempt.at);
        // The attempt is written only if the lease was still ours: one statement, so both or
        // neither.
        let done = sqlx::query(
            "WITH updated AS (
                 UPDATE webhook_deliveries
                 SET state = $1, next_attempt_at = $2, attempts = attempts + 1,
                     lease_owner = NULL, lease_expires_at = NULL
                 WHERE id = $3 AND lease_owner = $4 AND state = 'pending'
                 RETURNING id
             )
             INSERT INTO webhook_attempts (delivery_id, at, status_code, error)
             SELECT id, $5, $6, $7 FROM updated",
        )
        .bind(state)
        .bind(micros(next))
        .bind(id)
        .bind(owner)
        .bind(micros(attempt.at))
        .bind(attempt.status_code.map(i32::from))
        .bind(attempt.error.as_deref())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn delivery_of(&self, job: JobId) -> Result<Option<Delivery>, StoreError> {
        let rows = self.reads.all(keys::delivery_of(job)).await?;
        Ok(self.deliveries(&rows).await?.pop())
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn check(&self) -> Result<(), StoreError> {
        self.execute(keys::check()).await?;
        Ok(())
    }

    fn notices(&self) -> Option<broadcast::Receiver<StoreNotice>> {
        Some(self.notices.subscribe())
    }

    async fn setting_or_insert(
        &self,
        name: &str,
        value: &str,
    ) -> Result<(String, bool), StoreError> {
        let inserted = self.execute(keys::insert_setting(name, value)).await? == 1;
        let stored = self.reads.one(keys::setting(name)).await?.text("value")?;
        Ok((stored, inserted))
    }
}
