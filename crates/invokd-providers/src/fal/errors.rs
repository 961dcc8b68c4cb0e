//! fal's errors as job errors (protocol.md 2.8): the message from `detail`, the type from
//! `error_type` or `X-Fal-Error-Type`, and whether another attempt could help.

use invokd_core::provider::ProviderError;
use serde_json::Value;

use super::client::{Answer, CallError};

/// fal's error types that come from the machine a request ran on, not from the request: a new
/// submission may succeed.
const RUNNER_ERRORS: [&str; 8] = [
    "runner_scheduling_failure",
    "runner_connection_timeout",
    "runner_disconnected",
    "runner_connection_refused",
    "runner_connection_error",
    "runner_incomplete_response",
    "runner_server_error",
    "internal_error",
];

/// Whether an upstream failure of this type is worth a new submission.
pub fn is_runner_error(error_type: &str) -> bool {
    RUNNER_ERRORS.contains(&error_type) || error_type == "startup_timeout"
}

/// The text of fal's `detail`: a string, or pydantic's list of `{loc, msg}` entries.
pub fn detail_text(detail: &Value) -> Option<String> {
    match detail {
        Value::String(s) => Some(s.clone()),
        Value::Array(items) => {
            let parts: Vec<String> = items
                .iter()
                .map(|i| {
                    let loc = i["loc"]
                        .as_array()
                        .map(|l| {
                            l.iter()
                                .filter(|p| p.as_str() != Some("body"))
                                .map(|p| match p {
                                    Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                                .collect::<Vec<_>>()
                                .join(".")
                        })
                        .unwrap_or_default();
                    let msg = i["msg"].as_str().unwrap_or("invalid");
                    if loc.is_empty() {
                        msg.to_owned()
                    } else {
                        format!("{loc}: {msg}")
                    }
                })
                .collect();
            (!parts.is_empty()).then(|| parts.join("; "))
        }
        Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// An error answer of fal's, as the job's error.
pub fn from_answer(what: &str, a: &Answer) -> ProviderError {
    let body = a.json();
    let code = a.status.as_u16();
    let error_type = body["error_type"].as_str().map(str::to_owned).or_else(|| {
        a.headers
            .get("x-fal-error-type")
            .and_then(|v| v.to_str().ok())
            .map(str::to_owned)
    });
    let detail = detail_text(&body["detail"])
        .or_else(|| body["error"].as_str().map(str::to_owned))
        .unwrap_or_else(|| {
            let text = String::from_utf8_lossy(&a.body);
            let text = text.trim();
            if text.is_empty() {
                a.status.to_string()
            } else {
                text.chars().take(500).collect()
            }
        });
    let message = format!("fal answered {code} to the {what}: {detail}");
    let user_timeout = a
        .headers
        .get("x-fal-request-timeout-type")
        .is_some_and(|v| v.as_bytes() == b"user");
    match code {
        422 => ProviderError::permanent(
            error_type.unwrap_or_else(|| "validation_error".into()),
            message,
        ),
        401 | 403 => ProviderError::permanent(
            "upstream_unauthorized",
            format!("fal refused invokd's key ({code}): {detail}; check FAL_KEY"),
        ),
        404 => ProviderError::permanent(
            error_type.unwrap_or_else(|| "upstream_not_found".into()),
            message,
        ),
        504 if user_timeout => ProviderError::permanent("request_timeout", message),
        // Too busy, after the retries: fal is not failing, the job is not at fault.
        429 => ProviderError::later(
            error_type.unwrap_or_else(|| "upstream_rate_limited".into()),
            message,
        ),
        c if c >= 500 => {
            let t = error_type.unwrap_or_else(|| "runner_server_error".into());
            ProviderError::transient(t, message)
        }
        _ => ProviderError::permanent(error_type.unwrap_or_else(|| "bad_request".into()), message),
    }
}

/// A call that failed, as the job's error.
pub fn from_call(what: &str, e: CallError) -> ProviderError {
    match e {
        CallError::Status(a) => from_answer(what, &a),
        CallError::Transport { message, .. } => ProviderError::transient(
            "upstream_unavailable",
            format!("fal did not answer the {what}: {message}"),
        ),
        CallError::BreakerOpen => ProviderError::later(
            "upstream_unavailable",
            "fal is failing; calls are paused while its circuit breaker is open",
        ),
        CallError::Stopped => ProviderError::transient("shutdown", "the run was stopped"),
    }
}

/// A request that ended upstream with `error` and `error_type` (a `COMPLETED` status, or a
/// webhook's `ERROR`).
pub fn from_completed(error: Option<&str>, error_type: Option<&str>) -> ProviderError {
    let t = error_type.unwrap_or("runner_server_error");
    let message = format!(
        "fal: {} ({t})",
        error.unwrap_or("the request failed upstream")
    );
    if is_runner_error(t) {
        ProviderError::transient(t, message)
    } else {
        ProviderError::permanent(t, message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use invokd_core::provider::Retry;
    use reqwest::{StatusCode, header::HeaderMap};
    use serde_json::json;

    fn answer(code: u16, body: Value, header_type: Option<&str>) -> Answer {
        let mut headers = HeaderMap::new();
        if let Some(t) = header_type {
            headers.insert("x-fal-error-type", t.parse().unwrap());
        }
        Answer {
            status: StatusCode::from_u16(code).unwrap(),
            headers,
            body: Bytes::from(body.to_string()),
        }
    }

    #[test]
    fn validation_errors_are_final_and_name_the_field() {
        let a = answer(
            422,
            json!({"detail":[{"loc":["body","prompt"],"msg":"field required","type":"value_error.missing"}]}),
            None,
        );
        let e = from_answer("submission", &a);
        assert_eq!(e.retry, Retry::No);
        assert_eq!(e.error_type, "validation_error");
        assert!(
            e.message.contains("prompt: field required"),
            "{}",
            e.message
        );
    }

    #[test]
    fn infrastructure_errors_take_the_type_from_body_or_header() {
        let e = from_answer(
            "result",
            &answer(
                503,
                json!({"detail":"no runner"}),
                Some("runner_scheduling_failure"),
            ),
        );
        assert_eq!(
            (e.retry, e.error_type.as_str()),
            (Retry::Yes, "runner_scheduling_failure")
        );
        let e = from_answer(
            "result",
            &answer(
                504,
                json!({"detail":"Request timed out","error_type":"request_timeout"}),
                None,
            ),
        );
        assert_eq!(e.error_type, "request_timeout");
        let e = from_answer("submission", &answer(429, json!({"detail":"busy"}), None));
        assert_eq!(e.retry, Retry::Later);
        let e = from_answer(
            "submission",
            &answer(401, json!({"detail":"invalid key"}), None),
        );
        assert_eq!(
            (e.retry, e.error_type.as_str()),
            (Retry::No, "upstream_unauthorized")
        );
    }

    #[test]
    fn completed_with_an_error_fails_with_its_type() {
        let e = from_completed(Some("boom"), Some("runner_disconnected"));
        assert_eq!(e.retry, Retry::Yes);
        let e = from_completed(Some("nsfw"), Some("content_policy_violation"));
        assert_eq!(
            (e.retry, e.error_type.as_str()),
            (Retry::No, "content_policy_violation")
        );
        assert!(e.message.contains("nsfw"));
    }
}
