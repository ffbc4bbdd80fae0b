//! What a licensee is entitled to across all of its licenses.
//!
//! Only licenses valid at the instant asked about (active or in grace) count. Features
//! are the union of what they grant (plan seen through overrides), each naming the
//! licenses it comes from. Where limits conflict, the most permissive valid license
//! wins, per product: no limit (unlimited) beats any number, otherwise the largest
//! number; a meter's quota is the largest effective quota among the licenses whose
//! plan has that meter. Limits are not summed: two licenses of 3 machines each give
//! 3, because machines are activated on one license at a time.

use std::collections::BTreeMap;

use serde::Serialize;

use crate::license::{License, Standing};
use crate::models::effective;
use crate::state::State;
use crate::timestamp::Timestamp;

#[derive(Debug, Serialize)]
pub struct FeatureGrant<'s> {
    pub product: &'s str,
    pub feature: &'s str,
    /// The first (in id order) of `licenses`.
    pub license: &'s str,
    pub licenses: Vec<&'s str>,
}

#[derive(Debug, Serialize)]
pub struct MeterLimit<'s> {
    pub meter: &'s str,
    pub quota: u64,
    /// The license whose quota this is.
    pub license: &'s str,
}

#[derive(Debug, Serialize)]
pub struct ProductLimits<'s> {
    pub product: &'s str,
    /// `null` is unlimited.
    pub max_machines: Option<u32>,
    /// `null` is unlimited.
    pub max_users: Option<u32>,
    /// Absent when no valid license of the product is floating.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub max_leases: Option<u32>,
    pub meters: Vec<MeterLimit<'s>>,
}

#[derive(Debug, Serialize)]
pub struct Entitlements<'s> {
    pub licensee: &'s str,
    /// The valid licenses counted, in id order.
    pub licenses: Vec<&'s str>,
    pub features: Vec<FeatureGrant<'s>>,
    pub products: Vec<ProductLimits<'s>>,
}

/// The most permissive of two limits where `None` is unlimited.
fn wider(a: Option<u32>, b: Option<u32>) -> Option<u32> {
    a.zip(b).map(|(a, b)| a.max(b))
}

pub fn entitlements<'s>(state: &'s State, licensee: &'s str, now: Timestamp) -> Entitlements<'s> {
    let valid: Vec<&'s License> = state
        .licenses_after(None)
        .map(|l| &**l)
        .filter(|l| l.licensee == licensee)
        .filter(|l| {
            state
                .plan(l.plan.as_str())
                .is_some_and(|p| matches!(l.standing(p, now), Standing::Active | Standing::Grace { .. }))
        })
        .collect();
    let mut features: BTreeMap<(&str, &str), Vec<&str>> = BTreeMap::new();
    let mut products: BTreeMap<&str, ProductLimits<'s>> = BTreeMap::new();
    for l in &valid {
        let Ok(e) = effective(state, l) else { continue };
        let product = l.product.as_str();
        for f in e.features() {
            features.entry((product, f.as_str())).or_default().push(l.id.as_str());
        }
        let p = products.entry(product).or_insert_with(|| ProductLimits {
            product,
            max_machines: Some(0),
            max_users: Some(0),
            max_leases: None,
            meters: Vec::new(),
        });
        p.max_machines = wider(p.max_machines, e.max_machines());
        p.max_users = wider(p.max_users, e.max_users());
        p.max_leases = p.max_leases.max(e.max_leases());
        for spec in &e.plan.meters {
            let quota = e.quota(spec);
            match p.meters.iter_mut().find(|m| m.meter == spec.key.as_str()) {
                Some(m) if m.quota >= quota => {}
                Some(m) => *m = MeterLimit { meter: spec.key.as_str(), quota, license: l.id.as_str() },
                None => p.meters.push(MeterLimit { meter: spec.key.as_str(), quota, license: l.id.as_str() }),
            }
        }
    }
    Entitlements {
        licensee,
        licenses: valid.iter().map(|l| l.id.as_str()).collect(),
        features: features
            .into_iter()
            .map(|((product, feature), licenses)| FeatureGrant { product, feature, license: licenses[0], licenses })
            .collect(),
        products: products.into_values().collect(),
    }
}
