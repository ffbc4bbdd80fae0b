//! Events: the only way state changes, and the leaves of the ledger.
//!
//! An event is encoded once, canonically (RFC 8785 JSON Canonicalization Scheme), and
//! those exact bytes are the Merkle leaf. Readers never re-encode a stored event: they
//! hash and fold the bytes they were given.

use std::sync::Arc;

use serde::{Deserialize, Serialize};

use crate::catalog::{Plan, Product};
use crate::gate::{GateKey, GateSpec, Segment};
use crate::ids::{LicenseId, MeterKey, PlanKey};
use crate::lease::{Lease, LeaseId};
use crate::license::License;
use crate::machine::{Fingerprint, Machine};
use crate::overrides::Overrides;
use crate::seat::UserId;
use crate::timestamp::Timestamp;

/// The envelope's schema version. Bump it, and teach `decode` to upcast, when an
/// event's shape changes; old ledgers must always fold.
///
/// Events, and the state types they carry and snapshots store, refuse fields they do
/// not know (`deny_unknown_fields`), so that a build older than the event (a rolling
/// upgrade, a binary rolled back) refuses it, saying so, instead of folding it without
/// the field and serving a state the newer nodes do not have. Gate strategies,
/// constraints and variants are Unleash's types and keep Unleash's leniency.
pub const EVENT_VERSION: u32 = 1;

/// Who did something, why, and under which request.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Meta {
    pub actor: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub request_id: String,
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Event {
    pub actor: String,
    pub at: Timestamp,
    pub event: EventKind,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    pub request_id: String,
    pub v: u32,
}

/// Externally tagged (`{"license_issued": {…}}`) so that decoding never buffers,
/// whatever order the canonical encoding puts the keys in.
///
/// RULE: every struct reachable from an event (variant fields, `License`, `Plan`,
/// `Product`, …) declares its fields in sorted (serialized-name) order and uses no
/// floats or `HashMap`s; `Event::encode` relies on it and debug builds check it.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case", deny_unknown_fields)]
pub enum EventKind {
    ProductCreated(Product),
    ProductUpdated(Product),
    PlanCreated(Plan),
    PlanUpdated(Plan),
    /// Shared, so that folding the event into a state (which keeps licenses behind
    /// `Arc`) neither copies nor moves the license, and the event stays small to move.
    LicenseIssued(Arc<License>),
    LicenseSuspended {
        license: LicenseId,
    },
    LicenseReinstated {
        license: LicenseId,
    },
    LicenseRevoked {
        license: LicenseId,
    },
    LicenseRenewed {
        expires_at: Option<Timestamp>,
        license: LicenseId,
    },
    LicensePlanChanged {
        expires_at: Option<Timestamp>,
        license: LicenseId,
        plan: PlanKey,
        trial: bool,
    },
    MachineActivated {
        license: LicenseId,
        machine: Machine,
    },
    MachineDeactivated {
        fingerprint: Fingerprint,
        license: LicenseId,
    },
    UserAssigned {
        license: LicenseId,
        user: UserId,
    },
    UserUnassigned {
        license: LicenseId,
        user: UserId,
    },
    LeaseCheckedOut {
        lease: Lease,
        license: LicenseId,
    },
    /// A heartbeat, or a checkout by a fingerprint that already held a lease.
    LeaseRenewed {
        expires_at: Timestamp,
        lease: LeaseId,
        license: LicenseId,
    },
    LeaseReleased {
        lease: LeaseId,
        license: LicenseId,
    },
    /// Recorded by the reaper once a lease's heartbeat stopped; its slot was free from
    /// the lease's `expires_at` on, whatever this event's time.
    LeaseExpired {
        lease: LeaseId,
        license: LicenseId,
    },
    UsageRecorded {
        license: LicenseId,
        meter: MeterKey,
        quantity: u64,
    },
    LicenseOverridesSet {
        license: LicenseId,
        overrides: Overrides,
    },
    SigningKeyCreated {
        kid: String,
        public_key: String,
    },
    SigningKeyRetired {
        keep_until: Timestamp,
        kid: String,
    },
    LicenseTokenRevoked {
        fingerprint: Option<String>,
        jti: String,
        license: LicenseId,
    },
    /// A gate's new version (put or import), carrying its whole definition.
    GatePublished {
        gate: GateSpec,
        #[serde(default, skip_serializing_if = "std::ops::Not::not")]
        imported: bool,
        version: u64,
    },
    /// A gate's new version whose definition is version `to`'s again.
    GateRolledBack {
        gate: GateSpec,
        to: u64,
        version: u64,
    },
    /// A gate's new version: the previous definition with `enabled: false`.
    GateKilled {
        key: GateKey,
        version: u64,
    },
    GateSegmentPublished {
        segment: Segment,
    },
}

impl EventKind {
    /// Every `type_name`, for callers that check a name before looking for it (keep in
    /// step with `type_name`; a test checks every name it returns is here).
    pub const TYPE_NAMES: &'static [&'static str] = &[
        "product_created",
        "product_updated",
        "plan_created",
        "plan_updated",
        "license_issued",
        "license_suspended",
        "license_reinstated",
        "license_revoked",
        "license_renewed",
        "license_plan_changed",
        "machine_activated",
        "machine_deactivated",
        "user_assigned",
        "user_unassigned",
        "lease_checked_out",
        "lease_renewed",
        "lease_released",
        "lease_expired",
        "usage_recorded",
        "license_overrides_set",
        "signing_key_created",
        "signing_key_retired",
        "license_token_revoked",
        "gate_published",
        "gate_rolled_back",
        "gate_killed",
        "gate_segment_published",
    ];

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
            EventKind::MachineActivated { .. } => "machine_activated",
            EventKind::MachineDeactivated { .. } => "machine_deactivated",
            EventKind::UserAssigned { .. } => "user_assigned",
            EventKind::UserUnassigned { .. } => "user_unassigned",
            EventKind::LeaseCheckedOut { .. } => "lease_checked_out",
            EventKind::LeaseRenewed { .. } => "lease_renewed",
            EventKind::LeaseReleased { .. } => "lease_released",
            EventKind::LeaseExpired { .. } => "lease_expired",
            EventKind::UsageRecorded { .. } => "usage_recorded",
            EventKind::LicenseOverridesSet { .. } => "license_overrides_set",
            EventKind::SigningKeyCreated { .. } => "signing_key_created",
            EventKind::SigningKeyRetired { .. } => "signing_key_retired",
            EventKind::LicenseTokenRevoked { .. } => "license_token_revoked",
            EventKind::GatePublished { .. } => "gate_published",
            EventKind::GateRolledBack { .. } => "gate_rolled_back",
            EventKind::GateKilled { .. } => "gate_killed",
            EventKind::GateSegmentPublished { .. } => "gate_segment_published",
        }
    }

    /// Gate definitions hold vendor text in maps (strategy parameters) whose key order
    /// under RFC 8785 (UTF-16) can differ from serde's (UTF-8), so their events always
    /// take the full canonical path; they are rare, so the cost does not matter.
    pub fn is_gate(&self) -> bool {
        matches!(
            self,
            EventKind::GatePublished { .. }
                | EventKind::GateRolledBack { .. }
                | EventKind::GateKilled { .. }
                | EventKind::GateSegmentPublished { .. }
        )
    }

    /// The license an event is about, if any.
    pub fn license(&self) -> Option<&LicenseId> {
        match self {
            EventKind::LicenseIssued(l) => Some(&l.id),
            EventKind::LicenseSuspended { license }
            | EventKind::LicenseReinstated { license }
            | EventKind::LicenseRevoked { license }
            | EventKind::LicenseRenewed { license, .. }
            | EventKind::LicensePlanChanged { license, .. }
            | EventKind::MachineActivated { license, .. }
            | EventKind::MachineDeactivated { license, .. }
            | EventKind::UserAssigned { license, .. }
            | EventKind::UserUnassigned { license, .. }
            | EventKind::LeaseCheckedOut { license, .. }
            | EventKind::LeaseRenewed { license, .. }
            | EventKind::LeaseReleased { license, .. }
            | EventKind::LeaseExpired { license, .. }
            | EventKind::UsageRecorded { license, .. }
            | EventKind::LicenseOverridesSet { license, .. }
            | EventKind::LicenseTokenRevoked { license, .. } => Some(license),
            _ => None,
        }
    }
}

/// Upcasts from schema version N to N+1, applied in order to the JSON of an older
/// event. Version 1 is the first, so there is nothing to upcast yet; a change to an
/// event's shape bumps `EVENT_VERSION` and adds its step here, and the fixture ledger
/// in `tests/fixtures` proves that ledgers written before still fold.
type Upcast = fn(&mut serde_json::Value);
const UPCASTS: &[(u32, Upcast)] = &[];

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

    /// The exact bytes that become the ledger leaf: RFC 8785 canonical JSON.
    ///
    /// Fast path: every struct in an event declares its fields in sorted order and
    /// holds no floats, so plain serde_json output already is canonical. Free-form
    /// metadata may not be (non-ASCII keys, floats), so it takes the full path. Debug
    /// builds (every test) check the fast path against the full one, so a field added
    /// out of order fails loudly instead of forking the ledger's encoding.
    pub fn encode(&self) -> Result<Vec<u8>, CodecError> {
        let full = || crate::canonical::to_vec(self).map_err(|e| CodecError::Encode(e.to_string()));
        if matches!(&self.event, EventKind::LicenseIssued(l) if !l.metadata.is_empty()) || self.event.is_gate() {
            return full();
        }
        // Most events are a few hundred bytes: one allocation instead of doubling from
        // empty (the reallocations showed in the decider's profile).
        let mut fast = Vec::with_capacity(512);
        serde_json::to_writer(&mut fast, self).map_err(|e| CodecError::Encode(e.to_string()))?;
        #[cfg(debug_assertions)]
        {
            let slow = full()?;
            assert!(
                fast == slow,
                "event fields are not declared in sorted order, so the fast encoding is not canonical:\n fast: {}\n full: {}",
                String::from_utf8_lossy(&fast),
                String::from_utf8_lossy(&slow)
            );
        }
        Ok(fast)
    }

    /// Reads a stored event. Current events decode directly; an event written under
    /// an older schema version is first upcast, step by step, to the current shape. A
    /// newer version than this build knows is refused, never guessed at.
    pub fn decode(bytes: &[u8]) -> Result<Self, CodecError> {
        // Checking UTF-8 once over the whole event is cheaper than serde_json checking
        // each string on its own (a tenth of decoding); invalid UTF-8 takes the byte
        // path, which refuses it with the same error as before.
        let direct = match std::str::from_utf8(bytes) {
            Ok(text) => serde_json::from_str::<Event>(text),
            Err(_) => serde_json::from_slice::<Event>(bytes),
        };
        match direct {
            Ok(event) if event.v == EVENT_VERSION => Ok(event),
            Ok(event) if event.v > EVENT_VERSION => Err(CodecError::Version(event.v)),
            // An older version, or a shape that only an upcast can read.
            direct => {
                let mut value: serde_json::Value = serde_json::from_slice(bytes)?;
                let v = value.get("v").and_then(|v| v.as_u64()).and_then(|v| u32::try_from(v).ok()).unwrap_or(0);
                if v > EVENT_VERSION {
                    return Err(CodecError::Version(v));
                }
                if v == EVENT_VERSION {
                    // Current version but not a known shape: report the original error.
                    return direct.map_err(CodecError::from);
                }
                for (from, step) in UPCASTS {
                    if value.get("v").and_then(|v| v.as_u64()) == Some(u64::from(*from)) {
                        step(&mut value);
                        value["v"] = serde_json::Value::from(from + 1);
                    }
                }
                Ok(serde_json::from_value(value)?)
            }
        }
    }
}
