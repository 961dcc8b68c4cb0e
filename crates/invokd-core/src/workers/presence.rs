//! Workers' presence: who each worker is, what it runs, when it was last seen, and how its
//! jobs ended, as the admin API and the metrics show it.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};

use crate::ids::WorkerTokenId;

/// What a worker says of itself at each take and heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerPresence {
    /// Its own id, one per process.
    pub id: String,
    pub token_id: WorkerTokenId,
    /// The lease owner its jobs are claimed under.
    pub owner: String,
    pub name: String,
    pub version: Option<String>,
    pub models: Vec<String>,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
}

/// A worker as stored, with its counts.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerRecord {
    pub presence: WorkerPresence,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Jobs it holds now.
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
}
