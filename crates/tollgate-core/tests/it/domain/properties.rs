//! Properties: events round-trip through their canonical bytes, and random command
//! sequences never panic and keep revocation final.

use proptest::prelude::*;

use super::*;

fn slug() -> impl Strategy<Value = String> {
    "[a-z0-9][a-z0-9._-]{0,12}"
}

fn instant() -> impl Strategy<Value = Timestamp> {
    (0i64..=253_402_300_799_999).prop_map(|ms| Timestamp::from_millis(ms).unwrap())
}

fn license_id() -> impl Strategy<Value = LicenseId> {
    any::<[u8; 16]>().prop_map(LicenseId::from_random)
}

/// The largest integer JSON (RFC 8785 reads numbers as doubles) carries exactly.
/// Versions count events, so they never come near it.
const MAX_EXACT: u64 = 1 << 53;

/// JSON that round-trips to an equal value: no floats, integers within 2^53.
fn exact_json() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::Bool),
        (-(1i64 << 53)..=(1i64 << 53)).prop_map(Value::from),
        any::<String>().prop_map(Value::String),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::Array),
            prop::collection::btree_map(any::<String>(), inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
}

/// Any JSON serde can write: floats and integers beyond 2^53 included.
fn any_json() -> impl Strategy<Value = Value> {
    prop_oneof![
        exact_json(),
        any::<u64>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<f64>().prop_filter("finite", |f| f.is_finite()).prop_map(Value::from),
    ]
}

fn license(metadata: impl Strategy<Value = Value>) -> impl Strategy<Value = License> {
    let meta = prop::collection::btree_map(any::<String>(), metadata, 0..4);
    (
        (license_id(), any::<[u8; 15]>(), slug(), slug(), any::<String>()),
        (prop::option::of(instant()), instant(), instant(), any::<bool>(), 1..=MAX_EXACT, 0..3u8),
        meta,
    )
        .prop_map(
            |(
                (id, key, plan, product, licensee),
                (expires_at, issued_at, updated_at, trial, version, status),
                metadata,
            )| {
                License {
                    id,
                    key: LicenseKey::from_random(key),
                    plan: PlanKey::parse(&plan).unwrap(),
                    product: ProductKey::parse(&product).unwrap(),
                    licensee,
                    expires_at,
                    issued_at,
                    updated_at,
                    trial,
                    version,
                    status: [Status::Active, Status::Suspended, Status::Revoked][usize::from(status)],
                    metadata,
                    external_id: None,
                }
            },
        )
}

fn event(metadata: impl Strategy<Value = Value> + 'static) -> impl Strategy<Value = Event> {
    let kind = prop_oneof![
        license(metadata).prop_map(|l| EventKind::LicenseIssued(std::sync::Arc::new(l))),
        license_id().prop_map(|license| EventKind::LicenseSuspended { license }),
        license_id().prop_map(|license| EventKind::LicenseReinstated { license }),
        license_id().prop_map(|license| EventKind::LicenseRevoked { license }),
        (license_id(), prop::option::of(instant()))
            .prop_map(|(license, expires_at)| EventKind::LicenseRenewed { license, expires_at }),
        (license_id(), slug(), prop::option::of(instant()), any::<bool>()).prop_map(
            |(license, plan, expires_at, trial)| EventKind::LicensePlanChanged {
                license,
                plan: PlanKey::parse(&plan).unwrap(),
                expires_at,
                trial
            }
        ),
    ];
    (instant(), any::<String>(), prop::option::of(any::<String>()), any::<String>(), kind)
        .prop_map(|(at, actor, reason, request_id, kind)| Event::new(at, Meta { actor, reason, request_id }, kind))
}

/// One command of a random sequence, over 4 ids, 4 keys and 6 plans.
#[derive(Clone, Copy, Debug)]
enum Op {
    Issue { id: u8, key: u8, plan: u8 },
    Suspend(u8),
    Reinstate(u8),
    Revoke(u8),
    Renew(u8),
    ChangePlan(u8, u8),
}

const PLANS: [&str; 6] = ["annual", "monthly", "trial", "perpetual", "other-basic", "ghost"];

fn op() -> impl Strategy<Value = Op> {
    prop_oneof![
        (0..4u8, 0..4u8, 0..6u8).prop_map(|(id, key, plan)| Op::Issue { id, key, plan }),
        (0..4u8).prop_map(Op::Suspend),
        (0..4u8).prop_map(Op::Reinstate),
        (0..4u8).prop_map(Op::Revoke),
        (0..4u8).prop_map(Op::Renew),
        (0..4u8, 0..6u8).prop_map(|(id, plan)| Op::ChangePlan(id, plan)),
    ]
}

/// How far the clock moves before a command: often not at all, up to about 2 years.
fn clock_step() -> impl Strategy<Value = i64> {
    prop_oneof![Just(0i64), 0..DAY, 0..40 * DAY, 0..800 * DAY]
}

#[derive(Clone, Copy, Debug, PartialEq)]
enum Last {
    Issued,
    Suspend,
    Reinstate,
    Revoke,
}

proptest! {
    #[test]
    fn events_round_trip_through_their_canonical_bytes(e in event(exact_json())) {
        let bytes = e.encode().unwrap();
        let decoded = Event::decode(&bytes).unwrap();
        prop_assert_eq!(&decoded, &e);
        prop_assert_eq!(decoded.encode().unwrap(), bytes);
    }

    #[test]
    fn event_encoding_is_canonical_and_stable(e in event(any_json())) {
        let bytes = e.encode().unwrap();
        // The reference implementation agrees, in release builds too (where `encode`
        // skips its own debug cross-check).
        prop_assert_eq!(&bytes, &serde_jcs::to_vec(&e).unwrap());
        let again = Event::decode(&bytes).unwrap().encode().unwrap();
        prop_assert_eq!(again, bytes);
    }

    #[test]
    fn random_command_sequences_keep_revocation_final(ops in prop::collection::vec((clock_step(), op()), 1..48)) {
        let mut w = World::new();
        let mut now = day(0);
        // The last lifecycle command that decide accepted, per id, and the key issued.
        let mut model: BTreeMap<u8, (u8, Last)> = BTreeMap::new();
        for (dt, op) in ops {
            now = Timestamp::from_millis(now.millis() + dt).unwrap();
            let id = |n: u8| lic(n + 1).id;
            let plan = |n: u8| PlanKey::parse(PLANS[usize::from(n)]).unwrap();
            let (command, target, last) = match op {
                Op::Issue { id: i, key, plan: p } => {
                    let l = Lic { id: id(i), key: lic(key + 1).key };
                    (Command::IssueLicense(issue_cmd(&l, PLANS[usize::from(p)])), i, Some(Last::Issued))
                }
                Op::Suspend(i) => (Command::Suspend(id(i)), i, Some(Last::Suspend)),
                Op::Reinstate(i) => (Command::Reinstate(id(i)), i, Some(Last::Reinstate)),
                Op::Revoke(i) => (Command::Revoke(id(i)), i, Some(Last::Revoke)),
                Op::Renew(i) => (Command::Renew(id(i)), i, None),
                Op::ChangePlan(i, p) => (Command::ChangePlan { license: id(i), plan: plan(p) }, i, None),
            };
            let before = model.get(&target).copied();
            match decide(&w.state, &command, &meta(), now) {
                Ok(events) => {
                    for e in &events {
                        prop_assert_eq!(e.at, now);
                        w.state.apply(e).unwrap();
                    }
                    w.log.extend(events);
                    if let Op::Issue { key, .. } = op {
                        prop_assert!(before.is_none() && !model.values().any(|(k, _)| *k == key), "a collision was issued");
                        model.insert(target, (key, Last::Issued));
                    } else if let (Some(last), Some((key, _))) = (last, before) {
                        model.insert(target, (key, last));
                    }
                }
                Err(r) => {
                    let expected: &[&str] = match (op, before) {
                        (Op::Issue { .. }, _) => {
                            &["LICENSE_EXISTS", "PLAN_NOT_FOUND", "PLAN_PRODUCT_MISMATCH"]
                        }
                        (_, None) => &["LICENSE_NOT_FOUND"],
                        (Op::Revoke(_), Some(_)) => &[],
                        (_, Some((_, Last::Revoke))) => &["LICENSE_REVOKED"],
                        (Op::Renew(_), _) => &["NOT_RENEWABLE"],
                        (Op::ChangePlan(..), _) => &["PLAN_NOT_FOUND", "PLAN_PRODUCT_MISMATCH", "LICENSE_EXPIRED"],
                        _ => &[],
                    };
                    prop_assert!(expected.contains(&r.code), "{:?} refused with {}: {}", op, r.code, r.detail);
                    if let (Op::Issue { key, .. }, "LICENSE_EXISTS") = (op, r.code) {
                        prop_assert!(before.is_some() || model.values().any(|(k, _)| *k == key), "no collision");
                    }
                }
            }
            for (i, (key, last)) in &model {
                let code = validate(&w.state, lic(key + 1).key.as_str(), Scope::default(), now).code.as_str();
                prop_assert_eq!(code == "REVOKED", *last == Last::Revoke, "license {} after {:?}: {}", i, last, code);
                prop_assert_eq!(code == "SUSPENDED", *last == Last::Suspend, "license {} after {:?}: {}", i, last, code);
                let l = w.state.license(id(*i).as_str()).unwrap();
                prop_assert_eq!(&l.key, &lic(key + 1).key);
            }
        }
        prop_assert_eq!(fold(&w.log).digest().unwrap(), w.state.digest().unwrap());
    }
}
