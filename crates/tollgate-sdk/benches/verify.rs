//! Offline token verification in the SDK against raw `ed25519-dalek` verification of
//! the same signing input and signature. The SDK's extra work is splitting the
//! compact JWS, base64url-decoding it, checking `alg`/`typ`, looking the `kid` up in
//! the decoded JWKS, parsing the claims and checking them; the goal is that all of it
//! costs at most ~10% of the signature check (ratio raw / SDK ≥ 0.9).
//!
//! Run: `cargo bench -p tollgate-sdk --bench verify`. After criterion's two benches the
//! bench prints `ratio raw/sdk = …`: the medians of 15 interleaved rounds (same binary, same
//! run), which is the figure docs/BENCHMARKS.md quotes.

use std::hint::black_box;
use std::time::{Duration, Instant, SystemTime};

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD as B64;
use criterion::Criterion;
use ed25519_dalek::{Signature, SigningKey};
use tollgate_core::token::{Claims, LicenseClaim, Limits, TYP_JWT, TokenSigner};
use tollgate_sdk::{Jwks, VerifyOptions, verify_token_with};

fn fixture() -> (String, Jwks, VerifyOptions) {
    let signer = TokenSigner::new(SigningKey::from_bytes(&[42; 32]));
    let now = 1_800_000_000;
    let claims = Claims {
        iss: "tollgate".into(),
        sub: "lic_0123456789abcdefghjkmnpqrs".into(),
        aud: "cad".into(),
        iat: now,
        nbf: now,
        exp: now + 30 * 86_400,
        jti: "0123456789abcdef0123456789abcdef".into(),
        license: LicenseClaim {
            status: "active".into(),
            plan: "cad-pro".into(),
            features: (0..20).map(|i| format!("feature-{i}")).collect(),
            limits: Limits { max_machines: Some(3), max_users: None },
            fingerprint: Some("machine-fingerprint-0123456789".into()),
            expires_at: Some(now + 365 * 86_400),
            grace_ends_at: Some(now + 379 * 86_400),
            offline: true,
        },
        nonce: None,
        cnf: None,
    };
    let token = signer.sign_claims(TYP_JWT, &claims).unwrap();
    let mut jwks = Jwks::default();
    jwks.insert(&signer.kid, signer.verifying_key());
    let o = VerifyOptions {
        audience: Some("cad".into()),
        fingerprint: Some("machine-fingerprint-0123456789".into()),
        now: Some(SystemTime::UNIX_EPOCH + Duration::from_secs(now as u64 + 60)),
        ..VerifyOptions::default()
    };
    (token, jwks, o)
}

fn mean_ns(mut f: impl FnMut(), iters: u32) -> f64 {
    let start = Instant::now();
    for _ in 0..iters {
        f();
    }
    start.elapsed().as_nanos() as f64 / f64::from(iters)
}

fn main() {
    let (token, jwks, o) = fixture();
    let (input, sig) = token.rsplit_once('.').unwrap();
    let sig = Signature::from_bytes(&B64.decode(sig).unwrap().try_into().unwrap());
    let key = *jwks.get(jwks.kids().next().unwrap()).unwrap();
    let input = input.as_bytes().to_vec();
    verify_token_with(&token, &jwks, &o, None).expect("the fixture verifies");

    let mut c = Criterion::default()
        .warm_up_time(Duration::from_millis(500))
        .measurement_time(Duration::from_secs(2))
        .sample_size(30)
        .configure_from_args();
    c.bench_function("sdk verify_token (offline, EdDSA, 20 features)", |b| {
        b.iter(|| verify_token_with(black_box(&token), &jwks, &o, None).unwrap())
    });
    c.bench_function("raw ed25519-dalek verify_strict, same message", |b| {
        b.iter(|| key.verify_strict(black_box(&input), &sig).unwrap())
    });
    c.final_summary();

    // Interleaved rounds so that both sides see the same machine noise.
    let (mut sdk, mut raw) = (Vec::new(), Vec::new());
    for _ in 0..15 {
        sdk.push(mean_ns(|| drop(black_box(verify_token_with(black_box(&token), &jwks, &o, None))), 400));
        raw.push(mean_ns(|| drop(black_box(key.verify_strict(black_box(&input), &sig))), 400));
    }
    sdk.sort_by(f64::total_cmp);
    raw.sort_by(f64::total_cmp);
    let (s, r) = (sdk[sdk.len() / 2], raw[raw.len() / 2]);
    println!("sdk verify_token: {:.2} µs, raw verify_strict: {:.2} µs", s / 1000.0, r / 1000.0);
    println!("ratio raw/sdk = {:.3}x (goal >= 0.9x)", r / s);
}
