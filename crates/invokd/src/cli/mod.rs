//! Command-line arguments and dispatch to the subcommands.

mod async_invoke;
mod models;
mod serve;
mod tls;

use clap::{Parser, Subcommand};

/// invokd: a self-hosted gateway for asynchronous generative-media inference.
#[derive(Debug, Parser)]
#[command(name = "invokd", version, about)]
pub struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (embedded default: SQLite and files in --data-dir, the emulator provider).
    Serve(serve::ServeArgs),
    /// Create and follow async invocations (doctl's `serverless-inference async-invoke`).
    #[command(name = "async-invoke", visible_alias = "async")]
    AsyncInvoke(async_invoke::AsyncInvokeArgs),
    /// The model catalog.
    Models(models::ModelsArgs),
    /// Certificates for local https.
    Tls(tls::TlsArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Serve(a) => serve::run(a).await,
        Command::AsyncInvoke(a) => async_invoke::run(a).await,
        Command::Models(a) => models::run(a),
        Command::Tls(a) => tls::run(a),
    }
}
