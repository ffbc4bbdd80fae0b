use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn catalog_and_license_lifecycle_end_to_end() {
    let app = spawn_app().await;
    app.seed_catalog().await;

    let r = app.get("/v1/products/cad").await;
    assert_eq!(r.body["features"].as_array().unwrap().len(), 5);
    assert_eq!(r.body["version"], 1);
    let r = app.get("/v1/plans").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);

    let lic = app.issue("basic", "acme").await;
    let id = lic["id"].as_str().unwrap();
    let key = lic["key"].as_str().unwrap();
    assert!(id.starts_with("lic_"));
    assert_eq!(key.len(), 29);
    assert_eq!(lic["status"], "active");
    assert_eq!(lic["product"], "cad");
    assert_eq!(lic["plan"], "basic");
    assert_eq!(lic["licensee"], "acme");
    assert!(lic["expires_at"].is_string(), "a 365-day plan sets expiry: {lic}");

    let r = app.get(&format!("/v1/licenses/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["key"], key);

    let v = app.validate(key, Some("a")).await;
    assert_eq!((v["valid"].as_bool(), v["code"].as_str()), (Some(true), Some("VALID")));
    assert_eq!(v["features"], json!(["a", "b"]));
    assert_eq!(v["license"]["id"], id);
    // Keys are accepted in any case and without hyphens.
    let sloppy = key.replace('-', "").to_lowercase();
    assert_eq!(app.validate(&sloppy, None).await["code"], "VALID");

    let v = app.validate(key, Some("c")).await;
    assert_eq!((v["valid"].as_bool(), v["code"].as_str()), (Some(false), Some("FEATURE_NOT_ENTITLED")));

    let r = app.post(&format!("/v1/licenses/{id}/suspend"), json!({"reason":"chargeback"})).await;
    assert_eq!((r.status.as_u16(), r.body["status"].as_str()), (200, Some("suspended")));
    assert_eq!(app.validate(key, None).await["code"], "SUSPENDED");
    // Suspending again is idempotent: same answer, no new event.
    let seq = app.get("/v1/ledger/entries?start=0&end=0").await.body["size"].as_u64().unwrap();
    let r = app.post(&format!("/v1/licenses/{id}/suspend"), json!({})).await;
    assert_eq!(r.body["status"], "suspended");
    assert_eq!(app.get("/v1/ledger/entries?start=0&end=0").await.body["size"].as_u64().unwrap(), seq);

    let r = app.post(&format!("/v1/licenses/{id}/reinstate"), json!({})).await;
    assert_eq!(r.body["status"], "active");
    assert_eq!(app.validate(key, None).await["code"], "VALID");

    let before = lic["expires_at"].as_str().unwrap().to_string();
    let r = app.post(&format!("/v1/licenses/{id}/renew"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let after = r.body["expires_at"].as_str().unwrap();
    let days = |s: &str| tollgate_core::Timestamp::parse(s).unwrap().millis() / 86_400_000;
    assert_eq!(days(after) - days(&before), 365, "renewal continues the running term");

    let r = app.post(&format!("/v1/licenses/{id}/change-plan"), json!({"plan":"pro"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["plan"], "pro");
    assert_eq!(r.body["expires_at"], serde_json::Value::Null, "a perpetual plan drops expiry");
    assert_eq!(app.validate(key, Some("c")).await["code"], "VALID");

    let r = app.post(&format!("/v1/licenses/{id}/revoke"), json!({"reason":"fraud"})).await;
    assert_eq!(r.body["status"], "revoked");
    assert_eq!(app.validate(key, None).await["code"], "REVOKED");
    assert_problem(&app.post(&format!("/v1/licenses/{id}/reinstate"), json!({})).await, 409, "LICENSE_REVOKED");
    assert_problem(&app.post(&format!("/v1/licenses/{id}/renew"), json!({})).await, 409, "LICENSE_REVOKED");

    // Every change is in the ledger with actor, time, reason and request id.
    let entries = app.get("/v1/ledger/entries?start=0&end=20").await.body;
    let events: Vec<_> = entries["entries"].as_array().unwrap().iter().map(|e| e["event"].clone()).collect();
    let suspend = events.iter().find(|e| e["event"].get("license_suspended").is_some()).expect("suspend event");
    assert_eq!(suspend["reason"], "chargeback");
    assert!(suspend["actor"].as_str().unwrap().starts_with("token:tok_"), "{suspend}");
    assert!(suspend["request_id"].is_string() && suspend["at"].is_string());
    app.stop().await;
}

#[tokio::test]
async fn validation_codes_for_unknown_malformed_and_expired_keys() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let v = app.validate("AAAAA-AAAAA-AAAAA-AAAAA-AAAAA", None).await;
    assert_eq!((v["valid"].as_bool(), v["code"].as_str()), (Some(false), Some("MALFORMED_KEY")), "bad check character");
    let v = app.validate("ABCDE-FGH", None).await;
    assert_eq!(v["code"], "MALFORMED_KEY");
    assert!(v["detail"].as_str().unwrap().contains("25"), "{v}");
    let v = app.validate("hello", None).await;
    assert!(v["detail"].as_str().unwrap().contains("never contains 'o'"), "{v}");
    assert_eq!(v["license"], serde_json::Value::Null);
    let unknown = tollgate_core::key::LicenseKey::from_random([9; 15]);
    assert_eq!(app.validate(unknown.as_str(), None).await["code"], "NOT_FOUND");

    // Expiry is judged at request time: a license that expires in a moment is valid,
    // then EXPIRED, with no sweeper involved. (Basic's 10 grace days do not apply to an
    // explicit expiry on the perpetual pro plan.)
    let soon = tollgate_server::engine::now().millis() + 1500;
    let soon = tollgate_core::Timestamp::from_millis(soon).unwrap().to_string();
    let r = app.post("/v1/licenses", json!({"product":"cad","plan":"pro","licensee":"x","expires_at":soon})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.body["key"].as_str().unwrap().to_string();
    assert_eq!(app.validate(&key, None).await["code"], "VALID");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let v = app.validate(&key, None).await;
        if v["code"] == "EXPIRED" {
            assert_eq!(v["valid"], false);
            assert_eq!(v["license"]["status"], "expired");
            break;
        }
        assert_eq!(v["code"], "VALID");
        assert!(std::time::Instant::now() < deadline, "license never expired");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let r = app.get("/v1/licenses?status=expired").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    app.stop().await;
}

#[tokio::test]
async fn trial_converts_to_paid_with_the_same_key() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let lic = app.issue("trial", "t").await;
    assert_eq!(lic["trial"], true);
    let id = lic["id"].as_str().unwrap();
    let r = app.post(&format!("/v1/licenses/{id}/change-plan"), json!({"plan":"basic"})).await;
    assert_eq!((r.body["trial"].as_bool(), r.body["key"].as_str()), (Some(false), lic["key"].as_str()));
    let exp = tollgate_core::Timestamp::parse(r.body["expires_at"].as_str().unwrap()).unwrap();
    let days = (exp.millis() - tollgate_server::engine::now().millis()) / 86_400_000;
    assert!((364..=365).contains(&days), "paid term starts at conversion: {days}");
    assert_problem(
        &app.post(&format!("/v1/licenses/{id}/change-plan"), json!({"plan":"nope"})).await,
        404,
        "PLAN_NOT_FOUND",
    );
    app.stop().await;
}

#[tokio::test]
async fn listing_filters_and_paginates() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    for i in 0..7 {
        app.issue(if i % 2 == 0 { "basic" } else { "pro" }, if i < 3 { "alice" } else { "bob" }).await;
    }
    let r = app.get("/v1/licenses?licensee=alice").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 3);
    let r = app.get("/v1/licenses?plan=pro&licensee=bob").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    let mut seen = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let path = match &cursor {
            Some(c) => format!("/v1/licenses?limit=3&cursor={c}"),
            None => "/v1/licenses?limit=3".into(),
        };
        let r = app.get(&path).await;
        for l in r.body["items"].as_array().unwrap() {
            seen.push(l["id"].as_str().unwrap().to_string());
        }
        match r.body["next_cursor"].as_str() {
            Some(c) => cursor = Some(c.to_string()),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(seen.len(), 7);
    assert_eq!(sorted, seen, "pages are in id order without repeats");
    app.stop().await;
}

#[tokio::test]
async fn idempotency_keys_replay_the_first_answer() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let body = json!({"product":"cad","plan":"basic","licensee":"idem"});
    let send = |key: &'static str, body: serde_json::Value| {
        let c = app.client.clone();
        let url = format!("{}/v1/licenses", app.base);
        async move { c.post(url).bearer_auth(ADMIN).header("idempotency-key", key).json(&body).send().await.unwrap() }
    };
    let first = send("k-1", body.clone()).await;
    assert_eq!(first.status(), 201);
    let first: serde_json::Value = first.json().await.unwrap();
    let size = app.get("/v1/ledger/entries?end=0").await.body["size"].clone();
    let again = send("k-1", body.clone()).await;
    assert_eq!(again.status(), 201);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    let again: serde_json::Value = again.json().await.unwrap();
    assert_eq!(again, first, "same key and body: the same response");
    assert_eq!(app.get("/v1/ledger/entries?end=0").await.body["size"], size, "and no second event");

    let other = send("k-1", json!({"product":"cad","plan":"pro","licensee":"idem"})).await;
    assert_eq!(other.status(), 422);
    let p: serde_json::Value = other.json().await.unwrap();
    assert_eq!(p["code"], "IDEMPOTENCY_KEY_REUSED");

    // Twenty concurrent requests with one key make one license.
    let futs: Vec<_> = (0..20).map(|_| send("k-2", body.clone())).collect();
    let mut ids = std::collections::BTreeSet::new();
    for r in futures_join(futs).await {
        assert_eq!(r.status(), 201);
        let v: serde_json::Value = r.json().await.unwrap();
        ids.insert(v["id"].as_str().unwrap().to_string());
    }
    assert_eq!(ids.len(), 1, "{ids:?}");
    assert_eq!(app.get("/v1/licenses?licensee=idem").await.body["items"].as_array().unwrap().len(), 2);

    // An optional body left out, sent as `null` or as `{}` is one request: a retry that
    // spells it another way is replayed, not refused as another body.
    let id = first["id"].as_str().unwrap().to_string();
    let suspend = |body: &'static str| {
        let c = app.client.clone();
        let url = format!("{}/v1/licenses/{id}/suspend", app.base);
        async move {
            c.post(url)
                .bearer_auth(ADMIN)
                .header("idempotency-key", "k-3")
                .header("content-type", "application/json")
                .body(body)
                .send()
                .await
                .unwrap()
        }
    };
    assert_eq!(suspend("").await.status(), 200);
    for spelled in ["{}", "null", " "] {
        let r = suspend(spelled).await;
        assert_eq!(r.status(), 200, "{spelled:?}");
        assert_eq!(r.headers().get("idempotent-replayed").unwrap(), "true", "{spelled:?}");
    }
    app.stop().await;
}

/// An answer is kept for the retention period, then pruned: the same key is then a
/// new request (as with Stripe's 24 hours).
#[tokio::test]
async fn an_idempotency_key_is_forgotten_after_its_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tollgate_server::Config::new(tmp.path());
    cfg.idempotency_retention = Some(std::time::Duration::from_secs(2));
    let app = spawn_config(cfg).await;
    app.seed_catalog().await;
    let send = || async {
        let r = app
            .post_keyed("/v1/licenses", "k-retained", json!({"product":"cad","plan":"basic","licensee":"retained"}))
            .await;
        assert_eq!(r.status, 201);
        (r.headers.get("idempotent-replayed").is_some(), r.body["id"].as_str().unwrap().to_string())
    };
    let started = std::time::Instant::now();
    let (replayed, first) = send().await;
    assert!(!replayed);
    assert_eq!(send().await, (true, first.clone()), "within the retention: the first answer");
    let second = loop {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "the record was never pruned");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let (replayed, id) = send().await;
        if !replayed {
            break id;
        }
        assert_eq!(id, first);
    };
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "pruned before its retention");
    assert_ne!(second, first);
    assert_eq!(app.get("/v1/licenses?licensee=retained").await.body["items"].as_array().unwrap().len(), 2);
    app.stop().await;
}

/// The writes outside the ledger forget their keys after the retention too: a repeat
/// of an API token's creation is told which token its key made, and once the claim is
/// pruned the same key creates a new token (it used to be refused for ever).
#[tokio::test]
async fn an_idempotency_key_of_a_token_creation_is_forgotten_after_its_retention() {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tollgate_server::Config::new(tmp.path());
    cfg.idempotency_retention = Some(std::time::Duration::from_secs(2));
    let app = spawn_config(cfg).await;
    let send = || async {
        let r = app.post_keyed("/v1/tokens", "k-token", json!({"role":"auditor","name":"retained"})).await;
        (r.status.as_u16(), r.body)
    };
    let started = std::time::Instant::now();
    let (status, first) = send().await;
    assert_eq!(status, 201, "{first}");
    let (status, repeat) = send().await;
    assert_eq!((status, repeat["code"].as_str()), (409, Some("TOKEN_ALREADY_CREATED")), "{repeat}");
    assert!(repeat["detail"].as_str().unwrap().contains(first["id"].as_str().unwrap()), "{repeat}");
    let second = loop {
        assert!(started.elapsed() < std::time::Duration::from_secs(20), "the claim was never pruned");
        tokio::time::sleep(std::time::Duration::from_millis(250)).await;
        let (status, body) = send().await;
        if status == 201 {
            break body;
        }
        assert_eq!(body["code"], "TOKEN_ALREADY_CREATED", "{body}");
    };
    assert!(started.elapsed() >= std::time::Duration::from_secs(2), "pruned before its retention");
    assert_ne!(second["id"], first["id"]);
    app.stop().await;
}

/// A claim an earlier build kept in `meta` (never pruned) is an idempotency record
/// once a server has started on the ledger, and its key still answers as it did.
#[tokio::test]
async fn claims_an_earlier_build_kept_in_meta_are_moved_at_start() {
    use tollgate_store::LedgerStore;
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().to_path_buf();
    spawn_at(&dir).await.stop().await;
    let db = tollgate_server::db_path(&dir);
    let legacy = "idempotency/token/tok_0/k-legacy";
    let claim = format!(r#"{{"request":"{}","answer":{{"id":"tok_earlier"}}}}"#, "cd".repeat(32));
    tollgate_store::SqliteStore::open(&db).unwrap().set_meta(legacy, claim.as_bytes()).unwrap();
    spawn_at(&dir).await.stop().await;
    let store = tollgate_store::SqliteStore::open_read_only(&db).unwrap();
    assert_eq!(store.meta(legacy).unwrap(), None);
    let moved = store.idempotency(tollgate_store::OUTSIDE_LEDGER_SCOPE, "token/tok_0/k-legacy").unwrap().unwrap();
    assert_eq!((moved.request_hash, &moved.body[..]), ([0xcd; 32], &br#"{"id":"tok_earlier"}"#[..]));
}

/// During a rolling upgrade a node of the earlier build keeps its claims in `meta`
/// until a pruning tick moves them: an upgraded node looks a key up there too, so a
/// retry through it is not taken for a new request.
#[tokio::test]
async fn a_claim_an_earlier_build_keeps_in_meta_is_found_before_it_is_moved() {
    use tollgate_store::LedgerStore;
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tollgate_server::Config::new(tmp.path());
    cfg.idempotency_retention = None;
    let app = spawn_config(cfg).await;
    let tokens = app.get("/v1/tokens").await;
    let admin = tokens.body["items"][0]["id"].as_str().unwrap().to_string();
    // As a node of the earlier build would write it, for another request.
    let legacy = format!("idempotency/token/{admin}/k-legacy");
    let claim = format!(r#"{{"request":"{}","answer":{{"id":"tok_earlier"}}}}"#, "cd".repeat(32));
    let db = tollgate_server::db_path(tmp.path());
    tollgate_store::SqliteStore::open(&db).unwrap().set_meta(&legacy, claim.as_bytes()).unwrap();
    let r = app.post_keyed("/v1/tokens", "k-legacy", json!({"role":"auditor"})).await;
    assert_eq!((r.status.as_u16(), r.body["code"].as_str()), (422, Some("IDEMPOTENCY_KEY_REUSED")), "{}", r.text);
    app.stop().await;
}

async fn futures_join<F: std::future::Future + Send + 'static>(futs: Vec<F>) -> Vec<F::Output>
where
    F::Output: Send,
{
    let handles: Vec<_> = futs.into_iter().map(tokio::spawn).collect();
    let mut out = Vec::new();
    for h in handles {
        out.push(h.await.unwrap());
    }
    out
}

#[tokio::test]
async fn restart_keeps_everything() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let lic = app.issue("basic", "durable").await;
    let id = lic["id"].as_str().unwrap().to_string();
    app.post(&format!("/v1/licenses/{id}/suspend"), json!({})).await;
    let cp_before = app.call(reqwest::Method::GET, "/v1/ledger/checkpoint", None, None).await.text;
    let dir = app.dir.clone();
    let tmp = app.stop().await;

    let app = spawn_at(&dir).await;
    let r = app.get(&format!("/v1/licenses/{id}")).await;
    assert_eq!(r.status, 200);
    assert_eq!(r.body["status"], "suspended");
    assert_eq!(r.body["key"], lic["key"]);
    assert_eq!(app.get("/v1/plans").await.body["items"].as_array().unwrap().len(), 3);
    let cp_after = app.call(reqwest::Method::GET, "/v1/ledger/checkpoint", None, None).await.text;
    assert_eq!(cp_before, cp_after, "same tree, same signed checkpoint");
    // And it keeps accepting writes at the right sequence.
    app.issue("pro", "after-restart").await;
    assert_eq!(app.get("/v1/licenses").await.body["items"].as_array().unwrap().len(), 2);
    app.stop().await;
    drop(tmp);
}

/// A second server on a data directory another one runs on is refused, and says why:
/// it would serve its own state, never seeing the first one's writes. Once the first
/// has stopped, the directory opens again.
#[tokio::test]
async fn a_second_server_on_the_same_data_directory_is_refused() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let err = tollgate_server::open(&tollgate_server::Config::new(&app.dir)).err().expect("the second open is refused");
    let msg = err.to_string();
    assert!(msg.contains("another Tollgate server is running on the data directory"), "{msg}");
    assert!(msg.contains(tollgate_server::LOCK_FILE), "{msg}");
    // The first one is unharmed.
    app.issue("basic", "still-writing").await;
    let dir = app.dir.clone();
    let tmp = app.stop().await;
    let app = spawn_at(&dir).await;
    assert_eq!(app.get("/v1/licenses").await.body["items"].as_array().unwrap().len(), 1);
    app.stop().await;
    drop(tmp);
}

/// Metadata the ledger could not give back as it was accepted is refused up front: JSON
/// nested deeper than serde_json reads once it is wrapped in an event (before this
/// check, such a license was acknowledged and then the ledger could never be loaded
/// again), and integers that RFC 8785's doubles would round.
#[tokio::test]
async fn metadata_is_refused_unless_it_reads_back_exactly_after_a_restart() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let nested = |levels: usize| (0..levels).fold(json!(1), |inner, _| json!([inner]));
    let issue = |metadata: serde_json::Value| json!({"product":"cad","plan":"pro","licensee":"m","metadata":metadata});

    let r = app.post("/v1/licenses", issue(json!({"deep": nested(124)}))).await;
    assert_problem(&r, 422, "INVALID_INPUT");
    assert!(r.body["detail"].as_str().unwrap().contains("'deep'"), "{}", r.text);
    let r = app.post("/v1/licenses", issue(json!({"crm": {"id": 9_007_199_254_740_993u64}}))).await;
    assert_problem(&r, 422, "INVALID_INPUT");
    assert!(r.body["detail"].as_str().unwrap().contains("9007199254740993"), "{}", r.text);
    let r = app.post("/v1/licenses", issue(json!({"neg": -9_007_199_254_740_993i64}))).await;
    assert_problem(&r, 422, "INVALID_INPUT");

    let kept = json!({"deep": nested(31), "max": 9_007_199_254_740_992u64, "min": -9_007_199_254_740_992i64, "ratio": 0.1, "name": "Ünïcode"});
    let r = app.post("/v1/licenses", issue(kept.clone())).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["metadata"], kept);
    let id = r.body["id"].as_str().unwrap().to_string();

    let dir = app.dir.clone();
    let tmp = app.stop().await;
    let app = spawn_at(&dir).await;
    let r = app.get(&format!("/v1/licenses/{id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["metadata"], kept, "read back from the ledger as it was accepted");
    app.stop().await;
    drop(tmp);
}

#[tokio::test]
async fn catalog_updates_are_versioned_and_checked() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let r = app
        .call(
            reqwest::Method::PUT,
            "/v1/plans/basic",
            Some(ADMIN),
            Some(json!({"key":"basic","product":"cad","name":"Basic+","features":["a","b","c"],"duration_days":365})),
        )
        .await;
    assert_eq!((r.status.as_u16(), r.body["version"].as_u64()), (200, Some(2)), "{}", r.text);
    assert_problem(
        &app.post("/v1/products", json!({"key":"cad","name":"Other","features":[]})).await,
        409,
        "PRODUCT_EXISTS",
    );
    // Re-sending an identical product is not a conflict.
    let r = app.post("/v1/products", json!({"key":"cad","name":"CAD","features":[{"key":"a","name":"A"},{"key":"b","name":"B"},{"key":"c","name":"C"},{"key":"d","name":"D"},{"key":"e","name":"E"}]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_problem(
        &app.post("/v1/plans", json!({"key":"p2","product":"cad","name":"P","features":["zz"]})).await,
        422,
        "UNKNOWN_FEATURE",
    );
    assert_problem(
        &app.post("/v1/plans", json!({"key":"p3","product":"nope","name":"P"})).await,
        404,
        "PRODUCT_NOT_FOUND",
    );
    let r = app
        .call(
            reqwest::Method::PUT,
            "/v1/products/cad",
            Some(ADMIN),
            Some(json!({"key":"cad","name":"CAD","features":[{"key":"a","name":"A"}]})),
        )
        .await;
    assert_problem(&r, 409, "FEATURE_IN_USE");
    app.stop().await;
}

/// An import of the most rows allowed fits in one request (it was refused with 413 by
/// the 1 MiB limit that other routes keep), and one row more is refused by name.
#[tokio::test]
async fn an_import_of_the_most_rows_allowed_fits_in_one_request() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let rows = |n: usize| -> Vec<serde_json::Value> {
        (0..n)
            .map(|i| json!({"external_id": format!("crm-{i:06}"), "product": "cad", "plan": "pro", "licensee": format!("Customer number {i:06}, Example Industries Ltd")}))
            .collect()
    };
    let body = json!({"dry_run": true, "rows": rows(10_000)});
    assert!(body.to_string().len() > 1024 * 1024, "more than the general limit");
    let r = app.post("/v1/import/licenses", body).await;
    assert_eq!(r.status, 200, "{}", &r.text[..r.text.len().min(300)]);
    assert_eq!(r.body["total"], 10_000);
    let r = app.post("/v1/import/licenses", json!({"dry_run": true, "rows": rows(10_001)})).await;
    assert_problem(&r, 422, "INVALID_INPUT");
    // Refused while the rows are read (at the 10,001st), not once all are in memory.
    let detail = r.body["detail"].as_str().unwrap();
    assert!(detail.contains("at 'rows") && detail.contains("at most 10000 rows"), "{detail}");
    // Machines are bounded too, per row and per import: each is an event of the one
    // batch an import commits.
    let machines = |from: usize, n: usize| -> Vec<String> { (from..from + n).map(|i| format!("fp-{i:07}")).collect() };
    // A row refused for its own count adds nothing to the import's: rows 1 to 100 make
    // 100,000, and row 101 goes past.
    let mut rows = rows(102);
    rows[0]["machines"] = json!(machines(0, 1_001));
    for (i, row) in rows.iter_mut().enumerate().skip(1) {
        row["machines"] = json!(machines(i * 1_000, 1_000));
    }
    let r = app.post("/v1/import/licenses", json!({"dry_run": true, "rows": rows})).await;
    assert_eq!(r.status, 200, "{}", &r.text[..r.text.len().min(300)]);
    let rejected = r.body["rejected"].as_array().unwrap();
    assert_eq!(rejected.len(), 2, "{:?}", &rejected[..rejected.len().min(3)]);
    assert!(rejected[0]["detail"].as_str().unwrap().contains("at most 1000 per row, not 1001"), "{}", rejected[0]);
    assert_eq!(rejected[0]["external_id"], "crm-000000");
    assert!(rejected[1]["detail"].as_str().unwrap().contains("at most 100000 in one import"), "{}", rejected[1]);
    assert_eq!(rejected[1]["external_id"], "crm-000101", "the row that goes past 100,000");
    // Other routes keep the general limit.
    let big = json!({"key": "x".repeat(2 * 1024 * 1024)});
    assert_eq!(app.post("/v1/validate", big).await.status, 413);
}
