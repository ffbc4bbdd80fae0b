//! The server on PostgreSQL: the same contract, and a restart that keeps everything.
//!
//! The database is `TOLLGATE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`); each test gets its own schema. Without a
//! server the test fails in CI (`CI=true`) and skips with the reason printed elsewhere.

use base64::Engine as _;
use serde_json::json;

use tollgate_store::test_schema::TestSchema;

use crate::support::*;

/// A fresh schema for one test (see `tollgate_store::test_schema`).
pub(crate) fn schema() -> Option<TestSchema> {
    TestSchema::create("tg_srv")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_contract_and_a_restart_on_postgres() {
    let Some(schema) = schema() else { return };
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tollgate_server::Config::new(tmp.path());
    cfg.database_url = Some(schema.url.clone());
    let app = spawn_config(cfg.clone()).await;
    app.seed_catalog().await;
    let lic = app.issue("basic", "pg").await;
    let id = lic["id"].as_str().unwrap().to_string();
    let key = lic["key"].as_str().unwrap().to_string();
    assert_eq!(app.validate(&key, Some("a")).await["code"], "VALID");
    app.post(&format!("/v1/licenses/{id}/suspend"), json!({"reason":"pg"})).await;
    assert_eq!(app.validate(&key, None).await["code"], "SUSPENDED");
    let size = app.get("/v1/ledger/entries?end=0").await.body["size"].as_u64().unwrap();
    app.stop().await;
    assert!(!tollgate_server::db_path(tmp.path()).exists(), "nothing went to SQLite");

    let app = spawn_config(cfg).await;
    let r = app.get(&format!("/v1/licenses/{id}")).await;
    assert_eq!((r.status.as_u16(), r.body["status"].as_str()), (200, Some("suspended")));
    assert_eq!(app.get("/v1/ledger/entries?end=0").await.body["size"].as_u64().unwrap(), size);
    // Proofs over the PostgreSQL ledger verify.
    let p = app.get(&format!("/v1/ledger/proof/inclusion?index={}", size - 1)).await.body;
    let e = app.get(&format!("/v1/ledger/entries?start={}&end={size}", size - 1)).await.body;
    let leaf = base64::engine::general_purpose::STANDARD.decode(e["entries"][0]["leaf"].as_str().unwrap()).unwrap();
    let h = |v: &serde_json::Value| -> [u8; 32] {
        base64::engine::general_purpose::STANDARD.decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
    };
    let proof: Vec<[u8; 32]> = p["proof"].as_array().unwrap().iter().map(h).collect();
    tollgate_core::merkle::verify_inclusion(
        &tollgate_core::merkle::leaf_hash(&leaf),
        size - 1,
        size,
        &proof,
        &h(&p["root"]),
    )
    .unwrap();
    app.issue("pro", "after-restart").await;
    app.stop().await;
    drop(schema);
}
