//! The PostgreSQL store: the same contract as the SQLite one, for several replicas sharing one
//! database. Claims lock with `FOR UPDATE SKIP LOCKED`, so concurrent dispatchers never wait on
//! each other nor take the same job; triggers send NOTIFY wake-ups that every replica hears.

use std::{str::FromStr, sync::Arc, time::Duration};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use futures::TryStreamExt;
use invokd_core::{
    CancelOutcome, Job, JobError, JobId, JobStatus, KeyId, Lease, NewJob, Outcome, UpstreamRef,
    job::{cancelled_error, start_timeout_error},
    keys::{KeyHash, KeyRecord},
    provider::LogLine,
    store::{
        AfterAttempt, Beat, ClaimRequest, Delivery, DeliveryAttempt, DeliveryRepo, IdempotencyKey,
        Inserted, JobRepo, KeyRepo, ListQuery, QueueSlot, QueueStats, Requeued, Stale, Store,
        StoreError, StoreNotice,
    },
};
use serde_json::{Map, Value};
use sqlx::{
    Decode, Postgres, Row, Type,
    postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions, PgRow},
    types::Json,
};
use tokio::sync::broadcast;
use uuid::Uuid;

use crate::pg_inserts::Inserts;
use crate::sql::{
    ATTEMPTS_EXHAUSTED, after_attempt, beat, corrupt, delivery_state, from_micros, micros,
    opt_time, outcome_columns, run_timeout_ms, to_json, unavailable,
};

/// Connections per store: claims, heartbeats and API reads of one replica share them.
const POOL_SIZE: u32 = 16;

/// Notices a slow receiver may fall behind by before it skips ahead (`Lagged`); it then re-reads
/// the store, so nothing that matters is lost.
const NOTICE_BUFFER: usize = 1024;

/// Jobs, keys and webhook deliveries in one PostgreSQL schema (the first on the connection's
/// `search_path`), shared by any number of replicas.
///
/// Replicas sweep with [`Stale::Expired`]; [`Stale::AllRunning`] also takes back the runs of
/// every other replica, so it is only for when none is left.
#[derive(Debug, Clone)]
pub struct PostgresStore {
    pool: PgPool,
    /// Creates share inserts and commits (`pg_inserts.rs`).
    inserts: Inserts,
    notices: broadcast::Sender<StoreNotice>,
    _listener: Arc<ListenerTask>,
}

/// The task that forwards NOTIFY wake-ups; it ends with the last clone of the store.
#[derive(Debug)]
struct ListenerTask(tokio::task::AbortHandle);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
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

fn int(v: u32) -> i32 {
    // Out of range only for values no column holds, so a fenced match simply fails.
    i32::try_from(v).unwrap_or(i32::MAX)
}

fn get<'r, T: Decode<'r, Postgres> + Type<Postgres>>(
    row: &'r PgRow,
    column: &str,
) -> Result<T, StoreError> {
    row.try_get(column)
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

fn count(n: i64) -> u64 {
    u64::try_from(n).unwrap_or(0)
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

    fn job_from_row(row: &PgRow) -> Result<Job, StoreError> {
        let status: String = get(row, "status")?;
        let attempt = u32::try_from(get::<i32>(row, "attempt")?)
            .map_err(|e| corrupt("attempt")(e.to_string()))?;
        let lease = match (
            get::<Option<String>>(row, "lease_owner")?,
            get::<Option<i64>>(row, "lease_expires_at")?,
        ) {
            (Some(owner), Some(exp)) => Some(Lease {
                owner,
                attempt,
                expires_at: from_micros(exp)?,
            }),
            _ => None,
        };
        let error = get::<Option<String>>(row, "error_message")?
            .map(|message| -> Result<JobError, StoreError> {
                Ok(JobError {
                    message,
                    error_type: get::<Option<String>>(row, "error_type")?.unwrap_or_default(),
                })
            })
            .transpose()?;
        Ok(Job {
            id: JobId::from(get::<Uuid>(row, "id")?),
            key_id: KeyId::from(get::<Uuid>(row, "key_id")?),
            model_id: get(row, "model_id")?,
            project: get(row, "project")?,
            input: get::<Json<Map<String, Value>>>(row, "input")?.0.into(),
            tags: get::<Json<Vec<(String, String)>>>(row, "tags")?.0,
            status: JobStatus::from_str(&status).map_err(|e| corrupt("status")(e.to_string()))?,
            priority: get(row, "priority")?,
            created_at: from_micros(get(row, "created_at")?)?,
            started_at: opt_time(get(row, "started_at")?)?,
            completed_at: opt_time(get(row, "completed_at")?)?,
            attempt,
            max_attempts: u32::try_from(get::<i32>(row, "max_attempts")?)
                .map_err(|e| corrupt("max_attempts")(e.to_string()))?,
            lease,
            output: get::<Option<Json<Map<String, Value>>>>(row, "output")?.map(|j| j.0.into()),
            error,
            start_deadline: opt_time(get(row, "start_deadline")?)?,
            webhook_url: get(row, "webhook_url")?,
            run_timeout: get::<Option<i64>>(row, "run_timeout_ms")?
                .and_then(|ms| u64::try_from(ms).ok())
                .map(Duration::from_millis),
            expired_at: opt_time(get(row, "expired_at")?)?,
            cancel_requested: get::<Option<i64>>(row, "cancel_requested_at")?.is_some(),
            upstream: get::<Option<Json<UpstreamRef>>>(row, "upstream")?.map(|j| j.0),
        })
    }

    fn jobs_from_rows(rows: &[PgRow]) -> Result<Vec<Job>, StoreError> {
        rows.iter().map(Self::job_from_row).collect()
    }

    /// Inserts one job and reads its row back.
    pub(crate) async fn insert_row<'e, E: sqlx::PgExecutor<'e>>(
        ex: E,
        job: &NewJob,
    ) -> Result<Job, StoreError> {
        let mut insert = Self::insert_query(&[job])?;
        insert.push(" RETURNING *");
        let row = insert.build().fetch_one(ex).await.map_err(unavailable)?;
        Self::job_from_row(&row)
    }

    /// `INSERT INTO jobs ... VALUES` with a row for each of `jobs`, queued.
    pub(crate) fn insert_query<'a>(
        jobs: &[&'a NewJob],
    ) -> Result<sqlx::QueryBuilder<'a, sqlx::Postgres>, StoreError> {
        let json = jobs
            .iter()
            .map(|j| Ok((to_json(&j.input)?, to_json(&j.tags)?)))
            .collect::<Result<Vec<_>, StoreError>>()?;
        let mut insert = sqlx::QueryBuilder::new(
            "INSERT INTO jobs (id, key_id, project, model_id, input, tags, status, priority,
                               created_at, max_attempts, start_deadline, webhook_url, run_timeout_ms) ",
        );
        insert.push_values(jobs.iter().zip(json), |mut row, (job, (input, tags))| {
            row.push_bind(job.id.as_uuid())
                .push_bind(job.key_id.as_uuid())
                .push_bind(job.project.as_str())
                .push_bind(job.model_id.as_str())
                // As text: a jsonb parameter would refuse what the json column keeps.
                .push_bind(input)
                .push_unseparated("::json")
                .push_bind(tags)
                .push_unseparated("::json")
                .push("'QUEUED'")
                .push_bind(job.priority)
                .push_bind(micros(job.created_at))
                .push_bind(int(job.max_attempts))
                .push_bind(job.start_deadline.map(micros))
                .push_bind(job.webhook_url.as_deref())
                .push_bind(job.run_timeout.map(run_timeout_ms));
        });
        Ok(insert)
    }
}

/// Starts LISTEN on this schema's channels (before returning, so nothing sent after `connect`
/// is missed) and a task that forwards what it hears.
async fn listen(
    pool: &PgPool,
    options: PgConnectOptions,
    notices: broadcast::Sender<StoreNotice>,
) -> Result<ListenerTask, StoreError> {
    // The channel names come from the same function the triggers use.
    let (queue, jobs): (String, String) = sqlx::query_as(
        "SELECT invokd_channel('queue', current_schema()), invokd_channel('jobs', current_schema())",
    )
    .fetch_one(pool)
    .await
    .map_err(unavailable)?;
    // A pool of its own: the listening connection is held for good, and reconnected through it.
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options)
        .await
        .map_err(unavailable)?;
    let mut listener = PgListener::connect_with(&own).await.map_err(unavailable)?;
    listener
        .listen_all([queue.as_str(), jobs.as_str()])
        .await
        .map_err(unavailable)?;
    let task = tokio::spawn(forward(listener, queue, notices));
    Ok(ListenerTask(task.abort_handle()))
}

/// What the log-lines trigger puts before the job's id (migration 0004): news of log lines,
/// told apart from changes of a job's state.
const LOG_NOTICE_PREFIX: &str = "logs:";

/// A run's log lines in the order given, `$1` being the job: one statement for all of them.
macro_rules! insert_logs {
    () => {
        "INSERT INTO job_logs (job_id, ts, level, message)
         SELECT $1, l.ts, l.level, l.message
         FROM UNNEST($2::bigint[], $3::text[], $4::text[]) WITH ORDINALITY AS l (ts, level, message, n)
         ORDER BY l.n"
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

/// Forwards notifications until aborted. A lost connection is reconnected (and LISTEN
/// repeated) by `PgListener`; what was sent meanwhile is missed, which polling makes up for.
async fn forward(
    mut listener: PgListener,
    queue_channel: String,
    notices: broadcast::Sender<StoreNotice>,
) {
    const FIRST_RETRY: Duration = Duration::from_millis(100);
    let mut retry = FIRST_RETRY;
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                retry = FIRST_RETRY;
                let notice = if n.channel() == queue_channel {
                    Some(StoreNotice::Queued {
                        model_id: n.payload().to_owned(),
                    })
                } else if let Some(id) = n.payload().strip_prefix(LOG_NOTICE_PREFIX) {
                    JobId::from_str(id).ok().map(StoreNotice::LogLines)
                } else {
                    JobId::from_str(n.payload()).ok().map(StoreNotice::Changed)
                };
                if let Some(notice) = notice {
                    // No receiver is fine.
                    let _ = notices.send(notice);
                }
            }
            Ok(None) => {
                tracing::warn!("the PostgreSQL notification connection was lost and reopened");
            }
            Err(e) => {
                tracing::warn!(error = %e, "listening for PostgreSQL notifications failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    }
}

fn key_from_row(r: &PgRow) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        id: KeyId::from(get::<Uuid>(r, "id")?),
        hash: KeyHash(get(r, "hash")?),
        prefix: get(r, "prefix")?,
        name: get(r, "name")?,
        project: get(r, "project")?,
        created_at: from_micros(get(r, "created_at")?)?,
        revoked_at: opt_time(get(r, "revoked_at")?)?,
    })
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
        let key_id = job.key_id.as_uuid();
        let mut tx = self.pool.begin().await.map_err(unavailable)?;
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE key_id = $1 AND idem_key = $2 AND created_at < $3",
        )
        .bind(key_id)
        .bind(&idem.key)
        .bind(micros(idem.not_before))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        // A concurrent create with the same key waits here on the other's uncommitted row, then
        // does nothing and reads the job the other made.
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (key_id, idem_key, body_hash, job_id, created_at)
             VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
        )
        .bind(key_id)
        .bind(&idem.key)
        .bind(&idem.body_hash)
        .bind(job.id.as_uuid())
        .bind(micros(job.created_at))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if claimed == 1 {
            let inserted = Self::insert_row(&mut *tx, &job).await?;
            tx.commit().await.map_err(unavailable)?;
            return Ok(Inserted::New(inserted));
        }
        let row = sqlx::query(
            "SELECT i.body_hash, j.* FROM idempotency_keys i JOIN jobs j ON j.id = i.job_id
             WHERE i.key_id = $1 AND i.idem_key = $2",
        )
        .bind(key_id)
        .bind(&idem.key)
        .fetch_optional(&mut *tx)
        .await
        .map_err(unavailable)?;
        tx.commit().await.map_err(unavailable)?;
        let Some(row) = row else {
            return Err(StoreError::Corrupt(format!(
                "idempotency key {:?} names no job",
                idem.key
            )));
        };
        if get::<String>(&row, "body_hash")? != idem.body_hash {
            return Ok(Inserted::KeyReused);
        }
        Ok(Inserted::Replayed(Self::job_from_row(&row)?))
    }

    async fn list_jobs(&self, q: &ListQuery) -> Result<Vec<Job>, StoreError> {
        let mut b = crate::sql::list_query(
            "",
            q,
            |id| id.as_uuid(),
            |b, name, value| {
                // The pair compared as JSON text, both sides written by serde_json: taking a value
                // out (`->`, `->>`) unescapes it, which fails on a \u0000 (text cannot hold one).
                b.push(" AND EXISTS (SELECT 1 FROM json_array_elements(tags) t WHERE t::text = ")
                    .push_bind(to_json(&(name, value))?)
                    .push(")");
                Ok(())
            },
        )?;
        let rows = b.build().fetch_all(&self.pool).await.map_err(unavailable)?;
        Self::jobs_from_rows(&rows)
    }

    async fn get_job(&self, id: JobId, project: Option<&str>) -> Result<Option<Job>, StoreError> {
        let row =
            sqlx::query("SELECT * FROM jobs WHERE id = $1 AND ($2::text IS NULL OR project = $2)")
                .bind(id.as_uuid())
                .bind(project)
                .fetch_optional(&self.pool)
                .await
                .map_err(unavailable)?;
        row.as_ref().map(Self::job_from_row).transpose()
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
        let mut jobs = Self::jobs_from_rows(&rows)?;
        jobs.sort_by_key(|j| (j.priority, j.created_at, j.id));
        Ok(jobs)
    }

    async fn heartbeat(
        &self,
        id: JobId,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<Beat, StoreError> {
        let cancel: Option<Option<i64>> = sqlx::query_scalar(
            "UPDATE jobs SET lease_expires_at = $1
             WHERE id = $2 AND status = 'IN_PROGRESS' AND lease_owner = $3 AND attempt = $4
             RETURNING cancel_requested_at",
        )
        .bind(micros(until))
        .bind(id.as_uuid())
        .bind(&lease.owner)
        .bind(int(lease.attempt))
        .fetch_optional(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(beat(cancel))
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
            insert_logs!(),
            ")
             UPDATE jobs
             SET status = $5, output = $6::json, error_message = $7, error_type = $8, completed_at = $9,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $1 AND status = 'IN_PROGRESS' AND lease_owner = $10 AND attempt = $11"
        ))
        .bind(id.as_uuid())
        .bind(&ts)
        .bind(&levels)
        .bind(&messages)
        .bind(status.as_str())
        .bind(output)
        .bind(error.as_ref().map(|e| pg_text(&e.message).into_owned()))
        .bind(error.as_ref().map(|e| pg_text(&e.error_type).into_owned()))
        .bind(micros(now))
        .bind(&lease.owner)
        .bind(int(lease.attempt))
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
        // Cancelled if asked; back to the queue while attempts remain; else the error is final.
        let cancelled = cancelled_error();
        let done = sqlx::query(
            "UPDATE jobs
             SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'CANCELED'
                               WHEN attempt >= max_attempts THEN 'FAILED' ELSE 'QUEUED' END,
                 error_message = CASE WHEN cancel_requested_at IS NOT NULL THEN $7
                                      WHEN attempt >= max_attempts THEN $1 END,
                 error_type = CASE WHEN cancel_requested_at IS NOT NULL THEN $8
                                   WHEN attempt >= max_attempts THEN $2 END,
                 completed_at = CASE WHEN cancel_requested_at IS NOT NULL OR attempt >= max_attempts
                                     THEN $3 END,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $4 AND status = 'IN_PROGRESS' AND lease_owner = $5 AND attempt = $6",
        )
        .bind(pg_text(&error.message).into_owned())
        .bind(pg_text(&error.error_type).into_owned())
        .bind(micros(now))
        .bind(id.as_uuid())
        .bind(&lease.owner)
        .bind(int(lease.attempt))
        .bind(&cancelled.message)
        .bind(&cancelled.error_type)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn give_back(
        &self,
        id: JobId,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        // The attempt stays counted (it fences late writers) and one more is allowed instead.
        let cancelled = cancelled_error();
        let done = sqlx::query(
            "UPDATE jobs
             SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'CANCELED' ELSE 'QUEUED' END,
                 error_message = CASE WHEN cancel_requested_at IS NOT NULL THEN $1 END,
                 error_type = CASE WHEN cancel_requested_at IS NOT NULL THEN $2 END,
                 completed_at = CASE WHEN cancel_requested_at IS NOT NULL THEN $3 END,
                 max_attempts = max_attempts + 1,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE id = $4 AND status = 'IN_PROGRESS' AND lease_owner = $5 AND attempt = $6",
        )
        .bind(&cancelled.message)
        .bind(&cancelled.error_type)
        .bind(micros(now))
        .bind(id.as_uuid())
        .bind(&lease.owner)
        .bind(int(lease.attempt))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn set_upstream(
        &self,
        id: JobId,
        lease: &Lease,
        upstream: Option<&UpstreamRef>,
    ) -> Result<bool, StoreError> {
        let done = sqlx::query(
            "UPDATE jobs SET upstream = $1
             WHERE id = $2 AND status = 'IN_PROGRESS' AND lease_owner = $3 AND attempt = $4",
        )
        .bind(upstream.map(Json))
        .bind(id.as_uuid())
        .bind(&lease.owner)
        .bind(int(lease.attempt))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn requeue_stale(
        &self,
        which: Stale,
        now: DateTime<Utc>,
    ) -> Result<Requeued, StoreError> {
        // A job with an upstream request id still runs upstream: it goes back to be resumed,
        // whatever its attempts. One statement decides each job on its own row lock, so
        // replicas sweeping together, or a holder finishing meanwhile, cannot both win.
        let cancelled = cancelled_error();
        let ended: Vec<String> = sqlx::query_scalar(
            "UPDATE jobs
             SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'CANCELED'
                               WHEN attempt >= max_attempts AND upstream->>'request_id' IS NULL THEN 'FAILED' ELSE 'QUEUED' END,
                 error_message = CASE WHEN cancel_requested_at IS NOT NULL THEN $1
                                      WHEN attempt >= max_attempts AND upstream->>'request_id' IS NULL THEN $3 ELSE error_message END,
                 error_type = CASE WHEN cancel_requested_at IS NOT NULL THEN $2
                                   WHEN attempt >= max_attempts AND upstream->>'request_id' IS NULL THEN 'runner_disconnected'
                                   ELSE error_type END,
                 completed_at = CASE WHEN cancel_requested_at IS NOT NULL OR (attempt >= max_attempts AND upstream->>'request_id' IS NULL)
                                     THEN $4 ELSE completed_at END,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE status = 'IN_PROGRESS' AND ($5 OR lease_expires_at < $4)
             RETURNING status",
        )
        .bind(&cancelled.message)
        .bind(&cancelled.error_type)
        .bind(ATTEMPTS_EXHAUSTED)
        .bind(micros(now))
        .bind(matches!(which, Stale::AllRunning))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        let n = |s: JobStatus| ended.iter().filter(|e| *e == s.as_str()).count() as u64;
        Ok(Requeued {
            requeued: n(JobStatus::Queued),
            failed: n(JobStatus::Failed),
        })
    }

    async fn expire_deadlines(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let e = start_timeout_error();
        let done = sqlx::query(
            "UPDATE jobs SET status = 'FAILED', error_message = $1, error_type = $2, completed_at = $3
             WHERE status = 'QUEUED' AND start_deadline IS NOT NULL AND start_deadline < $3",
        )
        .bind(&e.message)
        .bind(&e.error_type)
        .bind(micros(now))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(done.rows_affected())
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
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs
             WHERE status = 'QUEUED' AND model_id = $1
               AND (priority, created_at, id) < ($2, $3, $4)",
        )
        .bind(&job.model_id)
        .bind(job.priority)
        .bind(micros(job.created_at))
        .bind(job.id.as_uuid())
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(count(n))
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
        let ids: Vec<Uuid> = sqlx::query_scalar(
            "SELECT id FROM jobs
             WHERE expired_at IS NULL AND status IN ('COMPLETED', 'FAILED', 'CANCELED')
               AND completed_at < $1
             ORDER BY completed_at LIMIT $2",
        )
        .bind(micros(before))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(ids.into_iter().map(JobId::from).collect())
    }

    async fn mark_expired(&self, id: JobId, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET output = NULL, expired_at = $1 WHERE id = $2 AND expired_at IS NULL",
        )
        .bind(micros(now))
        .bind(id.as_uuid())
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn queued_count(&self, key_id: Option<KeyId>) -> Result<u64, StoreError> {
        let n: i64 = match key_id {
            Some(k) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM jobs WHERE status = 'QUEUED' AND key_id = $1",
                )
                .bind(k.as_uuid())
                .fetch_one(&self.pool)
                .await
            }
            None => {
                sqlx::query_scalar("SELECT COUNT(*) FROM jobs WHERE status = 'QUEUED'")
                    .fetch_one(&self.pool)
                    .await
            }
        }
        .map_err(unavailable)?;
        Ok(count(n))
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        // Both halves read only the partial indexes of queued and running jobs.
        let rows = sqlx::query(
            "SELECT model_id, SUM(queued)::bigint AS queued, SUM(running)::bigint AS running,
                    MIN(oldest) AS oldest
             FROM (SELECT model_id, COUNT(*) AS queued, 0::bigint AS running,
                          MIN(created_at) AS oldest
                   FROM jobs WHERE status = 'QUEUED' GROUP BY model_id
                   UNION ALL
                   SELECT model_id, 0, COUNT(*), NULL
                   FROM jobs WHERE status = 'IN_PROGRESS' GROUP BY model_id) per_state
             GROUP BY model_id ORDER BY model_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(QueueStats {
                    model_id: get(r, "model_id")?,
                    queued: count(get(r, "queued")?),
                    running: count(get(r, "running")?),
                    oldest_queued: opt_time(get(r, "oldest")?)?,
                })
            })
            .collect()
    }

    async fn append_logs(&self, id: JobId, lines: &[LogLine]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        let (ts, levels, messages) = log_columns(lines);
        sqlx::query(insert_logs!())
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
        let rows =
            sqlx::query("SELECT ts, level, message FROM job_logs WHERE job_id = $1 ORDER BY seq")
                .bind(id.as_uuid())
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(LogLine {
                    timestamp: from_micros(get(r, "ts")?)?,
                    level: get(r, "level")?,
                    message: get(r, "message")?,
                })
            })
            .collect()
    }
}

/// PostgreSQL's `text` cannot hold U+0000, which SQLite keeps: a log line, an error message or a
/// key's name with one would be refused by the database. It is stored as U+FFFD instead.
fn pg_text(s: &str) -> std::borrow::Cow<'_, str> {
    if s.contains('\0') {
        std::borrow::Cow::Owned(s.replace('\0', "\u{FFFD}"))
    } else {
        std::borrow::Cow::Borrowed(s)
    }
}

#[async_trait]
impl KeyRepo for PostgresStore {
    async fn insert_key(&self, key: KeyRecord) -> Result<(), StoreError> {
        sqlx::query(
            "INSERT INTO keys (id, hash, prefix, name, created_at, revoked_at, project)
             VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(key.id.as_uuid())
        .bind(&key.hash.0)
        .bind(&key.prefix)
        .bind(pg_text(&key.name).into_owned())
        .bind(micros(key.created_at))
        .bind(key.revoked_at.map(micros))
        .bind(&key.project)
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }

    async fn find_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM keys WHERE hash = $1")
            .bind(&hash.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(key_from_row).transpose()
    }

    async fn count_keys(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(count(n))
    }

    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError> {
        let rows = sqlx::query("SELECT * FROM keys ORDER BY created_at DESC, id DESC")
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(key_from_row).collect()
    }

    async fn revoke_key(&self, id: KeyId, now: DateTime<Utc>) -> Result<bool, StoreError> {
        let done =
            sqlx::query("UPDATE keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
                .bind(micros(now))
                .bind(id.as_uuid())
                .execute(&self.pool)
                .await
                .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }
}

impl PostgresStore {
    /// The deliveries of these rows, each with its attempts (one query for all of them).
    async fn deliveries(&self, rows: &[PgRow]) -> Result<Vec<Delivery>, StoreError> {
        let mut out = rows
            .iter()
            .map(|r| {
                Ok(Delivery {
                    id: get(r, "id")?,
                    job_id: JobId::from(get::<Uuid>(r, "job_id")?),
                    url: get(r, "url")?,
                    state: delivery_state(&get::<String>(r, "state")?),
                    created_at: from_micros(get(r, "created_at")?)?,
                    attempts: Vec::new(),
                })
            })
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
            let of: i64 = get(a, "delivery_id")?;
            let attempt = DeliveryAttempt {
                at: from_micros(get(a, "at")?)?,
                status_code: get::<Option<i32>>(a, "status_code")?
                    .and_then(|c| u16::try_from(c).ok()),
                error: get(a, "error")?,
            };
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
        let rows = sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = $2
             WHERE id IN (
                 SELECT id FROM webhook_deliveries
                 WHERE state = 'pending' AND next_attempt_at <= $3
                   AND (lease_owner IS NULL OR lease_expires_at < $3)
                 ORDER BY next_attempt_at LIMIT $4
                 FOR UPDATE SKIP LOCKED)
             RETURNING *",
        )
        .bind(owner)
        .bind(micros(lease_until))
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
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
        let rows = sqlx::query("SELECT * FROM webhook_deliveries WHERE job_id = $1")
            .bind(job.as_uuid())
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(self.deliveries(&rows).await?.pop())
    }
}

#[async_trait]
impl Store for PostgresStore {
    async fn check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
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
        // Of replicas starting together, one insert wins; the others read the winner's value.
        let inserted = sqlx::query(
            "INSERT INTO settings (name, value, created_at) VALUES ($1, $2, $3) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .bind(micros(Utc::now()))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?
        .rows_affected()
            == 1;
        let stored: String = sqlx::query_scalar("SELECT value FROM settings WHERE name = $1")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok((stored, inserted))
    }
}
