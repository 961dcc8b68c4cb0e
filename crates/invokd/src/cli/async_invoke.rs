//! `invokd async-invoke`: create, get, status and wait, with doctl's flags.

use std::{io::Read, path::PathBuf, time::Duration};

use anyhow::{Context as _, bail};
use clap::{Args, Subcommand, ValueEnum};
use invokd_api::async_invoke::{CreateInvocation, Invocation, Tag};
use invokd_client::{
    Client,
    config::{ClientConfig, default_path},
};
use serde_json::{Map, Value};

#[derive(Debug, Args)]
pub struct AsyncInvokeArgs {
    #[command(flatten)]
    global: Global,
    #[command(subcommand)]
    command: Cmd,
}

/// doctl's global flags.
#[derive(Debug, Args)]
struct Global {
    /// Access key (default: the config's context).
    #[arg(
        long,
        short = 't',
        env = "INVOKD_ACCESS_TOKEN",
        global = true,
        hide_env_values = true
    )]
    access_token: Option<String>,
    /// API URL (default: the config's context).
    #[arg(long, short = 'u', env = "INVOKD_API_URL", global = true)]
    api_url: Option<String>,
    /// Config file.
    #[arg(long, short = 'c', global = true)]
    config: Option<PathBuf>,
    /// Context of the config file to use.
    #[arg(long, global = true)]
    context: Option<String>,
    /// Output format.
    #[arg(long, short = 'o', value_enum, default_value_t = Output::Text, global = true)]
    output: Output,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Text,
    Json,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start an async invocation and print its request id.
    Create(CreateArgs),
    /// Get an invocation with its output.
    Get { request_id: String },
    /// Get an invocation's status.
    Status { request_id: String },
    /// Wait until an invocation is finished, then print it.
    Wait {
        request_id: String,
        /// Give up after this many seconds.
        #[arg(long, default_value_t = 600)]
        timeout: u64,
    },
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Model id, e.g. fal-ai/flux/schnell (required unless --request is set).
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Prompt for image or audio models.
    #[arg(long)]
    prompt: Option<String>,
    /// Text for text-to-speech models.
    #[arg(long)]
    text: Option<String>,
    /// Audio length in seconds.
    #[arg(long, default_value_t = 0)]
    seconds_total: u32,
    /// Tag as key=value (repeatable).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// A full JSON request body from a file, or `-` for stdin.
    #[arg(long)]
    request: Option<String>,
    /// Wait for the result and print it.
    #[arg(long)]
    wait: bool,
    /// POST the result to this URL when the job ends (signed like fal's webhooks).
    #[arg(long)]
    webhook: Option<String>,
}

fn client(g: &Global) -> anyhow::Result<Client> {
    let path = match &g.config {
        Some(p) => p.clone(),
        None => default_path()?,
    };
    let cfg = ClientConfig::load(&path)?;
    let ctx = cfg.context(g.context.as_deref());
    if g.context.is_some() && ctx.is_none() {
        bail!(
            "no context {:?} in {}",
            g.context.as_deref().unwrap_or_default(),
            path.display()
        );
    }
    let url = g.api_url.clone().or_else(|| ctx.map(|c| c.api_url.clone()));
    let token = g
        .access_token
        .clone()
        .or_else(|| ctx.map(|c| c.access_token.clone()));
    match (url, token) {
        (Some(u), Some(t)) => Ok(Client::new(&u, &t)?),
        _ => bail!(
            "no API URL or access key: pass --api-url and --access-token, or start `invokd serve` once to write {}",
            path.display()
        ),
    }
}

fn body(a: &CreateArgs) -> anyhow::Result<CreateInvocation> {
    if let Some(src) = &a.request {
        let mut text = String::new();
        if src == "-" {
            std::io::stdin().read_to_string(&mut text)?;
        } else {
            text = std::fs::read_to_string(src).with_context(|| format!("cannot read {src}"))?;
        }
        let mut body: CreateInvocation =
            serde_json::from_str(&text).context("--request is not a valid request body")?;
        if let Some(m) = &a.model {
            body.model_id = m.clone();
        }
        if a.webhook.is_some() {
            body.webhook_url = a.webhook.clone();
        }
        return Ok(body);
    }
    let Some(model) = &a.model else {
        bail!("--model is required unless --request is set");
    };
    let mut input = Map::new();
    if let Some(p) = &a.prompt {
        input.insert("prompt".into(), Value::from(p.clone()));
    }
    if let Some(t) = &a.text {
        input.insert("text".into(), Value::from(t.clone()));
    }
    if a.seconds_total > 0 {
        input.insert("seconds_total".into(), Value::from(a.seconds_total));
    }
    let tags = a
        .tags
        .iter()
        .map(|t| {
            t.split_once('=')
                .map(|(k, v)| Tag {
                    key: k.into(),
                    value: v.into(),
                })
                .with_context(|| format!("--tag {t:?} is not key=value"))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    Ok(CreateInvocation {
        model_id: model.clone(),
        input,
        tags: (!tags.is_empty()).then_some(tags),
        webhook_url: a.webhook.clone(),
        run_timeout_seconds: None,
    })
}

fn print(inv: &Invocation, output: Output) -> anyhow::Result<()> {
    match output {
        Output::Json => println!("{}", serde_json::to_string_pretty(inv)?),
        Output::Text => {
            println!(
                "{:<38} {:<40} {:<12} Created At",
                "Request ID", "Model", "Status"
            );
            println!(
                "{:<38} {:<40} {:<12} {}",
                inv.request_id,
                inv.model_id,
                inv.status.as_str(),
                inv.created_at.to_rfc3339()
            );
            if let Some(e) = &inv.error {
                println!("\nError: {e}");
            }
            for url in inv.output.iter().flat_map(urls) {
                println!("{url}");
            }
        }
    }
    Ok(())
}

/// Every `url` in an output, in order.
fn urls(output: &Map<String, Value>) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(m) => {
                if let Some(Value::String(u)) = m.get("url") {
                    out.push(u.clone());
                }
                m.values().for_each(|v| walk(v, out));
            }
            Value::Array(a) => a.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    let mut out = Vec::new();
    output.values().for_each(|v| walk(v, &mut out));
    out
}

pub async fn run(a: AsyncInvokeArgs) -> anyhow::Result<()> {
    let c = client(&a.global)?;
    let inv = match &a.command {
        Cmd::Create(args) => {
            let created = c.create(&body(args)?).await?;
            if args.wait {
                c.wait(&created.request_id, Duration::from_secs(600))
                    .await?
            } else {
                created
            }
        }
        Cmd::Get { request_id } => c.get(request_id).await?,
        Cmd::Status { request_id } => c.status(request_id).await?,
        Cmd::Wait {
            request_id,
            timeout,
        } => c.wait(request_id, Duration::from_secs(*timeout)).await?,
    };
    print(&inv, a.global.output)
}
