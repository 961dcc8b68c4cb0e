//! Per-key rate limits: a token bucket per access key, refilled continuously. Every
//! authenticated response says where the key stands (`ratelimit-limit`, `ratelimit-remaining`,
//! `ratelimit-reset`, integers as DigitalOcean sends them); a request over the limit gets 429
//! with `Retry-After`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use invokd_core::KeyId;

/// Requests per second and the burst a key may spend at once; `rate` 0 turns limits off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    pub rate: f64,
    pub burst: u32,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            rate: 50.0,
            burst: 200,
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Where a key stands after a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RateInfo {
    pub limit: u32,
    pub remaining: u32,
    /// Unix time when the bucket is full again.
    pub reset: i64,
    /// Set when the request was refused: wait this long.
    pub retry_after: Option<Duration>,
}

/// The buckets of every key seen.
#[derive(Debug, Default)]
pub struct RateLimiter {
    config: RateLimitConfig,
    buckets: Mutex<HashMap<KeyId, Bucket>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token for `key`; `None` when limits are off.
    pub fn check(&self, key: KeyId) -> Option<RateInfo> {
        let RateLimitConfig { rate, burst } = self.config;
        if rate <= 0.0 || burst == 0 {
            return None;
        }
        let now = Instant::now();
        let capacity = f64::from(burst);
        let mut buckets = self.buckets.lock().ok()?;
        let b = buckets.entry(key).or_insert(Bucket {
            tokens: capacity,
            at: now,
        });
        b.tokens = (b.tokens + now.duration_since(b.at).as_secs_f64() * rate).min(capacity);
        b.at = now;
        let retry_after = if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            None
        } else {
            Some(Duration::from_secs_f64((1.0 - b.tokens) / rate))
        };
        let until_full = (capacity - b.tokens) / rate;
        Some(RateInfo {
            limit: burst,
            remaining: b.tokens.floor() as u32,
            reset: chrono::Utc::now().timestamp() + until_full.ceil() as i64,
            retry_after,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_burst_is_spent_then_refused_then_refilled() {
        let limiter = RateLimiter::new(RateLimitConfig {
            rate: 1000.0,
            burst: 3,
        });
        let key = KeyId::generate();
        let remaining: Vec<u32> = (0..3)
            .map(|_| limiter.check(key).unwrap().remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(key).unwrap();
        assert!(refused.retry_after.is_some());
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            limiter.check(key).unwrap().retry_after.is_none(),
            "refilled"
        );
        assert!(
            limiter
                .check(KeyId::generate())
                .unwrap()
                .retry_after
                .is_none(),
            "per key"
        );
        assert!(
            RateLimiter::new(RateLimitConfig {
                rate: 0.0,
                burst: 0
            })
            .check(key)
            .is_none()
        );
    }
}
