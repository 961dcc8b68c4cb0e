//! The workers scenario: jobs end to end (create, then the status with `Prefer: wait`, then the
//! result) through N `invokd worker --backend emulator` processes pulling over the worker
//! protocol (take, file upload, complete), beside the same load on the in-process dispatcher,
//! in the same run; the workers' rate is reported as a ratio to the in-process one.

use anyhow::Context as _;

use crate::{Follow, RUN_AT_ONCE, Row, Run, end_to_end, load, process::Server, row};

/// The model the scenario's jobs use (`job_body`'s).
const MODEL: &str = "fal-ai/flux/schnell";
/// Concurrent clients, as in the end-to-end scenario's first level.
const CLIENTS: usize = 16;
/// Each worker's slots: more than the clients, so slots never limit the rate.
const SLOTS: &str = "32";

/// Runs the same end-to-end load on an invokd that runs the jobs itself, then on one whose
/// jobs go to `n` workers.
pub async fn compare(run: &mut Run, n: usize) -> anyhow::Result<Vec<Row>> {
    let in_process = {
        let server = run.start_invokd("workers-baseline", RUN_AT_ONCE).await?;
        measure(run, &server.url).await?
    };
    let route = format!("{MODEL}=workers");
    let mut extra = RUN_AT_ONCE.to_vec();
    extra.extend(["--routes", &route]);
    let server = run.start_invokd("workers", &extra).await?;
    let token = worker_token(run, &server, "workers").await?;
    let mut workers = Vec::with_capacity(n);
    for _ in 0..n {
        let mut cmd = tokio::process::Command::new(&run.invokd);
        cmd.args(["worker", "--api-url", &server.url, "--token", &token])
            .args(["--backend", "emulator", "--emulator-latency-ms", "0"])
            .args(["--slots", SLOTS, "--models", MODEL, "--log", "warn"]);
        workers.push(Server::start(cmd, "invokd worker ").await?);
    }
    let through_workers = measure(run, &server.url).await?;
    drop(workers);
    Ok(vec![
        row(
            &format!("end to end ({CLIENTS}), in-process dispatcher, jobs"),
            &in_process,
            None,
            "",
        ),
        row(
            &format!("end to end ({CLIENTS}), {n} invokd workers, jobs"),
            &through_workers,
            Some(&in_process),
            "≥ 0.5 × in-process",
        ),
    ])
}

async fn measure(run: &Run, url: &str) -> anyhow::Result<load::Stats> {
    let (http, url) = (run.http.clone(), url.to_owned());
    load::run(CLIENTS, run.duration, move |_, i| {
        let (http, url) = (http.clone(), url.clone());
        async move {
            end_to_end(&http, &url, i, Follow::Wait)
                .await
                .unwrap_or(false)
        }
    })
    .await
}

/// A worker token for the scenario's model, made with the server's admin token.
async fn worker_token(run: &Run, server: &Server, name: &str) -> anyhow::Result<String> {
    let admin = std::fs::read_to_string(run.dir.path().join(name).join("data").join("admin.token"))
        .context("cannot read the server's admin token")?;
    let made: serde_json::Value = run
        .http
        .post(format!("{}/v1/admin/worker-tokens", server.url))
        .bearer_auth(admin.trim())
        .json(&serde_json::json!({"name": "bench", "models": [MODEL]}))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    Ok(made["token"]
        .as_str()
        .context("no token in the answer")?
        .to_owned())
}
