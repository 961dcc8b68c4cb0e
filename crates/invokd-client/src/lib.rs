//! invokd-client: a typed client for invokd's async-invoke API, and the CLI's config file.
#![doc = include_str!("../README.md")]

pub mod admin;
mod client;
pub mod config;
pub mod download;
mod error;
pub mod input;
mod invocations;
pub mod models;
pub mod retry;
pub mod trace;
pub mod wait;

pub use admin::AdminClient;
pub use client::{Client, ClientBuilder};
pub use error::ClientError;
pub use invocations::{CreateOptions, InvocationPage, ListQuery, new_idempotency_key};
pub use retry::RetryPolicy;
pub use trace::TraceEvent;
pub use wait::{WaitEvent, WaitOptions};

/// The API's wire types, re-exported.
pub use invokd_api as api;
