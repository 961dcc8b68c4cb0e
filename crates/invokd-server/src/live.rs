//! Live views of one job for SSE streams: a snapshot (job, queue position, logs) each time the
//! job may have changed, rendered into events by the surface, until the job is terminal.

use std::{convert::Infallible, time::Duration};

use axum::response::sse::Event;
use futures::Stream;
use invokd_core::{Job, provider::LogLine};
use tokio::sync::broadcast::error::RecvError;

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
/// snapshot in which the job is terminal, or when the client goes away.
pub fn events<R>(
    state: AppState,
    first: Job,
    logs: bool,
    mut render: R,
) -> impl Stream<Item = Result<Event, Infallible>>
where
    R: FnMut(&Snapshot) -> Vec<Event> + Send + 'static,
{
    let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Event, Infallible>>(16);
    tokio::spawn(async move {
        let mut news = state.service.signals().events.subscribe();
        let mut job = first;
        loop {
            let Ok(snap) = snapshot(&state, job, logs).await else {
                return;
            };
            for event in render(&snap) {
                if tx.send(Ok(event)).await.is_err() {
                    return;
                }
            }
            if snap.job.status.is_terminal() {
                return;
            }
            let id = snap.job.id;
            let deadline = tokio::time::sleep(FALLBACK_POLL);
            tokio::pin!(deadline);
            loop {
                tokio::select! {
                    () = &mut deadline => break,
                    got = news.recv() => match got {
                        Ok(changed) if changed == id => break,
                        Ok(_) => {}
                        Err(RecvError::Lagged(_)) => break,
                        Err(RecvError::Closed) => return,
                    },
                    () = tx.closed() => return,
                }
            }
            match state
                .service
                .store()
                .get_job(id, Some(&snap.job.project))
                .await
            {
                Ok(Some(j)) => job = j,
                _ => return,
            }
        }
    });
    futures::stream::poll_fn(move |cx| rx.poll_recv(cx))
}
