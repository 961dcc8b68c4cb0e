//! The load generator: N workers repeating one operation until a deadline, with every
//! operation's latency in a histogram. The same generator drives the baseline and invokd.

use std::{
    future::Future,
    sync::Arc,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde::Serialize;

/// What one scenario measured.
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub ops: u64,
    pub errors: u64,
    pub seconds: f64,
    pub per_second: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

/// Runs `op` on `workers` concurrent workers for `duration`. `op(worker, i)` returns whether it
/// succeeded; failures are counted, not timed.
pub async fn run<F, Fut>(workers: usize, duration: Duration, op: F) -> anyhow::Result<Stats>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    Ok(tally(workers, duration, Arc::new(op)).await?.stats())
}

/// Runs `base` and `invokd` in turn, `rounds` times for `duration / rounds` each, and gives each
/// side's figures over all its rounds. Taking turns in short slices puts both under the same
/// moments of a shared machine's load, so their ratio moves far less than with one long run each.
pub async fn paired<F, Fut, G, Gut>(
    workers: usize,
    duration: Duration,
    rounds: u32,
    base: F,
    invokd: G,
) -> anyhow::Result<(Stats, Stats)>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
    G: Fn(usize, u64) -> Gut + Send + Sync + 'static,
    Gut: Future<Output = bool> + Send,
{
    let rounds = rounds.max(1);
    let slice = duration / rounds;
    let (base, invokd) = (Arc::new(base), Arc::new(invokd));
    let (mut b, mut i) = (Tally::new()?, Tally::new()?);
    for _ in 0..rounds {
        b.add(tally(workers, slice, base.clone()).await?)?;
        i.add(tally(workers, slice, invokd.clone()).await?)?;
    }
    Ok((b.stats(), i.stats()))
}

/// Latencies, failures and time of one or more runs.
pub struct Tally {
    hist: Histogram<u64>,
    errors: u64,
    seconds: f64,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Self {
            hist: Histogram::new_with_bounds(1, 60_000_000, 3)?,
            errors: 0,
            seconds: 0.0,
        })
    }

    fn add(&mut self, other: Tally) -> anyhow::Result<()> {
        self.hist.add(&other.hist)?;
        self.errors += other.errors;
        self.seconds += other.seconds;
        Ok(())
    }

    fn stats(&self) -> Stats {
        let ms = |q: f64| self.hist.value_at_quantile(q) as f64 / 1000.0;
        Stats {
            ops: self.hist.len(),
            errors: self.errors,
            seconds: self.seconds,
            per_second: self.hist.len() as f64 / self.seconds,
            p50_ms: ms(0.5),
            p99_ms: ms(0.99),
        }
    }
}

async fn tally<F, Fut>(workers: usize, duration: Duration, op: Arc<F>) -> anyhow::Result<Tally>
where
    F: Fn(usize, u64) -> Fut + Send + Sync + 'static,
    Fut: Future<Output = bool> + Send,
{
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(workers);
    for w in 0..workers {
        let op = op.clone();
        tasks.push(tokio::spawn(async move {
            let mut hist = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
            let (mut errors, mut i) = (0u64, 0u64);
            while Instant::now() < deadline {
                let t = Instant::now();
                let ok = op(w, i).await;
                i += 1;
                if ok {
                    let micros = u64::try_from(t.elapsed().as_micros()).unwrap_or(u64::MAX);
                    hist.saturating_record(micros.max(1));
                } else {
                    errors += 1;
                }
            }
            anyhow::Ok((hist, errors))
        }));
    }
    collect_tally(tasks, 0, started).await
}

/// One worker's latencies and failure count.
pub type Worker = (Histogram<u64>, u64);

/// Merges the workers' histograms and error counts (plus `errors` counted elsewhere) into the
/// figures of a run that began at `started`.
pub async fn collect(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Worker>>>,
    errors: u64,
    started: Instant,
) -> anyhow::Result<Stats> {
    Ok(collect_tally(tasks, errors, started).await?.stats())
}

async fn collect_tally(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Worker>>>,
    errors: u64,
    started: Instant,
) -> anyhow::Result<Tally> {
    let mut all = Tally::new()?;
    all.errors = errors;
    for t in tasks {
        let (h, e) = t.await??;
        all.hist.add(&h)?;
        all.errors += e;
    }
    all.seconds = started.elapsed().as_secs_f64();
    Ok(all)
}
