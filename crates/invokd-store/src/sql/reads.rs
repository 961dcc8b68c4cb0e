//! A pool that runs the shared statements' reads, the same way on either database.

use invokd_core::store::StoreError;
use sqlx::{Executor, IntoArguments, Pool};

use super::{Db, Statement, unavailable};

/// Reads through a pool of either database.
#[derive(Debug)]
pub(crate) struct Reads<DB: Db>(Pool<DB>);

// Derived, it would ask the database type to be `Clone` too.
impl<DB: Db> Clone for Reads<DB> {
    fn clone(&self) -> Self {
        Self(self.0.clone())
    }
}

impl<DB> Reads<DB>
where
    DB: Db,
    for<'c> &'c mut DB::Connection: Executor<'c, Database = DB>,
    for<'q> DB::Arguments<'q>: IntoArguments<'q, DB>,
{
    pub(crate) fn new(pool: Pool<DB>) -> Self {
        Self(pool)
    }

    /// The pool, for the reads a store runs its own way.
    pub(crate) fn pool(&self) -> &Pool<DB> {
        &self.0
    }

    pub(crate) async fn all(&self, mut st: Statement) -> Result<Vec<DB::Row>, StoreError> {
        st.query().fetch_all(&self.0).await.map_err(unavailable)
    }

    pub(crate) async fn optional(&self, mut st: Statement) -> Result<Option<DB::Row>, StoreError> {
        st.query()
            .fetch_optional(&self.0)
            .await
            .map_err(unavailable)
    }

    pub(crate) async fn one(&self, mut st: Statement) -> Result<DB::Row, StoreError> {
        st.query().fetch_one(&self.0).await.map_err(unavailable)
    }
}
