//! The catalog as data: products with their features, and plans (tiers, SKUs) that
//! grant a set of a product's features under limits.

use std::collections::BTreeSet;

use serde::{Deserialize, Serialize};

use crate::ids::{FeatureKey, PlanKey, ProductKey};
use crate::lease::Floating;
use crate::meter::{MeterSpec, check_meters};
use crate::refusal::Refusal;
use crate::timestamp::Timestamp;

/// The longest period a plan may name, in days (a century).
pub const MAX_DAYS: u32 = 36_500;
const MAX_NAME: usize = 200;
const MAX_FEATURES: usize = 1_000;

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Feature {
    pub key: FeatureKey,
    pub name: String,
}

/// What a caller asks for when creating or updating a product.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ProductSpec {
    pub key: ProductKey,
    pub name: String,
    #[serde(default)]
    pub features: Vec<Feature>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Product {
    pub created_at: Timestamp,
    pub features: Vec<Feature>,
    pub key: ProductKey,
    pub name: String,
    pub updated_at: Timestamp,
    /// 1 on creation, +1 on every update.
    pub version: u64,
}

impl Product {
    pub fn has_feature(&self, key: &str) -> bool {
        self.features.iter().any(|f| f.key.as_str() == key)
    }
}

/// What a caller asks for when creating or updating a plan.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PlanSpec {
    pub key: PlanKey,
    pub product: ProductKey,
    pub name: String,
    #[serde(default)]
    pub features: BTreeSet<FeatureKey>,
    /// Length of a paid period; `None` is perpetual.
    #[serde(default)]
    pub duration_days: Option<u32>,
    /// A license issued on a plan with a trial starts as a trial of this length.
    #[serde(default)]
    pub trial_days: Option<u32>,
    /// Days after expiry during which validation still succeeds, with `GRACE_PERIOD`.
    #[serde(default)]
    pub grace_days: Option<u32>,
    /// How long an offline token (bound to a machine fingerprint) lasts; `None`: no
    /// offline tokens on this plan.
    #[serde(default)]
    pub offline_days: Option<u32>,
    #[serde(default)]
    pub max_machines: Option<u32>,
    #[serde(default)]
    pub max_users: Option<u32>,
    /// Concurrent leases: `{"max_leases","lease_ttl_seconds"}`.
    #[serde(default)]
    pub floating: Option<Floating>,
    /// Metered usage: `{"key","quota","period","overage"}` each.
    #[serde(default)]
    pub meters: Vec<MeterSpec>,
}

#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Plan {
    pub created_at: Timestamp,
    pub duration_days: Option<u32>,
    pub features: BTreeSet<FeatureKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub floating: Option<Floating>,
    pub grace_days: Option<u32>,
    pub key: PlanKey,
    pub max_machines: Option<u32>,
    pub max_users: Option<u32>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub meters: Vec<MeterSpec>,
    pub name: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub offline_days: Option<u32>,
    pub product: ProductKey,
    pub trial_days: Option<u32>,
    pub updated_at: Timestamp,
    pub version: u64,
}

impl Plan {
    pub fn grace_days(&self) -> u32 {
        self.grace_days.unwrap_or(0)
    }
}

fn check_name(what: &str, name: &str) -> Result<(), Refusal> {
    if name.trim().is_empty() || name.chars().count() > MAX_NAME {
        return Err(Refusal::invalid(format!("{what} name must be 1 to {MAX_NAME} characters and not blank")));
    }
    Ok(())
}

fn check_days(field: &str, days: Option<u32>, min: u32) -> Result<(), Refusal> {
    match days {
        Some(d) if d < min || d > MAX_DAYS => {
            Err(Refusal::invalid(format!("{field} must be between {min} and {MAX_DAYS}, got {d}")))
        }
        _ => Ok(()),
    }
}

impl ProductSpec {
    pub fn check(&self) -> Result<(), Refusal> {
        check_name("product", &self.name)?;
        if self.features.len() > MAX_FEATURES {
            return Err(Refusal::invalid(format!("a product has at most {MAX_FEATURES} features")));
        }
        let mut seen = BTreeSet::new();
        for f in &self.features {
            check_name("feature", &f.name)?;
            if !seen.insert(&f.key) {
                return Err(Refusal::invalid(format!("feature '{}' is listed twice", f.key)));
            }
        }
        Ok(())
    }
}

impl PlanSpec {
    /// Checks the plan on its own and against its product.
    pub fn check(&self, product: &Product) -> Result<(), Refusal> {
        check_name("plan", &self.name)?;
        check_days("duration_days", self.duration_days, 1)?;
        check_days("trial_days", self.trial_days, 1)?;
        check_days("grace_days", self.grace_days, 0)?;
        check_days("offline_days", self.offline_days, 1)?;
        if let Some(missing) = self.features.iter().find(|f| !product.has_feature(f.as_str())) {
            return Err(Refusal::unknown_feature(&self.product, missing));
        }
        if let Some(f) = &self.floating {
            f.check()?;
        }
        check_meters(&self.meters)?;
        Ok(())
    }
}
