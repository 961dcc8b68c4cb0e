//! What the SQLite and PostgreSQL stores share: the statements that read the same on both
//! (`jobs.rs`, `keys.rs`), the one mapping of their rows to jobs, keys and deliveries
//! (`rows.rs`), how a statement's values are bound on either database (`statement.rs`) and
//! how its reads run (`reads.rs`), a listing's statement, timestamps as unix microseconds,
//! the mapping of database errors, and the wording of the errors the store itself gives jobs.

pub(crate) mod jobs;
pub(crate) mod keys;
mod reads;
pub(crate) mod rows;
mod statement;
pub(crate) mod workers;

pub(crate) use reads::Reads;
pub(crate) use statement::{Arg, Db, Statement, pg_text};

use chrono::{DateTime, Utc};
use invokd_core::{
    Job, JobError, JobStatus, NewJob, Outcome,
    store::{AfterAttempt, Beat, DeliveryState, ListQuery, StoreError},
};
use serde_json::{Map, Value};
use sqlx::{Encode, QueryBuilder, Type};

/// The message a job gets when its last attempt was cut off.
pub(crate) const ATTEMPTS_EXHAUSTED: &str =
    "the job was interrupted on its last allowed attempt (the worker stopped or lost its lease)";

/// The answer to a write whose queue's task is gone: the runtime is shutting down.
pub(crate) fn shutting_down() -> StoreError {
    StoreError::Unavailable("the store is shutting down".into())
}

/// Hands `item` to a write queue's task and waits for its answer (given once committed).
pub(crate) async fn queue_write<T, R>(
    queue: &tokio::sync::mpsc::Sender<(T, tokio::sync::oneshot::Sender<Result<R, StoreError>>)>,
    item: T,
) -> Result<R, StoreError> {
    let (reply, answer) = tokio::sync::oneshot::channel();
    queue
        .send((item, reply))
        .await
        .map_err(|_| shutting_down())?;
    answer.await.map_err(|_| shutting_down())?
}

/// A listing's statement, after `prefix` (`EXPLAIN …` in tests). Only the filters given are in
/// it, so each shape is planned on its own and walks jobs_by_project (or, with no project,
/// jobs_by_created) in the listing's order, stopping at the limit: one statement for every
/// shape (`? IS NULL OR project = ?`) makes SQLite scan and sort every job, and defeats
/// PostgreSQL's generic plans. The databases differ in how a tag is matched.
pub(crate) fn list_query<DB>(
    prefix: &str,
    q: &ListQuery,
    push_tag: impl FnOnce(&mut QueryBuilder<'static, DB>, &str, &str) -> Result<(), StoreError>,
) -> Result<QueryBuilder<'static, DB>, StoreError>
where
    DB: Db,
    DB::Arguments<'static>: Default,
    String: Encode<'static, DB> + Type<DB>,
    i64: Encode<'static, DB> + Type<DB>,
{
    let mut b = QueryBuilder::new(format!("{prefix}SELECT * FROM jobs WHERE 1 = 1"));
    if let Some(p) = &q.project {
        b.push(" AND project = ").push_bind(p.clone());
    }
    if let Some(s) = q.status {
        b.push(" AND status = ").push_bind(s.as_str().to_owned());
    }
    if let Some(m) = &q.model_id {
        b.push(" AND model_id = ").push_bind(m.clone());
    }
    if let Some((name, value)) = &q.tag {
        push_tag(&mut b, name, value)?;
    }
    if let Some(t) = q.created_after {
        b.push(" AND created_at > ").push_bind(micros(t));
    }
    if let Some(t) = q.created_before {
        b.push(" AND created_at < ").push_bind(micros(t));
    }
    if let Some((t, id)) = q.after {
        b.push(" AND (created_at, id) < (")
            .push_bind(micros(t))
            .push(", ")
            .push_bind(DB::id(id.as_uuid()))
            .push(")");
    }
    b.push(" ORDER BY created_at DESC, id DESC LIMIT ")
        .push_bind(i64::from(q.limit));
    Ok(b)
}

/// A unique violation is a conflict (the id exists); anything else means the store did not
/// answer as it should.
pub(crate) fn unavailable(e: sqlx::Error) -> StoreError {
    match &e {
        sqlx::Error::Database(db) if db.is_unique_violation() => StoreError::Conflict,
        _ => StoreError::Unavailable(e.to_string()),
    }
}

pub(crate) fn micros(t: DateTime<Utc>) -> i64 {
    t.timestamp_micros()
}

pub(crate) fn from_micros(v: i64) -> Result<DateTime<Utc>, StoreError> {
    DateTime::from_timestamp_micros(v).ok_or_else(|| StoreError::Corrupt(format!("timestamp {v}")))
}

pub(crate) fn opt_time(v: Option<i64>) -> Result<Option<DateTime<Utc>>, StoreError> {
    v.map(from_micros).transpose()
}

pub(crate) fn corrupt(what: &str) -> impl Fn(String) -> StoreError + '_ {
    move |e| StoreError::Corrupt(format!("{what}: {e}"))
}

pub(crate) fn to_json<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn delivery_state(s: &str) -> DeliveryState {
    match s {
        "pending" => DeliveryState::Pending,
        "delivered" => DeliveryState::Delivered,
        _ => DeliveryState::Failed,
    }
}

/// A run limit as stored: whole milliseconds.
pub(crate) fn run_timeout_ms(d: std::time::Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

/// A new job as a read of its row returns it: times in whole microseconds and the run limit
/// in whole milliseconds, as stored.
pub(crate) fn as_inserted(job: &NewJob) -> Result<Job, StoreError> {
    let mut stored = job.clone().queued();
    stored.created_at = from_micros(micros(job.created_at))?;
    stored.start_deadline = opt_time(job.start_deadline.map(micros))?;
    stored.run_timeout = job
        .run_timeout
        .map(|d| std::time::Duration::from_millis(d.as_millis().try_into().unwrap_or(u64::MAX)));
    Ok(stored)
}

/// How a run's outcome is stored: its status, output and error.
pub(crate) fn outcome_columns(
    outcome: Outcome,
) -> (JobStatus, Option<Map<String, Value>>, Option<JobError>) {
    match outcome {
        Outcome::Completed(output) => (JobStatus::Completed, Some(output), None),
        Outcome::Failed(e) => (JobStatus::Failed, None, Some(e)),
        Outcome::Canceled(e) => (JobStatus::Canceled, None, Some(e)),
    }
}

/// What a heartbeat's update found: no row (the lease is gone), or the row's cancel request.
pub(crate) fn beat(row: Option<&impl rows::Columns>) -> Result<Beat, StoreError> {
    Ok(match row {
        None => Beat::Lost,
        Some(row) => match row.opt_int("cancel_requested_at")? {
            None => Beat::Held,
            Some(_) => Beat::CancelRequested,
        },
    })
}

/// A delivery's state after an attempt made `at`, and when it is next due.
pub(crate) fn after_attempt(
    then: AfterAttempt,
    at: DateTime<Utc>,
) -> (&'static str, DateTime<Utc>) {
    match then {
        AfterAttempt::Delivered => (DeliveryState::Delivered.as_str(), at),
        AfterAttempt::RetryAt(t) => (DeliveryState::Pending.as_str(), t),
        AfterAttempt::GiveUp => (DeliveryState::Failed.as_str(), at),
    }
}
