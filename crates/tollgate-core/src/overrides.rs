//! Per-license overrides of what the plan grants: features added or removed, and
//! limits replaced. Set at issue time or later (`license_overrides_set`, which
//! replaces the whole set); the plan stays shared and untouched.

use std::collections::{BTreeMap, BTreeSet};

use serde::{Deserialize, Serialize};

use crate::catalog::{Plan, Product};
use crate::ids::{FeatureKey, MeterKey};
use crate::meter::MAX_AMOUNT;
use crate::refusal::Refusal;

#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Overrides {
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub features_add: BTreeSet<FeatureKey>,
    #[serde(default, skip_serializing_if = "BTreeSet::is_empty")]
    pub features_remove: BTreeSet<FeatureKey>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_leases: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_machines: Option<u32>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub max_users: Option<u32>,
    /// Replaces the quota of the plan's meter of that key.
    #[serde(default, skip_serializing_if = "BTreeMap::is_empty")]
    pub quotas: BTreeMap<MeterKey, u64>,
}

impl Overrides {
    pub fn is_empty(&self) -> bool {
        *self == Overrides::default()
    }

    pub fn check(&self, product: &Product, plan: &Plan) -> Result<(), Refusal> {
        if let Some(f) =
            self.features_add.iter().chain(&self.features_remove).find(|f| !product.has_feature(f.as_str()))
        {
            return Err(Refusal::unknown_feature(&product.key, f));
        }
        if let Some(f) = self.features_add.intersection(&self.features_remove).next() {
            return Err(Refusal::invalid(format!("feature '{f}' is both added and removed")));
        }
        if let Some((k, _)) = self.quotas.iter().find(|(k, _)| !plan.meters.iter().any(|m| &m.key == *k)) {
            return Err(Refusal::not_found("METER_NOT_FOUND", format!("plan '{}' has no meter '{k}'", plan.key)));
        }
        if self.quotas.values().any(|q| *q > MAX_AMOUNT) {
            return Err(Refusal::invalid(format!("a quota is at most {MAX_AMOUNT}")));
        }
        Ok(())
    }
}

/// What a license is entitled to: its plan seen through its overrides. Cheap to build
/// (two references), allocation-free to ask.
#[derive(Clone, Copy, Debug)]
pub struct Effective<'a> {
    pub plan: &'a Plan,
    pub overrides: Option<&'a Overrides>,
}

impl<'a> Effective<'a> {
    pub fn has_feature(&self, feature: &str) -> bool {
        match self.overrides {
            None => self.plan.features.contains(feature),
            Some(o) => {
                (self.plan.features.contains(feature) || o.features_add.contains(feature))
                    && !o.features_remove.contains(feature)
            }
        }
    }

    /// The features granted, in key order.
    pub fn features(&self) -> impl Iterator<Item = &'a FeatureKey> + 'a {
        let o = self.overrides;
        let added = o.into_iter().flat_map(|o| o.features_add.iter().filter(|f| !self.plan.features.contains(*f)));
        let mut all: Vec<&'a FeatureKey> = self.plan.features.iter().chain(added).collect();
        all.sort();
        all.into_iter().filter(move |f| o.is_none_or(|o| !o.features_remove.contains(*f)))
    }

    pub fn max_machines(&self) -> Option<u32> {
        self.overrides.and_then(|o| o.max_machines).or(self.plan.max_machines)
    }

    pub fn max_users(&self) -> Option<u32> {
        self.overrides.and_then(|o| o.max_users).or(self.plan.max_users)
    }

    /// `None` when the plan is not floating.
    pub fn max_leases(&self) -> Option<u32> {
        let f = self.plan.floating?;
        Some(self.overrides.and_then(|o| o.max_leases).unwrap_or(f.max_leases))
    }

    pub fn quota(&self, meter: &crate::meter::MeterSpec) -> u64 {
        self.overrides.and_then(|o| o.quotas.get(&meter.key).copied()).unwrap_or(meter.quota)
    }
}
