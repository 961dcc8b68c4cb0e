//! The servers under test as child processes: started the way users start them, timed from
//! spawn to their "listening on" line, and measured by their resident memory.

use std::{
    path::Path,
    process::Stdio,
    time::{Duration, Instant},
};

use anyhow::{Context as _, bail};
use tokio::{
    io::{AsyncBufReadExt as _, BufReader},
    process::{Child, Command},
};

pub struct Server {
    pub child: Child,
    pub url: String,
    /// From spawn to the "listening" line.
    pub startup: Duration,
}

impl Server {
    /// Starts `cmd` and waits for the line `<prefix><url>` on its stdout.
    pub async fn start(mut cmd: Command, prefix: &str) -> anyhow::Result<Self> {
        let started = Instant::now();
        let mut child = cmd
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .context("cannot start the server")?;
        let mut lines = BufReader::new(child.stdout.take().context("no stdout")?).lines();
        let url = tokio::time::timeout(Duration::from_secs(60), async {
            while let Some(line) = lines.next_line().await? {
                if let Some(url) = line.strip_prefix(prefix) {
                    return Ok(url.trim().to_owned());
                }
            }
            bail!("the server exited before listening")
        })
        .await
        .context("the server did not start in 60 s")??;
        let startup = started.elapsed();
        tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
        Ok(Self {
            child,
            url,
            startup,
        })
    }

    /// Resident memory in MB, from /proc (None where there is no /proc).
    pub fn rss_mb(&self) -> Option<f64> {
        let pid = self.child.id()?;
        let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
        let kb: f64 = status
            .lines()
            .find_map(|l| l.strip_prefix("VmRSS:"))?
            .trim()
            .trim_end_matches("kB")
            .trim()
            .parse()
            .ok()?;
        Some(kb / 1024.0)
    }
}

/// `invokd serve` on a free port with a fresh data directory under `dir`.
pub fn invokd(bin: &Path, dir: &Path, key: &str, extra: &[&str]) -> Command {
    let mut cmd = Command::new(bin);
    cmd.args(["serve", "--listen", "127.0.0.1:0", "--data-dir"])
        .arg(dir.join("data"))
        .args([
            "--create-rate-limit-per-second",
            "0",
            "--read-rate-limit-per-second",
            "0",
            // The queue caps stay on, as they are by default, at values no run reaches: the
            // check's cost is part of every create.
            "--max-queued-per-key",
            "100000000",
            "--max-queue-length",
            "100000000",
            "--log",
            "warn",
        ])
        .args(extra)
        .env("INVOKD_BOOTSTRAP_KEY", key)
        .env("INVOKD_CONFIG", dir.join("client.toml"));
    cmd
}
