//! The SQLite store: one database file in WAL mode with full fsync, so a committed job survives
//! a crash of the process or the machine.

use std::{
    collections::{BTreeMap, HashMap, HashSet},
    path::Path,
    str::FromStr,
    sync::Arc,
    time::Duration,
};

use async_trait::async_trait;
use chrono::{DateTime, Utc};
use invokd_core::{
    CancelOutcome, Job, JobError, JobId, JobStatus, KeyId, Lease, NewJob, Outcome, UpstreamRef,
    job::{cancelled_error, start_timeout_error},
    keys::{KeyHash, KeyRecord},
    provider::LogLine,
    store::{
        AfterAttempt, Beat, ClaimRequest, Delivery, DeliveryAttempt, DeliveryRepo, IdempotencyKey,
        Inserted, JobRepo, KeyRepo, ListQuery, QueueSlot, QueueStats, Requeued, Stale, Store,
        StoreError,
    },
};
use serde_json::{Map, Value};

use crate::{
    group_commit::GroupCommit,
    job_cache::JobCache,
    sql::{
        ATTEMPTS_EXHAUSTED, after_attempt, as_inserted, beat, corrupt, delivery_state, from_micros,
        micros, opt_time, outcome_columns, run_timeout_ms, to_json, unavailable,
    },
};
use sqlx::{
    Row,
    sqlite::{
        SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
        SqliteRow, SqliteSynchronous,
    },
};

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
/// Every write goes through one connection (`write`), the frequent ones batched by the group
/// commit: SQLite has one writer anyway, and writers queued in the process wait their turn
/// without the busy handler's sleeps. Reads run beside them on read-only connections (`pool`).
#[derive(Debug, Clone)]
pub struct SqliteStore {
    pool: SqlitePool,
    write: SqlitePool,
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
        let writes = GroupCommit::start(write.clone(), cache.clone());
        Ok(Self {
            pool,
            write,
            writes,
            cache,
        })
    }

    fn job_from_row(row: &SqliteRow) -> Result<Job, StoreError> {
        let get_str = |c: &str| {
            row.try_get::<String, _>(c)
                .map_err(|e| StoreError::Corrupt(format!("{c}: {e}")))
        };
        let id = JobId::from_str(&get_str("id")?).map_err(|e| corrupt("job id")(e.to_string()))?;
        let key_id =
            KeyId::from_str(&get_str("key_id")?).map_err(|e| corrupt("key id")(e.to_string()))?;
        let input: Map<String, Value> = serde_json::from_str(&get_str("input")?)
            .map_err(|e| corrupt("input")(e.to_string()))?;
        let tags: Vec<(String, String)> =
            serde_json::from_str(&get_str("tags")?).map_err(|e| corrupt("tags")(e.to_string()))?;
        let status = JobStatus::from_str(&get_str("status")?)
            .map_err(|e| corrupt("status")(e.to_string()))?;
        let output: Option<String> = row
            .try_get("output")
            .map_err(|e| corrupt("output")(e.to_string()))?;
        let output = output
            .map(|s| serde_json::from_str::<Map<String, Value>>(&s))
            .transpose()
            .map_err(|e| corrupt("output")(e.to_string()))?;
        let int = |c: &str| {
            row.try_get::<i64, _>(c)
                .map_err(|e| StoreError::Corrupt(format!("{c}: {e}")))
        };
        let opt_int = |c: &str| {
            row.try_get::<Option<i64>, _>(c)
                .map_err(|e| StoreError::Corrupt(format!("{c}: {e}")))
        };
        let opt_str = |c: &str| {
            row.try_get::<Option<String>, _>(c)
                .map_err(|e| StoreError::Corrupt(format!("{c}: {e}")))
        };
        let attempt =
            u32::try_from(int("attempt")?).map_err(|e| corrupt("attempt")(e.to_string()))?;
        let lease = match (opt_str("lease_owner")?, opt_int("lease_expires_at")?) {
            (Some(owner), Some(exp)) => Some(Lease {
                owner,
                attempt,
                expires_at: from_micros(exp)?,
            }),
            _ => None,
        };
        let error = match (opt_str("error_message")?, opt_str("error_type")?) {
            (Some(message), error_type) => Some(JobError {
                message,
                error_type: error_type.unwrap_or_default(),
            }),
            _ => None,
        };
        Ok(Job {
            id,
            key_id,
            model_id: get_str("model_id")?,
            project: get_str("project")?,
            input: input.into(),
            tags,
            status,
            priority: i32::try_from(int("priority")?)
                .map_err(|e| corrupt("priority")(e.to_string()))?,
            created_at: from_micros(int("created_at")?)?,
            started_at: opt_time(opt_int("started_at")?)?,
            completed_at: opt_time(opt_int("completed_at")?)?,
            attempt,
            max_attempts: u32::try_from(int("max_attempts")?)
                .map_err(|e| corrupt("max_attempts")(e.to_string()))?,
            lease,
            output: output.map(Arc::new),
            error,
            start_deadline: opt_time(opt_int("start_deadline")?)?,
            webhook_url: opt_str("webhook_url")?,
            run_timeout: opt_int("run_timeout_ms")?
                .and_then(|ms| u64::try_from(ms).ok())
                .map(std::time::Duration::from_millis),
            expired_at: opt_time(opt_int("expired_at")?)?,
            cancel_requested: opt_int("cancel_requested_at")?.is_some(),
            upstream: opt_str("upstream")?
                .map(|s| serde_json::from_str::<UpstreamRef>(&s))
                .transpose()
                .map_err(|e| corrupt("upstream")(e.to_string()))?,
        })
    }
}

async fn insert_row<'e, E: sqlx::SqliteExecutor<'e>>(
    ex: E,
    job: &NewJob,
) -> Result<Job, StoreError> {
    insert_statement("", &[job], "")?
        .build()
        .execute(ex)
        .await
        .map_err(unavailable)?;
    as_inserted(job)
}

/// The insert of `jobs`, one statement for all (a batch of creates costs one step of the
/// connection's thread), between `before` and `after`: statements without parameters that run
/// in the same step (binds go to the statements in order).
pub(crate) fn insert_statement(
    before: &str,
    jobs: &[&NewJob],
    after: &str,
) -> Result<sqlx::QueryBuilder<'static, sqlx::Sqlite>, StoreError> {
    let json = jobs
        .iter()
        .map(|j| Ok((to_json(&j.input)?, to_json(&j.tags)?)))
        .collect::<Result<Vec<_>, StoreError>>()?;
    let mut insert = sqlx::QueryBuilder::new(before);
    insert.push(
        "INSERT INTO jobs (id, key_id, model_id, input, tags, status, priority, created_at, max_attempts, start_deadline, webhook_url, run_timeout_ms, project) ",
    );
    insert.push_values(jobs.iter().zip(json), |mut row, (job, (input, tags))| {
        row.push_bind(job.id.to_string())
            .push_bind(job.key_id.to_string())
            .push_bind(job.model_id.clone())
            .push_bind(input)
            .push_bind(tags)
            .push("'QUEUED'")
            .push_bind(job.priority)
            .push_bind(micros(job.created_at))
            .push_bind(i64::from(job.max_attempts))
            .push_bind(job.start_deadline.map(micros))
            .push_bind(job.webhook_url.clone())
            .push_bind(job.run_timeout.map(run_timeout_ms))
            .push_bind(job.project.clone());
    });
    insert.push(after);
    Ok(insert)
}

/// An update that applies only while the caller holds the job's lease: the job is running, with
/// this owner and this attempt (fencing). `?1`–`?3` are the fence; the change binds from `?4`.
macro_rules! fenced {
    ($set:literal) => {
        concat!(
            "UPDATE jobs SET ",
            $set,
            " WHERE id = ?1 AND status = 'IN_PROGRESS' AND lease_owner = ?2 AND attempt = ?3"
        )
    };
}

/// A change a lease holder makes to its running job.
#[derive(Debug)]
pub(crate) enum Change {
    /// With the run's last log lines, stored in the same commit.
    Finish {
        status: JobStatus,
        output: Option<String>,
        error: Option<JobError>,
        now: DateTime<Utc>,
        logs: Vec<LogLine>,
    },
    /// Cancelled if asked; back to the queue while attempts remain; else the error is final.
    Release {
        error: JobError,
        now: DateTime<Utc>,
    },
    /// Back to the queue: the attempt stays counted (it fences late writers) and one more is
    /// allowed instead.
    GiveBack {
        now: DateTime<Utc>,
    },
    SetUpstream(Option<String>),
}

/// A [`Change`] with the lease it is fenced by.
#[derive(Debug)]
pub(crate) struct Fenced {
    id: JobId,
    owner: String,
    attempt: i64,
    change: Change,
}

impl Fenced {
    pub(crate) fn new(id: JobId, lease: &Lease, change: Change) -> Self {
        Self {
            id,
            owner: lease.owner.clone(),
            attempt: i64::from(lease.attempt),
            change,
        }
    }

    pub(crate) fn job_id(&self) -> JobId {
        self.id
    }

    /// Whether this ends the job with an outcome, and can share [`finish_all`]'s statements.
    pub(crate) fn is_finish(&self) -> bool {
        matches!(self.change, Change::Finish { .. })
    }

    /// True if the lease was still held and the job changed.
    pub(crate) async fn apply(&self, conn: &mut SqliteConnection) -> Result<bool, StoreError> {
        let cancelled = cancelled_error();
        let fence = |sql| {
            sqlx::query(sql)
                .bind(self.id.to_string())
                .bind(&self.owner)
                .bind(self.attempt)
        };
        let q = match &self.change {
            Change::Finish { .. } => return Ok(finish_all(conn, &[self]).await?.contains(&true)),
            Change::Release { error, now } => fence(fenced!(
                "status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'CANCELED'
                               WHEN attempt >= max_attempts THEN 'FAILED' ELSE 'QUEUED' END,
                 error_message = CASE WHEN cancel_requested_at IS NOT NULL THEN ?7
                                      WHEN attempt >= max_attempts THEN ?4 END,
                 error_type = CASE WHEN cancel_requested_at IS NOT NULL THEN ?8
                                   WHEN attempt >= max_attempts THEN ?5 END,
                 completed_at = CASE WHEN cancel_requested_at IS NOT NULL OR attempt >= max_attempts
                                     THEN ?6 END,
                 lease_owner = NULL, lease_expires_at = NULL"
            ))
            .bind(&error.message)
            .bind(&error.error_type)
            .bind(micros(*now))
            .bind(&cancelled.message)
            .bind(&cancelled.error_type),
            Change::GiveBack { now } => fence(fenced!(
                "status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'CANCELED' ELSE 'QUEUED' END,
                 error_message = CASE WHEN cancel_requested_at IS NOT NULL THEN ?4 END,
                 error_type = CASE WHEN cancel_requested_at IS NOT NULL THEN ?5 END,
                 completed_at = CASE WHEN cancel_requested_at IS NOT NULL THEN ?6 END,
                 max_attempts = max_attempts + 1,
                 lease_owner = NULL, lease_expires_at = NULL"
            ))
            .bind(&cancelled.message)
            .bind(&cancelled.error_type)
            .bind(micros(*now)),
            Change::SetUpstream(json) => fence(fenced!("upstream = ?4")).bind(json.as_deref()),
        };
        let done = q.execute(conn).await.map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }
}

/// A claim of queued jobs under a lease, as the dispatcher asked it (owned, to wait in the
/// write queue).
#[derive(Debug)]
pub(crate) struct Claim {
    owner: String,
    lease_until: i64,
    now: i64,
    capacity: BTreeMap<String, u32>,
    default_capacity: u32,
    limit: u32,
}

/// A listing's statement on SQLite (see [`crate::sql::list_query`]): a tag is matched by its parts.
fn list_query(
    prefix: &str,
    q: &ListQuery,
) -> Result<sqlx::QueryBuilder<'static, sqlx::Sqlite>, StoreError> {
    crate::sql::list_query(
        prefix,
        q,
        |id| id.to_string(),
        |b, name, value| {
            b.push(
                " AND EXISTS (SELECT 1 FROM json_each(jobs.tags) t
               WHERE json_extract(t.value, '$[0]') = ",
            )
            .push_bind(name.to_owned())
            .push(" AND json_extract(t.value, '$[1]') = ")
            .push_bind(value.to_owned())
            .push(")");
            Ok(())
        },
    )
}

/// The models with queued jobs, by a loose scan of the queue's index by model: one seek per
/// model, however long the queue.
const QUEUED_MODELS: &str = "WITH RECURSIVE models (model_id) AS (
        SELECT (SELECT model_id FROM jobs WHERE status = 'QUEUED' ORDER BY model_id LIMIT 1)
        UNION ALL
        SELECT (SELECT j.model_id FROM jobs j WHERE j.status = 'QUEUED' AND j.model_id > m.model_id
                ORDER BY j.model_id LIMIT 1)
        FROM models m WHERE m.model_id IS NOT NULL)
    SELECT model_id FROM models WHERE model_id IS NOT NULL";

/// Models whose first jobs one claim statement reads (SQLite allows 500 terms in a compound
/// SELECT).
const MODELS_PER_STATEMENT: usize = 200;

impl Claim {
    pub(crate) fn new(req: &ClaimRequest<'_>) -> Self {
        Self {
            owner: req.owner.to_owned(),
            lease_until: micros(req.lease_until),
            now: micros(req.now),
            capacity: req.capacity.clone(),
            default_capacity: req.default_capacity,
            limit: req.limit,
        }
    }

    /// The claimed jobs, in the order they should start. Each model's first jobs (as many as
    /// it may start, and no more than the claim's limit) come from its own range of the
    /// queue's index, and the best of those across models are taken, so a claim reads a few
    /// rows per model rather than the whole queue (a window over 100,000 queued jobs took a
    /// third of a second, and held the one writer all that time).
    pub(crate) async fn apply(&self, conn: &mut SqliteConnection) -> Result<Vec<Job>, StoreError> {
        if self.limit == 0 {
            return Ok(Vec::new());
        }
        let models: Vec<String> = sqlx::query_scalar(QUEUED_MODELS)
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?;
        let takes: Vec<(String, i64)> = models
            .into_iter()
            .filter_map(|model| {
                let cap = self
                    .capacity
                    .get(&model)
                    .copied()
                    .unwrap_or(self.default_capacity);
                let n = i64::from(cap.min(self.limit));
                (n > 0).then_some((model, n))
            })
            .collect();
        if takes.is_empty() {
            return Ok(Vec::new());
        }
        let limit = i64::from(self.limit);
        let mut claim = self.claim_update();
        if takes.len() <= MODELS_PER_STATEMENT {
            claim.push("id IN (SELECT id FROM (");
            self.push_firsts(&mut claim, &takes);
            claim
                .push(") ORDER BY priority, created_at, id LIMIT ")
                .push_bind(limit)
                .push(")");
        } else {
            // SQLite allows 500 terms in a compound SELECT: with hundreds of models (an
            // operator's catalog), each chunk's best, then the best of them all by id.
            let mut best: Vec<(i64, i64, String)> = Vec::new();
            for chunk in takes.chunks(MODELS_PER_STATEMENT) {
                let mut firsts = sqlx::QueryBuilder::new("SELECT priority, created_at, id FROM (");
                self.push_firsts(&mut firsts, chunk);
                firsts
                    .push(") ORDER BY priority, created_at, id LIMIT ")
                    .push_bind(limit);
                let rows: Vec<(i64, i64, String)> = firsts
                    .build_query_as()
                    .persistent(false)
                    .fetch_all(&mut *conn)
                    .await
                    .map_err(unavailable)?;
                best.extend(rows);
            }
            best.sort();
            best.truncate(usize::try_from(self.limit).unwrap_or(usize::MAX));
            let ids: Vec<&str> = best.iter().map(|(_, _, id)| id.as_str()).collect();
            claim
                .push("status = 'QUEUED' AND id IN (SELECT value FROM json_each(")
                .push_bind(to_json(&ids)?)
                .push("))");
        }
        let rows = claim
            .push(") RETURNING *")
            .build()
            // One statement per count of models: the few a catalog holds stay prepared.
            .persistent(takes.len() <= 16)
            .fetch_all(&mut *conn)
            .await
            .map_err(unavailable)?;
        let mut jobs = rows
            .iter()
            .map(SqliteStore::job_from_row)
            .collect::<Result<Vec<_>, _>>()?;
        jobs.sort_by_key(|j| (j.priority, j.created_at, j.id));
        Ok(jobs)
    }

    /// `UPDATE jobs SET` the claim's lease `WHERE (`, for the jobs' condition to follow.
    fn claim_update(&self) -> sqlx::QueryBuilder<'static, sqlx::Sqlite> {
        let mut claim = sqlx::QueryBuilder::new(
            "UPDATE jobs SET status = 'IN_PROGRESS', attempt = attempt + 1, lease_owner = ",
        );
        claim
            .push_bind(self.owner.clone())
            .push(", lease_expires_at = ")
            .push_bind(self.lease_until)
            .push(", started_at = COALESCE(started_at, MAX(")
            .push_bind(self.now)
            .push(", created_at)) WHERE (");
        claim
    }

    /// Each model's first jobs that may start (id, priority, created_at), as many as `takes`
    /// says, each from the model's range of the queue's index.
    fn push_firsts(
        &self,
        q: &mut sqlx::QueryBuilder<'static, sqlx::Sqlite>,
        takes: &[(String, i64)],
    ) {
        for (i, (model, n)) in takes.iter().enumerate() {
            if i > 0 {
                q.push(" UNION ALL ");
            }
            q.push(
                "SELECT * FROM (SELECT id, priority, created_at FROM jobs
                 WHERE status = 'QUEUED' AND model_id = ",
            )
            .push_bind(model.clone())
            .push(" AND (start_deadline IS NULL OR start_deadline >= ")
            .push_bind(self.now)
            .push(") ORDER BY priority, created_at, id LIMIT ")
            .push_bind(*n)
            .push(")");
        }
    }
}

/// Extends a running job's lease; what it found says whether to go on.
pub(crate) async fn heartbeat_row(
    conn: &mut SqliteConnection,
    id: JobId,
    lease: &Lease,
    until: DateTime<Utc>,
) -> Result<Beat, StoreError> {
    let cancel: Option<Option<i64>> = sqlx::query_scalar(concat!(
        fenced!("lease_expires_at = ?4"),
        " RETURNING cancel_requested_at"
    ))
    .bind(id.to_string())
    .bind(&lease.owner)
    .bind(i64::from(lease.attempt))
    .bind(micros(until))
    .fetch_optional(conn)
    .await
    .map_err(unavailable)?;
    Ok(beat(cancel))
}

pub(crate) async fn append_log_rows(
    conn: &mut SqliteConnection,
    id: JobId,
    lines: &[LogLine],
) -> Result<(), StoreError> {
    insert_log_rows(conn, lines.iter().map(|l| (id, l))).await
}

/// Rows per multi-row statement of log lines or finishes: each statement is a round trip to the
/// connection's thread.
const ROWS_PER_STATEMENT: usize = 64;

/// Stores log lines, in order, a statement for up to [`ROWS_PER_STATEMENT`] of them.
async fn insert_log_rows<'l>(
    conn: &mut SqliteConnection,
    lines: impl Iterator<Item = (JobId, &'l LogLine)>,
) -> Result<(), StoreError> {
    let lines: Vec<_> = lines.collect();
    for chunk in lines.chunks(ROWS_PER_STATEMENT) {
        let mut insert =
            sqlx::QueryBuilder::new("INSERT INTO job_logs (job_id, ts, level, message) ");
        insert.push_values(chunk, |mut row, (id, l)| {
            row.push_bind(id.to_string())
                .push_bind(micros(l.timestamp))
                .push_bind(l.level.clone())
                .push_bind(l.message.clone());
        });
        insert
            .build()
            .persistent(kept_prepared(chunk.len()))
            .execute(&mut *conn)
            .await
            .map_err(unavailable)?;
    }
    Ok(())
}

/// Applies finishes (each [`Fenced::is_finish`]) together: all their log lines, then one fenced
/// update per [`ROWS_PER_STATEMENT`] of them. Says for each whether its lease still held and its
/// job changed, as [`Fenced::apply`] does for one; of two finishes of one job, in the order
/// given.
pub(crate) async fn finish_all(
    conn: &mut SqliteConnection,
    finishes: &[&Fenced],
) -> Result<Vec<bool>, StoreError> {
    let logs = finishes.iter().flat_map(|f| match &f.change {
        Change::Finish { logs, .. } => logs.iter().map(|l| (f.id, l)).collect(),
        _ => Vec::new(),
    });
    insert_log_rows(conn, logs).await?;
    // A job's second finish goes in a later round: given two rows for one job, an update
    // applies one of them, and which is not said. Within a round each job is named once, so
    // the ids that come back say which finishes applied.
    let mut rounds: Vec<Vec<usize>> = Vec::new();
    let mut seen: HashMap<JobId, usize> = HashMap::new();
    for (i, f) in finishes.iter().enumerate() {
        let round = seen.entry(f.id).or_default();
        if rounds.len() <= *round {
            rounds.push(Vec::new());
        }
        rounds[*round].push(i);
        *round += 1;
    }
    let mut changed = vec![false; finishes.len()];
    for round in rounds {
        for chunk in round.chunks(ROWS_PER_STATEMENT) {
            let applied = finish_rows(conn, chunk.iter().map(|&i| finishes[i])).await?;
            for &i in chunk {
                changed[i] = applied.contains(&finishes[i].id.to_string());
            }
        }
    }
    Ok(changed)
}

/// One fenced update for `finishes`, no two of the same job; the ids of the jobs it changed.
async fn finish_rows<'f>(
    conn: &mut SqliteConnection,
    finishes: impl Iterator<Item = &'f Fenced>,
) -> Result<HashSet<String>, StoreError> {
    let finishes: Vec<&Fenced> = finishes.collect();
    // SQLite names a VALUES list's columns column1, column2, ...
    let mut update = sqlx::QueryBuilder::new(
        "UPDATE jobs SET status = v.column4, output = v.column5, error_message = v.column6,
             error_type = v.column7, completed_at = v.column8,
             lease_owner = NULL, lease_expires_at = NULL
         FROM (",
    );
    update.push_values(&finishes, |mut row, f| {
        row.push_bind(f.id.to_string())
            .push_bind(f.owner.clone())
            .push_bind(f.attempt);
        if let Change::Finish {
            status,
            output,
            error,
            now,
            ..
        } = &f.change
        {
            row.push_bind(status.as_str())
                .push_bind(output.clone())
                .push_bind(error.as_ref().map(|e| e.message.clone()))
                .push_bind(error.as_ref().map(|e| e.error_type.clone()))
                .push_bind(micros(*now));
        }
    });
    update.push(
        ") AS v
         WHERE jobs.id = v.column1 AND jobs.status = 'IN_PROGRESS'
           AND jobs.lease_owner = v.column2 AND jobs.attempt = v.column3
         RETURNING id",
    );
    update
        .build()
        .persistent(kept_prepared(finishes.len()))
        .fetch_all(&mut *conn)
        .await
        .map_err(unavailable)?
        .iter()
        .map(|r| r.try_get("id").map_err(unavailable))
        .collect()
}

/// Whether a multi-row statement of log lines or finishes with `rows` rows stays prepared:
/// the sizes that come most (a few, and full chunks), so that with the inserts' every size
/// they fit the write connection's statement cache.
fn kept_prepared(rows: usize) -> bool {
    rows <= 16 || rows == ROWS_PER_STATEMENT
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
            .fetch_one(&self.pool)
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

fn key_from_row(r: &SqliteRow) -> Result<KeyRecord, StoreError> {
    let id: String = r.try_get("id").map_err(unavailable)?;
    Ok(KeyRecord {
        id: KeyId::from_str(&id).map_err(|e| corrupt("key id")(e.to_string()))?,
        hash: KeyHash(r.try_get("hash").map_err(unavailable)?),
        prefix: r.try_get("prefix").map_err(unavailable)?,
        name: r.try_get("name").map_err(unavailable)?,
        project: r.try_get("project").map_err(unavailable)?,
        created_at: from_micros(r.try_get("created_at").map_err(unavailable)?)?,
        revoked_at: opt_time(r.try_get("revoked_at").map_err(unavailable)?)?,
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
        let key_id = job.key_id.to_string();
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        // A write first, so the transaction holds SQLite's write lock from here: concurrent
        // creates with one key run one after the other.
        sqlx::query(
            "DELETE FROM idempotency_keys WHERE key_id = ?1 AND idem_key = ?2 AND created_at < ?3",
        )
        .bind(&key_id)
        .bind(&idem.key)
        .bind(micros(idem.not_before))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?;
        let claimed = sqlx::query(
            "INSERT INTO idempotency_keys (key_id, idem_key, body_hash, job_id, created_at)
             VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT DO NOTHING",
        )
        .bind(&key_id)
        .bind(&idem.key)
        .bind(&idem.body_hash)
        .bind(job.id.to_string())
        .bind(micros(job.created_at))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if claimed == 1 {
            let inserted = insert_row(&mut *tx, &job).await?;
            tx.commit().await.map_err(unavailable)?;
            self.cache.put(&inserted);
            return Ok(Inserted::New(inserted));
        }
        let row = sqlx::query(
            "SELECT i.body_hash, j.* FROM idempotency_keys i JOIN jobs j ON j.id = i.job_id
             WHERE i.key_id = ?1 AND i.idem_key = ?2",
        )
        .bind(&key_id)
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
        let hash: String = row.try_get("body_hash").map_err(unavailable)?;
        if hash != idem.body_hash {
            return Ok(Inserted::KeyReused);
        }
        Ok(Inserted::Replayed(Self::job_from_row(&row)?))
    }

    async fn list_jobs(&self, q: &ListQuery) -> Result<Vec<Job>, StoreError> {
        let rows = list_query("", q)?
            .build()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        rows.iter().map(Self::job_from_row).collect()
    }

    async fn get_job(&self, id: JobId, project: Option<&str>) -> Result<Option<Job>, StoreError> {
        let visible = |job: &Job| project.is_none_or(|p| p == job.project);
        if let Some(job) = self.cache.get(id) {
            return Ok(Some(job).filter(visible));
        }
        let seen = self.cache.generation();
        let row = sqlx::query("SELECT * FROM jobs WHERE id = ?1")
            .bind(id.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        let Some(job) = row.as_ref().map(Self::job_from_row).transpose()? else {
            return Ok(None);
        };
        self.cache.fill(&job, seen);
        Ok(Some(job).filter(visible))
    }

    async fn claim_jobs(&self, req: ClaimRequest<'_>) -> Result<Vec<Job>, StoreError> {
        self.writes.claim(Claim::new(&req)).await
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
        let change = Change::SetUpstream(upstream.map(to_json).transpose()?);
        self.writes.fenced(Fenced::new(id, lease, change)).await
    }

    async fn requeue_stale(
        &self,
        which: Stale,
        now: DateTime<Utc>,
    ) -> Result<Requeued, StoreError> {
        let all = matches!(which, Stale::AllRunning);
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let cancelled = cancelled_error();
        let canceled = sqlx::query(
            "UPDATE jobs
             SET status = 'CANCELED', error_message = ?1, error_type = ?2,
                 completed_at = ?3, lease_owner = NULL, lease_expires_at = NULL
             WHERE status = 'IN_PROGRESS' AND (?4 OR lease_expires_at < ?3)
               AND cancel_requested_at IS NOT NULL",
        )
        .bind(&cancelled.message)
        .bind(&cancelled.error_type)
        .bind(micros(now))
        .bind(all)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        let failed = sqlx::query(
            "UPDATE jobs
             SET status = 'FAILED', error_message = ?1, error_type = 'runner_disconnected',
                 completed_at = ?2, lease_owner = NULL, lease_expires_at = NULL
             WHERE status = 'IN_PROGRESS' AND (?3 OR lease_expires_at < ?2) AND attempt >= max_attempts
               AND json_extract(upstream, '$.request_id') IS NULL",
        )
        .bind(ATTEMPTS_EXHAUSTED)
        .bind(micros(now))
        .bind(all)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        let requeued = sqlx::query(
            "UPDATE jobs SET status = 'QUEUED', lease_owner = NULL, lease_expires_at = NULL
             WHERE status = 'IN_PROGRESS' AND (?1 OR lease_expires_at < ?2)",
        )
        .bind(all)
        .bind(micros(now))
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        tx.commit().await.map_err(unavailable)?;
        if canceled + failed + requeued > 0 {
            self.cache.clear();
        }
        Ok(Requeued { requeued, failed })
    }

    async fn expire_deadlines(&self, now: DateTime<Utc>) -> Result<u64, StoreError> {
        let e = start_timeout_error();
        let done = sqlx::query(
            "UPDATE jobs SET status = 'FAILED', error_message = ?1, error_type = ?2, completed_at = ?3
             WHERE status = 'QUEUED' AND start_deadline IS NOT NULL AND start_deadline < ?3",
        )
        .bind(&e.message)
        .bind(&e.error_type)
        .bind(micros(now))
        .execute(&self.write)
        .await
        .map_err(unavailable)?;
        if done.rows_affected() > 0 {
            self.cache.clear();
        }
        Ok(done.rows_affected())
    }

    async fn cancel(
        &self,
        id: JobId,
        project: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<CancelOutcome, StoreError> {
        let e = cancelled_error();
        let job_id = id;
        let (id, scope) = (id.to_string(), project);
        // Each statement is atomic on its own; a job that moves between them (claimed, finished,
        // requeued) is caught by the next one, or by the next round.
        for _ in 0..5 {
            let queued = sqlx::query(
                "UPDATE jobs SET status = 'CANCELED', error_message = ?1, error_type = ?2, completed_at = ?3
                 WHERE id = ?4 AND (?5 IS NULL OR project = ?5) AND status = 'QUEUED'",
            )
            .bind(&e.message)
            .bind(&e.error_type)
            .bind(micros(now))
            .bind(&id)
            .bind(scope)
            .execute(&self.write)
            .await
            .map_err(unavailable)?;
            if queued.rows_affected() == 1 {
                self.cache.forget(job_id);
                return Ok(CancelOutcome::Canceled);
            }
            let running = sqlx::query(
                "UPDATE jobs SET cancel_requested_at = COALESCE(cancel_requested_at, ?1)
                 WHERE id = ?2 AND (?3 IS NULL OR project = ?3) AND status = 'IN_PROGRESS'",
            )
            .bind(micros(now))
            .bind(&id)
            .bind(scope)
            .execute(&self.write)
            .await
            .map_err(unavailable)?;
            if running.rows_affected() == 1 {
                self.cache.forget(job_id);
                return Ok(CancelOutcome::Requested);
            }
            let status: Option<String> = sqlx::query_scalar(
                "SELECT status FROM jobs WHERE id = ?1 AND (?2 IS NULL OR project = ?2)",
            )
            .bind(&id)
            .bind(scope)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
            match status.as_deref() {
                None => return Ok(CancelOutcome::NotFound),
                Some("QUEUED" | "IN_PROGRESS") => continue,
                Some(_) => return Ok(CancelOutcome::AlreadyDone),
            }
        }
        Err(StoreError::Unavailable(
            "the job kept changing state during cancel".into(),
        ))
    }

    async fn queue_position(&self, job: &Job) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar(
            "SELECT COUNT(*) FROM jobs
             WHERE status = 'QUEUED' AND model_id = ?1
               AND (priority, created_at, id) < (?2, ?3, ?4)",
        )
        .bind(&job.model_id)
        .bind(job.priority)
        .bind(micros(job.created_at))
        .bind(job.id.to_string())
        .fetch_one(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn queue_order(&self, model_id: &str) -> Result<Vec<QueueSlot>, StoreError> {
        self.queue_order_in_pages(model_id, QUEUE_ORDER_PAGE).await
    }

    async fn jobs_to_expire(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError> {
        let ids: Vec<String> = sqlx::query_scalar(
            "SELECT id FROM jobs
             WHERE expired_at IS NULL AND status IN ('COMPLETED', 'FAILED', 'CANCELED')
               AND completed_at < ?1
             ORDER BY completed_at LIMIT ?2",
        )
        .bind(micros(before))
        .bind(i64::from(limit))
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        ids.iter()
            .map(|s| JobId::from_str(s).map_err(|e| corrupt("job id")(e.to_string())))
            .collect()
    }

    async fn mark_expired(&self, id: JobId, now: DateTime<Utc>) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE jobs SET output = NULL, expired_at = ?1 WHERE id = ?2 AND expired_at IS NULL",
        )
        .bind(micros(now))
        .bind(id.to_string())
        .execute(&self.write)
        .await
        .map_err(unavailable)?;
        self.cache.forget(id);
        Ok(())
    }

    async fn queued_count(&self, key_id: Option<KeyId>) -> Result<u64, StoreError> {
        let n: i64 = match key_id {
            Some(k) => {
                sqlx::query_scalar(
                    "SELECT COUNT(*) FROM jobs WHERE status = 'QUEUED' AND key_id = ?1",
                )
                .bind(k.to_string())
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
        Ok(u64::try_from(n).unwrap_or(0))
    }

    async fn queue_stats(&self) -> Result<Vec<QueueStats>, StoreError> {
        // Both halves read only the partial indexes of queued and running jobs.
        let rows = sqlx::query(
            "SELECT model_id, SUM(queued) AS queued, SUM(running) AS running, MIN(oldest) AS oldest FROM (
                 SELECT model_id, COUNT(*) AS queued, 0 AS running, MIN(created_at) AS oldest
                 FROM jobs WHERE status = 'QUEUED' GROUP BY model_id
                 UNION ALL
                 SELECT model_id, 0, COUNT(*), NULL FROM jobs WHERE status = 'IN_PROGRESS' GROUP BY model_id)
             GROUP BY model_id ORDER BY model_id",
        )
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let n = |c: &str| -> Result<u64, StoreError> {
                    Ok(u64::try_from(r.try_get::<i64, _>(c).map_err(unavailable)?).unwrap_or(0))
                };
                Ok(QueueStats {
                    model_id: r.try_get("model_id").map_err(unavailable)?,
                    queued: n("queued")?,
                    running: n("running")?,
                    oldest_queued: opt_time(r.try_get("oldest").map_err(unavailable)?)?,
                })
            })
            .collect()
    }

    async fn append_logs(&self, id: JobId, lines: &[LogLine]) -> Result<(), StoreError> {
        if lines.is_empty() {
            return Ok(());
        }
        self.writes.append_logs(id, lines.to_vec()).await
    }

    async fn logs(&self, id: JobId) -> Result<Vec<LogLine>, StoreError> {
        let rows =
            sqlx::query("SELECT ts, level, message FROM job_logs WHERE job_id = ?1 ORDER BY seq")
                .bind(id.to_string())
                .fetch_all(&self.pool)
                .await
                .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                Ok(LogLine {
                    timestamp: from_micros(r.try_get("ts").map_err(unavailable)?)?,
                    level: r.try_get("level").map_err(unavailable)?,
                    message: r.try_get("message").map_err(unavailable)?,
                })
            })
            .collect()
    }
}

#[async_trait]
impl KeyRepo for SqliteStore {
    async fn insert_key(&self, key: KeyRecord) -> Result<(), StoreError> {
        sqlx::query("INSERT INTO keys (id, hash, prefix, name, created_at, revoked_at, project) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)")
            .bind(key.id.to_string())
            .bind(&key.hash.0)
            .bind(&key.prefix)
            .bind(&key.name)
            .bind(micros(key.created_at))
            .bind(key.revoked_at.map(micros))
            .bind(&key.project)
            .execute(&self.write)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn find_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError> {
        let row = sqlx::query("SELECT * FROM keys WHERE hash = ?1")
            .bind(&hash.0)
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?;
        row.as_ref().map(key_from_row).transpose()
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
            sqlx::query("UPDATE keys SET revoked_at = COALESCE(revoked_at, ?1) WHERE id = ?2")
                .bind(micros(now))
                .bind(id.to_string())
                .execute(&self.write)
                .await
                .map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }

    async fn count_keys(&self) -> Result<u64, StoreError> {
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM keys")
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

impl SqliteStore {
    async fn attempts(&self, delivery: i64) -> Result<Vec<DeliveryAttempt>, StoreError> {
        let rows = sqlx::query(
            "SELECT at, status_code, error FROM webhook_attempts WHERE delivery_id = ?1 ORDER BY at, rowid",
        )
        .bind(delivery)
        .fetch_all(&self.pool)
        .await
        .map_err(unavailable)?;
        rows.iter()
            .map(|r| {
                let code: Option<i64> = r.try_get("status_code").map_err(unavailable)?;
                Ok(DeliveryAttempt {
                    at: from_micros(r.try_get("at").map_err(unavailable)?)?,
                    status_code: code.and_then(|c| u16::try_from(c).ok()),
                    error: r.try_get("error").map_err(unavailable)?,
                })
            })
            .collect()
    }

    fn delivery_from_row(r: &SqliteRow) -> Result<Delivery, StoreError> {
        let state: String = r.try_get("state").map_err(unavailable)?;
        let job_id: String = r.try_get("job_id").map_err(unavailable)?;
        Ok(Delivery {
            id: r.try_get("id").map_err(unavailable)?,
            job_id: JobId::from_str(&job_id).map_err(|e| corrupt("job id")(e.to_string()))?,
            url: r.try_get("url").map_err(unavailable)?,
            state: delivery_state(&state),
            created_at: from_micros(r.try_get("created_at").map_err(unavailable)?)?,
            attempts: Vec::new(),
        })
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
        let rows = sqlx::query(
            "UPDATE webhook_deliveries SET lease_owner = ?1, lease_expires_at = ?2
             WHERE id IN (
                 SELECT id FROM webhook_deliveries
                 WHERE state = 'pending' AND next_attempt_at <= ?3
                   AND (lease_owner IS NULL OR lease_expires_at < ?3)
                 ORDER BY next_attempt_at LIMIT ?4)
             RETURNING *",
        )
        .bind(owner)
        .bind(micros(lease_until))
        .bind(micros(now))
        .bind(i64::from(limit))
        .fetch_all(&self.write)
        .await
        .map_err(unavailable)?;
        let mut out = Vec::with_capacity(rows.len());
        for r in &rows {
            let mut d = Self::delivery_from_row(r)?;
            d.attempts = self.attempts(d.id).await?;
            out.push(d);
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
        let mut tx = self.write.begin().await.map_err(unavailable)?;
        let updated = sqlx::query(
            "UPDATE webhook_deliveries
             SET state = ?1, next_attempt_at = ?2, attempts = attempts + 1,
                 lease_owner = NULL, lease_expires_at = NULL
             WHERE id = ?3 AND lease_owner = ?4 AND state = 'pending'",
        )
        .bind(state)
        .bind(micros(next))
        .bind(id)
        .bind(owner)
        .execute(&mut *tx)
        .await
        .map_err(unavailable)?
        .rows_affected();
        if updated == 1 {
            sqlx::query(
                "INSERT INTO webhook_attempts (delivery_id, at, status_code, error) VALUES (?1, ?2, ?3, ?4)",
            )
            .bind(id)
            .bind(micros(attempt.at))
            .bind(attempt.status_code.map(i64::from))
            .bind(attempt.error.as_deref())
            .execute(&mut *tx)
            .await
            .map_err(unavailable)?;
        }
        tx.commit().await.map_err(unavailable)?;
        Ok(updated == 1)
    }

    async fn delivery_of(&self, job: JobId) -> Result<Option<Delivery>, StoreError> {
        let Some(r) = sqlx::query("SELECT * FROM webhook_deliveries WHERE job_id = ?1")
            .bind(job.to_string())
            .fetch_optional(&self.pool)
            .await
            .map_err(unavailable)?
        else {
            return Ok(None);
        };
        let mut d = Self::delivery_from_row(&r)?;
        d.attempts = self.attempts(d.id).await?;
        Ok(Some(d))
    }
}

#[async_trait]
impl Store for SqliteStore {
    async fn check(&self) -> Result<(), StoreError> {
        sqlx::query("SELECT 1")
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(())
    }

    async fn setting_or_insert(
        &self,
        name: &str,
        value: &str,
    ) -> Result<(String, bool), StoreError> {
        let inserted = sqlx::query(
            "INSERT INTO settings (name, value, created_at) VALUES (?, ?, ?) ON CONFLICT (name) DO NOTHING",
        )
        .bind(name)
        .bind(value)
        .bind(micros(Utc::now()))
        .execute(&self.write)
        .await
        .map_err(unavailable)?
        .rows_affected()
            == 1;
        let stored: String = sqlx::query_scalar("SELECT value FROM settings WHERE name = ?")
            .bind(name)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok((stored, inserted))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// How SQLite would run a listing: the plan's steps, one line each.
    async fn plan(store: &SqliteStore, q: &ListQuery) -> String {
        let rows = list_query("EXPLAIN QUERY PLAN ", q)
            .unwrap()
            .build()
            .fetch_all(&store.pool)
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
