//! `ClientError`: every way a call can fail, so that callers can tell the server's "no" from a
//! network failure, a finished wait from a timed-out one, and a local file problem from both.

use std::{path::PathBuf, time::Duration};

use invokd_api::error_code::ErrorBody;
use reqwest::StatusCode;

/// A failed call.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ClientError {
    /// The server answered with an error body (after any retries).
    #[error("the server answered {status}: {} ({})", body.message, body.id)]
    Api { status: StatusCode, body: ErrorBody },
    /// The server answered something that is not what the API promises.
    #[error("unexpected answer from the server ({status}): {text}")]
    Unexpected { status: StatusCode, text: String },
    /// The server could not be reached, or the connection broke (after any retries).
    #[error("cannot reach {url}: {reason}")]
    Network {
        url: String,
        reason: String,
        #[source]
        source: reqwest::Error,
    },
    /// A live event stream broke in a way that retrying did not mend.
    #[error("the event stream of {request_id} failed: {reason}")]
    Stream { request_id: String, reason: String },
    /// A wait ran out of time; the job goes on.
    #[error("{request_id} had not finished after {timeout:?} (it goes on running)")]
    Timeout {
        request_id: String,
        timeout: Duration,
    },
    /// A base URL or file URL that cannot be used.
    #[error("invalid URL {url:?}: {reason}")]
    InvalidUrl { url: String, reason: String },
    /// A download would overwrite a file.
    #[error("{} already exists; not overwriting it", path.display())]
    FileExists { path: PathBuf },
    /// A local file could not be written or read.
    #[error("cannot write {}: {source}", path.display())]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
}

impl ClientError {
    /// The HTTP status of an answer from the server, if there was one.
    pub fn status(&self) -> Option<StatusCode> {
        match self {
            Self::Api { status, .. } | Self::Unexpected { status, .. } => Some(*status),
            _ => None,
        }
    }

    /// The error body's `id` (e.g. `not_found`), if the server sent one.
    pub fn api_id(&self) -> Option<&str> {
        match self {
            Self::Api { body, .. } => Some(&body.id),
            _ => None,
        }
    }

    /// Whether the server was never reached or the connection broke.
    pub fn is_network(&self) -> bool {
        matches!(self, Self::Network { .. } | Self::Stream { .. })
    }

    pub(crate) fn network(url: &str, source: reqwest::Error) -> Self {
        Self::Network {
            url: url.to_owned(),
            reason: describe(&source),
            source,
        }
    }
}

/// reqwest's own message says little ("error sending request"); the innermost cause says what
/// happened ("Connection refused").
fn describe(e: &reqwest::Error) -> String {
    let mut inner: &dyn std::error::Error = e;
    while let Some(next) = inner.source() {
        inner = next;
    }
    let cause = inner.to_string();
    if e.is_timeout() {
        format!("timed out ({cause})")
    } else if e.is_connect() {
        format!("could not connect ({cause})")
    } else if cause == e.to_string() {
        cause
    } else {
        format!("{e} ({cause})")
    }
}
