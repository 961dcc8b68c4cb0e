//! The dispatcher: claims queued jobs under a lease, runs them on the provider within the
//! concurrency limits, heartbeats their leases, finishes them (fenced by the lease), and takes
//! back jobs whose lease expired.

use std::{
    collections::{BTreeMap, HashMap},
    sync::{Arc, Mutex},
};

use chrono::Utc;
use invokd_core::{
    Job, JobError, Lease, Outcome,
    blob::BlobStore,
    catalog::Catalog,
    events::Signals,
    job::cancelled_error,
    provider::{LogLine, Retry, RunContext, RunRequest},
    store::{Beat, ClaimRequest, Stale, Store},
};
use tokio::{sync::Notify, task::JoinSet};
use tokio_util::sync::CancellationToken;

use crate::{config::DispatchConfig, input_fetch::InputFetcher, routing::Providers};

/// Runs jobs until `shutdown` fires.
pub struct Dispatcher {
    pub store: Arc<dyn Store>,
    pub catalog: Arc<Catalog>,
    /// Which provider runs each model.
    pub providers: Arc<Providers>,
    pub blobs: Arc<dyn BlobStore>,
    /// Shared with the job service: wake-ups, cancels, job-change news.
    pub signals: Signals,
    pub config: DispatchConfig,
    /// This process's lease owner id.
    pub owner: String,
    /// Fetches the files inputs name.
    pub inputs: InputFetcher,
}

/// Jobs running now, by model.
#[derive(Default)]
struct Running {
    by_model: HashMap<String, u32>,
    total: u32,
}

/// How a run ended.
enum Ended<T> {
    Ran(T),
    LeaseLost,
    Interrupted,
    Canceled,
}

fn chrono_dur(d: std::time::Duration) -> chrono::Duration {
    chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX)
}

impl Dispatcher {
    /// The dispatch loop. On shutdown it stops claiming, gives running jobs the grace period,
    /// then interrupts the rest and hands them back to the queue.
    pub async fn run(self, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let interrupt = CancellationToken::new();
        let running = Arc::new(Mutex::new(Running::default()));
        let freed = Arc::new(Notify::new());
        let mut tasks = JoinSet::new();
        let mut next_sweep = tokio::time::Instant::now();
        let mut next_deadlines = tokio::time::Instant::now();
        let mut next_janitor = tokio::time::Instant::now();

        loop {
            let now = tokio::time::Instant::now();
            if now >= next_sweep {
                this.sweep_expired().await;
                next_sweep = now + this.config.lease / 2;
            }
            if now >= next_janitor {
                this.expire_old().await;
                next_janitor = now + this.config.janitor_every;
            }
            if now >= next_deadlines {
                this.expire_deadlines().await;
                next_deadlines = now + this.config.poll;
            }
            for job in this.claim(&running).await {
                let (this, running, freed) = (this.clone(), running.clone(), freed.clone());
                let interrupt = interrupt.clone();
                tasks.spawn(async move {
                    let model = job.model_id.clone();
                    this.run_job(job, interrupt).await;
                    if let Ok(mut r) = running.lock() {
                        r.total = r.total.saturating_sub(1);
                        if let Some(n) = r.by_model.get_mut(&model) {
                            *n = n.saturating_sub(1);
                        }
                    }
                    freed.notify_one();
                });
            }
            while tasks.try_join_next().is_some() {}
            tokio::select! {
                () = shutdown.cancelled() => break,
                () = this.signals.wake.notified() => {}
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
        // Handing back is a single store write per job; if even that hangs, the next start's
        // recovery requeues what is left.
        let handback = async { while tasks.join_next().await.is_some() {} };
        if tokio::time::timeout(std::time::Duration::from_secs(5), handback)
            .await
            .is_err()
        {
            tasks.abort_all();
        }
    }

    async fn sweep_expired(&self) {
        match self.store.requeue_stale(Stale::Expired, Utc::now()).await {
            Ok(r) if r.requeued + r.failed > 0 => {
                tracing::warn!(
                    requeued = r.requeued,
                    failed = r.failed,
                    "took back jobs with expired leases"
                );
                self.signals.events.some_changed();
                self.signals.wake.notify_one();
            }
            Ok(_) => {}
            Err(e) => tracing::error!(error = %e, "requeue of expired leases failed"),
        }
    }

    /// Retention: removes the output and files of jobs that ended longer ago than `retention`.
    async fn expire_old(&self) {
        let Ok(retention) = chrono::Duration::from_std(self.config.retention) else {
            return;
        };
        let before = Utc::now() - retention;
        let ids = match self.store.jobs_to_expire(before, 500).await {
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
            if let Err(e) = self.store.mark_expired(*id, Utc::now()).await {
                tracing::warn!(job_id = %id, error = %e, "marking a job expired failed");
            }
        }
        if !ids.is_empty() {
            tracing::info!(jobs = ids.len(), "expired jobs past retention");
        }
    }

    /// Fails queued jobs whose start deadline passed (they are never claimed either way).
    async fn expire_deadlines(&self) {
        match self.store.expire_deadlines(Utc::now()).await {
            Ok(0) => {}
            Ok(n) => {
                self.signals.events.some_changed();
                tracing::info!(jobs = n, "queued jobs passed their start deadline");
            }
            Err(e) => tracing::error!(error = %e, "expiring start deadlines failed"),
        }
    }

    /// Claims as many jobs as the limits allow, and counts them as running.
    async fn claim(&self, running: &Mutex<Running>) -> Vec<Job> {
        let (limit, capacity) = {
            let Ok(r) = running.lock() else {
                return Vec::new();
            };
            let per_model = self.config.per_model_concurrency;
            let mut capacity: BTreeMap<String, u32> = r
                .by_model
                .iter()
                .filter(|(_, n)| **n > 0)
                .map(|(m, n)| (m.clone(), per_model.saturating_sub(*n)))
                .collect();
            // A provider whose upstream is failing (circuit open) starts nothing: its jobs wait
            // QUEUED instead of using up their attempts.
            for m in self.catalog.iter() {
                if self
                    .providers
                    .for_model(&m.id)
                    .is_some_and(|p| !p.available())
                {
                    capacity.insert(m.id.clone(), 0);
                }
            }
            (
                self.config.max_concurrency.saturating_sub(r.total),
                capacity,
            )
        };
        if limit == 0 {
            return Vec::new();
        }
        let now = Utc::now();
        let req = ClaimRequest {
            owner: &self.owner,
            limit,
            capacity: &capacity,
            default_capacity: self.config.per_model_concurrency,
            now,
            lease_until: now + chrono_dur(self.config.lease),
        };
        let jobs = match crate::metrics::timed("claim_jobs", self.store.claim_jobs(req)).await {
            Ok(jobs) => jobs,
            Err(e) => {
                tracing::error!(error = %e, "claiming jobs failed");
                return Vec::new();
            }
        };
        for j in &jobs {
            self.signals.events.notify(j.id);
            let waited = (now - j.created_at).num_milliseconds().max(0) as f64 / 1000.0;
            crate::metrics::job_started(&j.model_id, self.providers.name_for(&j.model_id), waited);
        }
        if let Ok(mut r) = running.lock() {
            for j in &jobs {
                r.total += 1;
                *r.by_model.entry(j.model_id.clone()).or_default() += 1;
            }
        }
        jobs
    }

    /// One attempt of one job, from claim to a fenced finish. `interrupt` (shutdown) stops the
    /// run and hands the job back to the queue.
    async fn run_job(&self, job: Job, interrupt: CancellationToken) {
        let Some(lease) = job.lease.clone() else {
            return;
        };
        let Some(model) = self.catalog.get(&job.model_id).cloned() else {
            let e = JobError::new(
                "bad_request",
                format!("model {} is no longer in the catalog", job.model_id),
            );
            self.finish(&job, &lease, Outcome::Failed(e), &[]).await;
            return;
        };
        let Some(provider) = self.providers.for_model(&job.model_id).cloned() else {
            let e = JobError::new(
                "internal_error",
                format!("no provider is configured for model {}", job.model_id),
            );
            self.finish(&job, &lease, Outcome::Failed(e), &[]).await;
            return;
        };
        tracing::info!(job_id = %job.id, model = %job.model_id, attempt = job.attempt, provider = provider.name(), "job started");

        // `lost` fires when the lease is lost, so a fenced-off run stops working; `cancel` when
        // the client cancels (here, or seen by the heartbeat when cancelled through another
        // process); the provider is told through `provider_stop`.
        let lost = CancellationToken::new();
        let registration = self.signals.running.register(job.id);
        let cancel = registration.token.clone();
        if job.cancel_requested {
            cancel.cancel();
        }
        let heartbeat = self.heartbeat(&job, lease.clone(), lost.clone(), cancel.clone());
        let provider_stop = CancellationToken::new();
        let ctx = RunContext::new(
            self.blobs.clone(),
            job.id,
            job.attempt,
            provider_stop.clone(),
        )
        .with_log_store(self.store.clone(), self.signals.events.clone())
        .with_upstream_store(self.store.clone(), lease.clone());
        let files = match self.inputs.fetch_all(&job.input).await {
            Ok(files) => files,
            Err(e) => {
                lost.cancel();
                heartbeat.abort();
                let err = JobError::new(e.error_type.clone(), e.message.clone());
                self.finish(&job, &lease, Outcome::Failed(err), &[]).await;
                return;
            }
        };
        let req = RunRequest {
            job_id: job.id,
            attempt: job.attempt,
            model,
            input: job.input.clone(),
            files,
            priority: job.priority,
            start_deadline: job.start_deadline,
            upstream: job.upstream.clone(),
        };
        let run_timeout = job
            .run_timeout
            .or(req.model.run_timeout)
            .unwrap_or(self.config.run_timeout);
        let run = provider.run(req, ctx.clone());
        tokio::pin!(run);
        let result = tokio::select! {
            r = &mut run => Ended::Ran(Ok(r)),
            () = tokio::time::sleep(run_timeout) => Ended::Ran(Err(())),
            () = lost.cancelled() => Ended::LeaseLost,
            () = interrupt.cancelled() => Ended::Interrupted,
            () = cancel.cancelled() => Ended::Canceled,
        };
        provider_stop.cancel();
        if matches!(result, Ended::Canceled | Ended::Ran(Err(()))) {
            // Let the provider pass the stop on (e.g. cancel upstream) before the job is closed.
            let _ = tokio::time::timeout(self.config.cancel_grace, &mut run).await;
        }
        lost.cancel();
        heartbeat.abort();
        drop(registration);
        // The run's last lines go in with the write that ends the job; the other endings
        // store them first.
        let logs = ctx.take_logs().await;

        match result {
            Ended::LeaseLost => {
                self.store_logs(&job, &logs).await;
                tracing::warn!(job_id = %job.id, "lease lost; the run was abandoned")
            }
            Ended::Canceled => {
                self.finish(&job, &lease, Outcome::Canceled(cancelled_error()), &logs)
                    .await;
            }
            Ended::Interrupted => {
                self.store_logs(&job, &logs).await;
                // A job running upstream goes on there and is resumed by the next process: its
                // attempt is not used up (else a last attempt would fail a job fal still runs).
                let upstream = self.store.get_job(job.id, None).await.ok().flatten();
                if upstream.is_some_and(|j| j.upstream.is_some_and(|u| u.request_id.is_some())) {
                    self.give_back(&job, &lease).await;
                } else {
                    let e = JobError::new("shutdown", "the server shut down while the job ran");
                    self.release(&job, &lease, e).await;
                }
            }
            Ended::Ran(Err(_)) => {
                let e = JobError::new(
                    "run_timeout",
                    format!(
                        "the run took longer than its limit of {run_timeout:?} and was stopped"
                    ),
                );
                self.finish(&job, &lease, Outcome::Failed(e), &logs).await;
            }
            Ended::Ran(Ok(Ok(out))) => {
                self.finish(&job, &lease, Outcome::Completed(out.output), &logs)
                    .await;
            }
            Ended::Ran(Ok(Err(e))) => {
                crate::metrics::provider_error(provider.name(), &e.error_type);
                let err = JobError::new(e.error_type.clone(), e.message.clone());
                match e.retry {
                    Retry::Yes => {
                        tracing::warn!(job_id = %job.id, error = %e, "attempt failed; retrying if attempts remain");
                        self.store_logs(&job, &logs).await;
                        self.release(&job, &lease, err).await;
                    }
                    Retry::Later => {
                        tracing::warn!(job_id = %job.id, error = %e, "upstream unavailable; the job waits in the queue");
                        self.store_logs(&job, &logs).await;
                        self.give_back(&job, &lease).await;
                    }
                    Retry::No => self.finish(&job, &lease, Outcome::Failed(err), &logs).await,
                }
            }
        }
    }

    /// Stores a run's last log lines when the job does not end with them.
    async fn store_logs(&self, job: &Job, logs: &[LogLine]) {
        invokd_core::log_sink::store_now(self.store.as_ref(), &self.signals.events, job.id, logs)
            .await;
    }

    /// Gives the job back to the queue (or fails it if it has no attempt left), fenced.
    async fn release(&self, job: &Job, lease: &Lease, err: JobError) {
        match self.store.release(job.id, lease, err, Utc::now()).await {
            Ok(true) => {
                self.signals.wake.notify_one();
                self.signals.events.notify(job.id);
            }
            Ok(false) => tracing::warn!(job_id = %job.id, "lease lost before release"),
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "release failed; the lease will expire")
            }
        }
    }

    /// Gives the job back to the queue without using an attempt, fenced.
    async fn give_back(&self, job: &Job, lease: &Lease) {
        match self.store.give_back(job.id, lease, Utc::now()).await {
            Ok(true) => self.signals.events.notify(job.id),
            Ok(false) => tracing::warn!(job_id = %job.id, "lease lost before giving back"),
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "giving back failed; the lease will expire")
            }
        }
    }

    /// Extends the lease every `heartbeat`; fires `lost` when the lease is gone and `cancel`
    /// when the store says the job was cancelled.
    fn heartbeat(
        &self,
        job: &Job,
        lease: Lease,
        lost: CancellationToken,
        cancel: CancellationToken,
    ) -> tokio::task::JoinHandle<()> {
        let (store, id, every, extend) = (
            self.store.clone(),
            job.id,
            self.config.heartbeat,
            chrono_dur(self.config.lease),
        );
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(every);
            tick.tick().await;
            loop {
                tokio::select! {
                    () = lost.cancelled() => return,
                    _ = tick.tick() => {}
                }
                match store.heartbeat(id, &lease, Utc::now() + extend).await {
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

    /// Ends the job with the run's last log lines, fenced.
    async fn finish(&self, job: &Job, lease: &Lease, outcome: Outcome, logs: &[LogLine]) {
        let status = match &outcome {
            Outcome::Completed(_) => "COMPLETED",
            Outcome::Failed(_) => "FAILED",
            Outcome::Canceled(_) => "CANCELED",
        };
        let now = Utc::now();
        let finished = crate::metrics::timed(
            "finish",
            self.store
                .finish_with_logs(job.id, lease, outcome, now, logs),
        )
        .await;
        match finished {
            Ok(true) => {
                self.signals.events.notify(job.id);
                let ran = job
                    .started_at
                    .map_or(0.0, |t| (now - t).num_milliseconds().max(0) as f64 / 1000.0);
                crate::metrics::job_finished(
                    &job.model_id,
                    self.providers.name_for(&job.model_id),
                    status,
                    ran,
                );
                tracing::info!(job_id = %job.id, status, "job finished")
            }
            Ok(false) => {
                // The lines went in all the same.
                if !logs.is_empty() {
                    self.signals.events.notify_logs(job.id);
                }
                tracing::warn!(job_id = %job.id, "lease lost; result discarded")
            }
            Err(e) => {
                tracing::error!(job_id = %job.id, error = %e, "finishing failed; the lease will expire and the job rerun");
                // They went back with the failed write: the last lines often say what failed.
                self.store_logs(job, logs).await;
            }
        }
    }
}
