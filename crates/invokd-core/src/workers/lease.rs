//! A worker's lease as it travels: `<attempt>:<owner>`, the owner naming the token and the
//! worker (`w/<token id>/<worker id>`), so a call with a lease is fenced by the store exactly as
//! the dispatcher's own writes are, and a lease of another token's worker is told apart at once.

use crate::{ids::WorkerTokenId, job::Lease};

/// The lease owner of the jobs a worker holds.
pub fn owner_for(token: WorkerTokenId, worker_id: &str) -> String {
    format!("w/{token}/{worker_id}")
}

/// A lease as a worker sends it back.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WorkerLease {
    pub owner: String,
    pub attempt: u32,
}

impl WorkerLease {
    pub fn of(lease: &Lease) -> Self {
        Self {
            owner: lease.owner.clone(),
            attempt: lease.attempt,
        }
    }

    /// `None` when it is not a lease this gateway hands out.
    pub fn parse(s: &str) -> Option<Self> {
        let (attempt, owner) = s.split_once(':')?;
        let attempt = attempt.parse().ok()?;
        owner.starts_with("w/").then(|| Self {
            owner: owner.to_owned(),
            attempt,
        })
    }

    /// Whether it was handed to a worker of `token`.
    pub fn issued_to(&self, token: WorkerTokenId) -> bool {
        self.owner
            .strip_prefix("w/")
            .and_then(|rest| rest.split_once('/'))
            .is_some_and(|(t, _)| t == token.to_string())
    }

    /// As the store fences with it (the expiry plays no part in fencing).
    pub fn to_lease(&self) -> Lease {
        Lease {
            owner: self.owner.clone(),
            attempt: self.attempt,
            expires_at: chrono::Utc::now(),
        }
    }
}

impl std::fmt::Display for WorkerLease {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.attempt, self.owner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_lease_round_trips_and_names_its_token() {
        let token = WorkerTokenId::generate();
        let lease = WorkerLease {
            owner: owner_for(token, "gpu-1"),
            attempt: 2,
        };
        let back = WorkerLease::parse(&lease.to_string()).unwrap();
        assert_eq!(back, lease);
        assert!(back.issued_to(token));
        assert!(!back.issued_to(WorkerTokenId::generate()));
        for bad in ["", "2", "x:w/a/b", "2:dispatcher/1", "-1:w/a/b"] {
            assert!(WorkerLease::parse(bad).is_none(), "{bad}");
        }
    }
}
