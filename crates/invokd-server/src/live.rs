//! Live views of one job for SSE streams: a snapshot (job, queue position, logs) each time the
//! job may have changed, rendered into events by the surface, until the job is terminal.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::response::sse::Event;
use futures::Stream;
use invokd_core::{Job, JobId, JobStatus, events::Changes, provider::LogLine};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::{error::ApiError, state::AppState};

/// How often a stream looks whether any job changed since it last read its own (a queued job's
/// position moves when jobs ahead of it start or leave), without news of its own job.
const LOOK: Duration = Duration::from_secs(1);
/// How often a stream reads its job even when no news came: news is a hint, and a change made
/// by another process without a notice must still show.
const FALLBACK_POLL: Duration = Duration::from_secs(10);

/// The job as a live reader sees it at one moment.
pub struct Snapshot {
    pub job: Job,
    pub queue_position: Option<u64>,
    /// Present when the reader asked for logs.
    pub logs: Option<Vec<LogLine>>,
}

pub async fn snapshot(state: &AppState, job: Job, logs: bool) -> Result<Snapshot, ApiError> {
    let queue_position = state.service.queue_position(&job).await?;
    let logs = if logs {
        Some(state.service.logs_of(&job).await?)
    } else {
        None
    };
    Ok(Snapshot {
        job,
        queue_position,
        logs,
    })
}

/// Events for `first` and each later change, as `render` makes them; the stream ends after the
/// snapshot in which the job is terminal, or when the client goes away (the stream is dropped).
/// The stream itself follows the job: no task or channel per stream, as thousands may be open.
pub fn events<R>(
    state: AppState,
    first: Job,
    logs: bool,
    render: R,
) -> impl Stream<Item = Result<Event, Infallible>>
where
    R: FnMut(&Snapshot) -> Vec<Event> + Send + 'static,
{
    let events = &state.service.signals().events;
    let follow = Follow {
        news: events.subscribe(),
        seen: events.changes(),
        state,
        id: first.id,
        project: first.project.clone(),
        next: Some(first),
        logs,
        render,
        pending: VecDeque::new(),
        ended: false,
        queued: false,
        reread: true,
    };
    futures::stream::unfold(follow, |mut f| async move {
        let event = f.next_event().await?;
        Some((Ok(event), f))
    })
}

/// One stream's view of its job.
struct Follow<R> {
    state: AppState,
    /// Subscribed after the caller read the first job: see `reread`.
    news: broadcast::Receiver<JobId>,
    id: JobId,
    project: String,
    /// The job to render next, when it is already read.
    next: Option<Job>,
    logs: bool,
    render: R,
    /// Rendered events not yet sent.
    pending: VecDeque<Event>,
    /// The terminal snapshot has been rendered.
    ended: bool,
    /// The job was queued when last read: its position may move with any other job.
    queued: bool,
    /// The counts of job changes before the last read.
    seen: Changes,
    /// The job is read once more, without waiting, after the first snapshot: news of a change
    /// between the caller's read and the subscription reached nobody.
    reread: bool,
}

impl<R: FnMut(&Snapshot) -> Vec<Event>> Follow<R> {
    async fn next_event(&mut self) -> Option<Event> {
        loop {
            if let Some(event) = self.pending.pop_front() {
                return Some(event);
            }
            if self.ended {
                return None;
            }
            let job = match self.next.take() {
                Some(job) => job,
                None => self.changed().await?,
            };
            let snap = snapshot(&self.state, job, self.logs).await.ok()?;
            self.pending.extend((self.render)(&snap));
            self.ended = snap.job.status.is_terminal();
            self.queued = snap.job.status == JobStatus::Queued;
        }
    }

    /// The job once news says it changed, or at the first look after jobs changed without news
    /// (a sweep); for a queued job, also at the first look after any other job changed state
    /// (another job's log lines move no queue); at the latest after `FALLBACK_POLL`. Idle
    /// streams read nothing.
    async fn changed(&mut self) -> Option<Job> {
        let events = self.state.service.signals().events.clone();
        let fallback = tokio::time::sleep(FALLBACK_POLL);
        tokio::pin!(fallback);
        let mut look = tokio::time::interval(LOOK);
        look.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        look.reset();
        while !std::mem::take(&mut self.reread) {
            tokio::select! {
                () = &mut fallback => break,
                _ = look.tick() => {
                    let now = events.changes();
                    if now.unnamed != self.seen.unnamed || (self.queued && now.any != self.seen.any) {
                        break;
                    }
                },
                got = self.news.recv() => match got {
                    Ok(changed) if changed == self.id => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return None,
                },
            }
        }
        // Before the read: a change after it moves the count again.
        self.seen = events.changes();
        self.state
            .service
            .reread(self.id, &self.project)
            .await
            .ok()
            .flatten()
    }
}
