//! The writes of a lease holder on SQLite, as the group commit applies them: fenced changes,
//! heartbeats, log lines, and finishes, which go in together (all their log lines in one
//! insert, then one fenced `UPDATE … FROM (VALUES …)`), each statement being a round trip to
//! the connection's thread.

use std::collections::{HashMap, HashSet};

use chrono::{DateTime, Utc};
use invokd_core::{
    JobError, JobId, JobStatus, Lease, UpstreamRef,
    provider::LogLine,
    store::{Beat, StoreError},
};
use sqlx::{Row, SqliteConnection};

use crate::sql::{beat, jobs, micros, unavailable};

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
    SetUpstream(Option<UpstreamRef>),
}

/// A [`Change`] with the lease it is fenced by.
#[derive(Debug)]
pub(crate) struct Fenced {
    id: JobId,
    lease: Lease,
    change: Change,
}

impl Fenced {
    pub(crate) fn new(id: JobId, lease: &Lease, change: Change) -> Self {
        Self {
            id,
            lease: lease.clone(),
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
        let (id, lease) = (self.id, &self.lease);
        let mut st = match &self.change {
            Change::Finish { .. } => return Ok(finish_all(conn, &[self]).await?.contains(&true)),
            Change::Release { error, now } => jobs::release(id, lease, error.clone(), *now),
            Change::GiveBack { now } => jobs::give_back(id, lease, *now),
            Change::SetUpstream(upstream) => jobs::set_upstream(id, lease, upstream.as_ref()),
        };
        let done = st.query().execute(conn).await.map_err(unavailable)?;
        Ok(done.rows_affected() == 1)
    }
}

/// Extends a running job's lease; what it found says whether to go on.
pub(crate) async fn heartbeat_row(
    conn: &mut SqliteConnection,
    id: JobId,
    lease: &Lease,
    until: DateTime<Utc>,
) -> Result<Beat, StoreError> {
    let row = jobs::heartbeat(id, lease, until)
        .query()
        .fetch_optional(conn)
        .await
        .map_err(unavailable)?;
    beat(row.as_ref())
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
            .push_bind(f.lease.owner.clone())
            .push_bind(i64::from(f.lease.attempt));
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
