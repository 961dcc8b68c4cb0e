//! The worker's loop: takes jobs while it has free slots (never more), runs each with the
//! gateway's own `run_job` over a [`WorkerSink`], heartbeats the held jobs (their leases, log
//! lines and progress; the gateway's cancels and lost leases back), ends each run as the
//! lifecycle's `action_for` says, and on shutdown stops taking, lets runs finish within the
//! grace period, then hands the rest back.

use std::{
    collections::HashMap,
    sync::{
        Arc, Mutex,
        atomic::{AtomicU64, Ordering},
    },
    time::Duration,
};

use chrono::Utc;
use invokd_api::worker::{
    CompleteRequest, FailRequest, HeartbeatRequest, ReleaseRequest, TakeRequest, TakenJob,
    WorkerError, WorkerInfo, WorkerLogLine,
};
use invokd_core::{
    Job, JobId, JobStatus, KeyId, Outcome,
    catalog::{Catalog, Model},
    lifecycle::{Action, RunEnd, action_for},
    provider::{InputSource, Provider, RunContext},
    run::{RunLimits, RunStops, run_job},
};
use serde_json::{Map, Value, json};
use tokio::{task::JoinSet, time::Instant};
use tokio_util::sync::CancellationToken;

use super::{
    client::{Api, CallError},
    held::{Held, wire_line},
    sink::WorkerSink,
};

/// How often a worker without jobs says it is there (the protocol asks at least once a minute).
const IDLE_HEARTBEAT: Duration = Duration::from_secs(30);
/// Log lines and progress wait at most this long for the next heartbeat.
const NEWS_EVERY: Duration = Duration::from_millis(500);
/// After a failed take, the wait before the next.
const TAKE_PAUSE: Duration = Duration::from_secs(1);

/// What the agent runs and how.
pub struct Agent {
    pub api: Api,
    pub info: WorkerInfo,
    pub provider: Arc<dyn Provider>,
    pub inputs: Arc<dyn InputSource>,
    pub catalog: Catalog,
    pub limits: RunLimits,
    pub grace: Duration,
    pub take_wait: Duration,
    held: Held,
    /// The models of jobs this worker met that the built-in catalog does not hold.
    models: Mutex<HashMap<String, Arc<Model>>>,
    heartbeat_ms: AtomicU64,
}

impl Agent {
    #[expect(
        clippy::too_many_arguments,
        reason = "each is one setting, named at the call"
    )]
    pub fn new(
        api: Api,
        info: WorkerInfo,
        provider: Arc<dyn Provider>,
        inputs: Arc<dyn InputSource>,
        catalog: Catalog,
        limits: RunLimits,
        grace: Duration,
        take_wait: Duration,
    ) -> Self {
        Self {
            api,
            info,
            provider,
            inputs,
            catalog,
            limits,
            grace,
            take_wait,
            held: Held::default(),
            models: Mutex::new(HashMap::new()),
            heartbeat_ms: AtomicU64::new(10_000),
        }
    }

    /// Runs until `stop` fires and every run has ended or been handed back. An error: the
    /// gateway refused the worker's token.
    pub async fn run(self: Arc<Self>, stop: CancellationToken) -> anyhow::Result<()> {
        let beats_stop = CancellationToken::new();
        let beats = tokio::spawn(self.clone().heartbeats(beats_stop.clone()));
        let result = self.take_and_run(&stop).await;
        beats_stop.cancel();
        let _ = beats.await;
        result
    }

    async fn take_and_run(self: &Arc<Self>, stop: &CancellationToken) -> anyhow::Result<()> {
        let slots = self.info.slots.max(1);
        let mut runs = JoinSet::new();
        let mut refused = None;
        while !stop.is_cancelled() {
            while runs.try_join_next().is_some() {}
            let free = slots.saturating_sub(u32::try_from(runs.len()).unwrap_or(u32::MAX));
            if free == 0 {
                tokio::select! {
                    _ = runs.join_next() => {}
                    () = stop.cancelled() => {}
                }
                continue;
            }
            let req = TakeRequest {
                worker: self.info.clone(),
                free: free.min(invokd_api::worker::MAX_TAKE_JOBS),
                wait_ms: Some(self.take_wait.as_millis() as u64),
            };
            // A take in flight is never dropped: the jobs it claimed are ours to run or hand
            // back, and dropping it would leave them leased to no one until the lease lapses.
            match self.api.take(&req).await {
                Ok(taken) => {
                    for job in taken.jobs {
                        let agent = self.clone();
                        if stop.is_cancelled() {
                            runs.spawn(async move { agent.release(&job).await });
                        } else {
                            runs.spawn(async move { agent.run_one(job).await });
                        }
                    }
                }
                // A refused take (a revoked token, models outside the token's) is refused
                // again: the worker stops rather than ask forever.
                Err(CallError::Refused { status, message }) => {
                    refused = Some(anyhow::anyhow!(
                        "the gateway refused this worker ({status}): {message}"
                    ));
                    break;
                }
                Err(e) => {
                    tracing::warn!(error = %e, "taking jobs failed");
                    tokio::select! {
                        () = tokio::time::sleep(TAKE_PAUSE) => {}
                        () = stop.cancelled() => {}
                    }
                }
            }
        }
        if !runs.is_empty() {
            tracing::info!(
                running = runs.len(),
                grace_seconds = self.grace.as_secs(),
                "stopping: running jobs may finish within the grace period"
            );
        }
        let grace = tokio::time::sleep(self.grace);
        tokio::pin!(grace);
        loop {
            tokio::select! {
                next = runs.join_next() => if next.is_none() { break },
                () = &mut grace => {
                    // The rest are interrupted, and hand their jobs back.
                    self.held.interrupt_all();
                    while runs.join_next().await.is_some() {}
                    break;
                }
            }
        }
        refused.map_or(Ok(()), Err)
    }

    /// The model of a taken job: the built-in catalog's, else one made from the take's `kind`
    /// and `output` (a model of the gateway's `--catalog-dir`).
    fn model_for(&self, job: &TakenJob) -> Result<Arc<Model>, String> {
        if let Some(m) = self.catalog.get(&job.model) {
            return Ok(m.clone());
        }
        let mut models = self
            .models
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(m) = models.get(&job.model) {
            return Ok(m.clone());
        }
        let file = json!({
            "id": job.model,
            "title": job.model,
            "kind": job.kind,
            "description": "",
            "input": {"type": "object"},
            "output": job.output,
        });
        let model = Arc::new(
            Model::from_json(&job.model, &file.to_string())
                .map_err(|e| format!("this worker cannot read the model's output section: {e}"))?,
        );
        models.insert(job.model.clone(), model.clone());
        Ok(model)
    }

    /// Runs one taken job to its end and tells the gateway.
    async fn run_one(self: Arc<Self>, job: TakenJob) {
        self.heartbeat_ms
            .store(job.heartbeat_every_ms.max(100), Ordering::Relaxed);
        let (model, job_id) = match (self.model_for(&job), job.id.parse::<JobId>()) {
            (Ok(m), Ok(id)) => (m, id),
            (Err(why), _) => {
                self.fail(&job, "internal_error", why, false, Vec::new())
                    .await;
                return;
            }
            (_, Err(e)) => {
                tracing::warn!(job_id = %job.id, error = %e, "a job id that is not one; handing it back");
                self.release(&job).await;
                return;
            }
        };
        let stops = RunStops::default();
        self.held.insert(&job.id, &job.lease, stops.clone());
        let sink = Arc::new(WorkerSink::new(
            self.api.clone(),
            self.held.clone(),
            job.clone(),
        ));
        let ctx = RunContext::new(sink.clone(), job_id, job.attempt, CancellationToken::new());
        tracing::info!(job_id = %job.id, model = %job.model, attempt = job.attempt, "running a job");
        let end = run_job(
            &as_job(&job, job_id),
            model.clone(),
            self.provider.as_ref(),
            self.inputs.as_ref(),
            ctx,
            &stops,
            self.limits,
        )
        .await;
        // Its last lines go with the call that ends it; no heartbeat carries it after.
        let logs: Vec<WorkerLogLine> = self
            .held
            .take_logs(&job.id)
            .into_iter()
            .map(wire_line)
            .collect();
        self.held.remove(&job.id);
        self.end(&job, &model, &sink, end, logs).await;
    }

    /// Tells the gateway how the run ended, as the lifecycle's one rule says; a shutdown hands
    /// the job back without using its attempt.
    async fn end(
        &self,
        job: &TakenJob,
        model: &Model,
        sink: &WorkerSink,
        end: RunEnd,
        mut logs: Vec<WorkerLogLine>,
    ) {
        if matches!(end, RunEnd::Interrupted) {
            self.release(job).await;
            return;
        }
        match action_for(&end, false) {
            Action::Finish(Outcome::Completed(output)) => {
                let output = fit_output(sink.rewrite(output), model, &mut logs);
                let req = CompleteRequest {
                    lease: job.lease.clone(),
                    output,
                    logs: logs.clone(),
                };
                match self.api.complete(&job.id, &req).await {
                    Ok(_) => tracing::info!(job_id = %job.id, "job completed"),
                    // The output does not match the model's: the job fails with the reason,
                    // rather than waiting for its lease to lapse.
                    Err(CallError::Refused {
                        status: 422,
                        message,
                    }) => {
                        self.fail(job, "runtime_error", message, false, logs).await;
                    }
                    Err(e) => self.dropped(job, &e),
                }
            }
            Action::Finish(Outcome::Failed(e) | Outcome::Canceled(e)) => {
                self.fail(job, &e.error_type, e.message, false, logs).await;
            }
            Action::Release(e) => self.fail(job, &e.error_type, e.message, true, logs).await,
            Action::GiveBack => self.release(job).await,
            Action::Abandon => {
                tracing::info!(job_id = %job.id, "the lease was lost; the job is dropped");
            }
        }
    }

    async fn fail(
        &self,
        job: &TakenJob,
        error_type: &str,
        message: String,
        retry: bool,
        logs: Vec<WorkerLogLine>,
    ) {
        let req = FailRequest {
            lease: job.lease.clone(),
            error: WorkerError {
                message,
                error_type: Some(error_type.to_owned()),
                retry,
            },
            logs,
        };
        match self.api.fail(&job.id, &req).await {
            Ok(ended) => tracing::info!(job_id = %job.id, status = %ended.status, "job ended"),
            Err(e) => self.dropped(job, &e),
        }
    }

    async fn release(&self, job: &TakenJob) {
        let req = ReleaseRequest {
            lease: job.lease.clone(),
        };
        match self.api.release(&job.id, &req).await {
            Ok(ended) => {
                tracing::info!(job_id = %job.id, status = %ended.status, "job handed back")
            }
            Err(e) => self.dropped(job, &e),
        }
    }

    /// A call that ends a job failed for good: the gateway takes the job back when its lease
    /// lapses.
    fn dropped(&self, job: &TakenJob, e: &CallError) {
        tracing::warn!(job_id = %job.id, error = %e, "ending the job failed; its lease will lapse");
    }

    /// Renews the held jobs' leases every `heartbeat_every_ms`, sends their log lines and
    /// progress within [`NEWS_EVERY`], and passes the gateway's cancels and lost leases on.
    async fn heartbeats(self: Arc<Self>, stop: CancellationToken) {
        let mut last = Instant::now();
        loop {
            let period = if self.held.len() == 0 {
                IDLE_HEARTBEAT
            } else {
                Duration::from_millis(self.heartbeat_ms.load(Ordering::Relaxed))
            };
            let due = last + period;
            tokio::select! {
                () = tokio::time::sleep_until(due) => {}
                () = self.held.changed.notified() => {}
                () = stop.cancelled() => return,
            }
            if Instant::now() < due {
                // Woken by news: sent with others that come soon after, or at the next beat.
                tokio::select! {
                    () = tokio::time::sleep_until((last + NEWS_EVERY).max(Instant::now())) => {}
                    () = stop.cancelled() => return,
                }
                if !self.held.has_news() {
                    continue;
                }
            }
            last = Instant::now();
            let req = HeartbeatRequest {
                worker: self.info.clone(),
                jobs: self.held.heartbeat(),
            };
            match self.api.heartbeat(&req).await {
                Ok(answer) => {
                    for id in &answer.cancel {
                        tracing::info!(job_id = %id, "the job's cancel was asked; stopping it");
                        self.held.cancel(id);
                    }
                    for id in &answer.lost {
                        self.held.lost(id);
                    }
                }
                Err(e) => tracing::warn!(error = %e, "heartbeat failed"),
            }
        }
    }
}

/// `output` with only the model's output fields, which is all the gateway takes: any other
/// (the emulator's notice that it is the emulator, a program's extra fields) goes into the
/// job's log instead, so nothing it said is lost.
fn fit_output(
    mut output: Map<String, Value>,
    model: &Model,
    logs: &mut Vec<WorkerLogLine>,
) -> Map<String, Value> {
    let fields = &model.output.fields;
    output.retain(|name, value| {
        let keep = fields.contains(name);
        if !keep {
            logs.push(WorkerLogLine {
                message: format!("output field {name} (not one of the model's): {value}"),
                level: Some("INFO".into()),
                timestamp: Some(Utc::now()),
            });
        }
        keep
    });
    output
}

/// A taken job as `run_job` reads it: its id, attempt and input; the rest is the gateway's
/// business (the run's time limit is this worker's, or the model's).
fn as_job(job: &TakenJob, id: JobId) -> Job {
    let now = Utc::now();
    Job {
        id,
        key_id: KeyId::from(uuid::Uuid::nil()),
        project: String::new(),
        model_id: job.model.clone(),
        input: Arc::new(job.input.clone()),
        tags: Vec::new(),
        status: JobStatus::InProgress,
        priority: 0,
        created_at: now,
        started_at: Some(now),
        completed_at: None,
        attempt: job.attempt,
        max_attempts: job.attempt,
        lease: None,
        output: None,
        error: None,
        start_deadline: None,
        cancel_requested: false,
        webhook_url: None,
        run_timeout: None,
        expired_at: None,
        upstream: None,
    }
}
