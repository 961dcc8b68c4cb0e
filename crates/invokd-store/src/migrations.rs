//! The stores' schema migrations, embedded in the binary and handed to sqlx's migrator.
//!
//! Listed here rather than found by `sqlx::migrate!`: that macro pulls sqlx's drivers into the
//! build a second time (as a compiler plug-in). Versions, descriptions and checksums are what
//! the macro derived from the same files, so databases it migrated stay valid.

use std::{borrow::Cow, future::Future, pin::Pin};

use sqlx::{
    PgPool, SqlitePool,
    error::BoxDynError,
    migrate::{MigrateError, Migration, MigrationSource, MigrationType, Migrator},
};

/// One migration: its version, its description (the file name's rest, `_` as spaces, as sqlx
/// derives it) and its SQL.
type Step = (i64, &'static str, &'static str);

macro_rules! steps {
    ($dir:literal: $($version:literal $file:literal $description:literal),+ $(,)?) => {
        &[$(($version, $description, include_str!(concat!("../migrations/", $dir, "/", $file)))),+]
    };
}

const SQLITE: &[Step] = steps!("sqlite":
    1 "0001_init.sql" "init",
    2 "0002_listing_idempotency.sql" "listing idempotency",
    3 "0003_webhooks.sql" "webhooks",
    4 "0004_deadlines_retention.sql" "deadlines retention",
    5 "0005_queue_caps.sql" "queue caps",
    6 "0006_projects.sql" "projects",
    7 "0007_upstream.sql" "upstream",
    8 "0008_settings.sql" "settings",
    9 "0009_indexes_for_what_is_read.sql" "indexes for what is read",
    10 "0010_workers.sql" "workers",
);

const POSTGRES: &[Step] = steps!("postgres":
    1 "0001_init.sql" "init",
    2 "0002_settings.sql" "settings",
    3 "0003_upstream.sql" "upstream",
    4 "0004_log_notices.sql" "log notices",
    5 "0005_workers.sql" "workers",
);

/// Migrations compiled into the binary, as sqlx's migrator takes them.
#[derive(Debug)]
struct Embedded(&'static [Step]);

impl<'s> MigrationSource<'s> for Embedded {
    fn resolve(
        self,
    ) -> Pin<Box<dyn Future<Output = Result<Vec<Migration>, BoxDynError>> + Send + 's>> {
        let migrations = self
            .0
            .iter()
            .map(|&(version, description, sql)| {
                Migration::new(
                    version,
                    Cow::Borrowed(description),
                    MigrationType::Simple,
                    Cow::Borrowed(sql),
                    // sqlx's own rule: a migration opts out of its transaction by its first line.
                    sql.starts_with("-- no-transaction"),
                )
            })
            .collect();
        Box::pin(std::future::ready(Ok(migrations)))
    }
}

/// Applies the embedded SQLite store's migrations not yet applied.
pub(crate) async fn run_sqlite(conn: &SqlitePool) -> Result<(), MigrateError> {
    Migrator::new(Embedded(SQLITE)).await?.run(conn).await
}

/// Applies the PostgreSQL store's migrations not yet applied. sqlx's PostgreSQL migrator holds
/// an advisory lock while it runs, so replicas starting together apply each migration once.
pub(crate) async fn run_postgres(pool: &PgPool) -> Result<(), MigrateError> {
    Migrator::new(Embedded(POSTGRES)).await?.run(pool).await
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The list matches its directory as sqlx reads it (what `sqlx::migrate!` embedded): every
    /// file, with its version, description, checksum and transaction mode, in order.
    async fn matches_directory(dir: &str, steps: &'static [Step]) {
        let path = std::path::Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("migrations")
            .join(dir);
        let read = Migrator::new(path.as_path()).await.unwrap();
        let listed = Migrator::new(Embedded(steps)).await.unwrap();
        let key = |m: &Migration| {
            (
                m.version,
                m.description.to_string(),
                m.checksum.to_vec(),
                m.no_tx,
                m.migration_type,
            )
        };
        assert_eq!(
            listed.iter().map(key).collect::<Vec<_>>(),
            read.iter().map(key).collect::<Vec<_>>(),
            "{dir}: the list and the directory differ"
        );
    }

    #[tokio::test]
    async fn every_sqlite_migration_is_listed() {
        matches_directory("sqlite", SQLITE).await;
    }

    #[tokio::test]
    async fn every_postgres_migration_is_listed() {
        matches_directory("postgres", POSTGRES).await;
    }
}
