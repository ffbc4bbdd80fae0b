//! Appends on PostgreSQL: the engine against a raw batched insert of the same rows, and
//! one node against three nodes writing the same ledger, in the same run.
//!
//! - `pg/one_node`: 64 concurrent writers issue licenses through one engine.
//! - `pg/three_nodes`: the same 64 writers spread over three engines (three nodes in one
//!   process, each with its own connections) on the same database: every append races
//!   the other nodes', and the loser catches up, decides again and appends.
//! - `pg/raw_batched`: the leaf bytes the engine wrote, inserted straight into a table
//!   of the same shape, in transactions of the batch size the one-node engine achieved.
//!
//! The database is `TOLLGATE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`), in a fresh schema; without a server the
//! bench prints why and does nothing.
//!
//! Run: `cargo bench -p tollgate-server --bench cluster`. The last lines printed are the
//! medians and ratios quoted in docs/BENCHMARKS.md.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use criterion::{Criterion, Throughput};
use tollgate_core::catalog::{Feature, PlanSpec, ProductSpec};
use tollgate_core::command::IssueLicense;
use tollgate_core::ids::{FeatureKey, LicenseId, PlanKey, ProductKey};
use tollgate_core::key::LicenseKey;
use tollgate_core::{Command, Meta};
use tollgate_server::engine::{Engine, EngineConfig};
use tollgate_store::{LedgerStore, PostgresStore};

const WRITERS: usize = 64;
const PER_WRITER: usize = 20;
const EVENTS: usize = WRITERS * PER_WRITER;

fn meta() -> Meta {
    Meta { actor: "bench".into(), reason: None, request_id: "bench".into() }
}

fn catalog() -> [Command; 2] {
    let product = ProductSpec {
        key: ProductKey::parse("app").unwrap(),
        name: "App".into(),
        features: (0..20)
            .map(|i| Feature { key: FeatureKey::parse(&format!("f{i}")).unwrap(), name: format!("F{i}") })
            .collect(),
    };
    let plan = PlanSpec {
        key: PlanKey::parse("std").unwrap(),
        product: product.key.clone(),
        name: "Std".into(),
        features: product.features.iter().map(|f| f.key.clone()).collect(),
        duration_days: Some(365),
        trial_days: None,
        grace_days: Some(7),
        max_machines: Some(3),
        max_users: None,
        offline_days: None,
        floating: None,
        meters: vec![],
    };
    [Command::CreateProduct(product), Command::CreatePlan(plan)]
}

fn issue(n: u64) -> Command {
    let mut id = [0u8; 16];
    id[..8].copy_from_slice(&n.to_be_bytes());
    id[8..].copy_from_slice(&(n.wrapping_mul(0x9E37_79B9_7F4A_7C15)).to_be_bytes());
    let mut key = [0u8; 15];
    key[..8].copy_from_slice(&(n.wrapping_mul(0xD6E8_FEB8_6659_FD93)).to_be_bytes());
    key[8..15].copy_from_slice(&n.to_be_bytes()[1..]);
    Command::IssueLicense(IssueLicense {
        id: LicenseId::from_random(id),
        key: LicenseKey::from_random(key),
        product: ProductKey::parse("app").unwrap(),
        plan: PlanKey::parse("std").unwrap(),
        licensee: format!("customer-{n}@example.com"),
        expires_at: None,
        metadata: Default::default(),
        external_id: None,
    })
}

type Samples = Arc<Mutex<Vec<f64>>>;

fn median(s: &Samples) -> f64 {
    let mut v = s.lock().unwrap().clone();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    if v.is_empty() { f64::NAN } else { v[v.len() / 2] }
}

/// A fresh schema, or why there is none.
fn schema() -> Result<(postgres::Client, String, String), String> {
    let base = std::env::var("TOLLGATE_TEST_DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into());
    let mut admin = postgres::Client::connect(&base, postgres::NoTls).map_err(|e| format!("{base}: {e}"))?;
    let name = format!("tg_bench_{}", std::process::id());
    admin
        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE; CREATE SCHEMA {name}"))
        .map_err(|e| e.to_string())?;
    let sep = if base.contains('?') { '&' } else { '?' };
    let url = format!("{base}{sep}options=-csearch_path%3D{name}");
    Ok((admin, name, url))
}

fn start(url: &str, kek: &Arc<tollgate_server::kek::MasterKey>) -> (Engine, std::thread::JoinHandle<()>) {
    let config = EngineConfig { snapshot_every: 0, master_key: Some(kek.clone()), ..EngineConfig::default() };
    Engine::start(Box::new(PostgresStore::open(url).unwrap()), config).unwrap()
}

/// Runs 64 writers over `engines` (writer w on engine w mod n); per-event seconds.
fn run(rt: &tokio::runtime::Runtime, engines: &[Engine], counter: &Arc<AtomicU64>) -> Duration {
    let start = Instant::now();
    rt.block_on(async {
        let mut tasks = Vec::with_capacity(WRITERS);
        for w in 0..WRITERS {
            let (engine, counter) = (engines[w % engines.len()].clone(), counter.clone());
            tasks.push(tokio::spawn(async move {
                for _ in 0..PER_WRITER {
                    let n = counter.fetch_add(1, Ordering::Relaxed);
                    engine.submit(issue(n), meta(), 201, None, Box::new(|_, _| serde_json::Value::Null)).await.unwrap();
                }
            }));
        }
        for t in tasks {
            t.await.unwrap();
        }
    });
    start.elapsed()
}

fn main() {
    let (mut admin, name, url) = match schema() {
        Ok(s) => s,
        Err(why) => {
            println!("skipping the PostgreSQL benchmarks: the database cannot be reached ({why})");
            return;
        }
    };
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();
    let kek = Arc::new(tollgate_server::kek::MasterKey::from_bytes([9; 32]));
    let counter = Arc::new(AtomicU64::new(0));

    let (one, one_writer) = start(&url, &kek);
    rt.block_on(async {
        for cmd in catalog() {
            one.submit(cmd, meta(), 201, None, Box::new(|_, _| serde_json::Value::Null)).await.unwrap();
        }
    });
    let mut g = c.benchmark_group("pg");
    g.throughput(Throughput::Elements(EVENTS as u64));
    let one_samples: Samples = Default::default();
    let (events_before, commits_before) = (one.state().seq(), one.commits());
    g.bench_function("one_node", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let el = run(&rt, std::slice::from_ref(&one), &counter);
                    one_samples.lock().unwrap().push(el.as_secs_f64() / EVENTS as f64);
                    el
                })
                .sum()
        })
    });
    let batch = ((one.state().seq() - events_before) as f64 / (one.commits() - commits_before).max(1) as f64)
        .round()
        .max(1.0) as usize;

    // Two more nodes join the same ledger.
    let (two, two_writer) = start(&url, &kek);
    let (three, three_writer) = start(&url, &kek);
    let nodes = [one.clone(), two.clone(), three.clone()];
    let three_samples: Samples = Default::default();
    g.bench_function("three_nodes", |b| {
        b.iter_custom(|iters| {
            (0..iters)
                .map(|_| {
                    let el = run(&rt, &nodes, &counter);
                    three_samples.lock().unwrap().push(el.as_secs_f64() / EVENTS as f64);
                    el
                })
                .sum()
        })
    });

    // The same rows, straight into a table of the same shape.
    let leaves: Vec<(i64, Vec<u8>, Vec<u8>)> = {
        let reader = PostgresStore::open_read_only(&url).unwrap();
        reader
            .read(2, 2 + EVENTS as u64)
            .unwrap()
            .into_iter()
            .map(|e| (e.index as i64, e.leaf, e.leaf_hash.to_vec()))
            .collect()
    };
    let mut raw = postgres::Client::connect(&url, postgres::NoTls).unwrap();
    raw.batch_execute(
        "CREATE TABLE raw_events (idx BIGINT PRIMARY KEY, leaf BYTEA NOT NULL, leaf_hash BYTEA NOT NULL)",
    )
    .unwrap();
    let mut next = 0i64;
    let raw_samples: Samples = Default::default();
    g.bench_function("raw_batched", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                for chunk in leaves.chunks(batch) {
                    let mut tx = raw.transaction().unwrap();
                    let st = tx.prepare("INSERT INTO raw_events (idx, leaf, leaf_hash) VALUES ($1, $2, $3)").unwrap();
                    for (_, leaf, hash) in chunk {
                        tx.execute(&st, &[&next, leaf, hash]).unwrap();
                        next += 1;
                    }
                    tx.commit().unwrap();
                }
                let el = start.elapsed();
                raw_samples.lock().unwrap().push(el.as_secs_f64() / leaves.len() as f64);
                total += el;
            }
            total
        })
    });
    g.finish();

    // All three folded the same log.
    rt.block_on(async {
        let top = nodes.iter().map(|n| n.state().seq()).max().unwrap();
        for n in &nodes {
            assert!(n.wait_for_seq(top, Duration::from_secs(10)).await >= top);
        }
    });
    let digests: Vec<_> = nodes.iter().map(|n| n.state().digest().unwrap()).collect();
    assert!(digests.windows(2).all(|w| w[0] == w[1]), "the nodes' states differ");
    drop(nodes);
    drop((one, two, three));
    for w in [one_writer, two_writer, three_writer] {
        let _ = w.join();
    }
    drop(raw);
    let _ = admin.batch_execute(&format!("DROP SCHEMA {name} CASCADE"));

    let (o, t, r) = (median(&one_samples), median(&three_samples), median(&raw_samples));
    println!();
    println!("summary (medians, this run, PostgreSQL):");
    println!("  engine, 1 node, 64 writers:     {:>10.0} events/s  (average group commit {batch} events)", 1.0 / o);
    println!("  engine, 3 nodes, 64 writers:    {:>10.0} events/s", 1.0 / t);
    println!("  raw batched insert ({batch:>4}/tx):  {:>10.0} events/s", 1.0 / r);
    println!("  1 node / raw batched:           {:>10.2}x", r / o);
    println!("  3 nodes / 1 node:               {:>10.2}x", o / t);
    criterion::Criterion::default().configure_from_args().final_summary();
}
