//! The job and its state machine: QUEUED → IN_PROGRESS → COMPLETED | FAILED | CANCELED.
//!
//! A running job may also go back to QUEUED when its lease expires or its attempt fails with a
//! retryable error. Terminal states are final.

use std::{fmt, str::FromStr, sync::Arc};

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

use crate::ids::{JobId, KeyId};

/// Where a job is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum JobStatus {
    Queued,
    InProgress,
    Completed,
    Failed,
    Canceled,
}

impl JobStatus {
    pub const ALL: [JobStatus; 5] = [
        Self::Queued,
        Self::InProgress,
        Self::Completed,
        Self::Failed,
        Self::Canceled,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
        }
    }

    /// Terminal states never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }

    /// Whether the state machine allows `self → next`.
    pub fn can_become(self, next: JobStatus) -> bool {
        use JobStatus::*;
        matches!(
            (self, next),
            (Queued, InProgress)
                | (Queued, Failed)
                | (Queued, Canceled)
                | (InProgress, Queued)
                | (InProgress, Completed)
                | (InProgress, Failed)
                | (InProgress, Canceled)
        )
    }
}

impl fmt::Display for JobStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A status string that is not one of the five.
#[derive(Debug, thiserror::Error)]
#[error("unknown job status {0:?}")]
pub struct UnknownStatus(pub String);

impl FromStr for JobStatus {
    type Err = UnknownStatus;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        Self::ALL
            .into_iter()
            .find(|st| st.as_str() == s)
            .ok_or_else(|| UnknownStatus(s.to_owned()))
    }
}

/// Why a job failed: a message for people and a stable type for programs
/// (fal's `error_type` vocabulary where one fits).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct JobError {
    pub message: String,
    pub error_type: String,
}

impl JobError {
    pub fn new(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            error_type: error_type.into(),
        }
    }
}

/// Who may currently finish a running job: the worker that claimed it, for this attempt.
/// A finish or heartbeat that does not present the current lease changes nothing (fencing).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Lease {
    pub owner: String,
    pub attempt: u32,
    pub expires_at: DateTime<Utc>,
}

/// A job as stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Job {
    pub id: JobId,
    pub key_id: KeyId,
    /// The project of the key that submitted it: who may see it.
    pub project: String,
    pub model_id: String,
    /// The validated input with the model's defaults applied, plus any unknown fields. Shared:
    /// a job is copied on every read from the store's memory, its input and output are not.
    pub input: Arc<Map<String, Value>>,
    pub tags: Vec<(String, String)>,
    pub status: JobStatus,
    /// Lower runs first.
    pub priority: i32,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    /// How many times the job has been claimed.
    pub attempt: u32,
    pub max_attempts: u32,
    pub lease: Option<Lease>,
    pub output: Option<Arc<Map<String, Value>>>,
    pub error: Option<JobError>,
    /// If it has not started by then, it fails with `request_timeout` and never runs.
    pub start_deadline: Option<DateTime<Utc>>,
    /// A cancel was asked for while it ran.
    pub cancel_requested: bool,
    /// Where to POST the result when the job ends.
    pub webhook_url: Option<String>,
    /// The longest one run may take, if the client chose it.
    pub run_timeout: Option<std::time::Duration>,
    /// When retention removed the output and its files.
    pub expired_at: Option<DateTime<Utc>>,
    /// The job's request at an upstream provider (fal), once a run has started submitting it:
    /// a later attempt resumes it instead of submitting again.
    pub upstream: Option<UpstreamRef>,
}

/// A job's request at an upstream provider, stored before and after the submission so that no
/// restart ever submits the same job twice.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct UpstreamRef {
    /// The provider's name, e.g. `fal`.
    pub provider: String,
    /// The upstream's id of the request. `None` marks a submission that was started but whose
    /// answer was never stored: whether the upstream took it is unknown.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub request_id: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub status_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub response_url: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cancel_url: Option<String>,
}

/// What the service hands to the store to insert: ids and timestamps are made by the service,
/// and the store persists them unchanged.
#[derive(Debug, Clone, PartialEq)]
pub struct NewJob {
    pub id: JobId,
    pub key_id: KeyId,
    pub project: String,
    pub model_id: String,
    pub input: Arc<Map<String, Value>>,
    pub tags: Vec<(String, String)>,
    pub priority: i32,
    pub created_at: DateTime<Utc>,
    pub max_attempts: u32,
    pub start_deadline: Option<DateTime<Utc>>,
    pub webhook_url: Option<String>,
    pub run_timeout: Option<std::time::Duration>,
}

impl NewJob {
    /// The job as it stands once inserted: queued and never attempted.
    pub fn queued(self) -> Job {
        Job {
            id: self.id,
            key_id: self.key_id,
            project: self.project,
            model_id: self.model_id,
            input: self.input,
            tags: self.tags,
            status: JobStatus::Queued,
            priority: self.priority,
            created_at: self.created_at,
            started_at: None,
            completed_at: None,
            attempt: 0,
            max_attempts: self.max_attempts,
            lease: None,
            output: None,
            error: None,
            start_deadline: self.start_deadline,
            cancel_requested: false,
            webhook_url: self.webhook_url,
            run_timeout: self.run_timeout,
            expired_at: None,
            upstream: None,
        }
    }
}

/// How a run ended, as the lease holder reports it.
#[derive(Debug, Clone, PartialEq)]
pub enum Outcome {
    Completed(Map<String, Value>),
    Failed(JobError),
    /// Stopped because the client cancelled it.
    Canceled(JobError),
}

/// What a cancel request did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CancelOutcome {
    /// It was queued and is now CANCELED; it never runs.
    Canceled,
    /// It is running; its run is told to stop and it will end CANCELED (or finish first).
    Requested,
    /// It had already ended.
    AlreadyDone,
    /// No such job for this caller.
    NotFound,
}

/// The error a cancelled job carries, in fal's vocabulary.
pub fn cancelled_error() -> JobError {
    JobError::new(
        "client_cancelled",
        "the request was cancelled by the client",
    )
}

/// The error of a job whose start deadline passed while it was queued.
pub fn start_timeout_error() -> JobError {
    JobError::new(
        "request_timeout",
        "the request was not started before its timeout (X-Fal-Request-Timeout)",
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn terminal_states_have_no_way_out() {
        for from in JobStatus::ALL.into_iter().filter(|s| s.is_terminal()) {
            for to in JobStatus::ALL {
                assert!(!from.can_become(to), "{from} -> {to}");
            }
        }
    }

    #[test]
    fn status_strings_round_trip() {
        for s in JobStatus::ALL {
            assert_eq!(s.as_str().parse::<JobStatus>().unwrap(), s);
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
        assert!("DONE".parse::<JobStatus>().is_err());
    }
}
