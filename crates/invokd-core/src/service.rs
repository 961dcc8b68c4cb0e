//! The job service: what both API surfaces call to authenticate, submit and read jobs.
//! It makes ids and timestamps; it knows no HTTP.

use std::{sync::Arc, time::Instant};

use chrono::Utc;
use serde_json::{Map, Value};

use crate::{
    catalog::{Catalog, Model, Violation},
    events::Signals,
    ids::{JobId, KeyId},
    job::{CancelOutcome, Job, NewJob},
    key_cache::KeyCache,
    keys::{KeyHash, KeyRecord},
    provider::LogLine,
    queue_counts::{QueueCounts, Scope},
    queue_positions::QueuePositions,
    store::{IdempotencyKey, Inserted, ListQuery, QueueSlot, Store, StoreError},
};

/// A cursor is the last job of a page: its creation time and id, opaque to clients.
fn encode_cursor(at: chrono::DateTime<Utc>, id: JobId) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD
        .encode(format!("{}:{id}", at.timestamp_micros()))
}

fn decode_cursor(c: &str) -> Result<(chrono::DateTime<Utc>, JobId), ServiceError> {
    use base64::Engine as _;
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(c)
        .map_err(|_| ServiceError::InvalidCursor)?;
    let text = String::from_utf8(raw).map_err(|_| ServiceError::InvalidCursor)?;
    let (micros, id) = text.split_once(':').ok_or(ServiceError::InvalidCursor)?;
    let at = micros
        .parse::<i64>()
        .ok()
        .and_then(chrono::DateTime::from_timestamp_micros)
        .ok_or(ServiceError::InvalidCursor)?;
    Ok((at, id.parse().map_err(|_| ServiceError::InvalidCursor)?))
}

/// Why a service call failed.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ServiceError {
    #[error("missing or invalid access key")]
    Unauthorized,
    #[error("model {0:?} is not in the catalog")]
    UnknownModel(String),
    #[error("input is invalid")]
    InvalidInput(Vec<Violation>),
    #[error("request {0} not found")]
    NotFound(String),
    #[error("idempotency key {0:?} was used with a different request")]
    IdempotencyKeyReused(String),
    #[error("invalid cursor")]
    InvalidCursor,
    /// The job's tags break a limit (their number or a length).
    #[error("{0}")]
    InvalidTags(String),
    #[error("{0}")]
    QueueFull(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The caller, once its key is verified.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub key_id: KeyId,
    /// The key's project: the jobs the caller may see.
    pub project: Arc<str>,
}

/// A submission, as both surfaces describe it.
#[derive(Debug, Clone, PartialEq)]
pub struct Submission {
    pub model_id: String,
    pub input: Map<String, Value>,
    pub tags: Vec<(String, String)>,
    /// Lower runs first; 0 is normal.
    pub priority: i32,
    /// If the job has not started within this time, it fails and never runs.
    pub start_within: Option<std::time::Duration>,
    /// The client's `Idempotency-Key`: a retried create with the same key and body gives back
    /// the first job.
    pub idempotency_key: Option<String>,
    /// Where to POST the result when the job ends (checked by the caller for reachability).
    pub webhook_url: Option<String>,
    /// The longest one run may take (else the model's limit, else the server's).
    pub run_timeout: Option<std::time::Duration>,
}

impl Submission {
    /// What identifies the request for idempotency: everything the client sent.
    fn fingerprint(&self) -> String {
        use sha2::{Digest, Sha256};
        let canonical = serde_json::json!([
            self.model_id,
            self.input,
            self.tags,
            self.priority,
            self.start_within.map(|d| d.as_millis() as u64),
            self.webhook_url,
            self.run_timeout.map(|d| d.as_millis() as u64),
        ]);
        hex::encode(Sha256::digest(canonical.to_string().as_bytes()))
    }
}

/// A committed submission.
#[derive(Debug, Clone, PartialEq)]
pub struct Submitted {
    pub job: Job,
    /// The job was created by an earlier request with the same idempotency key.
    pub replayed: bool,
}

/// A page of jobs and the cursor of the next page, if there is one.
#[derive(Debug, Clone, PartialEq)]
pub struct Page {
    pub jobs: Vec<Job>,
    pub next_cursor: Option<String>,
}

/// The largest page a list returns.
pub const MAX_PAGE: u32 = 1000;

/// A page of a list stops before this many bytes of jobs (estimated as JSON), even short of its
/// row limit, so that no page is unbounded whatever its jobs hold; one job always fits.
pub const MAX_PAGE_BYTES: usize = 4 * 1024 * 1024;

/// The most tags a job may have.
pub const MAX_TAGS: usize = 50;
/// The longest tag key, in bytes.
pub const MAX_TAG_KEY_BYTES: usize = 128;
/// The longest tag value, in bytes.
pub const MAX_TAG_VALUE_BYTES: usize = 512;

/// Why `tags` break a limit, if they do.
fn tags_problem(tags: &[(String, String)]) -> Option<String> {
    if tags.len() > MAX_TAGS {
        return Some(format!(
            "tags: a job may have at most {MAX_TAGS} tags, got {}",
            tags.len()
        ));
    }
    tags.iter().enumerate().find_map(|(i, (k, v))| {
        if k.len() > MAX_TAG_KEY_BYTES {
            Some(format!(
                "tags[{i}].key: at most {MAX_TAG_KEY_BYTES} bytes, got {}",
                k.len()
            ))
        } else if v.len() > MAX_TAG_VALUE_BYTES {
            Some(format!(
                "tags[{i}].value: at most {MAX_TAG_VALUE_BYTES} bytes, got {}",
                v.len()
            ))
        } else {
            None
        }
    })
}

/// About how many bytes `v` takes as JSON (the length of its strings and numbers, and one byte
/// per punctuation mark), without writing it out.
fn json_size(v: &Value) -> usize {
    match v {
        Value::Null | Value::Bool(_) => 5,
        Value::Number(_) => 20,
        Value::String(s) => s.len() + 2,
        Value::Array(items) => 2 + items.iter().map(|i| json_size(i) + 1).sum::<usize>(),
        Value::Object(map) => map_size(map),
    }
}

fn map_size(map: &Map<String, Value>) -> usize {
    2 + map
        .iter()
        .map(|(k, v)| k.len() + 4 + json_size(v))
        .sum::<usize>()
}

/// About how many bytes a job takes in a listing: what it was given and what it made.
fn listed_size(job: &Job) -> usize {
    const FIXED: usize = 512; // ids, times, status, model
    FIXED
        + map_size(&job.input)
        + job.output.as_deref().map_or(0, map_size)
        + job
            .error
            .as_ref()
            .map_or(0, |e| e.message.len() + e.error_type.len())
        + job
            .tags
            .iter()
            .map(|(k, v)| k.len() + v.len() + 24)
            .sum::<usize>()
}

/// fal's `X-Fal-Queue-Priority` values as queue priorities (lower runs first).
pub const PRIORITY_NORMAL: i32 = 0;
pub const PRIORITY_LOW: i32 = 10;

/// Settings of the job service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceConfig {
    /// How many times a job may be claimed before it fails.
    pub max_attempts: u32,
    /// How long an idempotency key is remembered.
    pub idempotency_ttl: std::time::Duration,
    /// Queued jobs one key may have; 0 means no cap.
    pub max_queued_per_key: u64,
    /// Queued jobs in all; 0 means no cap.
    pub max_queue_length: u64,
    /// How long a verified key is trusted without reading the store again (0: always read).
    /// Revoking through this process takes effect at once whatever it is.
    pub key_cache_ttl: std::time::Duration,
}

/// Claims per job before it fails, unless configured otherwise.
pub const DEFAULT_MAX_ATTEMPTS: u32 = 3;

impl Default for ServiceConfig {
    fn default() -> Self {
        Self {
            max_attempts: DEFAULT_MAX_ATTEMPTS,
            idempotency_ttl: std::time::Duration::from_secs(24 * 3600),
            max_queued_per_key: 10_000,
            max_queue_length: 1_000_000,
            key_cache_ttl: std::time::Duration::from_secs(5),
        }
    }
}

/// Submits and reads jobs on behalf of authenticated callers.
#[derive(Clone)]
pub struct JobService {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    signals: Signals,
    config: ServiceConfig,
    keys: Arc<KeyCache>,
    /// What the queue caps are checked against.
    queued: Arc<QueueCounts>,
    /// Copies of deep queues, for the positions shown.
    positions: Arc<QueuePositions>,
}

/// The model a submission names and its input as the job will run with it (mapped, defaults
/// filled in, validated, file inputs checked), or why it cannot run. Touches no store.
pub fn prepare(
    catalog: &Catalog,
    model_id: &str,
    input: Map<String, Value>,
) -> Result<(Arc<Model>, Map<String, Value>), ServiceError> {
    let model = catalog
        .get(model_id)
        .ok_or_else(|| ServiceError::UnknownModel(model_id.to_owned()))?;
    let input = model
        .prepare_input(input)
        .map_err(ServiceError::InvalidInput)?;
    let file_problems = crate::input_files::violations(&input);
    if !file_problems.is_empty() {
        return Err(ServiceError::InvalidInput(file_problems));
    }
    Ok((model.clone(), input))
}

impl JobService {
    /// `signals` connects the service to this process's dispatcher.
    pub fn new(
        store: Arc<dyn Store>,
        catalog: Arc<Catalog>,
        signals: Signals,
        config: ServiceConfig,
    ) -> Self {
        Self {
            keys: Arc::new(KeyCache::new(config.key_cache_ttl)),
            queued: Arc::new(QueueCounts::default()),
            positions: Arc::new(QueuePositions::default()),
            store,
            catalog,
            signals,
            config,
        }
    }

    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    pub fn catalog(&self) -> &Arc<Catalog> {
        &self.catalog
    }

    /// The caller whose key this is; revoked and unknown keys are refused.
    pub async fn authenticate(&self, secret: &str) -> Result<Caller, ServiceError> {
        if secret.is_empty() {
            return Err(ServiceError::Unauthorized);
        }
        let hash = KeyHash::of(secret);
        if let Some(caller) = self.keys.get(&hash) {
            return Ok(caller);
        }
        match self.store.find_key(&hash).await? {
            Some(k) if k.revoked_at.is_none() => {
                let caller = Caller {
                    key_id: k.id,
                    project: Arc::from(k.project.as_str()),
                };
                self.keys.put(hash, caller.clone());
                Ok(caller)
            }
            _ => Err(ServiceError::Unauthorized),
        }
    }

    /// Validates the submission against the catalog and stores it as a QUEUED job.
    /// When this returns `Ok`, the job is committed.
    pub async fn submit(
        &self,
        caller: &Caller,
        sub: Submission,
    ) -> Result<Submitted, ServiceError> {
        if let Some(why) = tags_problem(&sub.tags) {
            return Err(ServiceError::InvalidTags(why));
        }
        let fingerprint = sub.idempotency_key.as_ref().map(|_| sub.fingerprint());
        let (model, input) = prepare(&self.catalog, &sub.model_id, sub.input)?;
        self.check_queue_caps(caller).await?;
        let created_at = Utc::now();
        let start_deadline = sub
            .start_within
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| created_at.checked_add_signed(d));
        let new = NewJob {
            id: JobId::generate(),
            key_id: caller.key_id,
            project: caller.project.to_string(),
            model_id: model.id.clone(),
            input: input.into(),
            tags: sub.tags,
            priority: sub.priority,
            created_at,
            max_attempts: self.config.max_attempts,
            start_deadline,
            webhook_url: sub.webhook_url,
            run_timeout: sub.run_timeout,
        };
        let job = match (sub.idempotency_key, fingerprint) {
            (Some(key), Some(body_hash)) => {
                let ttl = chrono::Duration::from_std(self.config.idempotency_ttl)
                    .unwrap_or(chrono::Duration::days(1));
                let idem = IdempotencyKey {
                    key: key.clone(),
                    body_hash,
                    not_before: created_at - ttl,
                };
                match self.store.insert_job_idempotent(new, idem).await? {
                    Inserted::New(job) => job,
                    Inserted::Replayed(job) => {
                        tracing::info!(job_id = %job.id, "idempotent replay");
                        return Ok(Submitted {
                            job,
                            replayed: true,
                        });
                    }
                    Inserted::KeyReused => return Err(ServiceError::IdempotencyKeyReused(key)),
                }
            }
            _ => self.store.insert_job(new).await?,
        };
        self.queued.added(caller.key_id);
        self.signals.job_queued();
        self.signals.events.notify(job.id);
        tracing::info!(job_id = %job.id, model = %job.model_id, "job queued");
        Ok(Submitted {
            job,
            replayed: false,
        })
    }

    /// Refuses a submission that would pass the caller's or the server's queue cap. The caps
    /// are soft: concurrent submissions may pass them by a few jobs, and so may what joins the
    /// queue otherwise within `queue_counts::FRESH_FOR` (retries, other replicas' submissions).
    async fn check_queue_caps(&self, caller: &Caller) -> Result<(), ServiceError> {
        let per_key = self.config.max_queued_per_key;
        if self
            .queued_reaches(Scope::Key(caller.key_id), per_key)
            .await?
        {
            return Err(ServiceError::QueueFull(format!(
                "this key already has {per_key} queued jobs, its limit; wait for some to start"
            )));
        }
        let total = self.config.max_queue_length;
        if self.queued_reaches(Scope::All, total).await? {
            return Err(ServiceError::QueueFull(format!(
                "the queue is full ({total} jobs); try again later"
            )));
        }
        Ok(())
    }

    /// Whether the jobs queued in `scope` have reached `cap` (0: no cap). The store is read only
    /// when the last reading is stale or its bound reaches the cap.
    async fn queued_reaches(&self, scope: Scope, cap: u64) -> Result<bool, ServiceError> {
        if cap == 0 {
            return Ok(false);
        }
        let now = Instant::now();
        if self.queued.bound(scope, now).is_some_and(|n| n < cap) {
            return Ok(false);
        }
        let mark = self.queued.before_reading(scope, now);
        let n = match self.store.queued_count(scope.key()).await {
            Ok(n) => n,
            Err(e) => {
                self.queued.abandon(scope);
                return Err(e.into());
            }
        };
        self.queued.record(scope, n, mark, now);
        Ok(n >= cap)
    }

    /// A page of the caller's jobs, newest first. `cursor` is the previous page's `next_cursor`.
    pub async fn list(
        &self,
        caller: &Caller,
        mut q: ListQuery,
        cursor: Option<&str>,
    ) -> Result<Page, ServiceError> {
        q.project = Some(caller.project.to_string());
        q.limit = q.limit.clamp(1, MAX_PAGE);
        q.after = cursor.map(decode_cursor).transpose()?;
        let limit = q.limit as usize;
        q.limit += 1; // one more tells whether there is a next page
        let mut jobs = self.store.list_jobs(&q).await?;
        let mut bytes = 0;
        let fit = jobs
            .iter()
            .position(|j| {
                bytes += listed_size(j);
                bytes > MAX_PAGE_BYTES
            })
            .map_or(jobs.len(), |i| i.max(1));
        let next_cursor = if jobs.len() > limit.min(fit) {
            jobs.truncate(limit.min(fit));
            jobs.last().map(|j| encode_cursor(j.created_at, j.id))
        } else {
            None
        };
        Ok(Page { jobs, next_cursor })
    }

    /// Waits until the job is terminal or `timeout` passes, and returns it as it is then.
    pub async fn wait(
        &self,
        caller: &Caller,
        id: &str,
        timeout: std::time::Duration,
    ) -> Result<Job, ServiceError> {
        let mut news = self.signals.events.subscribe();
        let deadline = tokio::time::Instant::now() + timeout;
        loop {
            let job = self.get(caller, id).await?;
            if job.status.is_terminal() {
                return Ok(job);
            }
            // Changes made by another process arrive by polling, once a second.
            let tick =
                (deadline - tokio::time::Instant::now()).min(std::time::Duration::from_secs(1));
            if tick.is_zero() {
                return Ok(job);
            }
            let _ = tokio::time::timeout(tick, async {
                loop {
                    match news.recv().await {
                        Ok(changed) if changed == job.id => return,
                        Ok(_) => {}
                        Err(tokio::sync::broadcast::error::RecvError::Lagged(_)) => return,
                        Err(tokio::sync::broadcast::error::RecvError::Closed) => {
                            std::future::pending::<()>().await
                        }
                    }
                }
            })
            .await;
        }
    }

    /// The caller's job with this id. Another caller's job is "not found", so ids leak nothing.
    pub async fn get(&self, caller: &Caller, id: &str) -> Result<Job, ServiceError> {
        let not_found = || ServiceError::NotFound(id.to_owned());
        let job_id: JobId = id.parse().map_err(|_| not_found())?;
        self.store
            .get_job(job_id, Some(&caller.project))
            .await?
            .ok_or_else(not_found)
    }

    /// Creates an access key in `project` (a new project of its own when `None`); the secret
    /// is returned this once and stored only as a hash.
    pub async fn create_key(
        &self,
        name: &str,
        project: Option<&str>,
    ) -> Result<(KeyRecord, String), ServiceError> {
        let secret = crate::keys::generate_secret();
        let record = KeyRecord::for_secret(&secret, name, project, Utc::now());
        self.store.insert_key(record.clone()).await?;
        tracing::info!(key_id = %record.id, name, "access key created");
        Ok((record, secret))
    }

    pub async fn list_keys(&self) -> Result<Vec<KeyRecord>, ServiceError> {
        Ok(self.store.list_keys().await?)
    }

    /// Revokes a key: every request with it fails from now on.
    pub async fn revoke_key(&self, id: &str) -> Result<KeyRecord, ServiceError> {
        let not_found = || ServiceError::NotFound(id.to_owned());
        let key_id: KeyId = id.parse().map_err(|_| not_found())?;
        if !self.store.revoke_key(key_id, Utc::now()).await? {
            return Err(not_found());
        }
        self.keys.forget(key_id);
        tracing::info!(key_id = %key_id, "access key revoked");
        self.store
            .list_keys()
            .await?
            .into_iter()
            .find(|k| k.id == key_id)
            .ok_or_else(not_found)
    }

    /// Cancels the caller's job: a queued one never runs; a running one is told to stop.
    pub async fn cancel(&self, caller: &Caller, id: &str) -> Result<CancelOutcome, ServiceError> {
        let Ok(job_id) = id.parse::<JobId>() else {
            return Ok(CancelOutcome::NotFound);
        };
        let outcome = self
            .store
            .cancel(job_id, Some(&caller.project), Utc::now())
            .await?;
        if outcome == CancelOutcome::Requested {
            self.signals.running.cancel(job_id);
        }
        self.signals.events.notify(job_id);
        tracing::info!(job_id = %job_id, ?outcome, "cancel");
        Ok(outcome)
    }

    /// How many queued jobs run before this one; `None` unless it is queued. In a deep queue,
    /// as of a copy of the queue up to a few seconds old (see `queue_positions`).
    pub async fn queue_position(&self, job: &Job) -> Result<Option<u64>, ServiceError> {
        if job.status != crate::JobStatus::Queued {
            return Ok(None);
        }
        let now = Instant::now();
        let (rank, counted) = match self
            .positions
            .look_up(&job.model_id, QueueSlot::of(job), now)
        {
            Some(rank) => (rank, None),
            None => {
                let rank = self.store.queue_position(job).await?;
                (rank, Some(rank))
            }
        };
        if let Some(reading) = self.positions.begin_reading(&job.model_id, counted, now) {
            let store = self.store.clone();
            tokio::spawn(async move {
                let model = reading.model_id().to_owned();
                let began = Instant::now();
                match reading.run(store.queue_order(&model)).await {
                    Ok(jobs) => {
                        let took = began.elapsed();
                        tracing::debug!(model, jobs, ?took, "read the queue's order");
                    }
                    Err(e) => tracing::warn!(model, error = %e, "reading the queue's order"),
                }
            });
        }
        Ok(Some(rank))
    }

    /// The log lines of the caller's job.
    pub async fn logs(&self, caller: &Caller, id: &str) -> Result<Vec<LogLine>, ServiceError> {
        let job = self.get(caller, id).await?;
        Ok(self.store.logs(job.id).await?)
    }

    /// The log lines of a job the caller already read through this service (so one of its own),
    /// without reading the job again.
    pub async fn logs_of(&self, job: &Job) -> Result<Vec<LogLine>, ServiceError> {
        Ok(self.store.logs(job.id).await?)
    }

    /// A job read again by a reader that holds it, as it is now; scoped to the job's own
    /// project, so a reader keeps to the jobs it was let see. `None` once it is gone.
    pub async fn reread(&self, id: JobId, project: &str) -> Result<Option<Job>, ServiceError> {
        Ok(self.store.get_job(id, Some(project)).await?)
    }

    /// The webhook delivery of a job the caller already read through this service, if it has one.
    pub async fn delivery_of(
        &self,
        job: &Job,
    ) -> Result<Option<crate::store::Delivery>, ServiceError> {
        Ok(self.store.delivery_of(job.id).await?)
    }

    /// The job a signed file URL names, whichever project it is in: the URL's signature is the
    /// caller's right to it, so this is for the file route only, after the signature is checked.
    pub async fn job_of_file(&self, id: JobId) -> Result<Option<Job>, ServiceError> {
        Ok(self.store.get_job(id, None).await?)
    }

    /// Whether the store answers (for readiness checks).
    pub async fn check_store(&self) -> Result<(), ServiceError> {
        Ok(self.store.check().await?)
    }

    /// Queued and running jobs and the oldest queued job's age, by model, as the store counts
    /// them now.
    pub async fn queue_stats(&self) -> Result<Vec<crate::store::QueueStats>, ServiceError> {
        Ok(self.store.queue_stats().await?)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tags(n: usize, key: usize, value: usize) -> Vec<(String, String)> {
        (0..n)
            .map(|_| ("k".repeat(key), "v".repeat(value)))
            .collect()
    }

    #[test]
    fn tags_are_held_to_their_number_and_lengths() {
        assert_eq!(
            tags_problem(&tags(MAX_TAGS, MAX_TAG_KEY_BYTES, MAX_TAG_VALUE_BYTES)),
            None
        );
        let why = tags_problem(&tags(MAX_TAGS + 1, 1, 1)).unwrap_or_default();
        assert!(why.starts_with("tags:"), "{why}");
        let why = tags_problem(&tags(2, MAX_TAG_KEY_BYTES + 1, 1)).unwrap_or_default();
        assert!(why.starts_with("tags[0].key"), "{why}");
        let why = tags_problem(&tags(2, 1, MAX_TAG_VALUE_BYTES + 1)).unwrap_or_default();
        assert!(why.starts_with("tags[0].value"), "{why}");
    }

    #[test]
    fn json_sizes_are_close_to_the_written_length() {
        let v = serde_json::json!({"prompt": "x".repeat(1000), "list": [1, 2, {"a": null}]});
        let written = v.to_string().len();
        let estimate = json_size(&v);
        assert!(
            estimate >= written && estimate < written + 100,
            "{estimate} for {written}"
        );
    }
}
