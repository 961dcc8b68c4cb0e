//! Where a queued job stands in its model's queue, for the answers that show it (fal's submit
//! and status, the event streams).
//!
//! In a short queue the store counts the jobs ahead, which is cheap and exact. In a deep one
//! that count reads the queue's index up to the job: 28 ms for a job behind 100,000, paid by
//! every submission (the new job is last) and by every status read of every waiting job. So a
//! model's queue is also copied in order (its jobs' places only) at most once a second, and
//! less often as it grows (reading it may take a twentieth of the time at most); while the copy
//! holds `deep` jobs or more, a position is the job's rank in it, found by a binary search.
//! Such a position may be a second or so old; in a short queue it is always the store's count.
//! The copy is read by a task of its own, so no request waits for it.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use crate::store::QueueSlot;

/// From this many queued jobs of a model, positions come from the copy.
pub const DEEP: usize = 1_000;
/// How long a copy serves at least.
pub const FRESH_FOR: Duration = Duration::from_secs(1);
/// A copy serves for at least this many times the time it took to read.
const READ_SHARE: u32 = 20;
/// A model's copy is dropped when no position was asked of it for this long.
const FORGET_AFTER: Duration = Duration::from_secs(60);

/// What `QueuePositions::look_up` found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Lookup {
    /// The job's rank in a copy of a deep queue; `None`: count it in the store.
    pub rank: Option<u64>,
    /// The copy is due: the caller reads the queue and hands it to `record` (or `abandon`).
    pub read: bool,
}

#[derive(Debug)]
struct QueueCopy {
    slots: Arc<[QueueSlot]>,
    /// Until when it serves without a new reading.
    serves_until: Instant,
}

#[derive(Debug)]
struct Model {
    copy: Option<QueueCopy>,
    reading_since: Option<Instant>,
    asked: Instant,
}

#[derive(Debug)]
pub struct QueuePositions {
    deep: usize,
    fresh_for: Duration,
    models: Mutex<HashMap<String, Model>>,
}

impl Default for QueuePositions {
    fn default() -> Self {
        Self::new(DEEP, FRESH_FOR)
    }
}

impl QueuePositions {
    pub fn new(deep: usize, fresh_for: Duration) -> Self {
        Self {
            deep,
            fresh_for,
            models: Mutex::new(HashMap::new()),
        }
    }

    /// Where `slot` stands in `model_id`'s queue by the copy, and whether a new copy is due.
    pub fn look_up(&self, model_id: &str, slot: QueueSlot, now: Instant) -> Lookup {
        let Ok(mut models) = self.models.lock() else {
            return Lookup {
                rank: None,
                read: false,
            };
        };
        if !models.contains_key(model_id) {
            models.insert(
                model_id.to_owned(),
                Model {
                    copy: None,
                    reading_since: None,
                    asked: now,
                },
            );
        }
        let Some(model) = models.get_mut(model_id) else {
            return Lookup {
                rank: None,
                read: false,
            };
        };
        model.asked = now;
        // A reading whose task never reported (it cannot, short of a panic) is given up on.
        let reading = model
            .reading_since
            .is_some_and(|t| now.saturating_duration_since(t) < self.fresh_for * 10);
        let stale = model.copy.as_ref().is_none_or(|c| now >= c.serves_until);
        let read = stale && !reading;
        if read {
            model.reading_since = Some(now);
        }
        // Even a stale copy of a deep queue is a better answer than counting it.
        let rank = model
            .copy
            .as_ref()
            .filter(|c| c.slots.len() >= self.deep)
            .map(|c| c.slots.partition_point(|s| *s < slot) as u64);
        Lookup { rank, read }
    }

    /// A new copy of `model_id`'s queue, read from `started` for `took`.
    pub fn record(&self, model_id: &str, slots: Vec<QueueSlot>, started: Instant, took: Duration) {
        let Ok(mut models) = self.models.lock() else {
            return;
        };
        let now = started + took;
        models.retain(|_, m| now.saturating_duration_since(m.asked) < FORGET_AFTER);
        if let Some(model) = models.get_mut(model_id) {
            model.copy = Some(QueueCopy {
                slots: slots.into(),
                serves_until: started + self.fresh_for.max(took * READ_SHARE),
            });
            model.reading_since = None;
        }
    }

    /// The reading begun for `model_id` failed: the next look-up begins another.
    pub fn abandon(&self, model_id: &str) {
        if let Ok(mut models) = self.models.lock()
            && let Some(model) = models.get_mut(model_id)
        {
            model.reading_since = None;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::JobId;

    fn slots(n: i64) -> Vec<QueueSlot> {
        (0..n)
            .map(|i| QueueSlot {
                priority: 0,
                created_at: i * 10,
                id: JobId::generate(),
            })
            .collect()
    }

    fn at(created_at: i64) -> QueueSlot {
        QueueSlot {
            priority: 0,
            created_at,
            id: JobId::generate(),
        }
    }

    #[test]
    fn a_short_queue_is_always_counted_in_the_store() {
        let p = QueuePositions::new(5, Duration::from_secs(1));
        let t0 = Instant::now();
        let first = p.look_up("m", at(15), t0);
        assert_eq!(
            first,
            Lookup {
                rank: None,
                read: true
            }
        );
        p.record("m", slots(4), t0, Duration::from_millis(1));
        let again = p.look_up("m", at(15), t0 + Duration::from_millis(10));
        assert_eq!(
            again,
            Lookup {
                rank: None,
                read: false
            }
        );
    }

    #[test]
    fn a_deep_queue_ranks_the_job_in_its_copy_and_reads_it_again_once_due() {
        let p = QueuePositions::new(5, Duration::from_secs(1));
        let t0 = Instant::now();
        assert!(p.look_up("m", at(0), t0).read);
        assert!(
            !p.look_up("m", at(0), t0).read,
            "one reading at a time: the others count meanwhile"
        );
        p.record("m", slots(100), t0, Duration::from_millis(10));
        // Behind the jobs created at 0, 10, 20 (ids are random, but 25 falls between).
        let behind_three = at(25);
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(p.look_up("m", behind_three, t1).rank, Some(3));
        assert_eq!(
            p.look_up("m", at(5_000), t1).rank,
            Some(100),
            "a new job is last"
        );
        let higher = QueueSlot {
            priority: -1,
            ..at(5_000)
        };
        assert_eq!(p.look_up("m", higher, t1).rank, Some(0), "priority first");
        // Due again after a second: the one who is told to read still gets the old rank.
        let t2 = t0 + Duration::from_secs(1);
        assert_eq!(
            p.look_up("m", behind_three, t2),
            Lookup {
                rank: Some(3),
                read: true
            }
        );
        p.abandon("m");
        assert!(p.look_up("m", behind_three, t2).read, "failed: read again");
    }

    #[test]
    fn a_copy_that_took_long_to_read_serves_twenty_times_as_long() {
        let p = QueuePositions::new(5, Duration::from_secs(1));
        let t0 = Instant::now();
        p.look_up("m", at(0), t0);
        p.record("m", slots(10), t0, Duration::from_millis(200));
        assert!(
            !p.look_up("m", at(0), t0 + Duration::from_millis(3_900))
                .read
        );
        assert!(p.look_up("m", at(0), t0 + Duration::from_secs(4)).read);
    }

    #[test]
    fn models_not_asked_about_for_a_minute_are_forgotten() {
        let p = QueuePositions::new(5, Duration::from_secs(1));
        let t0 = Instant::now();
        p.look_up("old", at(0), t0);
        p.record("old", slots(10), t0, Duration::ZERO);
        let later = t0 + FORGET_AFTER;
        p.look_up("new", at(0), later);
        p.record("new", slots(10), later, Duration::ZERO);
        let models = p.models.lock().unwrap();
        assert!(!models.contains_key("old"));
        assert!(models.contains_key("new"));
    }
}
