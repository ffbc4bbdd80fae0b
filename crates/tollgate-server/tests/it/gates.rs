//! Rollout gates over HTTP: versions and history, rollback and kill, the dry-run
//! preview, the Unleash import and the signed ruleset.

use reqwest::Method;
use serde_json::{Value, json};
use tollgate_core::gate::RulesetDoc;
use tollgate_core::token::{self, Jwks};

use crate::support::{ADMIN, TestApp, assert_problem, spawn_app};

pub async fn put(app: &TestApp, key: &str, body: Value) -> crate::support::Resp {
    app.call(Method::PUT, &format!("/v1/gates/{key}"), Some(ADMIN), Some(body)).await
}

/// A product token (the role OFREP and the ruleset need).
pub async fn product_token(app: &TestApp, product: Option<&str>) -> String {
    let mut body = json!({"role":"product"});
    if let Some(p) = product {
        body["product"] = json!(p);
    }
    let r = app.post("/v1/tokens", body).await;
    assert_eq!(r.status, 201, "{}", r.text);
    r.body["token"].as_str().unwrap().to_string()
}

/// A gate on feature `cad/c` (only the `pro` plan has it), on for everyone licensed.
fn pro_gate() -> Value {
    json!({"feature":{"product":"cad","feature":"c"},"strategies":[{"name":"default","parameters":{}}]})
}

#[tokio::test]
async fn versions_history_rollback_and_kill() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let r = put(&app, "new-ui", pro_gate()).await;
    assert_eq!(r.status, 201, "{}", r.text);
    assert_eq!(r.body["version"], 1);
    assert_eq!(r.body["definition"]["key"], "new-ui", "the key comes from the path");

    let r = put(&app, "new-ui", pro_gate()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 1, "an identical definition makes no new version");

    let mut v2 = pro_gate();
    v2["strategies"] =
        json!([{"name":"flexibleRollout","parameters":{"rollout":"25","stickiness":"default","groupId":"new-ui"}}]);
    let r = put(&app, "new-ui", v2).await;
    assert_eq!((r.status.as_u16(), r.body["version"].as_u64()), (200, Some(2)), "{}", r.text);

    let r = app.post("/v1/gates/new-ui/kill", json!({"reason":"incident 42"})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 3);
    assert_eq!(r.body["definition"]["enabled"], false);

    let r = app.post("/v1/gates/new-ui/rollback", json!({"version": 1})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["version"], 4);
    assert_eq!(r.body["definition"]["strategies"][0]["name"], "default", "version 1's definition is back");
    assert_ne!(r.body["definition"]["enabled"], false);

    let r = app.get("/v1/gates/new-ui/history").await;
    assert_eq!(r.status, 200, "{}", r.text);
    let versions: Vec<u64> =
        r.body["items"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [4, 3, 2, 1], "newest first");
    assert_eq!(r.body["items"][0]["change"]["type"], "rollback");
    assert_eq!(r.body["items"][1]["change"]["type"], "kill");
    assert!(r.body["items"][0]["actor"].as_str().unwrap().starts_with("token:"), "{}", r.text);
    let r = app.get("/v1/gates/new-ui/history?limit=2").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2);
    assert_eq!(r.body["next_before"], 3);
    let r = app.get("/v1/gates/new-ui/history?before=3").await;
    let versions: Vec<u64> =
        r.body["items"].as_array().unwrap().iter().map(|v| v["version"].as_u64().unwrap()).collect();
    assert_eq!(versions, [2, 1]);

    // Every change is a ledger event, with the reason given.
    let r = app.get("/v1/events?type=gate_killed").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1, "{}", r.text);

    let r = app.get("/v1/gates").await;
    assert_eq!(r.body["items"][0]["key"], "new-ui");
    assert_eq!(r.body["items"][0]["version"], 4);
    assert_eq!(app.get("/v1/gates/new-ui").await.body["version"], 4);

    assert_problem(&app.get("/v1/gates/nope").await, 404, "GATE_NOT_FOUND");
    assert_problem(&app.get("/v1/gates/nope/history").await, 404, "GATE_NOT_FOUND");
    assert_problem(&app.post("/v1/gates/new-ui/rollback", json!({"version": 99})).await, 404, "GATE_VERSION_NOT_FOUND");
    assert_problem(&app.post("/v1/gates/nope/kill", json!({})).await, 404, "GATE_NOT_FOUND");
}

#[tokio::test]
async fn invalid_definitions_are_problems_and_writes_need_the_role() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let r = put(&app, "g", json!({"key":"other","strategies":[]})).await;
    assert_problem(&r, 422, "KEY_MISMATCH");
    let r = put(&app, "g", json!({"strategies":[], "colour":"red"})).await;
    assert_problem(&r, 422, "INVALID_GATE");
    assert!(r.body["detail"].as_str().unwrap().contains("colour"), "{}", r.text);
    let r = put(&app, "g", json!({"feature":{"product":"cad","feature":"zz"},"strategies":[]})).await;
    assert_problem(&r, 422, "UNKNOWN_FEATURE");
    // A pattern that does not compile is named, not stored as one that matches nothing;
    // and a definition holds at most 16 REGEX constraints (each may compile to a MiB),
    // also in a preview, which a read-only token may ask for.
    let regex = |value: &str| json!({"contextName":"email","operator":"REGEX","value":value});
    let r = put(&app, "g", json!({"strategies":[{"name":"default","constraints":[regex("a(")]}]})).await;
    assert_problem(&r, 422, "INVALID_GATE");
    assert!(r.body["detail"].as_str().unwrap().contains("REGEX pattern does not compile"), "{}", r.text);
    let many: Vec<_> = (0..17).map(|i| regex(&format!("^u{i}@"))).collect();
    let strategies = json!([{"name":"default","constraints":many[..9]}, {"name":"default","constraints":many[9..]}]);
    let r = put(&app, "g", json!({ "strategies": strategies.clone() })).await;
    assert_problem(&r, 422, "INVALID_GATE");
    assert!(r.body["detail"].as_str().unwrap().contains("at most 16 REGEX"), "{}", r.text);
    let r = app.post("/v1/gates/g/preview", json!({ "strategies": strategies })).await;
    assert_problem(&r, 422, "INVALID_GATE");
    let sixteen = json!([{"name":"default","constraints":many[..16]}]);
    let r = put(&app, "g16", json!({ "strategies": sixteen })).await;
    assert_eq!(r.status, 201, "{}", r.text);
    // Not an object at all: refused before it is read as a gate, as on every endpoint.
    let r = put(&app, "g", json!([1])).await;
    assert_problem(&r, 422, "INVALID_INPUT");
    // Keys that GET /v1/gates/{key} could never reach are refused, whichever way in.
    for key in ["..", "."] {
        let r = put(&app, &key.replace('.', "%2E"), json!({"strategies":[]})).await;
        assert!(r.status.is_client_error(), "{key}: {}", r.text);
    }
    assert_problem(&put(&app, "ruleset", json!({"strategies":[]})).await, 405, "METHOD_NOT_ALLOWED");
    for key in ["ruleset", "import", "..", "."] {
        let mut doc = unleash_doc();
        doc["features"][0]["name"] = json!(key);
        let r = app.post("/v1/gates/import", doc).await;
        assert_problem(&r, 422, "INVALID_GATE");
        assert!(r.body["detail"].as_str().unwrap().contains("reserved"), "{key}: {}", r.text);
        assert_problem(&app.get("/v1/gates/beta").await, 404, "GATE_NOT_FOUND");
    }

    let product = product_token(&app, None).await;
    let r = app.call(Method::PUT, "/v1/gates/g", Some(&product), Some(json!({"strategies":[]}))).await;
    assert_problem(&r, 403, "FORBIDDEN");
    let r = app.call(Method::GET, "/v1/gates", None, None).await;
    assert_problem(&r, 401, "UNAUTHORIZED");
}

#[tokio::test]
async fn writes_honour_idempotency_keys() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    assert_eq!(put(&app, "g", pro_gate()).await.status, 201);
    let kill = || {
        app.client
            .post(format!("{}/v1/gates/g/kill", app.base))
            .bearer_auth(ADMIN)
            .header("idempotency-key", "kill-once")
            .json(&json!({}))
            .send()
    };
    let first = kill().await.unwrap();
    assert_eq!(first.status(), 200);
    let again = kill().await.unwrap();
    assert_eq!(again.status(), 200);
    assert_eq!(again.headers().get("idempotent-replayed").unwrap(), "true");
    assert_eq!(app.get("/v1/gates/g/history").await.body["items"].as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn preview_counts_and_pages_the_licenses_whose_answer_would_change() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    // Three licenses entitled to `c` (pro), two not (basic).
    let mut pro = Vec::new();
    for i in 0..3 {
        pro.push(app.issue("pro", &format!("pro-{i}")).await["id"].as_str().unwrap().to_string());
    }
    for i in 0..2 {
        app.issue("basic", &format!("basic-{i}")).await;
    }
    pro.sort();
    let r = app.post("/v1/gates/new-ui/preview?limit=2", pro_gate()).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["evaluated"], 5);
    assert_eq!(r.body["changed"], 3, "the gate does not exist yet: only the entitled licenses change, to on");
    let page: Vec<&str> =
        r.body["changes"].as_array().unwrap().iter().map(|c| c["license"].as_str().unwrap()).collect();
    assert_eq!(page, [pro[0].as_str(), pro[1].as_str()]);
    assert!(r.body["changes"].as_array().unwrap().iter().all(|c| c["before"] == false && c["after"] == true));
    let after = r.body["next_after"].as_str().unwrap().to_string();
    let r = app.post(&format!("/v1/gates/new-ui/preview?limit=2&after={after}"), pro_gate()).await;
    assert_eq!(r.body["changes"].as_array().unwrap().len(), 1, "{}", r.text);
    assert_eq!(r.body["changes"][0]["license"], pro[2].as_str());
    assert!(app.get("/v1/gates/new-ui").await.status == 404, "a preview saves nothing");

    assert_eq!(put(&app, "new-ui", pro_gate()).await.status, 201);
    let r = app.post("/v1/gates/new-ui/preview", pro_gate()).await;
    assert_eq!((r.body["evaluated"].as_u64(), r.body["changed"].as_u64()), (Some(5), Some(0)), "{}", r.text);
    let mut off = pro_gate();
    off["enabled"] = json!(false);
    let r = app.post("/v1/gates/new-ui/preview", off).await;
    assert_eq!(r.body["changed"], 3, "{}", r.text);
    assert_problem(&app.post("/v1/gates/new-ui/preview?limit=0", pro_gate()).await, 400, "INVALID_QUERY");
}

fn unleash_doc() -> Value {
    json!({
        "version": 2,
        "features": [
            {"name":"beta","enabled":true,"strategies":[{"name":"userWithId","parameters":{"userIds":"u1,u2"}}]},
            {"name":"everyone","enabled":true,"strategies":[{"name":"default","parameters":{}, "segments":[7]}]},
            {"name":"pdf-export","enabled":true,"strategies":[{"name":"default","parameters":{}}]}
        ],
        "segments": [{"id":7,"constraints":[{"contextName":"environment","operator":"IN","values":["prod"]}]}]
    })
}

#[tokio::test]
async fn import_is_all_or_nothing_and_maps_gates_to_catalog_features() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let r = app.post("/v1/gates/import", json!({"unleash": unleash_doc(), "map": {"pdf-export": "cad/c"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.body["gates"], json!(["beta", "everyone", "pdf-export"]));
    assert_eq!(r.body["segments"], json!([7]));
    let g = app.get("/v1/gates/pdf-export").await;
    assert_eq!(g.body["definition"]["feature"], json!({"product":"cad","feature":"c"}), "{}", g.text);
    let g = app.get("/v1/gates/beta").await;
    assert_eq!(g.body["definition"]["license_required"], false, "unmapped gates need no license: {}", g.text);
    let h = app.get("/v1/gates/beta/history").await;
    assert_eq!(h.body["items"][0]["change"]["type"], "import", "{}", h.text);

    // A bare document is accepted too; a bad one changes nothing.
    let mut bad = unleash_doc();
    bad["features"][0]["name"] = json!("gamma");
    let twice = bad["segments"][0].clone();
    bad["segments"].as_array_mut().unwrap().push(twice);
    let before = app.get("/v1/gates").await.body["items"].as_array().unwrap().len();
    let r = app.post("/v1/gates/import", bad).await;
    assert!(r.status.is_client_error(), "{}", r.text);
    assert_eq!(app.get("/v1/gates").await.body["items"].as_array().unwrap().len(), before, "nothing was imported");
    assert_problem(&app.get("/v1/gates/gamma").await, 404, "GATE_NOT_FOUND");

    let r = app.post("/v1/gates/import", json!({"unleash": unleash_doc(), "map": {"nope": "cad/c"}})).await;
    assert_problem(&r, 422, "INVALID_INPUT");
    let r = app.post("/v1/gates/import", json!({"unleash": unleash_doc(), "map": {"beta": "cad"}})).await;
    assert_problem(&r, 422, "INVALID_INPUT");
}

pub async fn jwks(app: &TestApp) -> Jwks {
    serde_json::from_str(&app.call(Method::GET, "/.well-known/jwks.json", None, None).await.text).unwrap()
}

#[tokio::test]
async fn ruleset_is_signed_and_served_with_an_etag() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    assert_eq!(put(&app, "new-ui", pro_gate()).await.status, 201);
    let product = product_token(&app, None).await;
    let r = app.call(Method::GET, "/v1/gates/ruleset", Some(&product), None).await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!(r.headers["content-type"], "application/jwt");
    let etag = r.headers["etag"].to_str().unwrap().to_string();
    let (header, payload) = token::verify_jws(&r.text, "tollgate-ruleset+jwt", &jwks(&app).await).unwrap();
    assert_eq!(header.alg, "EdDSA");
    let doc: RulesetDoc = serde_json::from_slice(&payload).unwrap();
    assert_eq!(doc.gates.len(), 1);
    assert_eq!(doc.gates[0].key.as_str(), "new-ui");
    let claims: Value = serde_json::from_slice(&payload).unwrap();
    assert!(claims["seq"].as_u64().unwrap() > 0);

    let cond = |tag: String| {
        app.client
            .get(format!("{}/v1/gates/ruleset", app.base))
            .bearer_auth(&product)
            .header("if-none-match", tag)
            .send()
    };
    let r304 = cond(etag.clone()).await.unwrap();
    assert_eq!(r304.status(), 304);
    assert_eq!(r304.headers()["etag"].to_str().unwrap(), etag);

    // Issuing a license changes no gate: still 304. Killing the gate changes the ETag.
    app.issue("pro", "x").await;
    assert_eq!(cond(etag.clone()).await.unwrap().status(), 304);
    assert_eq!(app.post("/v1/gates/new-ui/kill", json!({})).await.status, 200);
    let r = cond(etag.clone()).await.unwrap();
    assert_eq!(r.status(), 200);
    assert_ne!(r.headers()["etag"].to_str().unwrap(), etag);

    let r = app.call(Method::GET, "/v1/gates/ruleset", None, None).await;
    assert_problem(&r, 401, "UNAUTHORIZED");

    // A token scoped to another product does not get gates bound to `cad`.
    let r = app.post("/v1/products", json!({"key":"other","name":"Other","features":[{"key":"z","name":"Z"}]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let scoped = product_token(&app, Some("other")).await;
    let r = app.call(Method::GET, "/v1/gates/ruleset", Some(&scoped), None).await;
    let (_, payload) = token::verify_jws(&r.text, "tollgate-ruleset+jwt", &jwks(&app).await).unwrap();
    let doc: RulesetDoc = serde_json::from_slice(&payload).unwrap();
    assert!(doc.gates.is_empty(), "{doc:?}");

    // Nor the segments only `cad`'s gates use (they may list its customers).
    let unleash = json!({"version":2,"segments":[{"id":5,"name":"vip","constraints":[{"contextName":"userId","operator":"IN","values":["acme-ceo"]}]}],
        "features":[{"name":"vip-ui","enabled":true,"strategies":[{"name":"default","segments":[5]}]}]});
    let r = app.post("/v1/gates/import", json!({"unleash": unleash, "map": {"vip-ui": "cad/c"}})).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let segments = |token: String| {
        let app = &app;
        async move {
            let r = app.call(Method::GET, "/v1/gates/ruleset", Some(&token), None).await;
            let (_, payload) = token::verify_jws(&r.text, "tollgate-ruleset+jwt", &jwks(app).await).unwrap();
            serde_json::from_slice::<RulesetDoc>(&payload).unwrap().segments.len()
        }
    };
    assert_eq!(segments(product.clone()).await, 1);
    assert_eq!(segments(scoped.clone()).await, 0);
}

#[tokio::test]
async fn gate_routes_are_in_the_openapi_document() {
    let app = spawn_app().await;
    let r = app.call(Method::GET, "/v1/openapi.json", None, None).await;
    for path in [
        "/v1/gates",
        "/v1/gates/{key}",
        "/v1/gates/{key}/history",
        "/v1/gates/{key}/rollback",
        "/v1/gates/{key}/kill",
        "/v1/gates/{key}/preview",
        "/v1/gates/import",
        "/v1/gates/ruleset",
        "/ofrep/v1/evaluate/flags",
        "/ofrep/v1/evaluate/flags/{key}",
    ] {
        assert!(r.body["paths"][path].is_object(), "{path} is missing from the OpenAPI document");
    }
}

/// A gate open to every product that depends on another product's gate: that parent is
/// off for every subject of this product, and a token scoped to it is served a disabled
/// stub of it (its key only), so the SDK's answer is the server's, also for an
/// `enabled: false` dependency, which a missing parent would read otherwise.
#[tokio::test]
async fn a_parent_of_another_product_is_served_as_a_disabled_stub() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let r = app.post("/v1/products", json!({"key":"other","name":"Other","features":[{"key":"z","name":"Z"}]})).await;
    assert_eq!(r.status, 201, "{}", r.text);
    let parent = json!({"feature":{"product":"cad","feature":"c"},"strategies":[{"name":"default"}]});
    assert_eq!(put(&app, "cad-parent", parent).await.status, 201);
    let child = json!({"license_required": false, "strategies":[{"name":"default"}],
        "dependencies":[{"feature":"cad-parent","enabled":false}]});
    assert_eq!(put(&app, "unless-cad", child).await.status, 201);

    let scoped = product_token(&app, Some("other")).await;
    let r = app.call(Method::GET, "/v1/gates/ruleset", Some(&scoped), None).await;
    let (_, payload) = token::verify_jws(&r.text, "tollgate-ruleset+jwt", &jwks(&app).await).unwrap();
    let doc: RulesetDoc = serde_json::from_slice(&payload).unwrap();
    let stub = doc.gates.iter().find(|g| g.key.as_str() == "cad-parent").expect("the parent's stub");
    assert!(!stub.enabled && stub.strategies.is_empty() && stub.feature.is_none(), "{stub:?}");
    // The SDK's evaluation of that ruleset and the server's OFREP answer agree: on.
    let ruleset = tollgate_core::gate::Ruleset::new(&doc);
    let ctx: tollgate_core::gate::Context = serde_json::from_value(json!({"userId": "u1"})).unwrap();
    let now = tollgate_core::Timestamp::from_millis(1_800_000_000_000).unwrap();
    let local = tollgate_core::gate::evaluate(&ruleset, "unless-cad", &ctx, None, now, 0).unwrap();
    let r = app
        .call(
            Method::POST,
            "/ofrep/v1/evaluate/flags/unless-cad",
            Some(&scoped),
            Some(json!({"context":{"targetingKey":"u1"}})),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.text);
    assert_eq!((local.enabled, r.body["value"].as_bool()), (true, Some(true)), "{}", r.text);
}

/// Previews and event queries, which read every license or the whole ledger and which
/// read-only roles may ask for, run two at a time; a third is told to retry.
#[tokio::test]
async fn whole_state_reads_run_two_at_a_time() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let state = app.app.clone().unwrap();
    let held = [state.scan_permit().unwrap(), state.scan_permit().unwrap()];
    let r = app.post("/v1/gates/new-ui/preview", pro_gate()).await;
    assert_problem(&r, 429, "TOO_MANY_SCANS");
    assert_problem(&app.get("/v1/events").await, 429, "TOO_MANY_SCANS");
    drop(held);
    assert_eq!(app.post("/v1/gates/new-ui/preview", pro_gate()).await.status, 200);
    assert_eq!(app.get("/v1/events").await.status, 200);
}
