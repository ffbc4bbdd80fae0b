//! Signing keys, the JWKS, license tokens, the revocation feed and offline activation,
//! through the real server. Tokens are verified with the same core code the SDK uses.

use serde_json::{Value, json};
use tollgate_core::Timestamp;
use tollgate_core::token::{self, Claims, Jwks, RevocationList, Verify};

use crate::support::{ADMIN, TestApp, assert_problem, spawn_app, spawn_at};

pub async fn jwks(app: &TestApp) -> Jwks {
    let r = app.call(reqwest::Method::GET, "/.well-known/jwks.json", None, None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    serde_json::from_str(&r.text).unwrap()
}

fn now() -> Timestamp {
    Timestamp::from_millis(
        std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_millis() as i64
    )
    .unwrap()
}

/// The catalog of `seed_catalog` plus a plan allowing 30 days offline.
pub async fn seed(app: &TestApp) -> Value {
    app.seed_catalog().await;
    let r = app
        .post("/v1/plans", json!({"key":"roam","product":"cad","name":"Roam","features":["a","c"],"offline_days":30}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["offline_days"], 30, "{}", r.text);
    app.issue("roam", "acme").await
}

/// Activates a machine on the license (offline tokens are only for activated machines).
pub async fn activate(app: &TestApp, id: &str, fingerprint: &str) {
    let r = app.post(&format!("/v1/licenses/{id}/machines"), json!({ "fingerprint": fingerprint })).await;
    assert_eq!(r.status, 201, "{}", r.text);
}

pub async fn token(app: &TestApp, id: &str, body: Value) -> (String, Value) {
    let r = app.post(&format!("/v1/licenses/{id}/tokens"), body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    (r.body["token"].as_str().unwrap().to_string(), r.body)
}

#[tokio::test]
async fn jwks_is_rfc7517_and_tokens_verify_with_core() {
    let app = spawn_app().await;
    let lic = seed(&app).await;
    let id = lic["id"].as_str().unwrap();
    let r = app.call(reqwest::Method::GET, "/.well-known/jwks.json", None, None).await;
    let keys = r.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1, "the first key exists before the first token: {}", r.text);
    let k = &keys[0];
    for (f, v) in [("kty", "OKP"), ("crv", "Ed25519"), ("alg", "EdDSA"), ("use", "sig")] {
        assert_eq!(k[f], v, "{f}");
    }
    assert_eq!(k["x"].as_str().unwrap().len(), 43);
    assert!(k["d"].is_null(), "never the private half");

    let (t, body) = token(&app, id, json!({})).await;
    assert!(body["expires_at"].is_string() && body["jti"].is_string());
    let set = jwks(&app).await;
    let c: Claims = token::verify(&t, &set, &Verify { audience: Some("cad"), ..Verify::at(now()) }).expect("verifies");
    assert_eq!((c.sub.as_str(), c.aud.as_str(), c.iss.as_str()), (id, "cad", "tollgate"));
    assert!(c.exp - c.iat <= 300 && c.exp > c.iat && c.nbf == c.iat, "online tokens are short-lived: {c:?}");
    assert_eq!(c.license.plan, "roam");
    assert_eq!(c.license.features, vec!["a", "c"]);
    assert!(!c.license.offline && c.license.fingerprint.is_none());
    assert_eq!(c.jti, body["jti"]);
    let header: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, t.split('.').next().unwrap())
            .unwrap(),
    )
    .unwrap();
    assert_eq!(header["alg"], "EdDSA");
    assert_eq!(header["kid"], k["kid"]);

    // Offline: bound to an activated machine, lasting the plan's offline_days.
    let r = app.post(&format!("/v1/licenses/{id}/tokens"), json!({"offline": true, "fingerprint": "fp-1"})).await;
    assert_problem(&r, 409, "MACHINE_NOT_ACTIVATED");
    activate(&app, id, "fp-1").await;
    let (t, _) = token(&app, id, json!({"offline": true, "fingerprint": "fp-1"})).await;
    let v = Verify { audience: Some("cad"), fingerprint: Some("fp-1"), ..Verify::at(now()) };
    let c = token::verify(&t, &set, &v).unwrap();
    assert!(c.license.offline);
    assert!((c.exp - c.iat - 30 * 86_400).abs() <= 1, "{c:?}");
    assert_eq!(
        token::verify(&t, &set, &Verify { fingerprint: Some("fp-2"), ..v }).unwrap_err(),
        token::TokenError::FingerprintMismatch
    );

    // An online token bound to a machine is held to what validation asks of it: the
    // machine activated (or holding a lease); then it is bound to that machine.
    let r = app.post(&format!("/v1/licenses/{id}/tokens"), json!({"fingerprint": "fp-2"})).await;
    assert_problem(&r, 409, "FINGERPRINT_NOT_ACTIVATED");
    let (t, _) = token(&app, id, json!({"fingerprint": "fp-1"})).await;
    let c = token::verify(&t, &set, &v).unwrap();
    assert!(!c.license.offline && c.license.fingerprint.as_deref() == Some("fp-1"));

    // Refusals of the endpoint.
    let r = app.post(&format!("/v1/licenses/{id}/tokens"), json!({"offline": true})).await;
    assert_problem(&r, 422, "FINGERPRINT_REQUIRED");
    let basic = app.issue("basic", "b").await;
    let r = app
        .post(
            &format!("/v1/licenses/{}/tokens", basic["id"].as_str().unwrap()),
            json!({"offline": true, "fingerprint": "x"}),
        )
        .await;
    assert_problem(&r, 409, "OFFLINE_NOT_ALLOWED");
    let r = app.post(&format!("/v1/licenses/{id}/tokens"), json!({"alg": "none"})).await;
    assert_problem(&r, 422, "INVALID_INPUT");
    app.post(&format!("/v1/licenses/{id}/suspend"), json!({})).await;
    let r = app.post(&format!("/v1/licenses/{id}/tokens"), json!({})).await;
    assert_problem(&r, 409, "LICENSE_NOT_VALID");
    let r = app.post("/v1/licenses/lic_0000000000000000000000000/tokens", json!({})).await;
    assert_eq!(r.status, 404);
}

#[tokio::test]
async fn validate_returns_a_fresh_token_on_request() {
    let app = spawn_app().await;
    let lic = seed(&app).await;
    let key = lic["key"].as_str().unwrap();
    let plain = app.validate(key, None).await;
    assert!(plain["token"].is_null(), "no token unless asked");
    let r = app.post("/v1/validate", json!({"key": key, "token": true})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let t = r.body["token"].as_str().unwrap();
    assert!(r.body["token_expires_at"].is_string());
    let c = token::verify(t, &jwks(&app).await, &Verify::at(now())).unwrap();
    assert_eq!(c.sub, lic["id"]);
    let r = app.post("/v1/validate", json!({"key": "AAAAA-BBBBB", "token": true})).await;
    assert!(r.body["token"].is_null(), "no token for an invalid answer: {}", r.text);
}

#[tokio::test]
async fn rotation_keeps_the_old_key_published_while_its_tokens_live() {
    let app = spawn_app().await;
    let lic = seed(&app).await;
    let id = lic["id"].as_str().unwrap();
    activate(&app, id, "m").await;
    let (old_token, _) = token(&app, id, json!({"offline": true, "fingerprint": "m"})).await;
    let before = jwks(&app).await;
    let old_kid: Vec<String> = before.kids().map(String::from).collect();

    // Only admins rotate.
    let r = app.post("/v1/tokens", json!({"role": "issuer"})).await;
    let issuer = r.body["token"].as_str().unwrap().to_string();
    let r = app.call(reqwest::Method::POST, "/v1/keys/rotate", Some(&issuer), Some(json!({}))).await;
    assert_problem(&r, 403, "FORBIDDEN");

    let r = app.post("/v1/keys/rotate", json!({"reason": "scheduled"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let new_kid = r.body["current"].as_str().unwrap().to_string();
    assert_ne!(vec![new_kid.clone()], old_kid);
    let keys = r.body["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 2);
    let old = keys.iter().find(|k| k["kid"] == old_kid[0].as_str()).unwrap();
    assert_eq!(old["published"], true);
    let keep_until = Timestamp::parse(old["keep_until"].as_str().unwrap()).unwrap();
    let old_claims =
        token::verify(&old_token, &before, &Verify { fingerprint: Some("m"), ..Verify::at(now()) }).unwrap();
    assert!(token::seconds(keep_until) >= old_claims.exp, "published until the last token it signed expires");

    let after = jwks(&app).await;
    assert_eq!(after.len(), 2);
    token::verify(&old_token, &after, &Verify { fingerprint: Some("m"), ..Verify::at(now()) }).unwrap();
    let (new_token, _) = token(&app, id, json!({})).await;
    let (h, _) = token::verify_jws(&new_token, token::TYP_JWT, &after).unwrap();
    assert_eq!(h.kid.as_deref(), Some(new_kid.as_str()));

    // Past keep_until the retired key leaves the JWKS (judged by the state at that instant).
    let s = app.app.as_ref().unwrap().engine.state();
    let later = Timestamp::from_millis(keep_until.millis() + 1).unwrap();
    assert_eq!(s.keys().jwks(later).kids().collect::<Vec<_>>(), vec![new_kid.as_str()]);

    // Both are ledger events.
    let r = app.get("/v1/ledger/entries?start=0&end=100").await;
    let text = r.text;
    assert!(text.contains("signing_key_created") || text.contains("c2lnbmluZ19rZXlfY3JlYXRlZ"), "events listed");
    let r = app.get("/v1/keys").await;
    assert_eq!(r.body["current"], new_kid.as_str());
}

#[tokio::test]
async fn private_keys_are_sealed_and_survive_a_restart() {
    let app = spawn_app().await;
    let lic = seed(&app).await;
    let id = lic["id"].as_str().unwrap().to_string();
    let (t1, _) = token(&app, &id, json!({})).await;
    let dir = app.dir.clone();
    let tmp = app.stop().await;
    {
        let conn = rusqlite::Connection::open(dir.join(tollgate_server::DB_FILE)).unwrap();
        let rows: Vec<(String, Vec<u8>)> = conn
            .prepare("SELECT key, value FROM meta WHERE key LIKE 'token_key/%'")
            .unwrap()
            .query_map([], |r| Ok((r.get(0)?, r.get(1)?)))
            .unwrap()
            .map(Result::unwrap)
            .collect();
        assert_eq!(rows.len(), 1);
        assert_eq!(rows[0].1.len(), 1 + 24 + 32 + 16, "version, nonce, sealed seed, tag");
    }
    let master = std::fs::read_to_string(dir.join(tollgate_server::kek::MASTER_KEY_FILE)).unwrap();
    assert_eq!(base64::Engine::decode(&base64::engine::general_purpose::STANDARD, master.trim()).unwrap().len(), 32);
    let app = crate::support::spawn_at(&dir).await;
    let (t2, _) = token(&app, &id, json!({})).await;
    let set = jwks(&app).await;
    let (h1, _) = token::verify_jws(&t1, token::TYP_JWT, &set).unwrap();
    let (h2, _) = token::verify_jws(&t2, token::TYP_JWT, &set).unwrap();
    assert_eq!(h1.kid, h2.kid, "same key after restart");
    app.stop().await;
    drop(tmp);
}

#[tokio::test]
async fn revocation_feed_is_signed_and_incremental() {
    let app = spawn_app().await;
    let lic = seed(&app).await;
    let other = app.issue("roam", "other").await;
    let id = lic["id"].as_str().unwrap();
    let r = app.call(reqwest::Method::GET, "/v1/revocations", None, None).await;
    assert_eq!(r.status, 401);
    let r = app.get("/v1/revocations?since=0").await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/jwt");
    let set = jwks(&app).await;
    let first = RevocationList::verify(&r.text, &set).unwrap();
    assert!(first.licenses.is_empty() && first.jtis.is_empty());
    assert!(first.tree_size > 0);

    app.post(&format!("/v1/licenses/{id}/revoke"), json!({})).await;
    app.post(&format!("/v1/licenses/{}/suspend", other["id"].as_str().unwrap()), json!({})).await;
    let r = app.get(&format!("/v1/revocations?since={}", first.tree_size)).await;
    let page = RevocationList::verify(&r.text, &set).unwrap();
    assert_eq!(page.since, first.tree_size);
    assert_eq!(page.tree_size, first.tree_size + 2);
    let mut want = vec![id.to_string(), other["id"].as_str().unwrap().to_string()];
    want.sort();
    assert_eq!(page.licenses, want);

    app.post(&format!("/v1/licenses/{}/reinstate", other["id"].as_str().unwrap()), json!({})).await;
    let r = app.get(&format!("/v1/revocations?since={}", page.tree_size)).await;
    let next = RevocationList::verify(&r.text, &set).unwrap();
    assert_eq!(next.reinstated, vec![other["id"].as_str().unwrap().to_string()]);
    assert!(next.licenses.is_empty());
    let r = app.get(&format!("/v1/revocations?since={}", next.tree_size)).await;
    let empty = RevocationList::verify(&r.text, &set).unwrap();
    assert_eq!((empty.tree_size, empty.licenses.len()), (next.tree_size, 0));
    // Asked again from the start (served from the index the pages above built): the
    // revoked license, and the suspended one back in good standing.
    let r = app.get("/v1/revocations?since=0").await;
    let all = RevocationList::verify(&r.text, &set).unwrap();
    assert_eq!(all.tree_size, next.tree_size);
    assert_eq!(all.licenses, vec![id.to_string()]);
    assert_eq!(all.reinstated, vec![other["id"].as_str().unwrap().to_string()]);
    // And from a point between the revocation and the reinstatement.
    let r = app.get(&format!("/v1/revocations?since={}", page.tree_size)).await;
    assert_eq!(RevocationList::verify(&r.text, &set).unwrap().reinstated, next.reinstated);
    // After a restart the index is read again from the ledger, with the same answer.
    let dir = app.dir.clone();
    let tmp = app.stop().await;
    let app = spawn_at(&dir).await;
    let r = app.get("/v1/revocations?since=0").await;
    let again = RevocationList::verify(&r.text, &jwks(&app).await).unwrap();
    assert_eq!((again.licenses, again.reinstated, again.tree_size), (all.licenses, all.reinstated, all.tree_size));
    app.stop().await;
    drop(tmp);
    let _ = ADMIN;
}

#[tokio::test]
async fn the_checkpoint_key_is_sealed_and_a_plaintext_one_is_migrated() {
    use tollgate_server::kek::MasterKey;
    use tollgate_server::replay::{identity, verifier};
    use tollgate_store::{LedgerStore, SqliteStore};

    // A store written by an older build: the checkpoint seed in plaintext.
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(tollgate_server::DB_FILE);
    let mut store = SqliteStore::open(&path).unwrap();
    let old = identity(&mut store, None).unwrap();
    assert_eq!(store.meta("ledger_signing_key").unwrap().unwrap().len(), 32);
    let kek = MasterKey::from_bytes([9; 32]);
    let migrated = identity(&mut store, Some(&kek)).unwrap();
    assert_eq!(migrated.verifier_key, old.verifier_key, "the same key, now sealed");
    assert_eq!(store.meta("ledger_signing_key").unwrap().unwrap(), Vec::<u8>::new(), "plaintext blanked");
    assert_eq!(store.meta("ledger_signing_key_sealed").unwrap().unwrap().len(), 1 + 24 + 32 + 16);
    assert_eq!(identity(&mut store, Some(&kek)).unwrap().verifier_key, old.verifier_key);
    assert!(identity(&mut store, None).is_err(), "a sealed key needs the master key");
    assert!(identity(&mut store, Some(&MasterKey::from_bytes([8; 32]))).is_err(), "a wrong master key is refused");
    // `ledger verify` needs no master key: the public verifier key is stored.
    let v = verifier(&store).unwrap().unwrap();
    assert_eq!(v.name(), old.origin);
    drop(store);

    // A server started fresh seals from the first start, and keeps its key across restarts.
    let app = spawn_app().await;
    let key1 = app.call(reqwest::Method::GET, "/v1/ledger/key", None, None).await.text;
    let dir = app.dir.clone();
    let tmp = app.stop().await;
    let conn = rusqlite::Connection::open(dir.join(tollgate_server::DB_FILE)).unwrap();
    let plain: Option<Vec<u8>> =
        conn.query_row("SELECT value FROM meta WHERE key = 'ledger_signing_key'", [], |r| r.get(0)).ok();
    assert!(plain.is_none_or(|p| p.is_empty()), "never in plaintext");
    drop(conn);
    let app = crate::support::spawn_at(&dir).await;
    let key2 = app.call(reqwest::Method::GET, "/v1/ledger/key", None, None).await.text;
    assert_eq!(key1, key2);
    app.stop().await;
    drop(tmp);
}

/// A floating lease answers validation, and gets online tokens, but no offline token:
/// one would outlive the lease by days, so every machine that once held a lease could
/// keep working offline past the lease limit. Offline tokens are for activated
/// machines, which count against the machine limit; air-gapped activation activates.
#[tokio::test]
async fn offline_tokens_are_for_activated_machines_within_the_limit() {
    let app = spawn_app().await;
    seed(&app).await;
    let r = app
        .post(
            "/v1/plans",
            json!({"key":"roam-float","product":"cad","name":"Roam float","features":["a"],"offline_days":30,"max_machines":1,
                   "floating":{"max_leases":1,"lease_ttl_seconds":60}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let lic = app.issue("roam-float", "acme").await;
    let (id, key) = (lic["id"].as_str().unwrap(), lic["key"].as_str().unwrap());
    let r = app.post(&format!("/v1/licenses/{id}/leases"), json!({"fingerprint":"ws-1"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let online = app.post("/v1/validate", json!({"key": key, "fingerprint": "ws-1", "token": true})).await;
    assert_eq!((online.status.as_u16(), online.body["code"].as_str()), (200, Some("VALID")), "{}", online.text);
    assert!(online.body["token"].is_string());
    // Asked for an offline token, the answer stands with an online one, and says why.
    let offline =
        app.post("/v1/validate", json!({"key": key, "fingerprint": "ws-1", "token": true, "offline": true})).await;
    assert_eq!((offline.status.as_u16(), offline.body["code"].as_str()), (200, Some("VALID")), "{}", offline.text);
    assert!(offline.body["offline_refused"].as_str().unwrap().contains("activated machine"), "{}", offline.text);
    let v = Verify { fingerprint: Some("ws-1"), ..Verify::at(now()) };
    let claims = token::verify(offline.body["token"].as_str().unwrap(), &jwks(&app).await, &v).unwrap();
    assert!(!claims.license.offline, "an online token: {claims:?}");
    assert!(claims.exp - claims.iat <= 300);
    let r = app.post(&format!("/v1/licenses/{id}/tokens"), json!({"offline": true, "fingerprint": "ws-1"})).await;
    assert_problem(&r, 409, "MACHINE_NOT_ACTIVATED");
    // So on a plan without offline use (an SDK configured for offline tokens still
    // validates there).
    let basic = app.issue("basic", "b").await;
    activate(&app, basic["id"].as_str().unwrap(), "pc-9").await;
    let r = app
        .post("/v1/validate", json!({"key": basic["key"], "fingerprint": "pc-9", "token": true, "offline": true}))
        .await;
    assert_eq!((r.status.as_u16(), r.body["valid"].as_bool()), (200, Some(true)), "{}", r.text);
    assert!(r.body["offline_refused"].as_str().unwrap().contains("offline_days"), "{}", r.text);

    // Air-gapped activation activates the machine, so the limit holds there too.
    let request = |fp: &str| {
        let public = ed25519_dalek::SigningKey::from_bytes(&[7u8; 32]).verifying_key().to_bytes();
        let machine_key = base64::Engine::encode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, public);
        json!({"type":"tollgate.activation-request.v1","key":key,"fingerprint":fp,"nonce":"n-0123456789abcdef","machine_key":machine_key})
    };
    let r = app.post("/v1/offline/activate", request("pc-1")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let machines = app.get(&format!("/v1/licenses/{id}/machines")).await;
    assert!(machines.text.contains("pc-1"), "{}", machines.text);
    assert_problem(&app.post("/v1/offline/activate", request("pc-2")).await, 409, "MACHINE_LIMIT");
    let r = app.post("/v1/offline/activate", request("pc-1")).await;
    assert_eq!(r.status, 200, "the same machine again: {}", r.text);
    let file_token = r.body["token"].as_str().unwrap().to_string();

    // Deactivating the machine puts it in the revocation feed: a client that reads the
    // feed refuses the tokens bound to it, so freeing the seat for another machine does
    // not leave this one working offline.
    let set = jwks(&app).await;
    let v = Verify { fingerprint: Some("pc-1"), ..Verify::at(now()) };
    token::verify(&file_token, &set, &v).unwrap();
    let r = app.call(reqwest::Method::DELETE, &format!("/v1/licenses/{id}/machines/pc-1"), Some(ADMIN), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let r = app.get("/v1/revocations?since=0").await;
    let list = RevocationList::verify(&r.text, &set).unwrap();
    assert!(list.machines.iter().any(|m| m.license == id && m.fingerprint == "pc-1"), "{list:?}");
    let mut revoked = tollgate_core::token::Revocations::default();
    revoked.apply(&list);
    let refused = token::verify(&file_token, &set, &Verify { revocations: Some(&revoked), ..v }).unwrap_err();
    assert_eq!(refused.code(), "TOKEN_REVOKED");
    assert_eq!(app.post("/v1/offline/activate", request("pc-2")).await.status, 200, "the seat is free again");
}

/// `Idempotency-Key` on minting: a repeat gets the token minted first (same `jti`,
/// marked replayed), also when the repeats race; the same key on another license or
/// with another body is 422.
#[tokio::test]
async fn a_repeated_mint_gets_the_first_token() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let id = app.issue("pro", "acme").await["id"].as_str().unwrap().to_string();
    let other = app.issue("pro", "globex").await["id"].as_str().unwrap().to_string();
    let mint = |license: String, key: &'static str, body: Value| {
        let (c, url) = (app.client.clone(), format!("{}/v1/licenses/{license}/tokens", app.base));
        async move {
            let r = c.post(url).bearer_auth(ADMIN).header("idempotency-key", key).json(&body).send().await.unwrap();
            let replayed = r.headers().get("idempotent-replayed").is_some();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, replayed, v)
        }
    };
    let body = json!({"ttl_seconds": 600});
    let tasks: Vec<_> = (0..6).map(|_| tokio::spawn(mint(id.clone(), "mint-once", body.clone()))).collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    assert!(answers.iter().all(|(s, _, _)| *s == 200), "{answers:?}");
    let jti = answers[0].2["jti"].as_str().unwrap().to_string();
    let first = answers[0].2["token"].as_str().unwrap().to_string();
    assert!(answers.iter().all(|(_, _, v)| v["jti"] == jti.as_str()), "one token for every repeat: {answers:?}");
    assert!(answers.iter().all(|(_, _, v)| v["token"] == first.as_str()), "the same bytes: {answers:?}");
    // The store keeps what to sign again, not the token: its signature is nowhere on disk.
    let signature = first.rsplit('.').next().unwrap();
    let db = std::fs::read(tollgate_server::db_path(&app.dir)).unwrap();
    let wal = std::fs::read(tollgate_server::db_path(&app.dir).with_extension("db-wal")).unwrap_or_default();
    let found = |hay: &[u8]| hay.windows(signature.len()).any(|w| w == signature.as_bytes());
    assert!(!found(&db) && !found(&wal), "a minted token is not stored");
    assert!(answers.iter().any(|(_, replayed, _)| *replayed), "repeats are marked replayed");
    let (status, replayed, v) = mint(id.clone(), "mint-once", body.clone()).await;
    assert_eq!((status, replayed, v["jti"].as_str()), (200, true, Some(jti.as_str())));
    let (status, _, v) = mint(other, "mint-once", body.clone()).await;
    assert_eq!((status, v["code"].as_str()), (422, Some("IDEMPOTENCY_KEY_REUSED")), "{v}");
    let (status, _, v) = mint(id.clone(), "mint-once", json!({"ttl_seconds": 60})).await;
    assert_eq!((status, v["code"].as_str()), (422, Some("IDEMPOTENCY_KEY_REUSED")), "{v}");
    // Without a key, each request mints a new token.
    let (_, a) = token(&app, &id, body.clone()).await;
    let (_, b) = token(&app, &id, body.clone()).await;
    assert_ne!(a["jti"], b["jti"]);
    // Once the license is revoked, the token is not handed out again.
    assert_eq!(app.post(&format!("/v1/licenses/{id}/revoke"), json!({})).await.status, 200);
    let (status, _, v) = mint(id.clone(), "mint-once", body).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("MINTED_TOKEN_UNUSABLE")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("revoked"), "{v}");
    app.stop().await;
}
