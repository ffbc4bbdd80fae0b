//! Offline use through the real server: fallback with the server stopped, a revocation
//! reaching an offline client through the signed feed, JWKS refetch after rotation,
//! and the air-gapped activation round trip.

use std::time::Duration;

use serde_json::json;
use tollgate_sdk::activation::{ActivationError, activation_request, deactivation_proof, verify_license_file};
use tollgate_sdk::{Client, ClientConfig, Code, Error, Source, TokenError, VerifyOptions, verify_token_with};

use crate::support::{ADMIN, Server};

/// A product with an offline-capable plan, a license, and a product token.
async fn seed(s: &Server) -> (String, String, String) {
    s.post(
        "/v1/products",
        json!({"key":"app","name":"App","features":[{"key":"pro","name":"Pro"},{"key":"x","name":"X"}]}),
    )
    .await;
    s.post("/v1/plans", json!({"key":"p","product":"app","name":"P","features":["pro"],"offline_days":7})).await;
    let lic = s.post("/v1/licenses", json!({"product":"app","plan":"p","licensee":"l"})).await;
    let tok = s.post("/v1/tokens", json!({"role":"product","product":"app"})).await;
    (
        lic["key"].as_str().unwrap().to_string(),
        lic["id"].as_str().unwrap().to_string(),
        tok["token"].as_str().unwrap().to_string(),
    )
}

fn no_cache() -> ClientConfig {
    ClientConfig { cache_ttl: Duration::ZERO, ..ClientConfig::default() }
}

/// A seeded license with machine-1 activated (validating with a fingerprint asks that
/// the machine be activated), and a client that keeps offline tokens for it.
async fn offline_client(server: &Server) -> (String, String, Client) {
    let (key, id, product_token) = seed(server).await;
    server.post(&format!("/v1/licenses/{id}/machines"), json!({"fingerprint": "machine-1"})).await;
    let config = ClientConfig { fingerprint: Some("machine-1".into()), offline_tokens: true, ..no_cache() };
    (key, id, Client::with_config(&server.base, &product_token, config).unwrap())
}

#[tokio::test]
async fn falls_back_to_the_last_verified_token_with_the_server_stopped() {
    let mut server = Server::start().await;
    let (key, id, product_token) = seed(&server).await;
    let client = Client::with_config(&server.base, &product_token, no_cache()).unwrap();
    let v = client.validate(&key, Some("pro")).await.unwrap();
    assert_eq!((v.valid, v.code, &v.source), (true, Code::Valid, &Source::Online));
    assert!(v.token.is_some(), "the server sends a token");

    // With a TTL, a second call is answered from the cache.
    let cached = Client::new(&server.base, &product_token).unwrap();
    cached.validate(&key, None).await.unwrap();
    assert_eq!(cached.validate(&key, None).await.unwrap().source, Source::Cached);

    server.stop().await;
    let v = client.validate(&key, Some("pro")).await.unwrap();
    assert!(v.valid);
    match &v.source {
        Source::Offline { license, token_expires_at } => {
            assert_eq!(license, &id);
            assert!(*token_expires_at > 0);
        }
        other => panic!("expected an offline answer, got {other:?}"),
    }
    assert!(v.detail.unwrap().starts_with("offline"), "says so");
    let v = client.validate(&key, Some("x")).await.unwrap();
    assert_eq!((v.valid, v.code), (false, Code::FeatureNotEntitled), "entitlements come from the token");
    // A key the client never validated has no fallback.
    assert!(matches!(client.validate("AAAAA-BBBBB-CCCCC", None).await, Err(Error::Network(_))));
}

#[tokio::test]
async fn a_revocation_reaches_an_offline_client_through_the_feed() {
    let mut server = Server::start().await;
    let (key, id, client) = offline_client(&server).await;
    let v = client.validate(&key, None).await.unwrap();
    assert!(v.valid);
    let jwks = client.jwks(None).await.unwrap();
    let claims = tollgate_sdk::verify_token_with(
        v.token.as_deref().unwrap(),
        &jwks,
        &VerifyOptions { fingerprint: Some("machine-1".into()), ..VerifyOptions::default() },
        None,
    )
    .unwrap();
    assert!(claims.license.offline && claims.exp - claims.iat >= 7 * 86_400 - 1, "an offline token: {claims:?}");

    // Revoked on the server; the client's next contact reads the feed.
    server.post(&format!("/v1/licenses/{id}/revoke"), json!({"reason":"chargeback"})).await;
    let seen = client.sync_revocations().await.unwrap();
    assert!(seen.licenses.contains(&id), "{seen:?}");
    server.stop().await;
    // The offline token would still be within its window; the feed refuses it.
    match client.validate(&key, None).await {
        Err(Error::Token(TokenError::Revoked { what: "license", id: rid })) => assert_eq!(rid, id),
        other => panic!("expected a revocation refusal, got {other:?}"),
    }
}

/// The server's answer stands. A license suspended (so listed in the feed) and then
/// reinstated validates again: the new token used to be checked against the feed as it
/// stood before this contact and refused. And a "not entitled to this feature" answer
/// keeps the offline fallback for the license: it used to throw it away.
#[tokio::test]
async fn a_reinstated_license_validates_again_and_a_feature_answer_keeps_the_fallback() {
    let mut server = Server::start().await;
    let (key, id, client) = offline_client(&server).await;
    assert!(client.validate(&key, None).await.unwrap().valid);

    server.post(&format!("/v1/licenses/{id}/suspend"), json!({})).await;
    assert_eq!(client.validate(&key, None).await.unwrap().code, Code::Suspended);
    assert!(client.revocations().licenses.contains(&id), "the feed listed it");
    server.post(&format!("/v1/licenses/{id}/reinstate"), json!({})).await;
    let v = client.validate(&key, None).await.expect("the server's answer stands");
    assert_eq!((v.valid, v.code), (true, Code::Valid));
    assert!(!client.revocations().licenses.contains(&id), "and the feed says it is back");

    let v = client.validate(&key, Some("x")).await.unwrap();
    assert_eq!((v.valid, v.code), (false, Code::FeatureNotEntitled));
    server.stop().await;
    let v = client.validate(&key, None).await.expect("the fallback was kept");
    assert!(v.valid && matches!(v.source, Source::Offline { .. }), "{v:?}");
}

#[tokio::test]
async fn jwks_is_refetched_on_an_unknown_kid_after_rotation() {
    let mut server = Server::start().await;
    let (key, _, product_token) = seed(&server).await;
    let client = Client::with_config(
        &server.base,
        &product_token,
        ClientConfig { jwks_refetch_interval: Duration::ZERO, ..no_cache() },
    )
    .unwrap();
    client.validate(&key, None).await.unwrap();
    let before: Vec<String> = client.jwks(None).await.unwrap().kids().map(String::from).collect();
    let r = server.post("/v1/keys/rotate", json!({})).await;
    let new_kid = r["current"].as_str().unwrap().to_string();
    let v = client.validate(&key, None).await.unwrap();
    assert!(v.valid, "a token signed by the new key verifies after a refetch");
    let after: Vec<String> = client.jwks(None).await.unwrap().kids().map(String::from).collect();
    assert!(!before.contains(&new_kid) && after.contains(&new_kid) && after.len() == 2);

    // Rate-limited: a client that fetched the JWKS moments ago does not refetch for an
    // unknown kid; the online answer stands, but its token is not kept as a fallback.
    let limited = Client::with_config(&server.base, &product_token, no_cache()).unwrap();
    limited.validate(&key, None).await.unwrap();
    server.post("/v1/keys/rotate", json!({})).await;
    let v = limited.validate(&key, None).await.unwrap();
    assert!(v.valid && v.source == Source::Online);
    let jwks = limited.jwks(None).await.unwrap();
    let unknown = tollgate_sdk::verify_token(v.token.as_deref().unwrap(), &jwks).unwrap_err();
    assert!(matches!(unknown, TokenError::UnknownKid(_)), "{unknown:?}");
    server.stop().await;
}

#[tokio::test]
async fn air_gapped_activation_round_trip() {
    let mut server = Server::start().await;
    let (key, id, product_token) = seed(&server).await;
    let client = Client::new(&server.base, &product_token).unwrap();
    // The vendor ships the JWKS with the application; here it is fetched once.
    let jwks = client.jwks(None).await.unwrap();

    // On the air-gapped machine: a request file.
    let (request, secret) = activation_request(&key, "fp-air").unwrap();
    let request_text = serde_json::to_string(&request).unwrap();
    // Elsewhere, an operator turns it into a license file.
    let file: tollgate_core::token::LicenseFile =
        serde_json::from_value(server.post("/v1/offline/activate", serde_json::from_str(&request_text).unwrap()).await)
            .unwrap();
    assert_eq!(file.license, id);
    // Back on the machine, with no network.
    let claims = verify_license_file(&file, &request, &jwks, "app", None).unwrap();
    assert_eq!(claims.license.fingerprint.as_deref(), Some("fp-air"));
    assert!(claims.license.offline);
    // Another product's application does not take it, though every other check passes.
    let err = verify_license_file(&file, &request, &jwks, "other-app", None).unwrap_err();
    assert!(matches!(err, ActivationError::Token(TokenError::WrongAudience { .. })), "{err:?}");
    // Another machine, or another request, cannot use it.
    let (other, _) = activation_request(&key, "fp-other").unwrap();
    assert!(verify_license_file(&file, &other, &jwks, "app", None).is_err());
    let (same_fp, _) = activation_request(&key, "fp-air").unwrap();
    assert!(verify_license_file(&file, &same_fp, &jwks, "app", None).is_err(), "the nonce binds it to its request");

    // Deactivated offline: the proof is accepted later and the token is revoked in the feed.
    let proof = deactivation_proof(&file, &secret, None).unwrap();
    let (_, forged_secret) = activation_request(&key, "fp-air").unwrap();
    let forged = deactivation_proof(&file, &forged_secret, None).unwrap();
    let r = reqwest::Client::new()
        .post(format!("{}/v1/offline/deactivate", server.base))
        .bearer_auth(ADMIN)
        .json(&json!({"token": file.token, "proof": forged}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 422, "a proof not signed by the machine key is refused");
    let done = server.post("/v1/offline/deactivate", json!({"token": file.token, "proof": proof})).await;
    assert_eq!(done["jti"], claims.jti);
    let revoked = client.sync_revocations().await.unwrap();
    assert!(revoked.jtis.contains(&claims.jti));
    let o = VerifyOptions { fingerprint: Some("fp-air".into()), ..VerifyOptions::default() };
    assert!(matches!(
        verify_token_with(&file.token, &jwks, &o, Some(&revoked)),
        Err(TokenError::Revoked { what: "token", .. })
    ));
    server.stop().await;
}
