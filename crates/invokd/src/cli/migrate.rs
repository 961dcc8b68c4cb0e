//! `invokd migrate`: bring a store's schema up to date without starting a server, e.g. once
//! before a rolling upgrade of several replicas.

use std::path::PathBuf;

use anyhow::Context as _;
use clap::Args;
use invokd_server::config::StoreLocation;

#[derive(Debug, Args)]
pub struct MigrateArgs {
    /// The PostgreSQL URL the replicas share (postgres://...).
    #[arg(long, env = "INVOKD_DATABASE_URL")]
    database_url: Option<String>,
    /// Without --database-url: the data directory whose SQLite database to migrate.
    #[arg(long, env = "INVOKD_DATA_DIR", default_value = "./invokd-data")]
    data_dir: PathBuf,
}

pub async fn run(a: MigrateArgs) -> anyhow::Result<()> {
    match super::serve::store_location(a.database_url.as_deref())? {
        StoreLocation::Postgres(url) => {
            invokd_store::PostgresStore::migrate(&url)
                .await
                .context("migrating the PostgreSQL store failed")?;
            println!("the PostgreSQL store is up to date");
        }
        StoreLocation::Embedded => {
            std::fs::create_dir_all(&a.data_dir).with_context(|| {
                format!("cannot create the data directory {}", a.data_dir.display())
            })?;
            let path = a.data_dir.join("invokd.sqlite");
            invokd_store::SqliteStore::open(&path)
                .await
                .with_context(|| format!("migrating {} failed", path.display()))?;
            println!("{} is up to date", path.display());
        }
    }
    Ok(())
}
