//! fal's queue surface: submit, status, result and cancel bodies, logs, and fal's error shapes.
//!
//! fal's clients parse strictly (protocol.md 2.3-2.8): Python needs every URL of the submit
//! response, `queue_position` while queued and the `logs` key (possibly null) afterwards; JS stops
//! polling only on `COMPLETED`, so failures and cancels are `COMPLETED` with `error`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};

/// The only three statuses fal's clients know.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum QueueState {
    InQueue,
    InProgress,
    Completed,
}

/// Answer to `POST /{model_id}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct SubmitResponse {
    pub status: QueueState,
    pub request_id: String,
    /// Equal to `request_id`: invokd does not resubmit under a new id.
    pub gateway_request_id: String,
    pub response_url: String,
    pub status_url: String,
    pub cancel_url: String,
    pub queue_position: u64,
}

/// One log line, as fal shows it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct LogEntry {
    pub message: String,
    pub level: String,
    pub source: String,
    pub timestamp: String,
}

/// Answer to `GET .../requests/{id}/status`, and each event of its SSE stream.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct QueueStatus {
    pub status: QueueState,
    pub request_id: String,
    pub response_url: String,
    pub status_url: String,
    pub cancel_url: String,
    /// Present only while queued.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub queue_position: Option<u64>,
    /// Always present (Python's client needs the key); null unless logs were asked for.
    pub logs: Option<Vec<LogEntry>>,
    /// Present once completed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub metrics: Option<Map<String, Value>>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
}

/// Cancel outcomes, each with its own HTTP status (decided by the server).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum CancelStatus {
    CancellationRequested,
    AlreadyCompleted,
    NotFound,
}

/// Body of cancel answers and of an unknown request id: `{"status": ...}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct StatusOnly<T> {
    pub status: T,
}

/// One entry of a 422 body: `{"loc": ["body", "prompt"], "msg": "...", "type": "..."}`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ValidationDetail {
    pub loc: Vec<Value>,
    pub msg: String,
    #[serde(rename = "type")]
    pub kind: String,
}

/// fal's error bodies: `{"detail": "..."}` or `{"detail": [ValidationDetail]}`, with an optional
/// `error_type` (also sent as the `x-fal-error-type` header).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
pub struct ErrorDetail {
    pub detail: Detail,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub error_type: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, utoipa::ToSchema)]
#[serde(untagged)]
pub enum Detail {
    Message(String),
    Validation(Vec<ValidationDetail>),
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn a_queued_status_has_its_position_and_a_null_logs_key() {
        let s = QueueStatus {
            status: QueueState::InQueue,
            request_id: "r".into(),
            response_url: "u".into(),
            status_url: "u/status".into(),
            cancel_url: "u/cancel".into(),
            queue_position: Some(2),
            logs: None,
            metrics: None,
            error: None,
            error_type: None,
        };
        let v = serde_json::to_value(&s).unwrap();
        assert_eq!(v["status"], "IN_QUEUE");
        assert_eq!(v["queue_position"], 2);
        assert!(v.as_object().unwrap().contains_key("logs") && v["logs"].is_null());
        assert!(!v.as_object().unwrap().contains_key("error"));
    }

    #[test]
    fn validation_details_use_fals_field_names() {
        let e = ErrorDetail {
            detail: Detail::Validation(vec![ValidationDetail {
                loc: vec![json!("body"), json!("prompt")],
                msg: "field required".into(),
                kind: "value_error.missing".into(),
            }]),
            error_type: None,
        };
        assert_eq!(
            serde_json::to_value(&e).unwrap(),
            json!({"detail": [{"loc": ["body", "prompt"], "msg": "field required", "type": "value_error.missing"}]})
        );
    }
}
