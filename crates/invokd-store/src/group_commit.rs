//! Group commit of new jobs: creates that arrive while a commit is on its way to disk wait for
//! the next one and share it, so many creates cost one fsync. Each caller still gets its answer
//! only after the transaction holding its row has committed.

use invokd_core::{Job, NewJob, store::StoreError};
use sqlx::SqlitePool;
use tokio::sync::{mpsc, oneshot};

/// Rows in one transaction at most: bounds the latency a large batch adds to its first row.
const MAX_BATCH: usize = 256;

type Reply = oneshot::Sender<Result<Job, StoreError>>;

/// The queue of rows waiting for a commit.
#[derive(Debug, Clone)]
pub struct GroupCommit {
    tx: mpsc::Sender<(NewJob, Reply)>,
}

impl GroupCommit {
    /// Starts the committing task on `pool`; it ends when the last handle is dropped.
    pub fn start(pool: SqlitePool) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(pool, rx));
        Self { tx }
    }

    /// Inserts `job`, returning once it is committed.
    pub async fn insert(&self, job: NewJob) -> Result<Job, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((job, reply))
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?;
        answer
            .await
            .map_err(|_| StoreError::Unavailable("the store is shutting down".into()))?
    }
}

async fn run(pool: SqlitePool, mut rx: mpsc::Receiver<(NewJob, Reply)>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        match commit(&pool, &batch).await {
            Ok(jobs) => {
                for ((_, reply), job) in batch.drain(..).zip(jobs) {
                    let _ = reply.send(Ok(job));
                }
            }
            // One bad row must not fail the others: each on its own, with its own answer.
            Err(_) => {
                for (job, reply) in batch.drain(..) {
                    let _ = reply.send(crate::sqlite::insert_row(&pool, &job).await);
                }
            }
        }
    }
}

async fn commit(pool: &SqlitePool, batch: &[(NewJob, Reply)]) -> Result<Vec<Job>, StoreError> {
    let mut tx = pool.begin().await.map_err(crate::sql::unavailable)?;
    let mut jobs = Vec::with_capacity(batch.len());
    for (job, _) in batch {
        jobs.push(crate::sqlite::insert_row(&mut *tx, job).await?);
    }
    tx.commit().await.map_err(crate::sql::unavailable)?;
    Ok(jobs)
}
