//! The conformance suite on PostgreSQL, each case in a fresh schema.
//!
//! The server is `TOLLGATE_TEST_DATABASE_URL` (default
//! `postgres://postgres@127.0.0.1:5432/test`). When it cannot be reached, the tests fail
//! in CI (`CI=true`) and skip with the reason printed elsewhere.

use std::io::Write as _;

use tollgate_store::conformance::Harness;
use tollgate_store::{LedgerStore, PostgresStore};

fn base_url() -> String {
    std::env::var("TOLLGATE_TEST_DATABASE_URL").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".into())
}

/// A client for setting up schemas, or `None` (after failing in CI) when there is no server.
fn admin() -> Option<postgres::Client> {
    match postgres::Client::connect(&base_url(), postgres::NoTls) {
        Ok(c) => Some(c),
        Err(e) => {
            let in_ci = std::env::var("CI").is_ok_and(|v| v == "true" || v == "1");
            assert!(!in_ci, "PostgreSQL is required in CI but {} cannot be reached: {e}", base_url());
            let _ = writeln!(std::io::stderr(), "skipping PostgreSQL test: {} cannot be reached: {e}", base_url());
            None
        }
    }
}

pub struct PgHarness {
    schema: String,
    url: String,
    admin: postgres::Client,
}

impl PgHarness {
    pub fn new() -> Option<Self> {
        let mut admin = admin()?;
        let mut r = [0u8; 8];
        getrandom::fill(&mut r).unwrap();
        let schema = format!("tg_test_{}", r.iter().map(|b| format!("{b:02x}")).collect::<String>());
        admin.batch_execute(&format!("CREATE SCHEMA {schema}")).unwrap();
        let sep = if base_url().contains('?') { '&' } else { '?' };
        let url = format!("{}{sep}options=-csearch_path%3D{schema}", base_url());
        Some(Self { schema, url, admin })
    }
}

impl Drop for PgHarness {
    fn drop(&mut self) {
        let _ = self.admin.batch_execute(&format!("DROP SCHEMA {} CASCADE", self.schema));
    }
}

impl Harness for PgHarness {
    fn create(&mut self) -> Box<dyn LedgerStore> {
        Box::new(PostgresStore::open(&self.url).expect("open PostgreSQL store"))
    }
    fn open_again(&mut self) -> Box<dyn LedgerStore> {
        Box::new(PostgresStore::open(&self.url).expect("reopen PostgreSQL store"))
    }
    fn open_reader(&mut self) -> Box<dyn LedgerStore> {
        Box::new(PostgresStore::open_read_only(&self.url).expect("open PostgreSQL reader"))
    }
    fn resident_memory(&self) -> Option<u64> {
        let status = std::fs::read_to_string("/proc/self/status").ok()?;
        let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
        let kib: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
        Some(kib * 1024)
    }
}

crate::conformance_cases!(PgHarness::new());

#[test]
fn the_events_table_is_append_only() {
    let Some(mut h) = PgHarness::new() else { return };
    let mut store = h.create();
    store.append(0, &[tollgate_store::NewEvent { leaf: b"x", leaf_hash: [1; 32] }], &[]).unwrap();
    let mut c = postgres::Client::connect(&h.url, postgres::NoTls).unwrap();
    let message = |e: postgres::Error| e.as_db_error().map(|d| d.message().to_string()).unwrap_or_default();
    let e = message(c.execute("UPDATE events SET leaf = 'y'", &[]).unwrap_err());
    assert!(e.contains("append-only"), "{e}");
    let e = message(c.execute("DELETE FROM events", &[]).unwrap_err());
    assert!(e.contains("append-only"), "{e}");
}

/// The server calls its store from async handlers; the sync client must not panic there.
fn use_store_inside_a_runtime(flavor: tokio::runtime::Builder) {
    let Some(mut h) = PgHarness::new() else { return };
    let mut store = h.create();
    let mut builder = flavor;
    let rt = builder.enable_all().build().unwrap();
    rt.block_on(async {
        store.append(0, &[tollgate_store::NewEvent { leaf: b"a", leaf_hash: [2; 32] }], &[]).unwrap();
        assert_eq!(store.len().unwrap(), 1);
        let mut n = 0;
        store
            .scan(0, &mut |_| {
                n += 1;
                Ok(())
            })
            .unwrap();
        assert_eq!(n, 1);
    });
}

#[test]
fn works_inside_a_single_threaded_runtime() {
    use_store_inside_a_runtime(tokio::runtime::Builder::new_current_thread());
}

#[test]
fn works_inside_a_multi_threaded_runtime() {
    use_store_inside_a_runtime(tokio::runtime::Builder::new_multi_thread());
}
