//! The store's integration tests: the conformance suite on SQLite, then what only SQLite
//! has (files, schema versions, corruption, backups).

/// One test per conformance case, on a fresh harness from `$make` (an `Option`, `None`
/// when the backend is not available here), plus a check that none is missing.
#[macro_export]
macro_rules! conformance_cases {
    ($make:expr) => {
        $crate::conformance_cases!(@cases $make;
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
    };
    (@cases $make:expr; $($name:ident),* $(,)?) => {
        $(
            #[test]
            fn $name() {
                if let Some(mut h) = $make {
                    tollgate_store::conformance::$name(&mut h);
                }
            }
        )*

        #[test]
        fn every_case_is_listed() {
            let listed = [$(stringify!($name)),*];
            let all: Vec<&str> = tollgate_store::conformance::CASES.iter().map(|c| c.name).collect();
            assert_eq!(listed.as_slice(), all.as_slice());
        }
    };
}

mod conformance;
mod postgres;
mod sqlite;

use std::path::{Path, PathBuf};

use tempfile::TempDir;
use tollgate_store::conformance::Harness;
use tollgate_store::{LedgerStore, SqliteStore};

/// A fresh SQLite file in its own temporary directory.
struct SqliteHarness {
    dir: TempDir,
    path: PathBuf,
}

impl SqliteHarness {
    fn new() -> Self {
        let dir = tempfile::tempdir().expect("temporary directory");
        let path = dir.path().join("ledger.db");
        Self { dir, path }
    }

    fn path(&self) -> &Path {
        &self.path
    }

    fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Harness for SqliteHarness {
    fn create(&mut self) -> Box<dyn LedgerStore> {
        assert!(!self.path.exists(), "create() is called once per harness");
        Box::new(SqliteStore::open(&self.path).expect("open new database"))
    }

    fn open_again(&mut self) -> Box<dyn LedgerStore> {
        Box::new(SqliteStore::open(&self.path).expect("reopen database"))
    }

    fn open_reader(&mut self) -> Box<dyn LedgerStore> {
        Box::new(SqliteStore::open_read_only(&self.path).expect("open read-only"))
    }

    fn resident_memory(&self) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}
