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
    let op = Arc::new(op);
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
    collect(tasks, 0, started).await
}

/// One worker's latencies and failure count.
pub type Worker = (Histogram<u64>, u64);

/// Merges the workers' histograms and error counts (plus `errors` counted elsewhere) into the
/// figures of a run that began at `started`.
pub async fn collect(
    tasks: Vec<tokio::task::JoinHandle<anyhow::Result<Worker>>>,
    mut errors: u64,
    started: Instant,
) -> anyhow::Result<Stats> {
    let mut all = Histogram::<u64>::new_with_bounds(1, 60_000_000, 3)?;
    for t in tasks {
        let (h, e) = t.await??;
        all.add(&h)?;
        errors += e;
    }
    let seconds = started.elapsed().as_secs_f64();
    let ms = |q: f64| all.value_at_quantile(q) as f64 / 1000.0;
    Ok(Stats {
        ops: all.len(),
        errors,
        seconds,
        per_second: all.len() as f64 / seconds,
        p50_ms: ms(0.5),
        p99_ms: ms(0.99),
    })
}
