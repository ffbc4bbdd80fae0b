//! Audit queries: GET /v1/events.

use serde_json::json;

use crate::support::*;

#[tokio::test]
async fn events_filter_by_license_actor_type_and_time_and_paginate_both_ways() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    let a = app.issue("basic", "a").await;
    let b = app.issue("pro", "b").await;
    let a_id = a["id"].as_str().unwrap();
    app.post(&format!("/v1/licenses/{a_id}/suspend"), json!({"reason":"late payment"})).await;
    let mid = tollgate_server::engine::now();
    while tollgate_server::engine::now() <= mid {
        std::hint::spin_loop();
    }
    app.post(&format!("/v1/licenses/{a_id}/reinstate"), json!({})).await;
    app.post(&format!("/v1/licenses/{}/revoke", b["id"].as_str().unwrap()), json!({})).await;

    let r = app.get(&format!("/v1/events?license={a_id}")).await;
    assert_eq!(r.status, 200, "{}", r.text);
    let types: Vec<&str> = r.body["items"].as_array().unwrap().iter().map(|i| i["type"].as_str().unwrap()).collect();
    assert_eq!(types, ["license_reinstated", "license_suspended", "license_issued"], "newest first by default");
    let suspended = &r.body["items"][1];
    assert_eq!(suspended["event"]["reason"], "late payment");
    assert_eq!(suspended["seq"].as_u64().unwrap(), suspended["index"].as_u64().unwrap() + 1);

    let r = app.get(&format!("/v1/events?license={a_id}&order=asc")).await;
    assert_eq!(r.body["items"][0]["type"], "license_issued");

    let r = app.get("/v1/events?type=license_revoked").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 1);
    let r = app.get(&format!("/v1/events?until={mid}&type=license_reinstated")).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0, "the reinstatement came after mid");
    // The suspension may share mid's millisecond; everything later is strictly after it.
    let after_mid = tollgate_core::Timestamp::from_millis(mid.millis() + 1).unwrap();
    let r = app.get(&format!("/v1/events?since={after_mid}")).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 2, "reinstate and revoke came after mid");
    let actor = suspended["event"]["actor"].as_str().unwrap().to_string();
    let r = app.get(&format!("/v1/events?actor={actor}&limit=500")).await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 9, "the admin token made the 9 events of this test");
    let size = app.get("/v1/ledger/entries?end=0").await.body["size"].as_u64().unwrap();
    let r = app.get("/v1/events?actor=token:tok_nobody").await;
    assert_eq!(r.body["items"].as_array().unwrap().len(), 0);

    // Pages of 2, both ways, cover every event once.
    for order in ["asc", "desc"] {
        let mut seen = Vec::new();
        let mut cursor = None::<u64>;
        loop {
            let path = match cursor {
                Some(c) => format!("/v1/events?order={order}&limit=2&cursor={c}"),
                None => format!("/v1/events?order={order}&limit=2"),
            };
            let r = app.get(&path).await;
            for i in r.body["items"].as_array().unwrap() {
                seen.push(i["index"].as_u64().unwrap());
            }
            match r.body["next_cursor"].as_u64() {
                Some(c) => cursor = Some(c),
                None => break,
            }
        }
        let mut expected: Vec<u64> = (0..size).collect();
        if order == "desc" {
            expected.reverse();
        }
        assert_eq!(seen, expected, "{order}");
    }

    // The index leads to an inclusion proof.
    let idx = suspended["index"].as_u64().unwrap();
    assert_eq!(app.get(&format!("/v1/ledger/proof/inclusion?index={idx}")).await.status, 200);

    assert_problem(&app.get("/v1/events?order=sideways").await, 400, "INVALID_QUERY");
    assert_problem(&app.get("/v1/events?since=yesterday").await, 400, "INVALID_QUERY");
    assert_problem(&app.get("/v1/events?limit=0").await, 400, "INVALID_QUERY");
    let unknown = app.get("/v1/events?type=license_issud").await;
    assert_problem(&unknown, 400, "INVALID_QUERY");
    assert!(unknown.body["detail"].as_str().unwrap().contains("license_issued"), "the detail lists the types");
    let issuer = app.post("/v1/tokens", json!({"role":"issuer"})).await.body["token"].as_str().unwrap().to_string();
    assert_problem(&app.call(reqwest::Method::GET, "/v1/events", Some(&issuer), None).await, 403, "FORBIDDEN");
    app.stop().await;
}
