//! The statements on jobs that read the same on both databases: the fenced changes a lease
//! holder makes, the sweeps, the inserts and reads of the queue. Where the databases truly
//! differ (claims, finishes, cancel, log inserts, the queue's order) each store has its own.

use chrono::{DateTime, Utc};
use invokd_core::{
    Job, JobError, JobId, JobStatus, KeyId, Lease, NewJob, UpstreamRef,
    job::{cancelled_error, start_timeout_error},
    store::{IdempotencyKey, Inserted, Requeued, Stale, StoreError},
};

use super::{
    ATTEMPTS_EXHAUSTED, Arg, Db, Statement, micros, rows::Columns, run_timeout_ms, to_json,
};

/// An update that applies only while the caller holds the job's lease: the job is running, with
/// this owner and this attempt (fencing). `$1`–`$3` are the fence; the change binds from `$4`.
macro_rules! fenced {
    ($set:literal) => {
        concat!(
            "UPDATE jobs SET ",
            $set,
            " WHERE id = $1 AND status = 'IN_PROGRESS' AND lease_owner = $2 AND attempt = $3"
        )
    };
}
pub(crate) use fenced;

/// A count as an `integer` column holds it; out of range only for values no column holds, so a
/// fenced match simply fails.
pub(crate) fn int(v: u32) -> i32 {
    i32::try_from(v).unwrap_or(i32::MAX)
}

/// `sql`, a [`fenced!`] statement, with the fence's values bound.
pub(crate) fn fence(sql: &'static str, id: JobId, lease: &Lease) -> Statement {
    Statement::new(sql)
        .arg(Arg::Id(id.as_uuid()))
        .arg(Arg::Text(lease.owner.clone()))
        .arg(Arg::Int32(int(lease.attempt)))
}

/// Extends a lease; the row it returns (none if the lease is gone) holds the cancel request
/// (see [`super::beat`]).
pub(crate) fn heartbeat(id: JobId, lease: &Lease, until: DateTime<Utc>) -> Statement {
    let sql = concat!(
        fenced!("lease_expires_at = $4"),
        " RETURNING cancel_requested_at"
    );
    fence(sql, id, lease).arg(Arg::Int(micros(until)))
}

/// Cancelled if asked; back to the queue while attempts remain; else the error is final.
pub(crate) fn release(id: JobId, lease: &Lease, error: JobError, now: DateTime<Utc>) -> Statement {
    let cancelled = cancelled_error();
    let sql = fenced!(
        "status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'CANCELED'
                       WHEN attempt >= max_attempts THEN 'FAILED' ELSE 'QUEUED' END,
         error_message = CASE WHEN cancel_requested_at IS NOT NULL THEN $7
                              WHEN attempt >= max_attempts THEN $4 END,
         error_type = CASE WHEN cancel_requested_at IS NOT NULL THEN $8
                           WHEN attempt >= max_attempts THEN $5 END,
         completed_at = CASE WHEN cancel_requested_at IS NOT NULL OR attempt >= max_attempts
                             THEN $6 END,
         lease_owner = NULL, lease_expires_at = NULL"
    );
    fence(sql, id, lease)
        .arg(Arg::Prose(error.message))
        .arg(Arg::Prose(error.error_type))
        .arg(Arg::Int(micros(now)))
        .arg(Arg::Text(cancelled.message))
        .arg(Arg::Text(cancelled.error_type))
}

/// Back to the queue, or cancelled if asked: the attempt stays counted (it fences late writers)
/// and one more is allowed instead.
pub(crate) fn give_back(id: JobId, lease: &Lease, now: DateTime<Utc>) -> Statement {
    let cancelled = cancelled_error();
    let sql = fenced!(
        "status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'CANCELED' ELSE 'QUEUED' END,
         error_message = CASE WHEN cancel_requested_at IS NOT NULL THEN $4 END,
         error_type = CASE WHEN cancel_requested_at IS NOT NULL THEN $5 END,
         completed_at = CASE WHEN cancel_requested_at IS NOT NULL THEN $6 END,
         max_attempts = max_attempts + 1,
         lease_owner = NULL, lease_expires_at = NULL"
    );
    fence(sql, id, lease)
        .arg(Arg::Text(cancelled.message))
        .arg(Arg::Text(cancelled.error_type))
        .arg(Arg::Int(micros(now)))
}

pub(crate) fn set_upstream(id: JobId, lease: &Lease, upstream: Option<&UpstreamRef>) -> Statement {
    fence(fenced!("upstream = $4"), id, lease).arg(Arg::Upstream(upstream.cloned()))
}

/// Takes back the running jobs `which` names, each decided on its own row in one statement (so
/// replicas sweeping together, or a holder finishing meanwhile, cannot both win); it returns
/// the status each was left in. A job with an upstream request id still runs upstream: it goes
/// back to be resumed, whatever its attempts.
pub(crate) fn requeue_stale(which: Stale<'_>, now: DateTime<Utc>) -> Statement {
    // Expired leases ($5), or the leases of owners that start with $6 (all of them for "").
    let (expired, held_by) = match which {
        Stale::Expired => (true, None),
        Stale::AllRunning => (false, Some(String::new())),
        Stale::HeldBy { owner_prefix } => (false, Some(owner_prefix.to_owned())),
    };
    let cancelled = cancelled_error();
    Statement::new(
        "UPDATE jobs
         SET status = CASE WHEN cancel_requested_at IS NOT NULL THEN 'CANCELED'
                           WHEN attempt >= max_attempts AND upstream->>'request_id' IS NULL THEN 'FAILED'
                           ELSE 'QUEUED' END,
             error_message = CASE WHEN cancel_requested_at IS NOT NULL THEN $1
                                  WHEN attempt >= max_attempts AND upstream->>'request_id' IS NULL THEN $3
                                  ELSE error_message END,
             error_type = CASE WHEN cancel_requested_at IS NOT NULL THEN $2
                               WHEN attempt >= max_attempts AND upstream->>'request_id' IS NULL
                               THEN 'runner_disconnected'
                               ELSE error_type END,
             completed_at = CASE WHEN cancel_requested_at IS NOT NULL
                                   OR (attempt >= max_attempts AND upstream->>'request_id' IS NULL)
                                 THEN $4 ELSE completed_at END,
             lease_owner = NULL, lease_expires_at = NULL
         WHERE status = 'IN_PROGRESS'
           AND (($5 AND lease_expires_at < $4) OR substr(lease_owner, 1, length($6)) = $6)
         RETURNING status",
    )
    .arg(Arg::Text(cancelled.message))
    .arg(Arg::Text(cancelled.error_type))
    .arg(Arg::Text(ATTEMPTS_EXHAUSTED.to_owned()))
    .arg(Arg::Int(micros(now)))
    .arg(Arg::Bool(expired))
    .arg(Arg::OptText(held_by))
}

/// What [`requeue_stale`]'s rows say it did.
pub(crate) fn requeued(rows: &[impl Columns]) -> Result<Requeued, StoreError> {
    let mut done = Requeued::default();
    for row in rows {
        match row.text("status")?.as_str() {
            s if s == JobStatus::Queued.as_str() => done.requeued += 1,
            s if s == JobStatus::Failed.as_str() => done.failed += 1,
            _ => {}
        }
    }
    Ok(done)
}

/// Fails every queued job whose start deadline has passed.
pub(crate) fn expire_deadlines(now: DateTime<Utc>) -> Statement {
    let e = start_timeout_error();
    Statement::new(
        "UPDATE jobs SET status = 'FAILED', error_message = $1, error_type = $2, completed_at = $3
         WHERE status = 'QUEUED' AND start_deadline IS NOT NULL AND start_deadline < $3",
    )
    .arg(Arg::Text(e.message))
    .arg(Arg::Text(e.error_type))
    .arg(Arg::Int(micros(now)))
}

/// Ended jobs whose output is not yet expired, the longest ended first (`id` each).
pub(crate) fn jobs_to_expire(before: DateTime<Utc>, limit: u32) -> Statement {
    Statement::new(
        "SELECT id FROM jobs
         WHERE expired_at IS NULL AND status IN ('COMPLETED', 'FAILED', 'CANCELED')
           AND completed_at < $1
         ORDER BY completed_at LIMIT $2",
    )
    .arg(Arg::Int(micros(before)))
    .arg(Arg::Int(i64::from(limit)))
}

pub(crate) fn mark_expired(id: JobId, now: DateTime<Utc>) -> Statement {
    Statement::new(
        "UPDATE jobs SET output = NULL, expired_at = $1 WHERE id = $2 AND expired_at IS NULL",
    )
    .arg(Arg::Int(micros(now)))
    .arg(Arg::Id(id.as_uuid()))
}

/// How many queued jobs of the model run before `job` (`n`).
pub(crate) fn queue_position(job: &Job) -> Statement {
    Statement::new(
        "SELECT COUNT(*) AS n FROM jobs
         WHERE status = 'QUEUED' AND model_id = $1
           AND (priority, created_at, id) < ($2, $3, $4)",
    )
    .arg(Arg::Text(job.model_id.clone()))
    .arg(Arg::Int32(job.priority))
    .arg(Arg::Int(micros(job.created_at)))
    .arg(Arg::Id(job.id.as_uuid()))
}

/// Queued jobs of one key, or of everyone (`n`).
pub(crate) fn queued_count(key_id: Option<KeyId>) -> Statement {
    match key_id {
        Some(k) => {
            Statement::new("SELECT COUNT(*) AS n FROM jobs WHERE status = 'QUEUED' AND key_id = $1")
                .arg(Arg::Id(k.as_uuid()))
        }
        None => Statement::new("SELECT COUNT(*) AS n FROM jobs WHERE status = 'QUEUED'"),
    }
}

/// Queued and running jobs per model (see [`super::rows::queue_stats`]). Both halves read only
/// the partial indexes of queued and running jobs.
pub(crate) fn queue_stats() -> Statement {
    Statement::new(
        "SELECT model_id, CAST(SUM(queued) AS BIGINT) AS queued,
                CAST(SUM(running) AS BIGINT) AS running, MIN(oldest) AS oldest
         FROM (SELECT model_id, COUNT(*) AS queued, CAST(0 AS BIGINT) AS running,
                      MIN(created_at) AS oldest
               FROM jobs WHERE status = 'QUEUED' GROUP BY model_id
               UNION ALL
               SELECT model_id, 0, COUNT(*), NULL
               FROM jobs WHERE status = 'IN_PROGRESS' GROUP BY model_id) per_state
         GROUP BY model_id ORDER BY model_id",
    )
}

/// A job's log lines, oldest first (see [`super::rows::log_line`]).
pub(crate) fn logs(id: JobId) -> Statement {
    Statement::new("SELECT ts, level, message FROM job_logs WHERE job_id = $1 ORDER BY seq")
        .arg(Arg::Id(id.as_uuid()))
}

/// `before`, then the insert of `jobs`, queued, as one statement for all (on SQLite, a batch
/// of creates costs one step of the connection's thread; on PostgreSQL, one WAL flush), then
/// `after`: statements without values of their own that run in the same step, or a `RETURNING`.
pub(crate) fn insert<DB: Db>(
    before: &str,
    jobs: &[&NewJob],
    after: &str,
) -> Result<Statement, StoreError> {
    let mut insert = Statement::new(format!(
        "{before}INSERT INTO jobs (id, key_id, project, model_id, input, tags, priority, created_at,
                          max_attempts, start_deadline, webhook_url, run_timeout_ms, status)
         VALUES "
    ));
    for (i, job) in jobs.iter().enumerate() {
        // JSON as text: a jsonb value (PostgreSQL's) would refuse what the json column keeps.
        let values = [
            (Arg::Id(job.id.as_uuid()), ""),
            (Arg::Id(job.key_id.as_uuid()), ""),
            (Arg::Text(job.project.clone()), ""),
            (Arg::Text(job.model_id.clone()), ""),
            (Arg::Text(to_json(&job.input)?), DB::JSON),
            (Arg::Text(to_json(&job.tags)?), DB::JSON),
            (Arg::Int32(job.priority), ""),
            (Arg::Int(micros(job.created_at)), ""),
            (Arg::Int32(int(job.max_attempts)), ""),
            (Arg::OptInt(job.start_deadline.map(micros)), ""),
            (Arg::OptText(job.webhook_url.clone()), ""),
            (Arg::OptInt(job.run_timeout.map(run_timeout_ms)), ""),
        ];
        insert.push(if i == 0 { "(" } else { ", (" });
        for (arg, cast) in values {
            insert.push_arg::<DB>(arg);
            insert.push(cast);
            insert.push(", ");
        }
        insert.push("'QUEUED')");
    }
    insert.push(after);
    Ok(insert)
}

/// Forgets the caller's use of an idempotency key that is older than its window.
pub(crate) fn forget_old_key(job: &NewJob, idem: &IdempotencyKey) -> Statement {
    Statement::new(
        "DELETE FROM idempotency_keys WHERE key_id = $1 AND idem_key = $2 AND created_at < $3",
    )
    .arg(Arg::Id(job.key_id.as_uuid()))
    .arg(Arg::Text(idem.key.clone()))
    .arg(Arg::Int(micros(idem.not_before)))
}

/// Records the key for `job`, unless the caller used it already (then nothing changes).
pub(crate) fn claim_key(job: &NewJob, idem: &IdempotencyKey) -> Statement {
    Statement::new(
        "INSERT INTO idempotency_keys (key_id, idem_key, body_hash, job_id, created_at)
         VALUES ($1, $2, $3, $4, $5) ON CONFLICT DO NOTHING",
    )
    .arg(Arg::Id(job.key_id.as_uuid()))
    .arg(Arg::Text(idem.key.clone()))
    .arg(Arg::Text(idem.body_hash.clone()))
    .arg(Arg::Id(job.id.as_uuid()))
    .arg(Arg::Int(micros(job.created_at)))
}

/// The job the key was first used for, with the hash of the body it came with.
pub(crate) fn keyed_job(job: &NewJob, idem: &IdempotencyKey) -> Statement {
    Statement::new(
        "SELECT i.body_hash, j.* FROM idempotency_keys i JOIN jobs j ON j.id = i.job_id
         WHERE i.key_id = $1 AND i.idem_key = $2",
    )
    .arg(Arg::Id(job.key_id.as_uuid()))
    .arg(Arg::Text(idem.key.clone()))
}

/// What a create with a key used before gets, from [`keyed_job`]'s row.
pub(crate) fn replayed(
    row: Option<&impl Columns>,
    idem: &IdempotencyKey,
) -> Result<Inserted, StoreError> {
    let Some(row) = row else {
        return Err(StoreError::Corrupt(format!(
            "idempotency key {:?} names no job",
            idem.key
        )));
    };
    if row.text("body_hash")? != idem.body_hash {
        return Ok(Inserted::KeyReused);
    }
    Ok(Inserted::Replayed(super::rows::job(row)?))
}
