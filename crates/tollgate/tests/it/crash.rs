//! An acknowledged write survives kill -9.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Mutex;

use crate::support::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigkill_under_64_writers_loses_no_acknowledged_license() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start(tmp.path());
    let c = client();
    seed(&c, &server.base).await;

    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let kill_tx = Arc::new(std::sync::Mutex::new(Some(kill_tx)));
    let mut tasks = Vec::new();
    for w in 0..64 {
        let (c, base, acked, count, kill_tx) =
            (c.clone(), server.base.clone(), acked.clone(), count.clone(), kill_tx.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let body = serde_json::json!({"product":"app","plan":"std","licensee":format!("w{w}-{i}")});
                let Ok(r) = c.post(format!("{base}/v1/licenses")).bearer_auth(ADMIN).json(&body).send().await else {
                    break;
                };
                if r.status() != 201 {
                    break;
                }
                let Ok(v) = r.json::<serde_json::Value>().await else { break };
                acked.lock().await.insert(v["id"].as_str().unwrap().to_string());
                // Kill the server once a good number of writes are acknowledged, while
                // all 64 writers are still mid-flight.
                if count.fetch_add(1, Ordering::SeqCst) + 1 == 600
                    && let Some(tx) = kill_tx.lock().unwrap().take()
                {
                    let _ = tx.send(());
                }
            }
        }));
    }
    kill_rx.await.unwrap();
    server.kill9();
    for t in tasks {
        t.await.unwrap();
    }
    let acked = acked.lock().await.clone();
    assert!(acked.len() >= 600, "writers were acknowledged before the kill: {}", acked.len());

    let server = start(tmp.path());
    let mut missing = Vec::new();
    for id in &acked {
        let r = c.get(format!("{}/v1/licenses/{id}", server.base)).bearer_auth(ADMIN).send().await.unwrap();
        if r.status() != 200 {
            missing.push(id.clone());
        }
    }
    println!(
        "kill -9 drill: {} licenses acknowledged before SIGKILL, {} missing after restart",
        acked.len(),
        missing.len()
    );
    assert!(missing.is_empty(), "acknowledged but lost: {missing:?}");
    // The restarted server keeps writing at the right sequence.
    let r = c
        .post(format!("{}/v1/licenses", server.base))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"product":"app","plan":"std","licensee":"after"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    server.stop();
    let (ok, out) = verify(tmp.path());
    assert!(ok, "ledger verify after the crash: {out}");
    assert!(out.contains("ok:"), "{out}");
}
