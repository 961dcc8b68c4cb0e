#![doc = include_str!("../README.md")]

pub mod blob_fs;
pub mod blob_s3;
mod migrations;
pub mod postgres;
mod sql;
pub mod sqlite;

use std::{path::Path, sync::Arc};

use invokd_core::store::{Store, StoreError};

pub use blob_fs::LocalBlobStore;
pub use blob_s3::{S3BlobStore, S3Config};
pub use postgres::PostgresStore;
pub use sqlite::SqliteStore;

/// Whether `target` names a PostgreSQL database (`postgres://` or `postgresql://`).
pub fn is_postgres_url(target: &str) -> bool {
    target.starts_with("postgres://") || target.starts_with("postgresql://")
}

/// Opens the store `target` names: a `postgres://` or `postgresql://` URL connects to
/// PostgreSQL; anything else is a SQLite database file (a `sqlite:` prefix is allowed).
/// Either way, pending migrations are run first.
pub async fn open(target: &str) -> Result<Arc<dyn Store>, StoreError> {
    if is_postgres_url(target) {
        return Ok(Arc::new(PostgresStore::connect(target).await?));
    }
    let path = target
        .strip_prefix("sqlite://")
        .or_else(|| target.strip_prefix("sqlite:"))
        .unwrap_or(target);
    Ok(Arc::new(SqliteStore::open(Path::new(path)).await?))
}
