//! The runs in progress in this process: what is kept for each while it runs (`PerRun`), and
//! their cancel tokens, so that a cancel reaches a running job at once instead of at its next
//! heartbeat.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
};

use tokio_util::sync::CancellationToken;

use crate::ids::JobId;

/// Something kept for each run of this process, by job id, as long as the run's entry lives.
/// A run that ends removes only its own entry: a later run of the same job (its lease taken
/// back and the job claimed here again) may have put its own meanwhile.
#[derive(Debug)]
pub struct PerRun<V> {
    inner: Arc<Mutex<Entries<V>>>,
}

#[derive(Debug)]
struct Entries<V> {
    /// Each run's number and value.
    by_job: HashMap<JobId, (u64, V)>,
    /// Runs numbered so far.
    added: u64,
}

impl<V> Clone for PerRun<V> {
    fn clone(&self) -> Self {
        Self {
            inner: self.inner.clone(),
        }
    }
}

impl<V> Default for PerRun<V> {
    fn default() -> Self {
        Self {
            inner: Arc::new(Mutex::new(Entries {
                by_job: HashMap::new(),
                added: 0,
            })),
        }
    }
}

/// A run's entry in a [`PerRun`]; dropped, it removes the value if it is still this run's.
#[derive(Debug)]
pub struct RunEntry<V> {
    table: PerRun<V>,
    id: JobId,
    number: u64,
}

impl<V> Drop for RunEntry<V> {
    fn drop(&mut self) {
        if let Ok(mut m) = self.table.inner.lock()
            && m.by_job
                .get(&self.id)
                .is_some_and(|(n, _)| *n == self.number)
        {
            m.by_job.remove(&self.id);
        }
    }
}

impl<V> PerRun<V> {
    /// Puts the value of a run of `id` that starts, in place of any earlier run's.
    pub fn insert(&self, id: JobId, value: V) -> RunEntry<V> {
        let mut number = 0;
        if let Ok(mut m) = self.inner.lock() {
            m.added += 1;
            number = m.added;
            m.by_job.insert(id, (number, value));
        }
        RunEntry {
            table: self.clone(),
            id,
            number,
        }
    }

    /// `f` of the value of the job's run, if it runs here.
    pub fn with<R>(&self, id: JobId, f: impl FnOnce(&mut V) -> R) -> Option<R> {
        let mut m = self.inner.lock().ok()?;
        m.by_job.get_mut(&id).map(|(_, v)| f(v))
    }
}

/// Cancel tokens of this process's running jobs, by job id.
#[derive(Debug, Clone, Default)]
pub struct RunningJobs {
    tokens: PerRun<CancellationToken>,
}

/// Removes its job from the registry when the run ends.
#[derive(Debug)]
pub struct Registration {
    _entry: RunEntry<CancellationToken>,
    pub token: CancellationToken,
}

impl RunningJobs {
    /// Registers a run; its token fires when someone cancels the job here.
    pub fn register(&self, id: JobId) -> Registration {
        let token = CancellationToken::new();
        Registration {
            _entry: self.tokens.insert(id, token.clone()),
            token,
        }
    }

    /// Whether the job runs in this process.
    pub fn is_running(&self, id: JobId) -> bool {
        self.tokens.with(id, |_| ()).is_some()
    }

    /// Tells the job's run to stop, if it runs in this process. Other processes learn it from
    /// the store at their next heartbeat.
    pub fn cancel(&self, id: JobId) -> bool {
        let token = self.tokens.with(id, |t| t.clone());
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
