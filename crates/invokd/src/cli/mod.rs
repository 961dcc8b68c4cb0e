//! Command-line arguments and dispatch to the subcommands.

mod async_invoke;
mod auth;
pub mod exit;
mod global;
mod keys;
mod migrate;
mod models;
mod output;
mod progress;
mod serve;
mod tls;
mod worker;
mod workers;

use clap::{Parser, Subcommand};

/// invokd: a self-hosted gateway for asynchronous generative-media inference.
#[derive(Debug, Parser)]
#[command(
    name = "invokd",
    version,
    about,
    after_help = "Exit codes: 0 success, 1 other failure, 2 usage, 3 API error, 4 job FAILED or \
                  CANCELED, 5 network failure, 6 --timeout passed, 130 interrupted.\n\
                  Environment: INVOKD_ACCESS_TOKEN, INVOKD_API_URL, INVOKD_CONTEXT, \
                  INVOKD_CONFIG, INVOKD_ADMIN_TOKEN."
)]
pub struct Cli {
    #[command(flatten)]
    global: global::Global,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the gateway (embedded default: SQLite and files in --data-dir, the emulator provider).
    Serve(Box<serve::ServeArgs>),
    /// Create and follow async invocations (doctl's `serverless-inference async-invoke`).
    #[command(name = "async-invoke", visible_alias = "async")]
    AsyncInvoke(async_invoke::AsyncInvokeArgs),
    /// doctl's command path, so its documented commands run with `invokd` in place of `doctl`.
    #[command(name = "serverless-inference", visible_aliases = ["inference", "si"])]
    ServerlessInference(ServerlessInferenceArgs),
    /// The model catalog: the server's, or the built-in one.
    Models(models::ModelsArgs),
    /// Access keys, with the admin token.
    Keys(keys::KeysArgs),
    /// Worker tokens and the workers seen, with the admin token.
    Workers(workers::WorkersArgs),
    /// Named contexts: a server's URL and an access key.
    Auth(auth::AuthArgs),
    /// Certificates for local https.
    Tls(tls::TlsArgs),
    /// Bring the store's schema up to date (the server also does it at start-up).
    Migrate(migrate::MigrateArgs),
    /// Run jobs for a gateway: pull the jobs of its models and run them on a backend.
    #[command(
        after_help = "The gateway is the global --api-url (-u, INVOKD_API_URL); for --backend \
                      command, the global --config (-c) names the file mapping models to \
                      commands. See docs/cli.md (Worker) and docs/workers.md."
    )]
    Worker(Box<worker::WorkerArgs>),
}

#[derive(Debug, clap::Args)]
struct ServerlessInferenceArgs {
    #[command(subcommand)]
    command: ServerlessInference,
}

#[derive(Debug, Subcommand)]
enum ServerlessInference {
    /// Create and follow async invocations (the same as `invokd async-invoke`).
    #[command(name = "async-invoke", visible_alias = "async")]
    AsyncInvoke(async_invoke::AsyncInvokeArgs),
}

pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::ServerlessInference(ServerlessInferenceArgs {
            command: ServerlessInference::AsyncInvoke(a),
        }) => async_invoke::run(&global::Session::load(cli.global)?, a).await,
        Command::Serve(a) => serve::run(*a).await,
        Command::Tls(a) => tls::run(a),
        Command::Migrate(a) => migrate::run(a).await,
        Command::Worker(a) => {
            let global = cli.global;
            worker::run(*a, global.api_url.as_deref(), global.config.as_deref()).await
        }
        Command::AsyncInvoke(a) => async_invoke::run(&global::Session::load(cli.global)?, a).await,
        Command::Models(a) => models::run(&global::Session::load(cli.global)?, a).await,
        Command::Keys(a) => keys::run(&global::Session::load(cli.global)?, a).await,
        Command::Workers(a) => workers::run(&global::Session::load(cli.global)?, a).await,
        Command::Auth(a) => auth::run(&mut global::Session::load(cli.global)?, a).await,
    }
}
