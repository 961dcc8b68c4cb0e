//! Identifiers: time-ordered UUIDv7 job ids and key ids, parsed once at the boundary.

use std::{fmt, str::FromStr};

use serde::{Deserialize, Serialize};
use uuid::Uuid;

macro_rules! uuid_id {
    ($(#[$doc:meta])* $name:ident) => {
        $(#[$doc])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(transparent)]
        pub struct $name(Uuid);

        impl $name {
            /// A new id, ordered by creation time.
            pub fn generate() -> Self {
                Self(Uuid::now_v7())
            }

            pub fn as_uuid(&self) -> Uuid {
                self.0
            }
        }

        impl From<Uuid> for $name {
            fn from(u: Uuid) -> Self {
                Self(u)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                self.0.hyphenated().fmt(f)
            }
        }

        impl FromStr for $name {
            type Err = uuid::Error;
            fn from_str(s: &str) -> Result<Self, Self::Err> {
                Uuid::parse_str(s).map(Self)
            }
        }
    };
}

uuid_id!(
    /// The id of a job; it is also the `request_id` both surfaces show.
    JobId
);
uuid_id!(
    /// The id of an access key (never the key itself).
    KeyId
);
uuid_id!(
    /// The id of a worker token (never the token itself).
    WorkerTokenId
);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_round_trip_and_order_by_time() {
        let a = JobId::generate();
        let b = JobId::generate();
        assert!(a < b);
        assert_eq!(a.to_string().parse::<JobId>().unwrap(), a);
        assert!("not-a-uuid".parse::<JobId>().is_err());
    }
}
