//! Gates through `decide` and `apply`, as the server runs them: license binding,
//! scheduled ramps, versions (rollback, kill), import, dry-run preview, and events
//! and snapshots that survive their encodings.

use std::collections::BTreeMap;

use serde_json::{Value, json};
use tollgate_core::catalog::{PlanSpec, ProductSpec};
use tollgate_core::command::IssueLicense;
use tollgate_core::gate::{
    Change, Context, GateCommand, GateImport, GateKey, GateSpec, LicenseFacts, PreviewQuery, Reason, evaluate,
    parse_features_document, preview, ruleset_of,
};
use tollgate_core::ids::{LicenseId, PlanKey, ProductKey};
use tollgate_core::key::LicenseKey;
use tollgate_core::models::ModelCommand;
use tollgate_core::overrides::Overrides;
use tollgate_core::{Command, Event, Meta, Refusal, State, Timestamp, decide};

fn t(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

fn now() -> Timestamp {
    t("2026-06-01T00:00:00Z")
}

struct World {
    state: State,
    n: u8,
}

impl World {
    /// Product `cad` (features `export`, `render`); plans `basic` (export, 30 days) and
    /// `pro` (export, render, perpetual).
    fn new() -> Self {
        let mut w = World { state: State::default(), n: 0 };
        let product: ProductSpec = serde_json::from_value(json!({"key":"cad","name":"CAD","features":[
            {"key":"export","name":"Export"},{"key":"render","name":"Render"}]}))
        .unwrap();
        w.run(Command::CreateProduct(product)).unwrap();
        for plan in [
            json!({"key":"basic","product":"cad","name":"Basic","features":["export"],"duration_days":30}),
            json!({"key":"pro","product":"cad","name":"Pro","features":["export","render"]}),
        ] {
            w.run(Command::CreatePlan(serde_json::from_value::<PlanSpec>(plan).unwrap())).unwrap();
        }
        w
    }

    fn run_at(&mut self, command: Command, at: Timestamp) -> Result<usize, Refusal> {
        let meta = Meta { actor: "ops".into(), reason: None, request_id: "r".into() };
        let events = decide(&self.state, &command, &meta, at)?;
        for e in &events {
            // Every event survives its canonical encoding and folds from the bytes.
            let bytes = e.encode().unwrap();
            let back = Event::decode(&bytes).unwrap();
            assert_eq!(&back, e);
            self.state.apply(&back).unwrap();
        }
        Ok(events.len())
    }

    fn run(&mut self, command: Command) -> Result<usize, Refusal> {
        self.run_at(command, t("2026-01-01T00:00:00Z"))
    }

    fn gate(&mut self, spec: Value) -> Result<usize, Refusal> {
        self.run(Command::Gates(GateCommand::Put(serde_json::from_value(spec).unwrap())))
    }

    /// Issues a license on `plan` at `at`; returns (id, key).
    fn issue(&mut self, plan: &str, overrides: Option<Overrides>, at: Timestamp) -> (LicenseId, String) {
        self.n += 1;
        let id = LicenseId::from_random([self.n; 16]);
        let key = LicenseKey::from_random([self.n; 15]);
        let issue = IssueLicense {
            id: id.clone(),
            key: key.clone(),
            product: ProductKey::parse("cad").unwrap(),
            plan: PlanKey::parse(plan).unwrap(),
            licensee: format!("customer-{}", self.n),
            expires_at: None,
            metadata: Default::default(),
            external_id: None,
        };
        let command = match overrides {
            Some(overrides) => Command::Models(ModelCommand::IssueWithOverrides { issue, overrides }),
            None => Command::IssueLicense(issue),
        };
        self.run_at(command, at).unwrap();
        (id, key.to_string())
    }

    /// `on REASON`, `off REASON` or `off UNLICENSED CODE`, for a key (or none).
    fn answer(&self, gate: &str, key: Option<&str>, ctx: Value, at: Timestamp) -> String {
        let mut ctx: Context = serde_json::from_value(ctx).unwrap();
        ctx.license_key = key.map(String::from);
        let facts = LicenseFacts::for_context(&self.state, &ctx, at);
        let e = evaluate(&self.state, gate, &ctx, facts.as_ref(), at, 0).expect("gate exists");
        let mut s = format!("{} {}", if e.enabled { "on" } else { "off" }, e.reason.as_str());
        if let Some(c) = e.license_code {
            s = format!("{s} {}", c.as_str());
        }
        s
    }
}

fn code(r: Result<usize, Refusal>) -> String {
    match r {
        Ok(n) => format!("{n} events"),
        Err(e) => e.code.to_string(),
    }
}

#[test]
fn license_binding_is_checked_before_any_strategy() {
    let mut w = World::new();
    let (_, basic) = w.issue("basic", None, t("2026-05-20T00:00:00Z"));
    let (_, pro) = w.issue("pro", None, t("2026-01-01T00:00:00Z"));
    let (_, expired) = w.issue("basic", None, t("2026-01-01T00:00:00Z"));
    let (suspended_id, suspended) = w.issue("pro", None, t("2026-01-01T00:00:00Z"));
    let (revoked_id, revoked) = w.issue("pro", None, t("2026-01-01T00:00:00Z"));
    let render: Overrides = serde_json::from_value(json!({"features_add":["render"]})).unwrap();
    let (_, basic_plus) = w.issue("basic", Some(render), t("2026-05-20T00:00:00Z"));
    w.run(Command::Suspend(suspended_id)).unwrap();
    w.run(Command::Revoke(revoked_id)).unwrap();
    assert_eq!(
        code(w.gate(json!({"key":"new-renderer","feature":{"product":"cad","feature":"render"},
            "strategies":[{"name":"default"}]}))),
        "1 events"
    );
    w.gate(json!({"key":"open-beta","license_required":false,"strategies":[{"name":"default"}]})).unwrap();
    let absent = "CAD1-AAAA-AAAA-AAAA-AAAA-AAAA-AAAA".to_string();
    let rows: &[(&str, Option<&str>, &str)] = &[
        ("new-renderer", Some(&pro), "on STATIC"),
        ("new-renderer", Some(&basic_plus), "on STATIC"),
        ("new-renderer", Some(&basic), "off UNLICENSED NOT_ENTITLED"),
        ("new-renderer", None, "off UNLICENSED LICENSE_MISSING"),
        ("new-renderer", Some("not a key"), "off UNLICENSED LICENSE_MALFORMED"),
        ("new-renderer", Some(&expired), "off UNLICENSED LICENSE_EXPIRED"),
        ("new-renderer", Some(&suspended), "off UNLICENSED LICENSE_SUSPENDED"),
        ("new-renderer", Some(&revoked), "off UNLICENSED LICENSE_REVOKED"),
        ("open-beta", None, "on STATIC"),
        ("open-beta", Some(&revoked), "on STATIC"),
    ];
    for (gate, key, want) in rows {
        assert_eq!(w.answer(gate, *key, json!({}), now()), *want, "{gate} for {key:?}");
    }
    let unknown = w.answer("new-renderer", Some(&absent), json!({}), now());
    assert!(
        unknown == "off UNLICENSED LICENSE_NOT_FOUND" || unknown == "off UNLICENSED LICENSE_MALFORMED",
        "{unknown}"
    );
    // License fields are context fields.
    w.gate(json!({"key":"pro-only","license_required":false,"strategies":[{"name":"default","constraints":[
        {"contextName":"licensePlan","operator":"IN","values":["pro"]},
        {"contextName":"licenseStatus","operator":"IN","values":["active","grace"]}]}]}))
        .unwrap();
    assert_eq!(w.answer("pro-only", Some(&pro), json!({}), now()), "on TARGETING_MATCH");
    assert_eq!(w.answer("pro-only", Some(&basic), json!({}), now()), "off DEFAULT");
    assert_eq!(w.answer("pro-only", None, json!({}), now()), "off DEFAULT");
    // A bound feature must exist in the catalog.
    assert_eq!(
        code(w.gate(json!({"key":"x","feature":{"product":"cad","feature":"nope"},"strategies":[]}))),
        "UNKNOWN_FEATURE"
    );
    assert_eq!(
        code(w.gate(json!({"key":"x","feature":{"product":"nope","feature":"export"},"strategies":[]}))),
        "PRODUCT_NOT_FOUND"
    );
}

#[test]
fn a_schedule_moves_the_rollout_at_its_instants() {
    let mut w = World::new();
    w.gate(json!({"key":"ramp","license_required":false,
        "strategies":[{"name":"flexibleRollout","parameters":{"rollout":"0","stickiness":"userId","groupId":"ramp"}}],
        "schedule":[{"at":"2026-03-01T00:00:00Z","rollout":10},{"at":"2026-04-01T00:00:00Z","rollout":50},
                    {"at":"2026-05-01T00:00:00Z","rollout":100}]}))
        .unwrap();
    let share = |at: &str| {
        (0..1000)
            .filter(|u| w.answer("ramp", None, json!({"userId": format!("u{u}")}), t(at)).starts_with("on"))
            .count()
    };
    assert_eq!(share("2026-02-28T23:59:59Z"), 0);
    let ten = share("2026-03-15T00:00:00Z");
    let fifty = share("2026-04-01T00:00:00Z");
    assert!((60..=140).contains(&ten), "10% step served {ten} of 1000");
    assert!((420..=580).contains(&fifty), "50% step served {fifty} of 1000");
    assert_eq!(share("2026-05-01T00:00:00Z"), 1000);
    assert_eq!(w.answer("ramp", None, json!({"userId":"u1"}), t("2026-05-02T00:00:00Z")), "on STATIC");
    // Below 100% a percentage decided it.
    let split = (0..100)
        .map(|u| w.answer("ramp", None, json!({"userId": format!("u{u}")}), t("2026-04-15T00:00:00Z")))
        .find(|a| a.starts_with("on"));
    assert_eq!(split.as_deref(), Some("on SPLIT"));
    // Whoever was in at 10% stays in at 50% (the same buckets).
    for u in 0..1000 {
        let ctx = json!({"userId": format!("u{u}")});
        if w.answer("ramp", None, ctx.clone(), t("2026-03-15T00:00:00Z")).starts_with("on") {
            assert!(w.answer("ramp", None, ctx, t("2026-04-15T00:00:00Z")).starts_with("on"));
        }
    }
    let mut bad = |schedule: Value| {
        code(w.gate(json!({"key":"bad","license_required":false,
            "strategies":[{"name":"flexibleRollout","parameters":{"rollout":"0"}}],"schedule":schedule})))
    };
    assert_eq!(
        bad(json!([{"at":"2026-04-01T00:00:00Z","rollout":50},{"at":"2026-03-01T00:00:00Z","rollout":60}])),
        "INVALID_GATE"
    );
    assert_eq!(bad(json!([{"at":"2026-04-01T00:00:00Z","rollout":101}])), "INVALID_GATE");
}

/// The issue's sequence: an opt-in cohort at 100% (a segment), then a percentage for
/// everyone on a schedule. The ramp moves the percentage only: the cohort stays in when
/// it starts at 10% (it used to be cut to 10% too).
#[test]
fn a_schedule_moves_the_ramp_and_leaves_cohorts_in() {
    let mut w = World::new();
    w.run(Command::Gates(GateCommand::PutSegment(
        serde_json::from_value(
            json!({"id":9,"name":"opt-in","constraints":[{"contextName":"optIn","operator":"IN","values":["yes"]}]}),
        )
        .unwrap(),
    )))
    .unwrap();
    let flexible = |rollout: &str| json!({"name":"flexibleRollout","parameters":{"rollout":rollout,"stickiness":"userId","groupId":"r"}});
    let mut cohort = flexible("100");
    cohort["segments"] = json!([9]);
    w.gate(json!({"key":"r","license_required":false,"strategies":[cohort, flexible("0")],
        "schedule":[{"at":"2026-03-01T00:00:00Z","rollout":10}]}))
        .unwrap();
    let on = |opt_in: &str, at: &str| {
        (0..1000)
            .filter(|u| {
                let ctx = json!({"userId": format!("u{u}"), "properties": {"optIn": opt_in}});
                w.answer("r", None, ctx, t(at)).starts_with("on")
            })
            .count()
    };
    assert_eq!((on("yes", "2026-02-01T00:00:00Z"), on("no", "2026-02-01T00:00:00Z")), (1000, 0));
    assert_eq!(on("yes", "2026-03-15T00:00:00Z"), 1000, "the cohort keeps its 100%");
    let ten = on("no", "2026-03-15T00:00:00Z");
    assert!((60..=140).contains(&ten), "everyone else ramps to 10%: {ten} of 1000");
}

#[test]
fn every_change_is_a_version_and_rollback_and_kill_add_one() {
    let mut w = World::new();
    let v1 =
        json!({"key":"g","license_required":false,"strategies":[{"name":"userWithId","parameters":{"userIds":"a,b"}}]});
    let v2 =
        json!({"key":"g","license_required":false,"strategies":[{"name":"userWithId","parameters":{"userIds":"c"}}]});
    assert_eq!(code(w.gate(v1.clone())), "1 events");
    assert_eq!(code(w.gate(v1.clone())), "0 events", "an identical put changes nothing");
    assert_eq!(code(w.gate(v2)), "1 events");
    assert_eq!(w.answer("g", None, json!({"userId":"a"}), now()), "off DEFAULT");
    let key = GateKey::parse("g").unwrap();
    let rollback = |v| Command::Gates(GateCommand::Rollback { key: key.clone(), version: v });
    assert_eq!(code(w.run(rollback(1))), "1 events");
    assert_eq!(w.answer("g", None, json!({"userId":"a"}), now()), "on TARGETING_MATCH");
    assert_eq!(code(w.run(rollback(3))), "0 events", "rolling back to what is current changes nothing");
    assert_eq!(code(w.run(rollback(9))), "GATE_VERSION_NOT_FOUND");
    let kill = Command::Gates(GateCommand::Kill { key: key.clone() });
    assert_eq!(code(w.run(kill.clone())), "1 events");
    assert_eq!(code(w.run(kill)), "0 events");
    assert_eq!(w.answer("g", None, json!({"userId":"a"}), now()), "off DISABLED");
    let e = w.state.gate("g").unwrap();
    let history: Vec<(u64, Change, bool)> =
        e.history().map(|v| (v.version, v.change.clone(), v.definition.enabled)).collect();
    assert_eq!(
        history,
        vec![
            (1, Change::Put, true),
            (2, Change::Put, true),
            (3, Change::Rollback { to: 1 }, true),
            (4, Change::Kill, false)
        ]
    );
    assert_eq!(e.version(3).unwrap().definition.strategies, e.version(1).unwrap().definition.strategies);
    assert_eq!(e.compiled().version(), 4);
    let missing = Command::Gates(GateCommand::Kill { key: GateKey::parse("nope").unwrap() });
    assert_eq!(code(w.run(missing)), "GATE_NOT_FOUND");
    // Rolling back past the kill brings the gate back.
    assert_eq!(code(w.run(rollback(2))), "1 events");
    assert_eq!(w.answer("g", None, json!({"userId":"c"}), now()), "on TARGETING_MATCH");
}

#[test]
fn invalid_definitions_are_refused_with_a_reason() {
    let mut w = World::new();
    let rows = [
        json!({"key":"a","strategies":[{"name":"flexibleRollout","parameters":{"rollout":"150"}}]}),
        json!({"key":"a","strategies":[{"name":"default","constraints":[{"contextName":"x","operator":"LIKE","values":[]}]}]}),
        json!({"key":"a","strategies":[{"name":"default","segments":[7]}]}),
        json!({"key":"a","strategies":[],"dependencies":[{"feature":"missing"}]}),
        json!({"key":"a","strategies":[],"dependencies":[{"feature":"a"}]}),
    ];
    let codes: Vec<String> = rows.into_iter().map(|r| code(w.gate(r))).collect();
    assert_eq!(codes, ["INVALID_GATE", "INVALID_GATE", "SEGMENT_NOT_FOUND", "INVALID_GATE", "INVALID_GATE"]);
    let err = serde_json::from_value::<GateSpec>(json!({"key":"a/b","strategies":[]})).unwrap_err();
    assert!(err.to_string().contains("gate key"), "{err}");
    let err = serde_json::from_value::<GateSpec>(json!({"key":"a","strategies":[],"colour":1})).unwrap_err();
    assert!(err.to_string().contains("unknown field"), "{err}");
}

const UNLEASH_DOC: &str = r#"{"version":2,"features":[
  {"name":"checkout-v2","enabled":true,"strategies":[{"name":"flexibleRollout",
     "parameters":{"rollout":100,"stickiness":"default","groupId":"checkout-v2"},"segments":[3]}],
   "variants":[{"name":"a","weight":500,"stickiness":"default","payload":{"type":"string","value":"A"}},
               {"name":"b","weight":500,"stickiness":"default"}]},
  {"name":"render-preview","enabled":true,"strategies":[{"name":"default"}]},
  {"name":"needs-parent","enabled":true,"strategies":[],"dependencies":[{"feature":"render-preview"}]}],
 "segments":[{"id":3,"name":"eu","constraints":[{"contextName":"region","operator":"IN","values":["eu"]}]}]}"#;

#[test]
fn an_unleash_document_imports_all_or_nothing_and_mapped_gates_need_a_license() {
    let mut w = World::new();
    let (_, pro) = w.issue("pro", None, t("2026-01-01T00:00:00Z"));
    let (_, basic) = w.issue("basic", None, t("2026-05-20T00:00:00Z"));
    let document = parse_features_document(UNLEASH_DOC.as_bytes()).unwrap();
    let mapped = BTreeMap::from([(
        "render-preview".to_string(),
        serde_json::from_value(json!({"product":"cad","feature":"render"})).unwrap(),
    )]);
    let import = |mappings| Command::Gates(GateCommand::Import(GateImport { document: document.clone(), mappings }));
    // A mapping to a feature the catalog lacks refuses the whole import.
    let bad = BTreeMap::from([(
        "render-preview".to_string(),
        serde_json::from_value(json!({"product":"cad","feature":"missing"})).unwrap(),
    )]);
    assert_eq!(code(w.run(import(bad))), "UNKNOWN_FEATURE");
    assert_eq!(w.state.gates().count(), 0);
    assert_eq!(code(w.run(import(mapped.clone()))), "4 events", "one segment and three gates");
    assert_eq!(code(w.run(import(mapped))), "0 events", "importing the same document again changes nothing");
    let e = w.state.gate("checkout-v2").unwrap();
    assert_eq!(e.current().change, Change::Import);
    // Unmapped: evaluated as Unleash would, no license needed; the segment applies.
    assert_eq!(
        w.answer("checkout-v2", None, json!({"userId":"u1","properties":{"region":"eu"}}), now()),
        "on TARGETING_MATCH"
    );
    assert_eq!(
        w.answer("checkout-v2", None, json!({"userId":"u1","properties":{"region":"us"}}), now()),
        "off DEFAULT"
    );
    // Mapped: the license must be entitled to cad/render; the dependent gate follows.
    assert_eq!(w.answer("render-preview", Some(&pro), json!({}), now()), "on STATIC");
    assert_eq!(w.answer("render-preview", Some(&basic), json!({}), now()), "off UNLICENSED NOT_ENTITLED");
    assert_eq!(w.answer("needs-parent", Some(&pro), json!({}), now()), "on STATIC");
    assert_eq!(w.answer("needs-parent", Some(&basic), json!({}), now()), "off DEFAULT");
    // The SDK's ruleset evaluates the same as the server's state.
    let ruleset = tollgate_core::gate::Ruleset::new(&ruleset_of(&w.state));
    let ctx: Context = serde_json::from_value(json!({"userId":"u7","properties":{"region":"eu"}})).unwrap();
    let server = evaluate(&w.state, "checkout-v2", &ctx, None, now(), 0).unwrap();
    let sdk = evaluate(&ruleset, "checkout-v2", &ctx, None, now(), 0).unwrap();
    assert_eq!(server, sdk);
    assert_eq!(server.reason, Reason::TargetingMatch);
    assert!(matches!(server.variant.name, "a" | "b"));

    // The document again without its mapping: the gate keeps the license binding it
    // has (it used to lose it, and was then served to every subject, licensed or not).
    assert_eq!(code(w.run(import(BTreeMap::new()))), "0 events", "nothing changed for it");
    let e = w.state.gate("render-preview").unwrap();
    assert!(e.current().definition.license_required && e.current().definition.feature.is_some());
    assert_eq!(w.answer("render-preview", Some(&basic), json!({}), now()), "off UNLICENSED NOT_ENTITLED");
    assert_eq!(w.answer("render-preview", None, json!({}), now()), "off UNLICENSED LICENSE_MISSING");
}

#[test]
fn an_import_takes_dangling_references_as_unleash_does_and_answers_off() {
    let mut w = World::new();
    let document = parse_features_document(
        json!({"version":2,"segments":[],"features":[
            {"name":"seg","enabled":true,"strategies":[{"name":"default","segments":[404]}]},
            {"name":"root","enabled":true,"strategies":[{"name":"default"}]},
            {"name":"mid","enabled":true,"strategies":[{"name":"default"}],"dependencies":[{"feature":"root"}]},
            {"name":"leaf","enabled":true,"strategies":[{"name":"default"}],"dependencies":[{"feature":"mid"}]},
            {"name":"orphan","enabled":true,"strategies":[{"name":"default"}],"dependencies":[{"feature":"gone"}]}
        ]})
        .to_string()
        .as_bytes(),
    )
    .unwrap();
    let import = Command::Gates(GateCommand::Import(GateImport { document, mappings: BTreeMap::new() }));
    assert_eq!(code(w.run(import)), "5 events");
    assert_eq!(w.answer("seg", None, json!({}), now()), "off DEFAULT", "a missing segment never matches");
    assert_eq!(w.answer("mid", None, json!({}), now()), "on STATIC");
    assert_eq!(w.answer("leaf", None, json!({}), now()), "off DEFAULT", "one level of dependencies only");
    assert_eq!(w.answer("orphan", None, json!({}), now()), "off DEFAULT", "a missing parent is off");
    // The segment arriving later brings the strategy to life (the gate is recompiled).
    let segment = serde_json::from_value(json!({"id":404,"constraints":[]})).unwrap();
    assert_eq!(code(w.run(Command::Gates(GateCommand::PutSegment(segment)))), "1 events");
    assert_eq!(w.answer("seg", None, json!({}), now()), "on STATIC");
    // Written directly, the same dangling references are refused.
    assert_eq!(code(w.gate(json!({"key":"x","strategies":[{"name":"default","segments":[9]}]}))), "SEGMENT_NOT_FOUND");
}

#[test]
fn preview_lists_the_licenses_whose_answer_would_change() {
    let mut w = World::new();
    let mut pros = Vec::new();
    for _ in 0..5 {
        pros.push(w.issue("pro", None, t("2026-01-01T00:00:00Z")).0);
    }
    for _ in 0..3 {
        w.issue("basic", None, t("2026-05-20T00:00:00Z"));
    }
    let spec = |strategies: Value| -> GateSpec {
        serde_json::from_value(json!({"key":"render-beta","feature":{"product":"cad","feature":"render"},
            "strategies":strategies}))
        .unwrap()
    };
    let template = Context::default();
    let q = |after, limit| PreviewQuery { context: &template, now: now(), random: 0, after, limit };
    // A new gate on for everyone entitled: exactly the five pro licenses change.
    let all = preview(&w.state, &spec(json!([{"name":"default"}])), q(None, 100)).unwrap();
    assert_eq!((all.evaluated, all.changed), (8, 5));
    let mut listed: Vec<String> = all.changes.iter().map(|c| c.license.clone()).collect();
    let mut want: Vec<String> = pros.iter().map(|p| p.to_string()).collect();
    listed.sort();
    want.sort();
    assert_eq!(listed, want);
    assert!(all.changes.iter().all(|c| !c.before && c.after));
    // Paginated: 2 + 2 + 1, in id order, without repeats.
    let first = preview(&w.state, &spec(json!([{"name":"default"}])), q(None, 2)).unwrap();
    assert_eq!(first.changes.len(), 2);
    let after = first.next_after.clone().unwrap();
    let second = preview(&w.state, &spec(json!([{"name":"default"}])), q(Some(&after), 2)).unwrap();
    let third = preview(&w.state, &spec(json!([{"name":"default"}])), q(second.next_after.as_deref(), 2)).unwrap();
    assert_eq!(third.next_after, None);
    let paged: Vec<String> =
        [first.changes, second.changes, third.changes].concat().into_iter().map(|c| c.license).collect();
    let mut sorted = listed.clone();
    sorted.sort();
    assert_eq!(paged, sorted);
    // Nothing was saved; once saved, the same proposal changes nothing.
    assert!(w.state.gate("render-beta").is_none());
    w.run(Command::Gates(GateCommand::Put(spec(json!([{"name":"default"}]))))).unwrap();
    let same = preview(&w.state, &spec(json!([{"name":"default"}])), q(None, 100)).unwrap();
    assert_eq!(same.changed, 0);
    // Narrowing to a user list turns every pro license off (their userId is their id).
    let narrowed =
        preview(&w.state, &spec(json!([{"name":"userWithId","parameters":{"userIds":"nobody"}}])), q(None, 100))
            .unwrap();
    assert_eq!(narrowed.changed, 5);
    assert!(narrowed.changes.iter().all(|c| c.before && !c.after));
}

#[test]
fn gates_survive_snapshots_with_the_same_digest() {
    let mut w = World::new();
    let empty_digest = w.state.digest().unwrap();
    let encoded = String::from_utf8(w.state.encode().unwrap()).unwrap();
    assert!(!encoded.contains("gate"), "a state without gates encodes as before");
    let document = parse_features_document(UNLEASH_DOC.as_bytes()).unwrap();
    w.run(Command::Gates(GateCommand::Import(GateImport { document, mappings: BTreeMap::new() }))).unwrap();
    w.run(Command::Gates(GateCommand::Kill { key: GateKey::parse("render-preview").unwrap() })).unwrap();
    let digest = w.state.digest().unwrap();
    assert_ne!(digest, empty_digest);
    let back = State::decode(&w.state.encode().unwrap()).unwrap();
    assert_eq!(back.digest().unwrap(), digest);
    assert_eq!(back.gate("render-preview").unwrap().history().len(), 2);
    let ctx: Context = serde_json::from_value(json!({"userId":"u1","properties":{"region":"eu"}})).unwrap();
    for gate in ["checkout-v2", "render-preview", "needs-parent"] {
        assert_eq!(
            evaluate(&back, gate, &ctx, None, now(), 3),
            evaluate(&w.state, gate, &ctx, None, now(), 3),
            "{gate} answers the same after a snapshot"
        );
    }
}

/// A segment reference costs a few bytes and stands for all of the segment's
/// constraints, so references are bounded apart from the definition's size, and each
/// segment is compiled once per gate however often it is named.
#[test]
fn segment_references_are_bounded_and_a_repeated_one_holds_as_once() {
    let mut w = World::new();
    let segment = serde_json::from_value(
        json!({"id":3,"constraints":[{"contextName":"region","operator":"IN","values":["eu"]}]}),
    )
    .unwrap();
    assert_eq!(code(w.run(Command::Gates(GateCommand::PutSegment(segment)))), "1 events");
    let gate = |strategies: serde_json::Value| json!({"key":"x","license_required":false,"strategies":strategies});
    let naming = |times: usize| json!({"name":"default","segments":vec![3; times]});
    assert_eq!(code(w.gate(gate(json!([naming(11)])))), "INVALID_GATE", "11 in one strategy");
    assert_eq!(code(w.gate(gate(json!(vec![naming(10); 6])))), "INVALID_GATE", "60 across strategies");
    assert_eq!(code(w.gate(gate(json!(vec![naming(10); 5])))), "1 events", "50 across strategies");
    assert_eq!(code(w.gate(gate(json!([naming(2)])))), "1 events");
    assert_eq!(w.answer("x", None, json!({"properties":{"region":"eu"}}), now()), "on TARGETING_MATCH");
    assert_eq!(w.answer("x", None, json!({"properties":{"region":"us"}}), now()), "off DEFAULT");
}

/// Every random strategy draws anew, as in Unleash: two 50% random strategies let in
/// about 75%, and a random child of a random parent about 25%. One draw used to serve
/// them all (50% and 50%).
#[test]
fn random_strategies_are_independent_chances() {
    let mut w = World::new();
    let random = |p: u32| json!({"name":"gradualRolloutRandom","parameters":{"percentage": p.to_string()}});
    w.gate(json!({"key":"twice","license_required":false,"strategies":[random(50), random(50)]})).unwrap();
    w.gate(json!({"key":"parent","license_required":false,"strategies":[random(50)]})).unwrap();
    w.gate(
        json!({"key":"child","license_required":false,"strategies":[random(50)],"dependencies":[{"feature":"parent"}]}),
    )
    .unwrap();
    let ctx = Context::default();
    let on = |key: &str| {
        (0..4000u32)
            .filter(|i| evaluate(&w.state, key, &ctx, None, now(), i.wrapping_mul(2_654_435_761)).unwrap().enabled)
            .count()
    };
    let twice = on("twice");
    assert!((2800..=3200).contains(&twice), "about 75% of 4000: {twice}");
    let child = on("child");
    assert!((800..=1200).contains(&child), "about 25% of 4000: {child}");
}

/// A product keeps a feature a gate is bound to, as it keeps one a plan grants: gone,
/// the gate would be off for everyone and refused on its next import.
#[test]
fn a_product_keeps_a_feature_a_gate_is_bound_to() {
    let mut w = World::new();
    let update = |features: Value| {
        Command::UpdateProduct(serde_json::from_value(json!({"key":"cad","name":"CAD","features":features})).unwrap())
    };
    let three = json!([{"key":"export","name":"Export"},{"key":"render","name":"Render"},{"key":"beta","name":"Beta"}]);
    w.run(update(three)).unwrap();
    w.gate(json!({"key":"b","feature":{"product":"cad","feature":"beta"},"strategies":[{"name":"default"}]})).unwrap();
    let refused =
        w.run(update(json!([{"key":"export","name":"Export"},{"key":"render","name":"Render"}]))).unwrap_err();
    assert_eq!(refused.code, "FEATURE_IN_USE");
    assert!(refused.detail.contains("gate 'b'"), "{}", refused.detail);
}
