//! Offline use through the real server: fallback with the server stopped, a revocation
//! reaching an offline client through the signed feed, JWKS refetch after rotation,
//! and the air-gapped activation round trip.

use std::time::Duration;

use serde_json::json;
use tollgate_sdk::activation::{ActivationError, activation_request, deactivation_proof, verify_license_file};
use tollgate_sdk::{Client, ClientConfig, Code, Error, Jwks, Source, TokenError, VerifyOptions, verify_token_with};

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
    let config = ClientConfig { product: Some("app".into()), ..no_cache() };
    let client = Client::with_config(&server.base, &product_token, config).unwrap();
    let v = client.validate(&key, Some("pro")).await.unwrap();
    assert_eq!((v.valid, v.code, &v.source), (true, Code::Valid, &Source::Online));
    assert!(v.token.is_some(), "the server sends a token");
    // A client of another product takes no license of this one (a product token not
    // scoped to a product validates every product's keys, and the server said VALID),
    // and keeps no fallback from a token that is not for it (the vendor's keys sign
    // every product's tokens).
    let unscoped = server.post("/v1/tokens", json!({"role":"product"})).await["token"].as_str().unwrap().to_string();
    let config = ClientConfig { product: Some("other-app".into()), ..no_cache() };
    let elsewhere = Client::with_config(&server.base, &unscoped, config).unwrap();
    let v = elsewhere.validate(&key, Some("pro")).await.unwrap();
    assert_eq!((v.valid, v.code, v.license.is_none(), v.token.is_none()), (false, Code::NotFound, true, true));
    assert!(v.detail.as_deref().unwrap().contains("for product 'app', not 'other-app'"), "{:?}", v.detail);

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
    assert!(matches!(elsewhere.validate(&key, None).await, Err(Error::Network(_))), "no fallback for another product");
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
    // The machine gave its place back, as deactivating it online does: it is no longer
    // activated, and the feed lists it (its other tokens go too).
    let machines = server.send(reqwest::Method::GET, &format!("/v1/licenses/{id}/machines"), ADMIN, json!(null)).await;
    assert!(!machines.to_string().contains("fp-air"), "{machines}");
    assert!(revoked.machines.get(&id).is_some_and(|m| m.contains_key("fp-air")), "{revoked:?}");
    let o = VerifyOptions { fingerprint: Some("fp-air".into()), ..VerifyOptions::default() };
    assert!(matches!(
        verify_token_with(&file.token, &jwks, &o, Some(&revoked)),
        Err(TokenError::Revoked { what: "token", .. })
    ));
    // The machine comes back (activated again, a second later); the old proof posted
    // again (a retry, a late upload) leaves the new activation alone.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    server.post(&format!("/v1/licenses/{id}/machines"), json!({"fingerprint": "fp-air"})).await;
    server.post("/v1/offline/deactivate", json!({"token": file.token, "proof": proof})).await;
    let machines = server.send(reqwest::Method::GET, &format!("/v1/licenses/{id}/machines"), ADMIN, json!(null)).await;
    assert!(machines.to_string().contains("fp-air"), "still activated: {machines}");
    server.stop().await;
}

#[tokio::test]
async fn a_jwks_older_than_its_max_age_is_fetched_again_and_kept_while_the_server_is_down() {
    let mut server = Server::start().await;
    let (_, _, product_token) = seed(&server).await;
    let config = |max_age| ClientConfig { jwks_refetch_interval: Duration::ZERO, jwks_max_age: max_age, ..no_cache() };
    let kept = Client::with_config(&server.base, &product_token, config(Duration::from_secs(3600))).unwrap();
    let aged = Client::with_config(&server.base, &product_token, config(Duration::ZERO)).unwrap();
    let kids = |j: Jwks| j.kids().map(String::from).collect::<Vec<_>>();
    let before = kids(kept.jwks(None).await.unwrap());
    assert_eq!(kids(aged.jwks(None).await.unwrap()), before);
    let r = server.post("/v1/keys/rotate", json!({})).await;
    let new_kid = r["current"].as_str().unwrap().to_string();
    // Within its age the set is used as it was; past it, it is fetched again, so the
    // server's changes (a retired key dropped) reach the client without an unknown kid.
    assert_eq!(kids(kept.jwks(None).await.unwrap()), before);
    let after = kids(aged.jwks(None).await.unwrap());
    // The old key never signed a token, so it left the JWKS at once.
    assert!(!before.contains(&new_kid) && after == vec![new_kid], "{before:?} {after:?}");
    // With the server gone, the old set still serves (the offline fallback needs it).
    server.stop().await;
    assert_eq!(kids(aged.jwks(None).await.unwrap()), after);
    // An unknown kid cannot be served from it.
    assert!(matches!(aged.jwks(Some("nope")).await, Err(Error::Network(_))));
}

/// The feed as the admin sees it from `since` (verified), or the problem's code.
async fn feed(
    server: &Server,
    client: &Client,
    since: u64,
    root: Option<&str>,
) -> Result<tollgate_core::token::RevocationList, String> {
    let mut query = vec![("since", since.to_string())];
    query.extend(root.map(|r| ("root", r.to_string())));
    let url = reqwest::Url::parse_with_params(&format!("{}/v1/revocations", server.base), &query).unwrap();
    let r = reqwest::Client::new().get(url).bearer_auth(crate::support::ADMIN).send().await.unwrap();
    let status = r.status();
    let text = r.text().await.unwrap();
    if !status.is_success() {
        let v: serde_json::Value = serde_json::from_str(&text).unwrap();
        return Err(v["code"].as_str().unwrap().to_string());
    }
    Ok(tollgate_core::token::RevocationList::verify(&text, &client.jwks(None).await.unwrap()).unwrap())
}

#[tokio::test]
async fn a_long_feed_comes_in_pages_and_the_client_reads_them_all() {
    let server = Server::start().await;
    let (_, id, product_token) = seed(&server).await;
    let other = server.post("/v1/licenses", json!({"product":"app","plan":"p","licensee":"o"})).await;
    let other = other["id"].as_str().unwrap().to_string();
    // 1,002 revocation events (a page holds 1,000), then a revocation on the next page.
    for _ in 0..501 {
        server.post(&format!("/v1/licenses/{id}/suspend"), json!({})).await;
        server.post(&format!("/v1/licenses/{id}/reinstate"), json!({})).await;
    }
    server.post(&format!("/v1/licenses/{other}/revoke"), json!({})).await;
    let client = Client::with_config(&server.base, &product_token, no_cache()).unwrap();

    let first = feed(&server, &client, 0, None).await.unwrap();
    assert!(first.more, "a full page says so");
    let second = feed(&server, &client, first.tree_size, first.root.as_deref()).await.unwrap();
    assert!(!second.more);
    assert_eq!(second.licenses, vec![other.clone()], "the revocation is on the second page");
    assert!(first.tree_size < second.tree_size);

    let seen = client.sync_revocations().await.unwrap();
    assert_eq!(seen.tree_size, second.tree_size);
    assert!(seen.licenses.contains(&other) && !seen.licenses.contains(&id), "{:?}", seen.licenses);
}

#[tokio::test]
async fn a_client_starts_the_feed_over_after_the_ledger_was_restored_to_an_earlier_point() {
    let mut server = Server::start().await;
    let (key, id, product_token) = seed(&server).await;
    let client = Client::with_config(&server.base, &product_token, no_cache()).unwrap();
    let before = client.sync_revocations().await.unwrap();
    assert!(before.root.is_some(), "the feed gives its root");
    server.post(&format!("/v1/licenses/{id}/revoke"), json!({})).await;
    let revoked = client.sync_revocations().await.unwrap();
    assert!(revoked.licenses.contains(&id));

    // The server's ledger goes back to before the revocation, and moves on past where
    // the client was with other events: the client's `since` exists in the new history
    // but is not the one it followed.
    server.restart_restored(before.tree_size).await;
    for n in 0..3 {
        server.post("/v1/licenses", json!({"product":"app","plan":"p","licensee": format!("n{n}")})).await;
    }
    let diverged = feed(&server, &client, revoked.tree_size, revoked.root.as_deref()).await;
    assert_eq!(diverged.unwrap_err(), "FEED_DIVERGED");
    assert_eq!(feed(&server, &client, 1_000_000, None).await.unwrap_err(), "FEED_DIVERGED");
    // The history both share still passes, by its root.
    assert!(
        feed(&server, &client, before.tree_size, before.root.as_deref()).await.unwrap().tree_size > before.tree_size
    );

    let seen = client.sync_revocations().await.unwrap();
    assert!(!seen.licenses.contains(&id), "the revocation is gone with the history it was in");
    let v = client.validate(&key, None).await.unwrap();
    assert!(v.valid, "{v:?}");
}

/// The configured user goes with this machine's validations: on a plan with seats, a
/// user who holds none is told so (the SDK could not send one before).
#[tokio::test]
async fn the_configured_user_is_sent_and_seats_are_checked() {
    let server = Server::start().await;
    let (_, _, product_token) = seed(&server).await;
    server
        .post("/v1/plans", json!({"key":"team","product":"app","name":"Team","features":["pro"],"max_users":1}))
        .await;
    let lic = server.post("/v1/licenses", json!({"product":"app","plan":"team","licensee":"t"})).await;
    let (key, id) = (lic["key"].as_str().unwrap(), lic["id"].as_str().unwrap());
    let config = ClientConfig { user: Some("ada@example.com".into()), ..no_cache() };
    let client = Client::with_config(&server.base, &product_token, config).unwrap();
    let v = client.validate(key, None).await.unwrap();
    assert_eq!((v.valid, v.code), (false, Code::UserNotAssigned));
    server.post(&format!("/v1/licenses/{id}/users"), json!({"user": "ada@example.com"})).await;
    let v = client.validate(key, None).await.unwrap();
    assert_eq!((v.valid, v.code), (true, Code::Valid));
}

/// Answers with the same request line, headers and `body` to every request on
/// `addr`, as a captive portal or a broken proxy in front of the server would.
async fn impostor(addr: std::net::SocketAddr, head: &'static str, body: Vec<u8>) -> tokio::task::JoinHandle<()> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut conn, _)) = listener.accept().await else { return };
            let body = body.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; 64 * 1024];
                let _ = conn.read(&mut buf).await;
                let head = format!("{head}\r\ncontent-length: {}\r\nconnection: close\r\n\r\n", body.len());
                let _ = conn.write_all(head.as_bytes()).await;
                let _ = conn.write_all(&body).await;
            });
        }
    })
}

/// A 2xx that is not an answer (a captive portal's login page) is as good as no
/// server: the client answers from its offline token, as for an outage. And an answer
/// longer than a client reads is refused before it fills the application's memory.
#[tokio::test]
async fn a_portal_page_in_place_of_the_server_falls_back_and_a_huge_answer_is_refused() {
    let mut server = Server::start().await;
    let (key, _, client) = offline_client(&server).await;
    assert_eq!(client.validate(&key, None).await.unwrap().source, Source::Online);
    let addr: std::net::SocketAddr = server.base.trim_start_matches("http://").parse().unwrap();
    server.stop().await;

    let portal = impostor(addr, "HTTP/1.1 200 OK\r\ncontent-type: text/html", b"<html>log in</html>".to_vec()).await;
    let v = client.validate(&key, None).await.unwrap();
    assert!(v.valid && matches!(v.source, Source::Offline { .. }), "{v:?}");
    assert!(v.detail.unwrap().contains("not a validation"));
    portal.abort();
    let _ = portal.await;

    let huge = impostor(addr, "HTTP/1.1 200 OK\r\ncontent-type: application/json", vec![b' '; 5 * 1024 * 1024]).await;
    let e = client.sync_revocations().await.unwrap_err();
    assert!(matches!(&e, Error::Protocol(m) if m.contains("longer than")), "{e}");
    let v = client.validate(&key, None).await.unwrap();
    assert!(v.valid && matches!(v.source, Source::Offline { .. }), "{v:?}");
    huge.abort();
}
