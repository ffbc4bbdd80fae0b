//! In-memory validation, the hot path, and the memory one license costs in the fold.
//!
//! A product with 20 features, a plan granting all of them, and 100,000 licenses
//! issued through `decide`/`apply`. Run: `cargo bench -p tollgate-core --bench validate`.
//! Memory is the growth of the process's resident set while the 100,000 licenses are
//! folded in (Linux `/proc/self/statm`), divided by the count: it includes the
//! persistent maps' nodes and the key index. (A counting allocator would need unsafe
//! code, which the workspace forbids.)

use std::hint::black_box;

use criterion::{Criterion, criterion_group, criterion_main};
use tollgate_core::catalog::{Feature, PlanSpec, ProductSpec};
use tollgate_core::command::IssueLicense;
use tollgate_core::ids::{FeatureKey, LicenseId, PlanKey, ProductKey};
use tollgate_core::key::LicenseKey;
use tollgate_core::validate::{Scope, validate};
use tollgate_core::{Command, Meta, State, Timestamp, decide};

const LICENSES: u64 = 100_000;

fn resident_bytes() -> Option<u64> {
    let statm = std::fs::read_to_string("/proc/self/statm").ok()?;
    let pages: u64 = statm.split_whitespace().nth(1)?.parse().ok()?;
    Some(pages * 4096)
}

fn build() -> (State, Vec<String>, Option<u64>) {
    let meta = Meta { actor: "bench".into(), reason: None, request_id: "bench".into() };
    let now = Timestamp::parse("2026-11-23T00:00:00Z").unwrap();
    let mut state = State::default();
    let product = ProductSpec {
        key: ProductKey::parse("app").unwrap(),
        name: "App".into(),
        features: (0..20)
            .map(|i| Feature { key: FeatureKey::parse(&format!("feature-{i}")).unwrap(), name: format!("Feature {i}") })
            .collect(),
    };
    let plan = PlanSpec {
        key: PlanKey::parse("all").unwrap(),
        product: product.key.clone(),
        name: "All".into(),
        features: product.features.iter().map(|f| f.key.clone()).collect(),
        duration_days: Some(365),
        trial_days: None,
        grace_days: Some(14),
        max_machines: Some(3),
        max_users: Some(5),
    };
    for cmd in [Command::CreateProduct(product), Command::CreatePlan(plan)] {
        for e in decide(&state, &cmd, &meta, now).unwrap() {
            state.apply(&e).unwrap();
        }
    }
    let before = resident_bytes();
    let mut keys = Vec::new();
    for n in 0..LICENSES {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
        let mut key = [0u8; 15];
        key[..8].copy_from_slice(&n.wrapping_mul(0xD6E8_FEB8_6659_FD93).to_be_bytes());
        key[8..].copy_from_slice(&n.to_be_bytes()[1..]);
        let key = LicenseKey::from_random(key);
        if n % 1000 == 0 {
            keys.push(key.to_string());
        }
        let cmd = Command::IssueLicense(IssueLicense {
            id: LicenseId::from_random(id),
            key,
            product: ProductKey::parse("app").unwrap(),
            plan: PlanKey::parse("all").unwrap(),
            licensee: format!("customer-{n}@example.com"),
            expires_at: None,
            metadata: Default::default(),
        });
        for e in decide(&state, &cmd, &meta, now).unwrap() {
            state.apply(&e).unwrap();
        }
    }
    let per_license = before.zip(resident_bytes()).map(|(b, a)| a.saturating_sub(b) / LICENSES);
    (state, keys, per_license)
}

fn bench(c: &mut Criterion) {
    let (state, keys, per_license) = build();
    match per_license {
        Some(b) => println!("projection memory per license: {b} bytes ({LICENSES} licenses, resident-set growth)"),
        None => println!("projection memory per license: not measured (no /proc/self/statm)"),
    }
    let now = Timestamp::parse("2026-12-01T00:00:00Z").unwrap();
    let key = keys[keys.len() / 2].clone();
    let lower = key.to_lowercase().replace('-', "");
    let unknown = LicenseKey::from_random([0xEE; 15]).to_string();
    assert_eq!(
        validate(&state, &key, Scope { feature: Some("feature-17"), product: None }, now).code.as_str(),
        "VALID"
    );
    assert_eq!(validate(&state, &unknown, Scope::default(), now).code.as_str(), "NOT_FOUND");

    let mut g = c.benchmark_group("validate");
    g.bench_function("valid_with_feature_of_20", |b| {
        b.iter(|| {
            validate(
                black_box(&state),
                black_box(&key),
                Scope { feature: Some(black_box("feature-17")), product: None },
                now,
            )
            .code
        })
    });
    g.bench_function("valid_no_feature", |b| {
        b.iter(|| validate(black_box(&state), black_box(&key), Scope::default(), now).code)
    });
    g.bench_function("valid_sloppy_spelling", |b| {
        b.iter(|| validate(black_box(&state), black_box(&lower), Scope::default(), now).code)
    });
    g.bench_function("not_found", |b| {
        b.iter(|| validate(black_box(&state), black_box(&unknown), Scope::default(), now).code)
    });
    g.bench_function("malformed", |b| {
        b.iter(|| validate(black_box(&state), black_box("NOT-A-KEY"), Scope::default(), now).code)
    });
    g.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
