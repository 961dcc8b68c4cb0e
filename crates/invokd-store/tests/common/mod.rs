//! What the store tests share: a fresh store of either kind, and jobs to put in it.
//!
//! PostgreSQL: the server named by `INVOKD_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). Each store gets a schema of its own, made for it
//! and dropped after a test that passes (one that fails leaves it, to look at), so tests run in
//! parallel without seeing each other. NOTIFY channels are per database, but the store names
//! its channels after its schema, so parallel tests do not hear each other either.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)] // each test binary uses a part

use std::{collections::BTreeMap, str::FromStr, sync::Arc};

use chrono::{DateTime, Duration, Utc};
use invokd_core::{
    Job, JobId, KeyId, NewJob,
    store::{ClaimRequest, Store},
};
use invokd_store::{PostgresStore, SqliteStore};
use serde_json::json;
use sqlx::{
    Connection, Executor,
    postgres::{PgConnectOptions, PgConnection},
};

pub const PG_URL_VAR: &str = "INVOKD_TEST_DATABASE_URL";
const PG_DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";

/// A fresh, empty store, and what to clean up after it.
pub struct TestStore {
    pub store: Arc<dyn Store>,
    cleanup: Cleanup,
}

enum Cleanup {
    Dir(tempfile::TempDir),
    Schema(Box<PgSchema>),
}

impl TestStore {
    pub async fn sqlite() -> Self {
        let dir = tempfile::tempdir().unwrap();
        let store = SqliteStore::open(&dir.path().join("db.sqlite"))
            .await
            .unwrap();
        Self {
            store: Arc::new(store),
            cleanup: Cleanup::Dir(dir),
        }
    }

    pub async fn postgres() -> Self {
        let schema = PgSchema::create().await;
        let store = schema.connect().await;
        Self {
            store: Arc::new(store),
            cleanup: Cleanup::Schema(Box::new(schema)),
        }
    }

    /// Ends the store and removes what it left (call it at the end of a passing test).
    pub async fn close(self) {
        drop(self.store);
        match self.cleanup {
            Cleanup::Dir(dir) => drop(dir),
            Cleanup::Schema(schema) => schema.remove().await,
        }
    }
}

/// A schema of its own in the test database.
pub struct PgSchema {
    server: PgConnectOptions,
    pub name: String,
}

impl PgSchema {
    pub async fn create() -> Self {
        let server = pg_server();
        let name = format!("t_{}", uuid::Uuid::now_v7().simple());
        admin(&server)
            .await
            .execute(format!("CREATE SCHEMA {name}").as_str())
            .await
            .unwrap();
        Self { server, name }
    }

    /// Connection options for this schema only.
    pub fn options(&self) -> PgConnectOptions {
        self.server
            .clone()
            .options([("search_path", self.name.as_str())])
    }

    /// A store in this schema (another replica, when called again).
    pub async fn connect(&self) -> PostgresStore {
        PostgresStore::connect_with(self.options()).await.unwrap()
    }

    /// A plain connection to this schema, to look under the store.
    pub async fn raw(&self) -> PgConnection {
        PgConnection::connect_with(&self.options()).await.unwrap()
    }

    pub async fn remove(self) {
        admin(&self.server)
            .await
            .execute(format!("DROP SCHEMA {} CASCADE", self.name).as_str())
            .await
            .unwrap();
    }
}

fn pg_server() -> PgConnectOptions {
    let url = std::env::var(PG_URL_VAR).unwrap_or_else(|_| PG_DEFAULT_URL.to_owned());
    PgConnectOptions::from_str(&url)
        .unwrap_or_else(|e| panic!("{PG_URL_VAR} is not a PostgreSQL URL: {e}"))
}

async fn admin(server: &PgConnectOptions) -> PgConnection {
    PgConnection::connect_with(server)
        .await
        .unwrap_or_else(|e| {
            panic!(
                "the PostgreSQL store tests need a server, and none answers at {}:{} database {:?} \
             ({e}). Start one, or name one in {PG_URL_VAR} (default {PG_DEFAULT_URL}).",
                server.get_host(),
                server.get_port(),
                server.get_database().unwrap_or("(default)"),
            )
        })
}

/// Now, to the microsecond: what a store keeps, so a time given comes back equal.
pub fn now() -> DateTime<Utc> {
    let t = Utc::now();
    DateTime::from_timestamp_micros(t.timestamp_micros()).unwrap()
}

pub fn new_job(model: &str, priority: i32, key: KeyId) -> NewJob {
    NewJob {
        id: JobId::generate(),
        key_id: key,
        project: key.to_string(),
        model_id: model.into(),
        input: json!({"prompt": "p"}).as_object().unwrap().clone().into(),
        tags: vec![("type".into(), "test".into())],
        priority,
        created_at: now(),
        max_attempts: 2,
        start_deadline: None,
        webhook_url: None,
        run_timeout: None,
    }
}

pub static NO_CAPS: BTreeMap<String, u32> = BTreeMap::new();

pub fn claim<'a>(
    owner: &'a str,
    limit: u32,
    capacity: &'a BTreeMap<String, u32>,
) -> ClaimRequest<'a> {
    claim_at(owner, limit, capacity, now())
}

pub fn claim_at<'a>(
    owner: &'a str,
    limit: u32,
    capacity: &'a BTreeMap<String, u32>,
    now: DateTime<Utc>,
) -> ClaimRequest<'a> {
    ClaimRequest {
        owner,
        limit,
        capacity,
        default_capacity: 100,
        now,
        lease_until: now + Duration::seconds(30),
    }
}

/// Claims the next job for `owner`; there must be one.
pub async fn claim_one(s: &dyn Store, owner: &str) -> Job {
    s.claim_jobs(claim(owner, 1, &NO_CAPS))
        .await
        .unwrap()
        .pop()
        .expect("a job to claim")
}
