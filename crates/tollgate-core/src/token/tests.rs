//! Every refusal of `verify`, table-driven through one `check` helper.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use ed25519_dalek::SigningKey;

use super::*;

const NOW: i64 = 1_800_000_000;

fn at(secs: i64) -> Timestamp {
    Timestamp::from_millis(secs * 1000).unwrap()
}

fn claims() -> Claims {
    Claims {
        iss: "tollgate".into(),
        sub: "lic_0123456789abcdefghjkmnpqrs".into(),
        aud: "cad".into(),
        iat: NOW,
        nbf: NOW,
        exp: NOW + 300,
        jti: "jti-1".into(),
        license: LicenseClaim {
            status: "active".into(),
            plan: "pro".into(),
            features: vec!["a".into()],
            limits: Limits::default(),
            fingerprint: None,
            expires_at: None,
            grace_ends_at: None,
            offline: false,
        },
        nonce: None,
        cnf: None,
    }
}

fn signer() -> TokenSigner {
    TokenSigner::new(SigningKey::from_bytes(&[7; 32]))
}

fn jwks(s: &TokenSigner) -> Jwks {
    let mut j = Jwks::default();
    j.insert(&s.kid, s.verifying_key());
    j
}

/// Forges a token with an arbitrary header, signed by `s` over the real signing input.
fn forge(s: &SigningKey, header: &str, c: &Claims) -> String {
    let input = format!("{}.{}", B64.encode(header), B64.encode(serde_json::to_vec(c).unwrap()));
    let sig = s.sign(input.as_bytes());
    format!("{input}.{}", B64.encode(sig.to_bytes()))
}

fn check(token: &str, v: Verify<'_>, jwks: &Jwks, expected: Result<(), &str>) {
    let got = verify(token, jwks, &v).map(|_| ()).map_err(|e| e.code());
    assert_eq!(got, expected.map_err(|_| expected.unwrap_err()), "token {token}");
}

#[test]
fn round_trip_and_every_refusal() {
    let s = signer();
    let keys = jwks(&s);
    let good = s.sign_claims(TYP_JWT, &claims()).unwrap();
    let v = Verify { audience: Some("cad"), ..Verify::at(at(NOW)) };
    check(&good, v, &keys, Ok(()));
    assert_eq!(verify(&good, &keys, &v).unwrap(), claims());

    // Algorithms other than EdDSA, whatever the signature.
    let kid = &s.kid;
    for alg in ["none", "HS256", "RS256", "ES256", "eddsa", ""] {
        let t = forge(
            &SigningKey::from_bytes(&[7; 32]),
            &format!(r#"{{"alg":"{alg}","kid":"{kid}","typ":"JWT"}}"#),
            &claims(),
        );
        check(&t, v, &keys, Err("TOKEN_ALGORITHM"));
    }
    let unsigned =
        format!("{}.{}.", B64.encode(r#"{"alg":"none"}"#), B64.encode(serde_json::to_vec(&claims()).unwrap()));
    check(&unsigned, v, &keys, Err("TOKEN_ALGORITHM"));

    // Unknown kid, and a key that is not in the set at all.
    let other = TokenSigner::new(SigningKey::from_bytes(&[9; 32]));
    check(&other.sign_claims(TYP_JWT, &claims()).unwrap(), v, &keys, Err("TOKEN_UNKNOWN_KID"));
    // A token claiming our kid but signed by another key.
    let t =
        forge(&SigningKey::from_bytes(&[9; 32]), &format!(r#"{{"alg":"EdDSA","kid":"{kid}","typ":"JWT"}}"#), &claims());
    check(&t, v, &keys, Err("TOKEN_BAD_SIGNATURE"));
    // A payload changed after signing.
    let mut parts: Vec<&str> = good.split('.').collect();
    let mut c = claims();
    c.license.features.push("b".into());
    let tampered_payload = B64.encode(serde_json::to_vec(&c).unwrap());
    parts[1] = &tampered_payload;
    check(&parts.join("."), v, &keys, Err("TOKEN_BAD_SIGNATURE"));

    // Wrong audience.
    check(&good, Verify { audience: Some("other"), ..v }, &keys, Err("TOKEN_WRONG_AUDIENCE"));
    // Expired: within leeway passes, past it fails; nbf likewise.
    check(&good, Verify { now: at(NOW + 300 + 60), ..v }, &keys, Ok(()));
    check(&good, Verify { now: at(NOW + 300 + 61), ..v }, &keys, Err("TOKEN_EXPIRED"));
    check(&good, Verify { now: at(NOW + 400), leeway: 120, ..v }, &keys, Ok(()));
    check(&good, Verify { now: at(NOW - 60), ..v }, &keys, Ok(()));
    check(&good, Verify { now: at(NOW - 61), ..v }, &keys, Err("TOKEN_NOT_YET_VALID"));
    check(&good, Verify { now: at(NOW - 61), leeway: 0, ..v }, &keys, Err("TOKEN_NOT_YET_VALID"));
    // A leeway or an expiry at the end of the range saturates (it overflowed before).
    check(&good, Verify { now: at(NOW + 1_000_000), leeway: i64::MAX, ..v }, &keys, Ok(()));
    let forever = Claims { exp: i64::MAX, ..claims() };
    check(&s.sign_claims(TYP_JWT, &forever).unwrap(), Verify { leeway: i64::MAX, ..v }, &keys, Ok(()));
    assert!(forever.is_within(at(NOW), i64::MAX));

    // Fingerprint: a bound token needs the same fingerprint; an unbound one ignores it.
    let mut bound = claims();
    bound.license.fingerprint = Some("fp-1".into());
    let bound = s.sign_claims(TYP_JWT, &bound).unwrap();
    check(&bound, Verify { fingerprint: Some("fp-1"), ..v }, &keys, Ok(()));
    check(&bound, Verify { fingerprint: Some("fp-2"), ..v }, &keys, Err("TOKEN_FINGERPRINT_MISMATCH"));
    check(&bound, v, &keys, Err("TOKEN_FINGERPRINT_MISMATCH"));
    check(&good, Verify { fingerprint: Some("fp-2"), ..v }, &keys, Ok(()));

    // Revoked in the last feed: by license or by token id.
    let mut r = Revocations::default();
    check(&good, Verify { revocations: Some(&r), ..v }, &keys, Ok(()));
    r.licenses.insert(claims().sub);
    check(&good, Verify { revocations: Some(&r), ..v }, &keys, Err("TOKEN_REVOKED"));
    let mut r = Revocations::default();
    r.jtis.insert("jti-1".into());
    check(&good, Verify { revocations: Some(&r), ..v }, &keys, Err("TOKEN_REVOKED"));

    // Type confusion: a revocation list is not a license token.
    let list = s.sign_jws(TYP_REVOCATIONS, &serde_json::to_vec(&claims()).unwrap());
    check(&list, v, &keys, Err("TOKEN_TYPE"));

    for bad in ["", "a.b", "a.b.c.d", "!!.!!.!!", &good[..good.len() - 4]] {
        check(bad, v, &keys, Err("TOKEN_MALFORMED"));
    }
}

#[test]
fn jwks_round_trips_and_ignores_foreign_keys() {
    let s = signer();
    let text = serde_json::to_string(&jwks(&s)).unwrap();
    let doc: serde_json::Value = serde_json::from_str(&text).unwrap();
    let k = &doc["keys"][0];
    assert_eq!(
        (k["kty"].as_str(), k["crv"].as_str(), k["alg"].as_str(), k["use"].as_str()),
        (Some("OKP"), Some("Ed25519"), Some("EdDSA"), Some("sig"))
    );
    assert_eq!(k["kid"], s.kid);
    let with_rsa = format!(
        r#"{{"keys":[{{"kty":"RSA","kid":"r","n":"AQAB","e":"AQAB"}},{}]}}"#,
        serde_json::to_string(k).unwrap()
    );
    let parsed: Jwks = serde_json::from_str(&with_rsa).unwrap();
    assert_eq!(parsed.kids().collect::<Vec<_>>(), vec![s.kid.as_str()]);
    // RFC 8037 appendix A.3: the thumbprint of the RFC's example key.
    let x = B64.decode("11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo").unwrap();
    let key = VerifyingKey::from_bytes(&x.try_into().unwrap()).unwrap();
    assert_eq!(thumbprint(&key), "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k");
}

#[test]
fn revocation_feed_folds() {
    let s = signer();
    let list = RevocationList {
        iss: "t".into(),
        iat: NOW,
        since: 0,
        tree_size: 9,
        root: Some("cm9vdA==".into()),
        licenses: vec!["lic_a".into()],
        reinstated: vec![],
        jtis: vec!["j".into()],
        machines: vec![MachineRevocation { license: claims().sub, fingerprint: "m1".into(), at: NOW }],
        more: false,
    };
    let t = s.sign_claims(TYP_REVOCATIONS, &list).unwrap();
    let back = RevocationList::verify(&t, &jwks(&s)).unwrap();
    let mut r = Revocations::default();
    r.apply(&back);
    assert!(r.licenses.contains("lic_a") && r.jtis.contains("j") && r.tree_size == 9);
    assert_eq!(r.root.as_deref(), Some("cm9vdA=="));
    r.apply(&RevocationList { reinstated: vec!["lic_a".into()], licenses: vec![], tree_size: 10, ..back.clone() });
    assert!(!r.licenses.contains("lic_a"));
    // A page without a root (from a node that has not folded that far) keeps the one
    // known; a page that moves on brings its own.
    r.apply(&RevocationList { tree_size: 10, root: None, ..back.clone() });
    assert_eq!(r.root.as_deref(), Some("cm9vdA=="));
    r.apply(&RevocationList { tree_size: 11, root: Some("bmV4dA==".into()), ..back.clone() });
    assert_eq!((r.tree_size, r.root.as_deref()), (11, Some("bmV4dA==")));

    // A deactivated machine voids the tokens bound to it and issued until then; a token
    // issued after (the machine activated again), or bound to another machine, stands.
    let bound = |fingerprint: &str, iat: i64| {
        let mut c = claims();
        c.license.fingerprint = Some(fingerprint.into());
        c.iat = iat;
        c
    };
    let code = |r: &Revocations, c: &Claims| r.refuses(c).map(|e| e.code());
    assert_eq!(code(&r, &bound("m1", NOW - 100)), Some("TOKEN_REVOKED"));
    assert_eq!(code(&r, &bound("m1", NOW)), Some("TOKEN_REVOKED"));
    assert_eq!(code(&r, &bound("m1", NOW + 1)), None);
    assert_eq!(code(&r, &bound("m2", NOW - 100)), None);
    assert_eq!(code(&r, &claims()), None, "an unbound token");
    let v = Verify { fingerprint: Some("m1"), revocations: Some(&r), ..Verify::at(at(NOW)) };
    assert_eq!(check_claims(&bound("m1", NOW - 100), &v).map_err(|e| e.code()), Err("TOKEN_REVOKED"));
    // A revoked license's token that has expired too is refused as revoked: an SDK keeps
    // a license's facts through an outage unless it was revoked.
    let mut revoked = Revocations::default();
    revoked.apply(&back);
    let mut expired = claims();
    expired.sub = "lic_a".into();
    let later = Verify { revocations: Some(&revoked), ..Verify::at(at(NOW + 10_000)) };
    assert!(matches!(check_claims(&expired, &later), Err(TokenError::Revoked { what: "license", .. })));
    let unrevoked = Verify::at(at(NOW + 10_000));
    assert_eq!(check_claims(&expired, &unrevoked).map_err(|e| e.code()), Err("TOKEN_EXPIRED"));
    // A later page moving the deactivation on keeps the later instant.
    r.apply(&RevocationList {
        machines: vec![MachineRevocation { license: claims().sub, fingerprint: "m1".into(), at: NOW + 50 }],
        ..back.clone()
    });
    assert_eq!(code(&r, &bound("m1", NOW + 1)), Some("TOKEN_REVOKED"));
    assert!(matches!(
        RevocationList::verify(&s.sign_claims(TYP_JWT, &claims()).unwrap(), &jwks(&s)),
        Err(TokenError::WrongType { .. })
    ));
}

#[test]
fn a_feed_page_may_be_larger_than_a_token() {
    // A full page of machine deactivations with the longest fingerprints: far past the
    // 64 KiB a token may have, and read whole.
    let s = signer();
    let machines = (0..1000)
        .map(|n| MachineRevocation { license: format!("lic_{n:026}"), fingerprint: "f".repeat(256), at: NOW })
        .collect();
    let list = RevocationList {
        iss: "t".into(),
        iat: NOW,
        since: 0,
        tree_size: 1000,
        root: None,
        licenses: vec![],
        reinstated: vec![],
        jtis: vec![],
        machines,
        more: true,
    };
    let t = s.sign_claims(TYP_REVOCATIONS, &list).unwrap();
    assert!(t.len() > 256 * 1024, "{}", t.len());
    assert_eq!(RevocationList::verify(&t, &jwks(&s)).unwrap(), list);
    // A token of that size is still refused, before any key is looked at.
    let big = format!("{}.{}.sig", "a".repeat(10), "b".repeat(70 * 1024));
    assert!(matches!(parse(&big, TYP_JWT), Err(TokenError::Malformed(m)) if m.contains("64 KiB")));
    let huge = format!("{}.{}.sig", "a".repeat(10), "b".repeat(MAX_FEED));
    assert!(matches!(parse(&huge, TYP_REVOCATIONS), Err(TokenError::Malformed(m)) if m.contains("4096 KiB")));
}

#[test]
fn deactivation_proofs_check_the_machine_key() {
    let s = signer();
    let machine = SigningKey::from_bytes(&[3; 32]);
    let mut c = claims();
    c.license.fingerprint = Some("fp".into());
    c.cnf = Some(Confirmation { jwk: Jwk::ed25519("m", &machine.verifying_key()) });
    let lic = s.sign_claims(TYP_JWT, &c).unwrap();
    let d = DeactivationClaims { sub: c.sub.clone(), jti: c.jti.clone(), fingerprint: "fp".into(), iat: NOW };
    let proof = sign_jws_unkeyed(&machine, TYP_DEACTIVATION, &serde_json::to_vec(&d).unwrap());
    assert_eq!(verify_deactivation(&proof, &lic, &jwks(&s)).unwrap().1, d);
    let forged =
        sign_jws_unkeyed(&SigningKey::from_bytes(&[4; 32]), TYP_DEACTIVATION, &serde_json::to_vec(&d).unwrap());
    assert_eq!(verify_deactivation(&forged, &lic, &jwks(&s)).unwrap_err(), TokenError::BadSignature);
}
