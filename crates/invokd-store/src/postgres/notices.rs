//! PostgreSQL's NOTIFY wake-ups, forwarded as `StoreNotice`s: one connection listens on the
//! schema's channels (the triggers send on them), reconnecting when it is cut.

use std::{str::FromStr, time::Duration};

use invokd_core::{JobId, store::StoreError, store::StoreNotice};
use sqlx::postgres::{PgConnectOptions, PgListener, PgPool, PgPoolOptions};
use tokio::sync::broadcast;

use crate::sql::unavailable;

/// The task that forwards NOTIFY wake-ups; it ends with the last clone of the store.
#[derive(Debug)]
pub(super) struct ListenerTask(tokio::task::AbortHandle);

impl Drop for ListenerTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Starts LISTEN on this schema's channels (before returning, so nothing sent after `connect`
/// is missed) and a task that forwards what it hears.
pub(super) async fn listen(
    pool: &PgPool,
    options: PgConnectOptions,
    notices: broadcast::Sender<StoreNotice>,
) -> Result<ListenerTask, StoreError> {
    // The channel names come from the same function the triggers use.
    let (queue, jobs): (String, String) = sqlx::query_as(
        "SELECT invokd_channel('queue', current_schema()), invokd_channel('jobs', current_schema())",
    )
    .fetch_one(pool)
    .await
    .map_err(unavailable)?;
    // A pool of its own: the listening connection is held for good, and reconnected through it.
    let own = PgPoolOptions::new()
        .max_connections(1)
        .max_lifetime(None)
        .idle_timeout(None)
        .connect_with(options)
        .await
        .map_err(unavailable)?;
    let mut listener = PgListener::connect_with(&own).await.map_err(unavailable)?;
    listener
        .listen_all([queue.as_str(), jobs.as_str()])
        .await
        .map_err(unavailable)?;
    let task = tokio::spawn(forward(listener, queue, notices));
    Ok(ListenerTask(task.abort_handle()))
}

/// What the log-lines trigger puts before the job's id (migration 0004): news of log lines,
/// told apart from changes of a job's state.
const LOG_NOTICE_PREFIX: &str = "logs:";

/// Forwards notifications until aborted. A lost connection is reconnected (and LISTEN
/// repeated) by `PgListener`; what was sent meanwhile is missed, which polling makes up for.
async fn forward(
    mut listener: PgListener,
    queue_channel: String,
    notices: broadcast::Sender<StoreNotice>,
) {
    const FIRST_RETRY: Duration = Duration::from_millis(100);
    let mut retry = FIRST_RETRY;
    loop {
        match listener.try_recv().await {
            Ok(Some(n)) => {
                retry = FIRST_RETRY;
                let notice = if n.channel() == queue_channel {
                    Some(StoreNotice::Queued {
                        model_id: n.payload().to_owned(),
                    })
                } else if let Some(id) = n.payload().strip_prefix(LOG_NOTICE_PREFIX) {
                    JobId::from_str(id).ok().map(StoreNotice::LogLines)
                } else {
                    JobId::from_str(n.payload()).ok().map(StoreNotice::Changed)
                };
                if let Some(notice) = notice {
                    // No receiver is fine.
                    let _ = notices.send(notice);
                }
            }
            Ok(None) => {
                tracing::warn!("the PostgreSQL notification connection was lost and reopened");
            }
            Err(e) => {
                tracing::warn!(error = %e, "listening for PostgreSQL notifications failed; retrying");
                tokio::time::sleep(retry).await;
                retry = (retry * 2).min(Duration::from_secs(30));
            }
        }
    }
}
