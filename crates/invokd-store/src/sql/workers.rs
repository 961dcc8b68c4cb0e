//! The statements on worker tokens and workers' presence, the same on both databases.

use chrono::{DateTime, Utc};
use invokd_core::{
    ids::WorkerTokenId,
    keys::KeyHash,
    store::StoreError,
    workers::{WorkerPresence, WorkerToken},
};

use super::{Arg, Statement, micros};

fn json_text<T: serde::Serialize>(v: &T) -> Result<String, StoreError> {
    serde_json::to_string(v).map_err(|e| StoreError::Corrupt(e.to_string()))
}

pub(crate) fn insert_token(t: WorkerToken) -> Result<Statement, StoreError> {
    Ok(Statement::new(
        "INSERT INTO worker_tokens (id, hash, prefix, name, models, created_at, revoked_at)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .arg(Arg::Id(t.id.as_uuid()))
    .arg(Arg::Text(t.hash.0))
    .arg(Arg::Text(t.prefix))
    .arg(Arg::Prose(t.name))
    .arg(Arg::Text(json_text(&t.models.as_slice())?))
    .arg(Arg::Int(micros(t.created_at)))
    .arg(Arg::OptInt(t.revoked_at.map(micros))))
}

pub(crate) fn find_token(hash: &KeyHash) -> Statement {
    Statement::new("SELECT * FROM worker_tokens WHERE hash = $1").arg(Arg::Text(hash.0.clone()))
}

pub(crate) fn list_tokens() -> Statement {
    Statement::new("SELECT * FROM worker_tokens ORDER BY created_at DESC, id DESC")
}

/// Revoking twice keeps the first time.
pub(crate) fn revoke_token(id: WorkerTokenId, now: DateTime<Utc>) -> Statement {
    Statement::new("UPDATE worker_tokens SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
        .arg(Arg::Int(micros(now)))
        .arg(Arg::Id(id.as_uuid()))
}

/// Inserts the worker, or updates what it says of itself and when it was seen. A row of
/// another token's worker with the same id is left alone.
pub(crate) fn record(w: &WorkerPresence, now: DateTime<Utc>) -> Result<Statement, StoreError> {
    Ok(Statement::new(
        "INSERT INTO workers (id, token_id, owner, name, version, models, slots, labels,
                              first_seen, last_seen)
         VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $9)
         ON CONFLICT (id) DO UPDATE SET
             name = excluded.name, version = excluded.version, models = excluded.models,
             slots = excluded.slots, labels = excluded.labels, last_seen = excluded.last_seen
         WHERE workers.token_id = excluded.token_id",
    )
    .arg(Arg::Text(w.id.clone()))
    .arg(Arg::Id(w.token_id.as_uuid()))
    .arg(Arg::Text(w.owner.clone()))
    .arg(Arg::Prose(w.name.clone()))
    .arg(Arg::OptText(w.version.clone()))
    .arg(Arg::Text(json_text(&w.models)?))
    .arg(Arg::Int32(i32::try_from(w.slots).unwrap_or(i32::MAX)))
    .arg(Arg::Text(json_text(&w.labels)?))
    .arg(Arg::Int(micros(now))))
}

pub(crate) fn count_job(worker_id: &str, completed: bool) -> Statement {
    let sql = if completed {
        "UPDATE workers SET completed = completed + 1 WHERE id = $1"
    } else {
        "UPDATE workers SET failed = failed + 1 WHERE id = $1"
    };
    Statement::new(sql).arg(Arg::Text(worker_id.to_owned()))
}

/// Workers seen since `$1`, each with `running`: the jobs held under its lease owner now.
pub(crate) fn list(since: DateTime<Utc>) -> Statement {
    Statement::new(
        "SELECT w.*, (SELECT COUNT(*) FROM jobs j
                      WHERE j.status = 'IN_PROGRESS' AND j.lease_owner = w.owner) AS running
         FROM workers w WHERE w.last_seen >= $1 ORDER BY w.name, w.id",
    )
    .arg(Arg::Int(micros(since)))
}
