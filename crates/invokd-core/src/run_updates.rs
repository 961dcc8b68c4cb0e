//! What a run tells its readers before it ends, beside its log lines: progress (a step of a
//! total, a message) and partial outputs (a preview image, a partial transcript). One channel
//! per running job, in this process; the latest of each is kept for readers that come late.

use std::sync::Arc;

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

/// Updates a slow reader may fall behind by before it misses some (it then reads the latest).
const BACKLOG: usize = 64;

/// The channels of this process's running jobs.
#[derive(Debug, Clone, Default)]
pub struct RunUpdates {
    channels: PerRun<Channel>,
}

#[derive(Debug)]
struct Channel {
    tx: broadcast::Sender<RunUpdate>,
    progress: Option<Progress>,
    partial: Option<Arc<Map<String, Value>>>,
}

/// What a reader gets: the latest of each update so far, then the updates as they come.
pub struct Subscription {
    pub progress: Option<Progress>,
    pub partial: Option<Arc<Map<String, Value>>>,
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
            tx: broadcast::channel(BACKLOG).0,
            progress: None,
            partial: None,
        };
        Opened {
            _entry: self.channels.insert(job, channel),
        }
    }

    /// Sends an update to the job's readers; nothing happens when its run is not open here.
    pub fn publish(&self, job: JobId, update: RunUpdate) {
        self.channels.with(job, |ch| {
            match &update {
                RunUpdate::Progress(p) => ch.progress = Some(p.clone()),
                RunUpdate::Partial(p) => ch.partial = Some(p.clone()),
            }
            // No receiver is no error: nobody reads this job now.
            let _ = ch.tx.send(update);
        });
    }

    /// Follows a run of this process; `None` when the job does not run here.
    pub fn subscribe(&self, job: JobId) -> Option<Subscription> {
        self.channels.with(job, |ch| Subscription {
            progress: ch.progress.clone(),
            partial: ch.partial.clone(),
            updates: ch.tx.subscribe(),
        })
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
}
