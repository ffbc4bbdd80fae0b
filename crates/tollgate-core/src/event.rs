//! Events: the only way state changes, and the leaves of the ledger.
//!
//! An event is encoded once, canonically (RFC 8785 JSON Canonicalization Scheme), and
//! those exact bytes are the Merkle leaf. Readers never re-encode a stored event: they
//! hash and fold the bytes they were given.

use serde::{Deserialize, Serialize};

use crate::catalog::{Plan, Product};
use crate::ids::{LicenseId, PlanKey};
use crate::license::License;
use crate::timestamp::Timestamp;

/// The envelope's schema version. Bump it, and teach `decode` to upcast, when an
/// event's shape changes; old ledgers must always fold.
pub const EVENT_VERSION: u32 = 1;

/// Who did something, why, and under which request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Meta {
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub request_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Event {
    pub v: u32,
    pub at: Timestamp,
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub request_id: String,
    pub event: EventKind,
}

/// Externally tagged (`{"license_issued": {…}}`) so that decoding never buffers,
/// whatever order the canonical encoding puts the keys in.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum EventKind {
    ProductCreated(Product),
    ProductUpdated(Product),
    PlanCreated(Plan),
    PlanUpdated(Plan),
    LicenseIssued(License),
    LicenseSuspended { license: LicenseId },
    LicenseReinstated { license: LicenseId },
    LicenseRevoked { license: LicenseId },
    LicenseRenewed { license: LicenseId, expires_at: Option<Timestamp> },
    LicensePlanChanged { license: LicenseId, plan: PlanKey, expires_at: Option<Timestamp>, trial: bool },
}

impl EventKind {
    pub fn type_name(&self) -> &'static str {
        match self {
            EventKind::ProductCreated(_) => "product_created",
            EventKind::ProductUpdated(_) => "product_updated",
            EventKind::PlanCreated(_) => "plan_created",
            EventKind::PlanUpdated(_) => "plan_updated",
            EventKind::LicenseIssued(_) => "license_issued",
            EventKind::LicenseSuspended { .. } => "license_suspended",
            EventKind::LicenseReinstated { .. } => "license_reinstated",
            EventKind::LicenseRevoked { .. } => "license_revoked",
            EventKind::LicenseRenewed { .. } => "license_renewed",
            EventKind::LicensePlanChanged { .. } => "license_plan_changed",
        }
    }

    /// The license an event is about, if any.
    pub fn license(&self) -> Option<&LicenseId> {
        match self {
            EventKind::LicenseIssued(l) => Some(&l.id),
            EventKind::LicenseSuspended { license }
            | EventKind::LicenseReinstated { license }
            | EventKind::LicenseRevoked { license }
            | EventKind::LicenseRenewed { license, .. }
            | EventKind::LicensePlanChanged { license, .. } => Some(license),
            _ => None,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum CodecError {
    #[error("event is not canonical JSON of a known shape: {0}")]
    Shape(#[from] serde_json::Error),
    #[error("event schema version {0} is newer than this build understands ({EVENT_VERSION})")]
    Version(u32),
    #[error("canonical encoding failed: {0}")]
    Encode(String),
}

impl Event {
    pub fn new(at: Timestamp, meta: Meta, event: EventKind) -> Self {
        let Meta { actor, reason, request_id } = meta;
        Self { v: EVENT_VERSION, at, actor, reason, request_id, event }
    }

    /// The exact bytes that become the ledger leaf.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        crate::canonical::to_vec(self).map_err(|e| CodecError::Encode(e.to_string()))
    }

    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        let event: Event = serde_json::from_slice(bytes)?;
        if event.v > EVENT_VERSION {
            return Err(CodecError::Version(event.v));
        }
        Ok(event)
    }
}
