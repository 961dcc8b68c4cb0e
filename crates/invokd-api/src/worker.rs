//! The worker protocol's bodies (docs/workers.md): what a worker sends to take, heartbeat,
//! store files, and end jobs, and what the gateway answers; and the admin API's worker tokens
//! and presence.

use std::collections::BTreeMap;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::{Map, Value};
use utoipa::ToSchema;

/// The header that carries a job's lease where the body is a file.
pub const LEASE_HEADER: &str = "x-invokd-lease";

/// The longest a take may wait, in milliseconds.
pub const MAX_TAKE_WAIT_MS: u64 = 60_000;
/// A take's wait when it names none, in milliseconds.
pub const DEFAULT_TAKE_WAIT_MS: u64 = 30_000;
/// The most jobs one take may ask for.
pub const MAX_TAKE_JOBS: u32 = 64;

/// Who a worker is and what it runs: sent with every take and heartbeat, and kept as its
/// presence.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerInfo {
    /// Chosen by the worker, one per process: `[A-Za-z0-9._-]`, 1-64 characters.
    pub id: String,
    /// For people.
    pub name: String,
    #[serde(default)]
    pub version: Option<String>,
    /// The patterns it serves (exact ids or `prefix*`), each within its token's.
    #[serde(default)]
    pub models: Vec<String>,
    /// How many jobs it runs at once.
    pub slots: u32,
    /// Free-form labels (a GPU type, a region).
    #[serde(default)]
    pub labels: BTreeMap<String, String>,
}

/// `POST /v1/worker/take`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct TakeRequest {
    pub worker: WorkerInfo,
    /// How many jobs it may start now (1-64).
    pub free: u32,
    /// How long to wait for a job, in milliseconds (at most 60,000; default 30,000).
    #[serde(default)]
    pub wait_ms: Option<u64>,
}

/// Where and how a job's output files are stored.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct FileUpload {
    /// `PUT {upload_url}/{name}` with the lease header stores a file.
    pub upload_url: String,
    /// Whether `POST {upload_url}/{name}/presign` hands out a presigned PUT URL (an S3 store).
    pub presign: bool,
    /// The largest file the gateway takes, in bytes.
    pub max_bytes: u64,
}

/// One job handed to a worker.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TakenJob {
    pub id: String,
    pub model: String,
    /// Prepared: defaults applied, validated against the model's schema.
    pub input: Map<String, Value>,
    pub attempt: u32,
    /// Sent back with every call about the job.
    pub lease: String,
    pub lease_expires_at: DateTime<Utc>,
    pub heartbeat_every_ms: u64,
    /// The model's kind: `image`, `audio` or `speech`.
    pub kind: String,
    /// The model's output section of the catalog: what the result must look like.
    pub output: Value,
    pub files: FileUpload,
}

/// The answer to a take.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct TakeResponse {
    pub jobs: Vec<TakenJob>,
}

/// A log line a worker sends.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerLogLine {
    pub message: String,
    /// fal's levels: INFO (the default), WARN, ERROR, DEBUG, STDOUT, STDERR.
    #[serde(default)]
    pub level: Option<String>,
    #[serde(default)]
    pub timestamp: Option<DateTime<Utc>>,
}

/// How far a run has come.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerProgress {
    #[serde(default)]
    pub step: Option<u64>,
    #[serde(default)]
    pub total: Option<u64>,
    #[serde(default)]
    pub message: Option<String>,
}

/// One held job in a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeldJob {
    pub id: String,
    pub lease: String,
    #[serde(default)]
    pub logs: Vec<WorkerLogLine>,
    #[serde(default)]
    pub progress: Option<WorkerProgress>,
}

/// `POST /v1/worker/heartbeat`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct HeartbeatRequest {
    pub worker: WorkerInfo,
    #[serde(default)]
    pub jobs: Vec<HeldJob>,
}

/// The answer to a heartbeat.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct HeartbeatResponse {
    /// Until when the renewed leases hold.
    pub lease_expires_at: DateTime<Utc>,
    /// Jobs whose cancel was asked: stop them and call `fail`.
    pub cancel: Vec<String>,
    /// Jobs whose lease the worker no longer holds: drop them without finishing.
    pub lost: Vec<String>,
}

/// A file stored for a job.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct StoredFile {
    /// A `blob:` reference, to put where the output names the file.
    pub url: String,
    pub file_name: String,
    pub content_type: String,
    pub file_size: u64,
}

/// `POST .../files/{name}/presign`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PresignRequest {
    pub lease: String,
    pub content_type: String,
}

/// A presigned PUT for one file.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct PresignedUpload {
    /// The `blob:` reference the output names.
    pub url: String,
    pub put_url: String,
    pub headers: BTreeMap<String, String>,
    pub expires_at: DateTime<Utc>,
}

/// `POST .../partial`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct PartialRequest {
    pub lease: String,
    pub output: Map<String, Value>,
}

/// `POST .../complete`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CompleteRequest {
    pub lease: String,
    pub output: Map<String, Value>,
    #[serde(default)]
    pub logs: Vec<WorkerLogLine>,
}

/// Why a run failed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct WorkerError {
    pub message: String,
    /// fal's error type (`runtime_error` when absent).
    #[serde(default, rename = "type")]
    pub error_type: Option<String>,
    /// Whether another attempt may succeed.
    #[serde(default)]
    pub retry: bool,
}

/// `POST .../fail`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct FailRequest {
    pub lease: String,
    pub error: WorkerError,
    #[serde(default)]
    pub logs: Vec<WorkerLogLine>,
}

/// `POST .../release`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct ReleaseRequest {
    pub lease: String,
}

/// What became of a job a worker ended: `COMPLETED`, `FAILED`, `CANCELED` or `QUEUED`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct EndedResponse {
    pub status: String,
}

/// `POST /v1/admin/worker-tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
#[serde(deny_unknown_fields)]
pub struct CreateWorkerToken {
    pub name: String,
    /// Model ids or `prefix*` patterns its workers may serve.
    pub models: Vec<String>,
}

/// A worker token as the admin API shows it (the secret only once, when created).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerTokenView {
    pub id: String,
    pub name: String,
    pub models: Vec<String>,
    /// The first characters of the secret, to tell tokens apart.
    pub prefix: String,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
    /// Only in the answer to its creation.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub token: Option<String>,
}

/// `GET /v1/admin/worker-tokens`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerTokenList {
    pub tokens: Vec<WorkerTokenView>,
}

/// A worker as the admin API shows it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerView {
    pub id: String,
    pub name: String,
    pub token_id: String,
    pub version: Option<String>,
    pub models: Vec<String>,
    pub slots: u32,
    pub labels: BTreeMap<String, String>,
    pub first_seen: DateTime<Utc>,
    pub last_seen: DateTime<Utc>,
    /// Jobs it holds now.
    pub running: u64,
    pub completed: u64,
    pub failed: u64,
}

/// `GET /v1/admin/workers`.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, ToSchema)]
pub struct WorkerList {
    pub workers: Vec<WorkerView>,
}
