//! What every handler can reach: the job service, blob storage, the URL signer, the settings.

use std::sync::Arc;

use invokd_core::{blob::BlobStore, service::JobService, signing::UrlSigner};

use crate::config::ServerConfig;

pub type AppState = Arc<App>;

pub struct App {
    pub service: JobService,
    /// What the worker endpoints call.
    pub workers: invokd_core::workers::WorkerService,
    pub blobs: Arc<dyn BlobStore>,
    pub signer: UrlSigner,
    pub webhook_signer: crate::webhooks::WebhookSigner,
    /// The admin token's hash; requests are compared by hash, never the token itself.
    pub admin_token: invokd_core::keys::KeyHash,
    pub rate_limiter: crate::rate_limit::RateLimiter,
    pub config: ServerConfig,
    /// Which provider runs each model.
    pub providers: Arc<crate::provider_routes::Providers>,
    /// The fal provider, when configured: its webhooks come in through the router.
    pub fal: Option<Arc<invokd_providers::FalProvider>>,
    /// Fetches the files RunPod workers return, with the input downloads' limits and rules.
    pub fetcher: crate::input_fetch::InputFetcher,
}
