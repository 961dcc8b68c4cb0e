//! Live views of one job for SSE streams: a snapshot (job, queue position, logs) each time the
//! job may have changed, rendered into events by the surface, until the job is terminal.

use std::{collections::VecDeque, convert::Infallible, time::Duration};

use axum::response::sse::Event;
use futures::Stream;
use invokd_core::{Job, JobId, provider::LogLine};
use tokio::sync::broadcast::{self, error::RecvError};

use crate::{error::ApiError, state::AppState};

/// How often to look at the store when no in-process news comes (changes made elsewhere).
const FALLBACK_POLL: Duration = Duration::from_secs(1);

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
        Some(state.service.store().logs(job.id).await?)
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
    let follow = Follow {
        news: state.service.signals().events.subscribe(),
        state,
        id: first.id,
        project: first.project.clone(),
        next: Some(first),
        logs,
        render,
        pending: VecDeque::new(),
        ended: false,
    };
    futures::stream::unfold(follow, |mut f| async move {
        let event = f.next_event().await?;
        Some((Ok(event), f))
    })
}

/// One stream's view of its job.
struct Follow<R> {
    state: AppState,
    /// Subscribed before the first snapshot, so no change is missed.
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
        }
    }

    /// The job once news says it changed, or after `FALLBACK_POLL`.
    async fn changed(&mut self) -> Option<Job> {
        let deadline = tokio::time::sleep(FALLBACK_POLL);
        tokio::pin!(deadline);
        loop {
            tokio::select! {
                () = &mut deadline => break,
                got = self.news.recv() => match got {
                    Ok(changed) if changed == self.id => break,
                    Ok(_) => {}
                    Err(RecvError::Lagged(_)) => break,
                    Err(RecvError::Closed) => return None,
                },
            }
        }
        self.state
            .service
            .store()
            .get_job(self.id, Some(&self.project))
            .await
            .ok()
            .flatten()
    }
}
