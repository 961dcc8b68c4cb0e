//! The crash test: rounds of "start invokd, submit jobs from several connections at full speed,
//! SIGKILL it at a random moment", then one last start that lets every job finish, and the
//! checks: every acknowledged request exists and ended, no job finished twice, no output file
//! is missing or torn. It prints its counts and fails if any is wrong.

use std::{
    collections::{HashMap, HashSet},
    io::Cursor,
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use anyhow::{Context, bail};
use clap::Parser;
use rand::Rng;
use serde_json::{Value, json};
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

const KEY: &str = "invk_crashtest_key_0123456789abcdef";

#[derive(Debug, Parser)]
#[command(
    about = "Kill invokd at random moments under load; check that nothing acknowledged is lost"
)]
struct Args {
    /// Kill-and-restart rounds.
    #[arg(long, default_value_t = 10)]
    rounds: u32,
    /// Longest time a round runs before the kill, in seconds (the kill comes at random before).
    #[arg(long, default_value_t = 1.5)]
    max_round_seconds: f64,
    /// Connections submitting at once.
    #[arg(long, default_value_t = 8)]
    connections: usize,
    /// The invokd binary (default: target/debug/invokd next to this program).
    #[arg(long)]
    invokd: Option<PathBuf>,
}

struct Server {
    child: Child,
    url: String,
}

async fn start(bin: &Path, dir: &Path, round: u32) -> anyhow::Result<Server> {
    let log = std::fs::File::create(dir.join(format!("server-{round}.log")))?;
    let mut child = Command::new(bin)
        .args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--emulator-latency-ms",
            "30",
            "--create-rate-limit-per-second",
            "0",
            "--read-rate-limit-per-second",
            "0",
            "--max-concurrency",
            "8",
            "--per-model-concurrency",
            "8",
            "--max-attempts",
            "1000",
            "--log-format",
            "json",
        ])
        .env("INVOKD_BOOTSTRAP_KEY", KEY)
        .env("INVOKD_CONFIG", dir.join("client.toml"))
        .stdout(Stdio::piped())
        .stderr(log)
        .kill_on_drop(true)
        .spawn()
        .with_context(|| format!("cannot start {}", bin.display()))?;
    let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
    let url = tokio::time::timeout(Duration::from_secs(30), async {
        while let Some(line) = lines.next_line().await? {
            if let Some(url) = line.strip_prefix("invokd listening on ") {
                return Ok(url.trim().to_owned());
            }
        }
        bail!("invokd exited before listening")
    })
    .await
    .context("invokd did not start in 30 s")??;
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    Ok(Server { child, url })
}

fn job(i: usize) -> Value {
    let size = [64, 96, 128][i % 3];
    json!({"model_id": "fal-ai/flux/schnell",
           "input": {"prompt": format!("crash {i}"), "image_size": {"width": size, "height": size},
                     "num_images": 1 + i % 2, "output_format": if i.is_multiple_of(2) { "png" } else { "jpeg" }}})
}

/// Submits until the server dies; returns the ids it acknowledged.
async fn submit_until_dead(url: String, acked: Arc<Mutex<Vec<String>>>, seed: usize) {
    let http = reqwest::Client::builder()
        .timeout(Duration::from_secs(10))
        .build()
        .unwrap_or_default();
    let mut i = seed * 1_000_000;
    loop {
        i += 1;
        let resp = http
            .post(format!("{url}/v1/async-invoke"))
            .bearer_auth(KEY)
            .json(&job(i))
            .send()
            .await;
        let Ok(resp) = resp else { return };
        if !resp.status().is_success() {
            continue;
        }
        let Ok(body) = resp.json::<Value>().await else {
            return;
        };
        if let Some(id) = body["request_id"].as_str()
            && let Ok(mut a) = acked.lock()
        {
            a.push(id.to_owned());
        }
    }
}

/// How many times each job was reported finished across every round's log.
fn finishes(dir: &Path) -> anyhow::Result<HashMap<String, u32>> {
    let mut count = HashMap::new();
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if !path
            .file_name()
            .is_some_and(|n| n.to_string_lossy().starts_with("server-"))
        {
            continue;
        }
        for line in std::fs::read_to_string(&path)?.lines() {
            let Ok(v) = serde_json::from_str::<Value>(line) else {
                continue;
            };
            if v["message"] == "job finished"
                && let Some(id) = v["job_id"].as_str()
            {
                *count.entry(id.to_owned()).or_default() += 1;
            }
        }
    }
    Ok(count)
}

/// Whether a downloaded file is whole: it decodes, at the size the output claims.
fn whole(bytes: &[u8], file: &Value) -> bool {
    if file["file_size"].as_u64() != Some(bytes.len() as u64) {
        return false;
    }
    match image::load_from_memory(bytes) {
        Ok(img) => {
            Some(u64::from(img.width())) == file["width"].as_u64()
                && Some(u64::from(img.height())) == file["height"].as_u64()
        }
        Err(_) => hound::WavReader::new(Cursor::new(bytes)).is_ok(),
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let bin = match args.invokd {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("invokd"),
    };
    let dir = tempfile::tempdir()?;
    let acked = Arc::new(Mutex::new(Vec::new()));
    let started = Instant::now();

    for round in 0..args.rounds {
        let mut server = start(&bin, dir.path(), round).await?;
        let mut tasks = tokio::task::JoinSet::new();
        for c in 0..args.connections {
            tasks.spawn(submit_until_dead(
                server.url.clone(),
                acked.clone(),
                c + 100 * round as usize,
            ));
        }
        let wait = rand::rng().random_range(0.1..args.max_round_seconds.max(0.2));
        tokio::time::sleep(Duration::from_secs_f64(wait)).await;
        server.child.kill().await?; // SIGKILL
        while tasks.join_next().await.is_some() {}
        let n = acked.lock().map(|a| a.len()).unwrap_or(0);
        println!(
            "round {:>3}: killed after {wait:.2} s, {n} acknowledged so far",
            round + 1
        );
    }

    // The last start: everything acknowledged must now finish.
    let server = start(&bin, dir.path(), args.rounds).await?;
    let http = reqwest::Client::new();
    let ids: Vec<String> = acked.lock().map(|a| a.clone()).unwrap_or_default();
    let unique: HashSet<&String> = ids.iter().collect();
    let (mut lost, mut completed, mut failed, mut files, mut torn) =
        (Vec::new(), 0u64, 0u64, 0u64, Vec::new());
    let deadline = Instant::now() + Duration::from_secs(600);
    for id in &ids {
        let inv = loop {
            let resp = http
                .get(format!("{}/v1/async-invoke/{id}", server.url))
                .bearer_auth(KEY)
                .send()
                .await?;
            if resp.status() == 404 {
                break None;
            }
            let inv: Value = resp.json().await?;
            if matches!(
                inv["status"].as_str(),
                Some("COMPLETED" | "FAILED" | "CANCELED")
            ) {
                break Some(inv);
            }
            if Instant::now() > deadline {
                bail!("{id} did not finish within 10 minutes: {inv}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        };
        let Some(inv) = inv else {
            lost.push(id.clone());
            continue;
        };
        if inv["status"] != "COMPLETED" {
            failed += 1;
            continue;
        }
        completed += 1;
        for file in inv["output"]["images"].as_array().into_iter().flatten() {
            files += 1;
            let bytes = http
                .get(file["url"].as_str().unwrap_or_default())
                .send()
                .await?
                .bytes()
                .await?;
            if !whole(&bytes, file) {
                torn.push(format!("{id}: {}", file["url"]));
            }
        }
    }
    drop(server);
    let duplicates: Vec<String> = finishes(dir.path())?
        .into_iter()
        .filter(|(_, n)| *n > 1)
        .map(|(id, n)| format!("{id} finished {n} times"))
        .collect();

    println!(
        "\ncrash test: {} rounds in {:.1} s",
        args.rounds,
        started.elapsed().as_secs_f64()
    );
    println!(
        "  acknowledged requests: {} ({} distinct)",
        ids.len(),
        unique.len()
    );
    println!("  completed:             {completed}");
    println!("  failed:                {failed}");
    println!("  lost:                  {}", lost.len());
    println!("  finished twice:        {}", duplicates.len());
    println!("  output files checked:  {files}");
    println!("  missing or torn files: {}", torn.len());
    if !lost.is_empty() || !duplicates.is_empty() || !torn.is_empty() || ids.len() != unique.len() {
        for problem in lost
            .iter()
            .map(|l| format!("lost {l}"))
            .chain(duplicates)
            .chain(torn)
        {
            eprintln!("  {problem}");
        }
        bail!("the crash test found lost, duplicated or torn work");
    }
    if ids.is_empty() {
        bail!("no request was acknowledged; the test proved nothing");
    }
    Ok(())
}
