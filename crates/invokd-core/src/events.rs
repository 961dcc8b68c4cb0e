//! In-process news of job changes, so live readers (SSE streams, waits) wake at once instead of
//! polling. It is a hint: readers still read the store, and poll it slowly for changes made by
//! other processes.

use tokio::sync::broadcast;

use crate::ids::JobId;

/// A broadcast of "this job changed" (status, queue, logs).
#[derive(Debug, Clone)]
pub struct JobEvents {
    tx: broadcast::Sender<JobId>,
}

impl Default for JobEvents {
    fn default() -> Self {
        // Readers that fall behind skip ahead (`Lagged`) and re-read the store, so a small
        // buffer loses nothing that matters.
        let (tx, _) = broadcast::channel(1024);
        Self { tx }
    }
}

impl JobEvents {
    pub fn notify(&self, id: JobId) {
        // No subscriber is fine.
        let _ = self.tx.send(id);
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobId> {
        self.tx.subscribe()
    }
}

/// What the API side and the dispatcher of one process share: the dispatcher's wake-up, the
/// running jobs' cancel tokens, and job-change news.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Notified after a submission is committed, so the dispatcher claims at once.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    pub running: crate::running::RunningJobs,
    pub events: JobEvents,
}
