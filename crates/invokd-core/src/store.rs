//! The store interface: jobs and keys, with leases that fence who may finish a running job,
//! and notices of changes for the stores that can hear them.

use std::collections::BTreeMap;

use async_trait::async_trait;
use chrono::{DateTime, Utc};

use crate::{
    ids::{JobId, KeyId, WorkerTokenId},
    job::{CancelOutcome, Job, JobError, Lease, NewJob, Outcome, UpstreamRef},
    keys::{KeyHash, KeyRecord},
    provider::LogLine,
    workers::{WorkerPresence, WorkerRecord, WorkerToken},
};

/// A store failure. Only the store knows SQL; everyone else sees this.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StoreError {
    #[error("a record with this id already exists")]
    Conflict,
    #[error("store is unavailable: {0}")]
    Unavailable(String),
    #[error("stored data is corrupt: {0}")]
    Corrupt(String),
}

/// Which running jobs `requeue_stale` takes back.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stale<'a> {
    /// Jobs whose lease has expired.
    Expired,
    /// Every running job: only safe when no other process can hold a lease.
    AllRunning,
    /// Jobs whose lease owner starts with `owner_prefix`, expired or not: the leases of the
    /// earlier lives of one process (start-up of the embedded store, whose data directory's
    /// lock says none of them runs any more), not those of other holders such as remote
    /// workers.
    HeldBy { owner_prefix: &'a str },
}

/// What `requeue_stale` did.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Requeued {
    /// Jobs put back in the queue for another attempt.
    pub requeued: u64,
    /// Jobs that had used their last attempt and failed.
    pub failed: u64,
}

/// What a heartbeat found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Beat {
    /// The lease is still ours and was extended.
    Held,
    /// The lease is still ours and was extended, but a cancel was asked for: stop the run.
    CancelRequested,
    /// The lease is gone (requeued, finished or cancelled elsewhere): stop at once.
    Lost,
}

/// Which of a caller's jobs to list, newest first.
#[derive(Debug, Clone, Default)]
pub struct ListQuery {
    /// Only this project's jobs.
    pub project: Option<String>,
    pub status: Option<crate::JobStatus>,
    pub model_id: Option<String>,
    pub tag: Option<(String, String)>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// Start after this job (exclusive), in the newest-first order: the previous page's last.
    pub after: Option<(DateTime<Utc>, JobId)>,
    pub limit: u32,
}

/// An `Idempotency-Key` with the hash of the request it came with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct IdempotencyKey {
    pub key: String,
    pub body_hash: String,
    /// Records older than this are forgotten, and the key can be used again.
    pub not_before: DateTime<Utc>,
}

/// What an insert with an idempotency key did.
#[derive(Debug, Clone, PartialEq)]
pub enum Inserted {
    /// A new job.
    New(Job),
    /// The key was used before with the same body: the first job.
    Replayed(Job),
    /// The key was used before with another body.
    KeyReused,
}

/// Where a webhook delivery is.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum DeliveryState {
    Pending,
    Delivered,
    Failed,
}

impl DeliveryState {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Pending => "pending",
            Self::Delivered => "delivered",
            Self::Failed => "failed",
        }
    }
}

/// One try to deliver a webhook.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct DeliveryAttempt {
    pub at: DateTime<Utc>,
    /// The receiver's status code, if it answered.
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

/// A job's webhook delivery, as the job shows it.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct Delivery {
    pub id: i64,
    pub job_id: JobId,
    pub url: String,
    pub state: DeliveryState,
    pub created_at: DateTime<Utc>,
    pub attempts: Vec<DeliveryAttempt>,
}

/// What happens to a delivery after an attempt.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AfterAttempt {
    Delivered,
    RetryAt(DateTime<Utc>),
    GiveUp,
}

/// Webhook deliveries: an outbox filled when jobs end, worked through under leases.
#[async_trait]
pub trait DeliveryRepo: Send + Sync {
    /// Up to `limit` pending deliveries that are due, leased to `owner` until `lease_until`.
    async fn claim_deliveries(
        &self,
        owner: &str,
        limit: u32,
        now: DateTime<Utc>,
        lease_until: DateTime<Utc>,
    ) -> Result<Vec<Delivery>, StoreError>;

    /// Records an attempt and what follows it; `false` if the lease was lost meanwhile.
    async fn record_attempt(
        &self,
        id: i64,
        owner: &str,
        attempt: DeliveryAttempt,
        then: AfterAttempt,
    ) -> Result<bool, StoreError>;

    /// The job's delivery with its attempts, if it has one.
    async fn delivery_of(&self, job: JobId) -> Result<Option<Delivery>, StoreError>;
}

/// A queued job's place in its model's queue: jobs run in this order (lower priority values
/// first, then the oldest, then by id), as a claim takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct QueueSlot {
    pub priority: i32,
    /// Unix microseconds, as the store keeps them.
    pub created_at: i64,
    pub id: JobId,
}

impl QueueSlot {
    pub fn of(job: &Job) -> Self {
        Self {
            priority: job.priority,
            created_at: job.created_at.timestamp_micros(),
            id: job.id,
        }
    }
}

/// The queue of one model right now.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct QueueStats {
    pub model_id: String,
    pub queued: u64,
    pub running: u64,
    /// When the oldest queued job was created.
    pub oldest_queued: Option<DateTime<Utc>>,
}

/// What a claim asks for.
#[derive(Debug, Clone)]
pub struct ClaimRequest<'a> {
    /// Identifies whoever will hold the jobs (a dispatcher of a process, or a remote worker);
    /// it is recorded as the lease owner.
    pub owner: &'a str,
    /// At most this many jobs.
    pub limit: u32,
    /// How many more jobs of each model may start now; a model that is absent may start
    /// `default_capacity`. A model at 0 is skipped.
    pub capacity: &'a BTreeMap<String, u32>,
    pub default_capacity: u32,
    pub now: DateTime<Utc>,
    pub lease_until: DateTime<Utc>,
}

/// Jobs: insert, read, claim with a lease, heartbeat, finish (fenced), requeue stale leases.
#[async_trait]
pub trait JobRepo: Send + Sync {
    /// Inserts a QUEUED job. When it returns, the job is committed durably.
    async fn insert_job(&self, job: NewJob) -> Result<Job, StoreError>;

    /// Inserts a QUEUED job unless `idem` names a key already used (within its window) by the
    /// same caller: then the first job comes back, or `KeyReused` if the body differed. The
    /// check and the insert are one transaction, so concurrent creates make one job.
    async fn insert_job_idempotent(
        &self,
        job: NewJob,
        idem: IdempotencyKey,
    ) -> Result<Inserted, StoreError>;

    /// A page of jobs, newest first.
    async fn list_jobs(&self, q: &ListQuery) -> Result<Vec<Job>, StoreError>;

    /// The job with this id, if it belongs to `project` (or to anyone when it is `None`).
    async fn get_job(&self, id: JobId, project: Option<&str>) -> Result<Option<Job>, StoreError>;

    /// Claims up to `limit` QUEUED jobs, highest priority then oldest first, never more of a
    /// model than its capacity, and makes them IN_PROGRESS under a new lease owned by `owner`.
    /// Jobs whose start deadline has passed are never claimed.
    async fn claim_jobs(&self, req: ClaimRequest<'_>) -> Result<Vec<Job>, StoreError>;

    /// Extends a lease, and tells the holder whether to go on.
    async fn heartbeat(
        &self,
        id: JobId,
        lease: &Lease,
        until: DateTime<Utc>,
    ) -> Result<Beat, StoreError>;

    /// Ends a run. Only the holder of the current lease can finish a job; `false` means the
    /// lease was lost and nothing changed.
    async fn finish(
        &self,
        id: JobId,
        lease: &Lease,
        outcome: Outcome,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError> {
        self.finish_with_logs(id, lease, outcome, now, &[]).await
    }

    /// Ends a run as `finish` does, appending the run's last log lines in the same commit: a
    /// job is never seen finished with its log incomplete. The lines are stored whether or not
    /// the lease is still held (as `append_logs` would).
    async fn finish_with_logs(
        &self,
        id: JobId,
        lease: &Lease,
        outcome: Outcome,
        now: DateTime<Utc>,
        logs: &[LogLine],
    ) -> Result<bool, StoreError>;

    /// Gives a run back to the queue (a retryable failure), or fails it when it has used its
    /// last attempt, or cancels it when a cancel was asked for. Fenced like `finish`.
    async fn release(
        &self,
        id: JobId,
        lease: &Lease,
        error: JobError,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Gives a run back to the queue without counting its attempt (the upstream was unavailable,
    /// the job not at fault), or cancels it when a cancel was asked for. Fenced like `finish`.
    async fn give_back(
        &self,
        id: JobId,
        lease: &Lease,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;

    /// Stores (or clears, with `None`) the job's upstream reference, only if `lease` is still
    /// the current one; `false` means the lease was lost and nothing changed. It is durable when
    /// this returns: the provider submits upstream only after it.
    async fn set_upstream(
        &self,
        id: JobId,
        lease: &Lease,
        upstream: Option<&UpstreamRef>,
    ) -> Result<bool, StoreError>;

    /// Takes back running jobs whose holder is gone: QUEUED again, FAILED when no attempt is
    /// left, CANCELED when a cancel was asked for. A job with an upstream request id goes back
    /// to the queue whatever its attempts: it is still running upstream and is resumed, not
    /// failed.
    async fn requeue_stale(
        &self,
        which: Stale<'_>,
        now: DateTime<Utc>,
    ) -> Result<Requeued, StoreError>;

    /// Fails every QUEUED job whose start deadline is before `now`; returns how many.
    async fn expire_deadlines(&self, now: DateTime<Utc>) -> Result<u64, StoreError>;

    /// Cancels the caller's job: a queued one at once, a running one by request.
    async fn cancel(
        &self,
        id: JobId,
        project: Option<&str>,
        now: DateTime<Utc>,
    ) -> Result<CancelOutcome, StoreError>;

    /// How many queued jobs of the same model run before this one (0: it is next).
    async fn queue_position(&self, job: &Job) -> Result<u64, StoreError>;

    /// The places of a model's queued jobs, in the order they run.
    async fn queue_order(&self, model_id: &str) -> Result<Vec<QueueSlot>, StoreError>;

    /// Up to `limit` ended jobs whose output is not yet expired and that ended before `before`.
    async fn jobs_to_expire(
        &self,
        before: DateTime<Utc>,
        limit: u32,
    ) -> Result<Vec<JobId>, StoreError>;

    /// Removes the job's output and marks it expired (its files are deleted by the caller).
    async fn mark_expired(&self, id: JobId, now: DateTime<Utc>) -> Result<(), StoreError>;

    /// Queued jobs of one key, or of everyone.
    async fn queued_count(&self, key_id: Option<KeyId>) -> Result<u64, StoreError>;

    /// Queued and running jobs per model (models with neither are left out).
    async fn queue_stats(&self) -> Result<Vec<QueueStats>, StoreError>;

    /// Appends log lines to a job.
    async fn append_logs(&self, id: JobId, lines: &[LogLine]) -> Result<(), StoreError>;

    /// A job's log lines, oldest first.
    async fn logs(&self, id: JobId) -> Result<Vec<LogLine>, StoreError>;
}

/// Access keys, stored hashed.
#[async_trait]
pub trait KeyRepo: Send + Sync {
    async fn insert_key(&self, key: KeyRecord) -> Result<(), StoreError>;
    /// The key with this hash, revoked or not.
    async fn find_key(&self, hash: &KeyHash) -> Result<Option<KeyRecord>, StoreError>;
    async fn count_keys(&self) -> Result<u64, StoreError>;
    /// Every key, newest first.
    async fn list_keys(&self) -> Result<Vec<KeyRecord>, StoreError>;
    /// Revokes a key; `false` if there is no such key. Revoking twice keeps the first time.
    async fn revoke_key(&self, id: KeyId, now: DateTime<Utc>) -> Result<bool, StoreError>;
}

/// Worker tokens, stored hashed, and workers' presence.
#[async_trait]
pub trait WorkerRepo: Send + Sync {
    async fn insert_worker_token(&self, token: WorkerToken) -> Result<(), StoreError>;
    /// The token with this hash, revoked or not.
    async fn find_worker_token(&self, hash: &KeyHash) -> Result<Option<WorkerToken>, StoreError>;
    /// Every token, newest first.
    async fn list_worker_tokens(&self) -> Result<Vec<WorkerToken>, StoreError>;
    /// Revokes a token; `false` if there is no such token. Revoking twice keeps the first time.
    async fn revoke_worker_token(
        &self,
        id: WorkerTokenId,
        now: DateTime<Utc>,
    ) -> Result<bool, StoreError>;
    /// Records that the worker was seen `now`, saying this of itself.
    async fn record_worker(&self, w: &WorkerPresence, now: DateTime<Utc>)
    -> Result<(), StoreError>;
    /// Counts one job of the worker as ended, completed or not.
    async fn count_worker_job(&self, worker_id: &str, completed: bool) -> Result<(), StoreError>;
    /// The workers seen since `since`, by name, with the jobs each holds now.
    async fn list_workers(&self, since: DateTime<Utc>) -> Result<Vec<WorkerRecord>, StoreError>;
}

/// News from the store that something changed, whichever process changed it, so waiters
/// (dispatchers, SSE streams) wake at once instead of at their next poll.
///
/// A hint, never the truth: a notice may be late, repeated or lost (a dropped connection, a
/// receiver that lagged), so waiters still read the store, and still poll it slowly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreNotice {
    /// A job of this model entered the queue (a new one, or one handed back): claim now.
    Queued { model_id: String },
    /// This job changed: its status or a cancel request. Re-read it.
    Changed(JobId),
    /// This job has new log lines; its state is as it was.
    LogLines(JobId),
}

/// Everything the server needs from a store.
#[async_trait]
pub trait Store: JobRepo + KeyRepo + DeliveryRepo + WorkerRepo + 'static {
    /// Whether the store answers.
    async fn check(&self) -> Result<(), StoreError>;

    /// The value kept under `name`, storing `value` first if there is none yet; `true` when it
    /// was stored by this call. Every process sharing the store reads the same value, so the first
    /// replica to start sets the secrets all of them use (URL signing, webhook key, admin token).
    async fn setting_or_insert(
        &self,
        name: &str,
        value: &str,
    ) -> Result<(String, bool), StoreError>;

    /// News of changes made through any instance of this store, when the store can hear them
    /// (PostgreSQL's LISTEN/NOTIFY). `None` when it cannot, or need not: an embedded store has
    /// one process, whose own in-process events already say everything.
    fn notices(&self) -> Option<tokio::sync::broadcast::Receiver<StoreNotice>> {
        None
    }
}
