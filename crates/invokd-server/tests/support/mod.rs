//! The in-process test app: the server on port 0 in the test's own runtime, every model routed
//! to the scripted provider, so a test drives each run and reads the job over HTTP.

#![allow(dead_code, clippy::unwrap_used, clippy::expect_used)]

use std::time::Duration;

use invokd_providers::scripted::{Scripted, ScriptedRun, ScriptedRuns};
use invokd_server::{Extras, Server, ServerConfig, provider_routes::Route};
use serde_json::{Value, json};
use tokio::{sync::oneshot, task::JoinHandle};

pub const KEY: &str = "invk_lifecycle_test_key";

pub struct TestApp {
    pub url: String,
    pub http: reqwest::Client,
    pub runs: ScriptedRuns,
    stop: Option<oneshot::Sender<()>>,
    server: Option<JoinHandle<anyhow::Result<()>>>,
    pub dir: tempfile::TempDir,
}

impl TestApp {
    /// Starts a server with the test's settings on top of quick ones.
    pub async fn start(configure: impl FnOnce(&mut ServerConfig)) -> Self {
        let dir = tempfile::tempdir().unwrap();
        Self::start_in(dir, configure).await
    }

    /// Starts a server on `dir`'s data directory (again, after a stop).
    pub async fn start_in(
        dir: tempfile::TempDir,
        configure: impl FnOnce(&mut ServerConfig),
    ) -> Self {
        let mut config = ServerConfig::new("127.0.0.1:0".parse().unwrap(), dir.path().join("data"));
        config.bootstrap_key = Some(KEY.into());
        config.admin_token = Some("invka_lifecycle_test_admin".into());
        config.routes = vec![Route {
            pattern: "*".into(),
            provider: "scripted".into(),
        }];
        config.dispatch.poll = Duration::from_millis(50);
        config.dispatch.cancel_grace = Duration::from_millis(200);
        configure(&mut config);
        let (scripted, runs) = Scripted::new();
        let extras = Extras {
            providers: vec![("scripted".into(), scripted)],
        };
        let server = Server::start_with(config, extras).await.unwrap();
        let url = format!("http://{}", server.local_addr());
        let (stop, stopped) = oneshot::channel::<()>();
        let server = tokio::spawn(server.run(async {
            let _ = stopped.await;
        }));
        Self {
            url,
            http: reqwest::Client::new(),
            runs,
            stop: Some(stop),
            server: Some(server),
            dir,
        }
    }

    /// Stops the server as a SIGTERM would, and waits until it has.
    pub async fn stop(mut self) -> tempfile::TempDir {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(server) = self.server.take() {
            server.await.unwrap().unwrap();
        }
        self.dir
    }

    /// Submits a job through DigitalOcean's surface; its request id.
    pub async fn submit(&self, body: Value) -> String {
        let r = self
            .http
            .post(format!("{}/v1/async-invoke", self.url))
            .bearer_auth(KEY)
            .json(&body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 202, "{}", r.text().await.unwrap());
        let job: Value = r.json().await.unwrap();
        job["request_id"].as_str().unwrap().to_owned()
    }

    /// A flux job with a prompt.
    pub async fn submit_image(&self) -> String {
        self.submit(json!({"model_id": "fal-ai/flux/schnell", "input": {"prompt": "a city"}}))
            .await
    }

    pub async fn job(&self, id: &str) -> Value {
        let r = self
            .http
            .get(format!("{}/v1/async-invoke/{id}", self.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 200);
        r.json().await.unwrap()
    }

    pub async fn cancel(&self, id: &str) -> reqwest::StatusCode {
        self.http
            .post(format!("{}/v1/async-invoke/{id}/cancel", self.url))
            .bearer_auth(KEY)
            .send()
            .await
            .unwrap()
            .status()
    }

    /// The next run the dispatcher starts, within 10 s.
    pub async fn next_run(&self) -> ScriptedRun {
        tokio::time::timeout(Duration::from_secs(10), self.runs.next())
            .await
            .expect("no run started within 10 s")
            .expect("the provider is gone")
    }

    /// The job once its status is `status`, within 10 s.
    pub async fn wait_for(&self, id: &str, status: &str) -> Value {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        loop {
            let job = self.job(id).await;
            if job["status"] == status {
                return job;
            }
            assert!(
                tokio::time::Instant::now() < deadline,
                "job {id} is not {status} after 10 s: {job}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}
