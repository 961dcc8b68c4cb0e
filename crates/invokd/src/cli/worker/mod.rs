//! `invokd worker`: this binary as a worker agent. It pulls the jobs of its models from a
//! gateway over the worker protocol (docs/workers.md) and runs them on a backend, each a
//! `Provider`: a local program per job (`command`), espeak-ng (`speech`), or the emulator.

mod agent;
mod client;
mod held;
mod sink;

use std::{collections::BTreeMap, path::Path, sync::Arc, time::Duration};

use anyhow::Context as _;
use invokd_api::worker::WorkerInfo;
use invokd_core::{catalog::Catalog, provider::Provider, run::RunLimits};
use invokd_providers::{CommandConfig, CommandProvider, Emulator, EmulatorConfig, LocalSpeech};
use invokd_server::{FetchConfig, InputFetcher};
use reqwest::Url;
use tokio_util::sync::CancellationToken;

use super::serve::{LogFormat, init_logs, shutdown_signal};

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum Backend {
    /// A local program per job, from the --config file.
    Command,
    /// Speech models spoken by espeak-ng.
    Speech,
    /// The emulator: synthetic outputs, for load tests of the protocol.
    Emulator,
}

/// `invokd worker`. The gateway's URL is the global `--api-url` (`-u`, `INVOKD_API_URL`), and
/// the command backend's file the global `--config` (`-c`): the worker reads no CLI config.
#[derive(Debug, clap::Args)]
pub struct WorkerArgs {
    /// A worker token (`invokd workers token create`).
    #[arg(long, env = "INVOKD_WORKER_TOKEN", hide_env_values = true)]
    token: String,
    /// What runs the jobs.
    #[arg(long, value_enum)]
    backend: Backend,
    /// Jobs run at once.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=64))]
    slots: u32,
    /// This worker's name, for people (default: the host's name).
    #[arg(long)]
    name: Option<String>,
    /// A label, `KEY=VALUE` (a GPU type, a region); repeatable.
    #[arg(long = "label", value_parser = parse_label)]
    labels: Vec<(String, String)>,
    /// A model id or `prefix*` this worker serves; repeatable (default: the command config's
    /// patterns; `fal-ai/elevenlabs/*` for speech; for the emulator, every model of the token).
    #[arg(long = "models")]
    models: Vec<String>,
    /// On SIGTERM or Ctrl-C, how long running jobs may take to finish before they are handed
    /// back to the queue.
    #[arg(long, default_value_t = 30)]
    grace: u64,
    /// The longest a take waits for a job, in milliseconds (a shutdown waits for it too).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1..=60_000))]
    take_wait_ms: u64,
    /// The longest one run may take, unless its model says, in seconds.
    #[arg(long, default_value_t = 600)]
    run_timeout_seconds: u64,
    /// The emulator's latency per job, in milliseconds.
    #[arg(long, default_value_t = 500)]
    emulator_latency_ms: u64,
    /// Let input URLs reach loopback and private addresses (the gateway's own always may).
    #[arg(long)]
    allow_private_urls: bool,
    /// Log filter.
    #[arg(long, env = "INVOKD_LOG", default_value = "info")]
    log: String,
    #[arg(long, env = "INVOKD_LOG_FORMAT", value_enum, default_value_t = LogFormat::Auto)]
    log_format: LogFormat,
}

fn parse_label(s: &str) -> Result<(String, String), String> {
    let (k, v) = s.split_once('=').ok_or("expected KEY=VALUE")?;
    if k.is_empty() {
        return Err("a label needs a key".into());
    }
    Ok((k.to_owned(), v.to_owned()))
}

/// The backend's provider and the patterns it serves unless `--models` says.
fn backend(
    a: &WorkerArgs,
    config: Option<&Path>,
) -> anyhow::Result<(Arc<dyn Provider>, Vec<String>)> {
    Ok(match a.backend {
        Backend::Command => {
            let path = config
                .context("--backend command needs --config FILE (models mapped to commands)")?;
            let config = CommandConfig::load(path)?;
            let patterns = config.patterns();
            (Arc::new(CommandProvider::new(config)), patterns)
        }
        Backend::Speech => {
            let speech = LocalSpeech::default();
            let version = speech.check()?;
            tracing::info!(%version, "speech backend: espeak-ng");
            (Arc::new(speech), vec!["fal-ai/elevenlabs/*".to_owned()])
        }
        Backend::Emulator => (
            Arc::new(Emulator::new(EmulatorConfig {
                latency: Duration::from_millis(a.emulator_latency_ms),
                ..EmulatorConfig::default()
            })),
            Vec::new(),
        ),
    })
}

/// Runs the worker for the gateway at `api_url`; `config` is the command backend's file.
pub async fn run(
    a: WorkerArgs,
    api_url: Option<&str>,
    config: Option<&Path>,
) -> anyhow::Result<()> {
    init_logs(&a.log, a.log_format)?;
    // Listening before anything else, so a signal during start-up is not lost.
    let signal = shutdown_signal()?;
    let api_url: Url = api_url
        .context("invokd worker needs the gateway's URL: --api-url URL (or INVOKD_API_URL)")?
        .parse()
        .context("--api-url is not a URL")?;
    let (provider, default_models) = backend(&a, config)?;
    let models = if a.models.is_empty() {
        default_models
    } else {
        a.models.clone()
    };
    // A base ending in `/` so that paths join below it (a gateway behind a prefix).
    let mut base = api_url.clone();
    if !base.path().ends_with('/') {
        base.set_path(&format!("{}/", base.path()));
    }
    let name = a.name.clone().unwrap_or_else(host_name);
    let info = WorkerInfo {
        // One per process: a restarted worker is a new one, whose leases are its own.
        id: uuid::Uuid::now_v7().to_string(),
        name,
        version: Some(concat!("invokd-worker ", env!("CARGO_PKG_VERSION")).to_owned()),
        models,
        slots: a.slots,
        labels: a.labels.iter().cloned().collect::<BTreeMap<_, _>>(),
    };
    let api = client::Api::new(base.clone(), a.token.clone(), client::Backoff::default())?;
    let inputs = InputFetcher::remote(
        base,
        FetchConfig {
            allow_private: a.allow_private_urls,
            ..FetchConfig::default()
        },
    )?;
    let agent = Arc::new(agent::Agent::new(
        api,
        info.clone(),
        provider,
        Arc::new(inputs),
        Catalog::embedded()?,
        RunLimits {
            run_timeout: Duration::from_secs(a.run_timeout_seconds),
            cancel_grace: Duration::from_secs(5),
        },
        Duration::from_secs(a.grace),
        Duration::from_millis(a.take_wait_ms),
    ));
    let stop = CancellationToken::new();
    let stopper = stop.clone();
    tokio::spawn(async move {
        signal.await;
        tracing::info!("shutdown requested: taking no more jobs");
        stopper.cancel();
    });
    tracing::info!(
        worker_id = %info.id,
        name = %info.name,
        slots = info.slots,
        models = ?info.models,
        gateway = %api_url,
        "invokd worker started"
    );
    // Said on stdout once running, for scripts and tests that wait for it.
    println!("invokd worker {} running", info.id);
    agent.run(stop).await?;
    tracing::info!("invokd worker stopped");
    Ok(())
}

fn host_name() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|h| h.trim().to_owned())
        .filter(|h| !h.is_empty())
        .unwrap_or_else(|| "invokd-worker".to_owned())
}

#[cfg(test)]
mod tests;
