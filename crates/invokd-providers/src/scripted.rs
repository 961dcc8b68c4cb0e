//! A provider its test drives, for tests of the lifecycle (feature `scripted`, never in a
//! release): each run is handed to the test, which logs, sends partial outputs and ends it as
//! it likes, or leaves it running until something stops it.

use std::sync::Arc;

use async_trait::async_trait;
use bytes::Bytes;
use invokd_core::{
    JobId,
    blob::BlobError,
    provider::{Provider, ProviderError, RunContext, RunOutput, RunRequest},
    run_updates::Progress,
};
use serde_json::{Map, Value};
use tokio::sync::{Mutex, mpsc, oneshot};

/// The provider; its runs arrive at the [`ScriptedRuns`] made with it.
pub struct Scripted {
    runs: mpsc::UnboundedSender<ScriptedRun>,
}

/// The runs as they start, for the test to drive.
pub struct ScriptedRuns {
    runs: Mutex<mpsc::UnboundedReceiver<ScriptedRun>>,
}

/// One run in progress. Dropped without an ending, the run goes on until it is stopped.
pub struct ScriptedRun {
    pub job_id: JobId,
    pub attempt: u32,
    pub input: Arc<Map<String, Value>>,
    ctx: RunContext,
    end: oneshot::Sender<Result<RunOutput, ProviderError>>,
}

impl Scripted {
    pub fn new() -> (Arc<Self>, ScriptedRuns) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            Arc::new(Self { runs: tx }),
            ScriptedRuns {
                runs: Mutex::new(rx),
            },
        )
    }
}

impl ScriptedRuns {
    /// The next run to start; `None` once the provider is gone.
    pub async fn next(&self) -> Option<ScriptedRun> {
        self.runs.lock().await.recv().await
    }
}

impl ScriptedRun {
    pub async fn log(&self, message: &str) {
        self.ctx.log("INFO", message).await;
    }

    pub async fn progress(&self, step: u64, total: u64) {
        self.ctx
            .progress(Progress {
                step,
                total: Some(total),
                message: None,
            })
            .await;
    }

    pub async fn partial(&self, output: Map<String, Value>) {
        self.ctx.partial(output).await;
    }

    /// Stores a file as the run's output would, returning its `blob:` reference.
    pub async fn put_file(&self, name: &str, bytes: &'static [u8]) -> Result<String, BlobError> {
        self.ctx.put_file(name, Bytes::from_static(bytes)).await
    }

    /// Ends the run with this output.
    pub fn complete(self, output: Map<String, Value>) {
        let _ = self.end.send(Ok(RunOutput { output }));
    }

    /// Ends the run with this error.
    pub fn fail(self, error: ProviderError) {
        let _ = self.end.send(Err(error));
    }

    /// Waits until the run is told to stop (cancel, time-out, lost lease, shutdown).
    pub async fn stopped(&self) {
        self.ctx.cancel.cancelled().await;
    }
}

#[async_trait]
impl Provider for Scripted {
    fn name(&self) -> &'static str {
        "scripted"
    }

    async fn run(&self, req: RunRequest, ctx: RunContext) -> Result<RunOutput, ProviderError> {
        let (end, ended) = oneshot::channel();
        let stop = ctx.cancel.clone();
        let run = ScriptedRun {
            job_id: req.job_id,
            attempt: req.attempt,
            input: req.input,
            ctx,
            end,
        };
        if self.runs.send(run).is_err() {
            return Err(ProviderError::permanent(
                "internal_error",
                "no test drives this run",
            ));
        }
        tokio::select! {
            Ok(result) = ended => result,
            () = stop.cancelled() => Err(ProviderError::transient("stopped", "the run was stopped")),
        }
    }
}
