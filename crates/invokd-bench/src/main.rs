//! invokd-bench: measures invokd (create, status, end to end, memory, start-up) and, in the
//! same run with the same load generator, a bare axum server; reports invokd's figures as
//! ratios to the baseline's, prints a table and writes JSON. The queue core (the store
//! without HTTP) is measured the same way against a raw SQLite insert loop.

mod baseline;
mod load;
mod pgdb;
mod process;
mod queue;
mod scale;
mod workers;

use std::{
    path::{Path, PathBuf},
    sync::Arc,
    time::Duration,
};

use anyhow::Context as _;
use clap::{Parser, Subcommand, ValueEnum};
use invokd_core::store::Store;
use load::Stats;
use pgdb::FreshDb;
use process::Server;
use reqwest::StatusCode;
use serde::Serialize;
use serde_json::{Value, json};

const KEY: &str = "invk_benchmark_key_0123456789abcdef";

#[derive(Debug, Parser)]
#[command(name = "invokd-bench", about)]
struct Args {
    #[command(subcommand)]
    command: Option<Cmd>,
    /// Seconds each scenario runs.
    #[arg(long, default_value_t = 10.0)]
    seconds: f64,
    /// One second per scenario: checks that everything runs (the test suite's mode).
    #[arg(long)]
    quick: bool,
    /// The invokd binary (default: the one next to this program).
    #[arg(long)]
    invokd: Option<PathBuf>,
    /// `invokd worker` processes in the workers scenario.
    #[arg(long, default_value_t = 2)]
    workers: usize,
    /// Event streams held open for the memory figure.
    #[arg(long, default_value_t = 10_000)]
    streams: usize,
    /// Completed jobs in the store for the start-up and memory figures.
    #[arg(long, default_value_t = 1_000_000)]
    history: u64,
    /// Run invokd (and the queue core) on PostgreSQL: a fresh database is created on this
    /// server for each invokd started, and dropped at the end. The history figures stay on
    /// SQLite (they fill the embedded database directly).
    #[arg(long)]
    database_url: Option<String>,
    /// Where to write the results as JSON.
    #[arg(long, default_value = "target/bench/latest.json")]
    json: PathBuf,
    /// Run only these scenarios (comma-separated; all by default). End to end alone still
    /// measures the echo POST it is a ratio to.
    #[arg(long, value_enum, value_delimiter = ',')]
    only: Vec<Scenario>,
}

/// The scenarios `--only` picks from.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Scenario {
    /// The queue core beside the raw SQLite insert loop.
    Core,
    /// Create and status beside the echo POST and the plain GET; idle RSS.
    Create,
    /// RSS with event streams open, HTTP/2 and HTTP/1.1.
    Streams,
    /// End to end, polling and waiting.
    EndToEnd,
    /// Start-up and RSS with a long stored history.
    History,
    /// End to end through remote workers (`invokd worker --backend emulator`) beside the
    /// in-process dispatcher.
    Workers,
}

#[derive(Debug, Subcommand)]
enum Cmd {
    /// Serve the baseline (started by the benchmark itself).
    #[command(hide = true)]
    BaselineServer,
}

/// A create body: the smallest real job (one 64x64 image).
fn job_body(i: u64) -> Value {
    json!({"model_id": "fal-ai/flux/schnell",
           "input": {"prompt": format!("bench {i}"), "image_size": {"width": 64, "height": 64}}})
}

#[derive(Serialize)]
struct Row {
    scenario: String,
    stats: Option<Stats>,
    /// invokd's rate over the baseline's.
    ratio: Option<f64>,
    target: String,
    value: Option<f64>,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    if let Some(Cmd::BaselineServer) = args.command {
        return baseline::serve().await;
    }
    let seconds = if args.quick { 1.0 } else { args.seconds };
    let me = std::env::current_exe().context("cannot find this program")?;
    let invokd = match &args.invokd {
        Some(p) => p.clone(),
        None => me.with_file_name("invokd"),
    };
    anyhow::ensure!(
        invokd.exists(),
        "no invokd at {} (build it, or pass --invokd)",
        invokd.display()
    );
    let mut run = Run {
        me,
        invokd,
        http: reqwest::Client::builder()
            .pool_max_idle_per_host(256)
            .build()?,
        dir: tempfile::tempdir()?,
        duration: Duration::from_secs_f64(seconds),
        rounds: if args.quick { 1 } else { seconds.ceil() as u32 },
        quick: args.quick,
        database_url: args.database_url.clone(),
        databases: Vec::new(),
    };
    let wants = |s: Scenario| args.only.is_empty() || args.only.contains(&s);

    // Rates first, their baselines at the top; then memory and start-up.
    let (mut baselines, mut rates, mut memory) = (Vec::new(), Vec::new(), Vec::new());
    // The baseline, kept running: it takes turns with invokd in the create and status runs.
    let base = start_baseline(&run.me).await?;
    if wants(Scenario::Core) {
        rates.extend(queue_core(&mut run).await?);
    }
    let mut startup = None;
    let post = if wants(Scenario::Create) {
        let c = create_and_status(&mut run, &base).await?;
        baselines.extend([row("baseline: echo POST (64)", &c.echo, None, ""), c.get]);
        rates.extend(c.rates);
        memory.extend(c.deep);
        memory.extend([
            figure("RSS idle, MB", c.idle_rss, "≤ 30"),
            figure("RSS after create and status, MB", c.loaded_rss, ""),
        ]);
        startup = Some(figure("start-up, empty store, ms", c.startup_ms, ""));
        Some(c.echo)
    } else {
        None
    };
    if wants(Scenario::EndToEnd) {
        // A ratio to the echo POST: measured alone when create did not run.
        let post = match post {
            Some(post) => post,
            None => {
                let post = echo_alone(&run, &base).await?;
                baselines.push(row("baseline: echo POST (64)", &post, None, ""));
                post
            }
        };
        rates.extend(end_to_end_runs(&mut run, &post).await?);
    }
    if wants(Scenario::Workers) {
        rates.extend(workers::compare(&mut run, args.workers).await?);
    }
    let base_rss = base.rss_mb();
    drop(base);
    if wants(Scenario::Streams) {
        let want = if run.quick { 200 } else { args.streams };
        memory.extend(streams(&mut run, want).await?);
    }
    let mut history_startup = None;
    if wants(Scenario::History) {
        let n = if run.quick { 10_000 } else { args.history };
        let (rss, startup_ms, list_ms) = history(&run, n).await?;
        memory.push(figure(
            &format!("RSS, {n} stored jobs, MB"),
            rss,
            "≤ 100 (1,000,000 jobs)",
        ));
        history_startup = Some(figure(
            &format!("start-up, {n} stored jobs, ms"),
            startup_ms,
            "≤ 200 (1,000,000 jobs)",
        ));
        memory.push(figure(
            &format!("listing the newest 100 of {n} stored jobs, p50 ms"),
            list_ms,
            "",
        ));
    }
    memory.push(figure("baseline RSS after its runs, MB", base_rss, ""));
    memory.extend(startup.into_iter().chain(history_startup));
    for db in run.databases.drain(..) {
        db.drop_db().await?;
    }

    let rows: Vec<Row> = baselines.into_iter().chain(rates).chain(memory).collect();
    print_table(&rows, seconds);
    write_json(&args.json, &rows, seconds, args.quick)?;
    let failures: u64 = rows
        .iter()
        .filter_map(|r| r.stats.as_ref())
        .map(|s| s.errors)
        .sum();
    anyhow::ensure!(failures == 0, "{failures} operations failed");
    Ok(())
}

/// What every scenario shares: the programs, the client, the run's directory and timing, and
/// the PostgreSQL databases made for it (dropped at the end).
struct Run {
    me: PathBuf,
    invokd: PathBuf,
    http: reqwest::Client,
    dir: tempfile::TempDir,
    duration: Duration,
    /// Slices in which create and status take turns with their baselines.
    rounds: u32,
    quick: bool,
    database_url: Option<String>,
    databases: Vec<FreshDb>,
}

impl Run {
    /// `invokd serve` with `extra` in a directory of its own, once it is listening: on a fresh
    /// database when the run has a PostgreSQL URL, else on SQLite.
    async fn start_invokd(&mut self, name: &str, extra: &[&str]) -> anyhow::Result<Server> {
        let mut cmd = process::invokd(&self.invokd, &self.dir.path().join(name), KEY, extra);
        if let Some(admin) = &self.database_url {
            let db = FreshDb::create(admin, "server").await?;
            cmd.arg("--database-url").arg(&db.url);
            self.databases.push(db);
        }
        Server::start(cmd, "invokd listening on ").await
    }
}

/// The store without HTTP, beside a raw insert loop with the same durability, at the create
/// scenario's concurrency.
async fn queue_core(run: &mut Run) -> anyhow::Result<Vec<Row>> {
    let dir = run.dir.path();
    let raw = queue::raw_sqlite(dir, 64, run.duration).await?;
    let mut rows = vec![row("raw SQLite insert loop (64), rows", &raw, None, "")];
    // Then the same behind a backlog of a model that may start nothing: claims must not read it.
    let backlog = if run.quick { 10_000 } else { 100_000 };
    for (file, queued, name, target) in [
        (
            "core.sqlite",
            0,
            "queue core, SQLite (64), jobs completed".to_owned(),
            "≥ 0.3 × raw insert loop",
        ),
        (
            "backlog.sqlite",
            backlog,
            format!("queue core, SQLite (64), {backlog} jobs of a saturated model queued"),
            "",
        ),
    ] {
        let sqlite: Arc<dyn Store> = Arc::new(
            invokd_store::SqliteStore::open(&dir.join(file))
                .await
                .context("cannot open the queue core's SQLite store")?,
        );
        queue::fill_backlog(&sqlite, queued).await?;
        let core = queue::queue_core(sqlite, 64, run.duration).await?;
        rows.push(row(&name, &core, Some(&raw), target));
    }
    if let Some(admin) = &run.database_url {
        let db = FreshDb::create(admin, "core").await?;
        let pg: Arc<dyn Store> = Arc::new(
            invokd_store::PostgresStore::connect(&db.url)
                .await
                .with_context(|| format!("cannot open the store in {}", db.name))?,
        );
        let core = queue::queue_core(pg, 64, run.duration).await?;
        run.databases.push(db);
        rows.push(row(
            "queue core, PostgreSQL (64), jobs completed",
            &core,
            Some(&raw),
            "",
        ));
    }
    Ok(rows)
}

/// What the create and status runs measured.
struct CreateFigures {
    echo: Stats,
    /// The plain `GET`'s row.
    get: Row,
    rates: [Row; 2],
    /// fal's submit and status behind what the create run queued.
    deep: [Row; 2],
    idle_rss: Option<f64>,
    loaded_rss: Option<f64>,
    startup_ms: Option<f64>,
}

/// Create and status on invokd with jobs that stay queued, each taking turns with its baseline.
async fn create_and_status(run: &mut Run, base: &Server) -> anyhow::Result<CreateFigures> {
    let held = run.start_invokd("held", HOLD_JOBS).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let idle_rss = held.rss_mb();
    let (echo, create) = {
        let (echo, url) = (
            format!("{}/echo", base.url),
            format!("{}/v1/async-invoke", held.url),
        );
        let (h1, h2) = (run.http.clone(), run.http.clone());
        load::paired(
            64,
            run.duration,
            run.rounds,
            move |_, i| {
                let req = h1.post(&echo).json(&job_body(i));
                async move { ok(req, StatusCode::ACCEPTED).await }
            },
            move |_, i| {
                let req = h2.post(&url).bearer_auth(KEY).json(&job_body(i));
                async move { ok(req, StatusCode::ACCEPTED).await }
            },
        )
        .await?
    };
    let ids = Arc::new(created_ids(&run.http, &held.url, 256).await?);
    let (get, status) = {
        let (ping, url) = (format!("{}/ping", base.url), held.url.clone());
        let (h1, h2) = (run.http.clone(), run.http.clone());
        load::paired(
            64,
            run.duration,
            run.rounds,
            move |_, _| {
                let req = h1.get(&ping);
                async move { ok(req, StatusCode::OK).await }
            },
            move |w, i| {
                let id = &ids[(w * 7919 + i as usize) % ids.len()];
                let req = h2
                    .get(format!("{url}/v1/async-invoke/{id}/status"))
                    .bearer_auth(KEY);
                async move { ok(req, StatusCode::OK).await }
            },
        )
        .await?
    };
    let deep = behind_the_queue(&run.http, &held.url).await?;
    Ok(CreateFigures {
        deep,
        rates: [
            row(
                "create (64)",
                &create,
                Some(&echo),
                "≥ 0.6 × echo POST, p99 ≤ 10 ms",
            ),
            row("status (64)", &status, Some(&get), "≥ 0.7 × GET"),
        ],
        get: row("baseline: GET (64)", &get, None, ""),
        echo,
        idle_rss,
        loaded_rss: held.rss_mb(),
        startup_ms: Some(held.startup.as_secs_f64() * 1000.0),
    })
}

/// fal's submit and status (each answer gives the job's queue position) behind the queue the
/// create run left: the medians of 21, as ms figures.
async fn behind_the_queue(http: &reqwest::Client, url: &str) -> anyhow::Result<[Row; 2]> {
    let key = format!("Key {KEY}");
    let (mut submits, mut statuses) = (Vec::new(), Vec::new());
    let mut depth = 0;
    let mut status_url = String::new();
    // Interleaved, as clients submit while others poll: a queue's positions are read at most
    // once a second (see `queue_positions`), so its first answers count in the store.
    for i in 0..21 {
        let started = std::time::Instant::now();
        let sub = json_of(
            http.post(format!("{url}/fal-ai/flux/schnell"))
                .header("authorization", &key)
                .json(&job_body(i)["input"]),
        )
        .await?;
        submits.push(started.elapsed().as_secs_f64() * 1000.0);
        if i == 0 {
            depth = sub["queue_position"]
                .as_u64()
                .context("no queue_position")?;
            status_url = sub["status_url"]
                .as_str()
                .context("no status_url")?
                .to_owned();
        }
        let started = std::time::Instant::now();
        let status = json_of(http.get(&status_url).header("authorization", &key)).await?;
        statuses.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(status["status"] == "IN_QUEUE", "not queued: {status}");
    }
    Ok([
        figure(
            &format!("fal submit behind {depth} queued jobs, p50 ms"),
            median(submits),
            "",
        ),
        figure(
            &format!("fal status (with its queue position) behind {depth} queued jobs, p50 ms"),
            median(statuses),
            "",
        ),
    ])
}

/// The echo POST alone, for end to end's ratio when create and status did not run.
async fn echo_alone(run: &Run, base: &Server) -> anyhow::Result<Stats> {
    let (http, echo) = (run.http.clone(), format!("{}/echo", base.url));
    load::run(64, run.duration, move |_, i| {
        let req = http.post(&echo).json(&job_body(i));
        async move { ok(req, StatusCode::ACCEPTED).await }
    })
    .await
}

/// Event streams held open while the server's memory is read, on a fresh invokd with 256
/// queued jobs, and on a fresh baseline's bare stream for what the HTTP stack alone costs.
/// Fresh servers for each figure: memory freed by earlier runs is not always given back, and
/// would be counted as the streams'.
async fn streams(run: &mut Run, want: usize) -> anyhow::Result<Vec<Row>> {
    let mut rows = Vec::new();
    for (n, (label, transport)) in [
        ("HTTP/2, 100 per connection", scale::Transport::Http2(100)),
        ("HTTP/1.1", scale::Transport::Http1),
    ]
    .into_iter()
    .enumerate()
    {
        let queued = run.start_invokd(&format!("streams-{n}"), HOLD_JOBS).await?;
        let urls: Vec<String> = created_ids(&run.http, &queued.url, 256)
            .await?
            .iter()
            .map(|id| format!("{}/v1/async-invoke/{id}/events", queued.url))
            .collect();
        let (opened, rss) = scale::stream_rss(&queued, &urls, want, transport).await?;
        rows.push(figure(
            &format!("RSS, {opened} of {want} SSE streams ({label}), MB"),
            rss,
            "≤ 150 (10,000 streams)",
        ));
        drop(queued);
        let bare = start_baseline(&run.me).await?;
        let urls = [format!("{}/events", bare.url)];
        let (opened, rss) = scale::stream_rss(&bare, &urls, want, transport).await?;
        rows.push(figure(
            &format!("baseline RSS, {opened} SSE streams ({label}), MB"),
            rss,
            "",
        ));
    }
    Ok(rows)
}

/// The whole path, on an invokd running every job at once on the emulator with no latency.
async fn end_to_end_runs(run: &mut Run, post: &Stats) -> anyhow::Result<Vec<Row>> {
    let running = run.start_invokd("running", RUN_AT_ONCE).await?;
    let levels: &[usize] = if run.quick { &[16] } else { &[16, 64] };
    let mut rows = Vec::new();
    for follow in [Follow::Poll, Follow::Wait] {
        for &c in levels {
            let (http, url) = (run.http.clone(), running.url.clone());
            let e2e = load::run(c, run.duration, move |_, i| {
                let (http, url) = (http.clone(), url.clone());
                async move { end_to_end(&http, &url, i, follow).await.unwrap_or(false) }
            })
            .await?;
            let target = if c == 16 { "≥ 0.25 × echo POST" } else { "" };
            rows.push(row(
                &format!("end to end ({c}), {}, jobs", follow.label()),
                &e2e,
                Some(post),
                target,
            ));
        }
    }
    Ok(rows)
}

/// RSS and start-up (ms) of an invokd whose store holds `n` completed jobs.
async fn history(run: &Run, n: u64) -> anyhow::Result<(Option<f64>, Option<f64>, Option<f64>)> {
    let dir = run.dir.path().join("history");
    let mut first = Server::start(
        process::invokd(&run.invokd, &dir, KEY, &[]),
        "invokd listening on ",
    )
    .await?;
    first.child.kill().await?;
    scale::fill_history(&dir.join("data").join("invokd.sqlite"), n).await?;
    let big = Server::start(
        process::invokd(&run.invokd, &dir, KEY, &[]),
        "invokd listening on ",
    )
    .await?;
    let startup_ms = big.startup.as_secs_f64() * 1000.0;
    // The history's first page, as a dashboard shows it: the median of 21 requests.
    let mut took = Vec::new();
    for _ in 0..21 {
        let started = std::time::Instant::now();
        let listed = json_of(
            run.http
                .get(format!("{}/v1/async-invoke?limit=100", big.url)),
        )
        .await?;
        took.push(started.elapsed().as_secs_f64() * 1000.0);
        anyhow::ensure!(
            listed["invocations"].as_array().map(Vec::len) == Some(100),
            "the history is not listed"
        );
    }
    let list_ms = median(took);
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok((big.rss_mb(), Some(startup_ms), list_ms))
}

/// Server flags that run every job at once on the emulator with no latency.
const RUN_AT_ONCE: &[&str] = &[
    "--emulator-latency-ms",
    "0",
    "--max-concurrency",
    "64",
    "--per-model-concurrency",
    "64",
];

/// Server flags that keep created jobs queued: a one-hour emulator run holds the one slot.
const HOLD_JOBS: &[&str] = &["--emulator-latency-ms", "3600000", "--max-concurrency", "1"];

/// The baseline server (this program's hidden `baseline-server` command), once it listens.
async fn start_baseline(me: &Path) -> anyhow::Result<Server> {
    let mut cmd = tokio::process::Command::new(me);
    cmd.arg("baseline-server");
    Server::start(cmd, "baseline listening on ").await
}

/// The middle value of `v` (None when it is empty).
fn median(mut v: Vec<f64>) -> Option<f64> {
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied()
}

/// A figure that is not a rate: memory or a time.
fn figure(name: &str, value: Option<f64>, target: &str) -> Row {
    Row {
        scenario: name.into(),
        stats: None,
        ratio: None,
        target: target.into(),
        value,
    }
}

fn row(name: &str, s: &Stats, baseline: Option<&Stats>, target: &str) -> Row {
    Row {
        scenario: name.into(),
        stats: Some(s.clone()),
        ratio: baseline.map(|b| s.per_second / b.per_second.max(f64::MIN_POSITIVE)),
        target: target.into(),
        value: None,
    }
}

async fn ok(req: reqwest::RequestBuilder, want: StatusCode) -> bool {
    match req.send().await {
        Ok(res) => res.status() == want && res.bytes().await.is_ok(),
        Err(_) => false,
    }
}

/// Sends `req` with the key and reads a 2xx answer's JSON.
async fn json_of(req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
    Ok(req
        .bearer_auth(KEY)
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?)
}

/// Creates job `i`; its request id.
async fn create(http: &reqwest::Client, url: &str, i: u64) -> anyhow::Result<String> {
    let v = json_of(
        http.post(format!("{url}/v1/async-invoke"))
            .json(&job_body(i)),
    )
    .await?;
    Ok(v["request_id"]
        .as_str()
        .context("no request_id")?
        .to_owned())
}

async fn created_ids(http: &reqwest::Client, url: &str, n: u64) -> anyhow::Result<Vec<String>> {
    let mut ids = Vec::new();
    for i in 0..n {
        ids.push(create(http, url, i).await?);
    }
    Ok(ids)
}

/// How an end-to-end client follows its job to the end.
#[derive(Debug, Clone, Copy)]
enum Follow {
    /// Reads the status every 2 ms, as DigitalOcean's clients poll.
    Poll,
    /// Reads the status with `Prefer: wait=30`: the answer comes when the job ends.
    Wait,
}

impl Follow {
    fn label(self) -> &'static str {
        match self {
            Follow::Poll => "status every 2 ms",
            Follow::Wait => "status with Prefer: wait",
        }
    }
}

/// Create, read the status until the job ends, read the result: whether it COMPLETED.
async fn end_to_end(
    http: &reqwest::Client,
    url: &str,
    i: u64,
    follow: Follow,
) -> anyhow::Result<bool> {
    let id = create(http, url, i).await?;
    loop {
        let status = http.get(format!("{url}/v1/async-invoke/{id}/status"));
        let status = match follow {
            Follow::Poll => status,
            Follow::Wait => status.header("prefer", "wait=30"),
        };
        let s = json_of(status).await?;
        match (s["status"].as_str(), follow) {
            (Some("COMPLETED" | "FAILED" | "CANCELED"), _) => break,
            (_, Follow::Poll) => tokio::time::sleep(Duration::from_millis(2)).await,
            (_, Follow::Wait) => {}
        }
    }
    let done = json_of(http.get(format!("{url}/v1/async-invoke/{id}"))).await?;
    Ok(done["status"] == "COMPLETED")
}

fn print_table(rows: &[Row], seconds: f64) {
    println!("invokd-bench: {seconds} s per scenario\n");
    println!(
        "{:<58} {:>10} {:>9} {:>9} {:>7}  target",
        "scenario", "per s", "p50 ms", "p99 ms", "ratio"
    );
    for r in rows {
        let (rate, p50, p99) = match &r.stats {
            Some(s) => (
                format!("{:.0}", s.per_second),
                format!("{:.2}", s.p50_ms),
                format!("{:.2}", s.p99_ms),
            ),
            None => (
                r.value
                    .map(|v| format!("{v:.1}"))
                    .unwrap_or_else(|| "n/a".into()),
                String::new(),
                String::new(),
            ),
        };
        let ratio = r.ratio.map(|x| format!("{x:.2}")).unwrap_or_default();
        println!(
            "{:<58} {rate:>10} {p50:>9} {p99:>9} {ratio:>7}  {}",
            r.scenario, r.target
        );
    }
}

fn write_json(path: &Path, rows: &[Row], seconds: f64, quick: bool) -> anyhow::Result<()> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let doc = json!({
        "seconds_per_scenario": seconds,
        "quick": quick,
        "cpus": std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0),
        "rows": rows,
    });
    std::fs::write(path, serde_json::to_vec_pretty(&doc)?)
        .with_context(|| format!("cannot write {}", path.display()))?;
    println!("\nwritten to {}", path.display());
    Ok(())
}
