//! The runs in progress in this process, so that a cancel reaches a running job at once instead
//! of at its next heartbeat.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio_util::sync::CancellationToken;

use crate::ids::JobId;

/// Cancel tokens of this process's running jobs, by job id.
#[derive(Debug, Clone, Default)]
pub struct RunningJobs {
    inner: Arc<Mutex<Runs>>,
}

#[derive(Debug, Default)]
struct Runs {
    /// Each run's number and token.
    by_job: HashMap<JobId, (u64, CancellationToken)>,
    /// Numbers each registration, so a run that ends removes its own entry, never that of a
    /// later run of the same job (its lease taken back and the job claimed here again).
    registered: u64,
}

/// Removes its job from the registry when the run ends.
#[derive(Debug)]
pub struct Registration {
    jobs: RunningJobs,
    id: JobId,
    number: u64,
    pub token: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut m) = self.jobs.inner.lock()
            && m.by_job
                .get(&self.id)
                .is_some_and(|(n, _)| *n == self.number)
        {
            m.by_job.remove(&self.id);
        }
    }
}

impl RunningJobs {
    /// Registers a run; its token fires when someone cancels the job here.
    pub fn register(&self, id: JobId) -> Registration {
        let token = CancellationToken::new();
        let mut number = 0;
        if let Ok(mut m) = self.inner.lock() {
            m.registered += 1;
            number = m.registered;
            m.by_job.insert(id, (number, token.clone()));
        }
        Registration {
            jobs: self.clone(),
            id,
            number,
            token,
        }
    }

    /// Whether the job runs in this process.
    pub fn is_running(&self, id: JobId) -> bool {
        self.inner
            .lock()
            .map(|m| m.by_job.contains_key(&id))
            .unwrap_or(false)
    }

    /// Tells the job's run to stop, if it runs in this process. Other processes learn it from
    /// the store at their next heartbeat.
    pub fn cancel(&self, id: JobId) -> bool {
        let token = self
            .inner
            .lock()
            .ok()
            .and_then(|m| m.by_job.get(&id).map(|(_, t)| t.clone()));
        token.map(|t| t.cancel()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_earlier_run_that_ends_late_leaves_the_later_run_registered() {
        let jobs = RunningJobs::default();
        let id = JobId::generate();
        let earlier = jobs.register(id);
        let later = jobs.register(id);
        drop(earlier);
        assert!(jobs.cancel(id));
        assert!(later.token.is_cancelled());
    }

    #[test]
    fn cancel_reaches_a_registered_run_until_it_ends() {
        let jobs = RunningJobs::default();
        let id = JobId::generate();
        assert!(!jobs.is_running(id));
        let reg = jobs.register(id);
        assert!(jobs.is_running(id));
        assert!(jobs.cancel(id));
        assert!(reg.token.is_cancelled());
        drop(reg);
        assert!(!jobs.cancel(id));
    }
}
