use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

async fn token(app: &TestApp, role: &str, product: Option<&str>) -> String {
    let mut body = json!({"role": role, "name": format!("{role} test")});
    if let Some(p) = product {
        body["product"] = json!(p);
    }
    let r = app.post("/v1/tokens", body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["token"].as_str().unwrap().to_string()
}

#[tokio::test]
async fn roles_allow_what_they_should_and_nothing_else() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let lic = app.issue("basic", "r").await;
    let key = lic["key"].as_str().unwrap();
    let issuer = token(&app, "issuer", None).await;
    let auditor = token(&app, "auditor", None).await;
    let product = token(&app, "product", None).await;
    let r = app.post("/v1/products", json!({"key":"other","name":"Other","features":[]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let other_product = token(&app, "product", Some("other")).await;

    let call = |t: String, m: Method, p: &'static str, b: Option<serde_json::Value>| {
        let app = &app;
        async move { app.call(m, p, Some(&t), b).await }
    };
    // issuer: catalog read, license writes, validate; no catalog writes, no ledger.
    assert_eq!(call(issuer.clone(), Method::GET, "/v1/products", None).await.status, 200);
    assert_eq!(
        call(
            issuer.clone(),
            Method::POST,
            "/v1/licenses",
            Some(json!({"product":"cad","plan":"basic","licensee":"i"}))
        )
        .await
        .status,
        201
    );
    assert_problem(
        &call(issuer.clone(), Method::POST, "/v1/products", Some(json!({"key":"x","name":"X"}))).await,
        403,
        "FORBIDDEN",
    );
    let r = call(issuer.clone(), Method::GET, "/v1/ledger/entries", None).await;
    assert_problem(&r, 403, "FORBIDDEN");
    let d = r.body["detail"].as_str().unwrap();
    assert!(d.contains("role 'issuer'") && d.contains("takes a token with role admin or auditor"), "{d}");
    assert_problem(
        &call(issuer.clone(), Method::POST, "/v1/tokens", Some(json!({"role":"admin"}))).await,
        403,
        "FORBIDDEN",
    );
    // auditor: reads everything including the ledger; writes nothing.
    assert_eq!(call(auditor.clone(), Method::GET, "/v1/ledger/entries", None).await.status, 200);
    assert_eq!(call(auditor.clone(), Method::GET, "/v1/licenses", None).await.status, 200);
    assert_problem(
        &call(
            auditor.clone(),
            Method::POST,
            "/v1/licenses",
            Some(json!({"product":"cad","plan":"basic","licensee":"i"})),
        )
        .await,
        403,
        "FORBIDDEN",
    );
    assert_problem(
        &call(auditor.clone(), Method::POST, "/v1/validate", Some(json!({"key": key}))).await,
        403,
        "FORBIDDEN",
    );
    // product: validation only, and a product-scoped token sees only its product.
    let r = call(product.clone(), Method::POST, "/v1/validate", Some(json!({"key": key}))).await;
    assert_eq!(r.body["code"], "VALID");
    assert_problem(&call(product.clone(), Method::GET, "/v1/licenses", None).await, 403, "FORBIDDEN");
    let r = call(other_product.clone(), Method::POST, "/v1/validate", Some(json!({"key": key}))).await;
    assert_eq!(r.body["code"], "NOT_FOUND", "another product's license is invisible");

    // Missing, malformed, unknown and revoked tokens.
    assert_problem(&app.call(Method::GET, "/v1/licenses", None, None).await, 401, "UNAUTHORIZED");
    assert_problem(&app.call(Method::GET, "/v1/licenses", Some("tg_nope"), None).await, 401, "UNAUTHORIZED");
    let r =
        app.client.get(format!("{}/v1/licenses", app.base)).header("authorization", "Basic abc").send().await.unwrap();
    assert_eq!(r.status(), 401);
    let tokens = app.get("/v1/tokens").await.body;
    assert!(
        tokens.to_string().contains("issuer test") && !tokens.to_string().contains(&issuer),
        "secrets are never listed"
    );
    let issuer_id = tokens["items"].as_array().unwrap().iter().find(|t| t["role"] == "issuer").unwrap()["id"]
        .as_str()
        .unwrap()
        .to_string();
    let r = app.call(Method::DELETE, &format!("/v1/tokens/{issuer_id}"), Some(ADMIN), None).await;
    assert_eq!(r.status, 204);
    assert_problem(&call(issuer, Method::GET, "/v1/products", None).await, 401, "UNAUTHORIZED");
    // Public: health, the ledger key and checkpoint.
    assert_eq!(app.call(Method::GET, "/healthz", None, None).await.status, 200);
    assert_eq!(app.call(Method::GET, "/readyz", None, None).await.status, 200);
    assert_eq!(app.call(Method::GET, "/v1/ledger/key", None, None).await.status, 200);
    app.stop().await;
}

#[tokio::test]
async fn tokens_are_stored_hashed() {
    let app = spawn_app().await;
    let secret = token(&app, "issuer", None).await;
    let db = std::fs::read(tollgate_server::db_path(&app.dir)).unwrap();
    let wal = std::fs::read(tollgate_server::db_path(&app.dir).with_extension("db-wal")).unwrap_or_default();
    let needle = secret.as_bytes();
    let found = |hay: &[u8]| hay.windows(needle.len()).any(|w| w == needle);
    assert!(!found(&db) && !found(&wal), "the token secret must not be stored");
    app.stop().await;
}

/// A product scope restricts product tokens only. On another role it would promise a
/// restriction the handlers do not make (an issuer "scoped" to one product could
/// revoke another product's licenses), so it is refused when the token is created,
/// and a token stored with one earlier is refused when it is used.
#[tokio::test]
async fn a_product_scope_is_for_product_tokens_only() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    for role in ["issuer", "auditor", "admin"] {
        let r = app.post("/v1/tokens", json!({"role": role, "product": "cad"})).await;
        assert_problem(&r, 422, "INVALID_INPUT");
        assert!(r.body["detail"].as_str().unwrap().contains("product token"), "{}", r.text);
    }
    // A scope naming no product is refused, not stored as a token that can see nothing.
    let r = app.post("/v1/tokens", json!({"role": "product", "product": "nope"})).await;
    assert_problem(&r, 404, "PRODUCT_NOT_FOUND");
    let scoped = token(&app, "product", Some("cad")).await;
    let r = app
        .call(Method::POST, "/v1/validate", Some(&scoped), Some(json!({"key":"AAAAA-AAAAA-AAAAA-AAAAA-AAAAA"})))
        .await;
    assert_eq!(r.status, 200, "{}", r.text);

    // One stored before the refusal existed.
    let (secret, record) = tollgate_server::auth::new_token(
        tollgate_server::auth::Role::Issuer,
        "old scoped issuer",
        Some("cad".into()),
        "2026-11-01T00:00:00Z".into(),
    );
    let dir = app.dir.clone();
    let tmp = app.stop().await;
    {
        use tollgate_store::LedgerStore;
        let mut store = tollgate_store::SqliteStore::open(&tollgate_server::db_path(&dir)).unwrap();
        store.insert_token(&record).unwrap();
    }
    let app = spawn_at(&dir).await;
    let r = app.call(Method::GET, "/v1/licenses", Some(&secret), None).await;
    assert_problem(&r, 401, "UNAUTHORIZED");
    assert!(r.body["detail"].as_str().unwrap().contains("revoke it"), "{}", r.text);
    app.stop().await;
    drop(tmp);
}

/// `Idempotency-Key` on token creation: a repeat creates no second token, and since
/// the secret is never stored, it is told which token the key created (409) rather
/// than shown the secret again; the same key with another body is 422. Repeats sent
/// at once create one token between them.
#[tokio::test]
async fn a_repeated_token_creation_creates_one_token() {
    let app = spawn_app().await;
    let post = |key: &'static str, body: Value| {
        let (c, url) = (app.client.clone(), format!("{}/v1/tokens", app.base));
        async move {
            let r = c.post(url).bearer_auth(ADMIN).header("idempotency-key", key).json(&body).send().await.unwrap();
            let status = r.status().as_u16();
            let v: Value = r.json().await.unwrap();
            (status, v)
        }
    };
    let count = || async { app.get("/v1/tokens").await.body["items"].as_array().unwrap().len() };
    let before = count().await;
    let body = json!({"role":"auditor","name":"books"});
    let tasks: Vec<_> = (0..8).map(|_| tokio::spawn(post("one-token", body.clone()))).collect();
    let mut answers = Vec::new();
    for t in tasks {
        answers.push(t.await.unwrap());
    }
    let created: Vec<&Value> = answers.iter().filter(|(s, _)| *s == 201).map(|(_, v)| v).collect();
    assert_eq!(created.len(), 1, "exactly one request creates the token: {answers:?}");
    let id = created[0]["id"].as_str().unwrap();
    for (status, v) in answers.iter().filter(|(s, _)| *s != 201) {
        assert_eq!((*status, v["code"].as_str()), (409, Some("TOKEN_ALREADY_CREATED")), "{v}");
        assert!(v["detail"].as_str().unwrap().contains(id), "the repeat names the token: {v}");
        assert!(v.get("token").is_none(), "the secret is shown once");
    }
    let (status, v) = post("one-token", body.clone()).await;
    assert_eq!((status, v["code"].as_str()), (409, Some("TOKEN_ALREADY_CREATED")));
    let (status, v) = post("one-token", json!({"role":"issuer"})).await;
    assert_eq!((status, v["code"].as_str()), (422, Some("IDEMPOTENCY_KEY_REUSED")), "{v}");
    let items = app.get("/v1/tokens").await.body["items"].as_array().unwrap().clone();
    let live = items.iter().filter(|t| t["revoked_at"].is_null()).count();
    assert_eq!(live, before + 1, "one live token more: {items:?}");
    // The token it created works.
    let secret = created[0]["token"].as_str().unwrap();
    assert_eq!(app.call(Method::GET, "/v1/licenses", Some(secret), None).await.status, 200);
    // Without a key, each request is a new token.
    assert_eq!(app.post("/v1/tokens", body.clone()).await.status, 201);
    assert_eq!(app.post("/v1/tokens", body).await.status, 201);
    app.stop().await;
}

/// A product token ships inside applications, so anyone running one holds it: it acts
/// on a license only by the license's key, never by its id (ids are not secret: the
/// revocation feed lists them). Before, any holder could fill another customer's
/// machine slots, leases or quota, or release them, knowing only the id.
#[tokio::test]
async fn a_product_token_acts_on_a_license_only_by_its_key() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let lic = app.issue("pro", "victim").await;
    let (id, key) = (lic["id"].as_str().unwrap().to_string(), lic["key"].as_str().unwrap().to_string());
    let product = token(&app, "product", Some("cad")).await;
    let as_product = |m: Method, path: String, body: Option<Value>| {
        let (app, product) = (&app, product.clone());
        async move { app.call(m, &path, Some(&product), body).await }
    };
    let fp = json!({"fingerprint": "laptop-1"});

    let r = as_product(Method::POST, format!("/v1/licenses/{id}/machines"), Some(fp.clone())).await;
    assert_problem(&r, 404, "LICENSE_NOT_FOUND");
    assert!(r.body["detail"].as_str().unwrap().contains("by its key"), "{}", r.text);
    assert_problem(
        &as_product(Method::GET, format!("/v1/licenses/{id}/machines"), None).await,
        404,
        "LICENSE_NOT_FOUND",
    );
    let usage = json!({"meter": "api", "quantity": 1});
    assert_problem(
        &as_product(Method::POST, format!("/v1/licenses/{id}/usage"), Some(usage)).await,
        404,
        "LICENSE_NOT_FOUND",
    );
    assert_eq!(app.get(&format!("/v1/licenses/{id}/machines")).await.body["items"], json!([]), "nothing was done");

    // With the key, as the customer's application has it (typed any way it validates).
    let r = as_product(Method::POST, format!("/v1/licenses/{key}/machines"), Some(fp.clone())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let sloppy = key.to_lowercase().replace('-', "");
    let r = as_product(Method::GET, format!("/v1/licenses/{sloppy}/machines"), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    // A token scoped to another product does not find it even by key.
    let r = app.post("/v1/products", json!({"key":"other","name":"Other","features":[]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let other = token(&app, "product", Some("other")).await;
    let r = app.call(Method::GET, &format!("/v1/licenses/{key}/machines"), Some(&other), None).await;
    assert_problem(&r, 404, "LICENSE_NOT_FOUND");
    // A product token scoped to no product lists what it may activate, by key (it was
    // refused the list as if it had to read licenses).
    let unscoped = token(&app, "product", None).await;
    for list in ["machines", "leases"] {
        let r = app.call(Method::GET, &format!("/v1/licenses/{key}/{list}"), Some(&unscoped), None).await;
        assert_eq!(r.status, 200, "{list}: {}", r.text);
    }
    // Admins and issuers may use either.
    assert_eq!(app.get(&format!("/v1/licenses/{key}/machines")).await.status, 200);
    assert_eq!(app.get(&format!("/v1/licenses/{id}/machines")).await.status, 200);
    app.stop().await;
}

/// The first-start admin token goes to a fresh owner-only file, in an owner-only data
/// directory: a file already there with a looser mode, or a symlink elsewhere, is
/// replaced, not written through.
#[cfg(unix)]
#[test]
fn the_bootstrap_token_file_is_owner_only_whatever_was_there() {
    use std::os::unix::fs::PermissionsExt;
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let outside = tmp.path().join("outside.txt");
    std::fs::write(&outside, "untouched").unwrap();
    std::fs::create_dir(&data).unwrap();
    let file = data.join(tollgate_server::BOOTSTRAP_TOKEN_FILE);
    std::os::unix::fs::symlink(&outside, &file).unwrap();
    let opened = tollgate_server::open(&tollgate_server::Config::new(&data)).expect("opens");
    assert!(matches!(opened.bootstrap, tollgate_server::Bootstrap::File(_)));
    drop(opened.app);
    opened.writer.join().unwrap();
    assert_eq!(std::fs::read_to_string(&outside).unwrap(), "untouched", "the symlink's target is not written");
    let meta = std::fs::symlink_metadata(&file).unwrap();
    assert!(meta.file_type().is_file(), "a regular file now");
    assert_eq!(meta.permissions().mode() & 0o777, 0o600);
    assert!(std::fs::read_to_string(&file).unwrap().trim().len() >= 16);

    // A data directory created by the server is the owner's alone.
    let fresh = tmp.path().join("fresh").join("data");
    let opened = tollgate_server::open(&tollgate_server::Config::new(&fresh)).expect("opens");
    drop(opened.app);
    opened.writer.join().unwrap();
    assert_eq!(std::fs::metadata(&fresh).unwrap().permissions().mode() & 0o777, 0o700);
}

/// `Tollgate-Min-Seq` makes a request wait: only a known caller may ask for that, on
/// any route, public ones included. A caller that may gets the bounded wait.
#[tokio::test]
async fn only_a_known_caller_may_make_a_request_wait_for_a_sequence() {
    let app = spawn_app().await;
    let far = "1000000";
    for (path, token) in [("/v1/products", None), ("/healthz", None), ("/v1/products", Some("tg_not_a_token"))] {
        let started = std::time::Instant::now();
        let mut req = app.client.get(format!("{}{path}", app.base)).header("tollgate-min-seq", far);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        let res = req.send().await.unwrap();
        assert_eq!(res.status(), 401, "{path} {token:?}");
        let body: Value = res.json().await.unwrap();
        assert_eq!(body["code"], "UNAUTHORIZED");
        assert!(started.elapsed() < std::time::Duration::from_secs(2), "{path}: refused before any wait");
    }
    // Without the header, public routes stay public.
    let res = app.client.get(format!("{}/healthz", app.base)).send().await.unwrap();
    assert_eq!(res.status(), 200);
    // A known caller waits, within the bound.
    let started = std::time::Instant::now();
    let res = app
        .client
        .get(format!("{}/v1/products", app.base))
        .bearer_auth(ADMIN)
        .header("tollgate-min-seq", far)
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 503);
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    let res = app
        .client
        .get(format!("{}/v1/products", app.base))
        .bearer_auth(ADMIN)
        .header("tollgate-min-seq", "0")
        .send()
        .await
        .unwrap();
    assert_eq!(res.status(), 200);
    app.stop().await;
}
