//! Where a run on this worker writes ([`RunSink`] over the protocol): log lines and progress
//! wait for the next heartbeat (the held jobs' table), partial outputs go at once to
//! `partial`, files to `PUT .../files/{name}`. The `blob:` references the gateway answers are
//! the ones the output must name; [`WorkerSink::rewrite`] puts them in.

use std::{collections::HashMap, sync::Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use invokd_api::worker::{PartialRequest, TakenJob};
use invokd_core::{
    UpstreamRef,
    blob::{BLOB_SCHEME, BlobError, content_type_for},
    provider::{LogLine, ProviderError, RunSink},
    run_updates::Progress,
};
use serde_json::{Map, Value};

use super::{client::Api, held::Held};

/// One run's sink.
pub struct WorkerSink {
    api: Api,
    held: Held,
    job: TakenJob,
    /// The references the run was given (`blob:<key>`) to the gateway's, where they differ.
    renamed: Mutex<HashMap<String, String>>,
}

impl WorkerSink {
    pub fn new(api: Api, held: Held, job: TakenJob) -> Self {
        Self {
            api,
            held,
            job,
            renamed: Mutex::new(HashMap::new()),
        }
    }

    /// `output` with every file reference the run was given replaced by the gateway's.
    pub fn rewrite(&self, mut output: Map<String, Value>) -> Map<String, Value> {
        let renamed = self
            .renamed
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if !renamed.is_empty() {
            output.values_mut().for_each(|v| rename(v, &renamed));
        }
        output
    }
}

fn rename(value: &mut Value, renamed: &HashMap<String, String>) {
    match value {
        Value::String(s) => {
            if let Some(r) = renamed.get(s.as_str()) {
                s.clone_from(r);
            }
        }
        Value::Array(items) => items.iter_mut().for_each(|v| rename(v, renamed)),
        Value::Object(map) => map.values_mut().for_each(|v| rename(v, renamed)),
        _ => {}
    }
}

#[async_trait]
impl RunSink for WorkerSink {
    async fn log(&self, line: LogLine) {
        self.held.log(&self.job.id, line);
    }

    async fn take_logs(&self) -> Vec<LogLine> {
        self.held.take_logs(&self.job.id)
    }

    async fn progress(&self, progress: Progress) {
        self.held.progress(&self.job.id, progress);
    }

    async fn partial(&self, output: Map<String, Value>) {
        let req = PartialRequest {
            lease: self.job.lease.clone(),
            output: self.rewrite(output),
        };
        if let Err(e) = self.api.partial(&self.job.id, &req).await {
            tracing::warn!(job_id = %self.job.id, error = %e, "sending a partial output failed");
        }
    }

    async fn set_upstream(&self, _upstream: Option<&UpstreamRef>) -> Result<(), ProviderError> {
        // Upstream providers (fal) run in the gateway, which stores their requests.
        Err(ProviderError::permanent(
            "internal_error",
            "a worker runs no upstream provider",
        ))
    }

    async fn put_file(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        let name = key.rsplit('/').next().unwrap_or(key);
        let size = bytes.len();
        let stored = self
            .api
            .put_file(&self.job, name, content_type_for(name), bytes)
            .await
            .map_err(|e| BlobError::Remote(e.to_string()))?;
        tracing::info!(
            job_id = %self.job.id,
            file = name,
            bytes = size,
            presigned = self.job.files.presign,
            "output file stored"
        );
        let given = format!("{BLOB_SCHEME}{key}");
        if stored.url != given {
            self.renamed
                .lock()
                .unwrap_or_else(std::sync::PoisonError::into_inner)
                .insert(given, stored.url);
        }
        Ok(())
    }
}
