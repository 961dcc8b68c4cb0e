//! Starts the real `invokd` binary on a free port with a temporary data directory, and talks to
//! it over HTTP, as a user would.
#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::{
    path::{Path, PathBuf},
    process::Stdio,
    sync::{Arc, Mutex},
    time::{Duration, Instant},
};

use serde_json::Value;
use tempfile::TempDir;
use tokio::{
    io::{AsyncBufReadExt, BufReader},
    process::{Child, Command},
};

pub const KEY: &str = "invk_test_bootstrap_key_0123456789";

/// How to start a server.
#[derive(Clone, Debug)]
pub struct Options {
    pub bootstrap_key: Option<String>,
    pub args: Vec<String>,
    /// Extra environment of the server process.
    pub env: Vec<(String, String)>,
}

impl Default for Options {
    fn default() -> Self {
        Self {
            bootstrap_key: Some(KEY.to_owned()),
            // Tests send bursts; the rate-limit tests turn limits back on.
            args: vec![
                "--emulator-latency-ms".into(),
                "0".into(),
                "--create-rate-limit-per-second".into(),
                "0".into(),
                "--read-rate-limit-per-second".into(),
                "0".into(),
            ],
            env: Vec::new(),
        }
    }
}

impl Options {
    pub fn arg(mut self, a: impl Into<String>) -> Self {
        self.args.push(a.into());
        self
    }

    pub fn env(mut self, name: &str, value: &str) -> Self {
        self.env.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Replaces the value of a flag given earlier.
    pub fn set(mut self, flag: &str, value: impl Into<String>) -> Self {
        if let Some(i) = self.args.iter().position(|a| a == flag) {
            self.args[i + 1] = value.into();
        } else {
            self.args.push(flag.to_owned());
            self.args.push(value.into());
        }
        self
    }
}

/// A running `invokd serve`; killed when dropped.
pub struct TestServer {
    child: Child,
    pub url: String,
    pub key: String,
    pub data_dir: PathBuf,
    pub client_config: PathBuf,
    /// Everything the server printed to stdout.
    pub stdout: Arc<Mutex<Vec<String>>>,
    pub http: reqwest::Client,
    _tmp: Option<TempDir>,
}

impl TestServer {
    /// A server on a fresh data directory, with the test key and no emulator latency.
    pub async fn start() -> Self {
        Self::start_with(Options::default()).await
    }

    pub async fn start_with(opts: Options) -> Self {
        let tmp = tempfile::tempdir().unwrap();
        let mut s = Self::start_in(tmp.path(), opts).await;
        s._tmp = Some(tmp);
        s
    }

    /// A server on `dir` (which the caller keeps), e.g. to restart on the same data.
    pub async fn start_in(dir: &Path, opts: Options) -> Self {
        let data_dir = dir.join("data");
        let client_config = dir.join("client.toml");
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_invokd"));
        cmd.arg("serve");
        if !opts.args.iter().any(|a| a == "--listen") {
            cmd.arg("--listen").arg("127.0.0.1:0");
        }
        cmd.arg("--data-dir")
            .arg(&data_dir)
            .args(&opts.args)
            .env("INVOKD_CONFIG", &client_config)
            .env("INVOKD_LOG", "info")
            .env_remove("INVOKD_BOOTSTRAP_KEY")
            .envs(opts.env.iter().map(|(k, v)| (k, v)))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(
                std::fs::File::options()
                    .create(true)
                    .append(true)
                    .open(dir.join("server.log"))
                    .unwrap(),
            )
            .kill_on_drop(true);
        if let Some(k) = &opts.bootstrap_key {
            cmd.env("INVOKD_BOOTSTRAP_KEY", k);
        }
        let mut child = cmd.spawn().expect("cannot start invokd");
        let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
        let stdout = Arc::new(Mutex::new(Vec::new()));
        let deadline = Instant::now() + Duration::from_secs(30);
        let url = loop {
            let line = tokio::time::timeout_at(deadline.into(), lines.next_line())
                .await
                .expect("invokd did not start within 30 s")
                .unwrap();
            let Some(line) = line else {
                let log = std::fs::read_to_string(dir.join("server.log")).unwrap_or_default();
                panic!("invokd exited before listening; its log:\n{log}");
            };
            stdout.lock().unwrap().push(line.clone());
            if let Some(url) = line.strip_prefix("invokd listening on ") {
                break url.trim().to_owned();
            }
        };
        let sink = stdout.clone();
        tokio::spawn(async move {
            while let Ok(Some(line)) = lines.next_line().await {
                sink.lock().unwrap().push(line);
            }
        });
        let key = opts
            .bootstrap_key
            .clone()
            .unwrap_or_else(|| printed_key(&stdout.lock().unwrap()).unwrap_or_default());
        Self {
            child,
            url,
            key,
            data_dir,
            client_config,
            stdout,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            _tmp: None,
        }
    }

    /// Starts a JS-style upload of a PNG: `{upload_url, file_url}`.
    pub async fn initiate_upload(&self) -> Value {
        self.http
            .post(self.at("/storage/upload/initiate"))
            .header("authorization", format!("Key {}", self.key))
            .json(&serde_json::json!({"content_type": "image/png", "file_name": "a.png"}))
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap()
    }

    /// The file descriptors the server's process holds open.
    pub fn open_fds(&self) -> usize {
        let pid = self.child.id().unwrap();
        std::fs::read_dir(format!("/proc/{pid}/fd"))
            .unwrap()
            .count()
    }

    /// Kills the server with SIGKILL, as a crash would.
    pub async fn kill(mut self) {
        self.child.kill().await.unwrap();
    }

    /// Sends SIGTERM and waits for the process to exit; returns its exit status.
    pub async fn terminate(mut self) -> std::process::ExitStatus {
        let pid = self.child.id().unwrap();
        let status = std::process::Command::new("kill")
            .arg("-TERM")
            .arg(pid.to_string())
            .status()
            .unwrap();
        assert!(status.success());
        tokio::time::timeout(Duration::from_secs(30), self.child.wait())
            .await
            .expect("invokd did not stop")
            .unwrap()
    }

    pub fn stdout_text(&self) -> String {
        self.stdout.lock().unwrap().join("\n")
    }

    pub fn at(&self, path: &str) -> String {
        format!("{}{path}", self.url)
    }

    /// `POST /v1/async-invoke` with a raw JSON body, as curl sends it.
    pub async fn create_raw(&self, body: &str) -> reqwest::Response {
        self.http
            .post(self.at("/v1/async-invoke"))
            .bearer_auth(&self.key)
            .header("content-type", "application/json")
            .body(body.to_owned())
            .send()
            .await
            .unwrap()
    }

    /// Creates a job and returns its invocation object, asserting the 202.
    pub async fn create(&self, body: &Value) -> Value {
        let resp = self.create_raw(&body.to_string()).await;
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 202, "create failed: {text}");
        serde_json::from_str(&text).unwrap()
    }

    pub async fn get(&self, request_id: &str) -> Value {
        let resp = self
            .http
            .get(self.at(&format!("/v1/async-invoke/{request_id}")))
            .bearer_auth(&self.key)
            .send()
            .await
            .unwrap();
        let status = resp.status();
        let text = resp.text().await.unwrap();
        assert_eq!(status, 200, "get {request_id} failed: {text}");
        serde_json::from_str(&text).unwrap()
    }

    /// Polls `/status` until the job is terminal, and returns the full invocation.
    pub async fn wait(&self, request_id: &str) -> Value {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let resp = self
                .http
                .get(self.at(&format!("/v1/async-invoke/{request_id}/status")))
                .bearer_auth(&self.key)
                .send()
                .await
                .unwrap();
            assert_eq!(resp.status(), 200);
            let v: Value = resp.json().await.unwrap();
            if matches!(
                v["status"].as_str(),
                Some("COMPLETED" | "FAILED" | "CANCELED")
            ) {
                return self.get(request_id).await;
            }
            assert!(
                Instant::now() < deadline,
                "{request_id} not done within 60 s: {v}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    /// Downloads a file URL without any credentials; returns (content type, bytes).
    pub async fn download(&self, url: &str) -> (String, Vec<u8>) {
        let resp = reqwest::get(url).await.unwrap();
        assert_eq!(resp.status(), 200, "download of {url} failed");
        let ct = resp.headers()["content-type"].to_str().unwrap().to_owned();
        (ct, resp.bytes().await.unwrap().to_vec())
    }

    /// Rows in the jobs table, read straight from the server's database.
    pub async fn stored_jobs(&self) -> i64 {
        use sqlx::{ConnectOptions, Connection};
        let mut conn = sqlx::sqlite::SqliteConnectOptions::new()
            .filename(self.data_dir.join("invokd.sqlite"))
            .read_only(true)
            .connect()
            .await
            .unwrap();
        let n: i64 = sqlx::query_scalar("SELECT COUNT(*) FROM jobs")
            .fetch_one(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        n
    }

    /// Files in the server's file store.
    pub fn stored_files(&self) -> usize {
        fn count(p: &Path) -> usize {
            std::fs::read_dir(p)
                .map(|rd| {
                    rd.flatten()
                        .map(|e| {
                            if e.path().is_dir() {
                                count(&e.path())
                            } else {
                                1
                            }
                        })
                        .sum()
                })
                .unwrap_or(0)
        }
        count(&self.data_dir.join("files"))
    }
}

/// The key a first start printed, if any.
pub fn printed_key(lines: &[String]) -> Option<String> {
    lines
        .iter()
        .map(|l| l.trim())
        .find(|l| l.starts_with("invk_"))
        .map(str::to_owned)
}

/// What one run of the `invokd` CLI gave.
#[derive(Debug)]
pub struct CliOutput {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl CliOutput {
    /// Asserts exit code 0, showing stderr if not.
    pub fn ok(&self) -> &Self {
        assert_eq!(
            self.code, 0,
            "stdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// Asserts the exit code, showing the output if it differs.
    pub fn code(&self, code: i32) -> &Self {
        assert_eq!(
            self.code, code,
            "expected exit code {code}\nstdout:\n{}\nstderr:\n{}",
            self.stdout, self.stderr
        );
        self
    }

    /// stdout as JSON.
    pub fn json(&self) -> Value {
        serde_json::from_str(&self.stdout).unwrap_or_else(|e| {
            panic!(
                "stdout is not JSON ({e}):\n{}\nstderr:\n{}",
                self.stdout, self.stderr
            )
        })
    }
}

/// The `invokd` binary with none of the caller's `INVOKD_*` settings, using `config` as its
/// config file.
pub fn cli_command(config: &Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_invokd"));
    for var in [
        "INVOKD_ACCESS_TOKEN",
        "INVOKD_API_URL",
        "INVOKD_CONTEXT",
        "INVOKD_ADMIN_TOKEN",
        "INVOKD_BOOTSTRAP_KEY",
        "XDG_CONFIG_HOME",
    ] {
        cmd.env_remove(var);
    }
    cmd.env("INVOKD_CONFIG", config)
        .env("NO_COLOR", "1")
        .kill_on_drop(true);
    cmd
}

/// Runs the CLI to its end, with `envs` set and `stdin` given (else no stdin).
pub async fn run_cli(
    config: &Path,
    args: &[&str],
    envs: &[(&str, &str)],
    stdin: Option<&str>,
) -> CliOutput {
    use tokio::io::AsyncWriteExt;
    let mut cmd = cli_command(config);
    cmd.args(args)
        .envs(envs.iter().copied())
        .stdin(if stdin.is_some() {
            Stdio::piped()
        } else {
            Stdio::null()
        })
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    let mut child = cmd.spawn().expect("cannot run invokd");
    if let Some(text) = stdin {
        let mut pipe = child.stdin.take().unwrap();
        pipe.write_all(text.as_bytes()).await.unwrap();
        drop(pipe);
    }
    let out = tokio::time::timeout(Duration::from_secs(120), child.wait_with_output())
        .await
        .unwrap_or_else(|_| panic!("invokd {args:?} did not finish within 120 s"))
        .unwrap();
    CliOutput {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

impl TestServer {
    /// The admin token the server made on its first start.
    pub fn admin_token(&self) -> String {
        std::fs::read_to_string(self.data_dir.join("admin.token"))
            .unwrap()
            .trim()
            .to_owned()
    }

    /// A CLI config file beside the data directory with one context, "test", for this server
    /// (its key and admin token), current. Made on first use.
    pub fn cli_config(&self) -> PathBuf {
        let path = self.client_config.with_file_name("cli.toml");
        if !path.exists() {
            let mut cfg = invokd_client::config::ClientConfig::default();
            cfg.upsert(
                "test",
                invokd_client::config::Context {
                    api_url: self.url.clone(),
                    access_token: self.key.clone(),
                    admin_token: Some(self.admin_token()),
                },
            );
            cfg.save(&path).unwrap();
        }
        path
    }

    /// Runs `invokd ARGS` against this server (through [`TestServer::cli_config`]).
    pub async fn cli(&self, args: &[&str]) -> CliOutput {
        run_cli(&self.cli_config(), args, &[], None).await
    }

    /// Runs `invokd async-invoke create ARGS` against this server.
    pub async fn cli_create(&self, args: &[&str]) -> CliOutput {
        let argv: Vec<&str> = ["async-invoke", "create"]
            .iter()
            .chain(args)
            .copied()
            .collect();
        self.cli(&argv).await
    }

    /// Runs `invokd ARGS` with `stdin`.
    pub async fn cli_stdin(&self, args: &[&str], stdin: &str) -> CliOutput {
        run_cli(&self.cli_config(), args, &[], Some(stdin)).await
    }
}

/// Webhook bodies received, by request id.
pub type Hooks = Arc<Mutex<std::collections::HashMap<String, Vec<Value>>>>;

/// A webhook receiver on a free port: its URL, and what it received.
pub async fn hook_receiver() -> (String, Hooks) {
    use axum::{Router, body::Bytes, extract::State, routing::post};
    let hooks: Hooks = Arc::default();
    async fn handle(State(hooks): State<Hooks>, body: Bytes) -> &'static str {
        let v: Value = serde_json::from_slice(&body).unwrap();
        let id = v["request_id"].as_str().unwrap().to_owned();
        hooks.lock().unwrap().entry(id).or_default().push(v);
        "ok"
    }
    let app = Router::new()
        .route("/hook", post(handle))
        .with_state(hooks.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await });
    (url, hooks)
}
