//! Three nodes over one PostgreSQL ledger, in one process: appends ordered by the
//! database, catch-up and re-decision on conflict, limits that hold across nodes,
//! idempotency through another node, read-your-writes with `Tollgate-Min-Seq`, one
//! signing identity, and the cluster view.

use base64::Engine as _;
use serde_json::{Value, json};

use crate::postgres::schema;
use crate::support::*;

fn master(byte: u8) -> tollgate_server::kek::MasterKeySource {
    tollgate_server::kek::MasterKeySource::Inline(base64::engine::general_purpose::STANDARD.encode([byte; 32]))
}

fn node_config(url: &str, key: u8, id: &str) -> (tollgate_server::Config, tempfile::TempDir) {
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tollgate_server::Config::new(tmp.path());
    cfg.database_url = Some(url.to_string());
    cfg.master_key = Some(master(key));
    cfg.node_id = Some(id.to_string());
    (cfg, tmp)
}

fn seq_of(r: &Resp) -> u64 {
    r.headers["tollgate-seq"].to_str().unwrap().parse().unwrap()
}

async fn post_at(app: &TestApp, path: &str, body: Value, min_seq: Option<u64>, key: Option<&str>) -> Resp {
    let mut req = app.client.post(format!("{}{path}", app.base)).bearer_auth(ADMIN).json(&body);
    if let Some(s) = min_seq {
        req = req.header("tollgate-min-seq", s.to_string());
    }
    if let Some(k) = key {
        req = req.header("idempotency-key", k);
    }
    let res = req.send().await.unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let text = res.text().await.unwrap();
    Resp { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
}

async fn get_at(app: &TestApp, path: &str, min_seq: u64) -> Resp {
    let res = app
        .client
        .get(format!("{}{path}", app.base))
        .bearer_auth(ADMIN)
        .header("tollgate-min-seq", min_seq.to_string())
        .send()
        .await
        .unwrap();
    let (status, headers) = (res.status(), res.headers().clone());
    let text = res.text().await.unwrap();
    Resp { status, headers, body: serde_json::from_str(&text).unwrap_or(Value::Null), text }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_share_one_ledger_one_identity_and_the_limits() {
    let Some(schema) = schema() else { return };
    let mut nodes = Vec::new();
    let mut dirs = Vec::new();
    // One after the other: the bootstrap token is registered by the first.
    for i in 0..3 {
        let (cfg, tmp) = node_config(&schema.url, 7, &format!("n{i}"));
        nodes.push(spawn_config(cfg).await);
        dirs.push(tmp);
    }
    nodes[0].seed_catalog().await;
    let seeded = nodes[0].get("/v1/products").await;
    let seeded = seq_of(&seeded);

    // Concurrent issuance over all three nodes: every one is acknowledged although each
    // node decided on its own state.
    let mut tasks = Vec::new();
    for i in 0..60usize {
        let (base, client) = (nodes[i % 3].base.clone(), nodes[i % 3].client.clone());
        tasks.push(tokio::spawn(async move {
            // As a client should: a 503 with Retry-After is retried, under the same
            // Idempotency-Key so that a retry can never issue twice.
            for _ in 0..5 {
                let r = client
                    .post(format!("{base}/v1/licenses"))
                    .bearer_auth(ADMIN)
                    .header("tollgate-min-seq", seeded.to_string())
                    .header("idempotency-key", format!("issue-{i}"))
                    .json(&json!({"product":"cad","plan":"basic","licensee":format!("l{i}")}))
                    .send()
                    .await
                    .unwrap();
                let seq: u64 = r.headers()["tollgate-seq"].to_str().unwrap().parse().unwrap();
                let status = r.status().as_u16();
                let body = r.json::<Value>().await.unwrap();
                if status == 503 && body["code"] == "LEDGER_CONTENDED" {
                    continue;
                }
                return (status, seq, body);
            }
            panic!("still contended after 5 tries");
        }));
    }
    let mut issued = Vec::new();
    let mut seqs = std::collections::BTreeSet::new();
    for t in tasks {
        let (status, seq, body) = t.await.unwrap();
        assert_eq!(status, 201, "{body}");
        seqs.insert(seq);
        issued.push((body["id"].as_str().unwrap().to_string(), seq));
    }
    let top = *seqs.last().unwrap();
    let ids: std::collections::BTreeSet<_> = issued.iter().map(|(id, _)| id.clone()).collect();
    assert_eq!(ids.len(), 60);

    // Read-your-writes on another node.
    for (i, (id, seq)) in issued.iter().enumerate().take(6) {
        let r = get_at(&nodes[(i + 1) % 3], &format!("/v1/licenses/{id}"), *seq).await;
        assert_eq!(r.status, 200, "{}", r.text);
        assert!(seq_of(&r) >= *seq);
    }

    // One license, max 2 machines, 12 activations of distinct machines over 3 nodes
    // at once: exactly 2 are accepted, whatever node they went to.
    let (lic, lic_seq) = issued[0].clone();
    let mut tasks = Vec::new();
    for i in 0..12usize {
        let (base, client) = (nodes[i % 3].base.clone(), nodes[i % 3].client.clone());
        let lic = lic.clone();
        tasks.push(tokio::spawn(async move {
            client
                .post(format!("{base}/v1/licenses/{lic}/machines"))
                .bearer_auth(ADMIN)
                .header("tollgate-min-seq", lic_seq.to_string())
                .json(&json!({"fingerprint": format!("fp-{i}")}))
                .send()
                .await
                .unwrap()
                .status()
                .as_u16()
        }));
    }
    let mut accepted = 0;
    for t in tasks {
        match t.await.unwrap() {
            201 => accepted += 1,
            409 => {}
            other => panic!("activation answered {other}"),
        }
    }
    assert_eq!(accepted, 2, "the machine limit holds across nodes");

    // An idempotent retry through another node answers the first response.
    let body = json!({"product":"cad","plan":"pro","licensee":"idem"});
    let first = post_at(&nodes[0], "/v1/licenses", body.clone(), None, Some("issue-idem")).await;
    assert_eq!(first.status, 201);
    let again = post_at(&nodes[2], "/v1/licenses", body, None, Some("issue-idem")).await;
    assert_eq!(again.status, 201, "{}", again.text);
    assert_eq!(again.body["id"], first.body["id"], "the retry through another node is the same write");
    assert_eq!(again.headers["idempotent-replayed"], "true");

    // All nodes reach the same sequence and state digest, and say so.
    let end = seq_of(&first).max(top);
    for n in &nodes {
        let r = get_at(n, "/readyz", end).await;
        assert_eq!(r.status, 200, "{}", r.text);
    }
    let mut status = Value::Null;
    for _ in 0..50 {
        tokio::time::sleep(std::time::Duration::from_millis(200)).await;
        status = nodes[1].get("/v1/cluster/status").await.body;
        let ns = status["nodes"].as_array().unwrap();
        if ns.len() == 3 && ns.iter().all(|n| n["seq"] == ns[0]["seq"]) && ns[0]["seq"].as_u64() >= Some(end) {
            break;
        }
    }
    let ns = status["nodes"].as_array().unwrap();
    assert_eq!(ns.len(), 3, "{status}");
    assert!(ns.iter().all(|n| n["digest"] == ns[0]["digest"] && n["drifted"] == false), "{status}");
    assert_eq!(status["drift"], false);
    // Every acknowledged write is on every node.
    for n in &nodes {
        for id in &ids {
            assert_eq!(get_at(n, &format!("/v1/licenses/{id}"), end).await.status, 200);
        }
    }
    assert_eq!(ns.iter().filter(|n| n["this_node"] == true).count(), 1);

    // A node that folded the same events into another state is reported as drifted.
    let (url, at) = (schema.url.clone(), ns[0]["seq"].as_u64().unwrap());
    std::thread::spawn(move || {
        let mut store = tollgate_store::PostgresStore::open(&url).unwrap();
        let rogue = tollgate_store::NodeRecord {
            id: "rogue".into(),
            address: "x".into(),
            seq: at,
            digest: [0xab; 32],
            age_ms: 0,
        };
        tollgate_store::LedgerStore::heartbeat(&mut store, &rogue).unwrap();
    })
    .join()
    .unwrap();
    let status = nodes[0].get("/v1/cluster/status").await.body;
    assert_eq!(status["drift"], true, "{status}");
    for n in status["nodes"].as_array().unwrap() {
        assert_eq!(n["drifted"], n["id"] == "rogue", "{status}");
    }

    // One identity: the same checkpoint key everywhere, and each node's checkpoint
    // verifies under it.
    let key = nodes[0].get("/v1/ledger/key").await.text;
    let verifier = tollgate_core::note::Verifier::parse(key.trim()).unwrap();
    for n in &nodes {
        assert_eq!(n.get("/v1/ledger/key").await.text, key);
        let cp = n.get("/v1/ledger/checkpoint").await.text;
        let parsed = tollgate_core::checkpoint::open(&cp, &verifier).unwrap();
        assert!(parsed.size >= end);
    }
    let jwks: Vec<Value> =
        vec![nodes[0].get("/.well-known/jwks.json").await.body, nodes[2].get("/.well-known/jwks.json").await.body];
    assert_eq!(jwks[0]["keys"], jwks[1]["keys"], "one set of token keys");

    // A node given another master key refuses to start, and says why.
    let (cfg, _tmp) = node_config(&schema.url, 8, "intruder");
    let err = tollgate_server::open(&cfg).err().expect("a wrong master key is refused");
    assert!(err.to_string().contains("every node must be given the same TOLLGATE_MASTER_KEY"), "{err}");

    for n in nodes {
        n.stop().await;
    }
    // The ledger the three wrote verifies as one.
    let url = schema.url.clone();
    let report = std::thread::spawn(move || {
        let store = tollgate_store::PostgresStore::open_read_only(&url).unwrap();
        tollgate_server::replay::verify(&store, &mut |_| {}).unwrap()
    })
    .join()
    .unwrap();
    assert!(report.events >= end && report.checkpoints >= 1);
    drop(schema);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn min_seq_beyond_the_ledger_is_refused_after_a_bounded_wait() {
    let Some(schema) = schema() else { return };
    let (cfg, _tmp) = node_config(&schema.url, 7, "lonely");
    let app = spawn_config(cfg).await;
    let started = std::time::Instant::now();
    let r = get_at(&app, "/v1/products", 1_000_000).await;
    assert_problem(&r, 503, "SEQ_NOT_REACHED");
    assert_eq!(r.headers["retry-after"], "1");
    assert!(started.elapsed() >= std::time::Duration::from_secs(4));
    let r = app.call(reqwest::Method::GET, "/v1/products", Some(ADMIN), None).await;
    assert!(r.headers.contains_key("tollgate-seq"));
    app.stop().await;
    drop(schema);
}

#[test]
fn nodes_starting_together_create_one_identity() {
    let Some(schema) = schema() else { return };
    let starts: Vec<_> = (0..3)
        .map(|i| {
            let url = schema.url.clone();
            std::thread::spawn(move || {
                let (mut cfg, tmp) = node_config(&url, 7, &format!("s{i}"));
                cfg.bootstrap_token = Some(ADMIN.into());
                let opened = tollgate_server::open(&cfg).expect("every node starts");
                let key = opened.app.engine.verifier_key().to_string();
                drop(opened.app);
                opened.writer.join().unwrap();
                drop(tmp);
                key
            })
        })
        .collect();
    let keys: Vec<String> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    assert!(keys.windows(2).all(|w| w[0] == w[1]), "one checkpoint key, not one per node: {keys:?}");
    drop(schema);
}

/// Without `TOLLGATE_BOOTSTRAP_TOKEN`, nodes starting together on an empty database
/// create one admin token, not one each: one node writes it to its data directory and
/// the others say where it is.
#[test]
fn nodes_starting_together_create_one_bootstrap_token() {
    let Some(schema) = schema() else { return };
    let barrier = std::sync::Arc::new(std::sync::Barrier::new(3));
    let starts: Vec<_> = (0..3)
        .map(|i| {
            let (url, barrier) = (schema.url.clone(), barrier.clone());
            std::thread::spawn(move || {
                let (cfg, tmp) = node_config(&url, 7, &format!("b{i}"));
                barrier.wait();
                let opened = tollgate_server::open(&cfg).expect("every node starts");
                let file = match &opened.bootstrap {
                    tollgate_server::Bootstrap::File(p) => Some(std::fs::read_to_string(p).unwrap().trim().to_string()),
                    tollgate_server::Bootstrap::OtherNode | tollgate_server::Bootstrap::Existing => None,
                    other => panic!("node {i}: {other:?}"),
                };
                let app = opened.app.clone();
                let tokens = tollgate_store::LedgerStore::tokens(&**app.reader.lock().unwrap()).unwrap();
                drop(app);
                drop(opened.app);
                opened.writer.join().unwrap();
                drop(tmp);
                (file, tokens)
            })
        })
        .collect();
    let results: Vec<_> = starts.into_iter().map(|t| t.join().unwrap()).collect();
    let files: Vec<&String> = results.iter().filter_map(|(f, _)| f.as_ref()).collect();
    assert_eq!(files.len(), 1, "exactly one node writes the token: {results:?}");
    let tokens = &results.iter().map(|(_, t)| t).max_by_key(|t| t.len()).unwrap();
    assert_eq!(tokens.len(), 1, "one admin token in the database: {tokens:?}");
    assert_eq!(tokens[0].hash, tollgate_server::auth::hash_token(files[0]), "the file holds that token");
    drop(schema);
}

/// A network blip: every connection of both nodes is cut. Writes and reads come back
/// (the first call on a dead connection fails unacknowledged, the next reconnects), the
/// follower LISTENs again, and the other node catches up.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn nodes_reconnect_and_catch_up_after_the_database_connections_drop() {
    let Some(schema) = schema() else { return };
    let app_name = format!("blip_{}", tollgate_server::auth::random_hex(4));
    let url = format!("{}&application_name={app_name}", schema.url);
    let (a_cfg, _a) = node_config(&url, 7, "a");
    let (b_cfg, _b) = node_config(&url, 7, "b");
    let a = spawn_config(a_cfg).await;
    let b = spawn_config(b_cfg).await;
    a.seed_catalog().await;

    let killed = schema.query_i64(&format!(
        "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE application_name = '{app_name}'"
    ));
    assert!(killed >= 8, "both nodes' connections were cut ({killed})");

    let body = json!({"product":"cad","plan":"pro","licensee":"after-blip"});
    let mut issued = None;
    for _ in 0..10 {
        let r = post_at(&a, "/v1/licenses", body.clone(), None, Some("after-blip")).await;
        if r.status == 201 {
            issued = Some((r.body["id"].as_str().unwrap().to_string(), seq_of(&r)));
            break;
        }
        // A dead connection fails the first call: a read before deciding (500), or the
        // append, which then says whether it was written (503 with the code to act on).
        let code = r.body["code"].as_str().unwrap_or_default();
        assert!(
            r.status == 500 || (r.status == 503 && ["LEDGER_UNAVAILABLE", "WRITE_UNCONFIRMED"].contains(&code)),
            "{}",
            r.text
        );
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    let (id, seq) = issued.expect("writes work again after the blip");
    let mut found = false;
    for _ in 0..10 {
        let r = get_at(&b, &format!("/v1/licenses/{id}"), seq).await;
        if r.status == 200 {
            found = true;
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert!(found, "the other node caught up with the write");
    let mut listening = 0;
    for _ in 0..50 {
        listening = schema.query_i64(&format!(
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '{app_name}' AND query LIKE 'LISTEN%'"
        ));
        if listening == 2 {
            break;
        }
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    assert_eq!(listening, 2, "both followers LISTEN again");
    a.stop().await;
    b.stop().await;
    drop(schema);
}
