//! News from a shared store (PostgreSQL's NOTIFY) turned into this process's own signals, so a
//! job submitted, changed or cancelled through another replica is acted on here at once.
//!
//! Notices are hints: a lost one (the listening connection dropped) costs only latency, since the
//! dispatcher polls the queue, live readers poll their job, and running jobs learn of a cancel at
//! their next heartbeat.

use std::sync::Arc;

use invokd_core::{
    events::Signals,
    store::{Store, StoreNotice},
};
use tokio::sync::broadcast::error::RecvError;
use tokio_util::sync::CancellationToken;

/// Relays the store's notices until `stop`; returns at once for a store that has none.
pub async fn relay(store: Arc<dyn Store>, signals: Signals, stop: CancellationToken) {
    let Some(mut notices) = store.notices() else {
        return;
    };
    loop {
        let notice = tokio::select! {
            () = stop.cancelled() => return,
            n = notices.recv() => n,
        };
        match notice {
            // Queued here or elsewhere: a claim may now find it.
            Ok(StoreNotice::Queued { .. }) => signals.job_queued(),
            Ok(StoreNotice::Changed(id)) => {
                signals.events.notify(id);
                if signals.running.is_running(id) {
                    cancel_if_asked(store.as_ref(), &signals, id).await;
                }
            }
            Ok(StoreNotice::LogLines(id)) => signals.events.notify_logs(id),
            // Fell behind: wake everything that could have missed news; they re-read the store.
            Err(RecvError::Lagged(_)) => {
                signals.job_queued();
                signals.events.some_changed();
            }
            Err(RecvError::Closed) => return,
        }
    }
}

/// A job running here changed elsewhere: if it was a cancel, stop the run now rather than at
/// the next heartbeat.
async fn cancel_if_asked(store: &dyn Store, signals: &Signals, id: invokd_core::JobId) {
    match store.get_job(id, None).await {
        Ok(Some(job)) if job.cancel_requested => {
            signals.running.cancel(id);
        }
        Ok(_) => {}
        Err(e) => tracing::debug!(job_id = %id, error = %e, "reading a changed job failed"),
    }
}
