//! How an attempt ended, and what that does to its job: the one decision every driver of the
//! lifecycle (the in-process dispatcher, the worker endpoints) takes the same way.

use std::time::Duration;

use crate::{
    job::{JobError, Outcome, cancelled_error},
    provider::{ProviderError, Retry, RunOutput},
};

/// How one attempt's run ended.
#[derive(Debug)]
pub enum RunEnd {
    /// The provider returned, with the model's output or its error.
    Returned(Result<RunOutput, ProviderError>),
    /// The files the input names could not be fetched; the provider never ran.
    InputsFailed(ProviderError),
    /// The run took longer than its limit and was stopped.
    TimedOut(Duration),
    /// The lease was lost (taken back or ended elsewhere): the run's result is not ours to store.
    LeaseLost,
    /// This process is stopping and the run was interrupted.
    Interrupted,
    /// The client cancelled the job.
    Canceled,
}

/// What is done to the job once its run ended; each is a single write fenced by the lease.
#[derive(Debug, Clone, PartialEq)]
pub enum Action {
    /// The job ends: completed, failed or cancelled.
    Finish(Outcome),
    /// Back to the queue for another attempt, or failed with this error if it has none left.
    Release(JobError),
    /// Back to the queue without using an attempt: not the job's fault (an upstream that cannot
    /// take it now, or a shutdown while an upstream runs it).
    GiveBack,
    /// Nothing: the lease is gone, so whoever holds the job now decides. Only its log lines are
    /// kept.
    Abandon,
}

/// The action for a run's end. `upstream_submitted`: whether the job's upstream request is
/// stored (it then goes on upstream, and the next attempt resumes it); read only on
/// [`RunEnd::Interrupted`].
pub fn action_for(end: &RunEnd, upstream_submitted: bool) -> Action {
    match end {
        RunEnd::Returned(Ok(out)) => Action::Finish(Outcome::Completed(out.output.clone())),
        RunEnd::Returned(Err(e)) => {
            let err = JobError::new(e.error_type.clone(), e.message.clone());
            match e.retry {
                Retry::Yes => Action::Release(err),
                Retry::Later => Action::GiveBack,
                Retry::No => Action::Finish(Outcome::Failed(err)),
            }
        }
        RunEnd::InputsFailed(e) => Action::Finish(Outcome::Failed(JobError::new(
            e.error_type.clone(),
            e.message.clone(),
        ))),
        RunEnd::TimedOut(limit) => Action::Finish(Outcome::Failed(JobError::new(
            "run_timeout",
            format!("the run took longer than its limit of {limit:?} and was stopped"),
        ))),
        RunEnd::LeaseLost => Action::Abandon,
        RunEnd::Canceled => Action::Finish(Outcome::Canceled(cancelled_error())),
        // A job running upstream goes on there and is resumed by the next process: its attempt
        // is not used up (else a last attempt would fail a job the upstream still runs).
        RunEnd::Interrupted if upstream_submitted => Action::GiveBack,
        RunEnd::Interrupted => Action::Release(JobError::new(
            "shutdown",
            "the server shut down while the job ran",
        )),
    }
}

impl Action {
    /// Whether the run's last log lines go in with this action's write (the job's log is then
    /// complete when it is seen ended); otherwise they are stored on their own first.
    pub fn carries_logs(&self) -> bool {
        matches!(self, Action::Finish(_))
    }
}

#[cfg(test)]
mod tests {
    use serde_json::{Map, json};

    use super::*;

    fn output() -> RunOutput {
        let mut output = Map::new();
        output.insert("images".into(), json!([]));
        RunOutput { output }
    }

    #[test]
    fn an_output_completes_the_job() {
        let end = RunEnd::Returned(Ok(output()));
        assert_eq!(
            action_for(&end, false),
            Action::Finish(Outcome::Completed(output().output))
        );
    }

    #[test]
    fn a_retryable_error_releases_the_job_with_its_error() {
        let end = RunEnd::Returned(Err(ProviderError::transient("runner_server_error", "boom")));
        assert_eq!(
            action_for(&end, false),
            Action::Release(JobError::new("runner_server_error", "boom"))
        );
    }

    #[test]
    fn a_permanent_error_fails_the_job() {
        let end = RunEnd::Returned(Err(ProviderError::permanent("bad_request", "no")));
        assert_eq!(
            action_for(&end, true),
            Action::Finish(Outcome::Failed(JobError::new("bad_request", "no")))
        );
    }

    #[test]
    fn an_unavailable_upstream_gives_the_job_back() {
        let end = RunEnd::Returned(Err(ProviderError::later("upstream_unavailable", "open")));
        assert_eq!(action_for(&end, false), Action::GiveBack);
    }

    #[test]
    fn inputs_that_cannot_be_fetched_fail_the_job_even_if_retryable() {
        let end = RunEnd::InputsFailed(ProviderError::transient("bad_request", "404"));
        assert_eq!(
            action_for(&end, false),
            Action::Finish(Outcome::Failed(JobError::new("bad_request", "404")))
        );
    }

    #[test]
    fn a_timeout_fails_the_job_and_says_the_limit() {
        let Action::Finish(Outcome::Failed(e)) =
            action_for(&RunEnd::TimedOut(Duration::from_secs(3)), false)
        else {
            panic!("a timeout fails the job");
        };
        assert_eq!(e.error_type, "run_timeout");
        assert!(e.message.contains("3s"), "{}", e.message);
    }

    #[test]
    fn a_lost_lease_abandons_the_run() {
        assert_eq!(action_for(&RunEnd::LeaseLost, true), Action::Abandon);
        assert_eq!(action_for(&RunEnd::LeaseLost, false), Action::Abandon);
    }

    #[test]
    fn a_cancel_ends_the_job_cancelled() {
        assert_eq!(
            action_for(&RunEnd::Canceled, false),
            Action::Finish(Outcome::Canceled(cancelled_error()))
        );
    }

    #[test]
    fn an_interrupted_run_uses_its_attempt_unless_an_upstream_runs_it() {
        assert_eq!(action_for(&RunEnd::Interrupted, true), Action::GiveBack);
        let Action::Release(e) = action_for(&RunEnd::Interrupted, false) else {
            panic!("an interrupted local run is released");
        };
        assert_eq!(e.error_type, "shutdown");
    }

    #[test]
    fn only_endings_carry_the_last_log_lines() {
        assert!(Action::Finish(Outcome::Canceled(cancelled_error())).carries_logs());
        assert!(!Action::GiveBack.carries_logs());
        assert!(!Action::Abandon.carries_logs());
        assert!(!Action::Release(JobError::new("x", "y")).carries_logs());
    }
}
