//! Memory and start-up at scale: a store holding a large history of jobs, and thousands of
//! open SSE streams.

use std::{path::Path, time::Duration};

use anyhow::Context as _;
use futures::StreamExt as _;
use sqlx::{Connection as _, SqliteConnection};

use crate::{KEY, process::Server};

/// Fills the stopped server's database at `db` with `n` completed jobs of its first key, in
/// one transaction (as a long-running gateway's history would be).
pub async fn fill_history(db: &Path, n: u64) -> anyhow::Result<()> {
    let url = format!("sqlite://{}", db.display());
    let mut conn = SqliteConnection::connect(&url)
        .await
        .with_context(|| format!("cannot open {}", db.display()))?;
    let (key_id, project): (String, String) =
        sqlx::query_as("SELECT id, COALESCE(project, id) FROM keys LIMIT 1")
            .fetch_one(&mut conn)
            .await?;
    let now = chrono_micros();
    let mut tx = conn.begin().await?;
    sqlx::query(
        "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?1)
         INSERT INTO jobs (id, key_id, model_id, input, tags, status, priority, created_at,
                           started_at, completed_at, attempt, max_attempts, output, project)
         SELECT printf('01000000-0000-7000-8000-%012d', i), ?2, 'fal-ai/flux/schnell',
                '{\"prompt\": \"history\"}', '[]', 'COMPLETED', 0, ?3 - i * 1000, ?3 - i * 1000,
                ?3 - i * 1000 + 500, 1, 3, '{\"images\": []}', ?4
         FROM n",
    )
    .bind(i64::try_from(n)?)
    .bind(&key_id)
    .bind(now)
    .bind(&project)
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    // A server that has been running a long time has its WAL checkpointed as it goes; one
    // huge transaction leaves it all in the WAL, which is not the state being measured.
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
        .execute(&mut conn)
        .await?;
    Ok(())
}

fn chrono_micros() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_micros()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}

/// How event streams reach the server.
#[derive(Debug, Clone, Copy)]
pub enum Transport {
    /// One HTTP/1.1 connection per stream, as CLIs and scripts hold them.
    Http1,
    /// HTTP/2, this many streams sharing each connection, as browsers and proxies do.
    Http2(usize),
}

/// Opens `n` event streams on `server`, round the `urls` given, and reads its resident memory
/// while they are open: how many opened, and the memory in MB. The streams are closed after;
/// each server serves one such count and is then stopped.
pub async fn stream_rss(
    server: &Server,
    urls: &[String],
    n: usize,
    transport: Transport,
) -> anyhow::Result<(usize, Option<f64>)> {
    let (opened, holders) = open_streams(urls, n, transport).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let rss = server.rss_mb();
    for h in holders {
        h.abort();
    }
    Ok((opened, rss))
}

/// Opens `n` event streams, round the `urls` given, and holds them; how many opened.
async fn open_streams(
    urls: &[String],
    n: usize,
    transport: Transport,
) -> anyhow::Result<(usize, Vec<tokio::task::JoinHandle<()>>)> {
    anyhow::ensure!(!urls.is_empty(), "no stream to open");
    let (ready_tx, mut ready_rx) = tokio::sync::mpsc::channel::<bool>(n.max(1));
    let mut held = Vec::with_capacity(n);
    let mut shared = None;
    for i in 0..n {
        let http = match transport {
            Transport::Http1 => reqwest::Client::builder().build()?,
            Transport::Http2(per) => {
                if i % per.max(1) == 0 {
                    shared = Some(reqwest::Client::builder().http2_prior_knowledge().build()?);
                }
                shared.clone().context("a client")?
            }
        };
        let url = urls[i % urls.len()].clone();
        let ready = ready_tx.clone();
        held.push(tokio::spawn(async move {
            let res = http.get(&url).bearer_auth(KEY).send().await;
            let Ok(res) = res else {
                let _ = ready.send(false).await;
                return;
            };
            let mut body = res.bytes_stream();
            // The first event (the job's status) says the stream is live.
            let first = body.next().await;
            let _ = ready.send(matches!(first, Some(Ok(_)))).await;
            while let Some(Ok(_)) = body.next().await {}
        }));
    }
    drop(ready_tx);
    let mut opened = 0;
    let deadline = tokio::time::sleep(Duration::from_secs(120));
    tokio::pin!(deadline);
    for _ in 0..n {
        tokio::select! {
            got = ready_rx.recv() => match got {
                Some(true) => opened += 1,
                Some(false) => {}
                None => break,
            },
            () = &mut deadline => break,
        }
    }
    Ok((opened, held))
}
