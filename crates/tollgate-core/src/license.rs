//! Licenses and their lifecycle.
//!
//! The stored status only records what an operator did (active, suspended, revoked).
//! Expiry is never stored: it is computed against the instant a question is asked, so
//! there is no window in which an expired license still validates while a sweeper lags.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::catalog::Plan;
use crate::ids::{LicenseId, PlanKey, ProductKey};
use crate::key::LicenseKey;
use crate::timestamp::Timestamp;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    Active,
    Suspended,
    Revoked,
}

/// Where a license stands at a given instant.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Standing {
    Active,
    /// Past `expires_at` but within the plan's grace days: still valid.
    Grace {
        ends_at: Timestamp,
    },
    Expired,
    Suspended,
    Revoked,
}

impl Standing {
    pub fn as_str(self) -> &'static str {
        match self {
            Standing::Active | Standing::Grace { .. } => "active",
            Standing::Expired => "expired",
            Standing::Suspended => "suspended",
            Standing::Revoked => "revoked",
        }
    }
}

pub type Metadata = BTreeMap<String, serde_json::Value>;

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct License {
    pub expires_at: Option<Timestamp>,
    /// The license's id in the vendor's other systems (CRM, a previous license server),
    /// unique among licenses; set on import or at issue.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub external_id: Option<String>,
    pub id: LicenseId,
    pub issued_at: Timestamp,
    pub key: LicenseKey,
    pub licensee: String,
    #[serde(default, skip_serializing_if = "Metadata::is_empty")]
    pub metadata: Metadata,
    pub plan: PlanKey,
    pub product: ProductKey,
    pub status: Status,
    /// True while the license runs on its plan's trial period.
    pub trial: bool,
    pub updated_at: Timestamp,
    /// Number of events that changed this license.
    pub version: u64,
}

impl License {
    /// The end of the grace window, when the license expires at all.
    pub fn grace_ends_at(&self, plan: &Plan) -> Option<Timestamp> {
        self.expires_at.map(|e| e.plus_days(plan.grace_days()))
    }

    pub fn standing(&self, plan: &Plan, now: Timestamp) -> Standing {
        match self.status {
            Status::Revoked => Standing::Revoked,
            Status::Suspended => Standing::Suspended,
            Status::Active => match self.expires_at {
                Some(expires) if now >= expires => match self.grace_ends_at(plan) {
                    Some(ends_at) if now < ends_at => Standing::Grace { ends_at },
                    _ => Standing::Expired,
                },
                _ => Standing::Active,
            },
        }
    }
}
