//! The log lines of one run on their way to its job's log: a provider's `log` never waits for
//! a write; one task per run writes the lines in order, those that came within a short while
//! together, through a [`LogWriter`] (the store, waking the job's live readers after each
//! batch, for the gateway's own runs; the gateway, for a remote worker's). The lines still
//! waiting when the run ends are handed over (`take`): the lifecycle stores them with the write
//! that ends the job, or on their own when the run ends without ending the job (a retry, a
//! shutdown).

use std::sync::Arc;

use async_trait::async_trait;
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

/// Where a sink's batches of lines go.
#[async_trait]
pub trait LogWriter: Send + Sync + 'static {
    /// Writes `lines` of `job`, best effort: a failure is logged and never fails the run.
    async fn write(&self, job: JobId, lines: &[LogLine]);
}

/// Lines into the store, each batch waking the job's live readers.
pub struct StoreLogs {
    pub store: Arc<dyn Store>,
    pub events: JobEvents,
}

#[async_trait]
impl LogWriter for StoreLogs {
    async fn write(&self, job: JobId, lines: &[LogLine]) {
        store_now(self.store.as_ref(), &self.events, job, lines).await;
    }
}

/// A run's way to its job's log.
#[derive(Clone)]
pub struct LogSink {
    tx: mpsc::Sender<Msg>,
}

impl LogSink {
    /// Starts the task writing `job`'s lines through `writer`; it ends when the last handle is
    /// dropped.
    pub fn start(writer: Arc<dyn LogWriter>, job: JobId) -> Self {
        let (tx, rx) = mpsc::channel(BACKLOG);
        tokio::spawn(write_lines(writer, job, rx));
        Self { tx }
    }

    /// Starts the task storing `job`'s lines in `store`.
    pub fn to_store(store: Arc<dyn Store>, events: JobEvents, job: JobId) -> Self {
        Self::start(Arc::new(StoreLogs { store, events }), job)
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

async fn write_lines(writer: Arc<dyn LogWriter>, job: JobId, mut rx: mpsc::Receiver<Msg>) {
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
                writer.write(job, &lines).await;
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

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use chrono::Utc;

    use super::*;

    /// Keeps each batch it is given.
    #[derive(Default)]
    struct Batches(Mutex<Vec<Vec<String>>>);

    #[async_trait]
    impl LogWriter for Batches {
        async fn write(&self, _job: JobId, lines: &[LogLine]) {
            let batch = lines.iter().map(|l| l.message.clone()).collect();
            self.0.lock().unwrap().push(batch);
        }
    }

    fn line(message: &str) -> LogLine {
        LogLine {
            message: message.into(),
            level: "INFO".into(),
            timestamp: Utc::now(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn lines_that_come_together_are_written_together_in_order() {
        let batches = Arc::new(Batches::default());
        let sink = LogSink::start(batches.clone(), JobId::generate());
        sink.push(line("a")).await;
        sink.push(line("b")).await;
        tokio::time::sleep(LINGER * 2).await;
        sink.push(line("c")).await;
        tokio::time::sleep(LINGER * 2).await;
        assert_eq!(
            *batches.0.lock().unwrap(),
            vec![vec!["a".to_owned(), "b".to_owned()], vec!["c".to_owned()]]
        );
    }

    #[tokio::test(start_paused = true)]
    async fn taken_lines_are_the_takers_and_never_written_by_the_sink() {
        let batches = Arc::new(Batches::default());
        let sink = LogSink::start(batches.clone(), JobId::generate());
        sink.push(line("last")).await;
        let taken = sink.take().await;
        assert_eq!(taken.len(), 1);
        drop(sink);
        tokio::time::sleep(LINGER * 2).await;
        assert!(batches.0.lock().unwrap().is_empty());
    }
}
