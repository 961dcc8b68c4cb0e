//! The server's settings, one struct per concern, with the defaults of the embedded setup.

use std::{collections::HashMap, net::SocketAddr, path::PathBuf, time::Duration};

/// Everything `invokd serve` can be told.
#[derive(Debug, Clone)]
pub struct ServerConfig {
    pub listen: SocketAddr,
    pub data_dir: PathBuf,
    /// Where jobs and keys are kept.
    pub store: StoreLocation,
    /// Where output and uploaded files are kept.
    pub blobs: BlobLocation,
    /// Whether clients get file URLs of the gateway or presigned URLs of the blob storage.
    pub file_urls: FileUrls,
    /// The URL clients reach the server at, used in file URLs; by default the request's `Host`.
    pub public_url: Option<String>,
    /// An operator's catalog directory, added to (and overriding) the embedded models.
    pub catalog_dir: Option<PathBuf>,
    /// Largest accepted request body.
    pub max_body_bytes: usize,
    /// Largest file accepted by fal's storage upload protocol.
    pub max_upload_bytes: usize,
    /// How long a signed file URL stays valid.
    pub file_url_ttl: Duration,
    /// The first key, for scripted deployments (`INVOKD_BOOTSTRAP_KEY`).
    pub bootstrap_key: Option<String>,
    /// The admin token (`INVOKD_ADMIN_TOKEN`); else one kept in the data directory.
    pub admin_token: Option<String>,
    /// Serve https with this certificate and key; plain http without.
    pub tls: Option<crate::tls::TlsFiles>,
    pub dispatch: DispatchConfig,
    pub emulator: EmulatorSettings,
    /// How long an `Idempotency-Key` is remembered.
    pub idempotency_ttl: Duration,
    /// How the files inputs name are fetched.
    pub fetch: crate::input_fetch::FetchConfig,
    /// How webhook deliveries are retried.
    pub webhooks: crate::webhooks::WebhookConfig,
    /// Requests per second per access key.
    pub rate_limit: crate::rate_limit::RateLimitConfig,
    /// Queued jobs one key may have (0: no cap).
    pub max_queued_per_key: u64,
    /// Queued jobs in all (0: no cap).
    pub max_queue_length: u64,
    /// The fal upstream (`FAL_KEY`); without it every model runs on the emulator.
    pub fal: Option<invokd_providers::FalConfig>,
    /// Which provider runs each model. Empty: `fal-ai/*` on fal when fal is configured, the
    /// emulator for the rest.
    pub routes: Vec<crate::routing::Route>,
}

/// Where jobs and keys are kept.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StoreLocation {
    /// SQLite in the data directory: one process owns it.
    Embedded,
    /// A PostgreSQL database (`postgres://...`) that several replicas share.
    Postgres(String),
}

impl StoreLocation {
    /// Whether other processes may use the same store at the same time.
    pub fn is_shared(&self) -> bool {
        matches!(self, Self::Postgres(_))
    }
}

/// Where files are kept.
#[derive(Debug, Clone)]
pub enum BlobLocation {
    /// The data directory's `files/`.
    Local,
    /// An S3-compatible bucket that several replicas share.
    S3(Box<invokd_store::S3Config>),
}

/// Which URLs outputs carry for their files.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FileUrls {
    /// `<public url>/files/<key>?expires=..&sig=..`, served by any replica.
    #[default]
    Gateway,
    /// Presigned URLs of the bucket, so file bytes never pass through the gateway (S3 only).
    Presigned,
}

/// How the dispatcher runs jobs.
#[derive(Debug, Clone)]
pub struct DispatchConfig {
    /// Jobs of one model running at once.
    pub per_model_concurrency: u32,
    /// Jobs running at once in this process.
    pub max_concurrency: u32,
    /// A claim holds its job this long unless the heartbeat extends it.
    pub lease: Duration,
    /// How often a running job's lease is extended.
    pub heartbeat: Duration,
    /// How often the queue is checked when nothing wakes the dispatcher.
    pub poll: Duration,
    /// Claims per job before it fails.
    pub max_attempts: u32,
    /// Longest one attempt may run.
    pub run_timeout: Duration,
    /// On shutdown, how long running jobs get to finish.
    pub shutdown_grace: Duration,
    /// After a cancel, how long the provider gets to pass it on before the job is closed.
    pub cancel_grace: Duration,
    /// How long ended jobs keep their output and files.
    pub retention: Duration,
    /// How often the retention janitor runs.
    pub janitor_every: Duration,
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            per_model_concurrency: 4,
            max_concurrency: 16,
            lease: Duration::from_secs(30),
            heartbeat: Duration::from_secs(10),
            poll: Duration::from_secs(1),
            max_attempts: 3,
            run_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(10),
            cancel_grace: Duration::from_secs(5),
            retention: Duration::from_secs(7 * 24 * 3600),
            janitor_every: Duration::from_secs(60),
        }
    }
}

/// The emulator's latency, overall and per model.
#[derive(Debug, Clone)]
pub struct EmulatorSettings {
    pub latency: Duration,
    pub latency_per_model: HashMap<String, Duration>,
}

impl Default for EmulatorSettings {
    fn default() -> Self {
        Self {
            latency: Duration::from_millis(500),
            latency_per_model: HashMap::new(),
        }
    }
}

impl ServerConfig {
    /// The embedded defaults: `127.0.0.1:8080` and `./invokd-data`.
    pub fn new(listen: SocketAddr, data_dir: PathBuf) -> Self {
        Self {
            listen,
            data_dir,
            store: StoreLocation::Embedded,
            blobs: BlobLocation::Local,
            file_urls: FileUrls::Gateway,
            public_url: None,
            catalog_dir: None,
            max_body_bytes: 4 * 1024 * 1024,
            max_upload_bytes: 100 * 1024 * 1024,
            file_url_ttl: Duration::from_secs(24 * 3600),
            bootstrap_key: None,
            admin_token: None,
            tls: None,
            dispatch: DispatchConfig::default(),
            emulator: EmulatorSettings::default(),
            idempotency_ttl: Duration::from_secs(24 * 3600),
            fetch: crate::input_fetch::FetchConfig::default(),
            webhooks: crate::webhooks::WebhookConfig::default(),
            rate_limit: crate::rate_limit::RateLimitConfig::default(),
            max_queued_per_key: 10_000,
            max_queue_length: 1_000_000,
            fal: None,
            routes: Vec::new(),
        }
    }
}
