//! The statements on keys, settings and webhook deliveries that read the same on both
//! databases. Recording an attempt differs (PostgreSQL writes it in the statement that checks
//! the lease; SQLite, which cannot, in the same transaction), as does reading the attempts, so
//! each store has its own.

use chrono::{DateTime, Utc};
use invokd_core::{
    JobId, KeyId,
    keys::{KeyHash, KeyRecord},
};

use super::{Arg, Db, Statement, micros};

/// Whether the store answers.
pub(crate) fn check() -> Statement {
    Statement::new("SELECT 1")
}

pub(crate) fn insert_key(key: KeyRecord) -> Statement {
    Statement::new(
        "INSERT INTO keys (id, hash, prefix, name, created_at, revoked_at, project)
         VALUES ($1, $2, $3, $4, $5, $6, $7)",
    )
    .arg(Arg::Id(key.id.as_uuid()))
    .arg(Arg::Text(key.hash.0))
    .arg(Arg::Text(key.prefix))
    .arg(Arg::Prose(key.name))
    .arg(Arg::Int(micros(key.created_at)))
    .arg(Arg::OptInt(key.revoked_at.map(micros)))
    .arg(Arg::Text(key.project))
}

pub(crate) fn find_key(hash: &KeyHash) -> Statement {
    Statement::new("SELECT * FROM keys WHERE hash = $1").arg(Arg::Text(hash.0.clone()))
}

/// How many keys there are (`n`).
pub(crate) fn count_keys() -> Statement {
    Statement::new("SELECT COUNT(*) AS n FROM keys")
}

pub(crate) fn list_keys() -> Statement {
    Statement::new("SELECT * FROM keys ORDER BY created_at DESC, id DESC")
}

/// Revoking twice keeps the first time.
pub(crate) fn revoke_key(id: KeyId, now: DateTime<Utc>) -> Statement {
    Statement::new("UPDATE keys SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
        .arg(Arg::Int(micros(now)))
        .arg(Arg::Id(id.as_uuid()))
}

/// Stores a setting unless it has a value already: of processes starting together, one
/// insert wins, and the others read the winner's value ([`setting`]).
pub(crate) fn insert_setting(name: &str, value: &str) -> Statement {
    Statement::new(
        "INSERT INTO settings (name, value, created_at) VALUES ($1, $2, $3)
         ON CONFLICT (name) DO NOTHING",
    )
    .arg(Arg::Text(name.to_owned()))
    .arg(Arg::Text(value.to_owned()))
    .arg(Arg::Int(micros(Utc::now())))
}

/// The setting's `value`.
pub(crate) fn setting(name: &str) -> Statement {
    Statement::new("SELECT value FROM settings WHERE name = $1").arg(Arg::Text(name.to_owned()))
}

/// The job's delivery (see [`super::rows::delivery`]).
pub(crate) fn delivery_of(job: JobId) -> Statement {
    Statement::new("SELECT * FROM webhook_deliveries WHERE job_id = $1").arg(Arg::Id(job.as_uuid()))
}

/// Leases to `owner` until `lease_until` up to `limit` pending deliveries that are due, the
/// longest due first, returning their rows (see [`super::rows::delivery`]).
pub(crate) fn claim_deliveries<DB: Db>(
    owner: &str,
    limit: u32,
    now: DateTime<Utc>,
    lease_until: DateTime<Utc>,
) -> Statement {
    Statement::new(format!(
        "UPDATE webhook_deliveries SET lease_owner = $1, lease_expires_at = $2
         WHERE id IN (
             SELECT id FROM webhook_deliveries
             WHERE state = 'pending' AND next_attempt_at <= $3
               AND (lease_owner IS NULL OR lease_expires_at < $3)
             ORDER BY next_attempt_at LIMIT $4{})
         RETURNING *",
        DB::SKIP_LOCKED
    ))
    .arg(Arg::Text(owner.to_owned()))
    .arg(Arg::Int(micros(lease_until)))
    .arg(Arg::Int(micros(now)))
    .arg(Arg::Int(i64::from(limit)))
}
