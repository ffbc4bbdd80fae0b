//! In-memory validation, the hot path, and the memory one license costs in the fold.
//!
//! A product with 20 features, a plan granting all of them, and 100,000 licenses
//! issued through `decide`/`apply`. Run: `cargo bench -p tollgate-core --bench validate`.
//! Memory is the heap growth while the 100,000 licenses are folded in (bytes
//! allocated minus bytes freed, counted by the global allocator), divided by the
//! count: it includes the persistent maps' nodes and the key index. It is printed
//! before criterion starts, as `projection memory per license: N bytes`. The counter
//! is the `cap` crate's allocator wrapper: writing one here needs `unsafe impl
//! GlobalAlloc`, which the workspace's `forbid(unsafe_code)` does not let a bench allow.
//! It wraps mimalloc, the binary's allocator, so the times are the binary's.
//!
//! Most cases validate one license over and over, so its data stays in the caches;
//! `valid_random_of_100k` takes a different license on every call, as a server
//! validating many customers' keys does, and so pays the cache misses of a state far
//! larger than the caches.

use std::hint::black_box;

use cap::Cap;
use criterion::Criterion;
use tollgate_core::catalog::{Feature, PlanSpec, ProductSpec};
use tollgate_core::command::IssueLicense;
use tollgate_core::ids::{FeatureKey, LicenseId, PlanKey, ProductKey};
use tollgate_core::key::LicenseKey;
use tollgate_core::machine::{Fingerprint, MachineSpec};
use tollgate_core::models::ModelCommand;
use tollgate_core::seat::UserId;
use tollgate_core::validate::{Scope, validate};
use tollgate_core::{Command, Meta, State, Timestamp, decide};

#[global_allocator]
static HEAP: Cap<mimalloc::MiMalloc> = Cap::new(mimalloc::MiMalloc, usize::MAX);

const LICENSES: u64 = 100_000;

/// The key of the `n`th license: spread over the key space, like random draws.
fn key_of(n: u64) -> LicenseKey {
    let mut key = [0u8; 15];
    key[..8].copy_from_slice(&n.wrapping_mul(0xD6E8_FEB8_6659_FD93).to_be_bytes());
    key[8..].copy_from_slice(&n.to_be_bytes()[1..]);
    LicenseKey::from_random(key)
}

/// The state with 100,000 licenses, and the heap bytes each one added.
fn build() -> (State, u64) {
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
        floating: None,
        meters: vec![],
        offline_days: None,
    };
    for cmd in [Command::CreateProduct(product), Command::CreatePlan(plan)] {
        for e in decide(&state, &cmd, &meta, now).unwrap() {
            state.apply(&e).unwrap();
        }
    }
    let before = HEAP.allocated();
    for n in 0..LICENSES {
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&n.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        id[8..].copy_from_slice(&n.to_be_bytes());
        let cmd = Command::IssueLicense(IssueLicense {
            id: LicenseId::from_random(id),
            key: key_of(n),
            product: ProductKey::parse("app").unwrap(),
            plan: PlanKey::parse("all").unwrap(),
            licensee: format!("customer-{n}@example.com"),
            expires_at: None,
            metadata: Default::default(),
            external_id: None,
        });
        for e in decide(&state, &cmd, &meta, now).unwrap() {
            state.apply(&e).unwrap();
        }
    }
    let grown = HEAP.allocated().saturating_sub(before) as u64;
    (state, grown / LICENSES)
}

fn main() {
    let (state, per_license) = build();
    println!(
        "projection memory per license: {per_license} bytes ({LICENSES} licenses; heap allocated minus freed, maps and key index included)"
    );
    let mut c = Criterion::default().configure_from_args();
    bench(&mut c, &state);
    ratios(&state);
    c.final_summary();
}

fn bench(c: &mut Criterion, state: &State) {
    let now = Timestamp::parse("2026-12-01T00:00:00Z").unwrap();
    let key = key_of(LICENSES / 2).to_string();
    let lower = key.to_lowercase().replace('-', "");
    let unknown = LicenseKey::from_random([0xEE; 15]).to_string();
    // Well-formed length and alphabet, wrong check character: the slowest refusal.
    let typo = format!("{}{}", if key.starts_with('A') { 'B' } else { 'A' }, &key[1..]);
    assert_eq!(
        validate(state, &key, Scope { feature: Some("feature-17"), ..Scope::default() }, now).code.as_str(),
        "VALID"
    );
    assert_eq!(validate(state, &unknown, Scope::default(), now).code.as_str(), "NOT_FOUND");
    assert_eq!(validate(state, &typo, Scope::default(), now).code.as_str(), "MALFORMED_KEY");

    let mut g = c.benchmark_group("validate");
    g.bench_function("valid_with_feature_of_20", |b| {
        b.iter(|| {
            validate(
                black_box(state),
                black_box(&key),
                Scope { feature: Some(black_box("feature-17")), ..Scope::default() },
                now,
            )
            .code
        })
    });
    // A different license on every call, spread over the 100,000: the state's maps
    // are far larger than the caches, as in a server validating many customers' keys.
    let spread: Vec<String> =
        (0..8192u64).map(|i| key_of(i.wrapping_mul(0x9E37_79B9_7F4A_7C15) % LICENSES).to_string()).collect();
    let mut next = 0usize;
    g.bench_function("valid_random_of_100k", |b| {
        b.iter(|| {
            next = (next + 1) % spread.len();
            validate(black_box(state), black_box(&spread[next]), Scope::default(), now).code
        })
    });
    g.bench_function("valid_no_feature", |b| {
        b.iter(|| validate(black_box(state), black_box(&key), Scope::default(), now).code)
    });
    g.bench_function("valid_sloppy_spelling", |b| {
        b.iter(|| validate(black_box(state), black_box(&lower), Scope::default(), now).code)
    });
    // Scoped validation (issue 3): the same license with 3 machines and 5 seats; the
    // models record is one hash lookup beside the license.
    let (scoped, scoped_key) = with_machines_and_seats(state.clone(), &key);
    assert_eq!(validate(&scoped, &scoped_key, fingerprint_scope("machine-2"), now).code.as_str(), "VALID");
    assert_eq!(validate(&scoped, &scoped_key, user_scope("user-4@example.com"), now).code.as_str(), "VALID");
    g.bench_function("valid_with_fingerprint", |b| {
        b.iter(|| {
            validate(black_box(&scoped), black_box(&scoped_key), fingerprint_scope(black_box("machine-2")), now).code
        })
    });
    g.bench_function("valid_with_user", |b| {
        b.iter(|| {
            validate(black_box(&scoped), black_box(&scoped_key), user_scope(black_box("user-4@example.com")), now).code
        })
    });
    g.bench_function("not_found", |b| {
        b.iter(|| validate(black_box(state), black_box(&unknown), Scope::default(), now).code)
    });
    g.bench_function("malformed", |b| {
        b.iter(|| validate(black_box(state), black_box("NOT-A-KEY"), Scope::default(), now).code)
    });
    g.bench_function("malformed_check_character", |b| {
        b.iter(|| validate(black_box(state), black_box(&typo), Scope::default(), now).code)
    });
    g.finish();
}

fn fingerprint_scope(f: &str) -> Scope<'_> {
    Scope { fingerprint: Some(f), ..Scope::default() }
}

fn user_scope(u: &str) -> Scope<'_> {
    Scope { user: Some(u), ..Scope::default() }
}

/// The state with 3 machines and 5 users on the license of `key`.
fn with_machines_and_seats(mut state: State, key: &str) -> (State, String) {
    let meta = Meta { actor: "bench".into(), reason: None, request_id: "bench".into() };
    let now = Timestamp::parse("2026-11-24T00:00:00Z").unwrap();
    let id = state.license_by_key(key).unwrap().id.clone();
    let mut commands: Vec<ModelCommand> = (1..=3)
        .map(|i| ModelCommand::ActivateMachine {
            license: id.clone(),
            machine: MachineSpec {
                fingerprint: Fingerprint::parse(&format!("machine-{i}")).unwrap(),
                name: None,
                components: vec![],
            },
        })
        .collect();
    commands.extend((0..5).map(|i| ModelCommand::AssignUser {
        license: id.clone(),
        user: UserId::parse(&format!("user-{i}@example.com")).unwrap(),
    }));
    for c in commands {
        for e in decide(&state, &Command::Models(c), &meta, now).unwrap() {
            state.apply(&e).unwrap();
        }
    }
    (state, key.to_string())
}

/// Median nanoseconds per call of `f` over a few rounds, for the printed ratio.
fn ns_per_call(mut f: impl FnMut() -> tollgate_core::validate::Code) -> f64 {
    const CALLS: u32 = 200_000;
    let mut rounds: Vec<f64> = (0..7)
        .map(|_| {
            let start = std::time::Instant::now();
            for _ in 0..CALLS {
                black_box(f());
            }
            start.elapsed().as_nanos() as f64 / f64::from(CALLS)
        })
        .collect();
    rounds.sort_by(|a, b| a.total_cmp(b));
    rounds[rounds.len() / 2]
}

/// Prints scoped validation against plain validation of the same license, same run.
fn ratios(state: &State) {
    let now = Timestamp::parse("2026-12-01T00:00:00Z").unwrap();
    let (scoped, key) = with_machines_and_seats(state.clone(), key_of(LICENSES / 2).as_str());
    let plain = ns_per_call(|| validate(black_box(&scoped), black_box(&key), Scope::default(), now).code);
    let fp = ns_per_call(|| {
        validate(black_box(&scoped), black_box(&key), fingerprint_scope(black_box("machine-2")), now).code
    });
    let user = ns_per_call(|| {
        validate(black_box(&scoped), black_box(&key), user_scope(black_box("user-4@example.com")), now).code
    });
    println!(
        "scoped validation: plain {plain:.0} ns, fingerprint {fp:.0} ns ({:.2}x), user {user:.0} ns ({:.2}x); goal <= 2x",
        fp / plain,
        user / plain
    );
}
