//! Where a queued job stands in its model's queue, for the answers that show it (fal's submit
//! and status, the event streams).
//!
//! In a short queue the store counts the jobs ahead, which is cheap and exact. In a deep one
//! that count reads the queue's index up to the job: 28 ms for a job behind 100,000, paid by
//! every submission (the new job is last) and by every status read of every waiting job. So
//! once a count finds a model's queue deep, the queue is also copied in order (its jobs'
//! places only) by a task of its own, and copied again when asked about after the copy's time
//! is up: a second, or twenty times what the reading took, at most `MAX_SERVE`. While the copy
//! holds `deep` jobs or more, a position is the job's rank in it, by binary search. Such a
//! position is as of the copy: too high by the jobs that started since, too low by those that
//! arrived since ahead of it. A copy older than `MAX_AGE` (its readings fail or lag) is not
//! used: positions are counted again. Readings take turns, one at a time, whichever the model:
//! each keeps a read connection of the store busy while it runs (0.7 s for a million queued
//! jobs on SQLite), and several deep models read at once would keep most of them busy.

use std::{
    collections::HashMap,
    future::Future,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use tokio::sync::Semaphore;

use crate::store::QueueSlot;

/// From this many queued jobs of a model, positions come from the copy.
const DEEP: usize = 1_000;
/// How long a copy serves at least.
const FRESH_FOR: Duration = Duration::from_secs(1);
/// A copy serves for this many times the time it took to read, between `FRESH_FOR` and
/// `MAX_SERVE`: reading a deep queue costs a small share of one core while it is asked about.
const READ_SHARE: u32 = 20;
/// The longest a copy serves before a look-up asks for a new one.
const MAX_SERVE: Duration = Duration::from_secs(10);
/// A copy this old is not used (a new one is being read or could not be).
const MAX_AGE: Duration = Duration::from_secs(30);
/// A reading still running after this many times the last one's duration (and `MAX_SERVE`)
/// is given up on, and another may begin.
const GIVE_UP_AFTER: u32 = 4;
/// A model's copy is dropped when no position was asked of it for this long.
const FORGET_AFTER: Duration = Duration::from_secs(60);

#[derive(Debug)]
struct QueueCopy {
    slots: Box<[QueueSlot]>,
    /// When its reading began: what it shows is at least this recent.
    read_at: Instant,
    /// Until when it serves without a new reading.
    serves_until: Instant,
    took: Duration,
}

#[derive(Debug)]
struct Model {
    copy: Option<QueueCopy>,
    reading_since: Option<Instant>,
    /// After a failed reading, none begins before this.
    retry_at: Option<Instant>,
    asked: Instant,
}

#[derive(Debug)]
pub struct QueuePositions {
    deep: usize,
    fresh_for: Duration,
    models: Mutex<HashMap<String, Model>>,
    /// One reading at a time, whichever the model.
    turns: Semaphore,
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
            turns: Semaphore::new(1),
        }
    }

    /// Where `slot` stands in `model_id`'s queue by its copy; `None`: count it in the store.
    pub fn look_up(&self, model_id: &str, slot: QueueSlot, now: Instant) -> Option<u64> {
        let mut models = self.models.lock().ok()?;
        models.retain(|_, m| now.saturating_duration_since(m.asked) < FORGET_AFTER);
        let model = models.get_mut(model_id)?;
        model.asked = now;
        // Even a copy whose time is up is a better answer than counting a deep queue, while
        // its next reading is on the way.
        let copy = model.copy.as_ref().filter(|c| {
            c.slots.len() >= self.deep && now.saturating_duration_since(c.read_at) < MAX_AGE
        })?;
        Some(copy.slots.partition_point(|s| *s < slot) as u64)
    }

    /// A new reading of `model_id`'s queue, if one is due: its copy is deep or `counted` (a
    /// position just counted in the store) says the queue is getting deep, the copy's time is
    /// up, and no other reading is on its way. The caller reads the queue's order through
    /// `Reading::run`; dropping the reading gives it up.
    pub fn begin_reading(
        self: &Arc<Self>,
        model_id: &str,
        counted: Option<u64>,
        now: Instant,
    ) -> Option<Reading> {
        let mut models = self.models.lock().ok()?;
        let getting_deep = counted.is_some_and(|n| n >= (self.deep / 2) as u64);
        let model = match models.get_mut(model_id) {
            Some(model) => model,
            None if getting_deep => models.entry(model_id.to_owned()).or_insert(Model {
                copy: None,
                reading_since: None,
                retry_at: None,
                asked: now,
            }),
            None => return None,
        };
        model.asked = now;
        let copy_is_deep = model
            .copy
            .as_ref()
            .is_some_and(|c| c.slots.len() >= self.deep);
        let due = model.copy.as_ref().is_none_or(|c| now >= c.serves_until);
        let give_up_after = model
            .copy
            .as_ref()
            .map_or(MAX_SERVE, |c| MAX_SERVE.max(c.took * GIVE_UP_AFTER));
        let reading = model
            .reading_since
            .is_some_and(|t| now.saturating_duration_since(t) < give_up_after);
        let waiting = model.retry_at.is_some_and(|t| now < t);
        if !(copy_is_deep || getting_deep) || !due || reading || waiting {
            return None;
        }
        model.reading_since = Some(now);
        Some(Reading {
            positions: self.clone(),
            model_id: model_id.to_owned(),
            started: now,
            read_from: now,
            done: false,
        })
    }

    /// Whether `started`'s reading is still the one `model_id` waits for (not given up on).
    fn is_reading(&self, model_id: &str, started: Instant) -> bool {
        self.models
            .lock()
            .is_ok_and(|models| models.get(model_id).and_then(|m| m.reading_since) == Some(started))
    }

    /// Keeps what `started`'s reading read from `read_from` (when its turn came) to `now`.
    fn record(
        &self,
        model_id: &str,
        slots: Vec<QueueSlot>,
        started: Instant,
        read_from: Instant,
        now: Instant,
    ) {
        debug_assert!(slots.is_sorted(), "a queue's order comes sorted");
        // The wait for a turn counts: a copy read after a wait serves longer.
        let took = now.saturating_duration_since(started);
        let copy = QueueCopy {
            slots: slots.into_boxed_slice(),
            read_at: read_from,
            serves_until: read_from + (took * READ_SHARE).clamp(self.fresh_for, MAX_SERVE),
            took,
        };
        // The copy it replaces is dropped after the lock is let go.
        let _replaced = {
            let Ok(mut models) = self.models.lock() else {
                return;
            };
            let Some(model) = models.get_mut(model_id) else {
                return;
            };
            if model.reading_since == Some(started) {
                model.reading_since = None;
            }
            model.retry_at = None;
            // A reading that was given up on and came back late shows less than the copy.
            if model.copy.as_ref().is_some_and(|c| c.read_at > read_from) {
                return;
            }
            model.copy.replace(copy)
        };
    }

    fn abandon(&self, model_id: &str, started: Instant) {
        // Measured from its end, or its start where the caller's clock runs ahead (tests).
        let ended = started.max(Instant::now());
        if let Ok(mut models) = self.models.lock()
            && let Some(model) = models.get_mut(model_id)
            && model.reading_since == Some(started)
        {
            model.reading_since = None;
            model.retry_at = Some(ended + self.fresh_for);
        }
    }
}

/// Why a reading ended without a copy; the next may begin a second later.
#[derive(Debug, thiserror::Error)]
pub enum ReadingError<E> {
    #[error("no turn to read the queue within {MAX_SERVE:?}")]
    NoTurn,
    #[error("given up on while it waited for its turn")]
    Superseded,
    #[error("reading the queue took over {MAX_AGE:?}")]
    TooLong,
    #[error(transparent)]
    Store(E),
}

/// A reading of a model's queue that `QueuePositions::begin_reading` asked for. Dropped
/// without `done` (the store failed, or the task ended early), it is given up on, and the next
/// may begin a second later.
#[derive(Debug)]
pub struct Reading {
    positions: Arc<QueuePositions>,
    model_id: String,
    started: Instant,
    /// When its turn came (until then, when it began).
    read_from: Instant,
    done: bool,
}

impl Reading {
    pub fn model_id(&self) -> &str {
        &self.model_id
    }

    /// Reads the queue's order with `read` once no other reading runs, and keeps it; returns
    /// how many jobs it holds. The wait for the turn is bounded by `MAX_SERVE` (by then the
    /// reading may be given up on and another begun), and the read by `MAX_AGE` (a copy that
    /// took longer would be too old to use), so a store that hangs holds the turn for no longer.
    pub async fn run<E>(
        mut self,
        read: impl Future<Output = Result<Vec<QueueSlot>, E>>,
    ) -> Result<usize, ReadingError<E>> {
        let positions = self.positions.clone();
        let _turn = tokio::time::timeout(MAX_SERVE, positions.turns.acquire())
            .await
            .map_err(|_| ReadingError::NoTurn)?
            .map_err(|_| ReadingError::NoTurn)?;
        if !self.positions.is_reading(&self.model_id, self.started) {
            return Err(ReadingError::Superseded);
        }
        self.read_from = Instant::now().max(self.started);
        let slots = tokio::time::timeout(MAX_AGE, read)
            .await
            .map_err(|_| ReadingError::TooLong)?
            .map_err(ReadingError::Store)?;
        let jobs = slots.len();
        self.done(slots, Instant::now());
        Ok(jobs)
    }

    /// The queue's order as read, in the order jobs run; `now` is when the reading ended.
    fn done(mut self, slots: Vec<QueueSlot>, now: Instant) {
        self.done = true;
        self.positions
            .record(&self.model_id, slots, self.started, self.read_from, now);
    }
}

impl Drop for Reading {
    fn drop(&mut self) {
        if !self.done {
            self.positions.abandon(&self.model_id, self.started);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::{
        convert::Infallible,
        sync::atomic::{AtomicBool, Ordering},
    };

    use super::*;
    use crate::JobId;

    fn slots(n: i64) -> Vec<QueueSlot> {
        let mut v: Vec<_> = (0..n).map(|i| at(i * 10)).collect();
        v.sort_unstable();
        v
    }

    fn at(created_at: i64) -> QueueSlot {
        QueueSlot {
            priority: 0,
            created_at,
            id: JobId::generate(),
        }
    }

    fn positions() -> Arc<QueuePositions> {
        Arc::new(QueuePositions::new(5, Duration::from_secs(1)))
    }

    #[test]
    fn a_short_queue_is_counted_and_never_read() {
        let p = positions();
        let t0 = Instant::now();
        assert_eq!(p.look_up("m", at(15), t0), None);
        assert!(
            p.begin_reading("m", Some(1), t0).is_none(),
            "two queued: count"
        );
        let reading = p.begin_reading("m", Some(3), t0).expect("getting deep");
        reading.done(slots(4), t0 + Duration::from_millis(1));
        assert_eq!(
            p.look_up("m", at(15), t0 + Duration::from_millis(10)),
            None,
            "a copy of 4 is short: count"
        );
    }

    #[test]
    fn a_deep_queue_ranks_the_job_in_its_copy_and_reads_it_again_once_due() {
        let p = positions();
        let t0 = Instant::now();
        let reading = p.begin_reading("m", Some(50), t0).unwrap();
        assert!(
            p.begin_reading("m", Some(50), t0).is_none(),
            "one reading at a time: the others count meanwhile"
        );
        reading.done(slots(100), t0 + Duration::from_millis(10));
        // Behind the jobs created at 0, 10, 20.
        let behind_three = at(25);
        let t1 = t0 + Duration::from_millis(500);
        assert_eq!(p.look_up("m", behind_three, t1), Some(3));
        assert_eq!(
            p.look_up("m", at(5_000), t1),
            Some(100),
            "a new job is last"
        );
        let higher = QueueSlot {
            priority: -1,
            ..at(5_000)
        };
        assert_eq!(p.look_up("m", higher, t1), Some(0), "priority first");
        assert!(p.begin_reading("m", None, t1).is_none(), "not due yet");
        // Due after a second; meanwhile the old copy still answers.
        let t2 = t0 + Duration::from_secs(1);
        let reading = p.begin_reading("m", None, t2).expect("due");
        assert_eq!(p.look_up("m", behind_three, t2), Some(3));
        drop(reading);
        assert!(
            p.begin_reading("m", None, t2).is_none(),
            "a failed reading waits a second"
        );
        assert!(
            p.begin_reading("m", None, t2 + Duration::from_secs(1))
                .is_some()
        );
    }

    #[tokio::test]
    async fn readings_take_turns_and_a_hung_one_holds_its_turn_no_longer_than_a_copy_lives() {
        tokio::time::pause();
        let p = positions();
        let t0 = Instant::now();
        let a = p.begin_reading("a", Some(50), t0).unwrap();
        let b = p.begin_reading("b", Some(50), t0).unwrap();
        let (release_a, a_read) = tokio::sync::oneshot::channel::<Vec<QueueSlot>>();
        let a = tokio::spawn(a.run(async move { Ok::<_, Infallible>(a_read.await.unwrap()) }));
        tokio::task::yield_now().await;
        let b_read = Arc::new(AtomicBool::new(false));
        let b = tokio::spawn(b.run({
            let b_read = b_read.clone();
            async move {
                b_read.store(true, Ordering::SeqCst);
                Ok::<_, Infallible>(slots(10))
            }
        }));
        tokio::task::yield_now().await;
        assert!(!b_read.load(Ordering::SeqCst), "b waits while a reads");
        release_a.send(slots(20)).unwrap();
        assert_eq!(a.await.unwrap().unwrap(), 20);
        assert_eq!(b.await.unwrap().unwrap(), 10);
        assert!(b_read.load(Ordering::SeqCst));
        assert_eq!(p.look_up("b", at(25), Instant::now()), Some(3));

        // A read that never ends is given up on at MAX_AGE; a reading waiting behind it gets
        // no turn within MAX_SERVE.
        let c = p.begin_reading("c", Some(50), t0).unwrap();
        let d = p.begin_reading("d", Some(50), t0).unwrap();
        let c = tokio::spawn(c.run(futures::future::pending::<Result<_, Infallible>>()));
        tokio::task::yield_now().await;
        // Bounded from outside too, so that a missing bound fails here rather than hangs.
        let d = tokio::time::timeout(MAX_AGE, d.run(async { Ok::<_, Infallible>(slots(10)) }))
            .await
            .expect("no turn within MAX_SERVE");
        assert!(matches!(d, Err(ReadingError::NoTurn)), "{d:?}");
        let c = tokio::time::timeout(MAX_AGE * 2, c)
            .await
            .expect("given up at MAX_AGE");
        assert!(matches!(c.unwrap(), Err(ReadingError::TooLong)));
    }

    #[tokio::test]
    async fn a_reading_given_up_on_while_it_waited_reads_nothing() {
        let p = positions();
        let t0 = Instant::now();
        let a = p.begin_reading("a", Some(50), t0).unwrap();
        let (release_a, a_read) = tokio::sync::oneshot::channel::<Vec<QueueSlot>>();
        let a = tokio::spawn(a.run(async move { Ok::<_, Infallible>(a_read.await.unwrap()) }));
        tokio::task::yield_now().await;
        let late = p.begin_reading("b", Some(50), t0).unwrap();
        let again = p
            .begin_reading("b", Some(50), t0 + MAX_SERVE)
            .expect("the first is given up on");
        let late = tokio::spawn(late.run(async { Ok::<_, Infallible>(slots(10)) }));
        tokio::task::yield_now().await;
        release_a.send(slots(20)).unwrap();
        a.await.unwrap().unwrap();
        assert!(matches!(late.await.unwrap(), Err(ReadingError::Superseded)));
        assert_eq!(
            again
                .run(async { Ok::<_, Infallible>(slots(10)) })
                .await
                .unwrap(),
            10
        );
    }

    #[test]
    fn a_copy_serves_twenty_times_its_reading_up_to_a_ceiling_and_is_not_used_once_old() {
        let p = positions();
        let t0 = Instant::now();
        let reading = p.begin_reading("m", Some(10), t0).unwrap();
        reading.done(slots(10), t0 + Duration::from_millis(200));
        assert!(
            p.begin_reading("m", None, t0 + Duration::from_millis(3_900))
                .is_none()
        );
        let reading = p
            .begin_reading("m", None, t0 + Duration::from_secs(4))
            .unwrap();
        let t1 = t0 + Duration::from_secs(4);
        reading.done(slots(10), t1 + Duration::from_secs(2));
        assert!(
            p.begin_reading("m", None, t1 + MAX_SERVE).is_some(),
            "forty seconds' worth, held to the ceiling"
        );
        assert_eq!(p.look_up("m", at(25), t1 + MAX_AGE), None, "too old: count");
    }

    #[test]
    fn a_reading_that_comes_back_after_a_newer_one_is_dropped() {
        let p = positions();
        let t0 = Instant::now();
        let slow = p.begin_reading("m", Some(10), t0).unwrap();
        let t1 = t0 + MAX_SERVE;
        let fast = p
            .begin_reading("m", Some(10), t1)
            .expect("the slow one was given up on");
        fast.done(slots(20), t1 + Duration::from_millis(5));
        slow.done(slots(10), t1 + Duration::from_millis(6));
        assert_eq!(
            p.look_up("m", at(5_000), t1 + Duration::from_millis(7)),
            Some(20)
        );
    }

    #[test]
    fn models_not_asked_about_for_a_minute_are_forgotten() {
        let p = positions();
        let t0 = Instant::now();
        p.begin_reading("old", Some(10), t0)
            .unwrap()
            .done(slots(10), t0);
        let later = t0 + FORGET_AFTER;
        p.begin_reading("new", Some(10), later)
            .unwrap()
            .done(slots(10), later);
        assert_eq!(p.look_up("old", at(0), later), None);
        let models = p.models.lock().unwrap();
        assert!(!models.contains_key("old"));
        assert!(models.contains_key("new"));
    }
}
