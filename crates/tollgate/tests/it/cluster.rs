//! Three `tollgate serve` processes over one PostgreSQL ledger, one of them SIGKILLed
//! under load and restarted: no acknowledged write is lost, every node reaches the same
//! sequence and state digest, limits hold across nodes, and `ledger verify --database`
//! passes.
//!
//! The database is `TOLLGATE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), in a fresh schema. Without a server the
//! test fails in CI (`CI=true`) and skips with the reason printed elsewhere.

use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Child, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, RwLock};
use std::time::Duration;

use serde_json::{Value, json};
use tollgate_store::test_schema::TestSchema;

use crate::support::*;

const MASTER_KEY: &str = "AQIDBAUGBwgJCgsMDQ4PEBESExQVFhcYGRobHB0eHyA=";
const WRITERS: usize = 24;
const LIMITED: usize = 4;

fn schema() -> Option<TestSchema> {
    TestSchema::create("tg_cli")
}

/// `tollgate serve` as node `id` of the cluster, with the shared master key.
fn start_node(data: &Path, url: &str, id: &str) -> Server {
    let mut child: Child = bin()
        .args(["serve", "--data"])
        .arg(data)
        .args(["--listen", "127.0.0.1:0", "--database", url])
        .env("TOLLGATE_BOOTSTRAP_TOKEN", ADMIN)
        .env("TOLLGATE_MASTER_KEY", MASTER_KEY)
        .env("TOLLGATE_NODE_ID", id)
        .env("TOLLGATE_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("spawn tollgate");
    let stdout = child.stdout.take().expect("stdout");
    let mut line = String::new();
    BufReader::new(stdout).read_line(&mut line).expect("read listening line");
    let base = line.trim().strip_prefix("listening on ").unwrap_or_else(|| panic!("first line: {line:?}")).to_string();
    Server { child, base }
}

fn seq_of(r: &reqwest::Response) -> u64 {
    r.headers().get("tollgate-seq").and_then(|v| v.to_str().ok()).and_then(|v| v.parse().ok()).unwrap_or(0)
}

async fn get_at(c: &reqwest::Client, url: &str, min_seq: u64) -> (u16, Value) {
    let r = c.get(url).bearer_auth(ADMIN).header("tollgate-min-seq", min_seq.to_string()).send().await.unwrap();
    (r.status().as_u16(), r.json().await.unwrap_or(Value::Null))
}

#[derive(Default)]
struct Acked {
    licenses: BTreeSet<String>,
    /// Acknowledged activations, by license.
    machines: BTreeMap<String, BTreeSet<String>>,
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn three_nodes_one_killed_under_load_lose_nothing_and_agree() {
    let Some(schema) = schema() else { return };
    let dirs: Vec<_> = (0..3).map(|_| tempfile::tempdir().unwrap()).collect();
    // One after the other: the first registers the bootstrap token and the keys.
    let mut servers: Vec<Option<Server>> = Vec::new();
    for (i, d) in dirs.iter().enumerate() {
        servers.push(Some(start_node(d.path(), &schema.url, &format!("n{i}"))));
    }
    let bases: Vec<String> = servers.iter().map(|s| s.as_ref().unwrap().base.clone()).collect();
    let c = client();
    seed(&c, &bases[0]).await;
    let r = c
        .post(format!("{}/v1/plans", bases[0]))
        .bearer_auth(ADMIN)
        .json(&json!({"key":"two","product":"app","name":"Two","features":["a"],"max_machines":2}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);
    let mut limited = Vec::new();
    let mut high = seq_of(&r);
    for i in 0..LIMITED {
        let r = c
            .post(format!("{}/v1/licenses", bases[0]))
            .bearer_auth(ADMIN)
            .json(&json!({"product":"app","plan":"two","licensee":format!("limited{i}")}))
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 201);
        high = high.max(seq_of(&r));
        limited.push(r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string());
    }

    let bases = Arc::new(RwLock::new(bases));
    let acked = Arc::new(std::sync::Mutex::new(Acked::default()));
    let done = Arc::new(AtomicUsize::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    let top = Arc::new(AtomicU64::new(high));
    let mut tasks = Vec::new();
    for w in 0..WRITERS {
        let (c, bases, acked, done, stop, top, limited) =
            (c.clone(), bases.clone(), acked.clone(), done.clone(), stop.clone(), top.clone(), limited.clone());
        tasks.push(tokio::spawn(async move {
            let mut i = 0usize;
            while !stop.load(Ordering::SeqCst) {
                i += 1;
                let base = bases.read().unwrap()[(w + i) % 3].clone();
                let min = high.to_string();
                let (url, body, lic) = if i.is_multiple_of(2) {
                    let body = json!({"product":"app","plan":"std","licensee":format!("w{w}-{i}")});
                    (format!("{base}/v1/licenses"), body, None)
                } else {
                    let lic = limited[(w + i) % LIMITED].clone();
                    let body = json!({"fingerprint": format!("fp-w{w}-{i}")});
                    (format!("{base}/v1/licenses/{lic}/machines"), body, Some(lic))
                };
                // A killed node refuses connections: the client moves on to another.
                let Ok(r) = c.post(url).bearer_auth(ADMIN).header("tollgate-min-seq", min).json(&body).send().await
                else {
                    continue;
                };
                let (status, seq) = (r.status().as_u16(), seq_of(&r));
                let Ok(v) = r.json::<Value>().await else { continue };
                if status != 201 {
                    assert!(matches!(status, 409 | 503), "unexpected {status}: {v}");
                    continue;
                }
                top.fetch_max(seq, Ordering::SeqCst);
                let mut a = acked.lock().unwrap();
                match lic {
                    None => {
                        a.licenses.insert(v["id"].as_str().unwrap().to_string());
                    }
                    Some(l) => {
                        a.machines.entry(l).or_default().insert(v["fingerprint"].as_str().unwrap().to_string());
                    }
                }
                done.fetch_add(1, Ordering::SeqCst);
            }
        }));
    }
    let wait_for = |n: usize| {
        let done = done.clone();
        async move {
            while done.load(Ordering::SeqCst) < n {
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(120), wait_for(300)).await.expect("writes go through");
    // SIGKILL node 1 with writers in flight on it, keep writing to the others, restart it.
    servers[1].take().unwrap().kill9();
    let before = done.load(Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(120), wait_for(before + 200)).await.expect("the others keep writing");
    let restarted = start_node(dirs[1].path(), &schema.url, "n1");
    bases.write().unwrap()[1] = restarted.base.clone();
    servers[1] = Some(restarted);
    let before = done.load(Ordering::SeqCst);
    tokio::time::timeout(Duration::from_secs(120), wait_for(before + 200)).await.expect("writes after the restart");
    stop.store(true, Ordering::SeqCst);
    for t in tasks {
        t.await.unwrap();
    }

    let bases = bases.read().unwrap().clone();
    let top = top.load(Ordering::SeqCst);
    let acked = std::mem::take(&mut *acked.lock().unwrap());
    assert!(acked.licenses.len() >= 100, "{} licenses acknowledged", acked.licenses.len());

    // Every node reaches the top sequence; every acknowledged license is on every node;
    // no limited license has more than 2 machines anywhere, and every acknowledged
    // activation is there.
    for base in &bases {
        let (status, listed) = get_at(&c, &format!("{base}/v1/licenses?limit=500"), top).await;
        assert_eq!(status, 200, "{listed}");
        for id in &acked.licenses {
            let (status, _) = get_at(&c, &format!("{base}/v1/licenses/{id}"), top).await;
            assert_eq!(status, 200, "acknowledged license {id} missing on {base}");
        }
        for lic in &limited {
            let (status, v) = get_at(&c, &format!("{base}/v1/licenses/{lic}/machines"), top).await;
            assert_eq!(status, 200, "{v}");
            let on: BTreeSet<String> =
                v["items"].as_array().unwrap().iter().map(|m| m["fingerprint"].as_str().unwrap().to_string()).collect();
            assert!(on.len() <= 2, "machine limit exceeded on {lic}: {on:?}");
            if let Some(acks) = acked.machines.get(lic) {
                assert!(acks.is_subset(&on), "acknowledged activations missing on {lic}: {acks:?} vs {on:?}");
            }
        }
    }

    // The cluster view: three live nodes at one sequence with one digest.
    let mut status = Value::Null;
    for _ in 0..60 {
        status = get_json(&c, &format!("{}/v1/cluster/status", bases[2])).await;
        let ns = status["nodes"].as_array().cloned().unwrap_or_default();
        if ns.len() == 3 && ns.iter().all(|n| n["seq"] == ns[0]["seq"] && n["digest"] == ns[0]["digest"]) {
            break;
        }
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
    let ns = status["nodes"].as_array().unwrap();
    assert_eq!(ns.len(), 3, "{status}");
    assert!(ns.iter().all(|n| n["seq"] == ns[0]["seq"] && n["digest"] == ns[0]["digest"]), "{status}");
    assert!(ns[0]["seq"].as_u64().unwrap() >= top);
    assert_eq!(status["drift"], false);

    for s in servers.into_iter().flatten() {
        s.stop();
    }
    let (ok, out) = run(&["ledger", "verify", "--database", &schema.url]);
    assert!(ok, "{out}");
    assert!(out.contains("ok:"), "{out}");
    drop(schema);
}
