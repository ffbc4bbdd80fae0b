//! The ledger as an outside verifier sees it: only the public key, the signed
//! checkpoint, the entries and proofs, checked with the RFC 6962 / C2SP verifiers.

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD as B64;
use reqwest::Method;
use serde_json::json;
use tollgate_core::checkpoint;
use tollgate_core::merkle::{self, Hash};
use tollgate_core::note::Verifier;

use crate::support::*;

fn hash(v: &serde_json::Value) -> Hash {
    B64.decode(v.as_str().unwrap()).unwrap().try_into().unwrap()
}

#[tokio::test]
async fn checkpoints_entries_and_proofs_verify_independently() {
    let app = spawn_app().await;
    // What the server records by itself at start (its signing key).
    let genesis = app.get("/v1/ledger/entries?end=0").await.body["size"].as_u64().unwrap();
    app.seed_catalog().await;
    for i in 0..5 {
        app.issue("basic", &format!("c{i}")).await;
    }
    let vkey = app.call(Method::GET, "/v1/ledger/key", None, None).await.text;
    let verifier = Verifier::parse(vkey.trim()).expect("verifier key parses");
    let note1 = app.call(Method::GET, "/v1/ledger/checkpoint", None, None).await;
    assert!(note1.headers["content-type"].to_str().unwrap().starts_with("text/plain"));
    let cp1 = checkpoint::open(&note1.text, &verifier).expect("checkpoint signature verifies");
    assert_eq!(cp1.size, genesis + 9, "4 catalog events + 5 licenses");
    assert_eq!(cp1.origin, "tollgate.local/ledger");

    let entries = app.get(&format!("/v1/ledger/entries?start=0&end={}", cp1.size)).await.body;
    let entries = entries["entries"].as_array().unwrap();
    assert_eq!(entries.len() as u64, cp1.size);
    let mut leaves = Vec::new();
    for (i, e) in entries.iter().enumerate() {
        assert_eq!(e["index"], i as u64);
        let bytes = B64.decode(e["leaf"].as_str().unwrap()).unwrap();
        // The leaf is the canonical (RFC 8785) encoding of the event shown beside it.
        assert_eq!(bytes, serde_jcs::to_vec(&e["event"]).unwrap(), "leaf {i} is canonical JSON of its event");
        leaves.push(merkle::leaf_hash(&bytes));
    }
    for (i, leaf) in leaves.iter().enumerate() {
        let p = app.get(&format!("/v1/ledger/proof/inclusion?index={i}&size={}", cp1.size)).await.body;
        assert_eq!(hash(&p["root"]), cp1.root);
        let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(hash).collect();
        merkle::verify_inclusion(leaf, i as u64, cp1.size, &proof, &cp1.root).expect("inclusion proof verifies");
        let mut wrong = *leaf;
        wrong[0] ^= 1;
        assert!(merkle::verify_inclusion(&wrong, i as u64, cp1.size, &proof, &cp1.root).is_err());
    }

    let lic = app.issue("pro", "later").await;
    app.post(&format!("/v1/licenses/{}/revoke", lic["id"].as_str().unwrap()), json!({})).await;
    let cp2 =
        checkpoint::open(&app.call(Method::GET, "/v1/ledger/checkpoint", None, None).await.text, &verifier).unwrap();
    assert_eq!(cp2.size, cp1.size + 2);
    let p = app.get(&format!("/v1/ledger/proof/consistency?from={}&to={}", cp1.size, cp2.size)).await.body;
    let proof: Vec<Hash> = p["proof"].as_array().unwrap().iter().map(hash).collect();
    merkle::verify_consistency(cp1.size, cp2.size, &proof, &cp1.root, &cp2.root).expect("consistency proof verifies");
    assert!(merkle::verify_consistency(cp1.size, cp2.size, &proof, &cp2.root, &cp1.root).is_err());

    assert_problem(&app.get("/v1/ledger/proof/inclusion?index=99").await, 400, "INVALID_RANGE");
    assert_problem(&app.get("/v1/ledger/proof/consistency?from=5&to=2").await, 400, "INVALID_RANGE");
    assert_problem(&app.get("/v1/ledger/entries?start=500").await, 400, "INVALID_RANGE");
    let r = app.get("/v1/ledger/entries?start=1&end=5000").await;
    assert_eq!(r.body["entries"].as_array().unwrap().len() as u64, cp2.size - 1, "a long range is cut at the end");
    assert_problem(&app.get("/v1/ledger/proof/inclusion?index=abc").await, 400, "INVALID_QUERY");
    app.stop().await;
}

#[tokio::test]
async fn a_signed_checkpoint_is_made_per_batch_or_tick_not_per_event() {
    let app = spawn_app().await;
    app.seed_catalog().await;
    for i in 0..30 {
        app.issue("basic", &format!("n{i}")).await;
    }
    app.call(Method::GET, "/v1/ledger/checkpoint", None, None).await;
    let store = tollgate_store::SqliteStore::open_read_only(&tollgate_server::db_path(&app.dir)).unwrap();
    use tollgate_store::LedgerStore;
    let n = store.checkpoints().unwrap().len();
    assert!(n < 10, "34 events must not produce one checkpoint each; got {n}");
    app.stop().await;
}
