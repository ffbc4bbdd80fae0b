//! Start-up from a snapshot with 1,000,000 licenses, and full replay, in one run.
//!
//! Builds a ledger of 1,000,000 license_issued events (plus the catalog) in a temp
//! SQLite file, then measures `replay::load` twice:
//! - from a snapshot at the end (decode the snapshot, verify every leaf hash of the
//!   log, no event to fold);
//! - from genesis (verify every leaf hash and fold every event).
//!
//! Run: `cargo bench -p tollgate-server --bench startup` (takes a few minutes and about
//! 3 GiB of memory). Set `TOLLGATE_BENCH_LICENSES` to use another size. The licenses are
//! those of the other benches (`common::issue`): ids in issue order, as the server draws them.

use std::time::{Duration, Instant};

mod common;

use common::{catalog, issue, meta};
use tollgate_core::{Command, State, Timestamp, decide};
use tollgate_store::{LedgerStore, NewEvent, SnapshotRecord, SqliteStore};

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// The binary's allocator, so the figures are the binary's.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() {
    if std::env::args().any(|a| a == "--list") {
        return;
    }
    let n: u64 = std::env::var("TOLLGATE_BENCH_LICENSES").ok().and_then(|s| s.parse().ok()).unwrap_or(1_000_000);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("startup.db");
    let meta = meta();
    let now = Timestamp::parse("2026-11-23T00:00:00Z").unwrap();
    let built = Instant::now();
    let mut state = State::default();
    let mut store = SqliteStore::open(&path).unwrap();
    let mut batch: Vec<(Vec<u8>, [u8; 32])> = Vec::new();
    let mut written = 0u64;
    let mut push = |state: &mut State,
                    cmd: Command,
                    batch: &mut Vec<(Vec<u8>, [u8; 32])>,
                    store: &mut SqliteStore,
                    flush: bool| {
        for e in decide(state, &cmd, &meta, now).unwrap() {
            state.apply(&e).unwrap();
            let bytes = e.encode().unwrap();
            let h = tollgate_core::merkle::leaf_hash(&bytes);
            batch.push((bytes, h));
        }
        if flush || batch.len() >= 20_000 {
            let evs: Vec<NewEvent<'_>> = batch.iter().map(|(l, h)| NewEvent { leaf: l, leaf_hash: *h }).collect();
            store.append(written, &evs, &[]).unwrap();
            written += evs.len() as u64;
            batch.clear();
        }
    };
    for cmd in catalog() {
        push(&mut state, cmd, &mut batch, &mut store, false);
    }
    for i in 0..n {
        let cmd = issue(i);
        push(&mut state, cmd, &mut batch, &mut store, i + 1 == n);
    }
    let encoded = state.encode().unwrap();
    let digest = tollgate_core::state::digest_of(&encoded);
    let seq = state.seq();
    drop(state);
    store.put_snapshot(&SnapshotRecord { seq, digest, state: encoded }).unwrap();
    println!(
        "built {seq} events and a {:.0} MiB snapshot in {:.1?}",
        store.load_snapshot(seq).unwrap().unwrap().state.len() as f64 / 1048576.0,
        built.elapsed()
    );
    let reader = SqliteStore::open_read_only(&path).unwrap();

    let mut from_snapshot = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let loaded = tollgate_server::replay::load(&reader).unwrap();
        from_snapshot.push(t.elapsed());
        assert_eq!((loaded.state.seq(), loaded.snapshot_seq), (seq, seq));
    }
    // Genesis: the same ledger without its snapshot.
    let mut writer = SqliteStore::open(&path).unwrap();
    writer.prune_snapshots(0).unwrap();
    let mut from_genesis = Vec::new();
    for _ in 0..3 {
        let t = Instant::now();
        let loaded = tollgate_server::replay::load(&reader).unwrap();
        from_genesis.push(t.elapsed());
        assert_eq!((loaded.state.seq(), loaded.snapshot_seq), (seq, 0));
    }
    let (s, g) = (median(from_snapshot), median(from_genesis));
    println!("start-up from a snapshot of {n} licenses (every leaf hash verified): {s:.2?} (median of 3)");
    println!(
        "start-up from genesis, replaying {seq} events with verification:  {g:.2?} = {:.0} events/s",
        seq as f64 / g.as_secs_f64()
    );
}
