//! The sink of the gateway's own runs: log lines to the store (through a [`LogSink`]),
//! progress and partial outputs to this process's readers, the upstream reference to the store
//! fenced by the lease, files to the blob store.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use serde_json::{Map, Value};

use super::log_sink::LogSink;
use crate::{
    blob::{BlobError, BlobStore},
    ids::JobId,
    job::{Lease, UpstreamRef},
    lifecycle::Lifecycle,
    provider::{LogLine, ProviderError, RunSink},
    run_updates::{Opened, Progress, RunUpdate, RunUpdates},
};

/// Where a run in this process writes.
pub struct StoreSink {
    lifecycle: Lifecycle,
    blobs: Arc<dyn BlobStore>,
    logs: LogSink,
    updates: RunUpdates,
    job: JobId,
    lease: Lease,
    _open: Opened,
}

impl StoreSink {
    /// Starts the job's log task and opens its updates channel; both end with the sink.
    pub fn new(lifecycle: &Lifecycle, blobs: Arc<dyn BlobStore>, job: JobId, lease: Lease) -> Self {
        let signals = lifecycle.signals();
        Self {
            logs: LogSink::to_store(lifecycle.store().clone(), signals.events.clone(), job),
            _open: signals.updates.open(job),
            updates: signals.updates.clone(),
            lifecycle: lifecycle.clone(),
            blobs,
            job,
            lease,
        }
    }
}

#[async_trait]
impl RunSink for StoreSink {
    async fn log(&self, line: LogLine) {
        self.logs.push(line).await;
    }

    async fn take_logs(&self) -> Vec<LogLine> {
        self.logs.take().await
    }

    async fn progress(&self, progress: Progress) {
        self.updates
            .publish(self.job, RunUpdate::Progress(progress));
    }

    async fn partial(&self, output: Map<String, Value>) {
        self.updates
            .publish(self.job, RunUpdate::Partial(Arc::new(output)));
    }

    async fn set_upstream(&self, upstream: Option<&UpstreamRef>) -> Result<(), ProviderError> {
        match self
            .lifecycle
            .set_upstream(self.job, &self.lease, upstream)
            .await
        {
            Ok(true) => Ok(()),
            Ok(false) => Err(ProviderError::transient(
                "internal_error",
                "the run lost its lease before its upstream request was stored",
            )),
            Err(e) => Err(ProviderError::transient(
                "internal_error",
                format!("storing the upstream request failed: {e}"),
            )),
        }
    }

    async fn put_file(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.blobs.put(key, bytes).await
    }
}
