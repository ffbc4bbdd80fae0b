//! Licensing models through the real server (issue 3): machines, seats, floating
//! leases with the reaper, metered usage, overrides, entitlements and grace; and the
//! exact limits under contention (parallel requests against one license).

use reqwest::Method;
use serde_json::{Value, json};

use crate::support::*;

/// Product `cad` (see `seed_catalog`) plus plans `node` (a, b; 2 machines, 2 users,
/// 365 days + 10 grace), `float` (a; 2 leases of 60 s; `ttl1`: 1 s) and `metered`.
async fn seeded() -> TestApp {
    let app = spawn_app().await;
    app.seed_catalog().await;
    for plan in [
        json!({"key":"node","product":"cad","name":"Node","features":["a","b"],"duration_days":365,"grace_days":10,"max_machines":2,"max_users":2}),
        json!({"key":"float","product":"cad","name":"Float","features":["a"],"floating":{"max_leases":2,"lease_ttl_seconds":60}}),
        json!({"key":"ttl1","product":"cad","name":"Short leases","features":["a"],"floating":{"max_leases":1,"lease_ttl_seconds":1}}),
        json!({"key":"metered","product":"cad","name":"Metered","features":["a"],"meters":[
            {"key":"calls","quota":10,"period":"day"},
            {"key":"bytes","quota":10,"period":"month","overage":{"allow_percent":50}},
            {"key":"jobs","quota":1,"period":"total","overage":"allow"}]}),
        json!({"key":"wide","product":"cad","name":"Wide","features":["a"],"max_machines":10,"max_users":10,"floating":{"max_leases":10,"lease_ttl_seconds":60}}),
    ] {
        let r = app.post("/v1/plans", plan).await;
        assert_eq!(r.status, 201, "{}", r.text);
    }
    app
}

async fn ledger_size(app: &TestApp) -> u64 {
    app.get("/v1/ledger/entries?start=0&end=0").await.body["size"].as_u64().unwrap()
}

async fn delete(app: &TestApp, path: &str) -> Resp {
    app.call(Method::DELETE, path, Some(ADMIN), None).await
}

async fn validate_with(app: &TestApp, body: Value) -> Value {
    let r = app.post("/v1/validate", body).await;
    assert_eq!(r.status, 200, "{}", r.text);
    r.body
}

fn ids(lic: &Value) -> (String, String) {
    (lic["id"].as_str().unwrap().to_string(), lic["key"].as_str().unwrap().to_string())
}

#[tokio::test]
async fn machines_are_node_locked_up_to_the_limit() {
    let app = seeded().await;
    let (id, key) = ids(&app.issue("node", "acme").await);
    let machines = format!("/v1/licenses/{id}/machines");
    let r = app.post(&machines, json!({"fingerprint":"fp-1","name":"Ann's laptop","components":["cpu:1"]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!((r.body["fingerprint"].as_str(), r.body["name"].as_str()), (Some("fp-1"), Some("Ann's laptop")));
    let size = ledger_size(&app).await;
    let r = app.post(&machines, json!({"fingerprint":"fp-1"})).await;
    assert_eq!(r.status, 201, "activating again is idempotent: {}", r.text);
    assert_eq!(ledger_size(&app).await, size, "no second event");
    assert_eq!(app.post(&machines, json!({"fingerprint":"fp-2"})).await.status, 201);
    assert_problem(&app.post(&machines, json!({"fingerprint":"fp-3"})).await, 409, "MACHINE_LIMIT");
    let list = app.get(&machines).await.body;
    assert_eq!((list["max_machines"].as_u64(), list["items"].as_array().unwrap().len()), (Some(2), 2), "{list}");

    let v = validate_with(&app, json!({"key": key, "fingerprint": "fp-2"})).await;
    assert_eq!((v["valid"].as_bool(), v["code"].as_str()), (Some(true), Some("VALID")));
    let v = validate_with(&app, json!({"key": key, "fingerprint": "fp-3"})).await;
    assert_eq!((v["valid"].as_bool(), v["code"].as_str()), (Some(false), Some("FINGERPRINT_NOT_ACTIVATED")), "{v}");

    let r = delete(&app, &format!("{machines}/fp-1")).await;
    assert_eq!((r.status.as_u16(), r.body["items"].as_array().map(Vec::len)), (200, Some(1)), "{}", r.text);
    assert_eq!(delete(&app, &format!("{machines}/fp-1")).await.status, 200, "deactivating again is idempotent");
    assert_eq!(app.post(&machines, json!({"fingerprint":"fp-3"})).await.status, 201);

    assert_problem(&app.post(&machines, json!({"fingerprint":"has space"})).await, 422, "INVALID_INPUT");
    assert_problem(
        &app.post("/v1/licenses/lic_00000000000000000000000000/machines", json!({"fingerprint":"x"})).await,
        404,
        "LICENSE_NOT_FOUND",
    );
    app.post(&format!("/v1/licenses/{id}/suspend"), json!({})).await;
    assert_problem(&app.post(&machines, json!({"fingerprint":"fp-9"})).await, 409, "LICENSE_SUSPENDED");
    app.post(&format!("/v1/licenses/{id}/revoke"), json!({})).await;
    assert_problem(&app.post(&machines, json!({"fingerprint":"fp-9"})).await, 409, "LICENSE_REVOKED");
    app.stop().await;
}

#[tokio::test]
async fn machines_beyond_a_lowered_limit_stop_validating_newest_first() {
    let app = seeded().await;
    for (key, max) in [("two", 2), ("one", 1)] {
        let plan = json!({"key":key,"product":"cad","name":key,"features":["a"],"max_machines":max,"offline_days":7});
        assert_eq!(app.post("/v1/plans", plan).await.status, 201);
    }
    let (id, key) = ids(&app.issue("two", "acme").await);
    let machines = format!("/v1/licenses/{id}/machines");
    for fp in ["fp-old", "fp-new"] {
        assert_eq!(app.post(&machines, json!({"fingerprint": fp})).await.status, 201);
        tokio::time::sleep(std::time::Duration::from_millis(5)).await;
    }
    let r = app.post(&format!("/v1/licenses/{id}/change-plan"), json!({"plan":"one"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let v = validate_with(&app, json!({"key": key, "fingerprint": "fp-old"})).await;
    assert_eq!(v["code"], "VALID", "{v}");
    let v = validate_with(&app, json!({"key": key, "fingerprint": "fp-new"})).await;
    assert_eq!((v["valid"].as_bool(), v["code"].as_str()), (Some(false), Some("TOO_MANY_MACHINES")), "{v}");
    assert!(v["detail"].as_str().unwrap().contains("deactivate"), "{v}");
    let tokens = format!("/v1/licenses/{id}/tokens");
    let token = |fp: &str| app.post(&tokens, json!({"offline": true, "fingerprint": fp}));
    assert_problem(&token("fp-new").await, 409, "TOO_MANY_MACHINES");
    assert_eq!(token("fp-old").await.status, 200);
    assert_eq!(delete(&app, &format!("{machines}/fp-old")).await.status, 200);
    let v = validate_with(&app, json!({"key": key, "fingerprint": "fp-new"})).await;
    assert_eq!(v["code"], "VALID", "{v}");
    app.stop().await;
}

#[tokio::test]
async fn user_seats_up_to_the_limit() {
    let app = seeded().await;
    let (id, key) = ids(&app.issue("node", "acme").await);
    let users = format!("/v1/licenses/{id}/users");
    let r = app.post(&users, json!({"user":"ann@acme.test"})).await;
    assert_eq!((r.status.as_u16(), r.body["user"].as_str()), (201, Some("ann@acme.test")), "{}", r.text);
    assert_eq!(app.post(&users, json!({"user":"ann@acme.test"})).await.status, 201);
    assert_eq!(app.post(&users, json!({"user":"bob@acme.test"})).await.status, 201);
    assert_problem(&app.post(&users, json!({"user":"cy@acme.test"})).await, 409, "SEAT_LIMIT");
    let v = validate_with(&app, json!({"key": key, "user": "bob@acme.test"})).await;
    assert_eq!(v["code"], "VALID");
    let v = validate_with(&app, json!({"key": key, "user": "cy@acme.test"})).await;
    assert_eq!((v["valid"].as_bool(), v["code"].as_str()), (Some(false), Some("USER_NOT_ASSIGNED")), "{v}");
    let r = delete(&app, &format!("{users}/ann@acme.test")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(app.post(&users, json!({"user":"cy@acme.test"})).await.status, 201);
    let list = app.get(&users).await.body;
    assert_eq!((list["max_users"].as_u64(), list["items"].as_array().unwrap().len()), (Some(2), 2), "{list}");
    assert_problem(&app.post(&users, json!({"user":""})).await, 422, "INVALID_INPUT");
    app.stop().await;
}

#[tokio::test]
async fn floating_leases_checkout_heartbeat_release() {
    let app = seeded().await;
    let (id, key) = ids(&app.issue("float", "acme").await);
    let leases = format!("/v1/licenses/{id}/leases");
    let r = app.post(&leases, json!({"fingerprint":"ws-1"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let lease = r.body["lease_id"].as_str().unwrap().to_string();
    assert!(lease.starts_with("lse_"), "{}", r.text);
    let first_expiry = tollgate_core::Timestamp::parse(r.body["expires_at"].as_str().unwrap()).unwrap();
    assert_eq!(app.post(&leases, json!({"fingerprint":"ws-2"})).await.status, 201);
    assert_problem(&app.post(&leases, json!({"fingerprint":"ws-3"})).await, 409, "LEASE_LIMIT");
    // A fingerprint holding a lease gets the same one back.
    let again = app.post(&leases, json!({"fingerprint":"ws-1"})).await;
    assert_eq!(again.body["lease_id"], lease.as_str());
    let v = validate_with(&app, json!({"key": key, "fingerprint": "ws-1"})).await;
    assert_eq!(v["code"], "VALID", "a live lease counts as activated: {v}");

    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
    let r = app.post(&format!("/v1/leases/{lease}/heartbeat"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let renewed = tollgate_core::Timestamp::parse(r.body["expires_at"].as_str().unwrap()).unwrap();
    assert!(renewed > first_expiry, "a heartbeat extends the lease");

    let r = delete(&app, &format!("/v1/leases/{lease}")).await;
    assert_eq!((r.status.as_u16(), r.body["released"].as_str()), (200, Some(lease.as_str())), "{}", r.text);
    assert_problem(&delete(&app, &format!("/v1/leases/{lease}")).await, 404, "LEASE_NOT_FOUND");
    assert_problem(&app.post(&format!("/v1/leases/{lease}/heartbeat"), json!({})).await, 404, "LEASE_NOT_FOUND");
    assert_problem(&app.post("/v1/leases/nope/heartbeat", json!({})).await, 404, "LEASE_NOT_FOUND");
    assert_eq!(app.post(&leases, json!({"fingerprint":"ws-3"})).await.status, 201, "the released slot is free");
    assert_eq!(app.get(&leases).await.body["items"].as_array().unwrap().len(), 2);

    let (node, _) = ids(&app.issue("node", "acme").await);
    assert_problem(
        &app.post(&format!("/v1/licenses/{node}/leases"), json!({"fingerprint":"x"})).await,
        409,
        "NOT_FLOATING",
    );
    app.stop().await;
}

#[tokio::test]
async fn the_reaper_records_expired_leases_in_the_ledger() {
    let app = seeded().await;
    let (id, _) = ids(&app.issue("ttl1", "acme").await);
    let leases = format!("/v1/licenses/{id}/leases");
    let r = app.post(&leases, json!({"fingerprint":"ws-1"})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let lease = r.body["lease_id"].as_str().unwrap().to_string();
    assert_problem(&app.post(&leases, json!({"fingerprint":"ws-2"})).await, 409, "LEASE_LIMIT");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let expired = loop {
        let entries = app.get("/v1/ledger/entries?start=0&end=100").await.body;
        let found = entries["entries"]
            .as_array()
            .unwrap()
            .iter()
            .find(|e| e["event"]["event"].get("lease_expired").is_some())
            .cloned();
        if let Some(e) = found {
            break e;
        }
        assert!(std::time::Instant::now() < deadline, "the reaper never recorded the expiry");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    };
    assert_eq!(expired["event"]["event"]["lease_expired"]["lease"], lease.as_str(), "{expired}");
    assert_eq!(expired["event"]["actor"], "system:reaper");
    assert_problem(&app.post(&format!("/v1/leases/{lease}/heartbeat"), json!({})).await, 404, "LEASE_NOT_FOUND");
    assert_eq!(app.post(&leases, json!({"fingerprint":"ws-2"})).await.status, 201);
    app.stop().await;
}

#[tokio::test]
async fn metered_usage_against_quotas() {
    let app = seeded().await;
    let (id, key) = ids(&app.issue("metered", "acme").await);
    let usage = format!("/v1/licenses/{id}/usage");
    let r = app.post(&usage, json!({"meter":"calls","quantity":6})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (r.body["used"].as_u64(), r.body["remaining"].as_u64(), r.body["period"].as_str()),
        (Some(6), Some(4), Some("day"))
    );
    assert!(r.body["resets_at"].as_str().unwrap().ends_with("T00:00:00Z"), "{}", r.text);
    let size = ledger_size(&app).await;
    assert_problem(&app.post(&usage, json!({"meter":"calls","quantity":5})).await, 409, "QUOTA_EXCEEDED");
    assert_eq!(ledger_size(&app).await, size, "nothing recorded");
    let r = app.post(&usage, json!({"meter":"calls","quantity":4})).await;
    assert_eq!((r.body["used"].as_u64(), r.body["remaining"].as_u64()), (Some(10), Some(0)));
    // 50% overage: up to 15 of a quota of 10.
    assert_eq!(app.post(&usage, json!({"meter":"bytes","quantity":15})).await.status, 201);
    assert_problem(&app.post(&usage, json!({"meter":"bytes","quantity":1})).await, 409, "QUOTA_EXCEEDED");
    // "allow": never blocked.
    let r = app.post(&usage, json!({"meter":"jobs","quantity":100})).await;
    assert_eq!((r.body["used"].as_u64(), r.body["remaining"].as_u64()), (Some(100), Some(0)), "{}", r.text);
    assert_problem(&app.post(&usage, json!({"meter":"nope","quantity":1})).await, 404, "METER_NOT_FOUND");
    assert_problem(&app.post(&usage, json!({"meter":"jobs","quantity":0})).await, 422, "INVALID_INPUT");

    // Idempotent by Idempotency-Key: one event, the same answer.
    let send = || {
        app.client
            .post(format!("{}{usage}", app.base))
            .bearer_auth(ADMIN)
            .header("idempotency-key", "usage-1")
            .json(&json!({"meter":"jobs","quantity":1}))
            .send()
    };
    let size = ledger_size(&app).await;
    let a: Value = send().await.unwrap().json().await.unwrap();
    let b = send().await.unwrap();
    assert_eq!(b.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(b.json::<Value>().await.unwrap(), a);
    assert_eq!(ledger_size(&app).await, size + 1);

    let v = validate_with(&app, json!({"key": key})).await;
    let calls = v["usage"].as_array().unwrap().iter().find(|m| m["meter"] == "calls").unwrap().clone();
    assert_eq!((calls["used"].as_u64(), calls["quota"].as_u64()), (Some(10), Some(10)), "{v}");
    app.stop().await;
}

#[tokio::test]
async fn overrides_at_issue_and_later_and_entitlements_of_a_licensee() {
    let app = seeded().await;
    let r = app
        .post(
            "/v1/licenses",
            json!({"product":"cad","plan":"node","licensee":"acme","overrides":{"features_add":["c"],"features_remove":["b"],"max_machines":1}}),
        )
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(
        (r.body["features"].clone(), r.body["max_machines"].as_u64()),
        (json!(["a", "c"]), Some(1)),
        "{}",
        r.text
    );
    let (id, key) = ids(&r.body);
    assert_eq!(app.validate(&key, Some("c")).await["code"], "VALID");
    assert_eq!(app.validate(&key, Some("b")).await["code"], "FEATURE_NOT_ENTITLED");
    let machines = format!("/v1/licenses/{id}/machines");
    assert_eq!(app.post(&machines, json!({"fingerprint":"m1"})).await.status, 201);
    assert_problem(&app.post(&machines, json!({"fingerprint":"m2"})).await, 409, "MACHINE_LIMIT");

    let r = app.post(&format!("/v1/licenses/{id}/overrides"), json!({"max_machines":3,"features_add":["e"]})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(
        (r.body["features"].clone(), r.body["overrides"]["max_machines"].as_u64()),
        (json!(["a", "b", "e"]), Some(3))
    );
    assert_eq!(app.post(&machines, json!({"fingerprint":"m2"})).await.status, 201);
    // A signed token carries the license's features and limits as validation answers
    // them, overrides included (it carried the plan's).
    let r = app.post(&format!("/v1/licenses/{id}/tokens"), json!({})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let payload = r.body["token"].as_str().unwrap().split('.').nth(1).unwrap().to_string();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload).unwrap(),
    )
    .unwrap();
    assert_eq!(claims["license"]["features"], json!(["a", "b", "e"]), "{claims}");
    assert_eq!(claims["license"]["limits"]["max_machines"], 3, "{claims}");
    assert_problem(
        &app.post(&format!("/v1/licenses/{id}/overrides"), json!({"features_add":["zz"]})).await,
        422,
        "UNKNOWN_FEATURE",
    );
    assert_problem(
        &app.post(
            "/v1/licenses",
            json!({"product":"cad","plan":"node","licensee":"x","overrides":{"features_add":["zz"]}}),
        )
        .await,
        422,
        "UNKNOWN_FEATURE",
    );

    // Entitlements: acme also holds pro (a..e, no limits) and a revoked float license.
    app.issue("pro", "acme").await;
    let (gone, _) = ids(&app.issue("float", "acme").await);
    app.post(&format!("/v1/licenses/{gone}/revoke"), json!({})).await;
    app.issue("float", "someone-else").await;
    let e = app.get("/v1/licensees/acme/entitlements").await;
    assert_eq!(e.status, 200, "{}", e.text);
    assert_eq!(e.body["licenses"].as_array().unwrap().len(), 2, "only valid licenses count: {}", e.text);
    let features: Vec<_> =
        e.body["features"].as_array().unwrap().iter().map(|f| f["feature"].as_str().unwrap()).collect();
    assert_eq!(features, ["a", "b", "c", "d", "e"]);
    let a = e.body["features"].as_array().unwrap().iter().find(|f| f["feature"] == "a").unwrap();
    assert_eq!(a["licenses"].as_array().unwrap().len(), 2);
    let p = &e.body["products"][0];
    assert_eq!(
        (p["product"].as_str(), p["max_machines"].clone()),
        (Some("cad"), Value::Null),
        "pro is unlimited, so it wins: {p}"
    );
    assert!(p.get("max_leases").is_none(), "the floating license is revoked: {p}");
    let none = app.get("/v1/licensees/nobody/entitlements").await.body;
    assert_eq!(none["features"], json!([]));
    app.stop().await;
}

#[tokio::test]
async fn validation_reports_the_grace_end() {
    let app = seeded().await;
    // Node has 10 grace days; an explicit expiry in a moment puts the license in grace.
    let soon = tollgate_core::Timestamp::from_millis(tollgate_server::engine::now().millis() + 800).unwrap();
    let r = app
        .post("/v1/licenses", json!({"product":"cad","plan":"node","licensee":"x","expires_at":soon.to_string()}))
        .await;
    assert_eq!(r.status, 201, "{}", r.text);
    let key = r.body["key"].as_str().unwrap().to_string();
    tokio::time::sleep(std::time::Duration::from_millis(1000)).await;
    let v = validate_with(&app, json!({"key": key})).await;
    assert_eq!((v["valid"].as_bool(), v["code"].as_str()), (Some(true), Some("GRACE_PERIOD")), "{v}");
    assert_eq!(v["grace_ends_at"].as_str(), Some(soon.plus_days(10).to_string().as_str()), "{v}");
    app.stop().await;
}

/// Sends `n` POSTs at once, each to `path` with `body(i)`; returns their statuses.
async fn parallel(app: &TestApp, n: usize, path: &str, body: impl Fn(usize) -> Value) -> Vec<u16> {
    let mut set = tokio::task::JoinSet::new();
    for i in 0..n {
        let req = app.client.post(format!("{}{path}", app.base)).bearer_auth(ADMIN).json(&body(i));
        set.spawn(async move {
            let r = req.send().await.expect("request sent");
            let status = r.status().as_u16();
            let problem: Value = r.json().await.unwrap_or(Value::Null);
            (status, problem["code"].as_str().map(str::to_string))
        });
    }
    let mut statuses = Vec::new();
    while let Some(r) = set.join_next().await {
        let (status, code) = r.unwrap();
        if status != 201 {
            assert_eq!(status, 409, "{code:?}");
        }
        statuses.push(status);
    }
    statuses
}

fn created(statuses: &[u16]) -> usize {
    statuses.iter().filter(|s| **s == 201).count()
}

#[tokio::test]
async fn limits_are_exact_under_contention() {
    let app = seeded().await;
    let (id, _) = ids(&app.issue("wide", "acme").await);
    // 200 parallel checkouts, logins and activations against limits of 10 each.
    let leases =
        parallel(&app, 200, &format!("/v1/licenses/{id}/leases"), |i| json!({"fingerprint": format!("ws-{i}")})).await;
    assert_eq!((created(&leases), leases.len()), (10, 200), "exactly max_leases leases");
    let seats =
        parallel(&app, 200, &format!("/v1/licenses/{id}/users"), |i| json!({"user": format!("user-{i}")})).await;
    assert_eq!(created(&seats), 10, "exactly max_users seats");
    let machines =
        parallel(&app, 200, &format!("/v1/licenses/{id}/machines"), |i| json!({"fingerprint": format!("m-{i}")})).await;
    assert_eq!(created(&machines), 10, "exactly max_machines machines");
    assert_eq!(app.get(&format!("/v1/licenses/{id}/leases")).await.body["items"].as_array().unwrap().len(), 10);
    assert_eq!(app.get(&format!("/v1/licenses/{id}/users")).await.body["items"].as_array().unwrap().len(), 10);
    assert_eq!(app.get(&format!("/v1/licenses/{id}/machines")).await.body["items"].as_array().unwrap().len(), 10);
    app.stop().await;
}
