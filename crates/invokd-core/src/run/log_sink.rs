//! The log lines of one run on their way to the store: a provider's `log` never waits for a
//! write; one task per run stores the lines in order, those that came within a short while
//! together, and wakes the job's live readers after each batch. The lines still waiting when
//! the run ends are handed over (`take`): the dispatcher stores them with the write that ends
//! the job, or on their own when the run ends without ending the job (a retry, a shutdown).

use std::sync::Arc;

use tokio::{
    sync::{mpsc, oneshot},
    time::{Duration, Instant, timeout_at},
};

use crate::{events::JobEvents, ids::JobId, provider::LogLine, store::Store};

/// Lines waiting to be stored at most; a provider that logs faster waits for the store.
const BACKLOG: usize = 256;
/// How long a line may wait for others before it is stored: a short run's lines go in with the
/// write that ends its job instead of a write of their own, and a live reader sees a line at
/// most this late.
const LINGER: Duration = Duration::from_millis(25);

enum Msg {
    Line(LogLine),
    /// Answered with the lines sent before it that are not stored yet, which are then the
    /// caller's to store.
    Take(oneshot::Sender<Vec<LogLine>>),
}

/// A run's way to its job's log.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Msg>,
}

impl LogSink {
    /// Starts the task storing `job`'s lines; it ends when the last handle is dropped.
    pub fn start(store: Arc<dyn Store>, events: JobEvents, job: JobId) -> Self {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(store_lines(store, events, job, rx));
        Self { tx }
    }

    /// Queues `line`; it is stored soon after, in the order lines were queued.
    pub async fn push(&self, line: LogLine) {
        // Only fails once the task is gone, i.e. the runtime is shutting down.
        let _ = self.tx.send(Msg::Line(line)).await;
    }

    /// The lines queued before that are not stored yet, in order; the sink will not store
    /// them. A run's last lines go in with the write that ends its job, one commit instead of
    /// two.
    pub async fn take(&self) -> Vec<LogLine> {
        let (give, taken) = oneshot::channel();
        if self.tx.send(Msg::Take(give)).await.is_ok() {
            return taken.await.unwrap_or_default();
        }
        Vec::new()
    }
}

async fn store_lines(
    store: Arc<dyn Store>,
    events: JobEvents,
    job: JobId,
    mut rx: mpsc::Receiver<Msg>,
) {
    let mut msgs = Vec::with_capacity(BACKLOG);
    let mut lines = Vec::with_capacity(BACKLOG);
    // When the oldest line not yet stored must be.
    let mut due: Option<Instant> = None;
    loop {
        let open = match due {
            None => rx.recv_many(&mut msgs, BACKLOG).await > 0,
            // Cancel-safe: a timed-out wait has taken nothing from the queue.
            Some(at) => timeout_at(at, rx.recv_many(&mut msgs, BACKLOG))
                .await
                .is_ok_and(|n| n > 0),
        };
        for msg in msgs.drain(..) {
            match msg {
                Msg::Line(line) => lines.push(line),
                Msg::Take(give) => {
                    // Every line sent before the take is either stored or among these.
                    let _ = give.send(std::mem::take(&mut lines));
                    due = None;
                }
            }
        }
        let closed = rx.is_closed() && rx.is_empty() && !open;
        if !lines.is_empty() {
            let at = *due.get_or_insert_with(|| Instant::now() + LINGER);
            if closed || lines.len() >= BACKLOG || Instant::now() >= at {
                store_now(store.as_ref(), &events, job, &lines).await;
                lines.clear();
                due = None;
            }
        }
        if closed {
            break;
        }
    }
}

/// Stores lines at once and wakes the job's readers; logging is best effort: a failure to
/// store them never fails the run. Also for lines taken from a sink that the job's ending does
/// not store.
pub async fn store_now(store: &dyn Store, events: &JobEvents, job: JobId, lines: &[LogLine]) {
    if lines.is_empty() {
        return;
    }
    match store.append_logs(job, lines).await {
        Ok(()) => events.notify_logs(job),
        Err(e) => {
            tracing::warn!(job_id = %job, lines = lines.len(), error = %e, "storing log lines failed")
        }
    }
}
