//! The store's integration tests: the conformance suite on SQLite, then what only SQLite
//! has (files, schema versions, corruption, backups).

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
