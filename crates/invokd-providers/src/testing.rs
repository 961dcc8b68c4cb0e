//! For the providers' unit tests: a sink that keeps what a run writes, and a request for a
//! catalog model.

use std::sync::{Arc, Mutex};

use async_trait::async_trait;
use bytes::Bytes;
use invokd_core::{
    JobId, UpstreamRef,
    blob::BlobError,
    catalog::{Catalog, Model},
    provider::{LogLine, ProviderError, RunContext, RunRequest, RunSink},
    run_updates::Progress,
};
use serde_json::{Map, Value};
use tokio_util::sync::CancellationToken;

/// Keeps log lines and files.
#[derive(Default)]
pub struct MemorySink {
    pub logs: Mutex<Vec<LogLine>>,
    pub files: Mutex<Vec<(String, Bytes)>>,
}

impl MemorySink {
    pub fn file(&self, key_suffix: &str) -> Option<Bytes> {
        let files = self.files.lock().unwrap();
        files
            .iter()
            .find(|(k, _)| k.ends_with(key_suffix))
            .map(|(_, b)| b.clone())
    }
}

#[async_trait]
impl RunSink for MemorySink {
    async fn log(&self, line: LogLine) {
        self.logs.lock().unwrap().push(line);
    }
    async fn take_logs(&self) -> Vec<LogLine> {
        std::mem::take(&mut *self.logs.lock().unwrap())
    }
    async fn progress(&self, _progress: Progress) {}
    async fn partial(&self, _output: Map<String, Value>) {}
    async fn set_upstream(&self, _upstream: Option<&UpstreamRef>) -> Result<(), ProviderError> {
        Ok(())
    }
    async fn put_file(&self, key: &str, bytes: Bytes) -> Result<(), BlobError> {
        self.files.lock().unwrap().push((key.to_owned(), bytes));
        Ok(())
    }
}

pub fn model(id: &str) -> Arc<Model> {
    Catalog::embedded().unwrap().get(id).unwrap().clone()
}

/// A first attempt of a new job of `model` with `input`, and a context writing to a new sink.
pub fn run_of(
    model: Arc<Model>,
    input: Value,
) -> (RunRequest, RunContext, Arc<MemorySink>, CancellationToken) {
    let job_id = JobId::generate();
    let sink = Arc::new(MemorySink::default());
    let cancel = CancellationToken::new();
    let ctx = RunContext::new(sink.clone(), job_id, 1, cancel.clone());
    let Value::Object(input) = input else {
        panic!("an input is an object")
    };
    let req = RunRequest {
        job_id,
        attempt: 1,
        model,
        input: Arc::new(input),
        files: Vec::new(),
        priority: 0,
        start_deadline: None,
        upstream: None,
    };
    (req, ctx, sink, cancel)
}
