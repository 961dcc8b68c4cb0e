//! Per-key rate limits: two token buckets per access key, refilled continuously, one for
//! creating jobs (and files) and one for every other request, so that polling never spends
//! what creating needs (as Replicate separates creates from other calls). Every authenticated
//! response says where the key stands in the bucket its request drew on (`ratelimit-limit`,
//! `ratelimit-remaining`, `ratelimit-reset`, integers as DigitalOcean sends them, and
//! `ratelimit-policy` naming the limit); a request over its limit gets 429 with `Retry-After`.

use std::{
    collections::HashMap,
    sync::Mutex,
    time::{Duration, Instant},
};

use invokd_core::KeyId;

/// Requests per second and the burst a key may spend at once; `rate` 0 turns the limit off.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Rate {
    pub rate: f64,
    pub burst: u32,
}

/// Each key's two limits.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimitConfig {
    /// Requests that create a job or a file.
    pub create: Rate,
    /// Every other request with a key: reads, polls, lists, cancels.
    pub read: Rate,
}

impl Default for RateLimitConfig {
    fn default() -> Self {
        Self {
            create: Rate {
                rate: 50.0,
                burst: 200,
            },
            read: Rate {
                rate: 1000.0,
                burst: 2000,
            },
        }
    }
}

/// Which of a key's limits a request draws on.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Limit {
    Create,
    Read,
}

impl Limit {
    /// The limit's name in `ratelimit-policy`.
    pub fn name(self) -> &'static str {
        match self {
            Self::Create => "create",
            Self::Read => "read",
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
    /// The limit the request drew on.
    pub policy: Limit,
    /// Seconds an empty bucket takes to fill (the policy's window).
    pub window: u64,
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
    buckets: Mutex<HashMap<(KeyId, Limit), Bucket>>,
}

impl RateLimiter {
    pub fn new(config: RateLimitConfig) -> Self {
        Self {
            config,
            buckets: Mutex::new(HashMap::new()),
        }
    }

    /// Takes one token from `key`'s bucket for `policy`; `None` when that limit is off.
    pub fn check(&self, key: KeyId, policy: Limit) -> Option<RateInfo> {
        let Rate { rate, burst } = match policy {
            Limit::Create => self.config.create,
            Limit::Read => self.config.read,
        };
        if rate <= 0.0 || burst == 0 {
            return None;
        }
        let now = Instant::now();
        let capacity = f64::from(burst);
        let mut buckets = self.buckets.lock().ok()?;
        let b = buckets.entry((key, policy)).or_insert(Bucket {
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
            policy,
            window: (capacity / rate).ceil() as u64,
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

    fn limiter_of(create: Rate, read: Rate) -> RateLimiter {
        RateLimiter::new(RateLimitConfig { create, read })
    }

    #[test]
    fn a_burst_is_spent_then_refused_then_refilled() {
        let fast = Rate {
            rate: 1000.0,
            burst: 3,
        };
        let limiter = limiter_of(fast, fast);
        let key = KeyId::generate();
        let remaining: Vec<u32> = (0..3)
            .map(|_| limiter.check(key, Limit::Create).unwrap().remaining)
            .collect();
        assert_eq!(remaining, [2, 1, 0]);
        let refused = limiter.check(key, Limit::Create).unwrap();
        assert!(refused.retry_after.is_some());
        std::thread::sleep(Duration::from_millis(5));
        assert!(
            limiter
                .check(key, Limit::Create)
                .unwrap()
                .retry_after
                .is_none(),
            "refilled"
        );
        assert!(
            limiter
                .check(KeyId::generate(), Limit::Create)
                .unwrap()
                .retry_after
                .is_none(),
            "per key"
        );
        let off = Rate {
            rate: 0.0,
            burst: 0,
        };
        assert!(limiter_of(off, off).check(key, Limit::Read).is_none());
    }

    #[test]
    fn reads_never_spend_what_creates_need() {
        let limiter = limiter_of(
            Rate {
                rate: 0.001,
                burst: 2,
            },
            Rate {
                rate: 0.001,
                burst: 5,
            },
        );
        let key = KeyId::generate();
        for _ in 0..5 {
            let r = limiter.check(key, Limit::Read).unwrap();
            assert_eq!((r.policy, r.limit, r.retry_after), (Limit::Read, 5, None));
        }
        assert!(
            limiter
                .check(key, Limit::Read)
                .unwrap()
                .retry_after
                .is_some()
        );
        let c = limiter.check(key, Limit::Create).unwrap();
        assert_eq!((c.policy, c.limit, c.remaining), (Limit::Create, 2, 1));
        assert!(c.retry_after.is_none(), "creates have their own bucket");
        assert_eq!(c.window, 2000);
    }
}
