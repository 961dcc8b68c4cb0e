//! `invokd serve`: start the gateway, show the first key once, write the local client context.

use std::{net::SocketAddr, path::PathBuf, time::Duration};

use anyhow::Context as _;
use clap::Args;
use invokd_client::config::{ClientConfig, Context, default_path};
use invokd_server::{
    Server, ServerConfig,
    config::{BlobLocation, FileUrls, StoreLocation},
};
use invokd_store::S3Config;
use tracing_subscriber::EnvFilter;

#[derive(Debug, Args)]
pub struct ServeArgs {
    /// Address to listen on (port 0 picks a free port).
    #[arg(long, env = "INVOKD_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// Directory for the database, output files and secrets.
    #[arg(long, env = "INVOKD_DATA_DIR", default_value = "./invokd-data")]
    data_dir: PathBuf,
    /// A PostgreSQL URL (postgres://user@host/db) for a store that several replicas share;
    /// without it, SQLite in the data directory.
    #[arg(long, env = "INVOKD_DATABASE_URL")]
    database_url: Option<String>,
    /// Keep files in this S3 bucket (credentials: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and
    /// optionally AWS_SESSION_TOKEN); without it, in the data directory.
    #[arg(long, env = "INVOKD_S3_BUCKET")]
    s3_bucket: Option<String>,
    /// The S3 endpoint, for S3-compatible servers (default: AWS's endpoint of the region).
    #[arg(long, env = "INVOKD_S3_ENDPOINT", requires = "s3_bucket")]
    s3_endpoint: Option<String>,
    /// The bucket's region (default: AWS_REGION, else us-east-1).
    #[arg(long, env = "INVOKD_S3_REGION", requires = "s3_bucket")]
    s3_region: Option<String>,
    /// A prefix for every object key, so deployments can share a bucket.
    #[arg(
        long,
        env = "INVOKD_S3_PREFIX",
        default_value = "",
        requires = "s3_bucket"
    )]
    s3_prefix: String,
    /// Virtual-host-style bucket URLs (bucket.host/key) instead of path-style (host/bucket/key).
    /// Default: virtual-host on AWS, path-style with --s3-endpoint.
    #[arg(long, env = "INVOKD_S3_VIRTUAL_HOST", requires = "s3_bucket")]
    s3_virtual_host: Option<bool>,
    /// File URLs in outputs: `gateway` (served by invokd) or `presigned` (straight from S3).
    #[arg(long, env = "INVOKD_FILE_URLS", value_enum, default_value_t = FileUrlMode::Gateway)]
    file_urls: FileUrlMode,
    /// URL clients reach this server at, used in file URLs (default: from the request's Host).
    #[arg(long, env = "INVOKD_PUBLIC_URL")]
    public_url: Option<String>,
    /// Extra catalog directory: its model files add to or replace the built-in ones.
    #[arg(long, env = "INVOKD_CATALOG_DIR")]
    catalog_dir: Option<PathBuf>,
    /// The emulator's latency per job, in milliseconds.
    #[arg(long, env = "INVOKD_EMULATOR_LATENCY_MS", default_value_t = 500)]
    emulator_latency_ms: u64,
    /// The emulator's latency for one model, as MODEL=MS (repeatable).
    #[arg(long = "emulator-model-latency", value_name = "MODEL=MS", value_parser = parse_model_latency)]
    emulator_model_latency: Vec<(String, u64)>,
    /// Jobs of one model that may run at once.
    #[arg(long, env = "INVOKD_PER_MODEL_CONCURRENCY", default_value_t = 4)]
    per_model_concurrency: u32,
    /// Jobs that may run at once in this process.
    #[arg(long, env = "INVOKD_MAX_CONCURRENCY", default_value_t = 16)]
    max_concurrency: u32,
    /// Seconds a claimed job's lease lasts without a heartbeat.
    #[arg(long, env = "INVOKD_LEASE_SECONDS", default_value_t = 30)]
    lease_seconds: u64,
    /// Claims per job before it fails.
    // Bounded by what both stores' attempt columns hold.
    #[arg(long, env = "INVOKD_MAX_ATTEMPTS", default_value_t = invokd_core::service::DEFAULT_MAX_ATTEMPTS,
          value_parser = clap::value_parser!(u32).range(0..=2_147_483_647))]
    max_attempts: u32,
    /// On shutdown, how long running jobs may take to finish before they go back to the queue.
    #[arg(long, env = "INVOKD_SHUTDOWN_GRACE_SECONDS", default_value_t = 10)]
    shutdown_grace_seconds: u64,
    /// Largest accepted request body, in bytes.
    #[arg(long, env = "INVOKD_MAX_BODY_BYTES", default_value_t = 4 * 1024 * 1024)]
    max_body_bytes: usize,
    /// Connections open at once; one more is answered 503 (closed, under TLS).
    #[arg(long, env = "INVOKD_MAX_CONNECTIONS", default_value_t = 1024)]
    max_connections: usize,
    /// How long a request's head (and a TLS handshake) may take to arrive, in seconds; an idle
    /// keep-alive connection is closed after it too.
    #[arg(long, env = "INVOKD_HEADER_TIMEOUT_SECONDS", default_value_t = 20)]
    header_timeout_seconds: u64,
    /// How long a request body may send nothing, in seconds (then 408).
    #[arg(long, env = "INVOKD_BODY_IDLE_TIMEOUT_SECONDS", default_value_t = 30)]
    body_idle_timeout_seconds: u64,
    /// How long a request body may take in all, in seconds (then 408).
    #[arg(long, env = "INVOKD_BODY_TIMEOUT_SECONDS", default_value_t = 300)]
    body_timeout_seconds: u64,
    /// How long signed file URLs stay valid, in seconds.
    #[arg(long, env = "INVOKD_FILE_URL_TTL_SECONDS", default_value_t = 24 * 3600)]
    file_url_ttl_seconds: u64,
    /// Where to write the client config on first start (default: the CLI's config path).
    #[arg(long, env = "INVOKD_CONFIG")]
    client_config: Option<PathBuf>,
    /// Serve https with this certificate chain (PEM); needs --tls-key. `invokd tls init` makes one.
    #[arg(long, env = "INVOKD_TLS_CERT", requires = "tls_key")]
    tls_cert: Option<PathBuf>,
    /// The private key (PEM) of --tls-cert.
    #[arg(long, env = "INVOKD_TLS_KEY", requires = "tls_cert")]
    tls_key: Option<PathBuf>,
    /// How long an Idempotency-Key is remembered, in seconds.
    #[arg(long, env = "INVOKD_IDEMPOTENCY_TTL_SECONDS", default_value_t = 24 * 3600)]
    idempotency_ttl_seconds: u64,
    /// Longest run of one job, in seconds, unless the model or the job sets its own.
    #[arg(long, env = "INVOKD_RUN_TIMEOUT_SECONDS", default_value_t = 600)]
    run_timeout_seconds: u64,
    /// The largest file a client or a worker may upload, in bytes.
    #[arg(long, env = "INVOKD_MAX_UPLOAD_BYTES", default_value_t = 100 * 1024 * 1024)]
    max_upload_bytes: usize,
    /// How long ended jobs keep their output and files, in seconds (default 7 days).
    #[arg(long, env = "INVOKD_RETENTION_SECONDS", default_value_t = 7 * 24 * 3600)]
    retention_seconds: u64,
    /// How often retention is applied (outputs past it deleted), in milliseconds.
    #[arg(
        long,
        alias = "janitor-interval-ms",
        env = "INVOKD_JANITOR_INTERVAL_MS",
        default_value_t = 60_000,
        hide = true
    )]
    retention_interval_ms: u64,
    /// Requests per second that create jobs or files, per access key (0: no limit).
    #[arg(
        long,
        alias = "rate-limit-per-second",
        env = "INVOKD_CREATE_RATE_LIMIT_PER_SECOND",
        default_value_t = 50.0
    )]
    create_rate_limit_per_second: f64,
    /// Creates a key may make at once above its rate.
    #[arg(
        long,
        alias = "rate-limit-burst",
        env = "INVOKD_CREATE_RATE_LIMIT_BURST",
        default_value_t = 200
    )]
    create_rate_limit_burst: u32,
    /// Every other request (reads, polls, lists, cancels) per second, per access key (0: no
    /// limit).
    #[arg(
        long,
        env = "INVOKD_READ_RATE_LIMIT_PER_SECOND",
        default_value_t = 1000.0
    )]
    read_rate_limit_per_second: f64,
    /// Other requests a key may make at once above its rate.
    #[arg(long, env = "INVOKD_READ_RATE_LIMIT_BURST", default_value_t = 2000)]
    read_rate_limit_burst: u32,
    /// Queued jobs one key may have (0: no cap).
    #[arg(long, env = "INVOKD_MAX_QUEUED_PER_KEY", default_value_t = 10_000)]
    max_queued_per_key: u64,
    /// Queued jobs in all (0: no cap).
    #[arg(long, env = "INVOKD_MAX_QUEUE_LENGTH", default_value_t = 1_000_000)]
    max_queue_length: u64,
    /// How long webhook deliveries are retried after the job ends, in seconds.
    #[arg(long, env = "INVOKD_WEBHOOK_RETRY_SECONDS", default_value_t = 24 * 3600)]
    webhook_retry_seconds: u64,
    /// First webhook retry delay, in milliseconds (doubles each time, with jitter).
    #[arg(long, env = "INVOKD_WEBHOOK_BACKOFF_BASE_MS", default_value_t = 5000)]
    webhook_backoff_base_ms: u64,
    /// Longest webhook retry delay, in milliseconds.
    #[arg(long, env = "INVOKD_WEBHOOK_BACKOFF_MAX_MS", default_value_t = 600_000)]
    webhook_backoff_max_ms: u64,
    /// Time limit of one webhook attempt, in seconds.
    #[arg(long, env = "INVOKD_WEBHOOK_TIMEOUT_SECONDS", default_value_t = 15)]
    webhook_timeout_seconds: u64,
    /// Let input URLs and webhooks reach loopback, private and link-local addresses (refused by default).
    #[arg(long, env = "INVOKD_ALLOW_PRIVATE_URLS")]
    allow_private_urls: bool,
    #[command(flatten)]
    fal: FalArgs,
    /// Which provider runs each model: `PATTERN=PROVIDER,...`, a pattern being a model id or a
    /// prefix ending in `*`; the most specific wins (default with FAL_KEY: `fal-ai/*=fal`).
    #[arg(long, env = "INVOKD_ROUTES", value_name = "ROUTES")]
    routes: Option<String>,
    /// Log filter, e.g. `info` or `invokd_server=debug`.
    #[arg(long, env = "INVOKD_LOG", default_value = "info")]
    log: String,
    /// Log format: JSON lines when stderr is not a terminal, readable text when it is.
    #[arg(long, env = "INVOKD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
}

/// The fal upstream: on when a key is given.
#[derive(Debug, Args)]
struct FalArgs {
    /// fal's API key (`key_id:key_secret`): models routed to fal run on fal's real models.
    #[arg(long, env = "FAL_KEY", hide_env_values = true)]
    fal_key: Option<String>,
    /// fal's queue API.
    #[arg(
        long,
        env = "INVOKD_FAL_QUEUE_URL",
        default_value = "https://queue.fal.run"
    )]
    fal_queue_url: String,
    /// fal's run host: the streaming endpoint of the models that stream.
    #[arg(long, env = "INVOKD_FAL_RUN_URL", default_value = "https://fal.run")]
    fal_run_url: String,
    /// fal's webhook signing keys (JWKS).
    #[arg(
        long,
        env = "INVOKD_FAL_JWKS_URL",
        default_value = "https://rest.alpha.fal.ai/.well-known/jwks.json"
    )]
    fal_jwks_url: String,
    /// Copy fal's output files into invokd's file store and serve them from invokd.
    #[arg(long, env = "INVOKD_FAL_REHOST", default_value_t = true, action = clap::ArgAction::Set)]
    fal_rehost: bool,
    /// fal requests in flight at once.
    #[arg(long, env = "INVOKD_FAL_MAX_CONCURRENCY", default_value_t = 16)]
    fal_max_concurrency: usize,
    /// Tries per call to fal (429, 5xx, timeouts and dropped connections are tried again).
    #[arg(long, env = "INVOKD_FAL_RETRIES", default_value_t = 6)]
    fal_retries: u32,
    /// First retry delay, in milliseconds; it doubles, with jitter, up to the maximum.
    #[arg(long, env = "INVOKD_FAL_BACKOFF_BASE_MS", default_value_t = 500)]
    fal_backoff_base_ms: u64,
    /// Longest retry delay, in milliseconds.
    #[arg(long, env = "INVOKD_FAL_BACKOFF_MAX_MS", default_value_t = 30_000)]
    fal_backoff_max_ms: u64,
    /// Time limit of one call to fal, in milliseconds.
    #[arg(long, env = "INVOKD_FAL_REQUEST_TIMEOUT_MS", default_value_t = 30_000)]
    fal_request_timeout_ms: u64,
    /// First status poll delay, in milliseconds; it doubles up to the maximum.
    #[arg(long, env = "INVOKD_FAL_POLL_MS", default_value_t = 500)]
    fal_poll_ms: u64,
    /// Longest status poll delay, in milliseconds, without webhooks.
    #[arg(long, env = "INVOKD_FAL_POLL_MAX_MS", default_value_t = 5_000)]
    fal_poll_max_ms: u64,
    /// Longest status poll delay, in milliseconds, when fal's webhooks wake the runs.
    #[arg(long, env = "INVOKD_FAL_WEBHOOK_POLL_MAX_MS", default_value_t = 30_000)]
    fal_webhook_poll_max_ms: u64,
    /// Consecutive failed calls that open fal's circuit breaker.
    #[arg(long, env = "INVOKD_FAL_BREAKER_THRESHOLD", default_value_t = 5)]
    fal_breaker_threshold: u32,
    /// How long the breaker stays open, in milliseconds, before fal is tried again.
    #[arg(long, env = "INVOKD_FAL_BREAKER_OPEN_MS", default_value_t = 30_000)]
    fal_breaker_open_ms: u64,
}

impl FalArgs {
    fn config(&self) -> Option<invokd_server::FalConfig> {
        let key = self.fal_key.as_deref().filter(|k| !k.trim().is_empty())?;
        let ms = Duration::from_millis;
        Some(invokd_server::FalConfig {
            queue_url: self.fal_queue_url.clone(),
            run_url: self.fal_run_url.clone(),
            jwks_url: self.fal_jwks_url.clone(),
            webhook_url: None,
            rehost: self.fal_rehost,
            max_concurrency: self.fal_max_concurrency,
            retries: self.fal_retries,
            backoff_base: ms(self.fal_backoff_base_ms),
            backoff_max: ms(self.fal_backoff_max_ms),
            request_timeout: ms(self.fal_request_timeout_ms),
            poll_interval: ms(self.fal_poll_ms),
            poll_max: ms(self.fal_poll_max_ms),
            webhook_poll_max: ms(self.fal_webhook_poll_max_ms),
            breaker_threshold: self.fal_breaker_threshold,
            breaker_open_for: ms(self.fal_breaker_open_ms),
            ..invokd_server::FalConfig::new(key)
        })
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum FileUrlMode {
    Gateway,
    Presigned,
}

/// The store named by --database-url: PostgreSQL for `postgres://` URLs.
pub fn store_location(url: Option<&str>) -> anyhow::Result<StoreLocation> {
    match url.map(str::trim).filter(|u| !u.is_empty()) {
        None => Ok(StoreLocation::Embedded),
        Some(u) if invokd_store::is_postgres_url(u) => Ok(StoreLocation::Postgres(u.to_owned())),
        Some(_) => anyhow::bail!(
            "--database-url must be a postgres:// URL (leave it out for SQLite in the data directory)"
        ),
    }
}

/// The S3 settings of the flags, with credentials from the environment.
fn s3_config(a: &ServeArgs) -> anyhow::Result<Option<S3Config>> {
    let Some(bucket) = a.s3_bucket.clone().filter(|b| !b.is_empty()) else {
        return Ok(None);
    };
    let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
    let region = a
        .s3_region
        .clone()
        .or_else(|| env("AWS_REGION"))
        .or_else(|| env("AWS_DEFAULT_REGION"))
        .unwrap_or_else(|| "us-east-1".to_owned());
    let endpoint = match &a.s3_endpoint {
        Some(e) => e.clone(),
        None => format!("https://s3.{region}.amazonaws.com"),
    };
    let endpoint = endpoint
        .parse()
        .with_context(|| format!("--s3-endpoint {endpoint:?} is not a URL"))?;
    let (Some(access_key_id), Some(secret_access_key)) =
        (env("AWS_ACCESS_KEY_ID"), env("AWS_SECRET_ACCESS_KEY"))
    else {
        anyhow::bail!("--s3-bucket needs AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY");
    };
    Ok(Some(S3Config {
        endpoint,
        bucket,
        region,
        path_style: !a.s3_virtual_host.unwrap_or(a.s3_endpoint.is_none()),
        prefix: a.s3_prefix.clone(),
        access_key_id,
        secret_access_key,
        session_token: env("AWS_SESSION_TOKEN"),
    }))
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(super) enum LogFormat {
    Auto,
    Json,
    Text,
}

fn parse_model_latency(s: &str) -> Result<(String, u64), String> {
    let (model, ms) = s.rsplit_once('=').ok_or("expected MODEL=MS")?;
    let ms = ms
        .parse()
        .map_err(|_| format!("{ms:?} is not a number of milliseconds"))?;
    Ok((model.to_owned(), ms))
}

/// Logs to stderr, as text on a terminal and JSON elsewhere unless `format` says.
pub(super) fn init_logs(filter: &str, format: LogFormat) -> anyhow::Result<()> {
    let filter = EnvFilter::try_new(filter).context("invalid --log filter")?;
    let json = match format {
        LogFormat::Json => true,
        LogFormat::Text => false,
        LogFormat::Auto => !std::io::IsTerminal::is_terminal(&std::io::stderr()),
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    if json {
        logs.json()
            .flatten_event(true)
            .with_current_span(false)
            .init();
    } else {
        logs.init();
    }
    Ok(())
}

pub async fn run(a: ServeArgs) -> anyhow::Result<()> {
    init_logs(&a.log, a.log_format)?;

    let mut config = ServerConfig::new(a.listen, a.data_dir.clone());
    config.store = store_location(a.database_url.as_deref())?;
    if let Some(s3) = s3_config(&a)? {
        config.blobs = BlobLocation::S3(Box::new(s3));
    }
    config.file_urls = match a.file_urls {
        FileUrlMode::Gateway => FileUrls::Gateway,
        FileUrlMode::Presigned => FileUrls::Presigned,
    };
    config.public_url = a.public_url.clone();
    config.catalog_dir = a.catalog_dir.clone();
    config.max_body_bytes = a.max_body_bytes;
    config.http = invokd_server::config::HttpLimits {
        max_connections: a.max_connections,
        header_timeout: Duration::from_secs(a.header_timeout_seconds),
        body_idle_timeout: Duration::from_secs(a.body_idle_timeout_seconds),
        body_timeout: Duration::from_secs(a.body_timeout_seconds),
    };
    config.file_url_ttl = Duration::from_secs(a.file_url_ttl_seconds);
    config.tls = match (&a.tls_cert, &a.tls_key) {
        (Some(cert), Some(key)) => Some(invokd_server::tls::TlsFiles {
            cert: cert.clone(),
            key: key.clone(),
        }),
        _ => None,
    };
    config.fetch.allow_private = a.allow_private_urls;
    config.rate_limit = invokd_server::rate_limit::RateLimitConfig {
        create: invokd_server::rate_limit::Rate {
            rate: a.create_rate_limit_per_second,
            burst: a.create_rate_limit_burst,
        },
        read: invokd_server::rate_limit::Rate {
            rate: a.read_rate_limit_per_second,
            burst: a.read_rate_limit_burst,
        },
    };
    config.max_queued_per_key = a.max_queued_per_key;
    config.max_queue_length = a.max_queue_length;
    config.dispatch.run_timeout = Duration::from_secs(a.run_timeout_seconds);
    config.retention.period = Duration::from_secs(a.retention_seconds);
    config.retention.every = Duration::from_millis(a.retention_interval_ms);
    config.webhooks.retry_for = Duration::from_secs(a.webhook_retry_seconds);
    config.webhooks.backoff_base = Duration::from_millis(a.webhook_backoff_base_ms);
    config.webhooks.backoff_max = Duration::from_millis(a.webhook_backoff_max_ms);
    config.webhooks.timeout = Duration::from_secs(a.webhook_timeout_seconds);
    config.idempotency_ttl = Duration::from_secs(a.idempotency_ttl_seconds);
    config.admin_token = std::env::var("INVOKD_ADMIN_TOKEN")
        .ok()
        .filter(|k| !k.is_empty());
    config.bootstrap_key = std::env::var("INVOKD_BOOTSTRAP_KEY")
        .ok()
        .filter(|k| !k.is_empty());
    config.emulator.latency = Duration::from_millis(a.emulator_latency_ms);
    config.emulator.latency_per_model = a
        .emulator_model_latency
        .iter()
        .map(|(m, ms)| (m.clone(), Duration::from_millis(*ms)))
        .collect();
    config.dispatch.per_model_concurrency = a.per_model_concurrency;
    config.dispatch.max_concurrency = a.max_concurrency;
    config.dispatch.lease = Duration::from_secs(a.lease_seconds);
    config.max_upload_bytes = a.max_upload_bytes;
    config.max_attempts = a.max_attempts;
    config.dispatch.shutdown_grace = Duration::from_secs(a.shutdown_grace_seconds);
    config.fal = a.fal.config();
    if let Some(routes) = &a.routes {
        config.routes = invokd_server::provider_routes::Route::parse_table(routes)
            .context("invalid --routes (INVOKD_ROUTES)")?;
    }

    let server = Server::start(config).await?;
    let scheme = if server.is_tls() { "https" } else { "http" };
    let url = format!("{scheme}://{}", server.local_addr());
    if let Some(key) = server.created_key() {
        announce_first_key(
            key,
            server.created_admin_token(),
            &url,
            a.client_config.clone(),
        );
    } else if let Some(admin) = server.created_admin_token() {
        println!(
            "Created the admin token (shown once, keep it safe; also in the data directory's admin.token):\n\n    {admin}\n"
        );
    }
    let stop = shutdown_signal()?;
    println!("invokd listening on {url}");
    tracing::info!(%url, data_dir = %a.data_dir.display(), "invokd ready");
    server
        .run(async {
            stop.await;
            tracing::info!("shutdown requested");
        })
        .await?;
    tracing::info!("invokd stopped");
    Ok(())
}

/// Shows the first key (and admin token) once and saves them as the `local` context of the
/// CLI's config.
fn announce_first_key(key: &str, admin: Option<&str>, url: &str, path: Option<PathBuf>) {
    println!("Created the first access key (shown once, keep it safe):\n\n    {key}\n");
    if let Some(admin) = admin {
        println!(
            "Created the admin token (for `invokd keys`; also in the data directory's admin.token):\n\n    {admin}\n"
        );
    }
    let saved = path
        .map(Ok)
        .unwrap_or_else(default_path)
        .map_err(anyhow::Error::from)
        .and_then(|path| {
            let mut cfg = ClientConfig::load(&path)?;
            cfg.upsert(
                "local",
                Context {
                    api_url: url.to_owned(),
                    access_token: key.to_owned(),
                    admin_token: admin.map(str::to_owned),
                },
            );
            cfg.save(&path)?;
            Ok(path)
        });
    match saved {
        Ok(p) => println!(
            "Saved it as context \"local\" in {}; `invokd async-invoke` uses it.",
            p.display()
        ),
        Err(e) => eprintln!("warning: could not write the client config: {e:#}"),
    }
}

/// Listens for Ctrl-C and SIGTERM from now on, before the server says it listens: a signal sent
/// as soon as it does (a supervisor, a test) stops it cleanly rather than killing it. The
/// future resolves at the first signal.
#[cfg(unix)]
pub(super) fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    use tokio::signal::unix::{SignalKind, signal};
    let mut interrupt = signal(SignalKind::interrupt()).context("cannot listen for SIGINT")?;
    let mut terminate = signal(SignalKind::terminate()).context("cannot listen for SIGTERM")?;
    Ok(async move {
        tokio::select! {
            _ = interrupt.recv() => {}
            _ = terminate.recv() => {}
        }
    })
}

#[cfg(not(unix))]
fn shutdown_signal() -> anyhow::Result<impl std::future::Future<Output = ()>> {
    Ok(async {
        let _ = tokio::signal::ctrl_c().await;
    })
}
