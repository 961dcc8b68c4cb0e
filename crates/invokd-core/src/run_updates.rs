//! What a run tells its readers before it ends, beside its log lines: progress (a step of a
//! total, a message) and partial outputs (a preview image, a partial transcript). One channel
//! per running job, in this process, whoever runs it (the dispatcher's runs through their
//! sink, a remote worker's through the server, by `publish`). The latest progress is kept for
//! readers that come late, and the run's partial outputs in order, so that a reader that must
//! see every one (fal's streaming endpoint) gets them all, however late it subscribed or far
//! it fell behind.

use std::{
    collections::VecDeque,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
};

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use tokio::sync::broadcast;

use crate::{
    ids::JobId,
    running::{PerRun, RunEntry},
};

/// How far a run has come.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Progress {
    pub step: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub total: Option<u64>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// One update of a run.
#[derive(Debug, Clone, PartialEq)]
pub enum RunUpdate {
    Progress(Progress),
    /// An intermediate result in the model's output shape (files as `blob:` references).
    Partial(Arc<Map<String, Value>>),
}

/// Updates a slow reader may fall behind by before it misses some (it then reads the kept
/// partials again with `partials_from`).
const BACKLOG: usize = 64;
/// Partial outputs kept per run; a run that sends more drops its oldest (they are small: JSON
/// with file references, never the files).
const KEPT_PARTIALS: usize = 1024;
/// Runs opening that a reader waiting for one may fall behind by (it then looks again).
const OPENS_BACKLOG: usize = 256;

/// The channels of this process's running jobs.
#[derive(Debug, Clone)]
pub struct RunUpdates {
    channels: PerRun<Channel>,
    /// News of each run that opens, for readers waiting for a job's run to start here.
    opens: broadcast::Sender<JobId>,
    /// Runs opened so far: each channel's number, so a reader tells a later run from its own.
    runs: Arc<AtomicU64>,
}

impl Default for RunUpdates {
    fn default() -> Self {
        Self {
            channels: PerRun::default(),
            opens: broadcast::channel(OPENS_BACKLOG).0,
            runs: Arc::default(),
        }
    }
}

#[derive(Debug)]
struct Channel {
    run: u64,
    tx: broadcast::Sender<RunUpdate>,
    progress: Option<Progress>,
    /// The run's partial outputs, oldest first; `dropped` older ones were let go.
    partials: VecDeque<Arc<Map<String, Value>>>,
    dropped: u64,
}

impl Channel {
    /// The kept partials from the `from`th of the run on.
    fn partials_from(&self, from: u64) -> Vec<Arc<Map<String, Value>>> {
        let skip = usize::try_from(from.saturating_sub(self.dropped)).unwrap_or(usize::MAX);
        self.partials.iter().skip(skip).cloned().collect()
    }
}

/// What a reader gets: the latest of each update so far, every kept partial output of the
/// run, then the updates as they come.
pub struct Subscription {
    /// Which run of this process it follows (see `RunUpdates::partials_from`).
    pub run: u64,
    pub progress: Option<Progress>,
    pub partial: Option<Arc<Map<String, Value>>>,
    /// The run's partial outputs so far, in order (the oldest may have been let go on a run
    /// with more than can be kept: `partials_before` of them).
    pub partials: Vec<Arc<Map<String, Value>>>,
    /// How many partials the run sent before those in `partials`.
    pub partials_before: u64,
    pub updates: broadcast::Receiver<RunUpdate>,
}

/// Closes its job's channel when the run ends: readers then see the channel closed.
#[derive(Debug)]
pub struct Opened {
    _entry: RunEntry<Channel>,
}

impl RunUpdates {
    /// Opens the channel of a run that starts; it closes when the returned guard is dropped.
    pub fn open(&self, job: JobId) -> Opened {
        let channel = Channel {
            run: self.runs.fetch_add(1, Ordering::Relaxed) + 1,
            tx: broadcast::channel(BACKLOG).0,
            progress: None,
            partials: VecDeque::new(),
            dropped: 0,
        };
        let entry = self.channels.insert(job, channel);
        // No one waiting is no error.
        let _ = self.opens.send(job);
        Opened { _entry: entry }
    }

    /// Sends an update to the job's readers; nothing happens when its run is not open here.
    pub fn publish(&self, job: JobId, update: RunUpdate) {
        self.channels.with(job, |ch| {
            match &update {
                RunUpdate::Progress(p) => ch.progress = Some(p.clone()),
                RunUpdate::Partial(p) => {
                    if ch.partials.len() == KEPT_PARTIALS {
                        ch.partials.pop_front();
                        ch.dropped += 1;
                    }
                    ch.partials.push_back(p.clone());
                }
            }
            // No receiver is no error: nobody reads this job now.
            let _ = ch.tx.send(update);
        });
    }

    /// Follows a run of this process; `None` when the job does not run here.
    pub fn subscribe(&self, job: JobId) -> Option<Subscription> {
        self.channels.with(job, |ch| Subscription {
            run: ch.run,
            progress: ch.progress.clone(),
            partial: ch.partials.back().cloned(),
            partials: ch.partials.iter().cloned().collect(),
            partials_before: ch.dropped,
            updates: ch.tx.subscribe(),
        })
    }

    /// The partial outputs of run `run` of the job from its `from`th on (0 is its first), for a
    /// reader that fell behind its subscription; `None` once that run is no longer open here.
    pub fn partials_from(
        &self,
        job: JobId,
        run: u64,
        from: u64,
    ) -> Option<Vec<Arc<Map<String, Value>>>> {
        self.channels
            .with(job, |ch| (ch.run == run).then(|| ch.partials_from(from)))
            .flatten()
    }

    /// News of each run that opens in this process from now on, by job, for a reader waiting
    /// for its job's run to start (`subscribe` is `None` until then).
    pub fn opens(&self) -> broadcast::Receiver<JobId> {
        self.opens.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn partial(n: u64) -> Arc<Map<String, Value>> {
        let mut m = Map::new();
        m.insert("step".into(), json!(n));
        Arc::new(m)
    }

    #[tokio::test]
    async fn readers_get_the_latest_then_what_comes() {
        let updates = RunUpdates::default();
        let job = JobId::generate();
        let run = updates.open(job);
        let progress = Progress {
            step: 1,
            total: Some(4),
            message: None,
        };
        updates.publish(job, RunUpdate::Progress(progress.clone()));
        updates.publish(job, RunUpdate::Partial(partial(1)));
        let mut sub = updates.subscribe(job).unwrap();
        assert_eq!(sub.progress, Some(progress));
        assert_eq!(sub.partial, Some(partial(1)));
        updates.publish(job, RunUpdate::Partial(partial(2)));
        assert_eq!(
            sub.updates.recv().await.unwrap(),
            RunUpdate::Partial(partial(2))
        );
        drop(run);
        assert!(
            sub.updates.recv().await.is_err(),
            "the channel closes with the run"
        );
        assert!(updates.subscribe(job).is_none());
    }

    #[test]
    fn an_earlier_run_that_ends_late_leaves_the_later_runs_channel_open() {
        let updates = RunUpdates::default();
        let job = JobId::generate();
        let earlier = updates.open(job);
        let _later = updates.open(job);
        drop(earlier);
        assert!(updates.subscribe(job).is_some());
    }

    #[test]
    fn updates_of_a_run_not_open_here_go_nowhere() {
        let updates = RunUpdates::default();
        let job = JobId::generate();
        updates.publish(job, RunUpdate::Partial(partial(1)));
        assert!(updates.subscribe(job).is_none());
        let _run = updates.open(job);
        assert_eq!(updates.subscribe(job).unwrap().partial, None);
    }

    #[tokio::test]
    async fn a_late_reader_gets_every_partial_of_the_run_in_order_then_the_rest() {
        let updates = RunUpdates::default();
        let job = JobId::generate();
        let mut opens = updates.opens();
        let _run = updates.open(job);
        assert_eq!(
            opens.recv().await.unwrap(),
            job,
            "a waiting reader hears the run open"
        );
        for n in 1..=3 {
            updates.publish(job, RunUpdate::Partial(partial(n)));
        }
        let mut sub = updates.subscribe(job).unwrap();
        assert_eq!(sub.partials, vec![partial(1), partial(2), partial(3)]);
        assert_eq!(sub.partials_before, 0);
        assert_eq!(
            sub.partial,
            Some(partial(3)),
            "the latest, for status readers"
        );
        updates.publish(job, RunUpdate::Partial(partial(4)));
        assert_eq!(
            sub.updates.recv().await.unwrap(),
            RunUpdate::Partial(partial(4))
        );
        assert_eq!(
            updates.partials_from(job, sub.run, 2).unwrap(),
            vec![partial(3), partial(4)]
        );
    }

    #[tokio::test]
    async fn a_reader_that_fell_behind_reads_the_kept_partials_again() {
        let updates = RunUpdates::default();
        let job = JobId::generate();
        let _run = updates.open(job);
        let mut sub = updates.subscribe(job).unwrap();
        let sent = BACKLOG as u64 * 2;
        for n in 0..sent {
            updates.publish(job, RunUpdate::Partial(partial(n)));
        }
        assert!(matches!(
            sub.updates.recv().await,
            Err(broadcast::error::RecvError::Lagged(_))
        ));
        let all = updates.partials_from(job, sub.run, 0).unwrap();
        assert_eq!(all, (0..sent).map(partial).collect::<Vec<_>>());
    }

    #[test]
    fn a_run_keeps_its_latest_partials_when_it_sends_more_than_it_can_keep() {
        let updates = RunUpdates::default();
        let job = JobId::generate();
        let _run = updates.open(job);
        let sent = KEPT_PARTIALS as u64 + 5;
        for n in 0..sent {
            updates.publish(job, RunUpdate::Partial(partial(n)));
        }
        let sub = updates.subscribe(job).unwrap();
        assert_eq!(sub.partials_before, 5);
        assert_eq!(sub.partials.first(), Some(&partial(5)));
        assert_eq!(sub.partials.len(), KEPT_PARTIALS);
        let tail = updates.partials_from(job, sub.run, sent - 2).unwrap();
        assert_eq!(tail, vec![partial(sent - 2), partial(sent - 1)]);
        assert_eq!(
            updates.partials_from(job, sub.run, 0).unwrap().len(),
            KEPT_PARTIALS
        );
    }

    #[test]
    fn a_later_run_of_the_job_is_told_from_the_one_a_reader_followed() {
        let updates = RunUpdates::default();
        let job = JobId::generate();
        let first = updates.open(job);
        updates.publish(job, RunUpdate::Partial(partial(1)));
        let run = updates.subscribe(job).unwrap().run;
        drop(first);
        assert_eq!(updates.partials_from(job, run, 0), None, "the run ended");
        let _second = updates.open(job);
        assert_eq!(updates.partials_from(job, run, 0), None, "another run");
        let later = updates.subscribe(job).unwrap();
        assert_ne!(later.run, run);
        assert!(later.partials.is_empty());
    }
}
