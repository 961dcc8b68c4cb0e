//! Running one attempt of a job on a provider, wherever it runs: the inputs' files fetched, the
//! provider run until it returns or something stops it (its time limit, a lost lease, the
//! process stopping, the client's cancel), and how it ended. What that does to the job is the
//! lifecycle's decision ([`crate::lifecycle::action_for`]).

pub mod log_sink;
mod store_sink;

use std::{sync::Arc, time::Duration};

use tokio_util::sync::CancellationToken;

pub use store_sink::StoreSink;

use crate::{
    Job,
    catalog::Model,
    lifecycle::RunEnd,
    provider::{InputSource, Provider, RunContext, RunRequest},
};

/// What stops a run from outside.
#[derive(Debug, Clone, Default)]
pub struct RunStops {
    /// The lease is gone: stop, the result is not ours.
    pub lost: CancellationToken,
    /// The process is stopping: stop, the job goes back to the queue.
    pub interrupt: CancellationToken,
    /// The client cancelled the job.
    pub cancel: CancellationToken,
}

/// The time limits of one run.
#[derive(Debug, Clone, Copy)]
pub struct RunLimits {
    /// The run's limit when neither the job nor its model sets one.
    pub run_timeout: Duration,
    /// After a cancel or a time-out, how long the provider gets to pass the stop on (e.g.
    /// cancel upstream) before the job is closed.
    pub cancel_grace: Duration,
}

/// Runs one attempt of a claimed `job`. `ctx`'s cancel token is the provider's: it fires when
/// the run is stopped, whatever stopped it.
pub async fn run_job(
    job: &Job,
    model: Arc<Model>,
    provider: &dyn Provider,
    inputs: &dyn InputSource,
    ctx: RunContext,
    stops: &RunStops,
    limits: RunLimits,
) -> RunEnd {
    let files = match inputs.fetch_all(&job.input).await {
        Ok(files) => files,
        Err(e) => return RunEnd::InputsFailed(e),
    };
    let run_timeout = job
        .run_timeout
        .or(model.run_timeout)
        .unwrap_or(limits.run_timeout);
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
    let provider_stop = ctx.cancel.clone();
    let run = provider.run(req, ctx);
    tokio::pin!(run);
    let end = tokio::select! {
        r = &mut run => RunEnd::Returned(r),
        () = tokio::time::sleep(run_timeout) => RunEnd::TimedOut(run_timeout),
        () = stops.lost.cancelled() => RunEnd::LeaseLost,
        () = stops.interrupt.cancelled() => RunEnd::Interrupted,
        () = stops.cancel.cancelled() => RunEnd::Canceled,
    };
    provider_stop.cancel();
    if matches!(end, RunEnd::Canceled | RunEnd::TimedOut(_)) {
        // Let the provider pass the stop on (e.g. cancel upstream) before the job is closed.
        let _ = tokio::time::timeout(limits.cancel_grace, &mut run).await;
    }
    end
}
