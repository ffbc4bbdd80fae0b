//! Determinism of the fold: the same events give the same digest whether folded
//! twice, from their encoded bytes, or through a snapshot; bad events are refused.

use super::*;

/// A story touching every lifecycle event, for the determinism checks.
fn story() -> World {
    let mut w = World::new();
    let [a, b, c, t] = [1, 2, 3, 4].map(lic);
    check(
        &mut w,
        vec![
            (day(0), issue(&a, "annual"), "license_issued expires_at=d365"),
            (
                day_ms(0, 1),
                issue_with(&b, "monthly", |c| {
                    c.metadata = BTreeMap::from([
                        ("crm".into(), json!({"id": 42, "tags": ["a", "ü"]})),
                        ("é".into(), json!(null)),
                    ])
                }),
                "license_issued expires_at=d30+1ms",
            ),
            (day(1), issue(&c, "perpetual"), "license_issued expires_at=never"),
            (day(1), issue(&t, "trial"), "license_issued expires_at=d15 trial"),
            (day(2), suspend(&a), "license_suspended"),
            (day(3), reinstate(&a), "license_reinstated"),
            (day(4), renew(&b), "license_renewed expires_at=d60+1ms"),
            (day(5), change_plan(&t, "annual"), "license_plan_changed plan=annual expires_at=d370"),
            (day(6), revoke(&c), "license_revoked"),
            (day(7), update_plan(with(annual(), "grace_days", json!(30))), "plan_updated"),
        ],
    );
    w
}

#[test]
fn folding_the_same_events_twice_gives_the_same_digest() {
    let w = story();
    let once = fold(&w.log);
    let twice = fold(&w.log);
    assert_eq!(once.seq(), w.log.len() as u64);
    assert_eq!(once.digest().unwrap(), twice.digest().unwrap());
    assert_eq!(once.digest().unwrap(), w.state.digest().unwrap());
    // Any prefix differs from the whole: the digest covers every event.
    assert_ne!(fold(&w.log[..w.log.len() - 1]).digest().unwrap(), once.digest().unwrap());
}

#[test]
fn state_snapshots_round_trip_byte_for_byte() {
    let w = story();
    let bytes = w.state.encode().unwrap();
    let decoded = State::decode(&bytes).unwrap();
    assert_eq!(decoded.encode().unwrap(), bytes);
    assert_eq!(decoded.digest().unwrap(), w.state.digest().unwrap());
    assert_eq!(decoded.seq(), w.state.seq());
    // The key index is derived, not stored: decoding rebuilds it.
    for n in 1..=4 {
        let l = lic(n);
        for now in [day(8), day(60), day(400)] {
            assert_eq!(
                validate(&decoded, l.key.as_str(), Scope::default(), now).code,
                validate(&w.state, l.key.as_str(), Scope::default(), now).code,
            );
        }
    }
    // And decoding goes on folding where the snapshot stopped.
    let mut next = decoded;
    let e = Event::new(day(9), meta(), EventKind::LicenseSuspended { license: lic(1).id });
    next.apply(&e).unwrap();
    assert_eq!(next.seq(), w.state.seq() + 1);
    let unknown = String::from_utf8(bytes).unwrap().replacen("\"format\":1", "\"format\":2", 1);
    assert!(matches!(State::decode(unknown.as_bytes()), Err(tollgate_core::state::SnapshotError::Format(2))));
}

#[test]
fn folding_the_encoded_bytes_gives_the_same_digest_as_the_events() {
    let w = story();
    let mut from_bytes = State::default();
    for e in &w.log {
        let bytes = e.encode().unwrap();
        let decoded = Event::decode(&bytes).unwrap();
        assert_eq!(&decoded, e);
        assert_eq!(decoded.encode().unwrap(), bytes);
        from_bytes.apply(&decoded).unwrap();
    }
    assert_eq!(from_bytes.digest().unwrap(), fold(&w.log).digest().unwrap());
}

#[test]
fn apply_refuses_events_about_what_does_not_exist() {
    let w = story();
    let ghost = lic(9).id;
    let seq = w.state.seq();
    let missing = |kind, what, name: &dyn std::fmt::Display| ApplyError::Missing {
        seq: seq + 1,
        kind,
        what,
        name: name.to_string(),
    };
    let duplicate = |what, name: &dyn std::fmt::Display| ApplyError::Duplicate {
        seq: seq + 1,
        kind: "license_issued",
        what,
        name: name.to_string(),
    };
    let issued = |id: &LicenseId, key: &LicenseKey| {
        let mut l: License = (**w.state.license(lic(1).id.as_str()).unwrap()).clone();
        l.id = id.clone();
        l.key = key.clone();
        EventKind::LicenseIssued(std::sync::Arc::new(l))
    };
    let usage = |quantity| EventKind::UsageRecorded {
        license: lic(1).id,
        meter: tollgate_core::ids::MeterKey::parse("calls").unwrap(),
        quantity,
    };
    let out_of_range =
        |what, value, max| ApplyError::OutOfRange { seq: seq + 1, kind: "usage_recorded", what, value, max };
    let ghost_machine = tollgate_core::machine::Fingerprint::parse("ghost-machine").unwrap();
    let annual = PlanKey::parse("annual").unwrap();
    let ghost_plan = PlanKey::parse("ghost").unwrap();
    for (kind, expected) in [
        (EventKind::LicenseSuspended { license: ghost.clone() }, missing("license_suspended", "license", &ghost)),
        (EventKind::LicenseReinstated { license: ghost.clone() }, missing("license_reinstated", "license", &ghost)),
        (EventKind::LicenseRevoked { license: ghost.clone() }, missing("license_revoked", "license", &ghost)),
        (
            EventKind::LicenseRenewed { license: ghost.clone(), expires_at: None },
            missing("license_renewed", "license", &ghost),
        ),
        (
            EventKind::LicensePlanChanged { license: ghost.clone(), plan: annual, expires_at: None, trial: false },
            missing("license_plan_changed", "license", &ghost),
        ),
        (
            EventKind::LicensePlanChanged {
                license: lic(1).id,
                plan: ghost_plan.clone(),
                expires_at: None,
                trial: false,
            },
            missing("license_plan_changed", "plan", &ghost_plan),
        ),
        (issued(&lic(1).id, &lic(9).key), duplicate("license", &lic(1).id)),
        (issued(&ghost, &lic(1).key), duplicate("license key", &ghost)),
        // A license with no machines yet: refused, and no empty models are left behind.
        (
            EventKind::MachineDeactivated { license: lic(1).id, fingerprint: ghost_machine.clone() },
            missing("machine_deactivated", "machine", &ghost_machine),
        ),
        // Numbers no decision writes (only a crafted ledger holds them): canonical JSON
        // would round the total in a snapshot, and a restarted node would differ.
        (
            usage(1_000_000_000_000_001),
            out_of_range("a quantity", 1_000_000_000_000_001, tollgate_core::meter::MAX_AMOUNT),
        ),
    ] {
        let mut s = w.state.clone();
        let e = Event::new(day(9), meta(), kind);
        assert_eq!(s.apply(&e), Err(expected));
        assert_eq!(s.seq(), seq, "a refused event is not counted");
        assert_eq!(s.digest().unwrap(), w.state.digest().unwrap(), "a refused event changes nothing");
    }
}

/// Metadata numbers are kept in the form canonical JSON gives back (`5.0` is `5`,
/// `-0.0` is `0`): the node that decided an issue holds what every node folding the
/// stored event holds. `1e19` is the integer beyond 2^53 it is, and refused as one.
#[test]
fn metadata_numbers_are_decided_in_their_canonical_form() {
    let mut w = World::new();
    let a = lic(1);
    let Step::Run(command) = issue_with(&a, "annual", |c| {
        c.metadata = BTreeMap::from([("p".into(), json!(5.0)), ("z".into(), json!(-0.0)), ("f".into(), json!(0.5))])
    }) else {
        unreachable!()
    };
    let events = decide(&w.state, &command, &meta(), day(1)).unwrap();
    let EventKind::LicenseIssued(decided) = &events[0].event else { panic!("{:?}", events[0].event) };
    let again = Event::decode(&events[0].encode().unwrap()).unwrap();
    let EventKind::LicenseIssued(stored) = &again.event else { unreachable!() };
    assert_eq!(decided.metadata, stored.metadata);
    assert_eq!(serde_json::to_string(&decided.metadata).unwrap(), r#"{"f":0.5,"p":5,"z":0}"#);
    w.state.apply(&events[0]).unwrap();

    // Integers past 2^53, however sent, are refused rather than rounded: 1e19, 2^53+1
    // (canonical JSON would write 2^53) and u64::MAX (it would come back a float).
    let b = lic(2);
    for big in [json!(1e19), json!(9_007_199_254_740_993u64), json!(u64::MAX)] {
        let Step::Run(command) = issue_with(&b, "annual", |c| c.metadata = BTreeMap::from([("b".into(), big.clone())]))
        else {
            unreachable!()
        };
        let refusal = decide(&w.state, &command, &meta(), day(1)).unwrap_err();
        assert!(refusal.detail.contains("beyond 2^53"), "{big}: {}", refusal.detail);
    }
}
