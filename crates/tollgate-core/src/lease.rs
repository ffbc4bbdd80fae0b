//! Floating (concurrent) leases: a plan may let any machine hold one of `max_leases`
//! leases, each alive for `lease_ttl_seconds` after its last checkout or heartbeat.
//!
//! Only leases unexpired at the decision instant count against the limit, so the
//! limit is exact with no window: a lease whose heartbeat stopped frees its slot the
//! moment it expires, whether or not the reaper has recorded `lease_expired` yet.

use std::fmt;
use std::sync::Arc;

use serde::{Deserialize, Deserializer, Serialize};

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

/// A lease's identifier, `lse_` followed by 26 lowercase base-32 characters, drawn at
/// random by the server.
#[derive(Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct LeaseId(Arc<str>);

impl LeaseId {
    pub const PREFIX: &'static str = "lse_";
    const BODY_LEN: usize = 26;
    const ALPHABET: &'static [u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

    pub fn parse(s: &str) -> Result<Self, Refusal> {
        let ok = s
            .strip_prefix(Self::PREFIX)
            .is_some_and(|body| body.len() == Self::BODY_LEN && body.bytes().all(|c| Self::ALPHABET.contains(&c)));
        if ok {
            Ok(Self(Arc::from(s)))
        } else {
            Err(Refusal::not_found("LEASE_NOT_FOUND", "a lease id is 'lse_' followed by 26 characters of 0-9 and a-z"))
        }
    }

    pub fn from_random(bytes: [u8; 16]) -> Self {
        let mut n = u128::from_be_bytes(bytes);
        let mut s = String::with_capacity(Self::PREFIX.len() + Self::BODY_LEN);
        let mut body = [0u8; Self::BODY_LEN];
        for slot in body.iter_mut().rev() {
            *slot = Self::ALPHABET[(n & 31) as usize];
            n >>= 5;
        }
        s.push_str(Self::PREFIX);
        s.extend(body.iter().map(|&c| c as char));
        Self(Arc::from(s))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl fmt::Debug for LeaseId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}", &*self.0)
    }
}

impl std::borrow::Borrow<str> for LeaseId {
    fn borrow(&self) -> &str {
        &self.0
    }
}

impl<'de> Deserialize<'de> for LeaseId {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        Self::parse(&s).map_err(|r| serde::de::Error::custom(r.detail))
    }
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
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
