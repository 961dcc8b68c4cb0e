//! Assembling and running the server: store, blobs, catalog, service, dispatcher, router.

use std::{collections::BTreeMap, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use chrono::Utc;
use invokd_core::provider::Provider;
use invokd_core::{
    blob::BlobStore,
    catalog::Catalog,
    events::Signals,
    service::{JobService, ServiceConfig},
    signing::UrlSigner,
    store::{Stale, Store},
};
use invokd_providers::{Emulator, EmulatorConfig, FalProvider};
use invokd_store::{LocalBlobStore, PostgresStore, S3BlobStore, SqliteStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    bootstrap,
    config::{BlobLocation, FileUrls, ServerConfig, StoreLocation},
    dispatcher::Dispatcher,
    router,
    routing::{self, Providers, Route},
    state::App,
};

/// The job store the configuration names, migrated.
async fn open_store(
    config: &ServerConfig,
    data_dir: &bootstrap::DataDir,
) -> anyhow::Result<Arc<dyn Store>> {
    Ok(match &config.store {
        StoreLocation::Embedded => Arc::new(
            SqliteStore::open(&data_dir.root.join("invokd.sqlite"))
                .await
                .context("cannot open the job store")?,
        ),
        StoreLocation::Postgres(url) => Arc::new(
            PostgresStore::connect(url)
                .await
                .context("cannot open the PostgreSQL job store")?,
        ),
    })
}

/// The blob storage the configuration names, checked to be reachable and writable.
async fn open_blobs(
    config: &ServerConfig,
    data_dir: &bootstrap::DataDir,
) -> anyhow::Result<Arc<dyn BlobStore>> {
    let blobs: Arc<dyn BlobStore> = match &config.blobs {
        BlobLocation::Local => Arc::new(
            LocalBlobStore::open(data_dir.root.join("files"))
                .context("cannot open the file store")?,
        ),
        BlobLocation::S3(s3) => {
            let store = S3BlobStore::new(s3.as_ref().clone()).context("invalid S3 settings")?;
            store.check_writable().await.with_context(|| {
                format!(
                    "cannot write to the S3 bucket {} (it must exist)",
                    s3.bucket
                )
            })?;
            Arc::new(store)
        }
    };
    if config.file_urls == FileUrls::Presigned && !matches!(config.blobs, BlobLocation::S3(_)) {
        anyhow::bail!("presigned file URLs need S3 blob storage (--s3-bucket)");
    }
    Ok(blobs)
}

/// A started server: bound, migrated, recovered, ready to run.
pub struct Server {
    listener: TcpListener,
    deliverer: crate::webhooks::Deliverer,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Arc<App>,
    dispatcher: Dispatcher,
    /// News from a shared store, relayed to this process's signals.
    notices: (Arc<dyn Store>, Signals),
    local_addr: SocketAddr,
    created_key: Option<String>,
    created_admin_token: Option<String>,
    _data_dir: bootstrap::DataDir,
}

/// The configured providers and the routing table: the emulator always, fal with a key; with
/// no routes given, `fal-ai/*` goes to fal when it is configured.
fn providers(
    config: &ServerConfig,
    emulator: Emulator,
) -> anyhow::Result<(Arc<Providers>, Option<Arc<FalProvider>>)> {
    let mut by_name: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    by_name.insert(routing::DEFAULT_PROVIDER.into(), Arc::new(emulator));
    let fal = match &config.fal {
        None => None,
        Some(fal_config) => {
            let mut fal_config = fal_config.clone();
            if fal_config.webhook_url.is_none()
                && let Some(public) = &config.public_url
            {
                fal_config.webhook_url = Some(format!(
                    "{}{}",
                    public.trim_end_matches('/'),
                    router::FAL_WEBHOOK_PATH
                ));
            }
            let fal = Arc::new(FalProvider::new(fal_config).context("cannot set up fal")?);
            by_name.insert(invokd_providers::fal::NAME.into(), fal.clone());
            Some(fal)
        }
    };
    let routes = if config.routes.is_empty() && fal.is_some() {
        vec![Route {
            pattern: "fal-ai/*".into(),
            provider: invokd_providers::fal::NAME.into(),
        }]
    } else {
        config.routes.clone()
    };
    let providers = Providers::new(routes, by_name).context("invalid model routes")?;
    Ok((Arc::new(providers), fal))
}

impl Server {
    /// Opens the data directory, migrates the store, requeues what the last process left
    /// running, creates the first key if there is none, and binds the listener.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        crate::metrics::install();
        // Bad TLS files fail the start before anything else is touched.
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
        let data_dir = bootstrap::DataDir::open(&config.data_dir)?;
        let store = open_store(&config, &data_dir).await?;
        let blobs = open_blobs(&config, &data_dir).await?;
        let mut catalog = Catalog::embedded().context("the embedded catalog is invalid")?;
        if let Some(dir) = &config.catalog_dir {
            catalog.extend_from_dir(dir)?;
        }
        let catalog = Arc::new(catalog);

        // Alone on the embedded store (the data directory's lock), nothing else can be running a
        // job; on a shared store other replicas may be, so only expired leases are taken back.
        let stale = if config.store.is_shared() {
            Stale::Expired
        } else {
            Stale::AllRunning
        };
        let recovered = store.requeue_stale(stale, Utc::now()).await?;
        if recovered.requeued + recovered.failed > 0 {
            tracing::warn!(
                requeued = recovered.requeued,
                failed = recovered.failed,
                "recovered jobs left running by the last process"
            );
        }
        let created_key =
            bootstrap::first_key(store.as_ref(), config.bootstrap_key.as_deref()).await?;

        let signals = Signals::default();
        let service = JobService::new(
            store.clone(),
            catalog.clone(),
            signals.clone(),
            ServiceConfig {
                max_attempts: config.dispatch.max_attempts,
                idempotency_ttl: config.idempotency_ttl,
                max_queued_per_key: config.max_queued_per_key,
                max_queue_length: config.max_queue_length,
                ..ServiceConfig::default()
            },
        );
        let emulator = Emulator::new(EmulatorConfig {
            latency: config.emulator.latency,
            latency_per_model: config.emulator.latency_per_model.clone(),
            ..EmulatorConfig::default()
        });
        let (providers, fal) = providers(&config, emulator)?;
        let secrets = if config.store.is_shared() {
            bootstrap::SecretHome::Store(store.as_ref())
        } else {
            bootstrap::SecretHome::DataDir(&data_dir.root)
        };
        let signer = UrlSigner::new(secrets.signing_secret().await?);
        let inputs = crate::input_fetch::InputFetcher::new(
            blobs.clone(),
            signer.clone(),
            config.fetch.clone(),
        )?;
        let dispatcher = Dispatcher {
            store: store.clone(),
            catalog,
            providers: providers.clone(),
            blobs: blobs.clone(),
            signals: signals.clone(),
            config: config.dispatch.clone(),
            owner: format!("invokd-{}-{}", std::process::id(), uuid::Uuid::now_v7()),
            inputs,
        };
        let webhook_signer = crate::webhooks::load_signer(&secrets).await?;
        let (admin_token, admin_created) =
            secrets.admin_token(config.admin_token.as_deref()).await?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let deliverer = crate::webhooks::Deliverer {
            store: store.clone(),
            signer: webhook_signer.clone(),
            url_signer: signer.clone(),
            file_url_ttl: config.file_url_ttl,
            blobs: blobs.clone(),
            file_urls: config.file_urls,
            base_url: config
                .public_url
                .clone()
                .map(|u| u.trim_end_matches('/').to_owned())
                .unwrap_or_else(|| format!("{scheme}://{local_addr}")),
            config: config.webhooks.clone(),
            allow_private: config.fetch.allow_private,
            owner: format!(
                "invokd-webhooks-{}-{}",
                std::process::id(),
                uuid::Uuid::now_v7()
            ),
            events: signals.events.clone(),
        };
        let app = Arc::new(App {
            webhook_signer,
            admin_token: invokd_core::keys::KeyHash::of(&admin_token),
            rate_limiter: crate::rate_limit::RateLimiter::new(config.rate_limit),
            service,
            blobs,
            signer,
            config,
            providers,
            fal,
        });
        Ok(Self {
            listener,
            deliverer,
            tls,
            app,
            dispatcher,
            notices: (store, signals),
            local_addr,
            created_key,
            created_admin_token: admin_created.then_some(admin_token),
            _data_dir: data_dir,
        })
    }

    /// The address the server listens on (useful with port 0).
    pub fn local_addr(&self) -> SocketAddr {
        self.local_addr
    }

    /// The admin token created on this start, to show once.
    pub fn created_admin_token(&self) -> Option<&str> {
        self.created_admin_token.as_deref()
    }

    /// The access key created on this first start, to show once.
    pub fn created_key(&self) -> Option<&str> {
        self.created_key.as_deref()
    }

    /// Serves until `shutdown` resolves, then stops taking requests, lets running jobs finish
    /// within the grace period, and returns.
    pub async fn run(
        self,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        // Open streams (SSE) do not end by themselves; after this, connections are closed.
        const HTTP_DRAIN: Duration = Duration::from_secs(5);
        let stop = CancellationToken::new();
        let dispatcher = tokio::spawn(self.dispatcher.run(stop.clone()));
        let deliverer = tokio::spawn(self.deliverer.run(stop.clone()));
        let (store, signals) = self.notices;
        tokio::spawn(crate::store_notices::relay(store, signals, stop.clone()));
        let handle = axum_server::Handle::new();
        let (stop_http, handle_http) = (stop.clone(), handle.clone());
        tokio::spawn(async move {
            shutdown.await;
            stop_http.cancel();
            handle_http.graceful_shutdown(Some(HTTP_DRAIN));
        });
        // The rewrites of the path run before routing.
        let app = tower::make::Shared::new(tower::util::MapRequest::new(
            router::router(self.app),
            router::before_routing,
        ));
        let listener = self
            .listener
            .into_std()
            .context("cannot hand over the listener")?;
        let served = match self.tls {
            Some(config) => {
                let tls = axum_server::tls_rustls::RustlsConfig::from_config(config);
                axum_server::from_tcp_rustls(listener, tls)?
                    .handle(handle)
                    .serve(app)
                    .await
            }
            None => {
                axum_server::from_tcp(listener)?
                    .handle(handle)
                    .serve(app)
                    .await
            }
        };
        served.context("the HTTP server failed")?;
        stop.cancel();
        dispatcher.await.context("the dispatcher panicked")?;
        deliverer.await.context("the webhook deliverer panicked")?;
        Ok(())
    }

    /// Whether the server speaks https.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}
