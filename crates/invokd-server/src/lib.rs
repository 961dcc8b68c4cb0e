#![doc = include_str!("../README.md")]

mod bootstrap;
pub mod config;
mod dispatcher;
mod error;
mod extract;
mod fal_proxy;
#[doc(hidden)]
pub mod fuzzing;
mod input_fetch;
mod live;
mod metrics;
mod openapi;
mod outbound;
mod present;
pub mod rate_limit;
mod request_context;
mod router;
mod routes;
pub mod routing;
mod server;
mod state;
mod store_notices;
pub mod tls;
mod webhooks;

pub use config::ServerConfig;
pub use input_fetch::FetchConfig;
pub use invokd_providers::FalConfig;
pub use server::Server;
pub use webhooks::WebhookConfig;
