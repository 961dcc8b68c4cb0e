//! Creates on PostgreSQL that arrive while an insert is on its way go in together, as one
//! multi-row insert in one transaction: one WAL flush for the lot instead of one each. Each
//! caller still gets its answer only after the transaction holding its row has committed.

use invokd_core::{Job, NewJob, store::StoreError};
use sqlx::PgPool;
use tokio::sync::{mpsc, oneshot};

use super::PostgresStore;
use crate::sql::{as_inserted, jobs, queue_write};

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
        queue_write(&self.tx, job).await
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
            // The database refused a row: each on its own, so one bad row fails alone.
            Err(Failure::Refused) => {
                for (job, reply) in batch.drain(..) {
                    let _ = reply.send(PostgresStore::insert_row(&pool, &job).await);
                }
            }
            // Not the rows' fault (no connection, the server gone): trying each alone would
            // only make every later create wait a timeout per row. Whether a batch whose
            // connection broke at its commit went in is unknown; each caller is told so.
            Err(Failure::Unavailable(e)) => {
                for (_, reply) in batch.drain(..) {
                    let _ = reply.send(Err(StoreError::Unavailable(e.clone())));
                }
            }
        }
    }
}

/// Why a batch did not go in.
enum Failure {
    /// The database (or the encoding of a row) refused it: some row is at fault.
    Refused,
    Unavailable(String),
}

/// One statement, so one implicit transaction: all the rows or none.
async fn insert_rows(pool: &PgPool, jobs: &[&NewJob]) -> Result<(), Failure> {
    let mut insert = jobs::insert::<sqlx::Postgres>("", jobs, "").map_err(|_| Failure::Refused)?;
    insert
        .query()
        // Each batch size is its own statement: keep them out of the prepared-statement cache.
        .persistent(false)
        .execute(pool)
        .await
        .map_err(|e| match e {
            sqlx::Error::Database(_) => Failure::Refused,
            e => Failure::Unavailable(e.to_string()),
        })?;
    Ok(())
}
