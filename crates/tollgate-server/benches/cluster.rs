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

mod common;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use common::{Samples, catalog, issue, median, meta};
use criterion::{Criterion, Throughput};
use tollgate_server::engine::{Engine, EngineConfig};
use tollgate_store::test_schema::TestSchema;
use tollgate_store::{LedgerStore, PostgresStore};

const WRITERS: usize = 64;
const PER_WRITER: usize = 20;
const EVENTS: usize = WRITERS * PER_WRITER;

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
    // Without a server, this prints why and returns None.
    let Some(schema) = TestSchema::create("tg_bench") else { return };
    let url = schema.url.clone();
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
    drop(schema);

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
