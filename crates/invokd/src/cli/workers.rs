//! `invokd workers token create|list|revoke` and `invokd workers list`: worker tokens and the
//! workers seen, through the admin API with the admin token; `invokd workers runpod-env`: the
//! environment an unmodified RunPod worker is started with.

use clap::{Args, Subcommand};
use invokd_api::worker::{CreateWorkerToken, WorkerTokenView, WorkerView};

use super::{
    global::{Output, Session},
    output::{self, Table, time},
};

#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    admin_token: super::keys::AdminToken,
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Worker tokens: what workers authenticate with.
    Token {
        #[command(subcommand)]
        command: TokenCmd,
    },
    /// The workers seen in the last day: what they run, when last seen, their jobs.
    List,
    /// Print the environment that points an unmodified `runpod` SDK worker at this gateway.
    RunpodEnv(RunpodEnv),
}

#[derive(Debug, Args)]
struct RunpodEnv {
    /// The worker token (`invw_...`) the worker authenticates with.
    #[arg(long)]
    token: String,
    /// A model id or `prefix*` pattern the worker serves, within the token's (repeat for more;
    /// default: every model of the token).
    #[arg(long = "models", num_args = 1..)]
    models: Vec<String>,
    /// The worker's id, one per worker process (default: a fresh one).
    #[arg(long)]
    pod_id: Option<String>,
    /// How often the worker pings, in ms: at most a third of the gateway's lease
    /// (`--lease-seconds`, 30 by default), and at least 1000 (the SDK counts whole seconds).
    #[arg(long, default_value_t = 10_000, value_parser = clap::value_parser!(u64).range(1000..))]
    ping_interval_ms: u64,
}

/// The environment variables of a RunPod worker for the gateway at `api_url`, in order.
fn runpod_env(api_url: &str, e: &RunpodEnv) -> Vec<(&'static str, String)> {
    let base = format!("{}/v1/worker/runpod", api_url.trim_end_matches('/'));
    // Model patterns are plain in a query but for these few characters.
    let models: String = e
        .models
        .join(",")
        .chars()
        .map(|c| match c {
            '%' | '&' | '#' | '+' | ' ' | '=' | '?' => format!("%{:02X}", c as u32),
            c => c.to_string(),
        })
        .collect();
    let query = format!("?models={models}");
    let pod = e.pod_id.clone().unwrap_or_else(|| {
        format!(
            "runpod-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        )
    });
    vec![
        (
            "RUNPOD_WEBHOOK_GET_JOB",
            format!("{base}/job-take/$ID{query}"),
        ),
        (
            "RUNPOD_WEBHOOK_POST_OUTPUT",
            format!("{base}/job-done/$RUNPOD_POD_ID/$ID{query}"),
        ),
        (
            "RUNPOD_WEBHOOK_POST_STREAM",
            format!("{base}/job-stream/$RUNPOD_POD_ID/$ID{query}"),
        ),
        (
            "RUNPOD_WEBHOOK_PING",
            format!("{base}/ping/$RUNPOD_POD_ID{query}"),
        ),
        ("RUNPOD_PING_INTERVAL", e.ping_interval_ms.to_string()),
        ("RUNPOD_POD_ID", pod),
        ("RUNPOD_AI_API_KEY", e.token.clone()),
    ]
}

#[derive(Debug, Subcommand)]
enum TokenCmd {
    /// Make a worker token for some models; its secret is shown this once.
    Create {
        /// A label, e.g. the machine or pool the token is for.
        #[arg(long)]
        name: String,
        /// A model id or `prefix*` pattern its workers may serve (repeat for more).
        #[arg(long = "models", required = true, num_args = 1..)]
        models: Vec<String>,
    },
    /// List the worker tokens (never their secrets), newest first.
    List,
    /// Revoke a worker token: its workers' next call is refused, their jobs go back to the
    /// queue when their leases lapse.
    Revoke {
        /// The token's id (from `invokd workers token list`).
        id: String,
    },
}

fn token_table(tokens: &[WorkerTokenView]) -> Table {
    let mut t = Table::new(&["ID", "Name", "Prefix", "Models", "Created At", "Revoked At"]);
    for k in tokens {
        t.row(vec![
            k.id.clone(),
            k.name.clone(),
            k.prefix.clone(),
            k.models.join(","),
            time(&k.created_at),
            k.revoked_at.as_ref().map(time).unwrap_or_default(),
        ]);
    }
    t
}

fn worker_table(workers: &[WorkerView]) -> Table {
    let mut t = Table::new(&[
        "Name",
        "ID",
        "Version",
        "Models",
        "Slots",
        "Running",
        "Completed",
        "Failed",
        "Labels",
        "Last Seen",
    ]);
    for w in workers {
        let labels: Vec<String> = w.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        t.row(vec![
            w.name.clone(),
            w.id.clone(),
            w.version.clone().unwrap_or_default(),
            w.models.join(","),
            w.slots.to_string(),
            w.running.to_string(),
            w.completed.to_string(),
            w.failed.to_string(),
            labels.join(","),
            time(&w.last_seen),
        ]);
    }
    t
}

pub async fn run(session: &Session, a: WorkersArgs) -> anyhow::Result<()> {
    let json = session.output() == Output::Json;
    if let Cmd::RunpodEnv(e) = &a.command {
        let env = runpod_env(&session.api_url()?, e);
        if json {
            let map: serde_json::Map<String, serde_json::Value> = env
                .into_iter()
                .map(|(k, v)| (k.to_owned(), v.into()))
                .collect();
            output::json(&map)?;
        } else {
            // Single quotes: the templates' `$ID` and `$RUNPOD_POD_ID` are the SDK's to fill.
            let lines: Vec<String> = env
                .iter()
                .map(|(k, v)| format!("export {k}='{}'", v.replace('\'', "'\\''")))
                .collect();
            output::out(&lines.join("\n"))?;
        }
        return Ok(());
    }
    let admin = session.admin(a.admin_token.token.as_deref())?;
    match a.command {
        Cmd::Token {
            command: TokenCmd::Create { name, models },
        } => {
            let made = admin
                .create_worker_token(&CreateWorkerToken { name, models })
                .await?;
            if json {
                output::json(&made)?;
            } else {
                token_table(std::slice::from_ref(&made)).print()?;
                output::out(&format!(
                    "\nWorker token (shown this once, keep it safe):\n\n    {}\n\nStart a worker with it: invokd worker --api-url URL --token TOKEN --backend ...",
                    made.token.as_deref().unwrap_or_default()
                ))?;
            }
        }
        Cmd::Token {
            command: TokenCmd::List,
        } => {
            let list = admin.list_worker_tokens().await?;
            if json {
                output::json(&list)?;
            } else {
                token_table(&list.tokens).print()?;
            }
        }
        Cmd::Token {
            command: TokenCmd::Revoke { id },
        } => {
            admin.revoke_worker_token(&id).await?;
            if !json {
                output::out(&format!("Worker token {id} revoked."))?;
            }
        }
        Cmd::List => {
            let list = admin.list_workers().await?;
            if json {
                output::json(&list)?;
            } else {
                worker_table(&list.workers).print()?;
            }
        }
        Cmd::RunpodEnv(_) => {}
    }
    Ok(())
}
