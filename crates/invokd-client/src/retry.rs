//! Retries of failed requests: which failures are retried, and how long to wait before the next
//! attempt (exponential backoff between a minimum and a maximum, honouring `Retry-After`).

use std::time::Duration;

use reqwest::{StatusCode, header::HeaderMap};

/// How failed requests are retried: doctl's `--http-retry-max`, `--http-retry-wait-min` and
/// `--http-retry-wait-max`.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RetryPolicy {
    /// Retries after the first attempt (0: never retry).
    pub max_retries: u32,
    /// The first wait; each later one doubles.
    pub wait_min: Duration,
    /// The longest wait, `Retry-After` included.
    pub wait_max: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        Self {
            max_retries: 5,
            wait_min: Duration::from_secs(1),
            wait_max: Duration::from_secs(30),
        }
    }
}

impl RetryPolicy {
    /// No retries at all.
    pub fn none() -> Self {
        Self {
            max_retries: 0,
            ..Self::default()
        }
    }

    /// The wait before retry number `retry` (0 for the first retry): `wait_min * 2^retry`, at
    /// least what the server asked for in `Retry-After`, and at most `wait_max`.
    pub fn wait(&self, retry: u32, retry_after: Option<Duration>) -> Duration {
        let backoff = self
            .wait_min
            .saturating_mul(2u32.saturating_pow(retry.min(30)));
        backoff
            .max(retry_after.unwrap_or_default())
            .min(self.wait_max.max(self.wait_min))
    }
}

/// Which requests may be sent again after a failure.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Retry {
    /// Reads, and creates that carry an idempotency key: any 429, 5xx or network failure.
    Safe,
    /// Requests that must not be applied twice (e.g. making an access key): only failures
    /// where the server surely did nothing (429, a refused connection).
    Unsafe,
}

impl Retry {
    pub(crate) fn status(self, s: StatusCode) -> bool {
        match self {
            Self::Safe => {
                s == StatusCode::TOO_MANY_REQUESTS
                    || (s.is_server_error() && s != StatusCode::NOT_IMPLEMENTED)
            }
            Self::Unsafe => s == StatusCode::TOO_MANY_REQUESTS,
        }
    }

    pub(crate) fn network(self, e: &reqwest::Error) -> bool {
        match self {
            Self::Safe => e.is_connect() || e.is_timeout() || e.is_request() || e.is_body(),
            Self::Unsafe => e.is_connect(),
        }
    }
}

/// `Retry-After` as seconds or as an HTTP date.
pub(crate) fn retry_after(headers: &HeaderMap) -> Option<Duration> {
    let v = headers
        .get(reqwest::header::RETRY_AFTER)?
        .to_str()
        .ok()?
        .trim();
    if let Ok(secs) = v.parse::<f64>() {
        return (secs.is_finite() && secs >= 0.0).then(|| Duration::from_secs_f64(secs));
    }
    let at = chrono::DateTime::parse_from_rfc2822(v).ok()?;
    let left = at.to_utc() - chrono::Utc::now();
    Some(left.to_std().unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_honours_retry_after_and_stops_at_the_maximum() {
        let p = RetryPolicy {
            max_retries: 5,
            wait_min: Duration::from_secs(1),
            wait_max: Duration::from_secs(30),
        };
        let secs = |r, after: Option<u64>| p.wait(r, after.map(Duration::from_secs)).as_secs();
        assert_eq!(
            [0, 1, 2, 3, 4, 5].map(|r| secs(r, None)),
            [1, 2, 4, 8, 16, 30]
        );
        assert_eq!(
            secs(0, Some(7)),
            7,
            "Retry-After wins over a shorter backoff"
        );
        assert_eq!(
            secs(3, Some(2)),
            8,
            "a longer backoff wins over Retry-After"
        );
        assert_eq!(secs(0, Some(600)), 30, "never longer than the maximum");
        assert_eq!(secs(100, None), 30);
    }

    #[test]
    fn retry_after_reads_seconds_and_dates() {
        let mut h = HeaderMap::new();
        assert_eq!(retry_after(&h), None);
        h.insert("retry-after", "3".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_secs(3)));
        h.insert("retry-after", "0.5".parse().unwrap());
        assert_eq!(retry_after(&h), Some(Duration::from_millis(500)));
        let later = (chrono::Utc::now() + chrono::Duration::seconds(20))
            .format("%a, %d %b %Y %H:%M:%S GMT")
            .to_string();
        h.insert("retry-after", later.parse().unwrap());
        let d = retry_after(&h).unwrap();
        assert!(
            d > Duration::from_secs(15) && d <= Duration::from_secs(20),
            "{d:?}"
        );
        h.insert(
            "retry-after",
            "Wed, 21 Oct 2015 07:28:00 GMT".parse().unwrap(),
        );
        assert_eq!(retry_after(&h), Some(Duration::ZERO), "a past date: now");
        h.insert("retry-after", "soon".parse().unwrap());
        assert_eq!(retry_after(&h), None);
    }

    #[test]
    fn unsafe_requests_retry_only_when_nothing_was_done() {
        assert!(Retry::Safe.status(StatusCode::SERVICE_UNAVAILABLE));
        assert!(Retry::Safe.status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!Retry::Safe.status(StatusCode::NOT_IMPLEMENTED));
        assert!(!Retry::Safe.status(StatusCode::CONFLICT));
        assert!(Retry::Unsafe.status(StatusCode::TOO_MANY_REQUESTS));
        assert!(!Retry::Unsafe.status(StatusCode::INTERNAL_SERVER_ERROR));
    }
}
