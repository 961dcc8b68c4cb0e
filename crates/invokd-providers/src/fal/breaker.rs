//! A circuit breaker for one upstream: closed, open for a while after consecutive failures,
//! then half-open, when calls go through again and one success closes it.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

/// What a breaker looks like now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BreakerState {
    Closed,
    /// Calls are refused until then.
    Open(Instant),
    /// The open period is over; the next call decides.
    HalfOpen,
}

#[derive(Debug, Default)]
struct Inner {
    consecutive_failures: u32,
    open_until: Option<Instant>,
}

/// Counts consecutive failures (5xx, timeouts, dropped connections; never a 4xx, which is the
/// request's fault) and opens after `threshold` of them.
#[derive(Debug)]
pub struct Breaker {
    threshold: u32,
    open_for: Duration,
    inner: Mutex<Inner>,
}

impl Breaker {
    pub fn new(threshold: u32, open_for: Duration) -> Self {
        Self {
            threshold: threshold.max(1),
            open_for,
            inner: Mutex::new(Inner::default()),
        }
    }

    pub fn state(&self) -> BreakerState {
        let Ok(i) = self.inner.lock() else {
            return BreakerState::Closed;
        };
        match i.open_until {
            None => BreakerState::Closed,
            Some(t) if Instant::now() < t => BreakerState::Open(t),
            Some(_) => BreakerState::HalfOpen,
        }
    }

    /// Whether a call may go out now (closed or half-open).
    pub fn allows(&self) -> bool {
        !matches!(self.state(), BreakerState::Open(_))
    }

    pub fn record_success(&self) {
        if let Ok(mut i) = self.inner.lock() {
            if i.open_until.is_some() {
                tracing::info!("fal circuit breaker closed");
            }
            *i = Inner::default();
        }
    }

    pub fn record_failure(&self) {
        if let Ok(mut i) = self.inner.lock() {
            i.consecutive_failures = i.consecutive_failures.saturating_add(1);
            // In half-open, one failure is enough to open again.
            if i.consecutive_failures >= self.threshold {
                if i.open_until.is_none_or(|t| Instant::now() >= t) {
                    tracing::warn!(
                        failures = i.consecutive_failures,
                        open_for = ?self.open_for,
                        "fal circuit breaker open"
                    );
                }
                i.open_until = Some(Instant::now() + self.open_for);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn opens_after_the_threshold_and_half_opens_after_the_period() {
        let b = Breaker::new(3, Duration::from_millis(30));
        b.record_failure();
        b.record_failure();
        assert!(b.allows());
        b.record_failure();
        assert!(matches!(b.state(), BreakerState::Open(_)));
        assert!(!b.allows());
        std::thread::sleep(Duration::from_millis(40));
        assert_eq!(b.state(), BreakerState::HalfOpen);
        b.record_failure();
        assert!(!b.allows(), "one failure in half-open opens it again");
        std::thread::sleep(Duration::from_millis(40));
        b.record_success();
        assert_eq!(b.state(), BreakerState::Closed);
    }

    #[test]
    fn a_success_resets_the_count() {
        let b = Breaker::new(2, Duration::from_secs(60));
        b.record_failure();
        b.record_success();
        b.record_failure();
        assert!(b.allows());
    }
}
