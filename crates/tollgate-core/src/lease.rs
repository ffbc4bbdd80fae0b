//! Floating (concurrent) leases: a plan may let any machine hold one of `max_leases`
//! leases, each alive for `lease_ttl_seconds` after its last checkout or heartbeat.
//!
//! Only leases unexpired at the decision instant count against the limit, so the
//! limit is exact with no window: a lease whose heartbeat stopped frees its slot the
//! moment it expires, whether or not the reaper has recorded `lease_expired` yet.

use serde::{Deserialize, Serialize};

use crate::machine::Fingerprint;
use crate::refusal::Refusal;
use crate::timestamp::Timestamp;

const MAX_LEASES: u32 = 1_000_000;
/// Thirty days: a longer lease is a machine activation.
const MAX_TTL_SECONDS: u32 = 30 * 86_400;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Floating {
    pub lease_ttl_seconds: u32,
    pub max_leases: u32,
}

impl Floating {
    pub fn check(&self) -> Result<(), Refusal> {
        if !(1..=MAX_LEASES).contains(&self.max_leases) {
            return Err(Refusal::invalid(format!("floating.max_leases must be between 1 and {MAX_LEASES}")));
        }
        if !(1..=MAX_TTL_SECONDS).contains(&self.lease_ttl_seconds) {
            return Err(Refusal::invalid(format!(
                "floating.lease_ttl_seconds must be between 1 and {MAX_TTL_SECONDS}"
            )));
        }
        Ok(())
    }

    /// When a lease checked out or heartbeaten at `now` expires.
    pub fn expiry(&self, now: Timestamp) -> Timestamp {
        let ms = now.millis().saturating_add(i64::from(self.lease_ttl_seconds) * 1000);
        Timestamp::from_millis(ms).unwrap_or(now)
    }
}

pub use crate::ids::LeaseId;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Lease {
    pub checked_out_at: Timestamp,
    pub expires_at: Timestamp,
    pub fingerprint: Fingerprint,
    pub id: LeaseId,
}

impl Lease {
    pub fn live(&self, now: Timestamp) -> bool {
        now < self.expires_at
    }
}
