//! Validation codes at chosen instants, to the millisecond at the grace boundaries.

use super::*;

#[test]
fn validation_codes_at_chosen_instants() {
    let mut w = World::new();
    let [a, m, o, s] = [1, 2, 3, 4].map(lic);
    let unknown = lic(99);
    let mut typo = a.key.to_string().into_bytes();
    typo[0] = if typo[0] == b'A' { b'B' } else { b'A' };
    let typo = String::from_utf8(typo).unwrap();
    let sloppy = a.key.as_str().replace('-', "").to_lowercase();
    check(
        &mut w,
        vec![
            (day(0), issue(&a, "annual"), "license_issued expires_at=d365"),
            (day(0), issue(&m, "monthly"), "license_issued expires_at=d30"),
            (
                day(0),
                issue_with(&o, "other-basic", |c| c.product = ProductKey::parse("other").unwrap()),
                "license_issued expires_at=d365",
            ),
            (day(0), issue(&s, "annual"), "license_issued expires_at=d365"),
            (day(0), suspend(&s), "license_suspended"),
            // Term, then grace from expires_at inclusive to its end exclusive, then expired.
            (day(0), valid(&a), "VALID"),
            (day_ms(365, -1), valid(&a), "VALID"),
            (day(365), valid(&a), "GRACE_PERIOD"),
            (day_ms(379, -1), valid(&a), "GRACE_PERIOD"),
            (day(379), valid(&a), "EXPIRED"),
            (day(10_000), valid(&a), "EXPIRED"),
            // Without grace days, expired at expires_at.
            (day_ms(30, -1), valid(&m), "VALID"),
            (day(30), valid(&m), "EXPIRED"),
            // Features: granted, in the product but not the plan, unknown anywhere.
            (day(1), valid_feature(&a, "export"), "VALID"),
            (day(1), valid_feature(&a, "cloud"), "FEATURE_NOT_ENTITLED"),
            (day(1), valid_feature(&a, "teleport"), "FEATURE_NOT_ENTITLED"),
            (day(1), valid_feature(&a, ""), "FEATURE_NOT_ENTITLED"),
            (day(370), valid_feature(&a, "render"), "GRACE_PERIOD"),
            (day(370), valid_feature(&a, "cloud"), "FEATURE_NOT_ENTITLED"),
            // Standing is answered before features.
            (day(379), valid_feature(&a, "cloud"), "EXPIRED"),
            (day(1), valid_feature(&s, "cloud"), "SUSPENDED"),
            (day(1), valid(&s), "SUSPENDED"),
            (day(400), valid(&s), "SUSPENDED"),
            // Keys: unknown, malformed in several ways, or loosely spelled.
            (day(1), valid(&unknown), "NOT_FOUND"),
            (day(1), valid_text(""), "MALFORMED_KEY"),
            (day(1), valid_text("ABC"), "MALFORMED_KEY"),
            (day(1), valid_text(&format!("{}A", a.key)), "MALFORMED_KEY"),
            (day(1), valid_text(&format!("0{}", &a.key.as_str()[1..])), "MALFORMED_KEY"),
            (day(1), valid_text(&typo), "MALFORMED_KEY"),
            (day(1), valid_text(&sloppy), "VALID"),
            (day(1), valid_text(&format!("  {}  ", a.key.as_str().replace('-', " "))), "VALID"),
            // A product-scoped caller sees only that product's licenses.
            (day(1), valid_in(&a, "cad"), "VALID"),
            (day(1), valid_in(&a, "other"), "NOT_FOUND"),
            (day(1), valid_in(&o, "other"), "VALID"),
            (day(1), valid_in(&o, "cad"), "NOT_FOUND"),
            (day(1), valid_in(&s, "other"), "NOT_FOUND"),
            (day(1), valid_in(&unknown, "cad"), "NOT_FOUND"),
        ],
    );
    // What a resolved key reports beside its code.
    let v = validate(&w.state, a.key.as_str(), Scope::default(), day(370));
    assert_eq!(v.license.map(|l| &l.id), Some(&a.id));
    assert_eq!(v.plan.map(|p| p.key.as_str()), Some("annual"));
    assert_eq!(
        v.standing,
        Some(tollgate_core::license::Standing::Grace { ends_at: day(379) }),
        "grace reports when it ends"
    );
    let v = validate(&w.state, "ABC", Scope::default(), day(1));
    assert_eq!(v.detail, Some(tollgate_core::key::KeyError::Length(3)));
}
