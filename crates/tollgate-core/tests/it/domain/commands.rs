//! `decide` over the catalog and the license lifecycle: every refusal code, the
//! idempotent no-ops, and the expiry math of renewals and plan changes.

use super::*;

#[test]
fn catalog_creates_are_idempotent_and_conflicts_are_refused() {
    let features = |keys: &[&str]| Value::from_iter(keys.iter().map(|k| json!({"key": k, "name": k})));
    let mut w = World::new();
    let teleport = with(annual(), "key", json!("teleport"));
    check(
        &mut w,
        vec![
            (day(1), create_product(cad()), "no events"),
            (day(1), create_product(with(cad(), "name", json!("CAD 2"))), "refused PRODUCT_EXISTS"),
            (day(1), create_product(with(cad(), "features", json!([]))), "refused PRODUCT_EXISTS"),
            (day(1), create_product(with(cad(), "name", json!(" "))), "refused INVALID_INPUT"),
            (day(1), update_product(with(other(), "key", json!("ghost"))), "refused PRODUCT_NOT_FOUND"),
            // `render` is granted by `annual` and `trial`.
            (day(1), update_product(with(cad(), "features", features(&["export", "cloud"]))), "refused FEATURE_IN_USE"),
            // `legacy` is granted by no plan.
            (
                day(1),
                update_product(with(cad(), "features", features(&["export", "render", "cloud"]))),
                "product_updated",
            ),
            (day(1), update_product(with(cad(), "features", features(&["export", "render", "cloud"]))), "no events"),
            (day(1), create_plan(annual()), "no events"),
            (day(1), create_plan(with(annual(), "duration_days", json!(30))), "refused PLAN_EXISTS"),
            (day(1), create_plan(with(teleport.clone(), "features", json!(["teleport"]))), "refused UNKNOWN_FEATURE"),
            // `legacy` was removed above; `x` belongs to another product.
            (day(1), create_plan(with(teleport.clone(), "features", json!(["legacy"]))), "refused UNKNOWN_FEATURE"),
            (day(1), create_plan(with(teleport.clone(), "features", json!(["x"]))), "refused UNKNOWN_FEATURE"),
            (day(1), create_plan(with(teleport.clone(), "product", json!("ghost"))), "refused PRODUCT_NOT_FOUND"),
            (day(1), create_plan(with(teleport.clone(), "duration_days", json!(0))), "refused INVALID_INPUT"),
            (day(1), update_plan(teleport), "refused PLAN_NOT_FOUND"),
            (day(1), update_plan(with(annual(), "product", json!("other"))), "refused INVALID_INPUT"),
            (day(1), update_plan(annual()), "no events"),
            (day(1), update_plan(with(annual(), "grace_days", json!(30))), "plan_updated"),
        ],
    );
    assert_eq!(w.state.product("cad").unwrap().version, 2);
    assert_eq!(w.state.plan("annual").unwrap().version, 2);
}

#[test]
fn issuing_refuses_collisions_mismatches_and_past_expiry() {
    let mut w = World::new();
    let (a, b) = (lic(1), lic(2));
    check(
        &mut w,
        vec![
            (day(0), issue(&a, "annual"), "license_issued expires_at=d365"),
            // The same drawn id with a fresh key, and a fresh id with the same key.
            (day(0), issue_with(&b, "annual", |c| c.id = a.id.clone()), "refused LICENSE_EXISTS"),
            (day(0), issue_with(&b, "annual", |c| c.key = a.key.clone()), "refused LICENSE_EXISTS"),
            (day(0), issue(&b, "ghost"), "refused PLAN_NOT_FOUND"),
            (day(0), issue(&b, "other-basic"), "refused PLAN_PRODUCT_MISMATCH"),
            (
                day(0),
                issue_with(&b, "annual", |c| c.product = ProductKey::parse("other").unwrap()),
                "refused PLAN_PRODUCT_MISMATCH",
            ),
            (day(5), issue_with(&b, "annual", |c| c.expires_at = Some(day(5))), "refused INVALID_EXPIRY"),
            (day(5), issue_with(&b, "annual", |c| c.expires_at = Some(day_ms(5, -1))), "refused INVALID_EXPIRY"),
            (day(5), issue_with(&b, "annual", |c| c.licensee = " ".into()), "refused INVALID_INPUT"),
            (day(5), issue_with(&b, "annual", |c| c.licensee = "a\nb".into()), "refused INVALID_INPUT"),
            (day(5), issue_with(&b, "annual", |c| c.licensee = "x".repeat(257)), "refused INVALID_INPUT"),
            (day(5), valid(&b), "NOT_FOUND"),
            // An explicit expiry overrides the plan's, even on a perpetual plan.
            (
                day(5),
                issue_with(&b, "perpetual", |c| c.expires_at = Some(day_ms(5, 1))),
                "license_issued expires_at=d5+1ms",
            ),
            (day_ms(5, 0), valid(&b), "VALID"),
            (day_ms(5, 1), valid(&b), "EXPIRED"),
        ],
    );
}

#[test]
fn lifecycle_transitions_no_ops_and_refusals() {
    let mut w = World::new();
    let (a, p, ghost) = (lic(1), lic(2), lic(9));
    check(
        &mut w,
        vec![
            (day(0), issue(&a, "annual"), "license_issued expires_at=d365"),
            (day(0), valid(&a), "VALID"),
            (day(1), suspend(&a), "license_suspended"),
            (day(1), suspend(&a), "no events"),
            (day(1), valid(&a), "SUSPENDED"),
            (day(2), reinstate(&a), "license_reinstated"),
            (day(2), reinstate(&a), "no events"),
            (day(2), valid(&a), "VALID"),
            // A suspended license can still be renewed and moved; it stays suspended.
            (day(3), suspend(&a), "license_suspended"),
            (day(3), renew(&a), "license_renewed expires_at=d730"),
            (day(3), change_plan(&a, "monthly"), "license_plan_changed plan=monthly expires_at=d730"),
            (day(3), valid(&a), "SUSPENDED"),
            // Revoking a suspended license is allowed, and final.
            (day(4), revoke(&a), "license_revoked"),
            (day(4), revoke(&a), "no events"),
            (day(4), valid(&a), "REVOKED"),
            (day(5), suspend(&a), "refused LICENSE_REVOKED"),
            (day(5), reinstate(&a), "refused LICENSE_REVOKED"),
            (day(5), renew(&a), "refused LICENSE_REVOKED"),
            (day(5), change_plan(&a, "annual"), "refused LICENSE_REVOKED"),
            (day(5), valid(&a), "REVOKED"),
            (day(5000), valid(&a), "REVOKED"),
            // Every lifecycle command names a license that must exist.
            (day(5), suspend(&ghost), "refused LICENSE_NOT_FOUND"),
            (day(5), reinstate(&ghost), "refused LICENSE_NOT_FOUND"),
            (day(5), revoke(&ghost), "refused LICENSE_NOT_FOUND"),
            (day(5), renew(&ghost), "refused LICENSE_NOT_FOUND"),
            (day(5), change_plan(&ghost, "annual"), "refused LICENSE_NOT_FOUND"),
            // Perpetual licenses have nothing to renew; plan changes check the plan.
            (day(5), issue(&p, "perpetual"), "license_issued expires_at=never"),
            (day(5), renew(&p), "refused NOT_RENEWABLE"),
            (day(5), change_plan(&p, "perpetual"), "no events"),
            (day(5), change_plan(&p, "ghost"), "refused PLAN_NOT_FOUND"),
            (day(5), change_plan(&p, "other-basic"), "refused PLAN_PRODUCT_MISMATCH"),
            (day(5000), valid(&p), "VALID"),
        ],
    );
    let a = w.state.license(a.id.as_str()).unwrap();
    assert_eq!((a.status, a.version, a.updated_at), (Status::Revoked, 7, day(4)));
}

#[test]
fn subscription_renewal_continues_the_term_until_grace_ends_then_starts_anew() {
    // `annual`: 365 days, 14 days of grace, so issued on day 0 it expires on day 365
    // and its grace ends on day 379.
    let mut w = World::new();
    let [a, b, c, d, e, f] = [1, 2, 3, 4, 5, 6].map(lic);
    let mut rows = Vec::new();
    for l in [&a, &b, &c, &d, &e] {
        rows.push((day(0), issue(l, "annual"), "license_issued expires_at=d365"));
    }
    rows.extend([
        // During the term: from expires_at, so early renewals stack.
        (day(100), renew(&a), "license_renewed expires_at=d730"),
        (day(100), renew(&a), "license_renewed expires_at=d1095"),
        // During grace, from its first to its last millisecond: still from expires_at.
        (day(365), renew(&b), "license_renewed expires_at=d730"),
        (day_ms(379, -1), renew(&c), "license_renewed expires_at=d730"),
        // Once grace has ended: a fresh term from now.
        (day(379), renew(&d), "license_renewed expires_at=d744"),
        (day_ms(500, 7), renew(&e), "license_renewed expires_at=d865+7ms"),
        (day_ms(500, 7), valid(&e), "VALID"),
        // An explicit expiry is renewed by the plan's term too.
        (day(10), issue_with(&f, "annual", |c| c.expires_at = Some(day(30))), "license_issued expires_at=d30"),
        (day(20), renew(&f), "license_renewed expires_at=d395"),
    ]);
    check(&mut w, rows);
}

#[test]
fn trials_renew_by_the_trial_term_and_convert_on_a_plan_change() {
    // `trial`: 14 trial days, then 365-day terms, 3 days of grace.
    let mut w = World::new();
    let [t1, t2, t3, t4] = [1, 2, 3, 4].map(lic);
    check(
        &mut w,
        vec![
            (day(0), issue(&t1, "trial"), "license_issued expires_at=d14 trial"),
            (day(10), renew(&t1), "license_renewed expires_at=d28"),
            (day(16), valid_feature(&t1, "cloud"), "VALID"),
            // Converting to a paid plan starts that plan's term now; the key stays.
            (day(20), change_plan(&t1, "annual"), "license_plan_changed plan=annual expires_at=d385"),
            (day(20), valid_feature(&t1, "cloud"), "FEATURE_NOT_ENTITLED"),
            (day(20), renew(&t1), "license_renewed expires_at=d750"),
            // A trial past its grace renews from now, by the trial term.
            (day(0), issue(&t2, "trial"), "license_issued expires_at=d14 trial"),
            (day(16), valid(&t2), "GRACE_PERIOD"),
            (day(17), valid(&t2), "EXPIRED"),
            (day(40), renew(&t2), "license_renewed expires_at=d54"),
            // Trial to perpetual drops expiry; trial to another trial plan is a new trial.
            (day(0), issue(&t3, "trial"), "license_issued expires_at=d14 trial"),
            (day(5), change_plan(&t3, "perpetual"), "license_plan_changed plan=perpetual expires_at=never"),
            (day(0), issue(&t4, "trial"), "license_issued expires_at=d14 trial"),
            (day(5), change_plan(&t4, "monthly"), "license_plan_changed plan=monthly expires_at=d35"),
            (day(6), change_plan(&t4, "trial"), "license_plan_changed plan=trial expires_at=d35"),
        ],
    );
    assert!(
        !w.state.license(t4.id.as_str()).unwrap().trial,
        "a paid license moved to a plan with a trial is not a trial"
    );
}

/// A trial converts to its own plan's paid term in place (changing to the plan it is
/// on), never starts again on a plan that only offers trials, and a perpetual license
/// keeps an expiry set by hand when it moves to another perpetual plan.
#[test]
fn a_trial_converts_in_place_and_never_starts_again() {
    let mut w = World::new();
    let [t1, t2, p] = [1, 2, 3].map(lic);
    let eval = json!({"key":"eval","product":"cad","name":"Evaluation","features":["export"],"trial_days":7});
    let plus = json!({"key":"perpetual-plus","product":"cad","name":"Perpetual plus","features":["export","render"]});
    check(
        &mut w,
        vec![
            (day(0), create_plan(eval), "plan_created"),
            (day(0), create_plan(plus), "plan_created"),
            (day(0), issue(&t1, "trial"), "license_issued expires_at=d14 trial"),
            // Paid for on day 10: the plan's 365-day term starts now, same plan, same key.
            (day(10), change_plan(&t1, "trial"), "license_plan_changed plan=trial expires_at=d375"),
            (day(11), change_plan(&t1, "trial"), "no events"),
            (day(20), renew(&t1), "license_renewed expires_at=d740"),
            // Trial to a trial-only plan and back: the trial goes on, it does not restart;
            // the way back to a plan with a paid term converts it.
            (day(0), issue(&t2, "trial"), "license_issued expires_at=d14 trial"),
            (day(5), change_plan(&t2, "eval"), "license_plan_changed plan=eval expires_at=d14 trial"),
            (day(6), change_plan(&t2, "eval"), "no events"),
            (day(6), change_plan(&t2, "trial"), "license_plan_changed plan=trial expires_at=d371"),
            // An expiry set by hand on a perpetual plan stays through a perpetual plan change.
            (day(0), issue_with(&p, "perpetual", |c| c.expires_at = Some(day(100))), "license_issued expires_at=d100"),
            (day(5), change_plan(&p, "perpetual-plus"), "license_plan_changed plan=perpetual-plus expires_at=d100"),
        ],
    );
}

#[test]
fn paid_plan_changes_keep_the_term_bought_and_perpetual_drops_it() {
    let mut w = World::new();
    let [a, p, q, x, e, y, t] = [1, 2, 3, 4, 5, 6, 7].map(lic);
    check(
        &mut w,
        vec![
            (day(0), issue(&a, "annual"), "license_issued expires_at=d365"),
            (day(10), change_plan(&a, "monthly"), "license_plan_changed plan=monthly expires_at=d365"),
            (day(10), change_plan(&a, "perpetual"), "license_plan_changed plan=perpetual expires_at=never"),
            (day(11), renew(&a), "refused NOT_RENEWABLE"),
            (day(9000), valid(&a), "VALID"),
            // From perpetual to a term plan: the term starts now.
            (day(0), issue(&p, "perpetual"), "license_issued expires_at=never"),
            (day(50), change_plan(&p, "monthly"), "license_plan_changed plan=monthly expires_at=d80"),
            // A paid license is not a trial, so a plan's trial term does not apply to it.
            (day(0), issue(&q, "perpetual"), "license_issued expires_at=never"),
            (day(50), change_plan(&q, "trial"), "license_plan_changed plan=trial expires_at=d415"),
            // An expired license stays expired: moving it to a plan with a longer grace
            // (annual's 14 days) would bring it back without a renewal, so it is renewed
            // first.
            (day(0), issue(&x, "monthly"), "license_issued expires_at=d30"),
            (day(40), change_plan(&x, "annual"), "refused LICENSE_EXPIRED"),
            (day(40), valid(&x), "EXPIRED"),
            // Suspended, the same: reinstated on the new plan it would be back in grace.
            (day(40), suspend(&x), "license_suspended"),
            (day(40), change_plan(&x, "annual"), "refused LICENSE_EXPIRED"),
            (day(40), reinstate(&x), "license_reinstated"),
            (day(40), renew(&x), "license_renewed expires_at=d70"),
            (day(40), change_plan(&x, "annual"), "license_plan_changed plan=annual expires_at=d70"),
            // A move that drops the term, or a lapsed trial converting to a paid term
            // from now, is a new decision and stands.
            (day(0), issue(&y, "monthly"), "license_issued expires_at=d30"),
            (day(40), change_plan(&y, "perpetual"), "license_plan_changed plan=perpetual expires_at=never"),
            (day(0), issue(&t, "trial"), "license_issued expires_at=d14 trial"),
            (day(40), change_plan(&t, "annual"), "license_plan_changed plan=annual expires_at=d405"),
            // A plan that only offers trials gives a paid license no term: a perpetual
            // license moved to it stays perpetual (it got the trial as a paid term,
            // which no renewal could extend).
            (
                day(0),
                create_plan(json!({"key":"eval","product":"cad","name":"Eval","features":["export"],"trial_days":7})),
                "plan_created",
            ),
            (day(0), issue(&e, "perpetual"), "license_issued expires_at=never"),
            (day(50), change_plan(&e, "eval"), "license_plan_changed plan=eval expires_at=never"),
            (day(9000), valid(&e), "VALID"),
        ],
    );
}
