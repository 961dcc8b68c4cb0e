//! Jobs kept in memory by the store that owns its database alone (the embedded SQLite file),
//! so that status polls are answered without a read. Every committed write says what it did
//! to the jobs through one call, [`JobCache::wrote`], which puts the rows it wrote or forgets
//! the jobs it changed; a read fills the cache only if the job did not change while the read
//! was on its way, so the cache never holds an older row than the database.

use std::{collections::VecDeque, sync::Mutex};

use hashlink::LruCache;
use invokd_core::{Job, JobId};

/// Jobs held at most; the least recently used go first.
const CAPACITY: usize = 4096;
/// Changes remembered to check reads against; a read that spans more is not cached.
const RECENT: usize = 1024;

/// What a committed write did to the jobs.
#[derive(Debug, Clone, Copy)]
pub(crate) enum Wrote<'a> {
    /// These rows, as the write left them.
    Rows(&'a [Job]),
    /// This job changed; its row was not returned.
    Job(JobId),
    /// Jobs it did not name may have changed.
    AnyJobs,
    /// No job changed (keys, settings, deliveries, a fenced write whose lease was gone).
    NoJob,
}

/// A change counter, taken before a read and handed back with its row.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Generation(u64);

#[derive(Debug)]
pub(crate) struct JobCache {
    inner: Mutex<Inner>,
}

#[derive(Debug)]
struct Inner {
    jobs: LruCache<JobId, Job>,
    /// Counts changes; each has the next number.
    generation: u64,
    /// The last changes, oldest first, by number.
    recent: VecDeque<(u64, JobId)>,
    /// The number of the last change to every job at once.
    cleared: u64,
}

impl Default for JobCache {
    fn default() -> Self {
        Self {
            inner: Mutex::new(Inner {
                jobs: LruCache::new(CAPACITY),
                generation: 0,
                recent: VecDeque::with_capacity(RECENT),
                cleared: 0,
            }),
        }
    }
}

impl JobCache {
    pub(crate) fn get(&self, id: JobId) -> Option<Job> {
        self.inner.lock().ok()?.jobs.get(&id).cloned()
    }

    /// Taken before a read whose row may fill the cache.
    pub(crate) fn generation(&self) -> Generation {
        Generation(self.inner.lock().map_or(u64::MAX, |i| i.generation))
    }

    /// Keeps a row read from the database, unless the job changed since `seen`.
    pub(crate) fn fill(&self, job: &Job, seen: Generation) {
        if let Ok(mut i) = self.inner.lock()
            && !i.changed_since(job.id, seen.0)
        {
            i.jobs.insert(job.id, job.clone());
        }
    }

    /// Hears what a committed write did, before its writer is answered: the one way the cache
    /// learns of changes.
    pub(crate) fn wrote(&self, wrote: Wrote<'_>) {
        match wrote {
            Wrote::Rows(jobs) => jobs.iter().for_each(|job| self.put(job)),
            Wrote::Job(id) => self.forget(id),
            Wrote::AnyJobs => self.clear(),
            Wrote::NoJob => {}
        }
    }

    /// Keeps a row a committed write returned.
    fn put(&self, job: &Job) {
        if let Ok(mut i) = self.inner.lock() {
            i.changed(job.id);
            i.jobs.insert(job.id, job.clone());
        }
    }

    /// Drops a job a committed write changed without returning its row.
    fn forget(&self, id: JobId) {
        if let Ok(mut i) = self.inner.lock() {
            i.changed(id);
            i.jobs.remove(&id);
        }
    }

    /// Drops every job: a committed write changed rows it did not name.
    fn clear(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.generation += 1;
            i.cleared = i.generation;
            i.jobs.clear();
        }
    }
}

impl Inner {
    fn changed(&mut self, id: JobId) {
        self.generation += 1;
        if self.recent.len() == RECENT {
            self.recent.pop_front();
        }
        self.recent.push_back((self.generation, id));
    }

    fn changed_since(&self, id: JobId, seen: u64) -> bool {
        if self.generation <= seen {
            return false;
        }
        if self.cleared > seen {
            return true;
        }
        // Changes seen+1..=generation must all still be remembered to know this one was not.
        match self.recent.front() {
            Some(&(oldest, _)) if oldest <= seen + 1 => self
                .recent
                .iter()
                .rev()
                .take_while(|(g, _)| *g > seen)
                .any(|(_, changed)| *changed == id),
            _ => true,
        }
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use chrono::Utc;
    use invokd_core::{KeyId, NewJob};

    /// A new job of model "m", as the crate's unit tests make them.
    pub(crate) fn new_job() -> NewJob {
        NewJob {
            id: JobId::generate(),
            key_id: KeyId::generate(),
            project: "p".into(),
            model_id: "m".into(),
            input: Default::default(),
            tags: Vec::new(),
            priority: 0,
            created_at: Utc::now(),
            max_attempts: 1,
            start_deadline: None,
            webhook_url: None,
            run_timeout: None,
        }
    }

    fn job() -> Job {
        new_job().queued()
    }

    #[test]
    fn a_read_that_raced_a_write_is_not_kept() {
        let cache = JobCache::default();
        let j = job();
        let seen = cache.generation();
        cache.forget(j.id);
        cache.fill(&j, seen);
        assert!(cache.get(j.id).is_none());
        let seen = cache.generation();
        cache.fill(&j, seen);
        assert_eq!(cache.get(j.id), Some(j));
    }

    #[test]
    fn changes_to_other_jobs_do_not_stop_a_fill() {
        let cache = JobCache::default();
        let (a, b) = (job(), job());
        let seen = cache.generation();
        cache.put(&b);
        cache.forget(b.id);
        cache.fill(&a, seen);
        assert_eq!(cache.get(a.id), Some(a));
    }

    #[test]
    fn a_clear_or_too_many_changes_stop_a_fill() {
        let cache = JobCache::default();
        let a = job();
        let seen = cache.generation();
        cache.clear();
        cache.fill(&a, seen);
        assert!(cache.get(a.id).is_none());
        let seen = cache.generation();
        for _ in 0..=RECENT {
            cache.forget(JobId::generate());
        }
        cache.fill(&a, seen);
        assert!(cache.get(a.id).is_none());
    }

    #[test]
    fn the_least_recently_used_go_first() {
        let cache = JobCache::default();
        let first = job();
        cache.put(&first);
        for _ in 0..CAPACITY {
            cache.put(&job());
        }
        assert!(cache.get(first.id).is_none());
    }
}
