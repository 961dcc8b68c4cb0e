//! The in-process dispatcher: a driver of the lifecycle service. It claims queued jobs within
//! this process's capacity and runs each on its provider (`run_job`), while the lifecycle
//! heartbeats the lease, decides what the run's end does to the job and writes it, fenced, with
//! its notices. On shutdown it stops claiming, gives running jobs the grace period, then
//! interrupts the rest, which go back to the queue.

use std::sync::Arc;

use invokd_core::{
    Job, JobError, Outcome,
    blob::BlobStore,
    catalog::Catalog,
    lifecycle::{Action, Capacity, Lifecycle},
    provider::RunContext,
    run::{RunLimits, RunStops, StoreSink, run_job},
};
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{config::DispatchConfig, input_fetch::InputFetcher, provider_routes::Providers};

/// Runs jobs until `shutdown` fires.
pub struct Dispatcher {
    pub lifecycle: Lifecycle,
    pub catalog: Arc<Catalog>,
    /// Which provider runs each model.
    pub providers: Arc<Providers>,
    pub blobs: Arc<dyn BlobStore>,
    pub config: DispatchConfig,
    /// The lease owner this process's runs are recorded under.
    pub owner: String,
    /// Fetches the files inputs name.
    pub inputs: InputFetcher,
}

impl Dispatcher {
    /// The dispatch loop. On shutdown it stops claiming, gives running jobs the grace period,
    /// then interrupts the rest and hands them back to the queue.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let capacity = Arc::new(Capacity::new(
            this.config.per_model_concurrency,
            this.config.max_concurrency,
        ));
        let interrupt = CancellationToken::new();
        let freed = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let wake = this.lifecycle.signals().wake.clone();

        loop {
            for job in this.claim(&capacity).await {
                let slot = Slot {
                    capacity: capacity.clone(),
                    model: job.model_id.clone(),
                    freed: freed.clone(),
                };
                let (this, interrupt) = (this.clone(), interrupt.clone());
                tasks.spawn(async move {
                    this.run_one(job, interrupt).await;
                    drop(slot);
                });
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = wake.notified() => {}
                () = freed.notified() => {}
                () = tokio::time::sleep(this.config.poll) => {}
            }
        }

        tracing::info!(
            running = tasks.len(),
            "dispatcher stopping; waiting for running jobs"
        );
        let grace = tokio::time::sleep(this.config.shutdown_grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = tasks.join_next() => if next.is_none() { return },
                () = &mut grace => break,
            }
        }
        tracing::warn!(
            interrupted = tasks.len(),
            "grace period over; handing unfinished jobs back to the queue"
        );
        interrupt.cancel();
        // Handing back is a single store write per job; if even that hangs, the next start
        // takes back what is left.
        let handback = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(std::time::Duration::from_secs(5), handback)
            .await
            .is_err()
        {
            tasks.abort_all();
        }
    }

    /// Claims as many jobs as the capacity allows, and counts them as running.
    async fn claim(&self, capacity: &Capacity) -> Vec<Job> {
        // A provider whose upstream is failing (circuit open) starts nothing: its jobs wait
        // QUEUED instead of using up their attempts. Workers' models are never claimed here.
        let paused = self.catalog.iter().map(|m| m.id.as_str()).filter(|id| {
            self.providers.is_workers(id)
                || self.providers.for_model(id).is_some_and(|p| !p.available())
        });
        let Some(room) = capacity.room(paused) else {
            return Vec::new();
        };
        let jobs = match self.lifecycle.claim(&self.owner, &room).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "claiming jobs failed");
                return Vec::new();
            }
        };
        capacity.started(&jobs);
        jobs
    }

    /// One attempt of one claimed job, from claim to the write its end calls for. `interrupt`
    /// (shutdown) stops the run and hands the job back to the queue.
    async fn run_one(&self, job: Job, interrupt: CancellationToken) {
        let Some(lease) = job.lease.clone() else {
            return;
        };
        let Some(model) = self.catalog.get(&job.model_id).cloned() else {
            let e = JobError::new(
                "bad_request",
                format!("model {} is no longer in the catalog", job.model_id),
            );
            let failed = Action::Finish(Outcome::Failed(e));
            self.lifecycle.end_run(&job, &lease, failed, &[]).await;
            return;
        };
        let Some(provider) = self.providers.for_model(&job.model_id).cloned() else {
            let e = JobError::new(
                "internal_error",
                format!("no provider is configured for model {}", job.model_id),
            );
            let failed = Action::Finish(Outcome::Failed(e));
            self.lifecycle.end_run(&job, &lease, failed, &[]).await;
            return;
        };
        tracing::info!(job_id = %job.id, model = %job.model_id, attempt = job.attempt, provider = provider.name(), "job started");

        // A cancel through this process reaches the run at once through its registration; one
        // through another process, at the next heartbeat.
        let signals = self.lifecycle.signals();
        let registration = signals.running.register(job.id);
        let stops = RunStops {
            lost: CancellationToken::new(),
            interrupt,
            cancel: registration.token.clone(),
        };
        if job.cancel_requested {
            stops.cancel.cancel();
        }
        let heartbeat = self.lifecycle.keep_alive(job.id, lease.clone(), &stops);
        let sink = StoreSink::new(&self.lifecycle, self.blobs.clone(), job.id, lease.clone());
        let ctx = RunContext::new(
            Arc::new(sink),
            job.id,
            job.attempt,
            CancellationToken::new(),
        );
        let limits = RunLimits {
            run_timeout: self.config.run_timeout,
            cancel_grace: self.config.cancel_grace,
        };
        let end = run_job(
            &job,
            model,
            provider.as_ref(),
            &self.inputs,
            ctx.clone(),
            &stops,
            limits,
        )
        .await;
        stops.lost.cancel();
        drop(heartbeat);
        drop(registration);
        // The run's last lines go in with the write that ends the job; the other endings
        // store them first.
        let logs = ctx.take_logs().await;

        self.lifecycle.end_attempt(&job, &lease, &end, &logs).await;
    }
}

/// A run's place in the capacity, given back when its task ends, however it ends.
struct Slot {
    capacity: Arc<Capacity>,
    model: String,
    freed: Arc<Notify>,
}

impl Drop for Slot {
    fn drop(&mut self) {
        self.capacity.ended(&self.model);
        self.freed.notify_one();
    }
}
