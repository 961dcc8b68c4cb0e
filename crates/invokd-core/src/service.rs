//! The job service: what both API surfaces call to authenticate, submit and read jobs.
//! It makes ids and timestamps; it knows no HTTP.

use std::sync::Arc;

use chrono::Utc;
use serde_json::{Map, Value};

use crate::{
    catalog::{Catalog, Violation},
    events::Signals,
    ids::{JobId, KeyId},
    job::{CancelOutcome, Job, NewJob},
    keys::KeyHash,
    provider::LogLine,
    store::{Store, StoreError},
};

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
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// The caller, once its key is verified.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Caller {
    pub key_id: KeyId,
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
}

/// fal's `X-Fal-Queue-Priority` values as queue priorities (lower runs first).
pub const PRIORITY_NORMAL: i32 = 0;
pub const PRIORITY_LOW: i32 = 10;

/// Settings of the job service.
#[derive(Debug, Clone, Copy)]
pub struct ServiceConfig {
    /// How many times a job may be claimed before it fails.
    pub max_attempts: u32,
}

impl Default for ServiceConfig {
    fn default() -> Self {
        Self { max_attempts: 3 }
    }
}

/// Submits and reads jobs on behalf of authenticated callers.
#[derive(Clone)]
pub struct JobService {
    store: Arc<dyn Store>,
    catalog: Arc<Catalog>,
    signals: Signals,
    config: ServiceConfig,
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

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// The caller whose key this is; revoked and unknown keys are refused.
    pub async fn authenticate(&self, secret: &str) -> Result<Caller, ServiceError> {
        if secret.is_empty() {
            return Err(ServiceError::Unauthorized);
        }
        match self.store.find_key(&KeyHash::of(secret)).await? {
            Some(k) if k.revoked_at.is_none() => Ok(Caller { key_id: k.id }),
            _ => Err(ServiceError::Unauthorized),
        }
    }

    /// Validates the submission against the catalog and stores it as a QUEUED job.
    /// When this returns `Ok`, the job is committed.
    pub async fn submit(&self, caller: Caller, sub: Submission) -> Result<Job, ServiceError> {
        let model = self
            .catalog
            .get(&sub.model_id)
            .ok_or_else(|| ServiceError::UnknownModel(sub.model_id.clone()))?;
        let input = model
            .prepare_input(sub.input)
            .map_err(ServiceError::InvalidInput)?;
        let file_problems = crate::input_files::violations(&input);
        if !file_problems.is_empty() {
            return Err(ServiceError::InvalidInput(file_problems));
        }
        let created_at = Utc::now();
        let start_deadline = sub
            .start_within
            .and_then(|d| chrono::Duration::from_std(d).ok())
            .and_then(|d| created_at.checked_add_signed(d));
        let job = self
            .store
            .insert_job(NewJob {
                id: JobId::generate(),
                key_id: caller.key_id,
                model_id: model.id.clone(),
                input,
                tags: sub.tags,
                priority: sub.priority,
                created_at,
                max_attempts: self.config.max_attempts,
                start_deadline,
            })
            .await?;
        self.signals.wake.notify_one();
        self.signals.events.notify(job.id);
        tracing::info!(job_id = %job.id, model = %job.model_id, "job queued");
        Ok(job)
    }

    /// The caller's job with this id. Another caller's job is "not found", so ids leak nothing.
    pub async fn get(&self, caller: Caller, id: &str) -> Result<Job, ServiceError> {
        let not_found = || ServiceError::NotFound(id.to_owned());
        let job_id: JobId = id.parse().map_err(|_| not_found())?;
        self.store
            .get_job(job_id, Some(caller.key_id))
            .await?
            .ok_or_else(not_found)
    }

    /// Cancels the caller's job: a queued one never runs; a running one is told to stop.
    pub async fn cancel(&self, caller: Caller, id: &str) -> Result<CancelOutcome, ServiceError> {
        let Ok(job_id) = id.parse::<JobId>() else {
            return Ok(CancelOutcome::NotFound);
        };
        let outcome = self
            .store
            .cancel(job_id, Some(caller.key_id), Utc::now())
            .await?;
        if outcome == CancelOutcome::Requested {
            self.signals.running.cancel(job_id);
        }
        self.signals.events.notify(job_id);
        tracing::info!(job_id = %job_id, ?outcome, "cancel");
        Ok(outcome)
    }

    /// How many queued jobs run before this one; `None` unless it is queued.
    pub async fn queue_position(&self, job: &Job) -> Result<Option<u64>, ServiceError> {
        if job.status != crate::JobStatus::Queued {
            return Ok(None);
        }
        Ok(Some(self.store.queue_position(job).await?))
    }

    /// The log lines of the caller's job.
    pub async fn logs(&self, caller: Caller, id: &str) -> Result<Vec<LogLine>, ServiceError> {
        let job = self.get(caller, id).await?;
        Ok(self.store.logs(job.id).await?)
    }
}
