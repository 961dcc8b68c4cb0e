//! The SQLite store's writes outside the group commit (sweeps, cancels, retention, keys,
//! deliveries, idempotent creates), on its one writing connection. The connection is reached
//! only through here, and each write says what it did to the jobs, which the cache hears once
//! it has committed: no write can leave the cache behind.

use std::sync::Arc;

use invokd_core::store::StoreError;
use sqlx::{Sqlite, SqliteConnection, SqlitePool, Transaction, sqlite::SqliteRow};

use super::job_cache::{JobCache, Wrote};
use crate::sql::{Statement, unavailable};

#[derive(Debug, Clone)]
pub(crate) struct Writer {
    pool: SqlitePool,
    cache: Arc<JobCache>,
}

impl Writer {
    pub(crate) fn new(pool: SqlitePool, cache: Arc<JobCache>) -> Self {
        Self { pool, cache }
    }

    /// Runs `st`, which changes `changes` if it changes any row; how many rows it changed.
    pub(crate) async fn execute(
        &self,
        mut st: Statement,
        changes: Wrote<'_>,
    ) -> Result<u64, StoreError> {
        let n = st
            .query()
            .execute(&self.pool)
            .await
            .map_err(unavailable)?
            .rows_affected();
        if n > 0 {
            self.cache.wrote(changes);
        }
        Ok(n)
    }

    /// Runs `st`, which changes `changes` if it returns any row; the rows it returned.
    pub(crate) async fn fetch_all(
        &self,
        mut st: Statement,
        changes: Wrote<'_>,
    ) -> Result<Vec<SqliteRow>, StoreError> {
        let rows = st
            .query()
            .fetch_all(&self.pool)
            .await
            .map_err(unavailable)?;
        if !rows.is_empty() {
            self.cache.wrote(changes);
        }
        Ok(rows)
    }

    /// A transaction of several writes.
    pub(crate) async fn begin(&self) -> Result<WriteTx<'_>, StoreError> {
        Ok(WriteTx {
            tx: self.pool.begin().await.map_err(unavailable)?,
            cache: &self.cache,
        })
    }
}

/// Writes that commit together, saying at their commit what they did to the jobs. Dropped
/// without a commit, it rolls back.
pub(crate) struct WriteTx<'w> {
    tx: Transaction<'static, Sqlite>,
    cache: &'w JobCache,
}

impl WriteTx<'_> {
    pub(crate) fn conn(&mut self) -> &mut SqliteConnection {
        &mut self.tx
    }

    /// Runs `st` in the transaction; how many rows it changed.
    pub(crate) async fn execute(&mut self, mut st: Statement) -> Result<u64, StoreError> {
        Ok(st
            .query()
            .execute(&mut *self.tx)
            .await
            .map_err(unavailable)?
            .rows_affected())
    }

    pub(crate) async fn commit(self, wrote: Wrote<'_>) -> Result<(), StoreError> {
        self.tx.commit().await.map_err(unavailable)?;
        self.cache.wrote(wrote);
        Ok(())
    }
}
