//! The core half of start-up replay: decoding stored events and folding them.
//!
//! 100,000 events shaped like a real ledger: a product with 20 features, two plans,
//! licenses issued through `decide` with time-ordered ids and random-looking keys (as
//! the server draws them), a licensee, an API-token actor and a request id, at instants
//! a few milliseconds apart, and every 25th license followed by a lifecycle event
//! (suspend, reinstate, renew, plan change).
//! The events are encoded once; then each group measures one pass over all of them:
//!
//! - `replay/encode`: `Event::encode` of each event, the writer's canonical encoding;
//! - `replay/decode`: `Event::decode` of each stored event;
//! - `replay/apply`: `State::apply` of each decoded event into an empty state;
//! - `replay/decode_apply_hash`: leaf hash, decode and apply, as start-up does it on
//!   one thread (the server splits hashing and decoding onto a second thread);
//! - `replay/decode_apply_owned_hash`: the same folding with `State::apply_owned`.
//!
//! Criterion reports the throughput; the median events/s of each group is printed at
//! the end as well. Run: `cargo bench -p tollgate-core --bench replay`. The global
//! allocator is mimalloc, as in the server binary, because allocation is a large share
//! of decoding and the system allocator would measure something else.

use std::hint::black_box;
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use mimalloc::MiMalloc;
use tollgate_core::catalog::{Feature, PlanSpec, ProductSpec};
use tollgate_core::command::IssueLicense;
use tollgate_core::ids::{FeatureKey, LicenseId, PlanKey, ProductKey};
use tollgate_core::key::LicenseKey;
use tollgate_core::merkle::leaf_hash;
use tollgate_core::{Command, Event, Meta, State, Timestamp, decide};

#[global_allocator]
static GLOBAL: MiMalloc = MiMalloc;

const EVENTS: usize = 100_000;

fn meta(n: u64) -> Meta {
    Meta {
        actor: "token:tok_7qk2m9x4".into(),
        reason: None,
        request_id: format!("req_{:016x}", n.wrapping_mul(0x9E37_79B9_7F4A_7C15)),
    }
}

fn plan_spec(key: &str, product: &ProductSpec, trial_days: Option<u32>) -> PlanSpec {
    PlanSpec {
        key: PlanKey::parse(key).unwrap(),
        product: product.key.clone(),
        name: key.to_uppercase(),
        features: product.features.iter().map(|f| f.key.clone()).collect(),
        duration_days: Some(365),
        trial_days,
        grace_days: Some(7),
        max_machines: Some(3),
        max_users: None,
        offline_days: None,
        floating: None,
        meters: vec![],
    }
}

/// The encoded events of a realistic ledger, in order.
fn ledger() -> Vec<Vec<u8>> {
    let start = Timestamp::parse("2026-11-23T09:00:00Z").unwrap().millis();
    let mut state = State::default();
    let mut out = Vec::with_capacity(EVENTS);
    let mut n = 0u64;
    let mut run = |state: &mut State, out: &mut Vec<Vec<u8>>, cmd: Command| {
        n += 1;
        // A few milliseconds apart, so timestamps carry fractions like real ones.
        let now = Timestamp::from_millis(start + (n * 37) as i64).unwrap();
        for e in decide(state, &cmd, &meta(n), now).unwrap() {
            state.apply(&e).unwrap();
            out.push(e.encode().unwrap());
        }
    };
    let product = ProductSpec {
        key: ProductKey::parse("acme-cad").unwrap(),
        name: "Acme CAD".into(),
        features: (0..20)
            .map(|i| Feature { key: FeatureKey::parse(&format!("feature-{i}")).unwrap(), name: format!("Feature {i}") })
            .collect(),
    };
    let pro = plan_spec("cad-pro-annual", &product, None);
    let trial = plan_spec("cad-trial", &product, Some(14));
    run(&mut state, &mut out, Command::CreateProduct(product));
    run(&mut state, &mut out, Command::CreatePlan(pro.clone()));
    run(&mut state, &mut out, Command::CreatePlan(trial.clone()));
    let mut i = 0u64;
    while out.len() < EVENTS {
        // Ids as the server draws them: creation time first, then random bytes.
        let mut random = [0u8; 10];
        random[..8].copy_from_slice(&i.wrapping_mul(0x9E37_79B9_7F4A_7C15).to_be_bytes());
        random[8..].copy_from_slice(&i.to_be_bytes()[6..]);
        let mut key = [0u8; 15];
        key[..8].copy_from_slice(&i.wrapping_mul(0xD6E8_FEB8_6659_FD93).to_be_bytes());
        key[8..].copy_from_slice(&i.to_be_bytes()[1..]);
        let id = LicenseId::from_time_and_random((start + (i * 37) as i64) as u64, random);
        let cmd = Command::IssueLicense(IssueLicense {
            id: id.clone(),
            key: LicenseKey::from_random(key),
            product: ProductKey::parse("acme-cad").unwrap(),
            plan: if i.is_multiple_of(10) { trial.key.clone() } else { pro.key.clone() },
            licensee: format!("Customer {i} GmbH <licensing-{i}@example.com>"),
            expires_at: None,
            metadata: Default::default(),
            external_id: None,
        });
        run(&mut state, &mut out, cmd);
        if i.is_multiple_of(25) && out.len() < EVENTS {
            let cmd = match (i / 25) % 4 {
                0 => Command::Suspend(id),
                1 => Command::Renew(id),
                2 => Command::ChangePlan {
                    license: id,
                    plan: if i.is_multiple_of(10) { pro.key.clone() } else { trial.key.clone() },
                },
                _ => Command::Revoke(id),
            };
            run(&mut state, &mut out, cmd);
        }
        i += 1;
    }
    out.truncate(EVENTS);
    out
}

/// Times `pass` (one pass over every event) and records seconds per event.
fn timed(samples: &mut Vec<f64>, iters: u64, mut pass: impl FnMut() -> Duration) -> Duration {
    let mut total = Duration::ZERO;
    for _ in 0..iters {
        let d = pass();
        samples.push(d.as_secs_f64() / EVENTS as f64);
        total += d;
    }
    total
}

fn median(s: &mut [f64]) -> f64 {
    s.sort_by(f64::total_cmp);
    s[s.len() / 2]
}

fn main() {
    let encoded = ledger();
    let decoded: Vec<Event> = encoded.iter().map(|b| Event::decode(b).unwrap()).collect();
    let issued = decoded.iter().filter(|e| e.event.type_name() == "license_issued").count();
    let bytes: usize = encoded.iter().map(Vec::len).sum();
    println!("{EVENTS} events, {issued} license_issued, {} bytes per event on average", bytes / EVENTS);

    let mut c = Criterion::default().sample_size(10).configure_from_args();
    let (mut dec, mut app, mut all, mut owned) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
    let mut enc = Vec::new();
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("encode", |b| {
        b.iter_custom(|iters| {
            timed(&mut enc, iters, || {
                let t = Instant::now();
                for e in &decoded {
                    black_box(black_box(e).encode().unwrap());
                }
                t.elapsed()
            })
        })
    });
    g.bench_function("decode", |b| {
        b.iter_custom(|iters| {
            timed(&mut dec, iters, || {
                let t = Instant::now();
                for bytes in &encoded {
                    black_box(Event::decode(black_box(bytes)).unwrap());
                }
                t.elapsed()
            })
        })
    });
    g.bench_function("apply", |b| {
        b.iter_custom(|iters| {
            timed(&mut app, iters, || {
                let mut state = State::default();
                let t = Instant::now();
                for e in &decoded {
                    state.apply(black_box(e)).unwrap();
                }
                let d = t.elapsed();
                // Dropping 100,000 licenses is not part of replay.
                drop(black_box(state));
                d
            })
        })
    });
    g.bench_function("decode_apply_hash", |b| {
        b.iter_custom(|iters| {
            timed(&mut all, iters, || {
                let mut state = State::default();
                let t = Instant::now();
                for bytes in &encoded {
                    black_box(leaf_hash(black_box(bytes)));
                    let e = Event::decode(bytes).unwrap();
                    state.apply(&e).unwrap();
                }
                let d = t.elapsed();
                drop(black_box(state));
                d
            })
        })
    });
    // The same with `State::apply_owned`, which moves an issued license into the state.
    g.bench_function("decode_apply_owned_hash", |b| {
        b.iter_custom(|iters| {
            timed(&mut owned, iters, || {
                let mut state = State::default();
                let t = Instant::now();
                for bytes in &encoded {
                    black_box(leaf_hash(black_box(bytes)));
                    state.apply_owned(Event::decode(bytes).unwrap()).unwrap();
                }
                let d = t.elapsed();
                drop(black_box(state));
                d
            })
        })
    });
    g.finish();
    c.final_summary();
    for (name, s) in [
        ("encode", &mut enc),
        ("decode", &mut dec),
        ("apply", &mut app),
        ("decode+apply+hash", &mut all),
        ("decode+apply_owned+hash", &mut owned),
    ] {
        if !s.is_empty() {
            let m = median(s);
            println!("{name:>24}: {:>10.0} events/s  ({:.0} ns/event, median of {})", 1.0 / m, m * 1e9, s.len());
        }
    }
}
