//! The provider interface: something that runs one attempt of a job and returns the model output.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

use crate::{
    blob::{BLOB_SCHEME, BlobError},
    catalog::Model,
    ids::JobId,
    job::UpstreamRef,
    run_updates::Progress,
};

/// One log line a provider emits while it runs a job.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogLine {
    pub message: String,
    /// fal's levels: STDERR, STDOUT, ERROR, INFO, WARN, DEBUG.
    pub level: String,
    pub timestamp: DateTime<Utc>,
}

/// A file an input names (`*_url` fields), fetched before the run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InputFile {
    /// Where it is named, e.g. `input_image_urls[0]`.
    pub field: String,
    /// As the client gave it.
    pub url: String,
    pub content_type: String,
    pub bytes: Bytes,
}

/// What a provider is asked to run.
#[derive(Debug, Clone)]
pub struct RunRequest {
    pub job_id: JobId,
    pub attempt: u32,
    pub model: Arc<Model>,
    pub input: Arc<Map<String, Value>>,
    /// The files the input names, in the order they appear.
    pub files: Vec<InputFile>,
    /// Lower runs first (passed on to upstreams that have priorities).
    pub priority: i32,
    /// If the job has not started by then it must not start (passed on to upstreams).
    pub start_deadline: Option<DateTime<Utc>>,
    /// What an earlier attempt stored about the job's upstream request: resume it, never
    /// submit again.
    pub upstream: Option<UpstreamRef>,
}

/// Where a run's effects go while it runs: log lines, progress, partial outputs, the upstream
/// reference and output files. The gateway's own runs write to its store and blob store
/// ([`crate::run::StoreSink`]); a remote worker's go back to the gateway over HTTP.
#[async_trait]
pub trait RunSink: Send + Sync + 'static {
    /// Queues a log line; it reaches the job's readers soon, in order. Best effort: never fails
    /// the run.
    async fn log(&self, line: LogLine);

    /// The lines logged so far that are not stored yet, for the write that ends the job to
    /// store: its log is then complete when it is seen ended.
    async fn take_logs(&self) -> Vec<LogLine>;

    /// How far the run has come. Best effort.
    async fn progress(&self, progress: Progress);

    /// An intermediate result, in the model's output shape. Best effort.
    async fn partial(&self, output: Map<String, Value>);

    /// Stores (or clears) the job's upstream reference, fenced by the run's lease. An error
    /// means it is not stored: the run must not submit.
    async fn set_upstream(&self, upstream: Option<&UpstreamRef>) -> Result<(), ProviderError>;

    /// Stores an output file under `key` (already checked by [`crate::blob::validate_key`]).
    async fn put_file(&self, key: &str, bytes: Bytes) -> Result<(), BlobError>;
}

/// What a provider gets to do its work: a place for output files, log lines, progress and
/// partial outputs, and a cancellation signal.
#[derive(Clone)]
pub struct RunContext {
    sink: Arc<dyn RunSink>,
    job_id: JobId,
    key_prefix: String,
    pub cancel: CancellationToken,
}

impl RunContext {
    pub fn new(
        sink: Arc<dyn RunSink>,
        job_id: JobId,
        attempt: u32,
        cancel: CancellationToken,
    ) -> Self {
        Self {
            sink,
            job_id,
            // One prefix per attempt, so a late writer from an expired lease never overwrites
            // the files of the attempt that finished the job.
            key_prefix: format!("{job_id}/{attempt}"),
            cancel,
        }
    }

    /// The lines logged so far that are not stored yet (see [`RunSink::take_logs`]).
    pub async fn take_logs(&self) -> Vec<LogLine> {
        self.sink.take_logs().await
    }

    /// Stores (or clears) the job's upstream reference before the run goes on. An error means
    /// it is not stored (the lease is lost or the store failed): the run must not submit.
    pub async fn set_upstream(&self, upstream: Option<&UpstreamRef>) -> Result<(), ProviderError> {
        self.sink.set_upstream(upstream).await
    }

    /// Records a log line of the job (fal's levels: INFO, WARN, ERROR, DEBUG, STDOUT, STDERR).
    /// The line is stored in the background, in order, without holding up the run; logging is
    /// best effort: a failure to store a line never fails the run.
    pub async fn log(&self, level: &str, message: impl Into<String>) {
        let line = LogLine {
            message: message.into(),
            level: level.to_owned(),
            timestamp: Utc::now(),
        };
        tracing::debug!(job_id = %self.job_id, level, message = %line.message, "job log");
        self.sink.log(line).await;
    }

    /// Tells the job's readers how far the run has come.
    pub async fn progress(&self, progress: Progress) {
        self.sink.progress(progress).await;
    }

    /// Hands the job's readers an intermediate result (files in it stored with `put_file`).
    pub async fn partial(&self, output: Map<String, Value>) {
        self.sink.partial(output).await;
    }

    /// Stores an output file and returns the `blob:` reference to put in the output's `url`.
    pub async fn put_file(&self, file_name: &str, bytes: Bytes) -> Result<String, BlobError> {
        let key = format!("{}/{file_name}", self.key_prefix);
        crate::blob::validate_key(&key)?;
        self.sink.put_file(&key, bytes).await?;
        Ok(format!("{BLOB_SCHEME}{key}"))
    }
}

/// Whether trying again could help.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Retry {
    /// Try again on another attempt, if the job has attempts left.
    Yes,
    /// The job fails now.
    No,
    /// The upstream is unavailable, not the job at fault: back to the queue without using an
    /// attempt.
    Later,
}

/// A failed run.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct ProviderError {
    pub message: String,
    /// fal's `error_type` vocabulary, e.g. `runner_server_error`.
    pub error_type: String,
    pub retry: Retry,
}

impl ProviderError {
    pub fn permanent(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            error_type: error_type.into(),
            retry: Retry::No,
        }
    }

    pub fn transient(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            error_type: error_type.into(),
            retry: Retry::Yes,
        }
    }
}

impl ProviderError {
    /// The upstream cannot take the job now; it waits in the queue without using an attempt.
    pub fn later(error_type: impl Into<String>, message: impl Into<String>) -> Self {
        Self {
            message: message.into(),
            error_type: error_type.into(),
            retry: Retry::Later,
        }
    }
}

impl From<BlobError> for ProviderError {
    fn from(e: BlobError) -> Self {
        Self::transient(
            "internal_error",
            format!("storing an output file failed: {e}"),
        )
    }
}

/// Fetches the files an input names (`*_url` fields) before a run.
#[async_trait]
pub trait InputSource: Send + Sync {
    /// The files in the order they appear; an error ends the run with it.
    async fn fetch_all(&self, input: &Map<String, Value>) -> Result<Vec<InputFile>, ProviderError>;
}

/// A provider's result: the model's output object, file URLs as `blob:` references.
#[derive(Debug, Clone, PartialEq)]
pub struct RunOutput {
    pub output: Map<String, Value>,
}

/// Runs jobs. Implementations: the emulator, fal upstream, worker pools.
#[async_trait]
pub trait Provider: Send + Sync + 'static {
    /// A short stable name, shown in logs and `models list`.
    fn name(&self) -> &'static str;

    /// Runs one attempt. It should stop early, with any error, when `ctx.cancel` fires. The run
    /// is polled after `ctx.cancel` fires only when the client cancelled the job or its run took
    /// too long, so a provider passes the cancel on to its upstream there (never on shutdown or a
    /// lost lease).
    async fn run(&self, req: RunRequest, ctx: RunContext) -> Result<RunOutput, ProviderError>;

    /// Whether it takes new runs now: `false` while an upstream's circuit breaker is open, so
    /// its jobs wait QUEUED instead of failing.
    fn available(&self) -> bool {
        true
    }
}
