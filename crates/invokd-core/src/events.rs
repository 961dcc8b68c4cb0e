//! In-process news of job changes, so live readers (SSE streams, waits) wake at once instead of
//! polling. It is a hint: readers still read the store, and poll it slowly for changes made by
//! other processes.

use std::sync::{
    Arc,
    atomic::{AtomicU64, Ordering},
};

use tokio::sync::broadcast;

use crate::ids::JobId;

/// A broadcast of "this job changed" (status, queue, logs).
#[derive(Debug, Clone)]
pub struct JobEvents {
    tx: broadcast::Sender<JobId>,
    /// How many changes of a job's state there have been (log lines do not count): a reader
    /// that saw the same count a while ago knows no job changed in between, so no queue moved.
    changes: Arc<AtomicU64>,
    /// How many of them named no job (sweeps, lost news): every reader must look again.
    unnamed: Arc<AtomicU64>,
}

/// The counts of job changes at one moment (`JobEvents::changes`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Changes {
    /// Every change of a job's state, named or not (log lines do not count).
    pub any: u64,
    /// Changes that named no job.
    pub unnamed: u64,
}

impl Default for JobEvents {
    fn default() -> Self {
        // Readers that fall behind skip ahead (`Lagged`) and re-read the store, so a small
        // buffer loses nothing that matters.
        let (tx, _) = broadcast::channel(1024);
        Self {
            tx,
            changes: Arc::default(),
            unnamed: Arc::default(),
        }
    }
}

impl JobEvents {
    /// News that a job's state changed (status, queue, cancel).
    pub fn notify(&self, id: JobId) {
        self.changes.fetch_add(1, Ordering::Release);
        // No subscriber is fine.
        let _ = self.tx.send(id);
    }

    /// News of a job's new log lines: its own readers wake, but the count of changes stays,
    /// as log lines move no job in any queue (readers of queued jobs look again only when a
    /// job's state changed).
    pub fn notify_logs(&self, id: JobId) {
        let _ = self.tx.send(id);
    }

    /// Jobs changed with no news of each (a sweep, news lost): every reader re-reads at its
    /// next look.
    pub fn some_changed(&self) {
        self.unnamed.fetch_add(1, Ordering::Release);
        self.changes.fetch_add(1, Ordering::Release);
    }

    /// The counts of changes so far.
    pub fn changes(&self) -> Changes {
        Changes {
            unnamed: self.unnamed.load(Ordering::Acquire),
            any: self.changes.load(Ordering::Acquire),
        }
    }

    pub fn subscribe(&self) -> broadcast::Receiver<JobId> {
        self.tx.subscribe()
    }
}

/// What the API side and the dispatcher of one process share: the dispatcher's wake-up, the
/// running jobs' cancel tokens, job-change news, and the runs' progress and partial outputs.
#[derive(Debug, Clone, Default)]
pub struct Signals {
    /// Notified after a submission is committed, so the dispatcher claims at once.
    pub wake: std::sync::Arc<tokio::sync::Notify>,
    pub running: crate::running::RunningJobs,
    pub events: JobEvents,
    /// Progress and partial outputs of the runs of this process.
    pub updates: crate::run_updates::RunUpdates,
    /// Notified (every waiter) when jobs entered the queue: workers' takes waiting here.
    pub queued: std::sync::Arc<tokio::sync::Notify>,
}

impl Signals {
    /// Jobs entered the queue (new, or back from a run): wake the dispatcher and every take
    /// waiting for work.
    pub fn job_queued(&self) {
        self.wake.notify_one();
        self.queued.notify_waiters();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_news_wakes_the_jobs_readers_without_counting_as_a_change() {
        let events = JobEvents::default();
        let mut news = events.subscribe();
        let (a, b) = (JobId::generate(), JobId::generate());
        let before = events.changes();
        events.notify_logs(a);
        assert_eq!(news.try_recv().unwrap(), a);
        assert_eq!(events.changes(), before, "log lines move no queue");
        events.notify(b);
        assert_eq!(news.try_recv().unwrap(), b);
        let after = events.changes();
        assert_eq!((after.any, after.unnamed), (before.any + 1, before.unnamed));
        events.some_changed();
        assert_eq!(events.changes().unnamed, before.unnamed + 1);
    }
}
