//! Creates on PostgreSQL that arrive while an insert is on its way go in together, as one
//! multi-row insert in one transaction: one WAL flush for the lot instead of one each. Each
//! caller still gets its answer only after the transaction holding its row has committed.

use invokd_core::{Job, NewJob, store::StoreError};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use crate::{
    postgres::PostgresStore,
    sql::{as_inserted, shutting_down},
};

/// Rows in one statement at most (12 parameters each, far below PostgreSQL's 65,535).
const MAX_BATCH: usize = 128;

type Entry = (NewJob, oneshot::Sender<Result<Job, StoreError>>);

/// The queue of creates waiting for an insert; the task applying it ends with the last handle.
#[derive(Debug, Clone)]
pub(crate) struct Inserts {
    tx: mpsc::Sender<Entry>,
}

impl Inserts {
    pub(crate) fn start(pool: PgPool) -> Self {
        let (tx, rx) = mpsc::channel(4 * MAX_BATCH);
        tokio::spawn(run(pool, rx));
        Self { tx }
    }

    /// Inserts `job`, returning it once it is committed.
    pub(crate) async fn insert(&self, job: NewJob) -> Result<Job, StoreError> {
        let (reply, answer) = oneshot::channel();
        self.tx
            .send((job, reply))
            .await
            .map_err(|_| shutting_down())?;
        answer.await.map_err(|_| shutting_down())?
    }
}

async fn run(pool: PgPool, mut rx: mpsc::Receiver<Entry>) {
    let mut batch = Vec::with_capacity(MAX_BATCH);
    while rx.recv_many(&mut batch, MAX_BATCH).await > 0 {
        let jobs: Vec<&NewJob> = batch.iter().map(|(job, _)| job).collect();
        match insert_rows(&pool, &jobs).await {
            Ok(()) => {
                for (job, reply) in batch.drain(..) {
                    let _ = reply.send(as_inserted(&job));
                }
            }
            // One bad row must not fail the others: each on its own, with its own answer.
            Err(_) => {
                for (job, reply) in batch.drain(..) {
                    let _ = reply.send(PostgresStore::insert_row(&pool, &job).await);
                }
            }
        }
    }
}

/// One statement, so one implicit transaction: all the rows or none.
async fn insert_rows(pool: &PgPool, jobs: &[&NewJob]) -> Result<(), StoreError> {
    PostgresStore::insert_query(jobs)?
        .build()
        // Each batch size is its own statement: keep them out of the prepared-statement cache.
        .persistent(false)
        .execute(pool)
        .await
        .map_err(crate::sql::unavailable)?;
    Ok(())
}
