//! Assembling and running the server: the core (data directory, store, blobs, catalog, signals,
//! lifecycle), then the parts over it (the API's state, the dispatcher, the janitor, the webhook
//! deliverer), each built by a function of its own.

use std::{collections::BTreeMap, future::Future, net::SocketAddr, sync::Arc, time::Duration};

use anyhow::Context;
use invokd_core::workers::{WorkerService, WorkerServiceConfig};
use invokd_core::{
    blob::BlobStore,
    catalog::Catalog,
    events::Signals,
    lifecycle::{Janitor, JanitorConfig, Lifecycle},
    provider::Provider,
    service::{JobService, ServiceConfig},
    signing::UrlSigner,
    store::{Stale, Store},
};
use invokd_providers::{Emulator, EmulatorConfig, FalProvider, LocalSpeech};
use invokd_store::{LocalBlobStore, PostgresStore, S3BlobStore, SqliteStore};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::{
    bootstrap,
    config::{BlobLocation, ServerConfig, StoreLocation},
    connections::Capped,
    dispatcher::Dispatcher,
    provider_routes::{self, Providers, Route},
    router,
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
    Ok(match &config.blobs {
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
    })
}

/// What a configuration cannot say, given in code: providers beyond the built-in ones, named
/// for the routing table (the tests' scripted provider, for one).
#[derive(Default)]
pub struct Extras {
    pub providers: Vec<(String, Arc<dyn Provider>)>,
}

/// A started server: bound, migrated, recovered, ready to run.
pub struct Server {
    listener: TcpListener,
    tls: Option<Arc<rustls::ServerConfig>>,
    app: Arc<App>,
    dispatcher: Dispatcher,
    janitor: Janitor,
    deliverer: crate::webhooks::Deliverer,
    /// News from a shared store, relayed to this process's signals.
    notices: (Arc<dyn Store>, Signals),
    local_addr: SocketAddr,
    created_key: Option<String>,
    created_admin_token: Option<String>,
    _data_dir: bootstrap::DataDir,
}

/// The parts every other part is built on: the data directory, the store, the blob store, the
/// catalog, this process's signals and the lifecycle service over them.
struct Core {
    data_dir: bootstrap::DataDir,
    store: Arc<dyn Store>,
    blobs: Arc<dyn BlobStore>,
    catalog: Arc<Catalog>,
    signals: Signals,
    lifecycle: Lifecycle,
    /// The data directory's id, which the lease owners of its processes start with.
    instance: String,
    /// This process's lease owner: the data directory's id, then one of its own.
    owner: String,
}

impl Core {
    async fn open(config: &ServerConfig) -> anyhow::Result<Self> {
        let data_dir = bootstrap::DataDir::open(&config.data_dir)?;
        let store = open_store(config, &data_dir).await?;
        let blobs = open_blobs(config, &data_dir).await?;
        let mut catalog = Catalog::embedded().context("the embedded catalog is invalid")?;
        if let Some(dir) = &config.catalog_dir {
            catalog.extend_from_dir(dir)?;
        }
        let signals = Signals::default();
        let lifecycle = Lifecycle::new(store.clone(), signals.clone(), config.dispatch.lease);
        let instance = data_dir.instance_id()?;
        Ok(Self {
            // The pid tells an operator which process holds a lease.
            owner: format!(
                "{instance}/{}-{}",
                std::process::id(),
                uuid::Uuid::now_v7().simple()
            ),
            instance,
            data_dir,
            store,
            blobs,
            catalog: Arc::new(catalog),
            signals,
            lifecycle,
        })
    }

    /// Takes back the jobs this data directory's earlier processes left running: on the
    /// embedded store, those of its previous lives at once (the directory's lock says none of
    /// them runs), never those held by anyone else (a remote worker); on a shared store, only
    /// expired leases, as other replicas may hold the rest.
    async fn recover(&self, config: &ServerConfig) -> anyhow::Result<()> {
        let own = format!("{}/", self.instance);
        let stale = if config.store.is_shared() {
            Stale::Expired
        } else {
            Stale::HeldBy { owner_prefix: &own }
        };
        let recovered = self.lifecycle.take_back(stale).await?;
        if recovered.requeued + recovered.failed > 0 {
            tracing::warn!(
                requeued = recovered.requeued,
                failed = recovered.failed,
                "recovered jobs left running by the last process"
            );
        }
        Ok(())
    }

    /// Where the secrets every process of a deployment shares are kept.
    fn secrets(&self, config: &ServerConfig) -> bootstrap::SecretHome<'_> {
        if config.store.is_shared() {
            bootstrap::SecretHome::Store(self.store.as_ref())
        } else {
            bootstrap::SecretHome::DataDir(&self.data_dir.root)
        }
    }
}

/// The configured providers and the routing table: the emulator and local speech always, fal
/// with a key, and the extras; with no routes given, `fal-ai/*` goes to fal when it is
/// configured.
fn providers(
    config: &ServerConfig,
    extras: Extras,
) -> anyhow::Result<(Arc<Providers>, Option<Arc<FalProvider>>)> {
    let emulator = Emulator::new(EmulatorConfig {
        latency: config.emulator.latency,
        latency_per_model: config.emulator.latency_per_model.clone(),
        ..EmulatorConfig::default()
    });
    let mut by_name: BTreeMap<String, Arc<dyn Provider>> = BTreeMap::new();
    by_name.insert(provider_routes::DEFAULT_PROVIDER.into(), Arc::new(emulator));
    let fal = match &config.fal {
        None => None,
        Some(fal_config) => {
            let mut fal_config = fal_config.clone();
            if !config.fetch.allow_private {
                fal_config.file_resolver = Some(crate::outbound::resolver());
            }
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
    by_name.insert(invokd_providers::speech::NAME.into(), local_speech(config)?);
    by_name.extend(extras.providers);
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

/// The local speech provider: espeak-ng is looked for only when a route names it, and its
/// absence then stops the start with how to install it.
fn local_speech(config: &ServerConfig) -> anyhow::Result<Arc<dyn Provider>> {
    let speech = LocalSpeech::default();
    if config
        .routes
        .iter()
        .any(|r| r.provider == invokd_providers::speech::NAME)
    {
        let version = speech.check()?;
        tracing::info!(%version, "local-speech: speech models routed to it run on espeak-ng");
    }
    Ok(Arc::new(speech))
}

/// The job service every API surface calls.
fn job_service(core: &Core, config: &ServerConfig) -> JobService {
    JobService::new(
        core.store.clone(),
        core.catalog.clone(),
        core.signals.clone(),
        ServiceConfig {
            max_attempts: config.max_attempts,
            idempotency_ttl: config.idempotency_ttl,
            max_queued_per_key: config.max_queued_per_key,
            max_queue_length: config.max_queue_length,
            ..ServiceConfig::default()
        },
    )
}

/// The in-process dispatcher, a driver of the lifecycle.
/// The worker endpoints' service, over the core's lifecycle; it hands out only the models
/// routed to workers.
fn worker_service(core: &Core, config: &ServerConfig, providers: Arc<Providers>) -> WorkerService {
    WorkerService::new(
        core.lifecycle.clone(),
        core.catalog.clone(),
        core.blobs.clone(),
        Arc::new(move |model: &str| providers.is_workers(model)),
        WorkerServiceConfig {
            max_file_bytes: config.max_upload_bytes as u64,
            presign_ttl: std::time::Duration::from_secs(3600),
        },
    )
}

fn dispatcher(
    core: &Core,
    config: &ServerConfig,
    providers: Arc<Providers>,
    inputs: crate::input_fetch::InputFetcher,
) -> Dispatcher {
    Dispatcher {
        lifecycle: core.lifecycle.clone(),
        catalog: core.catalog.clone(),
        providers,
        blobs: core.blobs.clone(),
        config: config.dispatch.clone(),
        owner: core.owner.clone(),
        inputs,
    }
}

/// The janitor: expired leases, start deadlines, retention.
fn janitor(core: &Core, config: &ServerConfig) -> Janitor {
    Janitor {
        lifecycle: core.lifecycle.clone(),
        blobs: core.blobs.clone(),
        config: JanitorConfig {
            lease_sweep_every: config.dispatch.lease / 2,
            deadlines_every: config.dispatch.poll,
            retention: config.retention.period,
            retention_every: config.retention.every,
        },
    }
}

/// The webhook deliverer, working through the store's outbox.
fn deliverer(
    core: &Core,
    config: &ServerConfig,
    signer: crate::webhooks::WebhookSigner,
    url_signer: UrlSigner,
    base_url: String,
) -> crate::webhooks::Deliverer {
    crate::webhooks::Deliverer {
        store: core.store.clone(),
        signer,
        url_signer,
        file_url_ttl: config.file_url_ttl,
        blobs: core.blobs.clone(),
        file_urls: config.file_urls,
        base_url,
        config: config.webhooks.clone(),
        allow_private: config.fetch.allow_private,
        owner: format!(
            "invokd-webhooks-{}-{}",
            std::process::id(),
            uuid::Uuid::now_v7()
        ),
        events: core.signals.events.clone(),
    }
}

impl Server {
    /// Opens the data directory, migrates the store, takes back what the last process left
    /// running, creates the first key if there is none, and binds the listener.
    pub async fn start(config: ServerConfig) -> anyhow::Result<Self> {
        Self::start_with(config, Extras::default()).await
    }

    /// [`Server::start`], with what only code can add.
    pub async fn start_with(config: ServerConfig, extras: Extras) -> anyhow::Result<Self> {
        let config = config.validate()?;
        crate::metrics::install();
        // Bad TLS files fail the start before anything else is touched.
        let tls = config
            .tls
            .as_ref()
            .map(crate::tls::server_config)
            .transpose()?;
        let mut core = Core::open(&config).await?;
        core.recover(&config).await?;
        let created_key =
            bootstrap::first_key(core.store.as_ref(), config.bootstrap_key.as_deref()).await?;
        let (providers, fal) = providers(&config, extras)?;
        core.lifecycle = core
            .lifecycle
            .observed_by(Arc::new(crate::metrics::JobMetrics {
                providers: providers.clone(),
            }));
        let secrets = core.secrets(&config);
        let signer = UrlSigner::new(secrets.signing_secret().await?);
        let webhook_signer = crate::webhooks::load_signer(&secrets).await?;
        let (admin_token, admin_created) =
            secrets.admin_token(config.admin_token.as_deref()).await?;
        let inputs = crate::input_fetch::InputFetcher::new(
            core.blobs.clone(),
            signer.clone(),
            config.fetch.clone(),
        )?;
        let listener = TcpListener::bind(config.listen)
            .await
            .with_context(|| format!("cannot listen on {}", config.listen))?;
        let local_addr = listener.local_addr()?;
        let scheme = if tls.is_some() { "https" } else { "http" };
        let base_url = config
            .public_url
            .clone()
            .map(|u| u.trim_end_matches('/').to_owned())
            .unwrap_or_else(|| format!("{scheme}://{local_addr}"));
        let deliverer = deliverer(
            &core,
            &config,
            webhook_signer.clone(),
            signer.clone(),
            base_url,
        );
        let dispatcher = dispatcher(&core, &config, providers.clone(), inputs.clone());
        let janitor = janitor(&core, &config);
        let workers = worker_service(&core, &config, providers.clone());
        let app = Arc::new(App {
            workers,
            webhook_signer,
            admin_token: invokd_core::keys::KeyHash::of(&admin_token),
            rate_limiter: crate::rate_limit::RateLimiter::new(config.rate_limit),
            service: job_service(&core, &config),
            blobs: core.blobs.clone(),
            signer,
            providers,
            fal,
            fetcher: inputs,
            config,
        });
        Ok(Self {
            listener,
            tls,
            app,
            dispatcher,
            janitor,
            deliverer,
            notices: (core.store, core.signals),
            local_addr,
            created_key,
            created_admin_token: admin_created.then_some(admin_token),
            _data_dir: core.data_dir,
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
        let janitor = tokio::spawn(self.janitor.run(stop.clone()));
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
        let limits = self.app.config.http.clone();
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
                let tls = axum_server::tls_rustls::RustlsAcceptor::new(
                    axum_server::tls_rustls::RustlsConfig::from_config(config),
                )
                .handshake_timeout(limits.header_timeout)
                .acceptor(axum_server::accept::DefaultAcceptor);
                let capped = Capped::new(tls, limits.max_connections, false);
                let mut server = axum_server::from_tcp(listener)?.acceptor(capped);
                crate::connections::configure(server.http_builder(), &limits);
                server.handle(handle).serve(app).await
            }
            None => {
                let capped = Capped::new(
                    axum_server::accept::DefaultAcceptor,
                    limits.max_connections,
                    true,
                );
                let mut server = axum_server::from_tcp(listener)?.acceptor(capped);
                crate::connections::configure(server.http_builder(), &limits);
                server.handle(handle).serve(app).await
            }
        };
        served.context("the HTTP server failed")?;
        stop.cancel();
        dispatcher.await.context("the dispatcher panicked")?;
        janitor.await.context("the janitor panicked")?;
        deliverer.await.context("the webhook deliverer panicked")?;
        Ok(())
    }

    /// Whether the server speaks https.
    pub fn is_tls(&self) -> bool {
        self.tls.is_some()
    }
}
