//! Worker tokens: what a worker authenticates with, the models it may serve, stored hashed;
//! and model patterns (exact ids or `prefix*`), matched as the routing table matches them.

use chrono::{DateTime, Utc};

use crate::{
    ids::WorkerTokenId,
    keys::{KeyHash, random_secret},
};

/// Every worker token starts with this, so that it is told from an access key at a glance.
pub const TOKEN_PREFIX: &str = "invw_";

/// A new random worker token.
pub fn generate_token() -> String {
    random_secret(TOKEN_PREFIX)
}

/// Model ids and `prefix*` patterns.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct ModelPatterns(Vec<String>);

/// A pattern that cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PatternError {
    #[error("models: at least one model id or pattern is needed")]
    Empty,
    #[error(
        "model pattern {0:?}: `*` may only end a pattern, and a pattern is 1 to 200 characters without spaces"
    )]
    Invalid(String),
}

impl ModelPatterns {
    /// Checks each pattern: 1 to 200 characters, no whitespace, `*` only at the end.
    pub fn parse(patterns: &[String]) -> Result<Self, PatternError> {
        if patterns.is_empty() {
            return Err(PatternError::Empty);
        }
        for p in patterns {
            let bad = p.is_empty()
                || p.len() > 200
                || p.chars().any(|c| c.is_whitespace() || c.is_control())
                || p.trim_end_matches('*').contains('*')
                || p.ends_with("**");
            if bad {
                return Err(PatternError::Invalid(p.clone()));
            }
        }
        let mut v = patterns.to_vec();
        v.sort();
        v.dedup();
        Ok(Self(v))
    }

    /// As stored; never checked again.
    pub fn from_stored(patterns: Vec<String>) -> Self {
        Self(patterns)
    }

    pub fn as_slice(&self) -> &[String] {
        &self.0
    }

    /// Whether some pattern matches `model`.
    pub fn matches(&self, model: &str) -> bool {
        self.0.iter().any(|p| match p.strip_suffix('*') {
            Some(prefix) => model.starts_with(prefix),
            None => p == model,
        })
    }

    /// Whether every model `self` can match, `outer` matches too: each pattern is an id
    /// `outer` matches, or a prefix that one of `outer`'s prefixes starts.
    pub fn within(&self, outer: &ModelPatterns) -> bool {
        self.0.iter().all(|p| match p.strip_suffix('*') {
            None => outer.matches(p),
            Some(prefix) => outer
                .0
                .iter()
                .filter_map(|o| o.strip_suffix('*'))
                .any(|o| prefix.starts_with(o)),
        })
    }
}

/// A worker token as stored: never the secret itself.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerToken {
    pub id: WorkerTokenId,
    pub hash: KeyHash,
    /// The first characters of the token, to recognise it in listings.
    pub prefix: String,
    pub name: String,
    pub models: ModelPatterns,
    pub created_at: DateTime<Utc>,
    pub revoked_at: Option<DateTime<Utc>>,
}

impl WorkerToken {
    /// A record for `secret`, which the caller shows once and then forgets.
    pub fn for_secret(secret: &str, name: &str, models: ModelPatterns, now: DateTime<Utc>) -> Self {
        Self {
            id: WorkerTokenId::generate(),
            hash: KeyHash::of(secret),
            prefix: secret.chars().take(TOKEN_PREFIX.len() + 4).collect(),
            name: name.to_owned(),
            models,
            created_at: now,
            revoked_at: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pats(p: &[&str]) -> ModelPatterns {
        ModelPatterns::parse(&p.iter().map(|s| (*s).to_owned()).collect::<Vec<_>>()).unwrap()
    }

    #[test]
    fn patterns_match_ids_and_prefixes() {
        let p = pats(&["acme/*", "fal-ai/flux/schnell"]);
        assert!(p.matches("acme/sdxl"));
        assert!(p.matches("fal-ai/flux/schnell"));
        assert!(!p.matches("fal-ai/flux/dev"));
        assert!(!p.matches("acm"));
    }

    #[test]
    fn a_worker_may_narrow_its_tokens_models_but_not_widen_them() {
        let token = pats(&["acme/*", "fal-ai/flux/schnell"]);
        assert!(pats(&["acme/img/*"]).within(&token));
        assert!(pats(&["acme/x", "fal-ai/flux/schnell"]).within(&token));
        assert!(!pats(&["*"]).within(&token));
        assert!(!pats(&["fal-ai/*"]).within(&token));
        assert!(!pats(&["fal-ai/flux/dev"]).within(&token));
    }

    #[test]
    fn bad_patterns_are_refused() {
        for bad in [
            vec![],
            vec!["a*b".to_owned()],
            vec![String::new()],
            vec!["a b".into()],
        ] {
            assert!(ModelPatterns::parse(&bad).is_err(), "{bad:?}");
        }
        let t = generate_token();
        assert!(t.starts_with(TOKEN_PREFIX) && t.len() > 40);
    }
}
