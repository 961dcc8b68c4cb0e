//! The job lifecycle after submission, for every driver of it (the in-process dispatcher, the
//! worker endpoints): claim under a lease, heartbeat, end a run (finish, release, give back),
//! take back stale leases, expire start deadlines. Each write is fenced by the lease where it
//! names one, and each sends its own notice (job-change news for live readers and webhooks,
//! the dispatcher's wake-up), so no driver can forget one.

mod capacity;
mod janitor;
mod outcome;

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tokio::task::JoinHandle;

pub use capacity::{Capacity, Room};
pub use janitor::{Janitor, JanitorConfig};
pub use outcome::{Action, RunEnd, action_for};

use crate::{
    Job, Lease, Outcome,
    events::Signals,
    ids::JobId,
    job::JobError,
    provider::LogLine,
    run::{RunStops, log_sink},
    store::{Beat, ClaimRequest, Requeued, Stale, Store, StoreError},
};

/// What became of a write that ends a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ended {
    /// It was applied.
    Applied,
    /// The lease was no longer the caller's: nothing changed (the lines went in all the same).
    Stale,
    /// The store failed; the lease will expire and the job run again.
    StoreFailed,
}

/// The lifecycle of claimed jobs, over one store.
#[derive(Clone)]
pub struct Lifecycle {
    store: Arc<dyn Store>,
    signals: Signals,
    lease: Duration,
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
        }
    }

    pub fn store(&self) -> &Arc<dyn Store> {
        &self.store
    }

    pub fn signals(&self) -> &Signals {
        &self.signals
    }

    /// Claims queued jobs within `room` under leases recorded as `owner`'s.
    pub async fn claim(&self, owner: &str, room: &Room) -> Result<Vec<Job>, StoreError> {
        let now = Utc::now();
        let jobs = self
            .store
            .claim_jobs(ClaimRequest {
                owner,
                limit: room.limit,
                capacity: &room.per_model,
                default_capacity: room.default_per_model,
                now,
                lease_until: now + chrono_dur(self.lease),
            })
            .await?;
        for j in &jobs {
            self.signals.events.notify(j.id);
        }
        Ok(jobs)
    }

    /// Extends the lease by the lease length, and says whether a cancel was asked for.
    pub async fn heartbeat(&self, id: JobId, lease: &Lease) -> Result<Beat, StoreError> {
        self.store
            .heartbeat(id, lease, Utc::now() + chrono_dur(self.lease))
            .await
    }

    /// Heartbeats a run of this process every `every` until `stops.lost` fires; fires
    /// `stops.lost` when the lease is gone and `stops.cancel` when a cancel was asked for
    /// (through another process: a cancel through this one reaches the run at once).
    pub fn keep_alive(
        &self,
        id: JobId,
        lease: Lease,
        every: Duration,
        stops: &RunStops,
    ) -> JoinHandle<()> {
        let (this, lost, cancel) = (self.clone(), stops.lost.clone(), stops.cancel.clone());
        tokio::spawn(async move {
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
        })
    }

    /// Whether the job's upstream request is stored, so a run interrupted now goes on there.
    pub async fn upstream_submitted(&self, id: JobId) -> bool {
        let job = self.store.get_job(id, None).await.ok().flatten();
        job.is_some_and(|j| j.upstream.is_some_and(|u| u.request_id.is_some()))
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
            Action::Finish(outcome) => self.finish(job.id, lease, outcome, logs).await,
            Action::Release(err) => self.release(job.id, lease, err).await,
            Action::GiveBack => self.give_back(job.id, lease).await,
            Action::Abandon => {
                tracing::warn!(job_id = %job.id, "lease lost; the run was abandoned");
                Ended::Stale
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
        match self
            .store
            .finish_with_logs(id, lease, outcome, Utc::now(), logs)
            .await
        {
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
                Ended::Stale
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
        let ended = self.fenced(id, "release", released);
        if ended == Ended::Applied {
            self.signals.wake.notify_one();
        }
        ended
    }

    /// Gives the job back to the queue without using an attempt, fenced.
    pub async fn give_back(&self, id: JobId, lease: &Lease) -> Ended {
        let given = self.store.give_back(id, lease, Utc::now()).await;
        self.fenced(id, "giving back", given)
    }

    /// What a fenced write that returns the job to the queue did; the job's readers hear of
    /// it when it was applied.
    fn fenced(&self, id: JobId, what: &str, result: Result<bool, StoreError>) -> Ended {
        match result {
            Ok(true) => {
                self.signals.events.notify(id);
                Ended::Applied
            }
            Ok(false) => {
                tracing::warn!(job_id = %id, "lease lost before {what}");
                Ended::Stale
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
    pub async fn take_back(&self, which: Stale) -> Result<Requeued, StoreError> {
        let r = self.store.requeue_stale(which, Utc::now()).await?;
        if r.requeued + r.failed > 0 {
            self.signals.events.some_changed();
            self.signals.wake.notify_one();
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
