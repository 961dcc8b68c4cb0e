//! Tracing of network activity (doctl's `--trace`): each request and answer, as readable text,
//! with every access key, admin token and `Authorization` header redacted.

use std::{fmt, sync::Arc, time::Duration};

use reqwest::{Method, StatusCode, header::HeaderMap};

/// What the client did on the network; see [`crate::ClientBuilder::trace`].
#[derive(Debug, Clone)]
#[non_exhaustive]
pub enum TraceEvent {
    /// A request is being sent (attempt 1, 2, ...).
    Request {
        method: Method,
        url: String,
        attempt: u32,
        headers: Vec<(String, String)>,
        body: Option<String>,
    },
    /// Its answer. `body` is absent for streams and downloads.
    Response {
        method: Method,
        url: String,
        status: StatusCode,
        elapsed: Duration,
        headers: Vec<(String, String)>,
        body: Option<String>,
    },
    /// An attempt failed and will be retried after `wait`.
    Retry {
        method: Method,
        url: String,
        reason: String,
        wait: Duration,
        attempt: u32,
        max_retries: u32,
    },
    /// Something worth knowing about how the client goes on (e.g. falling back to polling).
    Note(String),
}

impl TraceEvent {
    /// Whether this is a retry or a note, rather than raw traffic (`--verbose` shows these).
    pub fn is_notice(&self) -> bool {
        matches!(self, Self::Retry { .. } | Self::Note(_))
    }
}

impl fmt::Display for TraceEvent {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Request {
                method,
                url,
                attempt,
                headers,
                body,
            } => {
                write!(f, "> {method} {url}")?;
                if *attempt > 1 {
                    write!(f, " (attempt {attempt})")?;
                }
                for (k, v) in headers {
                    write!(f, "\n> {k}: {v}")?;
                }
                if let Some(b) = body {
                    write!(f, "\n>\n{}", indent(b, "> "))?;
                }
                Ok(())
            }
            Self::Response {
                method,
                url,
                status,
                elapsed,
                headers,
                body,
            } => {
                write!(
                    f,
                    "< {status} for {method} {url} in {} ms",
                    elapsed.as_millis()
                )?;
                for (k, v) in headers {
                    write!(f, "\n< {k}: {v}")?;
                }
                if let Some(b) = body {
                    write!(f, "\n<\n{}", indent(b, "< "))?;
                }
                Ok(())
            }
            Self::Retry {
                method,
                url,
                reason,
                wait,
                attempt,
                max_retries,
            } => write!(
                f,
                "retrying {method} {url} in {:.1} s after {reason} (retry {attempt} of {max_retries})",
                wait.as_secs_f64()
            ),
            Self::Note(n) => f.write_str(n),
        }
    }
}

fn indent(text: &str, prefix: &str) -> String {
    text.lines()
        .map(|l| format!("{prefix}{l}"))
        .collect::<Vec<_>>()
        .join("\n")
}

/// Where trace events go.
pub type TraceSink = Arc<dyn Fn(&TraceEvent) + Send + Sync>;

pub(crate) const REDACTED: &str = "<redacted>";

/// Headers as text, `Authorization` and cookies redacted.
pub(crate) fn headers(h: &HeaderMap) -> Vec<(String, String)> {
    h.iter()
        .map(|(k, v)| {
            let name = k.as_str().to_owned();
            let value = match name.as_str() {
                "authorization" => match v.to_str().ok().and_then(|s| s.split_once(' ')) {
                    Some((scheme, _)) => format!("{scheme} {REDACTED}"),
                    None => REDACTED.to_owned(),
                },
                "cookie" | "set-cookie" => REDACTED.to_owned(),
                _ => v.to_str().unwrap_or("<binary>").to_owned(),
            };
            (name, value)
        })
        .collect()
}

/// A body as text for the trace: secrets (`invk_...` keys, `invka_...` tokens, and `secret`
/// itself) redacted, long bodies cut.
pub(crate) fn body(bytes: &[u8], secret: &str) -> String {
    const MAX: usize = 16 * 1024;
    let mut text = String::from_utf8_lossy(&bytes[..bytes.len().min(MAX)]).into_owned();
    if !secret.is_empty() {
        text = text.replace(secret, REDACTED);
    }
    let text = redact_keys(&text);
    if bytes.len() > MAX {
        format!("{text}\n... ({} bytes in all)", bytes.len())
    } else {
        text
    }
}

/// Replaces every token that starts like an invokd key or admin token.
fn redact_keys(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(at) = rest.find("invk") {
        let (before, from) = rest.split_at(at);
        out.push_str(before);
        let is_key = (from.starts_with("invk_") || from.starts_with("invka_"))
            && !before.ends_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        if is_key {
            let end = from
                .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == '-'))
                .unwrap_or(from.len());
            let kind = if from.starts_with("invka_") {
                "invka_"
            } else {
                "invk_"
            };
            out.push_str(kind);
            out.push_str(REDACTED);
            rest = &from[end..];
        } else {
            out.push_str("invk");
            rest = &from[4..];
        }
    }
    out.push_str(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keys_and_tokens_are_redacted() {
        let t = body(
            br#"{"key":"invk_abc-DEF_123","admin":"invka_zzz","x":"myinvk_no","s":"sekrit"}"#,
            "sekrit",
        );
        assert_eq!(
            t,
            r#"{"key":"invk_<redacted>","admin":"invka_<redacted>","x":"myinvk_no","s":"<redacted>"}"#
        );
        let mut h = HeaderMap::new();
        h.insert("authorization", "Bearer invk_secret".parse().unwrap());
        h.insert("x-other", "1".parse().unwrap());
        let shown = headers(&h);
        assert!(shown.contains(&("authorization".into(), "Bearer <redacted>".into())));
        assert!(shown.contains(&("x-other".into(), "1".into())));
    }
}
