#![doc = include_str!("../README.md")]

mod bootstrap;
pub mod config;
mod dispatcher;
mod error;
mod extract;
mod fal_proxy;
mod present;
mod request_context;
mod router;
mod routes;
mod server;
mod state;
pub mod tls;

pub use config::ServerConfig;
pub use server::Server;
