#![doc = include_str!("../README.md")]

mod bootstrap;
pub mod config;
mod connections;
mod console;
mod dispatcher;
mod extract;
mod fal_path;
mod fal_proxy;
mod input_fetch;
mod live;
mod metrics;
mod openapi;
mod outbound;
mod present;
pub mod provider_routes;
pub mod rate_limit;
mod request_body;
mod request_context;
mod router;
mod routes;
mod run_stream;
mod runpod_output;
mod server;
mod state;
mod store_notices;
pub mod tls;
mod webhooks;

// The wire format's pieces, under the names the server's modules use.
use invokd_wire::error;

pub use config::ServerConfig;
pub use input_fetch::{FetchConfig, InputFetcher};
pub use invokd_providers::FalConfig;
pub use server::{Extras, Server};
pub use webhooks::WebhookConfig;
