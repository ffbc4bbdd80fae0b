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
    // A field this build does not know (a newer build's, during a rolling upgrade) is
    // refused, not dropped: folding without it would serve a state the newer nodes do
    // not have. In the envelope, and in a payload.
    for (at, extra) in
        [("{", "{\"added_later\":1,"), ("\"product_created\":{", "\"product_created\":{\"added_later\":1,")]
    {
        let newer = first.replacen(at, extra, 1);
        assert_ne!(newer, first);
        let e = Event::decode(newer.as_bytes()).unwrap_err().to_string();
        assert!(e.contains("added_later"), "{e}");
    }
}

const FULL: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ledger-full.jsonl");
const FULL_EXPECT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/ledger-full.expect.json");

/// Every event type there is, decided by the code of 2026-11-29 (written once, with
/// `TOLLGATE_WRITE_FULL_FIXTURE=1 cargo test -p tollgate-core --test it fixture`): the catalog, every lifecycle
/// change, machines, seats, leases (renewed, released, expired), usage across a month's
/// end (one record stamped in the month before the one kept), overrides, key rotation,
/// a given-up token, a segment and a gate's versions.
fn write_full_fixture() {
    use serde_json::json;
    use tollgate_core::gate::{GateCommand, GateKey};
    use tollgate_core::keys::KeyCommand;
    use tollgate_core::models::ModelCommand;
    use tollgate_core::token::TokenSigner;
    let t0 = Timestamp::parse("2026-01-01T00:00:00Z").unwrap();
    let at = |day: u32, ms: i64| Timestamp::from_millis(t0.plus_days(day).millis() + ms).unwrap();
    let meta =
        |r: &str| Meta { actor: "token:tok_full".into(), reason: Some(r.into()), request_id: format!("req_{r}") };
    fn from<T: serde::de::DeserializeOwned>(v: serde_json::Value) -> T {
        serde_json::from_value(v).unwrap()
    }
    let id = |n: u8| LicenseId::from_random([n; 16]);
    let issue = |n: u8, plan: &str, external: Option<&str>, metadata: serde_json::Value| {
        Command::IssueLicense(IssueLicense {
            id: id(n),
            key: LicenseKey::from_random([n; 15]),
            product: ProductKey::parse("app").unwrap(),
            plan: PlanKey::parse(plan).unwrap(),
            licensee: format!("Customer {n}"),
            expires_at: None,
            metadata: from(metadata),
            external_id: external.map(String::from),
        })
    };
    let model = Command::Models;
    let lease = |n: u8| tollgate_core::ids::LeaseId::from_random([n; 16]);
    let signer = |n: u8| TokenSigner::new(ed25519_dalek::SigningKey::from_bytes(&[n; 32]));
    let public =
        |s: &TokenSigner| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(s.verifying_key().as_bytes());
    let (k1, k2) = (signer(1), signer(2));
    let gate = GateKey::parse("new-ui").unwrap();
    let team = json!({"key":"team","product":"app","name":"Team","features":["core","export"],
        "duration_days":365,"grace_days":7,"offline_days":7,"max_machines":2,"max_users":2,
        "floating":{"lease_ttl_seconds":600,"max_leases":2},
        "meters":[{"key":"calls","period":"month","quota":1000,"overage":"block"}]});
    let mut team_v2 = team.clone();
    team_v2["features"] = json!(["core", "export", "render"]);
    let steps: Vec<(Timestamp, &str, Command)> = vec![
        (
            at(0, 0),
            "product",
            Command::CreateProduct(from(
                json!({"key":"app","name":"App","features":[{"key":"core","name":"Core"},{"key":"export","name":"Export"}]}),
            )),
        ),
        (
            at(0, 1),
            "product-update",
            Command::UpdateProduct(from(
                json!({"key":"app","name":"App","features":[{"key":"core","name":"Core"},{"key":"export","name":"Export"},{"key":"render","name":"Render"}]}),
            )),
        ),
        (at(0, 2), "plan-team", Command::CreatePlan(from(team))),
        (
            at(0, 3),
            "plan-trial",
            Command::CreatePlan(from(
                json!({"key":"trial","product":"app","name":"Trial","features":["core"],"trial_days":14}),
            )),
        ),
        (at(0, 4), "plan-update", Command::UpdatePlan(from(team_v2))),
        (at(1, 0), "issue-1", issue(1, "team", None, json!({"crm":{"id":42,"tags":["a","ü"]},"ratio":0.5}))),
        (at(1, 1), "issue-2", issue(2, "trial", Some("crm-2"), json!({}))),
        (
            at(1, 2),
            "overrides",
            model(ModelCommand::SetOverrides {
                license: id(1),
                overrides: from(json!({"features_add":["render"],"max_machines":3})),
            }),
        ),
        (
            at(2, 0),
            "machine-1",
            model(ModelCommand::ActivateMachine {
                license: id(1),
                machine: from(json!({"fingerprint":"m1","name":"Build box"})),
            }),
        ),
        (
            at(2, 1),
            "machine-2",
            model(ModelCommand::ActivateMachine { license: id(1), machine: from(json!({"fingerprint":"m2"})) }),
        ),
        (
            at(2, 2),
            "machine-2-off",
            model(ModelCommand::DeactivateMachine { license: id(1), fingerprint: from(json!("m2")) }),
        ),
        (
            at(3, 0),
            "seat-ada",
            model(ModelCommand::AssignUser { license: id(1), user: from(json!("ada@example.com")) }),
        ),
        (
            at(3, 1),
            "seat-bob",
            model(ModelCommand::AssignUser { license: id(1), user: from(json!("bob@example.com")) }),
        ),
        (
            at(3, 2),
            "seat-bob-off",
            model(ModelCommand::UnassignUser { license: id(1), user: from(json!("bob@example.com")) }),
        ),
        (
            at(4, 0),
            "lease-1",
            model(ModelCommand::CheckoutLease { license: id(1), lease: lease(1), fingerprint: from(json!("m1")) }),
        ),
        (at(4, 1000), "heartbeat", model(ModelCommand::Heartbeat { lease: lease(1) })),
        (at(4, 2000), "release", model(ModelCommand::ReleaseLease { lease: lease(1) })),
        (
            at(4, 3000),
            "lease-2",
            model(ModelCommand::CheckoutLease { license: id(1), lease: lease(2), fingerprint: from(json!("m9")) }),
        ),
        (at(5, 0), "reap", model(ModelCommand::ExpireLeases { leases: vec![lease(2)] })),
        (
            at(30, 0),
            "usage-jan",
            model(ModelCommand::RecordUsage { license: id(1), meter: from(json!("calls")), quantity: 5 }),
        ),
        (
            at(31, 500),
            "usage-feb",
            model(ModelCommand::RecordUsage { license: id(1), meter: from(json!("calls")), quantity: 900 }),
        ),
        // Stamped in January by a node whose clock is behind: it adds to February's.
        (
            at(30, 86_399_900),
            "usage-late",
            model(ModelCommand::RecordUsage { license: id(1), meter: from(json!("calls")), quantity: 10 }),
        ),
        (at(32, 0), "key-1", Command::Keys(KeyCommand::Create { kid: k1.kid.clone(), public_key: public(&k1) })),
        (
            at(33, 0),
            "key-2",
            Command::Keys(KeyCommand::Rotate { kid: k2.kid.clone(), public_key: public(&k2), keep_until: at(40, 0) }),
        ),
        (
            at(34, 0),
            "give-up",
            Command::RevokeToken {
                fingerprint: Some("m1".into()),
                jti: "jti-full-1".into(),
                license: id(1),
                issued_at: Some(at(33, 5)),
            },
        ),
        (
            at(35, 0),
            "segment",
            Command::Gates(GateCommand::PutSegment(from(
                json!({"id":1,"name":"beta","constraints":[{"contextName":"userId","operator":"IN","values":["u1","u2"]}]}),
            ))),
        ),
        (
            at(35, 1),
            "gate",
            Command::Gates(GateCommand::Put(from(
                json!({"key":"new-ui","feature":{"product":"app","feature":"render"},
            "strategies":[{"name":"flexibleRollout","parameters":{"rollout":"25","stickiness":"default","groupId":"new-ui"},"segments":[1]}]}),
            ))),
        ),
        (at(35, 2), "kill", Command::Gates(GateCommand::Kill { key: gate.clone() })),
        (at(35, 3), "rollback", Command::Gates(GateCommand::Rollback { key: gate, version: 1 })),
        (at(36, 0), "suspend", Command::Suspend(id(2))),
        (at(36, 1), "reinstate", Command::Reinstate(id(2))),
        (at(36, 2), "renew", Command::Renew(id(1))),
        (at(36, 3), "convert", Command::ChangePlan { license: id(2), plan: PlanKey::parse("team").unwrap() }),
        (at(36, 4), "revoke", Command::Revoke(id(2))),
    ];
    let mut state = State::default();
    let mut out = String::new();
    for (now, reason, cmd) in steps {
        let events = decide(&state, &cmd, &meta(reason), now).unwrap_or_else(|r| panic!("{reason}: {r:?}"));
        assert!(!events.is_empty(), "{reason} decided nothing");
        for e in events {
            state.apply(&e).unwrap();
            out.push_str(std::str::from_utf8(&e.encode().unwrap()).unwrap());
            out.push('\n');
        }
    }
    std::fs::write(FULL, out).unwrap();
}

/// The fixture of every event type folds, with today's code, to the state digest it
/// folded to when it was written: a change to what any event does to the state (not
/// only to whether it decodes) fails here. Such a change breaks snapshots and `ledger
/// verify` on ledgers that exist; it needs a fold that keeps the old meaning for old
/// events, not a new digest here.
#[test]
fn every_event_type_folds_to_the_digest_it_always_did() {
    if std::env::var_os("TOLLGATE_WRITE_FULL_FIXTURE").is_some() {
        write_full_fixture();
    }
    let text = std::fs::read_to_string(FULL).expect("the fixture ledger is committed");
    let mut state = State::default();
    let mut log = MerkleLog::new();
    let mut types = std::collections::BTreeSet::new();
    for (i, line) in text.lines().enumerate() {
        let event = Event::decode(line.as_bytes()).unwrap_or_else(|e| panic!("event {i} no longer decodes: {e}"));
        assert_eq!(event.encode().unwrap(), line.as_bytes(), "event {i} re-encodes byte for byte");
        types.insert(event.event.type_name());
        state.apply(&event).unwrap_or_else(|e| panic!("event {i} no longer folds: {e}"));
        log.push(leaf_hash(line.as_bytes()));
    }
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    let digest = state.digest().unwrap();
    let found = serde_json::json!({
        "size": log.len(),
        "root": b64(&log.root()),
        "digest": b64(&digest),
        "types": types,
    });
    if std::env::var_os("TOLLGATE_WRITE_FULL_FIXTURE").is_some() {
        std::fs::write(FULL_EXPECT, serde_json::to_string_pretty(&found).unwrap() + "\n").unwrap();
    }
    let expect: serde_json::Value = serde_json::from_str(&std::fs::read_to_string(FULL_EXPECT).unwrap()).unwrap();
    assert_eq!(found, expect);
    assert_eq!(types.len(), 27, "every event type: {types:?}");
    // A snapshot of it decodes to the same state.
    let snapshot = state.encode().unwrap();
    let back = State::decode(&snapshot).unwrap();
    assert_eq!(back.encode().unwrap(), snapshot);
    assert_eq!(back.digest().unwrap(), digest);
    // What the late usage record did: added to February's total, not January's.
    let usage = state.models(LicenseId::from_random([1; 16]).as_str()).unwrap().usage.clone();
    let calls = usage.values().next().unwrap();
    assert_eq!((calls.used, calls.period_start.to_string()), (910, "2026-02-01T00:00:00Z".to_string()));
}
