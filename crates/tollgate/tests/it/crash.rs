//! An acknowledged write survives kill -9: the crash drill.

use std::collections::BTreeSet;
use std::io::Write as _;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use tokio::sync::Mutex;

use crate::support::*;

const CYCLES: usize = 20;
const WRITERS: usize = 64;
/// Acknowledged writes per cycle before the kill; all 64 writers are mid-flight then.
const KILL_AFTER: usize = 150;

/// Every license id the server lists, page by page.
async fn listed(c: &reqwest::Client, base: &str) -> BTreeSet<String> {
    let mut ids = BTreeSet::new();
    let mut cursor: Option<String> = None;
    loop {
        let url = match &cursor {
            Some(cur) => format!("{base}/v1/licenses?limit=500&cursor={cur}"),
            None => format!("{base}/v1/licenses?limit=500"),
        };
        let v: serde_json::Value = c.get(url).bearer_auth(ADMIN).send().await.unwrap().json().await.unwrap();
        for l in v["items"].as_array().unwrap() {
            ids.insert(l["id"].as_str().unwrap().to_string());
        }
        match v["next_cursor"].as_str() {
            Some(n) => cursor = Some(n.to_string()),
            None => return ids,
        }
    }
}

/// Runs 64 writers until `KILL_AFTER` more writes are acknowledged, then SIGKILLs the
/// server while they are still writing. Returns the ids acknowledged.
async fn write_until_killed(server: Server, c: &reqwest::Client, cycle: usize) -> BTreeSet<String> {
    let acked = Arc::new(Mutex::new(BTreeSet::new()));
    let count = Arc::new(AtomicUsize::new(0));
    let (kill_tx, kill_rx) = tokio::sync::oneshot::channel::<()>();
    let kill_tx = Arc::new(std::sync::Mutex::new(Some(kill_tx)));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (c, base, acked, count, kill_tx) =
            (c.clone(), server.base.clone(), acked.clone(), count.clone(), kill_tx.clone());
        tasks.push(tokio::spawn(async move {
            for i in 0.. {
                let body = serde_json::json!({"product":"app","plan":"std","licensee":format!("c{cycle}-w{w}-{i}")});
                let Ok(r) = c.post(format!("{base}/v1/licenses")).bearer_auth(ADMIN).json(&body).send().await else {
                    break;
                };
                if r.status() != 201 {
                    break;
                }
                let Ok(v) = r.json::<serde_json::Value>().await else { break };
                acked.lock().await.insert(v["id"].as_str().unwrap().to_string());
                if count.fetch_add(1, Ordering::SeqCst) + 1 == KILL_AFTER
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
    assert!(acked.len() >= KILL_AFTER);
    acked
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn twenty_sigkills_under_64_writers_lose_no_acknowledged_write() {
    let tmp = tempfile::tempdir().unwrap();
    let c = client();
    let server = start(tmp.path());
    seed(&c, &server.base).await;
    let mut acked = BTreeSet::new();
    let mut server = Some(server);
    for cycle in 0..CYCLES {
        let s = server.take().unwrap_or_else(|| start(tmp.path()));
        acked.extend(write_until_killed(s, &c, cycle).await);
        // Offline, straight after the crash: every hash, root and signature checks out.
        let (ok, out) = verify(tmp.path());
        assert!(ok, "cycle {cycle}: ledger verify after SIGKILL: {out}");
        // And every acknowledged write is there after restart.
        let s = start(tmp.path());
        let present = listed(&c, &s.base).await;
        let missing: Vec<_> = acked.difference(&present).collect();
        assert!(missing.is_empty(), "cycle {cycle}: acknowledged but lost: {missing:?}");
        server = Some(s);
    }
    let s = server.take().unwrap();
    let r = c
        .post(format!("{}/v1/licenses", s.base))
        .bearer_auth(ADMIN)
        .json(&serde_json::json!({"product":"app","plan":"std","licensee":"after"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201, "the server keeps writing after the drill");
    s.stop();
    let (ok, out) = verify(tmp.path());
    assert!(ok, "{out}");
    // Written past the test harness's capture, so CI's log shows the count.
    let _ = writeln!(
        std::io::stderr(),
        "crash drill: {CYCLES} SIGKILLs under {WRITERS} writers, {} acknowledged writes, 0 lost, ledger verify passed after each",
        acked.len()
    );
}
