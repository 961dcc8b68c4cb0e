//! The janitor: a task of its own for the sweeps no run makes. It takes back jobs whose lease
//! expired (their holder died), fails queued jobs past their start deadline, and applies
//! retention: the output and files of jobs that ended longer ago than the retention period are
//! removed.

use std::{sync::Arc, time::Duration};

use chrono::Utc;
use tokio_util::sync::CancellationToken;

use super::Lifecycle;
use crate::{blob::BlobStore, store::Stale};

/// Jobs whose retention is applied in one pass at most.
const RETENTION_BATCH: u32 = 500;

/// How often each sweep runs.
#[derive(Debug, Clone)]
pub struct JanitorConfig {
    /// How often expired leases are looked for (half the lease, so a dead holder's job waits
    /// at most one and a half leases).
    pub lease_sweep_every: Duration,
    /// How often start deadlines are checked.
    pub deadlines_every: Duration,
    /// How long ended jobs keep their output and files.
    pub retention: Duration,
    /// How often retention is applied.
    pub retention_every: Duration,
}

/// The sweeps' task, over the lifecycle (its notices) and the blob store (retention).
pub struct Janitor {
    pub lifecycle: Lifecycle,
    pub blobs: Arc<dyn BlobStore>,
    pub config: JanitorConfig,
}

impl Janitor {
    /// Sweeps until `shutdown` fires; each sweep runs once at the start.
    pub async fn run(self, shutdown: CancellationToken) {
        // An interval of zero would panic; a millisecond is as often as any sweep is useful.
        let every = |d: Duration| tokio::time::interval(d.max(Duration::from_millis(1)));
        let mut leases = every(self.config.lease_sweep_every);
        let mut deadlines = every(self.config.deadlines_every);
        let mut retention = every(self.config.retention_every);
        for t in [&mut leases, &mut deadlines, &mut retention] {
            t.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        }
        loop {
            tokio::select! {
                () = shutdown.cancelled() => return,
                _ = leases.tick() => self.take_back_expired().await,
                _ = deadlines.tick() => self.expire_deadlines().await,
                _ = retention.tick() => self.apply_retention().await,
            }
        }
    }

    async fn take_back_expired(&self) {
        match self.lifecycle.take_back(Stale::Expired).await {
            Ok(r) if r.requeued + r.failed > 0 => tracing::warn!(
                requeued = r.requeued,
                failed = r.failed,
                "took back jobs with expired leases"
            ),
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "requeue of expired leases failed"),
        }
    }

    async fn expire_deadlines(&self) {
        match self.lifecycle.expire_deadlines().await {
            Ok(0) => {}
            Ok(n) => tracing::info!(jobs = n, "queued jobs passed their start deadline"),
            Err(e) => tracing::error!(error = %e, "expiring start deadlines failed"),
        }
    }

    /// Removes the output and files of jobs that ended before the retention period.
    pub async fn apply_retention(&self) {
        let Ok(retention) = chrono::Duration::from_std(self.config.retention) else {
            return;
        };
        let store = self.lifecycle.store();
        let before = Utc::now() - retention;
        let ids = match store.jobs_to_expire(before, RETENTION_BATCH).await {
            Ok(ids) => ids,
            Err(e) => {
                tracing::warn!(error = %e, "listing jobs past retention failed");
                return;
            }
        };
        for id in &ids {
            // Files first: a crash in between leaves the job to be expired again, never a file
            // that no job accounts for.
            if let Err(e) = self.blobs.delete_prefix(&id.to_string()).await {
                tracing::warn!(job_id = %id, error = %e, "deleting expired files failed");
                continue;
            }
            if let Err(e) = store.mark_expired(*id, Utc::now()).await {
                tracing::warn!(job_id = %id, error = %e, "marking a job expired failed");
            }
        }
        if !ids.is_empty() {
            tracing::info!(jobs = ids.len(), "expired jobs past retention");
        }
    }
}
