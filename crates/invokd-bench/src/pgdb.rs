//! Fresh PostgreSQL databases for one run, so runs never see each other's jobs.

use anyhow::Context as _;
use sqlx::{Connection as _, PgConnection};

/// A database created for this run; `drop_all` removes it.
pub struct FreshDb {
    /// The URL the database was created through (its server's maintenance database).
    admin: String,
    pub name: String,
    /// The URL of the new database.
    pub url: String,
}

impl FreshDb {
    /// Creates `invokd_bench_<label>_<unique>` on the server of `admin`.
    pub async fn create(admin: &str, label: &str) -> anyhow::Result<Self> {
        let unique = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos() % 1_000_000_000)
            .unwrap_or(0);
        let name = format!("invokd_bench_{label}_{}_{unique}", std::process::id());
        let mut conn = PgConnection::connect(admin)
            .await
            .with_context(|| format!("cannot connect to {admin}"))?;
        // The name is ours (letters, digits and underscores), so quoting it is enough.
        sqlx::query(&format!("CREATE DATABASE \"{name}\""))
            .execute(&mut conn)
            .await
            .with_context(|| format!("cannot create database {name}"))?;
        conn.close().await?;
        Ok(Self {
            admin: admin.to_owned(),
            url: with_database(admin, &name)?,
            name,
        })
    }

    /// Drops the database, closing whatever still uses it.
    pub async fn drop_db(self) -> anyhow::Result<()> {
        let mut conn = PgConnection::connect(&self.admin).await?;
        sqlx::query(&format!(
            "DROP DATABASE IF EXISTS \"{}\" WITH (FORCE)",
            self.name
        ))
        .execute(&mut conn)
        .await
        .with_context(|| format!("cannot drop database {}", self.name))?;
        conn.close().await?;
        Ok(())
    }
}

/// `url` with its database (the path) replaced by `db`, the query kept.
fn with_database(url: &str, db: &str) -> anyhow::Result<String> {
    let (base, query) = match url.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (url, None),
    };
    let rest = base
        .split_once("://")
        .map(|(_, r)| r)
        .context("the database URL has no scheme")?;
    let host_end = rest
        .find('/')
        .map_or(base.len(), |i| base.len() - rest.len() + i);
    let mut out = format!("{}/{db}", &base[..host_end]);
    if let Some(q) = query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::with_database;

    #[test]
    fn replaces_the_database_and_keeps_the_query() {
        assert_eq!(
            with_database("postgres://u@h:5432/test?sslmode=disable", "x").unwrap(),
            "postgres://u@h:5432/x?sslmode=disable"
        );
        assert_eq!(
            with_database("postgres://h", "x").unwrap(),
            "postgres://h/x"
        );
    }
}
