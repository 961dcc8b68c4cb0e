//! What the queue caps count: the queued jobs of a key, and of the whole queue, read from the
//! store at most once a second each, and in between bounded by the last reading plus the jobs
//! this process has queued since.
//!
//! Counting a deep queue reads its whole index (a million queued jobs under the default total
//! cap), which every submission would otherwise pay twice. Jobs leave the queue as they start,
//! and this process's submissions are added to the bound as they commit, so the bound is low
//! only by what joined the queue some other way within the second: jobs put back for another
//! attempt (a retry, an expired lease) and, with many replicas sharing one store, what the
//! others queued. Those show at the next reading. A refusal is always decided on a fresh
//! reading, so a queue that has drained takes submissions again at once.
//!
//! One submission reads the store when the reading goes stale; while its count is on its way
//! the others go on with the stale bound, rather than all counting the same queue at once
//! (every submission in flight did, once a second, which with a deep queue held the readers
//! and the answers' latency).

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use crate::KeyId;

/// How long a reading of the store bounds the count.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// Scopes kept at most; past it the counts start again empty (a bound on memory).
const MAX_SCOPES: usize = 10_000;

/// Which queued jobs a count covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Scope {
    /// One key's.
    Key(KeyId),
    /// All of them.
    All,
}

impl Scope {
    /// The key to count for, as the store's `queued_count` takes it.
    pub fn key(self) -> Option<KeyId> {
        match self {
            Scope::Key(k) => Some(k),
            Scope::All => None,
        }
    }
}

#[derive(Debug, Default)]
struct Count {
    /// Jobs this process has queued in the scope since the entry was made (only grows).
    added: u64,
    reading: Option<Reading>,
    /// When a submission began the reading now on its way, if one is.
    refreshing_since: Option<Instant>,
}

#[derive(Debug, Clone, Copy)]
struct Reading {
    queued: u64,
    /// `added` when the store was read: later additions may be missing from `queued`.
    added_then: u64,
    at: Instant,
}

/// Where the additions stood when the store was read; see `QueueCounts::before_reading`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Mark {
    /// Which emptying of the counts the entry belongs to.
    epoch: u64,
    added: u64,
}

#[derive(Debug)]
pub struct QueueCounts {
    fresh_for: Duration,
    counts: Mutex<Counts>,
}

#[derive(Debug, Default)]
struct Counts {
    epoch: u64,
    scopes: HashMap<Scope, Count>,
}

impl Default for QueueCounts {
    fn default() -> Self {
        Self::new(FRESH_FOR)
    }
}

impl QueueCounts {
    pub fn new(fresh_for: Duration) -> Self {
        Self {
            fresh_for,
            counts: Mutex::new(Counts::default()),
        }
    }

    /// At most how many jobs are queued in `scope` at `now`, when a fresh reading says so, or
    /// a stale one while the next is on its way (for at most `fresh_for`: a reading whose
    /// submission went away is not waited for).
    pub fn bound(&self, scope: Scope, now: Instant) -> Option<u64> {
        let counts = self.counts.lock().ok()?;
        let count = counts.scopes.get(&scope)?;
        let r = count.reading?;
        let within = |t: Instant| now.saturating_duration_since(t) < self.fresh_for;
        (within(r.at) || count.refreshing_since.is_some_and(within))
            .then(|| r.queued + (count.added - r.added_then))
    }

    /// To be taken just before the store is read at `now`, and given back to `record` with the
    /// reading (or to `abandon` without one): the additions from here on are counted on top of
    /// it (some twice, none missed).
    pub fn before_reading(&self, scope: Scope, now: Instant) -> Mark {
        let Ok(mut counts) = self.counts.lock() else {
            return Mark {
                epoch: u64::MAX,
                added: 0,
            };
        };
        if counts.scopes.len() >= MAX_SCOPES && !counts.scopes.contains_key(&scope) {
            counts.scopes.clear();
            counts.epoch += 1;
        }
        let epoch = counts.epoch;
        let count = counts.scopes.entry(scope).or_default();
        count.refreshing_since = Some(now);
        Mark {
            epoch,
            added: count.added,
        }
    }

    /// The reading begun at `before_reading` failed: the next submission reads again.
    pub fn abandon(&self, scope: Scope) {
        if let Ok(mut counts) = self.counts.lock()
            && let Some(count) = counts.scopes.get_mut(&scope)
        {
            count.refreshing_since = None;
        }
    }

    /// The store's count for `scope`, read at `at` (taken before the read began).
    pub fn record(&self, scope: Scope, queued: u64, mark: Mark, at: Instant) {
        let Ok(mut counts) = self.counts.lock() else {
            return;
        };
        // Emptied since the mark: the additions started again from zero, and the reading can
        // not be placed against them.
        if counts.epoch != mark.epoch {
            return;
        }
        if let Some(count) = counts.scopes.get_mut(&scope) {
            count.reading = Some(Reading {
                queued,
                added_then: mark.added,
                at,
            });
            count.refreshing_since = None;
        }
    }

    /// A job of `key` has been queued and committed.
    pub fn added(&self, key: KeyId) {
        if let Ok(mut counts) = self.counts.lock() {
            for scope in [Scope::Key(key), Scope::All] {
                if let Some(count) = counts.scopes.get_mut(&scope) {
                    count.added += 1;
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key() -> KeyId {
        KeyId::generate()
    }

    #[test]
    fn no_bound_before_a_reading_nor_after_it_goes_stale() {
        let counts = QueueCounts::new(Duration::from_secs(1));
        let k = Scope::Key(key());
        let t0 = Instant::now();
        assert_eq!(counts.bound(k, t0), None);
        let mark = counts.before_reading(k, t0);
        counts.record(k, 7, mark, t0);
        assert_eq!(counts.bound(k, t0 + Duration::from_millis(999)), Some(7));
        assert_eq!(counts.bound(k, t0 + Duration::from_secs(1)), None);
    }

    #[test]
    fn while_one_reading_is_on_its_way_the_stale_bound_serves_the_others() {
        let counts = QueueCounts::new(Duration::from_secs(1));
        let k = key();
        let t0 = Instant::now();
        let mark = counts.before_reading(Scope::Key(k), t0);
        counts.record(Scope::Key(k), 7, mark, t0);
        counts.added(k);
        let t1 = t0 + Duration::from_millis(1500);
        assert_eq!(
            counts.bound(Scope::Key(k), t1),
            None,
            "stale: someone reads"
        );
        let mark = counts.before_reading(Scope::Key(k), t1);
        assert_eq!(counts.bound(Scope::Key(k), t1), Some(8), "the others go on");
        // A reading that never comes back is waited for no longer than a fresh one lasts.
        assert_eq!(
            counts.bound(Scope::Key(k), t1 + Duration::from_secs(1)),
            None
        );
        counts.abandon(Scope::Key(k));
        assert_eq!(
            counts.bound(Scope::Key(k), t1),
            None,
            "failed: the next one reads"
        );
        // The reading that was on its way still counts when it comes back after all.
        counts.record(Scope::Key(k), 3, mark, t1);
        assert_eq!(counts.bound(Scope::Key(k), t1), Some(3));
    }

    #[test]
    fn each_job_queued_since_the_reading_raises_the_bound_of_its_key_and_of_all() {
        let counts = QueueCounts::new(Duration::from_secs(1));
        let (a, b) = (key(), key());
        let t0 = Instant::now();
        for (scope, n) in [(Scope::Key(a), 3), (Scope::Key(b), 5), (Scope::All, 8)] {
            let mark = counts.before_reading(scope, t0);
            counts.record(scope, n, mark, t0);
        }
        counts.added(a);
        counts.added(a);
        counts.added(b);
        assert_eq!(counts.bound(Scope::Key(a), t0), Some(5));
        assert_eq!(counts.bound(Scope::Key(b), t0), Some(6));
        assert_eq!(counts.bound(Scope::All, t0), Some(11));
    }

    #[test]
    fn a_job_queued_while_the_store_is_read_is_never_missed() {
        let counts = QueueCounts::new(Duration::from_secs(1));
        let k = key();
        let t0 = Instant::now();
        let mark = counts.before_reading(Scope::Key(k), t0);
        // Committed after the read began: the reading may or may not include it.
        counts.added(k);
        counts.record(Scope::Key(k), 4, mark, t0);
        assert_eq!(counts.bound(Scope::Key(k), t0), Some(5));
    }

    #[test]
    fn a_reading_made_before_the_counts_were_emptied_is_dropped() {
        let counts = QueueCounts::new(Duration::from_secs(1));
        let k = key();
        let t0 = Instant::now();
        counts.before_reading(Scope::Key(k), t0);
        counts.added(k);
        let mark = counts.before_reading(Scope::Key(k), t0);
        // Past the bound on scopes the counts start again empty; the key's additions with them.
        for _ in 0..MAX_SCOPES {
            counts.before_reading(Scope::Key(key()), t0);
        }
        counts.before_reading(Scope::Key(k), t0);
        counts.added(k);
        counts.record(Scope::Key(k), 2, mark, t0);
        assert_eq!(counts.bound(Scope::Key(k), t0), None);
    }
}
