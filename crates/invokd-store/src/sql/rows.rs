//! The one mapping of the stores' rows to jobs, keys, deliveries and log lines, for a row of
//! either database: the tables have the same columns, kept as each database can (ids as uuid
//! or text, JSON as json or text, integers as integer or bigint), read here through [`Columns`].

use std::{str::FromStr, time::Duration};

use invokd_core::{
    Job, JobError, JobId, JobStatus, KeyId, Lease, UpstreamRef,
    ids::WorkerTokenId,
    keys::{KeyHash, KeyRecord},
    provider::LogLine,
    store::{Delivery, DeliveryAttempt, QueueStats, StoreError},
    workers::{ModelPatterns, WorkerPresence, WorkerRecord, WorkerToken},
};
use serde_json::{Map, Value};
use sqlx::{ColumnIndex, Decode, Row, Type, types::Json};
use uuid::Uuid;

use super::{Db, delivery_state, from_micros, opt_time};

/// The columns of a row, by name and type; a value that does not read is corruption.
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String, StoreError>;
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError>;
    fn int(&self, column: &str) -> Result<i64, StoreError>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError>;
    /// An `integer` column on PostgreSQL (attempts, priorities, status codes).
    fn int32(&self, column: &str) -> Result<i32, StoreError>;
    fn opt_int32(&self, column: &str) -> Result<Option<i32>, StoreError>;
    fn id(&self, column: &str) -> Result<Uuid, StoreError>;
    fn object(&self, column: &str) -> Result<Map<String, Value>, StoreError>;
    fn opt_object(&self, column: &str) -> Result<Option<Map<String, Value>>, StoreError>;
    fn tags(&self, column: &str) -> Result<Vec<(String, String)>, StoreError>;
    fn upstream(&self, column: &str) -> Result<Option<UpstreamRef>, StoreError>;
}

fn get<'r, R, T>(row: &'r R, column: &str) -> Result<T, StoreError>
where
    R: Row,
    for<'c> &'c str: ColumnIndex<R>,
    T: Decode<'r, R::Database> + Type<R::Database>,
{
    row.try_get(column)
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

impl<R> Columns for R
where
    R: Row,
    R::Database: Db,
    for<'c> &'c str: ColumnIndex<R>,
    for<'r> String: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i64: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> i32: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Json<Map<String, Value>>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Json<Vec<(String, String)>>: Decode<'r, R::Database> + Type<R::Database>,
    for<'r> Json<UpstreamRef>: Decode<'r, R::Database> + Type<R::Database>,
{
    fn text(&self, column: &str) -> Result<String, StoreError> {
        get(self, column)
    }
    fn opt_text(&self, column: &str) -> Result<Option<String>, StoreError> {
        get(self, column)
    }
    fn int(&self, column: &str) -> Result<i64, StoreError> {
        get(self, column)
    }
    fn opt_int(&self, column: &str) -> Result<Option<i64>, StoreError> {
        get(self, column)
    }
    fn int32(&self, column: &str) -> Result<i32, StoreError> {
        get(self, column)
    }
    fn opt_int32(&self, column: &str) -> Result<Option<i32>, StoreError> {
        get(self, column)
    }
    fn id(&self, column: &str) -> Result<Uuid, StoreError> {
        get::<R, <R::Database as Db>::Id>(self, column).map(R::Database::uuid)
    }
    fn object(&self, column: &str) -> Result<Map<String, Value>, StoreError> {
        get::<R, Json<_>>(self, column).map(|j| j.0)
    }
    fn opt_object(&self, column: &str) -> Result<Option<Map<String, Value>>, StoreError> {
        get::<R, Option<Json<_>>>(self, column).map(|j| j.map(|j| j.0))
    }
    fn tags(&self, column: &str) -> Result<Vec<(String, String)>, StoreError> {
        get::<R, Json<_>>(self, column).map(|j| j.0)
    }
    fn upstream(&self, column: &str) -> Result<Option<UpstreamRef>, StoreError> {
        get::<R, Option<Json<_>>>(self, column).map(|j| j.map(|j| j.0))
    }
}

fn count(row: &impl Columns, column: &str) -> Result<u64, StoreError> {
    Ok(u64::try_from(row.int(column)?).unwrap_or(0))
}

fn unsigned(row: &impl Columns, column: &str) -> Result<u32, StoreError> {
    u32::try_from(row.int32(column)?).map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

/// A job from its row (`SELECT *` or `RETURNING *`).
pub(crate) fn job(row: &impl Columns) -> Result<Job, StoreError> {
    let status = row.text("status")?;
    let attempt = unsigned(row, "attempt")?;
    let lease = match (
        row.opt_text("lease_owner")?,
        row.opt_int("lease_expires_at")?,
    ) {
        (Some(owner), Some(expires_at)) => Some(Lease {
            owner,
            attempt,
            expires_at: from_micros(expires_at)?,
        }),
        _ => None,
    };
    let error = match row.opt_text("error_message")? {
        Some(message) => Some(JobError {
            message,
            error_type: row.opt_text("error_type")?.unwrap_or_default(),
        }),
        None => None,
    };
    Ok(Job {
        id: JobId::from(row.id("id")?),
        key_id: KeyId::from(row.id("key_id")?),
        model_id: row.text("model_id")?,
        project: row.text("project")?,
        input: row.object("input")?.into(),
        tags: row.tags("tags")?,
        status: JobStatus::from_str(&status)
            .map_err(|e| StoreError::Corrupt(format!("status: {e}")))?,
        priority: row.int32("priority")?,
        created_at: from_micros(row.int("created_at")?)?,
        started_at: opt_time(row.opt_int("started_at")?)?,
        completed_at: opt_time(row.opt_int("completed_at")?)?,
        attempt,
        max_attempts: unsigned(row, "max_attempts")?,
        lease,
        output: row.opt_object("output")?.map(Into::into),
        error,
        start_deadline: opt_time(row.opt_int("start_deadline")?)?,
        webhook_url: row.opt_text("webhook_url")?,
        run_timeout: row
            .opt_int("run_timeout_ms")?
            .and_then(|ms| u64::try_from(ms).ok())
            .map(Duration::from_millis),
        expired_at: opt_time(row.opt_int("expired_at")?)?,
        cancel_requested: row.opt_int("cancel_requested_at")?.is_some(),
        upstream: row.upstream("upstream")?,
    })
}

pub(crate) fn jobs(rows: &[impl Columns]) -> Result<Vec<Job>, StoreError> {
    rows.iter().map(job).collect()
}

pub(crate) fn key(row: &impl Columns) -> Result<KeyRecord, StoreError> {
    Ok(KeyRecord {
        id: KeyId::from(row.id("id")?),
        hash: KeyHash(row.text("hash")?),
        prefix: row.text("prefix")?,
        name: row.text("name")?,
        project: row.text("project")?,
        created_at: from_micros(row.int("created_at")?)?,
        revoked_at: opt_time(row.opt_int("revoked_at")?)?,
    })
}

/// A delivery from its row, its attempts still to be read.
pub(crate) fn delivery(row: &impl Columns) -> Result<Delivery, StoreError> {
    Ok(Delivery {
        id: row.int("id")?,
        job_id: JobId::from(row.id("job_id")?),
        url: row.text("url")?,
        state: delivery_state(&row.text("state")?),
        created_at: from_micros(row.int("created_at")?)?,
        attempts: Vec::new(),
    })
}

pub(crate) fn attempt(row: &impl Columns) -> Result<DeliveryAttempt, StoreError> {
    Ok(DeliveryAttempt {
        at: from_micros(row.int("at")?)?,
        status_code: row
            .opt_int32("status_code")?
            .and_then(|c| u16::try_from(c).ok()),
        error: row.opt_text("error")?,
    })
}

pub(crate) fn log_line(row: &impl Columns) -> Result<LogLine, StoreError> {
    Ok(LogLine {
        timestamp: from_micros(row.int("ts")?)?,
        level: row.text("level")?,
        message: row.text("message")?,
    })
}

/// A row of [`super::jobs::queue_stats`].
pub(crate) fn queue_stats(row: &impl Columns) -> Result<QueueStats, StoreError> {
    Ok(QueueStats {
        model_id: row.text("model_id")?,
        queued: count(row, "queued")?,
        running: count(row, "running")?,
        oldest_queued: opt_time(row.opt_int("oldest")?)?,
    })
}

/// The `n` of a `COUNT(*) AS n`.
pub(crate) fn n(row: &impl Columns) -> Result<u64, StoreError> {
    count(row, "n")
}

/// A JSON value kept as text (worker tokens' and workers' models and labels).
fn json_column<T: serde::de::DeserializeOwned>(
    row: &impl Columns,
    column: &str,
) -> Result<T, StoreError> {
    serde_json::from_str(&row.text(column)?)
        .map_err(|e| StoreError::Corrupt(format!("{column}: {e}")))
}

pub(crate) fn worker_token(row: &impl Columns) -> Result<WorkerToken, StoreError> {
    Ok(WorkerToken {
        id: WorkerTokenId::from(row.id("id")?),
        hash: KeyHash(row.text("hash")?),
        prefix: row.text("prefix")?,
        name: row.text("name")?,
        models: ModelPatterns::from_stored(json_column(row, "models")?),
        created_at: from_micros(row.int("created_at")?)?,
        revoked_at: opt_time(row.opt_int("revoked_at")?)?,
    })
}

/// A row of [`super::workers::list`].
pub(crate) fn worker(row: &impl Columns) -> Result<WorkerRecord, StoreError> {
    Ok(WorkerRecord {
        presence: WorkerPresence {
            id: row.text("id")?,
            token_id: WorkerTokenId::from(row.id("token_id")?),
            owner: row.text("owner")?,
            name: row.text("name")?,
            version: row.opt_text("version")?,
            models: json_column(row, "models")?,
            slots: u32::try_from(row.int32("slots")?).unwrap_or(0),
            labels: json_column(row, "labels")?,
        },
        first_seen: from_micros(row.int("first_seen")?)?,
        last_seen: from_micros(row.int("last_seen")?)?,
        running: count(row, "running")?,
        completed: count(row, "completed")?,
        failed: count(row, "failed")?,
    })
}
