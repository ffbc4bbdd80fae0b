//! Durable append and replay, against raw SQLite on the same machine in the same run.
//!
//! - `engine/64_writers`: 64 concurrent tasks each issue licenses through the engine
//!   (decide, canonical encoding, group commit with `synchronous=FULL`, publish).
//! - `raw_sqlite/batched`: the same leaf bytes inserted straight into SQLite with the
//!   same pragmas, in transactions of the batch size the engine achieved.
//! - `raw_sqlite/fsync_per_event`: the same bytes, one transaction per event.
//! - `replay/verify`: start-up replay of a 100,000-event ledger with every leaf hash
//!   recomputed, no snapshot.
//!
//! Run: `cargo bench -p tollgate-server --bench append`. The last lines printed are the
//! ratios quoted in docs/BENCHMARKS.md.

mod common;

use std::sync::Arc;
use std::time::{Duration, Instant};

use common::{Samples, catalog, issue, median, meta};
use criterion::{Criterion, Throughput};
use tollgate_core::{Command, State, Timestamp};
use tollgate_store::{LedgerStore, NewEvent, SqliteStore};

const WRITERS: usize = 64;
const PER_WRITER: usize = 50;
const EVENTS: usize = WRITERS * PER_WRITER;
const FSYNC_EVENTS: usize = 100;
const REPLAY_EVENTS: u64 = 100_000;

fn raw_table(path: &std::path::Path) -> rusqlite::Connection {
    let c = rusqlite::Connection::open(path).unwrap();
    c.execute_batch(
        "PRAGMA journal_mode=WAL; PRAGMA synchronous=FULL;
         CREATE TABLE IF NOT EXISTS events (idx INTEGER PRIMARY KEY, leaf BLOB NOT NULL, leaf_hash BLOB NOT NULL) STRICT;",
    )
    .unwrap();
    c
}

fn raw_insert(c: &mut rusqlite::Connection, next: &mut i64, leaves: &[(Vec<u8>, [u8; 32])], batch: usize) {
    for chunk in leaves.chunks(batch.max(1)) {
        let tx = c.transaction_with_behavior(rusqlite::TransactionBehavior::Immediate).unwrap();
        {
            let mut st = tx.prepare_cached("INSERT INTO events (idx, leaf, leaf_hash) VALUES (?1, ?2, ?3)").unwrap();
            for (leaf, hash) in chunk {
                st.execute(rusqlite::params![*next, leaf, &hash[..]]).unwrap();
                *next += 1;
            }
        }
        tx.commit().unwrap();
    }
}

/// The binary's allocator, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    let mut c = Criterion::default()
        .configure_from_args()
        .sample_size(10)
        .warm_up_time(Duration::from_secs(1))
        .measurement_time(Duration::from_secs(8));
    let rt = tokio::runtime::Builder::new_multi_thread().worker_threads(2).enable_all().build().unwrap();

    // The engine, 64 concurrent writers.
    let tmp = tempfile::tempdir().unwrap();
    let mut cfg = tollgate_server::Config::new(tmp.path());
    cfg.engine.snapshot_every = 0;
    cfg.bootstrap_token = Some("bench-token-0123456789".into());
    let opened = tollgate_server::open(&cfg).unwrap();
    let app = opened.app.clone();
    rt.block_on(async {
        for cmd in catalog() {
            app.engine.submit(cmd, meta(), 201, None, Box::new(|_, _| serde_json::Value::Null)).await.unwrap();
        }
    });
    let engine_samples: Samples = Default::default();
    let counter = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let (events_before, commits_before) = (app.engine.state().seq(), app.engine.commits());
    let mut g = c.benchmark_group("append");
    g.throughput(Throughput::Elements(EVENTS as u64));
    g.bench_function("engine/64_writers", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                rt.block_on(async {
                    let mut tasks = Vec::with_capacity(WRITERS);
                    for _ in 0..WRITERS {
                        let (app, counter) = (app.clone(), counter.clone());
                        tasks.push(tokio::spawn(async move {
                            for _ in 0..PER_WRITER {
                                let n = counter.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                                app.engine
                                    .submit(issue(n), meta(), 201, None, Box::new(|_, _| serde_json::Value::Null))
                                    .await
                                    .unwrap();
                            }
                        }));
                    }
                    for t in tasks {
                        t.await.unwrap();
                    }
                });
                let el = start.elapsed();
                engine_samples.lock().unwrap().push(el.as_secs_f64() / EVENTS as f64);
                total += el;
            }
            total
        })
    });
    let events = app.engine.state().seq() - events_before;
    let commits = (app.engine.commits() - commits_before).max(1);
    let batch = (events as f64 / commits as f64).round().max(1.0) as usize;

    // The same bytes the engine wrote.
    let leaves: Vec<(Vec<u8>, [u8; 32])> = {
        let reader = SqliteStore::open_read_only(&tollgate_server::db_path(tmp.path())).unwrap();
        reader.read(2, 2 + EVENTS as u64).unwrap().into_iter().map(|e| (e.leaf, e.leaf_hash)).collect()
    };
    let raw_dir = tempfile::tempdir().unwrap();
    let mut raw = raw_table(&raw_dir.path().join("raw.db"));
    let mut next = 0i64;
    let raw_samples: Samples = Default::default();
    g.bench_function("raw_sqlite/batched", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                raw_insert(&mut raw, &mut next, &leaves, batch);
                let el = start.elapsed();
                raw_samples.lock().unwrap().push(el.as_secs_f64() / leaves.len() as f64);
                total += el;
            }
            total
        })
    });
    g.throughput(Throughput::Elements(FSYNC_EVENTS as u64));
    let fsync_samples: Samples = Default::default();
    g.bench_function("raw_sqlite/fsync_per_event", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                raw_insert(&mut raw, &mut next, &leaves[..FSYNC_EVENTS], 1);
                let el = start.elapsed();
                fsync_samples.lock().unwrap().push(el.as_secs_f64() / FSYNC_EVENTS as f64);
                total += el;
            }
            total
        })
    });
    g.finish();
    drop(app);
    drop(opened.app);
    let _ = opened.writer.join();

    // Replay of a 100k-event ledger with full hash verification.
    let replay_dir = tempfile::tempdir().unwrap();
    let replay_path = replay_dir.path().join("replay.db");
    {
        let mut store = SqliteStore::open(&replay_path).unwrap();
        let mut state = State::default();
        let now = Timestamp::parse("2026-11-23T00:00:00Z").unwrap();
        let mut encoded = Vec::new();
        let decide = |state: &mut State, cmd: Command, encoded: &mut Vec<(Vec<u8>, [u8; 32])>| {
            for e in tollgate_core::decide(state, &cmd, &meta(), now).unwrap() {
                state.apply(&e).unwrap();
                let bytes = e.encode().unwrap();
                let hash = tollgate_core::merkle::leaf_hash(&bytes);
                encoded.push((bytes, hash));
            }
        };
        for cmd in catalog() {
            decide(&mut state, cmd, &mut encoded);
        }
        for n in 0..REPLAY_EVENTS - 2 {
            decide(&mut state, issue(n), &mut encoded);
        }
        for (i, chunk) in encoded.chunks(10_000).enumerate() {
            let evs: Vec<NewEvent<'_>> = chunk.iter().map(|(l, h)| NewEvent { leaf: l, leaf_hash: *h }).collect();
            store.append((i * 10_000) as u64, &evs, &[]).unwrap();
        }
    }
    let store = SqliteStore::open_read_only(&replay_path).unwrap();
    let replay_samples: Samples = Default::default();
    let mut g = c.benchmark_group("replay");
    g.throughput(Throughput::Elements(REPLAY_EVENTS));
    g.sample_size(10);
    g.bench_function("verify", |b| {
        b.iter_custom(|iters| {
            let mut total = Duration::ZERO;
            for _ in 0..iters {
                let start = Instant::now();
                let loaded = tollgate_server::replay::load(&store).unwrap();
                assert_eq!(loaded.state.seq(), REPLAY_EVENTS);
                let el = start.elapsed();
                replay_samples.lock().unwrap().push(el.as_secs_f64() / REPLAY_EVENTS as f64);
                total += el;
            }
            total
        })
    });
    g.finish();

    let (e, r, f, p) = (median(&engine_samples), median(&raw_samples), median(&fsync_samples), median(&replay_samples));
    println!();
    println!("summary (medians, this run):");
    println!("  engine, 64 writers:        {:>10.0} events/s  (average group commit {batch} events)", 1.0 / e);
    println!("  raw SQLite, batched {batch:>4}:  {:>10.0} events/s", 1.0 / r);
    println!("  raw SQLite, fsync/event:   {:>10.0} events/s", 1.0 / f);
    println!("  engine / raw batched:      {:>10.2}x  (goal >= 0.8x)", r / e);
    println!("  engine / fsync per event:  {:>10.1}x  (goal >= 20x)", f / e);
    println!("  replay with verification:  {:>10.0} events/s  (goal >= 500000)", 1.0 / p);
    criterion::Criterion::default().configure_from_args().final_summary();
}
