//! The admin API with the admin token: create, list and revoke access keys
//! (`/v1/admin/keys`) and worker tokens (`/v1/admin/worker-tokens`), list workers.

use invokd_api::{
    admin::{CreateKey, KeyCreated, KeyInfo, KeyList},
    worker::{CreateWorkerToken, WorkerList, WorkerTokenList, WorkerTokenView},
};
use reqwest::Method;

use crate::{Client, ClientError, client::Call, retry::Retry};

/// A [`Client`] that holds the admin token.
#[derive(Debug, Clone)]
pub struct AdminClient {
    client: Client,
}

impl Client {
    /// The same server and settings with the admin token, for the key API.
    pub fn admin(&self, admin_token: &str) -> AdminClient {
        AdminClient {
            client: self.with_token(admin_token),
        }
    }
}

impl AdminClient {
    pub fn new(base_url: &str, admin_token: &str) -> Result<Self, ClientError> {
        Ok(Self {
            client: Client::new(base_url, admin_token)?,
        })
    }

    /// `POST /v1/admin/keys`: a new key, its secret shown this once. Retried only when the
    /// server surely made nothing (429, a refused connection), so a retry never makes two keys.
    pub async fn create_key(&self, body: &CreateKey) -> Result<KeyCreated, ClientError> {
        let mut call = Call::new(
            Method::POST,
            self.client.endpoint(&["v1", "admin", "keys"], &[]),
        )
        .json(body);
        call.retry = Retry::Unsafe;
        self.client.json(&call).await
    }

    /// `GET /v1/admin/keys`: every key, newest first, without secrets.
    pub async fn list_keys(&self) -> Result<KeyList, ClientError> {
        let url = self.client.endpoint(&["v1", "admin", "keys"], &[]);
        self.client.json(&Call::new(Method::GET, url)).await
    }

    /// `DELETE /v1/admin/keys/{id}`: revokes the key (again is fine).
    pub async fn revoke_key(&self, id: &str) -> Result<KeyInfo, ClientError> {
        let url = self.client.endpoint(&["v1", "admin", "keys", id], &[]);
        self.client.json(&Call::new(Method::DELETE, url)).await
    }

    /// `POST /v1/admin/worker-tokens`: a new worker token, its secret shown this once. Retried
    /// only when the server surely made nothing.
    pub async fn create_worker_token(
        &self,
        body: &CreateWorkerToken,
    ) -> Result<WorkerTokenView, ClientError> {
        let url = self.client.endpoint(&["v1", "admin", "worker-tokens"], &[]);
        let mut call = Call::new(Method::POST, url).json(body);
        call.retry = Retry::Unsafe;
        self.client.json(&call).await
    }

    /// `GET /v1/admin/worker-tokens`: every worker token, newest first, without secrets.
    pub async fn list_worker_tokens(&self) -> Result<WorkerTokenList, ClientError> {
        let url = self.client.endpoint(&["v1", "admin", "worker-tokens"], &[]);
        self.client.json(&Call::new(Method::GET, url)).await
    }

    /// `DELETE /v1/admin/worker-tokens/{id}`: revokes the token (again is fine).
    pub async fn revoke_worker_token(&self, id: &str) -> Result<(), ClientError> {
        let url = self
            .client
            .endpoint(&["v1", "admin", "worker-tokens", id], &[]);
        self.client.empty(&Call::new(Method::DELETE, url)).await
    }

    /// `GET /v1/admin/workers`: the workers seen in the last day.
    pub async fn list_workers(&self) -> Result<WorkerList, ClientError> {
        let url = self.client.endpoint(&["v1", "admin", "workers"], &[]);
        self.client.json(&Call::new(Method::GET, url)).await
    }
}
