#![doc = include_str!("../README.md")]

mod bootstrap;
pub mod config;
mod dispatcher;
mod error;
mod extract;
mod present;
mod request_context;
mod router;
mod routes;
mod server;
mod state;

pub use config::ServerConfig;
pub use server::Server;
