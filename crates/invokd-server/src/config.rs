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
    /// Limits on connections and on how slowly a request may arrive.
    pub http: HttpLimits,
    /// The first key, for scripted deployments (`INVOKD_BOOTSTRAP_KEY`).
    pub bootstrap_key: Option<String>,
    /// The admin token (`INVOKD_ADMIN_TOKEN`); else one kept in the data directory.
    pub admin_token: Option<String>,
    /// Serve https with this certificate and key; plain http without.
    pub tls: Option<crate::tls::TlsFiles>,
    pub dispatch: DispatchConfig,
    /// Claims per job before it fails.
    pub max_attempts: u32,
    /// How long ended jobs keep their output and files.
    pub retention: RetentionConfig,
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
    pub routes: Vec<crate::provider_routes::Route>,
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
    /// A claim holds its job this long unless a heartbeat extends it (runs here beat every third
    /// of it, so two beats may fail before it lapses).
    pub lease: Duration,
    /// How often the queue is checked when nothing wakes the dispatcher; also how often the
    /// janitor checks start deadlines.
    pub poll: Duration,
    /// Longest one attempt may run.
    pub run_timeout: Duration,
    /// On shutdown, how long running jobs get to finish.
    pub shutdown_grace: Duration,
    /// After a cancel, how long the provider gets to pass it on before the job is closed.
    pub cancel_grace: Duration,
}

/// What a connection may take: how many at once, and how long a request may take to arrive.
#[derive(Debug, Clone, PartialEq)]
pub struct HttpLimits {
    /// Connections open at once; one more is answered 503 and closed.
    pub max_connections: usize,
    /// A request's head (and a TLS handshake) must arrive within this; an idle keep-alive
    /// connection, waiting for its next request's head, is closed after it too.
    pub header_timeout: Duration,
    /// A body that sends nothing for this long is refused with 408.
    pub body_idle_timeout: Duration,
    /// A body must arrive whole within this, or it is refused with 408.
    pub body_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        Self {
            max_connections: 1024,
            header_timeout: Duration::from_secs(20),
            body_idle_timeout: Duration::from_secs(30),
            body_timeout: Duration::from_secs(300),
        }
    }
}

/// Retention: ended jobs keep their output and files this long, then the janitor removes them.
#[derive(Debug, Clone)]
pub struct RetentionConfig {
    pub period: Duration,
    /// How often the janitor applies it.
    pub every: Duration,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        Self {
            period: Duration::from_secs(7 * 24 * 3600),
            every: Duration::from_secs(60),
        }
    }
}

impl Default for DispatchConfig {
    fn default() -> Self {
        Self {
            per_model_concurrency: 4,
            max_concurrency: 16,
            lease: Duration::from_secs(30),
            poll: Duration::from_secs(1),
            run_timeout: Duration::from_secs(600),
            shutdown_grace: Duration::from_secs(10),
            cancel_grace: Duration::from_secs(5),
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
            http: HttpLimits::default(),
            bootstrap_key: None,
            admin_token: None,
            tls: None,
            dispatch: DispatchConfig::default(),
            max_attempts: invokd_core::service::DEFAULT_MAX_ATTEMPTS,
            retention: RetentionConfig::default(),
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

/// The largest attempt count both stores' columns hold.
pub const MAX_ATTEMPTS_LIMIT: u32 = i32::MAX as u32;

impl ServerConfig {
    /// Settings checked and brought within their bounds: the one place for limits, whether the
    /// settings came from the command line or were built in code. Durations and counts that
    /// must not be zero are raised to their least useful value.
    pub fn validate(mut self) -> anyhow::Result<Self> {
        if self.file_urls == FileUrls::Presigned && !matches!(self.blobs, BlobLocation::S3(_)) {
            anyhow::bail!("presigned file URLs need S3 blob storage (--s3-bucket)");
        }
        if self.max_attempts > MAX_ATTEMPTS_LIMIT {
            anyhow::bail!("max attempts must be at most {MAX_ATTEMPTS_LIMIT}");
        }
        self.max_attempts = self.max_attempts.max(1);
        let d = &mut self.dispatch;
        d.per_model_concurrency = d.per_model_concurrency.max(1);
        d.max_concurrency = d.max_concurrency.max(1);
        d.lease = d.lease.max(Duration::from_secs(2));
        d.poll = d.poll.max(Duration::from_millis(1));
        d.run_timeout = d.run_timeout.max(Duration::from_secs(1));
        self.retention.every = self.retention.every.max(Duration::from_millis(10));
        let h = &mut self.http;
        h.max_connections = h.max_connections.max(1);
        for d in [
            &mut h.header_timeout,
            &mut h.body_idle_timeout,
            &mut h.body_timeout,
        ] {
            *d = (*d).max(Duration::from_millis(100));
        }
        let w = &mut self.webhooks;
        w.backoff_base = w.backoff_base.max(Duration::from_millis(1));
        w.backoff_max = w.backoff_max.max(Duration::from_millis(1));
        w.timeout = w.timeout.max(Duration::from_secs(1));
        if let Some(fal) = &mut self.fal {
            let ms = Duration::from_millis(1);
            fal.max_concurrency = fal.max_concurrency.max(1);
            fal.retries = fal.retries.max(1);
            fal.breaker_threshold = fal.breaker_threshold.max(1);
            for d in [
                &mut fal.backoff_base,
                &mut fal.backoff_max,
                &mut fal.request_timeout,
                &mut fal.poll_interval,
                &mut fal.poll_max,
                &mut fal.webhook_poll_max,
            ] {
                *d = (*d).max(ms);
            }
        }
        Ok(self)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn config() -> ServerConfig {
        ServerConfig::new("127.0.0.1:0".parse().unwrap(), "data".into())
    }

    #[test]
    fn zeroes_are_raised_to_their_least_useful_value() {
        let mut c = config();
        c.max_attempts = 0;
        c.dispatch.per_model_concurrency = 0;
        c.dispatch.max_concurrency = 0;
        c.dispatch.lease = Duration::ZERO;
        c.dispatch.poll = Duration::ZERO;
        c.dispatch.run_timeout = Duration::ZERO;
        c.retention.every = Duration::ZERO;
        let c = c.validate().unwrap();
        assert_eq!(c.max_attempts, 1);
        assert_eq!(c.dispatch.per_model_concurrency, 1);
        assert_eq!(c.dispatch.max_concurrency, 1);
        assert_eq!(c.dispatch.lease, Duration::from_secs(2));
        assert_eq!(c.dispatch.poll, Duration::from_millis(1));
        assert_eq!(c.dispatch.run_timeout, Duration::from_secs(1));
        assert_eq!(c.retention.every, Duration::from_millis(10));
    }

    #[test]
    fn presigned_urls_without_a_bucket_are_refused() {
        let mut c = config();
        c.file_urls = FileUrls::Presigned;
        let e = c.validate().unwrap_err().to_string();
        assert!(e.contains("S3"), "{e}");
    }

    #[test]
    fn attempts_beyond_what_the_stores_hold_are_refused() {
        let mut c = config();
        c.max_attempts = u32::MAX;
        assert!(c.validate().is_err());
    }
}
