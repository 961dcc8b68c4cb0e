//! DigitalOcean's async-invoke surface: the create body and the invocation object.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// Body of `POST /v1/async-invoke`. Unknown top-level keys are ignored, because pydo's helper
/// wrappers put their keyword arguments into the body.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct CreateInvocation {
    pub model_id: String,
    pub input: Map<String, Value>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tags: Option<Vec<Tag>>,
    /// invokd's extension: where to POST the result when the job ends (fal's webhook payload).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook_url: Option<String>,
    /// invokd's extension: the longest one run may take, in seconds (else the model's limit).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub run_timeout_seconds: Option<f64>,
}

/// A `{key, value}` tag attached to an invocation.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Tag {
    pub key: String,
    pub value: String,
}

/// Job status as the DigitalOcean surface shows it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum Status {
    Queued,
    InProgress,
    Completed,
    Failed,
    Canceled,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Queued => "QUEUED",
            Self::InProgress => "IN_PROGRESS",
            Self::Completed => "COMPLETED",
            Self::Failed => "FAILED",
            Self::Canceled => "CANCELED",
        }
    }

    /// Whether the job will never change again.
    pub fn is_terminal(self) -> bool {
        matches!(self, Self::Completed | Self::Failed | Self::Canceled)
    }
}

impl std::fmt::Display for Status {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

/// The invocation object returned by create, get and status.
///
/// godo decodes it strictly: timestamps are RFC 3339 strings, `output` is an object or null,
/// `error` is a string or null.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct Invocation {
    pub request_id: String,
    pub model_id: String,
    pub status: Status,
    pub created_at: DateTime<Utc>,
    pub started_at: Option<DateTime<Utc>>,
    pub completed_at: Option<DateTime<Utc>>,
    pub output: Option<Map<String, Value>>,
    pub error: Option<String>,
    #[serde(default)]
    pub tags: Vec<Tag>,
    /// invokd's extension: when retention removed the output and its files.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub expired_at: Option<DateTime<Utc>>,
    /// invokd's extension: the webhook's delivery, when the job has one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub webhook: Option<WebhookStatus>,
}

/// Where a job's webhook delivery is: `pending`, `delivered` or `failed`, with each attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookStatus {
    pub url: String,
    pub state: String,
    pub attempts: Vec<WebhookAttempt>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct WebhookAttempt {
    pub at: DateTime<Utc>,
    pub status_code: Option<u16>,
    pub error: Option<String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn create_body_ignores_unknown_top_level_keys() {
        let body: CreateInvocation = serde_json::from_str(
            r#"{"model_id":"m","input":{"prompt":"p","x":1},"enforce_https":false}"#,
        )
        .unwrap();
        assert_eq!(body.model_id, "m");
        assert_eq!(body.input.len(), 2);
        assert!(body.tags.is_none());
    }

    #[test]
    fn status_serializes_in_screaming_case() {
        assert_eq!(
            serde_json::to_string(&Status::InProgress).unwrap(),
            "\"IN_PROGRESS\""
        );
        for s in [Status::Queued, Status::Completed, Status::Failed] {
            assert_eq!(serde_json::to_value(s).unwrap(), s.as_str());
        }
    }
}
