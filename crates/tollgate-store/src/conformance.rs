//! The conformance suite: what every [`LedgerStore`] backend must do, written once against
//! `dyn LedgerStore`.
//!
//! A backend's tests implement [`Harness`] and either call [`run_all`] or run each
//! [`CASES`] entry as its own test. The cases panic on failure, like any test.
//!
//! This module is public (not behind `cfg(test)`) so that integration tests and other
//! crates' backends can use it; nothing in the server calls it.

mod connections;
mod log;
mod records;

pub use connections::{
    concurrent_appends_one_wins, reader_sees_committed_data, second_writer_gets_conflict, survives_reopen,
};
pub use log::{
    append_len_read_scan, duplicate_idempotency_key_writes_nothing, scan_streams_a_large_log,
    wrong_expected_len_writes_nothing,
};
pub use records::{
    checkpoints_ascending_and_latest, idempotency_claimed_once, idempotency_pruned_by_age, idempotency_round_trip,
    legacy_claims_are_adopted, meta_round_trip, snapshots_put_list_load_prune, tokens_insert_lookup_revoke,
};

use crate::{
    CheckpointRecord, Hash, IdempotencyRecord, LedgerStore, NewEvent, SnapshotRecord, StoreError, StoredEvent,
    TokenRecord, Unique,
};

/// What the suite needs from a backend.
pub trait Harness {
    /// Creates a new, empty database and opens it read-write. Called once per case.
    fn create(&mut self) -> Box<dyn LedgerStore>;

    /// Opens another read-write handle to the database [`create`](Self::create) made, as a
    /// second process would.
    fn open_again(&mut self) -> Box<dyn LedgerStore>;

    /// Opens a read-only handle to that database, as a reading thread would.
    fn open_reader(&mut self) -> Box<dyn LedgerStore>;

    /// The process's resident memory in bytes, if the platform tells; used to check that
    /// `scan` streams.
    fn resident_memory(&self) -> Option<u64> {
        None
    }
}

/// One conformance case.
pub struct Case {
    pub name: &'static str,
    pub run: fn(&mut dyn Harness),
}

macro_rules! cases {
    ($($name:ident),* $(,)?) => {
        /// Every case, in a stable order.
        pub const CASES: &[Case] = &[$(Case { name: stringify!($name), run: $name }),*];
    };
}

cases!(
    append_len_read_scan,
    wrong_expected_len_writes_nothing,
    duplicate_idempotency_key_writes_nothing,
    idempotency_round_trip,
    idempotency_claimed_once,
    legacy_claims_are_adopted,
    idempotency_pruned_by_age,
    checkpoints_ascending_and_latest,
    snapshots_put_list_load_prune,
    meta_round_trip,
    tokens_insert_lookup_revoke,
    survives_reopen,
    reader_sees_committed_data,
    second_writer_gets_conflict,
    concurrent_appends_one_wins,
    scan_streams_a_large_log,
);

/// Runs every case, each on a fresh harness from `make`.
pub fn run_all(make: &mut dyn FnMut() -> Box<dyn Harness>) {
    for case in CASES {
        eprintln!("conformance: {}", case.name);
        (case.run)(&mut *make());
    }
}

// Fixtures shared by the cases.

/// The canonical bytes of event `i`: varied lengths, and bytes that are not UTF-8, since the
/// store must treat leaves as opaque.
fn leaf(i: u64) -> Vec<u8> {
    let mut bytes = format!(r#"{{"i":{i},"pad":"{}"}}"#, "x".repeat((i % 7) as usize)).into_bytes();
    bytes.extend_from_slice(&[0x00, 0xff, (i % 251) as u8]);
    bytes
}

/// A stand-in for the leaf hash of event `i`: the store never checks it, only keeps it.
fn hash(i: u64) -> Hash {
    let mut h = [0xa5; 32];
    h[..8].copy_from_slice(&i.to_be_bytes());
    h
}

fn expected(i: u64) -> StoredEvent {
    StoredEvent { index: i, leaf: leaf(i), leaf_hash: hash(i) }
}

/// Appends events `from..to` in one call.
fn append_range(
    store: &mut dyn LedgerStore,
    from: u64,
    to: u64,
    idempotency: &[IdempotencyRecord],
) -> Result<(), StoreError> {
    let leaves: Vec<Vec<u8>> = (from..to).map(leaf).collect();
    let events: Vec<NewEvent<'_>> =
        leaves.iter().zip(from..).map(|(leaf, i)| NewEvent { leaf, leaf_hash: hash(i) }).collect();
    store.append(from, &events, idempotency)
}

fn record(scope: &str, key: &str) -> IdempotencyRecord {
    IdempotencyRecord {
        scope: scope.to_owned(),
        key: key.to_owned(),
        request_hash: [7; 32],
        status: 201,
        body: format!(r#"{{"key":"{key}"}}"#).into_bytes(),
        created_at: "2025-01-02T03:04:05Z".to_owned(),
    }
}

fn checkpoint(size: u64, root: u8) -> CheckpointRecord {
    CheckpointRecord {
        size,
        root: [root; 32],
        note: format!("tollgate.example/log\n{size}\nroot{root}=\n\n— sig{size}\n"),
    }
}

fn snapshot(seq: u64, digest: u8) -> SnapshotRecord {
    SnapshotRecord { seq, digest: [digest; 32], state: vec![digest; 100 + seq as usize] }
}

fn token(id: &str, hash: u8, created_at: &str) -> TokenRecord {
    TokenRecord {
        id: id.to_owned(),
        hash: [hash; 32],
        role: "admin".to_owned(),
        name: format!("token {id}"),
        product: None,
        created_at: created_at.to_owned(),
        revoked_at: None,
    }
}

fn scan_all(store: &dyn LedgerStore, start: u64) -> Vec<StoredEvent> {
    let mut out = Vec::new();
    store
        .scan(start, &mut |e| {
            out.push(e);
            Ok(())
        })
        .expect("scan");
    out
}

fn expected_range(from: u64, to: u64) -> Vec<StoredEvent> {
    (from..to).map(expected).collect()
}
