//! `invokd async-invoke`: create (doctl's flags, plus typed `--input`, `--webhook`, `--wait`,
//! `--download`), get, status, list, cancel and wait.

use std::{io::Read as _, path::PathBuf, time::Duration};

use anyhow::Context as _;
use chrono::{DateTime, NaiveDate, Utc};
use clap::{Args, Subcommand};
use invokd_api::async_invoke::{CreateInvocation, Invocation, Status, Tag};
use invokd_client::{Client, ClientError, CreateOptions, ListQuery, input::apply_assignment};
use serde_json::{Map, Value};

use super::{
    exit::{JobsEnded, Usage, usage},
    global::{Output, Session},
    models, output,
    progress::{WaitSettings, wait_all},
};

#[derive(Debug, Args)]
pub struct AsyncInvokeArgs {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Start a job and print its request id (with --wait, its result).
    #[command(after_help = "Examples:\n  \
        invokd async-invoke create -m fal-ai/flux/schnell --prompt \"A futuristic city at sunset\"\n  \
        invokd async-invoke create -m fal-ai/flux/schnell --prompt cat --input num_images=2 --input image_size=square --wait --download out/\n  \
        invokd async-invoke create -m fal-ai/stable-audio-25/text-to-audio --prompt Techno --seconds-total 60\n  \
        invokd async-invoke create -m fal-ai/elevenlabs/tts/multilingual-v2 --text \"Hello\" --tag env=prod\n  \
        echo '{\"model_id\": \"fal-ai/fast-sdxl\", \"input\": {\"prompt\": \"a fox\"}}' | invokd async-invoke create --request -")]
    Create(CreateArgs),
    /// Show a job with its output (and save its files with --download).
    Get {
        request_id: String,
        #[command(flatten)]
        download: DownloadArgs,
    },
    /// Show a job's status.
    Status { request_id: String },
    /// List your jobs, newest first.
    List(ListArgs),
    /// Cancel jobs: a queued job never runs, a running one is stopped.
    Cancel {
        #[arg(required = true, value_name = "REQUEST_ID")]
        request_ids: Vec<String>,
    },
    /// Wait until jobs are finished, showing their progress, then show them.
    Wait {
        #[arg(required = true, value_name = "REQUEST_ID")]
        request_ids: Vec<String>,
        /// Give up after this many seconds (the jobs go on; exit code 6).
        #[arg(long, value_name = "SECONDS")]
        timeout: Option<f64>,
        #[command(flatten)]
        download: DownloadArgs,
    },
}

#[derive(Debug, Args)]
struct DownloadArgs {
    /// Save the output files into DIR as <request_id>-<n>.<ext> (waits for the job).
    #[arg(long, value_name = "DIR")]
    download: Option<PathBuf>,
    /// Overwrite files that already exist in the --download directory.
    #[arg(long, requires = "download")]
    force: bool,
}

#[derive(Debug, Args)]
struct CreateArgs {
    /// Model id, e.g. fal-ai/flux/schnell (required unless --request is set).
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Text prompt for image or audio generation models.
    #[arg(long)]
    prompt: Option<String>,
    /// Text to speak, for text-to-speech models.
    #[arg(long)]
    text: Option<String>,
    /// Audio length in seconds, for audio generation models.
    #[arg(long, default_value_t = 0, value_name = "SECONDS")]
    seconds_total: u32,
    /// Tag in key=value form (repeatable, e.g. --tag env=prod).
    #[arg(long = "tag", value_name = "KEY=VALUE")]
    tags: Vec<String>,
    /// Path to a full JSON request body; "-" reads it from stdin.
    #[arg(long, value_name = "FILE")]
    request: Option<String>,
    /// An input field as key=value, typed by the model's schema (repeatable): num_images=2,
    /// image_size.width=64, sync_mode=true, loras='[{"path": "..."}]'.
    #[arg(long = "input", short = 'i', value_name = "KEY=VALUE")]
    inputs: Vec<String>,
    /// URL to POST the result to when the job ends (signed like fal's webhooks).
    #[arg(long, value_name = "URL")]
    webhook: Option<String>,
    /// Wait for the job to finish, showing its progress, then show it.
    #[arg(long)]
    wait: bool,
    /// With --wait: give up after this many seconds (the job goes on; exit code 6).
    #[arg(long, value_name = "SECONDS")]
    timeout: Option<f64>,
    /// Idempotency-Key of the create (default: a new one; the same key and body give back the
    /// first job).
    #[arg(long, value_name = "KEY")]
    idempotency_key: Option<String>,
    #[command(flatten)]
    download: DownloadArgs,
}

#[derive(Debug, Args)]
struct ListArgs {
    /// Only jobs with this status: queued, in_progress, completed, failed or canceled.
    #[arg(long)]
    status: Option<String>,
    /// Only jobs of this model.
    #[arg(long, short = 'm')]
    model: Option<String>,
    /// Only jobs with this tag, as key=value.
    #[arg(long, value_name = "KEY=VALUE")]
    tag: Option<String>,
    /// Only jobs created at or after this time (RFC 3339, or a date: 2026-01-31).
    #[arg(long, value_name = "TIME")]
    created_after: Option<String>,
    /// Only jobs created before this time (RFC 3339, or a date).
    #[arg(long, value_name = "TIME")]
    created_before: Option<String>,
    /// Jobs per page, 1 to 1000 (default 20).
    #[arg(long, value_parser = clap::value_parser!(u32).range(1..=1000))]
    limit: Option<u32>,
    /// The page after the one that gave this cursor.
    #[arg(long)]
    cursor: Option<String>,
    /// Every page, not only the first.
    #[arg(long, conflicts_with = "cursor")]
    all: bool,
}

fn parse_tag(t: &str) -> anyhow::Result<Tag> {
    match t.split_once('=').or_else(|| t.split_once(':')) {
        Some((k, v)) if !k.trim().is_empty() => Ok(Tag {
            key: k.trim().to_owned(),
            value: v.to_owned(),
        }),
        _ => usage(format!(
            "--tag {t:?} is not key=value (e.g. --tag env=prod)"
        )),
    }
}

fn parse_status(s: &str) -> anyhow::Result<Status> {
    Ok(
        match s.trim().to_ascii_uppercase().replace('-', "_").as_str() {
            "QUEUED" => Status::Queued,
            "IN_PROGRESS" | "RUNNING" => Status::InProgress,
            "COMPLETED" => Status::Completed,
            "FAILED" => Status::Failed,
            "CANCELED" | "CANCELLED" => Status::Canceled,
            _ => {
                return usage(format!(
                    "--status {s:?} is not a status: use queued, in_progress, completed, failed or canceled"
                ));
            }
        },
    )
}

fn parse_time(flag: &str, s: &str) -> anyhow::Result<DateTime<Utc>> {
    if let Ok(t) = DateTime::parse_from_rfc3339(s) {
        return Ok(t.to_utc());
    }
    if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d")
        && let Some(t) = d.and_hms_opt(0, 0, 0)
    {
        return Ok(t.and_utc());
    }
    usage(format!(
        "{flag} {s:?} is not a time: use RFC 3339 (2026-01-31T12:00:00Z) or a date (2026-01-31)"
    ))
}

fn timeout(secs: Option<f64>) -> anyhow::Result<Option<Duration>> {
    match secs {
        None => Ok(None),
        Some(0.0) => Ok(None),
        Some(s) if s.is_finite() && s > 0.0 && s < 1e9 => Ok(Some(Duration::from_secs_f64(s))),
        Some(s) => usage(format!(
            "--timeout must be a positive number of seconds, got {s}"
        )),
    }
}

/// The body of `--request FILE` or `--request -`.
fn read_request(src: &str, model: Option<&str>) -> anyhow::Result<CreateInvocation> {
    let mut text = String::new();
    if src == "-" {
        std::io::stdin()
            .read_to_string(&mut text)
            .context("cannot read the request body from stdin")?;
    } else {
        text =
            std::fs::read_to_string(src).with_context(|| format!("cannot read --request {src}"))?;
    }
    let shown = if src == "-" { "stdin" } else { src };
    let mut v: Value = serde_json::from_str(&text)
        .map_err(|e| Usage(format!("--request {shown}: not valid JSON: {e}")))?;
    let Some(obj) = v.as_object_mut() else {
        return usage(format!(
            "--request {shown}: the body must be a JSON object like {{\"model_id\": \"...\", \"input\": {{...}}}}"
        ));
    };
    if let Some(m) = model {
        obj.insert("model_id".into(), Value::from(m));
    }
    obj.entry("input")
        .or_insert_with(|| Value::Object(Map::new()));
    serde_json::from_value(v).map_err(|e| {
        Usage(format!(
            "--request {shown}: not a request body ({e}); it needs {{\"model_id\": \"...\", \"input\": {{...}}}} (or pass -m)"
        ))
        .into()
    })
}

/// The create body from the flags.
async fn build_body(
    session: &Session,
    client: &Client,
    a: &CreateArgs,
) -> anyhow::Result<CreateInvocation> {
    let mut body = match &a.request {
        Some(src) => read_request(src, a.model.as_deref())?,
        None => {
            let Some(model) = &a.model else {
                return usage(
                    "--model (-m) is required unless --request gives a full JSON body \
                     (`invokd models list` shows the models)",
                );
            };
            CreateInvocation {
                model_id: model.clone(),
                input: Map::new(),
                tags: None,
                webhook_url: None,
                run_timeout_seconds: None,
            }
        }
    };
    if body.model_id.trim().is_empty() {
        return usage("the model id is empty: pass --model (-m)");
    }
    if let Some(p) = &a.prompt {
        body.input.insert("prompt".into(), Value::from(p.clone()));
    }
    if let Some(t) = &a.text {
        body.input.insert("text".into(), Value::from(t.clone()));
    }
    if a.seconds_total > 0 {
        body.input
            .insert("seconds_total".into(), Value::from(a.seconds_total));
    }
    if !a.inputs.is_empty() {
        let schema = models::input_schema(session, client, &body.model_id).await?;
        for s in &a.inputs {
            apply_assignment(&mut body.input, schema.as_ref(), s)
                .map_err(|e| Usage(format!("--input {s}: {e}")))?;
        }
    }
    if !a.tags.is_empty() {
        let mut tags = body.tags.take().unwrap_or_default();
        for t in &a.tags {
            tags.push(parse_tag(t)?);
        }
        body.tags = Some(tags);
    }
    if let Some(w) = &a.webhook {
        body.webhook_url = Some(w.clone());
    }
    Ok(body)
}

pub async fn run(session: &Session, a: AsyncInvokeArgs) -> anyhow::Result<()> {
    let client = session.client()?;
    let out = session.output();
    match a.command {
        Cmd::Create(args) => {
            let body = build_body(session, &client, &args).await?;
            let opts = CreateOptions {
                idempotency_key: args.idempotency_key.clone(),
                prefer_wait: None,
            };
            let created = client.create_with(&body, &opts).await?;
            if !args.wait && args.download.download.is_none() {
                return match out {
                    Output::Json => output::json(&created),
                    Output::Text => {
                        output::invocation_table(std::slice::from_ref(&created)).print()?;
                        Ok(())
                    }
                };
            }
            session.verbose(format!("created {}", created.request_id));
            let ids = vec![created.request_id.clone()];
            waited(
                session,
                &client,
                &ids,
                timeout(args.timeout)?,
                &args.download,
            )
            .await
        }
        Cmd::Get {
            request_id,
            download,
        } => {
            let inv = client.get(&request_id).await?;
            let saved = match &download.download {
                Some(dir) => {
                    if !inv.status.is_terminal() {
                        anyhow::bail!(
                            "{request_id} is {}: it has no files yet; wait for them with \
                             `invokd async-invoke wait {request_id} --download {}`",
                            inv.status,
                            dir.display()
                        );
                    }
                    save(session, &client, &inv, dir, download.force).await?
                }
                None => Vec::new(),
            };
            show(out, std::slice::from_ref(&inv), &[saved], false)
        }
        Cmd::Status { request_id } => {
            let inv = client.status(&request_id).await?;
            match out {
                Output::Json => output::json(&inv),
                Output::Text => {
                    output::invocation_table(std::slice::from_ref(&inv)).print()?;
                    Ok(())
                }
            }
        }
        Cmd::List(args) => list(session, &client, args).await,
        Cmd::Cancel { request_ids } => cancel(out, &client, &request_ids).await,
        Cmd::Wait {
            request_ids,
            timeout: t,
            download,
        } => waited(session, &client, &request_ids, timeout(t)?, &download).await,
    }
}

async fn save(
    session: &Session,
    client: &Client,
    inv: &Invocation,
    dir: &std::path::Path,
    force: bool,
) -> anyhow::Result<Vec<PathBuf>> {
    let paths = client
        .download_outputs(inv, dir, force)
        .await
        .with_context(|| format!("cannot save the files of {}", inv.request_id))?;
    if paths.is_empty() {
        session.verbose(format!("{} has no output files", inv.request_id));
    }
    Ok(paths)
}

/// Prints invocations in full: one object (or a JSON array for several), and the saved files.
fn show(
    out: Output,
    invs: &[Invocation],
    saved: &[Vec<PathBuf>],
    many: bool,
) -> anyhow::Result<()> {
    match out {
        Output::Json => {
            if many {
                output::json(&invs)?;
            } else if let Some(inv) = invs.first() {
                output::json(inv)?;
            }
            for p in saved.iter().flatten() {
                eprintln!("saved {}", p.display());
            }
        }
        Output::Text => {
            let blocks: Vec<String> = invs
                .iter()
                .zip(saved.iter().chain(std::iter::repeat(&Vec::new())))
                .map(|(inv, files)| {
                    let mut block = output::invocation_detail(inv);
                    for (i, p) in files.iter().enumerate() {
                        let label = if i == 0 { "Saved" } else { "" };
                        block.push_str(&format!("\n{label:<12}   {}", p.display()));
                    }
                    block
                })
                .collect();
            output::out(&blocks.join("\n\n"))?;
        }
    }
    Ok(())
}

/// Waits for jobs, saves their files, shows them, and says which failed.
async fn waited(
    session: &Session,
    client: &Client,
    ids: &[String],
    timeout: Option<Duration>,
    download: &DownloadArgs,
) -> anyhow::Result<()> {
    let settings = WaitSettings {
        timeout,
        interactive: session.interactive(),
    };
    let results = wait_all(client, ids, &settings).await?;
    let mut invs = Vec::new();
    let mut errors: Vec<(String, ClientError)> = Vec::new();
    for (id, r) in ids.iter().zip(results) {
        match r {
            Ok(inv) => invs.push(inv),
            Err(e) => errors.push((id.clone(), e)),
        }
    }
    let mut saved = Vec::new();
    for inv in &invs {
        saved.push(match &download.download {
            Some(dir) if inv.status == Status::Completed => {
                save(session, client, inv, dir, download.force).await?
            }
            _ => Vec::new(),
        });
    }
    show(session.output(), &invs, &saved, ids.len() > 1)?;
    let ended: Vec<String> = invs
        .iter()
        .filter(|i| matches!(i.status, Status::Failed | Status::Canceled))
        .map(|i| match &i.error {
            Some(e) => format!("{} ended {}: {e}", i.request_id, i.status),
            None => format!("{} ended {}", i.request_id, i.status),
        })
        .collect();
    if let Some((id, e)) = errors.into_iter().next() {
        for msg in &ended {
            eprintln!("{msg}");
        }
        return Err(anyhow::Error::from(e).context(format!("waiting for {id}")));
    }
    if !ended.is_empty() {
        return Err(JobsEnded(ended).into());
    }
    Ok(())
}

async fn list(session: &Session, client: &Client, a: ListArgs) -> anyhow::Result<()> {
    let tag = a
        .tag
        .as_deref()
        .map(parse_tag)
        .transpose()?
        .map(|t| (t.key, t.value));
    let mut q = ListQuery {
        status: a.status.as_deref().map(parse_status).transpose()?,
        model_id: a.model.clone(),
        tag,
        created_after: a
            .created_after
            .as_deref()
            .map(|s| parse_time("--created-after", s))
            .transpose()?,
        created_before: a
            .created_before
            .as_deref()
            .map(|s| parse_time("--created-before", s))
            .transpose()?,
        limit: a.limit.or(a.all.then_some(200)),
        cursor: a.cursor.clone(),
    };
    let mut page = client.list(&q).await?;
    if a.all {
        while let Some(c) = page.next_cursor.take() {
            q.cursor = Some(c);
            let next = client.list(&q).await?;
            page.invocations.extend(next.invocations);
            page.next_cursor = next.next_cursor;
        }
    }
    match session.output() {
        Output::Json => output::json(&page)?,
        Output::Text => {
            output::invocation_table(&page.invocations).print()?;
            if let Some(c) = &page.next_cursor {
                eprintln!(
                    "More jobs: pass --cursor {c} (with the same filters) for the next page, or --all for every page."
                );
            }
        }
    }
    Ok(())
}

async fn cancel(out: Output, client: &Client, ids: &[String]) -> anyhow::Result<()> {
    let mut done = Vec::new();
    let mut failed = Vec::new();
    for id in ids {
        match client.cancel(id).await {
            Ok(inv) => done.push(inv),
            Err(e) => failed.push((id.clone(), e)),
        }
    }
    match out {
        Output::Json if ids.len() == 1 => {
            if let Some(inv) = done.first() {
                output::json(inv)?;
            }
        }
        Output::Json => output::json(&done)?,
        Output::Text if !done.is_empty() => output::invocation_table(&done).print()?,
        Output::Text => {}
    }
    let mut failed = failed.into_iter();
    if let Some((id, e)) = failed.next() {
        for (other, e) in failed {
            eprintln!("Error: cannot cancel {other}: {e}");
        }
        return Err(anyhow::Error::from(e).context(format!("cannot cancel {id}")));
    }
    Ok(())
}
