//! The job lifecycle after submission, for every driver of it (the in-process dispatcher, the
//! worker endpoints): claim under a lease, heartbeat, end a run (finish, release, give back),
//! take back stale leases, expire start deadlines. Each write is fenced by the lease where it
//! names one, and each sends its own notice (job-change news for live readers and webhooks,
//! the dispatcher's wake-up), so no driver can forget one.

mod action;
mod capacity;
mod janitor;

use std::{sync::Arc, time::Duration};

use chrono::{DateTime, Utc};
use tokio::task::JoinHandle;

pub use action::{Action, RunEnd, action_for};
pub use capacity::{Capacity, ClaimRoom};
pub use janitor::{Janitor, JanitorConfig};

use crate::{
    Job, Lease, Outcome,
    events::Signals,
    ids::JobId,
    job::{JobError, UpstreamRef},
    provider::{LogLine, Retry},
    run::{RunStops, log_sink},
    store::{Beat, ClaimRequest, Requeued, Stale, Store, StoreError},
};

/// What became of a write that ends a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It was applied.
    Applied,
    /// The lease was no longer the caller's: nothing changed (the lines went in all the same).
    LeaseGone,
    /// The store failed; the lease will expire and the job run again.
    StoreFailed,
}

/// What the lifecycle reports as it goes, for metrics: the server records them, whichever
/// driver moved the job. Every method does nothing unless implemented.
pub trait LifecycleObserver: Send + Sync {
    /// A job was claimed after waiting this long in the queue.
    fn claimed(&self, _job: &Job, _waited: Duration) {}
    /// A run failed with a provider's error (retried or not).
    fn run_failed(&self, _job: &Job, _error_type: &str) {}
    /// A job ended in `status` after running this long.
    fn finished(&self, _job: &Job, _status: &'static str, _ran: Duration) {}
    /// A store operation took this long.
    fn store_time(&self, _op: &'static str, _took: Duration) {}
}

/// An observer that records nothing.
pub struct NoObserver;

impl LifecycleObserver for NoObserver {}

/// The lifecycle of claimed jobs, over one store.
#[derive(Clone)]
pub struct Lifecycle {
    store: Arc<dyn Store>,
    signals: Signals,
    lease: Duration,
    observer: Arc<dyn LifecycleObserver>,
}

/// The heartbeat task of a run of this process; it stops when dropped, so a run that ends in
/// any way (a panic included) stops extending its lease.
pub struct Heartbeat(JoinHandle<()>);

impl Drop for Heartbeat {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How long from `from` to now, never negative.
fn since(from: DateTime<Utc>) -> Duration {
    (Utc::now() - from).to_std().unwrap_or_default()
}

fn chrono_dur(d: Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Lifecycle {
    /// `lease`: how long a claim or a heartbeat holds a job.
    pub fn new(store: Arc<dyn Store>, signals: Signals, lease: Duration) -> Self {
        Self {
            store,
            signals,
            lease,
            observer: Arc::new(NoObserver),
        }
    }

    /// Reports to `observer` from now on.
    pub fn observed_by(mut self, observer: Arc<dyn LifecycleObserver>) -> Self {
        self.observer = observer;
        self
    }

    pub(crate) fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    /// This process's signals: wake-ups, cancels of its runs, job-change news.
    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    /// How long a claim or a heartbeat holds a job.
    pub fn lease(&self) -> Duration {
        self.lease
    }

    /// How often a holder should heartbeat: a third of the lease, so two beats may fail
    /// before it lapses.
    pub fn heartbeat_every(&self) -> Duration {
        self.lease / 3
    }

    /// Times a store operation for the observer.
    async fn timed<T>(&self, op: &'static str, f: impl std::future::Future<Output = T>) -> T {
        let started = std::time::Instant::now();
        let out = f.await;
        self.observer.store_time(op, started.elapsed());
        out
    }

    /// Claims queued jobs within `room` under leases recorded as `owner`'s.
    pub async fn claim(&self, owner: &str, room: &ClaimRoom) -> Result<Vec<Job>, StoreError> {
        let now = Utc::now();
        let claim = self.store.claim_jobs(ClaimRequest {
            owner,
            limit: room.limit,
            capacity: &room.per_model,
            default_capacity: room.default_per_model,
            now,
            lease_until: now + chrono_dur(self.lease),
        });
        let jobs = self.timed("claim_jobs", claim).await?;
        for j in &jobs {
            self.signals.events.notify(j.id);
            let waited = (now - j.created_at).to_std().unwrap_or_default();
            self.observer.claimed(j, waited);
        }
        Ok(jobs)
    }

    /// Extends the lease by the lease length, and says whether a cancel was asked for.
    pub async fn heartbeat(&self, id: JobId, lease: &Lease) -> Result<Beat, StoreError> {
        self.store
            .heartbeat(id, lease, Utc::now() + chrono_dur(self.lease))
            .await
    }

    /// Heartbeats a run of this process until `stops.lost` fires or the handle is dropped;
    /// fires `stops.lost` when the lease is gone and `stops.cancel` when a cancel was asked for
    /// (through another process: a cancel through this one reaches the run at once).
    pub fn keep_alive(&self, id: JobId, lease: Lease, stops: &RunStops) -> Heartbeat {
        let (this, lost, cancel) = (self.clone(), stops.lost.clone(), stops.cancel.clone());
        let every = self.heartbeat_every();
        Heartbeat(tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = lost.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match this.heartbeat(id, &lease).await {
                    Ok(Beat::Held) => {}
                    Ok(Beat::CancelRequested) => cancel.cancel(),
                    Ok(Beat::Lost) => {
                        lost.cancel();
                        return;
                    }
                    // A transient store error: keep the run; the next beat may succeed.
                    Err(e) => tracing::warn!(job_id = %id, error = %e, "heartbeat failed"),
                }
            }
        }))
    }

    /// Stores (or clears) the job's upstream reference, fenced by the lease: `Ok(false)` when
    /// the lease is gone.
    pub async fn set_upstream(
        &self,
        id: JobId,
        lease: &Lease,
        upstream: Option<&UpstreamRef>,
    ) -> Result<bool, StoreError> {
        self.store.set_upstream(id, lease, upstream).await
    }

    /// Whether the job's upstream request is stored, so a run interrupted now goes on there.
    pub async fn upstream_submitted(&self, id: JobId) -> bool {
        let job = self.store.get_job(id, None).await.ok().flatten();
        job.is_some_and(|j| j.upstream.is_some_and(|u| u.request_id.is_some()))
    }

    /// Ends an attempt as its run's end calls for ([`action_for`]), with the run's last log
    /// lines, and reports a provider's error.
    pub async fn end_attempt(
        &self,
        job: &Job,
        lease: &Lease,
        end: &RunEnd,
        logs: &[LogLine],
    ) -> Ended {
        if let RunEnd::Returned(Err(e)) = end {
            self.observer.run_failed(job, &e.error_type);
            match e.retry {
                Retry::Yes => {
                    tracing::warn!(job_id = %job.id, error = %e, "attempt failed; retrying if attempts remain")
                }
                Retry::Later => {
                    tracing::warn!(job_id = %job.id, error = %e, "upstream unavailable; the job waits in the queue")
                }
                Retry::No => {}
            }
        }
        let upstream_submitted =
            matches!(end, RunEnd::Interrupted) && self.upstream_submitted(job.id).await;
        self.end_run(job, lease, action_for(end, upstream_submitted), logs)
            .await
    }

    /// Does what `action` says to a run's job, with the run's last log lines: the ending write
    /// carries them, any other write has them stored first.
    pub async fn end_run(
        &self,
        job: &Job,
        lease: &Lease,
        action: Action,
        logs: &[LogLine],
    ) -> Ended {
        if !action.carries_logs() {
            self.store_logs(job.id, logs).await;
        }
        match action {
            Action::Finish(outcome) => {
                let (status, ran) = (outcome_status(&outcome), job.started_at.map(since));
                let ended = self.finish(job.id, lease, outcome, logs).await;
                if ended == Ended::Applied {
                    self.observer.finished(job, status, ran.unwrap_or_default());
                }
                ended
            }
            Action::Release(err) => self.release(job.id, lease, err).await,
            Action::GiveBack => self.give_back(job.id, lease).await,
            Action::Abandon => {
                tracing::warn!(job_id = %job.id, "lease lost; the run was abandoned");
                Ended::LeaseGone
            }
        }
    }

    /// Ends the job with the run's last log lines, fenced.
    pub async fn finish(
        &self,
        id: JobId,
        lease: &Lease,
        outcome: Outcome,
        logs: &[LogLine],
    ) -> Ended {
        let status = outcome_status(&outcome);
        let finish = self
            .store
            .finish_with_logs(id, lease, outcome, Utc::now(), logs);
        match self.timed("finish", finish).await {
            Ok(true) => {
                self.signals.events.notify(id);
                tracing::info!(job_id = %id, status, "job finished");
                Ended::Applied
            }
            Ok(false) => {
                // The lines went in all the same.
                if !logs.is_empty() {
                    self.signals.events.notify_logs(id);
                }
                tracing::warn!(job_id = %id, "lease lost; result discarded");
                Ended::LeaseGone
            }
            Err(e) => {
                tracing::error!(job_id = %id, error = %e, "finishing failed; the lease will expire and the job rerun");
                // They went back with the failed write: the last lines often say what failed.
                self.store_logs(id, logs).await;
                Ended::StoreFailed
            }
        }
    }

    /// Gives the job back to the queue for another attempt (or fails it if it has none left),
    /// fenced.
    pub async fn release(&self, id: JobId, lease: &Lease, err: JobError) -> Ended {
        let released = self.store.release(id, lease, err, Utc::now()).await;
        if released.as_ref().is_ok_and(|applied| *applied) {
            self.signals.job_queued();
        }
        self.returned_to_queue(id, "release", released)
    }

    /// Gives the job back to the queue without using an attempt, fenced.
    pub async fn give_back(&self, id: JobId, lease: &Lease) -> Ended {
        let given = self.store.give_back(id, lease, Utc::now()).await;
        if given.as_ref().is_ok_and(|applied| *applied) {
            self.signals.job_queued();
        }
        self.returned_to_queue(id, "giving back", given)
    }

    /// What a fenced write that returns the job to the queue did; the job's readers hear of
    /// it when it was applied.
    fn returned_to_queue(&self, id: JobId, what: &str, result: Result<bool, StoreError>) -> Ended {
        match result {
            Ok(true) => {
                self.signals.events.notify(id);
                Ended::Applied
            }
            Ok(false) => {
                tracing::warn!(job_id = %id, "lease lost before {what}");
                Ended::LeaseGone
            }
            Err(e) => {
                tracing::error!(job_id = %id, error = %e, "{what} failed; the lease will expire");
                Ended::StoreFailed
            }
        }
    }

    /// Stores a run's log lines at once and wakes the job's readers (best effort).
    pub async fn store_logs(&self, id: JobId, logs: &[LogLine]) {
        log_sink::store_now(self.store.as_ref(), &self.signals.events, id, logs).await;
    }

    /// Takes back running jobs whose leases are stale: queued again, or failed without
    /// attempts left. Live readers look again and the dispatcher wakes.
    pub async fn take_back(&self, which: Stale<'_>) -> Result<Requeued, StoreError> {
        let r = self.store.requeue_stale(which, Utc::now()).await?;
        if r.requeued + r.failed > 0 {
            self.signals.events.some_changed();
            self.signals.job_queued();
        }
        Ok(r)
    }

    /// Fails queued jobs whose start deadline passed (they are never claimed either way).
    pub async fn expire_deadlines(&self) -> Result<u64, StoreError> {
        let n = self.store.expire_deadlines(Utc::now()).await?;
        if n > 0 {
            self.signals.events.some_changed();
        }
        Ok(n)
    }
}

/// The status an outcome ends its job in, as the wire and the metrics name it.
pub fn outcome_status(outcome: &Outcome) -> &'static str {
    match outcome {
        Outcome::Completed(_) => "COMPLETED",
        Outcome::Failed(_) => "FAILED",
        Outcome::Canceled(_) => "CANCELED",
    }
}
