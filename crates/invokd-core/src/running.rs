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
    inner: Arc<Mutex<HashMap<JobId, CancellationToken>>>,
}

/// Removes its job from the registry when the run ends.
#[derive(Debug)]
pub struct Registration {
    jobs: RunningJobs,
    id: JobId,
    pub token: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        if let Ok(mut m) = self.jobs.inner.lock() {
            m.remove(&self.id);
        }
    }
}

impl RunningJobs {
    /// Registers a run; its token fires when someone cancels the job here.
    pub fn register(&self, id: JobId) -> Registration {
        let token = CancellationToken::new();
        if let Ok(mut m) = self.inner.lock() {
            m.insert(id, token.clone());
        }
        Registration {
            jobs: self.clone(),
            id,
            token,
        }
    }

    /// Whether the job runs in this process.
    pub fn is_running(&self, id: JobId) -> bool {
        self.inner
            .lock()
            .map(|m| m.contains_key(&id))
            .unwrap_or(false)
    }

    /// Tells the job's run to stop, if it runs in this process. Other processes learn it from
    /// the store at their next heartbeat.
    pub fn cancel(&self, id: JobId) -> bool {
        let token = self.inner.lock().ok().and_then(|m| m.get(&id).cloned());
        token.map(|t| t.cancel()).is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
