//! The licensing models with an injected clock: machines, seats, leases, metered
//! usage with period rollover, grace, overrides and a licensee's entitlements. Every
//! step goes through `decide` and `apply`, as the server does.

use serde_json::json;
use tollgate_core::catalog::{PlanSpec, ProductSpec};
use tollgate_core::command::IssueLicense;
use tollgate_core::ids::{LicenseId, MeterKey, PlanKey, ProductKey};
use tollgate_core::key::LicenseKey;
use tollgate_core::lease::LeaseId;
use tollgate_core::machine::{Fingerprint, MachineSpec};
use tollgate_core::models::ModelCommand;
use tollgate_core::overrides::Overrides;
use tollgate_core::seat::UserId;
use tollgate_core::validate::{Scope, validate};
use tollgate_core::{Command, Meta, Refusal, State, Timestamp, decide};

fn t(s: &str) -> Timestamp {
    Timestamp::parse(s).unwrap()
}

struct World {
    state: State,
    n: u8,
}

impl World {
    /// Product `app` (features a..d) and plans: `node` (a, b; 2 machines, 2 users,
    /// 365 days + 10 grace), `float` (a; 2 leases of 60 s), `metered` (a; meters
    /// `calls` 100/day block, `bytes` 1000/month +10%, `seats` 5 total allow).
    fn new() -> Self {
        let mut w = World { state: State::default(), n: 0 };
        let product: ProductSpec = serde_json::from_value(json!({"key":"app","name":"App","features":[
            {"key":"a","name":"A"},{"key":"b","name":"B"},{"key":"c","name":"C"},{"key":"d","name":"D"}]}))
        .unwrap();
        w.run(Command::CreateProduct(product), t("2026-01-01T00:00:00Z")).unwrap();
        for plan in [
            json!({"key":"node","product":"app","name":"Node","features":["a","b"],"duration_days":365,"grace_days":10,"max_machines":2,"max_users":2}),
            json!({"key":"float","product":"app","name":"Float","features":["a"],"floating":{"max_leases":2,"lease_ttl_seconds":60}}),
            json!({"key":"metered","product":"app","name":"Metered","features":["a"],"meters":[
                {"key":"calls","quota":100,"period":"day"},
                {"key":"bytes","quota":1000,"period":"month","overage":{"allow_percent":10}},
                {"key":"seats","quota":5,"period":"total","overage":"allow"}]}),
        ] {
            let spec: PlanSpec = serde_json::from_value(plan).unwrap();
            w.run(Command::CreatePlan(spec), t("2026-01-01T00:00:00Z")).unwrap();
        }
        w
    }

    fn run(&mut self, command: Command, now: Timestamp) -> Result<usize, Refusal> {
        let meta = Meta { actor: "test".into(), reason: None, request_id: "t".into() };
        let events = decide(&self.state, &command, &meta, now)?;
        for e in &events {
            // Every event must survive its canonical encoding and fold from the bytes.
            let bytes = e.encode().unwrap();
            self.state.apply(&tollgate_core::Event::decode(&bytes).unwrap()).unwrap();
        }
        Ok(events.len())
    }

    fn model(&mut self, c: ModelCommand, now: Timestamp) -> Result<usize, Refusal> {
        self.run(Command::Models(c), now)
    }

    fn issue(
        &mut self,
        plan: &str,
        licensee: &str,
        overrides: Option<Overrides>,
        now: Timestamp,
    ) -> (LicenseId, String) {
        self.n += 1;
        let id = LicenseId::from_random([self.n; 16]);
        let key = LicenseKey::from_random([self.n; 15]);
        let issue = IssueLicense {
            id: id.clone(),
            key: key.clone(),
            product: ProductKey::parse("app").unwrap(),
            plan: PlanKey::parse(plan).unwrap(),
            licensee: licensee.into(),
            expires_at: None,
            metadata: Default::default(),
            external_id: None,
        };
        let command = match overrides {
            Some(overrides) => Command::Models(ModelCommand::IssueWithOverrides { issue, overrides }),
            None => Command::IssueLicense(issue),
        };
        self.run(command, now).unwrap();
        (id, key.to_string())
    }

    fn code(&self, key: &str, scope: Scope<'_>, now: Timestamp) -> &'static str {
        validate(&self.state, key, scope, now).code.as_str()
    }
}

fn code(r: Result<usize, Refusal>) -> &'static str {
    match r {
        Ok(0) => "NO_EVENT",
        Ok(_) => "OK",
        Err(e) => e.code,
    }
}

fn fp(s: &str) -> Fingerprint {
    Fingerprint::parse(s).unwrap()
}

fn activate(license: &LicenseId, f: &str) -> ModelCommand {
    ModelCommand::ActivateMachine {
        license: license.clone(),
        machine: MachineSpec { fingerprint: fp(f), name: Some(format!("box {f}")), components: vec![] },
    }
}

#[test]
fn machines_up_to_the_limit_idempotent_and_checked_by_validation() {
    let now = t("2026-02-01T00:00:00Z");
    let mut w = World::new();
    let (id, key) = w.issue("node", "acme", None, now);
    let fpv = |f| Scope { fingerprint: Some(f), ..Scope::default() };
    assert_eq!(w.code(&key, fpv("m1"), now), "FINGERPRINT_NOT_ACTIVATED");
    for (cmd, expected) in [
        (activate(&id, "m1"), "OK"),
        (activate(&id, "m1"), "NO_EVENT"),
        (activate(&id, "m2"), "OK"),
        (activate(&id, "m3"), "MACHINE_LIMIT"),
        (ModelCommand::DeactivateMachine { license: id.clone(), fingerprint: fp("m1") }, "OK"),
        (ModelCommand::DeactivateMachine { license: id.clone(), fingerprint: fp("m1") }, "NO_EVENT"),
        (activate(&id, "m3"), "OK"),
    ] {
        assert_eq!(code(w.model(cmd.clone(), now)), expected, "{cmd:?}");
    }
    assert_eq!(w.code(&key, fpv("m3"), now), "VALID");
    assert_eq!(w.code(&key, fpv("m1"), now), "FINGERPRINT_NOT_ACTIVATED");
    // A suspended license takes no new machines.
    w.run(Command::Suspend(id.clone()), now).unwrap();
    assert_eq!(code(w.model(activate(&id, "m9"), now)), "LICENSE_SUSPENDED");
}

#[test]
fn seats_up_to_the_limit_and_checked_by_validation() {
    let now = t("2026-02-01T00:00:00Z");
    let mut w = World::new();
    let (id, key) = w.issue("node", "acme", None, now);
    let assign = |u: &str| ModelCommand::AssignUser { license: id.clone(), user: UserId::parse(u).unwrap() };
    assert_eq!(code(w.model(assign("ann@x"), now)), "OK");
    assert_eq!(code(w.model(assign("ann@x"), now)), "NO_EVENT");
    assert_eq!(code(w.model(assign("bob@x"), now)), "OK");
    assert_eq!(code(w.model(assign("cy@x"), now)), "SEAT_LIMIT");
    let user = |u| Scope { user: Some(u), ..Scope::default() };
    assert_eq!(w.code(&key, user("ann@x"), now), "VALID");
    assert_eq!(w.code(&key, user("cy@x"), now), "USER_NOT_ASSIGNED");
    let unassign = ModelCommand::UnassignUser { license: id.clone(), user: UserId::parse("ann@x").unwrap() };
    assert_eq!(code(w.model(unassign, now)), "OK");
    assert_eq!(code(w.model(assign("cy@x"), now)), "OK");
    assert_eq!(w.code(&key, user("ann@x"), now), "USER_NOT_ASSIGNED");
}

#[test]
fn leases_count_only_while_unexpired_so_the_limit_has_no_window() {
    let t0 = t("2026-02-01T00:00:00Z");
    let mut w = World::new();
    let (id, key) = w.issue("float", "acme", None, t0);
    let lease = |n: u8| LeaseId::from_random([n; 16]);
    let checkout =
        |n: u8, f: &str| ModelCommand::CheckoutLease { license: id.clone(), lease: lease(n), fingerprint: fp(f) };
    assert_eq!(code(w.model(checkout(1, "a"), t0)), "OK");
    assert_eq!(code(w.model(checkout(2, "b"), t0)), "OK");
    assert_eq!(code(w.model(checkout(3, "c"), t0)), "LEASE_LIMIT");
    // The same fingerprint checking out again renews its lease instead of taking a slot.
    assert_eq!(code(w.model(checkout(4, "a"), t0)), "OK");
    assert!(w.state.lease(lease(4).as_str()).is_none());
    let fpv = |f| Scope { fingerprint: Some(f), ..Scope::default() };
    assert_eq!(w.code(&key, fpv("a"), t0), "VALID", "a live lease counts as activated");
    assert_eq!(w.code(&key, fpv("c"), t0), "FINGERPRINT_NOT_ACTIVATED");

    // Lease 1 is heartbeaten at +50 s (until +110 s); lease 2 stops at +60 s.
    let t50 = Timestamp::from_millis(t0.millis() + 50_000).unwrap();
    assert_eq!(code(w.model(ModelCommand::Heartbeat { lease: lease(1) }, t50)), "OK");
    let t60 = Timestamp::from_millis(t0.millis() + 60_000).unwrap();
    assert_eq!(code(w.model(ModelCommand::Heartbeat { lease: lease(2) }, t60)), "LEASE_EXPIRED");
    // No reaper has run, yet the expired lease's slot is free at once.
    assert_eq!(code(w.model(checkout(3, "c"), t60)), "OK");
    assert_eq!(code(w.model(checkout(5, "d"), t60)), "LEASE_LIMIT");
    // The reaper records only what is still expired at its instant.
    assert_eq!(w.state.expired_leases(t60), vec![lease(2)]);
    let reap = ModelCommand::ExpireLeases { leases: vec![lease(1), lease(2)] };
    assert_eq!(w.model(reap.clone(), t60), Ok(1));
    assert_eq!(w.model(reap, t60), Ok(0));
    assert_eq!(code(w.model(ModelCommand::Heartbeat { lease: lease(2) }, t60)), "LEASE_NOT_FOUND");
    assert_eq!(code(w.model(ModelCommand::ReleaseLease { lease: lease(1) }, t60)), "OK");
    assert_eq!(code(w.model(checkout(5, "d"), t60)), "OK");
    // A plan without floating refuses checkouts.
    let (node, _) = w.issue("node", "acme", None, t0);
    let c = ModelCommand::CheckoutLease { license: node, lease: lease(9), fingerprint: fp("z") };
    assert_eq!(code(w.model(c, t0)), "NOT_FLOATING");
}

#[test]
fn usage_periods_roll_over_on_utc_calendar_time() {
    let mut w = World::new();
    let d1 = t("2026-03-31T23:00:00Z");
    let (id, key) = w.issue("metered", "acme", None, d1);
    let rec = |m: &str, q: u64| ModelCommand::RecordUsage {
        license: id.clone(),
        meter: MeterKey::parse(m).unwrap(),
        quantity: q,
    };
    let used = |w: &World, m: &str, now| {
        let plan = w.state.plan("metered").unwrap();
        let spec = plan.meters.iter().find(|s| s.key.as_str() == m).unwrap();
        w.state.models(id.as_str()).map_or(0, |x| x.used(spec, now))
    };
    // calls: 100 per day, blocking.
    assert_eq!(code(w.model(rec("calls", 60), d1)), "OK");
    assert_eq!(code(w.model(rec("calls", 41), d1)), "QUOTA_EXCEEDED");
    assert_eq!(used(&w, "calls", d1), 60, "a refused record records nothing");
    assert_eq!(code(w.model(rec("calls", 40), d1)), "OK");
    let d2 = t("2026-04-01T00:00:00Z");
    assert_eq!(used(&w, "calls", d2), 0, "midnight UTC starts a new day");
    assert_eq!(code(w.model(rec("calls", 100), d2)), "OK");
    // bytes: 1000 per month, 10% overage allowed.
    assert_eq!(code(w.model(rec("bytes", 1100), d1)), "OK");
    assert_eq!(code(w.model(rec("bytes", 1), d1)), "QUOTA_EXCEEDED");
    assert_eq!(used(&w, "bytes", d2), 0, "April starts a new month");
    assert_eq!(code(w.model(rec("bytes", 1), d2)), "OK");
    // seats: 5 in total, overage allowed; never rolls over.
    assert_eq!(code(w.model(rec("seats", 50), d1)), "OK");
    assert_eq!(used(&w, "seats", t("2030-01-01T00:00:00Z")), 50);
    // A period holds at most 2^53 (what canonical JSON writes exactly), overage or not,
    // so a snapshot folds back to the same total.
    for _ in 0..9 {
        assert_eq!(code(w.model(rec("seats", 1_000_000_000_000_000), d1)), "OK");
    }
    let to_the_top = tollgate_core::meter::MAX_USED - 9_000_000_000_000_050;
    assert_eq!(code(w.model(rec("seats", to_the_top + 1), d1)), "METER_FULL");
    assert_eq!(code(w.model(rec("seats", to_the_top), d1)), "OK");
    assert_eq!(used(&w, "seats", d1), 1 << 53);
    assert_eq!(code(w.model(rec("seats", 1), d1)), "METER_FULL");
    let restored = State::decode(&w.state.encode().unwrap()).unwrap();
    assert_eq!(restored.digest().unwrap(), w.state.digest().unwrap());
    assert_eq!(restored.models(id.as_str()).unwrap().usage, w.state.models(id.as_str()).unwrap().usage);
    assert_eq!(code(w.model(rec("nope", 1), d1)), "METER_NOT_FOUND");
    assert_eq!(code(w.model(rec("calls", 0), d1)), "INVALID_INPUT");
    // Usage needs a usable license; validation is unaffected by usage.
    assert_eq!(w.code(&key, Scope::default(), d2), "VALID");
}

#[test]
fn grace_then_expiry_against_the_instant_asked() {
    let issued = t("2026-01-01T00:00:00Z");
    let mut w = World::new();
    let (id, key) = w.issue("node", "acme", None, issued);
    let expires = t("2027-01-01T00:00:00Z");
    let grace_end = t("2027-01-11T00:00:00Z");
    let at = |s| t(s);
    for (now, expected) in [
        (at("2026-12-31T23:59:59.999Z"), "VALID"),
        (expires, "GRACE_PERIOD"),
        (at("2027-01-10T23:59:59.999Z"), "GRACE_PERIOD"),
        (grace_end, "EXPIRED"),
    ] {
        assert_eq!(w.code(&key, Scope::default(), now), expected, "at {now}");
    }
    let v = validate(&w.state, &key, Scope::default(), expires);
    assert_eq!(v.standing, Some(tollgate_core::license::Standing::Grace { ends_at: grace_end }));
    // In grace the license still takes machines; expired, it does not.
    assert_eq!(code(w.model(activate(&id, "g"), expires)), "OK");
    assert_eq!(code(w.model(activate(&id, "h"), grace_end)), "LICENSE_EXPIRED");
    // Renewal in grace continues the term (no days lost, grace not gained).
    w.run(Command::Renew(id.clone()), expires).unwrap();
    assert_eq!(w.state.license(id.as_str()).unwrap().expires_at, Some(expires.plus_days(365)));
}

/// A lease limit lowered while leases are out (an override, a smaller plan) holds within
/// one lease term: the oldest leases up to the limit keep renewing, the newer ones are
/// refused at their next heartbeat (or checkout) and run out.
#[test]
fn a_lowered_lease_limit_holds_within_one_lease_term() {
    let t0 = t("2026-02-01T00:00:00Z");
    let mut w = World::new();
    let (id, _) = w.issue("float", "acme", None, t0);
    let lease = |n: u8| LeaseId::from_random([n; 16]);
    let at = |s: i64| Timestamp::from_millis(t0.millis() + s * 1000).unwrap();
    let checkout =
        |n: u8, f: &str| ModelCommand::CheckoutLease { license: id.clone(), lease: lease(n), fingerprint: fp(f) };
    assert_eq!(code(w.model(checkout(1, "a"), at(0))), "OK");
    assert_eq!(code(w.model(checkout(2, "b"), at(1))), "OK");
    let one: Overrides = serde_json::from_value(json!({"max_leases":1})).unwrap();
    assert_eq!(code(w.model(ModelCommand::SetOverrides { license: id.clone(), overrides: one }, at(2))), "OK");
    assert_eq!(code(w.model(ModelCommand::Heartbeat { lease: lease(1) }, at(10))), "OK", "the oldest renews");
    assert_eq!(code(w.model(ModelCommand::Heartbeat { lease: lease(2) }, at(10))), "LEASE_LIMIT");
    assert_eq!(code(w.model(checkout(3, "b"), at(11))), "LEASE_LIMIT", "nor renewed by checking out again");
    // Once it ran out, the limit is met, and the oldest goes on.
    assert_eq!(code(w.model(ModelCommand::Heartbeat { lease: lease(1) }, at(55))), "OK");
    assert_eq!(code(w.model(ModelCommand::Heartbeat { lease: lease(2) }, at(65))), "LEASE_EXPIRED");
    assert_eq!(code(w.model(checkout(4, "c"), at(66))), "LEASE_LIMIT");
    assert_eq!(code(w.model(ModelCommand::ReleaseLease { lease: lease(1) }, at(67))), "OK");
    assert_eq!(code(w.model(checkout(4, "c"), at(68))), "OK");
}

#[test]
fn overrides_change_features_and_limits_of_one_license() {
    let now = t("2026-02-01T00:00:00Z");
    let mut w = World::new();
    let o: Overrides =
        serde_json::from_value(json!({"features_add":["c"],"features_remove":["b"],"max_machines":1})).unwrap();
    let (id, key) = w.issue("node", "acme", Some(o), now);
    let feat = |f| Scope { feature: Some(f), ..Scope::default() };
    assert_eq!(w.code(&key, feat("c"), now), "VALID");
    assert_eq!(w.code(&key, feat("b"), now), "FEATURE_NOT_ENTITLED");
    assert_eq!(code(w.model(activate(&id, "m1"), now)), "OK");
    assert_eq!(code(w.model(activate(&id, "m2"), now)), "MACHINE_LIMIT");
    // Changed later by an event; an empty set restores the plan.
    let set = |o: Overrides| ModelCommand::SetOverrides { license: id.clone(), overrides: o };
    assert_eq!(code(w.model(set(Overrides::default()), now)), "OK");
    assert_eq!(w.code(&key, feat("b"), now), "VALID");
    assert_eq!(code(w.model(activate(&id, "m2"), now)), "OK");
    let bad: Overrides = serde_json::from_value(json!({"features_add":["zz"]})).unwrap();
    assert_eq!(code(w.model(set(bad), now)), "UNKNOWN_FEATURE");
    let bad: Overrides = serde_json::from_value(json!({"quotas":{"calls":5}})).unwrap();
    assert_eq!(code(w.model(set(bad), now)), "METER_NOT_FOUND");
    // A feature the overrides grant stays in the product while they do, as one a plan
    // grants does: removed, the license would go on being granted what no longer exists.
    let add_c: Overrides = serde_json::from_value(json!({"features_add":["c"]})).unwrap();
    assert_eq!(code(w.model(set(add_c), now)), "OK");
    let without = |drop: &str| {
        let features: Vec<_> =
            ["a", "b", "c", "d"].into_iter().filter(|f| *f != drop).map(|f| json!({"key": f, "name": f})).collect();
        Command::UpdateProduct(serde_json::from_value(json!({"key":"app","name":"App","features":features})).unwrap())
    };
    let refused = w.run(without("c"), now).unwrap_err();
    assert_eq!(refused.code, "FEATURE_IN_USE");
    assert!(refused.detail.contains(id.as_str()), "{}", refused.detail);
    assert_eq!(w.run(without("d"), now), Ok(1), "a feature nothing grants can go");
    assert_eq!(w.code(&key, feat("c"), now), "VALID");
}

#[test]
fn entitlements_are_the_union_and_the_most_permissive_limit_wins() {
    let now = t("2026-02-01T00:00:00Z");
    let mut w = World::new();
    let (node, _) = w.issue("node", "acme", None, now);
    let o: Overrides = serde_json::from_value(json!({"max_machines":5,"features_add":["d"]})).unwrap();
    let (big, _) = w.issue("node", "acme", Some(o), now);
    let (float, _) = w.issue("float", "acme", None, now);
    let (gone, _) = w.issue("metered", "acme", None, now);
    w.run(Command::Revoke(gone), now).unwrap();
    w.issue("metered", "someone-else", None, now);
    let e = tollgate_core::entitlements::entitlements(&w.state, "acme", now);
    let v = serde_json::to_value(&e).unwrap();
    assert_eq!(e.licenses.len(), 3, "the revoked license does not count: {v}");
    let feats: Vec<_> = e.features.iter().map(|f| f.feature).collect();
    assert_eq!(feats, ["a", "b", "d"]);
    let a = e.features.iter().find(|f| f.feature == "a").unwrap();
    assert_eq!(a.licenses.len(), 3);
    let d = e.features.iter().find(|f| f.feature == "d").unwrap();
    assert_eq!(d.licenses, [big.as_str()]);
    let p = &e.products[0];
    // The floating plan sets no machine limit, so machines are unlimited.
    assert_eq!((p.max_machines, p.max_users, p.max_leases), (None, None, Some(2)), "{v}");
    let _ = (node, float);
    assert!(e.products[0].meters.is_empty(), "the metered license is revoked");
}

#[test]
fn models_survive_a_snapshot_with_the_same_digest() {
    let now = t("2026-02-01T00:00:00Z");
    let mut w = World::new();
    let (id, _) = w.issue("float", "acme", None, now);
    w.model(activate(&id, "m1"), now).unwrap();
    w.model(
        ModelCommand::CheckoutLease { license: id.clone(), lease: LeaseId::from_random([7; 16]), fingerprint: fp("x") },
        now,
    )
    .unwrap();
    let (plain, _) = w.issue("node", "acme", None, now);
    let restored = State::decode(&w.state.encode().unwrap()).unwrap();
    assert_eq!(restored.digest().unwrap(), w.state.digest().unwrap());
    assert!(restored.lease(LeaseId::from_random([7; 16]).as_str()).is_some(), "the lease index is rebuilt");
    assert!(restored.models(plain.as_str()).is_none(), "a plain license has no models record");
}

#[test]
fn a_lowered_machine_or_seat_limit_keeps_the_oldest_and_refuses_the_newest() {
    let now = t("2026-02-01T00:00:00Z");
    let later = |s: i64| Timestamp::from_millis(now.millis() + s * 1000).unwrap();
    let mut w = World::new();
    let (id, key) = w.issue("node", "acme", None, now);
    let assign = |u: &str| ModelCommand::AssignUser { license: id.clone(), user: UserId::parse(u).unwrap() };
    // Activated in this order: m2 before m1, so age decides, not the fingerprint.
    assert_eq!(code(w.model(activate(&id, "m2"), now)), "OK");
    assert_eq!(code(w.model(activate(&id, "m1"), later(1))), "OK");
    assert_eq!(code(w.model(assign("bob@x"), now)), "OK");
    assert_eq!(code(w.model(assign("ann@x"), later(1))), "OK");
    let machine = |f| Scope { fingerprint: Some(f), ..Scope::default() };
    let user = |u| Scope { user: Some(u), ..Scope::default() };
    assert_eq!(w.code(&key, machine("m1"), later(2)), "VALID");
    assert_eq!(w.code(&key, user("ann@x"), later(2)), "VALID");

    // The limits go down to one each (the plan allows two).
    let one: Overrides = serde_json::from_value(json!({"max_machines":1,"max_users":1})).unwrap();
    let set = |o: Overrides| ModelCommand::SetOverrides { license: id.clone(), overrides: o };
    assert_eq!(code(w.model(set(one), later(2))), "OK");
    assert_eq!(w.code(&key, machine("m2"), later(3)), "VALID", "the oldest machine stays");
    assert_eq!(w.code(&key, machine("m1"), later(3)), "TOO_MANY_MACHINES");
    assert_eq!(w.code(&key, user("bob@x"), later(3)), "VALID", "the oldest seat stays");
    assert_eq!(w.code(&key, user("ann@x"), later(3)), "TOO_MANY_USERS");
    assert_eq!(w.code(&key, Scope::default(), later(3)), "VALID", "the license itself stands");
    assert_eq!(code(w.model(activate(&id, "m3"), later(3))), "MACHINE_LIMIT");

    // Giving one back brings the other within the limit.
    let off = ModelCommand::DeactivateMachine { license: id.clone(), fingerprint: fp("m2") };
    assert_eq!(code(w.model(off, later(4))), "OK");
    assert_eq!(w.code(&key, machine("m1"), later(5)), "VALID");
    let off = ModelCommand::UnassignUser { license: id.clone(), user: UserId::parse("bob@x").unwrap() };
    assert_eq!(code(w.model(off, later(4))), "OK");
    assert_eq!(w.code(&key, user("ann@x"), later(5)), "VALID");
}
