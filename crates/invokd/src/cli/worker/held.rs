//! The jobs this worker holds: each one's lease, the log lines and progress waiting for the
//! next heartbeat, and what stops its run (the gateway's cancel, a lost lease, the shutdown).

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, MutexGuard},
};

use invokd_api::worker::{HeldJob, WorkerLogLine, WorkerProgress};
use invokd_core::{provider::LogLine, run::RunStops, run_updates::Progress};
use tokio::sync::Notify;

/// One held job.
struct Entry {
    lease: String,
    logs: Vec<LogLine>,
    progress: Option<Progress>,
    stops: RunStops,
}

/// The held jobs, shared by their runs and the heartbeat.
#[derive(Clone, Default)]
pub struct Held {
    jobs: Arc<Mutex<HashMap<String, Entry>>>,
    /// Rung when lines or progress wait to be sent, or a job ends.
    pub changed: Arc<Notify>,
}

impl Held {
    fn lock(&self) -> MutexGuard<'_, HashMap<String, Entry>> {
        // A panic while holding it leaves plain data: go on with it.
        self.jobs
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// Starts holding `job`.
    pub fn insert(&self, job: &str, lease: &str, stops: RunStops) {
        self.lock().insert(
            job.to_owned(),
            Entry {
                lease: lease.to_owned(),
                logs: Vec::new(),
                progress: None,
                stops,
            },
        );
    }

    /// Stops holding `job`.
    pub fn remove(&self, job: &str) {
        self.lock().remove(job);
        self.changed.notify_one();
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn log(&self, job: &str, line: LogLine) {
        if let Some(e) = self.lock().get_mut(job) {
            e.logs.push(line);
        }
        self.changed.notify_one();
    }

    pub fn progress(&self, job: &str, progress: Progress) {
        if let Some(e) = self.lock().get_mut(job) {
            e.progress = Some(progress);
        }
        self.changed.notify_one();
    }

    /// The lines not sent yet; they are the caller's to send.
    pub fn take_logs(&self, job: &str) -> Vec<LogLine> {
        self.lock()
            .get_mut(job)
            .map(|e| std::mem::take(&mut e.logs))
            .unwrap_or_default()
    }

    /// Whether anything waits for a heartbeat.
    pub fn has_news(&self) -> bool {
        self.lock()
            .values()
            .any(|e| !e.logs.is_empty() || e.progress.is_some())
    }

    /// Every held job with what waits to be sent, which is taken.
    pub fn heartbeat(&self) -> Vec<HeldJob> {
        self.lock()
            .iter_mut()
            .map(|(id, e)| HeldJob {
                id: id.clone(),
                lease: e.lease.clone(),
                logs: std::mem::take(&mut e.logs)
                    .into_iter()
                    .map(wire_line)
                    .collect(),
                progress: e.progress.take().map(|p| WorkerProgress {
                    step: Some(p.step),
                    total: p.total,
                    message: p.message,
                }),
            })
            .collect()
    }

    /// The gateway asked to cancel `job`.
    pub fn cancel(&self, job: &str) {
        if let Some(e) = self.lock().get(job) {
            e.stops.cancel.cancel();
        }
    }

    /// The worker no longer holds `job`.
    pub fn lost(&self, job: &str) {
        if let Some(e) = self.lock().get(job) {
            e.stops.lost.cancel();
        }
    }

    /// Interrupts every run (the grace period is over).
    pub fn interrupt_all(&self) {
        for e in self.lock().values() {
            e.stops.interrupt.cancel();
        }
    }
}

/// A log line as the protocol carries it.
pub fn wire_line(line: LogLine) -> WorkerLogLine {
    WorkerLogLine {
        message: line.message,
        level: Some(line.level),
        timestamp: Some(line.timestamp),
    }
}
