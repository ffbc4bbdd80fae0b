//! Old ledgers must always fold. `tests/fixtures/ledger-v1.jsonl` is a ledger written
//! in schema version 1, one leaf per line, exactly as stored, covering every event type
//! of that version. This test replays it with today's code: if a change to an event's
//! shape breaks reading it, CI fails here, and the fix is an upcast in `event.rs`, not
//! a new fixture.
//!
//! To write the fixture (only when a new schema version is introduced, as a new file):
//! `TOLLGATE_WRITE_FIXTURE=1 cargo test -p tollgate-core --test it fixture`.

use std::collections::BTreeMap;

use base64::Engine as _;
use tollgate_core::catalog::{Feature, PlanSpec, ProductSpec};
use tollgate_core::command::IssueLicense;
use tollgate_core::ids::{FeatureKey, LicenseId, PlanKey, ProductKey};
use tollgate_core::key::LicenseKey;
use tollgate_core::merkle::{MerkleLog, leaf_hash};
use tollgate_core::{Command, Event, Meta, State, Timestamp, decide};

const FIXTURE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ledger-v1.jsonl");
const EXPECT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ledger-v1.expect.json");

fn write_fixture() {
    let t0 = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let at = |days: u32| t0.plus_days(days);
    let meta =
        |r: &str| Meta { actor: "token:tok_fixture".into(), reason: Some(r.into()), request_id: format!("req_{r}") };
    let feature = |k: &str| Feature { key: FeatureKey::parse(k).unwrap(), name: k.to_uppercase() };
    let plan = |key: &str, features: &[&str], duration: Option<u32>, trial: Option<u32>| PlanSpec {
        key: PlanKey::parse(key).unwrap(),
        product: ProductKey::parse("cad").unwrap(),
        name: key.into(),
        features: features.iter().map(|f| FeatureKey::parse(f).unwrap()).collect(),
        duration_days: duration,
        trial_days: trial,
        grace_days: Some(7),
        max_machines: Some(2),
        max_users: Some(3),
        ..fixture_plan_defaults()
    };
    let product =
        |features: Vec<Feature>| ProductSpec { key: ProductKey::parse("cad").unwrap(), name: "CAD".into(), features };
    let lic = |n: u8, plan: &str, licensee: &str, metadata: BTreeMap<String, serde_json::Value>| {
        Command::IssueLicense(IssueLicense {
            id: LicenseId::from_random([n; 16]),
            key: LicenseKey::from_random([n; 15]),
            product: ProductKey::parse("cad").unwrap(),
            plan: PlanKey::parse(plan).unwrap(),
            licensee: licensee.into(),
            expires_at: None,
            metadata,
            external_id: None,
        })
    };
    let id = |n: u8| LicenseId::from_random([n; 16]);
    let mut md = BTreeMap::new();
    md.insert("crm_id".to_string(), serde_json::json!("C-1001"));
    md.insert("seats_bought".to_string(), serde_json::json!(12));
    md.insert("région".to_string(), serde_json::json!({"ratio": 0.5, "tags": ["a", "b"]}));
    let steps: Vec<(u32, &str, Command)> = vec![
        (0, "product", Command::CreateProduct(product(vec![feature("core"), feature("export")]))),
        (
            0,
            "product-update",
            Command::UpdateProduct(product(vec![feature("core"), feature("export"), feature("render")])),
        ),
        (0, "plan-trial", Command::CreatePlan(plan("trial", &["core"], None, Some(14)))),
        (0, "plan-annual", Command::CreatePlan(plan("annual", &["core", "export"], Some(365), None))),
        (1, "plan-update", Command::UpdatePlan(plan("annual", &["core", "export", "render"], Some(365), None))),
        (1, "issue-1", lic(1, "annual", "Initech", md)),
        (2, "issue-2", lic(2, "trial", "Globex", BTreeMap::new())),
        (3, "suspend", Command::Suspend(id(1))),
        (4, "reinstate", Command::Reinstate(id(1))),
        (5, "renew", Command::Renew(id(1))),
        (6, "convert", Command::ChangePlan { license: id(2), plan: PlanKey::parse("annual").unwrap() }),
        (7, "revoke", Command::Revoke(id(2))),
    ];
    let mut state = State::default();
    let mut out = String::new();
    for (day, reason, cmd) in steps {
        for e in decide(&state, &cmd, &meta(reason), at(day)).unwrap() {
            state.apply(&e).unwrap();
            out.push_str(std::str::from_utf8(&e.encode().unwrap()).unwrap());
            out.push('\n');
        }
    }
    std::fs::write(FIXTURE, out).unwrap();
}

/// Fields added after version 1 take their defaults here, so the generator keeps
/// compiling as plans grow; the fixture itself never changes.
fn fixture_plan_defaults() -> PlanSpec {
    serde_json::from_value(serde_json::json!({"key": "x", "product": "x", "name": "x"})).unwrap()
}

#[test]
fn a_version_1_ledger_still_folds() {
    if std::env::var_os("TOLLGATE_WRITE_FIXTURE").is_some() {
        write_fixture();
    }
    let text = std::fs::read_to_string(FIXTURE).expect("the fixture ledger is committed");
    let expect: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(EXPECT).unwrap()).unwrap();
    let mut state = State::default();
    let mut log = MerkleLog::new();
    let mut types = Vec::new();
    for (i, line) in text.lines().enumerate() {
        let event =
            Event::decode(line.as_bytes()).unwrap_or_else(|e| panic!("fixture event {i} no longer decodes: {e}"));
        assert_eq!(event.v, 1);
        types.push(event.event.type_name());
        state.apply(&event).unwrap_or_else(|e| panic!("fixture event {i} no longer folds: {e}"));
        log.push(leaf_hash(line.as_bytes()));
    }
    let root = base64::engine::general_purpose::STANDARD.encode(log.root());
    assert_eq!(log.len(), expect["size"].as_u64().unwrap());
    assert_eq!(root, expect["root"].as_str().unwrap(), "the fixture's bytes changed");
    assert_eq!(types, expect["types"].as_array().unwrap().iter().map(|t| t.as_str().unwrap()).collect::<Vec<_>>());
    // What the ledger says, read with today's code.
    let l1 = state.license(LicenseId::from_random([1; 16]).as_str()).unwrap();
    let l2 = state.license(LicenseId::from_random([2; 16]).as_str()).unwrap();
    assert_eq!(l1.licensee, "Initech");
    assert_eq!(l1.status, tollgate_core::license::Status::Active);
    assert_eq!(
        l1.expires_at,
        Some(Timestamp::parse("2027-01-02T00:00:00Z").unwrap().plus_days(365)),
        "issued on day 1 (2026-01-02) for 365 days, renewed once"
    );
    assert_eq!(l1.metadata["crm_id"], "C-1001");
    assert_eq!(l2.status, tollgate_core::license::Status::Revoked);
    assert_eq!(l2.plan.as_str(), "annual");
    assert!(!l2.trial);
    assert_eq!(state.plan("annual").unwrap().version, 2);
    assert_eq!(state.product("cad").unwrap().features.len(), 3);
    // Re-encoding what was read gives the stored bytes back, for every event.
    for line in text.lines() {
        let event = Event::decode(line.as_bytes()).unwrap();
        assert_eq!(event.encode().unwrap(), line.as_bytes(), "version-1 events re-encode byte for byte");
    }
}

#[test]
fn a_newer_schema_version_is_refused_not_guessed() {
    let text = std::fs::read_to_string(FIXTURE).unwrap();
    let first = text.lines().next().unwrap();
    let newer = first.replace("\"v\":1", "\"v\":99");
    assert!(matches!(Event::decode(newer.as_bytes()), Err(tollgate_core::event::CodecError::Version(99))));
    let garbage = first.replace("\"v\":1", "\"v\":\"one\"");
    assert!(Event::decode(garbage.as_bytes()).is_err());
}
