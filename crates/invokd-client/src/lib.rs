#![doc = include_str!("../README.md")]

pub mod config;

use std::time::{Duration, Instant};

use bytes::Bytes;
use invokd_api::{
    async_invoke::{CreateInvocation, Invocation},
    error_code::ErrorBody,
};
use reqwest::{Method, StatusCode, header};
use serde::de::DeserializeOwned;

/// A failed call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error body.
    #[error("{status}: {} ({})", body.message, body.id)]
    Api { status: StatusCode, body: ErrorBody },
    #[error("request failed: {0}")]
    Http(#[from] reqwest::Error),
    #[error("unexpected response ({status}): {text}")]
    Unexpected { status: StatusCode, text: String },
    #[error("timed out after {0:?} waiting for the job")]
    Timeout(Duration),
}

/// A client for one server and one key.
#[derive(Debug, Clone)]
pub struct Client {
    http: reqwest::Client,
    base: String,
    token: String,
}

impl Client {
    pub fn new(base_url: &str, token: &str) -> Result<Self, ClientError> {
        let http = reqwest::Client::builder()
            .user_agent(concat!("invokd-client/", env!("CARGO_PKG_VERSION")))
            .timeout(Duration::from_secs(120))
            .build()?;
        Ok(Self {
            http,
            base: base_url.trim_end_matches('/').to_owned(),
            token: token.to_owned(),
        })
    }

    pub fn base_url(&self) -> &str {
        &self.base
    }

    async fn call<T: DeserializeOwned>(
        &self,
        method: Method,
        path: &str,
        body: Option<&CreateInvocation>,
    ) -> Result<T, ClientError> {
        let mut req = self
            .http
            .request(method, format!("{}{path}", self.base))
            .header(header::AUTHORIZATION, format!("Bearer {}", self.token));
        if let Some(b) = body {
            req = req.json(b);
        }
        let res = req.send().await?;
        let status = res.status();
        let bytes = res.bytes().await?;
        if status.is_success() {
            return serde_json::from_slice(&bytes).map_err(|_| ClientError::Unexpected {
                status,
                text: String::from_utf8_lossy(&bytes).into_owned(),
            });
        }
        match serde_json::from_slice::<ErrorBody>(&bytes) {
            Ok(body) => Err(ClientError::Api { status, body }),
            Err(_) => Err(ClientError::Unexpected {
                status,
                text: String::from_utf8_lossy(&bytes).into_owned(),
            }),
        }
    }

    /// `POST /v1/async-invoke`.
    pub async fn create(&self, body: &CreateInvocation) -> Result<Invocation, ClientError> {
        self.call(Method::POST, "/v1/async-invoke", Some(body))
            .await
    }

    /// `GET /v1/async-invoke/{id}`.
    pub async fn get(&self, request_id: &str) -> Result<Invocation, ClientError> {
        self.call(Method::GET, &format!("/v1/async-invoke/{request_id}"), None)
            .await
    }

    /// `GET /v1/async-invoke/{id}/status`.
    pub async fn status(&self, request_id: &str) -> Result<Invocation, ClientError> {
        self.call(
            Method::GET,
            &format!("/v1/async-invoke/{request_id}/status"),
            None,
        )
        .await
    }

    /// Polls until the job is terminal, then returns it with its output.
    pub async fn wait(
        &self,
        request_id: &str,
        timeout: Duration,
    ) -> Result<Invocation, ClientError> {
        let start = Instant::now();
        let mut delay = Duration::from_millis(100);
        loop {
            let inv = self.status(request_id).await?;
            if inv.status.is_terminal() {
                return self.get(request_id).await;
            }
            if start.elapsed() >= timeout {
                return Err(ClientError::Timeout(timeout));
            }
            tokio::time::sleep(delay).await;
            delay = (delay * 2).min(Duration::from_secs(2));
        }
    }

    /// Downloads an output file URL (signed; no key needed).
    pub async fn download(&self, url: &str) -> Result<Bytes, ClientError> {
        let res = self.http.get(url).send().await?;
        let status = res.status();
        if !status.is_success() {
            let text = res.text().await.unwrap_or_default();
            return Err(ClientError::Unexpected { status, text });
        }
        Ok(res.bytes().await?)
    }
}
