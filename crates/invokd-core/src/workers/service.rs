//! What the worker endpoints call: authenticate a token, take jobs (a long poll over the same
//! claim as the dispatcher's), heartbeat held jobs with their log lines and progress, store
//! files, pass partial outputs to readers, and end attempts through the lifecycle, each call
//! about a job fenced by its lease. It knows no HTTP.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde_json::{Map, Value};

use super::{
    ModelPatterns, OutputProblem, WorkerLease, WorkerPresence, WorkerRecord, WorkerToken,
    check_output, check_references, owner_for,
};
use crate::{
    Job, JobStatus,
    blob::{BLOB_SCHEME, BlobError, BlobStore, content_type_for, validate_key},
    catalog::{Catalog, Model},
    ids::{JobId, WorkerTokenId},
    job::Lease,
    keys::KeyHash,
    lifecycle::{Action, ClaimRoom, Ended, Lifecycle, RunEnd},
    provider::{LogLine, ProviderError, Retry, RunOutput},
    run_updates::{Opened, Progress, RunUpdate},
    store::{Beat, Store, StoreError},
};

/// Why a worker's call is refused.
#[derive(Debug, thiserror::Error)]
pub enum WorkerError {
    #[error("missing, unknown or revoked worker token")]
    Unauthorized,
    #[error("{0}")]
    Forbidden(String),
    #[error("{0}")]
    NotFound(String),
    /// The lease is no longer the job's: the worker drops the job.
    #[error(
        "the lease of job {0} is no longer held: the job was taken back, cancelled or ended; drop it"
    )]
    LeaseLost(JobId),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Output(#[from] OutputProblem),
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error(transparent)]
    Blob(#[from] BlobError),
}

/// What a worker says of itself with each take and heartbeat.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Hello {
    pub id: String,
    pub name: String,
    pub version: Option<String>,
    /// Empty: every model of its token.
    pub models: Vec<String>,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
}

/// A job handed to a worker.
#[derive(Debug, Clone)]
pub struct Taken {
    pub job: Job,
    pub lease: WorkerLease,
    pub lease_expires_at: DateTime<Utc>,
    pub model: Arc<Model>,
}

/// A held job in a heartbeat.
#[derive(Debug, Clone)]
pub struct HeldBeat {
    pub id: String,
    pub lease: String,
    pub logs: Vec<LogLine>,
    pub progress: Option<Progress>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Beats {
    pub until: Option<DateTime<Utc>>,
    pub cancel: Vec<JobId>,
    pub lost: Vec<JobId>,
}

/// A job a call's lease holds, checked.
#[derive(Debug, Clone)]
pub struct HeldRun {
    pub job: Job,
    pub lease: Lease,
    pub model: Arc<Model>,
    /// The worker that holds it, for its counts.
    worker_id: String,
}

/// The service's settings.
#[derive(Debug, Clone)]
pub struct WorkerServiceConfig {
    /// The largest output file a worker may store.
    pub max_file_bytes: u64,
    /// How long a presigned upload URL is good for.
    pub presign_ttl: Duration,
}

/// How long a take waits between looks at the queue when no news came (news may be lost).
const TAKE_POLL: Duration = Duration::from_secs(1);
/// How stale a worker's recorded last-seen time may grow while it keeps calling.
const PRESENCE_REFRESH: Duration = Duration::from_secs(10);
/// A worker not heard from for this long no longer counts as connected.
pub const CONNECTED_WITHIN: Duration = Duration::from_secs(90);

/// The worker endpoints' domain.
#[derive(Clone)]
pub struct WorkerService {
    pub(super) store: Arc<dyn Store>,
    lifecycle: Lifecycle,
    catalog: Arc<Catalog>,
    blobs: Arc<dyn BlobStore>,
    /// Whether a model is routed to workers: only those are ever handed out.
    routed: Arc<dyn Fn(&str) -> bool + Send + Sync>,
    config: WorkerServiceConfig,
    /// The updates channels of jobs held by workers that talk to this process, so that their
    /// progress and partial outputs reach this process's readers.
    remote: Arc<Mutex<HashMap<JobId, RemoteRun>>>,
    /// What each worker last said of itself through this process, and when it was written.
    seen: Arc<Mutex<HashMap<String, (WorkerPresence, Instant)>>>,
    /// What RunPod's workers hold, for their stop channels.
    pub(super) runpod: Arc<Mutex<super::runpod::RunpodPods>>,
}

struct RemoteRun {
    _open: Opened,
    touched: Instant,
}

pub(super) fn valid_worker_id(id: &str) -> bool {
    (1..=64).contains(&id.len())
        && id
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

/// A file name a worker may store: `[A-Za-z0-9._-]`, 1-128 characters, with an extension.
pub fn valid_file_name(name: &str) -> bool {
    (1..=128).contains(&name.len())
        && !name.starts_with('.')
        && name.contains('.')
        && !name.ends_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"._-".contains(&b))
}

impl WorkerService {
    pub fn new(
        lifecycle: Lifecycle,
        catalog: Arc<Catalog>,
        blobs: Arc<dyn BlobStore>,
        routed: Arc<dyn Fn(&str) -> bool + Send + Sync>,
        config: WorkerServiceConfig,
    ) -> Self {
        Self {
            store: lifecycle.store().clone(),
            lifecycle,
            catalog,
            blobs,
            routed,
            config,
            remote: Arc::default(),
            seen: Arc::default(),
            runpod: Arc::default(),
        }
    }

    pub fn config(&self) -> &WorkerServiceConfig {
        &self.config
    }

    pub fn heartbeat_every(&self) -> Duration {
        self.lifecycle.heartbeat_every()
    }

    /// Whether the blob store hands out presigned uploads.
    pub fn presigns(&self) -> bool {
        self.blobs
            .presigned_put_url("probe/0/probe.bin", Duration::from_secs(1))
            .is_some()
    }

    /// The token with this secret, unless unknown or revoked.
    pub async fn authenticate(&self, secret: &str) -> Result<WorkerToken, WorkerError> {
        if !secret.starts_with(super::TOKEN_PREFIX) {
            return Err(WorkerError::Unauthorized);
        }
        match self.store.find_worker_token(&KeyHash::of(secret)).await? {
            Some(t) if t.revoked_at.is_none() => Ok(t),
            _ => Err(WorkerError::Unauthorized),
        }
    }

    /// Checks what the worker says of itself against its token and records it as seen.
    async fn greet(
        &self,
        token: &WorkerToken,
        hello: Hello,
    ) -> Result<WorkerPresence, WorkerError> {
        if !valid_worker_id(&hello.id) {
            return Err(WorkerError::Invalid(
                "worker.id: must be 1 to 64 characters of A-Z, a-z, 0-9, '.', '_' and '-'".into(),
            ));
        }
        let name = hello.name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(WorkerError::Invalid(
                "worker.name: must be 1 to 200 characters".into(),
            ));
        }
        if !(1..=1024).contains(&hello.slots) {
            return Err(WorkerError::Invalid(
                "worker.slots: must be 1 to 1024".into(),
            ));
        }
        if hello.version.as_ref().is_some_and(|v| v.len() > 200) {
            return Err(WorkerError::Invalid(
                "worker.version: at most 200 characters".into(),
            ));
        }
        if hello.labels.len() > 32
            || hello
                .labels
                .iter()
                .any(|(k, v)| k.is_empty() || k.len() > 100 || v.len() > 200)
        {
            return Err(WorkerError::Invalid(
                "worker.labels: at most 32, keys 1 to 100 characters, values at most 200".into(),
            ));
        }
        let models = if hello.models.is_empty() {
            token.models.clone()
        } else {
            let m = ModelPatterns::parse(&hello.models)
                .map_err(|e| WorkerError::Invalid(format!("worker.{e}")))?;
            if !m.within(&token.models) {
                return Err(WorkerError::Forbidden(format!(
                    "worker.models: {:?} is not within the token's models ({})",
                    hello.models,
                    token.models.as_slice().join(", ")
                )));
            }
            m
        };
        let presence = WorkerPresence {
            owner: owner_for(token.id, &hello.id),
            id: hello.id,
            token_id: token.id,
            name: name.to_owned(),
            version: hello.version,
            models: models.as_slice().to_vec(),
            slots: hello.slots,
            labels: hello.labels,
        };
        if self.should_record(&presence) {
            self.store.record_worker(&presence, Utc::now()).await?;
        }
        Ok(presence)
    }

    /// Whether the worker's presence is worth a write: it says something new of itself, or was
    /// last written through this process a while ago. A busy worker takes and heartbeats many
    /// times a second; its last-seen time needs no more than this precision.
    fn should_record(&self, presence: &WorkerPresence) -> bool {
        let Ok(mut seen) = self.seen.lock() else {
            return true;
        };
        let now = Instant::now();
        if seen.len() > 10_000 {
            seen.retain(|_, (_, at)| now.duration_since(*at) < PRESENCE_REFRESH);
        }
        match seen.get(&presence.id) {
            Some((said, at)) if said == presence && now.duration_since(*at) < PRESENCE_REFRESH => {
                false
            }
            _ => {
                seen.insert(presence.id.clone(), (presence.clone(), now));
                true
            }
        }
    }

    /// Up to `free` jobs of the worker's models, waiting up to `wait` for the first.
    pub async fn take(
        &self,
        token: &WorkerToken,
        hello: Hello,
        free: u32,
        wait: Duration,
    ) -> Result<Vec<Taken>, WorkerError> {
        let presence = self.greet(token, hello).await?;
        let serves = ModelPatterns::from_stored(presence.models.clone());
        let per_model: BTreeMap<String, u32> = self
            .catalog
            .iter()
            .filter(|m| (self.routed)(&m.id) && serves.matches(&m.id))
            .map(|m| (m.id.clone(), free))
            .collect();
        let room = ClaimRoom {
            limit: free,
            per_model,
            default_per_model: 0,
        };
        let deadline = Instant::now() + wait;
        let queued = self.lifecycle.signals().queued.clone();
        loop {
            // Listening before looking: a job queued between the look and the wait still wakes.
            let news = queued.notified();
            tokio::pin!(news);
            news.as_mut().enable();
            if !room.per_model.is_empty() {
                let jobs = self.lifecycle.claim(&presence.owner, &room).await?;
                if !jobs.is_empty() {
                    return Ok(jobs.into_iter().filter_map(|j| self.taken(j)).collect());
                }
            }
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return Ok(Vec::new());
            }
            tokio::select! {
                () = news => {}
                () = tokio::time::sleep(left.min(TAKE_POLL)) => {}
            }
        }
    }

    fn taken(&self, job: Job) -> Option<Taken> {
        let lease = job.lease.clone()?;
        // Claimed from the catalog's models just now.
        let model = self.catalog.get(&job.model_id)?.clone();
        self.touch(job.id);
        Some(Taken {
            lease: WorkerLease::of(&lease),
            lease_expires_at: lease.expires_at,
            job,
            model,
        })
    }

    /// Keeps the job's updates channel open in this process (opening it if need be), and
    /// closes those of runs not heard of for two leases.
    fn touch(&self, id: JobId) {
        let Ok(mut remote) = self.remote.lock() else {
            return;
        };
        let now = Instant::now();
        let stale = self.lifecycle.heartbeat_every() * 6;
        remote.retain(|_, r| now.duration_since(r.touched) < stale);
        let updates = &self.lifecycle.signals().updates;
        remote
            .entry(id)
            .and_modify(|r| r.touched = now)
            .or_insert_with(|| RemoteRun {
                _open: updates.open(id),
                touched: now,
            });
    }

    fn forget(&self, id: JobId) {
        if let Ok(mut remote) = self.remote.lock() {
            remote.remove(&id);
        }
    }

    /// Checks a lease sent about a job: the job exists, is of the token's models, and the lease
    /// was handed to the token's worker (403 otherwise); whether it still holds comes after.
    async fn leased_job(
        &self,
        token: &WorkerToken,
        id: &str,
        lease: &str,
    ) -> Result<(Job, WorkerLease), WorkerError> {
        let lease = WorkerLease::parse(lease).ok_or_else(|| {
            WorkerError::BadRequest(format!(
                "lease {lease:?} is not a lease this gateway handed out: send back the take's lease unchanged"
            ))
        })?;
        if !lease.issued_to(token.id) {
            return Err(WorkerError::Forbidden(
                "the lease was not handed to a worker of this token".into(),
            ));
        }
        let job_id: JobId = id
            .parse()
            .map_err(|_| WorkerError::NotFound(format!("job {id:?} not found")))?;
        let job = self
            .store
            .get_job(job_id, None)
            .await?
            .ok_or_else(|| WorkerError::NotFound(format!("job {id:?} not found")))?;
        if !token.models.matches(&job.model_id) || !(self.routed)(&job.model_id) {
            return Err(WorkerError::Forbidden(format!(
                "job {id} is of model {}, which this token does not serve",
                job.model_id
            )));
        }
        Ok((job, lease))
    }

    /// The job a call's lease holds: 409 ([`WorkerError::LeaseLost`]) once it no longer does.
    pub async fn held(
        &self,
        token: &WorkerToken,
        id: &str,
        lease: &str,
    ) -> Result<HeldRun, WorkerError> {
        let (job, lease) = self.leased_job(token, id, lease).await?;
        let holds = job.status == JobStatus::InProgress
            && job
                .lease
                .as_ref()
                .is_some_and(|l| l.owner == lease.owner && l.attempt == lease.attempt);
        if !holds {
            return Err(WorkerError::LeaseLost(job.id));
        }
        let model = self.catalog.get(&job.model_id).cloned().ok_or_else(|| {
            WorkerError::NotFound(format!(
                "model {} is no longer in the catalog",
                job.model_id
            ))
        })?;
        let worker_id = lease
            .owner
            .rsplit('/')
            .next()
            .unwrap_or_default()
            .to_owned();
        Ok(HeldRun {
            lease: lease.to_lease(),
            job,
            model,
            worker_id,
        })
    }

    /// Renews the leases of the jobs listed, with their log lines and progress. Every job is
    /// checked before any is renewed, so a refused heartbeat changes nothing.
    pub async fn heartbeat(
        &self,
        token: &WorkerToken,
        hello: Hello,
        held: Vec<HeldBeat>,
    ) -> Result<Beats, WorkerError> {
        if held.len() > 1024 {
            return Err(WorkerError::Invalid(
                "jobs: at most 1024 in one heartbeat".into(),
            ));
        }
        let mut checked = Vec::with_capacity(held.len());
        for h in held {
            let (job, lease) = self.leased_job(token, &h.id, &h.lease).await?;
            checked.push((job, lease, h));
        }
        self.greet(token, hello).await?;
        let mut beats = Beats {
            until: Some(
                Utc::now() + chrono::Duration::from_std(self.lifecycle.lease()).unwrap_or_default(),
            ),
            ..Beats::default()
        };
        for (job, lease, h) in checked {
            let lease = lease.to_lease();
            match self.lifecycle.heartbeat(job.id, &lease).await? {
                Beat::Lost => {
                    beats.lost.push(job.id);
                    self.forget(job.id);
                    continue;
                }
                Beat::CancelRequested => beats.cancel.push(job.id),
                Beat::Held => {}
            }
            if !h.logs.is_empty() {
                self.lifecycle.store_logs(job.id, &h.logs).await;
            }
            if let Some(p) = h.progress {
                self.touch(job.id);
                self.lifecycle
                    .signals()
                    .updates
                    .publish(job.id, RunUpdate::Progress(p));
            }
        }
        Ok(beats)
    }

    /// Stores one output file of a held job; its `blob:` reference and size.
    pub async fn store_file(
        &self,
        run: &HeldRun,
        name: &str,
        content_type: Option<&str>,
        bytes: Bytes,
    ) -> Result<StoredFileInfo, WorkerError> {
        let key = self.file_key(run, name)?;
        let content_type = content_type
            .map(str::to_owned)
            .unwrap_or_else(|| content_type_for(&key).to_owned());
        let size = bytes.len() as u64;
        self.blobs.put(&key, bytes).await?;
        Ok(StoredFileInfo {
            url: format!("{BLOB_SCHEME}{key}"),
            file_name: name.to_owned(),
            content_type,
            file_size: size,
        })
    }

    /// A presigned PUT URL for one output file, where the blob store gives them.
    pub fn presign(&self, run: &HeldRun, name: &str) -> Result<(String, String), WorkerError> {
        let key = self.file_key(run, name)?;
        let url = self
            .blobs
            .presigned_put_url(&key, self.config.presign_ttl)
            .ok_or_else(|| {
                WorkerError::BadRequest(
                    "this gateway's file store takes uploads only through PUT .../files/NAME"
                        .into(),
                )
            })?;
        Ok((format!("{BLOB_SCHEME}{key}"), url))
    }

    fn file_key(&self, run: &HeldRun, name: &str) -> Result<String, WorkerError> {
        if !valid_file_name(name) {
            return Err(WorkerError::Invalid(format!(
                "file name {name:?}: 1 to 128 characters of A-Z, a-z, 0-9, '.', '_' and '-', with an extension"
            )));
        }
        let key = format!("{}/{}/{name}", run.job.id, run.lease.attempt);
        validate_key(&key).map_err(|e| WorkerError::Invalid(e.to_string()))?;
        Ok(key)
    }

    /// Hands an intermediate result to the job's readers.
    pub fn partial(&self, run: &HeldRun, output: Map<String, Value>) -> Result<(), WorkerError> {
        check_references(
            &Value::Object(output.clone()),
            run.job.id,
            run.lease.attempt,
            &mut String::new(),
        )?;
        self.touch(run.job.id);
        self.lifecycle
            .signals()
            .updates
            .publish(run.job.id, RunUpdate::Partial(Arc::new(output)));
        Ok(())
    }

    /// Ends the job with the worker's result, once it is checked against the model's output.
    pub async fn complete(
        &self,
        run: HeldRun,
        output: Map<String, Value>,
        logs: Vec<LogLine>,
    ) -> Result<JobStatus, WorkerError> {
        check_output(
            &run.model,
            &run.job.input,
            run.job.id,
            run.lease.attempt,
            &output,
            self.blobs.as_ref(),
        )
        .await?;
        let end = RunEnd::Returned(Ok(RunOutput { output }));
        self.end(run, &end, &logs).await
    }

    /// Ends the attempt with the worker's error: a retry while attempts remain, else FAILED;
    /// CANCELED when its cancel was asked.
    pub async fn fail(
        &self,
        run: HeldRun,
        error_type: Option<String>,
        message: String,
        retry: bool,
        logs: Vec<LogLine>,
    ) -> Result<JobStatus, WorkerError> {
        let end = if run.job.cancel_requested {
            RunEnd::Canceled
        } else {
            let error_type = error_type.unwrap_or_else(|| "runtime_error".to_owned());
            RunEnd::Returned(Err(ProviderError {
                message,
                error_type,
                retry: if retry { Retry::Yes } else { Retry::No },
            }))
        };
        self.end(run, &end, &logs).await
    }

    /// Hands the job back to the queue without using its attempt.
    pub async fn release(&self, run: HeldRun) -> Result<JobStatus, WorkerError> {
        let id = run.job.id;
        match self
            .lifecycle
            .end_run(&run.job, &run.lease, Action::GiveBack, &[])
            .await
        {
            Ended::Applied => self.status_after(id).await,
            Ended::LeaseGone => Err(WorkerError::LeaseLost(id)),
            Ended::StoreFailed => {
                Err(StoreError::Unavailable("the store failed; try again".into()).into())
            }
        }
    }

    async fn end(
        &self,
        run: HeldRun,
        end: &RunEnd,
        logs: &[LogLine],
    ) -> Result<JobStatus, WorkerError> {
        let id = run.job.id;
        match self
            .lifecycle
            .end_attempt(&run.job, &run.lease, end, logs)
            .await
        {
            Ended::Applied => {
                self.forget(id);
                let status = self.status_after(id).await?;
                if status.is_terminal() {
                    // Counted beside the answer: the worker need not wait for a figure of the
                    // admin's listing.
                    let (store, worker) = (self.store.clone(), run.worker_id.clone());
                    let completed = status == JobStatus::Completed;
                    tokio::spawn(async move {
                        if let Err(e) = store.count_worker_job(&worker, completed).await {
                            tracing::warn!(error = %e, "counting a worker's job failed");
                        }
                    });
                }
                Ok(status)
            }
            Ended::LeaseGone => Err(WorkerError::LeaseLost(id)),
            Ended::StoreFailed => {
                Err(StoreError::Unavailable("the store failed; try again".into()).into())
            }
        }
    }

    async fn status_after(&self, id: JobId) -> Result<JobStatus, WorkerError> {
        Ok(self
            .store
            .get_job(id, None)
            .await?
            .map_or(JobStatus::Queued, |j| j.status))
    }

    // The admin side.

    /// A new token for workers of `models`; its secret is shown this once.
    pub async fn create_token(
        &self,
        name: &str,
        models: &[String],
    ) -> Result<(WorkerToken, String), WorkerError> {
        let name = name.trim();
        if name.is_empty() || name.len() > 200 {
            return Err(WorkerError::Invalid(
                "name: must be 1 to 200 characters".into(),
            ));
        }
        let models =
            ModelPatterns::parse(models).map_err(|e| WorkerError::Invalid(e.to_string()))?;
        let secret = super::generate_token();
        let token = WorkerToken::for_secret(&secret, name, models, Utc::now());
        self.store.insert_worker_token(token.clone()).await?;
        Ok((token, secret))
    }

    pub async fn list_tokens(&self) -> Result<Vec<WorkerToken>, WorkerError> {
        Ok(self.store.list_worker_tokens().await?)
    }

    /// Revokes a token: its next call is refused; its workers' leases lapse.
    pub async fn revoke_token(&self, id: &str) -> Result<(), WorkerError> {
        let id: WorkerTokenId = id
            .parse()
            .map_err(|_| WorkerError::NotFound(format!("worker token {id:?} not found")))?;
        if self.store.revoke_worker_token(id, Utc::now()).await? {
            Ok(())
        } else {
            Err(WorkerError::NotFound(format!(
                "worker token {id} not found"
            )))
        }
    }

    /// Workers seen within `within`, by name.
    pub async fn list_workers(&self, within: Duration) -> Result<Vec<WorkerRecord>, WorkerError> {
        let since = Utc::now() - chrono::Duration::from_std(within).unwrap_or_default();
        Ok(self.store.list_workers(since).await?)
    }

    /// Per model routed to workers: the workers connected that serve it and their free slots.
    pub async fn capacity_by_model(&self) -> Result<Vec<(String, u64, u64)>, WorkerError> {
        let workers = self.list_workers(CONNECTED_WITHIN).await?;
        Ok(self
            .catalog
            .iter()
            .filter(|m| (self.routed)(&m.id))
            .map(|m| {
                let serving = workers.iter().filter(|w| {
                    ModelPatterns::from_stored(w.presence.models.clone()).matches(&m.id)
                });
                let (n, free) = serving.fold((0, 0), |(n, free), w| {
                    (
                        n + 1,
                        free + u64::from(w.presence.slots).saturating_sub(w.running),
                    )
                });
                (m.id.clone(), n, free)
            })
            .collect())
    }
}

/// A stored output file, as the files endpoint answers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct StoredFileInfo {
    pub url: String,
    pub file_name: String,
    pub content_type: String,
    pub file_size: u64,
}
