//! The async-invoke calls: create (with an idempotency key), get, status, list and cancel.

use chrono::{DateTime, SecondsFormat, Utc};
use invokd_api::async_invoke::{CreateInvocation, Invocation, Status};
use reqwest::{Method, header::HeaderName};
use serde::{Deserialize, Serialize};

use crate::{Client, ClientError, client::Call, retry::Retry};

/// Extras of a create.
#[derive(Debug, Clone, Default)]
pub struct CreateOptions {
    /// The `Idempotency-Key`: a retry with the same key and body gives back the first job.
    /// Without one, a new random key is made for this create and sent with each of its retries.
    pub idempotency_key: Option<String>,
    /// `Prefer: wait=N`: let the server hold the answer up to N seconds (at most 60) until the
    /// job has finished.
    pub prefer_wait: Option<u64>,
}

/// Filters and paging of [`Client::list`].
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ListQuery {
    pub status: Option<Status>,
    pub model_id: Option<String>,
    /// A tag as `(key, value)`.
    pub tag: Option<(String, String)>,
    pub created_after: Option<DateTime<Utc>>,
    pub created_before: Option<DateTime<Utc>>,
    /// 1 to 1000; the server's default is 20.
    pub limit: Option<u32>,
    /// `next_cursor` of the page before.
    pub cursor: Option<String>,
}

/// One page of [`Client::list`], newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct InvocationPage {
    pub invocations: Vec<Invocation>,
    pub next_cursor: Option<String>,
}

const IDEMPOTENCY_KEY: HeaderName = HeaderName::from_static("idempotency-key");

/// A fresh idempotency key, e.g. `invokd-3f2b...`.
pub fn new_idempotency_key() -> String {
    format!("invokd-{}", uuid::Uuid::new_v4().simple())
}

impl Client {
    /// The URL of `segments` under the base URL, each segment escaped.
    pub(crate) fn endpoint(&self, segments: &[&str], query: &[(&str, String)]) -> String {
        let mut url = match reqwest::Url::parse(self.base_url()) {
            Ok(u) => u,
            // The builder checked the base URL; this cannot happen, but stay total.
            Err(_) => return self.url(&format!("/{}", segments.join("/"))),
        };
        if let Ok(mut p) = url.path_segments_mut() {
            p.pop_if_empty().extend(segments);
        }
        if !query.is_empty() {
            let mut q = url.query_pairs_mut();
            for (k, v) in query {
                q.append_pair(k, v);
            }
        }
        url.into()
    }

    /// `POST /v1/async-invoke` with a new idempotency key, retried safely.
    pub async fn create(&self, body: &CreateInvocation) -> Result<Invocation, ClientError> {
        self.create_with(body, &CreateOptions::default()).await
    }

    /// `POST /v1/async-invoke` with options.
    pub async fn create_with(
        &self,
        body: &CreateInvocation,
        opts: &CreateOptions,
    ) -> Result<Invocation, ClientError> {
        let key = opts
            .idempotency_key
            .clone()
            .unwrap_or_else(new_idempotency_key);
        let mut call = Call::new(Method::POST, self.endpoint(&["v1", "async-invoke"], &[]))
            .json(body)
            .header(IDEMPOTENCY_KEY, key);
        if let Some(n) = opts.prefer_wait {
            call = call.header(HeaderName::from_static("prefer"), format!("wait={n}"));
        }
        self.json(&call).await
    }

    /// `GET /v1/async-invoke/{id}`: the invocation with its output once done.
    pub async fn get(&self, request_id: &str) -> Result<Invocation, ClientError> {
        let url = self.endpoint(&["v1", "async-invoke", request_id], &[]);
        self.json(&Call::new(Method::GET, url)).await
    }

    /// `GET /v1/async-invoke/{id}/status`.
    pub async fn status(&self, request_id: &str) -> Result<Invocation, ClientError> {
        let url = self.endpoint(&["v1", "async-invoke", request_id, "status"], &[]);
        self.json(&Call::new(Method::GET, url)).await
    }

    /// `GET /v1/async-invoke?...`: one page of the caller's jobs, newest first.
    pub async fn list(&self, q: &ListQuery) -> Result<InvocationPage, ClientError> {
        let time = |t: &DateTime<Utc>| t.to_rfc3339_opts(SecondsFormat::AutoSi, true);
        let mut query = Vec::new();
        if let Some(s) = q.status {
            query.push(("status", s.as_str().to_owned()));
        }
        if let Some(m) = &q.model_id {
            query.push(("model_id", m.clone()));
        }
        if let Some((k, v)) = &q.tag {
            query.push(("tag", format!("{k}:{v}")));
        }
        if let Some(t) = &q.created_after {
            query.push(("created_after", time(t)));
        }
        if let Some(t) = &q.created_before {
            query.push(("created_before", time(t)));
        }
        if let Some(l) = q.limit {
            query.push(("limit", l.to_string()));
        }
        if let Some(c) = &q.cursor {
            query.push(("cursor", c.clone()));
        }
        let url = self.endpoint(&["v1", "async-invoke"], &query);
        self.json(&Call::new(Method::GET, url)).await
    }

    /// `POST /v1/async-invoke/{id}/cancel`: a queued job never runs, a running one is told to
    /// stop. A job that had finished is a 409 `conflict` error.
    pub async fn cancel(&self, request_id: &str) -> Result<Invocation, ClientError> {
        let url = self.endpoint(&["v1", "async-invoke", request_id, "cancel"], &[]);
        let mut call = Call::new(Method::POST, url);
        call.retry = Retry::Safe;
        self.json(&call).await
    }
}
