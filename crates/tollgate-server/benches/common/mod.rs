//! What the server's benches share: the catalog they issue against, the licenses they
//! issue, and the medians they print.

// Each bench uses part of this module; the rest would warn as dead code in that bench.
#![allow(dead_code)]

use std::sync::{Arc, Mutex};

use tollgate_core::catalog::{Feature, PlanSpec, ProductSpec};
use tollgate_core::command::IssueLicense;
use tollgate_core::ids::{FeatureKey, LicenseId, PlanKey, ProductKey};
use tollgate_core::key::LicenseKey;
use tollgate_core::{Command, Meta};

pub fn meta() -> Meta {
    Meta { actor: "bench".into(), reason: None, request_id: "bench".into() }
}

/// Product `app` with 20 features, and plan `std` entitled to all of them: a year, seven
/// days of grace, three machines.
pub fn catalog() -> [Command; 2] {
    let product = ProductSpec {
        key: ProductKey::parse("app").unwrap(),
        name: "App".into(),
        features: (0..20)
            .map(|i| Feature { key: FeatureKey::parse(&format!("f{i}")).unwrap(), name: format!("F{i}") })
            .collect(),
    };
    let plan = PlanSpec {
        key: PlanKey::parse("std").unwrap(),
        product: product.key.clone(),
        name: "Std".into(),
        features: product.features.iter().map(|f| f.key.clone()).collect(),
        duration_days: Some(365),
        trial_days: None,
        grace_days: Some(7),
        max_machines: Some(3),
        max_users: None,
        offline_days: None,
        floating: None,
        meters: vec![],
    };
    [Command::CreateProduct(product), Command::CreatePlan(plan)]
}

/// The `n`th license on plan `std`. Its id starts with `n`, as the server's ids start
/// with their creation time, so ids sort in issue order; its key is random-looking, as
/// the server's keys are.
pub fn issue(n: u64) -> Command {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
    let mut key = [0u8; 15];
    key[..8].copy_from_slice(&(n.wrapping_mul(0xD6E8_FEB8_6659_FD93)).to_be_bytes());
    key[8..15].copy_from_slice(&n.to_be_bytes()[1..]);
    Command::IssueLicense(IssueLicense {
        id: LicenseId::from_random(id),
        key: LicenseKey::from_random(key),
        product: ProductKey::parse("app").unwrap(),
        plan: PlanKey::parse("std").unwrap(),
        licensee: format!("customer-{n}@example.com"),
        expires_at: None,
        metadata: Default::default(),
        external_id: None,
    })
}

/// Per-event seconds of each sample, so a bench can print its own medians and ratios.
pub type Samples = Arc<Mutex<Vec<f64>>>;

/// The median of the samples (NaN when there are none, e.g. a filtered-out bench).
pub fn median(s: &Samples) -> f64 {
    let mut v = s.lock().unwrap_or_else(|p| p.into_inner()).clone();
    v.sort_by(f64::total_cmp);
    v.get(v.len() / 2).copied().unwrap_or(f64::NAN)
}
