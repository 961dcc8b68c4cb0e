//! Exit codes, the error kinds that choose them, and the hint printed under an error.
//!
//! | code | meaning |
//! |---|---|
//! | 0 | success |
//! | 1 | any other failure (a local file, the config file) |
//! | 2 | usage: a bad flag or argument, no access key or API URL |
//! | 3 | the API refused the request (an error answer, after retries) |
//! | 4 | a job ended FAILED or CANCELED |
//! | 5 | network: the server could not be reached, or the connection broke |
//! | 6 | `--timeout` passed before the job finished (it goes on) |
//! | 130 | interrupted with Ctrl-C while waiting |

use invokd_client::ClientError;

pub const USAGE: u8 = 2;
pub const API: u8 = 3;
pub const JOB_ENDED: u8 = 4;
pub const NETWORK: u8 = 5;
pub const TIMEOUT: u8 = 6;
pub const INTERRUPTED: u8 = 130;

/// A mistake in how the command was called; the message says how to call it.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
pub struct Usage(pub String);

/// Shorthand for `Err(Usage(..).into())`.
pub fn usage<T>(msg: impl Into<String>) -> anyhow::Result<T> {
    Err(Usage(msg.into()).into())
}

/// Jobs that ended FAILED or CANCELED (their invocations were printed already).
#[derive(Debug, thiserror::Error)]
#[error("{}", .0.join("; "))]
pub struct JobsEnded(pub Vec<String>);

/// The user stopped a wait with Ctrl-C (what happened to the jobs was printed already).
#[derive(Debug, thiserror::Error)]
#[error("interrupted")]
pub struct Interrupted;

/// The exit code of a failed command.
pub fn code_of(e: &anyhow::Error) -> u8 {
    for cause in e.chain() {
        if cause.is::<Usage>() {
            return USAGE;
        }
        if cause.is::<JobsEnded>() {
            return JOB_ENDED;
        }
        if cause.is::<Interrupted>() {
            return INTERRUPTED;
        }
        if let Some(c) = cause.downcast_ref::<ClientError>() {
            return match c {
                ClientError::Api { .. } | ClientError::Unexpected { .. } => API,
                ClientError::Network { .. } | ClientError::Stream { .. } => NETWORK,
                ClientError::Timeout { .. } => TIMEOUT,
                ClientError::InvalidUrl { .. } => USAGE,
                _ => 1,
            };
        }
    }
    1
}

/// The error and its causes, as one line; a client error's own message already says its cause,
/// so the chain stops there.
pub fn message(e: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in e.chain() {
        parts.push(cause.to_string());
        if cause.is::<ClientError>() {
            break;
        }
    }
    parts.join(": ")
}

/// What to do about an error, when the message alone does not say.
pub fn hint(e: &anyhow::Error) -> Option<String> {
    let c = e.chain().find_map(|c| c.downcast_ref::<ClientError>())?;
    Some(match c {
        ClientError::Network { .. } => {
            "is the server running there? Start it with `invokd serve`, \
             or point at another with --api-url (INVOKD_API_URL) or `invokd auth switch`."
                .into()
        }
        ClientError::Api { body, .. } if body.id == "unauthorized" => {
            "the key was refused: pass the right one with --access-token (INVOKD_ACCESS_TOKEN), \
             or save it with `invokd auth init`."
                .into()
        }
        ClientError::Api { body, .. } if body.id == "too_many_requests" => {
            "the server is busy or the key's rate limit is reached: try again later, or raise \
             --http-retry-max / --http-retry-wait-max."
                .into()
        }
        ClientError::Api { body, .. }
            if body.id == "not_found" && body.message.starts_with("model") =>
        {
            "`invokd models list` shows the models the server has.".into()
        }
        ClientError::FileExists { .. } => {
            "pass --force to overwrite it, or choose another --download directory.".into()
        }
        ClientError::Timeout { request_id, .. } => {
            format!("wait longer with `invokd async-invoke wait {request_id}`.")
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use anyhow::Context as _;

    #[test]
    fn codes_follow_the_cause_through_context() {
        let e = anyhow::Error::from(Usage("x".into())).context("while doing y");
        assert_eq!(code_of(&e), USAGE);
        let e: anyhow::Error = Err::<(), _>(JobsEnded(vec!["a FAILED".into()]))
            .context("waiting")
            .unwrap_err();
        assert_eq!(code_of(&e), JOB_ENDED);
        assert_eq!(code_of(&anyhow::anyhow!("other")), 1);
        let timeout = ClientError::Timeout {
            request_id: "r".into(),
            timeout: std::time::Duration::from_secs(1),
        };
        let e = anyhow::Error::from(timeout);
        assert_eq!(code_of(&e), TIMEOUT);
        assert!(hint(&e).unwrap().contains("async-invoke wait r"));
    }
}
